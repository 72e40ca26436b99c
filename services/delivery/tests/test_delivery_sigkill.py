"""Durability under SIGKILL: the delivery service runs as its own OS process
(``python -m pushwarden.services.delivery``, configured through the environment as
``make run`` configures it), against consent and the fake APNs. A client hands it
20,000 sends over gRPC, calling again whenever the service is away; the process is
killed with SIGKILL while a batch is in flight at the fake (and perhaps while the client
is still delivering), then started again.

Afterwards every accepted send is final (GetDelivery), and an ``apns-id`` reached the
fake twice only inside the one window the README documents: the provider had the push,
the process died before it committed the batch's records. So every duplicated
``apns-id`` first reached the fake before the kill, belongs to a send that was claimed
and not yet recorded when the process died, and carries one attempt in the record (the
one after the restart).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import random
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
import pytest
from sqlalchemy import func, select

from pushwarden.common.v1 import content_pb2, types_pb2
from pushwarden.delivery.v1 import delivery_pb2_grpc, messages_pb2, resources_pb2
from pushwarden.runtime.clock import shift_clock_file
from pushwarden.runtime.db import Database, create_async_engine_for
from pushwarden.runtime.servicetest import ServiceProcess, free_port
from pushwarden.runtime.settings import DatabaseSettings
from pushwarden.sandbox.faults import FaultSpec
from pushwarden.services.delivery.handlers.dispatch import push_seed
from pushwarden.services.delivery.models import SendRow
from pushwarden.services.delivery.providers import apns_id_for

if TYPE_CHECKING:
    from pushwarden.delivery.v1.delivery_pb2_grpc import (
        DeliveryServiceAsyncStub as DeliveryStub,
    )

    from .conftest import Platform

pytestmark = [pytest.mark.timeout(300), pytest.mark.slow]

SENDS = 20_000
USERS = 200
DELIVER_CHUNK = 1000  # the most one Deliver call takes
# The fake holds every push this long, so a batch is at the fake most of the time.
HOLD_S = 0.2
CLAIM_LEASE_S = 120
FINAL = {
    resources_pb2.DELIVERY_STATUS_DELIVERED,
    resources_pb2.DELIVERY_STATUS_FAILED,
    resources_pb2.DELIVERY_STATUS_EXPIRED,
}
FINAL_NAMES = {"DELIVERED", "FAILED", "EXPIRED"}


def delivery_process_for(platform: Platform, logs: Path) -> ServiceProcess:
    """``python -m pushwarden.services.delivery`` configured as ``make run`` configures
    it: its address, consent's, the database, the credentials file, and trust in the
    fakes' CA."""
    port = free_port()
    assert platform.sandbox.apns.ca_file is not None
    return ServiceProcess(
        "pushwarden.services.delivery",
        "PUSHWARDEN_",
        port,
        {
            "PUSHWARDEN_DELIVERY_HOST": "127.0.0.1",
            "PUSHWARDEN_DELIVERY_PORT": str(port),
            "PUSHWARDEN_DELIVERY_DATABASE_URL": platform.database_url,
            "PUSHWARDEN_DELIVERY_DB_POOL_SIZE": "3",
            "PUSHWARDEN_DELIVERY_CONSENT_ADDR": platform.consent_addr,
            "PUSHWARDEN_DELIVERY_CREDENTIALS": str(platform.sandbox.credentials_file),
            "PUSHWARDEN_DELIVERY_CLOCK_FILE": str(platform.clock_file),
            "PUSHWARDEN_DELIVERY_CLAIM_LEASE_S": str(CLAIM_LEASE_S),
            "PUSHWARDEN_DELIVERY_APNS_TIMEOUT": "10",
            "PUSHWARDEN_DELIVERY_LOG_FORMAT": "text",
            "SSL_CERT_FILE": str(platform.sandbox.apns.ca_file),
        },
        logs,
    )


@contextlib.asynccontextmanager
async def delivery_process(platform: Platform, logs: Path) -> AsyncIterator[ServiceProcess]:
    process = delivery_process_for(platform, logs)
    try:
        yield process
    finally:
        await process.stop()


