"""The policy library's decisions as the contract's ``pushwarden.common.v1.Decision``.

Pure. The hot path stores the outcome and reason only: :func:`decision_to_proto` reads
``decision.trace`` (which the library builds on first read, at some cost) only when it
is asked for the trace. With it, each library step becomes a ``TraceStep`` with its
numbers, and the scheduler's own checks (audience, holdout, send time, template,
throttle, trigger) come in as ready ``TraceStep`` messages placed before and after the
policy's steps.

Step results: a passed check is PASS; a failed gate is DROP with the gate's reason; an
exceeded cap is DROP or DEFER as its rule says (reason CAPPED, or FREQUENCY_PREFERENCE
for the user's opt-down rule); quiet hours and a closed digest slot are DEFER; the
deferral search is DEFER with its instant, or DROP when no instant before expiry works.
A transactional message's exemption step is PASS with the category's kind, followed by
a CHECK_CAP step EXEMPT from CAPPED and, unless the message opted in to quiet hours, a
CHECK_QUIET_HOURS step EXEMPT from QUIET_HOURS: the checks the library skipped for it.
A zone step without a zone is DROP (NO_TIMEZONE) for marketing and EXEMPT for an
opted-in transactional message, which goes anyway.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from google.protobuf.message import Message as ProtoMessage
from google.protobuf.timestamp_pb2 import Timestamp

from pushwarden.common.v1 import decision_pb2, policy_pb2, types_pb2
from pushwarden.policy import (
    ALL_WEEKDAYS,
    CalendarWindow,
    CapAction,
    CapScope,
    CapStep,
    Check,
    Decision,
    DigestPeriod,
    DigestStep,
    FrequencyPreference,
    GateStep,
    Message,
    MessageKind,
    Outcome,
    QuietStep,
    Reason,
    Recipient,
    Rules,
    ScheduleStep,
    TraceStep,
    ZoneSource,
    ZoneStep,
    explain,
    format_instant,
)
from pushwarden.policy.reference import MARKETING_GATES, TRANSACTIONAL_GATES
from pushwarden.policy.zones import day_bounds, get_zone, week_bounds

ProtoStep = decision_pb2.TraceStep

_OUTCOMES = {outcome: decision_pb2.Outcome.Value(f"OUTCOME_{outcome.value}") for outcome in Outcome}
_REASONS = {
    reason: decision_pb2.ReasonCode.Value(f"REASON_CODE_{reason.value}") for reason in Reason
}
_CHECKS = {check: decision_pb2.Check.Value(f"CHECK_{check.value}") for check in Check}
_SOURCES = {
    source: decision_pb2.TimeZoneSource.Value(f"TIME_ZONE_SOURCE_{source.value}")
    for source in ZoneSource
}
# The reason each gate drops with, from the library's own gate tables.
_GATE_REASONS = {gate.check: gate.reason for gate in (*MARKETING_GATES, *TRANSACTIONAL_GATES)}
_SCOPES = {
    CapScope.ALL_MARKETING: policy_pb2.CAP_SCOPE_ALL_MARKETING,
    CapScope.CATEGORY: policy_pb2.CAP_SCOPE_CATEGORY,
    CapScope.CAMPAIGN: policy_pb2.CAP_SCOPE_CAMPAIGN,
}
_CALENDARS = {
    CalendarWindow.DAY: policy_pb2.CALENDAR_PERIOD_DAY,
    CalendarWindow.WEEK: policy_pb2.CALENDAR_PERIOD_WEEK,
}
_ON_EXCEED = {
    CapAction.DROP: policy_pb2.ON_EXCEED_DROP,
    CapAction.DEFER: policy_pb2.ON_EXCEED_DEFER,
}
_PERIODS = {
    DigestPeriod.DAILY: policy_pb2.DIGEST_PERIOD_DAILY,
    DigestPeriod.WEEKLY: policy_pb2.DIGEST_PERIOD_WEEKLY,
}
# TraceStep's ``detail`` oneof: the field that holds each detail message type.
_DETAIL_FIELDS = {
    field.message_type.full_name: field.name
    for field in ProtoStep.DESCRIPTOR.oneofs_by_name["detail"].fields
    if field.message_type is not None
}

_PASS = decision_pb2.STEP_RESULT_PASS
_EXEMPT = decision_pb2.STEP_RESULT_EXEMPT
_DEFER = decision_pb2.STEP_RESULT_DEFER
_DROP = decision_pb2.STEP_RESULT_DROP


def reason_code(reason: Reason | None) -> decision_pb2.ReasonCode.ValueType:
    """The contract's ReasonCode for a library reason (UNSPECIFIED for None)."""
    return decision_pb2.REASON_CODE_UNSPECIFIED if reason is None else _REASONS[reason]


