"""Reach every service with `buf curl` through server reflection (`make buf-curl-check`).

Starts the platform with the supervisor's own command on free ports, waits for every
service to be SERVING, then for each service runs `buf curl --list-methods` (which
resolves the schema through reflection) and calls one read-only RPC with a JSON body,
expecting a JSON answer, or, while the service does not implement it yet, the
UNIMPLEMENTED answer that names the RPC. Exits 1 with one line per problem.
Needs the pinned buf from the npm registry (`npm ci`), like `make proto-lint`.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc

from pushwarden.runtime.healthprobe import check

ROOT = Path(__file__).resolve().parent.parent
BUF = ROOT / "node_modules" / ".bin" / "buf"

# service -> (full service name, one RPC to call with an app-scoped JSON body)
TARGETS = {
    "consent": ("pushwarden.consent.v1.ConsentService", "ListCategories"),
    "segmentation": ("pushwarden.segmentation.v1.SegmentationService", "ListSegments"),
    "scheduler": ("pushwarden.scheduler.v1.SchedulerService", "ListCampaigns"),
    "delivery": ("pushwarden.delivery.v1.DeliveryService", "GetDelivery"),
}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_serving(addr: str, deadline: float) -> bool:
    while time.monotonic() < deadline:
        try:
            if check(addr, timeout_s=2.0) == "SERVING":
                return True
        except grpc.RpcError:
            pass
        time.sleep(0.3)
    return False


def _buf_curl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BUF), "curl", "--protocol", "grpc", "--http2-prior-knowledge", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def check_service(name: str, addr: str) -> list[str]:
    """Problems found reaching one service through reflection (empty when fine)."""
    service, rpc = TARGETS[name]
    problems: list[str] = []
    listed = _buf_curl("--list-methods", f"http://{addr}")
    if listed.returncode != 0 or f"{service}/{rpc}" not in listed.stdout:
        problems.append(f"{name}: --list-methods did not list {service}/{rpc}: {listed.stderr}")
    called = _buf_curl("-d", json.dumps({"app_id": "demo"}), f"http://{addr}/{service}/{rpc}")
    if not _answered(called, rpc):
        answer = called.stdout + called.stderr
        problems.append(
            f"{name}: {rpc} answered neither JSON nor UNIMPLEMENTED naming the RPC: {answer!r}"
        )
    return problems


def _json(text: str) -> object:
    try:
        return json.loads(text) if text.strip() else None
    except json.JSONDecodeError:
        return None


def _answered(called: subprocess.CompletedProcess[str], rpc: str) -> bool:
    """The service itself answered: a JSON response, UNIMPLEMENTED naming the RPC (a
    service still being built), or a gRPC error status with its message (the RPC ran and
    refused the probe's minimal request, e.g. INVALID_ARGUMENT naming a required field),
    as opposed to a transport or reflection failure."""
    body = _json(called.stdout)
    if called.returncode == 0:
        return isinstance(body, dict)
    body = body if isinstance(body, dict) else _json(called.stderr)
    answer = called.stdout + called.stderr
    if "unimplemented" in answer.lower() and rpc in answer:
        return True
    return (
        isinstance(body, dict)
        and body.get("code") not in (None, "unavailable", "unknown", "internal")
        and bool(body.get("message"))
    )


def main() -> int:
    """Start the platform, check each service with buf curl, stop it; 0 when all pass."""
    if not BUF.exists():
        print(f"buf not found at {BUF}: run `npm ci` first", file=sys.stderr)
        return 1
    ports = {name: _free_port() for name in TARGETS}
    with tempfile.TemporaryDirectory() as var_dir:
        command = [sys.executable, "-m", "pushwarden.runtime.supervisor", "--var-dir", var_dir]
        for name, port in ports.items():
            command += ["--port", f"{name}={port}"]
        # The fake providers delivery sends to, on free ports too (not make run's).
        for fake in ("fake-apns", "fake-fcm"):
            command += ["--port", f"{fake}={_free_port()}"]
        log_path = Path(var_dir) / "supervisor.log"
        log = log_path.open("w")
        supervisor = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ)
        )
        problems: list[str] = []
        try:
            deadline = time.monotonic() + 60
            for name, port in ports.items():
                addr = f"127.0.0.1:{port}"
                if not _wait_serving(addr, deadline):
                    problems.append(f"{name}: not SERVING at {addr} within 60 s")
                    continue
                problems += check_service(name, addr)
        finally:
            supervisor.send_signal(signal.SIGTERM)
            code = supervisor.wait(timeout=60)
            log.close()
            if code != 0:
                tail = log_path.read_text().splitlines()[-40:]
                problems.append(
                    f"supervisor exited {code} after SIGTERM; its last lines:\n" + "\n".join(tail)
                )
    for problem in problems:
        print(problem, file=sys.stderr)
    if not problems:
        print(f"buf curl reached {', '.join(TARGETS)} through reflection")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
