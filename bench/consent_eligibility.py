"""Benchmark: the consent service's batch eligibility and consent recording, through gRPC
against the service running as its own process.

Run: .venv/bin/python bench/consent_eligibility.py [--quick] [--users N] [--profile DIR]

The service is started as production starts it (``python -m pushwarden.services.consent``
with ``PUSHWARDEN_CONSENT_*`` settings: a free port on 127.0.0.1, the database URL, a
64-character pseudonym key, the pool size); the client runs in this process over one
``grpc.aio`` channel.

- ``consent.eligibility_users_per_s`` (SQLite) and ``consent.eligibility_users_per_s_pg``
  (PostgreSQL): ``CheckEligibility`` for the MARKETING category ``promos`` in batches of
  1,000 distinct users, every batch of a pass different (the population, shuffled, cut
  into batches; each user once per pass), a few batches in flight at once. The
  population (100,000 users, 10,000 with ``--quick``) has two devices each (mixed
  permissions, some invalidated), consent choices (universal and category opt-outs,
  topic subscriptions), preferences (quiet hours, frequency, zone overrides) and a few
  erasure suppressions; it is written straight into the database with bulk inserts
  (not timed, not through RPCs) once the service has migrated the schema. The SQLite
  file is kept under ``var/bench/`` so a second run starts at once; PostgreSQL gets a
  throwaway database (created and dropped) at 127.0.0.1:5432, skipped with a printed
  line when the server does not answer. The answers' decision mix is printed so that
  a run that mostly stops at the first check would show.
- ``consent.record_consent_per_s`` and ``consent.record_consent_p99_ms``: concurrent
  ``RecordConsent`` calls (each one a committed transaction: ledger entry, current
  choice, feed change, idempotency key) for distinct users on a fresh SQLite database
  (``..._pg``: on the PostgreSQL database above); latency per call as the client sees
  it, UNAVAILABLE (database busy) answers retried and counted.

Figures are as measured on this machine, best pass of several. The service's CPU time
per batch (``consent.eligibility_server_cpu_ms_per_batch``) is printed beside users/s:
on a shared machine it is the steadier figure. ``--profile DIR`` runs the eligibility
services under cProfile (also ``PUSHWARDEN_BENCH_PROFILE=DIR``) and prints where their
time goes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import pstats
import random
import statistics
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc

from pushwarden.common.v1 import decision_pb2, policy_pb2, types_pb2
from pushwarden.consent.v1 import consent_pb2_grpc, messages_pb2, resources_pb2
from pushwarden.runtime.servicetest import ServiceProcess, bench_line, free_port

ROOT = Path(__file__).resolve().parents[1]
KEEP_DIR = ROOT / "var" / "bench"
KEY = "b" * 64
APP = "bench-app"
CATEGORY = "promos"
BATCH = 1000
GOAL_USERS_PER_S = 20_000
SEED_VERSION = 1
PROFILE_ENV = "PUSHWARDEN_BENCH_PROFILE"
ZONES = ("Europe/Berlin", "America/New_York", "Asia/Tokyo", "Europe/London", "")
T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


def user_id(i: int) -> str:
    """The population's i-th user id."""
    return f"user-{i:07d}"


# --- the population -------------------------------------------------------------------


