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
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import grpc

# The shared platform helpers, from the repository root (bench/ is a namespace package).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import _platform
from bench import consent_eligibility as consent_bench
from bench._platform import APP, CATEGORY, KEEP_DIR, Services, intent_states, p99
from pushwarden.consent.v1 import consent_pb2_grpc
from pushwarden.consent.v1 import messages_pb2 as consent_messages
from pushwarden.runtime.servicetest import bench_line
from pushwarden.scheduler.v1 import messages_pb2, scheduler_pb2_grpc

GOAL_FANOUT_PER_S = 10_000
GOAL_ACCEPT_P99_MS = 50
TRANSACTIONAL_PER_S = 20
ELIGIBILITY_BATCH = 500


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


async def run_campaign(services: Services, users: int) -> dict[str, Any]:
    async with grpc.aio.insecure_channel(services.addr["scheduler"]) as channel:
        stub = scheduler_pb2_grpc.SchedulerServiceStub(channel)
        campaign_id = await _platform.create_campaign(stub)
        cpu_before = services.cpu()
        everyone = [consent_bench.user_id(i) for i in range(users)]
        async with _platform.transactional_load(
            services.addr["scheduler"], everyone, TRANSACTIONAL_PER_S
        ) as calls:
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
        "latencies": [call.latency_ms for call in calls],
        "cpu": {name: cpu_after[name] - cpu_before[name] for name in cpu_after},
    }


async def main_async(args: argparse.Namespace) -> int:
    users: int = args.users or (10_000 if args.quick else 100_000)
    consent_url, _ = consent_bench.kept_sqlite(users, KEEP_DIR)
    segmentation_db, seeded = _platform.kept_segmentation(users)
    with contextlib.ExitStack() as stack:
        if args.keep is not None:
            args.keep.mkdir(parents=True, exist_ok=True)
            tmp = tempfile.mkdtemp(prefix="pw-bench-scheduler-", dir=args.keep)
        else:
            tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="pw-bench-scheduler-"))
        services = Services(
            Path(tmp),
            consent_url,
            f"sqlite:///{segmentation_db}",
            # Delivery stores and acknowledges; its senders stay off.
            delivery_env={"DISPATCH": "false"},
            profile=args.profile,
        )
        try:
            await services.start()
            if not seeded:
                await _platform.seed_segmentation(
                    services.addr["segmentation"], users, segmentation_db
                )
            eligibility = await eligibility_rate(services.addr["consent"], users)
            result = await run_campaign(services, users)
        except BaseException:
            services.print_logs()
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
