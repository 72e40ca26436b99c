"""Run the whole platform on one machine: what ``make run`` starts.

``python -m pushwarden.runtime.supervisor`` starts every process of the
:data:`CHILDREN` table as a child, each with its own SQLite database under the var
directory, and merges their output into one stream on stdout, each line prefixed by
the child's name (``consent      | ...``). Its first lines say what it created under
the var directory (consent's pseudonym key, the databases) and where each child
listens; once every service reports SERVING it says so and what to try next.

The sandbox: unless ``PUSHWARDEN_DELIVERY_CREDENTIALS`` names real provider
credentials, it also runs the fake APNs (:50061) and the fake FCM with its ``/token``
endpoint (:50062) from ``pushwarden.sandbox``, before delivery, and points delivery at
them: demo credentials for the app ``shop`` in ``<var>/sandbox/credentials.toml`` (the
demo APNs key and FCM service account are generated once by the fakes under
``<var>/sandbox`` and reused), and trust in the fakes' CA. Its first lines say which.

Each service listens where its own ``PUSHWARDEN_<SERVICE>_HOST`` / ``_PORT`` say
(``--port NAME=PORT`` wins over them, ``--port-base`` and ``--host`` only fill in what
they leave unset), and the supervisor tells every peer that address. A service with
TLS (``PUSHWARDEN_<SERVICE>_TLS_CERT``) is probed over TLS, trusting the service's
``PUSHWARDEN_<SERVICE>_PEER_CA``, the CA its peers trust too.

Stopping: SIGTERM or SIGINT makes it send SIGTERM to every child, wait for them
(SIGKILL after ``--stop-timeout`` seconds, or at once on a second SIGINT) and exit
0 when every child exited 0. A child that exits on its own is a failure: the
supervisor stops the others and exits 1.

Children run in process groups of their own, so a Ctrl-C in the terminal reaches the
supervisor alone and the children stop in the supervisor's order, and on Linux each
child is told to die with the supervisor, so a killed supervisor leaves no orphan.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import os
import secrets
import signal
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TextIO

import grpc

from pushwarden.runtime.config import (
    ConfigError,
    exit_with_config_error,
    misspelt_service_error,
    misspelt_service_prefix,
)
from pushwarden.runtime.healthprobe import health_status

__all__ = [
    "CHILDREN",
    "ChildSpec",
    "Plan",
    "build_plan",
    "ensure_pseudonym_key",
    "main",
    "next_steps",
    "plan_children",
    "probe_credentials",
    "pseudonym_key",
    "sandbox_wanted",
    "write_sandbox_credentials",
]

PSEUDONYM_KEY_FILE = "consent-pseudonym.key"
CREDENTIALS_VARIABLE = "PUSHWARDEN_DELIVERY_CREDENTIALS"
SANDBOX_DIR = "sandbox"
SANDBOX_CREDENTIALS_FILE = "credentials.toml"
# The app the demo credentials deliver for (the one the printed hints use), and what
# ``python -m pushwarden.sandbox`` generates once under its state directory without
# --key / --service-account (see libs/sandbox/README.md).
SANDBOX_APP = "shop"
SANDBOX_APNS_KEY_FILE = "apns-demo-key.p8"
SANDBOX_APNS_KEY_ID = "SANDBOXKEY"
SANDBOX_APNS_TEAM_ID = "SANDBOXTEAM"
SANDBOX_APNS_TOPIC = "com.pushwarden.sandbox"
SANDBOX_FCM_ACCOUNT_FILE = "fcm-service-account.json"
SANDBOX_FCM_PROJECT = "pushwarden-sandbox"
SANDBOX_CA_FILE = "sandbox-ca.pem"
FIRST_LINE_TIMEOUT_S = 30.0
PSEUDONYM_KEY_VARIABLE = "PUSHWARDEN_CONSENT_PSEUDONYM_KEY"
DEFAULT_STOP_TIMEOUT_S = 20.0
LINE_LIMIT_BYTES = 1024 * 1024
SELF = "supervisor"


def _env_prefix(service: str) -> str:
    return f"PUSHWARDEN_{service.upper()}_"


def _host_port(host: str, port: int) -> str:
    # An IPv6 literal needs brackets before the port.
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


# A wildcard bind address is no address to call: peers and the probe use loopback.
_REACHABLE_FROM_HERE = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1", "[::]": "::1"}


@dataclass(frozen=True, slots=True)
class Plan:
    """Where everything lives for one run: the var directory, the address and port each
    child binds, consent's pseudonym key (None when the environment supplies it), what
    this run created under the var directory, and whether the fake providers run
    (no real credentials given)."""

    var_dir: Path
    hosts: Mapping[str, str]
    ports: Mapping[str, int]
    pseudonym_key: str | None
    created: tuple[Path, ...] = ()
    sandbox: bool = False

    @property
    def sandbox_dir(self) -> Path:
        """Where the fakes keep their TLS material and demo credentials."""
        return self.var_dir / SANDBOX_DIR

    def bind(self, name: str) -> str:
        """``host:port`` child ``name`` binds (possibly a wildcard address)."""
        return _host_port(self.hosts[name], self.ports[name])

    def addr(self, name: str) -> str:
        """``host:port`` where child ``name`` is reached from this machine."""
        host = self.hosts[name]
        return _host_port(_REACHABLE_FROM_HERE.get(host, host).strip("[]"), self.ports[name])

    def sqlite_url(self, name: str) -> str:
        """The default database of child ``name``: a SQLite file under the var directory."""
        return f"sqlite:///{self.sqlite_path(name).resolve()}"

    def sqlite_path(self, name: str) -> Path:
        """The SQLite file of child ``name``."""
        return self.var_dir / f"{name}.db"


def _service_env(service: str, *peers: str) -> Callable[[Plan], dict[str, str]]:
    """The variables a Pushwarden service needs from the plan: where to listen and
    where its peers are (``PUSHWARDEN_SCHEDULER_CONSENT_ADDR`` ...)."""
    prefix = _env_prefix(service)

    def env(plan: Plan) -> dict[str, str]:
        values = {f"{prefix}HOST": plan.hosts[service], f"{prefix}PORT": str(plan.ports[service])}
        values.update({f"{prefix}{peer.upper()}_ADDR": plan.addr(peer) for peer in peers})
        return values

    return env


def _service_defaults(service: str) -> Callable[[Plan], dict[str, str]]:
    """Defaults a developer may override from the environment (another database URL,
    JSON logs): a SQLite file under var/ and text logs for people."""
    prefix = f"PUSHWARDEN_{service.upper()}_"

    def defaults(plan: Plan) -> dict[str, str]:
        return {f"{prefix}DATABASE_URL": plan.sqlite_url(service), f"{prefix}LOG_FORMAT": "text"}

    return defaults


def _consent_defaults(plan: Plan) -> dict[str, str]:
    defaults = _service_defaults("consent")(plan)
    if plan.pseudonym_key is not None:
        defaults[PSEUDONYM_KEY_VARIABLE] = plan.pseudonym_key
    return defaults


def _delivery_env(plan: Plan) -> dict[str, str]:
    values = _service_env("delivery", "consent")(plan)
    if plan.sandbox:
        # The fakes' CA, for aioapns and httpx (SSL_CERT_FILE) and for google-auth's
        # token requests (REQUESTS_CA_BUNDLE).
        ca_file = str((plan.sandbox_dir / SANDBOX_CA_FILE).resolve())
        values |= {"SSL_CERT_FILE": ca_file, "REQUESTS_CA_BUNDLE": ca_file}
    return values


def _delivery_defaults(plan: Plan) -> dict[str, str]:
    defaults = _service_defaults("delivery")(plan)
    if plan.sandbox:
        defaults[CREDENTIALS_VARIABLE] = str(
            (plan.sandbox_dir / SANDBOX_CREDENTIALS_FILE).resolve()
        )
    return defaults


def _no_env(_plan: Plan) -> dict[str, str]:
    return {}


def _no_args(_plan: Plan) -> tuple[str, ...]:
    return ()


def _fake_args(name: str) -> Callable[[Plan], tuple[str, ...]]:
    """Where a fake listens and keeps its state (the CA, the demo credentials)."""

    def args(plan: Plan) -> tuple[str, ...]:
        return (
            "--host",
            plan.hosts[name],
            "--port",
            str(plan.ports[name]),
            "--state-dir",
            str(plan.sandbox_dir.resolve()),
        )

    return args


@dataclass(frozen=True, slots=True)
class ChildSpec:
    """One process the supervisor runs.

    ``argv`` follows the Python interpreter (``-m module ...``), then ``args`` of the
    plan; ``env`` gives the variables the supervisor decides (ports, peer addresses:
    they must agree across children, so the environment cannot override them);
    ``defaults`` gives variables that the supervisor's own environment may override.
    A ``sandbox`` child runs only when delivery has no real credentials; the next
    child starts once an ``announces`` child printed a JSON line (a fake's
    announcement: it listens and its files exist).
    """

    name: str
    argv: tuple[str, ...]
    default_port: int
    env: Callable[[Plan], dict[str, str]] = _no_env
    defaults: Callable[[Plan], dict[str, str]] = _no_env
    is_grpc_service: bool = True
    args: Callable[[Plan], tuple[str, ...]] = _no_args
    sandbox: bool = False
    announces: bool = False


# Start order follows the call graph, callees first: the fake providers before delivery.
CHILDREN: tuple[ChildSpec, ...] = (
    ChildSpec(
        "consent",
        ("-m", "pushwarden.services.consent"),
        50051,
        env=_service_env("consent"),
        defaults=_consent_defaults,
    ),
    ChildSpec(
        "segmentation",
        ("-m", "pushwarden.services.segmentation"),
        50052,
        env=_service_env("segmentation", "consent"),
        defaults=_service_defaults("segmentation"),
    ),
    ChildSpec(
        "fake-apns",
        ("-m", "pushwarden.sandbox", "apns"),
        50061,
        is_grpc_service=False,
        args=_fake_args("fake-apns"),
        sandbox=True,
        announces=True,
    ),
    ChildSpec(
        "fake-fcm",
        ("-m", "pushwarden.sandbox", "fcm", "--project-id", SANDBOX_FCM_PROJECT),
        50062,
        is_grpc_service=False,
        args=_fake_args("fake-fcm"),
        sandbox=True,
        announces=True,
    ),
    ChildSpec(
        "delivery",
        ("-m", "pushwarden.services.delivery"),
        50054,
        env=_delivery_env,
        defaults=_delivery_defaults,
    ),
    ChildSpec(
        "scheduler",
        ("-m", "pushwarden.services.scheduler"),
        50053,
        env=_service_env("scheduler", "consent", "segmentation", "delivery"),
        defaults=_service_defaults("scheduler"),
    ),
)


def ensure_pseudonym_key(var_dir: Path) -> tuple[str, bool]:
    """The consent pseudonym key of this var directory, and whether this call created it.

    The key names users in the consent ledger and the suppression records, so it must
    survive restarts: it is written once (owner-only, 64 hex digits) and read back
    afterwards.
    """
    path = var_dir / PSEUDONYM_KEY_FILE
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text(encoding="ascii").strip(), False
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        handle.write(secrets.token_hex(32) + "\n")
    return path.read_text(encoding="ascii").strip(), True


def pseudonym_key(var_dir: Path) -> str:
    """The consent pseudonym key of this var directory, created on first use."""
    return ensure_pseudonym_key(var_dir)[0]


def _env_port(name: str, environ: Mapping[str, str]) -> int | None:
    raw = environ.get(name, "").strip()
    if not raw:
        return None
    if not raw.isdigit() or not 1 <= int(raw) <= 65535:
        raise ConfigError(
            name, f"{raw!r} is not a port make run can use (expected 1-65535: peers need it)"
        )
    return int(raw)


def _refuse_misspelt_prefixes(environ: Mapping[str, str], children: Sequence[ChildSpec]) -> None:
    """Refuse ``PUSHWARDEN_CONSNET_PORT`` before anything starts: the service it was
    meant for would refuse it too, but only after the others had started."""
    names = [child.name for child in children if child.is_grpc_service]
    for variable in sorted(environ):
        for name in names:
            misspelt = misspelt_service_prefix(variable, name)
            if misspelt is not None and misspelt.lower() not in names:
                meant = _env_prefix(name) + variable.removeprefix(f"PUSHWARDEN_{misspelt}_")
                raise misspelt_service_error(variable, misspelt, name, f"did you mean {meant}?")


def sandbox_wanted(environ: Mapping[str, str], children: Sequence[ChildSpec] = CHILDREN) -> bool:
    """Whether the fake providers run: delivery is among the children and the
    environment names no real credentials for it."""
    has_delivery = any(child.name == "delivery" for child in children)
    return has_delivery and not environ.get(CREDENTIALS_VARIABLE, "").strip()


def plan_children(plan: Plan, children: Sequence[ChildSpec] = CHILDREN) -> tuple[ChildSpec, ...]:
    """The children this plan runs: the sandbox's only when it is on."""
    return tuple(child for child in children if plan.sandbox or not child.sandbox)