def _rows(users: int) -> dict[str, list[dict[str, Any]]]:
    """Every row of the seeded app, by table. Deterministic in ``users``."""
    from pushwarden.services.consent.domain.subjects import Pseudonyms

    pseudonyms = Pseudonyms(KEY)
    at = T0
    categories = [
        {
            "app_id": APP,
            "category_id": category_id,
            "kind": kind,
            "default_state": "OPTED_IN",
            "user_can_opt_out": kind == "MARKETING",
            "display_name": category_id.title(),
            "description": "",
            "created_at": at,
            "updated_at": at,
        }
        for category_id, kind in ((CATEGORY, "MARKETING"), ("orders", "TRANSACTIONAL"))
    ]
    devices: list[dict[str, Any]] = []
    choices: list[dict[str, Any]] = []
    preferences: list[dict[str, Any]] = []
    suppressions: list[dict[str, Any]] = []
    quiet = policy_pb2.QuietHours(
        windows=[
            policy_pb2.QuietHoursWindow(
                start=types_pb2.LocalTime(hours=22), end=types_pb2.LocalTime(hours=7)
            )
        ]
    )
    frequency = policy_pb2.FrequencyPreference(
        mode=policy_pb2.FREQUENCY_MODE_DAILY_MAX, max_count=2
    )
    sequence = 0
    for i in range(users):
        user = user_id(i)
        zone = ZONES[i % len(ZONES)]
        for n, (platform, provider, token) in enumerate(
            (
                ("IOS", "APNS", f"{i:08x}".ljust(64, "a")),
                ("ANDROID", "FCM", f"fcm:{i:08d}:" + "x" * 150),
            )
        ):
            # Mostly allowed, with every device-level outcome present: no permission
            # on one device, a provider-invalidated token, a user with no usable one.
            denied = (n == 0 and i % 10 == 0) or (n == 1 and i % 40 == 0)
            invalid = n == 1 and i % 20 == 7
            devices.append(
                {
                    "device_id": f"d{i:07d}{n}",
                    "app_id": APP,
                    "token": token,
                    "user_id": user,
                    "platform": platform,
                    "provider": provider,
                    "time_zone": zone,
                    "locale": "en-US",
                    "app_version": "5.1.0",
                    "permission": "DENIED" if denied else "GRANTED",
                    "os_version": "17.4",
                    "model": "bench",
                    "status": "INVALID" if invalid else "ACTIVE",
                    "invalid_reason": "UNREGISTERED" if invalid else None,
                    "invalid_detail": "",
                    "invalidated_at": at if invalid else None,
                    "created_at": at,
                    "updated_at": at,
                    "registered_at": at - timedelta(days=n),
                    "changed_at": at,
                }
            )
        scopes = []
        if i % 25 == 4:
            scopes.append(("ALL_MARKETING", "", "", "", "OPT_OUT"))
        if i % 10 == 3:
            scopes.append(("CATEGORY", "", CATEGORY, "", "OPT_OUT"))
        if i % 7 == 1:
            scopes.append(("TOPIC", "", "", "sale", "OPT_IN"))
        if i % 11 == 5:
            scopes.append(("CATEGORY", "PUSH", CATEGORY, "", "OPT_IN"))
        for kind, channel, category_id, topic_id, action in scopes:
            sequence += 1
            choices.append(
                {
                    "app_id": APP,
                    "user_id": user,
                    "scope_key": f"{kind}:{channel}:{category_id}:{topic_id}",
                    "scope_kind": kind,
                    "channel": channel,
                    "category_id": category_id,
                    "topic_id": topic_id,
                    "action": action,
                    "source": "PREFERENCE_CENTER",
                    "wording_id": "",
                    "legal_basis": "",
                    "recorded_at": at,
                    "client_time": None,
                    "ledger_sequence": sequence,
                }
            )
        if i % 4 == 0:
            document = resources_pb2.Preferences(quiet_hours=quiet, frequency=frequency)
            if i % 8 == 0:
                document.time_zone_override = "Australia/Sydney"
            preferences.append(
                {
                    "app_id": APP,
                    "user_id": user,
                    "document": document.SerializeToString(deterministic=True),
                    "updated_at": at,
                }
            )
        if i % 500 == 9:
            suppressions.append(
                {
                    "app_id": APP,
                    "subject": pseudonyms.subject(APP, user),
                    "erased_at": at,
                    "lifted_at": None,
                }
            )
    return {
        "categories": categories,
        "devices": devices,
        "consent_choices": choices,
        "preferences": preferences,
        "suppressions": suppressions,
    }


def seed(url: str, users: int) -> float:
    """Migrate the schema and bulk-insert the population; returns the seconds it took."""
    from sqlalchemy import insert

    from pushwarden.runtime.db import create_engine_for
    from pushwarden.runtime.migrations import upgrade_to_head
    from pushwarden.runtime.settings import DatabaseSettings
    from pushwarden.services.consent.bootstrap import MIGRATIONS
    from pushwarden.services.consent.models import Base

    started = time.perf_counter()
    engine = create_engine_for(DatabaseSettings(url=url, pool_size=1))
    try:
        upgrade_to_head(engine, MIGRATIONS)
        tables = Base.metadata.tables
        with engine.begin() as connection:
            for table, rows in _rows(users).items():
                for start in range(0, len(rows), 20_000):
                    connection.execute(insert(tables[table]), rows[start : start + 20_000])
            if engine.dialect.name == "postgresql":
                connection.exec_driver_sql("ANALYZE")
    finally:
        engine.dispose()
    return time.perf_counter() - started


