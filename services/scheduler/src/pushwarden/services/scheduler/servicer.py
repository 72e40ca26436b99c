"""The gRPC face of the scheduler service.

:class:`SchedulerServicer` composes one mixin per area (``rpc/``); each subclasses the
generated ``SchedulerServiceServicer``, so mypy checks every method against the
contract. A method checks that the caller may use the app, converts the request to
domain values, calls one handler and converts the result. RPCs no mixin overrides
answer UNIMPLEMENTED, naming themselves.
"""

from __future__ import annotations

from dataclasses import dataclass

from google.protobuf.descriptor import ServiceDescriptor

from pushwarden.scheduler.v1 import scheduler_pb2
from pushwarden.services.scheduler.handlers.campaigns import CampaignHandlers
from pushwarden.services.scheduler.handlers.explain import ExplainHandlers
from pushwarden.services.scheduler.handlers.policies import PolicyHandlers
from pushwarden.services.scheduler.handlers.sends import SendHandlers
from pushwarden.services.scheduler.handlers.triggers import TriggerHandlers
from pushwarden.services.scheduler.rpc.campaigns import CampaignRpcs
from pushwarden.services.scheduler.rpc.explain import ExplainRpcs
from pushwarden.services.scheduler.rpc.policies import PolicyRpcs
from pushwarden.services.scheduler.rpc.sends import SendRpcs
from pushwarden.services.scheduler.rpc.triggers import TriggerRpcs

SERVICE_DESCRIPTOR: ServiceDescriptor = scheduler_pb2.DESCRIPTOR.services_by_name[
    "SchedulerService"
]
SERVICE_NAME: str = SERVICE_DESCRIPTOR.full_name


@dataclass(frozen=True, slots=True)
class SchedulerServiceHandlers:
    """Every area's handlers, as the composition root builds them."""

    sends: SendHandlers
    campaigns: CampaignHandlers
    policies: PolicyHandlers
    explain: ExplainHandlers
    triggers: TriggerHandlers


class SchedulerServicer(SendRpcs, CampaignRpcs, PolicyRpcs, ExplainRpcs, TriggerRpcs):
    """Implements ``pushwarden.scheduler.v1.SchedulerService``."""

    def __init__(self, handlers: SchedulerServiceHandlers) -> None:
        self._sends = handlers.sends
        self._campaigns = handlers.campaigns
        self._policies = handlers.policies
        self._explain = handlers.explain
        self._triggers = handlers.triggers
