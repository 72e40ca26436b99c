"""What is rendered is what goes on the wire, and the fakes agree on size.

aioapns sends the rendered APNs request to the fake APNs: the recorded bytes must be
the rendered ones. The rendered FCM message, with a token, must pass the fake FCM's
check of a ``messages:send`` body (FCM HTTP v1). A payload the renderer says does not
fit must be refused by the fake for its size.
"""

from __future__ import annotations

import datetime as dt
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aioapns import APNs, NotificationRequest, PushType

from pushwarden.common.v1 import content_pb2, types_pb2
from pushwarden.payload import (
    APNS_LIMIT,
    APNS_VOIP_LIMIT,
    FCM_LIMIT,
    DeliveryOptions,
    render_apns,
    render_fcm,
)
from pushwarden.sandbox import fcm
from pushwarden.sandbox.apns import ApnsKey, generate_signing_key, start_apns
from pushwarden.sandbox.clients import apns_client
from pushwarden.sandbox.core import SandboxServer

Content = content_pb2.Content
TOPIC = "com.example.app"
DEVICE = "ab" * 32


def options() -> DeliveryOptions:
    now = dt.datetime.now(dt.UTC)
    return DeliveryOptions(
        priority=types_pb2.PRIORITY_HIGH,
        expires_at=now + dt.timedelta(hours=1, milliseconds=250),
        now=now,
        apns_topic=TOPIC,
        send_id="send-1",
        campaign_id="camp-1",
        variant_id="A",
    )


def _padded(render_size: Any, size: int, **fields: Any) -> Content:
    """A content whose rendered size (by ``render_size``) is exactly ``size``."""
    content = Content(custom_data={"pad": ""}, **fields)
    content.custom_data["pad"] = "x" * (size - render_size(content))
    return content


def _apns_size(content: Content) -> int:
    return render_apns(content, options()).size.size


def _fcm_size(content: Content) -> int:
    return render_fcm(content, options()).size.size


FULL = Content(
    title="Commande n° 42 📦",
    subtitle="Boutique",
    body="En route",
    sound="default",
    badge=0,
    image_url="https://img.example/42.png",
    thread_id="orders",
    action_category="TRACK",
    deep_link="https://shop.example/orders/42",
    collapse_id="order-42",
    custom_data={"order": "42", "ünïcode": "✓"},
    apns=content_pb2.ApnsOverrides(
        interruption_level=content_pb2.APNS_INTERRUPTION_LEVEL_TIME_SENSITIVE,
        relevance_score=0.75,
        body_loc_key="SHIPPED",
        body_loc_args=["42"],
    ),
    android=content_pb2.AndroidOverrides(channel_id="orders", color="#00aa00"),
    web_push=content_pb2.WebPushOverrides(
        icon_url="https://img.example/i.png",
        require_interaction=True,
        actions=[content_pb2.WebPushAction(action="track", title="Track")],
    ),
)
SILENT = Content(
    custom_data={"sync": "inbox"}, apns=content_pb2.ApnsOverrides(content_available=True)
)
VOIP = content_pb2.ApnsOverrides(push_type=content_pb2.APNS_PUSH_TYPE_VOIP)

# -- APNs through aioapns --------------------------------------------------------------


@pytest.fixture
async def apns_fake(tmp_path: Path) -> AsyncIterator[tuple[SandboxServer, APNs]]:
    pem = generate_signing_key()
    key = ApnsKey.from_private_pem("PAYLOADKEY", "PAYLOADTM1", pem, [TOPIC])
    async with await start_apns([key], state_dir=tmp_path) as server:
        assert server.ca_file is not None
        client = apns_client(
            host=server.host,
            port=server.port,
            ca_file=server.ca_file,
            key=pem,
            key_id="PAYLOADKEY",
            team_id="PAYLOADTM1",
            topic=TOPIC,
        )
        try:
            yield server, client
        finally:
            client.pool.close()


APNS_CASES: dict[str, tuple[Callable[[], Content], bool]] = {
    "full": (lambda: FULL, True),
    "silent": (lambda: SILENT, True),
    "alert-at-limit": (lambda: _padded(_apns_size, APNS_LIMIT, body="B"), True),
    "alert-over-limit": (lambda: _padded(_apns_size, APNS_LIMIT + 1, body="B"), False),
    "voip-at-limit": (lambda: _padded(_apns_size, APNS_VOIP_LIMIT, body="B", apns=VOIP), True),
    "voip-over-limit": (
        lambda: _padded(_apns_size, APNS_VOIP_LIMIT + 1, body="B", apns=VOIP),
        False,
    ),
}


@pytest.mark.parametrize("case", list(APNS_CASES))
async def test_aioapns_sends_the_rendered_bytes_and_the_fake_agrees_on_size(
    apns_fake: tuple[SandboxServer, APNs], case: str
) -> None:
    server, client = apns_fake
    make, fits = APNS_CASES[case]
    rendered = render_apns(make(), options())
    assert rendered.size.fits is fits
    assert rendered.expiration is not None
    request = NotificationRequest(
        device_token=DEVICE,
        message=rendered.payload,
        notification_id=str(uuid.uuid4()),
        time_to_live=rendered.expiration - int(time.time()),
        priority=rendered.priority,
        collapse_key=rendered.collapse_id,
        push_type=PushType(rendered.push_type),
        apns_topic=rendered.topic,
    )
    result = await client.send_notification(request)
    assert (result.status, result.description) == (
        ("200", None) if fits else ("413", "PayloadTooLarge")
    )
    [recorded] = server.recorder.requests()
    assert recorded.body == rendered.body
    sent = {name: recorded.header(name) for name in rendered.headers}
    expected = dict(rendered.headers)
    # aioapns recomputes the expiration from its own clock: allow the second it may tick.
    assert abs(int(sent.pop("apns-expiration") or 0) - int(expected.pop("apns-expiration"))) <= 1
    assert sent == expected


# -- FCM: the HTTP v1 message as the fake FCM checks it --------------------------------
# The rendered JSON is the HTTP v1 message less its token. Building firebase-admin's
# ``messaging.Message`` from the plain data is delivery's adapter (its own tests send it
# through firebase-admin to the fake); here the JSON meets the fake's own check of a
# ``messages:send`` body.

FCM_CASES: dict[str, tuple[Callable[[], Content], bool]] = {
    "full": (lambda: FULL, True),
    "silent": (lambda: SILENT, True),
    "minimal": (lambda: Content(body="Hi"), True),
    "at-limit": (lambda: _padded(_fcm_size, FCM_LIMIT, title="T"), True),
    "over-limit": (lambda: _padded(_fcm_size, FCM_LIMIT + 1, title="T"), False),
}


@pytest.mark.parametrize("case", list(FCM_CASES))
def test_the_rendered_fcm_message_is_valid_http_v1_and_the_fake_agrees_on_size(
    case: str,
) -> None:
    make, fits = FCM_CASES[case]
    rendered = render_fcm(make(), options())
    assert rendered.size.fits is fits
    body = json.loads(json.dumps({"message": {**rendered.json, "token": "device-1"}}))
    if fits:
        assert fcm.validate_send_body(body).token == "device-1"
    else:
        with pytest.raises(fcm.InvalidMessage, match="too big"):
            fcm.validate_send_body(body)
