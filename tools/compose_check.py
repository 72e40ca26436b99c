"""Validate docker-compose.yml without a container engine (``make compose-check``).

``python tools/compose_check.py [FILE]`` parses the compose file and checks it against
the services' config classes and the call graph:

- every service is present (postgres and the four Pushwarden services);
- each ``PUSHWARDEN_*`` variable is one the service's config reads, with its own prefix;
- published host ports are unique and bound to 127.0.0.1 (or ::1) only, and each
  container port is the service's PORT (also in its Dockerfile's EXPOSE and its health
  check's address);
- the database password comes from the environment with no default written here
  (``${POSTGRES_PASSWORD:?...}`` or ``${POSTGRES_PASSWORD}``), in postgres and in every
  database URL;
- ``depends_on`` names existing services with ``condition: service_healthy`` and follows
  the call graph (scheduler -> consent, segmentation, delivery; delivery -> consent;
  segmentation -> consent, for its change feed only; everyone -> postgres), no more and
  no less;
- each build's Dockerfile exists, is the service's own, is multi-stage, copies every
  library the service depends on, EXPOSEs its port, runs as a non-root user and has a
  HEALTHCHECK through the gRPC health probe;
- every service has a health check, the Pushwarden ones through the gRPC health probe;
- each database URL points at the postgres service and a database of the service's own,
  and every ``*_ADDR`` at the peer's name and container port;
- each service's environment loads through its config class (values valid, required
  settings present), with ``${VAR:-default}`` taken as its default and any other
  ``${VAR}`` as a value the operator supplies;
- the sandbox (checked with the override, as ``make compose-check`` does): the fake
  providers (fake-apns, fake-fcm) are the profile ``sandbox`` and nothing else is in a
  profile; each runs ``python -m pushwarden.sandbox <provider>`` from its own image,
  listens (``--port``) on the container port it publishes and its health check probes,
  keeps its state (``--state-dir``) on a named volume, and fakes sharing that volume start
  one after the other (each writes the TLS CA there on first start);
- the sandbox override (deploy/compose.sandbox.yml, checked merged into the compose file
  as ``docker compose -f docker-compose.yml -f deploy/compose.sandbox.yml`` would) changes
  delivery only: delivery waits for both fakes, mounts their state volume, trusts their
  CA (``SSL_CERT_FILE`` and ``REQUESTS_CA_BUNDLE``) and reads credentials from a mounted
  file of the repository whose every app's endpoints name a fake and its container port
  and whose key files lie on the state volume.

The integration suite (tests/integration) starts the platform from these same files.

Prints one line per problem and exits 1, or prints a summary and exits 0.
"""

from __future__ import annotations

import argparse
import difflib
import ipaddress
import itertools
import json
import re
import sys
import tomllib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import yaml

from pushwarden.runtime.config import ConfigError, ServiceConfig, load_config, settings_table
from pushwarden.services.consent.config import ConsentConfig
from pushwarden.services.delivery.config import DeliveryConfig
from pushwarden.services.scheduler.config import SchedulerConfig
from pushwarden.services.segmentation.config import SegmentationConfig

ROOT = Path(__file__).resolve().parents[1]
DATABASE = "postgres"

SERVICE_CONFIGS: dict[str, type[ServiceConfig]] = {
    "consent": ConsentConfig,
    "segmentation": SegmentationConfig,
    "scheduler": SchedulerConfig,
    "delivery": DeliveryConfig,
}

# Whom each Pushwarden service calls (DESIGN.md): its depends_on must be exactly these
# plus the database, so compose starts callees first and never a cycle. Segmentation
# calls consent only to follow its change feed (WatchChanges) for erasure.
CALLS: dict[str, frozenset[str]] = {
    "consent": frozenset(),
    "segmentation": frozenset({"consent"}),
    "delivery": frozenset({"consent"}),
    "scheduler": frozenset({"consent", "segmentation", "delivery"}),
}

