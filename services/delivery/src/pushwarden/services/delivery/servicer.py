"""The gRPC face of the delivery service.

:class:`DeliveryServicer` composes one mixin per area (``rpc/``); each subclasses the
generated ``DeliveryServiceServicer``, so mypy checks every method against the
contract. A method checks that the caller may use the app, converts the request to
domain values, calls one handler and converts the result. RPCs no mixin overrides
answer UNIMPLEMENTED, naming themselves.
"""

from __future__ import annotations

from dataclasses import dataclass

from google.protobuf.descriptor import ServiceDescriptor

from pushwarden.delivery.v1 import delivery_pb2
from pushwarden.services.delivery.handlers.deliveries import DeliveryHandlers
from pushwarden.services.delivery.handlers.engagement import EngagementHandlers
from pushwarden.services.delivery.handlers.stats import StatsHandlers
from pushwarden.services.delivery.rpc.deliveries import DeliveryRpcs
from pushwarden.services.delivery.rpc.engagement import EngagementRpcs
from pushwarden.services.delivery.rpc.stats import StatsRpcs

SERVICE_DESCRIPTOR: ServiceDescriptor = delivery_pb2.DESCRIPTOR.services_by_name["DeliveryService"]
SERVICE_NAME: str = SERVICE_DESCRIPTOR.full_name


@dataclass(frozen=True, slots=True)
class DeliveryServiceHandlers:
    """Every area's handlers, as the composition root builds them."""

    deliveries: DeliveryHandlers
    engagement: EngagementHandlers
    stats: StatsHandlers


class DeliveryServicer(DeliveryRpcs, EngagementRpcs, StatsRpcs):
    """Implements ``pushwarden.delivery.v1.DeliveryService``."""

    def __init__(self, handlers: DeliveryServiceHandlers) -> None:
        self._deliveries = handlers.deliveries
        self._engagement = handlers.engagement
        self._stats = handlers.stats
