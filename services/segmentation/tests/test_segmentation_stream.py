"""StreamEvents: every event exactly once, in commit order, resumable from a cursor,
from the head, with heartbeats, name filters and retention, on SQLite and PostgreSQL;
concurrent writers; and the proof that a transaction holding a lower sequence
uncommitted cannot be skipped."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
import pytest

from pushwarden.runtime.clock import shift_clock_file
from pushwarden.runtime.db import Database, create_async_engine_for
from pushwarden.runtime.servicetest import local_test_config, rich_error, serving
from pushwarden.runtime.settings import DatabaseSettings
from pushwarden.segmentation.v1 import messages_pb2, resources_pb2, segmentation_pb2_grpc
from pushwarden.services.segmentation.bootstrap import bootstrap
from pushwarden.services.segmentation.config import SegmentationConfig
from pushwarden.services.segmentation.domain.events import encode_cursor
from pushwarden.services.segmentation.domain.values import to_timestamp
from pushwarden.services.segmentation.storage.events import NewEvent
from pushwarden.services.segmentation.storage.uow import unit_of_work_factory

if TYPE_CHECKING:
    from pushwarden.segmentation.v1.segmentation_pb2_grpc import (
        SegmentationServiceAsyncStub as Stub,
    )

DEADLINE_S = 30.0


def config_for(url: str, **extra: str) -> SegmentationConfig:
    return local_test_config(
        SegmentationConfig, url, STREAM_HEARTBEAT_S="0.2", STREAM_POLL_S="0.05", **extra
    )


@pytest.fixture
async def stub(any_database_url: str) -> AsyncIterator[Stub]:
    async with serving(bootstrap(config_for(any_database_url))) as channel:
        yield segmentation_pb2_grpc.SegmentationServiceStub(channel)


_ids = iter(range(1_000_000))


async def track(stub: Stub, user: str, name: str = "view", app: str = "shop") -> None:
    now = datetime.now(UTC)
    await stub.TrackEvents(
        messages_pb2.TrackEventsRequest(
            app_id=app,
            events=[
                resources_pb2.Event(
                    event_id=f"e{next(_ids)}",
                    user_id=user,
                    name=name,
                    occurred_at=to_timestamp(now - timedelta(seconds=1)),
                )
            ],
        )
    )


async def drain(
    stub: Stub, cursor: str = "", app: str = "shop", **options: object
) -> tuple[list[resources_pb2.Event], str]:
    """Read to the head (stop_at_head) from ``cursor``; the events and the last cursor."""
    events: list[resources_pb2.Event] = []
    request = messages_pb2.StreamEventsRequest(
        app_id=app,
        cursor=cursor,
        stop_at_head=True,
        **options,  # type: ignore[arg-type]
    )
    async for message in stub.StreamEvents(request, timeout=DEADLINE_S):
        events += message.events
        cursor = message.cursor
    return events, cursor


async def test_events_arrive_once_in_order_and_resume_from_a_cursor(stub: Stub) -> None:
    for index in range(5):
        await track(stub, f"u{index}")
    first, cursor = await drain(stub)
    assert [e.user_id for e in first] == [f"u{i}" for i in range(5)]
    assert [e.sequence for e in first] == sorted(e.sequence for e in first)
    assert all(e.app_id == "shop" and e.received_at.seconds for e in first)
    for index in range(5, 8):
        await track(stub, f"u{index}")
    rest, _ = await drain(stub, cursor)
    assert [e.user_id for e in rest] == ["u5", "u6", "u7"]  # nothing lost, nothing repeated
    small, _ = await drain(stub, max_batch_size=1)
    assert [e.user_id for e in small] == [f"u{i}" for i in range(8)]


async def test_name_filters_move_the_cursor_and_apps_stay_apart(stub: Stub) -> None:
    await track(stub, "u1", "view")
    await track(stub, "x", "view", app="news")
    await track(stub, "u2", "purchase")
    purchases, cursor = await drain(stub, event_names=["purchase"])
    assert [e.user_id for e in purchases] == ["u2"]
    later, _ = await drain(stub, cursor)
    assert later == []  # the filtered-out events moved the cursor too
    everything, _ = await drain(stub, app="")
    assert {e.app_id for e in everything} == {"shop", "news"}


async def test_a_live_follower_from_the_head_sees_new_events_and_heartbeats(stub: Stub) -> None:
    await track(stub, "before")
    stream = stub.StreamEvents(
        messages_pb2.StreamEventsRequest(app_id="shop", from_head=True), timeout=DEADLINE_S
    )
    first = await stream.read()
    assert isinstance(first, messages_pb2.StreamEventsResponse)
    assert first.caught_up
    assert list(first.events) == []
    await track(stub, "after")
    seen: list[str] = []
    heartbeats = 0
    while heartbeats < 2:
        message = await stream.read()
        assert isinstance(message, messages_pb2.StreamEventsResponse)
        seen += [e.user_id for e in message.events]
        if not message.events:
            heartbeats += 1
            assert message.caught_up
    stream.cancel()
    assert seen == ["after"]


async def test_bad_stream_requests_are_refused(stub: Stub) -> None:
    await track(stub, "u1")
    _, cursor = await drain(stub)
    for request, field in (
        (messages_pb2.StreamEventsRequest(app_id="shop", cursor="garbage"), "cursor"),
        (messages_pb2.StreamEventsRequest(app_id="news", cursor=cursor), "cursor"),
        (messages_pb2.StreamEventsRequest(app_id="shop", event_names=[""]), "event_names[0]"),
        (messages_pb2.StreamEventsRequest(app_id="shop", max_batch_size=-1), "max_batch_size"),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            async for _ in stub.StreamEvents(request, timeout=DEADLINE_S):
                pass
        error = rich_error(raised.value)
        assert error.code == grpc.StatusCode.INVALID_ARGUMENT
        assert field in error.fields


async def test_a_cursor_older_than_the_retention_is_expired(
    database_url: str, tmp_path: Path
) -> None:
    clock_file = tmp_path / "clock.json"
    shift_clock_file(clock_file, advance=timedelta(0))
    config = config_for(database_url, CLOCK_FILE=str(clock_file), EVENT_RETENTION_DAYS="7")
    async with serving(bootstrap(config)) as channel:
        stub: Stub = segmentation_pb2_grpc.SegmentationServiceStub(channel)
        await track(stub, "u1")
        await track(stub, "u2")
        events, _ = await drain(stub)
    old_cursor = encode_cursor("shop", events[0].sequence)
    shift_clock_file(clock_file, advance=timedelta(days=8))
    async with serving(bootstrap(config)) as channel:  # retention runs at start
        stub = segmentation_pb2_grpc.SegmentationServiceStub(channel)
        loop = asyncio.get_running_loop()
        give_up = loop.time() + DEADLINE_S
        expired: grpc.aio.AioRpcError | None = None
        while expired is None:
            try:
                await drain(stub, old_cursor)
            except grpc.aio.AioRpcError as error:
                expired = error
            assert loop.time() < give_up, "retention never expired the cursor"
            await asyncio.sleep(0.05)
        assert expired.code() == grpc.StatusCode.OUT_OF_RANGE
        assert rich_error(expired).reason == "CURSOR_EXPIRED"
        kept, _ = await drain(stub)
        assert kept == []


async def test_concurrent_writers_are_seen_once_each_in_commit_order(
    any_database_url: str,
) -> None:
    async with serving(bootstrap(config_for(any_database_url))) as channel:
        stub: Stub = segmentation_pb2_grpc.SegmentationServiceStub(channel)
        seen: list[resources_pb2.Event] = []
        cursor = ""
        stop = asyncio.Event()

        async def follow() -> None:
            nonlocal cursor
            while not stop.is_set():
                events, cursor = await drain(stub, cursor)
                seen.extend(events)
                await asyncio.sleep(0.01)

        follower = asyncio.ensure_future(follow())
        await asyncio.gather(
            *(track(stub, f"w{writer}-{i}") for writer in range(8) for i in range(10))
        )
        stop.set()
        await follower
        events, _ = await drain(stub, cursor)
        seen += events
    assert len(seen) == 80
    assert len({e.event_id for e in seen}) == 80
    assert [e.sequence for e in seen] == sorted(e.sequence for e in seen)


async def test_a_lower_sequence_held_uncommitted_is_never_skipped(any_database_url: str) -> None:
    """Writer A appends and holds its transaction open; writer B (an RPC) must not commit
    a later event before A does, so a follower that reads "after my cursor" cannot skip
    A's event. With sequences handed out without the append lock, B commits first, the
    follower moves its cursor past A's sequence and never sees A."""
    async with serving(bootstrap(config_for(any_database_url))) as channel:
        stub: Stub = segmentation_pb2_grpc.SegmentationServiceStub(channel)
        await track(stub, "u0")
        _, cursor = await drain(stub)
        database = Database(
            create_async_engine_for(DatabaseSettings(url=any_database_url, pool_size=1))
        )
        uow = unit_of_work_factory(database)
        appended = asyncio.Event()
        release = asyncio.Event()

        async def writer_a() -> None:
            async with uow() as work:
                await work.lock_appends()
                now = datetime.now(UTC)
                await work.events.append(
                    "shop", [NewEvent("held-event", "held", "view", now, {}, b"")], now
                )
                appended.set()  # appended, not yet committed
                await release.wait()
                await work.commit()

        task_a = asyncio.ensure_future(writer_a())
        await asyncio.wait_for(appended.wait(), DEADLINE_S)
        task_b = asyncio.ensure_future(track(stub, "later"))
        seen: list[str] = []
        for _ in range(10):  # the follower polls while A is open
            events, cursor = await drain(stub, cursor)
            seen += [e.user_id for e in events]
            await asyncio.sleep(0.05)
        release.set()
        await asyncio.wait_for(asyncio.gather(task_a, task_b), DEADLINE_S)
        events, cursor = await drain(stub, cursor)
        seen += [e.user_id for e in events]
        await database.dispose()
    assert seen == ["held", "later"]
