"""The gRPC face of the scheduler service.

:class:`SchedulerServicer` subclasses the generated ``SchedulerServiceServicer``, so mypy checks
every method against the contract. Each method checks the caller may use the app,
converts the request, calls one handler and converts the result. RPCs it does not
override answer UNIMPLEMENTED, naming themselves.
"""

from __future__ import annotations

from google.protobuf.descriptor import ServiceDescriptor

from pushwarden.scheduler.v1 import scheduler_pb2, scheduler_pb2_grpc

SERVICE_DESCRIPTOR: ServiceDescriptor = scheduler_pb2.DESCRIPTOR.services_by_name[
    "SchedulerService"
]
SERVICE_NAME: str = SERVICE_DESCRIPTOR.full_name


class SchedulerServicer(scheduler_pb2_grpc.SchedulerServiceServicer):
    """Implements ``pushwarden.scheduler.v1.SchedulerService``; no RPC is implemented yet."""
