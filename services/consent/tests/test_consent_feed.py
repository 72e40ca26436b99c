"""WatchChanges: every change exactly once, in commit order, resumable from a cursor,
from the head, with heartbeats and retention, on SQLite and PostgreSQL; and the proof
that a transaction holding a lower sequence uncommitted cannot be skipped."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import pytest

from pushwarden.common.v1 import types_pb2
from pushwarden.consent.v1 import consent_pb2_grpc, messages_pb2, resources_pb2
from pushwarden.runtime.clock import shift_clock_file
from pushwarden.runtime.db import Database, create_async_engine_for
from pushwarden.runtime.servicetest import local_test_config, rich_error, serving
from pushwarden.runtime.settings import DatabaseSettings
from pushwarden.services.consent.bootstrap import bootstrap
from pushwarden.services.consent.config import ConsentConfig
from pushwarden.services.consent.domain.changes import ChangeKind
from pushwarden.services.consent.handlers.common import publish
from pushwarden.services.consent.storage.uow import unit_of_work_factory

if TYPE_CHECKING:
    from pushwarden.consent.v1.consent_pb2_grpc import ConsentServiceAsyncStub as Stub

KEY = "k" * 64
DEADLINE_S = 30.0
ALL_MARKETING = resources_pb2.ConsentScope(kind=resources_pb2.CONSENT_SCOPE_KIND_ALL_MARKETING)


def config_for(url: str, **extra: str) -> ConsentConfig:
    return local_test_config(
        ConsentConfig, url, PSEUDONYM_KEY=KEY, FEED_HEARTBEAT_S="0.2", FEED_POLL_S="0.05", **extra
    )


@pytest.fixture
async def stub(any_database_url: str) -> AsyncIterator[Stub]:
    async with serving(bootstrap(config_for(any_database_url))) as channel:
        yield consent_pb2_grpc.ConsentServiceStub(channel)


_keys = iter(range(1_000_000))


async def opt_out(stub: Stub, user: str, app: str = "shop") -> None:
    await stub.RecordConsent(
        messages_pb2.RecordConsentRequest(
            app_id=app,
            user_id=user,
            scope=ALL_MARKETING,
            action=resources_pb2.CONSENT_ACTION_OPT_OUT,
            source=resources_pb2.CONSENT_SOURCE_API,
            idempotency_key=f"k{next(_keys)}",
        )
    )


async def drain(
    stub: Stub, cursor: str = "", app: str = "shop", **options: object
) -> tuple[list[resources_pb2.Change], str]:
    """Read to the head (stop_at_head) from ``cursor``; the changes and the last cursor."""
    changes: list[resources_pb2.Change] = []
    request = messages_pb2.WatchChangesRequest(
        app_id=app,
        cursor=cursor,
        stop_at_head=True,
        **options,  # type: ignore[arg-type]
    )
    async for message in stub.WatchChanges(request, timeout=DEADLINE_S):
        changes += message.changes
        cursor = message.cursor
    return changes, cursor


async def test_changes_arrive_once_in_order_and_resume_from_a_cursor(stub: Stub) -> None:
    for index in range(5):
        await opt_out(stub, f"u{index}")
    first, cursor = await drain(stub)
    assert [c.user_id for c in first] == [f"u{i}" for i in range(5)]
    assert all(c.kind == resources_pb2.CHANGE_KIND_CONSENT for c in first)
    assert [c.sequence for c in first] == sorted(c.sequence for c in first)
    assert first[-1].cursor == cursor
    for index in range(5, 8):
        await opt_out(stub, f"u{index}")
    rest, _ = await drain(stub, cursor)
    assert [c.user_id for c in rest] == ["u5", "u6", "u7"]  # nothing lost, nothing repeated
    resumed, _ = await drain(stub, first[1].cursor)
    assert [c.user_id for c in resumed] == [f"u{i}" for i in range(2, 8)]


async def test_small_batches_kinds_filter_and_apps_apart(stub: Stub) -> None:
    await stub.DefineCategory(
        messages_pb2.DefineCategoryRequest(
            app_id="shop",
            category=resources_pb2.Category(
                category_id="promos",
                kind=types_pb2.CATEGORY_KIND_MARKETING,
                default_state=resources_pb2.DEFAULT_STATE_OPTED_IN,
            ),
        )
    )
    await opt_out(stub, "u1")
    await opt_out(stub, "other-user", app="news")
    await opt_out(stub, "u2")
    changes, _ = await drain(stub, max_batch_size=1)
    assert [(c.kind, c.user_id) for c in changes] == [
        (resources_pb2.CHANGE_KIND_CATEGORY, ""),
        (resources_pb2.CHANGE_KIND_CONSENT, "u1"),
        (resources_pb2.CHANGE_KIND_CONSENT, "u2"),
    ]
    only_consent, cursor = await drain(stub, kinds=[resources_pb2.CHANGE_KIND_CATEGORY])
    assert [c.kind for c in only_consent] == [resources_pb2.CHANGE_KIND_CATEGORY]
    later, _ = await drain(stub, cursor)
    assert later == []  # the filtered-out changes moved the cursor too
    everything, _ = await drain(stub, app="")
    assert {c.app_id for c in everything} == {"shop", "news"}


async def test_a_live_follower_from_the_head_sees_new_changes_and_heartbeats(
    stub: Stub,
) -> None:
    await opt_out(stub, "before")
    stream = stub.WatchChanges(
        messages_pb2.WatchChangesRequest(app_id="shop", from_head=True), timeout=DEADLINE_S
    )
    first = await stream.read()
    assert isinstance(first, messages_pb2.WatchChangesResponse)
    assert first.caught_up
    assert list(first.changes) == []
    await opt_out(stub, "after")
    seen: list[str] = []
    heartbeats = 0
    while heartbeats < 2:
        message = await stream.read()
        assert isinstance(message, messages_pb2.WatchChangesResponse)
        seen += [c.user_id for c in message.changes]
        if not message.changes:
            heartbeats += 1
            assert message.caught_up
    stream.cancel()
    assert seen == ["after"]


async def test_bad_cursors_are_refused(stub: Stub) -> None:
    await opt_out(stub, "u1")
    _, cursor = await drain(stub)
    for request, field in (
        (messages_pb2.WatchChangesRequest(app_id="shop", cursor="garbage"), "cursor"),
        (messages_pb2.WatchChangesRequest(app_id="news", cursor=cursor), "cursor"),
        (messages_pb2.WatchChangesRequest(app_id="shop", kinds=[99]), "kinds[0]"),  # type: ignore[list-item]
    ):
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            async for _ in stub.WatchChanges(request, timeout=DEADLINE_S):
                pass
        error = rich_error(raised.value)
        assert error.code == grpc.StatusCode.INVALID_ARGUMENT
        assert field in error.fields


async def test_a_cursor_older_than_the_retention_is_expired(
    database_url: str, tmp_path: Path
) -> None:
    clock_file = tmp_path / "clock.json"
    config = config_for(database_url, CLOCK_FILE=str(clock_file))
    async with serving(bootstrap(config)) as channel:
        stub: Stub = consent_pb2_grpc.ConsentServiceStub(channel)
        await opt_out(stub, "u1")
        await opt_out(stub, "u2")
        changes, _ = await drain(stub)
    old_cursor = changes[0].cursor
    shift_clock_file(clock_file, advance=timedelta(days=8))
    async with serving(bootstrap(config)) as channel:  # retention runs at start
        stub = consent_pb2_grpc.ConsentServiceStub(channel)
        await opt_out(stub, "u3")
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
        assert [c.user_id for c in kept] == ["u3"]


async def test_a_lower_sequence_held_uncommitted_is_never_skipped(any_database_url: str) -> None:
    """Writer A appends and holds its transaction open; writer B (an RPC) must not commit
    a later change before A does, so a follower that reads "after my cursor" cannot
    skip A's change. With sequences handed out without the append lock, B commits
    first, the follower moves its cursor past A's sequence and never sees A."""
    async with serving(bootstrap(config_for(any_database_url))) as channel:
        stub: Stub = consent_pb2_grpc.ConsentServiceStub(channel)
        await opt_out(stub, "u0")
        _, cursor = await drain(stub)
        database = Database(
            create_async_engine_for(DatabaseSettings(url=any_database_url, pool_size=1))
        )
        uow = unit_of_work_factory(database)
        committed = asyncio.Event()
        release = asyncio.Event()

        async def writer_a() -> None:
            async with uow() as work:
                await publish(
                    work,
                    app_id="shop",
                    user_id="held",
                    kind=ChangeKind.CONSENT,
                    change=resources_pb2.Change(),
                    now=datetime.now(UTC),
                )
                committed.set()  # appended, not yet committed
                await release.wait()
                await work.commit()

        task_a = asyncio.ensure_future(writer_a())
        await asyncio.wait_for(committed.wait(), DEADLINE_S)
        task_b = asyncio.ensure_future(opt_out(stub, "later"))
        seen: list[str] = []
        for _ in range(10):  # the follower polls while A is open
            changes, cursor = await drain(stub, cursor)
            seen += [c.user_id for c in changes]
            await asyncio.sleep(0.05)
        release.set()
        await asyncio.wait_for(asyncio.gather(task_a, task_b), DEADLINE_S)
        changes, cursor = await drain(stub, cursor)
        seen += [c.user_id for c in changes]
        await database.dispose()
    assert seen == ["held", "later"]


