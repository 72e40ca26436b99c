"""The gRPC face of the delivery service.

:class:`DeliveryServicer` subclasses the generated ``DeliveryServiceServicer``, so mypy checks
every method against the contract. Each method checks the caller may use the app,
converts the request, calls one handler and converts the result. RPCs it does not
override answer UNIMPLEMENTED, naming themselves.
"""

from __future__ import annotations

from google.protobuf.descriptor import ServiceDescriptor

from pushwarden.delivery.v1 import delivery_pb2, delivery_pb2_grpc

SERVICE_DESCRIPTOR: ServiceDescriptor = delivery_pb2.DESCRIPTOR.services_by_name["DeliveryService"]
SERVICE_NAME: str = SERVICE_DESCRIPTOR.full_name


class DeliveryServicer(delivery_pb2_grpc.DeliveryServiceServicer):
    """Implements ``pushwarden.delivery.v1.DeliveryService``; no RPC is implemented yet."""
