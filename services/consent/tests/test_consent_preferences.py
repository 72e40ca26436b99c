"""SetPreferences and GetPreferences through real gRPC on SQLite and PostgreSQL: field
masks, topics shared with RecordConsent, one ledger entry and feed change per effective
change, idempotency, and bad windows or numbers refused with nothing written."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import grpc
import pytest
from google.protobuf.field_mask_pb2 import FieldMask

from pushwarden.common.v1 import policy_pb2, types_pb2
from pushwarden.consent.v1 import consent_pb2_grpc, messages_pb2, resources_pb2
from pushwarden.runtime.servicetest import local_test_config, rich_error, serving
from pushwarden.services.consent.bootstrap import bootstrap
from pushwarden.services.consent.config import ConsentConfig

if TYPE_CHECKING:
    from pushwarden.consent.v1.consent_pb2_grpc import ConsentServiceAsyncStub as Stub

KEY = "k" * 64
APP = "shop"


@pytest.fixture
async def stub(any_database_url: str) -> AsyncIterator[Stub]:
    config = local_test_config(ConsentConfig, any_database_url, PSEUDONYM_KEY=KEY)
    async with serving(bootstrap(config)) as channel:
        yield consent_pb2_grpc.ConsentServiceStub(channel)


def window(start: tuple[int, int], end: tuple[int, int], *days: int) -> policy_pb2.QuietHoursWindow:
    return policy_pb2.QuietHoursWindow(
        start=types_pb2.LocalTime(hours=start[0], minutes=start[1]),
        end=types_pb2.LocalTime(hours=end[0], minutes=end[1]),
        days=days,  # type: ignore[arg-type]
    )


def topics(**subscribed: bool) -> list[resources_pb2.TopicSubscription]:
    return [
        resources_pb2.TopicSubscription(topic_id=t, subscribed=s) for t, s in subscribed.items()
    ]


FULL = resources_pb2.Preferences(
    topics=topics(sale=True, news=False),
    quiet_hours=policy_pb2.QuietHours(windows=[window((22, 0), (7, 0))]),
    time_zone_override="Europe/Berlin",
    frequency=policy_pb2.FrequencyPreference(mode=policy_pb2.FREQUENCY_MODE_DAILY_MAX, max_count=2),
)


async def set_prefs(
    stub: Stub, prefs: resources_pb2.Preferences, *paths: str, user: str = "u1", **extra: Any
) -> messages_pb2.SetPreferencesResponse:
    request = messages_pb2.SetPreferencesRequest(
        app_id=APP, user_id=user, preferences=prefs, **extra
    )
    if paths:
        request.update_mask.CopyFrom(FieldMask(paths=list(paths)))
    return await stub.SetPreferences(request)


async def get_prefs(stub: Stub, user: str = "u1") -> resources_pb2.Preferences:
    reply = await stub.GetPreferences(messages_pb2.GetPreferencesRequest(app_id=APP, user_id=user))
    return reply.preferences


async def ledger_kinds(stub: Stub, user: str = "u1") -> list[int]:
    reply = await stub.GetLedger(messages_pb2.GetLedgerRequest(app_id=APP, user_id=user))
    assert reply.verification.verified
    return [entry.kind for entry in reply.entries]


def without_time(prefs: resources_pb2.Preferences) -> resources_pb2.Preferences:
    copy = resources_pb2.Preferences()
    copy.CopyFrom(prefs)
    copy.ClearField("updated_at")
    return copy


async def test_set_then_get_and_the_same_values_again_change_nothing(stub: Stub) -> None:
    assert without_time(await get_prefs(stub)) == resources_pb2.Preferences()
    first = await set_prefs(stub, FULL)
    assert not first.unchanged
    got = await get_prefs(stub)
    assert list(got.topics) == topics(news=False, sale=True)  # ordered by topic id
    assert got.quiet_hours == FULL.quiet_hours
    assert got.time_zone_override == "Europe/Berlin"
    assert got.frequency == FULL.frequency
    assert got.HasField("updated_at")
    again = await set_prefs(stub, FULL)
    assert again.unchanged
    assert await ledger_kinds(stub) == [resources_pb2.LEDGER_ENTRY_KIND_PREFERENCES]


async def test_a_mask_changes_only_the_named_fields(stub: Stub) -> None:
    await set_prefs(stub, FULL)
    change = resources_pb2.Preferences(
        quiet_hours=policy_pb2.QuietHours(windows=[window((21, 30), (8, 0), 6, 7)])
    )
    await set_prefs(stub, change, "quiet_hours")
    got = await get_prefs(stub)
    assert got.quiet_hours == change.quiet_hours
    assert got.time_zone_override == "Europe/Berlin"
    assert got.frequency == FULL.frequency
    assert len(got.topics) == 2
    await set_prefs(stub, resources_pb2.Preferences(), "time_zone_override", "frequency")
    cleared = await get_prefs(stub)
    assert cleared.time_zone_override == ""
    assert not cleared.HasField("frequency")
    assert cleared.quiet_hours == change.quiet_hours


async def test_topics_are_one_state_with_record_consent(stub: Stub) -> None:
    await set_prefs(stub, resources_pb2.Preferences(topics=topics(sale=True, tips=True)), "topics")
    await stub.RecordConsent(
        messages_pb2.RecordConsentRequest(
            app_id=APP,
            user_id="u1",
            scope=resources_pb2.ConsentScope(
                kind=resources_pb2.CONSENT_SCOPE_KIND_TOPIC, topic_id="sale"
            ),
            action=resources_pb2.CONSENT_ACTION_OPT_OUT,
            source=resources_pb2.CONSENT_SOURCE_UNSUBSCRIBE_LINK,
            idempotency_key="unsub-1",
        )
    )
    assert list((await get_prefs(stub)).topics) == topics(sale=False, tips=True)
    # Topics are replaced as a whole: one not listed any more is unsubscribed.
    await set_prefs(stub, resources_pb2.Preferences(topics=topics(news=True)), "topics")
    assert list((await get_prefs(stub)).topics) == topics(news=True, sale=False, tips=False)
    state = await stub.GetConsentState(
        messages_pb2.GetConsentStateRequest(app_id=APP, user_id="u1")
    )
    topic_choices = {
        e.scope.topic_id: e.action
        for e in state.state.entries
        if e.scope.kind == resources_pb2.CONSENT_SCOPE_KIND_TOPIC
    }
    assert topic_choices == {
        "news": resources_pb2.CONSENT_ACTION_OPT_IN,
        "sale": resources_pb2.CONSENT_ACTION_OPT_OUT,
        "tips": resources_pb2.CONSENT_ACTION_OPT_OUT,
    }


async def test_each_change_is_one_ledger_entry_and_one_feed_change(stub: Stub) -> None:
    await set_prefs(stub, FULL)
    await set_prefs(
        stub, resources_pb2.Preferences(time_zone_override="Asia/Tokyo"), "time_zone_override"
    )
    reply = await stub.GetLedger(messages_pb2.GetLedgerRequest(app_id=APP, user_id="u1"))
    assert [e.preferences.time_zone_override for e in reply.entries] == [
        "Europe/Berlin",
        "Asia/Tokyo",
    ]
    changes: list[resources_pb2.Change] = []
    request = messages_pb2.WatchChangesRequest(app_id=APP, stop_at_head=True)
    async for message in stub.WatchChanges(request, timeout=30):
        changes += message.changes
    assert [(c.kind, c.preferences.time_zone_override) for c in changes] == [
        (resources_pb2.CHANGE_KIND_PREFERENCES, "Europe/Berlin"),
        (resources_pb2.CHANGE_KIND_PREFERENCES, "Asia/Tokyo"),
    ]


async def test_an_idempotency_key_replays_and_refuses_another_body(stub: Stub) -> None:
    first = await set_prefs(stub, FULL, idempotency_key="p-1")
    again = await set_prefs(stub, FULL, idempotency_key="p-1")
    assert again.unchanged
    assert again.preferences == first.preferences
    other = resources_pb2.Preferences(time_zone_override="Asia/Tokyo")
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await set_prefs(stub, other, "time_zone_override", idempotency_key="p-1")
    error = rich_error(raised.value)
    assert error.code == grpc.StatusCode.ALREADY_EXISTS
    assert error.reason == "IDEMPOTENCY_KEY_REUSED"
    assert (await get_prefs(stub)).time_zone_override == "Europe/Berlin"


@pytest.mark.parametrize(
    ("prefs", "paths", "field"),
    [
        (
            resources_pb2.Preferences(
                quiet_hours=policy_pb2.QuietHours(windows=[window((22, 0), (22, 0))])
            ),
            ("quiet_hours",),
            "preferences.quiet_hours.windows[0].end",
        ),
        (
            resources_pb2.Preferences(
                quiet_hours=policy_pb2.QuietHours(windows=[window((22, 0), (7, 0), 0)])
            ),
            ("quiet_hours",),
            "preferences.quiet_hours.windows[0].days[0]",
        ),
        (
            resources_pb2.Preferences(
                quiet_hours=policy_pb2.QuietHours(windows=[window((25, 0), (7, 0))])
            ),
            ("quiet_hours",),
            "preferences.quiet_hours.windows[0].start.hours",
        ),
        (
            resources_pb2.Preferences(time_zone_override="Mars/Olympus"),
            ("time_zone_override",),
            "preferences.time_zone_override",
        ),
        (
            resources_pb2.Preferences(
                frequency=policy_pb2.FrequencyPreference(
                    mode=policy_pb2.FREQUENCY_MODE_WEEKLY_MAX, max_count=101
                )
            ),
            ("frequency",),
            "preferences.frequency.max_count",
        ),
        (
            resources_pb2.Preferences(
                frequency=policy_pb2.FrequencyPreference(mode=policy_pb2.FREQUENCY_MODE_DIGEST)
            ),
            ("frequency",),
            "preferences.frequency.digest_period",
        ),
        (
            resources_pb2.Preferences(topics=topics(sale=True) + topics(sale=False)),
            ("topics",),
            "preferences.topics[1].topic_id",
        ),
        (resources_pb2.Preferences(), ("colour",), "update_mask.paths[0]"),
    ],
)
async def test_bad_preferences_are_refused_naming_the_field_and_write_nothing(
    stub: Stub, prefs: resources_pb2.Preferences, paths: tuple[str, ...], field: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await set_prefs(stub, prefs, *paths)
    error = rich_error(raised.value)
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert field in error.fields, error.fields
    assert await ledger_kinds(stub) == []
    assert without_time(await get_prefs(stub)) == resources_pb2.Preferences()
