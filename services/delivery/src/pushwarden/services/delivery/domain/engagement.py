"""Assignments and engagement: what RecordAssignments and ReportEngagement accept, and
the checks of the statistics requests.

Every check collects all problems of a request before refusing it (INVALID_ARGUMENT
naming each field; nothing is written). What depends on stored data (an unknown send,
an assignment recorded differently before) or on the clock (an event from the future)
is decided per item by the handlers: that item is REJECTED alone.
"""

from __future__ import annotations

import enum
import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final

from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from pushwarden.common.v1 import types_pb2
from pushwarden.delivery.v1 import messages_pb2, resources_pb2
from pushwarden.runtime.validation import Violations
from pushwarden.services.delivery.domain.sends import timestamp

MAX_ASSIGNMENTS: Final = 10_000
MAX_EVENTS: Final = 1000
MAX_OPEN_HOURS_USERS: Final = 1000
MAX_NAME_CHARS: Final = 128
FUTURE_TOLERANCE: Final = timedelta(minutes=5)
DEFAULT_ATTRIBUTION_WINDOW: Final = timedelta(hours=72)
MAX_ATTRIBUTION_WINDOW: Final = timedelta(days=30)
DEFAULT_LOOKBACK: Final = timedelta(days=90)
# Beyond this a lookback reaches before any data a deployment can hold.
MAX_LOOKBACK: Final = timedelta(days=3660)

_CURRENCY = re.compile(r"[A-Z]{3}")


class SubjectKind(enum.StrEnum):
    """Whose assignments or statistics: campaign and trigger ids are separate spaces."""

    CAMPAIGN = "CAMPAIGN"
    TRIGGER = "TRIGGER"


@dataclass(frozen=True, slots=True)
class Subject:
    """A campaign or a trigger."""

    kind: SubjectKind
    subject_id: str


class EngagementKind(enum.StrEnum):
    """What an engagement event reports (the contract's EngagementKind)."""

    DELIVERED = "DELIVERED"
    OPENED = "OPENED"
    DISMISSED = "DISMISSED"
    CONVERTED = "CONVERTED"

    def to_proto(self) -> resources_pb2.EngagementKind.ValueType:
        """The contract's EngagementKind."""
        return resources_pb2.EngagementKind.Value(f"ENGAGEMENT_KIND_{self.value}")

    @classmethod
    def from_proto(cls, value: int) -> EngagementKind:
        """The kind of a known proto value."""
        name = resources_pb2.EngagementKind.Name(resources_pb2.EngagementKind.ValueType(value))
        return cls(name.removeprefix("ENGAGEMENT_KIND_"))


_KINDS = tuple(kind.to_proto() for kind in EngagementKind)


@dataclass(frozen=True, slots=True)
class ItemResult:
    """What a batch RPC did with one item (in request order)."""

    id: str
    status: str  # APPLIED, UNCHANGED or REJECTED
    field: str = ""
    message: str = ""

    def to_proto(self) -> types_pb2.ItemResult:
        """The contract's ItemResult."""
        return types_pb2.ItemResult(
            id=self.id,
            status=types_pb2.ItemStatus.Value(f"ITEM_STATUS_{self.status}"),
            field=self.field,
            message=self.message,
        )


@dataclass(frozen=True, slots=True)
class NewAssignment:
    """A checked assignment: ``key`` is the user id (campaign) or firing id (trigger)."""

    key: str
    user_id: str
    variant_id: str
    holdout: bool
    assigned_at: datetime

    def same_as(self, other: NewAssignment) -> bool:
        """Whether ``other`` records the same assignment."""
        return (self.user_id, self.variant_id, self.holdout, self.assigned_at) == (
            other.user_id,
            other.variant_id,
            other.holdout,
            other.assigned_at,
        )

    def describe(self) -> str:
        """The group and due time, for a rejection message."""
        group = "the holdout" if self.holdout else f"variant {self.variant_id!r}"
        if not self.holdout and not self.variant_id:
            group = "the trigger"
        return f"user {self.user_id!r} in {group} at {self.assigned_at.isoformat()}"


