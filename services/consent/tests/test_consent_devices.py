"""Devices end to end through real gRPC, on SQLite and PostgreSQL: RegisterDevice,
UpdateDevice, UnregisterDevice, InvalidateDevice and ListDevices with their documented
errors; a token moving between users; last write wins (a late retry is superseded);
revival only after ``invalidated_at``; stale reports; the ledger entries and the feed
changes each change leaves (read straight from storage); apps side by side; and the
repository's one-query device lookup for eligibility."""

from __future__ import annotations

import asyncio
import collections
import hashlib
import itertools
import random
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import pytest
from google.protobuf.field_mask_pb2 import FieldMask
from google.protobuf.timestamp_pb2 import Timestamp
from sqlalchemy import event, func, select

from pushwarden.common.v1 import types_pb2
from pushwarden.consent.v1 import consent_pb2_grpc, messages_pb2, resources_pb2
from pushwarden.runtime.clock import shift_clock_file
from pushwarden.runtime.servicetest import local_test_config, rich_error, serving
from pushwarden.services.consent.bootstrap import bootstrap
from pushwarden.services.consent.config import ConsentConfig
from pushwarden.services.consent.domain.devices import DeviceStatus
from pushwarden.services.consent.domain.ledger import verify_chain
from pushwarden.services.consent.domain.subjects import Pseudonyms
from pushwarden.services.consent.models import DeviceRow, LedgerEntryRow, LedgerPayloadRow
from pushwarden.services.consent.storage.uow import ConsentUow, unit_of_work_factory

if TYPE_CHECKING:  # the async stub type exists in the typed stubs only
    from pushwarden.consent.v1.consent_pb2_grpc import ConsentServiceAsyncStub as Stub

KEY = "k" * 64
IOS, ANDROID, WEB = types_pb2.PLATFORM_IOS, types_pb2.PLATFORM_ANDROID, types_pb2.PLATFORM_WEB
APNS, FCM = types_pb2.PROVIDER_APNS, types_pb2.PROVIDER_FCM
GRANTED = types_pb2.PERMISSION_STATE_GRANTED
DENIED = types_pb2.PERMISSION_STATE_DENIED
NOT_DETERMINED = types_pb2.PERMISSION_STATE_NOT_DETERMINED
ACTIVE = resources_pb2.DEVICE_STATUS_ACTIVE
INVALID = resources_pb2.DEVICE_STATUS_INVALID
UNREGISTERED = resources_pb2.DEVICE_STATUS_UNREGISTERED
APNS_TOKEN = "a1" * 32
FCM_TOKEN = "fcm:APA91b" + "x" * 150


@dataclass(frozen=True)
class Service:
    """A running consent service and a way into its storage."""

    stub: Stub
    uow: ConsentUow
    pseudonyms: Pseudonyms


@pytest.fixture
async def svc(any_database_url: str) -> AsyncIterator[Service]:
    config = local_test_config(ConsentConfig, any_database_url, PSEUDONYM_KEY=KEY)
    app = bootstrap(config)
    async with serving(app) as channel:
        yield Service(
            consent_pb2_grpc.ConsentServiceStub(channel),
            unit_of_work_factory(app.database),
            Pseudonyms(KEY),
        )


def device(
    user_id: str = "alice",
    token: str = APNS_TOKEN,
    platform: types_pb2.Platform.ValueType = IOS,
    provider: types_pb2.Provider.ValueType = APNS,
    **fields: Any,
) -> resources_pb2.Device:
    return resources_pb2.Device(
        user_id=user_id, token=token, platform=platform, provider=provider, **fields
    )


def stamp(instant: datetime) -> Timestamp:
    value = Timestamp()
    value.FromDatetime(instant)
    return value


async def register(
    svc: Service,
    dev: resources_pb2.Device,
    app: str = "shop",
    client_time: datetime | None = None,
) -> messages_pb2.RegisterDeviceResponse:
    request = messages_pb2.RegisterDeviceRequest(app_id=app, device=dev)
    if client_time is not None:
        request.client_time.CopyFrom(stamp(client_time))
    return await svc.stub.RegisterDevice(request)


async def listed(svc: Service, app: str = "shop", **filters: Any) -> list[resources_pb2.Device]:
    reply = await svc.stub.ListDevices(
        messages_pb2.ListDevicesRequest(app_id=app, page_size=1000, **filters)
    )
    return list(reply.devices)


@dataclass(frozen=True)
class Entry:
    kind: str
    scope_key: str
    action: str
    client_time: datetime | None
    change: resources_pb2.DeviceChange


async def ledger(svc: Service, user: str, app: str = "shop") -> list[Entry]:
    """The user's ledger entries, oldest first, with their device payloads."""
    async with svc.uow(read_only=True) as work:
        stored = await work.ledger.entries(svc.pseudonyms.subject(app, user))
    entries = []
    for item in stored:
        assert item.payload is not None
        payload = resources_pb2.LedgerEntry.FromString(item.payload)
        assert payload.WhichOneof("payload") == "device"
        fields = item.fields
        entries.append(
            Entry(fields.kind, fields.scope_key, fields.action, fields.client_time, payload.device)
        )
    return entries


async def feed(svc: Service) -> list[resources_pb2.Change]:
    """Every change on the feed, in order."""
    async with svc.uow(read_only=True) as work:
        changes, _ = await work.feed.read_after(None, 0, 100_000)
    return [resources_pb2.Change.FromString(change.detail) for change in changes]


async def counts(svc: Service) -> tuple[int, int, int]:
    """Rows of devices, ledger entries and feed changes."""
    async with svc.uow(read_only=True) as work:
        devices = await work.session.scalar(select(func.count()).select_from(DeviceRow))
        entries = await work.ledger.head_sequence()
        changes = await work.feed.head()
    return int(devices or 0), entries, changes


def error_of(raised: pytest.ExceptionInfo[grpc.aio.AioRpcError]) -> Any:
    return rich_error(raised.value)


# --- RegisterDevice -------------------------------------------------------------------


