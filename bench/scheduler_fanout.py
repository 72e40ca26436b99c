"""Benchmark: the scheduler's campaign fan-out and dispatch, and transactional acceptance
while a campaign runs, with the four services as their own processes.

Run: .venv/bin/python bench/scheduler_fanout.py [--quick] [--users N]

What runs: consent, segmentation, delivery and the scheduler, each started as production
starts it (``python -m pushwarden.services.<name>``, ``PUSHWARDEN_<NAME>_*`` settings,
SQLite), all on one clock file that runs at real speed from a fixed weekday noon (UTC),
so the decision mix is the same on every run. Delivery stores and acknowledges every
send but its provider senders are off (``PUSHWARDEN_DELIVERY_DISPATCH=false``), so the
two do not share the two cores; the scheduler runs with its defaults (dispatch batches
of 500, one marketing and one transactional loop, the outbox handing 500 sends per
``Deliver``).

The population is consent's benchmark population (bench/consent_eligibility.py: 100,000
users, 10,000 with ``--quick``; two devices each, mixed permissions and zones, opt-outs,
quiet hours and DAILY_MAX preferences, some erasures), kept under ``var/bench/``; the
same users get a profile in segmentation (``plan = pro``, through ``UpsertProfiles`` in
batches of 1,000, kept too) and the segment ``pro`` holds them all.

- ``scheduler.fanout_per_s``: one IMMEDIATE campaign to the whole segment (one variant,
  no holdout, app policy defaults): audience members decided (ALLOW, DEFER or DROP,
  each at least once) and every ALLOW handed to delivery (acknowledged), per second of
  wall time from ``StartCampaign``. Goal: 10,000 on SQLite.
- ``scheduler.handed_per_s``: the sends acknowledged by delivery in that time, per second.
- ``scheduler.fanout_ratio_to_eligibility``: ``fanout_per_s`` over the rate at which this
  client alone gets the same users' ``CheckEligibility`` answers from consent (batches of
  500 one after another, as one dispatch loop asks), measured in this run: the share of
  consent's own pace the whole pipeline keeps.
- ``scheduler.transactional_accept_p99_ms``: ``SendTransactional`` (the transactional
  category ``orders``, a random user) latency as this client sees it, 20 calls a second
  while the campaign runs. Goal: 50 ms.

CPU seconds per process per 1,000 audience members are printed beside the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import grpc

from pushwarden.common.v1 import content_pb2, values_pb2
from pushwarden.consent.v1 import consent_pb2_grpc
from pushwarden.consent.v1 import messages_pb2 as consent_messages
from pushwarden.runtime.clock import shift_clock_file
from pushwarden.runtime.servicetest import ServiceProcess, free_port
from pushwarden.scheduler.v1 import messages_pb2, resources_pb2, scheduler_pb2_grpc
from pushwarden.segmentation.v1 import messages_pb2 as seg_messages
from pushwarden.segmentation.v1 import resources_pb2 as seg_resources
from pushwarden.segmentation.v1 import segmentation_pb2_grpc

ROOT = Path(__file__).resolve().parents[1]
BENCH_DIR = Path(__file__).resolve().parent
KEEP_DIR = ROOT / "var" / "bench"
NOON = datetime(2026, 1, 6, 12, 0, tzinfo=UTC)  # a Tuesday
GOAL_FANOUT_PER_S = 10_000
GOAL_ACCEPT_P99_MS = 50
TRANSACTIONAL_PER_S = 20
ELIGIBILITY_BATCH = 500
SEGMENTATION_SEED_VERSION = 1


def _load(name: str) -> ModuleType:
    """A sibling benchmark script as a module (its population and CPU helpers)."""
    spec = importlib.util.spec_from_file_location(f"_bench_{name}", BENCH_DIR / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


consent_bench = _load("consent_eligibility")
bare_aioapns = _load("bare_aioapns")
APP: str = consent_bench.APP
KEY: str = consent_bench.KEY
CATEGORY: str = consent_bench.CATEGORY


def bench_line(name: str, value: float, unit: str, baseline: float | None, notes: str) -> None:
    line = {"name": name, "value": round(value, 3), "unit": unit, "baseline": baseline}
    line["notes"] = notes
    print("BENCH " + json.dumps(line), flush=True)


class Services:
    """The four services as processes on one clock file."""

    def __init__(
        self, root: Path, consent_url: str, segmentation_url: str, profile: Path | None
    ) -> None:
        self.root = root
        self.clock = root / "clock.json"
        shift_clock_file(self.clock, to=NOON, speed=1.0)
        ports = {name: free_port() for name in ("consent", "segmentation", "delivery", "scheduler")}
        self.addr = {name: f"127.0.0.1:{port}" for name, port in ports.items()}
        urls = {
            "consent": consent_url,
            "segmentation": segmentation_url,
            "delivery": f"sqlite:///{root / 'delivery.db'}",
            "scheduler": f"sqlite:///{root / 'scheduler.db'}",
        }
        extra = {
            "consent": {"PSEUDONYM_KEY": KEY},
            "segmentation": {"CONSENT_ADDR": self.addr["consent"]},
            "delivery": {"CONSENT_ADDR": self.addr["consent"], "DISPATCH": "false"},
            "scheduler": {
                "CONSENT_ADDR": self.addr["consent"],
                "SEGMENTATION_ADDR": self.addr["segmentation"],
                "DELIVERY_ADDR": self.addr["delivery"],
            },
        }
        self.processes: dict[str, ServiceProcess] = {}
        for name, port in ports.items():
            prefix = f"PUSHWARDEN_{name.upper()}_"
            settings = {
                "HOST": "127.0.0.1",
                "PORT": str(port),
                "DATABASE_URL": urls[name],
                "CLOCK_FILE": str(self.clock),
                "LOG_FORMAT": "text",
                "LOG_LEVEL": "WARNING",
                **extra[name],
            }
            self.processes[name] = ServiceProcess(
                f"pushwarden.services.{name}",
                "PUSHWARDEN_",
                port,
                {prefix + key: value for key, value in settings.items()},
                root,
                python_args=("-m", "cProfile", "-o", str(profile / f"{name}.prof"))
                if profile is not None
                else (),
            )
        self.scheduler_db = root / "scheduler.db"

    async def start(self) -> None:
        for process in self.processes.values():
            await process.start(within_s=180)

    async def stop(self) -> None:
        for process in reversed(list(self.processes.values())):
            await process.stop()

    def cpu(self) -> dict[str, float]:
        found = {}
        for name, process in self.processes.items():
            assert process.process is not None
            found[name] = bare_aioapns.proc_cpu(process.process.pid)
        return found


def kept_segmentation(users: int) -> tuple[Path, bool]:
    """The kept segmentation database for this population, and whether it is seeded."""
    KEEP_DIR.mkdir(parents=True, exist_ok=True)
    path = KEEP_DIR / f"scheduler_fanout_segmentation_{users}.db"
    marker = path.with_suffix(".seeded")
    expected = json.dumps({"users": users, "version": SEGMENTATION_SEED_VERSION})
    if marker.exists() and path.exists() and marker.read_text() == expected:
        return path, True
    for stale in (path, marker, Path(f"{path}-wal"), Path(f"{path}-shm")):
        stale.unlink(missing_ok=True)
    return path, False


async def seed_segmentation(address: str, users: int, path: Path) -> None:
    """Every user on the pro plan, and the segment of them (through the RPCs)."""
    started = time.perf_counter()
    async with grpc.aio.insecure_channel(address) as channel:
        stub = segmentation_pb2_grpc.SegmentationServiceStub(channel)
        pro = {"plan": values_pb2.AttributeValue(string_value="pro")}
        for start in range(0, users, 1000):
            await stub.UpsertProfiles(
                seg_messages.UpsertProfilesRequest(
                    app_id=APP,
                    profiles=[
                        seg_resources.ProfileUpdate(
                            user_id=consent_bench.user_id(i), set_attributes=pro
                        )
                        for i in range(start, min(start + 1000, users))
                    ],
                ),
                timeout=60,
            )
        rule = seg_resources.Rule(
            attribute=seg_resources.AttributePredicate(
                filter=values_pb2.PropertyFilter(
                    name="plan",
                    operator=values_pb2.OPERATOR_EQ,
                    value=values_pb2.AttributeValue(string_value="pro"),
                )
            )
        )
        await stub.CreateSegment(
            seg_messages.CreateSegmentRequest(
                app_id=APP, segment=seg_resources.Segment(segment_id="pro", name="Pro", rule=rule)
            )
        )
    path.with_suffix(".seeded").write_text(
        json.dumps({"users": users, "version": SEGMENTATION_SEED_VERSION})
    )
    print(
        f"seeded {users:,} profiles and the segment into {path} in "
        f"{time.perf_counter() - started:.1f} s",
        flush=True,
    )


async def eligibility_rate(address: str, users: int) -> float:
    """Users per second from CheckEligibility, batches of 500 one after another."""
    count = min(users, 20_000)
    ids = [consent_bench.user_id(i) for i in range(count)]
    async with grpc.aio.insecure_channel(address) as channel:
        stub = consent_pb2_grpc.ConsentServiceStub(channel)
        started = time.perf_counter()
        for start in range(0, count, ELIGIBILITY_BATCH):
            await stub.CheckEligibility(
                consent_messages.CheckEligibilityRequest(
                    app_id=APP,
                    category_id=CATEGORY,
                    user_ids=ids[start : start + ELIGIBILITY_BATCH],
                ),
                timeout=60,
            )
        return count / (time.perf_counter() - started)


def intent_states(path: Path) -> tuple[Counter[str], int, Counter[tuple[str, int]]]:
    """The campaign's intents by state, how many were decided at least once, and the
    latest decisions by (outcome, reason), read from the scheduler's SQLite file."""
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)) as db:
        states: Counter[str] = Counter(
            dict(
                db.execute(
                    "SELECT state, count(*) FROM intents WHERE campaign_id IS NOT NULL "
                    "GROUP BY state"
                )
            )
        )
        decided = db.execute(
            "SELECT count(*) FROM intents WHERE campaign_id IS NOT NULL AND decided_at IS NOT NULL"
        ).fetchone()[0]
        mix = Counter(
            {
                (outcome, reason): count
                for outcome, reason, count in db.execute(
                    "SELECT outcome, reason, count(*) FROM intents WHERE campaign_id IS NOT NULL "
                    "AND outcome IS NOT NULL GROUP BY outcome, reason"
                )
            }
        )
    return states, int(decided), mix


