"""The gRPC face of the scheduler service.

:class:`SchedulerServicer` holds one ``async`` method per implemented RPC of
``pushwarden.scheduler.v1.SchedulerService`` (same name as the RPC); each converts the
request, calls one handler and converts the result. RPCs it does not define yet
answer UNIMPLEMENTED, naming themselves and :data:`PENDING_ISSUE`.
"""

from __future__ import annotations

from google.protobuf.descriptor import ServiceDescriptor

from pushwarden.scheduler.v1 import scheduler_pb2

SERVICE_DESCRIPTOR: ServiceDescriptor = scheduler_pb2.DESCRIPTOR.services_by_name[
    "SchedulerService"
]
SERVICE_NAME: str = SERVICE_DESCRIPTOR.full_name
# The issue that implements this service's RPCs.
PENDING_ISSUE = 6


class SchedulerServicer:
    """Implements ``pushwarden.scheduler.v1.SchedulerService``; no RPC is implemented yet."""
