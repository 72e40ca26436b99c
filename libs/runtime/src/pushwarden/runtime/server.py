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

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc  # type: ignore[import-untyped]
from grpc_reflection.v1alpha import reflection  # type: ignore[import-untyped]

from pushwarden.runtime.auth import AuthInterceptor
from pushwarden.runtime.errors import ErrorInterceptor
from pushwarden.runtime.settings import ServerSettings, TlsSettings
from pushwarden.runtime.telemetry import Telemetry

logger = logging.getLogger(__name__)

HEALTH_SERVICE: str = health.SERVICE_NAME
REFLECTION_SERVICE: str = reflection.SERVICE_NAME

_SERVING = health_pb2.HealthCheckResponse.SERVING
_NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@dataclass(slots=True)
class RuntimeServer:
    """A bound gRPC server with its health servicer and the services it reports."""

    server: grpc.aio.Server
    port: int
    health: health.aio.HealthServicer
    service_names: tuple[str, ...]

    async def start(self) -> None:
        """Start serving and report every service (and the overall "") SERVING."""
        await self.server.start()
        for name in ("", *self.service_names):
            await self.health.set(name, _SERVING)

    async def stop(self, grace_s: float) -> None:
        """Report NOT_SERVING for everything first, then stop accepting new RPCs and
        give in-flight ones ``grace_s`` seconds to finish."""
        # enter_graceful_shutdown sets every known service NOT_SERVING and ignores
        # later updates, so nothing can flip health back to SERVING while draining.
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace_s)


def server_credentials(tls: TlsSettings) -> grpc.ServerCredentials:
    """TLS credentials from PEM files; mTLS (client certificate required) when a client
    CA is configured."""
    client_ca = tls.client_ca_file.read_bytes() if tls.client_ca_file else None
    return grpc.ssl_server_credentials(
        [(tls.key_file.read_bytes(), tls.cert_file.read_bytes())],
        root_certificates=client_ca,
        require_client_auth=client_ca is not None,
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
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (*service_names, HEALTH_SERVICE, REFLECTION_SERVICE), server
    )
    return RuntimeServer(server, _bind(server, settings), health_servicer, tuple(service_names))


class BindError(OSError):
    """The server could not listen on its address (in use, or not an address of ours)."""


def _bind(server: grpc.aio.Server, settings: ServerSettings) -> int:
    address = f"{settings.host}:{settings.port}"
    try:
        if settings.tls is None:
            port = server.add_insecure_port(address)
        else:
            port = server.add_secure_port(address, server_credentials(settings.tls))
    except RuntimeError as error:
        port = 0
        cause: Exception | None = error
    else:
        cause = None
    if port == 0:
        raise BindError(f"cannot listen on {address}: address in use or unavailable") from cause
    return port