async def test_register_creates_a_device_with_its_history(svc: Service) -> None:
    reply = await register(
        svc,
        device(time_zone="Europe/Paris", locale="fr-FR", app_version="3.2", os_version="17.4",
               model="iPhone15,2"),
    )  # fmt: skip
    got = reply.device
    assert reply.created
    assert not reply.superseded
    assert reply.previous_user_id == ""
    assert got.device_id
    assert len(got.device_id) <= 64
    assert got.device_id.isascii()
    assert (got.app_id, got.user_id, got.token) == ("shop", "alice", APNS_TOKEN)
    assert (got.platform, got.provider, got.status) == (IOS, APNS, ACTIVE)
    assert got.permission == NOT_DETERMINED  # the contract's default
    assert (got.time_zone, got.locale, got.app_version) == ("Europe/Paris", "fr-FR", "3.2")
    assert (got.os_version, got.model) == ("17.4", "iPhone15,2")
    assert got.created_at == got.updated_at == got.registered_at
    assert not got.HasField("invalidated_at")

    entries = await ledger(svc, "alice")
    assert [(e.kind, e.scope_key, e.action) for e in entries] == [
        ("DEVICE", "DEVICE:IOS", "ACTIVE"),
        ("PERMISSION", "PERMISSION:IOS", "NOT_DETERMINED"),
    ]
    assert entries[0].change == resources_pb2.DeviceChange(
        device_id=got.device_id, permission=NOT_DETERMINED, status=ACTIVE, platform=IOS
    )
    assert all(e.client_time is None for e in entries)  # none was reported

    changes = await feed(svc)
    assert len(changes) == 1
    assert changes[0].kind == resources_pb2.CHANGE_KIND_DEVICE
    assert (changes[0].app_id, changes[0].user_id) == ("shop", "alice")
    assert changes[0].device == got
    assert changes[0].previous_user_id == ""
    assert await listed(svc) == [got]


async def test_the_ledger_keeps_no_token_locale_or_model(svc: Service) -> None:
    await register(svc, device(locale="sv-SE-x-rare", model="Pixel-Secret-9", permission=GRANTED))
    await svc.stub.UnregisterDevice(
        messages_pb2.UnregisterDeviceRequest(app_id="shop", token=APNS_TOKEN)
    )
    async with svc.uow(read_only=True) as work:
        entries = (await work.session.execute(select(LedgerEntryRow.__table__))).all()
        payloads = list(await work.session.scalars(select(LedgerPayloadRow.body)))
    assert len(entries) == 3  # DEVICE, PERMISSION, DEVICE (unregistered)
    text = " ".join(str(value) for row in entries for value in row)
    blob = b" ".join(payloads)
    for secret in (APNS_TOKEN, "sv-SE-x-rare", "Pixel-Secret-9", "alice"):
        assert secret not in text
        assert secret.encode() not in blob


async def test_registering_again_unchanged_writes_no_history(svc: Service) -> None:
    first = (await register(svc, device(locale="fr-FR"))).device
    before = await counts(svc)
    again = await register(svc, device(locale="fr-FR"))
    assert not again.created
    assert not again.superseded
    assert again.device.device_id == first.device_id
    assert again.device.updated_at == first.updated_at  # nothing a follower sees changed
    assert again.device.registered_at.ToDatetime() >= first.registered_at.ToDatetime()
    assert await counts(svc) == before
    assert (await listed(svc))[0] == again.device  # stored as answered


async def test_a_permission_change_is_a_ledger_entry_and_a_feed_change(svc: Service) -> None:
    await register(svc, device())
    reply = await register(svc, device(permission=GRANTED, locale="de-DE"))
    assert reply.device.permission == GRANTED
    assert reply.device.locale == "de-DE"
    assert reply.device.updated_at.ToDatetime() >= reply.device.created_at.ToDatetime()
    entries = await ledger(svc, "alice")
    assert [(e.kind, e.action) for e in entries][2:] == [("PERMISSION", "GRANTED")]
    assert entries[-1].change.permission == GRANTED
    changes = await feed(svc)
    assert len(changes) == 2
    assert changes[-1].device == reply.device
    # A change of anything else is on the feed but not in the ledger.
    await register(svc, device(permission=GRANTED, locale="it-IT"))
    assert len(await ledger(svc, "alice")) == 3
    assert len(await feed(svc)) == 3


async def test_a_registration_that_does_not_report_the_permission_keeps_it(
    svc: Service,
) -> None:
    await register(svc, device(permission=GRANTED))
    kept = await register(svc, device(locale="fr-FR"))  # permission left unset
    assert kept.device.permission == GRANTED
    denied = await register(svc, device(locale="fr-FR", permission=DENIED))
    assert denied.device.permission == DENIED
    actions = [(e.kind, e.action) for e in await ledger(svc, "alice")]
    assert actions == [
        ("DEVICE", "ACTIVE"),
        ("PERMISSION", "GRANTED"),
        ("PERMISSION", "DENIED"),
    ]


async def test_a_token_registered_by_another_user_moves_to_that_user(svc: Service) -> None:
    first = (await register(svc, device("alice", permission=GRANTED))).device
    moved = await register(svc, device("bob", permission=GRANTED))
    assert not moved.created
    assert moved.previous_user_id == "alice"
    assert moved.device.device_id == first.device_id  # the same token, the same device
    assert moved.device.user_id == "bob"
    assert await listed(svc, user_id="alice") == []
    assert [d.device_id for d in await listed(svc, user_id="bob")] == [first.device_id]

    assert len(await ledger(svc, "alice")) == 2  # nothing new under the old user
    bob = await ledger(svc, "bob")
    assert [(e.kind, e.action) for e in bob] == [("DEVICE", "ACTIVE")]
    assert bob[0].change.device_id == first.device_id
    change = (await feed(svc))[-1]
    assert (change.user_id, change.previous_user_id) == ("bob", "alice")
    assert change.device == moved.device

    back = await register(svc, device("alice", permission=GRANTED))
    assert back.previous_user_id == "bob"
    again = await register(svc, device("alice", permission=GRANTED))
    assert again.previous_user_id == ""  # no move when the user stays


async def test_platform_and_provider_never_change(svc: Service) -> None:
    await register(svc, device(platform=IOS, provider=APNS, locale="fr-FR"))
    before = await counts(svc)
    cases = [
        (device(platform=IOS, provider=FCM, locale="x"), {"device.provider"}),
        (device(platform=ANDROID, provider=FCM), {"device.platform", "device.provider"}),
    ]
    for dev, fields in cases:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await register(svc, dev)
        error = error_of(raised)
        assert error.code == grpc.StatusCode.INVALID_ARGUMENT
        assert error.reason == "IMMUTABLE_FIELD"
        assert set(error.fields) == fields
    assert await counts(svc) == before
    assert (await listed(svc))[0].locale == "fr-FR"


@pytest.mark.parametrize(
    ("platform", "provider", "allowed"),
    [
        (IOS, APNS, True),
        (IOS, FCM, True),
        (ANDROID, FCM, True),
        (WEB, FCM, True),
        (ANDROID, APNS, False),
        (WEB, APNS, False),
    ],
)
async def test_platform_and_provider_pairs(
    svc: Service,
    platform: types_pb2.Platform.ValueType,
    provider: types_pb2.Provider.ValueType,
    allowed: bool,
) -> None:
    dev = device(token=FCM_TOKEN, platform=platform, provider=provider)
    if allowed:
        assert (await register(svc, dev)).created
        return
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await register(svc, dev)
    error = error_of(raised)
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert set(error.fields) == {"device.provider"}
    assert await counts(svc) == (0, 0, 0)


