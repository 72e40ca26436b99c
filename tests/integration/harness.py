"""The platform as docker-compose.yml describes it, run as local processes.

:func:`load_compose` reads docker-compose.yml merged with the sandbox override
(deploy/compose.sandbox.yml), with the profile ``sandbox`` on, and :class:`ComposePlatform`
starts every service of it that has a build (the four Pushwarden services and the fake
providers) the way compose would:

- the command is the service's ``entrypoint`` (else its Dockerfile's ENTRYPOINT) followed
  by its ``command``, with ``python`` the test's interpreter;
- the environment is the service's ``environment`` with ``${VAR}`` interpolated;
- a service starts once every service of its ``depends_on`` passed its ``healthcheck``,
  which is the compose health check command itself, run here.

What differs between a container and a process on this machine is substituted, and only
that: container ports become free ports on 127.0.0.1 (in ``*_PORT`` variables, ``--port``
arguments, ``host:port`` references to a service and a service's own ``localhost:port``);
wildcard and service-name bind addresses become 127.0.0.1; each database URL that points
at the ``postgres`` service becomes a SQLite file in the run's directory or a throwaway
PostgreSQL database (``PUSHWARDEN_TEST_DB=postgres``); each mounted volume becomes a
directory of the run, and each file bind-mounted into a service is copied there with the
same substitutions. The suite then adds only test knobs (:data:`TEST_SETTINGS`: the shared
clock file, short poll intervals, text logs).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shlex
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from pushwarden.runtime.clock import FileClock, shift_clock_file
from pushwarden.runtime.testing import throwaway_postgres_database

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILES = (ROOT / "docker-compose.yml", ROOT / "deploy" / "compose.sandbox.yml")
PROFILES = frozenset({"sandbox"})
DATABASE_SERVICE = "postgres"
PUSHWARDEN_SERVICES = ("consent", "segmentation", "delivery", "scheduler")
# What the operator supplies to compose (deploy/compose.env.example), made up per run.
SUPPLIED = ("POSTGRES_PASSWORD", "PUSHWARDEN_CONSENT_PSEUDONYM_KEY")
START_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 15.0
_INTERPOLATION = re.compile(r"\$\{(\w+)(?:(:?[-?])([^}]*))?\}|\$\$")
_ENTRYPOINT = re.compile(r"^\s*ENTRYPOINT\s+(\[.*\])\s*$", re.MULTILINE)
WILDCARDS = ("0.0.0.0", "::", "[::]")

# Test knobs by suffix (PUSHWARDEN_<SERVICE>_<suffix>), set where the service has them:
# the one clock every process reads, and short polls so that a scenario takes seconds.
TEST_SETTINGS: dict[str, dict[str, str]] = {
    "consent": {"FEED_POLL_S": "0.1", "FEED_HEARTBEAT_S": "1", "GRACE_PERIOD_S": "1"},
    "segmentation": {
        "CONSENT_POLL_S": "0.1",
        "STREAM_POLL_S": "0.1",
        "STREAM_HEARTBEAT_S": "1",
        "GRACE_PERIOD_S": "1",
    },
    "delivery": {
        "DISPATCH_POLL_S": "0.05",
        "RETRY_BASE_S": "0.05",
        "RETRY_MAX_S": "0.5",
        "GRACE_PERIOD_S": "1",
    },
    "scheduler": {"DISPATCH_POLL_S": "0.05", "HANDOFF_RETRY_MAX_S": "1", "GRACE_PERIOD_S": "1"},
}


def interpolate(value: str, supplied: Mapping[str, str]) -> str:
    """``value`` as compose passes it, with ``supplied`` as the operator's environment."""

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, operator, default = match.group(1), match.group(2), match.group(3)
        if name in supplied and (supplied[name] or operator not in (":-", ":?")):
            return supplied[name]
        if operator in (":-", "-"):
            return default or ""
        if operator in (":?", "?"):
            raise ValueError(f"compose needs {name}: {default}")
        return ""

    return _INTERPOLATION.sub(replace, value)