def kept_sqlite(users: int, directory: Path) -> tuple[str, bool]:
    """The kept SQLite file for this population (seeded once; a marker beside it says
    the seeding finished), and whether it was seeded just now."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"consent_eligibility_{users}.db"
    marker = path.with_suffix(".seeded")
    url = f"sqlite:///{path}"
    expected = json.dumps({"users": users, "version": SEED_VERSION})
    if marker.exists() and path.exists() and marker.read_text() == expected:
        return url, False
    for stale in (path, marker, Path(f"{path}-wal"), Path(f"{path}-shm")):
        stale.unlink(missing_ok=True)
    seconds = seed(url, users)
    marker.write_text(expected)
    print(f"seeded {users:,} users x 2 devices into {path} in {seconds:.1f} s", flush=True)
    return url, True


@contextlib.contextmanager
def throwaway_postgres() -> Iterator[str | None]:
    """A fresh PostgreSQL database's URL (dropped afterwards), or None when the server
    does not answer."""
    from pushwarden.runtime.testing import postgres_unavailable_reason, throwaway_postgres_database

    reason = postgres_unavailable_reason()
    if reason is not None:
        print(f"PostgreSQL skipped: 127.0.0.1:5432 unavailable ({reason})", flush=True)
        yield None
        return
    with throwaway_postgres_database(prefix="pw_bench_") as url:
        yield url


# --- the service process --------------------------------------------------------------


def consent_process(
    url: str, pool_size: int, logs: Path, profile: Path | None = None
) -> ServiceProcess:
    """``python -m pushwarden.services.consent`` on a free port (optionally under
    cProfile: a graceful stop writes the profile), its output under ``logs``."""
    port = free_port()
    return ServiceProcess(
        "pushwarden.services.consent",
        "PUSHWARDEN_CONSENT_",
        port,
        {
            "PUSHWARDEN_CONSENT_HOST": "127.0.0.1",
            "PUSHWARDEN_CONSENT_PORT": str(port),
            "PUSHWARDEN_CONSENT_DATABASE_URL": url,
            "PUSHWARDEN_CONSENT_PSEUDONYM_KEY": KEY,
            "PUSHWARDEN_CONSENT_DB_POOL_SIZE": str(pool_size),
            "PUSHWARDEN_CONSENT_LOG_LEVEL": "ERROR",  # busy retries are counted by the client
        },
        logs,
        python_args=("-m", "cProfile", "-o", str(profile)) if profile is not None else (),
    )


# --- eligibility ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Pass:
    """One pass over the whole population."""

    users_per_s: float
    batch_p50_ms: float
    batch_p99_ms: float
    server_cpu_ms_per_batch: float
    client_cpu_ms_per_batch: float


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used, all its threads (Linux ``/proc``)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def eligibility_passes(
    target: str, server_pid: int, users: int, concurrency: int, passes: int
) -> tuple[list[Pass], Counter[str]]:
    """Check every user once per pass, in shuffled batches of 1,000; the decision mix
    of the last pass."""
    population = [user_id(i) for i in range(users)]
    mix: Counter[str] = Counter()
    results = []
    options = [("grpc.max_receive_message_length", 64 * 1024 * 1024)]
    async with grpc.aio.insecure_channel(target, options=options) as channel:
        stub = consent_pb2_grpc.ConsentServiceStub(channel)

        async def check(batch: Sequence[str]) -> messages_pb2.CheckEligibilityResponse:
            return await stub.CheckEligibility(
                messages_pb2.CheckEligibilityRequest(
                    app_id=APP, category_id=CATEGORY, user_ids=batch
                ),
                timeout=60,
            )

        # Warm-up: connections, statements, caches of the process (not counted).
        for batch in (population[:BATCH], population[-BATCH:]):
            await check(batch)
        for number in range(passes):
            order = population[:]
            random.Random(number).shuffle(order)
            batches = [order[k : k + BATCH] for k in range(0, len(order), BATCH)]
            queue = iter(batches)
            latencies: list[float] = []
            last: Counter[str] = Counter()

            async def caller(
                queue: Iterator[list[str]], tally: Counter[str], spent: list[float]
            ) -> None:
                for batch in queue:
                    began = time.perf_counter()
                    reply = await check(batch)
                    spent.append(time.perf_counter() - began)
                    if len(reply.users) != len(batch):
                        raise RuntimeError("an answer is missing users")
                    for answer in reply.users:
                        tally[
                            "ALLOW"
                            if answer.allowed
                            else decision_pb2.ReasonCode.Name(answer.reason).removeprefix(
                                "REASON_CODE_"
                            )
                        ] += 1

            cpu_before = _cpu_seconds(server_pid)
            client_before = time.process_time()
            started = time.perf_counter()
            await asyncio.gather(*(caller(queue, last, latencies) for _ in range(concurrency)))
            elapsed = time.perf_counter() - started
            cpu = _cpu_seconds(server_pid) - cpu_before
            client_cpu = time.process_time() - client_before
            latencies.sort()
            results.append(
                Pass(
                    users / elapsed,
                    statistics.median(latencies) * 1e3,
                    latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1e3,
                    cpu / len(batches) * 1e3,
                    client_cpu / len(batches) * 1e3,
                )
            )
            mix = last
    return results, mix


def show_profile(path: Path, title: str) -> None:
    """Where the service's time went (its main thread: the event loop)."""
    if not path.exists():
        print(f"(no profile written at {path})")
        return
    print(f"\n-- profile of the service ({title}): {path}")
    stats = pstats.Stats(str(path))
    stats.sort_stats("tottime").print_stats(25)
    stats.sort_stats("cumulative").print_stats(30)


