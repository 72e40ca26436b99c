"""The gRPC face of the delivery service.

:class:`DeliveryServicer` holds one ``async`` method per implemented RPC of
``pushwarden.delivery.v1.DeliveryService`` (same name as the RPC); each converts the
request, calls one handler and converts the result. RPCs it does not define yet
answer UNIMPLEMENTED, naming themselves and :data:`PENDING_ISSUE`.
"""

from __future__ import annotations

from google.protobuf.descriptor import ServiceDescriptor

from pushwarden.delivery.v1 import delivery_pb2

SERVICE_DESCRIPTOR: ServiceDescriptor = delivery_pb2.DESCRIPTOR.services_by_name["DeliveryService"]
SERVICE_NAME: str = SERVICE_DESCRIPTOR.full_name
# The issue that implements this service's RPCs.
PENDING_ISSUE = 7


class DeliveryServicer:
    """Implements ``pushwarden.delivery.v1.DeliveryService``; no RPC is implemented yet."""
