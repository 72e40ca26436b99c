"""ExportUserData and erasure, on SQLite and PostgreSQL: an export returns the profile,
every event (paged, oldest first) and the list memberships; erasure follows consent's
real change feed (a consent server beside this one) and leaves no row naming the user or
holding their values; a follower whose cursor expired resynchronises with CheckErasure."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import pytest
from sqlalchemy import select

from pushwarden.common.v1 import values_pb2
from pushwarden.consent.v1 import consent_pb2_grpc
from pushwarden.consent.v1 import messages_pb2 as consent_messages
from pushwarden.runtime.clock import shift_clock_file
from pushwarden.runtime.db import create_engine_for
from pushwarden.runtime.healthprobe import health_status
from pushwarden.runtime.servicetest import local_test_config, rich_error, serving
from pushwarden.runtime.settings import DatabaseSettings
from pushwarden.segmentation.v1 import messages_pb2, resources_pb2, segmentation_pb2_grpc
from pushwarden.services.consent.bootstrap import bootstrap as consent_bootstrap
from pushwarden.services.consent.config import ConsentConfig
from pushwarden.services.segmentation.bootstrap import bootstrap
from pushwarden.services.segmentation.config import SegmentationConfig
from pushwarden.services.segmentation.domain.values import to_timestamp
from pushwarden.services.segmentation.handlers.gdpr import CONSENT_CURSOR
from pushwarden.services.segmentation.models import Base, ServiceStateRow

if TYPE_CHECKING:
    from pushwarden.consent.v1.consent_pb2_grpc import ConsentServiceAsyncStub
    from pushwarden.segmentation.v1.segmentation_pb2_grpc import (
        SegmentationServiceAsyncStub as Stub,
    )

APP = "shop"
KEY = "k" * 64
DEADLINE_S = 30.0
VICTIM = "erase-me-7f3"
SECRETS = (VICTIM, "secret-attr-value", "secret-prop-value")


@pytest.fixture
async def stub(any_database_url: str) -> AsyncIterator[Stub]:
    config = local_test_config(SegmentationConfig, any_database_url)
    async with serving(bootstrap(config)) as channel:
        yield segmentation_pb2_grpc.SegmentationServiceStub(channel)


@asynccontextmanager
async def consent_server(
    tmp_path: Path, clock: Path | None = None, port: int = 0
) -> AsyncIterator[tuple[str, ConsentServiceAsyncStub]]:
    """A real consent service on its own SQLite file; yields its address and a stub."""
    url = f"sqlite:///{tmp_path / 'consent' / 'consent.db'}"
    extra = {"PSEUDONYM_KEY": KEY, "FEED_HEARTBEAT_S": "0.2", "FEED_POLL_S": "0.05"}
    extra["PORT"] = str(port)
    if clock is not None:
        extra["CLOCK_FILE"] = str(clock)
    app = consent_bootstrap(local_test_config(ConsentConfig, url, **extra))
    runtime = await app.start()
    address = f"127.0.0.1:{runtime.port}"
    try:
        async with grpc.aio.insecure_channel(address) as channel:
            yield address, consent_pb2_grpc.ConsentServiceStub(channel)
    finally:
        await app.stop(runtime, grace_s=1.0)


def segmentation_config(url: str, consent_addr: str) -> SegmentationConfig:
    return local_test_config(
        SegmentationConfig, url, CONSENT_ADDR=consent_addr, CONSENT_POLL_S="0.05"
    )


async def seed(stub: Stub, user: str, value: str, prop: str) -> None:
    now = datetime.now(UTC)
    await stub.UpsertProfiles(
        messages_pb2.UpsertProfilesRequest(
            app_id=APP,
            profiles=[
                resources_pb2.ProfileUpdate(
                    user_id=user,
                    set_attributes={
                        "plan": values_pb2.AttributeValue(string_value=value),
                        "tags": values_pb2.AttributeValue(
                            string_list_value=values_pb2.StringList(values=[value])
                        ),
                    },
                )
            ],
        )
    )
    await stub.TrackEvents(
        messages_pb2.TrackEventsRequest(
            app_id=APP,
            events=[
                resources_pb2.Event(
                    event_id=f"{user}-{index}",
                    user_id=user,
                    name="purchase",
                    occurred_at=to_timestamp(now - timedelta(minutes=10 - index)),
                    properties={
                        "sku": values_pb2.AttributeValue(string_value=prop),
                        "items": values_pb2.AttributeValue(
                            string_list_value=values_pb2.StringList(values=[prop])
                        ),
                    },
                )
                for index in range(3)
            ],
        )
    )
    for list_id in ("vips", "blocked"):
        await stub.CreateList(
            messages_pb2.CreateListRequest(
                app_id=APP, list=resources_pb2.StaticList(list_id=list_id, name=list_id)
            )
        )
    await stub.AddToList(messages_pb2.AddToListRequest(app_id=APP, list_id="vips", user_ids=[user]))


async def export(
    stub: Stub, user: str, **options: Any
) -> list[messages_pb2.ExportUserDataResponse]:
    pages = []
    token = ""
    while True:
        page = await stub.ExportUserData(
            messages_pb2.ExportUserDataRequest(
                app_id=APP, user_id=user, page_token=token, **options
            )
        )
        pages.append(page)
        token = page.next_page_token
        if not token:
            return pages


def rows_mentioning(url: str, needles: tuple[str, ...]) -> list[tuple[str, str]]:
    """Every (table, needle) where a row of any segmentation table holds a needle."""
    engine = create_engine_for(DatabaseSettings(url=url, pool_size=1))
    found: list[tuple[str, str]] = []
    try:
        with engine.connect() as connection:
            for table in Base.metadata.sorted_tables:
                for row in connection.execute(select(table)):
                    text = " ".join(
                        value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
                        for value in row
                    )
                    found += [(table.name, needle) for needle in needles if needle in text]
    finally:
        engine.dispose()
    return found


async def test_export_returns_profile_events_in_pages_and_lists(stub: Stub) -> None:
    await seed(stub, "u1", "gold", "sku-1")
    pages = await export(stub, "u1", page_size=2)
    assert len(pages) == 2
    first = pages[0]
    assert first.profile.user_id == "u1"
    assert first.profile.attributes["plan"].string_value == "gold"
    assert list(first.list_ids) == ["vips"]
    events = [e for page in pages for e in page.events]
    assert [e.event_id for e in events] == ["u1-0", "u1-1", "u1-2"]  # oldest first
    assert events[0].properties["sku"].string_value == "sku-1"
    assert pages[1].profile.attributes["plan"].string_value == "gold"  # repeated
    nobody = await export(stub, "nobody")
    assert not nobody[0].HasField("profile")
    assert list(nobody[0].events) == []
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.ExportUserData(messages_pb2.ExportUserDataRequest(app_id=APP, user_id=""))
    assert "user_id" in rich_error(raised.value).fields
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.ExportUserData(
            messages_pb2.ExportUserDataRequest(
                app_id=APP, user_id="u2", page_token=pages[0].next_page_token
            )
        )
    assert "page_token" in rich_error(raised.value).fields


async def wait_until_erased(stub: Stub, user: str) -> None:
    loop = asyncio.get_running_loop()
    give_up = loop.time() + DEADLINE_S
    while True:
        page = (await export(stub, user))[0]
        if not page.HasField("profile") and not page.events and not page.list_ids:
            return
        assert loop.time() < give_up, "the erasure never arrived"
        await asyncio.sleep(0.05)


async def test_erasure_follows_consents_feed_and_leaves_nothing(
    any_database_url: str, tmp_path: Path
) -> None:
    async with consent_server(tmp_path) as (address, consent):
        config = segmentation_config(any_database_url, address)
        async with serving(bootstrap(config)) as channel:
            stub: Stub = segmentation_pb2_grpc.SegmentationServiceStub(channel)
            await seed(stub, VICTIM, "secret-attr-value", "secret-prop-value")
            await seed(stub, "keeper", "kept-value", "kept-prop")
            assert rows_mentioning(any_database_url, SECRETS)  # the scan does see them
            await consent.EraseUser(consent_messages.EraseUserRequest(app_id=APP, user_id=VICTIM))
            await wait_until_erased(stub, VICTIM)
            kept = (await export(stub, "keeper"))[0]
            assert kept.profile.attributes["plan"].string_value == "kept-value"
            assert len(kept.events) == 3
            assert list(kept.list_ids) == ["vips"]
    assert rows_mentioning(any_database_url, SECRETS) == []


def stored_consent_cursor(url: str) -> str:
    engine = create_engine_for(DatabaseSettings(url=url, pool_size=1))
    try:
        with engine.connect() as connection:
            value = connection.scalar(
                select(ServiceStateRow.value).where(ServiceStateRow.name == CONSENT_CURSOR)
            )
    finally:
        engine.dispose()
    assert value, "no consent cursor stored"
    return str(value)


async def wait_until_expired(consent: ConsentServiceAsyncStub, cursor: str) -> None:
    """Until consent's feed refuses ``cursor`` (its ERASED changes are gone)."""
    loop = asyncio.get_running_loop()
    give_up = loop.time() + DEADLINE_S
    while True:
        request = consent_messages.WatchChangesRequest(cursor=cursor, stop_at_head=True)
        refusal = None
        try:
            async for _ in consent.WatchChanges(request, timeout=DEADLINE_S):
                pass
        except grpc.aio.AioRpcError as error:
            refusal = rich_error(error).reason
        if refusal is not None:
            assert refusal == "CURSOR_EXPIRED"
            return
        assert loop.time() < give_up, "consent's retention never expired the cursor"
        await asyncio.sleep(0.05)


