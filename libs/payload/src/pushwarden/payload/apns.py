"""Content to an APNs provider API request: the JSON payload and the ``apns-*`` headers."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from pushwarden.common.v1 import content_pb2, types_pb2
from pushwarden.payload.data import custom_data
from pushwarden.payload.model import ApnsRequest, DeliveryOptions, SizeCheck

#: Apple's payload limits in bytes: 5 KB for VoIP pushes, 4 KB for every other type.
APNS_LIMIT = 4096
APNS_VOIP_LIMIT = 5120

_PUSH_TYPES: Mapping[int, str] = {
    content_pb2.APNS_PUSH_TYPE_ALERT: "alert",
    content_pb2.APNS_PUSH_TYPE_BACKGROUND: "background",
    content_pb2.APNS_PUSH_TYPE_LIVEACTIVITY: "liveactivity",
    content_pb2.APNS_PUSH_TYPE_LOCATION: "location",
    content_pb2.APNS_PUSH_TYPE_VOIP: "voip",
    content_pb2.APNS_PUSH_TYPE_FILEPROVIDER: "fileprovider",
    content_pb2.APNS_PUSH_TYPE_MDM: "mdm",
}
#: What Apple requires after the bundle id in ``apns-topic`` for these push types.
TOPIC_SUFFIXES: Mapping[str, str] = {
    "voip": ".voip",
    "location": ".location-query",
    "fileprovider": ".pushkit.fileprovider",
    "liveactivity": ".push-type.liveactivity",
}
_INTERRUPTION_LEVELS: Mapping[int, str] = {
    content_pb2.APNS_INTERRUPTION_LEVEL_PASSIVE: "passive",
    content_pb2.APNS_INTERRUPTION_LEVEL_ACTIVE: "active",
    content_pb2.APNS_INTERRUPTION_LEVEL_TIME_SENSITIVE: "time-sensitive",
    content_pb2.APNS_INTERRUPTION_LEVEL_CRITICAL: "critical",
}


def has_alert(content: content_pb2.Content) -> bool:
    """Whether the content shows anything (a title, subtitle, body or localized key)."""
    apns = content.apns
    return bool(
        content.title or content.subtitle or content.body or apns.title_loc_key or apns.body_loc_key
    )


def push_type(content: content_pb2.Content) -> str:
    """``apns-push-type``: the override, else background for a silent push, else alert.

    A push type this version does not know (the enum may grow) is treated as unset.
    """
    chosen = _PUSH_TYPES.get(content.apns.push_type)
    if chosen is not None:
        return chosen
    if content.apns.content_available and not has_alert(content):
        return "background"
    return "alert"


def priority(
    content: content_pb2.Content, kind: str, send_priority: types_pb2.Priority.ValueType
) -> int:
    """``apns-priority``: the override, else 5 for background pushes (Apple allows no 10
    there) and low-priority sends, else 10."""
    if content.apns.priority:
        return content.apns.priority
    if kind == "background" or send_priority == types_pb2.PRIORITY_LOW:
        return 5
    return 10


def aps_extras(content: content_pb2.Content) -> dict[str, Any]:
    """The iOS 15+ ``aps`` keys: interruption level, relevance score, target content id."""
    apns = content.apns
    extras: dict[str, Any] = {}
    level = _INTERRUPTION_LEVELS.get(apns.interruption_level)
    if level is not None:
        extras["interruption-level"] = level
    if apns.HasField("relevance_score"):
        extras["relevance-score"] = apns.relevance_score
    if apns.target_content_id:
        extras["target-content-id"] = apns.target_content_id
    return extras


def _aps(content: content_pb2.Content) -> dict[str, Any]:
    apns = content.apns
    alert_fields: tuple[tuple[str, Any], ...] = (
        ("title", content.title),
        ("subtitle", content.subtitle),
        ("body", content.body),
        ("title-loc-key", apns.title_loc_key),
        ("title-loc-args", list(apns.title_loc_args)),
        ("loc-key", apns.body_loc_key),
        ("loc-args", list(apns.body_loc_args)),
    )
    aps: dict[str, Any] = {}
    alert = {key: value for key, value in alert_fields if value}
    if alert:
        aps["alert"] = alert
    if content.HasField("badge"):
        aps["badge"] = content.badge
    if content.sound:
        aps["sound"] = content.sound
    if content.thread_id:
        aps["thread-id"] = content.thread_id
    if content.action_category:
        aps["category"] = content.action_category
    if apns.content_available:
        aps["content-available"] = 1
    # An image needs the app's notification service extension to fetch it.
    if content.mutable_content or content.image_url:
        aps["mutable-content"] = 1
    aps.update(aps_extras(content))
    return aps


def render_apns(content: content_pb2.Content, options: DeliveryOptions) -> ApnsRequest:
    """The APNs request for ``content``: payload, its bytes and size, and the headers.

    The payload is ``aps`` first, then the custom data at the top level.  An
    image URL rides as ``fcm_options.image``, where FCM itself puts it for iOS,
    so one notification service extension serves both paths.
    """
    kind = push_type(content)
    payload: dict[str, Any] = {"aps": _aps(content)}
    if content.image_url:
        payload["fcm_options"] = {"image": content.image_url}
    for key, value in custom_data(content, options).items():
        payload.setdefault(key, value)
    # Encoded exactly as aioapns encodes NotificationRequest.message, so the
    # size checked is the size sent.
    body = json.dumps(payload, ensure_ascii=False).encode()
    limit = APNS_VOIP_LIMIT if kind == "voip" else APNS_LIMIT
    topic = options.apns_topic + TOPIC_SUFFIXES.get(kind, "") if options.apns_topic else None
    expires_at = options.expires_at
    return ApnsRequest(
        payload=payload,
        body=body,
        push_type=kind,
        priority=priority(content, kind, options.priority),
        topic=topic,
        expiration=None if expires_at is None else int(expires_at.timestamp()),
        collapse_id=content.collapse_id or None,
        size=SizeCheck("apns", len(body), limit),
    )
