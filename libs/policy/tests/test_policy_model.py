"""A differential test: ``decide`` against a brute-force model written apart from it.

The model knows only the documented rules and the public input types. It turns every
wall-clock rule into instants with its own conversion (first occurrence of a repeated
wall time, the end of the gap for one that does not exist), counts each cap's window
entry by entry, and walks forward in UTC from one boundary to the next (window edges,
local midnights and Mondays, the instants sends leave rolling windows, digest slots and
their closes), asking at each whether every rule allows. Between two boundaries nothing
changes, so the first boundary that allows is the earliest allowed instant E, and the
first later boundary that does not closes the allowed stretch.

Every decision of random streams (zones from the whole IANA set, ``now`` near DST
changes, windows crossing midnight and several a day, jitters from a second to days,
several cap rules, opt-downs and digests; ALLOWs fed back into the history, DEFERs
decided again at their instant) must agree with the model: an ALLOW is allowed now, a
DEFER lands in ``[E, E + jitter)``, before the stretch closes and before expiry, and a
DROP is justified (a full dropping cap now, E at or past the expiry, or no E at all).
"""

from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import cache
from zoneinfo import ZoneInfo, available_timezones

from hypothesis import event, given
from hypothesis import strategies as st

from pushwarden.policy import (
    CalendarWindow,
    CapAction,
    CapRule,
    CapScope,
    Category,
    ContactEntry,
    Decision,
    DigestPeriod,
    DigestSlot,
    FrequencyPreference,
    Message,
    MessageKind,
    Outcome,
    QuietHours,
    QuietWindow,
    Reason,
    Recipient,
    Rules,
    decide,
)

ZONES = sorted(available_timezones())
YEAR = datetime(2026, 1, 1, tzinfo=UTC)
DAY = timedelta(days=1)
LOOK_AHEAD = timedelta(days=20)  # how far the model walks; farther answers go unchecked
MK, TX = MessageKind.MARKETING, MessageKind.TRANSACTIONAL


# The model's own wall-clock conversion.


@cache
def wall_instant(zone: ZoneInfo, day: date, wall: time) -> datetime:
    """The UTC instant the local clock first reads ``day`` ``wall``, or, when it never
    does (a DST gap), the first instant it reads a later time."""
    naive = datetime.combine(day, wall)
    offsets = set()
    for hours in range(-48, 49, 6):
        probe = (naive + timedelta(hours=hours)).replace(tzinfo=UTC)
        offset = probe.astimezone(zone).utcoffset()
        assert offset is not None
        offsets.add(offset)
    hits = [
        (naive - offset).replace(tzinfo=UTC)
        for offset in offsets
        if _reading(zone, (naive - offset).replace(tzinfo=UTC)) == naive
    ]
    if hits:
        return min(hits)
    # A gap: between the two candidate instants the reading jumps over ``naive`` once.
    lo = (naive - max(offsets)).replace(tzinfo=UTC)
    hi = (naive - min(offsets)).replace(tzinfo=UTC)
    while hi - lo > timedelta(seconds=1):
        mid = lo + (hi - lo) / 2
        mid = mid.replace(microsecond=0)
        if _reading(zone, mid) > naive:
            hi = mid
        else:
            lo = mid
    return hi


def _reading(zone: ZoneInfo, at: datetime) -> datetime:
    return at.astimezone(zone).replace(tzinfo=None)


def local_day(zone: ZoneInfo, at: datetime) -> date:
    """The local day whose [midnight, next midnight) holds ``at``."""
    day = at.astimezone(zone).date()
    while wall_instant(zone, day, time(0)) > at:
        day -= DAY
    while wall_instant(zone, day + DAY, time(0)) <= at:
        day += DAY
    return day


def window_spans(quiet: QuietHours, zone: ZoneInfo, day: date) -> list[tuple[datetime, datetime]]:
    """The UTC spans of the windows that start on local ``day``."""
    spans = []
    for window in quiet.windows:
        if day.weekday() not in window.weekdays:
            continue
        start = wall_instant(zone, day, window.start)
        end_day = day + DAY if window.end < window.start else day
        end = wall_instant(zone, end_day, window.end)
        if start < end:
            spans.append((start, end))
    return spans


# The model.


@dataclass
class World:
    """One recipient's rules, zone and history: the model's whole input."""

    rules: Rules
    recipient: Recipient
    zone: ZoneInfo
    entries: list[ContactEntry]

    @property
    def quiet(self) -> QuietHours:
        own = self.recipient.quiet_hours
        return own if own is not None else self.rules.quiet_hours

    def caps(self) -> list[CapRule]:
        rules = list(self.rules.caps)
        mode, number = self.recipient.frequency, self.recipient.frequency_max
        if mode is FrequencyPreference.DAILY_MAX:
            limit = number or self.rules.opt_down_daily_max
            rules.append(self._opt_down(limit, CalendarWindow.DAY))
        elif mode is FrequencyPreference.WEEKLY_MAX:
            limit = number or self.rules.opt_down_weekly_max
            rules.append(self._opt_down(limit, CalendarWindow.WEEK))
        return rules

    def _opt_down(self, limit: int, window: CalendarWindow) -> CapRule:
        action = self.rules.preference_on_exceed
        return CapRule(CapScope.ALL_MARKETING, limit, window, action, user_preference=True)

    # Caps.

    def counted(self, rule: CapRule, message: Message) -> list[datetime] | None:
        """The instants of the sends ``rule`` counts for ``message``; None if it does
        not apply."""
        campaign = message.campaign_id
        category = message.category.category_id
        if rule.scope is CapScope.CATEGORY and rule.target_id not in (None, category):
            return None
        # CAMPAIGN is keyed by campaign id: it does not apply to a message without one.
        if rule.scope is CapScope.CAMPAIGN and (
            campaign is None or rule.target_id not in (None, campaign)
        ):
            return None
        found = []
        for entry in self.entries:
            if entry.kind is TX and not rule.count_transactional:
                continue
            if rule.scope is CapScope.CATEGORY and entry.category_id != category:
                continue
            if rule.scope is CapScope.CAMPAIGN and entry.campaign_id != campaign:
                continue
            found.append(entry.at)
        return found

    def in_window(self, rule: CapRule, sent: datetime, at: datetime) -> bool:
        if isinstance(rule.window, timedelta):
            return at - rule.window < sent <= at
        day = local_day(self.zone, at)
        if rule.window is CalendarWindow.WEEK:
            day -= timedelta(days=day.weekday())
            end = day + timedelta(days=7)
        else:
            end = day + DAY
        start = wall_instant(self.zone, day, time(0))
        return start <= sent < wall_instant(self.zone, end, time(0))

    def full(self, rule: CapRule, message: Message, at: datetime) -> bool:
        counted = self.counted(rule, message)
        if counted is None:
            return False
        return sum(1 for sent in counted if self.in_window(rule, sent, at)) >= rule.limit

    # Quiet hours.

    def quiet_at(self, at: datetime) -> list[tuple[datetime, datetime]]:
        day = local_day(self.zone, at)
        return [
            span
            for offset in range(-2, 2)
            for span in window_spans(self.quiet, self.zone, day + offset * DAY)
            if span[0] <= at < span[1]
        ]

    def out_of_quiet(self, at: datetime) -> datetime:
        for _ in range(50):
            spans = self.quiet_at(at)
            if not spans:
                return at
            at = max(end for _, end in spans)
        return at

    # Digest.

    def digest(self) -> DigestSlot:
        return self.recipient.digest or self.rules.default_digest

    def slots_around(self, at: datetime) -> list[datetime]:
        slot = self.digest()
        day = local_day(self.zone, at)
        found = []
        for offset in range(-9, 10):
            candidate = day + offset * DAY
            if slot.period is DigestPeriod.WEEKLY and candidate.weekday() != slot.weekday:
                continue
            found.append(wall_instant(self.zone, candidate, slot.at))
        return sorted(found)

    def digest_slot(self, at: datetime) -> tuple[datetime, datetime, datetime]:
        """(period start, slot opens, slot closes) of the period holding ``at``."""
        slots = self.slots_around(at)
        start = max(s for s in slots if s <= at)
        following = min(s for s in slots if s > start)
        opens = self.out_of_quiet(start)
        closes = min(opens + self.rules.digest_grace, following)
        return start, opens, closes

    def digest_open(self, at: datetime) -> bool:
        start, opens, closes = self.digest_slot(at)
        sent = sum(1 for e in self.entries if e.kind is MK and e.at >= start)
        return sent == 0 and opens <= at < closes

    # Together.

    def allowed(self, message: Message, at: datetime) -> bool:
        marketing = message.category.kind is MK
        if marketing and any(self.full(rule, message, at) for rule in self.caps()):
            return False
        if (marketing or message.respects_quiet_hours) and self.quiet_at(at):
            return False
        digest = self.recipient.frequency is FrequencyPreference.DIGEST
        return not (marketing and digest and not self.digest_open(at))

    def boundaries(self, message: Message, now: datetime) -> list[datetime]:
        """Every instant in [now, now + LOOK_AHEAD] at which a rule may change its mind."""
        found = {now}
        first = local_day(self.zone, now)
        days = [first + offset * DAY for offset in range(-1, LOOK_AHEAD.days + 2)]
        for day in days:
            found.add(wall_instant(self.zone, day, time(0)))
            for start, end in window_spans(self.quiet, self.zone, day):
                found |= {start, end}
        for rule in self.caps():
            if isinstance(rule.window, timedelta):
                found |= {sent + rule.window for sent in self.counted(rule, message) or []}
        if self.recipient.frequency is FrequencyPreference.DIGEST:
            for day in days[::7]:
                at = wall_instant(self.zone, day, time(12))
                for slot in self.slots_around(at):
                    start, opens, closes = self.digest_slot(slot)
                    found |= {start, opens, closes}
        end = now + LOOK_AHEAD
        return sorted(at for at in found if now <= at <= end)

    def frees_at(self, rule: CapRule, message: Message, points: list[datetime]) -> datetime:
        return next((at for at in points if not self.full(rule, message, at)), points[-1])


def check(world: World, message: Message, now: datetime, decision: Decision) -> str:
    """Assert that ``decision`` is one the model accepts; return a label for statistics."""
    outcome, reason, until = decision.outcome, decision.reason, decision.until
    expires = message.expires_at
    if expires is not None and now >= expires:
        assert (outcome, reason, until) == (Outcome.DROP, Reason.EXPIRED, None)
        return "expired on arrival"
    marketing = message.category.kind is MK
    caps = world.caps() if marketing else []
    dropping = [
        rule for rule in caps if rule.on_exceed is CapAction.DROP and world.full(rule, message, now)
    ]
    if dropping:
        app = any(not rule.user_preference for rule in dropping)
        assert (outcome, until) == (Outcome.DROP, None)
        assert reason is (Reason.CAPPED if app else Reason.FREQUENCY_PREFERENCE)
        return "drop capped"
    if world.allowed(message, now):
        assert (outcome, reason, until) == (Outcome.ALLOW, None, None)
        return "allow"
    points = world.boundaries(message, now)
    earliest = next((at for at in points if world.allowed(message, at)), None)
    if earliest is None:
        # Nothing allows within the model's look-ahead: a DROP for the blocking rule or
        # the expiry, or a DEFER beyond what the model can see.
        if outcome is Outcome.DEFER:
            assert until is not None
            assert until > now + LOOK_AHEAD
            return "defer beyond the look-ahead"
        assert outcome is Outcome.DROP
        assert until is None
        if reason is Reason.EXPIRED:
            # Justified: nothing allows before the expiry (when the model sees that far).
            assert expires is not None
            return "drop expired: nothing allows"
        # The blocking reason: nothing allows within the engine's horizon either.
        assert reason in {
            Reason.CAPPED,
            Reason.FREQUENCY_PREFERENCE,
            Reason.QUIET_HOURS,
            Reason.DIGEST,
        }
        return "drop: nothing allows"
    if expires is not None and earliest >= expires:
        assert (outcome, reason, until) == (Outcome.DROP, Reason.EXPIRED, None)
        return "drop expired"
    assert outcome is Outcome.DEFER, (reason, earliest)
    assert until is not None
    stretch_end = next(
        (at for at in points if at > earliest and not world.allowed(message, at)),
        now + LOOK_AHEAD,
    )
    jitter = world.rules.jitter
    assert earliest <= until, (until, earliest)
    assert until < max(earliest + jitter, earliest + timedelta(microseconds=1))
    assert until < stretch_end or stretch_end == now + LOOK_AHEAD
    assert expires is None or until < expires
    assert world.allowed(message, until)
    if until > earliest:
        # Only a deferral to a quiet window's end or a digest slot is spread.
        quiet_end = any(
            end == earliest for _, end in world.quiet_at(earliest - timedelta(microseconds=1))
        )
        assert quiet_end or world.digest_slot(earliest)[1] == earliest
    # The reason names what blocks now: the caps first (the one freeing last decides,
    # the app's before the user's on a tie), then quiet hours, then the digest slot.
    full = [rule for rule in caps if world.full(rule, message, now)]
    if full:
        last = max(world.frees_at(rule, message, points) for rule in full)
        deciding = [rule for rule in full if world.frees_at(rule, message, points) == last]
        app = any(not rule.user_preference for rule in deciding)
        assert reason is (Reason.CAPPED if app else Reason.FREQUENCY_PREFERENCE)
    elif world.quiet_at(now):
        assert reason is Reason.QUIET_HOURS
    else:
        assert reason is Reason.DIGEST
    return f"defer {reason.value.lower()}{' spread' if until > earliest else ''}"


# Random streams.


@cache
def transitions(name: str) -> tuple[datetime, ...]:
    """Instants in 2026 (to the hour) around which ``name`` changes its offset."""
    zone = ZoneInfo(name)
    found = []
    before = YEAR.astimezone(zone).utcoffset()
    for hour in range(1, 365 * 24):
        at = YEAR + timedelta(hours=hour)
        offset = at.astimezone(zone).utcoffset()
        if offset != before:
            found.append(at)
        before = offset
    return tuple(found)


@st.composite
def instants(draw: st.DrawFn, zone: str) -> datetime:
    near = transitions(zone)
    if len(near) > 0 and draw(st.booleans()):
        return draw(st.sampled_from(near)) + timedelta(minutes=draw(st.integers(-2880, 2880)))
    return YEAR + timedelta(minutes=draw(st.integers(0, 360 * 24 * 60)))


walls = st.builds(time, st.integers(0, 23), st.sampled_from([0, 0, 15, 30, 45, 7, 59]))


@st.composite
def quiet_windows(draw: st.DrawFn) -> QuietWindow:
    start = draw(walls)
    end = draw(walls.filter(lambda t: t != start))
    days = draw(st.sampled_from([frozenset(range(7)), frozenset(range(5))]) | st.frozensets(
        st.integers(0, 6), min_size=1
    ))  # fmt: skip
    return QuietWindow(start, end, days)


