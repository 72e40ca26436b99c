"""firebase-admin puts exactly the rendered FCM JSON on the wire: delivery's
``to_message`` builds the ``messaging.Message`` from the renderer's plain data, sends it
to the fake FCM, and the recorded body is the rendered HTTP v1 message with its token;
a payload the renderer says does not fit is refused by the fake for its size. (Moved
here from libs/payload's tests, which must not import delivery.)"""

from __future__ import annotations

import datetime as dt
import itertools
import json
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from firebase_admin import exceptions, messaging

from pushwarden.common.v1 import content_pb2, types_pb2
from pushwarden.payload import FCM_LIMIT, DeliveryOptions, render_fcm
from pushwarden.sandbox import fcm
from pushwarden.sandbox.core import ThreadedSandbox
from pushwarden.services.delivery.providers.fcm import to_message

pytestmark = pytest.mark.filterwarnings("ignore:Message.token is deprecated:DeprecationWarning")

Content = content_pb2.Content
PROJECT = "delivery-wire"
_names = itertools.count()


def options() -> DeliveryOptions:
    now = dt.datetime.now(dt.UTC)
    return DeliveryOptions(
        priority=types_pb2.PRIORITY_HIGH,
        expires_at=now + dt.timedelta(hours=1, milliseconds=250),
        now=now,
        send_id="send-1",
        campaign_id="camp-1",
        variant_id="A",
    )


def padded(size: int, **fields: Any) -> Content:
    """A content whose rendered FCM size is exactly ``size``."""
    content = Content(custom_data={"pad": ""}, **fields)
    content.custom_data["pad"] = "x" * (size - render_fcm(content, options()).size.size)
    return content


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
CASES: dict[str, tuple[Callable[[], Content], bool]] = {
    "full": (lambda: FULL, True),
    "silent": (lambda: SILENT, True),
    "minimal": (lambda: Content(body="Hi"), True),
    "at-limit": (lambda: padded(FCM_LIMIT, title="T"), True),
    "over-limit": (lambda: padded(FCM_LIMIT + 1, title="T"), False),
}


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
    app = fcm.open_firebase_app(server.url, sa, name=f"wire-{next(_names)}", http_timeout=10)
    try:
        yield app
    finally:
        await fcm.close_firebase_app(app)


@pytest.mark.parametrize("case", list(CASES))
async def test_firebase_admin_sends_the_rendered_json_and_the_fake_agrees_on_size(
    fcm_fake: tuple[ThreadedSandbox, Path], fb_app: Any, case: str
) -> None:
    server, _ = fcm_fake
    make, fits = CASES[case]
    rendered = render_fcm(make(), options())
    assert rendered.size.fits is fits
    batch = await messaging.send_each_async([to_message(rendered.message, "device-1")], app=fb_app)
    [response] = batch.responses
    if fits:
        assert response.success
    else:
        assert isinstance(response.exception, exceptions.InvalidArgumentError)
        assert "too big" in str(response.exception)
    [recorded] = [r for r in server.recorder.requests() if r.path.endswith("messages:send")]
    assert json.loads(recorded.body) == {"message": {**rendered.json, "token": "device-1"}}
