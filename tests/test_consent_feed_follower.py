"""The runtime's consent-feed follower against a real consent service: it starts at the
head, hands every change to the handler once, resumes from its stored cursor after a
restart without repeats, and resynchronises when its cursor has expired."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

import grpc

from pushwarden.consent.v1 import consent_pb2_grpc, messages_pb2, resources_pb2
from pushwarden.runtime.clock import shift_clock_file
from pushwarden.runtime.follower import (
    ConsentFeedFollower,
    FollowerSettings,
    MemoryCursorStore,
)
from pushwarden.runtime.servicetest import local_test_config, serving
from pushwarden.runtime.workers import Worker, WorkerHost
from pushwarden.services.consent.bootstrap import bootstrap
from pushwarden.services.consent.config import ConsentConfig

KEY = "k" * 64
DEADLINE_S = 30.0
FAST = FollowerSettings(initial_backoff_s=0.02, max_backoff_s=0.1)
_keys = iter(range(1_000_000))


def config_for(url: str, **extra: str) -> ConsentConfig:
    return local_test_config(
        ConsentConfig, url, PSEUDONYM_KEY=KEY, FEED_HEARTBEAT_S="0.1", FEED_POLL_S="0.02", **extra
    )


async def opt_out(channel: grpc.aio.Channel, user: str) -> None:
    await consent_pb2_grpc.ConsentServiceStub(channel).RecordConsent(
        messages_pb2.RecordConsentRequest(
            app_id="shop",
            user_id=user,
            scope=resources_pb2.ConsentScope(kind=resources_pb2.CONSENT_SCOPE_KIND_ALL_MARKETING),
            action=resources_pb2.CONSENT_ACTION_OPT_OUT,
            source=resources_pb2.CONSENT_SOURCE_API,
            idempotency_key=f"f{next(_keys)}",
        )
    )


class WatchedStore(MemoryCursorStore):
    """A memory store whose saves a test can wait for."""

    def __init__(self) -> None:
        super().__init__()
        self.saved = asyncio.Event()

    async def save(self, cursor: str | None) -> None:
        await super().save(cursor)
        if cursor is not None:
            self.saved.set()

    async def wait_for_cursor(self) -> None:
        await asyncio.wait_for(self.saved.wait(), DEADLINE_S)


class Recorder:
    """The service's handler: remembers what it was given; can wait for a count."""

    def __init__(self) -> None:
        self.seen: list[tuple[int, str]] = []
        self.resyncs = 0
        self.resynced = asyncio.Event()
        self._grew = asyncio.Event()

    async def handle(self, changes: Sequence[resources_pb2.Change]) -> None:
        self.seen += [(change.kind, change.user_id) for change in changes]
        self._grew.set()

    async def resync(self) -> None:
        self.resyncs += 1
        self.resynced.set()

    async def wait_for(self, count: int) -> None:
        loop = asyncio.get_running_loop()
        give_up = loop.time() + DEADLINE_S
        while len(self.seen) < count:
            self._grew.clear()
            await asyncio.wait_for(self._grew.wait(), max(0.01, give_up - loop.time()))


async def test_follows_from_the_head_and_resumes_without_repeats(database_url: str) -> None:
    store = WatchedStore()
    recorder = Recorder()
    async with serving(bootstrap(config_for(database_url))) as channel:
        await opt_out(channel, "before-the-follower")
        follower = ConsentFeedFollower(
            channel, store, recorder.handle, resync=recorder.resync, settings=FAST
        )
        host = WorkerHost([Worker("consent-feed", follower.run)])
        host.start()
        await store.wait_for_cursor()  # a from-head start stores its cursor first
        await opt_out(channel, "u1")
        await consent_pb2_grpc.ConsentServiceStub(channel).EraseUser(
            messages_pb2.EraseUserRequest(app_id="shop", user_id="u2")
        )
        await recorder.wait_for(2)
        await host.stop(grace_s=5)
        await opt_out(channel, "u3")  # while the follower is down
        host = WorkerHost([Worker("consent-feed", follower.run)])
        host.start()
        await recorder.wait_for(3)
        await host.stop(grace_s=5)
    assert recorder.seen == [
        (resources_pb2.CHANGE_KIND_CONSENT, "u1"),
        (resources_pb2.CHANGE_KIND_ERASED, "u2"),
        (resources_pb2.CHANGE_KIND_CONSENT, "u3"),
    ]
    assert recorder.resyncs == 0


async def test_an_expired_cursor_resynchronises_then_follows_the_head(
    database_url: str, tmp_path: Path
) -> None:
    clock_file = tmp_path / "clock.json"
    config = config_for(database_url, CLOCK_FILE=str(clock_file))
    store = WatchedStore()
    recorder = Recorder()
    async with serving(bootstrap(config)) as channel:
        follower = ConsentFeedFollower(
            channel, store, recorder.handle, resync=recorder.resync, settings=FAST
        )
        host = WorkerHost([Worker("consent-feed", follower.run)])
        host.start()
        await store.wait_for_cursor()
        await opt_out(channel, "u1")
        await opt_out(channel, "u2")
        await recorder.wait_for(2)
        await host.stop(grace_s=5)
        await opt_out(channel, "missed")  # never seen by the follower
    shift_clock_file(clock_file, advance=timedelta(days=8))
    async with serving(bootstrap(config)) as channel:  # retention drops the old changes
        await opt_out(channel, "after")
        # The purge runs as the service starts, beside the RPCs: a follower that came
        # first would rightly still read "missed" (not yet deleted). Wait for it.
        await until_expired(channel, store.cursor)
        host = WorkerHost([Worker("consent-feed", follower_for(channel, store, recorder).run)])
        store.saved.clear()
        host.start()
        await asyncio.wait_for(recorder.resynced.wait(), DEADLINE_S)
        await store.wait_for_cursor()  # followed from the head again
        await opt_out(channel, "fresh")
        await recorder.wait_for(3)
        await host.stop(grace_s=5)
    assert recorder.resyncs == 1
    assert [user for _, user in recorder.seen] == ["u1", "u2", "fresh"]


async def until_expired(channel: grpc.aio.Channel, cursor: str | None) -> None:
    """Wait until the consent service refuses ``cursor`` as CURSOR_EXPIRED."""
    assert cursor is not None
    stub = consent_pb2_grpc.ConsentServiceStub(channel)
    give_up = asyncio.get_running_loop().time() + DEADLINE_S
    while True:
        request = messages_pb2.WatchChangesRequest(cursor=cursor, stop_at_head=True)
        try:
            async for _ in stub.WatchChanges(request, timeout=DEADLINE_S):
                pass
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.OUT_OF_RANGE:
                return
            raise
        assert asyncio.get_running_loop().time() < give_up, "the cursor never expired"
        await asyncio.sleep(0.05)


def follower_for(
    channel: grpc.aio.Channel, store: WatchedStore, recorder: Recorder
) -> ConsentFeedFollower:
    return ConsentFeedFollower(
        channel, store, recorder.handle, resync=recorder.resync, settings=FAST
    )
