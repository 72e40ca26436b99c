"""Checks every Pushwarden service's own tests make of it as a deployable.

Each service's test suite calls these with its own app, descriptor and module, so the
four services are held to one standard (health, reflection, UNIMPLEMENTED naming the
RPC, one-line start-up errors) without four copies of the same test code.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator, Collection, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.descriptor import ServiceDescriptor
from google.rpc import error_details_pb2  # type: ignore[import-untyped]
from grpc_status import rpc_status  # type: ignore[import-untyped]

from pushwarden.runtime.app import ConfigT, ServiceApp
from pushwarden.runtime.config import load_config
from pushwarden.runtime.healthprobe import health_status, reflected_services
from pushwarden.runtime.unimplemented import (
    call_with_empty_request,
    implemented_methods,
    unimplemented_message,
)


def local_test_config(config_cls: type[ConfigT], database_url: str, **extra: str) -> ConfigT:
    """A config of ``config_cls`` for a test server: 127.0.0.1, port 0, the test's
    database and a small pool; ``extra`` gives more variables by suffix
    (``PSEUDONYM_KEY="..."``)."""
    prefix = f"PUSHWARDEN_{config_cls.SERVICE.upper()}_"
    values = {"HOST": "127.0.0.1", "PORT": "0", "DATABASE_URL": database_url, "DB_POOL_SIZE": "2"}
    values.update(extra)
    return load_config(config_cls, environ={prefix + name: v for name, v in values.items()})


@asynccontextmanager
async def serving(app: ServiceApp[Any]) -> AsyncIterator[grpc.aio.Channel]:
    """Serve ``app`` on its configured address (port 0 in tests), workers included, and
    yield a channel to it; stops it gracefully and closes the app afterwards."""
    runtime = await app.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{runtime.port}") as channel:
            yield channel
    finally:
        await app.stop(runtime, grace_s=1.0)


async def assert_serving_and_reflected(channel: grpc.aio.Channel, service_name: str) -> None:
    """Health is SERVING for the server and the service, and reflection lists it."""
    assert await health_status(channel, "") == "SERVING"
    assert await health_status(channel, service_name) == "SERVING"
    assert service_name in await reflected_services(channel)


async def assert_unimplemented_rpcs(
    channel: grpc.aio.Channel,
    descriptor: ServiceDescriptor,
    servicer: object,
    sketch_rpcs: Collection[str],
) -> None:
    """Every RPC of the API sketch exists, and every RPC the servicer does not implement
    yet answers UNIMPLEMENTED with a message naming itself (implemented ones are the
    subject of the service's own tests)."""
    methods = list(descriptor.methods)
    missing = set(sketch_rpcs) - {method.name for method in methods}
    assert not missing, f"RPCs of the API sketch missing from the contract: {missing}"
    implemented = set(implemented_methods(descriptor, servicer))
    for method in methods:
        if method.name in implemented:
            continue
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await call_with_empty_request(channel, method)
        assert raised.value.code() == grpc.StatusCode.UNIMPLEMENTED, method.name
        expected = unimplemented_message(f"{descriptor.full_name}/{method.name}")
        assert raised.value.details() == expected
        assert expected.endswith(f"/{method.name} is not implemented yet")


def run_service_module(
    module: str, prefix: str, overrides: Mapping[str, str], cwd: Path
) -> subprocess.CompletedProcess[str]:
    """Start ``python -m module`` with the caller's environment minus every ``prefix``
    variable plus ``overrides``, and wait for it to exit (it is expected to refuse)."""
    env = {name: value for name, value in os.environ.items() if not name.startswith(prefix)}
    env.update(overrides)
    return subprocess.run(
        [sys.executable, "-m", module],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def assert_one_line_refusal(result: subprocess.CompletedProcess[str], starts_with: str) -> str:
    """The process exited non-zero with exactly one stderr line starting with
    ``starts_with`` (the variable's name); returns that line."""
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(starts_with), lines[0]
    return lines[0]


@dataclass(frozen=True, slots=True)
class RichError:
    """What a caller can read from a failed RPC: code, message, field violations (field
    path to description), ErrorInfo reason and metadata, precondition violation types."""

    code: grpc.StatusCode
    message: str
    fields: dict[str, str]
    reason: str | None
    metadata: dict[str, str]
    preconditions: tuple[str, ...]


def rich_error(error: grpc.aio.AioRpcError) -> RichError:
    """Unpack the ``google.rpc.Status`` details a Pushwarden service sent with ``error``."""
    status = rpc_status.from_call(error)
    fields: dict[str, str] = {}
    reason: str | None = None
    metadata: dict[str, str] = {}
    preconditions: list[str] = []
    for detail in status.details if status is not None else ():
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            fields.update({v.field: v.description for v in bad.field_violations})
        elif detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            reason, metadata = info.reason, dict(info.metadata)
        elif detail.Is(error_details_pb2.PreconditionFailure.DESCRIPTOR):
            failure = error_details_pb2.PreconditionFailure()
            detail.Unpack(failure)
            preconditions.extend(v.type for v in failure.violations)
    return RichError(
        code=error.code(),
        message=error.details() or "",
        fields=fields,
        reason=reason,
        metadata=metadata,
        preconditions=tuple(preconditions),
    )
