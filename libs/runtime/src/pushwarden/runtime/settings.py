"""Typed settings that the runtime's parts hand to each other.

`pushwarden.runtime.config` builds these once from the environment; the server,
telemetry and database modules only ever receive them as arguments, so nothing but
the config module reads ``os.environ``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

DEFAULT_MAX_MESSAGE_BYTES = 8 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class TlsSettings:
    """Server-side TLS. With ``client_ca_file`` set, clients must present a certificate
    signed by that CA (mTLS): a client without one fails the handshake."""

    cert_file: Path
    key_file: Path
    client_ca_file: Path | None = None


@dataclass(frozen=True, slots=True)
class ClientTls:
    """Client-side TLS: the CA that signed the server's certificate, and a client
    certificate and key for servers that require mTLS."""

    ca_file: Path
    cert_file: Path | None = None
    key_file: Path | None = None
    server_name_override: str | None = None


@dataclass(frozen=True, slots=True)
class CallerGrant:
    """One caller allowed to use a service: the SHA-256 (hex) of its bearer token and the
    methods it may call. A method entry is a full method name
    (``/pushwarden.consent.v1.ConsentService/CheckEligibility``), a service wildcard
    (``/pushwarden.consent.v1.ConsentService/*``) or ``*`` for every method.

    ``apps`` lists the app ids whose data the caller may touch; ``*`` (the default)
    covers every app, and is what the all-apps follower streams (``WatchChanges`` and
    ``StreamEvents`` with an empty ``app_id``) require."""

    name: str
    token_sha256: str
    methods: tuple[str, ...]
    apps: tuple[str, ...] = ("*",)


@dataclass(frozen=True, slots=True)
class ServerEnvNames:
    """The variables the server's settings came from, so that an address that cannot
    be bound or a certificate that cannot be read is reported like any other bad
    setting: one line naming the variable. The defaults are the generic names."""

    host: str = "PUSHWARDEN_<SERVICE>_HOST"
    port: str = "PUSHWARDEN_<SERVICE>_PORT"
    tls_cert: str = "PUSHWARDEN_<SERVICE>_TLS_CERT"
    tls_key: str = "PUSHWARDEN_<SERVICE>_TLS_KEY"
    tls_client_ca: str = "PUSHWARDEN_<SERVICE>_TLS_CLIENT_CA"


@dataclass(frozen=True, slots=True)
class ServerSettings:
    """How a service's gRPC server listens and whom it lets in.

    Auth is off when ``callers`` is empty (local development) and on as soon as one
    caller is configured; health checking and reflection always stay open.
    """

    host: str = "0.0.0.0"
    port: int = 0
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    grace_period_s: float = 10.0
    tls: TlsSettings | None = None
    callers: tuple[CallerGrant, ...] = ()
    env_names: ServerEnvNames = ServerEnvNames()


@dataclass(frozen=True, slots=True)
class TelemetrySettings:
    """OpenTelemetry export: off by default; ``console`` prints spans and metrics,
    ``otlp`` sends them to ``otlp_endpoint`` (gRPC)."""

    service_name: str
    exporter: Literal["none", "console", "otlp"] = "none"
    otlp_endpoint: str | None = None


@dataclass(frozen=True, slots=True)
class LogSettings:
    """Structured logs on stderr: one JSON object a line, or ``text`` for people."""

    level: str = "INFO"
    format: Literal["json", "text"] = "json"


@dataclass(frozen=True, slots=True)
class DatabaseSettings:
    """A SQLAlchemy URL: ``sqlite:///var/<service>.db`` by default, or
    ``postgresql+psycopg://...`` in production. Pools stay small: the PostgreSQL
    server allows 100 connections for every service together."""

    url: str
    pool_size: int = 5
    echo: bool = False