def outcome_code(outcome: Outcome) -> decision_pb2.Outcome.ValueType:
    """The contract's Outcome for a library outcome."""
    return _OUTCOMES[outcome]


def check_code(check: Check) -> decision_pb2.Check.ValueType:
    """The contract's Check for a library check."""
    return _CHECKS[check]


def attach_detail(step: ProtoStep, detail: ProtoMessage) -> None:
    """Put ``detail`` (a CapDetail, HoldoutDetail, ...) in the step's ``detail`` oneof."""
    field = _DETAIL_FIELDS.get(detail.DESCRIPTOR.full_name)
    if field is None:
        raise TypeError(f"{detail.DESCRIPTOR.full_name} is no TraceStep detail")
    getattr(step, field).CopyFrom(detail)


def _local_time(at: datetime) -> types_pb2.LocalTime:
    return types_pb2.LocalTime(hours=at.hour, minutes=at.minute)


def _weekday(day: int) -> types_pb2.DayOfWeek.ValueType:
    return types_pb2.DayOfWeek.ValueType(day + 1)


class _Context:
    """What the step converters share: the decision's instant, zone and inputs."""

    def __init__(
        self,
        decision: Decision,
        evaluated_at: datetime,
        zone: ZoneInfo | None,
        message: Message | None,
        recipient: Recipient | None,
        rules: Rules | None,
    ) -> None:
        self.decision = decision
        self.evaluated_at = evaluated_at
        self.zone = zone
        self.message = message
        self.recipient = recipient
        self.rules = rules


def _gate(step: GateStep, ctx: _Context, out: list[ProtoStep]) -> None:
    check = _CHECKS[step.check]
    if step.check is Check.TRANSACTIONAL_EXEMPTION:
        converted = ProtoStep(check=check, result=_PASS)
        converted.category.kind = types_pb2.CATEGORY_KIND_TRANSACTIONAL
        if ctx.message is not None:
            converted.category.category_id = ctx.message.category.category_id
        out.append(converted)
        out.append(
            ProtoStep(
                check=decision_pb2.CHECK_CAP, result=_EXEMPT, reason=decision_pb2.REASON_CODE_CAPPED
            )
        )
        opted_in = (
            ctx.message.respects_quiet_hours
            if ctx.message is not None
            else any(isinstance(s, ZoneStep) for s in ctx.decision.trace)
        )
        if not opted_in:
            quiet = ProtoStep(
                check=decision_pb2.CHECK_QUIET_HOURS,
                result=_EXEMPT,
                reason=decision_pb2.REASON_CODE_QUIET_HOURS,
            )
            quiet.quiet_hours.message_opted_in = False
            out.append(quiet)
        return
    if step.passed:
        out.append(ProtoStep(check=check, result=_PASS))
    else:
        out.append(ProtoStep(check=check, result=_DROP, reason=_REASONS[_GATE_REASONS[step.check]]))


