"""Properties over generated contents: sizes are the bytes, custom data survives,
rendering is deterministic, and FCM's size verdict agrees with the fake FCM's."""

from __future__ import annotations

import datetime as dt
import json

from hypothesis import given, settings
from hypothesis import strategies as st

from pushwarden.common.v1 import content_pb2, types_pb2
from pushwarden.payload import (
    DeliveryOptions,
    is_reserved_data_key,
    render,
    size_bound,
    surely_fits,
)
from pushwarden.sandbox.fcm import InvalidMessage, validate_send_body

NOW = dt.datetime(2026, 12, 4, 18, 0, tzinfo=dt.UTC)

texts = st.text(max_size=40)
keys = st.text(min_size=1, max_size=24).filter(lambda key: not is_reserved_data_key(key))
# Mostly small values, sometimes large enough to cross a provider's limit.
values = st.one_of(st.text(max_size=60), st.text(min_size=900, max_size=1400))
custom = st.dictionaries(keys, values, max_size=8)


@st.composite
def contents(draw: st.DrawFn) -> content_pb2.Content:
    content = content_pb2.Content(
        title=draw(texts),
        subtitle=draw(texts),
        body=draw(texts),
        sound=draw(st.sampled_from(["", "default", "chime.caf"])),
        image_url=draw(st.sampled_from(["", "https://img.example/a.png"])),
        thread_id=draw(texts),
        action_category=draw(texts),
        mutable_content=draw(st.booleans()),
        deep_link=draw(st.sampled_from(["", "app://x", "https://shop.example/x"])),
        collapse_id=draw(st.text(max_size=20)),
        custom_data=draw(custom),
    )
    badge = draw(st.none() | st.integers(0, 2**32 - 1))
    if badge is not None:
        content.badge = badge
    content.apns.content_available = draw(st.booleans())
    content.apns.push_type = draw(st.sampled_from(content_pb2.ApnsPushType.values()))
    content.apns.title_loc_args.extend(draw(st.lists(texts, max_size=3)))
    wants_key = draw(st.booleans())
    if wants_key or len(content.apns.title_loc_args) > 0:
        content.apns.title_loc_key = draw(texts) or "KEY"
    content.android.channel_id = draw(texts)
    if draw(st.booleans()):
        content.web_push.topic = draw(st.from_regex(r"[a-z]{0,8}", fullmatch=True))
    return content


options = st.builds(
    DeliveryOptions,
    priority=st.sampled_from(types_pb2.Priority.values()),
    expires_at=st.none() | st.just(NOW + dt.timedelta(hours=3)),
    now=st.just(NOW),
    apns_topic=st.sampled_from(["", "com.example.app"]),
    send_id=st.text(max_size=12),
    campaign_id=st.text(max_size=12),
)


@settings(max_examples=300, deadline=None)
@given(contents(), options)
def test_sizes_are_the_bytes_and_custom_data_survives(
    content: content_pb2.Content, opts: DeliveryOptions
) -> None:
    rendered = render(content, opts)
    apns, fcm = rendered.apns, rendered.fcm
    assert apns.size.size == len(apns.body)
    assert json.loads(apns.body) == apns.payload
    for key, value in content.custom_data.items():
        assert apns.payload[key] == value
        assert fcm.json["data"][key] == value
        assert fcm.message.data is not None
        assert fcm.message.data[key] == value
    # The same data map both ways: the APNs top-level keys are aps, an image's
    # fcm_options, and exactly FCM's data.
    top_level = {k: v for k, v in apns.payload.items() if k not in ("aps", "fcm_options")}
    assert top_level == fcm.json.get("data", {})
    aps = apns.payload["aps"]
    assert ("badge" in aps) == content.HasField("badge")
    assert "" not in aps.values()
    assert "" not in aps.get("alert", {}).values()
    assert rendered.tightest.headroom == min(apns.size.headroom, fcm.size.headroom)
    assert rendered.fits == (apns.size.fits and fcm.size.fits)


