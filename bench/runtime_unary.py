"""Benchmark: no-op unary RPCs per second through the runtime's full server stack,
against a bare ``grpc.aio`` server with the same handler.

Run: .venv/bin/python bench/runtime_unary.py [--quick]

Each server runs in its own child process (this script with ``--serve``); they start
together but only the one being measured receives traffic, and the client never
shares an interpreter with a server. The client is
the same for every variant: one ``grpc.aio`` channel, a fixed number of concurrent
callers each sending an empty request in a loop with an ``authorization: Bearer``
header (the bare server ignores it), after a warm-up. Variants:

- ``bare``: ``grpc.aio.server()`` with the generic handler, nothing else;
- ``runtime``: ``create_server`` with auth ON (one configured caller whose token the
  client sends), the error interceptor, health and reflection registered, explicit
  message sizes; telemetry exporter ``none`` as configured by default, so no
  telemetry interceptor is installed;
- ``runtime_traced``: the same with telemetry ON (a span and metrics per RPC; spans go
  to an exporter that discards them, so only the instrumentation cost is measured);
- ``bare_db``: the bare server whose handler reads one row (by primary key) of a SQLite
  file through a bare SQLAlchemy ``AsyncSession`` on ``sqlite+aiosqlite``;
- ``runtime_db``: the runtime server (as ``runtime``) whose handler reads the same row of
  the same file through the runtime's storage (``create_async_engine_for``, its pragmas,
  and a read-only unit of work). Both database variants use the same pool size
  (``--pool-size``) and the same client concurrency.

Variants alternate over rounds. RPC/s figures are the best round and CPU figures the
lowest (the machine is shared; those rounds are the least disturbed by other work);
RPC/s ratios are the median over rounds of back-to-back pairs. Server CPU time per RPC
is reported too: it is much steadier than RPC/s on a busy machine, and it shows the
server's own cost even when the Python client is what limits RPC/s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import grpc

SERVICE = "bench.runtime.Noop"
METHOD = f"/{SERVICE}/Call"
TOKEN = "bench-token"
VARIANTS = ("bare", "runtime", "runtime_traced", "bare_db", "runtime_db")
DB_VARIANTS = ("bare_db", "runtime_db")


def _same(data: bytes) -> bytes:
    return data


async def _noop(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
    return b""


def _register(server: grpc.aio.Server, behavior: Any = _noop) -> None:
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                SERVICE, {"Call": grpc.unary_unary_rpc_method_handler(behavior)}
            ),
        )
    )


def _prepare_database(path: str) -> None:
    """A SQLite file with the one row both database variants read."""
    import sqlite3

    connection = sqlite3.connect(path)
    with connection:
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("CREATE TABLE IF NOT EXISTS items (id INTEGER PRIMARY KEY, name TEXT)")
        connection.execute("INSERT OR REPLACE INTO items VALUES (1, 'the row')")
    connection.close()


def _db_reader(variant: str, path: str, pool_size: int) -> Any:
    """The handler of a database variant: read row 1 and answer its name."""
    from sqlalchemy import column, select, table
    from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

    items = table("items", column("id"), column("name"))
    query = select(items.c.name).where(items.c.id == 1)
    if variant == "bare_db":
        engine = create_async_engine(
            f"sqlite+aiosqlite:///{path}", pool_size=pool_size, max_overflow=0
        )
        sessions = async_sessionmaker(engine, expire_on_commit=False)

        async def bare(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
            async with sessions() as session:
                name = await session.scalar(query)
            return str(name).encode()

        return bare

    from pushwarden.runtime.db import Database, create_async_engine_for
    from pushwarden.runtime.settings import DatabaseSettings

    database = Database(
        create_async_engine_for(DatabaseSettings(url=f"sqlite:///{path}", pool_size=pool_size))
    )

    async def through_runtime(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
        async with database.unit_of_work(read_only=True) as session:
            name = await session.scalar(query)
        return str(name).encode()

    return through_runtime


async def _serve(variant: str, db_path: str, pool_size: int) -> None:
    from opentelemetry.sdk.trace import ReadableSpan
    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

    from pushwarden.runtime.auth import token_sha256
    from pushwarden.runtime.server import create_server
    from pushwarden.runtime.settings import CallerGrant, ServerSettings, TelemetrySettings
    from pushwarden.runtime.telemetry import setup_telemetry

    class Discard(SpanExporter):
        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    behavior = _db_reader(variant, db_path, pool_size) if variant in DB_VARIANTS else _noop
    if variant in ("bare", "bare_db"):
        server = grpc.aio.server()
        _register(server, behavior)
        port = server.add_insecure_port("127.0.0.1:0")
    else:
        telemetry = setup_telemetry(
            TelemetrySettings(service_name="bench"),
            span_exporter=Discard() if variant == "runtime_traced" else None,
        )
        settings = ServerSettings(
            host="127.0.0.1",
            port=0,
            callers=(CallerGrant("bench", token_sha256(TOKEN), (f"/{SERVICE}/*",)),),
        )
        runtime = create_server(
            settings,
            register=lambda server: _register(server, behavior),
            service_names=[SERVICE],
            telemetry=telemetry,
        )
        server, port = runtime.server, runtime.port
    await server.start()
    print(port, flush=True)
    # Runs until the parent closes our stdin.
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    await server.stop(0)


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used (Linux ``/proc``)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True, slots=True)
class Round:
    """One measured round: client-observed throughput and server CPU per RPC."""

    rpc_per_s: float
    server_cpu_us_per_rpc: float


async def _drive(
    port: int, server_pid: int, concurrency: int, warmup_s: float, duration_s: float
) -> Round:
    metadata = (("authorization", f"Bearer {TOKEN}"),)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = channel.unary_unary(METHOD, request_serializer=_same, response_deserializer=_same)
        await call(b"", metadata=metadata, timeout=10)
        counting = False
        count = 0
        stop_at = 0.0

        async def caller() -> None:
            nonlocal count
            while True:
                await call(b"", metadata=metadata, timeout=10)
                if counting:
                    if time.perf_counter() >= stop_at:
                        return
                    count += 1

        tasks = [asyncio.ensure_future(caller()) for _ in range(concurrency)]
        await asyncio.sleep(warmup_s)
        cpu_before = _cpu_seconds(server_pid)
        started = time.perf_counter()
        stop_at = started + duration_s
        counting = True
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - started
        cpu = _cpu_seconds(server_pid) - cpu_before
        return Round(count / elapsed, cpu / max(count, 1) * 1e6)


class ServerProcess:
    """A variant's server in its own child process; it stops when its stdin closes."""

    def __init__(self, variant: str, db_path: str, pool_size: int) -> None:
        self.process = subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--serve",
                variant,
                "--db",
                db_path,
                "--pool-size",
                str(pool_size),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self._port: int | None = None

    @property
    def port(self) -> int:
        """The port the server printed once listening."""
        if self._port is None:
            assert self.process.stdout is not None
            self._port = int(self.process.stdout.readline())
        return self._port

    def close(self) -> None:
        """Stop the server and reap it."""
        assert self.process.stdin is not None
        self.process.stdin.close()
        self.process.wait(timeout=30)


