"""Output: Rich tables for people, JSON (protobuf's JSON mapping, field names as in the
``.proto`` files) for scripts."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

import click
from google.protobuf import json_format
from google.protobuf.duration_pb2 import Duration
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from rich import box
from rich.console import Console
from rich.table import Table

__all__ = [
    "console",
    "duration_text",
    "enum_text",
    "key_value_table",
    "message_dict",
    "print_json",
    "table",
    "timestamp_text",
]


def console() -> Console:
    """A console on the current stdout (wide enough for the tables when not a terminal)."""
    return Console(soft_wrap=False, width=None if sys.stdout.isatty() else 120)


def message_dict(message: Message) -> dict[str, Any]:
    """``message`` in protobuf's JSON mapping with the ``.proto`` field names."""
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def print_json(value: object) -> None:
    """``value`` as indented JSON on stdout."""
    click.echo(json.dumps(value, indent=2, ensure_ascii=False))


class EnumType(Protocol):
    """A generated enum type (its ``Name`` of a number)."""

    def Name(self, number: Any) -> str:
        """The value's name."""
        ...


def enum_text(enum: EnumType, value: int, prefix: str) -> str:
    """An enum value's name without its type prefix (``OUTCOME_ALLOW`` -> ``ALLOW``);
    "" for the UNSPECIFIED value, the number for a value this CLI does not know."""
    try:
        name = enum.Name(value)
    except ValueError:
        return str(value)
    name = name.removeprefix(prefix)
    return "" if name == "UNSPECIFIED" else name


def timestamp_text(stamp: Timestamp, has: bool = True) -> str:
    """RFC 3339 in UTC to the second, or "" when unset."""
    if not has or (stamp.seconds == 0 and stamp.nanos == 0):
        return ""
    return str(stamp.ToDatetime().strftime("%Y-%m-%d %H:%M:%SZ"))


def duration_text(span: Duration) -> str:
    """A duration as ``1h30m``, ``45s`` ... ("" when zero)."""
    seconds = span.seconds + span.nanos / 1e9
    if seconds == 0:
        return ""
    whole = int(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{hours}h" if hours else "", f"{minutes}m" if minutes else ""]
    parts.append(f"{secs}s" if secs or not (hours or minutes) else "")
    return "".join(parts) if whole == seconds else f"{seconds:g}s"


def table(title: str | None, columns: Sequence[str], rows: Iterable[Sequence[object]]) -> Table:
    """A table with ``columns`` and ``rows`` (numbers right-aligned)."""
    cells = [[("" if cell is None else str(cell)) for cell in row] for row in rows]
    built = Table(title=title, box=box.SIMPLE_HEAD, title_justify="left", title_style="bold")
    for index, column in enumerate(columns):
        numeric = bool(cells) and all(
            row[index].replace(".", "", 1).replace("%", "").replace("-", "", 1).isdigit()
            for row in cells
            if row[index]
        )
        built.add_column(
            column,
            justify="right" if numeric else "left",
            overflow="fold",
            no_wrap=index == 0,  # ids stay whole
        )
    for row in cells:
        built.add_row(*row)
    return built


def key_value_table(title: str | None, pairs: Iterable[tuple[str, object]]) -> Table:
    """A two-column table of names and values."""
    built = Table(title=title, box=box.SIMPLE, show_header=False, title_justify="left")
    built.add_column(style="bold")
    built.add_column(overflow="fold")
    for key, value in pairs:
        built.add_row(key, "" if value is None else str(value))
    return built
