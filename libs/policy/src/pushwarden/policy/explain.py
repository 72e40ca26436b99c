"""Render a decision's structured trace as sentences, only when someone asks."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from .model import CalendarWindow, CapRule, CapScope
from .trace import (
    CapStep,
    Check,
    Decision,
    DigestStep,
    GateStep,
    Outcome,
    QuietStep,
    ScheduleStep,
    TraceStep,
    ZoneStep,
)
from .zones import ZoneSource, get_zone

__all__ = ["explain", "format_duration", "format_instant"]

_GATE_TEXT: dict[Check, tuple[str, str]] = {
    Check.ERASED: ("user is not erased", "user was erased: nothing may be sent"),
    Check.SUPPRESSION: ("user is not on a suppression list", "user is on a suppression list"),
    Check.HOLDOUT: ("user is not in the holdout", "user is in this campaign's holdout group"),
    Check.DUPLICATE: ("not sent before", "already sent (same send key in the history)"),
    Check.EXPIRY: ("message has not expired", "message expired before it could be sent"),
    Check.CHANNEL_CONSENT: ("push channel consent given", "push channel consent withdrawn"),
    Check.MARKETING_CONSENT: ("not opted out of marketing", "user opted out of marketing"),
    Check.CATEGORY_CONSENT: ("not opted out of the category", "user opted out of the category"),
    Check.TOPIC_CONSENT: ("not opted out of the topic", "user opted out of the topic"),
    Check.OS_PERMISSION: ("OS notification permission granted", "no OS notification permission"),
    Check.DEVICES: ("at least one usable device", "no usable device"),
    Check.TRANSACTIONAL_EXEMPTION: (
        "transactional category: caps, marketing opt-out and quiet hours (unless the "
        "message opted in) do not apply",
        "",
    ),
}

_ZONE_SOURCE_TEXT = {
    ZoneSource.PROFILE: "the user's profile",
    ZoneSource.DEVICE: "the user's device",
    ZoneSource.APP_DEFAULT: "the app default",
}

_CALENDAR_TEXT = {CalendarWindow.DAY: "calendar day", CalendarWindow.WEEK: "calendar week"}


def format_instant(at: datetime) -> str:
    """``2026-11-23T09:12Z``, with seconds only when they are not zero."""
    at = at.astimezone(UTC)
    if at.second or at.microsecond:
        return at.strftime("%Y-%m-%dT%H:%M:%SZ")
    return at.strftime("%Y-%m-%dT%H:%MZ")


def format_duration(span: timedelta) -> str:
    """``24 h``, ``7 d``, ``1 h 30 min``, ``45 s``: the largest whole units, no zeros.

    Days are used only from two days up, because people say "the rolling 24 h".
    """
    seconds = int(span.total_seconds())
    parts = []
    units: tuple[tuple[str, int], ...] = (("d", 86400), ("h", 3600), ("min", 60), ("s", 1))
    if seconds < 2 * 86400:
        units = units[1:]
    for unit, size in units:
        value, seconds = divmod(seconds, size)
        if value:
            parts.append(f"{value} {unit}")
    return " ".join(parts) or "0 s"


def _scope_text(rule: CapRule) -> str:
    if rule.scope is CapScope.ALL_MARKETING:
        return "pushes" if rule.count_transactional else "marketing pushes"
    if rule.scope is CapScope.CATEGORY:
        return (
            f"pushes in category {rule.target_id}" if rule.target_id else "pushes in this category"
        )
    return f"pushes of campaign {rule.target_id}" if rule.target_id else "pushes of this campaign"


def _cap_text(step: CapStep, zone: str | None) -> str:
    rule = step.rule
    if isinstance(rule.window, timedelta):
        window = f"the rolling {format_duration(rule.window)}"
        leaves = "the oldest leaves the window"
    else:
        window = f"this {_CALENDAR_TEXT[rule.window]} ({zone})"
        leaves = "the window resets"
    if rule.user_preference:
        label = "the user's opt-down: "
    else:
        label = f"cap {rule.name!r}: " if rule.name else ""
    text = f"{label}{step.in_window} of {step.limit} {_scope_text(rule)} in {window}"
    if step.oldest_leaves_at is not None:
        text += f"; {leaves} at {format_instant(step.oldest_leaves_at)}"
    if not step.passed:
        text += f"; over the cap ({rule.on_exceed.value})"
        if step.frees_at is not None and step.frees_at != step.oldest_leaves_at:
            text += f", next free at {format_instant(step.frees_at)}"
    return text


def _quiet_text(step: QuietStep, zone_name: str | None) -> str:
    zone = get_zone(zone_name) or UTC
    local = step.at.astimezone(zone)
    where = f"local time {local:%a %H:%M} ({zone_name})"
    if step.windows == 0:
        return f"{where}: no quiet hours"
    if step.passed:
        return f"{where}: outside quiet hours"
    assert step.window_start is not None
    assert step.window_end is not None
    start = step.window_start.astimezone(zone)
    end = step.window_end.astimezone(zone)
    return (
        f"{where}: inside quiet hours {start:%H:%M}–{end:%H:%M}, "
        f"ending at {format_instant(step.window_end)}"
    )


def _digest_text(step: DigestStep) -> str:
    slot = f"digest slot {format_instant(step.opens_at)} to {format_instant(step.closes_at)}"
    if step.passed:
        return f"{slot} is open; nothing sent this period"
    if step.sent_in_period:
        return f"{slot}: {step.sent_in_period} already sent this period"
    return f"{slot} is not open now"


def _schedule_text(step: ScheduleStep) -> str:
    moves = []
    for hop in step.hops:
        if hop.check is Check.QUIET_HOURS:
            moves.append(
                f"quiet hours end, +{format_duration(timedelta(seconds=hop.jitter_s))} jitter "
                f"→ {format_instant(hop.to)}"
            )
        elif hop.check is Check.DIGEST:
            moves.append(f"next digest slot → {format_instant(hop.to)}")
        else:
            moves.append(f"caps free → {format_instant(hop.to)}")
    path = "; ".join(moves)
    if step.until is None:
        return f"no instant before the message expires satisfies every rule ({path})"
    spread = step.hops[-1].jitter_s if step.hops else 0
    if spread:
        earliest = step.until - timedelta(seconds=spread)
        return (
            f"earliest instant every rule allows: {format_instant(earliest)}, spread to "
            f"{format_instant(step.until)} within the allowed stretch ({path})"
        )
    return f"earliest instant every rule allows: {format_instant(step.until)} ({path})"


def _step_text(step: TraceStep, zone: str | None) -> str:
    if isinstance(step, CapStep):
        return _cap_text(step, zone)
    if isinstance(step, QuietStep):
        return _quiet_text(step, zone)
    if isinstance(step, DigestStep):
        return _digest_text(step)
    if isinstance(step, ScheduleStep):
        return _schedule_text(step)
    if isinstance(step, ZoneStep):
        if step.zone is None:
            return "no time zone on the profile, the device or the app default"
        return f"time zone {step.zone} (from {_ZONE_SOURCE_TEXT[step.source]})"
    assert isinstance(step, GateStep)
    passed, failed = _GATE_TEXT[step.check]
    return passed if step.passed else failed


def explain(decision: Decision) -> list[str]:
    """One sentence per trace step, then the outcome."""
    zone = next((s.zone for s in decision.trace if isinstance(s, ZoneStep)), None)
    lines = [_step_text(step, zone) for step in decision.trace]
    reason = decision.reason.value if decision.reason is not None else None
    if decision.outcome is Outcome.ALLOW:
        lines.append("→ ALLOW: send now")
    elif decision.outcome is Outcome.DEFER:
        assert decision.until is not None
        lines.append(f"→ DEFER until {format_instant(decision.until)} ({reason})")
    else:
        lines.append(f"→ DROP ({reason})")
    return lines
