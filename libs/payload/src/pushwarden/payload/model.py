"""What the renderer takes (besides the content) and what it gives back.

The FCM classes mirror ``firebase_admin.messaging`` one to one: each names the
class it stands for, and its fields are that class's keyword arguments, so the
delivery adapter builds a ``messaging.Message`` field by field without a
decision of its own.  They are plain data here so that this package needs
neither firebase-admin nor its HTTP stack.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, Literal

from pushwarden.common.v1 import types_pb2
from pushwarden.delivery.v1 import resources_pb2

Provider = Literal["apns", "fcm"]


@dataclass(frozen=True, slots=True)
class DeliveryOptions:
    """How one send is delivered, beside what it says.

    ``priority`` is the send's ``pushwarden.common.v1.Priority``.
    ``expires_at`` (timezone-aware) becomes ``apns-expiration`` and the FCM
    TTLs, which are measured from ``now``, so ``now`` is required with it.
    ``apns_topic`` is the app's bundle id; the renderer adds the suffix a push
    type needs (``.voip``...).  ``send_id``, ``campaign_id`` and ``variant_id``
    travel in the custom data as ``pw_send_id``, ``pw_campaign_id`` and
    ``pw_variant_id`` when set, so the app can report engagement.
    """

    priority: types_pb2.Priority.ValueType = types_pb2.PRIORITY_NORMAL
    expires_at: dt.datetime | None = None
    now: dt.datetime | None = None
    apns_topic: str = ""
    send_id: str = ""
    campaign_id: str = ""
    variant_id: str = ""

    def __post_init__(self) -> None:
        for name in ("expires_at", "now"):
            value = getattr(self, name)
            if value is not None and value.utcoffset() is None:
                raise ValueError(f"{name} must be timezone-aware")
        if self.expires_at is not None and self.now is None:
            raise ValueError("now is required with expires_at (the FCM TTLs count from it)")

    @classmethod
    def for_send(
        cls, send: resources_pb2.Send, *, now: dt.datetime, apns_topic: str = ""
    ) -> DeliveryOptions:
        """The options a delivery ``Send`` carries: priority, expiry and the ids it reports."""
        expires_at = send.expires_at.ToDatetime(dt.UTC) if send.HasField("expires_at") else None
        return cls(
            priority=send.priority,
            expires_at=expires_at,
            now=now,
            apns_topic=apns_topic,
            send_id=send.send_id,
            campaign_id=send.campaign_id,
            variant_id=send.variant_id,
        )


@dataclass(frozen=True, slots=True)
class SizeCheck:
    """A rendered payload's size against its provider's limit, in bytes.

    An over-size payload is a result, not an error: ``fits`` is False and the
    caller decides (the scheduler drops the user with PAYLOAD_TOO_LARGE,
    delivery fails the send with that reason).
    """

    provider: Provider
    size: int
    limit: int

    @property
    def fits(self) -> bool:
        """Whether the payload is within the limit."""
        return self.size <= self.limit

    @property
    def headroom(self) -> int:
        """Bytes left under the limit (negative when over it)."""
        return self.limit - self.size


@dataclass(frozen=True, slots=True)
class ApnsRequest:
    """One APNs provider API request, less the device token and ``apns-id``.

    ``payload`` is the JSON object (what aioapns takes as
    ``NotificationRequest.message``; treat it as read-only) and ``body`` its
    bytes as aioapns puts them on the wire, so ``size.size == len(body)``.
    ``expiration`` is ``apns-expiration`` in epoch seconds (aioapns wants
    ``time_to_live = expiration - now``).  ``topic`` is None when the options
    named no bundle id.
    """

    payload: dict[str, Any]
    body: bytes
    push_type: str
    priority: int
    topic: str | None
    expiration: int | None
    collapse_id: str | None
    size: SizeCheck

    @property
    def headers(self) -> dict[str, str]:
        """The ``apns-*`` headers of the request (``apns-id`` is the caller's)."""
        headers = {"apns-push-type": self.push_type, "apns-priority": str(self.priority)}
        if self.topic is not None:
            headers["apns-topic"] = self.topic
        if self.expiration is not None:
            headers["apns-expiration"] = str(self.expiration)
        if self.collapse_id is not None:
            headers["apns-collapse-id"] = self.collapse_id
        return headers


@dataclass(frozen=True, slots=True)
class FcmNotification:
    """``messaging.Notification``: what every platform shows."""

    title: str | None = None
    body: str | None = None
    image: str | None = None


@dataclass(frozen=True, slots=True)
class FcmAndroidNotification:
    """``messaging.AndroidNotification``."""

    sound: str | None = None
    tag: str | None = None
    click_action: str | None = None
    channel_id: str | None = None
    icon: str | None = None
    color: str | None = None


@dataclass(frozen=True, slots=True)
class FcmAndroidConfig:
    """``messaging.AndroidConfig``: ``priority`` is "high" or "normal"."""

    priority: str
    ttl: dt.timedelta | None = None
    collapse_key: str | None = None
    notification: FcmAndroidNotification | None = None


@dataclass(frozen=True, slots=True)
class FcmApsAlert:
    """``messaging.ApsAlert`` (title and body come from the message's notification)."""

    subtitle: str | None = None
    title_loc_key: str | None = None
    title_loc_args: tuple[str, ...] | None = None
    loc_key: str | None = None
    loc_args: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True)