_BAD_TIME = Timestamp(seconds=253_402_300_800)  # year 10000


@pytest.mark.parametrize(
    ("app", "dev", "client_time", "field"),
    [
        ("", device(), None, "app_id"),
        ("shop", device(user_id=""), None, "device.user_id"),
        ("shop", device(user_id=" alice"), None, "device.user_id"),
        ("shop", device(user_id="u" * 129), None, "device.user_id"),
        ("shop", device(token=""), None, "device.token"),
        ("shop", device(token="a" * 1025), None, "device.token"),
        ("shop", device(token="has space"), None, "device.token"),
        ("shop", device(token="tökén"), None, "device.token"),
        ("shop", device(platform=types_pb2.PLATFORM_UNSPECIFIED), None, "device.platform"),
        ("shop", device(platform=9), None, "device.platform"),  # type: ignore[arg-type]
        ("shop", device(provider=types_pb2.PROVIDER_UNSPECIFIED), None, "device.provider"),
        ("shop", device(provider=7), None, "device.provider"),  # type: ignore[arg-type]
        ("shop", device(time_zone="Mars/Olympus"), None, "device.time_zone"),
        ("shop", device(time_zone="europe/paris "), None, "device.time_zone"),
        ("shop", device(locale="l" * 65), None, "device.locale"),
        ("shop", device(app_version="v" * 65), None, "device.app_version"),
        ("shop", device(os_version="o" * 65), None, "device.os_version"),
        ("shop", device(model="m" * 129), None, "device.model"),
        ("shop", device(model="bell\x07"), None, "device.model"),
        ("shop", device(permission=42), None, "device.permission"),
        ("shop", device(), _BAD_TIME, "client_time"),
    ],
)
async def test_bad_registrations_are_refused_naming_the_field_and_write_nothing(
    svc: Service, app: str, dev: resources_pb2.Device, client_time: Timestamp | None, field: str
) -> None:
    request = messages_pb2.RegisterDeviceRequest(app_id=app, device=dev)
    if client_time is not None:
        request.client_time.CopyFrom(client_time)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await svc.stub.RegisterDevice(request)
    error = error_of(raised)
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert set(error.fields) == {field}, error.fields
    assert field in error.message
    assert await counts(svc) == (0, 0, 0)


async def test_limits_are_inclusive(svc: Service) -> None:
    dev = device(token="t" * 1024, locale="l" * 64, app_version="v" * 64, os_version="o" * 64,
                 model="m" * 128, time_zone="America/Argentina/ComodRivadavia")  # fmt: skip
    assert (await register(svc, dev)).created


async def test_every_violation_of_a_registration_is_reported_at_once(svc: Service) -> None:
    bad = resources_pb2.Device(time_zone="Nowhere/Land", locale="x" * 100)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await svc.stub.RegisterDevice(messages_pb2.RegisterDeviceRequest(app_id="", device=bad))
    assert set(error_of(raised).fields) == {
        "app_id",
        "device.user_id",
        "device.token",
        "device.platform",
        "device.provider",
        "device.time_zone",
        "device.locale",
    }


async def test_a_late_retry_never_undoes_a_newer_registration(svc: Service) -> None:
    t1 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    t2 = t1 + timedelta(seconds=30)
    await register(svc, device(locale="fr-FR"), client_time=t2)
    before = await counts(svc)
    late = await register(svc, device("mallory", locale="de-DE", permission=DENIED), client_time=t1)
    assert late.superseded
    assert not late.created
    assert late.previous_user_id == ""
    assert (late.device.user_id, late.device.locale) == ("alice", "fr-FR")  # the stored one
    assert await counts(svc) == before
    same = await register(svc, device(locale="es-ES"), client_time=t2)  # not older: applied
    assert not same.superseded
    assert same.device.locale == "es-ES"
    newer = await register(
        svc, device(locale="it-IT", permission=GRANTED), client_time=t2 + t2.resolution
    )
    assert not newer.superseded
    assert newer.device.locale == "it-IT"
    assert (await ledger(svc, "alice"))[-1].client_time == t2 + t2.resolution  # reported time
    assert (await listed(svc))[0] == newer.device


# --- UpdateDevice ---------------------------------------------------------------------


async def update(
    svc: Service,
    device_id: str,
    dev: resources_pb2.Device,
    paths: list[str],
    app: str = "shop",
    client_time: datetime | None = None,
) -> messages_pb2.UpdateDeviceResponse:
    request = messages_pb2.UpdateDeviceRequest(
        app_id=app, device_id=device_id, device=dev, update_mask=FieldMask(paths=paths)
    )
    if client_time is not None:
        request.client_time.CopyFrom(stamp(client_time))
    return await svc.stub.UpdateDevice(request)


async def test_update_changes_only_the_masked_fields(svc: Service) -> None:
    made = (await register(svc, device(locale="fr-FR", model="iPhone15,2"))).device
    reply = await update(
        svc,
        made.device_id,
        resources_pb2.Device(
            locale="de-DE", permission=GRANTED, time_zone="Europe/Berlin", model="ignored",
            token="ignored", platform=ANDROID,
        ),
        ["locale", "permission", "time_zone"],
    )  # fmt: skip
    got = reply.device
    assert not reply.superseded
    assert (got.locale, got.permission, got.time_zone) == ("de-DE", GRANTED, "Europe/Berlin")
    assert (got.model, got.token, got.platform) == ("iPhone15,2", APNS_TOKEN, IOS)
    assert got.registered_at == made.registered_at  # not a registration
    assert [(e.kind, e.action) for e in await ledger(svc, "alice")][-1] == ("PERMISSION", "GRANTED")
    assert (await feed(svc))[-1].device == got
    assert (await listed(svc))[0] == got
    # Clearing a field is an update too.
    cleared = await update(svc, made.device_id, resources_pb2.Device(), ["time_zone"])
    assert cleared.device.time_zone == ""


async def test_update_of_user_moves_the_device(svc: Service) -> None:
    made = (await register(svc, device("alice"))).device
    reply = await update(svc, made.device_id, resources_pb2.Device(user_id="bob"), ["user_id"])
    assert reply.device.user_id == "bob"
    change = (await feed(svc))[-1]
    assert (change.user_id, change.previous_user_id) == ("bob", "alice")
    assert [(e.kind, e.action) for e in await ledger(svc, "bob")] == [("DEVICE", "ACTIVE")]


