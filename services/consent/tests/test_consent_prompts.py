"""Permission prompts end to end through real gRPC, on SQLite and PostgreSQL:
RecordPermissionPrompt (idempotency, the service clock, errors, nothing but funnel
statistics written) and GetOptInFunnel (counts and rates per context and in total,
context and platform filters, the period's bounds, one grouped query)."""

from __future__ import annotations

import asyncio
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
from google.protobuf.timestamp_pb2 import Timestamp
from sqlalchemy import event, func, select

from pushwarden.common.v1 import types_pb2
from pushwarden.consent.v1 import consent_pb2_grpc, messages_pb2, resources_pb2
from pushwarden.runtime.app import ServiceApp
from pushwarden.runtime.clock import shift_clock_file
from pushwarden.runtime.servicetest import local_test_config, rich_error, serving
from pushwarden.services.consent.bootstrap import bootstrap
from pushwarden.services.consent.config import ConsentConfig
from pushwarden.services.consent.models import (
    ChangeRow,
    DeviceRow,
    IdempotencyKeyRow,
    LedgerEntryRow,
    LedgerPayloadRow,
    PromptEventRow,
)

if TYPE_CHECKING:  # the async stub type exists in the typed stubs only
    from pushwarden.consent.v1.consent_pb2_grpc import ConsentServiceAsyncStub as Stub

KEY = "k" * 64
IOS = types_pb2.PLATFORM_IOS
ANDROID = types_pb2.PLATFORM_ANDROID
WEB = types_pb2.PLATFORM_WEB
PRE_SHOWN = resources_pb2.PROMPT_EVENT_PRE_PROMPT_SHOWN
PRE_ACCEPTED = resources_pb2.PROMPT_EVENT_PRE_PROMPT_ACCEPTED
PRE_DECLINED = resources_pb2.PROMPT_EVENT_PRE_PROMPT_DECLINED
OS_SHOWN = resources_pb2.PROMPT_EVENT_OS_PROMPT_SHOWN
OS_GRANTED = resources_pb2.PROMPT_EVENT_OS_GRANTED
OS_DENIED = resources_pb2.PROMPT_EVENT_OS_DENIED
STEPS = (PRE_SHOWN, PRE_ACCEPTED, PRE_DECLINED, OS_SHOWN, OS_GRANTED, OS_DENIED)

T0 = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
T1 = T0 + timedelta(hours=1)
MICROSECOND = timedelta(microseconds=1)

# The two-step funnel this suite records: how many events of each step (in STEPS
# order) each context saw on each platform, all inside [T0, T1).
FUNNEL: dict[tuple[str, types_pb2.Platform.ValueType], tuple[int, int, int, int, int, int]] = {
    ("onboarding", IOS): (10, 6, 4, 6, 4, 2),
    ("onboarding", ANDROID): (5, 2, 3, 2, 2, 0),
    ("after_first_order", IOS): (8, 3, 5, 3, 1, 2),
    ("after_first_order", ANDROID): (4, 4, 0, 4, 3, 1),
}

_keys = itertools.count()


@dataclass
class Served:
    stub: Stub
    app: ServiceApp[ConsentConfig]
    clock_file: Path


@pytest.fixture
async def served(any_database_url: str, tmp_path: Path) -> AsyncIterator[Served]:
    clock_file = tmp_path / "clock.json"  # absent: real time until a test shifts it
    config = local_test_config(
        ConsentConfig, any_database_url, PSEUDONYM_KEY=KEY, CLOCK_FILE=str(clock_file)
    )
    app = bootstrap(config)
    async with serving(app) as channel:
        yield Served(consent_pb2_grpc.ConsentServiceStub(channel), app, clock_file)


def stamp(instant: datetime) -> Timestamp:
    result = Timestamp()
    result.FromDatetime(instant)
    return result


