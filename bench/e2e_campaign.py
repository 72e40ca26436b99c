"""Benchmark: a campaign end to end, from ``StartCampaign`` through the scheduler and
delivery to the fake APNs, beside bare aioapns sending to the same fake in the same run.

Run: .venv/bin/python bench/e2e_campaign.py [--quick] [--users N | --million] [--rss]

What runs, each its own process on the machine's 2 cores:

- the fake APNs (``python bench/_platform.py fake-apns``: the sandbox's fake with its
  speed-ups, recording only arrival time, device token, apns-id and status per request);
- consent, segmentation, scheduler and delivery as production starts them (``python -m
  pushwarden.services.<name>``, ``PUSHWARDEN_<NAME>_*`` settings, SQLite) on one clock
  file at real speed from a weekday noon (UTC); every setting at its default: the
  scheduler decides in batches of 500 and hands 500 sends a ``Deliver``; delivery
  dispatches for real (claims batches of 500, one ``CheckEligibility`` per category and
  batch, aioapns with token auth, 10 connections at most of 100 streams each, so up to
  500 pushes in flight);
- this process: starts the campaign, sends the transactional load and watches.

The population is consent's benchmark population (bench/consent_eligibility.py: mixed
zones, opt-outs, quiet hours, DAILY_MAX preferences, erasures) with only its iOS
devices (one APNs device a user; one in ten has no notification permission), kept
under ``var/bench/e2e_consent_<N>.db``; segmentation's ``pro`` segment holds every user
(the kept database bench/scheduler_fanout.py seeds). The campaign: IMMEDIATE, category
``promos``, one variant, no holdout, the app's default policy, to N users (100,000;
1,000 with ``--quick``; 1,000,000 with ``--million``). Before it: 20 transactional sends
to warm delivery's connections, then the bare baseline's first round.

Figures:

- ``e2e.apns_per_s``: campaign pushes at the fake over the time from ``StartCampaign``
  to the last one.
- ``e2e.apns_ratio_to_bare``: that over bare aioapns (bench/bare_aioapns.py's mix and
  client, at delivery's concurrency: 10 connections of at most 100 streams, 500 in
  flight) to the same fake in the same run: one round before the campaign and one after
  (20,000 pushes each; 2,000 with ``--quick``). Goal >= 0.7.
- ``e2e.cpu_ms_per_delivery``: CPU of the four service processes over the campaign
  window per push that reached the fake (campaign and transactional), beside the bare
  client's CPU per push; the fake's own CPU is printed apart, per process in the table.
- ``e2e.time_to_first_delivery_s``: from the ``StartCampaign`` call to the first
  campaign push recorded at the fake. Goal <= 2.
- ``e2e.transactional_p99_ms``: ``SendTransactional`` (category ``orders``, a random user
  with a usable device, 5 a second while the campaign runs) from the call to the push's
  arrival at the fake (both ``time.time()`` on this machine). Goal <= 100. The table
  splits it by stage: the call answered, the scheduler decided (``decided_at``), delivery
  stored the send, delivery's first attempt, the fake (the services' times read from
  their databases, moved from the clock file's time to this machine's).
- ``e2e.lost``, ``e2e.duplicates``, ``e2e.unexpected``: every send the scheduler handed
  to delivery (campaign and the transactional load) that delivery did not suppress
  should reach the fake once per usable device of its user (permission granted, token
  active, read from consent's database before the run), keyed by (apns-id, token) as the
  fake recorded them with status 200. Lost: expected and not there; duplicates: there
  more than once; unexpected: there and not expected. Goals 0. ``e2e.expected_pushes``
  and ``e2e.delivered_pushes`` give the totals, ``e2e.suppressed.<stage>.<REASON>`` the
  sends the scheduler dropped and delivery suppressed, by reason (deferred ones, quiet
  hours and the like, are counted apart: they are not due within the run).
- With ``--rss``: the whole run at 50,000 and at 200,000 users (seeding both populations
  the first time takes several minutes), ``e2e.peak_rss_mb.<process>`` at 200,000 with
  the 50,000 figure as its baseline (``VmHWM`` of each process at the end of its run).
  The goal: flat as N grows.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc

# The shared platform helpers, from the repository root (bench/ is a namespace package).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import _platform, bare_aioapns
from bench import consent_eligibility as consent_bench
from bench._platform import APP, KEEP_DIR, Services, p99, read_only
from pushwarden.common.v1 import decision_pb2
from pushwarden.runtime.clock import read_clock_file
from pushwarden.runtime.servicetest import bench_line
from pushwarden.scheduler.v1 import messages_pb2, scheduler_pb2_grpc
from pushwarden.services.delivery.handlers.dispatch import push_seed
from pushwarden.services.delivery.providers.model import apns_id_for

GOAL_RATIO = 0.7
GOAL_TRANSACTIONAL_P99_MS = 100
GOAL_FIRST_DELIVERY_S = 2
TRANSACTIONAL_PER_S = 5
WARM_UP_SENDS = 20
# Delivery's defaults: 10 connections of at most 100 streams, a dispatch batch of 500.
BARE = bare_aioapns.Setting("delivery's", 10, 100, 500)
CONSENT_SEED_VERSION = 1
RSS_USERS = (50_000, 200_000)
PROCESSES = (*_platform.SERVICES, "fake-apns")


# --- the population: consent's, with its iOS devices only --------------------------------


def kept_consent(users: int) -> str:
    """The kept consent SQLite file of the APNs-only population (seeded once)."""
    KEEP_DIR.mkdir(parents=True, exist_ok=True)
    path = KEEP_DIR / f"e2e_consent_{users}.db"
    marker = path.with_suffix(".seeded")
    url = f"sqlite:///{path}"
    expected = json.dumps({"users": users, "version": CONSENT_SEED_VERSION})
    if marker.exists() and path.exists() and marker.read_text() == expected:
        return url
    for stale in (path, marker, Path(f"{path}-wal"), Path(f"{path}-shm")):
        stale.unlink(missing_ok=True)
    from sqlalchemy import insert

    from pushwarden.runtime.db import create_engine_for
    from pushwarden.runtime.migrations import upgrade_to_head
    from pushwarden.runtime.settings import DatabaseSettings
    from pushwarden.services.consent.bootstrap import MIGRATIONS
    from pushwarden.services.consent.models import Base

    started = time.perf_counter()
    rows = consent_bench._rows(users)
    rows["devices"] = [row for row in rows["devices"] if row["provider"] == "APNS"]
    engine = create_engine_for(DatabaseSettings(url=url, pool_size=1))
    try:
        upgrade_to_head(engine, MIGRATIONS)
        with engine.begin() as connection:
            for table, items in rows.items():
                for start in range(0, len(items), 20_000):
                    connection.execute(
                        insert(Base.metadata.tables[table]), items[start : start + 20_000]
                    )
    finally:
        engine.dispose()
    marker.write_text(expected)
    print(
        f"seeded {users:,} users (one iOS device each) into {path} in "
        f"{time.perf_counter() - started:.1f} s",
        flush=True,
    )
    return url


@dataclass(frozen=True, slots=True)
class Device:
    """A device of the population as consent's database has it before the run."""

    device_id: str
    token: str
    usable: bool  # permission granted and token active: a push may go to it


