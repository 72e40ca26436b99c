"""Content to an FCM HTTP v1 message: notification, data and the per-platform sections."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping
from typing import Any

from pushwarden.common.v1 import content_pb2, types_pb2
from pushwarden.payload import apns as apns_rules
from pushwarden.payload.data import custom_data
from pushwarden.payload.model import (
    DeliveryOptions,
    FcmAndroidConfig,
    FcmAndroidNotification,
    FcmApnsConfig,
    FcmAps,
    FcmApsAlert,
    FcmMessage,
    FcmNotification,
    FcmRequest,
    FcmWebpushAction,
    FcmWebpushConfig,
    FcmWebpushNotification,
    SizeCheck,
)

#: FCM's payload limit in bytes (data keys and values plus the notification's text).
FCM_LIMIT = 4096
#: The longest TTL FCM accepts.
MAX_TTL = dt.timedelta(days=28)

_ANDROID_PRIORITIES: Mapping[int, str] = {
    content_pb2.ANDROID_PRIORITY_NORMAL: "normal",
    content_pb2.ANDROID_PRIORITY_HIGH: "high",
}
_URGENCIES: Mapping[int, str] = {
    content_pb2.WEB_PUSH_URGENCY_VERY_LOW: "very-low",
    content_pb2.WEB_PUSH_URGENCY_LOW: "low",
    content_pb2.WEB_PUSH_URGENCY_NORMAL: "normal",
    content_pb2.WEB_PUSH_URGENCY_HIGH: "high",
}
_SEND_URGENCIES: Mapping[int, str] = {
    types_pb2.PRIORITY_LOW: "low",
    types_pb2.PRIORITY_HIGH: "high",
}


def _ttl(override: dt.timedelta | None, options: DeliveryOptions) -> dt.timedelta | None:
    """The override, else what is left until the send expires; within 0..28 days."""
    if override is None:
        if options.expires_at is None or options.now is None:
            return None
        override = options.expires_at - options.now
    return min(max(override, dt.timedelta(0)), MAX_TTL)


def _notification(content: content_pb2.Content) -> FcmNotification | None:
    if not (content.title or content.body or content.image_url):
        return None
    return FcmNotification(
        title=content.title or None, body=content.body or None, image=content.image_url or None
    )


def _android(
    content: content_pb2.Content, options: DeliveryOptions, shows: bool
) -> FcmAndroidConfig:
    android = content.android
    priority = _ANDROID_PRIORITIES.get(android.priority)
    if priority is None:
        priority = "high" if options.priority == types_pb2.PRIORITY_HIGH else "normal"
    notification = FcmAndroidNotification(
        sound=content.sound or None,
        tag=android.tag or content.thread_id or None,
        click_action=android.click_action or content.action_category or None,
        channel_id=android.channel_id or None,
        icon=android.icon or None,
        color=android.color or None,
    )
    return FcmAndroidConfig(
        priority=priority,
        ttl=_ttl(android.ttl.ToTimedelta() if android.HasField("ttl") else None, options),
        collapse_key=android.collapse_key or content.collapse_id or None,
        # A silent push must not grow a notification out of its Android details.
        notification=notification if shows and notification != FcmAndroidNotification() else None,
    )


def _apns(content: content_pb2.Content, options: DeliveryOptions) -> FcmApnsConfig:
    apns = content.apns
    kind = apns_rules.push_type(content)
    headers = {
        "apns-push-type": kind,
        "apns-priority": str(apns_rules.priority(content, kind, options.priority)),
    }
    if options.expires_at is not None:
        headers["apns-expiration"] = str(int(options.expires_at.timestamp()))
    if content.collapse_id:
        headers["apns-collapse-id"] = content.collapse_id
    alert = FcmApsAlert(
        subtitle=content.subtitle or None,
        title_loc_key=apns.title_loc_key or None,
        title_loc_args=tuple(apns.title_loc_args) or None,
        loc_key=apns.body_loc_key or None,
        loc_args=tuple(apns.body_loc_args) or None,
    )
    aps = FcmAps(
        alert=alert if alert != FcmApsAlert() else None,
        badge=content.badge if content.HasField("badge") else None,
        sound=content.sound or None,
        content_available=True if apns.content_available else None,
        category=content.action_category or None,
        thread_id=content.thread_id or None,
        mutable_content=True if content.mutable_content or content.image_url else None,
        custom_data=apns_rules.aps_extras(content) or None,
    )
    return FcmApnsConfig(headers=headers, aps=aps, image=content.image_url or None)


def _webpush(
    content: content_pb2.Content, options: DeliveryOptions, shows: bool
) -> FcmWebpushConfig | None:
    if not content.HasField("web_push"):
        return None
    web = content.web_push
    headers = {
        "Urgency": _URGENCIES.get(web.urgency) or _SEND_URGENCIES.get(options.priority, "normal")
    }
    ttl = _ttl(web.ttl.ToTimedelta() if web.HasField("ttl") else None, options)
    if ttl is not None:
        headers["TTL"] = str(int(ttl.total_seconds()))
    if web.topic:
        headers["Topic"] = web.topic
    notification = FcmWebpushNotification(
        icon=web.icon_url or None,
        badge=web.badge_url or None,
        require_interaction=True if web.require_interaction else None,
        actions=tuple(FcmWebpushAction(a.action, a.title, a.icon_url or None) for a in web.actions)
        or None,
    )
    link = web.link or (content.deep_link if content.deep_link.startswith("https://") else "")
    return FcmWebpushConfig(
        headers=headers,
        notification=notification if shows and notification != FcmWebpushNotification() else None,
        link=link or None,
    )


def fcm_message(content: content_pb2.Content, options: DeliveryOptions) -> FcmMessage:
    """The FCM message for ``content`` (the caller adds the target token).

    Title, body and image go in the cross-platform notification; custom data
    (with ``deep_link`` and the ``pw_*`` keys) in ``data``; the Android, APNs
    and (when the content has web-push settings) web-push sections carry the
    rest.  A content with nothing to show is a data-only (silent) message.
    """
    notification = _notification(content)
    shows = notification is not None
    return FcmMessage(
        data=custom_data(content, options) or None,
        notification=notification,
        android=_android(content, options, shows),
        apns=_apns(content, options),
        webpush=_webpush(content, options, shows),
    )


# -- the HTTP v1 JSON, as firebase-admin encodes it ---------------------------------------


def _compact(fields: Mapping[str, Any]) -> dict[str, Any]:
    # firebase-admin drops None, [] and {} at every level; so must we, to match it.
    return {key: value for key, value in fields.items() if value not in (None, [], {})}


def encode_ttl(ttl: dt.timedelta | None) -> str | None:
    """A TTL as firebase-admin writes it: whole seconds, or nine decimals ("3.500000000s")."""
    if ttl is None:
        return None
    total = ttl.total_seconds()
    seconds = math.floor(total)
    nanos = int((total - seconds) * 1e9)
    return f"{seconds}.{nanos:09d}s" if nanos else f"{seconds}s"


def _android_json(android: FcmAndroidConfig) -> dict[str, Any]:
    note = android.notification
    notification = None
    if note is not None:
        notification = _compact(
            {
                "sound": note.sound,
                "tag": note.tag,
                "click_action": note.click_action,
                "channel_id": note.channel_id,
                "icon": note.icon,
                "color": note.color,
            }
        )
    return _compact(
        {
            "collapse_key": android.collapse_key,
            "notification": notification,
            "priority": android.priority,
            "ttl": encode_ttl(android.ttl),
        }
    )


def _apns_json(apns: FcmApnsConfig) -> dict[str, Any]:
    aps, alert = apns.aps, apns.aps.alert
    alert_json = None
    if alert is not None:
        alert_json = _compact(
            {
                "subtitle": alert.subtitle,
                "title-loc-key": alert.title_loc_key,
                "title-loc-args": list(alert.title_loc_args or ()),
                "loc-key": alert.loc_key,
                "loc-args": list(alert.loc_args or ()),
            }
        )
    aps_json = _compact(
        {
            "alert": alert_json,
            "badge": aps.badge,
            "sound": aps.sound,
            "category": aps.category,
            "thread-id": aps.thread_id,
            "content-available": 1 if aps.content_available else None,
            "mutable-content": 1 if aps.mutable_content else None,
            **(aps.custom_data or {}),
        }
    )
    return _compact(
        {
            "headers": apns.headers,
            "payload": _compact({"aps": aps_json}),
            "fcm_options": _compact({"image": apns.image}),
        }
    )


def _webpush_json(webpush: FcmWebpushConfig) -> dict[str, Any]:
    note = webpush.notification
    notification = None
    if note is not None:
        actions = [
            _compact({"action": a.action, "title": a.title, "icon": a.icon})
            for a in note.actions or ()
        ]
        notification = _compact(
            {
                "actions": actions,
                "badge": note.badge,
                "icon": note.icon,
                "requireInteraction": note.require_interaction,
            }
        )
    return _compact(
        {
            "headers": webpush.headers,
            "notification": notification,
            "fcm_options": _compact({"link": webpush.link}),
        }
    )


def message_json(message: FcmMessage) -> dict[str, Any]:
    """The v1 ``message`` object firebase-admin sends for ``message`` (without a target)."""
    note = message.notification
    return _compact(
        {
            "android": _android_json(message.android),
            "apns": _apns_json(message.apns),
            "data": message.data,
            "notification": None
            if note is None
            else _compact({"title": note.title, "body": note.body, "image": note.image}),
            "webpush": None if message.webpush is None else _webpush_json(message.webpush),
        }
    )


def payload_size(message: Mapping[str, Any]) -> int:
    """The bytes FCM counts against its limit: every data key and value, and the
    notification text (top level and Android), UTF-8 encoded."""

    def text(section: Mapping[str, Any] | None, names: tuple[str, ...]) -> int:
        if not section:
            return 0
        return sum(len(section[name].encode()) for name in names if section.get(name))

    def data(section: Mapping[str, Any] | None) -> int:
        values = (section or {}).get("data") or {}
        return sum(len(key.encode()) + len(value.encode()) for key, value in values.items())

    android = message.get("android")
    return (
        data(message)
        + data(android)
        + data(message.get("webpush"))
        + text(message.get("notification"), ("title", "body", "image"))
        + text(
            (android or {}).get("notification"),
            ("title", "body", "icon", "sound", "tag", "click_action", "channel_id", "image"),
        )
    )


def render_fcm(content: content_pb2.Content, options: DeliveryOptions) -> FcmRequest:
    """The FCM message for ``content``, its v1 JSON and its size against FCM's limit."""
    message = fcm_message(content, options)
    encoded = message_json(message)
    return FcmRequest(message, encoded, SizeCheck("fcm", payload_size(encoded), FCM_LIMIT))