def prompt_request(
    event: resources_pb2.PromptEvent.ValueType = PRE_SHOWN,
    *,
    app: str = "shop",
    user: str = "u1",
    context: str = "onboarding",
    platform: types_pb2.Platform.ValueType = IOS,
    at: datetime | None = T0,
    key: str | None = None,
    **fields: Any,
) -> messages_pb2.RecordPermissionPromptRequest:
    request = messages_pb2.RecordPermissionPromptRequest(
        app_id=app,
        user_id=user,
        event=event,
        context=context,
        platform=platform,
        idempotency_key=f"key-{next(_keys)}" if key is None else key,
        **fields,
    )
    if at is not None:
        request.occurred_at.CopyFrom(stamp(at))
    return request


async def record(stub: Stub, **fields: Any) -> bool:
    reply = await stub.RecordPermissionPrompt(prompt_request(**fields))
    return reply.replayed


async def record_funnel(stub: Stub) -> None:
    """Every event of FUNNEL, one user per walk through it, spread over [T0, T1)."""
    offsets = itertools.count()
    for (context, platform), counts in FUNNEL.items():
        for step, count in zip(STEPS, counts, strict=True):
            for n in range(count):
                await record(
                    stub,
                    event=step,
                    user=f"{context}-{platform}-{n}",
                    context=context,
                    platform=platform,
                    at=T0 + timedelta(seconds=37 * next(offsets)),
                )


async def funnel(stub: Stub, **fields: Any) -> messages_pb2.GetOptInFunnelResponse:
    for name in ("start_time", "end_time"):
        if isinstance(fields.get(name), datetime):
            fields[name] = stamp(fields[name])
    return await stub.GetOptInFunnel(messages_pb2.GetOptInFunnelRequest(**fields))


def counts(stats: messages_pb2.FunnelStats) -> tuple[str, int, int, int, int, int, int]:
    return (
        stats.context,
        stats.pre_prompt_shown,
        stats.pre_prompt_accepted,
        stats.pre_prompt_declined,
        stats.os_prompt_shown,
        stats.os_granted,
        stats.os_denied,
    )


def rates(stats: messages_pb2.FunnelStats) -> tuple[float, float, float]:
    return (stats.pre_prompt_acceptance_rate, stats.os_grant_rate, stats.overall_opt_in_rate)


async def shop_total(stub: Stub) -> tuple[str, int, int, int, int, int, int]:
    return counts((await funnel(stub, app_id="shop", end_time=T1 + timedelta(days=3650))).total)


async def test_funnel_counts_and_rates_per_context_and_in_total(served: Served) -> None:
    await record_funnel(served.stub)
    reply = await funnel(served.stub, app_id="shop")
    assert [counts(c) for c in reply.contexts] == [
        ("after_first_order", 12, 7, 5, 7, 4, 3),
        ("onboarding", 15, 8, 7, 8, 6, 2),
    ]
    assert [rates(c) for c in reply.contexts] == [(7 / 12, 4 / 7, 4 / 12), (8 / 15, 6 / 8, 6 / 15)]
    assert counts(reply.total) == ("", 27, 15, 12, 15, 10, 5)
    assert rates(reply.total) == (15 / 27, 10 / 15, 10 / 27)


async def test_the_funnel_filters_by_context_and_platform(served: Served) -> None:
    await record_funnel(served.stub)
    ios = await funnel(served.stub, app_id="shop", platform=IOS)
    assert [counts(c) for c in ios.contexts] == [
        ("after_first_order", 8, 3, 5, 3, 1, 2),
        ("onboarding", 10, 6, 4, 6, 4, 2),
    ]
    assert counts(ios.total) == ("", 18, 9, 9, 9, 5, 4)
    assert rates(ios.total) == (9 / 18, 5 / 9, 5 / 18)

    onboarding = await funnel(served.stub, app_id="shop", context="onboarding")
    assert [counts(c) for c in onboarding.contexts] == [("onboarding", 15, 8, 7, 8, 6, 2)]
    assert counts(onboarding.total) == ("", 15, 8, 7, 8, 6, 2)
    assert rates(onboarding.total) == rates(onboarding.contexts[0])

    both = await funnel(served.stub, app_id="shop", context="after_first_order", platform=ANDROID)
    assert [counts(c) for c in both.contexts] == [("after_first_order", 4, 4, 0, 4, 3, 1)]
    assert rates(both.contexts[0]) == (4 / 4, 3 / 4, 3 / 4)

    nothing = await funnel(served.stub, app_id="shop", platform=WEB)
    assert list(nothing.contexts) == []
    assert counts(nothing.total) == ("", 0, 0, 0, 0, 0, 0)
    assert rates(nothing.total) == (0.0, 0.0, 0.0)  # no denominator: 0, not an error
    unknown = await funnel(served.stub, app_id="shop", context="checkout")
    assert list(unknown.contexts) == []


