"""Settings of the delivery service (``PUSHWARDEN_DELIVERY_*``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from pushwarden.runtime.config import ServiceConfig, port_setting, setting

SERVICE = "delivery"
DEFAULT_PORT = 50054


@dataclass(frozen=True, kw_only=True)
class DeliveryConfig(ServiceConfig):
    """The delivery service's configuration: the runtime's settings plus where consent
    listens (eligibility is checked again right before each provider call) and the
    file of provider credentials."""

    SERVICE: ClassVar[str] = SERVICE

    port: int = port_setting(DEFAULT_PORT)
    consent_addr: str = setting(
        "127.0.0.1:50051",
        help="gRPC target of the consent service: host:port, or dns:///host:port to "
        "balance over every replica the name resolves to.",
    )
    # setting() returns a dataclasses.field, which ruff's RUF009 does not recognise.
    credentials: Path | None = setting(  # noqa: RUF009
        None,
        help="TOML file of provider credentials, one entry per app: APNs .p8 key path, "
        "key id, team id, topic and sandbox or production; FCM service-account path and "
        "project id.",
        must_exist=True,
        type_doc="path (TOML, optional)",
    )
