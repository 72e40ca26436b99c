"""The FCM message, field by field: golden HTTP v1 JSON and the plain data behind it."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from google.protobuf import duration_pb2

from pushwarden.common.v1 import content_pb2, types_pb2
from pushwarden.payload import (
    FCM_LIMIT,
    DeliveryOptions,
    FcmAndroidConfig,
    FcmAndroidNotification,
    FcmNotification,
    render,
    render_fcm,
)
from pushwarden.payload.fcm import encode_ttl

Content = content_pb2.Content
NOW = dt.datetime(2026, 12, 4, 18, 0, tzinfo=dt.UTC)
EXPIRES = NOW + dt.timedelta(hours=2)


def fcm_json(content: Content, options: DeliveryOptions | None = None) -> dict[str, Any]:
    return render_fcm(content, options or DeliveryOptions()).json


def test_a_full_content_renders_every_section() -> None:
    content = Content(
        title="Order 42",
        subtitle="Shop",
        body="On its way",
        sound="default",
        badge=0,
        image_url="https://img.example/42.png",
        thread_id="orders",
        action_category="TRACK",
        deep_link="https://shop.example/orders/42",
        collapse_id="order-42",
        custom_data={"order": "42"},
        apns=content_pb2.ApnsOverrides(
            interruption_level=content_pb2.APNS_INTERRUPTION_LEVEL_PASSIVE
        ),
        android=content_pb2.AndroidOverrides(channel_id="orders", color="#00aa00", icon="ic_box"),
        web_push=content_pb2.WebPushOverrides(
            icon_url="https://img.example/icon.png",
            require_interaction=True,
            actions=[content_pb2.WebPushAction(action="track", title="Track")],
        ),
    )
    options = DeliveryOptions(
        priority=types_pb2.PRIORITY_HIGH, expires_at=EXPIRES, now=NOW, send_id="s-1"
    )
    expiration = str(int(EXPIRES.timestamp()))
    assert fcm_json(content, options) == {
        "notification": {
            "title": "Order 42",
            "body": "On its way",
            "image": "https://img.example/42.png",
        },
        "data": {
            "deep_link": "https://shop.example/orders/42",
            "order": "42",
            "pw_send_id": "s-1",
        },
        "android": {
            "priority": "high",
            "ttl": "7200s",
            "collapse_key": "order-42",
            "notification": {
                "sound": "default",
                "tag": "orders",
                "click_action": "TRACK",
                "channel_id": "orders",
                "icon": "ic_box",
                "color": "#00aa00",
            },
        },
        "apns": {
            "headers": {
                "apns-push-type": "alert",
                "apns-priority": "10",
                "apns-expiration": expiration,
                "apns-collapse-id": "order-42",
            },
            "payload": {
                "aps": {
                    "alert": {"subtitle": "Shop"},
                    "badge": 0,
                    "sound": "default",
                    "category": "TRACK",
                    "thread-id": "orders",
                    "mutable-content": 1,
                    "interruption-level": "passive",
                }
            },
            "fcm_options": {"image": "https://img.example/42.png"},
        },
        "webpush": {
            "headers": {"Urgency": "high", "TTL": "7200"},
            "notification": {
                "icon": "https://img.example/icon.png",
                "requireInteraction": True,
                "actions": [{"action": "track", "title": "Track"}],
            },
            "fcm_options": {"link": "https://shop.example/orders/42"},
        },
    }


def test_a_minimal_content() -> None:
    assert fcm_json(Content(body="Hi")) == {
        "notification": {"body": "Hi"},
        "android": {"priority": "normal"},
        "apns": {"headers": {"apns-push-type": "alert", "apns-priority": "10"}},
    }


def test_a_silent_push_is_data_only_and_grows_no_notification() -> None:
    content = Content(
        custom_data={"sync": "inbox"},
        thread_id="t",
        sound="default",
        apns=content_pb2.ApnsOverrides(content_available=True),
        android=content_pb2.AndroidOverrides(channel_id="c"),
        web_push=content_pb2.WebPushOverrides(icon_url="https://img.example/i.png"),
    )
    rendered = render_fcm(content, DeliveryOptions())
    assert rendered.message.notification is None
    assert rendered.message.android == FcmAndroidConfig(priority="normal")
    assert rendered.json == {
        "data": {"sync": "inbox"},
        "android": {"priority": "normal"},
        "apns": {
            "headers": {"apns-push-type": "background", "apns-priority": "5"},
            "payload": {"aps": {"sound": "default", "thread-id": "t", "content-available": 1}},
        },
        "webpush": {"headers": {"Urgency": "normal"}},
    }


def test_badge_zero_is_sent_and_unset_badge_is_not() -> None:
    assert fcm_json(Content(body="B", badge=0))["apns"]["payload"] == {"aps": {"badge": 0}}
    assert "payload" not in fcm_json(Content(body="B"))["apns"]


def test_loc_keys_go_to_the_apns_alert() -> None:
    apns = content_pb2.ApnsOverrides(
        title_loc_key="T", title_loc_args=["a"], body_loc_key="B", body_loc_args=["b", "c"]
    )
    assert fcm_json(Content(apns=apns))["apns"]["payload"] == {
        "aps": {
            "alert": {
                "title-loc-key": "T",
                "title-loc-args": ["a"],
                "loc-key": "B",
                "loc-args": ["b", "c"],
            }
        }
    }


@pytest.mark.parametrize(
    ("priority", "override", "expected"),
    [
        (types_pb2.PRIORITY_LOW, content_pb2.ANDROID_PRIORITY_UNSPECIFIED, "normal"),
        (types_pb2.PRIORITY_NORMAL, content_pb2.ANDROID_PRIORITY_UNSPECIFIED, "normal"),
        (types_pb2.PRIORITY_HIGH, content_pb2.ANDROID_PRIORITY_UNSPECIFIED, "high"),
        (types_pb2.PRIORITY_LOW, content_pb2.ANDROID_PRIORITY_HIGH, "high"),
        (types_pb2.PRIORITY_HIGH, content_pb2.ANDROID_PRIORITY_NORMAL, "normal"),
    ],
)
def test_android_priority(
    priority: types_pb2.Priority.ValueType,
    override: content_pb2.AndroidPriority.ValueType,
    expected: str,
) -> None:
    content = Content(body="B", android=content_pb2.AndroidOverrides(priority=override))
    assert fcm_json(content, DeliveryOptions(priority=priority))["android"]["priority"] == expected


@pytest.mark.parametrize(
    ("expires_at", "override", "ttl"),
    [
        (None, None, None),
        (NOW + dt.timedelta(seconds=3, milliseconds=500), None, "3.500000000s"),
        (NOW - dt.timedelta(minutes=1), None, "0s"),
        (NOW + dt.timedelta(days=60), None, "2419200s"),
        (NOW + dt.timedelta(hours=1), dt.timedelta(seconds=90), "90s"),
        (None, dt.timedelta(days=40), "2419200s"),
    ],
    ids=["none", "fractional", "already-past", "capped-at-28-days", "override", "override-capped"],
)
def test_android_ttl(
    expires_at: dt.datetime | None, override: dt.timedelta | None, ttl: str | None
) -> None:
    android = content_pb2.AndroidOverrides()
    if override is not None:
        android.ttl.FromTimedelta(override)
    options = DeliveryOptions(expires_at=expires_at, now=NOW)
    assert fcm_json(Content(body="B", android=android), options)["android"].get("ttl") == ttl


def test_collapse_key_defaults_to_the_collapse_id() -> None:
    assert fcm_json(Content(body="B", collapse_id="c"))["android"]["collapse_key"] == "c"
    overridden = Content(
        body="B", collapse_id="c", android=content_pb2.AndroidOverrides(collapse_key="k")
    )
    assert fcm_json(overridden)["android"]["collapse_key"] == "k"


@pytest.mark.parametrize(
    ("deep_link", "link", "expected"),
    [
        ("https://shop.example/a", "", "https://shop.example/a"),
        ("app://orders/1", "", None),
        ("https://shop.example/a", "https://shop.example/b", "https://shop.example/b"),
    ],
)
def test_webpush_link(deep_link: str, link: str, expected: str | None) -> None:
    content = Content(
        body="B", deep_link=deep_link, web_push=content_pb2.WebPushOverrides(link=link)
    )
    assert fcm_json(content)["webpush"].get("fcm_options", {}).get("link") == expected


def test_webpush_headers_from_overrides() -> None:
    web = content_pb2.WebPushOverrides(
        urgency=content_pb2.WEB_PUSH_URGENCY_VERY_LOW,
        ttl=duration_pb2.Duration(seconds=60),
        topic="scores",
    )
    options = DeliveryOptions(priority=types_pb2.PRIORITY_HIGH, expires_at=EXPIRES, now=NOW)
    assert fcm_json(Content(body="B", web_push=web), options)["webpush"]["headers"] == {
        "Urgency": "very-low",
        "TTL": "60",
        "Topic": "scores",
    }


def test_plain_data_maps_onto_firebase_admin_names() -> None:
    message = render_fcm(Content(title="T", sound="s"), DeliveryOptions()).message
    assert message.notification == FcmNotification(title="T")
    assert message.android.notification == FcmAndroidNotification(sound="s")
    assert message.data is None


def test_encode_ttl_matches_firebase_admins_format() -> None:
    assert encode_ttl(dt.timedelta(seconds=3)) == "3s"
    # Float arithmetic, as firebase-admin does it (checked on the wire in test_payload_providers).
    assert encode_ttl(dt.timedelta(seconds=1, microseconds=1)) == "1.000000999s"
    assert encode_ttl(None) is None


# -- size ------------------------------------------------------------------------------


def test_size_counts_data_and_notification_text_in_utf8_bytes() -> None:
    content = Content(title="Café", body="🎉", custom_data={"k": "vé"})
    rendered = render_fcm(content, DeliveryOptions(send_id="s"))
    # data: "k"+"vé" (1+3) and "pw_send_id"+"s" (10+1); notification: "Café" (5) + "🎉" (4).
    assert rendered.size.size == 4 + 11 + 5 + 4
    assert (rendered.size.provider, rendered.size.limit) == ("fcm", FCM_LIMIT)


def test_size_at_and_over_fcms_limit() -> None:
    base = render_fcm(Content(custom_data={"pad": ""}), DeliveryOptions()).size.size
    at = render_fcm(Content(custom_data={"pad": "x" * (FCM_LIMIT - base)}), DeliveryOptions())
    over = render_fcm(Content(custom_data={"pad": "x" * (FCM_LIMIT - base + 1)}), DeliveryOptions())
    assert (at.size.size, at.size.fits) == (FCM_LIMIT, True)
    assert (over.size.size, over.size.fits) == (FCM_LIMIT + 1, False)


def test_the_tightest_check_is_the_one_with_least_headroom() -> None:
    # FCM counts no JSON punctuation, so the APNs body is the larger one...
    small = render(Content(body="B", custom_data={"k": "v"}))
    assert small.tightest is small.apns.size
    assert small.fits
    # ...unless Android's notification fields, which APNs never sees, are long.
    long_channel = content_pb2.AndroidOverrides(channel_id="c" * 5000)
    large = render(Content(body="B", android=long_channel))
    assert large.tightest is large.fcm.size
    assert not large.fits
    assert large.apns.size.fits