def write_sandbox_credentials(plan: Plan) -> tuple[Path, bool]:
    """Write delivery's demo credentials file for the fakes of ``plan`` (their ports may
    change between runs, so it is rewritten each time; it holds paths, not keys) and
    say whether it is new. The key files it names are generated by the fakes once."""
    path = plan.sandbox_dir / SANDBOX_CREDENTIALS_FILE
    new = not path.exists()
    text = "\n".join(
        [
            "# Written by make run (pushwarden.runtime.supervisor) for the fake providers it",
            "# starts; set PUSHWARDEN_DELIVERY_CREDENTIALS to a file of your own to deliver to",
            "# Apple and Google instead (that turns the fakes off).",
            f"[apps.{SANDBOX_APP}.apns]",
            f'key_file = "{SANDBOX_APNS_KEY_FILE}"',
            f'key_id = "{SANDBOX_APNS_KEY_ID}"',
            f'team_id = "{SANDBOX_APNS_TEAM_ID}"',
            f'topic = "{SANDBOX_APNS_TOPIC}"',
            'environment = "sandbox"',
            f'endpoint = "https://{plan.addr("fake-apns")}"',
            "",
            f"[apps.{SANDBOX_APP}.fcm]",
            f'service_account_file = "{SANDBOX_FCM_ACCOUNT_FILE}"',
            f'project_id = "{SANDBOX_FCM_PROJECT}"',
            f'endpoint = "https://{plan.addr("fake-fcm")}"',
            "",
        ]
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    scratch.write_text(text, encoding="utf-8")
    os.replace(scratch, path)
    return path, new


def build_plan(
    var_dir: Path,
    *,
    host: str = "127.0.0.1",
    port_base: int | None = None,
    ports: Mapping[str, int] | None = None,
    children: Sequence[ChildSpec] = CHILDREN,
    environ: Mapping[str, str] | None = None,
) -> Plan:
    """Create the var directory, the pseudonym key and (sandbox on) delivery's demo
    credentials file, and settle where every child listens.

    A child's port is, first to last: ``ports`` (the command line), its
    ``PUSHWARDEN_<SERVICE>_PORT`` in ``environ``, its default shifted so that the first
    child's default lands on ``port_base`` (the layout is kept: consent base,
    segmentation base+1, scheduler base+2, delivery base+3, the fake APNs base+10 and
    the fake FCM base+11). Its address is its ``PUSHWARDEN_<SERVICE>_HOST``, else
    ``host``. The fakes run unless ``PUSHWARDEN_DELIVERY_CREDENTIALS`` is set. Raises
    :class:`ConfigError` for a variable make run cannot use and ValueError for a bad
    argument.
    """
    env = environ or {}
    sandbox = sandbox_wanted(env, children)
    _refuse_misspelt_prefixes(env, children)
    unknown = set(ports or {}) - {child.name for child in children}
    if unknown:
        raise ValueError(f"unknown child in --port: {', '.join(sorted(unknown))}")
    shift = 0 if port_base is None else port_base - children[0].default_port
    chosen: dict[str, int] = {}
    hosts: dict[str, str] = {}
    for child in children:
        if child.sandbox and not sandbox:
            continue
        prefix = _env_prefix(child.name)
        from_env = _env_port(f"{prefix}PORT", env) if child.is_grpc_service else None
        chosen[child.name] = (ports or {}).get(
            child.name, from_env if from_env is not None else child.default_port + shift
        )
        hosts[child.name] = env.get(f"{prefix}HOST", "").strip() or host
    taken: dict[int, str] = {}
    for name, port in chosen.items():
        if port in taken:
            raise ValueError(f"{taken[port]} and {name} would both listen on port {port}")
        taken[port] = name
    var_dir.mkdir(parents=True, exist_ok=True)
    created: list[Path] = []
    key: str | None = None
    if not env.get(PSEUDONYM_KEY_VARIABLE, "").strip():
        key, new = ensure_pseudonym_key(var_dir)
        if new:
            created.append(var_dir / PSEUDONYM_KEY_FILE)
    plan = Plan(
        var_dir=var_dir,
        hosts=hosts,
        ports=chosen,
        pseudonym_key=key,
        sandbox=sandbox,
    )
    if sandbox:
        path, new = write_sandbox_credentials(plan)
        if new:
            created.append(path)
    return replace(plan, created=tuple(created))


def probe_credentials(service: str, env: Mapping[str, str]) -> grpc.ChannelCredentials | None:
    """How the readiness probe reaches ``service`` whose environment is ``env``: None
    (plain text) unless the service has TLS on; then TLS trusting its ``PEER_CA`` (the
    system's roots when unset), offering its own certificate to a server that wants
    one (mTLS)."""
    prefix = _env_prefix(service)
    if not env.get(f"{prefix}TLS_CERT", "").strip():
        return None

    def read(suffix: str) -> bytes | None:
        path = env.get(f"{prefix}{suffix}", "").strip()
        if not path:
            return None
        try:
            return Path(path).expanduser().read_bytes()
        except OSError:
            return None  # the service itself names the unreadable file and exits 2

    key, chain = read("TLS_KEY"), read("TLS_CERT")
    return grpc.ssl_channel_credentials(
        root_certificates=read("PEER_CA"),
        private_key=key if chain else None,
        certificate_chain=chain if key else None,
    )


def next_steps(plan: Plan, consent_env: Mapping[str, str]) -> list[str]:
    """What to try once everything serves: one RPC through ``buf curl`` (reflection) and
    the same from Python, shaped by consent's TLS and auth settings."""
    prefix = _env_prefix("consent")
    addr = plan.addr("consent")
    tls = bool(consent_env.get(f"{prefix}TLS_CERT", "").strip())
    ca = consent_env.get(f"{prefix}PEER_CA", "").strip()
    auth = bool(consent_env.get(f"{prefix}AUTH_TOKENS_FILE", "").strip())
    method = "pushwarden.consent.v1.ConsentService/ListCategories"
    transport = (f"--cacert {ca} " if ca else "") if tls else "--http2-prior-knowledge "
    header = "-H 'authorization: Bearer <token>' " if auth else ""
    scheme = "https" if tls else "http"
    metadata = ', metadata=[("authorization", "Bearer <token>")]' if auth else ""
    channel = (
        f'grpc.secure_channel("{addr}", grpc.ssl_channel_credentials(open("{ca}", "rb").read()))'
        if tls and ca
        else f'grpc.secure_channel("{addr}", grpc.ssl_channel_credentials())'
        if tls
        else f'grpc.insecure_channel("{addr}")'
    )
    python = (
        "from pushwarden.consent.v1 import consent_pb2_grpc as g, messages_pb2 as m; "
        f"print(g.ConsentServiceStub({channel}).ListCategories("
        f'm.ListCategoriesRequest(app_id="shop"){metadata}, timeout=5))'
    )
    steps = [
        "try (buf from `npm ci`): node_modules/.bin/buf curl --protocol grpc "
        f'{transport}{header}-d \'{{"app_id": "shop"}}\' {scheme}://{addr}/{method}',
        f"or from Python: .venv/bin/python -c 'import grpc; {python}'",
        "list every RPC: node_modules/.bin/buf curl --protocol grpc "
        f"{transport}{header}--list-methods {scheme}://{addr}",
    ]
    if plan.sandbox:
        sandbox_ca = plan.sandbox_dir / SANDBOX_CA_FILE
        steps.append(
            "pushes delivered for app shop land at the fake APNs; what it received: "
            f"curl --cacert {sandbox_ca} https://{plan.addr('fake-apns')}/_sandbox/requests "
            "(README.md, A first push, shows one end to end)"
        )
    steps.append("more in README.md (Calling a service, Next steps); Ctrl-C stops everything")
    return steps


def child_environment(child: ChildSpec, plan: Plan, inherited: Mapping[str, str]) -> dict[str, str]:
    """The full environment of ``child``: its defaults, then the inherited environment,
    then the values the supervisor must decide."""
    return {**child.defaults(plan), **inherited, **child.env(plan)}


def _die_with_parent() -> None:
    # Runs in the child between fork and exec: PR_SET_PDEATHSIG makes the kernel send
    # SIGTERM to the child if the supervisor dies without stopping it (SIGKILL, crash).
    if _LIBC is not None:
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


_PR_SET_PDEATHSIG = 1
# Loaded before any fork: the child only calls into an already loaded library.
_LIBC: ctypes.CDLL | None = (
    ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None
)


@dataclass
class _Running:
    spec: ChildSpec
    process: asyncio.subprocess.Process
    pump: asyncio.Task[None]
    announced: asyncio.Event
    waiter: asyncio.Task[int] = field(init=False)

    def __post_init__(self) -> None:
        self.waiter = asyncio.ensure_future(self.process.wait())


class Supervisor:
    """Starts the children of a plan, relays their output, and stops them together."""

    def __init__(
        self,
        plan: Plan,
        children: Sequence[ChildSpec] | None = None,
        *,
        inherited_env: Mapping[str, str] | None = None,
        stop_timeout_s: float = DEFAULT_STOP_TIMEOUT_S,
        out: TextIO = sys.stdout,
    ) -> None:
        self._plan = plan
        self._children = plan_children(plan) if children is None else tuple(children)
        self._inherited = dict(os.environ if inherited_env is None else inherited_env)
        self._envs = {c.name: child_environment(c, plan, self._inherited) for c in self._children}
        self._stop_timeout_s = stop_timeout_s
        self._out = out
        self._width = max(len(name) for name in (SELF, *(c.name for c in self._children)))
        self._running: list[_Running] = []
        self._stop_requested = asyncio.Event()
        self._kill_now = asyncio.Event()

    def say(self, name: str, text: str) -> None:
        """Write one line of the merged stream."""
        self._out.write(f"{name:<{self._width}} | {text.rstrip()}\n")
        self._out.flush()

    def request_stop(self, signum: int) -> None:
        """Signal handler: the first signal stops gracefully; a second SIGINT (Ctrl-C
        pressed again) kills. A repeated SIGTERM changes nothing: tools such as
        ``timeout`` signal the process and its group at once, which is no request to
        hurry."""
        name = signal.Signals(signum).name
        if not self._stop_requested.is_set():
            self.say(SELF, f"{name} received: stopping every child")
            self._stop_requested.set()
        elif signum == signal.SIGINT:
            self.say(SELF, f"{name} again: killing every child now")
            self._kill_now.set()

    async def _pump(
        self, name: str, stream: asyncio.StreamReader, announced: asyncio.Event
    ) -> None:
        while True:
            try:
                line = await stream.readline()
            except ValueError:
                # asyncio drops a line longer than the reader's limit; keep relaying the
                # rest, or the child would block on a full pipe.
                self.say(name, f"(a line longer than {LINE_LIMIT_BYTES} bytes was dropped)")
                continue
            if not line:
                return
            self.say(name, line.decode("utf-8", errors="replace"))
            if line.startswith(b"{"):  # a fake's JSON line: it listens, its files exist
                announced.set()

    async def _start(self, spec: ChildSpec) -> _Running:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            *spec.argv,
            *spec.args(self._plan),
            env=self._envs[spec.name],
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            limit=LINE_LIMIT_BYTES,
            process_group=0,
            preexec_fn=_die_with_parent,
        )
        assert process.stdout is not None
        announced = asyncio.Event()
        pump = asyncio.create_task(self._pump(spec.name, process.stdout, announced))
        where = f"listening on {self._plan.bind(spec.name)}"
        if spec.is_grpc_service and probe_credentials(spec.name, self._envs[spec.name]):
            where += " with TLS"
        self.say(SELF, f"started {spec.name} pid={process.pid} {where}")
        return _Running(spec, process, pump, announced)

    async def _announced(self, running: _Running) -> bool:
        """Wait until ``running`` printed its JSON line; False when it exited first or
        a stop was requested (the main loop reports either)."""
        waits = [
            asyncio.ensure_future(running.announced.wait()),
            asyncio.ensure_future(self._stop_requested.wait()),
        ]
        try:
            await asyncio.wait(
                [*waits, running.waiter],
                timeout=FIRST_LINE_TIMEOUT_S,
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            for wait in waits:
                wait.cancel()
        if not running.announced.is_set() and not running.waiter.done():
            if not self._stop_requested.is_set():
                # Stopped, it counts as a child that exited on its own: all stop, exit 1.
                self.say(
                    SELF,
                    f"{running.spec.name} did not announce itself in "
                    f"{FIRST_LINE_TIMEOUT_S:.0f} s: stopping it",
                )
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(running.process.pid, signal.SIGTERM)
            return False
        return running.announced.is_set() and not running.waiter.done()

    def _signal_all(self, signum: int) -> None:
        for running in self._running:
            if running.process.returncode is None:
                # Each child leads its own process group: signal the group so that
                # anything the child started stops with it.
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(running.process.pid, signum)

    async def _stop_all(self) -> None:
        self._signal_all(signal.SIGTERM)
        waiters = [r.waiter for r in self._running]
        all_stopped: asyncio.Future[Any] = asyncio.gather(*waiters)
        kill_signal: asyncio.Future[Any] = asyncio.ensure_future(self._kill_now.wait())
        await asyncio.wait(
            [all_stopped, kill_signal],
            timeout=self._stop_timeout_s,
            return_when=asyncio.FIRST_COMPLETED,
        )
        kill_signal.cancel()
        if not all(w.done() for w in waiters):
            stuck = [r.spec.name for r in self._running if not r.waiter.done()]
            self.say(SELF, f"sending SIGKILL to {', '.join(stuck)}")
            self._signal_all(signal.SIGKILL)
            await asyncio.gather(*waiters)
        await asyncio.gather(*(r.pump for r in self._running))

    async def _announce_ready(self) -> None:
        """Print one line once every gRPC child reports SERVING, for the person watching."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        services = [c for c in self._children if c.is_grpc_service]
        for spec in services:
            async with self._probe_channel(spec.name) as channel:
                while True:
                    with contextlib.suppress(grpc.aio.AioRpcError):
                        if await health_status(channel, timeout_s=1.0) == "SERVING":
                            break
                    await asyncio.sleep(0.2)
        elapsed = loop.time() - started
        self.say(SELF, f"all {len(services)} services SERVING after {elapsed:.1f} s")
        if "consent" in self._envs:
            for line in next_steps(self._plan, self._envs["consent"]):
                self.say(SELF, line)

    def _probe_channel(self, name: str) -> grpc.aio.Channel:
        # The probe starts before the child listens; gRPC's default reconnect backoff
        # (1 s growing to 2 min) would announce SERVING long after it is true.
        options = [
            ("grpc.initial_reconnect_backoff_ms", 200),
            ("grpc.min_reconnect_backoff_ms", 200),
            ("grpc.max_reconnect_backoff_ms", 1000),
        ]
        credentials = probe_credentials(name, self._envs[name])
        if credentials is None:
            return grpc.aio.insecure_channel(self._plan.addr(name), options=options)
        return grpc.aio.secure_channel(self._plan.addr(name), credentials, options=options)

    def _announce_plan(self) -> None:
        """The first lines: the var directory, what this run created in it, what it
        reuses, and anything about TLS the person watching should know."""
        plan = self._plan
        self.say(SELF, f"var directory {plan.var_dir.resolve()}")
        key_file = plan.var_dir / PSEUDONYM_KEY_FILE
        if key_file in plan.created:
            self.say(
                SELF,
                f"created {key_file}: consent's pseudonym key ({PSEUDONYM_KEY_VARIABLE}); "
                "kept and reused on every run, since a new key forgets every suppression",
            )
        elif plan.pseudonym_key is not None:
            self.say(SELF, f"reusing consent's pseudonym key {key_file}")
        else:
            self.say(SELF, f"consent's pseudonym key comes from {PSEUDONYM_KEY_VARIABLE}")
        self._announce_sandbox()
        fresh: list[str] = []
        kept: list[str] = []
        for child in self._children:
            prefix = _env_prefix(child.name)
            if self._envs[child.name].get(f"{prefix}DATABASE_URL") != plan.sqlite_url(child.name):
                continue  # the environment moved it elsewhere
            path = plan.sqlite_path(child.name)
            (kept if path.exists() else fresh).append(str(path))
        if fresh:
            self.say(SELF, f"creating SQLite databases {', '.join(fresh)}")
        if kept:
            self.say(SELF, f"reusing SQLite databases {', '.join(kept)}")
        for child in self._children:
            env, prefix = self._envs[child.name], _env_prefix(child.name)
            if env.get(f"{prefix}TLS_CERT", "").strip() and not env.get(f"{prefix}PEER_CA"):
                self.say(
                    SELF,
                    f"{child.name} uses TLS but {prefix}PEER_CA is unset: the readiness "
                    "probe trusts the system's root certificates only",
                )

    def _announce_sandbox(self) -> None:
        plan = self._plan
        if "delivery" not in self._envs:
            return
        if not plan.sandbox:
            path = self._envs["delivery"].get(CREDENTIALS_VARIABLE, "")
            self.say(
                SELF,
                f"delivery sends to the real APNs and FCM with the credentials in {path} "
                f"({CREDENTIALS_VARIABLE}); no fake providers",
            )
            return
        credentials = plan.sandbox_dir / SANDBOX_CREDENTIALS_FILE
        self.say(
            SELF,
            f"sandbox: fake APNs on {plan.addr('fake-apns')} and fake FCM (with its /token "
            f"endpoint) on {plan.addr('fake-fcm')}; delivery sends app {SANDBOX_APP}'s "
            f"pushes to them with demo credentials {credentials} (keys generated once under "
            f"{plan.sandbox_dir} and reused); set {CREDENTIALS_VARIABLE} to deliver to Apple "
            "and Google instead",
        )

    async def run(self) -> int:
        """Run until a signal or a child's unexpected exit; returns the exit code."""
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self.request_stop, signum)
        self._announce_plan()
        failed: list[_Running] = []
        try:
            for spec in self._children:
                if self._stop_requested.is_set():
                    break
                running = await self._start(spec)
                self._running.append(running)
                if spec.announces and not await self._announced(running):
                    break
            ready = asyncio.create_task(self._announce_ready())
            stop = asyncio.ensure_future(self._stop_requested.wait())
            await asyncio.wait(
                [stop, *(r.waiter for r in self._running)], return_when=asyncio.FIRST_COMPLETED
            )
            stop.cancel()
            ready.cancel()
            failed = [r for r in self._running if r.waiter.done()]
            for running in failed:
                self.say(
                    SELF,
                    f"{running.spec.name} exited unexpectedly with code "
                    f"{running.process.returncode}: stopping the others",
                )
        finally:
            await self._stop_all()
        return self._report(unexpected=bool(failed))

    def _report(self, *, unexpected: bool) -> int:
        codes = {r.spec.name: r.process.returncode for r in self._running}
        summary = ", ".join(f"{name}={code}" for name, code in codes.items())
        clean = not unexpected and all(code == 0 for code in codes.values())
        self.say(SELF, f"all children stopped ({summary}); exit {0 if clean else 1}")
        return 0 if clean else 1


