"""The scheduler's templates, pure: the contract's checks with their field paths, what a
template needs from segmentation, rendering (values as text, missing values, locale
choice) and the payload size with the keys delivery adds."""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta, timezone

import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import given, settings
from hypothesis import strategies as st

from pushwarden.common.v1 import content_pb2, values_pb2
from pushwarden.payload import APNS_LIMIT, DeliveryOptions, check_size
from pushwarden.payload import render as render_payload
from pushwarden.runtime.validation import Violations
from pushwarden.scheduler.v1 import resources_pb2
from pushwarden.segmentation.v1 import messages_pb2 as seg_messages
from pushwarden.segmentation.v1 import resources_pb2 as seg_resources
from pushwarden.services.scheduler.domain.templates import (
    TOKEN,
    TRIGGER_EVENT,
    Missing,
    Rendering,
    ValueLike,
    check_template,
    content_strings,
    number_text,
    placeholders_needed,
    render,
    render_detailed,
    rendered_size,
    rendered_size_ok,
    smallest_sizes,
    value_text,
)

PROFILE = resources_pb2.PLACEHOLDER_SOURCE_PROFILE_ATTRIBUTE
EVENT = resources_pb2.PLACEHOLDER_SOURCE_EVENT_PROPERTY
SKIP = resources_pb2.MISSING_VALUE_POLICY_SKIP_USER
USE_DEFAULT = resources_pb2.MISSING_VALUE_POLICY_USE_DEFAULT
AT = "campaign.variants[0].template"
# Values a newer contract may add.
NEWER_SOURCE = resources_pb2.PlaceholderSource.ValueType(7)
NEWER_POLICY = resources_pb2.MissingValuePolicy.ValueType(9)


def attr(**kind: object) -> values_pb2.AttributeValue:
    return values_pb2.AttributeValue(**kind)  # type: ignore[arg-type]


def first_name(**extra: object) -> resources_pb2.Placeholder:
    return resources_pb2.Placeholder(
        name="first",
        source=PROFILE,
        key="first_name",
        **extra,  # type: ignore[arg-type]
    )


def template(
    content: content_pb2.Content,
    *placeholders: resources_pb2.Placeholder,
    localized: Mapping[str, content_pb2.Content] | None = None,
) -> resources_pb2.Template:
    return resources_pb2.Template(
        content=content,
        placeholders=placeholders,
        localized=[
            resources_pb2.LocalizedContent(locale=tag, content=entry)
            for tag, entry in (localized or {}).items()
        ],
    )


def problems_of(t: resources_pb2.Template, *, trigger: bool = False) -> list[tuple[str, str]]:
    problems = Violations()
    check_template(problems, AT, t, trigger=trigger)
    return problems.items


def rendered(
    t: resources_pb2.Template,
    *,
    locale: str = "",
    attributes: Mapping[str, ValueLike] | None = None,
    events: Mapping[str, Mapping[str, ValueLike]] | None = None,
) -> content_pb2.Content:
    result = render(t, locale=locale, attributes=attributes or {}, event_properties=events or {})
    assert isinstance(result, content_pb2.Content), result
    return result


def body_of(value: ValueLike) -> str:
    """The body of ``"[{{v}}]"`` rendered with ``value`` as the attribute."""
    t = template(
        content_pb2.Content(body="[{{v}}]"),
        resources_pb2.Placeholder(name="v", source=PROFILE, key="v", on_missing=SKIP),
    )
    return rendered(t, attributes={"v": value}).body


# Checks.


def test_a_valid_template_has_no_problems() -> None:
    t = template(
        content_pb2.Content(
            title="Hi {{first}}",
            body="{{count}} items left in your cart",
            deep_link="app://cart/{{cart_id}}",
            custom_data={"offer": "{{first}}-{{count}}"},
        ),
        first_name(default_value="there"),
        resources_pb2.Placeholder(
            name="count", source=EVENT, key="items", event_name="add_to_cart", on_missing=SKIP
        ),
        resources_pb2.Placeholder(name="cart_id", source=EVENT, key="id", event_name="cart.v2"),
        localized={"fr": content_pb2.Content(title="Salut {{first}}")},
    )
    assert problems_of(t) == []


