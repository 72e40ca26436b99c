"""The gRPC server every Pushwarden service runs.

:func:`create_server` returns a bound, not yet started :class:`RuntimeServer`: explicit
message size limits, the standard health service, server reflection, optional TLS or
mTLS, and the interceptor chain

    telemetry -> auth -> errors -> handler

Telemetry is outermost so that every RPC, including one auth rejects, gets a span and
is counted with its final code. Auth comes before the error mapping because it decides
before any handler runs and rejects with its own status; the error interceptor is
innermost so that it sees exactly what the handler raised and telemetry then observes
the status it chose.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from grpc_health.v1 import health, health_pb2, health_pb2_grpc  # type: ignore[import-untyped]
from grpc_reflection.v1alpha import reflection  # type: ignore[import-untyped]

from pushwarden.runtime.auth import AuthInterceptor
from pushwarden.runtime.config import ConfigError
from pushwarden.runtime.errors import ErrorInterceptor
from pushwarden.runtime.settings import ServerEnvNames, ServerSettings, TlsSettings
from pushwarden.runtime.telemetry import Telemetry

logger = logging.getLogger(__name__)

HEALTH_SERVICE: str = health.SERVICE_NAME
REFLECTION_SERVICE: str = reflection.SERVICE_NAME

_SERVING = health_pb2.HealthCheckResponse.SERVING
_NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class HealthServicer(health.aio.HealthServicer):  # type: ignore[misc]
    """The standard asyncio health servicer, plus ``List``.

    grpcio-health-checking's asyncio servicer inherits the generated ``List``, which
    raises ``NotImplementedError``: a caller got INTERNAL and the log a traceback. This
    one answers with a snapshot of every status it was told, NOT_SERVING for all of them
    once the server drains.
    """

    def __init__(self) -> None:
        super().__init__()
        self._listed: dict[str, int] = {"": _SERVING}
        self._draining = False

    async def set(self, service: str, status: int) -> None:
        """Set the status of ``service`` ("" is the whole server); ignored once draining."""
        await super().set(service, status)
        if not self._draining:
            self._listed[service] = status

    async def enter_graceful_shutdown(self) -> None:
        """Report NOT_SERVING for every service from now on."""
        await super().enter_graceful_shutdown()
        self._draining = True
        self._listed = dict.fromkeys(self._listed, _NOT_SERVING)

    async def List(
        self,
        request: health_pb2.HealthListRequest,
        context: grpc.aio.ServicerContext[Any, Any] | None,
    ) -> health_pb2.HealthListResponse:
        """Every service's status at this moment, the whole server's ("") included
        (``context`` is unused: a direct call may pass None)."""
        return health_pb2.HealthListResponse(
            statuses={
                name: health_pb2.HealthCheckResponse(status=status)
                for name, status in self._listed.items()
            }
        )


@dataclass(slots=True)
class RuntimeServer:
    """A bound gRPC server with its health servicer and the services it reports."""

    server: grpc.aio.Server
    port: int
    health: HealthServicer
    service_names: tuple[str, ...]

    async def start(self) -> None:
        """Start serving and report every service (and the overall "") SERVING."""
        await self.server.start()
        for name in ("", *self.service_names):
            await self.health.set(name, _SERVING)

    async def stop(self, grace_s: float, *, draining: Callable[[], None] | None = None) -> None:
        """Report NOT_SERVING for everything first, then stop accepting new RPCs and
        give in-flight ones ``grace_s`` seconds to finish. ``draining`` runs once new
        RPCs are refused: it ends the long-lived streams (feeds), which would otherwise
        hold the stop for the whole grace period and then be cancelled mid-work."""
        # enter_graceful_shutdown sets every known service NOT_SERVING and ignores
        # later updates, so nothing can flip health back to SERVING while draining.
        await self.health.enter_graceful_shutdown()
        if draining is None:
            await self.server.stop(grace_s)
            return
        stopping = asyncio.ensure_future(self.server.stop(grace_s))
        await asyncio.sleep(0)  # the server's stop begins: new RPCs are refused
        draining()
        await stopping


def _read_pem(path: Path, env_name: str, what: str) -> bytes:
    """The bytes of a PEM file, or a :class:`ConfigError` naming its setting."""
    try:
        data = path.read_bytes()
    except OSError as error:
        reason = error.strerror or str(error)
        raise ConfigError(env_name, f"cannot read {what} {str(path)!r}: {reason}") from None
    return data


def _certificates(data: bytes, path: Path, env_name: str) -> list[x509.Certificate]:
    try:
        return x509.load_pem_x509_certificates(data)
    except ValueError:
        raise ConfigError(
            env_name, f"{str(path)!r} holds no PEM certificate that can be read"
        ) from None


def _check_key_pair(tls: TlsSettings, key: bytes, cert: bytes, names: ServerEnvNames) -> None:
    """Refuse a key gRPC could not load, or one that is not the certificate's: gRPC
    itself only says that the port could not be added."""
    try:
        private_key = serialization.load_pem_private_key(key, password=None)
    except TypeError:
        raise ConfigError(
            names.tls_key, f"{str(tls.key_file)!r} is encrypted (gRPC needs an unencrypted key)"
        ) from None
    except (ValueError, UnsupportedAlgorithm):
        raise ConfigError(
            names.tls_key, f"{str(tls.key_file)!r} holds no PEM private key that can be read"
        ) from None
    leaf = _certificates(cert, tls.cert_file, names.tls_cert)[0]
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    if private_key.public_key().public_bytes(der, public) != leaf.public_key().public_bytes(
        der, public
    ):
        raise ConfigError(
            names.tls_key,
            f"{str(tls.key_file)!r} is not the private key of the certificate in "
            f"{names.tls_cert} ({str(tls.cert_file)!r})",
        )


def server_credentials(
    tls: TlsSettings, env_names: ServerEnvNames | None = None
) -> grpc.ServerCredentials:
    """TLS credentials from PEM files; mTLS (client certificate required) when a client
    CA is configured. A file that cannot be read, or a key that is not the certificate's,
    is a :class:`ConfigError` naming its setting (``env_names``)."""
    names = env_names or ServerEnvNames()
    key = _read_pem(tls.key_file, names.tls_key, "private key")
    cert = _read_pem(tls.cert_file, names.tls_cert, "certificate")
    _check_key_pair(tls, key, cert, names)
    client_ca = None
    if tls.client_ca_file is not None:
        client_ca = _read_pem(tls.client_ca_file, names.tls_client_ca, "CA certificate")
        _certificates(client_ca, tls.client_ca_file, names.tls_client_ca)
    return grpc.ssl_server_credentials(
        [(key, cert)], root_certificates=client_ca, require_client_auth=client_ca is not None
    )


def server_options(settings: ServerSettings) -> list[tuple[str, int]]:
    """Channel arguments of the server: explicit message size limits both ways, and no
    port sharing (a second process on the same port must fail, not split traffic)."""
    return [
        ("grpc.max_send_message_length", settings.max_message_bytes),
        ("grpc.max_receive_message_length", settings.max_message_bytes),
        ("grpc.so_reuseport", 0),
    ]


def build_interceptors(
    settings: ServerSettings,
    telemetry: Telemetry | None = None,
    extra: Sequence[grpc.aio.ServerInterceptor] = (),
) -> list[grpc.aio.ServerInterceptor]:
    """The interceptor chain in its fixed order (see the module docstring); ``extra``
    ones run innermost, after the error mapping has been set up around them."""
    chain: list[grpc.aio.ServerInterceptor] = []
    telemetry_interceptor = telemetry.server_interceptor() if telemetry else None
    if telemetry_interceptor is not None:
        chain.append(telemetry_interceptor)
    if settings.callers:
        chain.append(AuthInterceptor(settings.callers))
    chain.append(ErrorInterceptor())
    chain.extend(extra)
    return chain


def create_server(
    settings: ServerSettings,
    *,
    register: Callable[[grpc.aio.Server], None],
    service_names: Sequence[str],
    telemetry: Telemetry | None = None,
    interceptors_extra: Sequence[grpc.aio.ServerInterceptor] = (),
) -> RuntimeServer:
    """Build and bind (not start) a server; ``register`` adds the service's handlers and
    ``service_names`` are their full names (``pushwarden.consent.v1.ConsentService``)
    for health and reflection. Port 0 binds a free port, reported as ``.port``."""
    server = grpc.aio.server(
        interceptors=build_interceptors(settings, telemetry, interceptors_extra),
        options=server_options(settings),
    )
    register(server)
    health_servicer = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (*service_names, HEALTH_SERVICE, REFLECTION_SERVICE), server
    )
    return RuntimeServer(server, _bind(server, settings), health_servicer, tuple(service_names))


class BindError(ConfigError):
    """The server could not listen on its address (in use, or not an address of this
    host): a configuration error that names the PORT (or HOST) setting."""


def _bind_problem(host: str, port: int) -> tuple[bool, str]:
    """Why ``host:port`` cannot be bound, learnt by trying with a plain socket (gRPC only
    says it failed): ``(the host is at fault, reason)``."""
    try:
        infos = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror as error:
        return True, f"cannot resolve {host!r}: {error.strerror}"
    for family, kind, proto, _name, address in infos:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(address)
            except OSError as error:
                if error.errno == errno.EADDRINUSE:
                    return False, "address in use"
                if error.errno == errno.EADDRNOTAVAIL:
                    return True, "not an address of this host"
                if error.errno == errno.EACCES:
                    return False, "permission denied (ports below 1024 need privileges)"
                return False, error.strerror or str(error)
    return False, "address in use or unavailable"


def _bind(server: grpc.aio.Server, settings: ServerSettings) -> int:
    # An IPv6 literal needs brackets, or gRPC reads its last group as the port.
    bare = settings.host.strip("[]")
    address = f"[{bare}]:{settings.port}" if ":" in bare else f"{bare}:{settings.port}"
    names = settings.env_names
    credentials = server_credentials(settings.tls, names) if settings.tls is not None else None
    try:
        if credentials is None:
            port = server.add_insecure_port(address)
        else:
            port = server.add_secure_port(address, credentials)
    except RuntimeError as error:
        port = 0
        cause: Exception | None = error
    else:
        cause = None
    if port == 0:
        host_at_fault, reason = _bind_problem(bare, settings.port)
        raise BindError(
            names.host if host_at_fault else names.port, f"cannot listen on {address}: {reason}"
        ) from cause
    return port
