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
  ``${VAR}`` as a value the operator supplies.

Prints one line per problem and exits 1, or prints a summary and exits 0.
"""

from __future__ import annotations

import argparse
import difflib
import ipaddress
import re
import sys
import tomllib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
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
    """The parts of a compose file the checks read."""

    path: Path
    services: Mapping[str, Any]

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
)


def load(path: Path) -> Compose:
    """Parse ``path``; raises ValueError when it is not a compose file."""
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as error:
        raise ValueError(f"cannot read: {error}") from error
    services = document.get("services") if isinstance(document, Mapping) else None
    if not isinstance(services, Mapping):
        raise ValueError("no 'services' mapping")
    return Compose(path=path.resolve(), services=services)


def problems_in(path: Path) -> list[str]:
    """Every problem in the compose file at ``path`` (empty when it is consistent)."""
    try:
        compose = load(path)
    except ValueError as error:
        return [str(error)]
    return [problem for check in CHECKS for problem in check(compose)]


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit code."""
    parser = argparse.ArgumentParser(description="Validate docker-compose.yml.")
    parser.add_argument("file", nargs="?", type=Path, default=ROOT / "docker-compose.yml")
    args = parser.parse_args(argv)
    problems = problems_in(args.file)
    for problem in problems:
        print(f"{args.file}: {problem}")
    if problems:
        return 1
    print(f"{args.file}: OK ({', '.join((DATABASE, *SERVICE_CONFIGS))})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