def test_undeclared_placeholders_name_the_exact_field() -> None:
    t = template(
        content_pb2.Content(
            title="Hi {{first}} {{last}}",
            body="{{last}} and {{last}} again",
            image_url="https://img/{{img}}.png",
            custom_data={"offer": "{{code}}", "plain": "no tokens"},
            apns=content_pb2.ApnsOverrides(body_loc_args=["ok", "{{arg}}"]),
            web_push=content_pb2.WebPushOverrides(
                actions=[content_pb2.WebPushAction(action="a", title="{{button}}")]
            ),
        ),
        first_name(),
        localized={
            "fr": content_pb2.Content(title="x"),
            "de": content_pb2.Content(body="Hallo {{vorname}}"),
        },
    )
    assert problems_of(t) == [
        (f"{AT}.content.title", "undeclared placeholder {{last}}"),
        (f"{AT}.content.body", "undeclared placeholder {{last}}"),
        (f"{AT}.content.image_url", "undeclared placeholder {{img}}"),
        (f"{AT}.content.custom_data[offer]", "undeclared placeholder {{code}}"),
        (f"{AT}.content.apns.body_loc_args[1]", "undeclared placeholder {{arg}}"),
        (f"{AT}.content.web_push.actions[0].title", "undeclared placeholder {{button}}"),
        (f"{AT}.localized[1].content.body", "undeclared placeholder {{vorname}}"),
    ]


@pytest.mark.parametrize("text", ["{{first name}}", "{{}}", "{{ first }}", "{{é}}", "{{a-b}}"])
def test_text_written_like_a_token_but_not_one_is_refused(text: str) -> None:
    [(field, description)] = problems_of(template(content_pb2.Content(body=text), first_name()))
    assert field == f"{AT}.content.body"
    assert description.startswith(f"malformed placeholder {text!r}")


def test_single_braces_and_custom_data_keys_are_not_placeholders() -> None:
    t = template(
        content_pb2.Content(body="{x} {{{first}}} }}{{", custom_data={"{{key}}": "v"}),
        first_name(),
    )
    assert problems_of(t) == []


@pytest.mark.parametrize(
    ("placeholder", "field", "description"),
    [
        (resources_pb2.Placeholder(source=PROFILE, key="k"), "name", "required"),
        (
            resources_pb2.Placeholder(name="first-name", source=PROFILE, key="k"),
            "name",
            "must be A-Z, a-z, 0-9 and '_' only",
        ),
        (
            resources_pb2.Placeholder(name="p", key="k"),
            "source",
            "required (the UNSPECIFIED value is not allowed)",
        ),
        (
            resources_pb2.Placeholder(name="p", source=NEWER_SOURCE, key="k"),
            "source",
            "unknown value 7",
        ),
        (resources_pb2.Placeholder(name="p", source=PROFILE), "key", "required"),
        (
            resources_pb2.Placeholder(name="p", source=PROFILE, key="a b"),
            "key",
            "must be 1..128 characters of A-Z, a-z, 0-9, '_', '.' or '-'",
        ),
        (
            resources_pb2.Placeholder(name="p", source=EVENT, key="k"),
            "event_name",
            "required for EVENT_PROPERTY in a campaign: the user's latest event of that "
            "name is read",
        ),
        (
            resources_pb2.Placeholder(name="p", source=PROFILE, key="k", event_name="e"),
            "event_name",
            "must be empty unless source is EVENT_PROPERTY",
        ),
        (
            resources_pb2.Placeholder(name="p", source=EVENT, key="k", event_name=" e"),
            "event_name",
            "must not start or end with white space",
        ),
        (
            resources_pb2.Placeholder(name="p", source=PROFILE, key="k", on_missing=NEWER_POLICY),
            "on_missing",
            "unknown value 9",
        ),
    ],
)
def test_placeholder_rules(
    placeholder: resources_pb2.Placeholder, field: str, description: str
) -> None:
    t = template(content_pb2.Content(title="t"), placeholder)
    assert problems_of(t) == [(f"{AT}.placeholders[0].{field}", description)]


def test_placeholder_names_are_unique() -> None:
    t = template(content_pb2.Content(title="{{first}}"), first_name(), first_name())
    assert problems_of(t) == [(f"{AT}.placeholders[1].name", "repeats 'first'")]