@contextlib.asynccontextmanager
async def transactional_load(address: str, users: int) -> AsyncIterator[list[float]]:
    """SendTransactional at a steady rate until the block ends; yields the latencies."""
    latencies: list[float] = []
    stop = asyncio.Event()

    async def one(stub: Any, n: int) -> None:
        request = messages_pb2.SendTransactionalRequest(
            app_id=APP,
            user_id=consent_bench.user_id(random.randrange(users)),
            category_id="orders",
            content=content_pb2.Content(title="Your order", body=f"Order {n} has shipped"),
            idempotency_key=f"order-{n}",
        )
        began = time.perf_counter()
        await stub.SendTransactional(request, timeout=30)
        latencies.append((time.perf_counter() - began) * 1000)

    async def run() -> None:
        async with grpc.aio.insecure_channel(address) as channel:
            stub = scheduler_pb2_grpc.SchedulerServiceStub(channel)
            calls: set[asyncio.Task[None]] = set()
            n = 0
            while not stop.is_set():
                n += 1
                task = asyncio.create_task(one(stub, n))
                calls.add(task)
                task.add_done_callback(calls.discard)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 1 / TRANSACTIONAL_PER_S)
            if calls:
                await asyncio.gather(*calls)

    runner = asyncio.create_task(run())
    try:
        yield latencies
    finally:
        stop.set()
        await runner