def devices_by_user(consent_db: Path) -> dict[str, list[Device]]:
    """Every user's APNs devices."""
    found: dict[str, list[Device]] = defaultdict(list)
    with read_only(consent_db) as db:
        for user_id, device_id, token, usable in db.execute(
            "SELECT user_id, device_id, token, permission = 'GRANTED' AND status = 'ACTIVE' "
            "FROM devices WHERE app_id = ? AND provider = 'APNS'",
            (APP,),
        ):
            found[user_id].append(Device(device_id, token, bool(usable)))
    return dict(found)


# --- what the services and the fake say afterwards ---------------------------------------


@dataclass(frozen=True, slots=True)
class Intent:
    """A scheduler intent as its SQLite file has it at the end."""

    send_id: str
    user_id: str
    state: str
    outcome: str | None
    reason: int
    campaign: bool


def read_intents(scheduler_db: Path, campaign_id: str, others: set[str]) -> list[Intent]:
    """The campaign's intents and those of the send ids ``others`` (the transactional
    load)."""
    with read_only(scheduler_db) as db:
        rows = db.execute(
            "SELECT send_id, user_id, state, outcome, reason, campaign_id FROM intents "
            "WHERE app_id = ?",
            (APP,),
        ).fetchall()
    return [
        Intent(send_id, user_id, state, outcome, reason, campaign == campaign_id)
        for send_id, user_id, state, outcome, reason, campaign in rows
        if campaign == campaign_id or send_id in others
    ]


