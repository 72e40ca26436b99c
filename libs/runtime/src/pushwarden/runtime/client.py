"""Channels from one Pushwarden service to another.

:func:`open_channel` gives every call a deadline (the default when the caller set
none), the caller's bearer token, trace propagation, and transparent retries of
UNAVAILABLE for the methods declared idempotent only: retrying a non-idempotent call
could apply it twice.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.descriptor_pb2 import MethodOptions

from pushwarden.runtime._wrap import client_interceptors
from pushwarden.runtime.config import ServiceConfig
from pushwarden.runtime.settings import DEFAULT_MAX_MESSAGE_BYTES, ClientTls
from pushwarden.runtime.telemetry import Telemetry

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "CallDefaults",
    "ClientTls",
    "RetryPolicy",
    "channel_credentials",
    "idempotent_methods",
    "open_channel",
    "open_peer_channel",
    "service_config",
]

DEFAULT_TIMEOUT_S = 5.0


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """gRPC's transparent retry for UNAVAILABLE (exponential backoff with jitter)."""

    max_attempts: int = 4
    initial_backoff_s: float = 0.1
    max_backoff_s: float = 2.0
    backoff_multiplier: float = 2.0


def _method_name_entry(method: str) -> dict[str, str]:
    """A service-config ``name`` entry for ``/pkg.Service/Method`` or
    ``/pkg.Service/*``."""
    service, _, name = method.lstrip("/").rpartition("/")
    if not service:
        raise ValueError(f"not a full method name: {method!r}")
    return {"service": service} if name == "*" else {"service": service, "method": name}


_RETRY_SAFE_LEVELS = frozenset({MethodOptions.NO_SIDE_EFFECTS, MethodOptions.IDEMPOTENT})


def idempotent_methods(service: ServiceDescriptor) -> tuple[str, ...]:
    """The full names (``/pkg.Service/Method``) of the RPCs a contract declares safe to
    retry: ``option idempotency_level`` NO_SIDE_EFFECTS or IDEMPOTENT. RPCs that need an
    idempotency key leave the level unset and are never retried by the channel."""
    return tuple(
        f"/{service.full_name}/{method.name}"
        for method in service.methods
        if method.GetOptions().idempotency_level in _RETRY_SAFE_LEVELS
    )


def service_config(idempotent_methods: Sequence[str], retry: RetryPolicy) -> str:
    """The channel's service config (JSON): calls spread round robin over every address
    the target resolves to (``dns:///name:port`` of several replicas; gRPC's default
    would send every call to the first), and a retry policy for the idempotent methods."""
    balance: list[dict[str, dict[str, str]]] = [{"round_robin": {}}]
    if not idempotent_methods:
        return json.dumps({"loadBalancingConfig": balance, "methodConfig": []})
    return json.dumps(
        {
            "loadBalancingConfig": balance,
            "methodConfig": [
                {
                    "name": [_method_name_entry(m) for m in idempotent_methods],
                    "retryPolicy": {
                        "maxAttempts": retry.max_attempts,
                        "initialBackoff": f"{retry.initial_backoff_s}s",
                        "maxBackoff": f"{retry.max_backoff_s}s",
                        "backoffMultiplier": retry.backoff_multiplier,
                        "retryableStatusCodes": ["UNAVAILABLE"],
                    },
                }
            ],
        }
    )


class CallDefaults:
    """Fills in what a call left out: the default deadline and the bearer token (a
    :class:`~pushwarden.runtime._wrap.ClientHook`)."""

    def __init__(self, default_timeout_s: float, token: str | None) -> None:
        self._timeout = default_timeout_s
        self._authorization = f"Bearer {token}" if token else None

    def _complete(self, details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
        metadata = details.metadata
        if self._authorization is not None:
            metadata = grpc.aio.Metadata(*(metadata or ()))
            if metadata.get("authorization") is None:
                metadata["authorization"] = self._authorization
        timeout = self._timeout if details.timeout is None else details.timeout
        return grpc.aio.ClientCallDetails(
            details.method, timeout, metadata, details.credentials, details.wait_for_ready
        )

    async def unary(
        self, continuation: Any, details: grpc.aio.ClientCallDetails, request: Any
    ) -> Any:
        """Complete the details of a single-response call."""
        return await continuation(self._complete(details), request)

    async def stream(
        self, continuation: Any, details: grpc.aio.ClientCallDetails, request: Any
    ) -> Any:
        """Complete the details of a streamed-response call."""
        return await continuation(self._complete(details), request)


def channel_credentials(tls: ClientTls) -> grpc.ChannelCredentials:
    """TLS credentials from PEM files (with a client certificate for mTLS)."""
    return grpc.ssl_channel_credentials(
        root_certificates=tls.ca_file.read_bytes(),
        private_key=tls.key_file.read_bytes() if tls.key_file else None,
        certificate_chain=tls.cert_file.read_bytes() if tls.cert_file else None,
    )


def open_channel(
    target: str,
    *,
    tls: ClientTls | None = None,
    token: str | None = None,
    default_timeout_s: float = DEFAULT_TIMEOUT_S,
    idempotent_methods: Sequence[str] = (),
    retry: RetryPolicy = RetryPolicy(),
    telemetry: Telemetry | None = None,
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
) -> grpc.aio.Channel:
    """An ``grpc.aio`` channel to ``target`` (``host:port``) with Pushwarden's defaults.

    ``idempotent_methods`` are full method names (``/pkg.Service/Method``) or service
    wildcards (``/pkg.Service/*``); only they are retried on UNAVAILABLE.
    """
    interceptors = client_interceptors(CallDefaults(default_timeout_s, token))
    if telemetry is not None:
        interceptors.extend(telemetry.client_interceptors())
    options: list[tuple[str, Any]] = [
        ("grpc.enable_retries", 1),
        ("grpc.service_config", service_config(idempotent_methods, retry)),
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
    ]
    if tls is None:
        return grpc.aio.insecure_channel(target, options=options, interceptors=interceptors)
    if tls.server_name_override:
        options.append(("grpc.ssl_target_name_override", tls.server_name_override))
    return grpc.aio.secure_channel(
        target, channel_credentials(tls), options=options, interceptors=interceptors
    )


def open_peer_channel(
    config: ServiceConfig,
    target: str,
    *,
    token: str | None = None,
    default_timeout_s: float = DEFAULT_TIMEOUT_S,
    idempotent_methods: Sequence[str] = (),
    retry: RetryPolicy = RetryPolicy(),
    telemetry: Telemetry | None = None,
) -> grpc.aio.Channel:
    """A channel from the service ``config`` describes to one of its peers (``target``
    is one of its ``*_ADDR`` settings): TLS verified against ``PEER_CA`` when that is
    set, with the service's own certificate offered to peers that require mTLS, the
    bearer token of ``PEER_TOKEN_FILE`` (unless ``token`` is given), and the service's
    message size limit."""
    return open_channel(
        target,
        tls=config.peer_tls(),
        token=token if token is not None else config.peer_token(),
        default_timeout_s=default_timeout_s,
        idempotent_methods=idempotent_methods,
        retry=retry,
        telemetry=telemetry,
        max_message_bytes=config.max_message_bytes,
    )
