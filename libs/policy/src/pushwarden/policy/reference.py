"""The policy's specification: the decision, one check at a time, with its trace.

``evaluate`` is the reference evaluator. It is written for reading: each check is one
small function, called in the order of the decision, that appends its trace step and
says whether the message may go on. ``decide`` (``engine``) is the fast path: it reaches
the same outcome, reason and instant without building steps, mirrors this module block
by block (each block names the function here it mirrors), and builds a decision's steps
with ``evaluate`` when someone reads its trace, checking that both agree. Property tests
run both on every drawn scenario.

The order of the decision:

1. gates on facts (``MARKETING_GATES`` / ``TRANSACTIONAL_GATES``): the first that fails
   drops the message with its reason;
2. the transactional exemption: a transactional message goes now unless it opted in to
   quiet hours;
3. the zone chain (profile → device → app default); a marketing message with none drops
   as NO_TIMEZONE, an opted-in transactional one goes now;
4. caps (marketing only): a full DROP rule drops; full DEFER rules defer to the instant
   the last of them frees;
5. quiet hours (marketing, and transactional messages that opted in);
6. the DIGEST slot (marketing, DIGEST users);
7. the schedule: a blocked message is deferred to the earliest instant every rule
   allows, spread by jitter within the allowed stretch that starts there, or dropped as
   EXPIRED when that instant is at or past the expiry (or with the blocking reason when
   nothing allows within the search horizon).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable
from datetime import date, datetime, timedelta
from typing import NamedTuple
from zoneinfo import ZoneInfo

from .caps import evaluate_cap, rule_applies
from .clock import (
    add_seconds,
    jitter_seconds,
    next_quiet,
    quiet_spans,
    quiet_tables,
    quiet_window_at,
)
from .history import ContactHistory
from .memo import Memo
from .model import (
    CapAction,
    DigestPeriod,
    DigestSlot,
    FrequencyPreference,
    Message,
    MessageKind,
    QuietHours,
    QuietWindow,
    Recipient,
    Rules,
)
from .trace import (
    Check,
    DigestStep,
    GateStep,
    Hop,
    Outcome,
    QuietStep,
    Reason,
    ScheduleStep,
    TraceStep,
    ZoneStep,
)
from .zones import local_ordinal, localize, resolve_zone

__all__ = [
    "HORIZON",
    "MARKETING_GATES",
    "TRANSACTIONAL_GATES",
    "Evaluation",
    "Gate",
    "Search",
    "evaluate",
    "first_failure",
    "schedule",
    "schedule_step",
    "zone_and_step",
]

HORIZON = timedelta(days=400)
"""How far ahead the deferral search looks before giving up (quiet hours covering every
hour, or a digest slot that never opens, would otherwise never settle)."""
_MAX_HOPS = 64
_SECOND = timedelta(seconds=1)


class Evaluation(NamedTuple):
    """The reference evaluator's answer: a decision's fields with every step built."""

    outcome: Outcome
    reason: Reason | None
    until: datetime | None
    steps: tuple[TraceStep, ...]


# 1. Gates on facts, as data: (check, reason when it fails, does it block?).

Blocked = Callable[[Message, Recipient, ContactHistory, datetime], bool]


class Gate(NamedTuple):
    """One gate: the check it reports, the reason it drops with, and its test."""

    check: Check
    reason: Reason
    blocked: Blocked


def _erased(m: Message, r: Recipient, h: ContactHistory, now: datetime) -> bool:
    return r.erased


def _suppressed(m: Message, r: Recipient, h: ContactHistory, now: datetime) -> bool:
    return r.suppressed


def _holdout(m: Message, r: Recipient, h: ContactHistory, now: datetime) -> bool:
    return m.source_id is not None and m.source_id in r.holdout_sources


def _duplicate(m: Message, r: Recipient, h: ContactHistory, now: datetime) -> bool:
    return m.send_key is not None and m.send_key in h.send_keys


def _expired(m: Message, r: Recipient, h: ContactHistory, now: datetime) -> bool:
    return m.expires_at is not None and now >= m.expires_at


def _channel(m: Message, r: Recipient, h: ContactHistory, now: datetime) -> bool:
    return not r.push_consent


def _marketing(m: Message, r: Recipient, h: ContactHistory, now: datetime) -> bool:
    return r.marketing_opt_out


def _category(m: Message, r: Recipient, h: ContactHistory, now: datetime) -> bool:
    return m.category.category_id in r.category_opt_outs


def _topic(m: Message, r: Recipient, h: ContactHistory, now: datetime) -> bool:
    return m.topic_id is not None and m.topic_id in r.topic_opt_outs


def _category_if_allowed(m: Message, r: Recipient, h: ContactHistory, now: datetime) -> bool:
    return m.category.opt_out_allowed and _category(m, r, h, now)


def _topic_if_allowed(m: Message, r: Recipient, h: ContactHistory, now: datetime) -> bool:
    return m.category.opt_out_allowed and _topic(m, r, h, now)


def _permission(m: Message, r: Recipient, h: ContactHistory, now: datetime) -> bool:
    return not r.os_permission


def _devices(m: Message, r: Recipient, h: ContactHistory, now: datetime) -> bool:
    return r.usable_devices <= 0


MARKETING_GATES: tuple[Gate, ...] = (
    Gate(Check.ERASED, Reason.ERASED, _erased),
    Gate(Check.SUPPRESSION, Reason.SUPPRESSED, _suppressed),
    Gate(Check.HOLDOUT, Reason.HOLDOUT, _holdout),
    Gate(Check.DUPLICATE, Reason.DUPLICATE, _duplicate),
    Gate(Check.EXPIRY, Reason.EXPIRED, _expired),
    Gate(Check.CHANNEL_CONSENT, Reason.OPTED_OUT, _channel),
    Gate(Check.MARKETING_CONSENT, Reason.OPTED_OUT, _marketing),
    Gate(Check.CATEGORY_CONSENT, Reason.CATEGORY_OPTED_OUT, _category),
    Gate(Check.TOPIC_CONSENT, Reason.TOPIC_OPTED_OUT, _topic),
    Gate(Check.OS_PERMISSION, Reason.NO_PERMISSION, _permission),
    Gate(Check.DEVICES, Reason.NO_DEVICE, _devices),
)

# Transactional sends skip suppression lists, holdouts and the marketing consents (the
# channel consent is the marketing subscription state, as in Braze or OneSignal).
TRANSACTIONAL_GATES: tuple[Gate, ...] = (
    Gate(Check.ERASED, Reason.ERASED, _erased),
    Gate(Check.DUPLICATE, Reason.DUPLICATE, _duplicate),
    Gate(Check.EXPIRY, Reason.EXPIRED, _expired),
    Gate(Check.CATEGORY_CONSENT, Reason.CATEGORY_OPTED_OUT, _category_if_allowed),
    Gate(Check.TOPIC_CONSENT, Reason.TOPIC_OPTED_OUT, _topic_if_allowed),
    Gate(Check.OS_PERMISSION, Reason.NO_PERMISSION, _permission),
    Gate(Check.DEVICES, Reason.NO_DEVICE, _devices),
)

# Gate steps carry no numbers: shared constants.
PASSED = {check: GateStep(check, True) for check in Check}
FAILED = {check: GateStep(check, False) for check in Check}


def first_failure(
    gates: tuple[Gate, ...], m: Message, r: Recipient, h: ContactHistory, now: datetime
) -> int:
    """Index of the first gate in ``gates`` that blocks, or -1."""
    for index, gate in enumerate(gates):
        if gate.blocked(m, r, h, now):
            return index
    return -1


def _gate_steps(gates: tuple[Gate, ...]) -> tuple[tuple[GateStep, ...], tuple[GateStep, ...]]:
    return tuple(PASSED[g.check] for g in gates), tuple(FAILED[g.check] for g in gates)


# Each table's steps, passed and failed, in table order (built once: an Enum's hash is
# computed in Python, so a lookup by check per step would cost more than the step).
_MARKETING_STEPS = _gate_steps(MARKETING_GATES)
_TRANSACTIONAL_STEPS = _gate_steps(TRANSACTIONAL_GATES)
_EXEMPT = PASSED[Check.TRANSACTIONAL_EXEMPTION]


def check_gates(
    m: Message, r: Recipient, h: ContactHistory, now: datetime, steps: list[TraceStep]
) -> Reason | None:
    """Step 1: the gates of the message's kind; the reason of the first that fails."""
    if m.category.kind is MessageKind.MARKETING:
        gates, (passed, failed) = MARKETING_GATES, _MARKETING_STEPS
    else:
        gates, (passed, failed) = TRANSACTIONAL_GATES, _TRANSACTIONAL_STEPS
    index = first_failure(gates, m, r, h, now)
    if index < 0:
        steps.extend(passed)
        return None
    steps.extend(passed[:index])
    steps.append(failed[index])
    return gates[index].reason


