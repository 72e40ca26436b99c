"""`make run`'s supervisor, run as its own command: all four services reach SERVING,
a signal stops them all with exit 0 and no process left, and a child that dies takes
the platform down with a non-zero exit. With the provider sandbox: the fake APNs and FCM
start before delivery, delivery gets demo credentials for them, and a push delivered
through the platform reaches each fake; real credentials switch the fakes off."""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import socket
import ssl
import stat
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import grpc
import pytest

from pushwarden.common.v1 import content_pb2, types_pb2
from pushwarden.consent.v1 import consent_pb2_grpc
from pushwarden.consent.v1 import messages_pb2 as consent_messages
from pushwarden.consent.v1 import resources_pb2 as consent_resources
from pushwarden.delivery.v1 import delivery_pb2_grpc
from pushwarden.delivery.v1 import messages_pb2 as delivery_messages
from pushwarden.delivery.v1 import resources_pb2 as delivery_resources
from pushwarden.runtime.config import ConfigError
from pushwarden.runtime.healthprobe import check
from pushwarden.runtime.supervisor import (
    CHILDREN,
    CREDENTIALS_VARIABLE,
    PSEUDONYM_KEY_FILE,
    PSEUDONYM_KEY_VARIABLE,
    build_plan,
    child_environment,
    next_steps,
    plan_children,
    probe_credentials,
    pseudonym_key,
)
from pushwarden.runtime.tlsgen import generate_test_pki

SERVICES = ("consent", "segmentation", "delivery", "scheduler")
FAKES = ("fake-apns", "fake-fcm")
SERVING_DEADLINE_S = 30.0
STOP_DEADLINE_S = 30.0
STARTED = re.compile(
    r"^supervisor\s+\| started (\w+) pid=(\d+) listening on ([\d.]+:\d+)( with TLS)?$"
)


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
    def __call__(
        self, extra_env: Mapping[str, str] | None = None, *, ports_on_command_line: bool = True
    ) -> tuple[Run, list[int]]: ...


@pytest.fixture
def start_supervisor(tmp_path: Path) -> Iterator[StartSupervisor]:
    runs: list[Run] = []

    def start(
        extra_env: Mapping[str, str] | None = None, *, ports_on_command_line: bool = True
    ) -> tuple[Run, list[int]]:
        ports = free_ports(len(SERVICES) + len(FAKES))
        argv = [sys.executable, "-m", "pushwarden.runtime.supervisor"]
        argv += ["--var-dir", str(tmp_path / "var"), "--stop-timeout", "20"]
        # The fake providers never take their fixed ports in a test.
        for name, port in zip(FAKES, ports[len(SERVICES) :], strict=True):
            argv += ["--port", f"{name}={port}"]
        ports = ports[: len(SERVICES)]
        if ports_on_command_line:
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
        "fake-apns": 50061,
        "fake-fcm": 50062,
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


def test_the_plan_honours_each_services_port_and_host_variables(tmp_path: Path) -> None:
    environ = {
        "PUSHWARDEN_CONSENT_PORT": "41901",
        "PUSHWARDEN_DELIVERY_HOST": "0.0.0.0",
        "PUSHWARDEN_DELIVERY_PORT": "41904",
        "PUSHWARDEN_SCHEDULER_PORT": "41903",
    }
    plan = build_plan(tmp_path / "var", ports={"scheduler": 41999}, environ=environ)
    # The command line wins over the variable; the variable over the default.
    assert dict(plan.ports) == {
        "consent": 41901,
        "segmentation": 50052,
        "delivery": 41904,
        "scheduler": 41999,
        "fake-apns": 50061,
        "fake-fcm": 50062,
    }
    assert plan.bind("delivery") == "0.0.0.0:41904"
    assert plan.addr("delivery") == "127.0.0.1:41904"  # a wildcard is no address to call
    scheduler = next(child for child in CHILDREN if child.name == "scheduler")
    env = child_environment(scheduler, plan, environ)
    assert env["PUSHWARDEN_SCHEDULER_PORT"] == "41999"
    assert env["PUSHWARDEN_SCHEDULER_CONSENT_ADDR"] == "127.0.0.1:41901"
    assert env["PUSHWARDEN_SCHEDULER_DELIVERY_ADDR"] == "127.0.0.1:41904"
    delivery = next(child for child in CHILDREN if child.name == "delivery")
    assert child_environment(delivery, plan, environ)["PUSHWARDEN_DELIVERY_HOST"] == "0.0.0.0"
    # Segmentation follows consent's change feed: it is told where consent listens.
    segmentation = next(child for child in CHILDREN if child.name == "segmentation")
    seg_env = child_environment(segmentation, plan, environ)
    assert seg_env["PUSHWARDEN_SEGMENTATION_CONSENT_ADDR"] == "127.0.0.1:41901"


