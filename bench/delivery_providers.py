"""Benchmark: the delivery service end to end (Deliver over gRPC, persistence on) to the
fake APNs and the fake FCM, beside the bare clients sending to the same fakes in the
same run.

Run: .venv/bin/python bench/delivery_providers.py [--quick] [--apns-n N] [--fcm-n N]

Every piece is its own process on the same 2 cores: the fake APNs and the fake FCM
(``python -m pushwarden.sandbox``), consent and delivery (``python -m
pushwarden.services.<name>``, SQLite files, delivery's default settings: 10 APNs
connections of at most 100 streams each, dispatch batches of 500 with one batch at the
providers at a time while the next is claimed and checked with consent, FCM chunks of
100). This process only feeds Deliver (1,000 sends a call, up to 4 calls in flight) and
watches the fake's count; the time is from the first Deliver to the last push at the
fake, CPU is read from ``/proc/<pid>/stat`` of each process over that time.

Sends (seeded): 80 % marketing (category ``promos``), 20 % transactional (``orders``);
60 % an alert with title and body, 40 % an alert with custom data, a deep link and a
collapse id; users drawn from a registered population, one device each (iOS on APNs,
Android on FCM).

Baselines in the same run (the functions of ``bench/bare_aioapns.py`` and
``bench/bare_firebase_admin.py``): aioapns at delivery's concurrency (10 connections at
most, 100 streams each, 500 in flight: one dispatch batch), aioapns with its defaults
(10 connections, the server's 1000 streams each, 1000 in flight, which aioapns puts on
one connection), firebase-admin ``send_each_async`` at
delivery's (chunks of 100, one at a time). The runs take turns so that a change in the
machine's load hits them alike.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx

# The bare baselines' own code, from the repository root (bench/ is a namespace package).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import bare_aioapns, bare_firebase_admin
from pushwarden.common.v1 import content_pb2, types_pb2
from pushwarden.consent.v1 import consent_pb2_grpc
from pushwarden.consent.v1 import messages_pb2 as consent_messages
from pushwarden.consent.v1 import resources_pb2 as consent_resources
from pushwarden.delivery.v1 import delivery_pb2_grpc
from pushwarden.delivery.v1 import messages_pb2 as delivery_messages
from pushwarden.delivery.v1 import resources_pb2 as delivery_resources
from pushwarden.runtime.healthprobe import health_status
from pushwarden.sandbox import fcm
from pushwarden.sandbox.apns import generate_signing_key
from pushwarden.sandbox.certs import client_ssl_context

APP = "bench"
PROJECT = "bench-project"
MARKETING_SHARE = 0.8
DELIVER_CHUNK = 1000
DELIVERS_IN_FLIGHT = 4
DISPATCH_BATCH = 500  # delivery's default: the pushes one dispatch pass has in flight
APNS_STREAMS = 100  # delivery's default apns_max_streams: requests per APNs connection
FCM_CHUNK = 100  # delivery's default fcm_chunk_size


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass(frozen=True)
class Measured:
    """One delivery run: pushes, seconds, CPU seconds of each process over it."""

    n: int
    seconds: float
    delivery_cpu: float
    consent_cpu: float
    fake_cpu: float

    @property
    def per_s(self) -> float:
        return self.n / self.seconds

    def ms(self, cpu: float) -> float:
        return 1000 * cpu / self.n


class Platform:
    """The fakes, consent and delivery as child processes, and stubs to the services."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.children: dict[str, subprocess.Popen[str]] = {}
        self.apns_key = generate_signing_key()
        self.state = root / "sandbox"
        self.state.mkdir()
        key_file = root / "AuthKey.p8"
        key_file.write_text(self.apns_key)
        self.apns_port, self.fcm_port = free_port(), free_port()
        self.consent_port, self.delivery_port = free_port(), free_port()
        account, key = fcm.new_service_account(PROJECT)
        self.service_account = fcm.write_service_account_file(
            root / "sa.json", account, key, f"https://127.0.0.1:{self.fcm_port}/token"
        )
        self.apns_info = self._fake(
            "apns",
            self.apns_port,
            "--key",
            f"{bare_aioapns.KEY_ID}:{bare_aioapns.TEAM_ID}:{key_file}:{bare_aioapns.TOPIC}",
        )
        self.fcm_info = self._fake(
            "fcm", self.fcm_port, "--service-account", str(self.service_account)
        )
        self.ca_file = self.apns_info["ca_file"]
        credentials = root / "credentials.toml"
        credentials.write_text(
            "\n".join(
                [
                    f"[apps.{APP}.apns]",
                    f'key_file = "{key_file}"',
                    f'key_id = "{bare_aioapns.KEY_ID}"',
                    f'team_id = "{bare_aioapns.TEAM_ID}"',
                    f'topic = "{bare_aioapns.TOPIC}"',
                    'environment = "sandbox"',
                    f'endpoint = "https://127.0.0.1:{self.apns_port}"',
                    f"[apps.{APP}.fcm]",
                    f'service_account_file = "{self.service_account}"',
                    f'project_id = "{PROJECT}"',
                    f'endpoint = "https://127.0.0.1:{self.fcm_port}"',
                    "",
                ]
            )
        )
        inherited = {k: v for k, v in os.environ.items() if not k.startswith("PUSHWARDEN_")}
        self._service(
            "consent",
            self.consent_port,
            {**inherited, "PUSHWARDEN_CONSENT_PSEUDONYM_KEY": "b" * 64},
        )
        self._service(
            "delivery",
            self.delivery_port,
            {
                **inherited,
                "PUSHWARDEN_DELIVERY_CONSENT_ADDR": f"127.0.0.1:{self.consent_port}",
                "PUSHWARDEN_DELIVERY_CREDENTIALS": str(credentials),
                "SSL_CERT_FILE": self.ca_file,
                "REQUESTS_CA_BUNDLE": self.ca_file,
            },
        )

    def _fake(self, provider: str, port: int, *extra: str) -> dict[str, Any]:
        process = subprocess.Popen(
            [
                *(sys.executable, "-m", "pushwarden.sandbox", provider),
                *("--port", str(port), "--state-dir", str(self.state), *extra),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        self.children[f"fake-{provider}"] = process
        assert process.stdout is not None
        info: dict[str, Any] = json.loads(process.stdout.readline())
        return info

    def _service(self, name: str, port: int, env: dict[str, str]) -> None:
        prefix = f"PUSHWARDEN_{name.upper()}_"
        env |= {
            f"{prefix}HOST": "127.0.0.1",
            f"{prefix}PORT": str(port),
            f"{prefix}DATABASE_URL": f"sqlite:///{self.root / name}.db",
            f"{prefix}LOG_FORMAT": "text",
        }
        log = (self.root / f"{name}.log").open("w")
        self.children[name] = subprocess.Popen(
            [sys.executable, "-m", f"pushwarden.services.{name}"],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def pid(self, name: str) -> int:
        return self.children[name].pid

    def cpu(self, name: str) -> float:
        return bare_aioapns.proc_cpu(self.pid(name))

    async def serving(self) -> None:
        for name, port in (("consent", self.consent_port), ("delivery", self.delivery_port)):
            deadline = time.monotonic() + 60
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                while True:
                    with contextlib.suppress(grpc.aio.AioRpcError):
                        if await health_status(channel, timeout_s=1.0) == "SERVING":
                            break
                    if time.monotonic() > deadline or self.children[name].poll() is not None:
                        log = (self.root / f"{name}.log").read_text()[-3000:]
                        raise RuntimeError(f"{name} did not serve:\n{log}")
                    await asyncio.sleep(0.2)

    def close(self) -> None:
        for process in self.children.values():
            if process.poll() is None:
                process.terminate()
        for process in self.children.values():
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def fake_count(info: dict[str, Any]) -> int:
    """Requests the fake recorded (at the fake FCM, token requests too)."""
    return int(bare_aioapns.control(info, "GET", "count")["count"])


def pushes_at(info: dict[str, Any]) -> int:
    """Pushes the fake recorded (requests naming a device token)."""
    if info["provider"] == "apns":
        return fake_count(info)
    found = bare_aioapns.control(info, "GET", "requests")
    return sum(1 for request in found if request["token"])


def build_sends(n: int, users: list[str], tag: str, seed: int) -> list[delivery_resources.Send]:
    """The send mix (see the module docstring)."""
    rng = random.Random(seed)
    sends = []
    for i in range(n):
        marketing = rng.random() < MARKETING_SHARE
        content = content_pb2.Content(title=f"Order #{i} shipped", body="On its way.")
        if rng.random() >= 0.6:
            content = content_pb2.Content(
                title="Flash sale",
                body="30 % off until midnight",
                deep_link=f"app://offers/{rng.randrange(10_000)}",
                collapse_id="sale",
                custom_data={"campaign_id": f"c-{rng.randrange(100)}", "variant": "A"},
            )
        sends.append(
            delivery_resources.Send(
                send_id=f"{tag}-{i}",
                user_id=rng.choice(users),
                category_id="promos" if marketing else "orders",
                content=content,
            )
        )
    return sends


async def setup(platform: Platform, users: int) -> tuple[list[str], list[str]]:
    """Categories and one device per user: iOS users and Android users."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{platform.consent_port}") as channel:
        consent = consent_pb2_grpc.ConsentServiceStub(channel)
        for category_id, kind in (
            ("promos", types_pb2.CATEGORY_KIND_MARKETING),
            ("orders", types_pb2.CATEGORY_KIND_TRANSACTIONAL),
        ):
            await consent.DefineCategory(
                consent_messages.DefineCategoryRequest(
                    app_id=APP,
                    category=consent_resources.Category(
                        category_id=category_id,
                        kind=kind,
                        default_state=consent_resources.DEFAULT_STATE_OPTED_IN,
                    ),
                ),
                timeout=30,
            )
        rng = random.Random(3)

        async def register(user_id: str, ios: bool) -> None:
            await consent.RegisterDevice(
                consent_messages.RegisterDeviceRequest(
                    app_id=APP,
                    device=consent_resources.Device(
                        user_id=user_id,
                        platform=types_pb2.PLATFORM_IOS if ios else types_pb2.PLATFORM_ANDROID,
                        provider=types_pb2.PROVIDER_APNS if ios else types_pb2.PROVIDER_FCM,
                        token=rng.randbytes(32).hex() if ios else f"bench:{rng.getrandbits(96)}",
                        time_zone="Europe/Paris",
                        permission=types_pb2.PERMISSION_STATE_GRANTED,
                    ),
                ),
                timeout=30,
            )

        ios = [f"ios-{n}" for n in range(users)]
        android = [f"android-{n}" for n in range(users)]
        for group, is_ios in ((ios, True), (android, False)):
            for start in range(0, len(group), 50):
                await asyncio.gather(*(register(u, is_ios) for u in group[start : start + 50]))
    return ios, android


async def deliver(
    platform: Platform, sends: list[delivery_resources.Send], info: dict[str, Any]
) -> Measured:
    """Hand ``sends`` to delivery and wait until every push is at the fake ``info``."""
    bare_aioapns.control(info, "DELETE", "requests")
    chunks = [sends[i : i + DELIVER_CHUNK] for i in range(0, len(sends), DELIVER_CHUNK)]
    fake = platform.children[f"fake-{info['provider']}"].pid
    cpu0 = (platform.cpu("delivery"), platform.cpu("consent"), bare_aioapns.proc_cpu(fake))
    started = time.perf_counter()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{platform.delivery_port}") as channel:
        stub = delivery_pb2_grpc.DeliveryServiceStub(channel)
        queue = iter(chunks)

        async def feeder() -> None:
            for chunk in queue:
                request = delivery_messages.DeliverRequest(app_id=APP, sends=chunk)
                for _ in range(10):
                    try:
                        answer = await stub.Deliver(request, timeout=120)
                        break
                    except grpc.aio.AioRpcError as error:
                        # SQLite busy under the dispatcher's writes: Deliver is idempotent
                        # by send id, so the same call again is what a client does.
                        if error.code() != grpc.StatusCode.UNAVAILABLE:
                            raise
                        await asyncio.sleep(0.2)
                else:
                    raise RuntimeError("Deliver stayed UNAVAILABLE")
                refused = [r for r in answer.results if r.status != types_pb2.ITEM_STATUS_APPLIED]
                if refused:
                    raise RuntimeError(f"Deliver refused {len(refused)}: {refused[0]}")

        await asyncio.gather(*(feeder() for _ in range(DELIVERS_IN_FLIGHT)))
        deadline = time.monotonic() + 600
        count = 0
        while count < len(sends):
            if await asyncio.to_thread(fake_count, info) >= len(sends):
                count = await asyncio.to_thread(pushes_at, info)
                continue
            if time.monotonic() > deadline:
                raise RuntimeError(f"not every one of {len(sends)} pushes reached the fake")
            await asyncio.sleep(0.05)
    seconds = time.perf_counter() - started
    delivery_cpu = platform.cpu("delivery") - cpu0[0]
    consent_cpu = platform.cpu("consent") - cpu0[1]
    fake_cpu = bare_aioapns.proc_cpu(fake) - cpu0[2]
    if count != len(sends):
        raise RuntimeError(f"{count} pushes at the fake for {len(sends)} sends")
    return Measured(len(sends), seconds, delivery_cpu, consent_cpu, fake_cpu)


@contextlib.contextmanager
def firebase_app(platform: Platform) -> Iterator[Any]:
    with fcm.sandbox_ca_trust(platform.ca_file):
        yield fcm.open_firebase_app(
            platform.fcm_info["url"], platform.service_account, name="bench", http_timeout=60
        )


def line(name: str, value: float, unit: str, baseline: float | None, notes: str) -> str:
    return bare_aioapns.bench_line(name, value, unit, baseline, notes)


async def run(args: argparse.Namespace) -> int:
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="bench-delivery-") as tmp:
        platform = Platform(Path(tmp))
        try:
            await platform.serving()
            ios, android = await setup(platform, args.users)
            # Warm-up: connections, provider tokens, the SQLite files.
            await deliver(platform, build_sends(500, ios, "warm-apns", 1), platform.apns_info)
            await deliver(platform, build_sends(100, android, "warm-fcm", 2), platform.fcm_info)

            equal = bare_aioapns.Setting("equal", 10, APNS_STREAMS, DISPATCH_BATCH)
            defaults = bare_aioapns.Setting("defaults", 10, None, 1000)
            apns_key, apns_pid = platform.apns_key, platform.pid("fake-apns")
            bare_equal: list[bare_aioapns.Result] = []
            bare_defaults: list[bare_aioapns.Result] = []
            ours: list[Measured] = []
            for round_ in range(args.rounds):
                n = args.apns_n // args.rounds
                bare_equal.append(
                    await bare_aioapns.run_setting(equal, platform.apns_info, apns_pid, apns_key, n)
                )
                ours.append(
                    await deliver(
                        platform,
                        build_sends(n, ios, f"apns-{round_}", 10 + round_),
                        platform.apns_info,
                    )
                )
                bare_defaults.append(
                    await bare_aioapns.run_setting(
                        defaults, platform.apns_info, apns_pid, apns_key, n
                    )
                )

            messages = bare_firebase_admin.build_messages(args.fcm_n // args.rounds)
            fcm_setting = bare_firebase_admin.Setting(FCM_CHUNK, 1)
            bare_fcm: list[bare_firebase_admin.Result] = []
            ours_fcm: list[Measured] = []
            with firebase_app(platform) as app:
                control = httpx.AsyncClient(
                    base_url=platform.fcm_info["url"],
                    verify=client_ssl_context(platform.fcm_info["ca_file"]),
                )
                try:
                    for round_ in range(args.rounds):
                        bare_fcm.append(
                            await bare_firebase_admin.run_setting(
                                app, messages, fcm_setting, platform.pid("fake-fcm"), control
                            )
                        )
                        ours_fcm.append(
                            await deliver(
                                platform,
                                build_sends(len(messages), android, f"fcm-{round_}", 20 + round_),
                                platform.fcm_info,
                            )
                        )
                finally:
                    await control.aclose()
                    await fcm.close_firebase_app(app)
        finally:
            platform.close()

    def total(runs: list[Measured]) -> Measured:
        return Measured(
            sum(r.n for r in runs),
            sum(r.seconds for r in runs),
            sum(r.delivery_cpu for r in runs),
            sum(r.consent_cpu for r in runs),
            sum(r.fake_cpu for r in runs),
        )

    def bare_total(runs: list[bare_aioapns.Result]) -> bare_aioapns.Result:
        return bare_aioapns.Result(
            runs[0].setting,
            sum(r.n for r in runs),
            sum(r.seconds for r in runs),
            sum(r.client_cpu for r in runs),
            sum(r.fake_cpu for r in runs),
            sum(r.errors for r in runs),
            sum(r.recorded for r in runs),
        )

    apns, fcm_ = total(ours), total(ours_fcm)
    b_equal, b_defaults = bare_total(bare_equal), bare_total(bare_defaults)
    b_fcm = bare_firebase_admin.combine(bare_fcm)
    failed = b_equal.errors + b_defaults.errors + b_fcm.failures
    print(
        f"delivery (Deliver over gRPC, SQLite, {MARKETING_SHARE:.0%} marketing) beside the bare "
        f"clients, same fakes, {args.rounds} round(s); 1-min load average {load:.1f} at start"
    )
    header = f"{'run':<72}{'n':>7}{'per s':>8}{'client/delivery ms':>20}{'consent ms':>12}"
    print(header + f"{'fake ms':>9}")
    rows = [
        (f"bare aioapns, {equal.describe()}", b_equal.n, b_equal.per_s, b_equal.client_ms, None),
        (f"delivery -> APNs (10 conn max x {APNS_STREAMS} streams/conn, batch "
         f"{DISPATCH_BATCH})", apns.n, apns.per_s,
         apns.ms(apns.delivery_cpu), apns.ms(apns.consent_cpu)),
        (f"bare aioapns, {defaults.describe()}", b_defaults.n, b_defaults.per_s,
         b_defaults.client_ms, None),
        (f"bare firebase-admin, {fcm_setting.label}", b_fcm.messages, b_fcm.per_s,
         b_fcm.client_ms, None),
        (f"delivery -> FCM (chunk {FCM_CHUNK}, batch {DISPATCH_BATCH})", fcm_.n, fcm_.per_s,
         fcm_.ms(fcm_.delivery_cpu), fcm_.ms(fcm_.consent_cpu)),
    ]  # fmt: skip
    fakes = [b_equal.fake_ms, apns.ms(apns.fake_cpu), b_defaults.fake_ms, b_fcm.fake_ms,
             fcm_.ms(fcm_.fake_cpu)]  # fmt: skip
    for (label, n, per_s, client_ms, consent_ms), fake_ms in zip(rows, fakes, strict=True):
        consent = "-" if consent_ms is None else f"{consent_ms:.3f}"
        print(f"{label:<72}{n:>7}{per_s:>8.0f}{client_ms:>20.3f}{consent:>12}{fake_ms:>9.3f}")

    mix = (
        f"{MARKETING_SHARE:.0%} marketing / {1 - MARKETING_SHARE:.0%} transactional, 60% alert, "
        "40% alert+custom data+deep link+collapse id; Deliver 1,000 a call, 4 calls in "
        "flight; SQLite; every process on the same 2 cores"
    )
    cpu = (
        f"CPU per notification: delivery {apns.ms(apns.delivery_cpu):.3f} ms + consent "
        f"{apns.ms(apns.consent_cpu):.3f} ms; bare aioapns {b_equal.client_ms:.3f} ms at "
        f"delivery's concurrency, {b_defaults.client_ms:.3f} ms with its defaults"
    )
    cpu_fcm = (
        f"CPU per message: delivery {fcm_.ms(fcm_.delivery_cpu):.3f} ms + consent "
        f"{fcm_.ms(fcm_.consent_cpu):.3f} ms; bare firebase-admin {b_fcm.client_ms:.3f} ms"
    )
    concurrency = (
        f"delivery: 10 APNs connections max, {APNS_STREAMS} streams each, dispatch batch "
        f"{DISPATCH_BATCH} (up to {DISPATCH_BATCH} pushes in flight a dispatcher, the next "
        f"batch claimed meanwhile); bare equal: "
        f"{equal.describe()}; bare defaults: {defaults.describe()}"
    )
    print(line("delivery.apns_per_s", apns.per_s, "notifications/s", None, f"{concurrency}; {mix}"))
    print(
        line(
            "delivery.apns_ratio_to_bare",
            apns.per_s / b_equal.per_s,
            "ratio",
            0.8,
            f"goal >= 0.8; delivery {apns.per_s:.0f}/s vs bare aioapns {b_equal.per_s:.0f}/s at "
            f"equal connections and streams in flight ({equal.describe()}); {cpu}",
        )
    )
    print(
        line(
            "delivery.apns_ratio_to_bare_defaults",
            apns.per_s / b_defaults.per_s,
            "ratio",
            1.0,
            f"goal >= 1.0; delivery {apns.per_s:.0f}/s vs bare aioapns with its defaults "
            f"{b_defaults.per_s:.0f}/s ({defaults.describe()}); {cpu}",
        )
    )
    print(
        line(
            "delivery.apns_cpu_ms_per_notification",
            apns.ms(apns.delivery_cpu),
            "ms",
            round(b_equal.client_ms, 4),
            f"delivery process; baseline: bare aioapns client at equal concurrency; {cpu}",
        )
    )
    print(
        line(
            "delivery.consent_cpu_ms_per_notification",
            apns.ms(apns.consent_cpu),
            "ms",
            None,
            "consent process (CheckEligibility per batch and category) during the APNs run",
        )
    )
    print(line("delivery.fcm_per_s", fcm_.per_s, "messages/s", None, f"{cpu_fcm}; {mix}"))
    print(
        line(
            "delivery.fcm_ratio_to_bare",
            fcm_.per_s / b_fcm.per_s,
            "ratio",
            0.8,
            f"goal >= 0.8; delivery {fcm_.per_s:.0f}/s vs bare firebase-admin "
            f"{b_fcm.per_s:.0f}/s at {fcm_setting.label} (delivery's chunk size, chunks one "
            f"after another); {cpu_fcm}",
        )
    )
    print(
        line(
            "delivery.fcm_cpu_ms_per_message",
            fcm_.ms(fcm_.delivery_cpu),
            "ms",
            round(b_fcm.client_ms, 4),
            f"delivery process; baseline: bare firebase-admin client; {cpu_fcm}",
        )
    )
    return 1 if failed else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a short run (~3k APNs, 600 FCM)")
    parser.add_argument("--apns-n", type=int, default=0, help="APNs sends per measured run")
    parser.add_argument("--fcm-n", type=int, default=0, help="FCM sends per measured run")
    parser.add_argument("--users", type=int, default=0, help="users per platform")
    args = parser.parse_args()
    args.rounds = 1 if args.quick else 2
    args.apns_n = args.apns_n or (3000 if args.quick else 20_000)
    args.fcm_n = args.fcm_n or (600 if args.quick else 4000)
    args.users = args.users or (200 if args.quick else 1000)
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
