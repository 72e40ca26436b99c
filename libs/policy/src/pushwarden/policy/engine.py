"""``decide``: the fast path of the decision ``reference.evaluate`` specifies.

``decide`` computes the outcome, reason and instant without building trace steps, and
returns a ``Trace`` that ``reference.evaluate`` fills in from the same inputs when someone
reads it; that check raises if the two ever disagree, and property tests run both on
every drawn scenario. Each block of ``decide`` names the reference function it mirrors.
The common blocks are inlined on purpose (a call with its arguments costs about as much
as a whole check, and ``decide`` runs hundreds of thousands of times a second): the
gates, the zone, the local day, quiet hours, the common ALLOW and the deferral by quiet
hours alone. The caps go through ``_check_caps``, a blocked message ``decide`` does not
settle through ``_settle`` (``reference.check_digest`` and ``reference.schedule``, with
a way around the search for the caps' common deferrals), and rarer work (other cap
rules, digests, the general deferral search) through the reference's own helpers.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import NamedTuple, cast
from zlib import crc32
from zoneinfo import ZoneInfo

from .caps import calendar_free_at, evaluate_cap, rule_applies
from .clock import (
    JITTER_MULTIPLIER,
    MASK32,
    SECONDS,
    SEEDS,
    DayView,
    digest_period,
    jitter_seed,
    quiet_tables,
    view_at,
    view_in,
)
from .history import ContactHistory, as_history
from .model import (
    CapRule,
    ContactEntry,
    FrequencyPreference,
    Message,
    MessageKind,
    QuietHours,
    Recipient,
    Rules,
)
from .plan import (
    PLANS,
    SELECT_ALL,
    SELECT_CAMPAIGN_ALL,
    SELECT_CATEGORY,
    SELECT_CATEGORY_ALL,
    SELECT_MARKETING,
    CapPlan,
    OtherCap,
    RulesPlan,
    caps_plan,
    rules_plan,
)
from .reference import (
    FAILED,
    HORIZON,
    MARKETING_GATES,
    PASSED,
    TRANSACTIONAL_GATES,
    CapVerdict,
    Gate,
    Search,
    check_digest,
    evaluate,
    schedule,
    zone_and_step,
)
from .trace import CapStep, Check, Decision, Outcome, Reason, Trace, TraceStep, lazy_trace
from .zones import ZONES, resolve_zone, week_bounds

__all__ = ["Budget", "decide", "remaining_budget"]

# Enum members bound once: attribute access on an Enum class costs ~90 ns in 3.11.
_ALLOW = Outcome.ALLOW
_DEFER = Outcome.DEFER
_DROP = Outcome.DROP
_DIGEST = FrequencyPreference.DIGEST
_NORMAL = FrequencyPreference.NORMAL
_MARKETING = MessageKind.MARKETING
_R_CAPPED = Reason.CAPPED
_R_DIGEST = Reason.DIGEST
_R_EXPIRED = Reason.EXPIRED
_R_FREQUENCY = Reason.FREQUENCY_PREFERENCE
_R_NO_TIMEZONE = Reason.NO_TIMEZONE
_R_QUIET_HOURS = Reason.QUIET_HOURS
_DAY_SECONDS = 86400

# The memos' tables, read directly on the hot path.
_ZONES = ZONES.data
_PLANS = PLANS.data
_SEEDS = SEEDS.data
_SECONDS = SECONDS
_N_SECONDS = len(SECONDS)
_UNBUILT: dict[str, tuple[datetime, ...]] = {}  # read for a history's unbuilt lists, never written
_MULT = JITTER_MULTIPLIER
_MASK32 = MASK32

_new = tuple.__new__  # skips NamedTuple's Python-level __new__ on the hot path


def _gate_drops(gates: tuple[Gate, ...]) -> tuple[Decision, ...]:
    """For each gate, the whole DROP decision when it is the first to fail: built once."""
    return tuple(
        Decision(
            _DROP,
            gate.reason,
            None,
            Trace.of((*(PASSED[g.check] for g in gates[:index]), FAILED[gate.check])),
        )
        for index, gate in enumerate(gates)
    )


_MARKETING_DROPS = _gate_drops(MARKETING_GATES)
_TRANSACTIONAL_DROPS = _gate_drops(TRANSACTIONAL_GATES)
_TRANSACTIONAL_ALLOW = Decision(
    _ALLOW,
    None,
    None,
    Trace.of(
        (*(PASSED[g.check] for g in TRANSACTIONAL_GATES), PASSED[Check.TRANSACTIONAL_EXEMPTION])
    ),
)


def _marketing_gate(m: Message, r: Recipient, h: ContactHistory, now: datetime) -> int:
    """``reference.first_failure`` over ``MARKETING_GATES``, spelled out: a call per gate
    costs more than the gate. A property test checks the two always agree."""
    if r.erased:
        return 0
    if r.suppressed:
        return 1
    if r.holdout_sources and m.source_id in r.holdout_sources:
        return 2
    if m.send_key in h.send_keys:  # never holds None
        return 3
    if m.expires_at is not None and now >= m.expires_at:
        return 4
    if not r.push_consent:
        return 5
    if r.marketing_opt_out:
        return 6
    if m.category.category_id in r.category_opt_outs:
        return 7
    if m.topic_id in r.topic_opt_outs:  # never holds None
        return 8
    if not r.os_permission:
        return 9
    return 10 if r.usable_devices <= 0 else -1


def _transactional_gate(m: Message, r: Recipient, h: ContactHistory, now: datetime) -> int:
    """``reference.first_failure`` over ``TRANSACTIONAL_GATES``, spelled out."""
    if r.erased:
        return 0
    if m.send_key in h.send_keys:
        return 1
    if m.expires_at is not None and now >= m.expires_at:
        return 2
    if m.category.opt_out_allowed:
        if m.category.category_id in r.category_opt_outs:
            return 3
        if m.topic_id in r.topic_opt_outs:
            return 4
    if not r.os_permission:
        return 5
    return 6 if r.usable_devices <= 0 else -1


def _as_utc(now: datetime) -> datetime:
    if now.utcoffset() is None:
        raise ValueError("now must be timezone-aware")
    return now.astimezone(UTC)


def decide(
    message: Message,
    recipient: Recipient,
    history: ContactHistory | Iterable[ContactEntry],
    rules: Rules,
    now: datetime,
) -> Decision:
    """Decide whether ``message`` goes to ``recipient`` now, later, or never.

    Pure: the same arguments always give the same decision (``reference.evaluate``'s).
    ``history`` is best passed as a prepared ``ContactHistory`` when several messages are
    decided for one recipient. The trace is built from the same inputs on first read.
    """
    if now.tzinfo is not UTC:
        now = _as_utc(now)
    hist = history if type(history) is ContactHistory else as_history(history)
    category = message.category
    expires = message.expires_at

    # ``reference.check_gates`` (with the gate tables spelled out) and
    # ``reference.transactional_exemption``.
    if category.kind is _MARKETING:
        if (  # every gate at once; the spelled-out table finds which failed
            recipient.erased
            or recipient.suppressed
            or not recipient.push_consent
            or recipient.marketing_opt_out
            or not recipient.os_permission
            or recipient.usable_devices <= 0
            or message.send_key in hist.send_keys
            or (expires is not None and now >= expires)
            # (empty id sets, shared by most recipients, are tested before hashing an id)
            or (recipient.category_opt_outs and category.category_id in recipient.category_opt_outs)
            or (recipient.topic_opt_outs and message.topic_id in recipient.topic_opt_outs)
            or (recipient.holdout_sources and message.source_id in recipient.holdout_sources)
        ):
            return _MARKETING_DROPS[_marketing_gate(message, recipient, hist, now)]
        marketing = True
        frequency = recipient.frequency
    else:
        failed = _transactional_gate(message, recipient, hist, now)
        if failed >= 0:
            return _TRANSACTIONAL_DROPS[failed]
        if not message.respects_quiet_hours:
            return _TRANSACTIONAL_ALLOW
        marketing = False
        frequency = _NORMAL  # opt-down and digest never apply to transactional sends

    # ``reference.check_zone``: a valid profile zone is one lookup.
    zone = _ZONES.get(recipient.zone)
    if zone is None:
        zone, _ = zone_and_step(recipient.zone, recipient.device_zone, rules.default_zone)
        if zone is None:
            if marketing:
                return _lazy(_DROP, _R_NO_TIMEZONE, None, message, recipient, hist, rules, now)
            return _lazy(_ALLOW, None, None, message, recipient, hist, rules, now)
    # ``reference.quiet_hours_of`` and ``clock.view_at``: the local day of ``now`` with
    # its quiet spans, read from the tables of the quiet hours (the app's are in the plan).
    plan = _PLANS.get(id(rules))
    if plan is None or plan.rules is not rules:
        plan = rules_plan(rules)
    quiet = recipient.quiet_hours
    if quiet is None:
        quiet, tables = rules.quiet_hours, plan.quiet
    else:
        tables = quiet_tables(quiet)
    try:
        day = tables.days[zone][now.toordinal()]
    except KeyError:  # not memoised yet
        day = None
    if day is None:  # (also on a UTC day in which the zone changes its offset)
        view = view_in(tables, quiet, zone, now)
    else:
        view = day.before if now < day.switch else day.after

    # ``reference.check_caps``.
    caps_free, reason = now, None
    if marketing:
        caps = (
            plan.caps
            if frequency is _NORMAL or frequency is _DIGEST
            else caps_plan(rules, plan, frequency, recipient.frequency_max)
        )
        verdict = _check_caps(caps, message, hist, now, zone, view)
        if verdict is not None:
            if verdict.dropped_by is not None:
                return _lazy(_DROP, verdict.dropped_by, None, message, recipient, hist, rules, now)
            caps_free, reason = verdict.caps_free, verdict.deferred_by

    # ``reference.check_quiet_hours``: one bisect when the day's spans are disjoint.
    span: tuple[datetime, datetime] | None = None
    place = -1  # the span's place among the day's disjoint spans
    edges = view.edges
    if edges is not None:
        index = bisect_right(edges, now)
        if index & 1:
            place = index >> 1
            span = view.spans[place]
    else:
        for candidate in view.spans:
            if candidate[0] <= now < candidate[1] and (span is None or candidate[1] > span[1]):
                span = candidate

    # ``reference.check_digest`` and ``reference.schedule``: the common ALLOW and the
    # common deferral (quiet hours alone) here, the rest in ``_settle``.
    if reason is None and frequency is not _DIGEST:
        if span is None:
            trace = lazy_trace(_expand, message, recipient, hist, rules, now, _ALLOW, None, None)
            return _new(Decision, (_ALLOW, None, None, trace))
        if expires is not None and span[1] >= expires:
            return _lazy(_DROP, _R_EXPIRED, None, message, recipient, hist, rules, now)
        at = _spread_end(plan, view, place, expires, message, recipient) if place >= 0 else None
        if at is not None:
            trace = lazy_trace(
                _expand, message, recipient, hist, rules, now, _DEFER, _R_QUIET_HOURS, at
            )
            return _new(Decision, (_DEFER, _R_QUIET_HOURS, at, trace))
    return _settle(message, recipient, hist, rules, now, plan, zone, quiet, caps_free, reason, span)


def _spread_end(
    plan: RulesPlan,
    view: DayView,
    place: int,
    deadline: datetime | None,
    message: Message,
    recipient: Recipient,
) -> datetime | None:
    """``reference.schedule``'s instant when the earliest allowed one, E, is the end of
    ``view``'s disjoint quiet span ``place`` (before ``deadline``, if any): E spread
    (``Search.spread``) by the app's jitter cut to the gap before the next quiet instant,
    with ``clock.jitter_seconds`` and ``clock.add_seconds`` inlined. None when there is
    no gap (the next window starts at E), or when ``deadline`` or a jitter past the
    shared offsets could cut the spread: the general way then."""
    end = view.spans[place][1]
    jitter_span = plan.jitter_seconds
    if (
        view.clears[place] <= end
        or jitter_span > _N_SECONDS
        or (deadline is not None and end + plan.rules.jitter > deadline)
    ):
        return None
    room = view.rooms[place]
    width = jitter_span if jitter_span < room else room
    if not width:
        return end
    seed = _SEEDS.get((message.message_id, end))
    if seed is None:
        seed = jitter_seed(message.message_id, end)
    offset = (crc32(recipient.user_id.encode(), seed) * _MULT & _MASK32) * width >> 32
    return end + _SECONDS[offset]  # offset < width <= len(_SECONDS)


def _settle(
    message: Message,
    recipient: Recipient,
    hist: ContactHistory,
    rules: Rules,
    now: datetime,
    plan: RulesPlan,
    zone: ZoneInfo,
    quiet: QuietHours,
    caps_free: datetime,
    blocked_by: Reason | None,
    span: tuple[datetime, datetime] | None,
) -> Decision:
    """``reference.check_digest`` for a DIGEST user's marketing, then
    ``reference.schedule`` for a message the caps (until ``caps_free``), quiet hours
    (``span`` holds ``now``) or the digest slot block.

    A deferral by the caps alone settles here without the search when E is
    ``caps_free`` itself (no quiet window holds it) or the end of the disjoint quiet span
    holding it (spread by ``_spread_end``), or when ``caps_free`` is past the deadline.
    """
    if recipient.frequency is _DIGEST and message.category.kind is _MARKETING:
        digest = recipient.digest if recipient.digest is not None else rules.default_digest
        search = Search(message, recipient, hist, rules, zone, quiet, digest)
        if blocked_by is None and span is None:
            if check_digest(search, now, []):
                return _lazy(_ALLOW, None, None, message, recipient, hist, rules, now)
            blocked_by = _R_DIGEST
    else:
        if blocked_by is not None:
            expires = message.expires_at
            deadline = now + HORIZON
            if expires is not None and expires < deadline:
                deadline = expires
            if caps_free >= deadline:
                if expires is not None and caps_free >= expires:
                    blocked_by = _R_EXPIRED
                return _lazy(_DROP, blocked_by, None, message, recipient, hist, rules, now)
            view = view_at(quiet, zone, caps_free)
            edges = view.edges
            if edges is not None:
                index = bisect_right(edges, caps_free)
                if not index & 1:
                    until: datetime | None = caps_free
                elif view.spans[index >> 1][1] < deadline:
                    until = _spread_end(plan, view, index >> 1, deadline, message, recipient)
                else:
                    until = None
                if until is not None:
                    return _lazy(_DEFER, blocked_by, until, message, recipient, hist, rules, now)
        search = Search(message, recipient, hist, rules, zone, quiet, None)
    outcome, reason, until, _ = schedule(search, now, caps_free, blocked_by or _R_QUIET_HOURS)
    return _lazy(outcome, reason, until, message, recipient, hist, rules, now)


def _check_caps(
    caps: CapPlan,
    message: Message,
    hist: ContactHistory,
    now: datetime,
    zone: ZoneInfo,
    view: DayView,
) -> CapVerdict | None:
    """``reference.check_caps`` over the compiled rules, one group at a time: None when
    no rule is full (no verdict to read), else the DROP reason of the first full
    dropping rule, the instant every deferring rule allows again and the reason of the
    one freeing last. A rule is full exactly when its ``limit``-th latest send lies in
    its window (the instants are sorted): one look, not a count."""
    rolling, scoped, other = caps
    dropped_by: Reason | None = None
    caps_free = now
    reason: Reason | None = None
    if rolling:
        times = hist.marketing_times
        if times is None:
            times = hist.marketing
        count = len(times)
        for limit, width, drops, preference in rolling:
            if count >= limit:
                frees = times[-limit] + width
                if frees > now:
                    if drops:
                        dropped_by = dropped_by or (_R_FREQUENCY if preference else _R_CAPPED)
                    elif frees > caps_free:
                        caps_free, reason = frees, _R_FREQUENCY if preference else _R_CAPPED
    for by_campaign, group in scoped:
        # The message's category (campaign) list, through the history's slot when built.
        if by_campaign:
            campaign_id = message.campaign_id
            if campaign_id is None:
                continue  # a message with no campaign (say, only a trigger) is not capped
            times = (hist.campaigns or _UNBUILT).get(campaign_id)
            if times is None:
                times = hist.campaign_times(campaign_id)
        else:
            category_id = message.category.category_id
            times = (hist.categories or _UNBUILT).get(category_id)
            if times is None:
                times = hist.category_times(category_id)
        count = len(times)
        for limit, window, calendar_day, drops, preference in group:
            if count < limit:
                continue
            kth = times[-limit]
            if window is not None:
                frees = kth + window
                if frees <= now:
                    continue
            else:
                period = view if calendar_day else week_bounds(zone, view.ordinal)
                if kth < period.start:
                    continue
                frees = calendar_free_at(calendar_day, limit, times, period.end, zone)
            if drops:
                dropped_by = dropped_by or (_R_FREQUENCY if preference else _R_CAPPED)
            elif frees > caps_free:
                caps_free, reason = frees, _R_FREQUENCY if preference else _R_CAPPED
    if other:
        dropped_by, caps_free, reason = _other_caps(
            other, message, hist, now, zone, view, dropped_by, caps_free, reason
        )
    if dropped_by is None and reason is None:
        return None
    return _new(CapVerdict, (dropped_by, caps_free, reason))


def _other_caps(
    other: tuple[OtherCap, ...],
    message: Message,
    hist: ContactHistory,
    now: datetime,
    zone: ZoneInfo,
    view: DayView,
    dropped_by: Reason | None,
    caps_free: datetime,
    reason: Reason | None,
) -> tuple[Reason | None, datetime, Reason | None]:
    """``reference.check_caps`` for the rules outside the two common groups (targeted,
    per campaign, calendar ALL_MARKETING such as the opt-down, or counting transactional
    sends): the verdict so far, updated."""
    category_id = message.category.category_id
    for selector, target, window, calendar_day, limit, drops, preference in other:
        if selector in (SELECT_CATEGORY, SELECT_CATEGORY_ALL):
            if target is not None and target != category_id:
                continue
            times = hist.category_times(category_id, selector == SELECT_CATEGORY_ALL)
        elif selector == SELECT_MARKETING:
            times = hist.marketing
        elif selector == SELECT_ALL:
            times = hist.all
        else:
            campaign_id = message.campaign_id
            if campaign_id is None or (target is not None and target != campaign_id):
                continue
            times = hist.campaign_times(campaign_id, selector == SELECT_CAMPAIGN_ALL)
        if len(times) < limit:
            continue
        kth = times[-limit]
        if window is not None:
            frees = kth + window
            if frees <= now:
                continue
        else:
            start, end = (view.start, view.end) if calendar_day else week_bounds(zone, view.ordinal)
            if kth < start:
                continue
            frees = calendar_free_at(calendar_day, limit, times, end, zone)
        if drops:
            dropped_by = dropped_by or (_R_FREQUENCY if preference else _R_CAPPED)
        elif frees > caps_free:
            caps_free, reason = frees, _R_FREQUENCY if preference else _R_CAPPED
    return dropped_by, caps_free, reason


_Source = tuple[
    Message, Recipient, ContactHistory, Rules, datetime, Outcome, Reason | None, datetime | None
]


def _expand(source: tuple[object, ...]) -> tuple[TraceStep, ...]:
    """Build a lazy trace's steps with the reference evaluator, which must agree."""
    message, recipient, hist, rules, now, outcome, reason, until = cast(_Source, source)
    got = evaluate(message, recipient, hist, rules, now)
    if got[:3] != (outcome, reason, until):
        raise AssertionError(
            f"the reference evaluator disagrees: {got[:3]} != {(outcome, reason, until)}"
        )
    return got.steps


def _lazy(
    outcome: Outcome,
    reason: Reason | None,
    until: datetime | None,
    message: Message,
    recipient: Recipient,
    hist: ContactHistory,
    rules: Rules,
    now: datetime,
) -> Decision:
    """A decision whose trace is built from its inputs when read."""
    trace = lazy_trace(_expand, message, recipient, hist, rules, now, outcome, reason, until)
    return _new(Decision, (outcome, reason, until, trace))


class Budget(NamedTuple):
    """How many more sends of a message the caps allow now (None: no cap applies)."""

    remaining: int | None
    binding_rule: CapRule | None
    steps: tuple[CapStep, ...]


def remaining_budget(
    message: Message,
    recipient: Recipient,
    history: ContactHistory | Iterable[ContactEntry],
    rules: Rules,
    now: datetime,
) -> Budget:
    """The cap budget left for ``message`` at ``now``: the tightest rule's limit minus count.

    Transactional messages are never capped (``remaining=None``). A recipient with no zone
    and a calendar rule in play has no budget, as ``decide`` would drop the message.
    """
    if message.category.kind is not _MARKETING:
        return Budget(None, None, ())
    now = _as_utc(now)
    hist = as_history(history)
    _, zone = resolve_zone(recipient.zone, recipient.device_zone, rules.default_zone)
    steps: list[CapStep] = []
    remaining: int | None = None
    binding: CapRule | None = None
    for rule in rules.caps_for(recipient.frequency, recipient.frequency_max):
        if not rule_applies(rule, message):
            continue
        if zone is None and not isinstance(rule.window, timedelta):
            return Budget(0, rule, tuple(steps))
        ordinal = now.astimezone(zone).toordinal() if zone is not None else 0
        step = evaluate_cap(rule, hist.times_for(rule, message), now, zone, ordinal)
        steps.append(step)
        left = max(0, step.limit - step.in_window)
        if remaining is None or left < remaining:
            remaining, binding = left, rule
    if recipient.frequency is _DIGEST and zone is not None:
        digest = recipient.digest if recipient.digest is not None else rules.default_digest
        _, start = digest_period(digest, zone, now)
        marketing = hist.marketing
        left = 0 if len(marketing) - bisect_left(marketing, start) else 1
        if remaining is None or left < remaining:
            remaining, binding = left, None
    return Budget(remaining, binding, tuple(steps))
