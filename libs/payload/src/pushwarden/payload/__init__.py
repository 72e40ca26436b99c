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


#: At most what the renderer adds around the content's own text, whatever fields are
#: set: every key it can write with its quotes and punctuation, the numbers (badge,
#: relevance score) and the constant values (``"time-sensitive"``...), in the APNs
#: payload (about 560 bytes) and in what FCM counts (only the text itself).
STRUCTURE_BOUND = 1024
#: The most bytes JSON makes of one byte of text: a control character as ``\u00XX``.
_ESCAPE_FACTOR = 6


def size_bound(content: content_pb2.Content, options: DeliveryOptions = _DEFAULT_OPTIONS) -> int:
    """A bound on both renderings' sizes (APNs payload bytes, what FCM counts), told
    without rendering.

    Every string of the content and of the ids the options add appears at most once in
    each rendering, and each of its bytes becomes at most six (JSON escapes); the
    protobuf encoding of the content already counts at least one byte per text byte,
    and more per list item and map entry than JSON's quotes and commas take; a
    character of an id is at most four UTF-8 bytes; :data:`STRUCTURE_BOUND` covers
    the rest.
    """
    ids = len(options.send_id) + len(options.campaign_id) + len(options.variant_id)
    return _ESCAPE_FACTOR * (content.ByteSize() + 4 * ids) + STRUCTURE_BOUND


def surely_fits(content: content_pb2.Content, options: DeliveryOptions = _DEFAULT_OPTIONS) -> bool:
    """Whether ``content`` fits both providers' limits for certain (:func:`size_bound`).

    True means :func:`check_size` would find it fits; False only that it must be asked
    (a content near the limit). Microseconds where rendering both takes tens.
    """
    return size_bound(content, options) <= min(APNS_LIMIT, FCM_LIMIT)


__all__ = [
    "APNS_LIMIT",
    "APNS_VOIP_LIMIT",
    "FCM_LIMIT",
    "RESERVED_DATA_KEYS",
    "RESERVED_DATA_PREFIXES",
    "STRUCTURE_BOUND",
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
    "size_bound",
    "surely_fits",
]