def read_sends(delivery_db: Path) -> tuple[dict[str, tuple[str, int]], Counter[str]]:
    """Delivery's sends (status, suppression reason) by send id, and its devices by
    status."""
    with read_only(delivery_db) as db:
        sends = {
            send_id: (status, reason)
            for send_id, status, reason in db.execute(
                "SELECT send_id, status, suppressed_reason FROM sends WHERE app_id = ?", (APP,)
            )
        }
        devices: Counter[str] = Counter(
            dict(db.execute("SELECT status, count(*) FROM send_devices GROUP BY status"))
        )
    return sends, devices


def undecided(scheduler_db: Path, send_ids: set[str]) -> int:
    """Of ``send_ids``, the intents the scheduler has not decided or not handed yet."""
    with read_only(scheduler_db) as db:
        rows = db.execute(
            "SELECT send_id FROM intents WHERE state = 'OUTBOX' "
            "OR (state = 'PENDING' AND decided_at IS NULL)"
        ).fetchall()
    return sum(1 for (send_id,) in rows if send_id in send_ids)


def active_sends(delivery_db: Path) -> int:
    """Sends delivery has not finished (pending or in progress)."""
    with read_only(delivery_db) as db:
        found: int = db.execute(
            "SELECT count(*) FROM sends WHERE status IN ('PENDING', 'IN_PROGRESS')"
        ).fetchone()[0]
    return found


TRANSACTIONAL_STAGES = ("accepted", "decided", "stored by delivery", "first attempt", "at the fake")


def transactional_stages(
    scheduler_db: Path, delivery_db: Path, send_ids: set[str], offset_s: float
) -> dict[str, dict[str, float]]:
    """When each transactional send passed each stage, as ``time.time()`` values: the
    scheduler decided it (``decided_at``), delivery stored it (its ``created_at``) and
    started its first provider attempt; the services' times are on the clock file,
    ``offset_s`` ahead of this machine's."""

    def wall(text: str | None) -> float | None:
        if text is None:
            return None
        return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp() - offset_s

    found: dict[str, dict[str, float]] = defaultdict(dict)
    with read_only(scheduler_db) as db:
        decided = db.execute(
            "SELECT send_id, decided_at FROM intents WHERE campaign_id IS NULL"
        ).fetchall()
    with read_only(delivery_db) as db:
        stored = db.execute("SELECT send_id, created_at FROM sends WHERE campaign_id = ''")
        tried = db.execute("SELECT send_id, min(started_at) FROM attempts GROUP BY send_id")
        rows = {"stored by delivery": stored.fetchall(), "first attempt": tried.fetchall()}
    for stage, pairs in {"decided": decided, **rows}.items():
        for send_id, text in pairs:
            at = wall(text)
            if send_id in send_ids and at is not None:
                found[send_id][stage] = at
    return dict(found)


def reason_name(reason: int) -> str:
    """A ReasonCode number as its short name (``QUIET_HOURS``)."""
    return decision_pb2.ReasonCode.Name(reason).removeprefix("REASON_CODE_")  # type: ignore[arg-type]


@dataclass
class Accounting:
    """Expected pushes against the fake's recording (see the module docstring)."""

    expected: dict[tuple[str, str], bool] = field(default_factory=dict)  # key -> campaign
    arrivals: Counter[tuple[str, str]] = field(default_factory=Counter)
    first_arrival: dict[tuple[str, str], float] = field(default_factory=dict)
    first_by_send: dict[str, float] = field(default_factory=dict)
    suppressed: Counter[tuple[str, str]] = field(default_factory=Counter)
    deferred: int = 0
    errors_at_fake: int = 0

    @property
    def lost(self) -> int:
        return sum(1 for key in self.expected if key not in self.arrivals)

    @property
    def duplicates(self) -> int:
        return sum(count - 1 for count in self.arrivals.values() if count > 1)

    @property
    def unexpected(self) -> int:
        return sum(1 for key in self.arrivals if key not in self.expected)

    @property
    def delivered(self) -> int:
        return sum(1 for key in self.arrivals if key in self.expected)

    def campaign_times(self) -> list[float]:
        return [t for key, t in self.first_arrival.items() if self.expected.get(key)]


