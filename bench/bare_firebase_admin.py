"""Benchmark: firebase-admin alone, ``send_each_async`` in chunks, to the fake FCM.

Run: .venv/bin/python bench/bare_firebase_admin.py [--quick]

The baseline every FCM delivery figure is a ratio of. The fake runs as its own
process (``python -m pushwarden.sandbox fcm --port 0``), so its CPU is read from
``/proc/<pid>/stat`` and the client's from this process. The client uses the
default service-account flow: a generated RSA key in a service-account JSON
whose ``token_uri`` points at the fake (one token fetch, over HTTP/1.1), then
HTTP/2 sends through httpx. Several settings are tried (chunk size, chunks in
flight at once) on the same message mix; the best is reported with what it was.

Message mix, built once (seeded): every message has a token and a data map;
half carry a notification, a quarter an Android section (high priority, TTL,
collapse key), a quarter an APNs section (headers and an aps payload).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from firebase_admin import messaging

from pushwarden.sandbox import fcm
from pushwarden.sandbox.certs import client_ssl_context

PROJECT = "bench-project"
# firebase-admin 7.7 steers callers to `fid`; registration tokens are what delivery sends.
warnings.filterwarnings("ignore", "Message.token is deprecated", DeprecationWarning)
TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Setting:
    """How the client sends: messages per ``send_each_async`` call, calls in flight."""

    chunk: int
    concurrency: int

    @property
    def label(self) -> str:
        return f"chunk {self.chunk} x {self.concurrency} in flight"


@dataclass(frozen=True)
class Result:
    """One setting's run."""

    setting: Setting
    messages: int
    seconds: float
    client_cpu: float
    fake_cpu: float
    fake_requests: int
    failures: int

    @property
    def per_s(self) -> float:
        return self.messages / self.seconds

    @property
    def client_ms(self) -> float:
        return 1000 * self.client_cpu / self.messages

    @property
    def fake_ms(self) -> float:
        return 1000 * self.fake_cpu / max(1, self.fake_requests)


def combine(runs: list[Result]) -> Result:
    """One setting's rounds as one result (totals, so rates are weighted by time)."""
    return Result(
        runs[0].setting,
        sum(r.messages for r in runs),
        sum(r.seconds for r in runs),
        sum(r.client_cpu for r in runs),
        sum(r.fake_cpu for r in runs),
        sum(r.fake_requests for r in runs),
        sum(r.failures for r in runs),
    )