def run_eligibility(
    label: str, url: str, args: argparse.Namespace, users: int, profile_dir: Path | None
) -> Pass | None:
    """Serve ``url`` and run the passes; prints the table rows and the decision mix."""
    profile = profile_dir / f"consent_{label}.prof" if profile_dir is not None else None

    async def run(logs: Path) -> tuple[list[Pass], Counter[str]]:
        service = consent_process(url, args.pool_size, logs, profile)
        await service.start(within_s=120)
        try:
            assert service.process is not None
            return await eligibility_passes(
                service.address, service.process.pid, users, args.concurrency, args.passes
            )
        finally:
            await service.stop()

    with tempfile.TemporaryDirectory(prefix="pw-bench-consent-logs-") as logs:
        passes, mix = asyncio.run(run(Path(logs)))
    best = max(passes, key=lambda p: p.users_per_s)
    best = replace(
        best,
        server_cpu_ms_per_batch=min(p.server_cpu_ms_per_batch for p in passes),
        client_cpu_ms_per_batch=min(p.client_cpu_ms_per_batch for p in passes),
    )
    print(
        f"{label:<10} {users:>9,} {args.concurrency:>5} "
        + " ".join(f"{p.users_per_s:>9,.0f}" for p in passes)
        + f"   best {best.users_per_s:,.0f} users/s; batch p50 {best.batch_p50_ms:.0f} ms, "
        f"p99 {best.batch_p99_ms:.0f} ms; CPU per batch: service "
        f"{best.server_cpu_ms_per_batch:.0f} ms, client {best.client_cpu_ms_per_batch:.0f} ms "
        f"(this machine: {os.cpu_count()} cores)",
        flush=True,
    )
    total = sum(mix.values())
    print(
        "  decision mix (last pass): "
        + ", ".join(f"{k} {v / total:.1%}" for k, v in mix.most_common()),
        flush=True,
    )
    if profile is not None:
        show_profile(profile, label)
    return best


# --- RecordConsent --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Recorded:
    """RecordConsent throughput and latency."""

    per_s: float
    p50_ms: float
    p99_ms: float
    calls: int
    server_cpu_ms_per_call: float
    busy_retries: int