def _zone(step: ZoneStep, ctx: _Context, out: list[ProtoStep]) -> None:
    converted = ProtoStep(check=decision_pb2.CHECK_ZONE)
    converted.zone.time_zone = step.zone or ""
    converted.zone.source = _SOURCES[step.source]
    if step.passed:
        converted.result = _PASS
    else:
        # Marketing drops without a zone; an opted-in transactional message goes.
        dropped = ctx.decision.reason is Reason.NO_TIMEZONE
        converted.result = _DROP if dropped else _EXEMPT
        converted.reason = decision_pb2.REASON_CODE_NO_TIMEZONE
    out.append(converted)


def _cap(step: CapStep, ctx: _Context, out: list[ProtoStep]) -> None:
    rule = step.rule
    converted = ProtoStep(check=decision_pb2.CHECK_CAP)
    detail = converted.cap
    detail.rule_id = rule.name
    detail.scope = _SCOPES[rule.scope]
    scope_id = rule.target_id
    if scope_id is None and ctx.message is not None:
        if rule.scope is CapScope.CATEGORY:
            scope_id = ctx.message.category.category_id
        elif rule.scope is CapScope.CAMPAIGN:
            scope_id = ctx.message.campaign_id
    detail.scope_id = scope_id or ""
    detail.count = step.in_window
    detail.max_count = step.limit
    detail.window_start.FromDatetime(step.window_start)
    if isinstance(rule.window, timedelta):
        detail.rolling.FromTimedelta(rule.window)
        detail.window_end.FromDatetime(step.window_start + rule.window)
    else:
        detail.calendar = _CALENDARS[rule.window]
        if ctx.zone is not None:
            bounds = day_bounds if rule.window is CalendarWindow.DAY else week_bounds
            ordinal = step.window_start.astimezone(ctx.zone).toordinal()
            detail.window_end.FromDatetime(bounds(ctx.zone, ordinal)[1])
    if step.frees_at is not None:
        detail.frees_at.FromDatetime(step.frees_at)
    if step.oldest_leaves_at is not None:
        detail.oldest_leaves_at.FromDatetime(step.oldest_leaves_at)
    detail.on_exceed = _ON_EXCEED[rule.on_exceed]
    detail.user_preference = rule.user_preference
    detail.count_transactional = rule.count_transactional
    if step.passed:
        converted.result = _PASS
    else:
        why = Reason.FREQUENCY_PREFERENCE if rule.user_preference else Reason.CAPPED
        converted.reason = _REASONS[why]
        if rule.on_exceed is CapAction.DROP:
            converted.result = _DROP
        else:
            converted.result = _DEFER
            if step.frees_at is not None:
                converted.defer_until.FromDatetime(step.frees_at)
    out.append(converted)


def _matched_window(
    window_start: datetime, window_end: datetime, ctx: _Context, zone: ZoneInfo
) -> policy_pb2.QuietHoursWindow:
    """The configured window the quiet span starts with, else the span itself."""
    start = window_start.astimezone(zone)
    end = window_end.astimezone(zone)
    configured = None
    if ctx.recipient is not None and ctx.recipient.quiet_hours is not None:
        configured = ctx.recipient.quiet_hours
    elif ctx.rules is not None:
        configured = ctx.rules.quiet_hours
    wall = start.time().replace(second=0, microsecond=0)
    for window in configured.windows if configured is not None else ():
        if window.start == wall and start.weekday() in window.weekdays:
            days = () if window.weekdays == ALL_WEEKDAYS else sorted(window.weekdays)
            return policy_pb2.QuietHoursWindow(
                start=types_pb2.LocalTime(hours=window.start.hour, minutes=window.start.minute),
                end=types_pb2.LocalTime(hours=window.end.hour, minutes=window.end.minute),
                days=[_weekday(day) for day in days],
            )
    return policy_pb2.QuietHoursWindow(
        start=_local_time(start), end=_local_time(end), days=[_weekday(start.weekday())]
    )