def _bench(name: str, value: float, unit: str, baseline: float | None, notes: str) -> None:
    line = {"name": name, "value": round(value, 3), "unit": unit, "baseline": baseline}
    line["notes"] = notes
    print("BENCH " + json.dumps(line))


_LABELS = {
    "bare": ("bare_grpc", "bare grpc.aio server"),
    "runtime": (
        "runtime",
        "runtime create_server: auth on (token checked), error mapping, health, reflection; "
        "telemetry exporter none",
    ),
    "runtime_traced": (
        "runtime_traced",
        "as runtime, plus telemetry on (span + metrics per RPC, spans discarded)",
    ),
    "bare_db": (
        "bare_db",
        "bare grpc.aio server reading one row by primary key from a SQLite file with a bare "
        "SQLAlchemy AsyncSession (sqlite+aiosqlite)",
    ),
    "runtime_db": (
        "runtime_db",
        "runtime create_server (as runtime) reading the same row of the same file through "
        "the runtime's storage (create_async_engine_for, read-only unit of work)",
    ),
}
# Which variant each one is compared with.
_BASELINE = {"runtime": "bare", "runtime_traced": "bare", "runtime_db": "bare_db"}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and print the table and BENCH lines."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="a ~5 s run")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--pool-size", type=int, default=5, help="database pool size")
    parser.add_argument("--serve", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--db", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        asyncio.run(_serve(args.serve, args.db, args.pool_size))
        return 0

    variants = ("bare", "runtime", "bare_db", "runtime_db") if args.quick else VARIANTS
    rounds, warmup_s, duration_s = (2, 0.3, 1.0) if args.quick else (5, 0.5, 2.0)
    results: dict[str, list[Round]] = {v: [] for v in variants}
    scratch = tempfile.TemporaryDirectory(prefix="pw-bench-")
    db_path = os.path.join(scratch.name, "bench.db")
    _prepare_database(db_path)
    # All servers start together (saving start-up time) but only the one being measured
    # receives traffic; the others sit idle in their own processes.
    servers = {v: ServerProcess(v, db_path, args.pool_size) for v in variants}
    try:
        for _ in range(rounds):
            for v, server in servers.items():
                results[v].append(
                    asyncio.run(
                        _drive(
                            server.port, server.process.pid, args.concurrency, warmup_s, duration_s
                        )
                    )
                )
    finally:
        for server in servers.values():
            server.close()
        scratch.cleanup()
    rate = {v: max(r.rpc_per_s for r in rs) for v, rs in results.items()}
    cpu = {v: min(r.server_cpu_us_per_rpc for r in rs) for v, rs in results.items()}
    # A ratio compares rounds run back to back (similar background load), and the
    # median over rounds drops the ones a burst of other work disturbed.
    ratio = {
        v: statistics.median(
            r.rpc_per_s / b.rpc_per_s
            for r, b in zip(results[v], results[_BASELINE.get(v, v)], strict=True)
        )
        for v in variants
    }

    print(f"{'server':<16} {'unary RPC/s':>12} {'vs bare':>8} {'server CPU us/RPC':>18}")
    for v in variants:
        print(f"{v:<16} {rate[v]:>12.0f} {ratio[v]:>8.2f} {cpu[v]:>18.1f}")

    setup = (
        f"unary, empty requests, {args.concurrency} concurrent callers over one "
        f"grpc.aio channel, server in its own process, database pool {args.pool_size}; best "
        f"of {rounds} alternating rounds of {duration_s:g} s after {warmup_s:g} s warm-up"
    )
    for v in variants:
        prefix, label = _LABELS[v]
        base = _BASELINE.get(v)
        baseline = None if base is None else round(rate[base], 3)
        _bench(f"{prefix}.unary_rpc_per_s", rate[v], "rpc/s", baseline, f"{label}; {setup}")
        cpu_baseline = None if base is None else round(cpu[base], 3)
        _bench(
            f"{prefix}.server_cpu_us_per_rpc",
            cpu[v],
            "us",
            cpu_baseline,
            f"server process CPU time per RPC (lowest round; steadier than RPC/s on a "
            f"shared machine); {label}; {setup}",
        )
        if base is not None:
            base_prefix = _LABELS[base][0]
            _bench(
                f"{prefix}.server_capacity_ratio_to_bare",
                cpu[base] / cpu[v],
                "ratio",
                None,
                f"{base_prefix}.server_cpu_us_per_rpc / {prefix}.server_cpu_us_per_rpc: the "
                "throughput ratio of CPU-bound servers, less sensitive to a busy machine "
                "and to the client's own limit than the RPC/s ratio",
            )
            goal = v in ("runtime", "runtime_db")
            name = "db_read_rpc_ratio_to_bare" if v == "runtime_db" else "unary_rpc_ratio_to_bare"
            _bench(
                f"runtime.{name}" if v == "runtime_db" else f"{prefix}.{name}",
                ratio[v],
                "ratio",
                0.7 if goal else None,
                f"median over rounds of {prefix} RPC/s / {base_prefix} RPC/s measured back "
                "to back" + ("; goal >= 0.7" if goal else ""),
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
