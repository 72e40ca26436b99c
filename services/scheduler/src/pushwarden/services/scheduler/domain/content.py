"""Checks on notification content the scheduler accepts (transactional requests,
templates): something to show or to hand to the app, and no custom-data key that
delivery reserves for itself."""

from __future__ import annotations

from pushwarden.common.v1 import content_pb2
from pushwarden.payload import is_reserved_data_key
from pushwarden.runtime.validation import Violations

MAX_TRANSLATIONS = 50


def check_content(problems: Violations, field: str, content: content_pb2.Content) -> None:
    """Content must show a title or body, or be a data-only or background push."""
    if not (content.title or content.body or content.custom_data or content.apns.content_available):
        problems.add(field, "required: a title or body (or custom data for a data-only push)")
    for key in sorted(content.custom_data):
        if is_reserved_data_key(key):
            problems.add(f"{field}.custom_data[{key}]", "reserved for delivery (pw_*)")


def check_translations(
    problems: Violations, field: str, entries: list[tuple[str, content_pb2.Content]]
) -> None:
    """At most 50 translations, each with a unique BCP 47-looking tag and content."""
    if len(entries) > MAX_TRANSLATIONS:
        problems.add(field, f"at most {MAX_TRANSLATIONS}, got {len(entries)}")
    seen: set[str] = set()
    for index, (locale, content) in enumerate(entries):
        tag = locale.replace("_", "-").lower()
        if (
            not locale
            or len(locale) > 35
            or not all(part.isalnum() and part.isascii() for part in tag.split("-"))
        ):
            problems.add(f"{field}[{index}].locale", "a BCP 47 tag such as 'fr' or 'fr-CA'")
        elif tag in seen:
            problems.add(f"{field}[{index}].locale", f"repeats {locale!r}")
        seen.add(tag)
        check_content(problems, f"{field}[{index}].content", content)