def account(
    intents: Iterable[Intent],
    sends: Mapping[str, tuple[str, int]],
    devices: Mapping[str, list[Device]],
    recorded: Iterable[Mapping[str, Any]],
) -> Accounting:
    """What should have reached the fake, and what did. A push is keyed by its apns-id
    (delivery derives it from the send id and the device id) and device token."""
    result = Accounting()
    # Every push the run's sends could make (to any device of their user, usable or
    # not), so that a push to a suppressed send or an unusable device shows as
    # unexpected instead of being taken for some other load's.
    owner: dict[str, str] = {}
    for intent in intents:
        for device in devices.get(intent.user_id, ()):
            owner[apns_id_for(push_seed(intent.send_id, device.device_id))] = intent.send_id
        if intent.state == "DROPPED":
            result.suppressed["scheduler", reason_name(intent.reason)] += 1
            continue
        if intent.state != "SENT":
            result.deferred += 1
            continue
        status, reason = sends.get(intent.send_id, ("", 0))
        if status == "SUPPRESSED":
            result.suppressed["delivery", reason_name(reason)] += 1
            continue
        for device in devices.get(intent.user_id, ()):
            if device.usable:
                key = (apns_id_for(push_seed(intent.send_id, device.device_id)), device.token)
                result.expected[key] = intent.campaign
    for request in recorded:
        if request["apns_id"] not in owner:
            continue  # not a push of the measured load (a warm-up's)
        if request["status"] != 200:
            result.errors_at_fake += 1
            continue
        key = (request["apns_id"], request["token"])
        send_id = owner[key[0]]
        at: float = request["time"]
        result.arrivals[key] += 1
        result.first_arrival[key] = min(at, result.first_arrival.get(key, at))
        result.first_by_send[send_id] = min(at, result.first_by_send.get(send_id, at))
    return result


# --- one run ------------------------------------------------------------------------------


@dataclass
class Run:
    """Everything one run measured."""

    users: int
    started_at: float  # time.time() of the StartCampaign call
    accounting: Accounting
    calls: list[_platform.TransactionalCall]
    cpu: dict[str, float]  # CPU seconds over the campaign window, by process
    rss_mb: dict[str, float]
    bare: list[bare_aioapns.Result]
    device_states: Counter[str]
    mix: Counter[tuple[str, int]]
    stages: dict[str, dict[str, float]]  # transactional send id -> stage -> time.time()

    @property
    def campaign_pushes(self) -> int:
        return sum(1 for campaign in self.accounting.expected.values() if campaign)

    def first_delivery_s(self) -> float:
        return min(self.accounting.campaign_times()) - self.started_at

    def campaign_seconds(self) -> float:
        return max(self.accounting.campaign_times()) - self.started_at

    def apns_per_s(self) -> float:
        return len(self.accounting.campaign_times()) / self.campaign_seconds()

    def bare_per_s(self) -> float:
        return sum(r.n for r in self.bare) / sum(r.seconds for r in self.bare)

    def bare_client_ms(self) -> float:
        return 1000 * sum(r.client_cpu for r in self.bare) / sum(r.n for r in self.bare)

    def bare_fake_ms(self) -> float:
        return 1000 * sum(r.fake_cpu for r in self.bare) / sum(r.n for r in self.bare)

    def cpu_ms(self, process: str) -> float:
        return 1000 * self.cpu[process] / max(1, self.accounting.delivered)

    def services_cpu_ms(self) -> float:
        return sum(self.cpu_ms(name) for name in _platform.SERVICES)

    def stage_ms(self) -> dict[str, list[float]]:
        """For each stage of a transactional send, the milliseconds from the call."""
        found: dict[str, list[float]] = {stage: [] for stage in TRANSACTIONAL_STAGES}
        arrived = self.accounting.first_by_send
        for call in self.calls:
            found["accepted"].append(call.latency_ms)
            times = {**self.stages.get(call.send_id, {})}
            if call.send_id in arrived:
                times["at the fake"] = arrived[call.send_id]
            for stage, at in times.items():
                found[stage].append((at - call.called_at) * 1000)
        return found

    def transactional_ms(self) -> list[float]:
        arrived = self.accounting.first_by_send
        return [
            (arrived[call.send_id] - call.called_at) * 1000
            for call in self.calls
            if call.send_id in arrived
        ]


async def wait_until(what: str, check: Any, within_s: float) -> None:
    """Poll ``check`` (a blocking callable) every 0.2 s until true."""
    deadline = time.monotonic() + within_s
    while not await asyncio.to_thread(check):
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        await asyncio.sleep(0.2)


