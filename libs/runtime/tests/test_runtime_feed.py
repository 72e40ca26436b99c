"""The shared pieces of a change feed: cursors bound to a filter and a feed's version tag
(readable by the cursors followers stored before the tag was a parameter), and the
streaming loop's announce, batches, heartbeats and stop at the head."""

from __future__ import annotations

import asyncio
import base64
import hashlib

import pytest

from pushwarden.runtime.feed import (
    Batch,
    FeedSignal,
    StreamTiming,
    decode_cursor,
    encode_cursor,
    stream,
)


def historic_cursor(version: str, app_id: str, sequence: int) -> str:
    """A cursor as consent ("v1") and segmentation ("s1") wrote them before sharing code."""
    tag = hashlib.sha256(app_id.encode()).hexdigest()[:12]
    raw = f"{version}:{sequence}:{tag}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@pytest.mark.parametrize("version", ["v1", "s1"])
def test_cursors_round_trip_and_read_stored_ones(version: str) -> None:
    cursor = encode_cursor("shop", 42, version=version)
    assert cursor == historic_cursor(version, "shop", 42)
    assert decode_cursor(cursor, "shop", version=version) == 42
    assert decode_cursor(historic_cursor(version, "", 7), "", version=version) == 7


def test_the_default_version_is_the_change_feeds() -> None:
    assert encode_cursor("shop", 3) == historic_cursor("v1", "shop", 3)
    assert decode_cursor(historic_cursor("v1", "shop", 3), "shop") == 3


@pytest.mark.parametrize(
    "cursor",
    [
        encode_cursor("other", 5, version="s1"),  # another filter
        encode_cursor("shop", 5),  # another feed (v1)
        historic_cursor("s1", "shop", -1),
        "not-base64!",
        base64.urlsafe_b64encode(b"s1:five:abc").decode(),
        base64.urlsafe_b64encode(b"\xff\xfe").decode(),
        "",
    ],
)
def test_a_foreign_or_malformed_cursor_decodes_to_none(cursor: str) -> None:
    assert decode_cursor(cursor, "shop", version="s1") is None


class Log:
    """A feed of integers 1..head read ``size`` at a time, keeping the even ones."""

    def __init__(self, head: int, size: int = 2) -> None:
        self.head = head
        self.size = size

    async def read(self, after: int) -> Batch[int]:
        resume = min(after + self.size, self.head)
        wanted = [n for n in range(after + 1, resume + 1) if n % 2 == 0]
        return Batch(wanted, resume, resume >= self.head)


def message(items: list[int], resume: int, caught_up: bool) -> tuple[list[int], int, bool]:
    return items, resume, caught_up


TIMING = StreamTiming(heartbeat_s=0.05, poll_s=0.01)


async def collect(log: Log, *, start: int, stop_at_head: bool, announce: bool) -> list[object]:
    return [
        m
        async for m in stream(
            start=start,
            read=log.read,
            message=message,
            signal=FeedSignal(),
            timing=TIMING,
            stop_at_head=stop_at_head,
            announce=announce,
        )
    ]


async def test_a_stream_to_the_head_resumes_past_filtered_items() -> None:
    got = await collect(Log(head=5), start=0, stop_at_head=True, announce=False)
    assert got[:2] == [([2], 2, False), ([4], 4, False)]
    # The end says caught up at the head, past the filtered-out 5, and sends no item again.
    assert got[2:]
    assert all(m == ([], 5, True) for m in got[2:])


async def test_a_from_head_start_announces_and_an_empty_feed_says_caught_up_once() -> None:
    got = await collect(Log(head=0), start=0, stop_at_head=True, announce=True)
    assert got == [([], 0, True), ([], 0, True)]


async def test_an_idle_stream_heartbeats_and_wakes_on_the_signal() -> None:
    log, signal = Log(head=2), FeedSignal()
    messages = stream(
        start=0,
        read=log.read,
        message=message,
        signal=signal,
        timing=StreamTiming(heartbeat_s=0.05, poll_s=60.0),
        stop_at_head=False,
        announce=False,
    )
    assert await anext(messages) == ([2], 2, True)
    waiting = asyncio.ensure_future(anext(messages))
    await asyncio.sleep(0.05)
    assert not waiting.done()  # idle: polls every 60 s, so it waits for the signal
    log.head = 4
    signal.notify()
    assert await asyncio.wait_for(waiting, 5.0) == ([4], 4, True)
    waiting = asyncio.ensure_future(anext(messages))  # idle again; nothing more comes
    await asyncio.sleep(0.1)
    assert not waiting.done()
    waiting.cancel()


async def test_a_burst_of_commits_is_read_as_one_batch() -> None:
    """Woken by a change, a stream gathers for ``gather_s`` before it reads: the commits
    of that moment come as one message (one read), not one read per commit."""
    log, signal = Log(head=2, size=100), FeedSignal()
    reads = 0

    async def read(after: int) -> Batch[int]:
        nonlocal reads
        reads += 1
        return await log.read(after)

    messages = stream(
        start=0,
        read=read,
        message=message,
        signal=signal,
        timing=StreamTiming(heartbeat_s=60.0, poll_s=60.0, gather_s=0.2),
        stop_at_head=False,
        announce=False,
    )
    assert await anext(messages) == ([2], 2, True)
    waiting = asyncio.ensure_future(anext(messages))
    await asyncio.sleep(0.01)
    before = reads
    for head in range(3, 13):  # ten commits, each waking the stream
        log.head = head
        signal.notify()
        await asyncio.sleep(0.005)
    assert await asyncio.wait_for(waiting, 5.0) == ([4, 6, 8, 10, 12], 12, True)
    assert reads - before == 1
