"""The gRPC face of the consent service.

:class:`ConsentServicer` composes one mixin per area (``rpc/``); each subclasses the
generated ``ConsentServiceServicer``, so mypy checks every method against the contract.
A method checks that the caller may use the app, converts the request to domain values,
calls one handler and converts the result; nothing else. RPCs no mixin overrides answer
UNIMPLEMENTED, naming themselves.
"""

from __future__ import annotations

from dataclasses import dataclass

from google.protobuf.descriptor import ServiceDescriptor

from pushwarden.consent.v1 import consent_pb2
from pushwarden.services.consent.handlers.categories import CategoryHandlers
from pushwarden.services.consent.rpc.categories import CategoryRpcs

SERVICE_DESCRIPTOR: ServiceDescriptor = consent_pb2.DESCRIPTOR.services_by_name["ConsentService"]
SERVICE_NAME: str = SERVICE_DESCRIPTOR.full_name


@dataclass(frozen=True, slots=True)
class ConsentHandlers:
    """Every area's handlers, as the composition root builds them."""

    categories: CategoryHandlers


class ConsentServicer(CategoryRpcs):
    """Implements ``pushwarden.consent.v1.ConsentService``."""

    def __init__(self, handlers: ConsentHandlers) -> None:
        self._categories = handlers.categories
