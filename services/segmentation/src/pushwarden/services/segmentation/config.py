"""Settings of the segmentation service (``PUSHWARDEN_SEGMENTATION_*``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from pushwarden.runtime.config import ServiceConfig, port_setting

SERVICE = "segmentation"
DEFAULT_PORT = 50052


@dataclass(frozen=True, kw_only=True)
class SegmentationConfig(ServiceConfig):
    """The segmentation service's configuration: the runtime's settings with its own
    default port. Segmentation calls no other service."""

    SERVICE: ClassVar[str] = SERVICE

    port: int = port_setting(DEFAULT_PORT)
