"""Benchmark: the segmentation service evaluating and counting a segment over a large
population, its memory as the population grows, and TrackEvents, through gRPC against the
service running as its own process.

Run: .venv/bin/python bench/segmentation_evaluate.py [--quick] [--full] [--no-postgres]

The service is started as production starts it (``python -m
pushwarden.services.segmentation`` with ``PUSHWARDEN_SEGMENTATION_*`` settings: a free
port on 127.0.0.1, the database URL, the pool size; its consent address points at a
closed port, so the erasure follower only retries); the client runs in this process.

The population is two apps in one database: ``large`` with P profiles and E events
(default 1,000,000 and 1,000,000; ``--full``: 1,000,000 and 5,000,000, the issue's
size; ``--quick``: 20,000 and 20,000) and ``small`` with a quarter of each. Every user
has a ``plan`` (a quarter "pro") and a ``country``; events are ``app_open`` (half),
``purchase`` (with a numeric ``amount``) and ``view_item``, spread over the 60 days
before the seeding instant, users drawn at random. It is written straight into the
database with bulk inserts of the rows the service's repositories write (the service's
own ``Value.columns()`` and event blob encoding), not timed, then ``ANALYZE`` so the
planner has statistics. Why not through UpsertProfiles / TrackEvents: at 1,000 items a
call that is thousands of committed RPCs, many minutes per run on a 2-core machine; the
RPC path is measured separately (``track_events_per_s``). The SQLite file is kept under
``var/bench/`` and the PostgreSQL database (``pw_bench_seg_...`` at 127.0.0.1:5432) is
kept too, each with a marker, so a second run starts at once (``--fresh`` reseeds;
PostgreSQL is skipped with a printed line when the server does not answer).

Figures (each against a baseline measured in the same run, the ratio printed beside it):

- ``segmentation.evaluate_1m_s`` (``_pg``): EvaluateSegment streams every member of the
  ``large`` app's three-predicate segment (plan = "pro", did ``purchase`` within 30
  days, last ``app_open`` after 14 days ago), pages of 1,000, over gRPC, best of the
  passes. Baseline: one hand-written SQL statement answering the same question (the
  plan's attribute rows with two EXISTS on the events), all ids fetched by this process
  through the same database; the member sets must be equal. Goal <= 5 s on SQLite.
- ``segmentation.stream_250k_of_1m_s`` (``_pg``): EvaluateSegment streams every member
  of the ``large`` app's one-predicate segment plan = "pro" (a quarter of the profiles:
  ~250,000 of 1,000,000) in pages of 10,000 over gRPC, best of the passes. Each page
  used to re-read every known user after its cursor (quadratic in the population);
  the service now walks the users a window at a time. Baseline: the hand-written
  statement fetching the same ids in this process; the member lists must be equal.
  ``--stream-only`` measures this figure alone.
- ``segmentation.count_1m_s`` (``_pg``): CountSegment of the same segment; baseline the
  hand-written statement's COUNT.
- ``segmentation.peak_rss_mb_250k`` and ``segmentation.peak_rss_mb_1m``: the service's
  peak RSS (``VmHWM``) after evaluating and counting the segment on the ``small`` and
  the ``large`` app, each in a fresh service process; baseline the process's RSS when
  it is ready, before any request. Their ratio (1m / 250k) is printed: flat is ~1.
- ``segmentation.track_events_per_s`` (``_pg``): TrackEvents, batches of 1,000 events
  (a third with a property), 2 calls in flight, on a fresh database; baseline: the same
  rows (events, properties, sequence counter) bulk-inserted by this process in the same
  batches, one transaction each, on another fresh database.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from pushwarden.common.v1 import values_pb2
from pushwarden.segmentation.v1 import messages_pb2, resources_pb2, segmentation_pb2_grpc

ROOT = Path(__file__).resolve().parents[1]
KEEP_DIR = ROOT / "var" / "bench"
SEED_VERSION = 1
APPS = ("small", "large")
EVENT_NAMES = ("app_open", "app_open", "purchase", "view_item")
PLANS = ("free", "pro", "team", "free")
COUNTRIES = ("DE", "US", "JP", "GB", "FR")
SPREAD = timedelta(days=60)
PURCHASE_WINDOW = timedelta(days=30)
RECENCY = timedelta(days=14)
PAGE = 1000
STREAM_PAGE = 10_000
STREAM_PLAN = "pro"
TRACK_BATCH = 1000
TRACK_CALLERS = 2
GOAL_EVALUATE_S = 5.0
INSERT_CHUNK = 10_000


def _bench(name: str, value: float, unit: str, baseline: float | None, notes: str) -> None:
    line = {"name": name, "value": round(value, 3), "unit": unit, "baseline": baseline}
    line["notes"] = notes
    print("BENCH " + json.dumps(line), flush=True)


def user_id(i: int) -> str:
    """The i-th user id of an app's population."""
    return f"user-{i:07d}"


