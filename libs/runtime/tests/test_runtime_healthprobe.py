"""The health probe that container health checks run: exit 0 on SERVING, 1 with one
line otherwise."""

from __future__ import annotations

import asyncio
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from pushwarden.runtime.healthprobe import health_status, reflected_services
from pushwarden.runtime.server import RuntimeServer, create_server
from pushwarden.runtime.settings import ServerSettings, TlsSettings
from pushwarden.runtime.tlsgen import generate_test_pki


def register_nothing(_server: grpc.aio.Server) -> None:
    """The probe needs no service of its own."""


@pytest.fixture
async def server() -> AsyncIterator[RuntimeServer]:
    runtime = create_server(
        ServerSettings(host="127.0.0.1", port=0),
        register=register_nothing,
        service_names=("example.v1.Example",),
    )
    await runtime.start()
    try:
        yield runtime
    finally:
        await runtime.stop(0)


async def probe(*args: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "pushwarden.runtime.healthprobe",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode is not None
    return process.returncode, stderr.decode()


async def test_serving_exits_0_silently(server: RuntimeServer) -> None:
    assert await probe("--addr", f"127.0.0.1:{server.port}") == (0, "")
    code, _ = await probe("--addr", f"127.0.0.1:{server.port}", "--service", "example.v1.Example")
    assert code == 0


async def test_an_unknown_service_exits_1_with_one_line(server: RuntimeServer) -> None:
    code, stderr = await probe("--addr", f"127.0.0.1:{server.port}", "--service", "nope.v1.X")
    assert code == 1
    assert stderr.count("\n") == 1
    assert "NOT_FOUND" in stderr


async def test_not_serving_after_shutdown_begins_exits_1(server: RuntimeServer) -> None:
    await server.health.enter_graceful_shutdown()
    code, stderr = await probe("--addr", f"127.0.0.1:{server.port}")
    assert code == 1
    assert stderr.strip().endswith("NOT_SERVING")


async def test_nothing_listening_exits_1_within_the_timeout() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    code, stderr = await probe("--addr", f"127.0.0.1:{port}", "--timeout", "1")
    assert code == 1
    assert stderr.startswith(f"healthprobe: 127.0.0.1:{port}: ")


async def test_the_async_helpers_see_health_and_reflection(server: RuntimeServer) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        assert await health_status(channel, "example.v1.Example") == "SERVING"
        assert "grpc.health.v1.Health" in await reflected_services(channel)


async def test_an_mtls_server_is_probed_with_a_client_certificate(tmp_path: Path) -> None:
    pki = generate_test_pki(tmp_path / "pki")
    runtime = create_server(
        ServerSettings(
            host="127.0.0.1",
            port=0,
            tls=TlsSettings(pki.server_cert, pki.server_key, client_ca_file=pki.ca_cert),
        ),
        register=register_nothing,
        service_names=("example.v1.Example",),
    )
    await runtime.start()
    try:
        addr = f"localhost:{runtime.port}"
        tls = ("--ca-file", str(pki.ca_cert))
        client = ("--cert-file", str(pki.client_cert), "--key-file", str(pki.client_key))
        assert await probe("--addr", addr, *tls, *client, "--timeout", "10") == (0, "")
        code, stderr = await probe("--addr", addr, *tls, "--timeout", "2")
        assert code == 1
        assert stderr.startswith(f"healthprobe: {addr}: ")  # refused at the handshake
        code, stderr = await probe("--addr", addr, "--cert-file", str(pki.client_cert))
        assert code == 2
        assert "--cert-file and --key-file go together" in stderr
    finally:
        await runtime.stop(0)