async def test_a_context_without_a_pre_prompt_enters_the_funnel_at_the_os_prompt(
    served: Served,
) -> None:
    stub = served.stub
    for step, count in ((PRE_SHOWN, 4), (PRE_ACCEPTED, 2), (OS_SHOWN, 2), (OS_GRANTED, 1)):
        for n in range(count):
            await record(stub, event=step, user=f"a{n}", context="onboarding")
    for step, count in ((OS_SHOWN, 5), (OS_GRANTED, 3), (OS_DENIED, 2)):
        for n in range(count):
            await record(stub, event=step, user=f"b{n}", context="settings")
    await record(stub, event=OS_GRANTED, user="c", context="")  # no context given
    reply = await funnel(stub, app_id="shop")
    assert [counts(c) for c in reply.contexts] == [
        ("", 0, 0, 0, 0, 1, 0),
        ("onboarding", 4, 2, 0, 2, 1, 0),
        ("settings", 0, 0, 0, 5, 3, 2),
    ]
    assert [rates(c) for c in reply.contexts] == [
        (0.0, 0.0, 0.0),  # granted without a prompt seen in the period: no denominator
        (2 / 4, 1 / 2, 1 / 4),
        (0.0, 3 / 5, 3 / 5),  # no pre-prompt: the OS prompt is where users entered
    ]
    assert counts(reply.total) == ("", 4, 2, 0, 7, 5, 2)
    # Each context's own entry step adds up: 4 pre-prompts here, 5 OS prompts there.
    assert rates(reply.total) == (2 / 4, 5 / 7, 5 / 9)


async def test_the_period_includes_its_start_and_excludes_its_end(served: Served) -> None:
    stub = served.stub
    instants = {
        "long-ago": datetime(2001, 1, 1, tzinfo=UTC),
        "before-start": T0 - MICROSECOND,
        "at-start": T0,
        "before-end": T1 - MICROSECOND,
        "at-end": T1,
    }
    for user, instant in instants.items():
        await record(stub, event=OS_GRANTED, user=user, at=instant)

    async def granted(**period: Any) -> int:
        return (await funnel(stub, app_id="shop", **period)).total.os_granted

    assert await granted(start_time=T0, end_time=T1) == 2  # at-start, before-end
    assert await granted(start_time=T0 - MICROSECOND, end_time=T1) == 3
    assert await granted(start_time=T0, end_time=T1 + MICROSECOND) == 3
    assert await granted(end_time=T1) == 4  # no start: from the beginning
    assert await granted() == 5  # no end: until now
    assert await granted(start_time=T1) == 1
    assert await granted(start_time=T0, end_time=T0) == 0  # an empty period is no error


async def test_occurred_at_defaults_to_the_service_clock_and_may_not_run_ahead_of_it(
    served: Served,
) -> None:
    stub = served.stub
    now = shift_clock_file(served.clock_file, to=datetime(2031, 1, 1, tzinfo=UTC))
    assert not await record(stub, event=OS_GRANTED, user="now", at=None)
    # Four minutes ahead of the service (and years ahead of the real time): allowed.
    assert not await record(stub, event=OS_GRANTED, user="skewed", at=now + timedelta(minutes=4))
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await record(stub, event=OS_GRANTED, user="future", at=now + timedelta(minutes=6))
    error = rich_error(raised.value)
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert list(error.fields) == ["occurred_at"]

    until_now = await funnel(stub, app_id="shop")  # ends now: the skewed event is ahead
    assert until_now.total.os_granted == 1
    later = await funnel(stub, app_id="shop", end_time=now + timedelta(minutes=10))
    assert later.total.os_granted == 2
    recorded = await funnel(
        stub, app_id="shop", start_time=now, end_time=now + timedelta(minutes=1)
    )
    assert recorded.total.os_granted == 1  # the default instant is the service's, not real time


