"""Templates (``pushwarden.scheduler.v1.Template``): their checks, what they need from
segmentation, their rendering for one user, and the size of what they render to.

Pure: protobuf messages and plain values in and out, no I/O.

Which strings are templated: every string of the content, found by walking the
message's descriptor, so a field the contract adds later is covered without a change
here: ``title``, ``subtitle``, ``body``, ``sound``, ``image_url``, ``thread_id``,
``action_category``, ``deep_link``, ``collapse_id``, the *values* of ``custom_data``
(never its keys: the reserved-key rule is checked on the keys as written), and every
string of the ``apns``, ``android`` and ``web_push`` overrides, including the items of
``title_loc_args`` / ``body_loc_args`` and the strings of each web push action. The
contract says "strings may hold ``{{name}}`` tokens" without exception, and a
per-field list would be one more thing to keep in step with the proto. Numbers, enums
and durations hold no text and are never touched.

A token is ``{{name}}`` with ``name`` matching ``[A-Za-z0-9_]+`` (no spaces inside the
braces). Text that looks like a token but is not one (``{{first name}}``, ``{{}}``)
is refused by :func:`check_template`, since it would reach users as written.

Rendering replaces every token in one pass: a value that itself contains ``{{x}}`` is
inserted as it is, never expanded again. Values become text as the contract's
``Placeholder`` comment says (see :func:`value_text`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Final

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from pushwarden.common.v1 import content_pb2, values_pb2
from pushwarden.payload import DeliveryOptions, SizeCheck, check_size
from pushwarden.runtime.validation import Violations, id_problem
from pushwarden.scheduler.v1 import resources_pb2
from pushwarden.services.scheduler.domain.content import check_content, check_translations
from pushwarden.services.scheduler.domain.intents import localized_content

Template = resources_pb2.Template
Placeholder = resources_pb2.Placeholder

TOKEN: Final = re.compile(r"\{\{([A-Za-z0-9_]+)\}\}")
"""A placeholder token; group 1 is its name."""
_NAME: Final = re.compile(r"[A-Za-z0-9_]+")
# Anything written like a token: double braces around text without braces.
_TOKEN_LIKE: Final = re.compile(r"\{\{([^{}]*)\}\}")
# Attribute and property names, as segmentation accepts them (ProfileUpdate, Event).
_KEY: Final = re.compile(r"[A-Za-z0-9_.\-]{1,128}")
MAX_EVENT_NAME_CHARS: Final = 128

TRIGGER_EVENT: Final = ""
"""The key of the triggering event in :func:`render`'s ``event_properties`` and in
:func:`placeholders_needed`'s events: a trigger's EVENT_PROPERTY placeholders name no
event (they read the event that fired the trigger)."""

_SOURCES: Final = frozenset(
    {
        resources_pb2.PLACEHOLDER_SOURCE_PROFILE_ATTRIBUTE,
        resources_pb2.PLACEHOLDER_SOURCE_EVENT_PROPERTY,
    }
)
_ON_MISSING: Final = frozenset(
    {
        resources_pb2.MISSING_VALUE_POLICY_USE_DEFAULT,
        resources_pb2.MISSING_VALUE_POLICY_SKIP_USER,
    }
)

PlainValue = str | bool | int | float | datetime | Timestamp | Sequence[str]
"""A value as plain Python (tests, callers that already unpacked the proto)."""
ValueLike = values_pb2.AttributeValue | PlainValue | None
"""What a profile attribute or event property may be given as: the contract's
``AttributeValue`` (what GetProfiles returns in ``profile.attributes`` and
``latest_events[i].properties``), or a plain value. None counts as absent."""


# The strings of a content.


def _shape(field: Any) -> str:
    """How a field holds text: "string_map" (a map with string values), "message",
    "messages", "string", "strings", or "" (no text: numbers, enums, other maps)."""
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        if field.message_type.GetOptions().map_entry:
            value = field.message_type.fields_by_name["value"]
            return "string_map" if value.type == FieldDescriptor.TYPE_STRING else ""
        return "messages" if field.is_repeated else "message"
    if field.type == FieldDescriptor.TYPE_STRING:
        return "strings" if field.is_repeated else "string"
    return ""


def content_strings(message: Message, path: str) -> Iterator[tuple[str, str]]:
    """``(field path, text)`` of every templated string of ``message`` (a ``Content``
    or one of its parts), in field-number order; map values by sorted key
    (``content.custom_data[offer]``), repeated items by index
    (``content.apns.body_loc_args[0]``). Unset sub-messages hold no text and are skipped."""
    for field in message.DESCRIPTOR.fields:
        where = f"{path}.{field.name}"
        value: Any = getattr(message, field.name)
        shape = _shape(field)
        if shape == "string_map":
            for key in sorted(value):
                yield f"{where}[{key}]", value[key]
        elif shape == "messages":
            for index, item in enumerate(value):
                yield from content_strings(item, f"{where}[{index}]")
        elif shape == "message":
            if message.HasField(field.name):
                yield from content_strings(value, where)
        elif shape == "strings":
            for index, item in enumerate(value):
                yield f"{where}[{index}]", item
        elif shape == "string":
            yield where, value


def _rewrite(message: Message, change: Callable[[str], str]) -> None:
    """Replace, in place, every templated string of ``message`` by ``change(text)``
    (written back only when it differs, so no unset field becomes set)."""
    for field in message.DESCRIPTOR.fields:
        value: Any = getattr(message, field.name)
        shape = _shape(field)
        if shape == "string_map":
            for key in list(value):
                new = change(value[key])
                if new != value[key]:
                    value[key] = new
        elif shape == "messages":
            for item in value:
                _rewrite(item, change)
        elif shape == "message":
            if message.HasField(field.name):
                _rewrite(value, change)
        elif shape == "strings":
            for index, item in enumerate(value):
                new = change(item)
                if new != item:
                    value[index] = new
        elif shape == "string":
            new = change(value)
            if new != value:
                setattr(message, field.name, new)


def tokens(content: content_pb2.Content) -> set[str]:
    """The placeholder names ``content``'s strings use."""
    return {
        match.group(1) for _, text in content_strings(content, "") for match in TOKEN.finditer(text)
    }