def test_a_trigger_reads_the_firing_event_so_event_name_is_not_needed_nor_allowed() -> None:
    bare = resources_pb2.Placeholder(name="item", source=EVENT, key="sku")
    assert problems_of(template(content_pb2.Content(title="{{item}}"), bare), trigger=True) == []
    named = resources_pb2.Placeholder(name="item", source=EVENT, key="sku", event_name="buy")
    assert problems_of(template(content_pb2.Content(title="{{item}}"), named), trigger=True) == [
        (
            f"{AT}.placeholders[0].event_name",
            "must be empty in a trigger: the event that fired it is read",
        )
    ]


@pytest.mark.parametrize(
    "content",
    [
        content_pb2.Content(),
        content_pb2.Content(subtitle="s", sound="default"),
        content_pb2.Content(custom_data={"k": "v"}),  # data-only: fine for Content, not here
        content_pb2.Content(apns=content_pb2.ApnsOverrides(content_available=True)),
    ],
)
def test_a_template_needs_a_title_or_a_body(content: content_pb2.Content) -> None:
    assert problems_of(template(content)) == [
        (f"{AT}.content", "required: a title or a body (a template always shows something)")
    ]
    t = template(content_pb2.Content(title="t"), localized={"fr": content})
    assert problems_of(t) == [
        (
            f"{AT}.localized[0].content",
            "required: a title or a body (a template always shows something)",
        )
    ]


def test_reserved_custom_data_keys_are_refused_in_content_and_translations() -> None:
    t = template(
        content_pb2.Content(title="t", custom_data={"pw_send_id": "x"}),
        localized={"fr": content_pb2.Content(title="t", custom_data={"pw_x": "y"})},
    )
    assert problems_of(t) == [
        (f"{AT}.content.custom_data[pw_send_id]", "reserved for delivery (pw_*)"),
        (f"{AT}.localized[0].content.custom_data[pw_x]", "reserved for delivery (pw_*)"),
    ]


def test_translations_unique_locales_at_most_fifty() -> None:
    same = template(
        content_pb2.Content(title="t"),
        localized={
            "fr-CA": content_pb2.Content(title="a"),
            "FR_ca": content_pb2.Content(title="b"),
        },
    )
    assert problems_of(same) == [(f"{AT}.localized[1].locale", "repeats 'FR_ca'")]
    many = template(
        content_pb2.Content(title="t"),
        localized={f"x{i}": content_pb2.Content(title="t") for i in range(51)},
    )
    assert problems_of(many) == [(f"{AT}.localized", "at most 50, got 51")]
    fifty = template(
        content_pb2.Content(title="t"),
        localized={f"x{i}": content_pb2.Content(title="t") for i in range(50)},
    )
    assert problems_of(fifty) == []


def test_every_string_of_the_content_is_templated() -> None:
    content = content_pb2.Content(
        title="a",
        sound="b",
        custom_data={"z": "c", "a": "d"},
        apns=content_pb2.ApnsOverrides(title_loc_args=["e", "f"], priority=10),
        android=content_pb2.AndroidOverrides(channel_id="g"),
        web_push=content_pb2.WebPushOverrides(actions=[content_pb2.WebPushAction(title="h")]),
    )
    found = {path: text for path, text in content_strings(content, "content") if text}
    assert found == {
        "content.title": "a",
        "content.sound": "b",
        "content.custom_data[a]": "d",
        "content.custom_data[z]": "c",
        "content.apns.title_loc_args[0]": "e",
        "content.apns.title_loc_args[1]": "f",
        "content.android.channel_id": "g",
        "content.web_push.actions[0].title": "h",
    }


# What a template needs.