@dataclass(frozen=True, slots=True)
class Size:
    """The population of the ``large`` app (``small`` has a quarter of each)."""

    profiles: int
    events: int

    def of(self, app: str) -> tuple[int, int]:
        """(profiles, events) of ``app``."""
        return (self.profiles, self.events) if app == "large" else self.quarter

    @property
    def quarter(self) -> tuple[int, int]:
        return max(1, self.profiles // 4), max(1, self.events // 4)


# --- the population -------------------------------------------------------------------


def _event_blob(properties: dict[str, values_pb2.AttributeValue]) -> bytes:
    # As TrackEvents stores it (domain.events): the contract's Event with the properties.
    return resources_pb2.Event(properties=properties).SerializeToString(deterministic=True)


def _profile_rows(app: str, profiles: int, at: datetime) -> Iterator[dict[str, list[Any]]]:
    from pushwarden.services.segmentation.domain.values import Kind, Value

    for start in range(0, profiles, INSERT_CHUNK):
        users = range(start, min(profiles, start + INSERT_CHUNK))
        rows: dict[str, list[Any]] = {"profiles": [], "profile_attributes": []}
        for i in users:
            user = user_id(i)
            rows["profiles"].append(
                {"app_id": app, "user_id": user, "created_at": at, "updated_at": at}
            )
            for name, value in (
                ("plan", PLANS[(i * 7 + 3) % len(PLANS)]),
                ("country", COUNTRIES[i % len(COUNTRIES)]),
            ):
                rows["profile_attributes"].append(
                    {
                        "app_id": app,
                        "user_id": user,
                        "name": name,
                        **Value(Kind.STRING, value).columns(),
                        "written_at": at,
                    }
                )
        yield rows


def _event_rows(
    app: str, profiles: int, events: int, first: int, at: datetime, seed: int
) -> Iterator[dict[str, list[Any]]]:
    from pushwarden.services.segmentation.domain.values import Kind, Value

    rng = random.Random(seed)
    empty = _event_blob({})
    spread_s = SPREAD.total_seconds()
    for start in range(0, events, INSERT_CHUNK):
        rows: dict[str, list[Any]] = {"events": [], "event_properties": []}
        for n in range(start, min(events, start + INSERT_CHUNK)):
            sequence = first + n
            name = EVENT_NAMES[rng.randrange(len(EVENT_NAMES))]
            blob = empty
            if name == "purchase":
                amount = float(rng.randrange(1, 200))
                blob = _event_blob({"amount": values_pb2.AttributeValue(number_value=amount)})
                rows["event_properties"].append(
                    {
                        "sequence": sequence,
                        "name": "amount",
                        **Value(Kind.NUMBER, amount).columns(),
                    }
                )
            rows["events"].append(
                {
                    "sequence": sequence,
                    "app_id": app,
                    "event_id": f"e{n:09d}",
                    "user_id": user_id(rng.randrange(profiles)),
                    "name": name,
                    "occurred_at": at - timedelta(seconds=60 + rng.random() * spread_s),
                    "received_at": at,
                    "properties": blob,
                }
            )
        yield rows


def seed(url: str, size: Size, at: datetime) -> float:
    """Migrate the schema, bulk-insert both apps and ANALYZE; returns the seconds taken."""
    from sqlalchemy import insert

    from pushwarden.runtime.db import create_engine_for
    from pushwarden.runtime.migrations import upgrade_to_head
    from pushwarden.runtime.settings import DatabaseSettings
    from pushwarden.services.segmentation.bootstrap import MIGRATIONS
    from pushwarden.services.segmentation.models import Base

    started = time.perf_counter()
    engine = create_engine_for(DatabaseSettings(url=url, pool_size=1))
    tables = Base.metadata.tables
    try:
        upgrade_to_head(engine, MIGRATIONS)
        first = 1
        for number, app in enumerate(APPS):
            profiles, events = size.of(app)
            for rows in (
                *_profile_rows(app, profiles, at),
                *_event_rows(app, profiles, events, first, at, seed=number),
            ):
                with engine.begin() as connection:
                    for table, batch in rows.items():
                        if batch:
                            connection.execute(insert(tables[table]), batch)
            first += events
        with engine.begin() as connection:
            # The stream's counter, as TrackEvents keeps it (storage.events).
            connection.execute(
                insert(tables["service_state"]),
                [{"name": "event_sequence", "value": str(first - 1)}],
            )
        with engine.connect() as connection:
            connection = connection.execution_options(isolation_level="AUTOCOMMIT")
            connection.exec_driver_sql("ANALYZE")
    finally:
        engine.dispose()
    return time.perf_counter() - started


def _marker(size: Size, at: datetime) -> dict[str, Any]:
    return {
        "profiles": size.profiles,
        "events": size.events,
        "version": SEED_VERSION,
        "at": at.isoformat(),
    }


def _fresh_enough(marker: dict[str, Any], size: Size) -> datetime | None:
    """The seeding instant of a kept population that still fits, else None (another
    size or version, or so old that the service's 90-day retention would purge it)."""
    at = datetime.fromisoformat(marker.get("at", "1970-01-01T00:00:00+00:00"))
    expected = _marker(size, at)
    if marker != expected or datetime.now(UTC) - at > timedelta(days=20):
        return None
    return at


def kept_sqlite(size: Size, directory: Path, fresh: bool) -> tuple[str, datetime]:
    """The kept SQLite file of this population (seeded when missing, stale or
    ``fresh``) and its seeding instant."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"segmentation_{size.profiles}_{size.events}.db"
    marker_path = path.with_suffix(".seeded")
    url = f"sqlite:///{path}"
    if not fresh and marker_path.exists() and path.exists():
        at = _fresh_enough(json.loads(marker_path.read_text()), size)
        if at is not None:
            return url, at
    for stale in (path, marker_path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        stale.unlink(missing_ok=True)
    at = datetime.now(UTC).replace(microsecond=0)
    seconds = seed(url, size, at)
    marker_path.write_text(json.dumps(_marker(size, at)))
    print(f"seeded SQLite {path} ({_describe(size)}) in {seconds:.1f} s", flush=True)
    return url, at


def _describe(size: Size) -> str:
    quarter = size.quarter
    return (
        f"large: {size.profiles:,} profiles, {size.events:,} events; "
        f"small: {quarter[0]:,} profiles, {quarter[1]:,} events"
    )


def _admin(statement: str) -> list[Any]:
    from sqlalchemy import create_engine, text
    from sqlalchemy.pool import NullPool

    from pushwarden.runtime.testing import admin_url

    engine = create_engine(admin_url(), poolclass=NullPool, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            result = connection.execute(text(statement))
            return list(result) if result.returns_rows else []
    finally:
        engine.dispose()


def kept_postgres(size: Size, fresh: bool) -> tuple[str, datetime] | None:
    """The kept PostgreSQL database of this population (a marker row in its
    ``service_state`` says the seeding finished), or None when the server does not
    answer."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.exc import SQLAlchemyError
    from sqlalchemy.pool import NullPool

    from pushwarden.runtime.testing import admin_url, postgres_unavailable_reason

    reason = postgres_unavailable_reason()
    if reason is not None:
        print(f"PostgreSQL skipped: 127.0.0.1:5432 unavailable ({reason})", flush=True)
        return None
    name = f"pw_bench_seg_{size.profiles}_{size.events}"
    url = admin_url().set(database=name).render_as_string(hide_password=False)
    exists = _admin(f"SELECT 1 FROM pg_database WHERE datname = '{name}'")
    if exists and not fresh:
        engine = create_engine(url, poolclass=NullPool)
        try:
            with engine.connect() as connection:
                value = connection.execute(
                    text("SELECT value FROM service_state WHERE name = 'bench_seed'")
                ).scalar()
        except SQLAlchemyError:
            value = None
        finally:
            engine.dispose()
        at = _fresh_enough(json.loads(value), size) if value else None
        if at is not None:
            return url, at
    _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    _admin(f'CREATE DATABASE "{name}"')
    at = datetime.now(UTC).replace(microsecond=0)
    seconds = seed(url, size, at)
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.begin() as connection:
            connection.execute(
                text("INSERT INTO service_state (name, value) VALUES ('bench_seed', :value)"),
                {"value": json.dumps(_marker(size, at))},
            )
    finally:
        engine.dispose()
    print(f"seeded PostgreSQL {name} ({_describe(size)}) in {seconds:.1f} s", flush=True)
    return url, at


@contextlib.contextmanager
def throwaway_postgres() -> Iterator[str]:
    """A fresh PostgreSQL database (dropped afterwards)."""
    from pushwarden.runtime.testing import throwaway_postgres_database

    with throwaway_postgres_database(prefix="pw_bench_") as url:
        yield url


# --- the service process --------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _status_kb(pid: int, field: str) -> int:
    """A ``/proc/<pid>/status`` figure in kB (``VmRSS``, ``VmHWM``)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} for process {pid}")


class SegmentationProcess:
    """``python -m pushwarden.services.segmentation`` on a free port; stopped with
    SIGTERM."""

    def __init__(self, url: str, pool_size: int) -> None:
        self.port = _free_port()
        env = dict(
            os.environ,
            PUSHWARDEN_SEGMENTATION_HOST="127.0.0.1",
            PUSHWARDEN_SEGMENTATION_PORT=str(self.port),
            PUSHWARDEN_SEGMENTATION_DATABASE_URL=url,
            PUSHWARDEN_SEGMENTATION_DB_POOL_SIZE=str(pool_size),
            # No consent here: the erasure follower retries against a closed port.
            PUSHWARDEN_SEGMENTATION_CONSENT_ADDR=f"127.0.0.1:{_free_port()}",
            PUSHWARDEN_SEGMENTATION_CONSENT_POLL_S="30",
            PUSHWARDEN_SEGMENTATION_LOG_LEVEL="ERROR",
        )
        self.process = subprocess.Popen(
            [sys.executable, "-m", "pushwarden.services.segmentation"],
            env=env,
            stderr=subprocess.DEVNULL,
        )
        self.ready_rss_kb = 0

    @property
    def target(self) -> str:
        """The address clients dial."""
        return f"127.0.0.1:{self.port}"

    async def ready(self, timeout_s: float = 300.0) -> None:
        """Wait until the service answers (it migrates the schema first)."""
        deadline = time.monotonic() + timeout_s
        async with grpc.aio.insecure_channel(self.target) as channel:
            stub = segmentation_pb2_grpc.SegmentationServiceStub(channel)
            while True:
                if self.process.poll() is not None:
                    raise RuntimeError(
                        f"the segmentation service exited ({self.process.returncode})"
                    )
                try:
                    await stub.ListLists(messages_pb2.ListListsRequest(app_id="probe"), timeout=2)
                    break
                except grpc.aio.AioRpcError:
                    if time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(0.1)
        self.ready_rss_kb = _status_kb(self.process.pid, "VmRSS")

    def peak_rss_kb(self) -> int:
        """The process's peak resident set so far."""
        return _status_kb(self.process.pid, "VmHWM")

    def stop(self) -> None:
        """Graceful stop, then reap."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@contextlib.contextmanager
def service(url: str, pool_size: int) -> Iterator[SegmentationProcess]:
    """A ready service process on ``url``."""
    process = SegmentationProcess(url, pool_size)
    try:
        asyncio.run(process.ready())
        yield process
    finally:
        process.stop()


# --- the segment ----------------------------------------------------------------------


def _timestamp(at: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(at)
    return stamp


def _duration(delta: timedelta) -> Duration:
    return Duration(seconds=int(delta.total_seconds()))


def segment_rule() -> resources_pb2.Rule:
    """plan = "pro", did purchase within 30 days, last app_open after 14 days ago."""
    return resources_pb2.Rule(
        all=resources_pb2.RuleGroup(
            rules=[
                resources_pb2.Rule(
                    attribute=resources_pb2.AttributePredicate(
                        filter=values_pb2.PropertyFilter(
                            name="plan",
                            operator=values_pb2.OPERATOR_EQ,
                            value=values_pb2.AttributeValue(string_value="pro"),
                        )
                    )
                ),
                resources_pb2.Rule(
                    event=resources_pb2.EventPredicate(
                        event_name="purchase",
                        window=resources_pb2.EventWindow(within=_duration(PURCHASE_WINDOW)),
                    )
                ),
                resources_pb2.Rule(
                    recency=resources_pb2.RecencyPredicate(
                        event_name="app_open",
                        comparison=resources_pb2.RECENCY_COMPARISON_AFTER,
                        ago=_duration(RECENCY),
                    )
                ),
            ]
        )
    )


def baseline_query(app: str, as_of: datetime, *, count: bool) -> Any:
    """The same question as one hand-written statement (SQLAlchemy Core on the service's
    tables, so values bind as the service binds them)."""
    from sqlalchemy import func, literal, select
    from sqlalchemy.orm import aliased

    from pushwarden.services.segmentation.models import EventRow, ProfileAttributeRow

    attribute = ProfileAttributeRow

    def did(name: str, since: datetime) -> Any:
        event = aliased(EventRow)
        return (
            select(literal(1))
            .where(
                event.app_id == app,
                event.user_id == attribute.user_id,
                event.name == name,
                event.occurred_at >= since,
                event.occurred_at < as_of,
            )
            .exists()
        )

    where = (
        attribute.app_id == app,
        attribute.name == "plan",
        attribute.kind == "STRING",
        attribute.string_value == "pro",
        did("purchase", as_of - PURCHASE_WINDOW),
        did("app_open", as_of - RECENCY),
    )
    if count:
        return select(func.count()).select_from(attribute).where(*where)
    return select(attribute.user_id).where(*where).order_by(attribute.user_id)


@dataclass(frozen=True, slots=True)
class Evaluation:
    """One population's figures."""

    evaluate_s: float
    count_s: float
    members: int
    baseline_evaluate_s: float
    baseline_count_s: float
    ready_rss_kb: int
    peak_rss_kb: int


def _baseline(url: str, app: str, as_of: datetime, passes: int) -> tuple[float, float, set[str]]:
    """Best times of the hand-written statement (ids fetched, then COUNT) and its ids."""
    from pushwarden.runtime.db import create_engine_for
    from pushwarden.runtime.settings import DatabaseSettings

    engine = create_engine_for(DatabaseSettings(url=url, pool_size=1))
    best_ids = best_count = float("inf")
    ids: set[str] = set()
    try:
        with engine.connect() as connection:
            for _ in range(passes):
                started = time.perf_counter()
                ids = set(connection.execute(baseline_query(app, as_of, count=False)).scalars())
                best_ids = min(best_ids, time.perf_counter() - started)
                started = time.perf_counter()
                counted = connection.execute(baseline_query(app, as_of, count=True)).scalar()
                best_count = min(best_count, time.perf_counter() - started)
                assert counted == len(ids)
    finally:
        engine.dispose()
    return best_ids, best_count, ids


async def _evaluate(
    target: str, app: str, as_of: datetime, passes: int
) -> tuple[float, float, set[str]]:
    """Best times of EvaluateSegment (every page) and CountSegment; the members."""
    options = [("grpc.max_receive_message_length", 64 * 1024 * 1024)]
    best_evaluate = best_count = float("inf")
    members: set[str] = set()
    async with grpc.aio.insecure_channel(target, options=options) as channel:
        stub = segmentation_pb2_grpc.SegmentationServiceStub(channel)
        segment_target = messages_pb2.SegmentTarget(rule=segment_rule())
        for _ in range(passes):
            started = time.perf_counter()
            found: list[str] = []
            request = messages_pb2.EvaluateSegmentRequest(
                app_id=app, target=segment_target, as_of=_timestamp(as_of), page_size=PAGE
            )
            async for page in stub.EvaluateSegment(request, timeout=3600):
                found.extend(page.user_ids)
            best_evaluate = min(best_evaluate, time.perf_counter() - started)
            if len(set(found)) != len(found) or found != sorted(found):
                raise RuntimeError("EvaluateSegment repeated a member or broke its order")
            members = set(found)
            started = time.perf_counter()
            counted = await stub.CountSegment(
                messages_pb2.CountSegmentRequest(
                    app_id=app, target=segment_target, as_of=_timestamp(as_of)
                ),
                timeout=3600,
            )
            best_count = min(best_count, time.perf_counter() - started)
            if counted.count != len(members):
                raise RuntimeError(f"CountSegment says {counted.count}, evaluation {len(members)}")
    return best_evaluate, best_count, members


def evaluate(url: str, app: str, as_of: datetime, passes: int, pool_size: int) -> Evaluation:
    """Evaluate and count the segment in a fresh service process; baseline before."""
    base_ids_s, base_count_s, expected = _baseline(url, app, as_of, passes)
    with service(url, pool_size) as process:
        evaluate_s, count_s, members = asyncio.run(_evaluate(process.target, app, as_of, passes))
        peak = process.peak_rss_kb()
        ready = process.ready_rss_kb
    if members != expected:
        raise RuntimeError(
            f"the service found {len(members):,} members, the hand-written query "
            f"{len(expected):,} ({len(members ^ expected):,} differ)"
        )
    return Evaluation(evaluate_s, count_s, len(members), base_ids_s, base_count_s, ready, peak)


# --- streaming a large segment ---------------------------------------------------------


def stream_rule() -> resources_pb2.Rule:
    """plan = "pro": a quarter of the profiles."""
    return resources_pb2.Rule(
        attribute=resources_pb2.AttributePredicate(
            filter=values_pb2.PropertyFilter(
                name="plan",
                operator=values_pb2.OPERATOR_EQ,
                value=values_pb2.AttributeValue(string_value=STREAM_PLAN),
            )
        )
    )


def stream_baseline_query(app: str) -> Any:
    """The same members as one hand-written statement, in the service's order."""
    from sqlalchemy import select

    from pushwarden.services.segmentation.models import ProfileAttributeRow as attribute

    return (
        select(attribute.user_id)
        .where(
            attribute.app_id == app,
            attribute.name == "plan",
            attribute.kind == "STRING",
            attribute.string_value == STREAM_PLAN,
        )
        .order_by(attribute.user_id)
    )


@dataclass(frozen=True, slots=True)
class Streamed:
    """Streaming the large segment: best seconds, pages, members, the baseline."""

    stream_s: float
    pages: int
    members: int
    baseline_s: float


async def _stream(target: str, app: str, as_of: datetime, passes: int) -> tuple[float, list[str]]:
    options = [("grpc.max_receive_message_length", 64 * 1024 * 1024)]
    best = float("inf")
    found: list[str] = []
    async with grpc.aio.insecure_channel(target, options=options) as channel:
        stub = segmentation_pb2_grpc.SegmentationServiceStub(channel)
        request = messages_pb2.EvaluateSegmentRequest(
            app_id=app,
            target=messages_pb2.SegmentTarget(rule=stream_rule()),
            as_of=_timestamp(as_of),
            page_size=STREAM_PAGE,
        )
        for _ in range(passes):
            started = time.perf_counter()
            found = []
            async for page in stub.EvaluateSegment(request, timeout=3600):
                found.extend(page.user_ids)
            best = min(best, time.perf_counter() - started)
    return best, found


def stream(url: str, app: str, as_of: datetime, passes: int, pool_size: int) -> Streamed:
    """Stream the plan = "pro" segment in a fresh service process; baseline before."""
    from pushwarden.runtime.db import create_engine_for
    from pushwarden.runtime.settings import DatabaseSettings

    engine = create_engine_for(DatabaseSettings(url=url, pool_size=1))
    baseline = float("inf")
    try:
        with engine.connect() as connection:
            for _ in range(passes):
                started = time.perf_counter()
                expected = list(connection.execute(stream_baseline_query(app)).scalars())
                baseline = min(baseline, time.perf_counter() - started)
    finally:
        engine.dispose()
    with service(url, pool_size) as process:
        seconds, found = asyncio.run(_stream(process.target, app, as_of, passes))
    # The service pages in code-point order; the baseline's ORDER BY is the database's
    # collation, so compare as sets, and the stream's order on its own.
    if found != sorted(found) or len(set(found)) != len(found):
        raise RuntimeError("EvaluateSegment repeated a member or broke its order")
    if set(found) != set(expected):
        raise RuntimeError(
            f"the service streamed {len(found):,} members, the hand-written query {len(expected):,}"
        )
    return Streamed(seconds, -(-len(found) // STREAM_PAGE), len(found), baseline)


def _report_stream(suffix: str, where: str, result: Streamed, size: Size, passes: int) -> None:
    ratio = result.stream_s / result.baseline_s
    _bench(
        f"segmentation.stream_250k_of_1m_s{suffix}",
        result.stream_s,
        "s",
        round(result.baseline_s, 3),
        f"{where}; segment plan = pro, {result.members:,} members of the large app "
        f"({_describe(size)}) streamed by EvaluateSegment in {result.pages} pages of "
        f"{STREAM_PAGE:,} over gRPC, service in its own process; best of {passes} "
        f"pass(es); baseline: one hand-written SQL statement fetching the same ids in this "
        f"process, ratio {ratio:.2f}x",
    )
    print(
        f"stream {where}: {result.members:,} members in {result.pages} pages, "
        f"{result.stream_s:.2f} s (baseline {result.baseline_s:.2f} s, {ratio:.2f}x)",
        flush=True,
    )


# --- TrackEvents ----------------------------------------------------------------------


def _track_batches(duration_rows: int, seed: int) -> list[list[resources_pb2.Event]]:
    """Batches of events for 10,000 users, a third purchases with an amount."""
    rng = random.Random(seed)
    now = datetime.now(UTC)
    batches = []
    for b in range(duration_rows // TRACK_BATCH):
        batch = []
        for k in range(TRACK_BATCH):
            n = b * TRACK_BATCH + k
            purchase = n % 3 == 0
            event = resources_pb2.Event(
                event_id=f"t{seed}-{n:09d}",
                user_id=user_id(rng.randrange(10_000)),
                name="purchase" if purchase else "app_open",
                occurred_at=_timestamp(now - timedelta(seconds=rng.randrange(86_400))),
            )
            if purchase:
                event.properties["amount"].number_value = float(rng.randrange(1, 200))
            batch.append(event)
        batches.append(batch)
    return batches


async def _track(target: str, batches: list[list[resources_pb2.Event]], warmup: int) -> float:
    """Events per second of TrackEvents, ``TRACK_CALLERS`` calls in flight, after
    ``warmup`` batches."""
    async with grpc.aio.insecure_channel(target) as channel:
        stub = segmentation_pb2_grpc.SegmentationServiceStub(channel)

        async def send(batch: list[resources_pb2.Event]) -> None:
            reply = await stub.TrackEvents(
                messages_pb2.TrackEventsRequest(app_id="track", events=batch), timeout=120
            )
            if len(reply.results) != len(batch):
                raise RuntimeError("TrackEvents answered for fewer events than sent")

        for batch in batches[:warmup]:
            await send(batch)
        queue = iter(batches[warmup:])

        async def caller() -> None:
            for batch in queue:
                await send(batch)

        started = time.perf_counter()
        await asyncio.gather(*(caller() for _ in range(TRACK_CALLERS)))
        elapsed = time.perf_counter() - started
    return (len(batches) - warmup) * TRACK_BATCH / elapsed


def _raw_track(url: str, batches: list[list[resources_pb2.Event]], warmup: int) -> float:
    """Events per second of the same rows inserted by this process, a transaction per
    batch (events, typed properties, the sequence counter)."""
    from sqlalchemy import insert, update

    from pushwarden.runtime.db import create_engine_for
    from pushwarden.runtime.migrations import upgrade_to_head
    from pushwarden.runtime.settings import DatabaseSettings
    from pushwarden.services.segmentation.bootstrap import MIGRATIONS
    from pushwarden.services.segmentation.domain.values import Kind, Value
    from pushwarden.services.segmentation.models import Base

    engine = create_engine_for(DatabaseSettings(url=url, pool_size=1))
    tables = Base.metadata.tables
    state = tables["service_state"]
    try:
        upgrade_to_head(engine, MIGRATIONS)
        with engine.begin() as connection:
            connection.execute(insert(state), [{"name": "event_sequence", "value": "0"}])
        sequence = 0
        started = 0.0
        for number, batch in enumerate(batches):
            if number == warmup:
                started = time.perf_counter()
            now = datetime.now(UTC)
            events, properties = [], []
            for event in batch:
                sequence += 1
                events.append(
                    {
                        "sequence": sequence,
                        "app_id": "track",
                        "event_id": event.event_id,
                        "user_id": event.user_id,
                        "name": event.name,
                        "occurred_at": event.occurred_at.ToDatetime(UTC),
                        "received_at": now,
                        "properties": _event_blob(dict(event.properties)),
                    }
                )
                for name, value in event.properties.items():
                    properties.append(
                        {
                            "sequence": sequence,
                            "name": name,
                            **Value(Kind.NUMBER, value.number_value).columns(),
                        }
                    )
            with engine.begin() as connection:
                connection.execute(
                    update(state)
                    .where(state.c.name == "event_sequence")
                    .values(value=str(sequence))
                )
                connection.execute(insert(tables["events"]), events)
                if properties:
                    connection.execute(insert(tables["event_properties"]), properties)
        elapsed = time.perf_counter() - started
    finally:
        engine.dispose()
    return (len(batches) - warmup) * TRACK_BATCH / elapsed


@dataclass(frozen=True, slots=True)
class Tracked:
    """TrackEvents against the raw insert."""

    per_s: float
    baseline_per_s: float


def track(service_url: str, raw_url: str, events: int, pool_size: int, seed: int) -> Tracked:
    """TrackEvents on ``service_url`` and the raw insert on ``raw_url`` (both fresh)."""
    batches = _track_batches(events, seed)
    warmup = max(1, len(batches) // 10)
    with service(service_url, pool_size) as process:
        per_s = asyncio.run(_track(process.target, batches, warmup))
    return Tracked(per_s, _raw_track(raw_url, batches, warmup))


# --- main -----------------------------------------------------------------------------


def _report(
    suffix: str, where: str, large: Evaluation, tracked: Tracked, size: Size, passes: int
) -> None:
    setup = (
        f"{where}; segment: plan = pro AND did purchase within 30 days AND last app_open "
        f"after 14 days ago, {large.members:,} members of the large app ({_describe(size)}); "
        f"pages of {PAGE:,} over gRPC, service in its own process; best of {passes} pass(es)"
    )
    ratio = large.evaluate_s / large.baseline_evaluate_s
    goal = f"; goal <= {GOAL_EVALUATE_S:g} s" if not suffix else ""
    _bench(
        f"segmentation.evaluate_1m_s{suffix}",
        large.evaluate_s,
        "s",
        round(large.baseline_evaluate_s, 3),
        f"{setup}; baseline: one hand-written SQL statement fetching the same ids in this "
        f"process, ratio {ratio:.2f}x{goal}",
    )
    ratio = large.count_s / large.baseline_count_s
    _bench(
        f"segmentation.count_1m_s{suffix}",
        large.count_s,
        "s",
        round(large.baseline_count_s, 3),
        f"{setup}; CountSegment; baseline: the hand-written statement's COUNT, ratio {ratio:.2f}x",
    )
    ratio = tracked.per_s / tracked.baseline_per_s
    _bench(
        f"segmentation.track_events_per_s{suffix}",
        tracked.per_s,
        "events/s",
        round(tracked.baseline_per_s, 1),
        f"{where}, a fresh database; TrackEvents over gRPC, batches of {TRACK_BATCH:,} "
        f"events (a third with a number property), {TRACK_CALLERS} calls in flight; "
        f"baseline: the same rows (events, properties, sequence counter) inserted by this "
        f"process in the same batches, one transaction each, on another fresh database; "
        f"ratio {ratio:.2f}x",
    )


def _row(label: str, app: str, profiles: int, result: Evaluation) -> None:
    print(
        f"{label:<9} {app:<6} {profiles:>10,} {result.members:>9,} "
        f"{result.evaluate_s:>9.2f} {result.baseline_evaluate_s:>9.2f} "
        f"{result.evaluate_s / result.baseline_evaluate_s:>6.2f} "
        f"{result.count_s:>8.2f} {result.baseline_count_s:>8.2f} "
        f"{result.count_s / result.baseline_count_s:>6.2f} "
        f"{result.ready_rss_kb / 1024:>8.0f} {result.peak_rss_kb / 1024:>8.0f}",
        flush=True,
    )


HEADER = (
    f"{'database':<9} {'app':<6} {'profiles':>10} {'members':>9} {'eval s':>9} "
    f"{'base s':>9} {'ratio':>6} {'count s':>8} {'base s':>8} {'ratio':>6} "
    f"{'ready MB':>8} {'peak MB':>8}"
)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and print the tables and BENCH lines."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="20,000 profiles and events")
    parser.add_argument(
        "--full", action="store_true", help="1,000,000 profiles and 5,000,000 events"
    )
    parser.add_argument("--profiles", type=int, help="profiles of the large app")
    parser.add_argument("--events", type=int, help="events of the large app")
    parser.add_argument("--passes", type=int, help="passes per measurement (default 2)")
    parser.add_argument("--pool-size", type=int, default=5, help="service database pool")
    parser.add_argument("--no-postgres", action="store_true", help="SQLite only")
    parser.add_argument("--fresh", action="store_true", help="reseed the kept populations")
    parser.add_argument(
        "--stream-only", action="store_true", help="only segmentation.stream_250k_of_1m_s"
    )
    parser.add_argument(
        "--data-dir", type=Path, default=KEEP_DIR, help="where the SQLite file is kept"
    )
    args = parser.parse_args(argv)
    if args.quick and args.full:
        parser.error("--quick and --full exclude each other")
    default = (20_000, 20_000) if args.quick else (1_000_000, 1_000_000)
    if args.full:
        default = (1_000_000, 5_000_000)
    size = Size(args.profiles or default[0], args.events or default[1])
    if size.profiles < 4 or size.events < 4:
        parser.error("--profiles and --events must be at least 4")
    passes = args.passes or (1 if args.quick else 2)
    track_events = 10 * TRACK_BATCH if args.quick else 40 * TRACK_BATCH
    print(f"this machine: {os.cpu_count()} cores; {_describe(size)}", flush=True)

    url, at = kept_sqlite(size, args.data_dir, args.fresh)
    as_of = at
    streamed = stream(url, "large", as_of, passes, args.pool_size)
    _report_stream("", "SQLite (kept file)", streamed, size, passes)
    if not args.no_postgres:
        kept = kept_postgres(size, args.fresh)
        if kept is not None:
            pg_streamed = stream(kept[0], "large", kept[1], passes, args.pool_size)
            _report_stream("_pg", "PostgreSQL (kept database)", pg_streamed, size, passes)
    if args.stream_only:
        return 0
    print(HEADER, flush=True)
    small = evaluate(url, "small", as_of, passes, args.pool_size)
    _row("sqlite", "small", size.quarter[0], small)
    large = evaluate(url, "large", as_of, passes, args.pool_size)
    _row("sqlite", "large", size.profiles, large)
    if large.members == 0:
        raise RuntimeError("the segment selects nobody: the population measures nothing")
    pg_small = pg_large = None
    pg_tracked = None
    if not args.no_postgres:
        kept = kept_postgres(size, args.fresh)
        if kept is not None:
            pg_url, pg_at = kept
            pg_small = evaluate(pg_url, "small", pg_at, passes, args.pool_size)
            _row("postgres", "small", size.quarter[0], pg_small)
            pg_large = evaluate(pg_url, "large", pg_at, passes, args.pool_size)
            _row("postgres", "large", size.profiles, pg_large)
            with throwaway_postgres() as service_url, throwaway_postgres() as raw_url:
                pg_tracked = track(service_url, raw_url, track_events, args.pool_size, 2)
    with tempfile.TemporaryDirectory(prefix="pw-bench-seg-") as scratch:
        tracked = track(
            f"sqlite:///{os.path.join(scratch, 'track.db')}",
            f"sqlite:///{os.path.join(scratch, 'raw.db')}",
            track_events,
            args.pool_size,
            1,
        )
    print(
        f"\nTrackEvents: SQLite {tracked.per_s:,.0f} events/s (raw insert "
        f"{tracked.baseline_per_s:,.0f})"
        + (
            f"; PostgreSQL {pg_tracked.per_s:,.0f} events/s (raw insert "
            f"{pg_tracked.baseline_per_s:,.0f})"
            if pg_tracked is not None
            else ""
        ),
        flush=True,
    )

    _report("", "SQLite (kept file)", large, tracked, size, passes)
    if pg_large is not None and pg_tracked is not None:
        _report("_pg", "PostgreSQL (kept database)", pg_large, pg_tracked, size, passes)
    for label, small_run, large_run in (("", small, large), ("_pg", pg_small, pg_large)):
        if small_run is None or large_run is None:
            continue
        where = "SQLite" if not label else "PostgreSQL"
        flat = large_run.peak_rss_kb / small_run.peak_rss_kb
        for run, profiles, name in (
            (small_run, size.quarter[0], "250k"),
            (large_run, size.profiles, "1m"),
        ):
            _bench(
                f"segmentation.peak_rss_mb_{name}{label}",
                run.peak_rss_kb / 1024,
                "MB",
                round(run.ready_rss_kb / 1024, 1),
                f"{where}; peak RSS (VmHWM) of a fresh service process after evaluating and "
                f"counting the segment over {profiles:,} profiles ({passes} pass(es)); "
                f"baseline: its RSS when ready, ratio "
                f"{run.peak_rss_kb / run.ready_rss_kb:.2f}x; large / small peak {flat:.2f}x",
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