def _all_contents(template: Template) -> list[content_pb2.Content]:
    return [template.content, *(entry.content for entry in template.localized)]


# Checks.


def check_template(problems: Violations, field: str, template: Template, *, trigger: bool) -> None:
    """Add a violation, with its full field path, for every contract rule ``template``
    breaks (``field`` is the template's own path, e.g. ``campaign.variants[0].template``).

    - The content and each translation show a title or a body (the Template contract
      is stricter than ``Content``'s: no data-only or silent template); custom data
      keys are not reserved ones (``domain.content.check_content``).
    - Translations: at most 50, locales well-formed and unique case- and
      ``_``/``-``-insensitively (``domain.content.check_translations``).
    - Every token of every templated string is declared: "undeclared placeholder"
      naming the string's path (``...template.content.title``,
      ``...template.localized[1].content.custom_data[offer]``); text written like a
      token that is not one is refused there too.
    - Placeholders: ``name`` required, ``[A-Za-z0-9_]+``, unique; ``source`` set;
      ``key`` required, an attribute or property name as segmentation accepts it
      (1..128 of ``[A-Za-z0-9_.-]``); ``on_missing`` known if set. EVENT_PROPERTY
      needs ``event_name`` in a campaign (``trigger=False``: the user's latest such
      event is read) and must leave it empty in a trigger (the firing event is read,
      so a name would be ignored); PROFILE_ATTRIBUTE must leave it empty.

    Declared placeholders no string uses are allowed (the contract's "placeholders
    used" is not enforced both ways); they cost nothing at send time.
    """
    declared = _check_placeholders(problems, f"{field}.placeholders", template, trigger=trigger)
    _check_presence(problems, f"{field}.content", template.content)
    _check_tokens(problems, f"{field}.content", template.content, declared)
    translations = Violations()
    check_translations(
        translations,
        f"{field}.localized",
        [(entry.locale, entry.content) for entry in template.localized],
    )
    presence = {f"{field}.localized[{i}].content" for i in range(len(template.localized))}
    # check_translations applies Content's weaker presence rule at exactly each
    # content's path; the template rule below replaces it, everything else is kept.
    problems.items.extend(item for item in translations.items if item[0] not in presence)
    for index, entry in enumerate(template.localized):
        where = f"{field}.localized[{index}].content"
        if not (entry.content.title or entry.content.body):
            problems.add(where, _NO_TITLE_OR_BODY)
        _check_tokens(problems, where, entry.content, declared)


_NO_TITLE_OR_BODY = "required: a title or a body (a template always shows something)"


