"""Typed values: what a profile attribute or an event property holds.

A value has one kind (string, number, bool, timestamp, string list) and is stored in the
column of that kind; predicates compare by the operand's kind, so a value of another
kind simply does not match.
"""

from __future__ import annotations

import enum
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from google.protobuf.timestamp_pb2 import Timestamp

from pushwarden.common.v1 import values_pb2
from pushwarden.runtime.validation import Violations

MAX_STRING_CHARS: Final = 1024
MAX_LIST_ITEMS: Final = 100
MAX_NAMED_VALUES: Final = 100
_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,128}")
# The instants a stored timestamp can hold on both backends.
_EARLIEST: Final = datetime(1, 1, 2, tzinfo=UTC)
_LATEST: Final = datetime(9999, 12, 30, tzinfo=UTC)


class Kind(enum.StrEnum):
    """The kind of a typed value (stored by name)."""

    STRING = "STRING"
    NUMBER = "NUMBER"
    BOOL = "BOOL"
    TIMESTAMP = "TIMESTAMP"
    STRING_LIST = "STRING_LIST"


Scalar = str | float | bool | datetime | tuple[str, ...]


def encode_list(items: tuple[str, ...]) -> str:
    """The canonical text of a string list (what EQ and NEQ compare)."""
    return json.dumps(list(items), ensure_ascii=False, separators=(",", ":"))


def to_timestamp(instant: datetime) -> Timestamp:
    """A proto Timestamp of an aware instant."""
    stamp = Timestamp()
    stamp.FromDatetime(instant)
    return stamp


def from_timestamp(stamp: Timestamp) -> datetime:
    """An aware UTC instant (microsecond precision, as both databases keep it)."""
    return datetime.fromtimestamp(stamp.seconds, UTC).replace(microsecond=stamp.nanos // 1000)


def timestamp_problem(stamp: Timestamp) -> str | None:
    """Why a proto Timestamp cannot be stored, or None."""
    if not 0 <= stamp.nanos < 1_000_000_000:
        return "nanos must be 0..999,999,999"
    try:
        instant = datetime.fromtimestamp(stamp.seconds, UTC)
    except (OverflowError, ValueError, OSError):
        return "out of range"
    if not _EARLIEST <= instant <= _LATEST:
        return "out of range (years 1..9999)"
    return None


def check_name(problems: Violations, field: str, name: str) -> bool:
    """An attribute or property name: 1..128 characters of [A-Za-z0-9_.-]."""
    if _NAME.fullmatch(name) is None:
        problems.add(field, "must be 1..128 characters of A-Z, a-z, 0-9, '_', '.' or '-'")
        return False
    return True


@dataclass(frozen=True, slots=True)
class Value:
    """A typed value."""

    kind: Kind
    value: Scalar

    @classmethod
    def from_proto(
        cls, proto: values_pb2.AttributeValue, field: str, problems: Violations
    ) -> Value | None:
        """The value of a proto (None, with a violation of ``field``, when it is invalid)."""
        which = proto.WhichOneof("kind")
        if which is None:
            problems.add(field, "required: set exactly one kind of value")
            return None
        if which == "string_value":
            if len(proto.string_value) > MAX_STRING_CHARS:
                problems.add(field, f"at most {MAX_STRING_CHARS:,} characters")
                return None
            return cls(Kind.STRING, proto.string_value)
        if which == "number_value":
            if not math.isfinite(proto.number_value):
                problems.add(field, "must be a finite number")
                return None
            return cls(Kind.NUMBER, float(proto.number_value))
        if which == "bool_value":
            return cls(Kind.BOOL, bool(proto.bool_value))
        if which == "timestamp_value":
            problem = timestamp_problem(proto.timestamp_value)
            if problem:
                problems.add(field, problem)
                return None
            return cls(Kind.TIMESTAMP, from_timestamp(proto.timestamp_value))
        items = tuple(proto.string_list_value.values)
        if len(items) > MAX_LIST_ITEMS:
            problems.add(field, f"at most {MAX_LIST_ITEMS} items")
            return None
        if any(len(item) > MAX_STRING_CHARS for item in items):
            problems.add(field, f"items of at most {MAX_STRING_CHARS:,} characters")
            return None
        return cls(Kind.STRING_LIST, items)

    def to_proto(self) -> values_pb2.AttributeValue:
        """The contract's AttributeValue."""
        value = self.value
        if self.kind is Kind.STRING:
            return values_pb2.AttributeValue(string_value=str(value))
        if self.kind is Kind.NUMBER:
            return values_pb2.AttributeValue(number_value=float(value))  # type: ignore[arg-type]
        if self.kind is Kind.BOOL:
            return values_pb2.AttributeValue(bool_value=bool(value))
        if self.kind is Kind.TIMESTAMP:
            assert isinstance(value, datetime)
            return values_pb2.AttributeValue(timestamp_value=to_timestamp(value))
        assert isinstance(value, tuple)
        return values_pb2.AttributeValue(
            string_list_value=values_pb2.StringList(values=list(value))
        )

    def columns(self) -> dict[str, Any]:
        """The typed columns of a stored value (the other kinds' columns NULL)."""
        value = self.value
        return {
            "kind": self.kind.value,
            "string_value": (
                value
                if self.kind is Kind.STRING
                else encode_list(value)
                if isinstance(value, tuple)
                else None
            ),
            "number_value": value if self.kind is Kind.NUMBER else None,
            "bool_value": value if self.kind is Kind.BOOL else None,
            "timestamp_value": value if self.kind is Kind.TIMESTAMP else None,
        }

    def items(self) -> tuple[str, ...]:
        """The items of a string list (empty for other kinds)."""
        return self.value if isinstance(self.value, tuple) else ()

    @classmethod
    def from_columns(
        cls,
        kind: str,
        string_value: str | None,
        number_value: float | None,
        bool_value: bool | None,
        timestamp_value: datetime | None,
    ) -> Value:
        """A stored value read back."""
        parsed = Kind(kind)
        if parsed is Kind.STRING:
            return cls(parsed, string_value or "")
        if parsed is Kind.NUMBER:
            return cls(parsed, float(number_value or 0.0))
        if parsed is Kind.BOOL:
            return cls(parsed, bool(bool_value))
        if parsed is Kind.TIMESTAMP:
            assert timestamp_value is not None
            return cls(parsed, timestamp_value)
        return cls(parsed, tuple(json.loads(string_value or "[]")))


def values_from_proto(
    values: Mapping[str, values_pb2.AttributeValue], field: str, problems: Violations
) -> dict[str, Value]:
    """A checked map of named values (at most 100; names as for attributes)."""
    if len(values) > MAX_NAMED_VALUES:
        problems.add(field, f"at most {MAX_NAMED_VALUES} per item, got {len(values)}")
        return {}
    checked: dict[str, Value] = {}
    for name in sorted(values):
        if not check_name(problems, f"{field}[{name!r}]", name):
            continue
        value = Value.from_proto(values[name], f"{field}[{name!r}]", problems)
        if value is not None:
            checked[name] = value
    return checked