async def test_update_is_last_write_wins(svc: Service) -> None:
    t = datetime(2026, 2, 1, 8, 0, tzinfo=UTC)
    made = (await register(svc, device(locale="fr-FR"), client_time=t)).device
    before = await counts(svc)
    late = await update(
        svc, made.device_id, resources_pb2.Device(locale="de-DE"), ["locale"],
        client_time=t - timedelta(milliseconds=1),
    )  # fmt: skip
    assert late.superseded
    assert late.device.locale == "fr-FR"
    assert await counts(svc) == before
    newer = await update(
        svc, made.device_id, resources_pb2.Device(locale="nl-NL"), ["locale"],
        client_time=t + timedelta(seconds=1),
    )  # fmt: skip
    assert not newer.superseded
    assert newer.device.locale == "nl-NL"
    # The update moved the clock: a registration from before it is a late retry now.
    stale = await register(svc, device(locale="es-ES"), client_time=t + timedelta(milliseconds=5))
    assert stale.superseded
    assert stale.device.locale == "nl-NL"


@pytest.mark.parametrize(
    ("device_id", "dev", "paths", "fields"),
    [
        ("", resources_pb2.Device(locale="x"), ["locale"], {"device_id"}),
        ("d" * 65, resources_pb2.Device(locale="x"), ["locale"], {"device_id"}),
        ("DEV", None, ["locale"], {"device"}),
        ("DEV", resources_pb2.Device(locale="x"), [], {"update_mask"}),
        ("DEV", resources_pb2.Device(), ["platform"], {"update_mask.paths[0]"}),
        ("DEV", resources_pb2.Device(), ["locale", "token"], {"update_mask.paths[1]"}),
        ("DEV", resources_pb2.Device(), ["provider", "status", "device_id"],
         {"update_mask.paths[0]", "update_mask.paths[1]", "update_mask.paths[2]"}),
        ("DEV", resources_pb2.Device(), ["nope"], {"update_mask.paths[0]"}),
        ("DEV", resources_pb2.Device(user_id=""), ["user_id"], {"device.user_id"}),
        ("DEV", resources_pb2.Device(time_zone="Nowhere"), ["time_zone"], {"device.time_zone"}),
        ("DEV", resources_pb2.Device(model="m" * 129), ["model"], {"device.model"}),
        ("DEV", resources_pb2.Device(permission=9), ["permission"], {"device.permission"}),  # type: ignore[arg-type]
    ],
)  # fmt: skip
async def test_bad_updates_are_refused_naming_the_field_and_write_nothing(
    svc: Service,
    device_id: str,
    dev: resources_pb2.Device | None,
    paths: list[str],
    fields: set[str],
) -> None:
    made = (await register(svc, device(locale="fr-FR"))).device
    before = await counts(svc)
    request = messages_pb2.UpdateDeviceRequest(
        app_id="shop",
        device_id=made.device_id if device_id == "DEV" else device_id,
        update_mask=FieldMask(paths=paths),
    )
    if dev is not None:
        request.device.CopyFrom(dev)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await svc.stub.UpdateDevice(request)
    error = error_of(raised)
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert set(error.fields) == fields, error.fields
    for field in fields:
        if field.startswith("update_mask.paths["):
            index = int(field.removeprefix("update_mask.paths[").rstrip("]"))
            assert repr(paths[index]) in error.fields[field]  # names the path
    assert await counts(svc) == before
    assert (await listed(svc))[0] == made


async def test_values_outside_the_mask_are_not_checked(svc: Service) -> None:
    made = (await register(svc, device())).device
    reply = await update(
        svc, made.device_id, resources_pb2.Device(locale="fr-FR", time_zone="Nowhere"), ["locale"]
    )
    assert reply.device.locale == "fr-FR"
    assert reply.device.time_zone == ""


async def test_update_of_an_unknown_device_is_not_found(svc: Service) -> None:
    made = (await register(svc, device())).device
    for app, device_id in (("shop", "dev_nope"), ("news", made.device_id)):
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await update(svc, device_id, resources_pb2.Device(locale="x"), ["locale"], app=app)
        assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    assert (await listed(svc))[0] == made


# --- UnregisterDevice -----------------------------------------------------------------


async def test_unregister_by_id_or_token_is_idempotent(svc: Service) -> None:
    one = (await register(svc, device(token=APNS_TOKEN))).device
    two = (await register(svc, device(token=FCM_TOKEN, platform=ANDROID, provider=FCM))).device
    by_id = await svc.stub.UnregisterDevice(
        messages_pb2.UnregisterDeviceRequest(app_id="shop", device_id=one.device_id)
    )
    by_token = await svc.stub.UnregisterDevice(
        messages_pb2.UnregisterDeviceRequest(app_id="shop", token=FCM_TOKEN)
    )
    assert by_id.device.status == by_token.device.status == UNREGISTERED
    assert by_token.device.device_id == two.device_id
    assert await listed(svc) == []  # ACTIVE only by default
    assert {d.device_id for d in await listed(svc, statuses=[UNREGISTERED])} == {
        one.device_id,
        two.device_id,
    }
    entries = await ledger(svc, "alice")
    assert [(e.kind, e.scope_key, e.action) for e in entries][-2:] == [
        ("DEVICE", "DEVICE:IOS", "UNREGISTERED"),
        ("DEVICE", "DEVICE:ANDROID", "UNREGISTERED"),
    ]
    assert (await feed(svc))[-1].device == by_token.device
    before = await counts(svc)
    again = await svc.stub.UnregisterDevice(
        messages_pb2.UnregisterDeviceRequest(app_id="shop", device_id=one.device_id)
    )
    assert again.device == by_id.device  # a no-op
    assert await counts(svc) == before

    # Registering the token again makes it ACTIVE again, with its history.
    back = await register(svc, device(token=APNS_TOKEN))
    assert back.device.status == ACTIVE
    assert back.device.device_id == one.device_id
    assert [(e.kind, e.action) for e in await ledger(svc, "alice")][-1] == ("DEVICE", "ACTIVE")