def _check_presence(problems: Violations, path: str, content: content_pb2.Content) -> None:
    """Title or body, and check_content's other rules (reserved custom data keys)."""
    if not (content.title or content.body):
        problems.add(path, _NO_TITLE_OR_BODY)
    found = Violations()
    check_content(found, path, content)
    # What check_content says at exactly ``path`` is its own presence rule, which the
    # template's stricter one above replaces; the rest (custom_data keys) is kept.
    problems.items.extend(item for item in found.items if item[0] != path)


def _check_tokens(
    problems: Violations, path: str, content: content_pb2.Content, declared: set[str]
) -> None:
    for where, text in content_strings(content, path):
        reported: set[str] = set()
        for match in _TOKEN_LIKE.finditer(text):
            name = match.group(1)
            if name in reported:
                continue
            reported.add(name)
            if _NAME.fullmatch(name) is None:
                problems.add(
                    where,
                    f"malformed placeholder {match.group(0)!r}: write {{{{name}}}} with a "
                    "name of A-Z, a-z, 0-9 and '_' only",
                )
            elif name not in declared:
                problems.add(where, f"undeclared placeholder {{{{{name}}}}}")


def _check_placeholders(
    problems: Violations, path: str, template: Template, *, trigger: bool
) -> set[str]:
    """Check each placeholder; returns the well-formed names (declared ones)."""
    names: set[str] = set()
    for index, placeholder in enumerate(template.placeholders):
        where = f"{path}[{index}]"
        name = placeholder.name
        if not name:
            problems.add(f"{where}.name", "required")
        elif _NAME.fullmatch(name) is None:
            problems.add(f"{where}.name", "must be A-Z, a-z, 0-9 and '_' only")
        elif name in names:
            problems.add(f"{where}.name", f"repeats {name!r}")
        else:
            names.add(name)
        problems.enum(f"{where}.source", placeholder.source, _SOURCES)
        if not placeholder.key:
            problems.add(f"{where}.key", "required")
        elif _KEY.fullmatch(placeholder.key) is None:
            problems.add(
                f"{where}.key", "must be 1..128 characters of A-Z, a-z, 0-9, '_', '.' or '-'"
            )
        event = placeholder.event_name
        if placeholder.source == resources_pb2.PLACEHOLDER_SOURCE_EVENT_PROPERTY:
            if trigger and event:
                problems.add(
                    f"{where}.event_name",
                    "must be empty in a trigger: the event that fired it is read",
                )
            elif not trigger and not event:
                problems.add(
                    f"{where}.event_name",
                    "required for EVENT_PROPERTY in a campaign: the user's latest event "
                    "of that name is read",
                )
            elif event:
                problem = id_problem(event, MAX_EVENT_NAME_CHARS)
                if problem is not None:
                    problems.add(f"{where}.event_name", problem)
        elif event:
            problems.add(f"{where}.event_name", "must be empty unless source is EVENT_PROPERTY")
        problems.enum(f"{where}.on_missing", placeholder.on_missing, _ON_MISSING, required=False)
    return names


# What a template needs.


def _used_placeholders(template: Template) -> list[Placeholder]:
    """The declared placeholders some content of the template uses (first declaration
    of a name wins, as in rendering)."""
    used: set[str] = set()
    for content in _all_contents(template):
        used |= tokens(content)
    chosen: dict[str, Placeholder] = {}
    for placeholder in template.placeholders:
        if placeholder.name in used and placeholder.name not in chosen:
            chosen[placeholder.name] = placeholder
    return list(chosen.values())


def placeholders_needed(template: Template) -> tuple[frozenset[str], dict[str, frozenset[str]]]:
    """What to fetch to render ``template`` for any locale: the profile attribute keys
    (GetProfiles ``attribute_names``) and, per event name, the property keys
    (GetProfiles ``latest_event_names`` are the dict's keys; in a trigger the key is
    :data:`TRIGGER_EVENT`, the firing event). Only placeholders some content (default
    or translation) actually uses count."""
    attributes: set[str] = set()
    events: dict[str, set[str]] = {}
    for placeholder in _used_placeholders(template):
        if placeholder.source == resources_pb2.PLACEHOLDER_SOURCE_PROFILE_ATTRIBUTE:
            attributes.add(placeholder.key)
        elif placeholder.source == resources_pb2.PLACEHOLDER_SOURCE_EVENT_PROPERTY:
            events.setdefault(placeholder.event_name, set()).add(placeholder.key)
    return frozenset(attributes), {name: frozenset(keys) for name, keys in events.items()}


# Values as text.


