"""TLS and mTLS from certificate paths, with certificates generated at run time."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import grpc
import pytest

from pushwarden.runtime.client import ClientTls, open_channel, open_peer_channel
from pushwarden.runtime.config import ConfigError, ServiceConfig, load_config, setting
from pushwarden.runtime.server import RuntimeServer, create_server
from pushwarden.runtime.settings import ServerEnvNames, ServerSettings, TlsSettings
from pushwarden.runtime.tlsgen import TestPki, generate_test_pki

SERVICE = "test.runtime.Secure"
METHOD = f"/{SERVICE}/Ping"


def _same(data: bytes) -> bytes:
    return data


def unary(ch: grpc.aio.Channel, method: str) -> grpc.aio.UnaryUnaryMultiCallable[bytes, bytes]:
    """A bytes-in, bytes-out unary callable (the test services have no protos)."""
    return ch.unary_unary(method, request_serializer=_same, response_deserializer=_same)


def stream(ch: grpc.aio.Channel, method: str) -> grpc.aio.UnaryStreamMultiCallable[bytes, bytes]:
    """A bytes-in, bytes-out server-streaming callable."""
    return ch.unary_stream(method, request_serializer=_same, response_deserializer=_same)


async def _ping(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
    return b"pong"


def _register(server: grpc.aio.Server) -> None:
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                SERVICE, {"Ping": grpc.unary_unary_rpc_method_handler(_ping)}
            ),
        )
    )


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TestPki:
    return generate_test_pki(tmp_path_factory.mktemp("pki"))


async def _start(tls: TlsSettings) -> RuntimeServer:
    runtime = create_server(
        ServerSettings(host="127.0.0.1", port=0, tls=tls),
        register=_register,
        service_names=[SERVICE],
    )
    await runtime.start()
    return runtime


@pytest.fixture
async def tls_server(pki: TestPki) -> AsyncIterator[RuntimeServer]:
    runtime = await _start(TlsSettings(pki.server_cert, pki.server_key))
    yield runtime
    await runtime.stop(0)


@pytest.fixture
async def mtls_server(pki: TestPki) -> AsyncIterator[RuntimeServer]:
    runtime = await _start(TlsSettings(pki.server_cert, pki.server_key, pki.ca_cert))
    yield runtime
    await runtime.stop(0)


async def _ping_over(channel: grpc.aio.Channel) -> bytes:
    response: bytes = await unary(channel, METHOD)(b"", timeout=10)
    return response


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1"])
async def test_tls_client_trusting_the_ca_connects(
    tls_server: RuntimeServer, pki: TestPki, host: str
) -> None:
    async with open_channel(f"{host}:{tls_server.port}", tls=ClientTls(pki.ca_cert)) as ch:
        assert await _ping_over(ch) == b"pong"


async def test_plaintext_client_cannot_talk_to_a_tls_server(tls_server: RuntimeServer) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{tls_server.port}") as ch:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await unary(ch, METHOD)(b"", timeout=5)
    assert caught.value.code() is grpc.StatusCode.UNAVAILABLE


async def test_client_not_trusting_the_ca_fails(tls_server: RuntimeServer, tmp_path: Path) -> None:
    other = generate_test_pki(tmp_path / "other")
    async with open_channel(f"localhost:{tls_server.port}", tls=ClientTls(other.ca_cert)) as ch:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await unary(ch, METHOD)(b"", timeout=5)
    assert caught.value.code() is grpc.StatusCode.UNAVAILABLE


async def test_mtls_without_a_client_certificate_fails_the_handshake(
    mtls_server: RuntimeServer, pki: TestPki
) -> None:
    async with open_channel(f"localhost:{mtls_server.port}", tls=ClientTls(pki.ca_cert)) as ch:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await unary(ch, METHOD)(b"", timeout=5)
    assert caught.value.code() is grpc.StatusCode.UNAVAILABLE


async def test_mtls_with_a_client_certificate_succeeds(
    mtls_server: RuntimeServer, pki: TestPki
) -> None:
    tls = ClientTls(pki.ca_cert, cert_file=pki.client_cert, key_file=pki.client_key)
    async with open_channel(f"localhost:{mtls_server.port}", tls=tls) as ch:
        assert await _ping_over(ch) == b"pong"


async def test_mtls_rejects_a_certificate_from_another_ca(
    mtls_server: RuntimeServer, pki: TestPki, tmp_path: Path
) -> None:
    other = generate_test_pki(tmp_path / "other")
    tls = ClientTls(pki.ca_cert, cert_file=other.client_cert, key_file=other.client_key)
    async with open_channel(f"localhost:{mtls_server.port}", tls=tls) as ch:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await unary(ch, METHOD)(b"", timeout=5)
    assert caught.value.code() is grpc.StatusCode.UNAVAILABLE


def test_generated_keys_are_private(pki: TestPki) -> None:
    assert pki.server_key.stat().st_mode & 0o077 == 0
    assert pki.client_key.stat().st_mode & 0o077 == 0


NAMES = ServerEnvNames(
    tls_cert="PUSHWARDEN_CONSENT_TLS_CERT",
    tls_key="PUSHWARDEN_CONSENT_TLS_KEY",
    tls_client_ca="PUSHWARDEN_CONSENT_TLS_CLIENT_CA",
)


async def _create(tls: TlsSettings) -> RuntimeServer:
    return create_server(
        ServerSettings(host="127.0.0.1", port=0, tls=tls, env_names=NAMES),
        register=_register,
        service_names=[SERVICE],
    )


async def test_a_key_that_cannot_be_read_names_the_key_setting(
    pki: TestPki, tmp_path: Path
) -> None:
    # A directory where the key should be: readable by nobody, root included.
    with pytest.raises(ConfigError, match=r"^PUSHWARDEN_CONSENT_TLS_KEY: cannot read private key"):
        await _create(TlsSettings(pki.server_cert, tmp_path))


async def test_a_certificate_that_is_gone_names_the_certificate_setting(
    pki: TestPki, tmp_path: Path
) -> None:
    gone = tmp_path / "deleted.pem"
    with pytest.raises(ConfigError) as caught:
        await _create(TlsSettings(gone, pki.server_key))
    assert str(caught.value) == (
        f"PUSHWARDEN_CONSENT_TLS_CERT: cannot read certificate '{gone}': No such file or directory"
    )


async def test_a_file_that_is_no_key_or_no_certificate_is_refused(
    pki: TestPki, tmp_path: Path
) -> None:
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n")
    with pytest.raises(ConfigError, match=r"^PUSHWARDEN_CONSENT_TLS_KEY: .* no PEM private key"):
        await _create(TlsSettings(pki.server_cert, garbage))
    with pytest.raises(ConfigError, match=r"^PUSHWARDEN_CONSENT_TLS_CERT: .* no PEM certificate"):
        await _create(TlsSettings(pki.server_key, pki.server_key))
    with pytest.raises(ConfigError, match=r"^PUSHWARDEN_CONSENT_TLS_CLIENT_CA: .* no PEM cert"):
        await _create(TlsSettings(pki.server_cert, pki.server_key, pki.client_key))


async def test_a_key_of_another_certificate_is_refused(pki: TestPki) -> None:
    with pytest.raises(ConfigError) as caught:
        await _create(TlsSettings(pki.server_cert, pki.client_key))
    assert str(caught.value).startswith("PUSHWARDEN_CONSENT_TLS_KEY: ")
    assert "is not the private key of the certificate in PUSHWARDEN_CONSENT_TLS_CERT" in str(
        caught.value
    )


@dataclass(frozen=True, kw_only=True)
class CallerConfig(ServiceConfig):
    """A service that calls a peer, as scheduler or delivery do."""

    SERVICE: ClassVar[str] = "caller"
    peer_addr: str = setting("127.0.0.1:1", help="Where the peer listens.")


async def test_a_service_with_peer_ca_calls_its_peers_over_tls(
    tls_server: RuntimeServer, pki: TestPki
) -> None:
    target = f"localhost:{tls_server.port}"
    config = load_config(CallerConfig, environ={"PUSHWARDEN_CALLER_PEER_CA": str(pki.ca_cert)})
    async with open_peer_channel(config, target) as ch:
        assert await _ping_over(ch) == b"pong"
    # Without PEER_CA the service speaks plain text, which a TLS server refuses.
    plain = load_config(CallerConfig, environ={})
    assert plain.peer_tls() is None
    async with open_peer_channel(plain, target) as ch:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await unary(ch, METHOD)(b"", timeout=5)
    assert caught.value.code() is grpc.StatusCode.UNAVAILABLE


async def test_a_service_offers_its_own_certificate_to_a_peer_requiring_mtls(
    mtls_server: RuntimeServer, pki: TestPki, tmp_path: Path
) -> None:
    # The caller's own TLS_CERT/TLS_KEY double as its client certificate.
    config = load_config(
        CallerConfig,
        environ={
            "PUSHWARDEN_CALLER_PEER_CA": str(pki.ca_cert),
            "PUSHWARDEN_CALLER_TLS_CERT": str(pki.client_cert),
            "PUSHWARDEN_CALLER_TLS_KEY": str(pki.client_key),
        },
    )
    assert config.peer_tls() == ClientTls(pki.ca_cert, pki.client_cert, pki.client_key)
    async with open_peer_channel(config, f"localhost:{mtls_server.port}") as ch:
        assert await _ping_over(ch) == b"pong"
