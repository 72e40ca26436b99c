"""The APNs request, field by field: golden payload bytes and headers."""

from __future__ import annotations

import datetime as dt
import doctest
import json

import pytest

import pushwarden.payload
from pushwarden.common.v1 import content_pb2, types_pb2
from pushwarden.delivery.v1 import resources_pb2
from pushwarden.payload import APNS_LIMIT, APNS_VOIP_LIMIT, DeliveryOptions, render_apns

Content = content_pb2.Content
Apns = content_pb2.ApnsOverrides
NOW = dt.datetime(2026, 12, 4, 18, 0, tzinfo=dt.UTC)


def body(content: Content, options: DeliveryOptions | None = None) -> bytes:
    return render_apns(content, options or DeliveryOptions()).body


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (Content(body="Hello"), b'{"aps": {"alert": {"body": "Hello"}}}'),
        (
            Content(title="T", subtitle="S", body="B"),
            b'{"aps": {"alert": {"title": "T", "subtitle": "S", "body": "B"}}}',
        ),
        (
            Content(
                apns=Apns(
                    title_loc_key="GREETING",
                    title_loc_args=["Ada"],
                    body_loc_key="ORDER_SHIPPED",
                    body_loc_args=["42", "today"],
                )
            ),
            b'{"aps": {"alert": {"title-loc-key": "GREETING", "title-loc-args": ["Ada"], '
            b'"loc-key": "ORDER_SHIPPED", "loc-args": ["42", "today"]}}}',
        ),
        (
            Content(body="B", sound="default"),
            b'{"aps": {"alert": {"body": "B"}, "sound": "default"}}',
        ),
        (Content(body="B", badge=3), b'{"aps": {"alert": {"body": "B"}, "badge": 3}}'),
        (Content(body="B", badge=0), b'{"aps": {"alert": {"body": "B"}, "badge": 0}}'),
        (
            Content(body="B", thread_id="chat-7"),
            b'{"aps": {"alert": {"body": "B"}, "thread-id": "chat-7"}}',
        ),
        (
            Content(body="B", action_category="REPLY"),
            b'{"aps": {"alert": {"body": "B"}, "category": "REPLY"}}',
        ),
        (
            Content(body="B", mutable_content=True),
            b'{"aps": {"alert": {"body": "B"}, "mutable-content": 1}}',
        ),
        (
            Content(body="B", apns=Apns(content_available=True)),
            b'{"aps": {"alert": {"body": "B"}, "content-available": 1}}',
        ),
        (
            Content(body="B", image_url="https://img.example/a.png"),
            b'{"aps": {"alert": {"body": "B"}, "mutable-content": 1}, '
            b'"fcm_options": {"image": "https://img.example/a.png"}}',
        ),
        (
            Content(
                body="B",
                apns=Apns(
                    interruption_level=content_pb2.APNS_INTERRUPTION_LEVEL_TIME_SENSITIVE,
                    relevance_score=0.5,
                    target_content_id="inbox",
                ),
            ),
            b'{"aps": {"alert": {"body": "B"}, "interruption-level": "time-sensitive", '
            b'"relevance-score": 0.5, "target-content-id": "inbox"}}',
        ),
        (
            Content(body="B", custom_data={"z": "1", "order": "42"}, deep_link="app://orders/42"),
            b'{"aps": {"alert": {"body": "B"}}, "deep_link": "app://orders/42", '
            b'"order": "42", "z": "1"}',
        ),
        (Content(apns=Apns(content_available=True)), b'{"aps": {"content-available": 1}}'),
        (Content(), b'{"aps": {}}'),
    ],
    ids=[
        "body",
        "title-subtitle-body",
        "loc-keys",
        "sound",
        "badge",
        "badge-zero-is-kept",
        "thread-id",
        "category",
        "mutable-content",
        "content-available",
        "image",
        "ios15-keys",
        "custom-data-sorted-at-top-level",
        "silent",
        "empty",
    ],
)
def test_golden_payloads(content: Content, expected: bytes) -> None:
    rendered = render_apns(content, DeliveryOptions())
    assert rendered.body == expected
    assert json.loads(rendered.body) == rendered.payload


def test_unset_badge_and_empty_fields_are_omitted() -> None:
    content = Content(body="B", title="", subtitle="", sound="", thread_id="", action_category="")
    assert not content.HasField("badge")
    assert render_apns(content, DeliveryOptions()).payload == {"aps": {"alert": {"body": "B"}}}


def test_delivery_keys_join_the_custom_data_and_win_over_it() -> None:
    options = DeliveryOptions(send_id="s-1", campaign_id="c-1", variant_id="A")
    content = Content(body="B", custom_data={"aps": "spoofed", "pw_send_id": "spoofed", "k": "v"})
    assert render_apns(content, options).payload == {
        "aps": {"alert": {"body": "B"}},
        "k": "v",
        "pw_campaign_id": "c-1",
        "pw_send_id": "s-1",
        "pw_variant_id": "A",
    }


def test_unicode_is_sent_as_utf8_and_counted_in_bytes() -> None:
    rendered = render_apns(Content(title="Café ☕", body="🎉"), DeliveryOptions())
    text = '{"aps": {"alert": {"title": "Café ☕", "body": "🎉"}}}'
    assert rendered.body == text.encode()
    # é, ☕ and 🎉 take 2, 3 and 4 bytes: the size is in bytes, not characters.
    assert rendered.size.size == len(rendered.body) == len(text) + 1 + 2 + 3 == 58


# -- headers -----------------------------------------------------------------------


def test_headers_of_a_plain_alert() -> None:
    rendered = render_apns(Content(body="B"), DeliveryOptions(apns_topic="com.example.app"))
    assert rendered.headers == {
        "apns-push-type": "alert",
        "apns-priority": "10",
        "apns-topic": "com.example.app",
    }


