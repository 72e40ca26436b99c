"""Triggers: their checks, their ids, event matching and what one stream batch does to
the firings (pure).

A firing is an intent: its send id derives from the trigger id and the event id, so
an event read twice (a restart, a resent event) never fires twice. What a batch of
events does is planned here from the firings already stored for the batch's users
(:func:`plan_batch`); the follower writes the plan in one transaction with its cursor.

Decisions this module makes:

- A further matching event while a firing of the trigger is pending for the user, or
  an event of a user who may not fire it again yet (``re_eligibility``), is recorded
  as a DROPPED intent with NOT_REELIGIBLE (its own send id), so GetSend and exports
  show why nothing was sent for that event.
- ``min_interval`` compares the new firing's due time with the latest of the user's
  firings handed to delivery (``sent_at``); ``max_firings`` counts those handed over.
  A firing already in the outbox counts as sent.
- A cancel event drops a pending firing (TRIGGER_CANCELLED) when it matches one of
  the trigger's cancel matchers, its ``correlate_on`` properties equal the triggering
  event's, it comes later on the stream (higher sequence) and it occurred before the
  firing's due time.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from google.protobuf.duration_pb2 import Duration

from pushwarden.common.v1 import decision_pb2, types_pb2, values_pb2
from pushwarden.runtime.validation import Violations
from pushwarden.scheduler.v1 import resources_pb2
from pushwarden.segmentation.v1 import resources_pb2 as segmentation_pb2
from pushwarden.services.scheduler.domain.templates import check_template

MAX_DELAY = timedelta(days=30)
MAX_TTL = timedelta(days=90)
MAX_CANCEL_EVENTS = 10
MAX_CONDITIONS = 20
MAX_CORRELATE = 10
MAX_IN_VALUES = 100
MAX_EVENT_NAME = 128
NOT_REELIGIBLE = decision_pb2.REASON_CODE_NOT_REELIGIBLE
TRIGGER_CANCELLED = decision_pb2.REASON_CODE_TRIGGER_CANCELLED
_PRIORITIES = (types_pb2.PRIORITY_LOW, types_pb2.PRIORITY_NORMAL, types_pb2.PRIORITY_HIGH)
_OP = values_pb2.Operator
_ORDERED = (_OP.OPERATOR_GT, _OP.OPERATOR_GTE, _OP.OPERATOR_LT, _OP.OPERATOR_LTE)
_KNOWN_OPS = set(values_pb2.Operator.values()) - {values_pb2.OPERATOR_UNSPECIFIED}


def trigger_id_for(app_id: str, idempotency_key: str) -> str:
    """A trigger's id, derived from its creation key (a retry names the same trigger)."""
    digest = hashlib.sha256(f"{app_id}\0{idempotency_key}".encode()).hexdigest()
    return f"trg_{digest[:24]}"


def firing_send_id(trigger_id: str, event_id: str) -> str:
    """The send id of the firing of ``trigger_id`` by ``event_id``."""
    digest = hashlib.sha256(f"{trigger_id}\0{event_id}".encode()).hexdigest()
    return f"tf_{digest[:40]}"


