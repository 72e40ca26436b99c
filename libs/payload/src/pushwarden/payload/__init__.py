"""The one payload renderer: notification content to what APNs and FCM are sent.

A pure function of the contract's ``pushwarden.common.v1.Content`` and the
send's :class:`DeliveryOptions`: no I/O, no clock (``now`` is an option), the
same input always giving the same bytes.  Delivery builds its provider
requests from it; the scheduler's template size check uses the same sizes.
Locale variants are chosen by the caller: pass the chosen locale's content.

>>> from pushwarden.common.v1 import content_pb2
>>> rendered = render(content_pb2.Content(title="Hi", body="Your order shipped"))
>>> rendered.apns.body
b'{"aps": {"alert": {"title": "Hi", "body": "Your order shipped"}}}'
>>> rendered.tightest.fits, rendered.tightest.limit
(True, 4096)
"""

from __future__ import annotations

from pushwarden.common.v1 import content_pb2
from pushwarden.payload.apns import APNS_LIMIT, APNS_VOIP_LIMIT, render_apns
from pushwarden.payload.data import (
    RESERVED_DATA_KEYS,
    RESERVED_DATA_PREFIXES,
    custom_data,
    is_reserved_data_key,
)
from pushwarden.payload.fcm import FCM_LIMIT, render_fcm
from pushwarden.payload.model import (
    ApnsRequest,
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
    Provider,
    Rendered,
    SizeCheck,
)

_DEFAULT_OPTIONS = DeliveryOptions()


def render(content: content_pb2.Content, options: DeliveryOptions = _DEFAULT_OPTIONS) -> Rendered:
    """``content`` rendered for APNs and for FCM, each with its size check."""
    return Rendered(apns=render_apns(content, options), fcm=render_fcm(content, options))


def check_size(
    content: content_pb2.Content, options: DeliveryOptions = _DEFAULT_OPTIONS
) -> SizeCheck:
    """The size check with the least headroom of the two providers (never raises when over)."""
    return render(content, options).tightest


__all__ = [
    "APNS_LIMIT",
    "APNS_VOIP_LIMIT",
    "FCM_LIMIT",
    "RESERVED_DATA_KEYS",
    "RESERVED_DATA_PREFIXES",
    "ApnsRequest",
    "DeliveryOptions",
    "FcmAndroidConfig",
    "FcmAndroidNotification",
    "FcmApnsConfig",
    "FcmAps",
    "FcmApsAlert",
    "FcmMessage",
    "FcmNotification",
    "FcmRequest",
    "FcmWebpushAction",
    "FcmWebpushConfig",
    "FcmWebpushNotification",
    "Provider",
    "Rendered",
    "SizeCheck",
    "check_size",
    "custom_data",
    "is_reserved_data_key",
    "render",
    "render_apns",
    "render_fcm",
]
