"""The client helper: a default deadline, the bearer token, and retries of
UNAVAILABLE for idempotent methods only."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import grpc
import pytest

from pushwarden.consent.v1 import consent_pb2
from pushwarden.runtime.auth import current_caller, token_sha256
from pushwarden.runtime.client import (
    RetryPolicy,
    idempotent_methods,
    open_channel,
    open_peer_channel,
    service_config,
)
from pushwarden.runtime.config import ConfigError, ServiceConfig, load_config
from pushwarden.runtime.server import RuntimeServer, create_server
from pushwarden.runtime.settings import CallerGrant, ServerSettings

SERVICE = "test.runtime.Remote"
OTHER = "test.runtime.Other"
FAILURES_BEFORE_SUCCESS = 2
FAST_RETRY = RetryPolicy(max_attempts=4, initial_backoff_s=0.01, max_backoff_s=0.05)


def _same(data: bytes) -> bytes:
    return data


def unary(ch: grpc.aio.Channel, method: str) -> grpc.aio.UnaryUnaryMultiCallable[bytes, bytes]:
    """A bytes-in, bytes-out unary callable (the test services have no protos)."""
    return ch.unary_unary(method, request_serializer=_same, response_deserializer=_same)


class Remote:
    """Handlers that report the deadline they saw and fail the first attempts."""

    def __init__(self) -> None:
        self.attempts: Counter[str] = Counter()
        self.calls = 0

    async def time_left(self, request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
        self.calls += 1
        return repr(context.time_remaining()).encode()

    async def caller(self, request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
        return (current_caller.get() or "-").encode()

    def flaky(self, name: str) -> grpc.RpcMethodHandler[bytes, bytes]:
        async def handle(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
            self.attempts[name] += 1
            if self.attempts[name] <= FAILURES_BEFORE_SUCCESS:
                await context.abort(grpc.StatusCode.UNAVAILABLE, "try again")
            return b"done"

        return grpc.unary_unary_rpc_method_handler(handle)

    def register(self, server: grpc.aio.Server) -> None:
        server.add_generic_rpc_handlers(
            (
                grpc.method_handlers_generic_handler(
                    SERVICE,
                    {
                        "TimeLeft": grpc.unary_unary_rpc_method_handler(self.time_left),
                        "Caller": grpc.unary_unary_rpc_method_handler(self.caller),
                        "Get": self.flaky("Get"),
                        "Create": self.flaky("Create"),
                    },
                ),
                grpc.method_handlers_generic_handler(OTHER, {"List": self.flaky("List")}),
            )
        )


@pytest.fixture
async def remote() -> AsyncIterator[tuple[Remote, RuntimeServer]]:
    handlers = Remote()
    callers = (CallerGrant("scheduler", token_sha256("tok"), ("*",)),)
    runtime = create_server(
        ServerSettings(host="127.0.0.1", port=0, callers=callers),
        register=handlers.register,
        service_names=[SERVICE, OTHER],
    )
    await runtime.start()
    yield handlers, runtime
    await runtime.stop(0)


async def test_call_without_timeout_gets_the_default_deadline(
    remote: tuple[Remote, RuntimeServer],
) -> None:
    _, server = remote
    async with open_channel(f"127.0.0.1:{server.port}", token="tok", default_timeout_s=7.0) as ch:
        remaining = float(await unary(ch, f"/{SERVICE}/TimeLeft")(b""))
        explicit = float(await unary(ch, f"/{SERVICE}/TimeLeft")(b"", timeout=30.0))
    # The grpc-timeout header is rounded up in transit, hence the small upward slack.
    assert 5.0 < remaining <= 7.5
    assert 28.0 < explicit <= 30.5


async def test_token_is_attached(remote: tuple[Remote, RuntimeServer]) -> None:
    _, server = remote
    async with open_channel(f"127.0.0.1:{server.port}", token="tok") as ch:
        assert await unary(ch, f"/{SERVICE}/Caller")(b"") == b"scheduler"
    async with open_channel(f"127.0.0.1:{server.port}") as ch:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await unary(ch, f"/{SERVICE}/Caller")(b"")
    assert caught.value.code() is grpc.StatusCode.UNAUTHENTICATED


async def test_idempotent_method_is_retried_after_unavailable(
    remote: tuple[Remote, RuntimeServer],
) -> None:
    handlers, server = remote
    async with open_channel(
        f"127.0.0.1:{server.port}",
        token="tok",
        idempotent_methods=[f"/{SERVICE}/Get", f"/{OTHER}/*"],
        retry=FAST_RETRY,
    ) as ch:
        assert await unary(ch, f"/{SERVICE}/Get")(b"") == b"done"
        assert await unary(ch, f"/{OTHER}/List")(b"") == b"done"
    assert handlers.attempts["Get"] == FAILURES_BEFORE_SUCCESS + 1
    assert handlers.attempts["List"] == FAILURES_BEFORE_SUCCESS + 1


async def test_non_idempotent_method_is_not_retried(
    remote: tuple[Remote, RuntimeServer],
) -> None:
    handlers, server = remote
    async with open_channel(
        f"127.0.0.1:{server.port}",
        token="tok",
        idempotent_methods=[f"/{SERVICE}/Get"],
        retry=FAST_RETRY,
    ) as ch:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await unary(ch, f"/{SERVICE}/Create")(b"")
    assert caught.value.code() is grpc.StatusCode.UNAVAILABLE
    assert handlers.attempts["Create"] == 1


def test_service_config_names_only_the_idempotent_methods() -> None:
    config = json.loads(service_config(["/a.v1.S/Get", "/a.v1.T/*"], RetryPolicy()))
    [method_config] = config["methodConfig"]
    assert method_config["name"] == [{"service": "a.v1.S", "method": "Get"}, {"service": "a.v1.T"}]
    assert method_config["retryPolicy"]["retryableStatusCodes"] == ["UNAVAILABLE"]
    assert json.loads(service_config([], RetryPolicy())) == {
        "loadBalancingConfig": [{"round_robin": {}}],
        "methodConfig": [],
    }
    with pytest.raises(ValueError, match="full method"):
        service_config(["Get"], RetryPolicy())


async def test_calls_spread_over_every_address_of_the_target() -> None:
    """A target naming several replicas (as dns:/// of a name with several addresses
    resolves) gets calls on each of them, not all on the first."""
    served: Counter[int] = Counter()
    servers = []
    for _ in range(2):
        handlers = Remote()
        runtime = create_server(
            ServerSettings(host="127.0.0.1", port=0),
            register=handlers.register,
            service_names=[SERVICE],
        )
        await runtime.start()
        servers.append((handlers, runtime))
    try:
        target = "ipv4:" + ",".join(f"127.0.0.1:{runtime.port}" for _, runtime in servers)
        async with open_channel(target) as ch:
            await ch.channel_ready()
            for _ in range(20):
                await unary(ch, f"/{SERVICE}/TimeLeft")(b"")
                await asyncio.sleep(0.01)
        for handlers, runtime in servers:
            served[runtime.port] = handlers.calls
    finally:
        for _, runtime in servers:
            await runtime.stop(0)
    assert all(count > 0 for count in served.values()), served


def test_idempotent_methods_come_from_the_contract_options() -> None:
    consent = consent_pb2.DESCRIPTOR.services_by_name["ConsentService"]
    safe = idempotent_methods(consent)
    prefix = "/pushwarden.consent.v1.ConsentService/"
    # reads and natural upserts are retried on UNAVAILABLE ...
    assert f"{prefix}CheckEligibility" in safe
    assert f"{prefix}RegisterDevice" in safe
    # ... RPCs that take an idempotency key are not
    assert f"{prefix}RecordConsent" not in safe
    assert f"{prefix}RecordPermissionPrompt" not in safe
    assert json.loads(service_config(safe, RetryPolicy()))["methodConfig"][0]["name"]


async def test_a_peer_channel_presents_the_peer_token_file(
    remote: tuple[Remote, RuntimeServer], tmp_path: Path
) -> None:
    _, server = remote
    token_file = tmp_path / "peer-token"
    token_file.write_text("tok\n")
    with_token = load_config(
        SchedulerLikeConfig,
        environ={"PUSHWARDEN_PEERTEST_PEER_TOKEN_FILE": str(token_file)},
    )
    async with open_peer_channel(with_token, f"127.0.0.1:{server.port}") as ch:
        assert await unary(ch, f"/{SERVICE}/Caller")(b"") == b"scheduler"
    without = load_config(SchedulerLikeConfig, environ={})
    async with open_peer_channel(without, f"127.0.0.1:{server.port}") as ch:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await unary(ch, f"/{SERVICE}/Caller")(b"")
    assert caught.value.code() is grpc.StatusCode.UNAUTHENTICATED
    token_file.write_text("\n")
    with pytest.raises(ConfigError, match="PUSHWARDEN_PEERTEST_PEER_TOKEN_FILE: the file holds"):
        load_config(
            SchedulerLikeConfig,
            environ={"PUSHWARDEN_PEERTEST_PEER_TOKEN_FILE": str(token_file)},
        )


@dataclass(frozen=True, kw_only=True)
class SchedulerLikeConfig(ServiceConfig):
    """A service config as the services declare theirs."""

    SERVICE: ClassVar[str] = "peertest"
