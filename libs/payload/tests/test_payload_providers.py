"""What is rendered is what the real clients put on the wire, and the fakes agree on size.

aioapns sends the rendered APNs request to the fake APNs; firebase-admin sends a
``messaging.Message`` built field by field from the rendered FCM message to the
fake FCM. The recorded bytes must be the rendered ones, and a payload the
renderer says does not fit must be refused by the fake for its size.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aioapns import APNs, NotificationRequest, PushType
from firebase_admin import exceptions, messaging

from pushwarden.common.v1 import content_pb2, types_pb2
from pushwarden.payload import (
    APNS_LIMIT,
    APNS_VOIP_LIMIT,
    FCM_LIMIT,
    DeliveryOptions,
    FcmMessage,
    render_apns,
    render_fcm,
)
from pushwarden.sandbox import fcm
from pushwarden.sandbox.apns import ApnsKey, generate_signing_key, start_apns
from pushwarden.sandbox.clients import apns_client
from pushwarden.sandbox.core import SandboxServer, ThreadedSandbox

pytestmark = pytest.mark.filterwarnings("ignore:Message.token is deprecated:DeprecationWarning")

Content = content_pb2.Content
TOPIC = "com.example.app"
DEVICE = "ab" * 32
PROJECT = "payload-project"
_names = itertools.count()


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


# -- FCM through firebase-admin --------------------------------------------------------


def to_firebase(message: FcmMessage, token: str) -> messaging.Message:
    """The ``messaging.Message`` the plain data stands for, field by field (what delivery does)."""
    note, android, apns, web = message.notification, message.android, message.apns, message.webpush
    aps, alert = apns.aps, apns.aps.alert
    android_note = android.notification
    return messaging.Message(
        token=token,
        data=message.data,
        notification=None
        if note is None
        else messaging.Notification(title=note.title, body=note.body, image=note.image),
        android=messaging.AndroidConfig(
            priority=android.priority,
            ttl=android.ttl,
            collapse_key=android.collapse_key,
            notification=None
            if android_note is None
            else messaging.AndroidNotification(
                sound=android_note.sound,
                tag=android_note.tag,
                click_action=android_note.click_action,
                channel_id=android_note.channel_id,
                icon=android_note.icon,
                color=android_note.color,
            ),
        ),
        apns=messaging.APNSConfig(
            headers=apns.headers,
            payload=messaging.APNSPayload(
                aps=messaging.Aps(
                    alert=None
                    if alert is None
                    else messaging.ApsAlert(
                        subtitle=alert.subtitle,
                        title_loc_key=alert.title_loc_key,
                        title_loc_args=list(alert.title_loc_args or ()) or None,
                        loc_key=alert.loc_key,
                        loc_args=list(alert.loc_args or ()) or None,
                    ),
                    badge=aps.badge,
                    sound=aps.sound,
                    content_available=aps.content_available,
                    category=aps.category,
                    thread_id=aps.thread_id,
                    mutable_content=aps.mutable_content,
                    custom_data=aps.custom_data,
                )
            ),
            fcm_options=None if apns.image is None else messaging.APNSFCMOptions(image=apns.image),
        ),
        webpush=None
        if web is None
        else messaging.WebpushConfig(
            headers=web.headers,
            notification=None
            if web.notification is None
            else messaging.WebpushNotification(
                icon=web.notification.icon,
                badge=web.notification.badge,
                require_interaction=web.notification.require_interaction,
                actions=[
                    messaging.WebpushNotificationAction(a.action, a.title, icon=a.icon)
                    for a in web.notification.actions or ()
                ]
                or None,
            ),
            fcm_options=None if web.link is None else messaging.WebpushFCMOptions(link=web.link),
        ),
    )


@pytest.fixture
def fcm_fake(tmp_path: Path) -> Iterator[tuple[ThreadedSandbox, Path]]:
    account, key = fcm.new_service_account(PROJECT)
    with fcm.run_fcm_in_thread([account], state_dir=tmp_path) as server:
        sa = fcm.write_service_account_file(
            tmp_path / "sa.json", account, key, f"{server.url}/token"
        )
        with fcm.sandbox_ca_trust(server.ca_file):
            yield server, sa


@pytest.fixture
async def fb_app(fcm_fake: tuple[ThreadedSandbox, Path]) -> AsyncIterator[Any]:
    server, sa = fcm_fake
    app = fcm.open_firebase_app(server.url, sa, name=f"payload-{next(_names)}", http_timeout=10)
    try:
        yield app
    finally:
        await fcm.close_firebase_app(app)


FCM_CASES: dict[str, tuple[Callable[[], Content], bool]] = {
    "full": (lambda: FULL, True),
    "silent": (lambda: SILENT, True),
    "minimal": (lambda: Content(body="Hi"), True),
    "at-limit": (lambda: _padded(_fcm_size, FCM_LIMIT, title="T"), True),
    "over-limit": (lambda: _padded(_fcm_size, FCM_LIMIT + 1, title="T"), False),
}


@pytest.mark.parametrize("case", list(FCM_CASES))
async def test_firebase_admin_sends_the_rendered_json_and_the_fake_agrees_on_size(
    fcm_fake: tuple[ThreadedSandbox, Path], fb_app: Any, case: str
) -> None:
    server, _ = fcm_fake
    make, fits = FCM_CASES[case]
    rendered = render_fcm(make(), options())
    assert rendered.size.fits is fits
    batch = await messaging.send_each_async([to_firebase(rendered.message, "device-1")], app=fb_app)
    [response] = batch.responses
    if fits:
        assert response.success
    else:
        assert isinstance(response.exception, exceptions.InvalidArgumentError)
        assert "too big" in str(response.exception)
    [recorded] = [r for r in server.recorder.requests() if r.path.endswith("messages:send")]
    assert json.loads(recorded.body) == {"message": {**rendered.json, "token": "device-1"}}