@dataclass(frozen=True, slots=True)
class EngagementEvent:
    """A checked (or stored) engagement event."""

    event_id: str
    kind: EngagementKind
    user_id: str
    send_id: str
    device_id: str
    occurred_at: datetime
    value: float
    currency: str
    conversion_name: str

    def to_proto(self) -> resources_pb2.EngagementEvent:
        """The contract's EngagementEvent."""
        return resources_pb2.EngagementEvent(
            event_id=self.event_id,
            kind=self.kind.to_proto(),
            user_id=self.user_id,
            send_id=self.send_id,
            device_id=self.device_id,
            occurred_at=timestamp(self.occurred_at),
            value=self.value,
            currency=self.currency,
            conversion_name=self.conversion_name,
        )


def _subject(problems: Violations, which: str | None, campaign_id: str, trigger_id: str) -> Subject:
    if which == "trigger_id":
        problems.caller_id("trigger_id", trigger_id)
        return Subject(SubjectKind.TRIGGER, trigger_id)
    if which == "campaign_id":
        problems.caller_id("campaign_id", campaign_id)
        return Subject(SubjectKind.CAMPAIGN, campaign_id)
    problems.add("campaign_id", "required: a campaign_id or a trigger_id")
    return Subject(SubjectKind.CAMPAIGN, "")


def _instant(problems: Violations, field: str, present: bool, stamp: Timestamp) -> datetime | None:
    if not present:
        problems.add(field, "required")
        return None
    try:
        return stamp.ToDatetime(UTC)
    except (ValueError, OverflowError):
        problems.add(field, "not a valid timestamp")
        return None


def check_record_assignments(
    request: messages_pb2.RecordAssignmentsRequest,
) -> tuple[Subject, list[NewAssignment]]:
    """Check a RecordAssignments batch; raises InvalidArgument naming every bad field."""
    problems = Violations()
    problems.caller_id("app_id", request.app_id)
    subject = _subject(
        problems, request.WhichOneof("subject"), request.campaign_id, request.trigger_id
    )
    items = request.assignments
    if not items or len(items) > MAX_ASSIGNMENTS:
        problems.add("assignments", f"1 to {MAX_ASSIGNMENTS:,} per call, got {len(items):,}")
        problems.reason = "BATCH_SIZE"
    checked: list[NewAssignment] = []
    seen: set[str] = set()
    for index, item in enumerate(items):
        at = f"assignments[{index}]"
        problems.caller_id(f"{at}.user_id", item.user_id)
        group = item.WhichOneof("group")
        if subject.kind is SubjectKind.CAMPAIGN:
            key, key_field = item.user_id, f"{at}.user_id"
            if item.firing_id:
                problems.add(f"{at}.firing_id", "must be empty for a campaign")
            if group is None:
                problems.add(f"{at}.variant_id", "required: a variant_id or holdout")
            elif group == "holdout" and not item.holdout:
                problems.add(f"{at}.holdout", "must be true when set")
            elif group == "variant_id":
                problems.caller_id(f"{at}.variant_id", item.variant_id)
        else:
            key, key_field = item.firing_id, f"{at}.firing_id"
            problems.caller_id(key_field, item.firing_id)
            if group is not None:
                problems.add(f"{at}.{group}", "a trigger firing has no variant and no holdout")
        if key and key in seen:
            problems.add(key_field, f"repeats {key!r}")
        seen.add(key)
        assigned_at = _instant(
            problems, f"{at}.assigned_at", item.HasField("assigned_at"), item.assigned_at
        )
        if assigned_at is not None:
            checked.append(
                NewAssignment(
                    key=key,
                    user_id=item.user_id,
                    variant_id=item.variant_id if group == "variant_id" else "",
                    holdout=group == "holdout",
                    assigned_at=assigned_at,
                )
            )
    problems.raise_if_any("the assignments are invalid")
    return subject, checked


