"""Settings of the delivery service (``PUSHWARDEN_DELIVERY_*``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from pushwarden.runtime.config import ConfigError, ServiceConfig, port_setting, setting
from pushwarden.services.delivery.providers import (
    Credentials,
    CredentialsError,
    ProviderSettings,
    load_credentials,
)

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
    apns_timeout: float = setting(
        10.0,
        help="Seconds one APNs request may take before it is abandoned and retried "
        "(aioapns has no timeout of its own and ignores reset streams).",
        minimum=0.1,
        maximum=300,
    )
    apns_max_connections: int = setting(
        10, help="HTTP/2 connections per app to APNs.", minimum=1, maximum=1000
    )
    apns_max_streams: int | None = setting(
        100,
        help="Requests in flight per APNs connection (unset: what APNs allows, 1000). "
        "h2 scans every open stream of a connection whenever it opens one, so a hundred "
        "streams on each of several connections costs the client less CPU than a "
        "thousand on one.",
        minimum=1,
        maximum=1000,
    )
    fcm_timeout: float = setting(
        10.0,
        help="Seconds one FCM request may take (firebase-admin's httpTimeout).",
        minimum=0.1,
        maximum=300,
    )
    fcm_chunk_size: int = setting(
        100,
        help="Messages per firebase-admin send_each_async call (FCM allows 500).",
        minimum=1,
        maximum=500,
    )

    consent_timeout_s: float = setting(
        5.0,
        help="Seconds a call to consent (categories, eligibility, invalidation) may take "
        "before it is abandoned; the sends it was for are tried again later.",
        minimum=0.1,
        maximum=120,
    )
    max_attempts: int = setting(
        5,
        help="Provider HTTP requests one device of a send may cost, first try and retries "
        "together (the SDKs' own resends counted); then the send is dead-lettered.",
        minimum=1,
        maximum=50,
    )
    retry_base_s: float = setting(
        1.0,
        help="Backoff before the first retry, doubled on each further one (with jitter; "
        "a provider's Retry-After wins when it is longer).",
        minimum=0.01,
        maximum=3600,
    )
    retry_max_s: float = setting(
        600.0,
        help="Longest backoff between two tries of a send.",
        minimum=0.01,
        maximum=86400,
    )
    dispatch: bool = setting(
        True,
        help="Run the dispatcher in this process; false makes an API-only replica that "
        "stores sends for the replicas that dispatch.",
    )
    dispatch_batch: int = setting(
        500,
        help="Sends claimed per dispatch batch (one CheckEligibility call per category "
        "in it, at most 1,000 users each).",
        minimum=1,
        maximum=1000,
    )
    dispatch_poll_s: float = setting(
        0.5,
        help="Seconds the dispatcher waits before looking again when nothing was due.",
        minimum=0.01,
        maximum=60,
    )
    claim_lease_s: float = setting(
        120.0,
        help="Seconds a claimed send stays with the process that claimed it; a process "
        "that dies holding it gives it back after this long. Keep it well above the "
        "provider timeouts.",
        minimum=1,
        maximum=3600,
    )

    def validate(self) -> None:
        """Also read the credentials file, so that a bad one stops the service at start."""
        super().validate()
        self.provider_credentials()

    def provider_credentials(self) -> Credentials:
        """Every app's provider credentials from the file (none when no file is set)."""
        if self.credentials is None:
            return Credentials()
        try:
            return load_credentials(self.credentials)
        except CredentialsError as exc:
            raise ConfigError(self.env_name("credentials"), str(exc)) from None

    def provider_settings(self) -> ProviderSettings:
        """Limits for every app's provider clients."""
        return ProviderSettings(
            apns_timeout=self.apns_timeout,
            apns_max_connections=self.apns_max_connections,
            apns_max_streams=self.apns_max_streams,
            fcm_timeout=self.fcm_timeout,
            fcm_chunk_size=self.fcm_chunk_size,
        )