def transactional_exemption(m: Message, steps: list[TraceStep]) -> bool:
    """Step 2: whether a transactional message is done (it goes now): caps, marketing
    consent and quiet hours do not apply unless it opted in to quiet hours."""
    steps.append(_EXEMPT)
    return not m.respects_quiet_hours


# 3. The zone.

_ZONE_STEPS: Memo[tuple[str | None, str | None, str | None], tuple[ZoneInfo | None, ZoneStep]]
_ZONE_STEPS = Memo("zone steps", 1 << 14)


def zone_and_step(
    profile: str | None, device: str | None, default: str | None
) -> tuple[ZoneInfo | None, ZoneStep]:
    """``resolve_zone`` and its trace step (memoised on the three names)."""
    key = (profile, device, default)
    found = _ZONE_STEPS.data.get(key)
    if found is None:
        source, zone = resolve_zone(profile, device, default)
        step = ZoneStep(Check.ZONE, zone is not None, source, None if zone is None else zone.key)
        found = _ZONE_STEPS.put(key, (zone, step))
    return found


def check_zone(r: Recipient, rules: Rules, steps: list[TraceStep]) -> ZoneInfo | None:
    """Step 3: the recipient's zone, or None when the chain is empty."""
    zone, step = zone_and_step(r.zone, r.device_zone, rules.default_zone)
    steps.append(step)
    return zone