def _environment(spec: Mapping[str, Any]) -> dict[str, str]:
    raw = spec.get("environment") or {}
    if isinstance(raw, Mapping):
        return {str(k): "" if v is None else str(v) for k, v in raw.items()}
    return {k: v for k, _, v in (str(item).partition("=") for item in raw)}


def _depends(spec: Mapping[str, Any]) -> dict[str, Any]:
    raw = spec.get("depends_on") or {}
    return dict(raw) if isinstance(raw, Mapping) else {str(name): {} for name in raw}


def _volume_target(entry: Any) -> str:
    if isinstance(entry, Mapping):
        return str(entry["target"])
    return str(entry).split(":")[1]


def merge_service(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """One service of an override file merged into the base as compose does: environment
    and depends_on by key, volumes by target, anything else replaced."""
    merged = dict(base)
    for key, value in override.items():
        if key == "environment":
            merged[key] = _environment(base) | _environment(override)
        elif key == "depends_on":
            merged[key] = _depends(base) | _depends(override)
        elif key == "volumes":
            targets = {_volume_target(v): v for v in base.get("volumes") or []}
            targets |= {_volume_target(v): v for v in value or []}
            merged[key] = list(targets.values())
        else:
            merged[key] = value
    return merged


def load_compose(files: Sequence[Path] = COMPOSE_FILES) -> dict[str, dict[str, Any]]:
    """The services of ``files`` merged in order (later files override earlier ones)."""
    services: dict[str, dict[str, Any]] = {}
    for path in files:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
        for name, spec in (document.get("services") or {}).items():
            services[name] = merge_service(services.get(name, {}), spec or {})
    return services


def active(
    services: Mapping[str, Mapping[str, Any]], profiles: frozenset[str] = PROFILES
) -> list[str]:
    """Services compose starts with ``profiles`` enabled, in file order."""
    return [
        name
        for name, spec in services.items()
        if not spec.get("profiles") or set(spec["profiles"]) & profiles
    ]


def entrypoint(spec: Mapping[str, Any], root: Path = ROOT) -> list[str]:
    """The service's ``entrypoint``, else its Dockerfile's JSON-form ENTRYPOINT."""
    if spec.get("entrypoint"):
        value = spec["entrypoint"]
        return list(value) if isinstance(value, list) else shlex.split(str(value))
    build = spec.get("build") or {}
    dockerfile = root / str(build.get("context", ".")) / str(build["dockerfile"])
    found = _ENTRYPOINT.findall(dockerfile.read_text(encoding="utf-8"))
    if not found:
        raise ValueError(f"{dockerfile}: no ENTRYPOINT in JSON form")
    return [str(part) for part in json.loads(found[-1])]


def command(spec: Mapping[str, Any], root: Path = ROOT) -> list[str]:
    """What the container runs: entrypoint followed by ``command``."""
    raw = spec.get("command") or []
    tail = list(raw) if isinstance(raw, list) else shlex.split(str(raw))
    return entrypoint(spec, root) + [str(part) for part in tail]


def container_ports(spec: Mapping[str, Any]) -> list[int]:
    """The container ports a service publishes."""
    ports = []
    for entry in spec.get("ports") or []:
        if isinstance(entry, Mapping):
            ports.append(int(entry["target"]))
        else:
            ports.append(int(str(entry).split("/", 1)[0].rsplit(":", 1)[-1]))
    return ports


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Process:
    """One started service."""

    name: str
    argv: list[str]
    env: dict[str, str]
    log: Path
    popen: subprocess.Popen[bytes] | None = None

    def tail(self, lines: int = 40) -> str:
        try:
            text = self.log.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


@dataclass
class Localized:
    """How one service's container world maps onto this machine."""

    ports: dict[str, dict[int, int]]  # service -> container port -> host port
    mounts: dict[str, dict[str, Path]]  # service -> container path -> host path
    database_urls: dict[str, str]  # database name at the postgres service -> URL here

    def text(self, service: str, value: str) -> str:
        """``value`` with container paths, hostnames and ports of ``service``'s view
        replaced by this machine's."""
        for target, host in sorted(
            self.mounts.get(service, {}).items(), key=lambda item: -len(item[0])
        ):
            value = value.replace(target, str(host))
        for other, mapping in self.ports.items():
            for inside, outside in mapping.items():
                value = re.sub(rf"\b{re.escape(other)}:{inside}\b", f"127.0.0.1:{outside}", value)
        for inside, outside in self.ports.get(service, {}).items():
            for own in ("localhost", "127.0.0.1", *WILDCARDS):
                value = value.replace(f"{own}:{inside}", f"{own}:{outside}")
        return value

    def argv(self, service: str, argv: Sequence[str]) -> list[str]:
        """A command line localized: ``--port`` and ``--host`` arguments too."""
        result = [self.text(service, part) for part in argv]
        for index in range(1, len(result)):
            flag, value = result[index - 1], result[index]
            if flag == "--port" and value.isdigit():
                result[index] = str(self.ports[service].get(int(value), int(value)))
            elif flag == "--host" and (value in WILDCARDS or value == service):
                result[index] = "127.0.0.1"
        if result and result[0] == "python":
            result[0] = sys.executable
        return result

    def env(self, service: str, environ: Mapping[str, str]) -> dict[str, str]:
        """A service's environment localized: its port, bind address, database URL."""
        prefix = f"PUSHWARDEN_{service.upper()}_"
        result = {}
        for name, value in environ.items():
            if name == f"{prefix}PORT" and value.isdigit():
                value = str(self.ports[service][int(value)])
            elif name == f"{prefix}DATABASE_URL":
                url = urllib.parse.urlsplit(value)
                if url.hostname == DATABASE_SERVICE:
                    value = self.database_urls[url.path.lstrip("/")]
            else:
                value = self.text(service, value)
            result[name] = value
        if service in PUSHWARDEN_SERVICES:
            result[f"{prefix}HOST"] = "127.0.0.1"
        return result


@dataclass
class ComposePlatform:
    """The compose services running as processes under ``directory``.

    ``replicas`` runs more than one process of a service (its peers' ``*_ADDR`` then lists
    every replica, balanced round-robin by the gRPC client); ``settings`` adds variables
    by service.
    """

    directory: Path
    backend: str = "sqlite"
    replicas: Mapping[str, int] = field(default_factory=dict)
    settings: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    services: dict[str, dict[str, Any]] = field(default_factory=load_compose)
    processes: dict[str, list[Process]] = field(default_factory=dict)
    addresses: dict[str, list[str]] = field(default_factory=dict)
    _stack: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)

    @property
    def clock_file(self) -> Path:
        return self.directory / "clock.json"

    def names(self) -> list[str]:
        """The services this platform runs: every active compose service with a build."""
        return [n for n in active(self.services) if self.services[n].get("build")]

    def _database_urls(self) -> dict[str, str]:
        urls: dict[str, str] = {}
        for name in self.names():
            for variable, value in _environment(self.services[name]).items():
                if not variable.endswith("_DATABASE_URL"):
                    continue
                database = urllib.parse.urlsplit(value).path.lstrip("/")
                if self.backend == "sqlite":
                    urls[database] = f"sqlite:///{self.directory / 'db' / f'{database}.db'}"
                else:
                    urls[database] = self._stack.enter_context(
                        throwaway_postgres_database(f"pw_it_{database}_")
                    )
        return urls

    def _localized(self, replica: Mapping[str, int]) -> Localized:
        ports = {
            name: {inside: self._ports[name][replica.get(name, 0)][inside] for inside in m}
            for name, m in ((n, self._ports[n][0]) for n in self.names())
        }
        mounts: dict[str, dict[str, Path]] = {}
        for name in self.names():
            for entry in self.services[name].get("volumes") or []:
                source, target = str(entry).split(":")[:2]
                if source.startswith((".", "/")):
                    host = self.directory / "mounts" / name / target.lstrip("/")
                else:
                    host = self.directory / "volumes" / source
                mounts.setdefault(name, {})[target] = host
        return Localized(ports, mounts, self._urls)

    def _bind_mounts(self, localized: Localized) -> None:
        """Copy every file bind-mounted into a service to where it is mounted, localized."""
        for name in self.names():
            for entry in self.services[name].get("volumes") or []:
                source, target = str(entry).split(":")[:2]
                host = localized.mounts[name][target]
                if source.startswith((".", "/")):
                    text = (ROOT / source).read_text(encoding="utf-8")
                    host.parent.mkdir(parents=True, exist_ok=True)
                    host.write_text(localized.text(name, text), encoding="utf-8")
                else:
                    host.mkdir(parents=True, exist_ok=True)

    def start(self) -> ComposePlatform:
        """Start every service, callees first; returns once all are healthy."""
        self.directory.mkdir(parents=True, exist_ok=True)
        supplied = {name: secrets.token_hex(32) for name in SUPPLIED}
        self._urls = self._database_urls()
        self._ports: dict[str, list[dict[int, int]]] = {
            name: [
                {inside: free_port() for inside in container_ports(self.services[name])}
                for _ in range(self.replicas.get(name, 1))
            ]
            for name in self.names()
        }
        base = self._localized({})
        self._bind_mounts(base)
        for name in self.names():
            self.addresses[name] = [
                f"127.0.0.1:{mapping[port]}"
                for mapping in self._ports[name]
                for port in container_ports(self.services[name])[:1]
            ]
        pending = list(self.names())
        try:
            while pending:
                ready = [
                    name
                    for name in pending
                    if all(
                        dep in self.processes or dep == DATABASE_SERVICE
                        for dep in _depends(self.services[name])
                    )
                ]
                if not ready:
                    raise RuntimeError(f"depends_on cannot be satisfied for {pending}")
                for name in ready:
                    self._launch(name, supplied)
                for name in ready:
                    for index in range(len(self.processes[name])):
                        self._wait_healthy(name, index)
                    pending.remove(name)
        except BaseException:
            self.stop()
            raise
        return self

    def _launch(self, name: str, supplied: Mapping[str, str]) -> None:
        spec = self.services[name]
        self.processes[name] = []
        for index in range(self.replicas.get(name, 1)):
            localized = self._localized({name: index})
            environ = {k: interpolate(v, supplied) for k, v in _environment(spec).items()}
            env = localized.env(name, environ)
            prefix = f"PUSHWARDEN_{name.upper()}_"
            if name in PUSHWARDEN_SERVICES:
                env[f"{prefix}CLOCK_FILE"] = str(self.clock_file)
                env[f"{prefix}LOG_FORMAT"] = "text"
                extra = TEST_SETTINGS.get(name, {}) | dict(self.settings.get(name, {}))
                env |= {f"{prefix}{suffix}": value for suffix, value in extra.items()}
                for variable in list(env):
                    peer = variable.removeprefix(prefix).removesuffix("_ADDR").lower()
                    if variable.endswith("_ADDR") and len(self.addresses.get(peer, [])) > 1:
                        env[variable] = "ipv4:" + ",".join(self.addresses[peer])
            process = Process(
                f"{name}-{index}" if index else name,
                localized.argv(name, command(spec)),
                env,
                self.directory / "logs" / f"{name}-{index}.log",
            )
            process.log.parent.mkdir(parents=True, exist_ok=True)
            inherited = {
                k: v
                for k, v in os.environ.items()
                if not k.startswith("PUSHWARDEN_")
                and k not in ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE")
            }
            with process.log.open("wb") as log:
                process.popen = subprocess.Popen(
                    process.argv,
                    env=inherited | {"PYTHONUNBUFFERED": "1"} | env,
                    cwd=self.directory,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            self.processes[name].append(process)

    def _wait_healthy(self, name: str, index: int) -> None:
        process = self.processes[name][index]
        check = self.services[name].get("healthcheck") or {}
        test = check.get("test")
        localized = self._localized({name: index})
        deadline = time.monotonic() + START_TIMEOUT_S
        port = next(iter(self._ports[name][index].values()))
        while True:
            assert process.popen is not None
            if process.popen.poll() is not None:
                raise RuntimeError(
                    f"{process.name} exited with {process.popen.returncode}:\n{process.tail()}"
                )
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"{process.name} not healthy in time:\n{process.tail()}\n"
                    f"health check: {getattr(self, '_last_check', '')}"
                )
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
                if test is None or self._run_check(name, localized, test):
                    return
            time.sleep(0.1)

    def _run_check(self, name: str, localized: Localized, test: Any) -> bool:
        if isinstance(test, str):
            argv = ["/bin/sh", "-c", localized.text(name, test)]
        elif test[0] == "CMD-SHELL":
            argv = ["/bin/sh", "-c", localized.text(name, " ".join(test[1:]))]
        else:
            argv = localized.argv(name, [str(part) for part in test[1:]])
        inherited = {k: v for k, v in os.environ.items() if not k.startswith("PUSHWARDEN_")}
        result = subprocess.run(argv, env=inherited, capture_output=True, timeout=30, check=False)
        self._last_check = result.stdout.decode(errors="replace") + result.stderr.decode(
            errors="replace"
        )
        return result.returncode == 0

    def stop(self) -> None:
        """SIGTERM every process, last started first; SIGKILL what outlives the timeout."""
        running = [p for group in reversed(list(self.processes.values())) for p in group]
        for process in running:
            if process.popen is not None and process.popen.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.popen.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for process in running:
            if process.popen is None:
                continue
            try:
                process.popen.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.popen.pid, signal.SIGKILL)
                process.popen.wait()
        self.processes.clear()
        self._stack.close()

    # --- what tests use -------------------------------------------------------------

    def addr(self, name: str) -> str:
        """Where a client reaches ``name`` (every replica, round-robin, when several)."""
        found = self.addresses[name]
        return found[0] if len(found) == 1 else "ipv4:" + ",".join(found)

    def env(self, name: str, index: int = 0) -> dict[str, str]:
        return self.processes[name][index].env

    def shift_clock(
        self,
        *,
        to: datetime | None = None,
        advance: timedelta = timedelta(0),
        speed: float | None = None,
    ) -> datetime:
        return shift_clock_file(self.clock_file, to=to, advance=advance, speed=speed)

    def now(self) -> datetime:
        """What every service's clock reads now."""
        return FileClock(self.clock_file).now()

    def sandbox_ca(self) -> Path:
        for name in self.names():
            for target, host in self._localized({}).mounts.get(name, {}).items():
                if (host / "sandbox-ca.pem").is_file() and "sandbox" in target:
                    return host / "sandbox-ca.pem"
        raise RuntimeError("no sandbox CA in any volume")

    def fake(self, name: str) -> Fake:
        """The control API of fake provider ``name`` (``fake-apns``, ``fake-fcm``)."""
        return Fake(
            f"https://localhost:{self.addresses[name][0].rsplit(':', 1)[1]}", self.sandbox_ca()
        )

    def logs(self) -> str:
        return "\n".join(
            f"--- {p.name}\n{p.tail()}" for group in self.processes.values() for p in group
        )