def _quiet(step: QuietStep, ctx: _Context, out: list[ProtoStep]) -> None:
    converted = ProtoStep(check=decision_pb2.CHECK_QUIET_HOURS)
    detail = converted.quiet_hours
    zone = ctx.zone
    if zone is not None:
        local = step.at.astimezone(zone)
        detail.local_time.CopyFrom(_local_time(local))
        detail.local_day = _weekday(local.weekday())
        detail.local_date.CopyFrom(
            types_pb2.LocalDate(year=local.year, month=local.month, day=local.day)
        )
        detail.time_zone = zone.key
    detail.window_count = step.windows
    if ctx.recipient is not None:
        detail.user_override = ctx.recipient.quiet_hours is not None
    if ctx.message is not None:
        detail.message_opted_in = (
            ctx.message.kind is MessageKind.TRANSACTIONAL and ctx.message.respects_quiet_hours
        )
    if step.passed or step.window_start is None or step.window_end is None:
        converted.result = _PASS
    else:
        if zone is not None:
            detail.window.CopyFrom(_matched_window(step.window_start, step.window_end, ctx, zone))
        detail.window_starts_at.FromDatetime(step.window_start)
        detail.window_ends_at.FromDatetime(step.window_end)
        converted.result = _DEFER
        converted.reason = decision_pb2.REASON_CODE_QUIET_HOURS
        converted.defer_until.FromDatetime(step.window_end)
    out.append(converted)


def _digest(step: DigestStep, ctx: _Context, out: list[ProtoStep]) -> None:
    converted = ProtoStep(check=decision_pb2.CHECK_DIGEST)
    detail = converted.digest
    slot = None
    recipient = ctx.recipient
    if recipient is not None and recipient.frequency is FrequencyPreference.DIGEST:
        slot = recipient.digest
        if slot is None and ctx.rules is not None:
            slot = ctx.rules.default_digest
    if slot is not None:
        detail.period = _PERIODS[slot.period]
    detail.period_start.FromDatetime(step.period_start)
    detail.opens_at.FromDatetime(step.opens_at)
    detail.closes_at.FromDatetime(step.closes_at)
    detail.sent_in_period = step.sent_in_period
    if step.passed:
        converted.result = _PASS
    else:
        converted.result = _DEFER
        converted.reason = decision_pb2.REASON_CODE_DIGEST
        if not step.sent_in_period and step.opens_at > ctx.evaluated_at:
            converted.defer_until.FromDatetime(step.opens_at)
    out.append(converted)


def _schedule(step: ScheduleStep, ctx: _Context, out: list[ProtoStep]) -> None:
    converted = ProtoStep(check=decision_pb2.CHECK_SCHEDULE)
    detail = converted.deferral
    for hop in step.hops:
        moved = detail.hops.add(check=_CHECKS[hop.check])
        moved.to.FromDatetime(hop.to)
        moved.jitter.FromTimedelta(timedelta(seconds=hop.jitter_s))
    if ctx.rules is not None:
        detail.jitter_window.FromTimedelta(ctx.rules.jitter)
    converted.reason = reason_code(ctx.decision.reason)
    if step.until is not None:
        detail.until.FromDatetime(step.until)
        converted.defer_until.FromDatetime(step.until)
        converted.result = _DEFER
    else:
        converted.result = _DROP
    out.append(converted)