def build_messages(n: int, seed: int = 7) -> list[messaging.Message]:
    """The message mix (see the module docstring)."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        kind = rng.random()
        kwargs: dict[str, Any] = {
            "token": f"bench:APA91b{i:08d}{rng.getrandbits(64):016x}",
            "data": {"campaign": f"c{rng.randrange(50)}", "send_id": f"s{i}"},
        }
        if kind < 0.5:
            kwargs["notification"] = messaging.Notification(
                title="Your order shipped", body=f"Order {i} is on its way"
            )
        if 0.5 <= kind < 0.75:
            kwargs["android"] = messaging.AndroidConfig(
                priority="high", ttl=3600, collapse_key="orders"
            )
        elif kind >= 0.75:
            kwargs["apns"] = messaging.APNSConfig(
                headers={"apns-priority": "10", "apns-push-type": "alert"},
                payload=messaging.APNSPayload(
                    aps=messaging.Aps(alert=messaging.ApsAlert(title="Hi", body="There"), badge=1)
                ),
            )
        out.append(messaging.Message(**kwargs))
    return out


def proc_cpu(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (its threads included)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


async def run_setting(
    app: Any, messages: list[messaging.Message], setting: Setting, fake_pid: int, control: Any
) -> Result:
    chunks = [messages[i : i + setting.chunk] for i in range(0, len(messages), setting.chunk)]
    queue = iter(chunks)
    failures = 0

    async def worker() -> None:
        nonlocal failures
        for chunk in queue:
            batch = await messaging.send_each_async(chunk, app=app)
            failures += batch.failure_count

    await control.delete("/_sandbox/requests")
    fake_before, client_before = proc_cpu(fake_pid), time.process_time()
    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(setting.concurrency)))
    seconds = time.perf_counter() - started
    client_cpu, fake_cpu = time.process_time() - client_before, proc_cpu(fake_pid) - fake_before
    counted = (await control.get("/_sandbox/count")).json()
    return Result(
        setting,
        len(messages),
        seconds,
        client_cpu,
        fake_cpu,
        int(counted["count"]),
        failures,
    )


async def http_version_used(control: Any, token: str) -> str:
    found = (await control.get("/_sandbox/requests", params={"token": token})).json()
    items = found["requests"] if isinstance(found, dict) else found
    return f"HTTP/{items[0]['http_version']}" if items else "unknown"


def start_fake(state: Path, sa: Path) -> tuple[subprocess.Popen[str], dict[str, Any]]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pushwarden.sandbox",
            "fcm",
            "--port",
            "0",
            "--state-dir",
            str(state),
            "--service-account",
            str(sa),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    return proc, json.loads(proc.stdout.readline())


async def bench(args: argparse.Namespace) -> list[Result]:
    state = Path(tempfile.mkdtemp(prefix="bench-fcm-"))
    account, key = fcm.new_service_account(PROJECT)
    sa = fcm.write_service_account_file(state / "sa.json", account, key, "https://unset/token")
    proc, info = start_fake(state, sa)
    try:
        fcm.write_service_account_file(sa, account, key, f"{info['url']}/token")
        with fcm.sandbox_ca_trust(info["ca_file"]):
            app = fcm.open_firebase_app(info["url"], sa, name="bench", http_timeout=60)
            control = httpx.AsyncClient(
                base_url=info["url"], verify=client_ssl_context(info["ca_file"])
            )
            try:
                warm = build_messages(50, seed=1)
                assert (await messaging.send_each_async(warm, app=app)).failure_count == 0
                args.http = await http_version_used(control, warm[0].token)
                # Settings take turns, round after round, so that a change in the
                # machine's load (other work shares the 2 cores) hits them alike.
                messages = build_messages(args.n // args.rounds)
                runs: dict[Setting, list[Result]] = {s: [] for s in args.settings}
                for _ in range(args.rounds):
                    for setting in args.settings:
                        run = await run_setting(app, messages, setting, proc.pid, control)
                        runs[setting].append(run)
                results = [combine(rs) for rs in runs.values()]
            finally:
                await control.aclose()
                await fcm.close_firebase_app(app)
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="~2,000 messages in all")
    parser.add_argument("-n", type=int, help="messages per setting")
    args = parser.parse_args()
    args.settings = [Setting(100, 1), Setting(500, 1), Setting(100, 4), Setting(500, 2)]
    args.n = args.n or (500 if args.quick else 6000)
    args.rounds = 1 if args.quick else 3
    load_before = os.getloadavg()[0]
    results = asyncio.run(bench(args))

    print(
        f"firebase-admin send_each_async -> fake FCM ({args.http}), "
        f"{args.n} messages a setting in {args.rounds} round(s)"
    )
    print(f"{'setting':<28}{'msg/s':>9}{'client ms/msg':>15}{'fake ms/req':>13}{'failed':>8}")
    for r in results:
        print(
            f"{r.setting.label:<28}{r.per_s:>9.0f}{r.client_ms:>15.3f}{r.fake_ms:>13.3f}"
            f"{r.failures:>8}"
        )
    best = max(results, key=lambda r: r.per_s)
    tried = "; ".join(f"{r.setting.label}: {r.per_s:.0f}/s" for r in results)
    notes = (
        f"best of {len(results)} settings: {best.setting.label}, "
        f"N={args.n} in {args.rounds} round(s), "
        f"{args.http} via httpx, service-account flow, "
        f"fake as a separate process on the same 2 cores "
        f"(1-min load average {load_before:.1f} at start); tried {tried}"
    )
    figures = [
        ("bare_firebase_admin.fcm_per_s", best.per_s, "messages/s", notes),
        (
            "bare_firebase_admin.client_cpu_ms_per_message",
            best.client_ms,
            "ms",
            f"client process CPU per message at {best.setting.label}, N={args.n}",
        ),
        (
            "sandbox.fake_fcm_cpu_ms_per_request",
            best.fake_ms,
            "ms",
            f"fake FCM process CPU per send request at {best.setting.label}, {args.http}",
        ),
    ]
    for name, value, unit, note in figures:
        line = {
            "name": name,
            "value": round(value, 4),
            "unit": unit,
            "baseline": None,
            "notes": note,
        }
        print("BENCH " + json.dumps(line))
    return 1 if any(r.failures for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