@dataclass
class Fake:
    """What one fake provider received, through its /_sandbox/ control routes."""

    url: str
    ca_file: Path

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        context = ssl.create_default_context(cafile=str(self.ca_file))
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method)
        with urllib.request.urlopen(request, timeout=10, context=context) as answer:
            return json.loads(answer.read())

    def requests(self, token: str | None = None) -> list[dict[str, Any]]:
        query = "" if token is None else "?" + urllib.parse.urlencode({"token": token})
        found: list[dict[str, Any]] = self._call("GET", f"/_sandbox/requests{query}")
        return found

    def clear(self) -> None:
        self._call("DELETE", "/_sandbox/requests")

    def add_faults(self, specs: Any) -> None:
        self._call("POST", "/_sandbox/faults", specs)


@contextlib.contextmanager
def running_platform(directory: Path, **options: Any) -> Iterator[ComposePlatform]:
    platform = ComposePlatform(directory, **options).start()
    try:
        yield platform
    finally:
        platform.stop()


def eventually(
    check: Callable[[], bool], *, within_s: float = 60.0, what: str = "condition"
) -> None:
    """Poll ``check`` until it holds; AssertionError after ``within_s`` seconds."""
    deadline = time.monotonic() + within_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {within_s} s")
        time.sleep(0.05)