@settings(max_examples=100, deadline=None)
@given(contents(), options)
def test_rendering_is_deterministic_whatever_the_map_order(
    content: content_pb2.Content, opts: DeliveryOptions
) -> None:
    reordered = content_pb2.Content()
    reordered.CopyFrom(content)
    reordered.custom_data.clear()
    for key in reversed(list(content.custom_data)):
        reordered.custom_data[key] = content.custom_data[key]
    first, second = render(content, opts), render(reordered, opts)
    assert first.apns.body == second.apns.body
    assert first.fcm.json == second.fcm.json


@settings(max_examples=300, deadline=None)
@given(contents(), options)
def test_fcm_size_verdict_agrees_with_the_fake_fcm(
    content: content_pb2.Content, opts: DeliveryOptions
) -> None:
    rendered = render(content, opts).fcm
    refusal = None
    try:
        validate_send_body({"message": {**rendered.json, "token": "t"}})
    except InvalidMessage as refused:
        refusal = refused.message
    assert rendered.size.fits == (refusal is None), refusal
    assert refusal is None or "too big" in refusal


# Text that JSON grows the most: control characters (six bytes each), quotes and
# backslashes, beside ordinary and multi-byte characters.
escaped = st.text(
    alphabet=st.sampled_from(["\x00", "\x1f", "\n", '"', "\\", "a", "é", "\u2028", "😀"]),
    max_size=40,
)


@st.composite
def escaped_contents(draw: st.DrawFn) -> content_pb2.Content:
    content = content_pb2.Content(
        title=draw(escaped),
        subtitle=draw(escaped),
        body=draw(escaped),
        sound=draw(escaped),
        image_url=draw(escaped),
        thread_id=draw(escaped),
        action_category=draw(escaped),
        mutable_content=draw(st.booleans()),
        deep_link=draw(escaped),
        custom_data=draw(st.dictionaries(escaped.filter(bool), escaped, max_size=5)),
    )
    content.badge = draw(st.integers(0, 2**32 - 1))
    apns = content.apns
    apns.interruption_level = draw(st.sampled_from(content_pb2.ApnsInterruptionLevel.values()))
    apns.relevance_score = draw(st.floats(allow_nan=False))
    apns.content_available = draw(st.booleans())
    apns.target_content_id = draw(escaped)
    apns.title_loc_key = draw(escaped)
    apns.title_loc_args.extend(draw(st.lists(escaped, max_size=4)))
    apns.body_loc_key = draw(escaped)
    apns.body_loc_args.extend(draw(st.lists(escaped, max_size=4)))
    android = content.android
    for name in ("channel_id", "icon", "color", "tag", "click_action"):
        setattr(android, name, draw(escaped))
    return content


escaped_options = st.builds(
    DeliveryOptions,
    priority=st.sampled_from(types_pb2.Priority.values()),
    now=st.just(NOW),
    apns_topic=st.sampled_from(["", "com.example.app"]),
    send_id=escaped,
    campaign_id=escaped,
    variant_id=escaped,
)


@settings(max_examples=400, deadline=None)
@given(st.one_of(contents(), escaped_contents()), st.one_of(options, escaped_options))
def test_surely_fits_is_a_bound_on_both_renderings(
    content: content_pb2.Content, opts: DeliveryOptions
) -> None:
    rendered = render(content, opts)
    bound = size_bound(content, opts)
    assert rendered.apns.size.size <= bound
    assert rendered.fcm.size.size <= bound
    if surely_fits(content, opts):
        assert rendered.fits


def test_surely_fits_says_so_for_ordinary_content_and_not_near_the_limit() -> None:
    ordinary = content_pb2.Content(title="Order #12 shipped", body="On its way.", sound="default")
    assert surely_fits(ordinary, DeliveryOptions(send_id="s-1", campaign_id="c-1"))
    # Fits (about 2,500 bytes) but too close to the limit for the bound to tell.
    near = content_pb2.Content(title="x" * 2500)
    assert not surely_fits(near)
    assert render(near).fits
