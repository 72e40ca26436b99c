"""The gRPC face of the segmentation service.

:class:`SegmentationServicer` composes one mixin per area (``rpc/``); each subclasses the
generated ``SegmentationServiceServicer``, so mypy checks every method against the
contract. A method checks that the caller may use the app, converts the request to
domain values, calls one handler and converts the result; nothing else. RPCs no mixin
overrides answer UNIMPLEMENTED, naming themselves.
"""

from __future__ import annotations

from dataclasses import dataclass

from google.protobuf.descriptor import ServiceDescriptor

from pushwarden.segmentation.v1 import segmentation_pb2
from pushwarden.services.segmentation.handlers.events import EventHandlers
from pushwarden.services.segmentation.handlers.gdpr import GdprHandlers
from pushwarden.services.segmentation.handlers.lists import ListHandlers
from pushwarden.services.segmentation.handlers.profiles import ProfileHandlers, ProfileReads
from pushwarden.services.segmentation.handlers.segments import SegmentHandlers
from pushwarden.services.segmentation.rpc.gdpr import GdprRpcs
from pushwarden.services.segmentation.rpc.ingest import IngestRpcs
from pushwarden.services.segmentation.rpc.lists import ListRpcs
from pushwarden.services.segmentation.rpc.segments import SegmentRpcs

SERVICE_DESCRIPTOR: ServiceDescriptor = segmentation_pb2.DESCRIPTOR.services_by_name[
    "SegmentationService"
]
SERVICE_NAME: str = SERVICE_DESCRIPTOR.full_name


@dataclass(frozen=True, slots=True)
class SegmentationHandlers:
    """Every area's handlers, as the composition root builds them."""

    profiles: ProfileHandlers
    events: EventHandlers
    profile_reads: ProfileReads
    lists: ListHandlers
    segments: SegmentHandlers
    gdpr: GdprHandlers


class SegmentationServicer(IngestRpcs, ListRpcs, SegmentRpcs, GdprRpcs):
    """Implements ``pushwarden.segmentation.v1.SegmentationService``."""

    def __init__(self, handlers: SegmentationHandlers) -> None:
        self._profiles = handlers.profiles
        self._events = handlers.events
        self._profile_reads = handlers.profile_reads
        self._lists = handlers.lists
        self._segments = handlers.segments
        self._gdpr = handlers.gdpr