HEALTH_PROBES = ("pushwarden.runtime.healthprobe", "grpc_health_probe")
_ADDR_ARGUMENT = re.compile(r"(?:--addr[= ]|-addr[= ])(?:[\w.\-]+):(\d+)")
_INTERPOLATION = re.compile(r"\$\{(\w+)(?:(:?[-?])([^}]*))?\}|\$\$")
# Stands in for a value the operator must supply (${VAR} or ${VAR:?message}); long
# enough for any secret's minimum length.
OPERATOR_VALUE = "operator-supplied-" + "0" * 46
_EXPOSE = re.compile(r"^\s*EXPOSE\s+(\d+)", re.MULTILINE | re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Compose:
    """The parts of a compose file the checks read (with an override merged in, when
    ``override`` names one)."""

    path: Path
    services: Mapping[str, Any]
    override: Path | None = None
    override_services: Mapping[str, Any] | None = None

    def pushwarden(self) -> Iterator[tuple[str, Mapping[str, Any]]]:
        """The Pushwarden services that are present."""
        for name in SERVICE_CONFIGS:
            if isinstance(self.services.get(name), Mapping):
                yield name, self.services[name]


def known_variables(service: str) -> dict[str, str]:
    """Every variable ``service`` reads, with its documented default."""
    return {doc.env_name: doc.default for doc in settings_table(SERVICE_CONFIGS[service], service)}


def file_settings(service: str) -> set[str]:
    """The variables of ``service`` that name a file."""
    docs = settings_table(SERVICE_CONFIGS[service], service)
    return {doc.env_name for doc in docs if doc.type.startswith("path")}


def environment(spec: Mapping[str, Any]) -> dict[str, str]:
    """A service's ``environment`` in either compose form (mapping or ``KEY=VALUE`` list)."""
    raw = spec.get("environment") or {}
    if isinstance(raw, Mapping):
        return {str(key): "" if value is None else str(value) for key, value in raw.items()}
    pairs = (str(item).partition("=") for item in raw)
    return {key: value for key, _, value in pairs}


def container_port(service: str, spec: Mapping[str, Any]) -> int | None:
    """The port ``service`` listens on inside its container: its PORT variable, else the
    config's default (None when the variable is not a number)."""
    name = f"PUSHWARDEN_{service.upper()}_PORT"
    value = environment(spec).get(name) or known_variables(service)[name]
    return int(value) if value.isdigit() else None


def published_ports(spec: Mapping[str, Any]) -> list[tuple[str | None, int | None]]:
    """``(host port, container port)`` of each ``ports`` entry, short or long syntax."""
    result: list[tuple[str | None, int | None]] = []
    for entry in spec.get("ports") or []:
        if isinstance(entry, Mapping):
            published = entry.get("published")
            target = str(entry.get("target", ""))
            result.append((None if published is None else str(published), _int(target)))
            continue
        parts = str(entry).split("/", 1)[0].rsplit(":", 2)
        host = parts[-2] if len(parts) >= 2 else None
        result.append((host, _int(parts[-1])))
    return result


def published_host_ips(spec: Mapping[str, Any]) -> list[tuple[str, str | None]]:
    """``(entry, host address)`` of each ``ports`` entry; None when the entry names no
    address, which publishes the port on every interface."""
    result: list[tuple[str, str | None]] = []
    for entry in spec.get("ports") or []:
        if isinstance(entry, Mapping):
            ip = entry.get("host_ip")
            result.append((str(dict(entry)), None if ip is None else str(ip)))
            continue
        text = str(entry).split("/", 1)[0]
        if text.startswith("["):
            result.append((str(entry), text[1 : text.index("]")]))
            continue
        parts = text.rsplit(":", 2)
        result.append((str(entry), parts[0] if len(parts) == 3 else None))
    return result


def _is_loopback(address: str) -> bool:
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def _int(text: str) -> int | None:
    return int(text) if text.isdigit() else None


def dependencies(spec: Mapping[str, Any]) -> dict[str, str]:
    """``depends_on`` as ``{service: condition}`` (the list form means service_started)."""
    raw = spec.get("depends_on") or {}
    if isinstance(raw, Mapping):
        return {
            str(name): str((value or {}).get("condition", "service_started"))
            for name, value in raw.items()
        }
    return {str(name): "service_started" for name in raw}


def healthcheck_command(spec: Mapping[str, Any]) -> str | None:
    """The health check's command as one string (None when absent or disabled)."""
    check = spec.get("healthcheck")
    if not isinstance(check, Mapping) or check.get("disable") or "test" not in check:
        return None
    test = check["test"]
    return " ".join(str(part) for part in test) if isinstance(test, list) else str(test)


# --- checks: each returns one message per problem ---------------------------------------


def check_presence(compose: Compose) -> list[str]:
    """Every required service is defined."""
    return [
        f"service {name!r} is missing"
        for name in (DATABASE, *SERVICE_CONFIGS)
        if not isinstance(compose.services.get(name), Mapping)
    ]


def check_environment(compose: Compose) -> list[str]:
    """Each PUSHWARDEN_* variable is read by the service's config, with the right prefix."""
    problems = []
    for service, spec in compose.pushwarden():
        known = known_variables(service)
        prefix = f"PUSHWARDEN_{service.upper()}_"
        for name in environment(spec):
            if not name.startswith("PUSHWARDEN_") or name in known:
                continue
            if not name.startswith(prefix):
                problems.append(
                    f"{service}: {name} does not carry the service's prefix {prefix} "
                    "(the service never reads it)"
                )
                continue
            close = difflib.get_close_matches(name, list(known), n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            problems.append(f"{service}: {name} is not a setting of {service}{hint}")
    return problems


def check_ports(compose: Compose) -> list[str]:
    """Host ports are unique; container ports are the services' PORT."""
    problems = []
    owners: dict[str, str] = {}
    for service, spec in compose.services.items():
        if not isinstance(spec, Mapping):
            continue
        listen = container_port(service, spec) if service in SERVICE_CONFIGS else None
        for host, target in published_ports(spec):
            if host is not None and host in owners:
                problems.append(
                    f"{service}: host port {host} is already published by {owners[host]}"
                )
            elif host is not None:
                owners[host] = service
            if service in SERVICE_CONFIGS and target != listen:
                problems.append(
                    f"{service}: publishes container port {target} but the service listens "
                    f"on {listen} (PUSHWARDEN_{service.upper()}_PORT)"
                )
    for service, spec in compose.pushwarden():
        if not published_ports(spec):
            problems.append(f"{service}: publishes no port")
    return problems


def check_loopback_ports(compose: Compose) -> list[str]:
    """Every published port is bound to a loopback address: a service with auth off
    (the default) must not answer the network."""
    problems = []
    for service, spec in compose.services.items():
        if not isinstance(spec, Mapping):
            continue
        for entry, address in published_host_ips(spec):
            if address is None:
                problems.append(
                    f"{service}: {entry!r} publishes on every interface "
                    f"(publish on 127.0.0.1, e.g. '127.0.0.1:{entry}')"
                )
            elif not _is_loopback(address):
                problems.append(f"{service}: {entry!r} publishes on {address}, not on 127.0.0.1")
    return problems


_FROM_ENVIRONMENT = re.compile(r"^\$\{\w+(?::?\?[^}]*)?\}$")
PASSWORD_VARIABLE = "POSTGRES_PASSWORD"


def check_password_from_environment(compose: Compose) -> list[str]:
    """The database password is supplied by whoever runs compose: no literal and no
    default in the file, which would otherwise become every deployment's password."""
    problems = []
    database = compose.services.get(DATABASE)
    if isinstance(database, Mapping):
        value = environment(database).get(PASSWORD_VARIABLE, "")
        if not _FROM_ENVIRONMENT.match(value):
            problems.append(
                f"{DATABASE}: {PASSWORD_VARIABLE} must come from the environment with no "
                f"default (${{{PASSWORD_VARIABLE}:?...}}), not {value!r}"
            )
    for service, spec in compose.pushwarden():
        name = f"PUSHWARDEN_{service.upper()}_DATABASE_URL"
        url = environment(spec).get(name, "")
        password = urlsplit(url).password if "://" in url else None
        if password is not None and not _FROM_ENVIRONMENT.match(password):
            problems.append(
                f"{service}: {name} must take its password from the environment "
                f"(${{{PASSWORD_VARIABLE}}}), not from a literal or a default"
            )
    return problems


def check_dependencies(compose: Compose) -> list[str]:
    """depends_on names existing services, waits for health, and follows the call graph."""
    problems = []
    for service, spec in compose.services.items():
        if not isinstance(spec, Mapping):
            continue
        depends = dependencies(spec)
        for name, condition in depends.items():
            if name not in compose.services:
                problems.append(f"{service}: depends on {name!r}, which is not a service")
            elif condition != "service_healthy":
                problems.append(
                    f"{service}: must wait for {name} with condition: service_healthy "
                    f"(has {condition})"
                )
        if service not in SERVICE_CONFIGS:
            continue
        expected = CALLS[service] | {DATABASE}
        for name in sorted(expected - set(depends)):
            why = "its database" if name == DATABASE else f"{service} calls {name}"
            problems.append(f"{service}: must depend on {name} ({why})")
        for name in sorted((set(depends) & set(SERVICE_CONFIGS)) - expected):
            problems.append(
                f"{service}: depends on {name}, which the call graph does not allow "
                f"({service} calls {', '.join(sorted(CALLS[service])) or 'nobody'})"
            )
    return problems


def check_builds(compose: Compose) -> list[str]:
    """Each Pushwarden service builds its own existing Dockerfile (see
    :func:`dockerfile_problems` for what the Dockerfile itself must do)."""
    problems = []
    for service, spec in compose.pushwarden():
        build = spec.get("build")
        if not isinstance(build, Mapping) or "dockerfile" not in build:
            problems.append(f"{service}: needs build: {{context: ., dockerfile: ...}}")
            continue
        context = compose.path.parent / str(build.get("context", "."))
        dockerfile = context / str(build["dockerfile"])
        own = (context / "services" / service / "Dockerfile").resolve()
        if not dockerfile.is_file():
            problems.append(f"{service}: Dockerfile {build['dockerfile']} does not exist")
            continue
        if dockerfile.resolve() != own:
            problems.append(
                f"{service}: builds {build['dockerfile']}, not services/{service}/Dockerfile"
            )
            continue
        problems += [
            f"{service}: {build['dockerfile']} {problem}"
            for problem in dockerfile_problems(service, context, container_port(service, spec))
        ]
    return problems


def _local_libraries(pyproject: Path) -> list[str]:
    """The ``libs/<name>`` directories behind a distribution's pushwarden-* dependencies."""
    project = tomllib.loads(pyproject.read_text(encoding="utf-8")).get("project", {})
    names = (
        re.split(r"[\s<>=!~;\[]", str(dep), maxsplit=1)[0]
        for dep in project.get("dependencies", [])
    )
    return [
        f"libs/{name.removeprefix('pushwarden-')}"
        for name in names
        if name.startswith("pushwarden-")
    ]


def dockerfile_problems(service: str, context: Path, port: int | None) -> list[str]:
    """What is wrong with ``services/<service>/Dockerfile`` under ``context``: it must be
    multi-stage, copy every library the service depends on (and let it through its
    ``.dockerignore``), EXPOSE the service's port, run as a non-root user and carry a
    HEALTHCHECK through the gRPC health probe."""
    directory = context / "services" / service
    text = (directory / "Dockerfile").read_text(encoding="utf-8")
    ignore_file = directory / "Dockerfile.dockerignore"
    ignore = ignore_file.read_text(encoding="utf-8") if ignore_file.is_file() else None
    problems = []
    if len(re.findall(r"^FROM\s", text, re.MULTILINE | re.IGNORECASE)) < 2:
        problems.append("is not a multi-stage build")
    for library in _local_libraries(directory / "pyproject.toml"):
        if not re.search(rf"^COPY\s+{re.escape(library)}\s", text, re.MULTILINE):
            problems.append(f"does not copy {library}, which the service depends on")
        elif ignore is not None and f"!{library}" not in ignore.split():
            problems.append(f"copies {library} but Dockerfile.dockerignore excludes it")
    exposed = {int(found) for found in _EXPOSE.findall(text)}
    if port is not None and port not in exposed:
        problems.append(f"does not EXPOSE {port}")
    users = re.findall(r"^USER\s+(\S+)", text, re.MULTILINE)
    if not users or users[-1].split(":")[0] in ("root", "0"):
        problems.append("runs as root (needs a USER)")
    healthcheck = re.search(r"^HEALTHCHECK\s.*?(?<!\\)$", text, re.MULTILINE | re.DOTALL)
    if healthcheck is None or not any(probe in healthcheck.group(0) for probe in HEALTH_PROBES):
        problems.append("has no HEALTHCHECK through the gRPC health probe")
    return problems


def check_healthchecks(compose: Compose) -> list[str]:
    """Every service has a health check; Pushwarden ones probe gRPC health on their port."""
    problems = []
    for service, spec in compose.services.items():
        if not isinstance(spec, Mapping):
            continue
        command = healthcheck_command(spec)
        if command is None:
            problems.append(f"{service}: has no healthcheck")
            continue
        if service not in SERVICE_CONFIGS:
            continue
        if not any(probe in command for probe in HEALTH_PROBES):
            problems.append(f"{service}: healthcheck does not use the gRPC health probe")
            continue
        ports = {int(port) for port in _ADDR_ARGUMENT.findall(command)}
        listen = container_port(service, spec)
        if ports != {listen}:
            problems.append(
                f"{service}: healthcheck probes port {', '.join(map(str, sorted(ports))) or '?'}"
                f" but the service listens on {listen}"
            )
    return problems


def check_wiring(compose: Compose) -> list[str]:
    """Database URLs reach postgres and a database of the service's own; every *_ADDR
    names the peer service and its container port."""
    problems = []
    databases: dict[str, str] = {}
    for service, spec in compose.pushwarden():
        env = environment(spec)
        url_name = f"PUSHWARDEN_{service.upper()}_DATABASE_URL"
        url = urlsplit(env.get(url_name, ""))
        database = url.path.lstrip("/")
        if url.hostname != DATABASE:
            problems.append(f"{service}: {url_name} must point at the {DATABASE} service")
        elif database in databases:
            problems.append(
                f"{service}: {url_name} uses database {database!r}, "
                f"which {databases[database]} already uses"
            )
        else:
            databases[database] = service
        for name, value in env.items():
            peer = name.removeprefix(f"PUSHWARDEN_{service.upper()}_").removesuffix("_ADDR")
            if not name.endswith("_ADDR") or peer.lower() not in SERVICE_CONFIGS:
                continue
            problems.extend(_address_problems(compose, service, name, value, peer.lower()))
    return problems


def _address_problems(
    compose: Compose, service: str, name: str, value: str, peer: str
) -> list[str]:
    target = value.removeprefix("dns:///")
    host, _, port = target.rpartition(":")
    peer_spec = compose.services.get(peer)
    if not isinstance(peer_spec, Mapping):
        return []  # reported as a missing service
    listen = container_port(peer, peer_spec)
    if host != peer or _int(port) != listen:
        return [f"{service}: {name}={value} should be {peer}:{listen}"]
    return []


def interpolate(value: str) -> str:
    """``value`` as compose would pass it: ``${VAR:-default}`` becomes the default, any
    other variable a stand-in for what the operator supplies, ``$$`` a dollar."""

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        operator, default = match.group(2), match.group(3)
        return default if operator in (":-", "-") else OPERATOR_VALUE

    return _INTERPOLATION.sub(replace, value)


def check_config_loads(compose: Compose) -> list[str]:
    """Each service's environment is accepted by its config class, as at start."""
    problems = []
    for service, spec in compose.pushwarden():
        env = {name: interpolate(value) for name, value in environment(spec).items()}
        known = known_variables(service)
        if any(name.startswith("PUSHWARDEN_") and name not in known for name in env):
            continue  # check_environment has named the unknown variable already
        # Files are paths inside the container, which this host cannot see.
        env = {name: value for name, value in env.items() if name not in file_settings(service)}
        try:
            load_config(SERVICE_CONFIGS[service], service, environ=env)
        except ConfigError as error:
            problems.append(f"{service}: {error}")
    return problems


# --- the sandbox --------------------------------------------------------------------

SANDBOX_PROFILE = "sandbox"
FAKES = {"fake-apns": "apns", "fake-fcm": "fcm"}
SANDBOX_MODULE = ("python", "-m", "pushwarden.sandbox")
SANDBOX_OVERRIDE = ROOT / "deploy" / "compose.sandbox.yml"
CA_VARIABLES = ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE")
_ENTRYPOINT = re.compile(r"^\s*ENTRYPOINT\s+(\[.*\])\s*$", re.MULTILINE)


def _argument(argv: Sequence[str], flag: str) -> str | None:
    """The value after ``flag`` in ``argv`` (None when absent)."""
    for index, part in enumerate(argv[:-1]):
        if part == flag:
            return argv[index + 1]
    return None


def _list(value: Any) -> list[str]:
    if value is None:
        return []
    return [str(part) for part in value] if isinstance(value, list) else str(value).split()


def volume_mounts(spec: Mapping[str, Any]) -> dict[str, str]:
    """``{container path: source}`` of a service's short-syntax volumes."""
    mounts = {}
    for entry in spec.get("volumes") or []:
        if isinstance(entry, Mapping):
            mounts[str(entry.get("target"))] = str(entry.get("source"))
            continue
        parts = str(entry).split(":")
        if len(parts) >= 2:
            mounts[parts[1]] = parts[0]
    return mounts


def _mount_of(mounts: Mapping[str, str], path: str) -> tuple[str, str] | None:
    """The ``(container path, source)`` mount that holds ``path``."""
    for target, source in sorted(mounts.items(), key=lambda item: -len(item[0])):
        if path == target or path.startswith(target.rstrip("/") + "/"):
            return target, source
    return None


def _dockerfile_entrypoint(compose: Compose, spec: Mapping[str, Any]) -> list[str] | None:
    build = spec.get("build")
    if not isinstance(build, Mapping) or "dockerfile" not in build:
        return None
    dockerfile = compose.path.parent / str(build.get("context", ".")) / str(build["dockerfile"])
    if not dockerfile.is_file():
        return None
    found = _ENTRYPOINT.findall(dockerfile.read_text(encoding="utf-8"))
    return [str(part) for part in json.loads(found[-1])] if found else None


def check_sandbox(compose: Compose) -> list[str]:
    """The fakes are the sandbox profile, run the sandbox module on the port they publish
    and probe, keep state on a named volume, and start one at a time on a shared one
    (checked with the sandbox override only)."""
    if compose.override is None:
        return []
    problems = []
    for service, spec in compose.services.items():
        if not isinstance(spec, Mapping) or service in FAKES:
            continue
        if spec.get("profiles"):
            problems.append(
                f"{service}: is in profiles {list(spec['profiles'])}, so a plain "
                "`docker compose up` would not start it (only the fakes are a profile)"
            )
    state_volumes: dict[str, list[str]] = {}
    for fake, provider in FAKES.items():
        spec = compose.services.get(fake)
        if not isinstance(spec, Mapping):
            problems.append(f"service {fake!r} is missing (the fake {provider.upper()})")
            continue
        if _list(spec.get("profiles")) != [SANDBOX_PROFILE]:
            problems.append(f"{fake}: must be in the profile {SANDBOX_PROFILE!r} alone")
        entrypoint = _list(spec.get("entrypoint")) or _dockerfile_entrypoint(compose, spec)
        if entrypoint is None:
            problems.append(f"{fake}: needs a build whose Dockerfile has a JSON ENTRYPOINT")
            continue
        argv = entrypoint + _list(spec.get("command"))
        if tuple(argv[:3]) != SANDBOX_MODULE or argv[3:4] != [provider]:
            problems.append(
                f"{fake}: runs {' '.join(argv[:4])!r}, not "
                f"{' '.join((*SANDBOX_MODULE, provider))!r}"
            )
        port = _argument(argv, "--port")
        targets = [target for _, target in published_ports(spec)]
        if port is None or not port.isdigit() or targets != [int(port)]:
            problems.append(
                f"{fake}: listens on --port {port} but publishes container port(s) "
                f"{', '.join(map(str, targets)) or 'none'}"
            )
        command = healthcheck_command(spec) or ""
        if port is not None and f":{port}/" not in command:
            problems.append(f"{fake}: healthcheck does not probe its port {port}")
        state = _argument(argv, "--state-dir")
        mount = _mount_of(volume_mounts(spec), state or "")
        if state is None or mount is None or mount[0] != state or mount[1].startswith((".", "/")):
            problems.append(f"{fake}: --state-dir {state} is not a named volume's mount")
        else:
            state_volumes.setdefault(mount[1], []).append(fake)
    for volume, fakes in state_volumes.items():
        for first, second in itertools.pairwise(fakes):
            if first not in dependencies(compose.services[second]):
                problems.append(
                    f"{second}: shares the volume {volume} with {first} but does not wait for "
                    f"it (depends_on), so both could write the TLS CA at once"
                )
    return problems


def check_sandbox_override(compose: Compose) -> list[str]:
    """The sandbox override points delivery, and only delivery, at the fakes."""
    if compose.override is None or compose.override_services is None:
        return []
    where = compose.override.name
    problems = [
        f"{where}: changes {service}; the sandbox override may change delivery only"
        for service in compose.override_services
        if service != "delivery"
    ]
    delivery = compose.services.get("delivery")
    if not isinstance(delivery, Mapping):
        return problems
    depends = dependencies(delivery)
    for fake in FAKES:
        if fake not in depends:
            problems.append(f"{where}: delivery must wait for {fake}")
    env = environment(delivery)
    mounts = volume_mounts(delivery)
    fake_volumes = {
        source
        for fake in FAKES
        if isinstance(compose.services.get(fake), Mapping)
        for source in volume_mounts(compose.services[fake]).values()
    }

    def on_state_volume(path: str) -> bool:
        mount = _mount_of(mounts, path)
        return mount is not None and mount[1] in fake_volumes

    for name in CA_VARIABLES:
        if not on_state_volume(env.get(name, "")):
            problems.append(
                f"{where}: delivery's {name} must name the fakes' CA on their state volume"
            )
    credentials = env.get("PUSHWARDEN_DELIVERY_CREDENTIALS", "")
    mount = _mount_of(mounts, credentials)
    if mount is None or not mount[1].startswith((".", "/")):
        problems.append(
            f"{where}: PUSHWARDEN_DELIVERY_CREDENTIALS must be a file of the repository "
            "mounted into delivery"
        )
        return problems
    source = (compose.path.parent / mount[1]).resolve()
    name = str(PurePosixPath(mount[1]))
    if not source.is_file():
        problems.append(f"{where}: the credentials file {name} does not exist")
        return problems
    try:
        apps = tomllib.loads(source.read_text(encoding="utf-8")).get("apps", {})
    except tomllib.TOMLDecodeError as error:
        return [*problems, f"{name}: not TOML ({error})"]
    if not apps:
        problems.append(f"{name}: no [apps.<app>] table")
    for app, tables in apps.items():
        for provider, fake in (("apns", "fake-apns"), ("fcm", "fake-fcm")):
            table = tables.get(provider) if isinstance(tables, Mapping) else None
            if not isinstance(table, Mapping):
                problems.append(f"{name}: apps.{app} has no {provider} table")
                continue
            peer = compose.services.get(fake)
            ports = [t for _, t in published_ports(peer)] if isinstance(peer, Mapping) else []
            expected = f"https://{fake}:{ports[0] if ports else '?'}"
            if table.get("endpoint") != expected:
                problems.append(
                    f"{name}: apps.{app}.{provider}.endpoint is "
                    f"{table.get('endpoint')!r}, not the fake's {expected!r}"
                )
            key = "key_file" if provider == "apns" else "service_account_file"
            if not on_state_volume(str(table.get(key, ""))):
                problems.append(
                    f"{name}: apps.{app}.{provider}.{key} is not on the fakes' state volume"
                )
    return problems


CHECKS: tuple[Callable[[Compose], list[str]], ...] = (
    check_presence,
    check_environment,
    check_ports,
    check_loopback_ports,
    check_password_from_environment,
    check_dependencies,
    check_builds,
    check_healthchecks,
    check_wiring,
    check_config_loads,
    check_sandbox,
    check_sandbox_override,
)


def _services(path: Path) -> Mapping[str, Any]:
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as error:
        raise ValueError(f"cannot read: {error}") from error
    services = document.get("services") if isinstance(document, Mapping) else None
    if not isinstance(services, Mapping):
        raise ValueError("no 'services' mapping")
    return services


def merge_service(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """A service of an override file merged into the base one as compose merges them:
    environment and depends_on by key, volumes by container path, anything else replaced."""
    merged = dict(base)
    for key, value in override.items():
        if key == "environment":
            merged[key] = environment(base) | environment(override)
        elif key == "depends_on":
            merged[key] = {
                **{n: {"condition": c} for n, c in dependencies(base).items()},
                **{n: {"condition": c} for n, c in dependencies(override).items()},
            }
        elif key == "volumes":
            by_target = {str(v).split(":")[1]: v for v in base.get("volumes") or []}
            by_target |= {str(v).split(":")[1]: v for v in value or []}
            merged[key] = list(by_target.values())
        else:
            merged[key] = value
    return merged


def load(path: Path, override: Path | None = None) -> Compose:
    """Parse ``path`` (merged with ``override``); raises ValueError when either is not a
    compose file."""
    services = dict(_services(path))
    extra: Mapping[str, Any] | None = None
    if override is not None:
        try:
            extra = _services(override)
        except ValueError as error:
            raise ValueError(f"{override.name}: {error}") from error
        for name, spec in extra.items():
            base = services.get(name)
            services[name] = merge_service(base if isinstance(base, Mapping) else {}, spec or {})
    return Compose(
        path=path.resolve(),
        services=services,
        override=None if override is None else override.resolve(),
        override_services=extra,
    )


def problems_in(path: Path, override: Path | None = None) -> list[str]:
    """Every problem in the compose file at ``path`` (merged with ``override``; empty
    when it is consistent)."""
    try:
        compose = load(path, override)
    except ValueError as error:
        return [str(error)]
    return [problem for check in CHECKS for problem in check(compose)]


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit code."""
    parser = argparse.ArgumentParser(description="Validate docker-compose.yml.")
    parser.add_argument("file", nargs="?", type=Path, default=ROOT / "docker-compose.yml")
    parser.add_argument(
        "--override",
        type=Path,
        default=SANDBOX_OVERRIDE,
        help="override file checked merged into FILE (default: deploy/compose.sandbox.yml)",
    )
    parser.add_argument(
        "--no-sandbox",
        dest="override",
        action="store_const",
        const=None,
        help="check FILE alone, without the sandbox override and its checks",
    )
    args = parser.parse_args(argv)
    problems = problems_in(args.file, args.override)
    for problem in problems:
        print(f"{args.file}: {problem}")
    if problems:
        return 1
    if args.override is None:
        print(f"{args.file}: OK ({', '.join((DATABASE, *SERVICE_CONFIGS))})")
    else:
        names = ", ".join((DATABASE, *SERVICE_CONFIGS, *FAKES))
        print(f"{args.file} with {args.override.name}: OK ({names})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