class FcmAps:
    """``messaging.Aps``; ``custom_data`` holds the ``aps`` keys it has no field for."""

    alert: FcmApsAlert | None = None
    badge: int | None = None
    sound: str | None = None
    content_available: bool | None = None
    category: str | None = None
    thread_id: str | None = None
    mutable_content: bool | None = None
    custom_data: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class FcmApnsConfig:
    """``messaging.APNSConfig``: ``payload=APNSPayload(aps)``,
    ``fcm_options=APNSFCMOptions(image)``."""

    headers: dict[str, str]
    aps: FcmAps
    image: str | None = None


@dataclass(frozen=True, slots=True)
class FcmWebpushAction:
    """``messaging.WebpushNotificationAction``."""

    action: str
    title: str
    icon: str | None = None


@dataclass(frozen=True, slots=True)
class FcmWebpushNotification:
    """``messaging.WebpushNotification`` (title and body come from the message's notification)."""

    icon: str | None = None
    badge: str | None = None
    require_interaction: bool | None = None
    actions: tuple[FcmWebpushAction, ...] | None = None


@dataclass(frozen=True, slots=True)
class FcmWebpushConfig:
    """``messaging.WebpushConfig(headers, notification, fcm_options=WebpushFCMOptions(link))``."""

    headers: dict[str, str]
    notification: FcmWebpushNotification | None = None
    link: str | None = None


@dataclass(frozen=True, slots=True)
class FcmMessage:
    """``messaging.Message`` less its target (the caller adds ``token``)."""

    data: dict[str, str] | None
    notification: FcmNotification | None
    android: FcmAndroidConfig
    apns: FcmApnsConfig
    webpush: FcmWebpushConfig | None = None


@dataclass(frozen=True, slots=True)
class FcmRequest:
    """The FCM message, its HTTP v1 JSON (as firebase-admin encodes it) and its size."""

    message: FcmMessage
    json: dict[str, Any]
    size: SizeCheck


@dataclass(frozen=True, slots=True)
class Rendered:
    """One content rendered for both providers."""

    apns: ApnsRequest
    fcm: FcmRequest

    @property
    def tightest(self) -> SizeCheck:
        """The check with the least headroom: the one to report (and the failing one if any)."""
        return min((self.apns.size, self.fcm.size), key=lambda check: check.headroom)

    @property
    def fits(self) -> bool:
        """Whether both payloads are within their providers' limits."""
        return self.apns.size.fits and self.fcm.size.fits