async def test_concurrent_writers_and_a_live_follower_see_each_change_once_in_order(
    any_database_url: str,
) -> None:
    config = config_for(any_database_url, DB_POOL_SIZE="4")
    async with serving(bootstrap(config)) as channel:
        stub: Stub = consent_pb2_grpc.ConsentServiceStub(channel)
        stream = stub.WatchChanges(
            messages_pb2.WatchChangesRequest(app_id="shop", from_head=True), timeout=DEADLINE_S
        )
        first = await stream.read()
        assert isinstance(first, messages_pb2.WatchChangesResponse)
        writers = [asyncio.ensure_future(opt_out(stub, f"w{index}")) for index in range(40)]
        seen: list[resources_pb2.Change] = []
        while len(seen) < 40:
            message = await stream.read()
            assert isinstance(message, messages_pb2.WatchChangesResponse)
            seen += message.changes
        stream.cancel()
        await asyncio.gather(*writers)
    sequences = [change.sequence for change in seen]
    assert sequences == sorted(sequences)
    assert len(set(sequences)) == 40
    assert {change.user_id for change in seen} == {f"w{index}" for index in range(40)}


async def test_a_draining_server_ends_its_streams_with_unavailable_at_once(
    database_url: str,
) -> None:
    """A stop with a long grace period does not wait for the open feed streams: they end
    with UNAVAILABLE (their followers reconnect) as soon as the server refuses new RPCs,
    instead of holding the stop for the whole grace and being cancelled mid-read."""
    app = bootstrap(config_for(database_url))
    runtime = await app.start()
    stop: asyncio.Future[None] | None = None
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{runtime.port}") as channel:
            stub: Stub = consent_pb2_grpc.ConsentServiceStub(channel)
            await opt_out(stub, "u1")
            call = stub.WatchChanges(
                messages_pb2.WatchChangesRequest(app_id="shop"), timeout=DEADLINE_S
            )
            first = await call.read()
            assert isinstance(first, messages_pb2.WatchChangesResponse)
            assert [change.user_id for change in first.changes] == ["u1"]
            stop = asyncio.ensure_future(app.stop(runtime, grace_s=10 * DEADLINE_S))
            with pytest.raises(grpc.aio.AioRpcError) as ended:
                await read_to_the_end(call)
            assert ended.value.code() == grpc.StatusCode.UNAVAILABLE
            assert "shutting down" in (ended.value.details() or "")
            await asyncio.wait_for(stop, DEADLINE_S)  # long before the grace ends
    finally:
        if stop is None:
            await app.stop(runtime, grace_s=1.0)
        elif not stop.done():
            stop.cancel()


async def read_to_the_end(call: grpc.aio.UnaryStreamCall[Any, Any]) -> None:
    """Read a stream's messages until it ends (raising its error, if any)."""
    while await call.read() != grpc.aio.EOF:
        pass