def trace_steps(
    decision: Decision,
    *,
    evaluated_at: datetime,
    message: Message | None = None,
    recipient: Recipient | None = None,
    rules: Rules | None = None,
    step_details: Mapping[int, ProtoMessage] | None = None,
) -> list[ProtoStep]:
    """The decision's library steps as contract steps (expands ``decision.trace``).

    ``message``, ``recipient`` and ``rules`` are the decision's own inputs; with them
    the steps carry what the library's steps leave implicit (the counted category or
    campaign, the configured quiet window, whether the user's quiet hours override the
    app's, the digest period, the jitter window). ``step_details`` attaches a detail the
    scheduler knows to the step of a check (e.g. ``CHECK_HOLDOUT`` → HoldoutDetail,
    ``CHECK_SUPPRESSION`` → SuppressionDetail, ``CHECK_DEVICES`` → DeviceDetail)."""
    zone_step = next((s for s in decision.trace if isinstance(s, ZoneStep)), None)
    zone = get_zone(zone_step.zone) if zone_step is not None else None
    ctx = _Context(decision, evaluated_at, zone, message, recipient, rules)
    out: list[ProtoStep] = []
    for step in decision.trace:
        _convert(step, ctx, out)
    if step_details:
        for converted in out:
            detail = step_details.get(converted.check)
            if detail is not None and converted.WhichOneof("detail") is None:
                attach_detail(converted, detail)
    return out


def _convert(step: TraceStep, ctx: _Context, out: list[ProtoStep]) -> None:
    if isinstance(step, GateStep):
        _gate(step, ctx, out)
    elif isinstance(step, ZoneStep):
        _zone(step, ctx, out)
    elif isinstance(step, CapStep):
        _cap(step, ctx, out)
    elif isinstance(step, QuietStep):
        _quiet(step, ctx, out)
    elif isinstance(step, DigestStep):
        _digest(step, ctx, out)
    else:
        _schedule(step, ctx, out)


def decision_to_proto(
    decision: Decision,
    *,
    evaluated_at: datetime,
    include_trace: bool,
    zone_name: str | None = None,
    extra_steps: Sequence[ProtoStep] = (),
    leading_steps: Sequence[ProtoStep] = (),
    step_details: Mapping[int, ProtoMessage] | None = None,
    message: Message | None = None,
    recipient: Recipient | None = None,
    rules: Rules | None = None,
) -> decision_pb2.Decision:
    """The contract's Decision: outcome, reason, defer instant and, when
    ``include_trace``, the trace: ``leading_steps``, the library's steps (see
    :func:`trace_steps`), then ``extra_steps``. The trace's zone and its source come
    from the library's zone step; ``zone_name`` is used when there is none (a decision
    that ended before the zone was needed). Without ``include_trace`` the library's
    trace is never read, so it is never built."""
    converted = decision_pb2.Decision(
        outcome=_OUTCOMES[decision.outcome], reason=reason_code(decision.reason)
    )
    if decision.until is not None:
        converted.defer_until.FromDatetime(decision.until)
    if not include_trace:
        return converted
    trace = converted.trace
    trace.evaluated_at.FromDatetime(evaluated_at)
    zone_step = next((s for s in decision.trace if isinstance(s, ZoneStep)), None)
    if zone_step is not None:
        trace.time_zone = zone_step.zone or ""
        trace.time_zone_source = _SOURCES[zone_step.source]
    elif zone_name:
        trace.time_zone = zone_name
    trace.steps.extend(leading_steps)
    trace.steps.extend(
        trace_steps(
            decision,
            evaluated_at=evaluated_at,
            message=message,
            recipient=recipient,
            rules=rules,
            step_details=step_details,
        )
    )
    trace.steps.extend(extra_steps)
    return converted


# Text, only for ExplainDecision.


def _instant(stamp: Timestamp) -> str:
    return format_instant(stamp.ToDatetime(UTC))


def _result_text(step: ProtoStep) -> str:
    result = decision_pb2.StepResult.Name(step.result).removeprefix("STEP_RESULT_")
    if step.reason:
        result += f" ({decision_pb2.ReasonCode.Name(step.reason).removeprefix('REASON_CODE_')})"
    if step.HasField("defer_until"):
        result += f" until {_instant(step.defer_until)}"
    return result


