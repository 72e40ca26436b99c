"""Settings of the scheduler service (``PUSHWARDEN_SCHEDULER_*``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from pushwarden.runtime.config import ServiceConfig, port_setting, setting

SERVICE = "scheduler"
DEFAULT_PORT = 50053

_TARGET_HELP = (
    "gRPC target of the {peer} service: host:port, or dns:///host:port to balance "
    "over every replica the name resolves to."
)


@dataclass(frozen=True, kw_only=True)
class SchedulerConfig(ServiceConfig):
    """The scheduler's configuration: the runtime's settings plus where the three
    services it calls listen (consent for eligibility, segmentation for audiences and
    events, delivery for sends)."""

    SERVICE: ClassVar[str] = SERVICE

    port: int = port_setting(DEFAULT_PORT)
    consent_addr: str = setting("127.0.0.1:50051", help=_TARGET_HELP.format(peer="consent"))
    segmentation_addr: str = setting(
        "127.0.0.1:50052", help=_TARGET_HELP.format(peer="segmentation")
    )
    delivery_addr: str = setting("127.0.0.1:50054", help=_TARGET_HELP.format(peer="delivery"))