async def test_an_expired_consent_cursor_resyncs_with_check_erasure(
    database_url: str, tmp_path: Path
) -> None:
    clock = tmp_path / "consent-clock.json"
    shift_clock_file(clock, advance=timedelta(0))
    async with (
        consent_server(tmp_path, clock) as (address, consent),
        serving(bootstrap(segmentation_config(database_url, address))) as channel,
    ):
        stub: Stub = segmentation_pb2_grpc.SegmentationServiceStub(channel)
        await seed(stub, "early", "v", "p")
        await consent.EraseUser(consent_messages.EraseUserRequest(app_id=APP, user_id="early"))
        await wait_until_erased(stub, "early")  # a cursor is stored now
        await seed(stub, VICTIM, "secret-attr-value", "secret-prop-value")
    # Consent erases the victim while segmentation is down, and its feed forgets it.
    async with consent_server(tmp_path, clock) as (address, consent):
        await consent.EraseUser(consent_messages.EraseUserRequest(app_id=APP, user_id=VICTIM))
    shift_clock_file(clock, advance=timedelta(days=8))
    async with consent_server(tmp_path, clock) as (address, consent):  # retention runs at start
        await consent.EraseUser(consent_messages.EraseUserRequest(app_id=APP, user_id="later"))
        await wait_until_expired(consent, stored_consent_cursor(database_url))
        async with serving(bootstrap(segmentation_config(database_url, address))) as channel:
            stub = segmentation_pb2_grpc.SegmentationServiceStub(channel)
            await wait_until_erased(stub, VICTIM)
    assert rows_mentioning(database_url, SECRETS) == []