async def statuses(database: Database) -> dict[str, str]:
    """Every send's stored status, read straight from the database."""
    async with database.sessions() as session:
        rows = await session.execute(select(SendRow.send_id, SendRow.status))
        return {str(send_id): str(status) for send_id, status in rows.all()}


async def final_count(database: Database) -> int:
    async with database.sessions() as session:
        done = await session.scalar(
            select(func.count()).where(SendRow.status.not_in(("PENDING", "IN_PROGRESS")))
        )
        return int(done or 0)


async def test_a_sigkill_mid_batch_loses_no_send_and_duplicates_only_in_the_window(
    platform: Platform, tmp_path: Path
) -> None:
    phases: dict[str, float] = {}
    began = time.monotonic()

    def phase(name: str) -> None:
        phases[name] = round(time.monotonic() - began, 1)

    devices: dict[str, str] = {}  # user id -> device id
    for start in range(0, USERS, 50):
        registered = await asyncio.gather(
            *(
                platform.register(f"user-{n}", types_pb2.PLATFORM_IOS)
                for n in range(start, start + 50)
            )
        )
        devices.update((device.user_id, device.device_id) for device in registered)
    phase("registered")
    sends = [
        resources_pb2.Send(
            send_id=f"s-{n:05d}-{uuid.uuid4().hex[:8]}",
            user_id=f"user-{n % USERS}",
            category_id="promos",
            content=content_pb2.Content(title="t", body=f"push {n}"),
        )
        for n in range(SENDS)
    ]
    # Each send goes to its user's one device, under the apns-id of that pair.
    send_of = {
        apns_id_for(push_seed(send.send_id, devices[send.user_id])): send.send_id for send in sends
    }
    sample = set(random.Random(7).sample([send.send_id for send in sends], 500))
    apns = platform.sandbox.apns
    recorder = apns.recorder
    apns.faults.add(FaultSpec("delay", seconds=HOLD_S))
    database = Database(
        create_async_engine_for(DatabaseSettings(platform.database_url, pool_size=2))
    )
    client: asyncio.Task[None] | None = None
    async with delivery_process(platform, tmp_path) as delivery:
        try:
            await delivery.start()
            phase("started")
            # The caller hands the sends over 1,000 at a time and, like any client, calls
            # again when the service is away (Deliver is idempotent by send id), so the
            # kill may land while it is still delivering.
            client = asyncio.create_task(deliver_all(delivery.port, platform.app, sends))

            # Mid-way: just after a batch's answers arrived, the next one is on its way
            # to the fake (which holds it for HOLD_S).
            async def mid_way() -> bool:
                return recorder.count() >= SENDS // 3

            await platform.eventually(mid_way, within_s=120, what="a third of the sends sent")
            seen = recorder.count()

            async def answered() -> bool:
                return recorder.count() > seen

            await platform.eventually(answered, within_s=30, what="the next batch answered")
            await asyncio.sleep(HOLD_S / 2)
            await delivery.kill()
            killed_at = time.time()
            phase("killed")
            at_kill = await statuses(database)
            unrecorded = {s for s, status in at_kill.items() if status == "IN_PROGRESS"}
            assert unrecorded, "no batch was claimed when the process died"
            waiting = SENDS - len(at_kill) + sum(1 for s in at_kill.values() if s == "PENDING")
            assert waiting > 0, "killed too late: every send was claimed already"

            # Restart; the dead process's claims come back when their lease runs out.
            await asyncio.sleep(HOLD_S * 2)  # let the fake finish what it held
            apns.faults.clear()
            await delivery.start()
            phase("restarted")
            shift_clock_file(platform.clock_file, advance=dt.timedelta(seconds=CLAIM_LEASE_S))
            await asyncio.wait_for(client, 120)
            phase("accepted")

            async def all_final() -> bool:
                return await final_count(database) == SENDS

            await platform.eventually(all_final, within_s=180, what="every send final")
            phase("final")

            at_end = await statuses(database)
            # GetDelivery of every send the kill caught claimed and of a sample of the
            # others (20,000 calls would take a minute on SQLite); the database has all.
            async with grpc.aio.insecure_channel(f"127.0.0.1:{delivery.port}") as channel:
                stub = delivery_pb2_grpc.DeliveryServiceStub(channel)
                deliveries = {
                    record.send.send_id: record
                    for record in await _get_deliveries(
                        stub, platform.app, sorted(unrecorded | sample)
                    )
                }
            phase("read back")
        except BaseException:
            print(delivery.output())
            raise
        finally:
            if client is not None and not client.done():
                client.cancel()
            await database.dispose()

    # Every accepted send ended final: in the database, and by GetDelivery.
    assert set(at_end) == {send.send_id for send in sends}
    assert set(at_end.values()) <= FINAL_NAMES, Counter(at_end.values())
    not_final = [d.send.send_id for d in deliveries.values() if d.status not in FINAL]
    assert not not_final, not_final[:10]
    for record in deliveries.values():
        [device] = record.devices
        assert {a.apns_id for a in device.attempts} <= set(send_of), record

    # Every push reached the fake; twice only inside the window.
    requests = recorder.requests()
    counts = Counter(r.apns_id or "" for r in requests)
    assert set(counts) == set(send_of)  # each send's one apns-id, and nothing else
    first_seen: dict[str, float] = {}
    for request in requests:
        first_seen.setdefault(request.apns_id or "", request.time)
    in_flight = {
        apns_id
        for apns_id, at in first_seen.items()
        if at < killed_at and send_of[apns_id] in unrecorded
    }
    assert in_flight, "no push was at the fake when the process died"
    duplicated = {apns_id for apns_id, n in counts.items() if n > 1}
    assert all(counts[apns_id] == 2 for apns_id in duplicated)
    assert duplicated <= in_flight, sorted(duplicated - in_flight)[:10]
    for apns_id in duplicated:
        [device] = deliveries[send_of[apns_id]].devices
        # The first acceptance was never recorded: the one attempt is the resend.
        assert [(a.apns_id, a.outcome) for a in device.attempts] == [
            (apns_id, resources_pb2.ATTEMPT_OUTCOME_DELIVERED)
        ]
    print(
        f"\nsends {SENDS}, claimed and unrecorded at the kill {len(unrecorded)}, "
        f"at the fake before the kill {len(in_flight)}, duplicated {len(duplicated)}; "
        f"seconds from the start: {phases}"
    )