async def test_unregister_errors(svc: Service) -> None:
    made = (await register(svc, device())).device
    before = await counts(svc)
    for request in (
        messages_pb2.UnregisterDeviceRequest(app_id="shop", device_id="dev_unknown"),
        messages_pb2.UnregisterDeviceRequest(app_id="shop", token="unknown"),
        messages_pb2.UnregisterDeviceRequest(app_id="news", device_id=made.device_id),
        messages_pb2.UnregisterDeviceRequest(app_id="news", token=APNS_TOKEN),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await svc.stub.UnregisterDevice(request)
        assert raised.value.code() == grpc.StatusCode.NOT_FOUND
        assert APNS_TOKEN not in (raised.value.details() or "")
    for request, field in (
        (messages_pb2.UnregisterDeviceRequest(app_id="shop"), "device"),
        (messages_pb2.UnregisterDeviceRequest(app_id="shop", device_id=""), "device_id"),
        (messages_pb2.UnregisterDeviceRequest(app_id="shop", token="with space"), "token"),
        (messages_pb2.UnregisterDeviceRequest(app_id="", device_id=made.device_id), "app_id"),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await svc.stub.UnregisterDevice(request)
        error = error_of(raised)
        assert error.code == grpc.StatusCode.INVALID_ARGUMENT
        assert set(error.fields) == {field}
    assert await counts(svc) == before


# --- InvalidateDevice -----------------------------------------------------------------


def report(
    *,
    device_id: str = "",
    token: str = "",
    provider: types_pb2.Provider.ValueType = APNS,
    reason: resources_pb2.InvalidationReason.ValueType = (
        resources_pb2.INVALIDATION_REASON_UNREGISTERED
    ),
    detail: str = "Unregistered",
    at: datetime | None = None,
    app: str = "shop",
) -> messages_pb2.InvalidateDeviceRequest:
    request = messages_pb2.InvalidateDeviceRequest(
        app_id=app, provider=provider, reason=reason, provider_detail=detail, send_id="send-1"
    )
    if device_id:
        request.device_id = device_id
    if token:
        request.token = token
    if at is not None:
        request.provider_timestamp.CopyFrom(stamp(at))
    return request


async def test_invalidate_records_reason_detail_and_time(svc: Service) -> None:
    made = (await register(svc, device(permission=GRANTED))).device
    registered = made.registered_at.ToDatetime(UTC)
    died = registered + timedelta(milliseconds=1)
    reply = await svc.stub.InvalidateDevice(report(token=APNS_TOKEN, at=died))
    got = reply.device
    assert reply.outcome == messages_pb2.INVALIDATION_OUTCOME_INVALIDATED
    assert got.status == INVALID
    assert got.invalid_reason == resources_pb2.INVALIDATION_REASON_UNREGISTERED
    assert got.invalid_detail == "Unregistered"
    assert got.invalidated_at.ToDatetime(UTC) == died
    assert await listed(svc) == []
    assert await listed(svc, statuses=[INVALID]) == [got]
    assert [(e.kind, e.action) for e in await ledger(svc, "alice")][-1] == ("DEVICE", "INVALID")
    assert (await feed(svc))[-1].device == got

    before = await counts(svc)
    retry = await svc.stub.InvalidateDevice(report(device_id=made.device_id, at=died))
    assert retry.outcome == messages_pb2.INVALIDATION_OUTCOME_ALREADY_INVALID
    assert retry.device == got
    assert await counts(svc) == before


async def test_invalidated_at_defaults_to_the_time_of_the_call(svc: Service) -> None:
    made = (await register(svc, device())).device
    reply = await svc.stub.InvalidateDevice(
        report(device_id=made.device_id, provider=APNS, detail="")
    )
    invalidated = reply.device.invalidated_at.ToDatetime(UTC)
    assert invalidated >= made.registered_at.ToDatetime(UTC)
    assert invalidated == reply.device.updated_at.ToDatetime(UTC)


async def test_a_report_older_than_the_latest_registration_is_stale(svc: Service) -> None:
    made = (await register(svc, device())).device
    before = await counts(svc)
    older = made.registered_at.ToDatetime(UTC) - timedelta(microseconds=1)
    reply = await svc.stub.InvalidateDevice(report(token=APNS_TOKEN, at=older))
    assert reply.outcome == messages_pb2.INVALIDATION_OUTCOME_STALE
    assert reply.device == made
    assert await counts(svc) == before
    assert await listed(svc) == [made]


async def test_invalidate_errors(svc: Service) -> None:
    made = (await register(svc, device())).device
    before = await counts(svc)
    for request in (
        report(device_id="dev_unknown"),
        report(token="unknown"),
        report(device_id=made.device_id, app="news"),
        report(token=APNS_TOKEN, app="news"),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await svc.stub.InvalidateDevice(request)
        assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    future = datetime.now(UTC) + timedelta(hours=1)
    for request, field in (
        (report(), "device"),
        (report(token=APNS_TOKEN, provider=FCM), "provider"),
        (report(token=APNS_TOKEN, provider=types_pb2.PROVIDER_UNSPECIFIED), "provider"),
        (report(token=APNS_TOKEN, reason=resources_pb2.INVALIDATION_REASON_UNSPECIFIED), "reason"),
        (report(token=APNS_TOKEN, reason=77), "reason"),  # type: ignore[arg-type]
        (report(token=APNS_TOKEN, detail="d" * 1025), "provider_detail"),
        (report(token=APNS_TOKEN, at=future), "provider_timestamp"),
        (report(token="a b"), "token"),
        (report(device_id="é"), "device_id"),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await svc.stub.InvalidateDevice(request)
        error = error_of(raised)
        assert error.code == grpc.StatusCode.INVALID_ARGUMENT, field
        assert set(error.fields) == {field}, (field, error.fields)
    assert await counts(svc) == before
    assert await listed(svc) == [made]


async def test_a_dead_token_revives_only_when_registered_after_invalidated_at(
    any_database_url: str, tmp_path: Path
) -> None:
    clock_file = tmp_path / "clock.json"
    config = local_test_config(
        ConsentConfig, any_database_url, PSEUDONYM_KEY=KEY, CLOCK_FILE=str(clock_file)
    )
    start = datetime(2030, 3, 30, 12, 0, tzinfo=UTC)
    shift_clock_file(clock_file, to=start, speed=1.0)
    app = bootstrap(config)
    async with serving(app) as channel:
        svc = Service(
            consent_pb2_grpc.ConsentServiceStub(channel),
            unit_of_work_factory(app.database),
            Pseudonyms(KEY),
        )
        made = (await register(svc, device(permission=GRANTED))).device
        # The provider says the token died two minutes from the service's now (its
        # clock and delivery's disagree a little): a registration before then does
        # not revive it.
        died = start + timedelta(minutes=2)
        reply = await svc.stub.InvalidateDevice(report(device_id=made.device_id, at=died))
        assert reply.outcome == messages_pb2.INVALIDATION_OUTCOME_INVALIDATED
        early = await register(svc, device(permission=GRANTED, locale="fr-FR"))
        assert early.device.status == INVALID
        assert early.device.locale == "fr-FR"  # the rest of the registration applies
        assert early.device.invalidated_at.ToDatetime(UTC) == died
        assert early.device.registered_at.ToDatetime(UTC) < died
        assert await listed(svc) == []

        shift_clock_file(clock_file, to=died + timedelta(seconds=1))
        late = await register(svc, device(permission=GRANTED, locale="fr-FR"))
        assert late.device.status == ACTIVE
        assert late.device.registered_at.ToDatetime(UTC) > died
        assert not late.device.HasField("invalidated_at")
        assert late.device.invalid_reason == resources_pb2.INVALIDATION_REASON_UNSPECIFIED
        assert late.device.invalid_detail == ""
        assert [(e.kind, e.action) for e in await ledger(svc, "alice")][-2:] == [
            ("DEVICE", "INVALID"),
            ("DEVICE", "ACTIVE"),
        ]
        assert (await feed(svc))[-1].device == late.device
        # The first report, retried now, predates this registration: stale.
        retried = await svc.stub.InvalidateDevice(report(device_id=made.device_id, at=died))
        assert retried.outcome == messages_pb2.INVALIDATION_OUTCOME_STALE
        assert retried.device.status == ACTIVE


async def test_an_unregistered_device_can_be_invalidated(svc: Service) -> None:
    made = (await register(svc, device())).device
    await svc.stub.UnregisterDevice(
        messages_pb2.UnregisterDeviceRequest(app_id="shop", device_id=made.device_id)
    )
    reply = await svc.stub.InvalidateDevice(report(device_id=made.device_id))
    assert reply.outcome == messages_pb2.INVALIDATION_OUTCOME_INVALIDATED
    assert reply.device.status == INVALID


# --- ListDevices ----------------------------------------------------------------------


async def test_list_pages_in_id_order_and_filters(svc: Service) -> None:
    made = []
    for index, (user, platform, provider) in enumerate(
        [("alice", IOS, APNS), ("bob", ANDROID, FCM), ("alice", WEB, FCM),
         ("carol", IOS, FCM), ("bob", IOS, APNS)]
    ):  # fmt: skip
        dev = device(user, token=f"token-{index}", platform=platform, provider=provider)
        made.append((await register(svc, dev)).device)
    await svc.stub.UnregisterDevice(
        messages_pb2.UnregisterDeviceRequest(app_id="shop", token="token-4")
    )
    await svc.stub.InvalidateDevice(report(token="token-3", provider=FCM))

    seen: list[str] = []
    token, pages = "", 0
    while True:
        reply = await svc.stub.ListDevices(
            messages_pb2.ListDevicesRequest(
                app_id="shop", statuses=[ACTIVE, INVALID, UNREGISTERED], page_size=2,
                page_token=token,
            )
        )  # fmt: skip
        seen += [d.device_id for d in reply.devices]
        pages += 1
        token = reply.next_page_token
        if not token:
            break
    assert seen == sorted(d.device_id for d in made)
    assert pages == 3

    def ids(devices: list[resources_pb2.Device]) -> set[str]:
        return {d.token for d in devices}

    assert ids(await listed(svc)) == {"token-0", "token-1", "token-2"}
    assert ids(await listed(svc, user_id="alice")) == {"token-0", "token-2"}
    assert ids(await listed(svc, user_id="bob", statuses=[UNREGISTERED])) == {"token-4"}
    assert ids(await listed(svc, platform=IOS, statuses=[ACTIVE, INVALID])) == {
        "token-0",
        "token-3",
    }
    assert ids(await listed(svc, statuses=[INVALID, INVALID])) == {"token-3"}
    assert await listed(svc, user_id="nobody") == []


async def test_list_refuses_bad_paging_and_filters(svc: Service) -> None:
    await register(svc, device(token="t1"))
    await register(svc, device(token="t2"))
    first = await svc.stub.ListDevices(messages_pb2.ListDevicesRequest(app_id="shop", page_size=1))
    assert first.next_page_token
    cases = [
        (messages_pb2.ListDevicesRequest(app_id="shop", page_size=-1), "page_size"),
        (messages_pb2.ListDevicesRequest(app_id="shop", page_token="garbage!"), "page_token"),
        (
            messages_pb2.ListDevicesRequest(
                app_id="shop", user_id="alice", page_token=first.next_page_token
            ),
            "page_token",
        ),
        (
            messages_pb2.ListDevicesRequest(
                app_id="shop", statuses=[INVALID], page_token=first.next_page_token
            ),
            "page_token",
        ),
        (messages_pb2.ListDevicesRequest(app_id="shop", statuses=[0]), "statuses[0]"),  # type: ignore[list-item]
        (messages_pb2.ListDevicesRequest(app_id="shop", statuses=[ACTIVE, 8]), "statuses[1]"),  # type: ignore[list-item]
        (messages_pb2.ListDevicesRequest(app_id="shop", platform=5), "platform"),  # type: ignore[arg-type]
        (messages_pb2.ListDevicesRequest(app_id="shop", user_id=" bob"), "user_id"),
        (messages_pb2.ListDevicesRequest(app_id=""), "app_id"),
    ]
    for request, field in cases:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await svc.stub.ListDevices(request)
        error = error_of(raised)
        assert error.code == grpc.StatusCode.INVALID_ARGUMENT
        assert set(error.fields) == {field}, (field, error.fields)
    # The same filters (statuses in any order) accept the token.
    second = await svc.stub.ListDevices(
        messages_pb2.ListDevicesRequest(
            app_id="shop", page_size=1, page_token=first.next_page_token
        )
    )
    assert len(second.devices) == 1
    assert second.devices[0] != first.devices[0]


# --- Apps, grants and the repository --------------------------------------------------


async def test_apps_never_see_each_others_devices(svc: Service) -> None:
    shop = (await register(svc, device("alice"), app="shop")).device
    news = await register(svc, device("zed", locale="en-GB"), app="news")
    assert news.created
    assert news.previous_user_id == ""
    assert news.device.device_id != shop.device_id
    assert [d.device_id for d in await listed(svc, app="shop")] == [shop.device_id]
    assert [d.device_id for d in await listed(svc, app="news")] == [news.device.device_id]
    await svc.stub.UnregisterDevice(
        messages_pb2.UnregisterDeviceRequest(app_id="news", token=APNS_TOKEN)
    )
    await svc.stub.InvalidateDevice(report(token=APNS_TOKEN, app="news"))
    assert await listed(svc, app="shop") == [shop]  # untouched
    assert [e.kind for e in await ledger(svc, "alice", app="news")] == []
    assert len(await ledger(svc, "zed", app="news")) == 4


async def test_a_caller_granted_one_app_may_not_touch_another(
    database_url: str, tmp_path: Path
) -> None:
    tokens = tmp_path / "callers.toml"
    digest = hashlib.sha256(b"shop-secret").hexdigest()
    tokens.write_text(
        f'[[caller]]\nname = "shop-backend"\ntoken_sha256 = "{digest}"\n'
        'methods = ["*"]\napps = ["shop"]\n'
    )
    config = local_test_config(
        ConsentConfig, database_url, PSEUDONYM_KEY=KEY, AUTH_TOKENS_FILE=str(tokens)
    )
    auth = (("authorization", "Bearer shop-secret"),)
    async with serving(bootstrap(config)) as channel:
        stub: Stub = consent_pb2_grpc.ConsentServiceStub(channel)
        mine = await stub.RegisterDevice(
            messages_pb2.RegisterDeviceRequest(app_id="shop", device=device()), metadata=auth
        )
        device_id = mine.device.device_id
        calls: list[Awaitable[Any]] = [
            stub.RegisterDevice(
                messages_pb2.RegisterDeviceRequest(app_id="news", device=device()), metadata=auth
            ),
            stub.UpdateDevice(
                messages_pb2.UpdateDeviceRequest(
                    app_id="news",
                    device_id=device_id,
                    device=resources_pb2.Device(locale="x"),
                    update_mask=FieldMask(paths=["locale"]),
                ),
                metadata=auth,
            ),
            stub.UnregisterDevice(
                messages_pb2.UnregisterDeviceRequest(app_id="news", device_id=device_id),
                metadata=auth,
            ),
            stub.InvalidateDevice(report(device_id=device_id, app="news"), metadata=auth),
            stub.ListDevices(messages_pb2.ListDevicesRequest(app_id="news"), metadata=auth),
        ]
        for call in calls:
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await call
            assert rich_error(raised.value).reason == "APP_NOT_ALLOWED"


async def test_devices_of_users_loads_a_batch_in_one_query(any_database_url: str) -> None:
    config = local_test_config(ConsentConfig, any_database_url, PSEUDONYM_KEY=KEY)
    app = bootstrap(config)
    async with serving(app) as channel:
        svc = Service(
            consent_pb2_grpc.ConsentServiceStub(channel),
            unit_of_work_factory(app.database),
            Pseudonyms(KEY),
        )
        for user in ("u1", "u2", "u3"):
            for index in range(2):
                await register(svc, device(user, token=f"{user}-{index}"))
        await register(svc, device("u1", token="u1-0", locale="fr-FR"))  # registered last
        await register(svc, device("u1", token="elsewhere"), app="news")
        await svc.stub.UnregisterDevice(
            messages_pb2.UnregisterDeviceRequest(app_id="shop", token="u2-1")
        )
        users = ["u1", "u2", "ghost"] + [f"nobody-{i}" for i in range(997)]
        statements: list[str] = []

        def count(*args: Any) -> None:
            statements.append(str(args[2]))

        engine = app.database.engine.sync_engine
        async with svc.uow(read_only=True) as work:
            await work.session.connection()  # the transaction's own statements first
            event.listen(engine, "before_cursor_execute", count)
            try:
                found = await work.devices.devices_of_users("shop", users)
                usable = await work.devices.devices_of_users(
                    "shop", users, statuses=[DeviceStatus.ACTIVE]
                )
                summaries = await work.devices.summaries_of_users("shop", users)
            finally:
                event.remove(engine, "before_cursor_execute", count)
        assert len(statements) == 3, statements  # one per call
        assert {user: [s.device_id for s in found_] for user, found_ in summaries.items()} == {
            user: [d.device_id for d in devices] for user, devices in found.items()
        }
        for device_ in found["u1"] + found["u2"]:
            summary = next(
                s for s in summaries[device_.user_id] if s.device_id == device_.device_id
            )
            assert (summary.token, summary.locale, summary.status, summary.permission) == (
                device_.token,
                device_.locale,
                device_.status,
                device_.permission,
            )
            assert summary.usable == device_.usable
        assert set(found) == {"u1", "u2"}
        assert [d.token for d in found["u1"]] == ["u1-0", "u1-1"]  # latest registration first
        assert found["u1"][0].locale == "fr-FR"
        assert {d.token for d in found["u2"]} == {"u2-0", "u2-1"}
        assert [d.token for d in usable["u2"]] == ["u2-0"]
        assert all(d.app_id == "shop" for ds in found.values() for d in ds)
        served = {d.device_id: d for d in await listed(svc, user_id="u1")}
        assert all(d.to_proto() == served[d.device_id] for d in found["u1"])
        with pytest.raises(ValueError, match="1000"):
            async with svc.uow(read_only=True) as work:
                await work.devices.devices_of_users("shop", [f"u{i}" for i in range(1001)])


async def test_concurrent_registrations_of_one_token_make_one_device(svc: Service) -> None:
    users = [f"user-{index}" for index in range(12)]
    replies = await asyncio.gather(
        *(register(svc, device(user, token=FCM_TOKEN, platform=ANDROID, provider=FCM))
          for user in users)
    )  # fmt: skip
    assert sum(reply.created for reply in replies) == 1
    assert len({reply.device.device_id for reply in replies}) == 1
    assert (await counts(svc))[0] == 1
    changes = await feed(svc)
    assert len(changes) == len(users)  # each applied registration moved the token
    for earlier, later in itertools.pairwise(changes):
        assert later.previous_user_id == earlier.user_id
    owner = changes[-1].user_id
    assert [d.user_id for d in await listed(svc)] == [owner]
    # Each user's chain holds its one DEVICE entry (plus the creator's PERMISSION) and
    # verifies: the appends did not interleave.
    for user in users:
        async with svc.uow(read_only=True) as work:
            chain = await work.ledger.entries(svc.pseudonyms.subject("shop", user))
        assert verify_chain(chain, svc.pseudonyms.ledger_key).verified
        assert [e.fields.kind for e in chain][:1] == ["DEVICE"]


async def test_delete_of_user_removes_only_that_users_devices(svc: Service) -> None:
    await register(svc, device("alice", token="a-1"))
    await register(svc, device("alice", token="a-2"))
    await register(svc, device("bob", token="b-1"))
    await register(svc, device("alice", token="a-1"), app="news")
    async with svc.uow() as work:
        assert await work.devices.delete_of_user("shop", "alice") == 2
        await work.commit()
    assert [d.token for d in await listed(svc)] == ["b-1"]
    assert [d.token for d in await listed(svc, app="news")] == ["a-1"]


def permission_name(value: int) -> str:
    """The ledger's action for a permission value."""
    name = types_pb2.PermissionState.Name(value)  # type: ignore[arg-type]
    return name.removeprefix("PERMISSION_STATE_")


def status_name(value: int) -> str:
    """The ledger's action for a status value."""
    return resources_pb2.DeviceStatus.Name(value).removeprefix("DEVICE_STATUS_")  # type: ignore[arg-type]


@dataclass
class Modelled:
    """What the test expects of one token, folded from the requests it sent."""

    device_id: str
    user: str
    locale: str
    permission: int
    status: int
    changed_at: datetime
    registered_at: datetime


async def test_random_sequences_agree_with_a_fold_of_the_requests(svc: Service) -> None:
    """Registrations (moves, late retries), updates, unregistrations and provider
    reports in random order on a few tokens; after every step the answers, the stored
    devices, the ledger entries and the feed agree with a small model of the rules."""
    chance = random.Random(20261204)
    base = datetime(2026, 1, 1, tzinfo=UTC)
    seen: collections.Counter[str] = collections.Counter()
    for run in range(3):
        app = f"app-{run}"
        model: dict[str, Modelled] = {}
        entries: list[tuple[str, str, str]] = []  # (user, kind, action) in ledger order
        changes = 0
        for step in range(40):
            where = f"run {run} step {step}"
            token = chance.choice(["t-a", "t-b", "t-c"])
            known = model.get(token)
            action = chance.choice(["register"] * 4 + ["update", "unregister", "invalidate"])
            client_time = (
                None if chance.random() < 0.3 else base + timedelta(seconds=chance.randrange(8))
            )
            if action == "register" or known is None:
                user = chance.choice(["ann", "ben", "cem"])
                locale = chance.choice(["fr-FR", "de-DE"])
                permission = chance.choice([0, GRANTED, DENIED])
                reply = await register(
                    svc, device(user, token=token, locale=locale, permission=permission),
                    app=app, client_time=client_time,
                )  # fmt: skip
                got = reply.device
                if known is None:
                    assert reply.created, where
                    model[token] = Modelled(
                        got.device_id, user, locale, permission or NOT_DETERMINED, ACTIVE,
                        client_time or got.registered_at.ToDatetime(UTC),
                        got.registered_at.ToDatetime(UTC),
                    )  # fmt: skip
                    entries.append((user, "DEVICE", "ACTIVE"))
                    entries.append(
                        (user, "PERMISSION", permission_name(permission or NOT_DETERMINED))
                    )
                    changes += 1
                elif client_time is not None and client_time < known.changed_at:
                    assert reply.superseded, where
                    seen["register superseded"] += 1
                    assert got.registered_at.ToDatetime(UTC) == known.registered_at, where
                else:
                    assert not reply.superseded, where
                    assert not reply.created, where
                    moved = user != known.user
                    seen["moved" if moved else "registered again"] += 1
                    assert reply.previous_user_id == (known.user if moved else ""), where
                    new_permission = permission or known.permission
                    revived = known.status != ACTIVE
                    seen["revived"] += revived
                    if moved or revived:
                        entries.append((user, "DEVICE", "ACTIVE"))
                    if new_permission != known.permission:
                        entries.append((user, "PERMISSION", permission_name(new_permission)))
                    if (
                        moved
                        or revived
                        or new_permission != known.permission
                        or (locale != known.locale)
                    ):
                        changes += 1
                    known.user, known.locale, known.permission = user, locale, new_permission
                    known.status = ACTIVE
                    known.registered_at = got.registered_at.ToDatetime(UTC)
                    known.changed_at = client_time or known.registered_at
            elif action == "update":
                user = chance.choice([known.user, "dan"])
                locale = chance.choice(["fr-FR", "it-IT"])
                reply_u = await update(
                    svc, known.device_id, resources_pb2.Device(user_id=user, locale=locale),
                    ["user_id", "locale"], app=app, client_time=client_time,
                )  # fmt: skip
                if client_time is not None and client_time < known.changed_at:
                    assert reply_u.superseded, where
                    seen["update superseded"] += 1
                else:
                    assert not reply_u.superseded, where
                    seen["updated"] += 1
                    if user != known.user:
                        entries.append((user, "DEVICE", status_name(known.status)))
                    if (user, locale) != (known.user, known.locale):
                        changes += 1
                    known.user, known.locale = user, locale
                    if client_time is not None:
                        known.changed_at = client_time
                    else:
                        known.changed_at = reply_u.device.updated_at.ToDatetime(UTC)
            elif action == "unregister":
                reply_r = await svc.stub.UnregisterDevice(
                    messages_pb2.UnregisterDeviceRequest(app_id=app, token=token)
                )
                assert reply_r.device.status == UNREGISTERED, where
                seen["unregistered again" if known.status == UNREGISTERED else "unregistered"] += 1
                if known.status != UNREGISTERED:
                    entries.append((known.user, "DEVICE", "UNREGISTERED"))
                    changes += 1
                    known.status = UNREGISTERED
            else:
                stale = chance.random() < 0.3
                at = known.registered_at - timedelta(milliseconds=1) if stale else None
                reply_i = await svc.stub.InvalidateDevice(report(token=token, at=at, app=app))
                if known.status == INVALID:
                    expected = messages_pb2.INVALIDATION_OUTCOME_ALREADY_INVALID
                elif stale:
                    expected = messages_pb2.INVALIDATION_OUTCOME_STALE
                else:
                    expected = messages_pb2.INVALIDATION_OUTCOME_INVALIDATED
                    entries.append((known.user, "DEVICE", "INVALID"))
                    changes += 1
                    known.status = INVALID
                assert reply_i.outcome == expected, where
                seen[messages_pb2.InvalidationOutcome.Name(expected)] += 1

            stored = {
                d.token: (d.device_id, d.user_id, d.locale, d.permission, d.status)
                for d in await listed(svc, app=app, statuses=[ACTIVE, INVALID, UNREGISTERED])
            }
            assert stored == {
                token: (m.device_id, m.user, m.locale, m.permission, m.status)
                for token, m in model.items()
            }, where
            subjects = {svc.pseudonyms.subject(app, u): u for u in ("ann", "ben", "cem", "dan")}
            async with svc.uow(read_only=True) as work:
                rows = (
                    await work.session.execute(
                        select(LedgerEntryRow.subject, LedgerEntryRow.kind, LedgerEntryRow.action)
                        .where(LedgerEntryRow.app_id == app)
                        .order_by(LedgerEntryRow.sequence)
                    )
                ).all()
                fed, _ = await work.feed.read_after(app, 0, 100_000)
            assert [(subjects[s], k, a) for s, k, a in rows] == entries, where
            assert len(fed) == changes, where
    # Every rule was exercised, so the agreement above means something.
    assert set(seen) >= {
        "register superseded",
        "moved",
        "registered again",
        "revived",
        "update superseded",
        "updated",
        "unregistered",
        "unregistered again",
        "INVALIDATION_OUTCOME_INVALIDATED",
        "INVALIDATION_OUTCOME_ALREADY_INVALID",
        "INVALIDATION_OUTCOME_STALE",
    }, seen
