"""Shared pieces of the benchmarks that run the whole platform (not a benchmark itself:
``make bench`` skips modules whose name starts with ``_``).

Used by ``bench/scheduler_fanout.py`` and ``bench/e2e_campaign.py``: the four services as
processes on one clock file, the kept segmentation database of consent's benchmark
population with its ``pro`` segment, the campaign those benches start, transactional
sends at a steady rate while it runs, the scheduler's intents read from its SQLite
file, per-process CPU and peak RSS, and a fake APNs process whose recording keeps only
what the correctness counts need.

Run as a script it is that fake: ``python bench/_platform.py fake-apns --state-dir DIR
--key-file FILE`` prints one JSON line (where it listens, the CA to trust) and serves
until SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc

# The sibling benches as modules, from the repository root (bench/ is a namespace package).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import bare_aioapns
from bench import consent_eligibility as consent_bench
from pushwarden.common.v1 import content_pb2, values_pb2
from pushwarden.runtime.clock import shift_clock_file
from pushwarden.runtime.servicetest import ServiceProcess, free_port
from pushwarden.sandbox.apns import generate_signing_key
from pushwarden.sandbox.recording import RecordedRequest, Recorder
from pushwarden.scheduler.v1 import messages_pb2, resources_pb2, scheduler_pb2_grpc
from pushwarden.segmentation.v1 import messages_pb2 as seg_messages
from pushwarden.segmentation.v1 import resources_pb2 as seg_resources
from pushwarden.segmentation.v1 import segmentation_pb2_grpc

ROOT = Path(__file__).resolve().parents[1]
KEEP_DIR = ROOT / "var" / "bench"
NOON = datetime(2026, 1, 6, 12, 0, tzinfo=UTC)  # a Tuesday
APP: str = consent_bench.APP
KEY: str = consent_bench.KEY
CATEGORY: str = consent_bench.CATEGORY
TRANSACTIONAL_CATEGORY = "orders"
SERVICES = ("consent", "segmentation", "delivery", "scheduler")
SEGMENTATION_SEED_VERSION = 1
proc_cpu = bare_aioapns.proc_cpu


def p99(values: Sequence[float]) -> float:
    """The 99th percentile (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def peak_rss_mb(pid: int) -> float:
    """Peak resident set size of process ``pid`` so far (``VmHWM``), in MiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmHWM for process {pid}")


class Services:
    """The four services as processes (``python -m pushwarden.services.<name>``, SQLite)
    on one clock file that runs at real speed from a fixed weekday noon (UTC).
    ``delivery_env`` adds ``PUSHWARDEN_DELIVERY_*`` settings by suffix and ``env`` plain
    variables to every process (a CA bundle, say)."""

    def __init__(
        self,
        root: Path,
        consent_url: str,
        segmentation_url: str,
        *,
        delivery_env: Mapping[str, str],
        env: Mapping[str, str] | None = None,
        profile: Path | None = None,
    ) -> None:
        self.root = root
        self.clock = root / "clock.json"
        shift_clock_file(self.clock, to=NOON, speed=1.0)
        ports = {name: free_port() for name in SERVICES}
        self.addr = {name: f"127.0.0.1:{port}" for name, port in ports.items()}
        self.scheduler_db = root / "scheduler.db"
        self.delivery_db = root / "delivery.db"
        urls = {
            "consent": consent_url,
            "segmentation": segmentation_url,
            "delivery": f"sqlite:///{self.delivery_db}",
            "scheduler": f"sqlite:///{self.scheduler_db}",
        }
        extra: dict[str, Mapping[str, str]] = {
            "consent": {"PSEUDONYM_KEY": KEY},
            "segmentation": {"CONSENT_ADDR": self.addr["consent"]},
            "delivery": {"CONSENT_ADDR": self.addr["consent"], **delivery_env},
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
                {**(env or {}), **{prefix + key: value for key, value in settings.items()}},
                root,
                python_args=("-m", "cProfile", "-o", str(profile / f"{name}.prof"))
                if profile is not None
                else (),
            )

    async def start(self) -> None:
        """Start each service and wait until it serves (consent migrates first)."""
        for process in self.processes.values():
            await process.start(within_s=180)

    async def stop(self) -> None:
        """SIGTERM each, the scheduler first."""
        for process in reversed(list(self.processes.values())):
            await process.stop()

    def pid(self, name: str) -> int:
        """The running process of service ``name``."""
        process = self.processes[name].process
        assert process is not None
        return process.pid

    def cpu(self) -> dict[str, float]:
        """CPU seconds (user + system) of each service process so far."""
        return {name: proc_cpu(self.pid(name)) for name in self.processes}

    def peak_rss_mb(self) -> dict[str, float]:
        """Peak RSS of each service process so far, MiB."""
        return {name: peak_rss_mb(self.pid(name)) for name in self.processes}

    def print_logs(self) -> None:
        """The tail of every service's log, to stderr (after a failure)."""
        for process in self.processes.values():
            print(process.output()[-2000:], file=sys.stderr)


# --- segmentation: every user on the pro plan, and the pro segment ---------------------


def kept_segmentation(users: int) -> tuple[Path, bool]:
    """The kept segmentation database for ``users`` of the population, and whether it
    is seeded (the user ids are the same in every population of that size)."""
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
    """Every user on the pro plan, and the segment of them (through the RPCs, batches
    of 1,000); marks ``path`` seeded."""
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


# --- the scheduler: the campaign, transactional sends, its intents ---------------------


async def create_campaign(stub: scheduler_pb2_grpc.SchedulerServiceAsyncStub) -> str:
    """The benches' IMMEDIATE campaign to the ``pro`` segment (one variant, no holdout,
    the app's default policy), created but not started; returns its id."""
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
    return str(created.campaign.campaign_id)


@dataclass(frozen=True, slots=True)
class TransactionalCall:
    """One ``SendTransactional``: its send id, when it was called (``time.time()``, to
    compare with a fake's arrival times) and how long the call took."""

    send_id: str
    called_at: float
    latency_ms: float


@contextlib.asynccontextmanager
async def transactional_load(
    address: str, user_ids: Sequence[str], per_s: float, tag: str = "order"
) -> AsyncIterator[list[TransactionalCall]]:
    """``SendTransactional`` (category ``orders``, a random user of ``user_ids``) at
    ``per_s`` calls a second until the block ends; yields the calls as they finish."""
    calls_done: list[TransactionalCall] = []
    stop = asyncio.Event()
    rng = random.Random(11)

    async def one(stub: scheduler_pb2_grpc.SchedulerServiceAsyncStub, n: int) -> None:
        request = messages_pb2.SendTransactionalRequest(
            app_id=APP,
            user_id=rng.choice(user_ids),
            category_id=TRANSACTIONAL_CATEGORY,
            content=content_pb2.Content(title="Your order", body=f"Order {n} has shipped"),
            idempotency_key=f"{tag}-{n}",
        )
        called_at, began = time.time(), time.perf_counter()
        answer = await stub.SendTransactional(request, timeout=30)
        latency = (time.perf_counter() - began) * 1000
        calls_done.append(TransactionalCall(answer.send_id, called_at, latency))

    async def run() -> None:
        async with grpc.aio.insecure_channel(address) as channel:
            stub = scheduler_pb2_grpc.SchedulerServiceStub(channel)
            pending: set[asyncio.Task[None]] = set()
            n = 0
            while not stop.is_set():
                n += 1
                task = asyncio.create_task(one(stub, n))
                pending.add(task)
                task.add_done_callback(pending.discard)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 1 / per_s)
            if pending:
                await asyncio.gather(*pending)

    runner = asyncio.create_task(run())
    try:
        yield calls_done
    finally:
        stop.set()
        await runner