def test_placeholders_needed_lists_only_used_placeholders_by_source_and_event() -> None:
    t = template(
        content_pb2.Content(title="{{first}} {{sku}}", body="{{city}}"),
        first_name(),
        resources_pb2.Placeholder(name="city", source=PROFILE, key="home.city"),
        resources_pb2.Placeholder(name="sku", source=EVENT, key="sku", event_name="buy"),
        resources_pb2.Placeholder(name="price", source=EVENT, key="price", event_name="buy"),
        resources_pb2.Placeholder(name="seen", source=EVENT, key="page", event_name="view"),
        resources_pb2.Placeholder(name="unused", source=PROFILE, key="never"),
        localized={"fr": content_pb2.Content(title="{{price}} {{seen}}")},
    )
    attributes, events = placeholders_needed(t)
    assert attributes == {"first_name", "home.city"}
    assert events == {"buy": {"sku", "price"}, "view": {"page"}}


def test_placeholders_needed_of_a_trigger_names_the_firing_event() -> None:
    t = template(
        content_pb2.Content(title="{{sku}}"),
        resources_pb2.Placeholder(name="sku", source=EVENT, key="sku"),
    )
    assert placeholders_needed(t) == (frozenset(), {TRIGGER_EVENT: frozenset({"sku"})})
    assert placeholders_needed(template(content_pb2.Content(title="plain"))) == (frozenset(), {})


# Values as text.


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ("Ann", "Ann"),
        ("", ""),
        ('a {{first}} "quoted" <b> \\ é', 'a {{first}} "quoted" <b> \\ é'),
        (3.0, "3"),
        (3, "3"),
        (-7.0, "-7"),
        (2.5, "2.5"),
        (0.1, "0.1"),
        (-0.0, "0"),
        (1e21, "1000000000000000000000"),
        (2.0**53 + 2, "9007199254740994"),
        (1e-07, "0.0000001"),
        (1 / 3, "0.3333333333333333"),
        (True, "true"),
        (False, "false"),
        (datetime(2026, 3, 1, 9, 0, tzinfo=UTC), "2026-03-01T09:00:00Z"),
        (datetime(2026, 3, 1, 10, 0, tzinfo=timezone(timedelta(hours=1))), "2026-03-01T09:00:00Z"),
        (datetime(2026, 3, 1, 9, 0), "2026-03-01T09:00:00Z"),  # naive: UTC
        (datetime(2026, 3, 1, 9, 0, 0, 500000, tzinfo=UTC), "2026-03-01T09:00:00.500Z"),
        (datetime(2026, 3, 1, 9, 0, 0, 123456, tzinfo=UTC), "2026-03-01T09:00:00.123456Z"),
        (["a", "b", "c"], "a, b, c"),
        (("solo",), "solo"),
        ([], ""),
    ],
)
def test_plain_values_as_text(value: ValueLike, text: str) -> None:
    assert value_text(value) == text
    assert body_of(value) == f"[{text}]"


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (attr(string_value="Ann"), "Ann"),
        (attr(string_value=""), ""),
        (attr(number_value=3.0), "3"),
        (attr(number_value=2.5), "2.5"),
        (attr(number_value=-0.0), "0"),
        (attr(number_value=1e21), "1000000000000000000000"),
        (attr(bool_value=True), "true"),
        (attr(bool_value=False), "false"),
        (attr(timestamp_value=Timestamp(seconds=1772355600)), "2026-03-01T09:00:00Z"),
        (
            attr(timestamp_value=Timestamp(seconds=1772355600, nanos=1)),
            "2026-03-01T09:00:00.000000001Z",
        ),
        (attr(string_list_value=values_pb2.StringList(values=["x", "y"])), "x, y"),
        (attr(string_list_value=values_pb2.StringList()), ""),
    ],
)
def test_attribute_values_as_text(value: values_pb2.AttributeValue, text: str) -> None:
    assert value_text(value) == text
    assert body_of(value) == f"[{text}]"


@pytest.mark.parametrize(
    "value",
    [
        None,
        values_pb2.AttributeValue(),  # no kind set
        math.nan,
        math.inf,
        attr(number_value=-math.inf),
        attr(timestamp_value=Timestamp(seconds=-62135596801)),  # before year 1
    ],
)
def test_values_without_text_count_as_missing(value: ValueLike) -> None:
    assert value_text(value) is None
    t = template(
        content_pb2.Content(body="[{{v}}]"),
        resources_pb2.Placeholder(name="v", source=PROFILE, key="v", default_value="?"),
    )
    assert rendered(t, attributes={"v": value}).body == "[?]"


