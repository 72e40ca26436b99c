"""Typed, frozen service configuration built once from ``PUSHWARDEN_<SERVICE>_*`` variables.

A service declares its settings as fields of a frozen dataclass that extends
:class:`ServiceConfig`; each field says its variable suffix, default and help text through
:func:`setting`. :func:`load_config` parses every field by its annotation and fails with one
:class:`ConfigError` line that names the variable and what is wrong, so a bad deployment
stops at start instead of misbehaving later. This module is the only place in Pushwarden
that reads ``os.environ``.

Example::

    @dataclass(frozen=True, kw_only=True)
    class ConsentConfig(ServiceConfig):
        SERVICE: ClassVar[str] = "consent"
        port: int = port_setting(50051)
        pseudonym_key: str | None = setting(None, help="HMAC key for ledger pseudonyms.")

    config = config_from_env_or_exit(ConsentConfig)
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import os
import re
import sys
import tomllib
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal, NoReturn, TypeVar

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from pushwarden.runtime.settings import (
    DEFAULT_MAX_MESSAGE_BYTES,
    CallerGrant,
    ClientTls,
    DatabaseSettings,
    LogSettings,
    ServerEnvNames,
    ServerSettings,
    TelemetrySettings,
    TlsSettings,
)

ENV_PREFIX = "PUSHWARDEN"
CONFIG_ERROR_EXIT_STATUS = 2
_META_KEY = "pushwarden.setting"

C = TypeVar("C", bound="ServiceConfig")


class ConfigError(ValueError):
    """A setting is missing or wrong. ``str()`` is one line: the variable, then the problem."""

    def __init__(self, env_name: str, problem: str) -> None:
        self.env_name = env_name
        self.problem = " ".join(problem.split())
        super().__init__(f"{env_name}: {self.problem}")


@dataclass(frozen=True, slots=True)
class _Setting:
    """What :func:`setting` attaches to a dataclass field."""

    help: str
    env: str | None
    minimum: float | None
    maximum: float | None
    must_exist: bool
    parse: Callable[[str], object] | None
    type_doc: str | None
    per_service_default: bool


@dataclass(frozen=True, slots=True)
class SettingDoc:
    """One row of a service's configuration table (README, compose checker)."""

    env_name: str
    type: str
    default: str
    help: str


def setting(
    default: Any = dataclasses.MISSING,
    *,
    help: str,
    env: str | None = None,
    minimum: float | None = None,
    maximum: float | None = None,
    must_exist: bool = False,
    parse: Callable[[str], object] | None = None,
    type_doc: str | None = None,
    per_service_default: bool = False,
) -> Any:
    """Declare a config field read from ``PUSHWARDEN_<SERVICE>_<env>``.

    ``env`` defaults to the field name in upper case. Without ``default`` the variable is
    required. ``minimum``/``maximum`` bound numbers (inclusive); ``must_exist`` makes a
    path setting fail when the file is absent; ``parse`` replaces the annotation-driven
    parser (it gets the raw text and raises ``ValueError`` with a short reason);
    ``type_doc`` names the type in the settings table when ``parse`` is used. With
    ``per_service_default`` a string default may contain ``{service}``.
    """
    meta = _Setting(
        help=help,
        env=env,
        minimum=minimum,
        maximum=maximum,
        must_exist=must_exist,
        parse=parse,
        type_doc=type_doc,
        per_service_default=per_service_default,
    )
    if isinstance(default, list | dict | set):
        raise TypeError("use a tuple or frozen value as a setting default")
    return dataclasses.field(default=default, metadata={_META_KEY: meta})


def port_setting(default: int) -> Any:
    """The PORT field with a service's own default port; subclasses redeclare ``port``."""
    return setting(
        default,
        help="TCP port the gRPC server listens on (0 picks a free port).",
        minimum=0,
        maximum=65535,
    )


