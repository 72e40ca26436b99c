"""The gRPC face of the segmentation service.

:class:`SegmentationServicer` subclasses the generated ``SegmentationServiceServicer``,
so mypy checks every method against the contract. Each method checks the caller may use the app,
converts the request, calls one handler and converts the result. RPCs it does not
override answer UNIMPLEMENTED, naming themselves.
"""

from __future__ import annotations

from google.protobuf.descriptor import ServiceDescriptor

from pushwarden.segmentation.v1 import segmentation_pb2, segmentation_pb2_grpc

SERVICE_DESCRIPTOR: ServiceDescriptor = segmentation_pb2.DESCRIPTOR.services_by_name[
    "SegmentationService"
]
SERVICE_NAME: str = SERVICE_DESCRIPTOR.full_name


class SegmentationServicer(segmentation_pb2_grpc.SegmentationServiceServicer):
    """Implements ``pushwarden.segmentation.v1.SegmentationService``; no RPC is implemented yet."""