@settings(max_examples=300, deadline=None)
@given(st.floats(allow_nan=False, allow_infinity=False))
def test_number_text_round_trips_and_has_no_exponent(number: float) -> None:
    text = number_text(number)
    assert text is not None
    assert float(text) == number
    assert "e" not in text.lower()
    assert ("." in text) == (number != int(number))


# Missing values.


def test_empty_string_is_a_value_absent_is_missing() -> None:
    t = template(content_pb2.Content(title="Hi {{first}}!"), first_name(default_value="there"))
    assert rendered(t, attributes={"first_name": attr(string_value="")}).title == "Hi !"
    assert rendered(t, attributes={}).title == "Hi there!"
    assert rendered(t, attributes={"first_name": attr(string_value="Ann")}).title == "Hi Ann!"


@pytest.mark.parametrize("on_missing", [0, USE_DEFAULT, 99])  # 99: a policy of a newer contract
def test_use_default_and_unset_take_the_default_possibly_empty(on_missing: int) -> None:
    with_default = template(
        content_pb2.Content(title="Hi {{first}}"),
        first_name(on_missing=on_missing, default_value="x"),
    )
    assert rendered(with_default).title == "Hi x"
    empty_default = template(
        content_pb2.Content(title="Hi {{first}}"), first_name(on_missing=on_missing)
    )
    assert rendered(empty_default).title == "Hi "


def test_skip_user_returns_missing_with_the_first_declared_name() -> None:
    t = template(
        content_pb2.Content(title="{{b}} {{a}}", body="{{c}}"),
        resources_pb2.Placeholder(name="a", source=PROFILE, key="a", on_missing=SKIP),
        resources_pb2.Placeholder(name="b", source=EVENT, key="b", event_name="e", on_missing=SKIP),
        resources_pb2.Placeholder(name="c", source=PROFILE, key="c", default_value="C"),
    )
    assert render(t, locale="", attributes={}, event_properties={}) == Missing("a")
    detail = render_detailed(t, locale="", attributes={}, event_properties={})
    assert detail == Rendering(None, "", ("a", "b"), ("c",))
    assert render(t, locale="", attributes={"a": "A"}, event_properties={"other": {"b": "B"}}) == (
        Missing("b")
    )
    done = rendered(t, attributes={"a": "A"}, events={"e": {"b": "B"}})
    assert (done.title, done.body) == ("B A", "C")


def test_skip_user_only_counts_for_the_content_the_user_gets() -> None:
    t = template(
        content_pb2.Content(title="Hello"),
        resources_pb2.Placeholder(name="v", source=PROFILE, key="v", on_missing=SKIP),
        localized={"fr": content_pb2.Content(title="Salut {{v}}")},
    )
    assert rendered(t, locale="en").title == "Hello"
    assert render(t, locale="fr", attributes={}, event_properties={}) == Missing("v")


def test_event_properties_by_event_name_and_the_trigger_event() -> None:
    campaign = template(
        content_pb2.Content(title="{{sku}}"),
        resources_pb2.Placeholder(name="sku", source=EVENT, key="sku", event_name="buy"),
    )
    assert rendered(campaign, events={"buy": {"sku": attr(string_value="X1")}}).title == "X1"
    trigger = template(
        content_pb2.Content(title="{{sku}}"),
        resources_pb2.Placeholder(name="sku", source=EVENT, key="sku"),
    )
    assert rendered(trigger, events={TRIGGER_EVENT: {"sku": "X2"}}).title == "X2"
    # A profile attribute of the same key is not an event property.
    assert rendered(trigger, attributes={"sku": "no"}).title == ""


def test_a_get_profiles_answer_is_taken_as_it_is() -> None:
    user = seg_messages.UserProfile(
        user_id="u1",
        found=True,
        profile=seg_resources.Profile(
            user_id="u1",
            attributes={"first_name": attr(string_value="Ann"), "age": attr(number_value=41.0)},
        ),
        latest_events=[
            seg_resources.Event(name="buy", properties={"total": attr(number_value=19.99)})
        ],
    )
    t = template(
        content_pb2.Content(title="{{first}} ({{age}})", body="You spent {{total}}"),
        first_name(),
        resources_pb2.Placeholder(name="age", source=PROFILE, key="age"),
        resources_pb2.Placeholder(name="total", source=EVENT, key="total", event_name="buy"),
    )
    out = render(
        t,
        locale="",
        attributes=user.profile.attributes,
        event_properties={event.name: event.properties for event in user.latest_events},
    )
    assert isinstance(out, content_pb2.Content)
    assert (out.title, out.body) == ("Ann (41)", "You spent 19.99")