async def run_once(users: int, bare_n: int, within_s: float) -> Run:
    consent_url = kept_consent(users)
    consent_db = Path(consent_url.removeprefix("sqlite:///"))
    segmentation_db, seeded = _platform.kept_segmentation(users)
    devices = devices_by_user(consent_db)
    reachable = sorted(user for user, found in devices.items() if any(d.usable for d in found))
    with tempfile.TemporaryDirectory(prefix="pw-bench-e2e-") as tmp:
        root = Path(tmp)
        fake = _platform.start_fake_apns(root)
        ca = str(fake.info["ca_file"])
        services = Services(
            root,
            consent_url,
            f"sqlite:///{segmentation_db}",
            delivery_env={
                "CREDENTIALS": str(_platform.apns_credentials(root / "credentials.toml", fake))
            },
            env={"SSL_CERT_FILE": ca},
        )
        try:
            await services.start()
            if not seeded:
                await _platform.seed_segmentation(
                    services.addr["segmentation"], users, segmentation_db
                )
            return await measure(services, fake, users, reachable, devices, bare_n, within_s)
        except BaseException:
            services.print_logs()
            raise
        finally:
            await services.stop()
            fake.stop()


async def measure(
    services: Services,
    fake: _platform.FakeApns,
    users: int,
    reachable: list[str],
    devices: Mapping[str, list[Device]],
    bare_n: int,
    within_s: float,
) -> Run:
    address = services.addr["scheduler"]
    # Warm-up: delivery opens its APNs connections and signs its token.
    async with _platform.transactional_load(address, reachable, 50, tag="warm") as warm:
        await wait_until("the warm-up", lambda: len(warm) >= WARM_UP_SENDS, 60)
    await wait_until("the warm-up pushes", lambda: fake.count() >= len(warm), 60)
    bare = [await bare_aioapns.run_setting(BARE, fake.info, fake.pid, fake.signing_key, bare_n)]
    fake.clear()

    async with grpc.aio.insecure_channel(address) as channel:
        stub = scheduler_pb2_grpc.SchedulerServiceStub(channel)
        campaign_id = await _platform.create_campaign(stub)
        cpu0 = {**services.cpu(), "fake-apns": _platform.proc_cpu(fake.pid)}
        async with _platform.transactional_load(address, reachable, TRANSACTIONAL_PER_S) as calls:
            started_at, began = time.time(), time.perf_counter()
            await stub.StartCampaign(
                messages_pb2.StartCampaignRequest(app_id=APP, campaign_id=campaign_id)
            )
            shown = 0.0
            while True:
                await asyncio.sleep(0.5)
                states, decided, mix = _platform.intent_states(services.scheduler_db)
                active = await asyncio.to_thread(active_sends, services.delivery_db)
                elapsed = time.perf_counter() - began
                if elapsed - shown >= 5:
                    shown = elapsed
                    at_fake = await asyncio.to_thread(fake.count)
                    print(
                        f"  {elapsed:5.1f} s: decided {decided:,} of {users:,}, handed "
                        f"{states['SENT']:,}, at delivery {active:,}, at the fake {at_fake:,}",
                        flush=True,
                    )
                if decided >= users and not states["OUTBOX"] and not active:
                    break
                if elapsed > within_s:
                    raise RuntimeError(f"the campaign did not finish: {states}, {decided}")
        # The load's last sends were accepted as it stopped: let the scheduler hand them
        # over and delivery finish them.
        transactional = {call.send_id for call in calls}
        await wait_until(
            "the scheduler", lambda: undecided(services.scheduler_db, transactional) == 0, 60
        )
        await wait_until("delivery", lambda: active_sends(services.delivery_db) == 0, 60)
        cpu1 = {**services.cpu(), "fake-apns": _platform.proc_cpu(fake.pid)}
    rss = {**services.peak_rss_mb(), "fake-apns": _platform.peak_rss_mb(fake.pid)}
    recorded = await asyncio.to_thread(fake.recorded)
    bare.append(await bare_aioapns.run_setting(BARE, fake.info, fake.pid, fake.signing_key, bare_n))

    intents = read_intents(services.scheduler_db, campaign_id, transactional)
    sends, device_states = read_sends(services.delivery_db)
    shift = read_clock_file(services.clock)
    assert shift is not None
    assert shift.speed == 1.0
    stages = transactional_stages(
        services.scheduler_db, services.delivery_db, transactional, shift.offset_s
    )
    return Run(
        users=users,
        started_at=started_at,
        accounting=account(intents, sends, devices, recorded),
        calls=calls,
        cpu={name: cpu1[name] - cpu0[name] for name in cpu1},
        rss_mb=rss,
        bare=bare,
        device_states=device_states,
        mix=mix,
        stages=stages,
    )