def _port_assignment(text: str) -> tuple[str, int]:
    name, sep, port = text.partition("=")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected NAME=PORT, got {text!r}")
    return name, int(port)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pushwarden.runtime.supervisor",
        description="Run every Pushwarden service in the foreground with one log stream.",
    )
    parser.add_argument(
        "--var-dir",
        type=Path,
        default=Path("var"),
        help="where databases and the pseudonym key live (default: var)",
    )
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="address children bind unless their PUSHWARDEN_<SERVICE>_HOST says otherwise",
    )
    parser.add_argument(
        "--port-base",
        type=int,
        help="shift every default port so that the first child's (consent) lands here "
        "(a PUSHWARDEN_<SERVICE>_PORT still wins)",
    )
    parser.add_argument(
        "--port",
        type=_port_assignment,
        action="append",
        default=[],
        metavar="NAME=PORT",
        help="port of one child (repeatable; wins over PUSHWARDEN_<SERVICE>_PORT)",
    )
    parser.add_argument(
        "--stop-timeout",
        type=float,
        default=DEFAULT_STOP_TIMEOUT_S,
        help="seconds to wait after SIGTERM before SIGKILL",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the process exit code."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        plan = build_plan(
            args.var_dir,
            host=args.host,
            port_base=args.port_base,
            ports=dict(args.port),
            environ=os.environ,
        )
    except ConfigError as error:
        exit_with_config_error(error)
    except ValueError as error:
        parser.error(str(error))
    supervisor_ = Supervisor(plan, stop_timeout_s=args.stop_timeout)
    return asyncio.run(supervisor_.run())


if __name__ == "__main__":
    sys.exit(main())