def log_of(path: Path) -> str:
    """A small log file, read to explain a failure."""
    return path.read_text(errors="replace")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@asynccontextmanager
async def process(service: str, settings: dict[str, str], log: Path) -> AsyncIterator[str]:
    """``python -m pushwarden.services.<service>`` as ``make run`` starts it, with
    ``PUSHWARDEN_<SERVICE>_*`` ``settings`` (and a free port). Yields its address once
    SERVING; SIGTERM afterwards, and the process must exit 0."""
    prefix = f"PUSHWARDEN_{service.upper()}_"
    port = free_port()
    env = {name: value for name, value in os.environ.items() if not name.startswith(prefix)}
    env.update({prefix + name: value for name, value in settings.items()})
    env.update({prefix + "HOST": "127.0.0.1", prefix + "PORT": str(port)})
    with log.open("wb") as output:
        child = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            f"pushwarden.services.{service}",
            env=env,
            cwd=log.parent,
            stdout=output,
            stderr=asyncio.subprocess.STDOUT,
        )
    address = f"127.0.0.1:{port}"
    try:
        async with grpc.aio.insecure_channel(address) as channel:
            loop = asyncio.get_running_loop()
            give_up = loop.time() + DEADLINE_S
            while True:
                try:
                    if await health_status(channel, "") == "SERVING":
                        break
                except grpc.aio.AioRpcError:
                    pass
                assert child.returncode is None, log_of(log)
                assert loop.time() < give_up, f"{service} never served"
                await asyncio.sleep(0.1)
        yield address
    finally:
        if child.returncode is None:
            child.send_signal(signal.SIGTERM)
        try:
            code = await asyncio.wait_for(child.wait(), DEADLINE_S)
        except TimeoutError:
            child.kill()
            raise
    assert code == 0, log_of(log)


@pytest.mark.slow
async def test_the_service_process_erases_what_consent_erases(
    any_database_url: str, tmp_path: Path
) -> None:
    """Both real processes (``make run``'s commands): segmentation follows consent's
    feed over the network and erases; its log shows no channel used on a loop it does
    not belong to."""
    consent_settings = {
        "DATABASE_URL": f"sqlite:///{tmp_path / 'consent.db'}",
        "PSEUDONYM_KEY": KEY,
        "FEED_HEARTBEAT_S": "0.2",
        "FEED_POLL_S": "0.05",
    }
    log = tmp_path / "segmentation.log"
    async with process("consent", consent_settings, tmp_path / "consent.log") as consent_addr:
        segmentation_settings = {
            "DATABASE_URL": any_database_url,
            "DB_POOL_SIZE": "2",
            "CONSENT_ADDR": consent_addr,
            "CONSENT_POLL_S": "0.05",
        }
        async with (
            process("segmentation", segmentation_settings, log) as address,
            grpc.aio.insecure_channel(address) as channel,
            grpc.aio.insecure_channel(consent_addr) as consent_channel,
        ):
            stub: Stub = segmentation_pb2_grpc.SegmentationServiceStub(channel)
            consent: ConsentServiceAsyncStub = consent_pb2_grpc.ConsentServiceStub(consent_channel)
            await seed(stub, VICTIM, "secret-attr-value", "secret-prop-value")
            await seed(stub, "keeper", "kept-value", "kept-prop")
            await consent.EraseUser(consent_messages.EraseUserRequest(app_id=APP, user_id=VICTIM))
            await wait_until_erased(stub, VICTIM)
            assert len((await export(stub, "keeper"))[0].events) == 3
    assert rows_mentioning(any_database_url, SECRETS) == []
    assert "different loop" not in log_of(log)
