"""Checks every Pushwarden service's own tests make of it as a deployable.

Each service's test suite calls these with its own app, descriptor and module, so the
four services are held to one standard (health, reflection, UNIMPLEMENTED naming the
RPC, one-line start-up errors) without four copies of the same test code.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Collection, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

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


class ServiceProcess:
    """``python -m <module>`` as a child process for durability tests: configured only
    through the environment (the caller's, minus every ``prefix`` variable, plus
    ``settings``), its output in one log file per run under ``logs``; started again after
    a :meth:`kill` as an operator would restart it."""

    def __init__(
        self,
        module: str,
        prefix: str,
        port: int,
        settings: Mapping[str, str],
        logs: Path,
        python_args: Sequence[str] = (),
    ) -> None:
        self.module = module
        self.python_args = tuple(python_args)  # e.g. ("-m", "cProfile", "-o", path)
        self.port = port
        self.logs = logs
        self.env = {
            name: value for name, value in os.environ.items() if not name.startswith(prefix)
        }
        self.env.update(settings)
        self.runs = 0
        self.process: asyncio.subprocess.Process | None = None
        self._log: IO[bytes] | None = None

    @property
    def address(self) -> str:
        """Where it listens."""
        return f"127.0.0.1:{self.port}"

    async def start(self, within_s: float = 30.0) -> None:
        """Start a run and wait until its health check says SERVING."""
        self.runs += 1
        self._log = (self.logs / f"{self.module.rsplit('.', 1)[-1]}-{self.runs}.log").open("wb")
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            *self.python_args,
            "-m",
            self.module,
            env=self.env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=self._log,
            stderr=asyncio.subprocess.STDOUT,
        )
        deadline = time.monotonic() + within_s
        async with grpc.aio.insecure_channel(self.address) as channel:
            while True:
                with contextlib.suppress(grpc.aio.AioRpcError):
                    if await health_status(channel, timeout_s=1.0) == "SERVING":
                        return
                if self.process.returncode is not None or time.monotonic() > deadline:
                    pytest.fail(
                        f"{self.module} did not serve within {within_s} s:\n{self.output()}"
                    )
                await asyncio.sleep(0.1)

    async def kill(self) -> None:
        """SIGKILL the running process (no shutdown code runs) and reap it."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        assert await asyncio.wait_for(self.process.wait(), 10) == -signal.SIGKILL
        self._close_log()

    async def stop(self) -> None:
        """SIGTERM (SIGKILL after 20 s) if it still runs."""
        if self.process is not None and self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), 20)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
        self._close_log()

    def output(self) -> str:
        """The tail of every run's log."""
        stem = self.module.rsplit(".", 1)[-1]
        return "\n".join(
            f"--- run {n}\n" + (self.logs / f"{stem}-{n}.log").read_text(errors="replace")[-4000:]
            for n in range(1, self.runs + 1)
        )

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None


@dataclass(frozen=True, slots=True)
class BenchRun:
    """One run of a benchmark script: its exit status, output, and its ``BENCH {...}``
    lines by figure name."""

    returncode: int
    stdout: str
    stderr: str
    figures: dict[str, dict[str, Any]]

    @property
    def lines(self) -> list[dict[str, Any]]:
        """The figures in the order printed."""
        return list(self.figures.values())


def bench_line(name: str, value: float, unit: str, baseline: float | None, notes: str) -> None:
    """Print one figure as the ``BENCH {...}`` JSON line :func:`run_bench` reads."""
    line = {"name": name, "value": round(value, 3), "unit": unit, "baseline": baseline}
    line["notes"] = notes
    print("BENCH " + json.dumps(line), flush=True)


def run_bench(script: Path, *args: str, timeout_s: float = 300) -> BenchRun:
    """Run ``python script args`` (a script under ``bench/``) to the end and read the
    ``BENCH {...}`` JSON lines it printed, for the benchmarks' smoke tests."""
    done = subprocess.run(
        [sys.executable, str(script), *args],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    figures: dict[str, dict[str, Any]] = {}
    for line in done.stdout.splitlines():
        if line.startswith("BENCH "):
            figure = json.loads(line[len("BENCH ") :])
            figures[figure["name"]] = figure
    return BenchRun(done.returncode, done.stdout, done.stderr, figures)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


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