def number_text(number: float) -> str | None:
    """A number as the contract renders it: integral values without a decimal point or
    exponent ("3", "1000000000000000000000" for 1e21, "0" for -0.0), others in their
    shortest round-trip digits written positionally ("2.5", "0.0000001" for 1e-07).
    None for NaN and infinities, which no attribute can hold (they count as missing)."""
    if not math.isfinite(number):
        return None
    if number == int(number):
        return str(int(number))
    # repr gives the shortest digits that round-trip; Decimal writes them without an
    # exponent (only tiny values get one from repr: every double >= 2**53 is integral).
    return format(Decimal(repr(number)), "f")


def timestamp_text(stamp: Timestamp) -> str | None:
    """An instant in RFC 3339 UTC as protobuf's JSON mapping writes it: no fraction for
    whole seconds ("2026-03-01T09:00:00Z"), else 3, 6 or 9 digits ("...:00.500Z").
    None outside years 1..9999 (counts as missing)."""
    try:
        return stamp.ToJsonString()
    except ValueError:
        return None


def value_text(value: ValueLike) -> str | None:
    """A value's text, or None when it counts as missing.

    Strings as they are (an empty string is a value); numbers per :func:`number_text`;
    booleans "true" / "false"; timestamps per :func:`timestamp_text` (a naive
    ``datetime`` is taken as UTC); string lists joined with ", " (an empty list is the
    empty string). Missing: None, an ``AttributeValue`` with no kind set, a number that
    is not finite, a timestamp out of range. No escaping (delivery JSON-encodes)."""
    if value is None:
        return None
    if isinstance(value, values_pb2.AttributeValue):
        return _attribute_text(value)
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return number_text(value)
    if isinstance(value, datetime):
        stamp = Timestamp()
        try:
            stamp.FromDatetime(value if value.tzinfo is not None else value.replace(tzinfo=UTC))
        except (ValueError, OverflowError):
            return None
        return timestamp_text(stamp)
    if isinstance(value, Timestamp):
        return timestamp_text(value)
    return ", ".join(value)


def _attribute_text(value: values_pb2.AttributeValue) -> str | None:
    kind = value.WhichOneof("kind")
    if kind == "string_value":
        return value.string_value
    if kind == "number_value":
        return number_text(value.number_value)
    if kind == "bool_value":
        return "true" if value.bool_value else "false"
    if kind == "timestamp_value":
        return timestamp_text(value.timestamp_value)
    if kind == "string_list_value":
        return ", ".join(value.string_list_value.values)
    return None


# Rendering.


@dataclass(frozen=True, slots=True)
class Missing:
    """A template that cannot be rendered for a user: ``placeholder`` (the first, in
    declaration order) has no value and its policy is SKIP_USER, so the user is
    dropped with MISSING_TEMPLATE_VALUE."""

    placeholder: str


@dataclass(frozen=True, slots=True)
class Rendering:
    """A rendering with the facts a decision's ``TemplateDetail`` shows: the
    translation's ``locale`` as the template wrote it ("" for the default content);
    ``missing``, the SKIP_USER placeholders without a value (non-empty exactly when
    ``content`` is None); ``defaulted``, the placeholders that took their
    ``default_value``. Names in declaration order, only those the content uses."""

    content: content_pb2.Content | None
    locale: str
    missing: tuple[str, ...]
    defaulted: tuple[str, ...]

    @property
    def result(self) -> content_pb2.Content | Missing:
        """What :func:`render` returns."""
        if self.content is None:
            return Missing(self.missing[0])
        return self.content