async def record_consent(
    target: str, server_pid: int, concurrency: int, warmup_s: float, duration_s: float
) -> Recorded:
    """Concurrent RecordConsent calls for distinct users (alternating scopes and
    actions) during ``duration_s`` after a warm-up; latency of every counted call."""
    async with grpc.aio.insecure_channel(target) as channel:
        stub = consent_pb2_grpc.ConsentServiceStub(channel)
        await stub.DefineCategory(
            messages_pb2.DefineCategoryRequest(
                app_id=APP,
                category=resources_pb2.Category(
                    category_id=CATEGORY,
                    kind=types_pb2.CATEGORY_KIND_MARKETING,
                    default_state=resources_pb2.DEFAULT_STATE_OPTED_IN,
                ),
            )
        )
        scopes = (
            resources_pb2.ConsentScope(kind=resources_pb2.CONSENT_SCOPE_KIND_ALL_MARKETING),
            resources_pb2.ConsentScope(
                kind=resources_pb2.CONSENT_SCOPE_KIND_CATEGORY, category_id=CATEGORY
            ),
        )
        actions = (resources_pb2.CONSENT_ACTION_OPT_OUT, resources_pb2.CONSENT_ACTION_OPT_IN)
        counter = iter(range(10**9))
        counting = False
        stop_at = 0.0
        latencies: list[float] = []
        busy = 0

        async def send(request: messages_pb2.RecordConsentRequest) -> None:
            # UNAVAILABLE (the database stayed locked past its busy timeout) says "retry
            # shortly": a client does, with the same idempotency key, so the call counts
            # once with the time its retries took.
            nonlocal busy
            for attempt in range(20):
                try:
                    await stub.RecordConsent(request, timeout=60)
                    return
                except grpc.aio.AioRpcError as error:
                    if error.code() != grpc.StatusCode.UNAVAILABLE or attempt == 19:
                        raise
                    busy += 1
                    await asyncio.sleep(0.05 * (attempt + 1))

        async def caller() -> None:
            while True:
                n = next(counter)
                request = messages_pb2.RecordConsentRequest(
                    app_id=APP,
                    user_id=f"writer-{n % 50_000:06d}",
                    scope=scopes[n % 2],
                    action=actions[(n // 2) % 2],
                    source=resources_pb2.CONSENT_SOURCE_PREFERENCE_CENTER,
                    idempotency_key=f"bench-{n}",
                )
                began = time.perf_counter()
                await send(request)
                ended = time.perf_counter()
                if counting:
                    if began >= stop_at:
                        return
                    latencies.append(ended - began)

        tasks = [asyncio.ensure_future(caller()) for _ in range(concurrency)]
        await asyncio.sleep(warmup_s)
        cpu_before = _cpu_seconds(server_pid)
        started = time.perf_counter()
        stop_at = started + duration_s
        counting = True
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - started
        cpu = _cpu_seconds(server_pid) - cpu_before
    latencies.sort()
    return Recorded(
        len(latencies) / elapsed,
        statistics.median(latencies) * 1e3,
        latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1e3,
        len(latencies),
        cpu / max(len(latencies), 1) * 1e3,
        busy,
    )


def run_record_consent(label: str, url: str, args: argparse.Namespace) -> Recorded:
    """Serve ``url`` and measure RecordConsent."""
    warmup_s, duration_s = (0.5, 2.0) if args.quick else (1.0, 5.0)

    async def run(logs: Path) -> Recorded:
        service = consent_process(url, args.pool_size, logs)
        await service.start(within_s=120)
        try:
            assert service.process is not None
            return await record_consent(
                service.address, service.process.pid, args.writers, warmup_s, duration_s
            )
        finally:
            await service.stop()

    with tempfile.TemporaryDirectory(prefix="pw-bench-consent-logs-") as logs:
        result = asyncio.run(run(Path(logs)))
    print(
        f"{label:<10} {args.writers:>5} {result.per_s:>10,.0f} {result.p50_ms:>8.1f} "
        f"{result.p99_ms:>8.1f} {result.calls:>8,} {result.server_cpu_ms_per_call:>12.1f} "
        f"{result.busy_retries:>12,}",
        flush=True,
    )
    return result


# --- main -----------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and print the tables and BENCH lines."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="10,000 users, one pass")
    parser.add_argument("--users", type=int, help="population size (default 100,000)")
    parser.add_argument("--passes", type=int, help="passes over the population (default 3)")
    parser.add_argument("--concurrency", type=int, default=4, help="batches in flight")
    parser.add_argument("--writers", type=int, default=16, help="concurrent RecordConsent")
    parser.add_argument("--pool-size", type=int, default=5, help="service database pool")
    parser.add_argument("--no-postgres", action="store_true", help="SQLite only")
    parser.add_argument(
        "--data-dir", type=Path, default=KEEP_DIR, help="where the seeded SQLite file is kept"
    )
    parser.add_argument(
        "--profile",
        type=Path,
        default=os.environ.get(PROFILE_ENV) or None,
        help=f"profile the eligibility services into DIR (or ${PROFILE_ENV})",
    )
    args = parser.parse_args(argv)
    users = args.users or (10_000 if args.quick else 100_000)
    if users < 1:
        parser.error("--users must be positive")
    args.passes = args.passes or (1 if args.quick else 3)
    if args.profile is not None:
        args.profile.mkdir(parents=True, exist_ok=True)

    setup = (
        f"CheckEligibility of one MARKETING category, batches of {BATCH:,} distinct users "
        f"(every batch of a pass different), {users:,} users x 2 devices, "
        f"{args.concurrency} batches in flight over one grpc.aio channel; service in its own "
        f"process (database pool {args.pool_size}); best of {args.passes} pass(es)"
    )
    goal = f"goal >= {GOAL_USERS_PER_S:,} users/s"
    print(f"{'database':<10} {'users':>9} {'conc':>5} {'users/s per pass':>20}")
    url, _ = kept_sqlite(users, args.data_dir)
    sqlite_best = run_eligibility("sqlite", url, args, users, args.profile)
    pg_best = None
    pg_recorded = None
    record_header = (
        f"\n{'database':<10} {'conc':>5} {'calls/s':>10} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'calls':>8} {'svc CPU ms':>12} {'busy retries':>12}"
    )
    if not args.no_postgres:
        with throwaway_postgres() as pg_url:
            if pg_url is not None:
                seconds = seed(pg_url, users)
                print(f"seeded PostgreSQL in {seconds:.1f} s", flush=True)
                pg_best = run_eligibility("postgres", pg_url, args, users, args.profile)
                print(record_header)
                pg_recorded = run_record_consent("postgres", pg_url, args)

    if pg_recorded is None:
        print(record_header)
    with tempfile.TemporaryDirectory(prefix="pw-bench-consent-") as scratch:
        recorded = run_record_consent(
            "sqlite", f"sqlite:///{os.path.join(scratch, 'record.db')}", args
        )

    assert sqlite_best is not None
    bench_line(
        "consent.eligibility_users_per_s",
        sqlite_best.users_per_s,
        "users/s",
        GOAL_USERS_PER_S,
        f"SQLite; {setup}; {goal}",
    )
    cpu_note = (
        "CPU time of the service process (all threads) per batch of 1,000 users, lowest "
        "pass: steadier than users/s on a shared machine, where the client competes for "
        "the same cores"
    )
    bench_line(
        "consent.eligibility_server_cpu_ms_per_batch",
        sqlite_best.server_cpu_ms_per_batch,
        "ms",
        None,
        f"SQLite; {cpu_note}; {setup}",
    )
    if pg_best is not None:
        bench_line(
            "consent.eligibility_users_per_s_pg",
            pg_best.users_per_s,
            "users/s",
            GOAL_USERS_PER_S,
            f"PostgreSQL (throwaway database); {setup}; {goal}",
        )
        bench_line(
            "consent.eligibility_server_cpu_ms_per_batch_pg",
            pg_best.server_cpu_ms_per_batch,
            "ms",
            None,
            f"PostgreSQL; {cpu_note}; {setup}",
        )
    record_setup = (
        f"RecordConsent over gRPC, {args.writers} concurrent callers on one channel, "
        "distinct users, universal and category scopes, every call a committed write "
        "(ledger entry, choice, feed change, idempotency key); service in its own process "
        f"(database pool {args.pool_size})"
    )
    runs = [("", "a fresh SQLite database", recorded)]
    if pg_recorded is not None:
        runs.append(("_pg", "the PostgreSQL database above", pg_recorded))
    for suffix, where, result in runs:
        setup_here = (
            f"{record_setup}; {where}; service CPU {result.server_cpu_ms_per_call:.1f} ms/call; "
            f"{result.busy_retries} UNAVAILABLE (database busy) answers retried by the client, "
            "their time included"
        )
        bench_line(
            f"consent.record_consent_per_s{suffix}", result.per_s, "calls/s", None, setup_here
        )
        bench_line(
            f"consent.record_consent_p99_ms{suffix}",
            result.p99_ms,
            "ms",
            None,
            f"99th percentile client-side latency of {result.calls:,} calls; {setup_here}",
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