@pytest.mark.parametrize("value", ["0", "http", "70000"])
def test_a_port_variable_make_run_cannot_use_is_named(tmp_path: Path, value: str) -> None:
    with pytest.raises(ConfigError, match=r"^PUSHWARDEN_SEGMENTATION_PORT: "):
        build_plan(tmp_path / "var", environ={"PUSHWARDEN_SEGMENTATION_PORT": value})


def test_two_services_on_one_port_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="consent and delivery would both listen on port 41950"):
        build_plan(
            tmp_path / "var",
            environ={"PUSHWARDEN_CONSENT_PORT": "41950", "PUSHWARDEN_DELIVERY_PORT": "41950"},
        )


def test_the_plan_says_what_it_created_and_leaves_a_supplied_key_alone(tmp_path: Path) -> None:
    first = build_plan(tmp_path / "var")
    assert first.created == (
        tmp_path / "var" / PSEUDONYM_KEY_FILE,
        tmp_path / "var" / "sandbox" / "credentials.toml",  # delivery's demo credentials
    )
    again = build_plan(tmp_path / "var")
    assert again.created == ()
    assert again.pseudonym_key == first.pseudonym_key
    supplied = build_plan(tmp_path / "elsewhere", environ={PSEUDONYM_KEY_VARIABLE: "k" * 64})
    assert supplied.pseudonym_key is None
    assert not (tmp_path / "elsewhere" / PSEUDONYM_KEY_FILE).exists()
    consent = next(child for child in CHILDREN if child.name == "consent")
    assert PSEUDONYM_KEY_VARIABLE not in child_environment(consent, supplied, {})


def test_the_probe_speaks_tls_to_a_service_with_tls_only(tmp_path: Path) -> None:
    pki = generate_test_pki(tmp_path / "pki")
    assert probe_credentials("consent", {}) is None
    tls_env = {
        "PUSHWARDEN_CONSENT_TLS_CERT": str(pki.server_cert),
        "PUSHWARDEN_CONSENT_TLS_KEY": str(pki.server_key),
        "PUSHWARDEN_CONSENT_PEER_CA": str(pki.ca_cert),
    }
    assert probe_credentials("consent", tls_env) is not None
    # Another service's TLS settings say nothing about consent.
    other = {k.replace("CONSENT", "DELIVERY"): v for k, v in tls_env.items()}
    assert probe_credentials("consent", other) is None


def test_next_steps_follow_consents_tls_and_auth(tmp_path: Path) -> None:
    plan = build_plan(tmp_path / "var", environ={"PUSHWARDEN_CONSENT_PORT": "41951"})
    plain = "\n".join(next_steps(plan, {}))
    assert "--http2-prior-knowledge" in plain
    assert "http://127.0.0.1:41951/pushwarden.consent.v1.ConsentService/ListCategories" in plain
    assert 'grpc.insecure_channel("127.0.0.1:41951")' in plain
    assert "authorization" not in plain
    secured = "\n".join(
        next_steps(
            plan,
            {
                "PUSHWARDEN_CONSENT_TLS_CERT": "/etc/pw/cert.pem",
                "PUSHWARDEN_CONSENT_PEER_CA": "/etc/pw/ca.pem",
                "PUSHWARDEN_CONSENT_AUTH_TOKENS_FILE": "/etc/pw/tokens.toml",
            },
        )
    )
    assert "--cacert /etc/pw/ca.pem" in secured
    assert "https://127.0.0.1:41951/" in secured
    assert "-H 'authorization: Bearer <token>'" in secured
    assert 'metadata=[("authorization", "Bearer <token>")]' in secured
    assert "--http2-prior-knowledge" not in secured