def test_values_are_inserted_once_never_expanded_again() -> None:
    t = template(
        content_pb2.Content(title="{{a}}|{{b}}"),
        resources_pb2.Placeholder(name="a", source=PROFILE, key="a"),
        resources_pb2.Placeholder(name="b", source=PROFILE, key="b"),
    )
    assert rendered(t, attributes={"a": "{{b}}", "b": "B"}).title == "{{b}}|B"


def test_rendering_fills_every_templated_string_and_leaves_the_template_as_it_was() -> None:
    content = content_pb2.Content(
        title="T {{v}}",
        deep_link="app://x/{{v}}",
        collapse_id="c-{{v}}",
        badge=0,
        custom_data={"k": "{{v}}{{v}}"},
        apns=content_pb2.ApnsOverrides(body_loc_key="KEY", body_loc_args=["{{v}}"]),
        android=content_pb2.AndroidOverrides(tag="{{v}}"),
    )
    t = template(content, resources_pb2.Placeholder(name="v", source=PROFILE, key="v"))
    before = t.SerializeToString()
    out = rendered(t, attributes={"v": "7"})
    expected = content_pb2.Content(
        title="T 7",
        deep_link="app://x/7",
        collapse_id="c-7",
        badge=0,
        custom_data={"k": "77"},
        apns=content_pb2.ApnsOverrides(body_loc_key="KEY", body_loc_args=["7"]),
        android=content_pb2.AndroidOverrides(tag="7"),
    )
    assert out == expected
    assert out.HasField("badge")
    assert not out.HasField("web_push")
    assert t.SerializeToString() == before


# Locale choice.


LOCALIZED = template(
    content_pb2.Content(title="default {{first}}"),
    first_name(default_value="you"),
    localized={
        "fr": content_pb2.Content(title="fr {{first}}"),
        "fr-CA": content_pb2.Content(title="fr-CA {{first}}"),
        "pt_BR": content_pb2.Content(title="pt-BR {{first}}"),
    },
)


@pytest.mark.parametrize(
    ("locale", "title", "tag"),
    [
        ("fr-CA", "fr-CA you", "fr-CA"),
        ("fr_ca", "fr-CA you", "fr-CA"),
        ("FR-ca", "fr-CA you", "fr-CA"),
        ("fr-BE", "fr you", "fr"),
        ("fr", "fr you", "fr"),
        ("pt-br", "pt-BR you", "pt_BR"),
        ("pt", "default you", ""),  # a region's translation is no language fallback
        ("de-DE", "default you", ""),
        ("", "default you", ""),
    ],
)
def test_locale_choice_exact_then_language_then_default(locale: str, title: str, tag: str) -> None:
    assert rendered(LOCALIZED, locale=locale).title == title
    detail = render_detailed(LOCALIZED, locale=locale, attributes={}, event_properties={})
    assert detail.locale == tag
    assert detail.defaulted == ("first",)


# Sizes.


def test_apns_limit_counts_the_keys_delivery_adds() -> None:
    options = DeliveryOptions(send_id="s" * 35, campaign_id="campaign-1", variant_id="A")
    base = rendered_size(content_pb2.Content(title="T", body="x"), options).size - 1
    fitting = content_pb2.Content(title="T", body="x" * (APNS_LIMIT - base))
    check = rendered_size(fitting, options)
    assert (check.provider, check.size, check.limit) == ("apns", APNS_LIMIT, APNS_LIMIT)
    assert rendered_size_ok(fitting, options)
    over = content_pb2.Content(title="T", body="x" * (APNS_LIMIT - base + 1))
    assert not rendered_size_ok(over, options)
    # Without the pw_* keys the same content would have looked fine.
    assert check_size(over, DeliveryOptions()).fits
    body = render_payload(over, options).apns.body
    assert b'"pw_send_id": "sss' in body
    assert b'"pw_campaign_id": "campaign-1"' in body
    assert b'"pw_variant_id": "A"' in body


