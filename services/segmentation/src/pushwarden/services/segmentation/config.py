"""Settings of the segmentation service (``PUSHWARDEN_SEGMENTATION_*``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from pushwarden.runtime.config import ServiceConfig, port_setting, setting

SERVICE = "segmentation"
DEFAULT_PORT = 50052


@dataclass(frozen=True, kw_only=True)
class SegmentationConfig(ServiceConfig):
    """The segmentation service's configuration: the runtime's settings plus where
    consent listens. Segmentation calls consent for one thing only: it follows consent's
    change feed (``WatchChanges``) and erases a user's profile, events and list
    memberships when the feed says ERASED."""

    SERVICE: ClassVar[str] = SERVICE

    port: int = port_setting(DEFAULT_PORT)
    consent_addr: str = setting(
        "127.0.0.1:50051",
        help="gRPC target of the consent service, whose change feed segmentation follows "
        "to erase users: host:port, or dns:///host:port to balance over every replica the "
        "name resolves to.",
    )
    consent_poll_s: float = setting(
        1.0,
        help="Seconds between reads of consent's change feed (erasure follower).",
        minimum=0.01,
        maximum=300,
    )
    consent_timeout_s: float = setting(
        10.0,
        help="Default deadline, in seconds, of a call to consent.",
        minimum=0.1,
        maximum=300,
    )
    event_retention_days: int = setting(
        90,
        help="Days events are kept (segment predicates and StreamEvents): an event whose "
        "occurred_at is older is REJECTED by TrackEvents, and an older stream cursor is "
        "CURSOR_EXPIRED.",
        minimum=7,
        maximum=3 * 366,
    )
    stream_heartbeat_s: float = setting(
        10.0,
        help="Seconds between heartbeats of an idle StreamEvents stream.",
        minimum=0.05,
        maximum=30,
    )
    stream_poll_s: float = setting(
        0.5,
        help="Seconds between checks for events committed by other replicas while a "
        "StreamEvents stream is idle (events of this process wake it at once).",
        minimum=0.01,
        maximum=10,
    )