@pytest.mark.slow
def test_tls_and_port_variables_are_honoured_by_the_probe_the_lines_and_the_hints(
    start_supervisor: StartSupervisor, tmp_path: Path
) -> None:
    pki = generate_test_pki(tmp_path / "pki")
    ports = dict(zip(SERVICES, free_ports(len(SERVICES)), strict=True))
    env: dict[str, str] = {}
    for name, port in ports.items():
        prefix = f"PUSHWARDEN_{name.upper()}_"
        env |= {
            f"{prefix}PORT": str(port),
            f"{prefix}TLS_CERT": str(pki.server_cert),
            f"{prefix}TLS_KEY": str(pki.server_key),
            f"{prefix}PEER_CA": str(pki.ca_cert),
        }
    run, _ = start_supervisor(env, ports_on_command_line=False)
    # The first lines say what the run created and where each service listens.
    run.wait_for(rf"^supervisor\s+\| created .*{PSEUDONYM_KEY_FILE}: consent's pseudonym key", 20)
    children = run.started()
    assert {name: children[name][1] for name in SERVICES} == {
        name: f"127.0.0.1:{port}" for name, port in ports.items()
    }
    assert all(line.endswith(" with TLS") for line in run.seen if STARTED.match(line))
    # The readiness probe reached every service over TLS.
    run.wait_for(r"^supervisor\s+\| all 4 services SERVING after [\d.]+ s$", SERVING_DEADLINE_S)
    for name, port in ports.items():
        assert check(f"127.0.0.1:{port}", ca_file=pki.ca_cert) == "SERVING", name
    hint = run.wait_for(r"or from Python: \.venv/bin/python -c '(.*)'$", 5).group(1)
    assert f'open("{pki.ca_cert}", "rb")' in hint
    # The printed Python line reaches consent over TLS (whatever ListCategories answers).
    tried = subprocess.run(
        [sys.executable, "-c", hint], capture_output=True, text=True, timeout=30, check=False
    )
    assert "UNAVAILABLE" not in tried.stderr, tried.stderr
    assert "StatusCode." not in tried.stderr or "UNIMPLEMENTED" in tried.stderr, tried.stderr
    run.process.send_signal(signal.SIGTERM)
    assert run.process.wait(timeout=STOP_DEADLINE_S) == 0, run.output()