# 4. Caps.


class CapVerdict(NamedTuple):
    """What the caps say at ``now``: the DROP reason of the first full dropping rule, or
    the instant every deferring rule allows again and the reason of the one freeing last
    (app rules first on a tie)."""

    dropped_by: Reason | None
    caps_free: datetime
    deferred_by: Reason | None


def check_caps(
    m: Message,
    r: Recipient,
    h: ContactHistory,
    rules: Rules,
    now: datetime,
    zone: ZoneInfo,
    steps: list[TraceStep],
) -> CapVerdict:
    """Step 4: every applicable rule, the app's and then the user's opt-down."""
    ordinal = local_ordinal(zone, now)
    dropped_by: Reason | None = None
    caps_free, deferred_by = now, None
    for rule in rules.caps_for(r.frequency, r.frequency_max):
        if not rule_applies(rule, m):
            continue
        step = evaluate_cap(rule, h.times_for(rule, m), now, zone, ordinal)
        steps.append(step)
        if step.passed:
            continue
        why = Reason.FREQUENCY_PREFERENCE if rule.user_preference else Reason.CAPPED
        if rule.on_exceed is CapAction.DROP:
            dropped_by = dropped_by or why
        elif step.frees_at is not None and step.frees_at > caps_free:
            caps_free, deferred_by = step.frees_at, why
    return CapVerdict(dropped_by, caps_free, deferred_by)