# --- the report -----------------------------------------------------------------------------


def print_table(run: Run) -> None:
    acc = run.accounting
    latencies = run.transactional_ms()
    print(f"\nIMMEDIATE campaign to {run.users:,} users, every process on the same 2 cores")
    mix = ", ".join(
        f"{outcome} {reason_name(reason)}: {count:,}"
        for (outcome, reason), count in sorted(run.mix.items())
    )
    print(f"scheduler decisions (latest per intent): {mix}")
    print(f"delivery's devices by status: {dict(run.device_states)}")
    print(
        f"{'':<34}{'value':>12}   what"
        f"\n{'campaign pushes at the fake /s':<34}{run.apns_per_s():>12.0f}   "
        f"{len(acc.campaign_times()):,} in {run.campaign_seconds():.1f} s"
        f"\n{'bare aioapns /s':<34}{run.bare_per_s():>12.0f}   {BARE.describe()}"
        f"\n{'time to first delivery s':<34}{run.first_delivery_s():>12.2f}"
        f"\n{'transactional p99 ms':<34}{p99(latencies) if latencies else 0:>12.1f}   "
        f"{len(latencies)} of {len(run.calls)} arrived"
        f"\n{'expected / delivered pushes':<34}{acc.delivered:>12,}   of {len(acc.expected):,}"
        f"\n{'lost / duplicates / unexpected':<34}"
        f"{f'{acc.lost} / {acc.duplicates} / {acc.unexpected}':>12}"
        f"\n{'deferred (not due in the run)':<34}{acc.deferred:>12,}"
        f"\n{'non-200 answers at the fake':<34}{acc.errors_at_fake:>12,}"
    )
    print(f"\n{'process':<14}{'CPU ms/delivery':>16}{'CPU s':>8}{'peak RSS MiB':>14}")
    for name in PROCESSES:
        print(f"{name:<14}{run.cpu_ms(name):>16.3f}{run.cpu[name]:>8.1f}{run.rss_mb[name]:>14.0f}")
    print(f"{'bare client':<14}{run.bare_client_ms():>16.3f}")
    print(f"{'fake (bare)':<14}{run.bare_fake_ms():>16.3f}")
    for (stage, reason), count in sorted(acc.suppressed.items()):
        print(f"suppressed by {stage}: {reason} {count:,}")
    print(f"\n{'transactional: ms from the call':<34}{'median':>10}{'p99':>10}{'n':>6}")
    for stage, values in run.stage_ms().items():
        if values:
            print(
                f"{stage:<34}{statistics.median(values):>10.1f}{p99(values):>10.1f}{len(values):>6}"
            )


def correctness_lines(runs: list[Run]) -> None:
    users = " + ".join(f"{run.users:,}" for run in runs)
    expected = sum(len(run.accounting.expected) for run in runs)
    what = f"campaign to {users} users plus transactional load; keyed by (apns-id, token)"
    bench_line("e2e.expected_pushes", expected, "pushes", None, f"{what}; handed, not suppressed")
    bench_line(
        "e2e.delivered_pushes",
        sum(run.accounting.delivered for run in runs),
        "pushes",
        expected,
        f"{what}; expected pushes at the fake with status 200",
    )
    for name in ("lost", "duplicates", "unexpected"):
        bench_line(
            f"e2e.{name}",
            sum(getattr(run.accounting, name) for run in runs),
            "pushes",
            0,
            f"goal 0; {what}",
        )
    suppressed: Counter[tuple[str, str]] = sum(
        (run.accounting.suppressed for run in runs), Counter()
    )
    for (stage, reason), count in sorted(suppressed.items()):
        bench_line(
            f"e2e.suppressed.{stage}.{reason}",
            count,
            "sends",
            None,
            f"{what}; "
            + ("dropped by the scheduler" if stage == "scheduler" else "suppressed by delivery"),
        )
    bench_line(
        "e2e.deferred",
        sum(run.accounting.deferred for run in runs),
        "sends",
        None,
        f"{what}; DEFER (quiet hours, caps): not due within the run",
    )


