"""GetAudienceHealth end to end through real gRPC, on SQLite and PostgreSQL: exact figures
for a seeded app (devices of several users with mixed permission and status, choices of
every scope, opt-outs before, inside and after the window on the service clock, an
erased user, another app beside it), counts that survive the deletion of every ledger
payload, a population larger than one batch, and the documented errors."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration
from sqlalchemy import delete, func, insert, select

from pushwarden.common.v1 import types_pb2
from pushwarden.consent.v1 import consent_pb2_grpc, messages_pb2, resources_pb2
from pushwarden.runtime.clock import shift_clock_file
from pushwarden.runtime.servicetest import local_test_config, rich_error, serving
from pushwarden.services.consent.bootstrap import bootstrap
from pushwarden.services.consent.config import ConsentConfig
from pushwarden.services.consent.models import DeviceRow, LedgerPayloadRow
from pushwarden.services.consent.storage.health import category_of_scope_key
from pushwarden.services.consent.storage.uow import ConsentUow, unit_of_work_factory

if TYPE_CHECKING:  # the async stub type exists in the typed stubs only
    from pushwarden.consent.v1.consent_pb2_grpc import ConsentServiceAsyncStub as Stub

KEY = "k" * 64
APP = "shop"
MARKETING = types_pb2.CATEGORY_KIND_MARKETING
TRANSACTIONAL = types_pb2.CATEGORY_KIND_TRANSACTIONAL
GRANTED = types_pb2.PERMISSION_STATE_GRANTED
PROVISIONAL = types_pb2.PERMISSION_STATE_PROVISIONAL
DENIED = types_pb2.PERMISSION_STATE_DENIED
OPT_IN = resources_pb2.CONSENT_ACTION_OPT_IN
OPT_OUT = resources_pb2.CONSENT_ACTION_OPT_OUT
ALL_MARKETING = resources_pb2.ConsentScope(kind=resources_pb2.CONSENT_SCOPE_KIND_ALL_MARKETING)
PUSH_CHANNEL = resources_pb2.ConsentScope(
    kind=resources_pb2.CONSENT_SCOPE_KIND_CHANNEL, channel=types_pb2.CHANNEL_PUSH
)
NOW = datetime(2030, 6, 15, 12, 0, tzinfo=UTC)


def category_scope(
    category_id: str, channel: types_pb2.Channel.ValueType = types_pb2.CHANNEL_UNSPECIFIED
) -> resources_pb2.ConsentScope:
    return resources_pb2.ConsentScope(
        kind=resources_pb2.CONSENT_SCOPE_KIND_CATEGORY, category_id=category_id, channel=channel
    )


def topic_scope(topic_id: str) -> resources_pb2.ConsentScope:
    return resources_pb2.ConsentScope(
        kind=resources_pb2.CONSENT_SCOPE_KIND_TOPIC, topic_id=topic_id
    )


@dataclass(frozen=True)
class Service:
    stub: Stub
    uow: ConsentUow
    clock_file: Path


@pytest.fixture
async def svc(any_database_url: str, tmp_path: Path) -> AsyncIterator[Service]:
    clock_file = tmp_path / "clock.json"
    config = local_test_config(
        ConsentConfig, any_database_url, PSEUDONYM_KEY=KEY, CLOCK_FILE=str(clock_file)
    )
    app = bootstrap(config)
    async with serving(app) as channel:
        yield Service(
            consent_pb2_grpc.ConsentServiceStub(channel),
            unit_of_work_factory(app.database),
            clock_file,
        )


_counter = itertools.count()


async def define(
    stub: Stub,
    category_id: str,
    kind: types_pb2.CategoryKind.ValueType,
    default: resources_pb2.DefaultState.ValueType = resources_pb2.DEFAULT_STATE_OPTED_IN,
    *,
    can_opt_out: bool = True,
    app: str = APP,
) -> None:
    await stub.DefineCategory(
        messages_pb2.DefineCategoryRequest(
            app_id=app,
            category=resources_pb2.Category(
                category_id=category_id,
                kind=kind,
                default_state=default,
                user_can_opt_out=can_opt_out,
            ),
        )
    )


async def register(
    stub: Stub, user: str, permission: types_pb2.PermissionState.ValueType, app: str = APP
) -> resources_pb2.Device:
    reply = await stub.RegisterDevice(
        messages_pb2.RegisterDeviceRequest(
            app_id=app,
            device=resources_pb2.Device(
                user_id=user,
                token=f"token-{next(_counter):04d}-" + "a" * 40,
                platform=types_pb2.PLATFORM_IOS,
                provider=types_pb2.PROVIDER_APNS,
                permission=permission,
            ),
        )
    )
    return reply.device


async def consent(
    stub: Stub,
    user: str,
    scope: resources_pb2.ConsentScope,
    action: resources_pb2.ConsentAction.ValueType,
    app: str = APP,
) -> None:
    await stub.RecordConsent(
        messages_pb2.RecordConsentRequest(
            app_id=app,
            user_id=user,
            scope=scope,
            action=action,
            source=resources_pb2.CONSENT_SOURCE_PREFERENCE_CENTER,
            idempotency_key=f"key-{next(_counter)}",
        )
    )


async def health(
    stub: Stub, app: str = APP, window: timedelta | None = None
) -> messages_pb2.GetAudienceHealthResponse:
    request = messages_pb2.GetAudienceHealthRequest(app_id=app)
    if window is not None:
        request.window.FromTimedelta(window)
    return await stub.GetAudienceHealth(request)


def per_category(reply: messages_pb2.GetAudienceHealthResponse) -> dict[str, tuple[Any, ...]]:
    return {
        c.category_id: (c.kind, c.users_allowed, c.opt_in_rate, c.opt_outs_in_window)
        for c in reply.categories
    }


async def seed(svc: Service) -> None:
    """The seeded app (the expected figures are in the tests below).

    Devices: u1 GRANTED + DENIED, u2 PROVISIONAL, u3 GRANTED, u4 DENIED only, u5 GRANTED
    then invalidated, u6 GRANTED then unregistered, u7 GRANTED, erased and registered
    again (suppressed), u8 and u9 GRANTED. Users with a usable device: u1 u2 u3 u7 u8 u9.
    """
    stub = svc.stub
    for app in (APP, "other"):
        await define(stub, "promos", MARKETING, app=app)
    await define(stub, "beta", MARKETING, resources_pb2.DEFAULT_STATE_OPTED_OUT)
    await define(stub, "orders", TRANSACTIONAL, can_opt_out=False)
    await define(stub, "digest", TRANSACTIONAL)
    for user, permission in [
        ("u1", GRANTED),
        ("u1", DENIED),
        ("u2", PROVISIONAL),
        ("u3", GRANTED),
        ("u4", DENIED),
        ("u7", GRANTED),
        ("u8", GRANTED),
        ("u9", GRANTED),
    ]:
        await register(stub, user, permission)
    dead = await register(stub, "u5", GRANTED)
    await stub.InvalidateDevice(
        messages_pb2.InvalidateDeviceRequest(
            app_id=APP,
            device_id=dead.device_id,
            provider=types_pb2.PROVIDER_APNS,
            reason=resources_pb2.INVALIDATION_REASON_UNREGISTERED,
        )
    )
    gone = await register(stub, "u6", GRANTED)
    await stub.UnregisterDevice(
        messages_pb2.UnregisterDeviceRequest(app_id=APP, device_id=gone.device_id)
    )
    await register(stub, "x1", GRANTED, app="other")

    # 40 days before now: outside the default window, inside a 50-day one.
    shift_clock_file(svc.clock_file, to=NOW - timedelta(days=40))
    await consent(stub, "u3", category_scope("promos"), OPT_OUT)
    await consent(stub, "u9", category_scope("promos"), OPT_OUT)
    await consent(stub, "u5", ALL_MARKETING, OPT_OUT)

    # Two days before now: inside the window.
    shift_clock_file(svc.clock_file, to=NOW - timedelta(days=2))
    await consent(stub, "u2", ALL_MARKETING, OPT_OUT)
    await consent(stub, "u6", ALL_MARKETING, OPT_OUT)  # counts: opt-outs are history
    await consent(stub, "u3", category_scope("beta"), OPT_IN)
    await consent(stub, "u3", category_scope("digest"), OPT_OUT)
    await consent(stub, "u4", category_scope("promos"), OPT_OUT)
    await consent(stub, "u8", PUSH_CHANNEL, OPT_OUT)  # a channel opt-out is not universal
    await consent(stub, "u8", category_scope("promos", types_pb2.CHANNEL_PUSH), OPT_OUT)
    await consent(stub, "u9", category_scope("promos"), OPT_IN)
    await consent(stub, "u1", topic_scope("news"), OPT_OUT)
    await consent(stub, "x1", ALL_MARKETING, OPT_OUT, app="other")
    await consent(stub, "x1", category_scope("promos"), OPT_OUT, app="other")

    # After now: the window ends now, so these do not count yet.
    shift_clock_file(svc.clock_file, to=NOW + timedelta(days=1))
    await consent(stub, "u10", ALL_MARKETING, OPT_OUT)
    await consent(stub, "u10", category_scope("promos"), OPT_OUT)

    shift_clock_file(svc.clock_file, to=NOW)
    # An erased user who registers again stays out of marketing (suppressed by pseudonym).
    erased = await stub.EraseUser(messages_pb2.EraseUserRequest(app_id=APP, user_id="u7"))
    assert erased.devices_deleted == 1
    await register(stub, "u7", GRANTED)


# Per category: kind, users allowed, opt-in rate (of the six users with a usable
# device), opt-outs in the default window (the category's own plus the two universal).
EXPECTED_CATEGORIES = {
    # promos: u1 and u9 (u2 all marketing, u3 category, u7 erased, u8 push channel out).
    "promos": (MARKETING, 2, 2 / 6, 2 + 2),  # u4, u8 (push channel scope)
    "beta": (MARKETING, 1, 1 / 6, 0 + 2),  # u3 opted in to an opted-out default
    "digest": (TRANSACTIONAL, 5, 5 / 6, 1 + 2),  # u3 opted out
    "orders": (TRANSACTIONAL, 6, 1.0, 0 + 2),
}


async def test_a_seeded_app_gives_exact_figures(svc: Service) -> None:
    await seed(svc)
    reply = await health(svc.stub)
    assert reply.devices_total == 8  # u1 x2, u2, u3, u4, u7, u8, u9
    assert reply.devices_opted_in == 6  # u1's GRANTED one, u2, u3, u7, u8, u9
    assert reply.device_opt_in_rate == pytest.approx(6 / 8)
    assert reply.devices_invalid == 1  # u5
    assert reply.users_total == 7  # u1 u2 u3 u4 u7 u8 u9
    assert reply.opt_outs_in_window == 2  # u2, u6 (not u5: too old; not u10: after now)
    assert reply.window.ToTimedelta() == timedelta(days=30)  # the default
    assert [c.category_id for c in reply.categories] == ["beta", "digest", "orders", "promos"]
    got = per_category(reply)
    assert got.keys() == EXPECTED_CATEGORIES.keys()
    for category_id, (kind, allowed, rate, opt_outs) in EXPECTED_CATEGORIES.items():
        assert got[category_id][:2] == (kind, allowed), category_id
        assert got[category_id][2] == pytest.approx(rate), category_id
        assert got[category_id][3] == opt_outs, category_id


async def test_the_window_decides_which_opt_outs_count(svc: Service) -> None:
    await seed(svc)
    wide = await health(svc.stub, window=timedelta(days=50))
    assert wide.window.ToTimedelta() == timedelta(days=50)
    assert wide.opt_outs_in_window == 3  # u5's old one as well
    opt_outs = {c.category_id: c.opt_outs_in_window for c in wide.categories}
    assert opt_outs == {"promos": 4 + 3, "beta": 3, "digest": 1 + 3, "orders": 3}
    narrow = await health(svc.stub, window=timedelta(days=1))
    assert narrow.opt_outs_in_window == 0
    assert {c.category_id: c.opt_outs_in_window for c in narrow.categories} == {
        "promos": 0,
        "beta": 0,
        "digest": 0,
        "orders": 0,
    }
    # The window does not change who is reachable.
    assert per_category(narrow).keys() == per_category(wide).keys()
    assert [c.users_allowed for c in narrow.categories] == [1, 5, 6, 2]
    # A day later, u10's opt-outs fall inside the window.
    shift_clock_file(svc.clock_file, to=NOW + timedelta(days=2))
    later = await health(svc.stub)
    assert later.opt_outs_in_window == 3  # u2, u6, u10
    assert {c.category_id: c.opt_outs_in_window for c in later.categories}["promos"] == 3 + 3


async def test_opt_out_counts_need_no_ledger_payloads(svc: Service) -> None:
    await seed(svc)
    before = await health(svc.stub, window=timedelta(days=50))
    async with svc.uow() as work:  # what erasure does to every erased user's entries
        await work.session.execute(delete(LedgerPayloadRow))
        await work.commit()
        left = await work.session.scalar(select(func.count()).select_from(LedgerPayloadRow))
    assert left == 0
    assert await health(svc.stub, window=timedelta(days=50)) == before


async def test_apps_are_apart_and_an_empty_app_is_all_zero(svc: Service) -> None:
    await seed(svc)
    other = await health(svc.stub, app="other")
    assert (other.devices_total, other.devices_opted_in, other.users_total) == (1, 1, 1)
    assert other.device_opt_in_rate == 1.0
    assert other.opt_outs_in_window == 1
    assert per_category(other) == {"promos": (MARKETING, 0, 0.0, 1 + 1)}
    empty = await health(svc.stub, app="nobody")
    assert empty == messages_pb2.GetAudienceHealthResponse(window=empty.window)
    assert empty.window.ToTimedelta() == timedelta(days=30)


async def test_a_population_larger_than_one_batch_is_counted_exactly(svc: Service) -> None:
    """2,345 users (three batches) inserted straight into storage; a few opt out
    through the RPC."""
    users = 2345
    rows = []
    for i in range(users):
        at = NOW - timedelta(days=3)
        rows.append(
            {
                "device_id": f"dev-{i:05d}",
                "app_id": "big",
                "token": f"tok-{i:05d}",
                "user_id": f"user-{i:05d}",
                "platform": "ANDROID",
                "provider": "FCM",
                "time_zone": "Europe/Berlin",
                "locale": "de-DE",
                "app_version": "1.0",
                "permission": "DENIED" if i % 3 == 0 else "GRANTED",
                "os_version": "14",
                "model": "Pixel",
                "status": "ACTIVE",
                "invalid_reason": None,
                "invalid_detail": "",
                "invalidated_at": None,
                "created_at": at,
                "updated_at": at,
                "registered_at": at,
                "changed_at": at,
            }
        )
    async with svc.uow() as work:
        await work.session.execute(insert(DeviceRow), rows)
        await work.commit()
    await define(svc.stub, "promos", MARKETING, app="big")
    shift_clock_file(svc.clock_file, to=NOW)
    # Usable users 1, 2, 1001, 2344 opt out; 3 (no permission) does as well.
    for i in (1, 2, 1001, 2344, 3):
        await consent(svc.stub, f"user-{i:05d}", ALL_MARKETING, OPT_OUT, app="big")
    reply = await health(svc.stub, app="big")
    usable = sum(1 for i in range(users) if i % 3 != 0)
    assert reply.devices_total == reply.users_total == users
    assert reply.devices_opted_in == usable
    assert reply.opt_outs_in_window == 5
    assert per_category(reply) == {
        "promos": (MARKETING, usable - 4, pytest.approx((usable - 4) / usable), 5)
    }


async def test_the_population_walk_pages_by_user_id(svc: Service) -> None:
    await seed(svc)
    async with svc.uow(read_only=True) as work:
        batches = [b async for b in work.health.users_with_usable_device(APP, batch=4)]
    assert batches == [["u1", "u2", "u3", "u7"], ["u8", "u9"]]


@pytest.mark.parametrize(
    ("scope_key", "category_id"),
    [
        ("CATEGORY::promos:", "promos"),
        ("CATEGORY:PUSH:promos:", "promos"),
        ("CATEGORY:PUSH:a:b:", "a:b"),
        ("ALL_MARKETING:::", None),
        ("TOPIC:::news", None),
        ("CHANNEL:PUSH::", None),
    ],
)
def test_category_ids_are_read_from_scope_keys(scope_key: str, category_id: str | None) -> None:
    assert category_of_scope_key(scope_key) == category_id


@pytest.mark.parametrize(
    ("app", "seconds", "nanos", "field"),
    [
        ("", None, 0, "app_id"),
        (" shop", None, 0, "app_id"),
        (APP, 0, 0, "window"),
        (APP, -60, 0, "window"),
        (APP, 0, -1, "window"),
        (APP, 10**12, 0, "window"),
    ],
)
async def test_bad_requests_are_refused_naming_the_field(
    svc: Service, app: str, seconds: int | None, nanos: int, field: str
) -> None:
    request = messages_pb2.GetAudienceHealthRequest(app_id=app)
    if seconds is not None:
        request.window.CopyFrom(Duration(seconds=seconds, nanos=nanos))
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await svc.stub.GetAudienceHealth(request)
    error = rich_error(raised.value)
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert list(error.fields) == [field]
    assert field in error.message


async def test_a_tiny_window_is_kept(svc: Service) -> None:
    reply = await svc.stub.GetAudienceHealth(
        messages_pb2.GetAudienceHealthRequest(app_id=APP, window=Duration(nanos=1500))
    )
    assert reply.window == Duration(nanos=2000)  # microsecond precision, rounded up