# --- value parsers: raw text in, typed value out, ValueError(reason) on bad text -----------

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})
_SUPPORTED_DRIVERS = {
    "sqlite": "sqlite",
    "sqlite+pysqlite": "sqlite",
    "postgresql+psycopg": "postgresql+psycopg",
    "postgresql": "postgresql+psycopg",
}
_METHOD_PATTERN = re.compile(r"^(\*|/[A-Za-z_][\w.]*/(\*|[A-Za-z_]\w*))$")
_SHA256_PATTERN = re.compile(r"^[0-9a-fA-F]{64}$")


def _range_text(meta: _Setting) -> str:
    if meta.minimum is None and meta.maximum is None:
        return ""
    if meta.maximum is None:
        return f" (expected at least {_num(meta.minimum)})"
    if meta.minimum is None:
        return f" (expected at most {_num(meta.maximum)})"
    return f" (expected {_num(meta.minimum)}-{_num(meta.maximum)})"


def _num(value: float | None) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _check_range(value: float, raw: str, meta: _Setting) -> None:
    too_low = meta.minimum is not None and value < meta.minimum
    too_high = meta.maximum is not None and value > meta.maximum
    if too_low or too_high:
        raise ValueError(f"{raw!r} is out of range{_range_text(meta)}")


def _parse_int(raw: str, meta: _Setting) -> int:
    try:
        value = int(raw.strip().replace("_", ""), 10)
    except ValueError:
        raise ValueError(f"{raw!r} is not an integer{_range_text(meta)}") from None
    _check_range(value, raw, meta)
    return value


def _parse_float(raw: str, meta: _Setting) -> float:
    try:
        value = float(raw.strip())
    except ValueError:
        raise ValueError(f"{raw!r} is not a number{_range_text(meta)}") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise ValueError(f"{raw!r} is not a finite number{_range_text(meta)}")
    _check_range(value, raw, meta)
    return value


def _parse_bool(raw: str, meta: _Setting) -> bool:
    text = raw.strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(f"{raw!r} is not a boolean (expected true/false, 1/0, yes/no, on/off)")


def _parse_str(raw: str, meta: _Setting) -> str:
    return raw


def _parse_path(raw: str, meta: _Setting) -> Path:
    path = Path(raw).expanduser()
    if meta.must_exist and not path.is_file():
        raise ValueError(f"file {raw!r} does not exist")
    return path


def _parse_str_tuple(raw: str, meta: _Setting) -> tuple[str, ...]:
    return tuple(item.strip() for item in raw.split(",") if item.strip())


_SCALAR_PARSERS: dict[object, Callable[[str, _Setting], object]] = {
    int: _parse_int,
    float: _parse_float,
    bool: _parse_bool,
    str: _parse_str,
    Path: _parse_path,
    tuple[str, ...]: _parse_str_tuple,
}

_TYPE_NAMES: dict[object, str] = {
    int: "int",
    float: "float",
    bool: "bool",
    str: "string",
    Path: "path",
    tuple[str, ...]: "comma-separated list",
}


def _literal_parser(choices: tuple[str, ...]) -> Callable[[str, _Setting], object]:
    by_folded = {choice.lower(): choice for choice in choices}

    def parse(raw: str, meta: _Setting) -> str:
        try:
            return by_folded[raw.strip().lower()]
        except KeyError:
            raise ValueError(f"{raw!r} is not one of {', '.join(choices)}") from None

    return parse