def report(run: Run) -> None:
    print_table(run)
    latencies = run.transactional_ms()
    what = (
        f"IMMEDIATE campaign to {run.users:,} users through scheduler and delivery (defaults: "
        f"batches of 500, 10 APNs connections x 100 streams) to the fake APNs; 4 services + "
        f"fake as processes on SQLite, same 2 cores"
    )
    bench_line(
        "e2e.apns_per_s",
        run.apns_per_s(),
        "notifications/s",
        None,
        f"{what}; {len(run.accounting.campaign_times()):,} campaign pushes in "
        f"{run.campaign_seconds():.1f} s from StartCampaign",
    )
    bench_line(
        "e2e.apns_ratio_to_bare",
        run.apns_per_s() / run.bare_per_s(),
        "ratio",
        GOAL_RATIO,
        f"goal >= {GOAL_RATIO}; e2e {run.apns_per_s():.0f}/s vs bare aioapns "
        f"{run.bare_per_s():.0f}/s ({BARE.describe()}, {sum(r.n for r in run.bare):,} pushes "
        f"in 2 rounds, before and after the campaign) to the same fake",
    )
    per_process = ", ".join(f"{name} {run.cpu_ms(name):.3f}" for name in _platform.SERVICES)
    bench_line(
        "e2e.cpu_ms_per_delivery",
        run.services_cpu_ms(),
        "ms",
        round(run.bare_client_ms(), 4),
        f"CPU of the 4 service processes per push at the fake ({per_process}; the fake "
        f"{run.cpu_ms('fake-apns'):.3f}); baseline: the bare aioapns client's per push (the "
        f"fake {run.bare_fake_ms():.3f})",
    )
    bench_line(
        "e2e.time_to_first_delivery_s",
        run.first_delivery_s(),
        "s",
        GOAL_FIRST_DELIVERY_S,
        f"goal <= {GOAL_FIRST_DELIVERY_S}; StartCampaign call to the first campaign push "
        f"recorded at the fake (delivery warmed up by {WARM_UP_SENDS} transactional sends)",
    )
    bench_line(
        "e2e.transactional_p99_ms",
        p99(latencies) if latencies else 0.0,
        "ms",
        GOAL_TRANSACTIONAL_P99_MS,
        f"goal <= {GOAL_TRANSACTIONAL_P99_MS}; SendTransactional call to arrival at the fake, "
        f"{TRANSACTIONAL_PER_S}/s during the campaign; {len(latencies)} of {len(run.calls)} "
        f"arrived (the rest suppressed); median "
        f"{statistics.median(latencies) if latencies else 0:.1f} ms",
    )
    correctness_lines([run])


def report_rss(runs: list[Run]) -> None:
    for run in runs:
        print_table(run)
    small, large = runs
    print(f"\n{'peak RSS MiB':<14}" + "".join(f"{run.users:>12,}" for run in runs))
    for name in PROCESSES:
        print(f"{name:<14}" + "".join(f"{run.rss_mb[name]:>12.0f}" for run in runs))
    for name in PROCESSES:
        bench_line(
            f"e2e.peak_rss_mb.{name}",
            large.rss_mb[name],
            "MiB",
            round(small.rss_mb[name], 1),
            f"VmHWM at the end of the run to {large.users:,} users; baseline: to "
            f"{small.users:,} users (goal: flat as N grows)",
        )
    correctness_lines(runs)


async def main_async(args: argparse.Namespace) -> int:
    bare_n = 2000 if args.quick else 20_000
    within_s = 300 if args.quick else 3600
    if args.rss:
        runs = [await run_once(users, bare_n, within_s) for users in RSS_USERS]
        report_rss(runs)
    else:
        users = args.users or (1000 if args.quick else 1_000_000 if args.million else 100_000)
        runs = [await run_once(users, bare_n, within_s)]
        report(runs[0])
    bad = [run for run in runs if run.accounting.lost or run.accounting.duplicates]
    return 1 if bad else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="1,000 users")
    parser.add_argument("--users", type=int, default=0, help="audience size")
    parser.add_argument("--million", action="store_true", help="1,000,000 users")
    parser.add_argument(
        "--rss", action="store_true", help="runs at 50,000 and 200,000 users: peak RSS"
    )
    return asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
