"""The platform the CLI is driven against: ``make run``'s supervisor as a process (the
four services and the fake APNs and FCM, each a process of its own), on free ports, with
SQLite files under a temporary var directory, or with ``PUSHWARDEN_TEST_DB=postgres``
a throwaway PostgreSQL database per service. One platform serves a test module; the CLI
runs as its console script in a subprocess, the way an operator runs it."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import re
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from pushwarden.runtime.testing import (
    postgres_requested,
    postgres_unavailable_reason,
    throwaway_postgres_database,
)

SERVICES = ("consent", "segmentation", "scheduler", "delivery")
FAKES = ("fake-apns", "fake-fcm")
SERVING_DEADLINE_S = 60.0
CLI = Path(sys.executable).with_name("pushwarden")
APP = "shop"  # the app the sandbox's demo credentials deliver for


ROOT = Path(__file__).resolve().parents[3]


def readme_files() -> list[str]:
    """The YAML files the README's CLI section shows: the set-up, then a campaign."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    start = readme.index("\n## The operator CLI\n")
    section = readme[start : readme.index("\n## ", start + 1)]
    return re.findall(r"^```yaml\n(.*?)^```$", section, re.MULTILINE | re.DOTALL)


def free_ports(count: int) -> list[int]:
    """Ports that were free a moment ago."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def clean_environment() -> dict[str, str]:
    """The test's environment without any PUSHWARDEN_* variable."""
    return {k: v for k, v in os.environ.items() if not k.startswith("PUSHWARDEN_")}


@dataclass
class Platform:
    """A running supervisor: where each service and fake listens, and its output."""

    process: subprocess.Popen[str]
    addresses: dict[str, str]
    fake_ports: dict[str, int]
    var_dir: Path
    lines: queue.Queue[str] = field(default_factory=queue.Queue)
    seen: list[str] = field(default_factory=list)

    def start_reading(self) -> None:
        def read() -> None:
            assert self.process.stdout is not None
            for line in self.process.stdout:
                self.lines.put(line.rstrip("\n"))

        threading.Thread(target=read, daemon=True).start()

    def wait_for(self, text: str, deadline_s: float) -> None:
        """Until the supervisor printed a line containing ``text``."""
        end = time.monotonic() + deadline_s
        while not any(text in line for line in self.seen):
            left = end - time.monotonic()
            if left <= 0 or self.process.poll() is not None:
                raise AssertionError(f"no {text!r} from the supervisor:\n" + self.output())
            with contextlib.suppress(queue.Empty):
                self.seen.append(self.lines.get(timeout=min(left, 0.5)))

    def output(self) -> str:
        while not self.lines.empty():
            self.seen.append(self.lines.get_nowait())
        return "\n".join(self.seen[-200:])

    def cli_env(self, **extra: str) -> dict[str, str]:
        """The CLI's environment: PUSHWARDEN_CLI_* naming this platform."""
        env = clean_environment()
        env |= {f"PUSHWARDEN_CLI_{s.upper()}_ADDR": a for s, a in self.addresses.items()}
        env |= {"PUSHWARDEN_CLI_APP": APP, "COLUMNS": "160"}
        return env | extra

    def cli(self, *args: str, stdin: str | None = None, **env: str) -> Result:
        """Run ``pushwarden ARGS`` against this platform."""
        return run_cli(args, self.cli_env(**env), stdin=stdin)

    def fake_apns_requests(self, token: str) -> list[dict[str, Any]]:
        """What the fake APNs received for a device token."""
        context = ssl.create_default_context(cafile=str(self.var_dir / "sandbox/sandbox-ca.pem"))
        url = f"https://127.0.0.1:{self.fake_ports['fake-apns']}/_sandbox/requests?token={token}"
        with urllib.request.urlopen(url, context=context, timeout=5) as answer:
            found: list[dict[str, Any]] = json.loads(answer.read())
        return found


@dataclass(frozen=True)
class Result:
    """A finished CLI run."""

    code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        assert self.code == 0, self.stderr
        return json.loads(self.stdout)

    def one_error_line(self) -> str:
        """The run failed with exactly one line on stderr (no traceback); returns it."""
        assert self.code != 0, self.stdout
        lines = self.stderr.strip().splitlines()
        assert len(lines) == 1, self.stderr
        assert lines[0].startswith("pushwarden: "), lines[0]
        return lines[0]


def run_cli(args: Sequence[str], env: dict[str, str], stdin: str | None = None) -> Result:
    """Run the installed console script."""
    done = subprocess.run(
        [str(CLI), *args],
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    return Result(done.returncode, done.stdout, done.stderr)


def database_urls(
    stack: contextlib.ExitStack, services: Sequence[str] = SERVICES
) -> dict[str, str]:
    """PUSHWARDEN_<SERVICE>_DATABASE_URL of a throwaway PostgreSQL database per service
    when the tests run on PostgreSQL; none (SQLite files under var/) otherwise."""
    if not postgres_requested():
        return {}
    reason = postgres_unavailable_reason()
    if reason is not None:
        pytest.fail(f"PostgreSQL unavailable: {reason}", pytrace=False)
    return {
        f"PUSHWARDEN_{service.upper()}_DATABASE_URL": stack.enter_context(
            throwaway_postgres_database(f"pw_cli_{service}_")
        )
        for service in services
    }


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    """The whole platform under ``make run``'s supervisor, for one test module."""
    home = tmp_path_factory.mktemp("platform")
    ports = free_ports(len(SERVICES) + len(FAKES))
    named = dict(zip((*SERVICES, *FAKES), ports, strict=True))
    argv = [sys.executable, "-m", "pushwarden.runtime.supervisor", "--var-dir", str(home / "var")]
    argv += ["--stop-timeout", "20"]
    for name, port in named.items():
        argv += ["--port", f"{name}={port}"]
    with contextlib.ExitStack() as stack:
        env = clean_environment() | database_urls(stack)
        process = subprocess.Popen(
            argv,
            cwd=home,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        running = Platform(
            process,
            {s: f"127.0.0.1:{named[s]}" for s in SERVICES},
            {f: named[f] for f in FAKES},
            home / "var",
        )
        running.start_reading()
        try:
            running.wait_for("all 4 services SERVING", SERVING_DEADLINE_S)
            yield running
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=40)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