async def run_campaign(services: Services, users: int) -> dict[str, Any]:
    async with grpc.aio.insecure_channel(services.addr["scheduler"]) as channel:
        stub = scheduler_pb2_grpc.SchedulerServiceStub(channel)
        body = resources_pb2.Campaign(
            name="Bench sale",
            category_id=CATEGORY,
            audience=resources_pb2.Audience(include_segment_ids=["pro"]),
            variants=[
                resources_pb2.Variant(
                    variant_id="A",
                    weight=100,
                    template=resources_pb2.Template(
                        content=content_pb2.Content(title="Sale", body="Everything half price")
                    ),
                )
            ],
            schedule=resources_pb2.Schedule(immediate=resources_pb2.ImmediateSchedule()),
        )
        created = await stub.CreateCampaign(
            messages_pb2.CreateCampaignRequest(app_id=APP, campaign=body, idempotency_key="bench")
        )
        campaign_id = created.campaign.campaign_id
        cpu_before = services.cpu()
        async with transactional_load(services.addr["scheduler"], users) as latencies:
            started = time.perf_counter()
            await stub.StartCampaign(
                messages_pb2.StartCampaignRequest(app_id=APP, campaign_id=campaign_id)
            )
            first_sent: float | None = None
            shown = 0.0
            while True:
                await asyncio.sleep(0.25)
                states, decided, mix = intent_states(services.scheduler_db)
                elapsed = time.perf_counter() - started
                if first_sent is None and states["SENT"]:
                    first_sent = elapsed
                if elapsed - shown >= 5:
                    shown = elapsed
                    print(
                        f"  {elapsed:5.1f} s: {sum(states.values()):,} intents, decided "
                        f"{decided:,}, handed {states['SENT']:,}",
                        flush=True,
                    )
                if decided >= users and not states["OUTBOX"]:
                    break
                if elapsed > 1800:
                    raise RuntimeError(f"the campaign did not finish: {states}, {decided}")
        cpu_after = services.cpu()
    return {
        "seconds": elapsed,
        "states": states,
        "mix": mix,
        "first_sent_s": first_sent,
        "latencies": latencies,
        "cpu": {name: cpu_after[name] - cpu_before[name] for name in cpu_after},
    }


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