def _unwrap_optional(annotation: object) -> tuple[object, bool]:
    """``X | None`` -> (X, True); anything else -> (annotation, False)."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
        if len(args) == 1 and len(typing.get_args(annotation)) == 2:
            return args[0], True
    return annotation, False


def _parser_for(annotation: object, meta: _Setting) -> Callable[[str, _Setting], object]:
    if meta.parse is not None:
        custom = meta.parse
        return lambda raw, _meta: custom(raw)
    base, _ = _unwrap_optional(annotation)
    if typing.get_origin(base) is Literal:
        return _literal_parser(tuple(str(arg) for arg in typing.get_args(base)))
    try:
        return _SCALAR_PARSERS[base]
    except KeyError:
        raise TypeError(f"no parser for setting type {base!r}; pass parse=...") from None


def _type_doc(annotation: object, meta: _Setting) -> str:
    if meta.type_doc is not None:
        return meta.type_doc
    base, optional = _unwrap_optional(annotation)
    if typing.get_origin(base) is Literal:
        text = "|".join(str(arg) for arg in typing.get_args(base))
    else:
        text = _TYPE_NAMES.get(base, getattr(base, "__name__", str(base)))
        if base in (int, float):
            text += _range_text(meta).replace(" (expected ", " ").rstrip(")")
    return f"{text} (optional)" if optional else text


# --- parsers for the base settings whose value is more than a scalar ------------------------


def parse_database_url(raw: str) -> str:
    """Check a SQLAlchemy URL names a supported driver; return it with the driver explicit.

    ``postgresql://`` means psycopg 3 (the only PostgreSQL driver installed). In-memory
    SQLite is refused: every pooled connection would see its own empty database.
    """
    try:
        url = make_url(raw.strip())
    except ArgumentError:
        raise ValueError(
            f"{raw!r} is not a database URL (expected sqlite:///path or "
            "postgresql+psycopg://user@host:port/db)"
        ) from None
    driver = _SUPPORTED_DRIVERS.get(url.drivername)
    if driver is None:
        raise ValueError(
            f"unsupported driver {url.drivername!r} (expected sqlite or postgresql+psycopg)"
        )
    if driver == "sqlite" and url.database in (None, "", ":memory:"):
        raise ValueError("in-memory SQLite is not supported (expected sqlite:///path/to/file.db)")
    if driver != "sqlite" and not url.database:
        raise ValueError("the PostgreSQL URL names no database")
    return url.set(drivername=driver).render_as_string(hide_password=False)


def load_caller_grants(raw: str) -> tuple[CallerGrant, ...]:
    """Read an auth tokens file (TOML) into caller grants.

    The file holds ``[[caller]]`` tables with ``name``, ``methods`` (a list of full method
    names, ``/pkg.Service/*`` or ``*``) and either ``token_sha256`` (hex digest of the bearer
    token; what production files carry) or ``token`` (the token itself, for development).
    """
    path = Path(raw).expanduser()
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"file {raw!r} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read {raw!r}: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{raw}: invalid TOML: {exc}") from None
    unknown = set(document) - {"caller"}
    if unknown:
        raise ValueError(
            f"{raw}: unknown top-level key(s) {', '.join(sorted(unknown))} "
            "(expected [[caller]] tables)"
        )
    entries = document.get("caller")
    if not isinstance(entries, list) or not entries:
        raise ValueError(f"{raw}: defines no [[caller]] table")
    grants = tuple(_caller_grant(entry, index, raw) for index, entry in enumerate(entries, 1))
    _reject_duplicates(grants, raw)
    return grants


def _caller_grant(entry: object, index: int, source: str) -> CallerGrant:
    where = f"{source}: caller #{index}"
    if not isinstance(entry, dict):
        raise ValueError(f"{where} is not a table")
    unknown = set(entry) - {"name", "token", "token_sha256", "methods", "apps"}
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
    name = entry.get("name")
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"{where}: 'name' must be a non-empty string")
    where = f"{source}: caller {name!r}"
    token, digest = entry.get("token"), entry.get("token_sha256")
    if (token is None) == (digest is None):
        raise ValueError(f"{where}: give exactly one of 'token_sha256' or 'token'")
    if token is not None:
        if not isinstance(token, str) or len(token) < 8:
            raise ValueError(f"{where}: 'token' must be a string of at least 8 characters")
        digest = hashlib.sha256(token.encode()).hexdigest()
    if not isinstance(digest, str) or not _SHA256_PATTERN.match(digest):
        raise ValueError(f"{where}: 'token_sha256' must be 64 hex digits")
    methods = entry.get("methods")
    if not isinstance(methods, list) or not methods:
        raise ValueError(f"{where}: 'methods' must be a non-empty list")
    for method in methods:
        if not isinstance(method, str) or not _METHOD_PATTERN.match(method):
            raise ValueError(
                f"{where}: method {method!r} is not '*', '/pkg.Service/*' or '/pkg.Service/Method'"
            )
    apps = entry.get("apps", ["*"])
    if (
        not isinstance(apps, list)
        or not apps
        or not all(isinstance(app, str) and app.strip() == app and app for app in apps)
    ):
        raise ValueError(f"{where}: 'apps' must be a non-empty list of app ids or '*'")
    return CallerGrant(
        name=name, token_sha256=digest.lower(), methods=tuple(methods), apps=tuple(apps)
    )


def _reject_duplicates(grants: tuple[CallerGrant, ...], source: str) -> None:
    names: set[str] = set()
    digests: set[str] = set()
    for grant in grants:
        if grant.name in names:
            raise ValueError(f"{source}: caller name {grant.name!r} appears twice")
        if grant.token_sha256 in digests:
            raise ValueError(f"{source}: caller {grant.name!r} reuses another caller's token")
        names.add(grant.name)
        digests.add(grant.token_sha256)


# --- the base config -----------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class ServiceConfig:
    """Settings every Pushwarden service reads; services subclass it to add their own.

    Subclasses set ``SERVICE`` (the name in ``PUSHWARDEN_<SERVICE>_*`` and in the default
    database file) and redeclare ``port`` with :func:`port_setting` to give their default
    port. Override :meth:`validate` (calling ``super().validate()``) for rules that span
    several settings.
    """

    SERVICE: ClassVar[str] = ""
    # Refuse unknown PUSHWARDEN_<SERVICE>_* variables: a misspelt name otherwise goes unseen.
    STRICT_ENV: ClassVar[bool] = True

    service: str = dataclasses.field(default="")
    host: str = setting("0.0.0.0", help="Address the gRPC server binds.")
    port: int = port_setting(0)
    database_url: str = setting(
        "sqlite:///var/{service}.db",
        help="SQLAlchemy URL: sqlite:///path (relative to the working directory; "
        "the directory is created) or postgresql+psycopg://user:password@host:port/db.",
        parse=parse_database_url,
        type_doc="database URL",
        per_service_default=True,
    )
    db_pool_size: int = setting(5, help="Database connections per process.", minimum=1, maximum=50)
    max_message_bytes: int = setting(
        DEFAULT_MAX_MESSAGE_BYTES,
        help="Largest gRPC message received or sent, in bytes.",
        minimum=1024,
        maximum=2**31 - 1,
    )
    grace_period_s: float = setting(
        10.0,
        help="Seconds in-flight RPCs get to finish after SIGTERM/SIGINT.",
        minimum=0,
        maximum=3600,
    )
    # setting() returns a dataclasses.field, which ruff's RUF009 does not recognise.
    tls_cert: Path | None = setting(  # noqa: RUF009
        None, help="PEM server certificate; enables TLS.", must_exist=True
    )
    tls_key: Path | None = setting(  # noqa: RUF009
        None, help="PEM private key of TLS_CERT.", must_exist=True
    )
    tls_client_ca: Path | None = setting(  # noqa: RUF009
        None,
        help="PEM CA that client certificates must chain to; enables mTLS "
        "(needs TLS_CERT and TLS_KEY).",
        must_exist=True,
    )
    peer_ca: Path | None = setting(  # noqa: RUF009
        None,
        help="PEM CA certificate(s) of the services this one calls (its *_ADDR targets); "
        "when set, those calls use TLS verified against it (plain text when unset), and "
        "TLS_CERT/TLS_KEY, when set, are offered to peers that require client "
        "certificates. make run's readiness probe trusts it too.",
        must_exist=True,
    )
    peer_token_file: Path | None = setting(  # noqa: RUF009
        None,
        help="File holding the bearer token this service presents to the services it "
        "calls (its *_ADDR targets; one line); needed once they have auth on, where the "
        "token's caller must be granted the RPCs this service calls.",
        must_exist=True,
    )
    callers: tuple[CallerGrant, ...] = setting(
        (),
        env="AUTH_TOKENS_FILE",
        parse=load_caller_grants,
        type_doc="path (TOML)",
        help="TOML file of [[caller]] name, token_sha256 (or token), methods, apps; "
        "auth is on when set, off when unset.",
    )
    otel_exporter: Literal["none", "console", "otlp"] = setting(
        "none", help="OpenTelemetry traces and metrics exporter."
    )
    otel_endpoint: str | None = setting(
        None, help="OTLP gRPC endpoint (e.g. http://collector:4317); required with otlp."
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = setting(
        "INFO", help="Lowest log level written."
    )
    log_format: Literal["json", "text"] = setting(
        "json", help="Log lines on stderr: one JSON object a line, or text for people."
    )
    clock_file: Path | None = setting(  # noqa: RUF009
        None,
        help="Tests and the demo only: a JSON file (offset_s, speed) that shifts or speeds "
        "up the service's clock, re-read when it changes. Production leaves it unset.",
    )

    def env_name(self, field_name: str) -> str:
        """The variable a field of this config is read from."""
        return env_name_for(type(self), self.service, field_name)

    def validate(self) -> None:
        """Check rules that span settings; raise :class:`ConfigError` naming the variable."""
        if (self.tls_cert is None) != (self.tls_key is None):
            missing, present = (
                ("tls_key", "tls_cert") if self.tls_key is None else ("tls_cert", "tls_key")
            )
            raise ConfigError(
                self.env_name(missing), f"required when {self.env_name(present)} is set"
            )
        if self.tls_client_ca is not None and self.tls_cert is None:
            raise ConfigError(
                self.env_name("tls_client_ca"),
                f"requires {self.env_name('tls_cert')} and "
                f"{self.env_name('tls_key')} (mTLS is TLS with client "
                "certificates)",
            )
        if self.otel_exporter == "otlp" and not self.otel_endpoint:
            raise ConfigError(
                self.env_name("otel_endpoint"),
                f"required when {self.env_name('otel_exporter')}=otlp",
            )
        if self.peer_token_file is not None and self.peer_token() is None:
            raise ConfigError(self.env_name("peer_token_file"), "the file holds no token")

    def server_settings(self) -> ServerSettings:
        """What the gRPC server bootstrap needs."""
        tls = None
        if self.tls_cert is not None and self.tls_key is not None:
            tls = TlsSettings(self.tls_cert, self.tls_key, self.tls_client_ca)
        return ServerSettings(
            host=self.host,
            port=self.port,
            max_message_bytes=self.max_message_bytes,
            grace_period_s=self.grace_period_s,
            tls=tls,
            callers=self.callers,
            env_names=ServerEnvNames(
                host=self.env_name("host"),
                port=self.env_name("port"),
                tls_cert=self.env_name("tls_cert"),
                tls_key=self.env_name("tls_key"),
                tls_client_ca=self.env_name("tls_client_ca"),
            ),
        )

    def peer_tls(self) -> ClientTls | None:
        """How this service's clients reach its peers: TLS trusting ``PEER_CA`` (with the
        service's own certificate as client certificate when it has one), or None for
        plain text."""
        if self.peer_ca is None:
            return None
        return ClientTls(self.peer_ca, cert_file=self.tls_cert, key_file=self.tls_key)

    def peer_token(self) -> str | None:
        """The bearer token for calls to peers (``PEER_TOKEN_FILE``), or None."""
        if self.peer_token_file is None:
            return None
        return self.peer_token_file.read_text(encoding="utf-8").strip() or None

    def telemetry_settings(self) -> TelemetrySettings:
        """What telemetry set-up needs; the OTel service name is ``pushwarden-<service>``."""
        return TelemetrySettings(
            service_name=f"pushwarden-{self.service}",
            exporter=self.otel_exporter,
            otlp_endpoint=self.otel_endpoint,
        )

    def log_settings(self) -> LogSettings:
        """What :func:`pushwarden.runtime.logs.configure_logging` needs."""
        return LogSettings(level=self.log_level, format=self.log_format)

    def database_settings(self) -> DatabaseSettings:
        """What :func:`pushwarden.runtime.db.create_engine_for` needs."""
        return DatabaseSettings(url=self.database_url, pool_size=self.db_pool_size)


# --- loading -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _FieldSpec:
    name: str
    env_name: str
    annotation: object
    meta: _Setting
    default: object


def _service_name(cls: type[ServiceConfig], service: str | None) -> str:
    name = service if service is not None else cls.SERVICE
    if not name or not re.fullmatch(r"[a-z][a-z0-9_]*", name):
        raise TypeError(
            f"{cls.__name__}: give a service name like 'consent' "
            "(set SERVICE on the class or pass service=...)"
        )
    return name


def _field_specs(cls: type[ServiceConfig], service: str) -> list[_FieldSpec]:
    hints = typing.get_type_hints(cls)
    specs = []
    for fld in dataclasses.fields(cls):
        meta = fld.metadata.get(_META_KEY)
        if not isinstance(meta, _Setting):
            continue
        suffix = meta.env or fld.name.upper()
        default = fld.default
        if meta.per_service_default and isinstance(default, str):
            default = default.format(service=service)
        specs.append(
            _FieldSpec(
                fld.name, f"{ENV_PREFIX}_{service.upper()}_{suffix}", hints[fld.name], meta, default
            )
        )
    return specs


def env_name_for(cls: type[ServiceConfig], service: str, field_name: str) -> str:
    """The variable that ``field_name`` of ``cls`` is read from for ``service``."""
    for spec in _field_specs(cls, service):
        if spec.name == field_name:
            return spec.env_name
    raise KeyError(f"{cls.__name__} has no setting {field_name!r}")


def _parse_field(spec: _FieldSpec, raw: str | None) -> object:
    # An empty variable counts as unset: compose files and shells often export "".
    if raw is None or not raw.strip():
        if spec.default is dataclasses.MISSING:
            raise ConfigError(spec.env_name, "required but not set")
        return spec.default
    parser = _parser_for(spec.annotation, spec.meta)
    try:
        return parser(raw, spec.meta)
    except ValueError as exc:
        raise ConfigError(spec.env_name, str(exc)) from None


def _reject_unknown(specs: list[_FieldSpec], service: str, environ: Mapping[str, str]) -> None:
    prefix = f"{ENV_PREFIX}_{service.upper()}_"
    known = {spec.env_name for spec in specs}
    for name in sorted(environ):
        if name.startswith(prefix) and name not in known:
            close = difflib.get_close_matches(name, sorted(known), n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise ConfigError(name, f"unknown setting{hint}")
        misspelt = misspelt_service_prefix(name, service)
        if misspelt is not None:
            meant = prefix + name.removeprefix(f"{ENV_PREFIX}_{misspelt}_")
            hint = f"did you mean {meant}?" if meant in known else f"settings of it start {prefix}"
            raise misspelt_service_error(name, misspelt, service, hint)


def misspelt_service_error(name: str, misspelt: str, service: str, hint: str) -> ConfigError:
    """The one line that refuses ``name``, whose prefix ``misspelt`` is a near miss of
    ``service``; ``hint`` says what was probably meant."""
    return ConfigError(
        name,
        f"unknown setting: {misspelt} looks like a misspelling of the service "
        f"name {service.upper()} ({hint})",
    )


def _edit_distance(a: str, b: str) -> int:
    """Edits (insert, delete, substitute, swap two neighbours) that turn ``a`` into ``b``."""
    rows = [list(range(len(b) + 1))]
    for i, left in enumerate(a, 1):
        row = [i]
        for j, right in enumerate(b, 1):
            best = min(rows[-1][j] + 1, row[j - 1] + 1, rows[-1][j - 1] + (left != right))
            if i > 1 and j > 1 and left == b[j - 2] and a[i - 2] == right:
                best = min(best, rows[-2][j - 2] + 1)
            row.append(best)
        rows.append(row)
    return rows[-1][-1]


def misspelt_service_prefix(name: str, service: str) -> str | None:
    """The service part of ``PUSHWARDEN_<part>_...`` when it is one or two edits from
    ``service`` (one for names of four letters or fewer), else None.

    ``PUSHWARDEN_CONSNET_PORT`` is meant for consent, which would otherwise never look at
    it: the misspelt prefix hides the variable from the unknown-setting check.
    """
    head = f"{ENV_PREFIX}_"
    if not name.startswith(head):
        return None
    rest = name.removeprefix(head)
    # A service name may hold underscores, so try every cut before one.
    parts = [rest[:cut] for cut, char in enumerate(rest) if char == "_" and cut]
    if service.upper() in parts:
        return None
    allowed = 1 if len(service) <= 4 else 2
    scored = [(_edit_distance(part.lower(), service), part) for part in parts]
    near = [(distance, part) for distance, part in scored if 0 < distance <= allowed]
    return min(near)[1] if near else None


def load_config(
    cls: type[C], service: str | None = None, environ: Mapping[str, str] | None = None
) -> C:
    """Build ``cls`` from ``PUSHWARDEN_<SERVICE>_*`` variables (``os.environ`` by default).

    Raises :class:`ConfigError` for the first bad, missing or unknown variable.
    """
    name = _service_name(cls, service)
    env = os.environ if environ is None else environ
    specs = _field_specs(cls, name)
    if cls.STRICT_ENV:
        _reject_unknown(specs, name, env)
    values: dict[str, Any] = {
        spec.name: _parse_field(spec, env.get(spec.env_name)) for spec in specs
    }
    config = cls(service=name, **values)
    config.validate()
    return config


def config_from_env_or_exit(
    cls: type[C], service: str | None = None, environ: Mapping[str, str] | None = None
) -> C:
    """:func:`load_config`, or print the one-line error to stderr and exit with status 2."""
    try:
        return load_config(cls, service, environ)
    except ConfigError as exc:
        exit_with_config_error(exc)


def exit_with_config_error(exc: ConfigError) -> NoReturn:
    """Print ``exc`` as one line on stderr and end the process with status 2."""
    print(str(exc), file=sys.stderr, flush=True)
    raise SystemExit(CONFIG_ERROR_EXIT_STATUS)


def settings_table(cls: type[ServiceConfig], service: str | None = None) -> list[SettingDoc]:
    """Every variable ``cls`` reads for ``service`` (base settings included), in field order."""
    name = _service_name(cls, service)
    return [
        SettingDoc(
            env_name=spec.env_name,
            type=_type_doc(spec.annotation, spec.meta),
            default=_default_doc(spec.default),
            help=spec.meta.help,
        )
        for spec in _field_specs(cls, name)
    ]


def _default_doc(default: object) -> str:
    if default is dataclasses.MISSING:
        return "(required)"
    if default is None or default == ():
        return "(unset)"
    return str(default)


def settings_markdown(configs: Sequence[tuple[type[ServiceConfig], str | None]]) -> str:
    """A Markdown table of every variable the given configs read (for the README).

    ``configs`` pairs each config class with its service name (None: the class's own).
    """
    lines = ["| variable | type | default | meaning |", "|---|---|---|---|"]
    for cls, service in configs:
        for doc in settings_table(cls, service):
            cells = (f"`{doc.env_name}`", doc.type, f"`{doc.default}`", doc.help)
            lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(lines) + "\n"
