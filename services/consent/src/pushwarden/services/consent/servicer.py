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
from pushwarden.services.consent.handlers.consent import ChoiceHandlers
from pushwarden.services.consent.handlers.devices import DeviceHandlers
from pushwarden.services.consent.handlers.eligibility import EligibilityHandlers
from pushwarden.services.consent.handlers.feed import FeedHandlers
from pushwarden.services.consent.handlers.gdpr import GdprHandlers
from pushwarden.services.consent.handlers.health import HealthHandlers
from pushwarden.services.consent.handlers.ledger import LedgerHandlers
from pushwarden.services.consent.handlers.preferences import PreferenceHandlers
from pushwarden.services.consent.handlers.prompts import PromptHandlers
from pushwarden.services.consent.rpc.categories import CategoryRpcs
from pushwarden.services.consent.rpc.consent import ConsentRpcs
from pushwarden.services.consent.rpc.devices import DeviceRpcs
from pushwarden.services.consent.rpc.eligibility import EligibilityRpcs
from pushwarden.services.consent.rpc.gdpr import GdprRpcs
from pushwarden.services.consent.rpc.health import HealthRpcs
from pushwarden.services.consent.rpc.ledger import HistoryRpcs
from pushwarden.services.consent.rpc.preferences import PreferenceRpcs
from pushwarden.services.consent.rpc.prompts import PromptRpcs

SERVICE_DESCRIPTOR: ServiceDescriptor = consent_pb2.DESCRIPTOR.services_by_name["ConsentService"]
SERVICE_NAME: str = SERVICE_DESCRIPTOR.full_name


@dataclass(frozen=True, slots=True)
class ConsentHandlers:
    """Every area's handlers, as the composition root builds them."""

    categories: CategoryHandlers
    devices: DeviceHandlers
    consent: ChoiceHandlers
    ledger: LedgerHandlers
    feed: FeedHandlers
    preferences: PreferenceHandlers
    eligibility: EligibilityHandlers
    gdpr: GdprHandlers
    prompts: PromptHandlers
    health: HealthHandlers


class ConsentServicer(
    CategoryRpcs,
    ConsentRpcs,
    HistoryRpcs,
    PreferenceRpcs,
    EligibilityRpcs,
    GdprRpcs,
    PromptRpcs,
    HealthRpcs,
    DeviceRpcs,
):
    """Implements ``pushwarden.consent.v1.ConsentService``."""

    def __init__(self, handlers: ConsentHandlers) -> None:
        self._categories = handlers.categories
        self._devices = handlers.devices
        self._consent = handlers.consent
        self._ledger = handlers.ledger
        self._feed = handlers.feed
        self._preferences = handlers.preferences
        self._eligibility = handlers.eligibility
        self._gdpr = handlers.gdpr
        self._prompts = handlers.prompts
        self._health = handlers.health