def read_only(path: Path) -> contextlib.closing[sqlite3.Connection]:
    """A read-only connection to a service's SQLite file (WAL: beside its writer)."""
    return contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30))


def intent_states(path: Path) -> tuple[Counter[str], int, Counter[tuple[str, int]]]:
    """The campaign's intents by state, how many were decided at least once, and the
    latest decisions by (outcome, reason), read from the scheduler's SQLite file."""
    with read_only(path) as db:
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


# --- a fake APNs that keeps a slim recording --------------------------------------------


class SlimRecorder(Recorder):
    """A recording without headers and bodies: a million pushes fit in memory and the
    control route lists them in a few hundred bytes each. What stays (arrival time,
    device token, apns-id, status) is what the correctness counts read."""

    def append(self, request: RecordedRequest) -> None:
        super().append(dataclasses.replace(request, headers=(), body=b"", path=""))


@dataclass
class FakeApns:
    """The fake APNs as a child process of this one."""

    process: subprocess.Popen[str]
    info: dict[str, Any]
    signing_key: str
    key_file: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def count(self) -> int:
        """Requests recorded so far."""
        return int(bare_aioapns.control(self.info, "GET", "count")["count"])

    def recorded(self) -> list[dict[str, Any]]:
        """Every recorded request (slim: time, token, apns_id, status, ...)."""
        found: list[dict[str, Any]] = bare_aioapns.control(self.info, "GET", "requests")
        return found

    def clear(self) -> None:
        """Forget the recording."""
        bare_aioapns.control(self.info, "DELETE", "requests")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_fake_apns(root: Path) -> FakeApns:
    """Start ``python bench/_platform.py fake-apns`` with a fresh signing key (the one
    ``bench/bare_aioapns.py`` names: its key id, team and topic) under ``root``."""
    signing_key = generate_signing_key()
    key_file = root / "AuthKey.p8"
    key_file.write_text(signing_key)
    state = root / "sandbox"
    state.mkdir(exist_ok=True)
    process = subprocess.Popen(
        [
            sys.executable,
            __file__,
            "fake-apns",
            "--state-dir",
            str(state),
            "--key-file",
            str(key_file),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    info: dict[str, Any] = json.loads(process.stdout.readline())
    return FakeApns(process, info, signing_key, key_file)


def apns_credentials(path: Path, fake: FakeApns) -> Path:
    """A delivery credentials file giving the app APNs token auth at ``fake``."""
    path.write_text(
        "\n".join(
            [
                f"[apps.{APP}.apns]",
                f'key_file = "{fake.key_file}"',
                f'key_id = "{bare_aioapns.KEY_ID}"',
                f'team_id = "{bare_aioapns.TEAM_ID}"',
                f'topic = "{bare_aioapns.TOPIC}"',
                'environment = "sandbox"',
                f'endpoint = "{fake.info["url"]}"',
                "",
            ]
        )
    )
    return path


async def _serve_fake_apns(state_dir: Path, signing_key: str) -> None:
    from pushwarden.sandbox.apns import ApnsKey, start_apns

    key = ApnsKey.from_private_pem(
        bare_aioapns.KEY_ID, bare_aioapns.TEAM_ID, signing_key, [bare_aioapns.TOPIC]
    )
    server = await start_apns([key], state_dir=state_dir, recorder=SlimRecorder())
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    line = {
        "provider": "apns",
        "listening": f"127.0.0.1:{server.port}",
        "url": server.url,
        "ca_file": server.ca_file,
    }
    print(json.dumps(line), flush=True)
    try:
        await stop.wait()
    finally:
        await server.close()


def main() -> int:
    """``fake-apns``: serve the fake APNs with a slim recording (see the docstring)."""
    from pushwarden.sandbox import speedups

    parser = argparse.ArgumentParser(description="the benches' fake APNs (slim recording)")
    sub = parser.add_subparsers(dest="command", required=True)
    fake = sub.add_parser("fake-apns")
    fake.add_argument("--state-dir", type=Path, required=True)
    fake.add_argument("--key-file", type=Path, required=True)
    args = parser.parse_args()
    speedups.install()  # as the sandbox's CLI does for a fake in its own process
    asyncio.run(_serve_fake_apns(args.state_dir, args.key_file.read_text()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