# 5. Quiet hours.


def quiet_hours_of(r: Recipient, rules: Rules) -> QuietHours:
    """The user's quiet hours when set (an empty set turns them off), else the app's."""
    return r.quiet_hours if r.quiet_hours is not None else rules.quiet_hours


def check_quiet_hours(
    quiet: QuietHours, zone: ZoneInfo, now: datetime, steps: list[TraceStep]
) -> tuple[datetime, datetime] | None:
    """Step 5: the quiet window holding ``now`` (latest-ending if several), if any."""
    span = quiet_window_at(quiet, zone, now, local_ordinal(zone, now))
    windows = len(quiet.windows)
    if span is None:
        steps.append(QuietStep(Check.QUIET_HOURS, True, now, None, None, windows))
    else:
        steps.append(QuietStep(Check.QUIET_HOURS, False, now, span[0], span[1], windows))
    return span


# 6. The digest slot.


def digest_of(r: Recipient, rules: Rules) -> DigestSlot | None:
    """The slot of a DIGEST user (their own, else the app's); None for anyone else."""
    if r.frequency is not FrequencyPreference.DIGEST:
        return None
    return r.digest if r.digest is not None else rules.default_digest


def check_digest(search: Search, now: datetime, steps: list[TraceStep]) -> bool:
    """Step 6: whether the user's slot is open now with nothing sent this period."""
    start, opens, sent, nxt = search.digest_state(now)
    closes = min(opens + search.grace, nxt)
    open_now = sent == 0 and opens <= now < closes
    steps.append(DigestStep(Check.DIGEST, open_now, start, opens, closes, sent))
    return open_now


# 7. The schedule.


