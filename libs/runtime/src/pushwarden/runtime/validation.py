"""Request checks every service applies the same way (the contracts' common conventions).

Handlers collect every problem of a request before refusing it, so a caller learns all
of them at once, each as a ``google.rpc.BadRequest`` field violation naming the field's
path (``category.category_id``, ``users[3]``)::

    problems = Violations()
    problems.caller_id("category.category_id", request.category_id)
    problems.text("category.description", request.description, max_chars=1024)
    problems.raise_if_any()          # InvalidArgument with every violation

Nothing is written before the checks pass, so bad input changes nothing.
"""

from __future__ import annotations

import base64
import hashlib
import json
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pushwarden.runtime.errors import InvalidArgument

MAX_ID_CHARS: Final = 128
MAX_SERVER_ID_CHARS: Final = 64
DEFAULT_PAGE_SIZE: Final = 100


class Violations:
    """Field violations collected while checking one request."""

    def __init__(self) -> None:
        self.items: list[tuple[str, str]] = []
        # The ErrorInfo reason of the refusal, when a check sets one (BATCH_SIZE).
        self.reason: str | None = None

    def add(self, field: str, description: str) -> None:
        """Record that ``field`` is wrong, and why."""
        self.items.append((field, description))

    def __bool__(self) -> bool:
        return bool(self.items)

    def raise_if_any(self, message: str = "the request is invalid") -> None:
        """Raise :class:`InvalidArgument` listing every violation, if there is any."""
        if self.items:
            fields = ", ".join(dict.fromkeys(field for field, _ in self.items))
            raise InvalidArgument(f"{message}: {fields}", self.items, reason=self.reason)

    def required(self, field: str, present: bool) -> bool:
        """``present`` or a "required" violation; returns ``present``."""
        if not present:
            self.add(field, "required")
        return present

    def caller_id(self, field: str, value: str, *, required: bool = True) -> bool:
        """A caller-chosen id: 1..128 characters of UTF-8 without control characters
        and without leading or trailing white space. Returns whether it is valid."""
        if not value:
            if required:
                self.add(field, "required")
            return not required
        problem = id_problem(value, MAX_ID_CHARS)
        if problem:
            self.add(field, problem)
            return False
        return True

    def caller_ids(self, field: str, values: Iterable[str], *, limit: int) -> list[str]:
        """A batch of ids: 1..``limit`` of them, each valid, none repeated."""
        items = list(values)
        if not items or len(items) > limit:
            self.add(field, f"1 to {limit:,} per call, got {len(items):,}")
            self.reason = "BATCH_SIZE"
            return items
        seen: set[str] = set()
        for index, value in enumerate(items):
            if self.caller_id(f"{field}[{index}]", value) and value in seen:
                self.add(f"{field}[{index}]", f"repeats {value!r}")
                self.reason = "BATCH_SIZE"
            seen.add(value)
        return items

    def text(self, field: str, value: str, *, max_chars: int, required: bool = False) -> None:
        """Free text of at most ``max_chars`` characters, without control characters
        other than tab and newlines."""
        if not value:
            if required:
                self.add(field, "required")
            return
        if len(value) > max_chars:
            self.add(field, f"at most {max_chars:,} characters, got {len(value):,}")
        elif any(_is_control(ch) and ch not in "\t\n\r" for ch in value):
            self.add(field, "must not contain control characters")

    def enum(self, field: str, value: int, known: Iterable[int], *, required: bool = True) -> bool:
        """An enum value: set (unless optional) and one this server knows."""
        if value == 0:
            if required:
                self.add(field, "required (the UNSPECIFIED value is not allowed)")
            return not required
        if value not in set(known):
            self.add(field, f"unknown value {value}")
            return False
        return True

    def time_zone(self, field: str, name: str, *, required: bool = False) -> bool:
        """An IANA time zone name."""
        if not name:
            if required:
                self.add(field, "required")
            return not required
        if not is_time_zone(name):
            self.add(field, f"unknown IANA time zone {name!r}")
            return False
        return True

    def page_size(self, field: str, size: int, *, maximum: int) -> int:
        """The page size to use: the default for 0, clamped to ``maximum``; a negative
        size is a violation."""
        if size < 0:
            self.add(field, "must not be negative")
            return DEFAULT_PAGE_SIZE
        return min(size or DEFAULT_PAGE_SIZE, maximum)


def _is_control(ch: str) -> bool:
    return unicodedata.category(ch) in ("Cc", "Cs")


def id_problem(value: str, max_chars: int = MAX_ID_CHARS) -> str | None:
    """Why ``value`` is no valid id, or None."""
    if len(value) > max_chars:
        return f"at most {max_chars} characters, got {len(value)}"
    if value != value.strip():
        return "must not start or end with white space"
    # Printable text has no control character: checked char by char only otherwise.
    if not value.isprintable() and any(_is_control(ch) for ch in value):
        return "must not contain control characters"
    return None


def is_time_zone(name: str) -> bool:
    """Whether ``name`` is an IANA zone this machine knows."""
    if name != name.strip() or not name or name.startswith("/") or ".." in name:
        return False
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return False
    return True


@dataclass(frozen=True, slots=True)
class PageCursor:
    """Where a list resumes: the last key served, bound to the filters it was served with."""

    after: tuple[str, ...]


def encode_page_token(after: Iterable[str], filters: Mapping[str, object]) -> str:
    """An opaque token for the page after ``after``, valid only with the same filters."""
    body = {"a": list(after), "f": _filters_digest(filters)}
    raw = json.dumps(body, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_page_token(
    token: str, filters: Mapping[str, object], problems: Violations, field: str = "page_token"
) -> PageCursor | None:
    """The cursor in ``token`` (None for the first page); a malformed token or one made
    for other filters is a violation of ``field``."""
    if not token:
        return None
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        body = json.loads(raw)
        after = tuple(str(item) for item in body["a"])
        digest = str(body["f"])
    except (ValueError, KeyError, TypeError):
        problems.add(field, "not a page token of this list")
        return None
    if digest != _filters_digest(filters):
        problems.add(field, "made for other filter values; start again without a token")
        return None
    return PageCursor(after)


def _filters_digest(filters: Mapping[str, object]) -> str:
    text = json.dumps({k: str(v) for k, v in sorted(filters.items())}, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]