def test_expiration_and_collapse_id_headers() -> None:
    options = DeliveryOptions(expires_at=NOW + dt.timedelta(hours=1, microseconds=900), now=NOW)
    rendered = render_apns(Content(body="B", collapse_id="score"), options)
    assert rendered.headers == {
        "apns-push-type": "alert",
        "apns-priority": "10",
        "apns-expiration": str(int(NOW.timestamp()) + 3600),
        "apns-collapse-id": "score",
    }
    assert rendered.topic is None


@pytest.mark.parametrize(
    ("content", "priority", "push_type", "apns_priority"),
    [
        (Content(body="B"), types_pb2.PRIORITY_UNSPECIFIED, "alert", 10),
        (Content(body="B"), types_pb2.PRIORITY_LOW, "alert", 5),
        (Content(body="B"), types_pb2.PRIORITY_NORMAL, "alert", 10),
        (Content(body="B"), types_pb2.PRIORITY_HIGH, "alert", 10),
        (Content(apns=Apns(content_available=True)), types_pb2.PRIORITY_HIGH, "background", 5),
        (Content(body="B", apns=Apns(priority=1)), types_pb2.PRIORITY_HIGH, "alert", 1),
        (Content(badge=2), types_pb2.PRIORITY_NORMAL, "alert", 10),
        (
            Content(apns=Apns(push_type=content_pb2.APNS_PUSH_TYPE_VOIP)),
            types_pb2.PRIORITY_NORMAL,
            "voip",
            10,
        ),
        # A push type this version does not know is treated as unset.
        (Content(body="B", apns=Apns(push_type=99)), types_pb2.PRIORITY_NORMAL, "alert", 10),  # type: ignore[arg-type]
    ],
)
def test_push_type_and_priority(
    content: Content, priority: types_pb2.Priority.ValueType, push_type: str, apns_priority: int
) -> None:
    rendered = render_apns(content, DeliveryOptions(priority=priority))
    assert (rendered.push_type, rendered.priority) == (push_type, apns_priority)


@pytest.mark.parametrize(
    ("push_type", "topic"),
    [
        (content_pb2.APNS_PUSH_TYPE_ALERT, "com.example.app"),
        (content_pb2.APNS_PUSH_TYPE_BACKGROUND, "com.example.app"),
        (content_pb2.APNS_PUSH_TYPE_VOIP, "com.example.app.voip"),
        (content_pb2.APNS_PUSH_TYPE_LOCATION, "com.example.app.location-query"),
        (content_pb2.APNS_PUSH_TYPE_FILEPROVIDER, "com.example.app.pushkit.fileprovider"),
        (content_pb2.APNS_PUSH_TYPE_LIVEACTIVITY, "com.example.app.push-type.liveactivity"),
        (content_pb2.APNS_PUSH_TYPE_MDM, "com.example.app"),
    ],
)
def test_topic_gets_the_push_types_suffix(
    push_type: content_pb2.ApnsPushType.ValueType, topic: str
) -> None:
    content = Content(body="B", apns=Apns(push_type=push_type))
    assert render_apns(content, DeliveryOptions(apns_topic="com.example.app")).topic == topic


# -- size ----------------------------------------------------------------------------


def _padded(size: int, **fields: object) -> Content:
    """A content whose APNs body is exactly ``size`` bytes."""
    content = Content(custom_data={"pad": ""}, **fields)  # type: ignore[arg-type]
    base = len(render_apns(content, DeliveryOptions()).body)
    content.custom_data["pad"] = "x" * (size - base)
    return content


@pytest.mark.parametrize(
    ("push_type", "limit"),
    [
        (content_pb2.APNS_PUSH_TYPE_ALERT, APNS_LIMIT),
        (content_pb2.APNS_PUSH_TYPE_VOIP, APNS_VOIP_LIMIT),
    ],
)
def test_size_at_and_over_the_limit_is_data_not_an_error(
    push_type: content_pb2.ApnsPushType.ValueType, limit: int
) -> None:
    apns = Apns(push_type=push_type)
    at = render_apns(_padded(limit, body="B", apns=apns), DeliveryOptions())
    over = render_apns(_padded(limit + 1, body="B", apns=apns), DeliveryOptions())
    assert (at.size.size, at.size.limit, at.size.fits, at.size.headroom) == (limit, limit, True, 0)
    assert (over.size.size, over.size.fits, over.size.headroom) == (limit + 1, False, -1)
    assert over.size.provider == "apns"


def test_options_refuse_naive_datetimes_and_expiry_without_now() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        DeliveryOptions(expires_at=dt.datetime(2026, 1, 1), now=NOW)
    with pytest.raises(ValueError, match="now is required"):
        DeliveryOptions(expires_at=NOW)


def test_options_for_a_delivery_send() -> None:
    send = resources_pb2.Send(
        send_id="s-9", campaign_id="c-1", variant_id="B", priority=types_pb2.PRIORITY_LOW
    )
    send.expires_at.FromDatetime(NOW + dt.timedelta(minutes=5))
    options = DeliveryOptions.for_send(send, now=NOW, apns_topic="com.example.app")
    assert options == DeliveryOptions(
        priority=types_pb2.PRIORITY_LOW,
        expires_at=NOW + dt.timedelta(minutes=5),
        now=NOW,
        apns_topic="com.example.app",
        send_id="s-9",
        campaign_id="c-1",
        variant_id="B",
    )
    assert DeliveryOptions.for_send(resources_pb2.Send(), now=NOW).expires_at is None


def test_the_package_docstring_example_holds() -> None:
    assert doctest.testmod(pushwarden.payload).failed == 0
