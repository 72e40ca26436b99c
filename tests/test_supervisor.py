"""`make run`'s supervisor, run as its own command: all four services reach SERVING,
a signal stops them all with exit 0 and no process left, and a child that dies takes
the platform down with a non-zero exit."""

from __future__ import annotations

import os
import queue
import re
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import grpc
import pytest

from pushwarden.runtime.healthprobe import check
from pushwarden.runtime.supervisor import (
    CHILDREN,
    PSEUDONYM_KEY_FILE,
    build_plan,
    child_environment,
    pseudonym_key,
)

SERVICES = ("consent", "segmentation", "delivery", "scheduler")
SERVING_DEADLINE_S = 30.0
STOP_DEADLINE_S = 30.0
STARTED = re.compile(r"^supervisor\s+\| started (\w+) pid=(\d+) listening on ([\d.]+:\d+)$")


def free_ports(count: int) -> list[int]:
    """Ports that were free a moment ago (bound to port 0, then released)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


@dataclass
class Run:
    """A supervisor process and the lines it printed so far."""

    process: subprocess.Popen[str]
    lines: queue.Queue[str] = field(default_factory=queue.Queue)
    seen: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line.rstrip("\n"))

    def wait_for(self, pattern: str, deadline_s: float) -> re.Match[str]:
        """The first line (seen or to come) matching ``pattern``."""
        regex = re.compile(pattern)
        for line in self.seen:
            if match := regex.search(line):
                return match
        end = time.monotonic() + deadline_s
        while (left := end - time.monotonic()) > 0:
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                break
            self.seen.append(line)
            if match := regex.search(line):
                return match
        raise AssertionError(f"no line matching {pattern!r}; output:\n" + self.output())

    def started(self) -> dict[str, tuple[int, str]]:
        """``{service: (pid, address)}`` from the supervisor's start lines."""
        for name in SERVICES:
            self.wait_for(rf"started {name} pid=", 20)
        found = {}
        for line in self.seen:
            if match := STARTED.match(line):
                found[match.group(1)] = (int(match.group(2)), match.group(3))
        return found

    def output(self) -> str:
        while not self.lines.empty():
            self.seen.append(self.lines.get_nowait())
        return "\n".join(self.seen)


class StartSupervisor(Protocol):
    def __call__(self, extra_env: Mapping[str, str] | None = None) -> tuple[Run, list[int]]: ...


