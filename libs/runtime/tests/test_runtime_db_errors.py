"""Database failures reach callers as proper statuses, never INTERNAL: a unique violation
is ABORTED (a lost race: retry), a lock wait that times out or an unreachable database is
UNAVAILABLE with a retry delay. Real databases, real gRPC."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import grpc
import pytest
from sqlalchemy import Integer, String, create_engine, text, update
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.pool import NullPool

from pushwarden.runtime.db import (
    Database,
    conventional_metadata,
    create_async_engine_for,
    create_engine_for,
)
from pushwarden.runtime.server import create_server
from pushwarden.runtime.servicetest import rich_error
from pushwarden.runtime.settings import DatabaseSettings, ServerSettings

SERVICE = "test.runtime.Store"
LOCK_TIMEOUT_MS = 300


class Base(DeclarativeBase):
    metadata = conventional_metadata()


class Item(Base):
    __tablename__ = "items"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(50), unique=True)


def _handlers(database: Database) -> grpc.GenericRpcHandler:
    async def insert_twice(request: bytes, context: Any) -> bytes:
        async with database.unit_of_work() as session:
            session.add(Item(name=request.decode()))
            await session.flush()
            session.add(Item(name=request.decode()))
            await session.flush()
            await session.commit()
        return b"ok"

    async def touch(request: bytes, context: Any) -> bytes:
        async with database.unit_of_work() as session:
            await session.execute(update(Item).where(Item.id == 1).values(name="touched"))
            await session.commit()
        return b"ok"

    return grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "InsertTwice": grpc.unary_unary_rpc_method_handler(insert_twice),
            "Touch": grpc.unary_unary_rpc_method_handler(touch),
        },
    )


@pytest.fixture
def prepared_url(any_database_url: str) -> str:
    engine = create_engine_for(DatabaseSettings(url=any_database_url))
    Base.metadata.create_all(engine)
    with engine.begin() as connection:
        connection.execute(text("INSERT INTO items (id, name) VALUES (1, 'first')"))
    engine.dispose()
    return any_database_url


async def _call(url: str, method: str, payload: bytes) -> grpc.aio.AioRpcError:
    """Serve the store on ``url`` and call ``method``; return the error it ends with."""
    database = Database(
        create_async_engine_for(
            DatabaseSettings(url=url, pool_size=2), lock_timeout_ms=LOCK_TIMEOUT_MS
        )
    )
    runtime = create_server(
        ServerSettings(host="127.0.0.1", port=0),
        register=lambda server: server.add_generic_rpc_handlers((_handlers(database),)),
        service_names=(SERVICE,),
    )
    await runtime.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{runtime.port}") as channel:
            call: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(
                f"/{SERVICE}/{method}"
            )
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await call(payload, timeout=30)
            return raised.value
    finally:
        await runtime.stop(0)
        await database.dispose()


async def test_a_unique_violation_is_aborted_not_internal(prepared_url: str) -> None:
    error = rich_error(await _call(prepared_url, "InsertTwice", b"twin"))
    assert error.code == grpc.StatusCode.ABORTED
    assert error.reason == "CONCURRENT_WRITE"


async def test_a_lock_wait_that_times_out_is_unavailable(prepared_url: str) -> None:
    """Another connection holds the lock longer than the service waits for it."""
    holder = create_engine(prepared_url, poolclass=NullPool)
    held, release = threading.Event(), threading.Event()

    def hold_lock() -> None:
        with holder.connect() as connection:
            if connection.dialect.name == "sqlite":
                connection.exec_driver_sql("BEGIN IMMEDIATE")
            else:
                connection.execute(text("SELECT * FROM items WHERE id = 1 FOR UPDATE"))
            held.set()
            release.wait(30)
            connection.rollback()

    thread = threading.Thread(target=hold_lock)
    thread.start()
    try:
        assert await asyncio.to_thread(held.wait, 30)
        error = rich_error(await _call(prepared_url, "Touch", b""))
    finally:
        release.set()
        thread.join(30)
        holder.dispose()
    assert error.code == grpc.StatusCode.UNAVAILABLE
    assert error.reason == "DATABASE_BUSY"


async def test_an_unreachable_database_is_unavailable() -> None:
    url = "postgresql+psycopg://nobody@127.0.0.1:1/none"
    error = rich_error(await _call(url, "Touch", b""))
    assert error.code == grpc.StatusCode.UNAVAILABLE
    assert error.reason == "DATABASE_UNAVAILABLE"