async def test_a_repeated_key_replays_and_a_reused_key_is_refused(served: Served) -> None:
    stub = served.stub
    first = prompt_request(PRE_SHOWN, key="walk-1", device_id="dev-1")
    assert not (await stub.RecordPermissionPrompt(first)).replayed
    assert (await stub.RecordPermissionPrompt(first)).replayed
    assert (await stub.RecordPermissionPrompt(first)).replayed
    others = [
        prompt_request(PRE_ACCEPTED, key="walk-1", device_id="dev-1"),
        prompt_request(PRE_SHOWN, key="walk-1", device_id="dev-1", context="settings"),
        prompt_request(PRE_SHOWN, key="walk-1", device_id="dev-1", platform=ANDROID),
        prompt_request(PRE_SHOWN, key="walk-1", device_id="dev-1", at=T0 + MICROSECOND),
        prompt_request(PRE_SHOWN, key="walk-1", device_id="dev-2"),
        prompt_request(PRE_SHOWN, key="walk-1", device_id="dev-1", user="u2"),
    ]
    for other in others:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.RecordPermissionPrompt(other)
        error = rich_error(raised.value)
        assert error.code == grpc.StatusCode.ALREADY_EXISTS
        assert error.reason == "IDEMPOTENCY_KEY_REUSED"
    assert await shop_total(stub) == ("", 1, 0, 0, 0, 0, 0)  # counted once

    # Keys are per app: another app's event under the same key is its own.
    assert not await record(stub, app="news", event=PRE_ACCEPTED, key="walk-1")
    assert await shop_total(stub) == ("", 1, 0, 0, 0, 0, 0)


async def test_a_retry_without_occurred_at_replays_after_the_clock_moved(served: Served) -> None:
    stub = served.stub
    now = shift_clock_file(served.clock_file, to=datetime(2031, 1, 1, tzinfo=UTC))
    request = prompt_request(OS_GRANTED, key="retry", at=None)
    assert not (await stub.RecordPermissionPrompt(request)).replayed
    shift_clock_file(served.clock_file, advance=timedelta(minutes=3))
    assert (await stub.RecordPermissionPrompt(request)).replayed
    reply = await funnel(stub, app_id="shop")
    assert reply.total.os_granted == 1
    # Recorded at the first call's instant; the retry moved nothing.
    first_minute = await funnel(
        stub, app_id="shop", start_time=now, end_time=now + timedelta(minutes=1)
    )
    assert first_minute.total.os_granted == 1


async def test_concurrent_calls_with_one_key_record_once(served: Served) -> None:
    request = prompt_request(OS_SHOWN, key="storm")
    replies = await asyncio.gather(
        *(served.stub.RecordPermissionPrompt(request) for _ in range(12))
    )
    assert sorted(reply.replayed for reply in replies) == [False] + [True] * 11
    assert await shop_total(served.stub) == ("", 0, 0, 0, 1, 0, 0)


async def test_an_event_is_funnel_statistics_only(served: Served) -> None:
    """No device permission, no ledger entry, no change on the feed, no remembered key
    elsewhere: one prompt_events row."""
    await record(served.stub, event=OS_GRANTED, device_id="dev-1")
    await record(served.stub, event=OS_DENIED, device_id="dev-1")
    async with served.app.database.engine.connect() as connection:
        for table, expected in (
            (PromptEventRow, 2),
            (DeviceRow, 0),
            (LedgerEntryRow, 0),
            (LedgerPayloadRow, 0),
            (ChangeRow, 0),
            (IdempotencyKeyRow, 0),
        ):
            found = await connection.scalar(select(func.count()).select_from(table))
            assert found == expected, table.__tablename__