async def deliver_all(port: int, app_id: str, sends: list[resources_pb2.Send]) -> None:
    """Deliver every send, 1,000 a call, each call repeated until the service answers it."""
    # Reconnect quickly once the service is back (gRPC's default backoff grows to 2 min).
    options = [
        ("grpc.initial_reconnect_backoff_ms", 100),
        ("grpc.min_reconnect_backoff_ms", 100),
        ("grpc.max_reconnect_backoff_ms", 500),
    ]
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=options) as channel:
        stub: DeliveryStub = delivery_pb2_grpc.DeliveryServiceStub(channel)
        for start in range(0, len(sends), DELIVER_CHUNK):
            request = messages_pb2.DeliverRequest(
                app_id=app_id, sends=sends[start : start + DELIVER_CHUNK]
            )
            while True:
                try:
                    answer = await stub.Deliver(request, timeout=30)
                    break
                except grpc.aio.AioRpcError as error:
                    # The process is gone (or SQLite was busy): the same call again.
                    if error.code() != grpc.StatusCode.UNAVAILABLE:
                        raise
                    await asyncio.sleep(0.1)
            accepted = {types_pb2.ITEM_STATUS_APPLIED, types_pb2.ITEM_STATUS_UNCHANGED}
            assert all(r.status in accepted for r in answer.results), answer


async def _get_deliveries(
    stub: DeliveryStub, app_id: str, send_ids: list[str]
) -> list[resources_pb2.Delivery]:
    """GetDelivery of each send, a few hundred calls in flight at a time."""
    found: list[resources_pb2.Delivery] = []
    for start in range(0, len(send_ids), 200):
        answers = await asyncio.gather(
            *(
                stub.GetDelivery(
                    messages_pb2.GetDeliveryRequest(app_id=app_id, send_id=send_id), timeout=60
                )
                for send_id in send_ids[start : start + 200]
            )
        )
        found.extend(answer.delivery for answer in answers)
    return found
