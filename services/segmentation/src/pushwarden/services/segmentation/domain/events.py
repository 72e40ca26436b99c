"""Events: what a TrackEvents item holds, checked; how a stored event reads as the
contract's Event; the opaque cursor of the event stream."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Final

from pushwarden.runtime import feed
from pushwarden.runtime.validation import Violations, id_problem
from pushwarden.segmentation.v1 import messages_pb2, resources_pb2
from pushwarden.services.segmentation.domain.values import (
    Value,
    from_timestamp,
    timestamp_problem,
    to_timestamp,
    values_from_proto,
)

MAX_EVENTS_PER_BATCH: Final = 1000
# The stream's cursors carry this tag (consent's change feed uses "v1"); changing it
# would invalidate every cursor a follower has stored.
CURSOR_VERSION: Final = "s1"


@dataclass(frozen=True, slots=True)
class TrackedEvent:
    """One checked event of a TrackEvents batch."""

    event_id: str
    user_id: str
    name: str
    occurred_at: datetime
    properties: dict[str, Value]
    properties_blob: bytes


def check_event_name(problems: Violations, field: str, name: str) -> bool:
    """An event name: 1..128 characters, no control characters, no outer white space."""
    if not name:
        problems.add(field, "required")
        return False
    problem = id_problem(name)
    if problem:
        problems.add(field, problem)
        return False
    return True


def tracked_events_from_proto(request: messages_pb2.TrackEventsRequest) -> list[TrackedEvent]:
    """The checked events of a request; raises InvalidArgument naming every bad field."""
    problems = Violations()
    problems.caller_id("app_id", request.app_id)
    events = list(request.events)
    if not events or len(events) > MAX_EVENTS_PER_BATCH:
        problems.add("events", f"1 to {MAX_EVENTS_PER_BATCH:,} per call, got {len(events):,}")
        problems.reason = "BATCH_SIZE"
        problems.raise_if_any()
    checked: list[TrackedEvent] = []
    for index, event in enumerate(events):
        field = f"events[{index}]"
        problems.caller_id(f"{field}.event_id", event.event_id)
        problems.caller_id(f"{field}.user_id", event.user_id)
        check_event_name(problems, f"{field}.name", event.name)
        properties = values_from_proto(event.properties, f"{field}.properties", problems)
        occurred_at = None
        if not event.HasField("occurred_at"):
            problems.add(f"{field}.occurred_at", "required")
        else:
            problem = timestamp_problem(event.occurred_at)
            if problem:
                problems.add(f"{field}.occurred_at", problem)
            else:
                occurred_at = from_timestamp(event.occurred_at)
        if occurred_at is None:
            continue
        blob = resources_pb2.Event(properties=event.properties).SerializeToString(
            deterministic=True
        )
        checked.append(
            TrackedEvent(event.event_id, event.user_id, event.name, occurred_at, properties, blob)
        )
    problems.raise_if_any("the events are invalid")
    return checked


def event_proto(
    *,
    sequence: int,
    app_id: str,
    event_id: str,
    user_id: str,
    name: str,
    occurred_at: datetime,
    received_at: datetime,
    properties_blob: bytes,
) -> resources_pb2.Event:
    """A stored event as the contract's Event."""
    proto = resources_pb2.Event.FromString(properties_blob)
    proto.event_id = event_id
    proto.user_id = user_id
    proto.name = name
    proto.occurred_at.CopyFrom(to_timestamp(occurred_at))
    proto.received_at.CopyFrom(to_timestamp(received_at))
    proto.app_id = app_id
    proto.sequence = sequence
    return proto


def encode_cursor(app_id: str, sequence: int) -> str:
    """The stream cursor after event ``sequence`` for the app filter ``app_id``
    ("" = every app)."""
    return feed.encode_cursor(app_id, sequence, version=CURSOR_VERSION)


def decode_cursor(cursor: str, app_id: str) -> int | None:
    """The sequence in ``cursor``; None when it is malformed or was made for another
    app filter (or another feed)."""
    return feed.decode_cursor(cursor, app_id, version=CURSOR_VERSION)