def test_a_size_check_without_a_send_id_is_refused() -> None:
    with pytest.raises(ValueError, match="send_id"):
        rendered_size_ok(content_pb2.Content(title="T"), DeliveryOptions())


def test_rendered_values_decide_the_size() -> None:
    t = template(
        content_pb2.Content(title="Hi", body="{{bio}}"),
        resources_pb2.Placeholder(name="bio", source=PROFILE, key="bio"),
    )
    options = DeliveryOptions(send_id="s1")
    assert rendered_size_ok(rendered(t, attributes={"bio": "short"}), options)
    assert not rendered_size_ok(rendered(t, attributes={"bio": "é" * 2100}), options)  # 4,200 B


def test_smallest_sizes_render_every_token_empty() -> None:
    t = template(
        content_pb2.Content(title="{{first}}", body="x" * 4100),
        first_name(),
        localized={"fr": content_pb2.Content(title="{{first}}", body="short")},
    )
    sizes = smallest_sizes(t, DeliveryOptions(send_id="s" * 35))
    assert [(path, check.fits) for path, check in sizes] == [
        ("content", False),
        ("localized[0].content", True),
    ]
    empty = content_pb2.Content(body="short")
    assert sizes[1][1] == check_size(empty, DeliveryOptions(send_id="s" * 35))


# Properties.

_NAMES = ["a", "b", "first_name", "X9"]
_PLAIN_TEXT = st.text(
    alphabet=st.characters(blacklist_characters="{}", blacklist_categories=["Cs"]), max_size=20
)
_SEGMENTS = st.lists(
    st.one_of(_PLAIN_TEXT, st.sampled_from(_NAMES).map(lambda name: ("token", name))),
    max_size=12,
)


def _template_of(texts: list[str]) -> resources_pb2.Template:
    return template(
        content_pb2.Content(title=texts[0], body=texts[1], custom_data={"k": texts[2]}),
        *(
            resources_pb2.Placeholder(name=name, source=PROFILE, key=f"attr.{name}")
            for name in _NAMES
        ),
    )


def _text_of(segments: list[object], values: Mapping[str, str] | None) -> str:
    parts: list[str] = []
    for segment in segments:
        if isinstance(segment, tuple):
            parts.append(f"{{{{{segment[1]}}}}}" if values is None else values[segment[1]])
        else:
            assert isinstance(segment, str)
            parts.append(segment)
    return "".join(parts)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(_SEGMENTS, min_size=3, max_size=3),
    st.fixed_dictionaries(dict.fromkeys(_NAMES, _PLAIN_TEXT)),
    st.sets(st.sampled_from(_NAMES)),
)
def test_rendering_replaces_every_declared_token_and_nothing_else(
    segments: list[list[object]], values: dict[str, str], absent: set[str]
) -> None:
    t = _template_of([_text_of(s, None) for s in segments])
    attributes = {f"attr.{name}": value for name, value in values.items() if name not in absent}
    out = rendered(t, attributes=attributes)
    texts = {name: ("" if name in absent else value) for name, value in values.items()}
    expected = [_text_of(s, texts) for s in segments]
    assert [out.title, out.body, out.custom_data["k"]] == expected
    for text in expected:
        assert not any(match.group(1) in _NAMES for match in TOKEN.finditer(text))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(max_size=40), min_size=3, max_size=3), st.text(max_size=10))
def test_text_without_tokens_is_never_touched(texts: list[str], value: str) -> None:
    texts = [text for text in texts if TOKEN.search(text) is None] + ["", "", ""]
    t = _template_of(texts[:3])
    out = rendered(t, attributes={f"attr.{name}": value for name in _NAMES})
    assert [out.title, out.body, out.custom_data["k"]] == texts[:3]


@settings(max_examples=100, deadline=None)
@given(st.integers(min_value=0, max_value=2**64 - 1))
def test_any_double_renders_or_counts_missing(bits: int) -> None:
    number = struct.unpack("<d", bits.to_bytes(8, "little"))[0]
    text = value_text(attr(number_value=number))
    assert (text is None) == (not math.isfinite(number))
