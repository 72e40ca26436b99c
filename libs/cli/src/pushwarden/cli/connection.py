"""Channels to the four services, built with the runtime's client helpers.

Every channel comes from :func:`pushwarden.runtime.client.open_channel`, as a service's
own peer channels do: the bearer token on every call, TLS from a CA file (with a client
certificate for servers that require mTLS), a deadline on every call, and transparent
retries of UNAVAILABLE for the RPCs the contracts declare idempotent only.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, TypeVar

import grpc

from pushwarden.cli.errors import CliError, rpc_error_line
from pushwarden.consent.v1 import consent_pb2, consent_pb2_grpc
from pushwarden.delivery.v1 import delivery_pb2, delivery_pb2_grpc
from pushwarden.runtime.settings import ClientTls
from pushwarden.scheduler.v1 import scheduler_pb2, scheduler_pb2_grpc
from pushwarden.segmentation.v1 import segmentation_pb2, segmentation_pb2_grpc

if TYPE_CHECKING:
    from pushwarden.consent.v1.consent_pb2_grpc import ConsentServiceAsyncStub
    from pushwarden.delivery.v1.delivery_pb2_grpc import DeliveryServiceAsyncStub
    from pushwarden.scheduler.v1.scheduler_pb2_grpc import SchedulerServiceAsyncStub
    from pushwarden.segmentation.v1.segmentation_pb2_grpc import (
        SegmentationServiceAsyncStub,
    )

__all__ = ["DEFAULT_ADDRESSES", "SERVICES", "Clients", "Settings"]

SERVICES = ("consent", "segmentation", "scheduler", "delivery")
DEFAULT_ADDRESSES = {
    "consent": "127.0.0.1:50051",
    "segmentation": "127.0.0.1:50052",
    "scheduler": "127.0.0.1:50053",
    "delivery": "127.0.0.1:50054",
}
_DESCRIPTORS = {
    "consent": consent_pb2.DESCRIPTOR.services_by_name["ConsentService"],
    "segmentation": segmentation_pb2.DESCRIPTOR.services_by_name["SegmentationService"],
    "scheduler": scheduler_pb2.DESCRIPTOR.services_by_name["SchedulerService"],
    "delivery": delivery_pb2.DESCRIPTOR.services_by_name["DeliveryService"],
}

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class Settings:
    """How to reach the platform: an address per service, the bearer token, TLS, the
    deadline of each call, and the app every command works on."""

    app_id: str
    addresses: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_ADDRESSES))
    token: str | None = None
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    timeout_s: float = 10.0

    def tls(self) -> ClientTls | None:
        """Client TLS when a CA file is given, else None (plain text)."""
        if self.ca_file is None:
            if self.cert_file is not None or self.key_file is not None:
                raise CliError("--cert-file and --key-file need --ca-file (TLS)", 2)
            return None
        if (self.cert_file is None) != (self.key_file is None):
            raise CliError("--cert-file and --key-file go together (mTLS)", 2)
        for option, path in (
            ("--ca-file", self.ca_file),
            ("--cert-file", self.cert_file),
            ("--key-file", self.key_file),
        ):
            if path is not None and not path.is_file():
                raise CliError(f"{option}: {path} is not a readable file", 2)
        return ClientTls(self.ca_file, cert_file=self.cert_file, key_file=self.key_file)


class Clients:
    """Stubs of the four services on channels opened on first use; an async context
    manager that closes them. :meth:`call` turns a failed RPC into a :class:`CliError`
    naming the service."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._tls = settings.tls()
        self._channels: dict[str, grpc.aio.Channel] = {}

    async def __aenter__(self) -> Clients:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        for channel in self._channels.values():
            await channel.close()
        self._channels.clear()

    def _channel(self, service: str) -> grpc.aio.Channel:
        # Imported on first use: the runtime's client module pulls in its config module
        # and SQLAlchemy, which `--help` and a bad file need not wait for.
        from pushwarden.runtime.client import idempotent_methods, open_channel

        if service not in self._channels:
            self._channels[service] = open_channel(
                self.settings.addresses[service],
                tls=self._tls,
                token=self.settings.token,
                default_timeout_s=self.settings.timeout_s,
                idempotent_methods=idempotent_methods(_DESCRIPTORS[service]),
            )
        return self._channels[service]

    @property
    def consent(self) -> ConsentServiceAsyncStub:
        """Consent's stub."""
        stub: ConsentServiceAsyncStub = consent_pb2_grpc.ConsentServiceStub(
            self._channel("consent")
        )
        return stub

    @property
    def segmentation(self) -> SegmentationServiceAsyncStub:
        """Segmentation's stub."""
        stub: SegmentationServiceAsyncStub = segmentation_pb2_grpc.SegmentationServiceStub(
            self._channel("segmentation")
        )
        return stub

    @property
    def scheduler(self) -> SchedulerServiceAsyncStub:
        """The scheduler's stub."""
        stub: SchedulerServiceAsyncStub = scheduler_pb2_grpc.SchedulerServiceStub(
            self._channel("scheduler")
        )
        return stub

    @property
    def delivery(self) -> DeliveryServiceAsyncStub:
        """Delivery's stub."""
        stub: DeliveryServiceAsyncStub = delivery_pb2_grpc.DeliveryServiceStub(
            self._channel("delivery")
        )
        return stub

    async def call(self, service: str, method: Callable[[R], Awaitable[T]], request: R) -> T:
        """Call ``method`` (an RPC of ``service``'s stub) with ``request``; a failure
        becomes a :class:`CliError` of one line naming the service."""
        try:
            return await method(request)
        except grpc.aio.AioRpcError as error:
            raise CliError(
                rpc_error_line(error, service, self.settings.addresses[service])
            ) from None


@contextlib.asynccontextmanager
async def clients(settings: Settings) -> AsyncIterator[Clients]:
    """:class:`Clients` for one command."""
    async with Clients(settings) as opened:
        yield opened