def render_detailed(
    template: Template,
    *,
    locale: str,
    attributes: Mapping[str, ValueLike],
    event_properties: Mapping[str, Mapping[str, ValueLike]],
) -> Rendering:
    """:func:`render`, with the locale used and the missing and defaulted placeholders."""
    translations = {entry.locale: entry.content for entry in template.localized}
    chosen = localized_content(template.content, translations, locale)
    # localized_content returns one of the objects it was given: find its tag.
    tag = next((tag for tag, content in translations.items() if content is chosen), "")
    used = tokens(chosen)
    texts: dict[str, str] = {}
    missing: list[str] = []
    defaulted: list[str] = []
    for placeholder in template.placeholders:
        name = placeholder.name
        if name not in used or name in texts or name in missing:
            continue
        if placeholder.source == resources_pb2.PLACEHOLDER_SOURCE_PROFILE_ATTRIBUTE:
            text = value_text(attributes.get(placeholder.key))
        elif placeholder.source == resources_pb2.PLACEHOLDER_SOURCE_EVENT_PROPERTY:
            properties = event_properties.get(placeholder.event_name)
            text = None if properties is None else value_text(properties.get(placeholder.key))
        else:  # unchecked or from a newer contract: no value can be read
            text = None
        if text is not None:
            texts[name] = text
        elif placeholder.on_missing == resources_pb2.MISSING_VALUE_POLICY_SKIP_USER:
            missing.append(name)
        else:  # USE_DEFAULT, unset (its default) or a value this version does not know
            texts[name] = placeholder.default_value
            defaulted.append(name)
    if missing:
        return Rendering(None, tag, tuple(missing), tuple(defaulted))
    content = content_pb2.Content()
    content.CopyFrom(chosen)
    if texts:
        # Undeclared tokens (only in a template that was never checked) stay as written.
        _rewrite(content, lambda text: _substitute(text, texts))
    return Rendering(content, tag, (), tuple(defaulted))


def _substitute(text: str, texts: Mapping[str, str]) -> str:
    if "{{" not in text:
        return text
    return TOKEN.sub(lambda match: texts.get(match.group(1), match.group(0)), text)


def render(
    template: Template,
    *,
    locale: str,
    attributes: Mapping[str, ValueLike],
    event_properties: Mapping[str, Mapping[str, ValueLike]],
) -> content_pb2.Content | Missing:
    """``template`` rendered for one user: the content for the device ``locale``
    (``domain.intents.localized_content``: exact tag, then language, else the default;
    case-insensitive, ``_`` as ``-``), a new ``Content`` with every token replaced by its
    value's text (:func:`value_text`), or :class:`Missing` when a SKIP_USER placeholder
    has no value. ``attributes`` are the user's profile attributes by key (GetProfiles
    ``profile.attributes``); ``event_properties`` are properties by event name, then
    key (``latest_events``' ``name`` -> ``properties``; the firing event of a trigger
    under :data:`TRIGGER_EVENT`). A placeholder without a value under USE_DEFAULT (or
    unset) takes its ``default_value``, possibly empty. Only the tokens of the chosen
    content are resolved, so a translation's SKIP_USER placeholder never drops a user
    who gets another content."""
    return render_detailed(
        template, locale=locale, attributes=attributes, event_properties=event_properties
    ).result


# Sizes.

_NO_IDS: Final = DeliveryOptions()


def rendered_size(content: content_pb2.Content, options: DeliveryOptions) -> SizeCheck:
    """The tightest provider size check of a rendered content as delivery will send it,
    with the ``pw_send_id`` / ``pw_campaign_id`` / ``pw_variant_id`` keys ``options``
    carries. Raises ValueError when ``options`` has no ``send_id``: every send carries
    one, and a check without it would let a payload a few bytes over the limit pass."""
    if not options.send_id:
        raise ValueError("options.send_id is required: delivery always adds pw_send_id")
    return check_size(content, options)


def rendered_size_ok(content: content_pb2.Content, options: DeliveryOptions) -> bool:
    """Whether a rendered content fits its providers' limits (4 KB for APNs and FCM,
    5 KB for an APNs VoIP push) once delivery adds its keys; False means the user is
    dropped with PAYLOAD_TOO_LARGE. See :func:`rendered_size`."""
    return rendered_size(content, options).fits


def smallest_sizes(
    template: Template, options: DeliveryOptions = _NO_IDS
) -> list[tuple[str, SizeCheck]]:
    """Per content of the template (``content``, ``localized[i].content``): its size
    check with every token rendered as the empty string, the smallest it can render to
    (any placeholder may get an empty string from its attribute). A content over its
    limit here drops every user who would get it, whatever their values.

    The only sound check at creation: the largest rendering is unbounded for practical
    purposes (an attribute holds up to 1,024 characters, a list 100 of them), so a
    worst-case check would refuse almost every template with a placeholder. The
    contract drops over-size sends at dispatch rather than refusing them at creation,
    so this is for warnings or explanations, not an INVALID_ARGUMENT."""
    checks: list[tuple[str, SizeCheck]] = []
    paths = ["content", *(f"localized[{i}].content" for i in range(len(template.localized)))]
    for path, content in zip(paths, _all_contents(template), strict=True):
        empty = content_pb2.Content()
        empty.CopyFrom(content)
        _rewrite(empty, lambda text: TOKEN.sub("", text))
        checks.append((path, check_size(empty, options)))
    return checks
