"""What the service template guarantees, shown on consent: storage never blocks the event
loop, and a servicer method that matches no RPC stops the service at start."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc  # type: ignore[import-untyped]

from pushwarden.common.v1 import types_pb2
from pushwarden.consent.v1 import consent_pb2_grpc, messages_pb2, resources_pb2
from pushwarden.runtime.servicetest import local_test_config, serving
from pushwarden.runtime.unimplemented import ServicerMismatch, service_handler
from pushwarden.services.consent.bootstrap import bootstrap
from pushwarden.services.consent.config import ConsentConfig
from pushwarden.services.consent.servicer import SERVICE_DESCRIPTOR, ConsentServicer

KEY = "k" * 64
HOLD_S = 4.5


async def test_a_write_waiting_on_a_sqlite_lock_blocks_neither_health_nor_reads(
    tmp_path: Path,
) -> None:
    path = tmp_path / "consent.db"
    # Room in the pool for the waiting write, a hosted worker's write and the reads:
    # this test is about the event loop, not about a starved pool.
    config = local_test_config(
        ConsentConfig, f"sqlite:///{path}", PSEUDONYM_KEY=KEY, DB_POOL_SIZE="4"
    )
    async with serving(bootstrap(config)) as channel:
        stub = consent_pb2_grpc.ConsentServiceStub(channel)
        health = health_pb2_grpc.HealthStub(channel)
        held, release = threading.Event(), threading.Event()

        def hold_write_lock() -> None:
            connection = sqlite3.connect(path, isolation_level=None)
            try:
                connection.execute("BEGIN IMMEDIATE")
                held.set()
                release.wait(HOLD_S)
                connection.execute("ROLLBACK")
            finally:
                connection.close()

        holder = threading.Thread(target=hold_write_lock)
        holder.start()
        try:
            assert await asyncio.to_thread(held.wait, 10)
            write = asyncio.ensure_future(
                stub.DefineCategory(
                    messages_pb2.DefineCategoryRequest(
                        app_id="shop",
                        category=resources_pb2.Category(
                            category_id="promos",
                            kind=types_pb2.CATEGORY_KIND_MARKETING,
                            default_state=resources_pb2.DEFAULT_STATE_OPTED_IN,
                        ),
                    ),
                    timeout=30,
                )
            )
            await asyncio.sleep(0.5)  # the write is now waiting for the lock
            for _ in range(3):
                started = time.monotonic()
                check = await health.Check(health_pb2.HealthCheckRequest(), timeout=1)
                assert check.status == health_pb2.HealthCheckResponse.SERVING
                listed = await stub.ListCategories(
                    messages_pb2.ListCategoriesRequest(app_id="shop"), timeout=1
                )
                assert list(listed.categories) == []
                assert time.monotonic() - started < 1.0
                assert not write.done()  # still waiting: the reads really ran beside it
        finally:
            release.set()
            await asyncio.to_thread(holder.join, 10)
        assert (await write).created  # and once the lock is free, the write lands


class MisspeltServicer(ConsentServicer):
    """DefineCategori is a typo: the real RPC would silently stay UNIMPLEMENTED."""

    async def DefineCategori(self, request: Any, context: Any) -> Any:
        raise AssertionError("never called")


def test_a_servicer_method_matching_no_rpc_is_refused_at_start() -> None:
    servicer = MisspeltServicer.__new__(MisspeltServicer)
    with pytest.raises(ServicerMismatch, match="DefineCategori") as raised:
        service_handler(SERVICE_DESCRIPTOR, servicer)
    assert "pushwarden.consent.v1.ConsentService" in str(raised.value)


def test_private_helpers_and_real_rpcs_are_accepted() -> None:
    class Helpful(ConsentServicer):
        async def _helper(self) -> None: ...

    service_handler(SERVICE_DESCRIPTOR, Helpful.__new__(Helpful))


async def test_the_generated_base_placeholder_counts_as_unimplemented() -> None:
    class Bare(consent_pb2_grpc.ConsentServiceServicer):
        """Overrides nothing: every RPC is the generated base's placeholder."""

    server = grpc.aio.server()
    server.add_generic_rpc_handlers((service_handler(SERVICE_DESCRIPTOR, Bare()),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = consent_pb2_grpc.ConsentServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await stub.GetLedger(messages_pb2.GetLedgerRequest(app_id="shop"))
    finally:
        await server.stop(0)
    assert raised.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert raised.value.details() == (
        "pushwarden.consent.v1.ConsentService/GetLedger is not implemented yet"
    )
