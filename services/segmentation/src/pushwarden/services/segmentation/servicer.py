"""The gRPC face of the segmentation service.

:class:`SegmentationServicer` holds one ``async`` method per implemented RPC of
``pushwarden.segmentation.v1.SegmentationService`` (same name as the RPC); each converts the
request, calls one handler and converts the result. RPCs it does not define yet
answer UNIMPLEMENTED, naming themselves and :data:`PENDING_ISSUE`.
"""

from __future__ import annotations

from google.protobuf.descriptor import ServiceDescriptor

from pushwarden.segmentation.v1 import segmentation_pb2

SERVICE_DESCRIPTOR: ServiceDescriptor = segmentation_pb2.DESCRIPTOR.services_by_name[
    "SegmentationService"
]
SERVICE_NAME: str = SERVICE_DESCRIPTOR.full_name
# The issue that implements this service's RPCs.
PENDING_ISSUE = 5


class SegmentationServicer:
    """Implements ``pushwarden.segmentation.v1.SegmentationService``; no RPC is implemented yet."""
