"""The consent feed follower against a scripted WatchChanges server: where a first start
begins, a cursor stored after its batch was handled, an expired cursor resynchronised
after taking the head's cursor (so nothing committed during the resync is lost), and a
stream that reaches its deadline reconnecting quietly."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import grpc
import pytest

from pushwarden.consent.v1 import consent_pb2_grpc, messages_pb2, resources_pb2
from pushwarden.runtime.follower import (
    ConsentFeedFollower,
    FollowerSettings,
    MemoryCursorStore,
)
from pushwarden.runtime.workers import WorkerContext

DEADLINE_S = 10.0
ERASED = resources_pb2.CHANGE_KIND_ERASED


class ScriptedFeed(consent_pb2_grpc.ConsentServiceServicer):
    """WatchChanges as consent answers it: CURSOR_EXPIRED for the cursor "expired", the
    head's cursor "head" for a from-head read to the head, one ERASED change (cursor
    "c1") for a read from the start, and then nothing (an idle stream)."""

    def __init__(self) -> None:
        self.requests: list[messages_pb2.WatchChangesRequest] = []
        self.log: list[str] = []

    async def WatchChanges(
        self, request: messages_pb2.WatchChangesRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[messages_pb2.WatchChangesResponse]:
        self.requests.append(request)
        if request.cursor == "expired":
            await context.abort(grpc.StatusCode.OUT_OF_RANGE, "the cursor expired")
        if request.from_head and request.stop_at_head:
            self.log.append("head")
            yield messages_pb2.WatchChangesResponse(cursor="head", caught_up=True)
            return
        if not request.cursor and not request.from_head:
            change = resources_pb2.Change(kind=ERASED, app_id="shop", user_id="u1", cursor="c1")
            yield messages_pb2.WatchChangesResponse(changes=[change], cursor="c1", caught_up=True)
        await asyncio.Event().wait()


@pytest.fixture
async def feed() -> AsyncIterator[tuple[ScriptedFeed, grpc.aio.Channel]]:
    servicer = ScriptedFeed()
    server = grpc.aio.server()
    consent_pb2_grpc.add_ConsentServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield servicer, channel
    finally:
        await server.stop(0)


async def eventually(condition: Callable[[], bool], what: str) -> None:
    loop = asyncio.get_running_loop()
    give_up = loop.time() + DEADLINE_S
    while not condition():
        assert loop.time() < give_up, what
        await asyncio.sleep(0.01)


async def unexpected_changes(changes: Sequence[resources_pb2.Change]) -> None:
    raise AssertionError(f"no changes expected, got {len(changes)}")


async def unexpected_resync() -> None:
    raise AssertionError("nothing expired")


async def following(follower: ConsentFeedFollower, until: Callable[[], bool], what: str) -> None:
    """Run the follower as a worker until ``until`` holds, then stop it."""
    stop = asyncio.Event()
    task = asyncio.create_task(follower.run(WorkerContext("erasure", stop)))
    try:
        await eventually(until, what)
    finally:
        stop.set()
        await asyncio.wait_for(task, DEADLINE_S)


async def test_a_first_start_from_the_oldest_handles_then_stores_the_cursor(
    feed: tuple[ScriptedFeed, grpc.aio.Channel],
) -> None:
    servicer, channel = feed
    store = MemoryCursorStore()
    handled: list[str] = []

    async def handle(changes: Sequence[resources_pb2.Change]) -> None:
        assert store.cursor is None  # stored only after the batch was handled
        handled.extend(change.user_id for change in changes)

    follower = ConsentFeedFollower(
        channel,
        store,
        handle,
        resync=unexpected_resync,
        settings=FollowerSettings(kinds=(ERASED,), start_at_head=False),
    )
    await following(follower, lambda: store.cursor == "c1", "the cursor of the batch")
    assert handled == ["u1"]
    first = servicer.requests[0]
    assert (first.cursor, first.from_head, list(first.kinds)) == ("", False, [ERASED])


async def test_an_expired_cursor_takes_the_head_before_resynchronising(
    feed: tuple[ScriptedFeed, grpc.aio.Channel],
) -> None:
    servicer, channel = feed
    store = MemoryCursorStore("expired")

    async def resync() -> None:
        servicer.log.append("resync")

    follower = ConsentFeedFollower(
        channel,
        store,
        unexpected_changes,
        resync=resync,
        settings=FollowerSettings(initial_backoff_s=0.01),
    )
    await following(
        follower,
        lambda: any(request.cursor == "head" for request in servicer.requests),
        "following from the head's cursor",
    )
    assert servicer.log == ["head", "resync"]
    assert store.cursor == "head"


async def test_a_stream_at_its_deadline_reconnects_without_a_warning(
    feed: tuple[ScriptedFeed, grpc.aio.Channel], caplog: pytest.LogCaptureFixture
) -> None:
    servicer, channel = feed
    store = MemoryCursorStore("c1")
    follower = ConsentFeedFollower(
        channel,
        store,
        unexpected_changes,
        resync=unexpected_resync,
        settings=FollowerSettings(stream_s=0.1, initial_backoff_s=0.01),
    )
    with caplog.at_level(logging.WARNING, logger="pushwarden.runtime.follower"):
        await following(follower, lambda: len(servicer.requests) >= 3, "three streams")
    assert all(request.cursor == "c1" for request in servicer.requests)
    assert caplog.records == []
