"""Every app's providers in one process, built from the credentials file."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from pushwarden.services.delivery.providers.apns import ApnsProvider
from pushwarden.services.delivery.providers.credentials import Credentials
from pushwarden.services.delivery.providers.fcm import FcmProvider
from pushwarden.services.delivery.providers.model import PushProvider


@dataclass(frozen=True, slots=True)
class ProviderSettings:
    """Limits shared by every app's clients (from the service's configuration)."""

    apns_timeout: float = 10.0
    apns_max_connections: int = 10
    apns_max_streams: int | None = 100
    fcm_timeout: float = 10.0
    fcm_chunk_size: int = 100


class Providers:
    """The APNs and FCM provider of each app, by app id.

    Clients open lazily inside the loop that first sends through them; call
    :meth:`aclose` in that loop.
    """

    def __init__(self, credentials: Credentials, settings: ProviderSettings) -> None:
        self._apns: dict[str, ApnsProvider] = {}
        self._fcm: dict[str, FcmProvider] = {}
        for app_id, app in credentials.apps.items():
            if app.apns is not None:
                self._apns[app_id] = ApnsProvider(
                    app.apns,
                    timeout=settings.apns_timeout,
                    max_connections=settings.apns_max_connections,
                    max_streams=settings.apns_max_streams,
                )
            if app.fcm is not None:
                self._fcm[app_id] = FcmProvider(
                    app.fcm,
                    label=app_id,
                    timeout=settings.fcm_timeout,
                    chunk_size=settings.fcm_chunk_size,
                )

    def apns(self, app_id: str) -> ApnsProvider | None:
        """The app's APNs provider, or None when it has no APNs credentials."""
        return self._apns.get(app_id)

    def fcm(self, app_id: str) -> FcmProvider | None:
        """The app's FCM provider, or None when it has no FCM credentials."""
        return self._fcm.get(app_id)

    def all(self) -> list[PushProvider]:
        """Every provider of every app."""
        return [*self._apns.values(), *self._fcm.values()]

    async def aclose(self) -> None:
        """Close every provider's connections."""
        await asyncio.gather(*(provider.aclose() for provider in self.all()))