async def test_the_funnel_is_one_grouped_query(served: Served) -> None:
    await record_funnel(served.stub)
    statements: list[str] = []

    def seen(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if "prompt_events" in statement:
            statements.append(statement)

    engine = served.app.database.engine.sync_engine
    event.listen(engine, "before_cursor_execute", seen)
    try:
        reply = await funnel(served.stub, app_id="shop", platform=IOS)
    finally:
        event.remove(engine, "before_cursor_execute", seen)
    assert reply.total.pre_prompt_shown == 18
    assert len(statements) == 1, statements
    assert "GROUP BY" in statements[0].upper()


@dataclass(frozen=True)
class Sent:
    context: str
    platform: types_pb2.Platform.ValueType
    step: resources_pb2.PromptEvent.ValueType
    at: datetime


def expected_funnel(
    events: list[Sent],
    start: datetime | None,
    end: datetime,
    context: str,
    platform: types_pb2.Platform.ValueType,
) -> tuple[list[tuple[Any, ...]], tuple[Any, ...]]:
    """The funnel folded from the events the test sent: (counts + rates) per context in
    context order, and the total."""
    tallies: dict[str, list[int]] = {}
    for sent in events:
        if (start is not None and sent.at < start) or sent.at >= end:
            continue
        if (context and sent.context != context) or (platform and sent.platform != platform):
            continue
        tallies.setdefault(sent.context, [0] * len(STEPS))[STEPS.index(sent.step)] += 1

    def row(name: str, c: list[int], entered: int) -> tuple[Any, ...]:
        def rate(part: int, whole: int) -> float:
            return part / whole if whole else 0.0

        return (name, *c, rate(c[1], c[0]), rate(c[4], c[3]), rate(c[4], entered))

    contexts = [row(name, c, c[0] or c[3]) for name, c in sorted(tallies.items())]
    summed = [sum(c[i] for c in tallies.values()) for i in range(len(STEPS))]
    total = row("", summed, sum(c[0] or c[3] for c in tallies.values()))
    return contexts, total


def answered(stats: messages_pb2.FunnelStats) -> tuple[Any, ...]:
    return (*counts(stats), *rates(stats))


async def test_random_funnels_agree_with_a_fold_of_the_events_sent(served: Served) -> None:
    chance = random.Random(20261204)
    contexts = ["", "after_first_order", "onboarding", "settings", "Zebra"]
    platforms = [types_pb2.PLATFORM_UNSPECIFIED, IOS, ANDROID, WEB]
    # Instants a microsecond apart, so that query bounds land exactly on events.
    events = [
        Sent(
            chance.choice(contexts),
            chance.choice(platforms),
            chance.choice(STEPS),
            T0 + timedelta(seconds=chance.randrange(7200), microseconds=chance.choice([0, 1])),
        )
        for _ in range(240)
    ]
    for chunk in range(0, len(events), 40):
        await asyncio.gather(
            *(
                record(
                    served.stub,
                    user=f"r{chunk + i}",
                    event=sent.step,
                    context=sent.context,
                    platform=sent.platform,
                    at=sent.at,
                )
                for i, sent in enumerate(events[chunk : chunk + 40])
            )
        )
    instants = [sent.at for sent in events]
    for _ in range(40):
        start = chance.choice([None, chance.choice(instants), T0 - MICROSECOND])
        end = chance.choice([None, chance.choice(instants), T1 + timedelta(hours=2)])
        if start is not None and end is not None and end < start:
            start, end = end, start
        context = chance.choice(contexts)
        platform = chance.choice(platforms)
        fields: dict[str, Any] = {"app_id": "shop", "context": context, "platform": platform}
        if start is not None:
            fields["start_time"] = start
        if end is not None:
            fields["end_time"] = end
        reply = await funnel(served.stub, **fields)
        want_contexts, want_total = expected_funnel(
            events, start, end or datetime.now(UTC), context, platform
        )
        assert [answered(c) for c in reply.contexts] == want_contexts, fields
        assert answered(reply.total) == want_total, fields


def bad(field: str, **fields: Any) -> Any:
    return pytest.param(fields, field, id=field + ":" + ",".join(fields))


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        bad("app_id", app=""),
        bad("app_id", app=" shop"),
        bad("user_id", user=""),
        bad("user_id", user="u" * 129),
        bad("device_id", device_id="d" * 65),
        bad("device_id", device_id="dév"),
        bad("event", event=resources_pb2.PROMPT_EVENT_UNSPECIFIED),
        bad("event", event=42),
        bad("context", context="c" * 129),
        bad("context", context="on\x00boarding"),
        bad("platform", platform=7),
        bad("idempotency_key", key=""),
        bad("idempotency_key", key="k" * 129),
        bad("occurred_at", at=datetime.now(UTC) + timedelta(hours=1)),
    ],
)
async def test_bad_events_are_refused_naming_the_field_and_write_nothing(
    served: Served, fields: dict[str, Any], field: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await record(served.stub, **fields)
    error = rich_error(raised.value)
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert list(error.fields) == [field], error.fields
    assert field in error.message
    assert await shop_total(served.stub) == ("", 0, 0, 0, 0, 0, 0)
    async with served.app.database.engine.connect() as connection:
        assert await connection.scalar(select(func.count()).select_from(PromptEventRow)) == 0


async def test_a_malformed_occurred_at_is_refused(served: Served) -> None:
    request = prompt_request(at=None)
    request.occurred_at.seconds = 1
    request.occurred_at.nanos = -5
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await served.stub.RecordPermissionPrompt(request)
    assert list(rich_error(raised.value).fields) == ["occurred_at"]
    assert await shop_total(served.stub) == ("", 0, 0, 0, 0, 0, 0)


async def test_every_violation_is_reported_at_once(served: Served) -> None:
    request = prompt_request(
        resources_pb2.PROMPT_EVENT_UNSPECIFIED,
        user="",
        context="c" * 200,
        platform=9,  # type: ignore[arg-type]
        key="",
        at=datetime.now(UTC) + timedelta(hours=1),
    )
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await served.stub.RecordPermissionPrompt(request)
    assert set(rich_error(raised.value).fields) == {
        "user_id",
        "event",
        "context",
        "platform",
        "idempotency_key",
        "occurred_at",
    }


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        bad("app_id", app_id=""),
        bad("end_time", app_id="shop", start_time=T1, end_time=T0),
        bad("end_time", app_id="shop", start_time=T0, end_time=T0 - MICROSECOND),
        bad("start_time", app_id="shop", start_time=Timestamp(seconds=-(10**12))),
        bad("end_time", app_id="shop", end_time=Timestamp(seconds=0, nanos=10**9)),
        bad("context", app_id="shop", context="c" * 129),
        bad("platform", app_id="shop", platform=5),
    ],
)
async def test_bad_funnel_requests_are_refused_naming_the_field(
    served: Served, fields: dict[str, Any], field: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await funnel(served.stub, **fields)
    error = rich_error(raised.value)
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert list(error.fields) == [field], error.fields
    assert field in error.message


async def test_apps_never_see_each_other(served: Served) -> None:
    stub = served.stub
    await record(stub, app="shop", event=PRE_SHOWN)
    await record(stub, app="shop", event=PRE_ACCEPTED)
    await record(stub, app="news", event=OS_SHOWN, context="breaking")
    shop = await funnel(stub, app_id="shop")
    assert [counts(c) for c in shop.contexts] == [("onboarding", 1, 1, 0, 0, 0, 0)]
    news = await funnel(stub, app_id="news")
    assert [counts(c) for c in news.contexts] == [("breaking", 0, 0, 0, 1, 0, 0)]
    assert list((await funnel(stub, app_id="radio")).contexts) == []


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
        await stub.RecordPermissionPrompt(prompt_request(app="shop"), metadata=auth)
        shop = messages_pb2.GetOptInFunnelRequest(app_id="shop")
        assert (await stub.GetOptInFunnel(shop, metadata=auth)).total.pre_prompt_shown == 1
        calls: list[Awaitable[Any]] = [
            # Refused before the request is even checked: an invalid one says the same.
            stub.RecordPermissionPrompt(prompt_request(app="news", user=""), metadata=auth),
            stub.RecordPermissionPrompt(prompt_request(app="news"), metadata=auth),
            stub.GetOptInFunnel(messages_pb2.GetOptInFunnelRequest(app_id="news"), metadata=auth),
        ]
        for call in calls:
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await call
            assert rich_error(raised.value).reason == "APP_NOT_ALLOWED"
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.GetOptInFunnel(shop)
        assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED
