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
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import NamedTuple
from zoneinfo import ZoneInfo

from .caps import evaluate_cap, rule_applies
from .clock import digest_period, jitter_seconds, next_digest, quiet_spans, quiet_window_at
from .history import ContactHistory, as_history
from .model import (
    SELECT_ALL,
    SELECT_CATEGORY,
    SELECT_MARKETING,
    CapRule,
    ContactEntry,
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
    TraceStep,
    ZoneStep,
)
from .zones import local_ordinal, resolve_zone

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
_R_NO_TIMEZONE = Reason.NO_TIMEZONE
_R_QUIET_HOURS = Reason.QUIET_HOURS


def _marketing_clear(m: Message, r: Recipient, h: ContactHistory, now: datetime) -> bool:
    """All of ``_MARKETING_GATES`` pass, in one expression.

    The common case (nothing blocks) then costs one call instead of one per gate; the
    table stays the definition and a test checks the two agree.
    """
    source = m.campaign_id if m.campaign_id is not None else m.trigger_id
    return not (
        r.erased
        or r.suppressed
        or (source is not None and source in r.holdout_sources)
        or (m.send_key is not None and m.send_key in h.send_keys)
        or (m.expires_at is not None and now >= m.expires_at)
        or not r.push_consent
        or r.marketing_opt_out
        or m.category.category_id in r.category_opt_outs
        or (m.topic_id is not None and m.topic_id in r.topic_opt_outs)
        or not r.os_permission
        or r.usable_devices <= 0
    )


def _transactional_clear(m: Message, r: Recipient, h: ContactHistory, now: datetime) -> bool:
    """All of ``_TRANSACTIONAL_GATES`` pass, in one expression (see ``_marketing_clear``)."""
    may_opt_out = m.category.opt_out_allowed
    return not (
        r.erased
        or (m.send_key is not None and m.send_key in h.send_keys)
        or (m.expires_at is not None and now >= m.expires_at)
        or (may_opt_out and m.category.category_id in r.category_opt_outs)
        or (may_opt_out and m.topic_id is not None and m.topic_id in r.topic_opt_outs)
        or not r.os_permission
        or r.usable_devices <= 0
    )


def _gate_drop(
    gates: tuple[tuple[Check, Reason, _Gate], ...],
    m: Message,
    r: Recipient,
    h: ContactHistory,
    now: datetime,
) -> Decision:
    """Walk the gate table to the first failing gate and drop with its reason."""
    trace: list[TraceStep] = []
    for check, reason, blocked in gates:
        if blocked(m, r, h, now):
            trace.append(_FAIL[check])
            return Decision(_DROP, reason, None, tuple(trace))
        trace.append(_PASS[check])
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
_EMPTY: list[datetime] = []


def _as_utc(now: datetime) -> datetime:
    if now.tzinfo is UTC:
        return now
    if now.utcoffset() is None:
        raise ValueError("now must be timezone-aware")
    return now.astimezone(UTC)


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

    def jitter(self, anchor: datetime) -> int:
        return jitter_seconds(
            self.recipient.user_id, self.message.message_id, anchor, self.rules.jitter_seconds
        )

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
        day, start = digest_period(self.digest, self.zone, at)
        _, nxt = next_digest(self.digest, self.zone, day)
        marketing = self.history.marketing
        sent = len(marketing) - bisect_left(marketing, start)
        return start, self.quiet_clear(start), sent, nxt

    def digest_free(self, at: datetime) -> tuple[datetime, int]:
        """First instant at or after ``at`` inside an unused, open digest slot, and its jitter."""
        assert self.digest is not None
        _, opens, sent, nxt = self.digest_state(at)
        for _ in range(_MAX_HOPS):
            if sent == 0 and opens < nxt:
                if at < opens:
                    jitter = self.jitter(opens)
                    return opens + timedelta(seconds=jitter), jitter
                if at < opens + self.grace:
                    return at, 0
            at = max(at, nxt)
            _, opens, sent, nxt = self.digest_state(nxt)
        return at + _HORIZON, 0

    def earliest(
        self,
        now: datetime,
        caps_free: datetime,
        span: tuple[datetime, datetime] | None,
        deadline: datetime,
    ) -> tuple[datetime, tuple[Hop, ...], bool]:
        """Earliest instant >= ``caps_free`` at which quiet hours and the digest allow too.

        ``caps_free`` is the first instant every cap allows. Counts only fall with time, so
        caps keep allowing after it and only quiet hours and the digest slot can still move
        the instant; they are applied until neither moves it (a fixed point). ``span`` is
        the quiet window already found at ``caps_free``, if any. The search stops without
        an answer (``False``) once the instant reaches ``deadline`` (the message's expiry or
        the search horizon): past it the exact instant no longer matters.
        """
        at = caps_free
        hops: list[Hop] = []
        if at > now:
            hops.append(_new(Hop, (_C_CAP, at, 0)))
            if at >= deadline:
                return at, tuple(hops), False
            span = self.quiet_span(at)
        for _ in range(_MAX_HOPS):
            if span is not None:
                end = span[1]
                if end >= deadline:
                    hops.append(_new(Hop, (_C_QUIET_HOURS, end, 0)))
                    return end, tuple(hops), False
                jitter = self.jitter(end)
                at = end + timedelta(seconds=jitter)
                hops.append(_new(Hop, (_C_QUIET_HOURS, at, jitter)))
                if at >= deadline:
                    return at, tuple(hops), False
                span = self.quiet_span(at)
                continue
            if self.digest is not None:
                moved, jitter = self.digest_free(at)
                if moved > at:
                    at = moved
                    hops.append(Hop(_C_DIGEST, at, jitter))
                    if at >= deadline:
                        return at, tuple(hops), False
                    span = self.quiet_span(at)
                    continue
            return at, tuple(hops), True
        return at, tuple(hops), False


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
    """
    if now.tzinfo is not UTC:
        now = _as_utc(now)
    hist = history if isinstance(history, ContactHistory) else ContactHistory(history)
    if message.category.kind is _MK_MARKETING:
        if not _marketing_clear(message, recipient, hist, now):
            return _gate_drop(_MARKETING_GATES, message, recipient, hist, now)
        return _decide_timed(message, recipient, hist, rules, now, _MARKETING_PREFIX, True)
    if not _transactional_clear(message, recipient, hist, now):
        return _gate_drop(_TRANSACTIONAL_GATES, message, recipient, hist, now)
    if not message.respects_quiet_hours:
        return _new(Decision, (_ALLOW, None, None, _TRANSACTIONAL_PREFIX))
    return _decide_timed(message, recipient, hist, rules, now, _TRANSACTIONAL_PREFIX, False)


def _decide_timed(
    message: Message,
    recipient: Recipient,
    hist: ContactHistory,
    rules: Rules,
    now: datetime,
    prefix: tuple[TraceStep, ...],
    marketing: bool,
) -> Decision:
    """The wall-clock part: zone, caps, quiet hours, digest, and the deferral search."""
    resolved = _RESOLVED.get((recipient.zone, recipient.device_zone, rules.default_zone))
    if resolved is None:
        resolved = _resolve(recipient.zone, recipient.device_zone, rules.default_zone)
    zone, zone_step = resolved
    steps: list[TraceStep] = [zone_step]
    if zone is None:
        if marketing:
            return Decision(_DROP, _R_NO_TIMEZONE, None, prefix + tuple(steps))
        # An opted-in transactional message with no zone anywhere goes now: quiet hours are
        # a courtesy it asked for, and guessing UTC could hold an order update for hours.
        return Decision(_ALLOW, None, None, prefix + tuple(steps))

    ordinal = local_ordinal(zone, now)
    blocked_by: Reason | None = None
    caps_free = now
    if marketing:
        frequency = recipient.frequency
        caps = rules.caps if frequency is _FP_NORMAL else rules.caps_for[frequency]
        category_id = message.category.category_id
        source_id = message.source_id
        capped_drop = False
        for rule in caps:
            # Inlined ``rule_applies`` and ``ContactHistory.times_for``: this loop is the
            # hottest code of the policy.
            selector = rule.selector
            if selector == SELECT_MARKETING:
                times = hist.marketing
            elif selector == SELECT_ALL:
                times = hist.all
            elif selector == SELECT_CATEGORY:
                if rule.target_id is not None and rule.target_id != category_id:
                    continue
                times = hist.by_category.get(category_id, _EMPTY)
            else:
                if source_id is None or (
                    rule.target_id is not None and rule.target_id != source_id
                ):
                    continue
                times = hist.by_campaign.get(source_id, _EMPTY)
            window = rule.rolling
            if window is None:
                step = evaluate_cap(rule, times, now, zone, ordinal)
            else:
                # ``evaluate_cap`` for a rolling window, inlined (a test checks they agree).
                limit = rule.limit
                start = now - window
                count = len(times) - bisect_right(times, start)
                if count == 0:
                    step = _new(CapStep, (_C_CAP, True, rule, 0, limit, start, None, None))
                elif count < limit:
                    oldest = times[-count] + window
                    step = _new(CapStep, (_C_CAP, True, rule, count, limit, start, oldest, None))
                else:
                    oldest = times[-count] + window
                    frees = times[-limit] + window
                    step = _new(CapStep, (_C_CAP, False, rule, count, limit, start, oldest, frees))
            steps.append(step)
            if not step[1]:
                blocked_by = _R_CAPPED
                if rule.drops:
                    capped_drop = True
                elif step.frees_at is not None and step.frees_at > caps_free:
                    caps_free = step.frees_at
        if capped_drop:
            return Decision(_DROP, _R_CAPPED, None, prefix + tuple(steps))

    quiet = recipient.quiet_hours if recipient.quiet_hours is not None else rules.quiet_hours
    span: tuple[datetime, datetime] | None = None
    if quiet.windows:
        # ``clock.quiet_window_at``, inlined.
        spans = quiet.spans_cache.get((zone, ordinal))
        if spans is None:
            spans = quiet_spans(quiet, zone, ordinal)
        for candidate in spans:
            if candidate[0] <= now < candidate[1] and (span is None or candidate[1] > span[1]):
                span = candidate
    if span is None:
        steps.append(_new(QuietStep, (_C_QUIET_HOURS, True, now, None, None, len(quiet.windows))))
    else:
        steps.append(
            _new(
                QuietStep,
                (_C_QUIET_HOURS, False, now, span[0], span[1], len(quiet.windows)),
            )
        )
        if blocked_by is None:
            blocked_by = _R_QUIET_HOURS

    search: _Search | None = None
    if marketing and recipient.frequency is _FP_DIGEST:
        digest = recipient.digest if recipient.digest is not None else rules.default_digest
        search = _Search(message, recipient, hist, rules, zone, quiet, digest)
        start, opens, sent, _ = search.digest_state(now)
        closes = opens + rules.digest_grace
        open_now = sent == 0 and opens <= now < closes
        steps.append(DigestStep(_C_DIGEST, open_now, start, opens, closes, sent))
        if not open_now and blocked_by is None:
            blocked_by = _R_DIGEST

    if blocked_by is None:
        return _new(Decision, (_ALLOW, None, None, prefix + tuple(steps)))

    if search is None:
        search = _Search(message, recipient, hist, rules, zone, quiet, None)
    horizon = now + _HORIZON
    expires = message.expires_at
    deadline = expires if expires is not None and expires < horizon else horizon
    until, hops, found = search.earliest(
        now, caps_free, span if caps_free == now else None, deadline
    )
    steps.append(_new(ScheduleStep, (_C_SCHEDULE, found, until if found else None, hops)))
    trace = prefix + tuple(steps)
    if found:
        return _new(Decision, (_DEFER, blocked_by, until, trace))
    if expires is not None and until >= expires:
        # ``until`` is where the search passed the expiry, a lower bound of the real answer.
        return _new(Decision, (_DROP, _R_EXPIRED, until, trace))
    return _new(Decision, (_DROP, blocked_by, None, trace))


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
    for rule in rules.caps_for[recipient.frequency]:
        if not rule_applies(rule, message):
            continue
        if zone is None and not isinstance(rule.window, timedelta):
            return Budget(0, rule, tuple(steps))
        times = hist.times_for(rule, message.category.category_id, message.source_id)
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