@pytest.fixture
def start_supervisor(tmp_path: Path) -> Iterator[StartSupervisor]:
    runs: list[Run] = []

    def start(extra_env: Mapping[str, str] | None = None) -> tuple[Run, list[int]]:
        ports = free_ports(len(SERVICES))
        argv = [sys.executable, "-m", "pushwarden.runtime.supervisor"]
        argv += ["--var-dir", str(tmp_path / "var"), "--stop-timeout", "20"]
        for name, port in zip(SERVICES, ports, strict=True):
            argv += ["--port", f"{name}={port}"]
        env = {k: v for k, v in os.environ.items() if not k.startswith("PUSHWARDEN_")}
        run = Run(
            subprocess.Popen(
                argv,
                cwd=tmp_path,
                env={**env, **(extra_env or {})},
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
        runs.append(run)
        return run, ports

    yield start
    for run in runs:  # a failed test must not leave a platform running
        if run.process.poll() is None:
            run.process.kill()
            run.process.wait()


def wait_until_serving(address: str, deadline: float) -> None:
    while True:
        try:
            if check(address, "", timeout_s=1.0) == "SERVING":
                return
        except grpc.RpcError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"{address} not SERVING within {SERVING_DEADLINE_S} s")
        time.sleep(0.2)


def assert_gone(pids: list[int]) -> None:
    left = [pid for pid in pids if Path(f"/proc/{pid}").exists()]
    assert not left, f"processes left behind: {left}"


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_all_services_serve_and_a_signal_stops_them_all_with_exit_0(
    start_supervisor: StartSupervisor, signum: signal.Signals
) -> None:
    run, ports = start_supervisor()
    children = run.started()
    assert sorted(children) == sorted(SERVICES)
    assert [children[name][1] for name in SERVICES] == [f"127.0.0.1:{p}" for p in ports]

    deadline = time.monotonic() + SERVING_DEADLINE_S
    for name in SERVICES:
        wait_until_serving(children[name][1], deadline)
    run.wait_for(r"^supervisor\s+\| all 4 services SERVING after [\d.]+ s$", SERVING_DEADLINE_S)
    # Health of each Pushwarden service by its own name, too.
    assert check(children["consent"][1], "pushwarden.consent.v1.ConsentService") == "SERVING"

    run.process.send_signal(signum)
    if signum == signal.SIGTERM:
        # `timeout` and some process managers signal the process and its group at once:
        # a repeated SIGTERM must not turn the graceful stop into a kill.
        run.process.send_signal(signum)
    assert run.process.wait(timeout=STOP_DEADLINE_S) == 0, run.output()
    assert_gone([pid for pid, _ in children.values()])
    output = run.output()
    for name in SERVICES:
        assert re.search(rf"^{name}\s+\| ", output, re.MULTILINE), f"no line from {name}"
    assert "exit 0" in output


@pytest.mark.slow
def test_a_child_that_dies_stops_the_others_and_fails_the_supervisor(
    start_supervisor: StartSupervisor,
) -> None:
    # A bad setting passed through the environment makes delivery exit at start.
    run, _ = start_supervisor({"PUSHWARDEN_DELIVERY_LOG_LEVEL": "LOUD"})
    children = run.started()
    # The others may still be starting when delivery fails: allow for both phases.
    assert run.process.wait(timeout=SERVING_DEADLINE_S + STOP_DEADLINE_S) == 1, run.output()
    assert_gone([pid for pid, _ in children.values()])
    output = run.output()
    assert re.search(r"^delivery\s+\| PUSHWARDEN_DELIVERY_LOG_LEVEL: 'LOUD'", output, re.M)
    assert "delivery exited unexpectedly with code 2" in output


def test_the_pseudonym_key_is_created_once_owner_only_and_reused(tmp_path: Path) -> None:
    first = pseudonym_key(tmp_path)
    assert len(first) == 64
    assert stat.S_IMODE((tmp_path / PSEUDONYM_KEY_FILE).stat().st_mode) == 0o600
    assert pseudonym_key(tmp_path) == first
    other = tmp_path / "other"
    other.mkdir()
    assert pseudonym_key(other) != first


def test_the_plan_keeps_the_port_layout_and_wires_peers(tmp_path: Path) -> None:
    default = build_plan(tmp_path / "var")
    assert dict(default.ports) == {
        "consent": 50051,
        "segmentation": 50052,
        "scheduler": 50053,
        "delivery": 50054,
    }
    plan = build_plan(tmp_path / "var", port_base=41000, ports={"delivery": 45000})
    assert plan.ports["scheduler"] == 41002
    assert plan.ports["delivery"] == 45000
    scheduler = next(child for child in CHILDREN if child.name == "scheduler")
    inherited = {
        "PUSHWARDEN_SCHEDULER_DATABASE_URL": "sqlite:///elsewhere.db",
        "PUSHWARDEN_SCHEDULER_PORT": "1",
    }
    env = child_environment(scheduler, plan, inherited)
    # The environment may move the database but not the ports peers rely on.
    assert env["PUSHWARDEN_SCHEDULER_DATABASE_URL"] == "sqlite:///elsewhere.db"
    assert env["PUSHWARDEN_SCHEDULER_PORT"] == "41002"
    assert env["PUSHWARDEN_SCHEDULER_DELIVERY_ADDR"] == "127.0.0.1:45000"
    consent = next(child for child in CHILDREN if child.name == "consent")
    assert child_environment(consent, plan, {})["PUSHWARDEN_CONSENT_PSEUDONYM_KEY"] == (
        plan.pseudonym_key
    )
    with pytest.raises(ValueError, match="unknown child"):
        build_plan(tmp_path / "var", ports={"billing": 1})
