"""Segment rule trees as plain, checked values.

:func:`parse_rule` turns the contract's ``Rule`` into a tree of the node types below,
collecting every problem with the path of the offending node
(``segment.rule.all.rules[2].event.window``); references to lists and segments are
collected so the caller can check them against the store before anything is written.
The SQL compiler (:mod:`..storage.rules_sql`) and the tests' reference evaluator both
read these values.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Final

from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from pushwarden.common.v1 import values_pb2
from pushwarden.runtime.validation import Violations, id_problem
from pushwarden.segmentation.v1 import resources_pb2
from pushwarden.services.segmentation.domain.events import check_event_name
from pushwarden.services.segmentation.domain.values import (
    Kind,
    Value,
    check_name,
    from_timestamp,
    timestamp_problem,
)

MAX_DEPTH: Final = 32
MAX_NODES: Final = 500
MAX_CHILDREN: Final = 100
MAX_IN_VALUES: Final = 100
MAX_FILTERS: Final = 100
MAX_WINDOW: Final = timedelta(days=3 * 365)


class Op(enum.StrEnum):
    """A comparison operator."""

    EQ = "EQ"
    NEQ = "NEQ"
    GT = "GT"
    GTE = "GTE"
    LT = "LT"
    LTE = "LTE"
    IN = "IN"
    CONTAINS = "CONTAINS"
    EXISTS = "EXISTS"
    PREFIX = "PREFIX"


_OPS: Final = {
    values_pb2.OPERATOR_EQ: Op.EQ,
    values_pb2.OPERATOR_NEQ: Op.NEQ,
    values_pb2.OPERATOR_GT: Op.GT,
    values_pb2.OPERATOR_GTE: Op.GTE,
    values_pb2.OPERATOR_LT: Op.LT,
    values_pb2.OPERATOR_LTE: Op.LTE,
    values_pb2.OPERATOR_IN: Op.IN,
    values_pb2.OPERATOR_CONTAINS: Op.CONTAINS,
    values_pb2.OPERATOR_EXISTS: Op.EXISTS,
    values_pb2.OPERATOR_PREFIX: Op.PREFIX,
}
# Which operand kinds each operator compares (EXISTS takes none).
OPERAND_KINDS: Final[dict[Op, frozenset[Kind]]] = {
    Op.EQ: frozenset(Kind),
    Op.NEQ: frozenset(Kind),
    Op.GT: frozenset({Kind.STRING, Kind.NUMBER, Kind.TIMESTAMP}),
    Op.GTE: frozenset({Kind.STRING, Kind.NUMBER, Kind.TIMESTAMP}),
    Op.LT: frozenset({Kind.STRING, Kind.NUMBER, Kind.TIMESTAMP}),
    Op.LTE: frozenset({Kind.STRING, Kind.NUMBER, Kind.TIMESTAMP}),
    Op.IN: frozenset({Kind.STRING, Kind.NUMBER, Kind.BOOL, Kind.TIMESTAMP}),
    Op.CONTAINS: frozenset({Kind.STRING}),
    Op.PREFIX: frozenset({Kind.STRING}),
    Op.EXISTS: frozenset(),
}


@dataclass(frozen=True, slots=True)
class Filter:
    """A condition on one named value. ``operands`` holds one value (several for IN,
    none for EXISTS), all of one kind."""

    name: str
    op: Op
    operands: tuple[Value, ...]


@dataclass(frozen=True, slots=True)
class All:
    """Every child matches (none: everyone)."""

    children: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Any:
    """At least one child matches (none: no one)."""

    children: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Not:
    """The child does not match (known users only)."""

    child: Node


@dataclass(frozen=True, slots=True)
class Attribute:
    """A profile attribute condition."""

    filter: Filter


@dataclass(frozen=True, slots=True)
class Within:
    """The last ``length`` before ``as_of``: [as_of - length, as_of)."""

    length: timedelta


@dataclass(frozen=True, slots=True)
class Between:
    """[start, end)."""

    start: datetime
    end: datetime


@dataclass(frozen=True, slots=True)
class EventCount:
    """Did (or did not) do ``name`` at least ``min_count`` (and at most ``max_count``)
    times in the window, counting events before ``as_of`` that pass every filter."""

    name: str
    did: bool
    min_count: int
    max_count: int | None
    window: Within | Between | None
    filters: tuple[Filter, ...]


@dataclass(frozen=True, slots=True)
class Recency:
    """The last occurrence of an event (or a timestamp attribute) is before / at or after
    a reference (an instant, or ``as_of`` minus ``ago``)."""

    event_name: str | None
    attribute: str | None
    before: bool
    ago: timedelta | None
    instant: datetime | None
    filters: tuple[Filter, ...]
    include_never: bool


@dataclass(frozen=True, slots=True)
class InList:
    """On a static list."""

    list_id: str


@dataclass(frozen=True, slots=True)
class InSegment:
    """A member of another segment."""

    segment_id: str


Node = All | Any | Not | Attribute | EventCount | Recency | InList | InSegment


@dataclass(slots=True)
class _Walk:
    problems: Violations
    nodes: int = 0
    lists: dict[str, str] = field(default_factory=dict)
    segments: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ParsedRule:
    """A checked tree and the first path at which each list and segment is referenced."""

    root: Node
    list_paths: dict[str, str]
    segment_paths: dict[str, str]


def parse_rule(proto: resources_pb2.Rule, path: str, problems: Violations) -> ParsedRule | None:
    """Check a rule tree; every problem is added to ``problems`` with its node's path.
    None when the tree has a problem."""
    walk = _Walk(problems)
    before = len(problems.items)
    root = _node(proto, path, 1, walk)
    if walk.nodes > MAX_NODES:
        problems.add(path, f"at most {MAX_NODES} nodes, got {walk.nodes}")
    if root is None or len(problems.items) > before:
        return None
    return ParsedRule(root, walk.lists, walk.segments)


def _duration(
    proto: Duration, path: str, problems: Violations, *, maximum: timedelta
) -> timedelta | None:
    if proto.seconds < 0 or proto.nanos < 0 or (proto.seconds == 0 and proto.nanos == 0):
        problems.add(path, "must be positive")
        return None
    length = timedelta(seconds=proto.seconds, microseconds=proto.nanos // 1000)
    if length > maximum:
        problems.add(path, f"at most {maximum.days} days")
        return None
    return length


def _instant(proto: Timestamp, path: str, problems: Violations) -> datetime | None:
    problem = timestamp_problem(proto)
    if problem:
        problems.add(path, problem)
        return None
    return from_timestamp(proto)


def parse_filter(
    proto: values_pb2.PropertyFilter, path: str, problems: Violations
) -> Filter | None:
    """Check one property filter (operator known, operand kinds fitting it)."""
    ok = check_name(problems, f"{path}.name", proto.name)
    op = _OPS.get(proto.operator)
    if op is None:
        problems.add(
            f"{path}.operator",
            "required" if proto.operator == 0 else f"unknown operator {proto.operator}",
        )
        return None
    operands: list[Value] = []
    if op is Op.EXISTS:
        if proto.HasField("value") or proto.values:
            problems.add(f"{path}.value", "EXISTS takes no operand")
            return None
    elif op is Op.IN:
        if proto.HasField("value"):
            problems.add(f"{path}.value", "IN takes its operands in `values`")
            ok = False
        if not 1 <= len(proto.values) <= MAX_IN_VALUES:
            problems.add(f"{path}.values", f"1 to {MAX_IN_VALUES} operands for IN")
            return None
        for index, item in enumerate(proto.values):
            value = Value.from_proto(item, f"{path}.values[{index}]", problems)
            if value is None:
                ok = False
            else:
                operands.append(value)
        if len({value.kind for value in operands}) > 1:
            problems.add(f"{path}.values", "IN operands must all be of one type")
            ok = False
    else:
        if proto.values:
            problems.add(f"{path}.values", f"{op.value} takes one operand in `value`")
            ok = False
        if not proto.HasField("value"):
            problems.add(f"{path}.value", "required")
            return None
        value = Value.from_proto(proto.value, f"{path}.value", problems)
        if value is None:
            return None
        operands.append(value)
    for index, value in enumerate(operands):
        if value.kind not in OPERAND_KINDS[op]:
            where = f"{path}.values[{index}]" if op is Op.IN else f"{path}.value"
            problems.add(where, f"{op.value} does not compare a {value.kind.value.lower()} value")
            ok = False
    return Filter(proto.name, op, tuple(operands)) if ok else None


def _filters(
    protos: Sequence[values_pb2.PropertyFilter], path: str, problems: Violations
) -> tuple[Filter, ...] | None:
    items = list(protos)
    if len(items) > MAX_FILTERS:
        problems.add(path, f"at most {MAX_FILTERS}")
        return None
    parsed = [parse_filter(item, f"{path}[{i}]", problems) for i, item in enumerate(items)]
    if any(item is None for item in parsed):
        return None
    return tuple(item for item in parsed if item is not None)


def _reference_id(value: str, path: str, problems: Violations) -> bool:
    problem = "required" if not value else id_problem(value)
    if problem:
        problems.add(path, problem)
        return False
    return True


def _node(proto: resources_pb2.Rule, path: str, depth: int, walk: _Walk) -> Node | None:
    problems = walk.problems
    walk.nodes += 1
    if depth > MAX_DEPTH:
        problems.add(path, f"at most {MAX_DEPTH} levels deep")
        return None
    which = proto.WhichOneof("node")
    if which is None:
        problems.add(path, "required: set exactly one kind of node")
        return None
    here = f"{path}.{which}"
    if which in ("all", "any"):
        group = proto.all if which == "all" else proto.any
        if len(group.rules) > MAX_CHILDREN:
            problems.add(f"{here}.rules", f"at most {MAX_CHILDREN} children")
            return None
        children = [
            _node(child, f"{here}.rules[{index}]", depth + 1, walk)
            for index, child in enumerate(group.rules)
        ]
        if any(child is None for child in children):
            return None
        kept = tuple(child for child in children if child is not None)
        return All(kept) if which == "all" else Any(kept)
    if which == "negate":
        child = _node(proto.negate, here, depth + 1, walk)
        return None if child is None else Not(child)
    if which == "attribute":
        if not proto.attribute.HasField("filter"):
            problems.add(f"{here}.filter", "required")
            return None
        parsed = parse_filter(proto.attribute.filter, f"{here}.filter", problems)
        return None if parsed is None else Attribute(parsed)
    if which == "event":
        return _event(proto.event, here, problems)
    if which == "recency":
        return _recency(proto.recency, here, problems)
    if which == "list":
        if not _reference_id(proto.list.list_id, f"{here}.list_id", problems):
            return None
        walk.lists.setdefault(proto.list.list_id, f"{here}.list_id")
        return InList(proto.list.list_id)
    if not _reference_id(proto.segment.segment_id, f"{here}.segment_id", problems):
        return None
    walk.segments.setdefault(proto.segment.segment_id, f"{here}.segment_id")
    return InSegment(proto.segment.segment_id)


def _event(proto: resources_pb2.EventPredicate, path: str, problems: Violations) -> Node | None:
    ok = check_event_name(problems, f"{path}.event_name", proto.event_name)
    if proto.occurrence not in (
        resources_pb2.OCCURRENCE_UNSPECIFIED,
        resources_pb2.OCCURRENCE_DID,
        resources_pb2.OCCURRENCE_DID_NOT,
    ):
        problems.add(f"{path}.occurrence", f"unknown value {proto.occurrence}")
        ok = False
    min_count = proto.min_count or 1
    max_count = proto.max_count if proto.HasField("max_count") else None
    if max_count is not None and max_count < min_count:
        problems.add(f"{path}.max_count", f"must be at least min_count ({min_count})")
        ok = False
    window: Within | Between | None = None
    if proto.HasField("window"):
        kind = proto.window.WhichOneof("kind")
        if kind is None:
            problems.add(f"{path}.window", "set `within` or `between`")
            ok = False
        elif kind == "within":
            length = _duration(
                proto.window.within, f"{path}.window.within", problems, maximum=MAX_WINDOW
            )
            window = None if length is None else Within(length)
            ok = ok and length is not None
        else:
            span = proto.window.between
            start = _instant(span.start, f"{path}.window.between.start", problems)
            end = _instant(span.end, f"{path}.window.between.end", problems)
            if not span.HasField("start") or not span.HasField("end"):
                problems.add(f"{path}.window.between", "start and end are required")
                ok = False
            elif start is not None and end is not None and end <= start:
                problems.add(f"{path}.window.between.end", "must be after start")
                ok = False
            if start is None or end is None:
                ok = False
            else:
                window = Between(start, end)
    filters = _filters(proto.property_filters, f"{path}.property_filters", problems)
    if not ok or filters is None:
        return None
    return EventCount(
        name=proto.event_name,
        did=proto.occurrence != resources_pb2.OCCURRENCE_DID_NOT,
        min_count=min_count,
        max_count=max_count,
        window=window,
        filters=filters,
    )


def _recency(proto: resources_pb2.RecencyPredicate, path: str, problems: Violations) -> Node | None:
    ok = True
    subject = proto.WhichOneof("subject")
    event_name = attribute = None
    if subject is None:
        problems.add(f"{path}.event_name", "set `event_name` or `timestamp_attribute`")
        ok = False
    elif subject == "event_name":
        ok = check_event_name(problems, f"{path}.event_name", proto.event_name)
        event_name = proto.event_name
    else:
        ok = check_name(problems, f"{path}.timestamp_attribute", proto.timestamp_attribute)
        attribute = proto.timestamp_attribute
        if proto.property_filters:
            problems.add(f"{path}.property_filters", "only for an event subject")
            ok = False
    if proto.comparison not in (
        resources_pb2.RECENCY_COMPARISON_BEFORE,
        resources_pb2.RECENCY_COMPARISON_AFTER,
    ):
        problems.add(
            f"{path}.comparison",
            "required" if proto.comparison == 0 else f"unknown value {proto.comparison}",
        )
        ok = False
    reference = proto.WhichOneof("reference")
    ago = instant = None
    if reference is None:
        problems.add(f"{path}.ago", "set `ago` or `instant`")
        ok = False
    elif reference == "ago":
        ago = _duration(proto.ago, f"{path}.ago", problems, maximum=timedelta(days=100 * 366))
        ok = ok and ago is not None
    else:
        instant = _instant(proto.instant, f"{path}.instant", problems)
        ok = ok and instant is not None
    filters = _filters(proto.property_filters, f"{path}.property_filters", problems)
    if not ok or filters is None:
        return None
    return Recency(
        event_name=event_name,
        attribute=attribute,
        before=proto.comparison == resources_pb2.RECENCY_COMPARISON_BEFORE,
        ago=ago,
        instant=instant,
        filters=filters,
        include_never=proto.include_never,
    )
