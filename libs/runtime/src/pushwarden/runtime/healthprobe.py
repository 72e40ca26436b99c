"""A gRPC health probe for container health checks and scripts.

``python -m pushwarden.runtime.healthprobe --addr 127.0.0.1:50051 [--service NAME]``
asks the standard ``grpc.health.v1.Health/Check`` and exits 0 when the answer is
SERVING, 1 otherwise (not serving, unknown service, unreachable, timed out), with
one line on stderr saying why. It needs nothing beyond the runtime's own
dependencies, so every service image can run it as its HEALTHCHECK.

The async helpers ask the same questions on a ``grpc.aio`` channel (health of a
service, the services listed by reflection) for tests and scripts that share an
event loop with the server.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc  # type: ignore[import-untyped]
from grpc_reflection.v1alpha import (  # type: ignore[import-untyped]
    reflection_pb2,
    reflection_pb2_grpc,
)

__all__ = ["check", "health_status", "main", "reflected_services"]


def _channel(
    addr: str, ca_file: Path | None, cert_file: Path | None, key_file: Path | None
) -> grpc.Channel:
    if ca_file is None:
        return grpc.insecure_channel(addr)
    credentials = grpc.ssl_channel_credentials(
        root_certificates=ca_file.read_bytes(),
        private_key=key_file.read_bytes() if key_file else None,
        certificate_chain=cert_file.read_bytes() if cert_file else None,
    )
    return grpc.secure_channel(addr, credentials)


def check(
    addr: str,
    service: str = "",
    *,
    timeout_s: float = 3.0,
    ca_file: Path | None = None,
    cert_file: Path | None = None,
    key_file: Path | None = None,
) -> str:
    """Ask ``addr`` for the health of ``service`` ("" is the whole server).

    ``ca_file`` switches to TLS trusting that CA; ``cert_file`` and ``key_file`` add a
    client certificate for a server that requires mTLS. Returns the status name
    (``SERVING``, ``NOT_SERVING`` ...); raises :class:`grpc.RpcError` when the server
    cannot be reached or does not know the service.
    """
    with _channel(addr, ca_file, cert_file, key_file) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        reply = stub.Check(
            health_pb2.HealthCheckRequest(service=service), timeout=timeout_s, wait_for_ready=True
        )
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))


async def health_status(
    channel: grpc.aio.Channel, service: str = "", *, timeout_s: float = 5.0
) -> str:
    """The health status name (``SERVING`` ...) of ``service`` on an aio channel."""
    stub = health_pb2_grpc.HealthStub(channel)
    reply = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout_s)
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))


async def reflected_services(channel: grpc.aio.Channel, *, timeout_s: float = 5.0) -> set[str]:
    """The full names of the services a server lists through server reflection."""
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    names: set[str] = set()
    async for reply in stub.ServerReflectionInfo(iter([request]), timeout=timeout_s):
        names.update(item.name for item in reply.list_services_response.service)
    return names


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pushwarden.runtime.healthprobe",
        description="Exit 0 when a gRPC server reports SERVING through grpc.health.v1.",
    )
    parser.add_argument("--addr", required=True, help="host:port of the server")
    parser.add_argument("--service", default="", help='service name to check ("" = whole server)')
    parser.add_argument("--timeout", type=float, default=3.0, help="seconds before giving up")
    parser.add_argument("--ca-file", type=Path, help="CA certificate: use TLS and trust this CA")
    parser.add_argument(
        "--cert-file", type=Path, help="client certificate for a server that requires mTLS"
    )
    parser.add_argument("--key-file", type=Path, help="private key of --cert-file")
    return parser


def _describe(error: grpc.RpcError) -> str:
    # Errors raised by a call are also grpc.Call objects with a code and details.
    code, details = getattr(error, "code", None), getattr(error, "details", None)
    if callable(code) and callable(details):
        return f"{code().name}: {details()}"
    return str(error)


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the process exit code."""
    parser = _parser()
    args = parser.parse_args(argv)
    if (args.cert_file is None) != (args.key_file is None):
        parser.error("--cert-file and --key-file go together")
    if args.cert_file is not None and args.ca_file is None:
        parser.error("--cert-file needs --ca-file (mTLS is TLS with a client certificate)")
    target = f"{args.addr} {args.service!r}" if args.service else args.addr
    try:
        status = check(
            args.addr,
            args.service,
            timeout_s=args.timeout,
            ca_file=args.ca_file,
            cert_file=args.cert_file,
            key_file=args.key_file,
        )
    except OSError as error:
        print(
            f"healthprobe: {target}: cannot read {error.filename}: {error.strerror}",
            file=sys.stderr,
        )
        return 1
    except grpc.RpcError as error:
        print(f"healthprobe: {target}: {_describe(error)}", file=sys.stderr)
        return 1
    if status != "SERVING":
        print(f"healthprobe: {target}: {status}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
