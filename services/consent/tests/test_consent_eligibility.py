"""CheckEligibility through real gRPC on SQLite and PostgreSQL: consent per category kind
with reasons in gate order, usable devices, zone and its source, quiet hours and
frequency, topics, counts, unknown users, errors, and one query per table per batch."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import grpc
import pytest
from sqlalchemy import event

from pushwarden.common.v1 import decision_pb2, policy_pb2, types_pb2
from pushwarden.consent.v1 import consent_pb2_grpc, messages_pb2, resources_pb2
from pushwarden.runtime.app import ServiceApp
from pushwarden.runtime.servicetest import local_test_config, rich_error, serving
from pushwarden.services.consent.bootstrap import bootstrap
from pushwarden.services.consent.config import ConsentConfig

if TYPE_CHECKING:
    from pushwarden.consent.v1.consent_pb2_grpc import ConsentServiceAsyncStub as Stub

KEY = "k" * 64
APP = "shop"
R = decision_pb2
GRANTED = types_pb2.PERMISSION_STATE_GRANTED
DENIED = types_pb2.PERMISSION_STATE_DENIED


class Harness:
    """The served app (to count its SQL) and a stub."""

    def __init__(self, app: ServiceApp[Any], stub: Stub) -> None:
        self.app = app
        self.stub = stub


@pytest.fixture
async def harness(any_database_url: str) -> AsyncIterator[Harness]:
    app = bootstrap(local_test_config(ConsentConfig, any_database_url, PSEUDONYM_KEY=KEY))
    async with serving(app) as channel:
        stub: Stub = consent_pb2_grpc.ConsentServiceStub(channel)
        for category_id, kind, default, can_opt_out in (
            (
                "promos",
                types_pb2.CATEGORY_KIND_MARKETING,
                resources_pb2.DEFAULT_STATE_OPTED_IN,
                True,
            ),
            (
                "beta",
                types_pb2.CATEGORY_KIND_MARKETING,
                resources_pb2.DEFAULT_STATE_OPTED_OUT,
                True,
            ),
            (
                "orders",
                types_pb2.CATEGORY_KIND_TRANSACTIONAL,
                resources_pb2.DEFAULT_STATE_OPTED_IN,
                False,
            ),
        ):
            await stub.DefineCategory(
                messages_pb2.DefineCategoryRequest(
                    app_id=APP,
                    category=resources_pb2.Category(
                        category_id=category_id,
                        kind=kind,
                        default_state=default,
                        user_can_opt_out=can_opt_out,
                    ),
                )
            )
        yield Harness(app, stub)


_tokens = iter(range(1_000_000))


async def register(
    stub: Stub,
    user: str,
    *,
    platform: types_pb2.Platform.ValueType = types_pb2.PLATFORM_IOS,
    permission: types_pb2.PermissionState.ValueType = GRANTED,
    zone: str = "Europe/Paris",
    locale: str = "fr-FR",
) -> resources_pb2.Device:
    provider = (
        types_pb2.PROVIDER_APNS if platform == types_pb2.PLATFORM_IOS else types_pb2.PROVIDER_FCM
    )
    token = (
        f"{next(_tokens):064x}"
        if provider == types_pb2.PROVIDER_APNS
        else f"fcm-token-{next(_tokens)}"
    )
    reply = await stub.RegisterDevice(
        messages_pb2.RegisterDeviceRequest(
            app_id=APP,
            device=resources_pb2.Device(
                user_id=user,
                platform=platform,
                provider=provider,
                token=token,
                time_zone=zone,
                locale=locale,
                app_version="5.1.0",
                permission=permission,
            ),
        )
    )
    return reply.device


_keys = iter(range(1_000_000))


async def choose(stub: Stub, user: str, scope: resources_pb2.ConsentScope, opt_in: bool) -> None:
    await stub.RecordConsent(
        messages_pb2.RecordConsentRequest(
            app_id=APP,
            user_id=user,
            scope=scope,
            action=resources_pb2.CONSENT_ACTION_OPT_IN
            if opt_in
            else resources_pb2.CONSENT_ACTION_OPT_OUT,
            source=resources_pb2.CONSENT_SOURCE_PREFERENCE_CENTER,
            idempotency_key=f"c{next(_keys)}",
        )
    )


async def check(
    stub: Stub, category: str, *users: str, topic: str = ""
) -> messages_pb2.CheckEligibilityResponse:
    return await stub.CheckEligibility(
        messages_pb2.CheckEligibilityRequest(
            app_id=APP, category_id=category, user_ids=users, topic_id=topic
        )
    )


ALL_MARKETING = resources_pb2.ConsentScope(kind=resources_pb2.CONSENT_SCOPE_KIND_ALL_MARKETING)


async def test_a_user_with_devices_gets_usable_devices_zone_and_counts(harness: Harness) -> None:
    stub = harness.stub
    denied = await register(
        stub, "u1", platform=types_pb2.PLATFORM_ANDROID, permission=DENIED, zone="Asia/Tokyo"
    )
    granted = await register(stub, "u1", zone="America/New_York", locale="en-US")
    reply = await check(stub, "promos", "u1")
    assert reply.category_kind == types_pb2.CATEGORY_KIND_MARKETING
    assert reply.category.category_id == "promos"
    [user] = reply.users
    assert user.allowed
    assert user.reason == R.REASON_CODE_UNSPECIFIED
    assert user.known_user
    assert [d.device_id for d in user.devices] == [granted.device_id]
    assert user.devices[0].token == granted.token
    assert user.devices[0].locale == "en-US"
    assert user.devices[0].provider == types_pb2.PROVIDER_APNS
    assert (user.device_counts.usable, user.device_counts.without_permission) == (1, 1)
    assert user.time_zone == "America/New_York"  # the newest active device's
    assert user.time_zone_source == R.TIME_ZONE_SOURCE_DEVICE
    assert user.consent.category_allowed
    assert user.consent.category_default
    del denied


async def test_unknown_users_are_answered_from_the_defaults(harness: Harness) -> None:
    reply = await check(harness.stub, "beta", "ghost-1", "ghost-2")
    assert [u.user_id for u in reply.users] == ["ghost-1", "ghost-2"]
    for user in reply.users:
        assert not user.known_user
        assert not user.allowed
        assert list(user.reasons) == [R.REASON_CODE_CATEGORY_OPTED_OUT, R.REASON_CODE_NO_DEVICE]
        assert user.HasField("consent")
        assert user.HasField("device_counts")
        assert user.time_zone == ""
        assert user.time_zone_source == R.TIME_ZONE_SOURCE_NONE


async def test_an_opt_out_is_seen_by_the_very_next_call_and_spares_transactional(
    harness: Harness,
) -> None:
    stub = harness.stub
    await register(stub, "u1")
    assert (await check(stub, "promos", "u1")).users[0].allowed
    await choose(stub, "u1", ALL_MARKETING, opt_in=False)
    marketing = (await check(stub, "promos", "u1")).users[0]
    assert not marketing.allowed
    assert list(marketing.reasons) == [R.REASON_CODE_OPTED_OUT]
    assert marketing.consent.marketing_opted_out
    assert len(marketing.devices) == 1  # still listed, for traces and transactional callers
    transactional = await check(stub, "orders", "u1")
    assert transactional.category_kind == types_pb2.CATEGORY_KIND_TRANSACTIONAL
    assert transactional.users[0].allowed


async def test_reasons_come_in_gate_order(harness: Harness) -> None:
    stub = harness.stub
    await register(stub, "u1", permission=DENIED)
    await choose(stub, "u1", ALL_MARKETING, opt_in=False)
    await choose(
        stub,
        "u1",
        resources_pb2.ConsentScope(
            kind=resources_pb2.CONSENT_SCOPE_KIND_CATEGORY, category_id="promos"
        ),
        opt_in=False,
    )
    user = (await check(stub, "promos", "u1", topic="sale")).users[0]
    assert list(user.reasons) == [
        R.REASON_CODE_OPTED_OUT,
        R.REASON_CODE_CATEGORY_OPTED_OUT,
        R.REASON_CODE_TOPIC_OPTED_OUT,
        R.REASON_CODE_NO_PERMISSION,
        R.REASON_CODE_NO_DEVICE,
    ]
    assert user.reason == R.REASON_CODE_OPTED_OUT
    assert user.topic_state == messages_pb2.TOPIC_STATE_NOT_SUBSCRIBED
    # A transactional category without opt-out ignores topics and marketing state.
    orders = (await check(stub, "orders", "u1", topic="sale")).users[0]
    assert list(orders.reasons) == [R.REASON_CODE_NO_PERMISSION, R.REASON_CODE_NO_DEVICE]


async def test_preferences_give_zone_quiet_hours_frequency_and_topics(harness: Harness) -> None:
    stub = harness.stub
    await register(stub, "u1", zone="Europe/Paris")
    quiet = policy_pb2.QuietHours(
        windows=[
            policy_pb2.QuietHoursWindow(
                start=types_pb2.LocalTime(hours=22), end=types_pb2.LocalTime(hours=7)
            )
        ]
    )
    frequency = policy_pb2.FrequencyPreference(
        mode=policy_pb2.FREQUENCY_MODE_DAILY_MAX, max_count=1
    )
    await stub.SetPreferences(
        messages_pb2.SetPreferencesRequest(
            app_id=APP,
            user_id="u1",
            preferences=resources_pb2.Preferences(
                topics=[resources_pb2.TopicSubscription(topic_id="sale", subscribed=True)],
                quiet_hours=quiet,
                time_zone_override="Asia/Kolkata",
                frequency=frequency,
            ),
        )
    )
    user = (await check(stub, "promos", "u1", topic="sale")).users[0]
    assert user.allowed
    assert user.topic_state == messages_pb2.TOPIC_STATE_SUBSCRIBED
    assert user.time_zone == "Asia/Kolkata"
    assert user.time_zone_source == R.TIME_ZONE_SOURCE_PROFILE
    assert user.quiet_hours == quiet
    assert user.frequency == frequency
    plain = (await check(stub, "promos", "u1")).users[0]
    assert plain.topic_state == messages_pb2.TOPIC_STATE_UNSPECIFIED


async def test_an_invalidated_device_is_counted_and_never_usable(harness: Harness) -> None:
    stub = harness.stub
    device = await register(stub, "u1")
    await stub.InvalidateDevice(
        messages_pb2.InvalidateDeviceRequest(
            app_id=APP,
            device_id=device.device_id,
            provider=types_pb2.PROVIDER_APNS,
            reason=resources_pb2.INVALIDATION_REASON_UNREGISTERED,
        )
    )
    user = (await check(stub, "orders", "u1")).users[0]
    assert not user.allowed
    assert list(user.reasons) == [R.REASON_CODE_NO_DEVICE]
    assert user.device_counts.invalidated == 1
    assert list(user.devices) == []


@pytest.mark.parametrize(
    ("users", "category", "field", "reason"),
    [
        ([], "promos", "user_ids", "BATCH_SIZE"),
        (["a", "a"], "promos", "user_ids[1]", "BATCH_SIZE"),
        ([f"u{i}" for i in range(1001)], "promos", "user_ids", "BATCH_SIZE"),
        (["a"], "nope", "category_id", "UNKNOWN_REFERENCE"),
        (["a"], "", "category_id", None),
    ],
)
async def test_bad_batches_are_refused(
    harness: Harness, users: list[str], category: str, field: str, reason: str | None
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await check(harness.stub, category, *users)
    error = rich_error(raised.value)
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert field in error.fields
    assert error.reason == reason


async def test_a_batch_of_1000_is_a_few_queries_not_one_per_user(harness: Harness) -> None:
    stub = harness.stub
    for index in range(5):
        await register(stub, f"user-{index}")
    statements: list[str] = []

    def count(*args: Any) -> None:
        statements.append(str(args[2]))

    engine = harness.app.database.engine.sync_engine
    event.listen(engine, "before_cursor_execute", count)
    try:
        reply = await check(stub, "promos", *(f"user-{i}" for i in range(1000)))
    finally:
        event.remove(engine, "before_cursor_execute", count)
    assert len(reply.users) == 1000
    assert sum(u.allowed for u in reply.users) == 5
    reads = [s for s in statements if s.lstrip().upper().startswith("SELECT")]
    # category with the ledger head, choices, devices, preferences, suppressions
    assert len(reads) <= 5, reads


async def test_ids_that_need_quoting_are_read_back_exactly(harness: Harness) -> None:
    # A batch is bound as one JSON array (storage.batches): ids with quotes, commas,
    # braces, backslashes and non-ASCII letters must reach the database as written.
    stub = harness.stub
    odd = ['quote"d', "comma,id", "{brace}", "back\\slash", "it's", "ünïcødé-🙂", "a b"]
    tokens = {user: (await register(stub, user)).token for user in odd}
    await choose(stub, "it's", ALL_MARKETING, opt_in=False)
    reply = await check(stub, "promos", *odd, "comma", "id")
    by_user = {u.user_id: u for u in reply.users}
    assert [u.user_id for u in reply.users] == [*odd, "comma", "id"]
    for user in odd:
        answer = by_user[user]
        assert [d.token for d in answer.devices] == [tokens[user]], user
        assert answer.allowed == (user != "it's"), user
    assert list(by_user["it's"].reasons) == [R.REASON_CODE_OPTED_OUT]
    for part in ("comma", "id"):
        assert not by_user[part].known_user
