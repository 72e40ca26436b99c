"""What goes to a provider and what comes back: plain values, no SDK types.

Every adapter answers each push with exactly one :data:`Outcome`; nothing the
SDKs raise leaves an adapter.  ``requests`` on every outcome is the number of
HTTP requests the provider was sent for it (0 when it was refused before any),
so the service's attempt budget counts what the provider saw, the SDKs' own
resends included.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from pushwarden.common.v1 import content_pb2
from pushwarden.payload import DeliveryOptions

# apns-id for a send id that is not itself a UUID: a name-based UUID, so every
# attempt of a send (and every process that retries it) carries the same one.
_APNS_ID_NAMESPACE = uuid.UUID("0b9a1c4e-5f57-4d1a-9d2e-6a3f2b1c7e10")


def apns_id_for(send_id: str) -> str:
    """The ``apns-id`` of a send: the send id if it is a UUID, else a UUID derived from it."""
    try:
        return str(uuid.UUID(send_id))
    except ValueError:
        return str(uuid.uuid5(_APNS_ID_NAMESPACE, send_id))


@dataclass(frozen=True, slots=True)
class OutgoingPush:
    """One push to one device: the send it belongs to, the device token and what it says.

    ``options`` is how the send is delivered (priority, expiry, reported ids);
    the adapter adds the app's APNs topic when ``options.apns_topic`` is empty.
    """

    send_id: str
    token: str
    content: content_pb2.Content
    options: DeliveryOptions

    @property
    def apns_id(self) -> str:
        """The ``apns-id`` this send carries on every attempt."""
        return apns_id_for(self.send_id)


@dataclass(frozen=True, slots=True, kw_only=True)
class Delivered:
    """The provider accepted the push; ``provider_id`` is its ``apns-id`` or FCM message name."""

    provider_id: str
    requests: int = 1


@dataclass(frozen=True, slots=True, kw_only=True)
class TokenDead:
    """The device token will never work again: invalidate the device, do not retry.

    ``invalidated_at`` is when the provider says the token stopped being valid
    (APNs 410 carries it); None when the provider gives no time (FCM).
    """

    reason: str
    invalidated_at: dt.datetime | None = None
    requests: int = 1


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryAfter:
    """Worth another attempt; ``seconds`` is the provider's Retry-After when it sent one."""

    reason: str
    seconds: float | None = None
    requests: int = 1


@dataclass(frozen=True, slots=True, kw_only=True)
class Failed:
    """Not delivered.  ``permanent``: the same push can never succeed (bad request,
    credentials refused after a refresh, too large); otherwise an error the
    provider did not classify, which the caller may retry within its budget."""

    reason: str
    permanent: bool
    requests: int = 1


Outcome = Delivered | TokenDead | RetryAfter | Failed


class PushProvider(Protocol):
    """One provider account of one app (an APNs key and topic, or an FCM project)."""

    @property
    def name(self) -> str:
        """``apns`` or ``fcm``."""
        ...

    async def send(self, batch: Sequence[OutgoingPush]) -> list[Outcome]:
        """Send each push once; one outcome per push, in order.  Never raises for a push."""
        ...

    async def aclose(self) -> None:
        """Close connections; call inside the loop the provider sent from."""
        ...