class Search:
    """The deferral search for one message and recipient: quiet hours, digest slots and
    the spread, over instants at or after the caps free."""

    __slots__ = (
        "digest",
        "grace",
        "history",
        "message",
        "quiet",
        "rules",
        "spans",
        "user_id",
        "zone",
    )

    def __init__(
        self,
        message: Message,
        recipient: Recipient,
        history: ContactHistory,
        rules: Rules,
        zone: ZoneInfo,
        quiet: QuietHours,
        digest: DigestSlot | None,
    ) -> None:
        self.message = message
        self.user_id = recipient.user_id
        self.history = history
        self.rules = rules
        self.zone = zone
        self.quiet = quiet
        self.digest = digest
        self.grace = rules.digest_grace
        self.spans = quiet_tables(quiet).spans

    def quiet_span(self, at: datetime) -> tuple[datetime, datetime] | None:
        """The quiet window holding ``at``, latest-ending if several
        (``clock.quiet_window_at``, reading the memo of the quiet spans directly)."""
        ordinal = local_ordinal(self.zone, at)
        spans = self.spans.get((self.zone, ordinal))
        if spans is None:
            spans = quiet_spans(self.quiet, self.zone, ordinal)
        found: tuple[datetime, datetime] | None = None
        for span in spans:
            if span[0] <= at < span[1] and (found is None or span[1] > found[1]):
                found = span
        return found

    def out_of_quiet(self, at: datetime) -> datetime:
        """The first instant at or after ``at`` outside quiet hours."""
        for _ in range(_MAX_HOPS):
            span = self.quiet_span(at)
            if span is None:
                return at
            at = span[1]
        return at

    def digest_state(self, at: datetime) -> tuple[datetime, datetime, int, datetime]:
        """(period start, slot opens, marketing sends since the start, next period start)
        of the digest period holding ``at``. The slot opens at the period's start, moved
        out of quiet hours if it falls in them."""
        assert self.digest is not None
        start, opens, nxt = _digest_period(self, self.digest, at)
        marketing = self.history.marketing
        return start, opens, len(marketing) - bisect_left(marketing, start), nxt

    def digest_open(self, at: datetime) -> tuple[datetime, datetime]:
        """The first instant at or after ``at`` inside an unused, open digest slot, and
        when that slot closes (``digest_grace`` after it opens, at the latest when the
        next period starts)."""
        _, opens, sent, nxt = self.digest_state(at)
        for _ in range(_MAX_HOPS):
            if sent == 0 and opens < nxt:
                closes = min(opens + self.grace, nxt)
                if at < opens:
                    return opens, closes
                if at < closes:
                    return at, closes
            at = max(at, nxt)
            _, opens, sent, nxt = self.digest_state(nxt)
        return at + HORIZON, at + HORIZON

    def earliest(
        self, now: datetime, caps_free: datetime, deadline: datetime
    ) -> tuple[datetime | None, list[Moved], Check | None, datetime | None]:
        """The earliest instant E at or after ``caps_free`` that quiet hours and the
        digest slot allow too, the hops that led there, what set E last (None: the caps
        or ``now``) and, for a digest user, when E's slot closes. Counts only fall with
        time, so the caps keep allowing after ``caps_free``; quiet hours and the digest
        are applied until neither moves the instant (a fixed point). E is None when a
        hop reaches ``deadline`` or the hops run out."""
        at = caps_free
        hops: list[Moved] = []
        moved_by: Check | None = None
        closes: datetime | None = None
        if at > now:
            hops.append((Check.CAP, at, 0))
        for _ in range(_MAX_HOPS):
            if at >= deadline:
                break
            span = self.quiet_span(at)
            if span is not None:
                at, moved_by = span[1], Check.QUIET_HOURS
                hops.append((Check.QUIET_HOURS, at, 0))
                continue
            if self.digest is not None:
                opened, closes = self.digest_open(at)
                if opened > at:
                    at, moved_by = opened, Check.DIGEST
                    hops.append((Check.DIGEST, at, 0))
                    continue
            return at, hops, moved_by, closes
        return None, hops, moved_by, closes

    def spread(self, at: datetime, closes: datetime | None, deadline: datetime) -> int:
        """The jitter offset of a deferral to ``at``: within the app's jitter, the allowed
        stretch from ``at`` (to the next quiet window, the digest slot's close and
        ``deadline``) and whole seconds."""
        span = self.rules.jitter // _SECOND
        if not span:
            return 0
        stretch_end = min(next_quiet(self.quiet, self.zone, at), deadline)
        if closes is not None and closes < stretch_end:
            stretch_end = closes
        width = min(span, (stretch_end - at) // _SECOND)
        return jitter_seconds(self.user_id, self.message.message_id, at, width)


class _Period(NamedTuple):
    start: datetime
    opens: datetime
    next_start: datetime


_DIGEST_PERIODS: Memo[
    tuple[DigestSlot, ZoneInfo, tuple[QuietWindow, ...], int], tuple[_Period, _Period]
] = Memo("digest periods", 1 << 14)


def _digest_period(search: Search, slot: DigestSlot, at: datetime) -> _Period:
    """(start, slot opens, next start) of the period holding ``at``, from the periods
    around ``at``'s local day (memoised per slot, zone, quiet hours and local day): the
    one starting at that day's (week's) slot once it has passed, the one before
    otherwise."""
    zone = search.zone
    key = (slot, zone, search.quiet.windows, local_ordinal(zone, at))
    periods = _DIGEST_PERIODS.data.get(key)
    if periods is None:
        day = date.fromordinal(key[3])
        step = timedelta(days=7 if slot.period is DigestPeriod.WEEKLY else 1)
        if slot.period is DigestPeriod.WEEKLY:
            day -= timedelta(days=(day.weekday() - slot.weekday) % 7)
        before, this, after = (localize(zone, d, slot.at) for d in (day - step, day, day + step))
        periods = _DIGEST_PERIODS.put(
            key,
            (
                _Period(before, search.out_of_quiet(before), this),
                _Period(this, search.out_of_quiet(this), after),
            ),
        )
    earlier, later = periods
    return later if at >= later.start else earlier


Moved = tuple[Check, datetime, int]
"""One move of the search as ``Hop``'s fields (built into ``Hop`` values only for a
trace, so the fast path's deferrals build none)."""


def schedule(
    search: Search, now: datetime, caps_free: datetime, reason: Reason
) -> tuple[Outcome, Reason, datetime | None, list[Moved]]:
    """Step 7: DEFER to the earliest allowed instant E, spread by jitter when a window's
    end or a digest slot set it; DROP as EXPIRED when E is at or past the expiry, or with
    ``reason`` when nothing allows within the horizon. A DROP carries no instant. Also
    the moves that led there (``schedule_step`` makes them a trace step)."""
    horizon = now + HORIZON
    expires = search.message.expires_at
    deadline = expires if expires is not None and expires < horizon else horizon
    at, hops, moved_by, closes = search.earliest(now, caps_free, deadline)
    if at is None:
        if expires is not None and hops and hops[-1][1] >= expires:
            return Outcome.DROP, Reason.EXPIRED, None, hops
        return Outcome.DROP, reason, None, hops
    if moved_by is not None:
        offset = search.spread(at, closes, deadline)
        if offset:
            at = add_seconds(at, offset)
            hops[-1] = (moved_by, at, offset)
    return Outcome.DEFER, reason, at, hops


def schedule_step(until: datetime | None, hops: list[Moved]) -> ScheduleStep:
    """The trace step of ``schedule``'s answer."""
    return ScheduleStep(Check.SCHEDULE, until is not None, until, tuple(Hop(*h) for h in hops))


# The whole decision.


def evaluate(
    message: Message, recipient: Recipient, history: ContactHistory, rules: Rules, now: datetime
) -> Evaluation:
    """The decision for ``message`` to ``recipient`` at ``now`` (UTC), step by step."""
    steps: list[TraceStep] = []
    marketing = message.category.kind is MessageKind.MARKETING
    dropped = check_gates(message, recipient, history, now, steps)
    if dropped is not None:
        return Evaluation(Outcome.DROP, dropped, None, tuple(steps))
    if not marketing and transactional_exemption(message, steps):
        return Evaluation(Outcome.ALLOW, None, None, tuple(steps))

    zone = check_zone(recipient, rules, steps)
    if zone is None:
        # An opted-in transactional message with no zone anywhere goes now: quiet hours are
        # a courtesy it asked for, and guessing UTC could hold an order update for hours.
        if marketing:
            return Evaluation(Outcome.DROP, Reason.NO_TIMEZONE, None, tuple(steps))
        return Evaluation(Outcome.ALLOW, None, None, tuple(steps))

    caps_free, blocked_by = now, None
    if marketing:
        verdict = check_caps(message, recipient, history, rules, now, zone, steps)
        if verdict.dropped_by is not None:
            return Evaluation(Outcome.DROP, verdict.dropped_by, None, tuple(steps))
        caps_free, blocked_by = verdict.caps_free, verdict.deferred_by

    quiet = quiet_hours_of(recipient, rules)
    if check_quiet_hours(quiet, zone, now, steps) is not None:
        blocked_by = blocked_by or Reason.QUIET_HOURS

    digest = digest_of(recipient, rules) if marketing else None
    search = Search(message, recipient, history, rules, zone, quiet, digest)
    if digest is not None and not check_digest(search, now, steps):
        blocked_by = blocked_by or Reason.DIGEST

    if blocked_by is None:
        return Evaluation(Outcome.ALLOW, None, None, tuple(steps))
    outcome, reason, until, hops = schedule(search, now, caps_free, blocked_by)
    steps.append(schedule_step(until, hops))
    return Evaluation(outcome, reason, until, tuple(steps))