def duration_of(proto: Duration) -> timedelta:
    """A protobuf Duration as a timedelta."""
    return timedelta(seconds=proto.seconds, microseconds=proto.nanos // 1000)


# ---- checks --------------------------------------------------------------------------


def check_trigger(problems: Violations, field: str, trigger: resources_pb2.Trigger) -> None:
    """Everything about a trigger definition that needs no other service."""
    problems.text(f"{field}.name", trigger.name, max_chars=200, required=True)
    if problems.required(f"{field}.event", trigger.HasField("event")):
        _check_matcher(problems, f"{field}.event", trigger.event, cancel=False)
    delay = _check_duration(problems, f"{field}.delay", trigger, "delay", MAX_DELAY)
    if len(trigger.cancel_events) > MAX_CANCEL_EVENTS:
        problems.add(f"{field}.cancel_events", f"at most {MAX_CANCEL_EVENTS}")
    for index, matcher in enumerate(trigger.cancel_events):
        _check_matcher(problems, f"{field}.cancel_events[{index}]", matcher, cancel=True)
    problems.caller_id(f"{field}.category_id", trigger.category_id)
    problems.caller_id(f"{field}.topic_id", trigger.topic_id, required=False)
    if problems.required(f"{field}.template", trigger.HasField("template")):
        check_template(problems, f"{field}.template", trigger.template, trigger=True)
    if trigger.HasField("re_eligibility"):
        _check_duration(
            problems,
            f"{field}.re_eligibility.min_interval",
            trigger.re_eligibility,
            "min_interval",
            timedelta(days=3650),
        )
    problems.enum(f"{field}.priority", trigger.priority, _PRIORITIES, required=False)
    ttl = _check_duration(problems, f"{field}.ttl", trigger, "ttl", MAX_TTL)
    if ttl is not None and ttl <= (delay or timedelta(0)):
        problems.add(f"{field}.ttl", "must be longer than the delay (else every firing expires)")


def _check_duration(
    problems: Violations, path: str, message: Any, name: str, maximum: timedelta
) -> timedelta | None:
    if not message.HasField(name):
        return None
    proto: Duration = getattr(message, name)
    if proto.seconds < 0 or proto.nanos < 0 or not 0 <= proto.nanos < 1_000_000_000:
        problems.add(path, "must not be negative")
        return None
    length = duration_of(proto)
    if name == "ttl" and length <= timedelta(0):
        problems.add(path, "must be positive")
        return None
    if length > maximum:
        problems.add(path, f"at most {maximum.days} days")
        return None
    return length


def _check_matcher(
    problems: Violations, path: str, matcher: resources_pb2.EventMatcher, *, cancel: bool
) -> None:
    name = matcher.event_name
    if not name:
        problems.add(f"{path}.event_name", "required")
    elif len(name) > MAX_EVENT_NAME or any(ord(ch) < 32 for ch in name):
        problems.add(f"{path}.event_name", f"1 to {MAX_EVENT_NAME} printable characters")
    if len(matcher.conditions) > MAX_CONDITIONS:
        problems.add(f"{path}.conditions", f"at most {MAX_CONDITIONS}")
    for index, condition in enumerate(matcher.conditions):
        check_filter(problems, f"{path}.conditions[{index}]", condition)
    if not cancel and matcher.correlate_on:
        problems.add(f"{path}.correlate_on", "only cancel events correlate")
    if len(matcher.correlate_on) > MAX_CORRELATE:
        problems.add(f"{path}.correlate_on", f"at most {MAX_CORRELATE}")
    for index, prop in enumerate(matcher.correlate_on):
        if not prop or len(prop) > MAX_EVENT_NAME:
            problems.add(f"{path}.correlate_on[{index}]", "a property name (1 to 128 characters)")


def check_filter(problems: Violations, path: str, condition: values_pb2.PropertyFilter) -> None:
    """One PropertyFilter: a name, a known operator, operands of a type that fits it."""
    if not condition.name or len(condition.name) > MAX_EVENT_NAME:
        problems.add(f"{path}.name", "a property name (1 to 128 characters)")
    op = condition.operator
    if op not in _KNOWN_OPS:
        problems.add(f"{path}.operator", "required" if op == 0 else f"unknown operator {op}")
        return
    if op == _OP.OPERATOR_EXISTS:
        if condition.HasField("value") or condition.values:
            problems.add(f"{path}.value", "EXISTS takes no operand")
        return
    if op == _OP.OPERATOR_IN:
        if condition.HasField("value"):
            problems.add(f"{path}.value", "IN takes its operands in `values`")
        if not 1 <= len(condition.values) <= MAX_IN_VALUES:
            problems.add(f"{path}.values", f"1 to {MAX_IN_VALUES} operands for IN")
            return
        kinds = {value.WhichOneof("kind") for value in condition.values}
        if None in kinds:
            problems.add(f"{path}.values", "every operand needs a value")
        elif len(kinds) > 1:
            problems.add(f"{path}.values", "IN operands must all be of one type")
        return
    if condition.values:
        problems.add(f"{path}.values", "only IN takes `values`")
    kind = condition.value.WhichOneof("kind") if condition.HasField("value") else None
    if kind is None:
        problems.add(f"{path}.value", "required")
    elif op in _ORDERED and kind not in ("number_value", "string_value", "timestamp_value"):
        problems.add(f"{path}.value", f"cannot order a {kind.removesuffix('_value')} value")
    elif op == _OP.OPERATOR_PREFIX and kind != "string_value":
        problems.add(f"{path}.value", "PREFIX compares strings")
    elif op == _OP.OPERATOR_CONTAINS and kind != "string_value":
        problems.add(f"{path}.value", "CONTAINS takes a string")


# ---- matching ------------------------------------------------------------------------


def _plain(value: values_pb2.AttributeValue) -> tuple[str, Any] | None:
    kind = value.WhichOneof("kind")
    if kind is None:
        return None
    if kind == "timestamp_value":
        return kind, value.timestamp_value.ToDatetime(UTC)
    if kind == "string_list_value":
        return kind, tuple(value.string_list_value.values)
    return kind, getattr(value, kind)


def condition_holds(
    condition: values_pb2.PropertyFilter, properties: Mapping[str, values_pb2.AttributeValue]
) -> bool:
    """Whether an event's ``properties`` satisfy one filter (a missing property never
    does, except that nothing else is asked of EXISTS)."""
    if condition.name not in properties:
        return False
    got = _plain(properties[condition.name])
    op = condition.operator
    if op == _OP.OPERATOR_EXISTS:
        return True
    if got is None:
        return False
    if op == _OP.OPERATOR_IN:
        return any(got == _plain(value) for value in condition.values)
    want = _plain(condition.value)
    if want is None:
        return False
    if op == _OP.OPERATOR_EQ:
        return got == want
    if op == _OP.OPERATOR_NEQ:
        return got != want
    if op == _OP.OPERATOR_CONTAINS:
        if got[0] == "string_list_value":
            return bool(want[1] in got[1])
        return got[0] == "string_value" and want[0] == "string_value" and want[1] in got[1]
    if got[0] != want[0]:
        return False
    if op == _OP.OPERATOR_PREFIX:
        return got[0] == "string_value" and bool(got[1].startswith(want[1]))
    if op == _OP.OPERATOR_GT:
        return bool(got[1] > want[1])
    if op == _OP.OPERATOR_GTE:
        return bool(got[1] >= want[1])
    if op == _OP.OPERATOR_LT:
        return bool(got[1] < want[1])
    if op == _OP.OPERATOR_LTE:
        return bool(got[1] <= want[1])
    return False  # an operator added later: no match


def matches(matcher: resources_pb2.EventMatcher, event: segmentation_pb2.Event) -> bool:
    """Whether ``event`` has the matcher's name and satisfies all its conditions."""
    return event.name == matcher.event_name and all(
        condition_holds(condition, event.properties) for condition in matcher.conditions
    )


def cancels(
    matcher: resources_pb2.EventMatcher,
    event: segmentation_pb2.Event,
    triggering: segmentation_pb2.Event,
) -> bool:
    """Whether ``event`` matches a cancel matcher for a firing of ``triggering``
    (conditions, and every ``correlate_on`` property equal in both)."""
    if not matches(matcher, event):
        return False
    for name in matcher.correlate_on:
        if name not in event.properties or name not in triggering.properties:
            return False
        if _plain(event.properties[name]) != _plain(triggering.properties[name]):
            return False
    return True


# ---- one stream batch ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ActiveTrigger:
    """An enabled trigger as the follower applies it."""

    app_id: str
    trigger_id: str
    lane: int
    enabled_at: datetime
    definition: resources_pb2.Trigger


@dataclass(frozen=True, slots=True)
class StoredFiring:
    """A firing already stored for a user of the batch (any state)."""

    send_id: str
    state: str
    due_at: datetime
    sent_at: datetime | None
    event: segmentation_pb2.Event | None


@dataclass(frozen=True, slots=True)
class Firing:
    """A new pending firing to store."""

    trigger: ActiveTrigger
    send_id: str
    event: segmentation_pb2.Event
    due_at: datetime
    expires_at: datetime | None


@dataclass
class BatchPlan:
    """What one batch of events does: new firings, NOT_REELIGIBLE records, firings of
    this batch that a later event of the same batch cancelled (stored as
    TRIGGER_CANCELLED records, exactly as if the events had come in two batches), and
    stored pending firings to cancel (send ids, with the cancelling event)."""

    firings: list[Firing] = field(default_factory=list)
    not_reeligible: list[Firing] = field(default_factory=list)
    cancelled: list[Firing] = field(default_factory=list)
    cancel: dict[tuple[str, str], str] = field(default_factory=dict)


def _received(event: segmentation_pb2.Event) -> datetime:
    return event.received_at.ToDatetime(UTC)


def plan_batch(
    events: Sequence[segmentation_pb2.Event],
    triggers: Iterable[ActiveTrigger],
    stored: Mapping[tuple[str, str, str], Sequence[StoredFiring]],
    now: datetime,
) -> BatchPlan:
    """Apply ``events`` (stream order) to the enabled ``triggers``; ``stored`` holds
    the firings already stored by (app, trigger, user)."""
    plan = BatchPlan()
    by_app: dict[str, list[ActiveTrigger]] = {}
    for trigger in triggers:
        by_app.setdefault(trigger.app_id, []).append(trigger)
    # Pending firings by (app, trigger, user): stored ones first, then this batch's.
    pending: dict[tuple[str, str, str], tuple[str, datetime, segmentation_pb2.Event | None]] = {}
    for key, kept in stored.items():
        for old in kept:
            if old.state == "PENDING":
                pending[key] = (old.send_id, old.due_at, old.event)
    new_by_send: dict[str, Firing] = {}
    for event in sorted(events, key=lambda e: e.sequence):
        for trigger in by_app.get(event.app_id, ()):
            key = (event.app_id, trigger.trigger_id, event.user_id)
            definition = trigger.definition
            current = pending.get(key)
            occurred = event.occurred_at.ToDatetime(UTC)
            if current is not None:
                send_id, due_at, triggering = current
                if (
                    triggering is not None
                    and triggering.sequence < event.sequence
                    and occurred < due_at
                    and any(cancels(m, event, triggering) for m in definition.cancel_events)
                ):
                    del pending[key]
                    if send_id in new_by_send:
                        fired = new_by_send.pop(send_id)
                        plan.firings.remove(fired)
                        plan.cancelled.append(fired)
                    else:
                        plan.cancel[(event.app_id, send_id)] = event.event_id
                    continue
            if _received(event) < trigger.enabled_at or not matches(definition.event, event):
                continue
            due_at = max(occurred + duration_of(definition.delay), now)
            expires_at = (
                occurred + duration_of(definition.ttl) if definition.HasField("ttl") else None
            )
            firing = Firing(
                trigger=trigger,
                send_id=firing_send_id(trigger.trigger_id, event.event_id),
                event=event,
                due_at=due_at,
                expires_at=expires_at,
            )
            if current is not None or not _reeligible(definition, stored.get(key, ()), due_at):
                plan.not_reeligible.append(firing)
                continue
            plan.firings.append(firing)
            new_by_send[firing.send_id] = firing
            pending[key] = (firing.send_id, due_at, event)
    return plan


def _reeligible(
    definition: resources_pb2.Trigger,
    firings: Sequence[StoredFiring],
    due_at: datetime,
) -> bool:
    if not definition.HasField("re_eligibility"):
        return True
    rule = definition.re_eligibility
    sent = [f.sent_at for f in firings if f.sent_at is not None]
    if rule.max_firings and len(sent) >= rule.max_firings:
        return False
    if rule.HasField("min_interval") and sent:
        return due_at - max(sent) >= duration_of(rule.min_interval)
    return True