def check_report_engagement(
    request: messages_pb2.ReportEngagementRequest,
) -> list[EngagementEvent]:
    """Check a ReportEngagement batch; raises InvalidArgument naming every bad field."""
    problems = Violations()
    problems.caller_id("app_id", request.app_id)
    events = request.events
    if not events or len(events) > MAX_EVENTS:
        problems.add("events", f"1 to {MAX_EVENTS:,} per call, got {len(events):,}")
        problems.reason = "BATCH_SIZE"
    checked: list[EngagementEvent] = []
    seen: set[str] = set()
    for index, event in enumerate(events):
        at = f"events[{index}]"
        if problems.caller_id(f"{at}.event_id", event.event_id) and event.event_id in seen:
            problems.add(f"{at}.event_id", f"repeats {event.event_id!r}")
        seen.add(event.event_id)
        known = problems.enum(f"{at}.kind", event.kind, _KINDS)
        conversion = event.kind == resources_pb2.ENGAGEMENT_KIND_CONVERTED
        problems.caller_id(f"{at}.user_id", event.user_id)
        if not event.send_id and known and not conversion:
            problems.add(f"{at}.send_id", "required for DELIVERED, OPENED and DISMISSED")
        problems.caller_id(f"{at}.send_id", event.send_id, required=False)
        problems.caller_id(f"{at}.device_id", event.device_id, required=False)
        occurred_at = _instant(
            problems, f"{at}.occurred_at", event.HasField("occurred_at"), event.occurred_at
        )
        if not conversion:
            for name, value in (
                ("value", event.value),
                ("currency", event.currency),
                ("conversion_name", event.conversion_name),
            ):
                if value:
                    problems.add(f"{at}.{name}", "only for CONVERTED")
        else:
            if not math.isfinite(event.value) or event.value < 0:
                problems.add(f"{at}.value", "must be finite and >= 0")
            if event.currency and not _CURRENCY.fullmatch(event.currency):
                problems.add(f"{at}.currency", "an ISO 4217 code: three capital letters")
            problems.text(f"{at}.conversion_name", event.conversion_name, max_chars=MAX_NAME_CHARS)
        if known and occurred_at is not None:
            checked.append(
                EngagementEvent(
                    event_id=event.event_id,
                    kind=EngagementKind.from_proto(event.kind),
                    user_id=event.user_id,
                    send_id=event.send_id,
                    device_id=event.device_id,
                    occurred_at=occurred_at,
                    value=event.value,
                    currency=event.currency,
                    conversion_name=event.conversion_name,
                )
            )
    problems.raise_if_any("the events are invalid")
    return checked


def _window(
    problems: Violations,
    field: str,
    present: bool,
    value: Duration,
    default: timedelta,
    maximum: timedelta,
) -> timedelta:
    if not present:
        return default
    window = timedelta(seconds=value.seconds, microseconds=value.nanos // 1000)
    if window <= timedelta(0):
        problems.add(field, "must be positive")
    elif window > maximum:
        problems.add(field, f"at most {maximum.days:,} days")
    return window


def check_campaign_stats(
    request: messages_pb2.GetCampaignStatsRequest,
) -> tuple[Subject, timedelta]:
    """Check a GetCampaignStats request: the subject and the attribution window."""
    problems = Violations()
    problems.caller_id("app_id", request.app_id)
    subject = _subject(
        problems, request.WhichOneof("subject"), request.campaign_id, request.trigger_id
    )
    window = _window(
        problems,
        "attribution_window",
        request.HasField("attribution_window"),
        request.attribution_window,
        DEFAULT_ATTRIBUTION_WINDOW,
        MAX_ATTRIBUTION_WINDOW,
    )
    problems.raise_if_any()
    return subject, window


def check_open_hours(request: messages_pb2.GetOpenHoursRequest) -> tuple[list[str], timedelta]:
    """Check a GetOpenHours request: 1..1,000 distinct users and the lookback."""
    problems = Violations()
    problems.caller_id("app_id", request.app_id)
    users = problems.caller_ids("user_ids", request.user_ids, limit=MAX_OPEN_HOURS_USERS)
    lookback = _window(
        problems,
        "lookback",
        request.HasField("lookback"),
        request.lookback,
        DEFAULT_LOOKBACK,
        timedelta.max,
    )
    problems.raise_if_any()
    return users, min(lookback, MAX_LOOKBACK)