async def main_async(args: argparse.Namespace) -> int:
    users: int = args.users or (10_000 if args.quick else 100_000)
    consent_url, _ = consent_bench.kept_sqlite(users, KEEP_DIR)
    segmentation_db, seeded = kept_segmentation(users)
    with contextlib.ExitStack() as stack:
        if args.keep is not None:
            args.keep.mkdir(parents=True, exist_ok=True)
            tmp = tempfile.mkdtemp(prefix="pw-bench-scheduler-", dir=args.keep)
        else:
            tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="pw-bench-scheduler-"))
        services = Services(Path(tmp), consent_url, f"sqlite:///{segmentation_db}", args.profile)
        try:
            await services.start()
            if not seeded:
                await seed_segmentation(services.addr["segmentation"], users, segmentation_db)
            eligibility = await eligibility_rate(services.addr["consent"], users)
            result = await run_campaign(services, users)
        except BaseException:
            for process in services.processes.values():
                print(process.output()[-2000:], file=sys.stderr)
            raise
        finally:
            await services.stop()
    seconds = result["seconds"]
    states: Counter[str] = result["states"]
    fanout = users / seconds
    handed = states["SENT"] / seconds
    latencies: list[float] = result["latencies"]
    mix = ", ".join(
        f"{outcome} {reason}: {count:,}"
        for (outcome, reason), count in sorted(result["mix"].items())
    )
    cpu = ", ".join(
        f"{name} {seconds_ * 1000 / (users / 1000):.0f} ms"
        for name, seconds_ in result["cpu"].items()
    )
    what = (
        f"IMMEDIATE campaign to {users:,} users (one variant, no holdout), 4 services as "
        f"processes on SQLite, delivery storing and acknowledging with its senders off, "
        f"scheduler defaults (batch 500)"
    )
    print(f"\n{what}")
    print(f"decisions (latest per intent): {mix}")
    print(f"CPU per 1,000 audience members: {cpu}")
    print(f"first send handed to delivery after {result['first_sent_s']:.2f} s")
    bench_line(
        "scheduler.fanout_per_s",
        fanout,
        "intents/s",
        GOAL_FANOUT_PER_S,
        f"{what}; {seconds:.1f} s for the whole audience",
    )
    bench_line(
        "scheduler.handed_per_s",
        handed,
        "sends/s",
        None,
        f"{states['SENT']:,} ALLOW sends acknowledged by delivery in {seconds:.1f} s",
    )
    bench_line(
        "scheduler.fanout_ratio_to_eligibility",
        fanout / eligibility,
        "ratio",
        None,
        f"baseline: this client alone got {eligibility:,.0f} users/s from consent's "
        f"CheckEligibility (batches of {ELIGIBILITY_BATCH}, one at a time) in the same run",
    )
    bench_line(
        "scheduler.transactional_accept_p99_ms",
        p99(latencies),
        "ms",
        GOAL_ACCEPT_P99_MS,
        f"{len(latencies)} SendTransactional calls at {TRANSACTIONAL_PER_S}/s during the "
        f"campaign; median {statistics.median(latencies):.1f} ms",
    )
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="10,000 users")
    parser.add_argument("--users", type=int, default=0, help="audience size")
    parser.add_argument(
        "--keep", type=Path, default=None, help="work (logs, databases) under DIR, kept"
    )
    parser.add_argument(
        "--profile", type=Path, default=None, help="run each service under cProfile, into DIR"
    )
    return asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