def test_a_misspelt_service_prefix_stops_make_run_before_anything_starts(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PUSHWARDEN_")}
    result = subprocess.run(
        [sys.executable, "-m", "pushwarden.runtime.supervisor", "--var-dir", str(tmp_path)],
        env={**env, "PUSHWARDEN_CONSNET_PORT": "50061"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr == (
        "PUSHWARDEN_CONSNET_PORT: unknown setting: CONSNET looks like a misspelling of the "
        "service name CONSENT (did you mean PUSHWARDEN_CONSENT_PORT?)\n"
    )
    assert "started" not in result.stdout
    with pytest.raises(ConfigError, match=r"^PUSHWARDEN_SHEDULER_DELIVERY_ADDR: .* SCHEDULER"):
        build_plan(tmp_path, environ={"PUSHWARDEN_SHEDULER_DELIVERY_ADDR": "x:1"})


APP = "shop"
IOS_TOKEN = "ab" * 32
ANDROID_TOKEN = "fcm-token-make-run"
SHIPPED = "Order 1 is on its way"


def control(port: int, ca_file: Path, query: str) -> dict[str, int]:
    """GET a fake's control route (``count?token=...``) over TLS, trusting its CA."""
    context = ssl.create_default_context(cafile=str(ca_file))
    url = f"https://127.0.0.1:{port}/_sandbox/{query}"
    with urllib.request.urlopen(url, context=context, timeout=5) as answer:
        body: dict[str, int] = json.loads(answer.read())
        return body


@pytest.mark.slow
def test_make_run_starts_the_fakes_and_a_delivered_push_reaches_them(tmp_path: Path) -> None:
    names = (*SERVICES, *FAKES)
    ports = dict(zip(names, free_ports(len(names)), strict=True))
    var = tmp_path / "var"
    argv = [sys.executable, "-m", "pushwarden.runtime.supervisor", "--var-dir", str(var)]
    for name, port in ports.items():
        argv += ["--port", f"{name}={port}"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PUSHWARDEN_")}
    env = {k: v for k, v in env.items() if k not in ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE")}
    run = Run(
        subprocess.Popen(
            argv,
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
    )
    try:
        # The first lines say the fakes run and where delivery's demo credentials are.
        line = run.wait_for(r"^supervisor\s+\| sandbox: fake APNs on ", 20).string
        assert f"127.0.0.1:{ports['fake-apns']}" in line
        assert f"127.0.0.1:{ports['fake-fcm']}" in line
        assert str(var.resolve() / "sandbox" / "credentials.toml") in line
        assert CREDENTIALS_VARIABLE in line
        started = run.wait_for(r"started fake-apns pid=(\d+) listening on", 20)
        fake_pids = [int(started.group(1))]
        started = run.wait_for(r"started fake-fcm pid=(\d+) listening on", 20)
        fake_pids.append(int(started.group(1)))
        children = run.started()
        run.wait_for(r"^supervisor\s+\| all 4 services SERVING", SERVING_DEADLINE_S)
        deadline = time.monotonic() + SERVING_DEADLINE_S
        for name in SERVICES:
            wait_until_serving(children[name][1], deadline)
        # The fakes announced themselves (their JSON line) before delivery started.
        output = run.output()
        assert output.index('"provider": "apns"') < output.index("started delivery pid=")
        assert output.index('"provider": "fcm"') < output.index("started delivery pid=")
        hint = run.wait_for(r"pushes delivered for app shop land at the fake APNs", 5).string
        assert f"https://127.0.0.1:{ports['fake-apns']}/_sandbox/requests" in hint

        # What the README shows: a category, a device, a Deliver; the push at the fake.
        with grpc.insecure_channel(f"127.0.0.1:{ports['consent']}") as channel:
            consent = consent_pb2_grpc.ConsentServiceStub(channel)
            consent.DefineCategory(
                consent_messages.DefineCategoryRequest(
                    app_id=APP,
                    category=consent_resources.Category(
                        category_id="orders",
                        kind=types_pb2.CATEGORY_KIND_TRANSACTIONAL,
                        default_state=consent_resources.DEFAULT_STATE_OPTED_IN,
                    ),
                ),
                timeout=10,
            )
            for platform, provider, token in (
                (types_pb2.PLATFORM_IOS, types_pb2.PROVIDER_APNS, IOS_TOKEN),
                (types_pb2.PLATFORM_ANDROID, types_pb2.PROVIDER_FCM, ANDROID_TOKEN),
            ):
                consent.RegisterDevice(
                    consent_messages.RegisterDeviceRequest(
                        app_id=APP,
                        device=consent_resources.Device(
                            user_id="ada",
                            platform=platform,
                            provider=provider,
                            token=token,
                            time_zone="Europe/Paris",
                            permission=types_pb2.PERMISSION_STATE_GRANTED,
                        ),
                    ),
                    timeout=10,
                )
        with grpc.insecure_channel(f"127.0.0.1:{ports['delivery']}") as channel:
            delivery = delivery_pb2_grpc.DeliveryServiceStub(channel)
            answer = delivery.Deliver(
                delivery_messages.DeliverRequest(
                    app_id=APP,
                    sends=[
                        delivery_resources.Send(
                            send_id="order-1-shipped",
                            user_id="ada",
                            category_id="orders",
                            content=content_pb2.Content(
                                title="Shipped", body="Order 1 is on its way"
                            ),
                        )
                    ],
                ),
                timeout=10,
            )
            assert answer.results[0].status == types_pb2.ITEM_STATUS_APPLIED
            ca_file = var / "sandbox" / "sandbox-ca.pem"
            end = time.monotonic() + 60
            while True:
                at_apns = control(ports["fake-apns"], ca_file, f"count?token={IOS_TOKEN}")
                at_fcm = control(ports["fake-fcm"], ca_file, f"count?token={ANDROID_TOKEN}")
                if at_apns["count"] >= 1 and at_fcm["count"] >= 1:
                    break
                assert time.monotonic() < end, f"no push at the fakes:\n{run.output()}"
                time.sleep(0.2)
            assert (at_apns["count"], at_fcm["count"]) == (1, 1)
            record = delivery.GetDelivery(
                delivery_messages.GetDeliveryRequest(app_id=APP, send_id="order-1-shipped"),
                timeout=10,
            ).delivery
            end = time.monotonic() + 30
            while record.status != delivery_resources.DELIVERY_STATUS_DELIVERED:
                assert time.monotonic() < end, record
                time.sleep(0.2)
                record = delivery.GetDelivery(
                    delivery_messages.GetDeliveryRequest(app_id=APP, send_id="order-1-shipped"),
                    timeout=10,
                ).delivery
            assert (
                sorted(d.status for d in record.devices)
                == [delivery_resources.DELIVERY_STATUS_DELIVERED] * 2
            )
        [request] = json.loads(
            urllib.request.urlopen(
                f"https://127.0.0.1:{ports['fake-apns']}/_sandbox/requests?token={IOS_TOKEN}",
                context=ssl.create_default_context(cafile=str(ca_file)),
                timeout=5,
            ).read()
        )
        assert SHIPPED in request["body"]

        run.process.send_signal(signal.SIGTERM)
        assert run.process.wait(timeout=STOP_DEADLINE_S) == 0, run.output()
        assert_gone([pid for pid, _ in children.values()] + fake_pids)
    finally:
        if run.process.poll() is None:
            run.process.kill()
            run.process.wait()


def test_real_credentials_switch_the_sandbox_off(tmp_path: Path) -> None:
    sandboxed = build_plan(tmp_path / "var")
    assert sandboxed.sandbox
    assert [c.name for c in plan_children(sandboxed)] == [c.name for c in CHILDREN]
    delivery = next(child for child in CHILDREN if child.name == "delivery")
    env = child_environment(delivery, sandboxed, {})
    credentials = tmp_path / "var" / "sandbox" / "credentials.toml"
    assert env[CREDENTIALS_VARIABLE] == str(credentials.resolve())
    assert env["SSL_CERT_FILE"] == str((tmp_path / "var" / "sandbox" / "sandbox-ca.pem").resolve())
    text = credentials.read_text()
    assert "[apps.shop.apns]" in text
    assert 'endpoint = "https://127.0.0.1:50061"' in text
    assert 'endpoint = "https://127.0.0.1:50062"' in text

    real = {CREDENTIALS_VARIABLE: "/etc/pushwarden/credentials.toml"}
    plan = build_plan(tmp_path / "real", environ=real)
    assert not plan.sandbox
    assert "fake-apns" not in plan.ports
    assert "fake-fcm" not in plan.ports
    expected = ["consent", "segmentation", "delivery", "scheduler"]
    assert [c.name for c in plan_children(plan)] == expected
    env = child_environment(delivery, plan, real)
    assert env[CREDENTIALS_VARIABLE] == "/etc/pushwarden/credentials.toml"
    assert "SSL_CERT_FILE" not in env
    assert not (tmp_path / "real" / "sandbox").exists()
    assert "fake APNs" not in "\n".join(next_steps(plan, {}))


@pytest.mark.slow
def test_a_fake_that_cannot_listen_stops_make_run_before_delivery_starts(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        names = (*SERVICES, "fake-fcm")
        argv = [sys.executable, "-m", "pushwarden.runtime.supervisor"]
        argv += ["--var-dir", str(tmp_path / "var"), "--stop-timeout", "20"]
        argv += ["--port", f"fake-apns={taken.getsockname()[1]}"]
        for name, port in zip(names, free_ports(len(names)), strict=True):
            argv += ["--port", f"{name}={port}"]
        env = {k: v for k, v in os.environ.items() if not k.startswith("PUSHWARDEN_")}
        done = subprocess.run(
            argv, env=env, capture_output=True, text=True, timeout=120, check=False
        )
    assert done.returncode == 1, done.stdout
    assert "fake-apns exited unexpectedly with code 1" in done.stdout
    assert "address already in use" in done.stdout
    assert "started delivery" not in done.stdout
