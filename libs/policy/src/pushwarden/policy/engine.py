"""``decide``: one message, one recipient, one answer with its trace.

Order of evaluation (the first failing gate ends the decision):

1. gates on facts: ERASED, SUPPRESSED, HOLDOUT, DUPLICATE, EXPIRED, channel and marketing
   consent (OPTED_OUT), CATEGORY_OPTED_OUT, TOPIC_OPTED_OUT, NO_PERMISSION, NO_DEVICE;
   transactional messages skip suppression, holdout and the marketing consents, and only
   honour category or topic opt-outs when their category allows opting out;
2. transactional messages stop here (ALLOW) unless they opted in to quiet hours;
3. the zone chain (profile → device → app default; NO_TIMEZONE for marketing if empty);
4. every applicable cap rule (app caps plus the user's opt-down), then quiet hours, then
   the DIGEST slot; a DROP cap ends in DROP CAPPED, anything else blocked is deferred to
   the earliest instant at which all of them allow (a fixed point, see ``_Search.earliest``),
   or dropped as EXPIRED if that instant is at or past the message's expiry.

Two evaluators share every helper: ``decide`` runs the fast one, which computes the
outcome, reason and instant without building trace steps, and returns a ``Trace`` that
the tracing evaluator (``_traced``) fills in from the same inputs when someone reads it;
that evaluator checks it reaches the same answer, and a property test runs both on every
drawn scenario. A cap that was exceeded reports CAPPED, or FREQUENCY_PREFERENCE when the
rule that decides (the first dropping rule; for a deferral the rule that frees last, app
rules first on a tie) is the one the user's opt-down added.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable
from datetime import UTC, date, datetime, timedelta
from typing import NamedTuple, cast
from zlib import crc32
from zoneinfo import ZoneInfo

from .caps import calendar_free_at, evaluate_cap, rule_applies
from .clock import (
    _MASK32,
    _MIX32,
    _SECOND,
    _SECONDS,
    _SEEDS,
    add_seconds,
    digest_period,
    jitter_seconds,
    jitter_seed,
    next_quiet,
    quiet_day,
    quiet_window_at,
    view_at,
)
from .history import ContactHistory, as_history
from .model import (
    SELECT_ALL,
    SELECT_CAMPAIGN_ALL,
    SELECT_CATEGORY,
    SELECT_CATEGORY_ALL,
    SELECT_MARKETING,
    CapRule,
    ContactEntry,
    DigestPeriod,
    DigestSlot,
    FrequencyPreference,
    Message,
    MessageKind,
    QuietHours,
    Recipient,
    Rules,
)
from .trace import (
    CapStep,
    Check,
    Decision,
    DigestStep,
    GateStep,
    Hop,
    Outcome,
    QuietStep,
    Reason,
    ScheduleStep,
    Trace,
    TraceStep,
    ZoneStep,
)
from .zones import (
    _ZONES,
    local_ordinal,
    localize,
    resolve_zone,
    week_bounds,
)

__all__ = ["Budget", "decide", "remaining_budget"]

# How far ahead the deferral search looks before giving up (quiet hours covering every
# hour, or a digest slot that never opens, would otherwise never settle).
_HORIZON = timedelta(days=400)
_MAX_HOPS = 64

_Gate = Callable[[Message, Recipient, ContactHistory, datetime], bool]


def _erased(m: Message, r: Recipient, h: ContactHistory, now: datetime) -> bool:
    return r.erased


def _suppressed(m: Message, r: Recipient, h: ContactHistory, now: datetime) -> bool:
    return r.suppressed


def _holdout(m: Message, r: Recipient, h: ContactHistory, now: datetime) -> bool:
    source = m.source_id
    return source is not None and source in r.holdout_sources


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
    return m.category.opt_out_allowed and m.category.category_id in r.category_opt_outs


def _topic_if_allowed(m: Message, r: Recipient, h: ContactHistory, now: datetime) -> bool:
    return m.category.opt_out_allowed and _topic(m, r, h, now)


def _permission(m: Message, r: Recipient, h: ContactHistory, now: datetime) -> bool:
    return not r.os_permission


def _devices(m: Message, r: Recipient, h: ContactHistory, now: datetime) -> bool:
    return r.usable_devices <= 0


_MARKETING_GATES: tuple[tuple[Check, Reason, _Gate], ...] = (
    (Check.ERASED, Reason.ERASED, _erased),
    (Check.SUPPRESSION, Reason.SUPPRESSED, _suppressed),
    (Check.HOLDOUT, Reason.HOLDOUT, _holdout),
    (Check.DUPLICATE, Reason.DUPLICATE, _duplicate),
    (Check.EXPIRY, Reason.EXPIRED, _expired),
    (Check.CHANNEL_CONSENT, Reason.OPTED_OUT, _channel),
    (Check.MARKETING_CONSENT, Reason.OPTED_OUT, _marketing),
    (Check.CATEGORY_CONSENT, Reason.CATEGORY_OPTED_OUT, _category),
    (Check.TOPIC_CONSENT, Reason.TOPIC_OPTED_OUT, _topic),
    (Check.OS_PERMISSION, Reason.NO_PERMISSION, _permission),
    (Check.DEVICES, Reason.NO_DEVICE, _devices),
)

# Transactional sends skip suppression lists, holdouts and the marketing consents (the
# channel consent is the marketing subscription state, as in Braze or OneSignal).
_TRANSACTIONAL_GATES: tuple[tuple[Check, Reason, _Gate], ...] = (
    (Check.ERASED, Reason.ERASED, _erased),
    (Check.DUPLICATE, Reason.DUPLICATE, _duplicate),
    (Check.EXPIRY, Reason.EXPIRED, _expired),
    (Check.CATEGORY_CONSENT, Reason.CATEGORY_OPTED_OUT, _category_if_allowed),
    (Check.TOPIC_CONSENT, Reason.TOPIC_OPTED_OUT, _topic_if_allowed),
    (Check.OS_PERMISSION, Reason.NO_PERMISSION, _permission),
    (Check.DEVICES, Reason.NO_DEVICE, _devices),
)

# Gate outcomes carry no numbers, so each is a shared constant: no allocation per decision.
_PASS = {check: GateStep(check, True) for check in Check}
_FAIL = {check: GateStep(check, False) for check in Check}
_MARKETING_PREFIX: tuple[TraceStep, ...] = tuple(_PASS[row[0]] for row in _MARKETING_GATES)
_TRANSACTIONAL_PREFIX: tuple[TraceStep, ...] = (
    *(_PASS[row[0]] for row in _TRANSACTIONAL_GATES),
    _PASS[Check.TRANSACTIONAL_EXEMPTION],
)


# Enum members bound once: attribute access on an Enum class costs ~90 ns in 3.11.
_ALLOW = Outcome.ALLOW
_C_CAP = Check.CAP
_C_DIGEST = Check.DIGEST
_C_QUIET_HOURS = Check.QUIET_HOURS
_C_SCHEDULE = Check.SCHEDULE
_C_ZONE = Check.ZONE
_DEFER = Outcome.DEFER
_DROP = Outcome.DROP
_FP_DIGEST = FrequencyPreference.DIGEST
_FP_NORMAL = FrequencyPreference.NORMAL
_MK_MARKETING = MessageKind.MARKETING
_R_CAPPED = Reason.CAPPED
_R_DIGEST = Reason.DIGEST
_R_EXPIRED = Reason.EXPIRED
_R_FREQUENCY = Reason.FREQUENCY_PREFERENCE
_R_NO_TIMEZONE = Reason.NO_TIMEZONE
_R_QUIET_HOURS = Reason.QUIET_HOURS


def _constant(outcome: Outcome, reason: Reason | None, steps: tuple[TraceStep, ...]) -> Decision:
    return Decision(outcome, reason, None, Trace.of(steps))


def _gate_drops(gates: tuple[tuple[Check, Reason, _Gate], ...]) -> tuple[Decision, ...]:
    """For each gate, the whole DROP decision when it is the first to fail: built once."""
    return tuple(
        _constant(_DROP, reason, (*(_PASS[row[0]] for row in gates[:index]), _FAIL[check]))
        for index, (check, reason, _) in enumerate(gates)
    )


_MARKETING_DROPS = _gate_drops(_MARKETING_GATES)
_TRANSACTIONAL_DROPS = _gate_drops(_TRANSACTIONAL_GATES)
_TRANSACTIONAL_ALLOW = _constant(_ALLOW, None, _TRANSACTIONAL_PREFIX)


def _transactional_gate(m: Message, r: Recipient, h: ContactHistory, now: datetime) -> int:
    """Index in ``_TRANSACTIONAL_GATES`` of the first gate that fails, or -1 if all pass.

    The table spelled out (a call per gate costs more than the gate): the tracing
    evaluator walks the table itself, and the property tests check the two agree.
    """
    if r.erased:
        return 0
    if m.send_key in h.send_keys:  # never holds None
        return 1
    expires = m.expires_at
    if expires is not None and now >= expires:
        return 2
    if m.category.opt_out_allowed:
        if m.category.category_id in r.category_opt_outs:
            return 3
        if m.topic_id in r.topic_opt_outs:
            return 4
    if not r.os_permission:
        return 5
    if r.usable_devices <= 0:
        return 6
    return -1


def _marketing_gate(m: Message, r: Recipient, h: ContactHistory, now: datetime) -> int:
    """Index in ``_MARKETING_GATES`` of the first gate that fails (one is known to fail).

    The table spelled out, as ``_transactional_gate``.
    """
    if r.erased:
        return 0
    if r.suppressed:
        return 1
    if m.source_id in r.holdout_sources:
        return 2
    if m.send_key in h.send_keys:
        return 3
    expires = m.expires_at
    if expires is not None and now >= expires:
        return 4
    if not r.push_consent:
        return 5
    if r.marketing_opt_out:
        return 6
    if m.category.category_id in r.category_opt_outs:
        return 7
    if m.topic_id in r.topic_opt_outs:
        return 8
    if not r.os_permission:
        return 9
    if r.usable_devices <= 0:
        return 10
    raise AssertionError("a gate failed in the fast check but not in the table")


_ZoneKey = tuple[str | None, str | None, str | None]
_RESOLVED: dict[_ZoneKey, tuple[ZoneInfo | None, ZoneStep]] = {}
_RESOLVED_LIMIT = 1 << 14


def _resolve(
    profile: str | None, device: str | None, default: str | None
) -> tuple[ZoneInfo | None, ZoneStep]:
    """``resolve_zone`` plus its trace step, memoised on the three names."""
    key = (profile, device, default)
    try:
        return _RESOLVED[key]
    except KeyError:
        pass
    source, zone = resolve_zone(profile, device, default)
    step = ZoneStep(_C_ZONE, zone is not None, source, None if zone is None else zone.key)
    if len(_RESOLVED) >= _RESOLVED_LIMIT:
        _RESOLVED.clear()
    _RESOLVED[key] = (zone, step)
    return zone, step


_new = tuple.__new__  # skips NamedTuple's Python-level __new__ on the hot path


def _as_utc(now: datetime) -> datetime:
    if now.tzinfo is UTC:
        return now
    if now.utcoffset() is None:
        raise ValueError("now must be timezone-aware")
    return now.astimezone(UTC)


_DigestKey = tuple[DigestSlot, ZoneInfo, QuietHours, int]
_Period = tuple[datetime, datetime, datetime]  # start, slot opens, next start
_DigestPeriods = tuple[_Period, _Period]
_DIGESTS: dict[_DigestKey, _DigestPeriods] = {}
_DIGESTS_LIMIT = 1 << 14


class _Search:
    """Everything the deferral search needs, gathered only on the DEFER path."""

    __slots__ = ("digest", "grace", "history", "message", "quiet", "recipient", "rules", "zone")

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
        self.recipient = recipient
        self.history = history
        self.rules = rules
        self.zone = zone
        self.quiet = quiet
        self.digest = digest
        self.grace = rules.digest_grace

    def jitter(self, anchor: datetime, width: int) -> int:
        return jitter_seconds(self.recipient.user_id, self.message.message_id, anchor, width)

    def quiet_span(self, at: datetime) -> tuple[datetime, datetime] | None:
        return quiet_window_at(self.quiet, self.zone, at, local_ordinal(self.zone, at))

    def quiet_clear(self, at: datetime) -> datetime:
        """First instant at or after ``at`` outside quiet hours, without jitter."""
        for _ in range(_MAX_HOPS):
            span = self.quiet_span(at)
            if span is None:
                return at
            at = span[1]
        return at

    def digest_state(self, at: datetime) -> tuple[datetime, datetime, int, datetime]:
        """(period start, slot opens, sends since period start, next period start) at ``at``."""
        assert self.digest is not None
        key = (self.digest, self.zone, self.quiet, local_ordinal(self.zone, at))
        periods = _DIGESTS.get(key)
        if periods is None:
            periods = self._digest_periods(key)
        start, opens, nxt = periods[1] if at >= periods[1][0] else periods[0]
        marketing = self.history.marketing
        sent = len(marketing) - bisect_left(marketing, start)
        return start, opens, sent, nxt

    def _digest_periods(self, key: _DigestKey) -> _DigestPeriods:
        """The periods ``digest_state`` picks from on one local day, memoised.

        ``clock.digest_period`` for an instant of that day gives the period starting at
        the day's (or week's) slot once it has passed, the one before otherwise.
        """
        slot, zone, _, ordinal = key
        day = date.fromordinal(ordinal)
        step = timedelta(days=7 if slot.period is DigestPeriod.WEEKLY else 1)
        if slot.period is DigestPeriod.WEEKLY:
            day -= timedelta(days=(day.weekday() - slot.weekday) % 7)
        before, this, after = (localize(zone, d, slot.at) for d in (day - step, day, day + step))
        periods = (
            (before, self.quiet_clear(before), this),
            (this, self.quiet_clear(this), after),
        )
        if len(_DIGESTS) >= _DIGESTS_LIMIT:
            _DIGESTS.clear()
        _DIGESTS[key] = periods
        return periods

    def digest_open(self, at: datetime) -> tuple[datetime, datetime]:
        """First instant at or after ``at`` inside an unused, open digest slot, and the
        instant that slot closes."""
        assert self.digest is not None
        _, opens, sent, nxt = self.digest_state(at)
        for _ in range(_MAX_HOPS):
            if sent == 0 and opens < nxt:
                closes = opens + self.grace
                if closes > nxt:
                    closes = nxt
                if at < opens:
                    return opens, closes
                if at < closes:
                    return at, closes
            at = max(at, nxt)
            _, opens, sent, nxt = self.digest_state(nxt)
        return at + _HORIZON, at + _HORIZON

    def earliest(
        self,
        now: datetime,
        caps_free: datetime,
        span: tuple[datetime, datetime] | None,
        deadline: datetime,
    ) -> tuple[datetime, tuple[Hop, ...], bool]:
        """The deferral instant: the earliest instant every rule allows, spread by jitter.

        ``caps_free`` is the first instant every cap allows. Counts only fall with time, so
        caps keep allowing after it and only quiet hours and the digest slot can still move
        the instant; they are applied until neither moves it (a fixed point): that is the
        earliest allowed instant E. ``span`` is the quiet window already found at
        ``caps_free``, if any. The search stops without an answer (``False``) once the
        instant reaches ``deadline`` (the message's expiry or the search horizon).

        When a window end or a digest slot set E, the answer is spread to
        ``E + jitter_seconds(...)`` within ``[E, E + width)``: ``width`` is the app's jitter
        cut to the allowed stretch that starts at E (up to the next quiet window, the
        digest slot's close and the deadline), so the answer is always allowed and never
        jumps over a short gap between windows.
        """
        at = caps_free
        hops: list[Hop] = []
        moved_by: Check | None = None  # what set the instant last (None: caps or now)
        closes: datetime | None = None  # the open digest slot's close, for digest users
        if at > now:
            hops.append(_new(Hop, (_C_CAP, at, 0)))
            if at >= deadline:
                return at, tuple(hops), False
            span = self.quiet_span(at)
        for _ in range(_MAX_HOPS):
            if span is not None:
                at = span[1]
                moved_by = _C_QUIET_HOURS
                hops.append(_new(Hop, (_C_QUIET_HOURS, at, 0)))
                if at >= deadline:
                    return at, tuple(hops), False
                span = self.quiet_span(at)
                continue
            if self.digest is not None:
                opened, closes = self.digest_open(at)
                if opened > at:
                    at = opened
                    moved_by = _C_DIGEST
                    hops.append(_new(Hop, (_C_DIGEST, at, 0)))
                    if at >= deadline:
                        return at, tuple(hops), False
                    span = self.quiet_span(at)
                    continue
            break
        else:
            return at, tuple(hops), False
        if moved_by is not None and self.rules.jitter_seconds:
            stretch_end = min(next_quiet(self.quiet, self.zone, at), deadline)
            if closes is not None and closes < stretch_end:
                stretch_end = closes
            width = min(self.rules.jitter_seconds, (stretch_end - at) // _SECOND)
            jitter = self.jitter(at, width)
            if jitter:
                at = add_seconds(at, jitter)
                hops[-1] = _new(Hop, (moved_by, at, jitter))
        return at, tuple(hops), True


def decide(
    message: Message,
    recipient: Recipient,
    history: ContactHistory | Iterable[ContactEntry],
    rules: Rules,
    now: datetime,
) -> Decision:
    """Decide whether ``message`` goes to ``recipient`` now, later, or never.

    Pure: the same arguments always give the same decision. ``history`` is best passed as
    a prepared ``ContactHistory`` when several messages are decided for one recipient.
    The decision's ``trace`` is built from the same inputs on first read (see ``Trace``).

    This is the hot path, written as one function on purpose: the gates, the zone, the
    caps, quiet hours and the first round of the deferral search are inlined (a call
    with its arguments costs about as much as a whole check). ``_traced`` is the readable
    twin that builds every step; property tests check that the two always agree.
    """
    if now.tzinfo is not UTC:
        now = _as_utc(now)
    hist = history if type(history) is ContactHistory else as_history(history)
    category = message.category
    if category.kind is _MK_MARKETING:
        # ``_MARKETING_GATES`` in one expression (the id sets never hold None, so an
        # absent id needs no test of its own; an empty set, shared by all recipients, is
        # tested first so the id is not even hashed); ``_marketing_gate`` finds the reason.
        source_id = message.source_id
        expires = message.expires_at
        if (
            recipient.marketing_blocked
            or (recipient.holdout_sources and source_id in recipient.holdout_sources)
            or message.send_key in hist.send_keys
            or (expires is not None and now >= expires)
            or category.category_id in recipient.category_opt_outs
            or (recipient.topic_opt_outs and message.topic_id in recipient.topic_opt_outs)
        ):
            return _MARKETING_DROPS[_marketing_gate(message, recipient, hist, now)]
        marketing = True
    else:
        failed = _transactional_gate(message, recipient, hist, now)
        if failed >= 0:
            return _TRANSACTIONAL_DROPS[failed]
        if not message.respects_quiet_hours:
            return _TRANSACTIONAL_ALLOW
        marketing = False
        expires = message.expires_at
        frequency = _FP_NORMAL  # opt-down and digest never apply to transactional sends

    # The zone: a valid profile zone (the common case) is one lookup in the zone cache
    # (which never holds None or the empty name).
    zone = _ZONES.get(recipient.zone)
    if zone is None:
        zone = _resolve(recipient.zone, recipient.device_zone, rules.default_zone)[0]
        if zone is None:
            if marketing:
                return _lazy(_DROP, _R_NO_TIMEZONE, None, message, recipient, hist, rules, now)
            return _lazy(_ALLOW, None, None, message, recipient, hist, rules, now)
    # The local day of ``now``: its bounds and quiet spans (``clock.view_at``, inlined).
    quiet = recipient.quiet_hours
    if quiet is None:
        quiet = rules.quiet_hours
    try:
        day = quiet.days_cache[zone][now.toordinal()]
    except KeyError:
        day = quiet_day(quiet, zone, now.toordinal())
    # (``day`` is None on a UTC day in which the zone changes its offset.)
    local = view_at(quiet, zone, now) if day is None else day[1] if now < day[0] else day[2]
    ordinal, day_start, day_end, spans, edges, clears, rooms = local

    reason: Reason | None = None
    caps_free = now
    if marketing:
        frequency = recipient.frequency
        rolling, per_category, rest = (
            rules.parts
            if frequency is _FP_NORMAL
            else rules.parts_for(frequency, recipient.frequency_max)
        )
        drop_reason: Reason | None = None
        if rolling:
            # Every rolling ALL_MARKETING rule counts the one marketing list.
            times = hist.marketing_times
            if times is None:
                times = hist.marketing
            count = len(times)
            for limit, width, drops, preference in rolling:
                # ``times`` is sorted, so the window holds ``limit`` or more sends exactly
                # when the ``limit``-th latest send is inside it: one look, not a count.
                if count >= limit:
                    frees = times[-limit] + width
                    if frees > now:
                        # Full. The first dropping rule decides a DROP; the rule that
                        # frees last decides a deferral (app rules first on a tie).
                        if drops:
                            if drop_reason is None:
                                drop_reason = _R_FREQUENCY if preference else _R_CAPPED
                        elif frees > caps_free:
                            caps_free = frees
                            reason = _R_FREQUENCY if preference else _R_CAPPED
        category_id = category.category_id
        if per_category:
            # Every per-category rule counts the message's own category.
            built = hist.categories
            times = built.get(category_id) if built is not None else None
            if times is None:
                times = hist.category_times(category_id)
            count = len(times)
            for limit, window, calendar_day, drops, preference in per_category:
                if count < limit:
                    continue
                kth = times[-limit]
                if window is not None:
                    frees = kth + window
                    if frees <= now:
                        continue
                elif calendar_day:
                    if kth < day_start:
                        continue
                    frees = calendar_free_at(True, limit, times, day_end, zone)
                else:
                    week = week_bounds(zone, ordinal)
                    if kth < week[0]:
                        continue
                    frees = calendar_free_at(False, limit, times, week[1], zone)
                if drops:
                    if drop_reason is None:
                        drop_reason = _R_FREQUENCY if preference else _R_CAPPED
                elif frees > caps_free:
                    caps_free = frees
                    reason = _R_FREQUENCY if preference else _R_CAPPED
        for selector, target, window, calendar_day, limit, drops, preference in rest:
            # The history's lazy lists, read through their slots when already built.
            if selector == SELECT_CATEGORY:
                if target is not None and target != category_id:
                    continue
                built = hist.categories
                times = built.get(category_id) if built is not None else None
                if times is None:
                    times = hist.category_times(category_id)
            elif selector == SELECT_MARKETING:
                times = hist.marketing_times
                if times is None:
                    times = hist.marketing
            elif selector == SELECT_ALL:
                times = hist.all
            elif selector == SELECT_CATEGORY_ALL:
                if target is not None and target != category_id:
                    continue
                times = hist.category_times(category_id, True)
            else:
                if source_id is None or (target is not None and target != message.campaign_id):
                    continue
                times = hist.source_times(
                    message.campaign_id, message.trigger_id, selector == SELECT_CAMPAIGN_ALL
                )
            if len(times) < limit:
                continue  # fewer sends in all the history than the limit: cannot be full
            kth = times[-limit]
            if window is not None:
                if kth <= now - window:
                    continue
                frees = kth + window
            else:
                if calendar_day:
                    period_start, period_end = day_start, day_end
                else:
                    period_start, period_end = week_bounds(zone, ordinal)
                if kth < period_start:
                    continue
                frees = calendar_free_at(calendar_day, limit, times, period_end, zone)
            if drops:
                if drop_reason is None:
                    drop_reason = _R_FREQUENCY if preference else _R_CAPPED
            elif frees > caps_free:
                caps_free = frees
                reason = _R_FREQUENCY if preference else _R_CAPPED
        if drop_reason is not None:
            return _lazy(_DROP, drop_reason, None, message, recipient, hist, rules, now)

    # ``clock.quiet_window_at``, inlined: one bisect when the day's spans are disjoint.
    span: tuple[datetime, datetime] | None = None
    place = -1  # the span's place among the day's disjoint spans
    if edges is not None:
        if edges:
            index = bisect_right(edges, now)
            if index & 1:
                place = index >> 1
                span = spans[place]
    else:
        for candidate in spans:
            if candidate[0] <= now < candidate[1] and (span is None or candidate[1] > span[1]):
                span = candidate

    if frequency is _FP_DIGEST:  # (always NORMAL for a transactional message)
        digest = recipient.digest if recipient.digest is not None else rules.default_digest
        search = _Search(message, recipient, hist, rules, zone, quiet, digest)
        _, opens, sent, _ = search.digest_state(now)
        if reason is None and span is None:
            if sent == 0 and opens <= now < opens + rules.digest_grace:
                return _lazy(_ALLOW, None, None, message, recipient, hist, rules, now)
            reason = _R_DIGEST
        outcome, reason, until, _ = _settle(
            search, message, now, caps_free, span, reason or _R_QUIET_HOURS
        )
        return _lazy(outcome, reason, until, message, recipient, hist, rules, now)

    if span is None:
        if reason is None:
            # ALLOW, the common case: ``_lazy`` spelled out.
            trace = Trace()
            trace._steps = None
            trace._source = (_expand, message, recipient, hist, rules, now, _ALLOW, None, None)
            return _new(Decision, (_ALLOW, None, None, trace))
    elif reason is None:
        # Quiet hours alone, the common deferral: ``_Search.earliest`` for a window whose
        # end is allowed (the next window starts later) and whose spread the expiry does
        # not cut; anything else takes the general search below.
        end = span[1]
        if expires is not None and end >= expires:
            return _lazy(_DROP, _R_EXPIRED, None, message, recipient, hist, rules, now)
        jitter_span = rules.jitter_seconds
        if (
            place >= 0
            and clears[place] > end
            and jitter_span < 86400
            and (expires is None or end + rules.jitter <= expires)
        ):
            at = end
            room = rooms[place]
            spread = jitter_span if jitter_span < room else room
            if spread:
                # ``clock.jitter_seconds`` and ``clock.add_seconds``, inlined.
                message_id = message.message_id
                seed = _SEEDS.get((message_id, end))
                if seed is None:
                    seed = jitter_seed(message_id, end)
                word = crc32(recipient.user_id.encode(), seed) * _MIX32 & _MASK32
                jitter = word * spread >> 32
                try:
                    at = end + _SECONDS[jitter]
                except IndexError:
                    at = add_seconds(end, jitter)
            trace = Trace()
            trace._steps = None
            trace._source = (
                _expand, message, recipient, hist, rules, now, _DEFER, _R_QUIET_HOURS, at
            )  # fmt: skip
            return _new(Decision, (_DEFER, _R_QUIET_HOURS, at, trace))
        reason = _R_QUIET_HOURS
    search = _Search(message, recipient, hist, rules, zone, quiet, None)
    outcome, reason, until, _ = _settle(search, message, now, caps_free, span, reason)
    return _lazy(outcome, reason, until, message, recipient, hist, rules, now)


_Source = tuple[
    Message, Recipient, ContactHistory, Rules, datetime, Outcome, Reason | None, datetime | None
]


def _expand(source: tuple[object, ...]) -> tuple[TraceStep, ...]:
    """Build a lazy trace's steps with the tracing evaluator, which must agree."""
    message, recipient, hist, rules, now, outcome, reason, until = cast(_Source, source)
    got = _traced(message, recipient, hist, rules, now)
    if got[:3] != (outcome, reason, until):
        raise AssertionError(
            f"tracing evaluator disagrees: {got[:3]} != {(outcome, reason, until)}"
        )
    return got[3]


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
    """A decision whose trace is built from its inputs when read (no steps on the hot path).

    ``Trace.lazy`` spelled out: this runs for every timed decision.
    """
    trace = Trace()
    trace._steps = None
    trace._source = (_expand, message, recipient, hist, rules, now, outcome, reason, until)
    return _new(Decision, (outcome, reason, until, trace))


def _settle(
    search: _Search,
    message: Message,
    now: datetime,
    caps_free: datetime,
    span: tuple[datetime, datetime] | None,
    reason: Reason,
) -> tuple[Outcome, Reason, datetime | None, ScheduleStep]:
    """A blocked message: DEFER to the earliest instant, or DROP past expiry or horizon."""
    horizon = now + _HORIZON
    expires = message.expires_at
    deadline = expires if expires is not None and expires < horizon else horizon
    until, hops, found = search.earliest(
        now, caps_free, span if caps_free == now else None, deadline
    )
    step: ScheduleStep = _new(ScheduleStep, (_C_SCHEDULE, found, until if found else None, hops))
    if found:
        return _DEFER, reason, until, step
    if expires is not None and until >= expires:
        # The earliest allowed instant is at or past the expiry (the trace's last hop
        # shows where the search passed it). A DROP carries no ``until``.
        return _DROP, _R_EXPIRED, None, step
    return _DROP, reason, None, step


_Traced = tuple[Outcome, Reason | None, datetime | None, tuple[TraceStep, ...]]


def _traced(
    message: Message, recipient: Recipient, hist: ContactHistory, rules: Rules, now: datetime
) -> _Traced:
    """The tracing evaluator: the same decision as ``decide``, with every step built."""
    marketing = message.category.kind is _MK_MARKETING
    steps: list[TraceStep] = []
    for check, reason, blocked in _MARKETING_GATES if marketing else _TRANSACTIONAL_GATES:
        if blocked(message, recipient, hist, now):
            steps.append(_FAIL[check])
            return _DROP, reason, None, tuple(steps)
        steps.append(_PASS[check])
    if not marketing:
        steps.append(_PASS[Check.TRANSACTIONAL_EXEMPTION])
        if not message.respects_quiet_hours:
            return _ALLOW, None, None, tuple(steps)
    return _traced_timed(message, recipient, hist, rules, now, tuple(steps), marketing)


def _traced_timed(
    message: Message,
    recipient: Recipient,
    hist: ContactHistory,
    rules: Rules,
    now: datetime,
    prefix: tuple[TraceStep, ...],
    marketing: bool,
) -> _Traced:
    """The wall-clock part with its steps: zone, caps, quiet hours, digest, deferral."""
    zone, zone_step = _resolve(recipient.zone, recipient.device_zone, rules.default_zone)
    steps: list[TraceStep] = [*prefix, zone_step]
    if zone is None:
        if marketing:
            return _DROP, _R_NO_TIMEZONE, None, tuple(steps)
        # An opted-in transactional message with no zone anywhere goes now: quiet hours are
        # a courtesy it asked for, and guessing UTC could hold an order update for hours.
        return _ALLOW, None, None, tuple(steps)

    ordinal = local_ordinal(zone, now)
    blocked_by: Reason | None = None
    caps_free = now
    if marketing:
        caps = rules.caps_for(recipient.frequency, recipient.frequency_max)
        dropped_by: Reason | None = None
        for rule in caps:
            if not rule_applies(rule, message):
                continue
            times = hist.times_for(rule, message)
            step = evaluate_cap(rule, times, now, zone, ordinal)
            steps.append(step)
            if step.passed:
                continue
            why = _R_FREQUENCY if rule.user_preference else _R_CAPPED
            if rule.drops:
                dropped_by = dropped_by or why
            elif step.frees_at is not None and step.frees_at > caps_free:
                caps_free, blocked_by = step.frees_at, why
        if dropped_by is not None:
            return _DROP, dropped_by, None, tuple(steps)

    quiet = recipient.quiet_hours if recipient.quiet_hours is not None else rules.quiet_hours
    span = quiet_window_at(quiet, zone, now, ordinal)
    windows = len(quiet.windows)
    if span is None:
        steps.append(QuietStep(_C_QUIET_HOURS, True, now, None, None, windows))
    else:
        steps.append(QuietStep(_C_QUIET_HOURS, False, now, span[0], span[1], windows))
        blocked_by = blocked_by or _R_QUIET_HOURS

    search: _Search | None = None
    if marketing and recipient.frequency is _FP_DIGEST:
        digest = recipient.digest if recipient.digest is not None else rules.default_digest
        search = _Search(message, recipient, hist, rules, zone, quiet, digest)
        start, opens, sent, _ = search.digest_state(now)
        closes = opens + rules.digest_grace
        open_now = sent == 0 and opens <= now < closes
        steps.append(DigestStep(_C_DIGEST, open_now, start, opens, closes, sent))
        if not open_now:
            blocked_by = blocked_by or _R_DIGEST

    if blocked_by is None:
        return _ALLOW, None, None, tuple(steps)
    if search is None:
        search = _Search(message, recipient, hist, rules, zone, quiet, None)
    outcome, reason, until, schedule = _settle(search, message, now, caps_free, span, blocked_by)
    steps.append(schedule)
    return outcome, reason, until, tuple(steps)


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
    if message.category.kind is not _MK_MARKETING:
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
        times = hist.times_for(rule, message)
        ordinal = now.astimezone(zone).toordinal() if zone is not None else 0
        step = evaluate_cap(rule, times, now, zone, ordinal)
        steps.append(step)
        left = max(0, step.limit - step.in_window)
        if remaining is None or left < remaining:
            remaining, binding = left, rule
    if recipient.frequency is _FP_DIGEST and zone is not None:
        digest = recipient.digest if recipient.digest is not None else rules.default_digest
        _, start = digest_period(digest, zone, now)
        marketing = hist.marketing
        left = 0 if len(marketing) - bisect_left(marketing, start) else 1
        if remaining is None or left < remaining:
            remaining, binding = left, None
    return Budget(remaining, binding, tuple(steps))