@st.composite
def short_gaps(draw: st.DrawFn) -> QuietHours:
    """A night window, a gap of a few minutes, then a second window: the shape that
    made a jitter jump over the gap."""
    start = draw(st.integers(18 * 60, 23 * 60 + 59))
    end = draw(st.integers(4 * 60, 8 * 60))
    gap = draw(st.integers(1, 40))
    second = draw(st.integers(20, 180))

    def wall(minutes: int) -> time:
        return time(minutes // 60 % 24, minutes % 60)

    return QuietHours(
        (
            QuietWindow(wall(start), wall(end)),
            QuietWindow(wall(end + gap), wall(end + gap + second)),
        )
    )


quiet_hours = st.one_of(
    st.just(QuietHours((QuietWindow(time(22), time(7)),))),
    short_gaps(),
    st.builds(QuietHours, st.lists(quiet_windows(), max_size=4).map(tuple)),
)

jitters = st.one_of(
    st.sampled_from([0, 1, 7, 59, 600, 1800, 2 * 3600, 5 * 3600, 86400, 3 * 86400]),
    st.integers(0, 3 * 86400),
).map(lambda s: timedelta(seconds=s))

CATEGORIES = [
    Category("promo", MK),
    Category("news", MK),
    Category("orders", TX),
]


@st.composite
def cap_rules(draw: st.DrawFn) -> CapRule:
    scope = draw(st.sampled_from(list(CapScope)))
    target = None
    if scope is CapScope.CATEGORY:
        target = draw(st.none() | st.just("news"))
    elif scope is CapScope.CAMPAIGN:
        target = draw(st.none() | st.just("c1"))
    window = draw(
        st.sampled_from(list(CalendarWindow))
        | st.integers(10, 7 * 24 * 60).map(lambda m: timedelta(minutes=m))
    )
    return CapRule(
        scope,
        draw(st.integers(1, 3)),
        window,
        draw(st.sampled_from(list(CapAction))),
        target_id=target,
        count_transactional=draw(st.booleans()),
    )


@st.composite
def arrivals(draw: st.DrawFn, start: datetime) -> tuple[int, Message]:
    """A message arriving some minutes after ``start``, expiring (if ever) after that."""
    minutes = draw(st.integers(0, 4 * 24 * 60))
    now = start + timedelta(minutes=minutes)
    category = draw(st.sampled_from(CATEGORIES))
    source = draw(st.sampled_from([("c1", None), ("c2", None), (None, "c1"), (None, None)]))
    lifetime = draw(st.none() | st.integers(10, 10 * 24 * 60))
    message = Message(
        draw(st.sampled_from(["m1", "m2"])),
        category,
        campaign_id=source[0],
        trigger_id=source[1],
        expires_at=None if lifetime is None else now + timedelta(minutes=lifetime),
        respects_quiet_hours=draw(st.booleans()),
    )
    return minutes, message


Stream = tuple[World, datetime, list[tuple[int, Message]]]


@st.composite
def streams(draw: st.DrawFn) -> Stream:
    name = draw(st.sampled_from(ZONES))
    start = draw(instants(name))
    rules = Rules(
        caps=tuple(draw(st.lists(cap_rules(), max_size=3))),
        quiet_hours=draw(quiet_hours),
        jitter=draw(jitters),
        default_zone=name,
        preference_on_exceed=draw(st.sampled_from(list(CapAction))),
        default_digest=DigestSlot(
            draw(st.sampled_from(list(DigestPeriod))), draw(walls), draw(st.integers(0, 6))
        ),
        digest_grace=timedelta(minutes=draw(st.integers(10, 300))),
        opt_down_daily_max=draw(st.integers(1, 2)),
        opt_down_weekly_max=draw(st.integers(1, 4)),
    )
    recipient = Recipient(
        "u1",
        zone=name,
        quiet_hours=draw(st.sampled_from([None, None, None]) | quiet_hours),  # mostly the app's
        frequency=draw(st.sampled_from(list(FrequencyPreference))),
        frequency_max=draw(st.integers(0, 3)),
    )
    history = [
        ContactEntry(
            start - timedelta(minutes=draw(st.integers(1, 8 * 24 * 60))),
            draw(st.sampled_from(CATEGORIES)).category_id,
            draw(st.sampled_from([MK, MK, TX])),
            *draw(st.sampled_from([("c1", None), ("c2", None), (None, None)])),
            draw(st.none() | st.just("c1")),
        )
        for _ in range(draw(st.integers(0, 8)))
    ]
    world = World(rules, recipient, ZoneInfo(name), history)
    return world, start, draw(st.lists(arrivals(start), min_size=1, max_size=12))


@given(streams())
def test_decide_agrees_with_the_brute_force_model(stream: Stream) -> None:
    world, start, messages = stream
    queue = [(start + timedelta(minutes=m), i, message) for i, (m, message) in enumerate(messages)]
    heapq.heapify(queue)
    order = itertools.count(len(queue))
    decided = 0
    while queue and decided < 40:
        now, _, message = heapq.heappop(queue)
        decision = decide(message, world.recipient, world.entries, world.rules, now)
        decided += 1
        event(check(world, message, now, decision))
        if decision.outcome is Outcome.ALLOW:
            world.entries.append(
                ContactEntry(
                    now,
                    message.category.category_id,
                    message.category.kind,
                    message.campaign_id,
                    None,
                    message.trigger_id,
                )
            )
        elif decision.outcome is Outcome.DEFER:
            assert decision.until is not None
            heapq.heappush(queue, (decision.until, next(order), message))
