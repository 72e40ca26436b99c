"""The gRPC face of the consent service.

:class:`ConsentServicer` holds one ``async`` method per implemented RPC of
``pushwarden.consent.v1.ConsentService`` (same name as the RPC); each converts the
request, calls one handler and converts the result. RPCs it does not define yet
answer UNIMPLEMENTED, naming themselves and :data:`PENDING_ISSUE`.
"""

from __future__ import annotations

from google.protobuf.descriptor import ServiceDescriptor

from pushwarden.consent.v1 import consent_pb2

SERVICE_DESCRIPTOR: ServiceDescriptor = consent_pb2.DESCRIPTOR.services_by_name["ConsentService"]
SERVICE_NAME: str = SERVICE_DESCRIPTOR.full_name
# The issue that implements this service's RPCs.
PENDING_ISSUE = 4


class ConsentServicer:
    """Implements ``pushwarden.consent.v1.ConsentService``; no RPC is implemented yet."""