def step_line(step: ProtoStep) -> str:
    """One sentence for a scheduler step (send time, template, throttle, audience,
    trigger, holdout, suppression); other checks get their name and result."""
    name = decision_pb2.Check.Name(step.check).removeprefix("CHECK_").lower().replace("_", " ")
    detail = step.WhichOneof("detail")
    text = ""
    if detail == "send_time":
        send = step.send_time
        text = f"due at {_instant(send.due_at)}"
        if send.time_zone:
            text += f" ({send.local_time.hours:02d}:{send.local_time.minutes:02d} {send.time_zone})"
        if send.personal_best_time:
            text += ", the user's own best time"
        if send.local_time_passed:
            text += ", the local time had already passed"
    elif detail == "template":
        template = step.template
        text = f"content {template.locale or 'default'}, {template.payload_bytes} of "
        text += f"{template.limit_bytes} bytes"
        if template.missing_placeholders:
            text += f"; missing {', '.join(template.missing_placeholders)}"
        if template.defaulted_placeholders:
            text += f"; defaulted {', '.join(template.defaulted_placeholders)}"
    elif detail == "throttle":
        throttle = step.throttle
        text = f"{throttle.sent_this_minute} of {throttle.sends_per_minute} sends this minute"
    elif detail == "audience":
        audience = step.audience
        included = ", ".join(audience.included_by_segment_ids) or "no include segment"
        text = f"in {included}"
        excluded = [*audience.excluded_by_segment_ids, *audience.excluded_by_list_ids]
        if excluded:
            text += f"; excluded by {', '.join(excluded)}"
    elif detail == "trigger":
        trigger = step.trigger
        limit = trigger.max_firings or "unlimited"
        text = f"trigger {trigger.trigger_id}: {trigger.firings} of {limit} firings sent"
        if trigger.cancel_event_id:
            text += f"; cancelled by event {trigger.cancel_event_id}"
    elif detail == "holdout":
        holdout = step.holdout
        text = f"bucket {holdout.bucket} (holdout below {holdout.holdout_basis_points})"
        text += ": in the holdout" if holdout.in_holdout else f": variant {holdout.variant_id}"
    elif detail == "suppression":
        suppression = step.suppression
        reasons = []
        if suppression.erased_not_reopted:
            reasons.append("erased and not opted in since")
        if suppression.list_ids:
            reasons.append(f"on suppression lists {', '.join(suppression.list_ids)}")
        text = "; ".join(reasons) or "not suppressed"
    line = f"{name}: {_result_text(step)}"
    return f"{line}: {text}" if text else line


def outcome_line(decision: decision_pb2.Decision) -> str:
    """The closing line: ``→ ALLOW: send now``, ``→ DEFER until ... (REASON)`` or
    ``→ DROP (REASON)``, as the library's ``explain`` ends."""
    reason = decision_pb2.ReasonCode.Name(decision.reason).removeprefix("REASON_CODE_")
    if decision.outcome == decision_pb2.OUTCOME_ALLOW:
        return "→ ALLOW: send now"
    if decision.outcome == decision_pb2.OUTCOME_DEFER:
        return f"→ DEFER until {_instant(decision.defer_until)} ({reason})"
    return f"→ DROP ({reason})"


def explanation_lines(
    decision: Decision | None,
    *,
    leading_steps: Sequence[ProtoStep] = (),
    extra_steps: Sequence[ProtoStep] = (),
    final: decision_pb2.Decision | None = None,
) -> list[str]:
    """ExplainDecision's text: a line per leading scheduler step, the library's
    ``explain`` lines for its steps, a line per extra step, then the outcome (``final``'s
    when given, since a scheduler step may decide after the policy; else the library's).
    ``decision`` is None when a scheduler step decided before the policy ran."""
    lines = [step_line(step) for step in leading_steps]
    closing = outcome_line(final) if final is not None else None
    if decision is not None:
        explained = explain(decision)
        lines.extend(explained[:-1])
        if closing is None:
            closing = explained[-1]
    lines.extend(step_line(step) for step in extra_steps)
    if closing is not None:
        lines.append(closing)
    return lines
