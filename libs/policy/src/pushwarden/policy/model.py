"""Input types of the policy: messages, recipients, contact history entries and rules.

Every type here is an immutable value. The scheduler builds them from its protobuf
messages and the consent service's answers; the policy never fetches anything itself.
All instants are timezone-aware ``datetime`` values; the policy works in UTC internally
and uses the recipient's IANA zone only for wall-clock rules (quiet hours, calendar
windows, digest slots).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from .clock import DayView, QuietDay

__all__ = [
    "ALL_WEEKDAYS",
    "NO_QUIET_HOURS",
    "OPT_DOWN_RULE",
    "CalendarWindow",
    "CapAction",
    "CapPlan",
    "CapRule",
    "CapScope",
    "Category",
    "CategoryPlan",
    "ContactEntry",
    "DigestPeriod",
    "DigestSlot",
    "FrequencyPreference",
    "Message",
    "MessageKind",
    "PlanParts",
    "QuietHours",
    "QuietWindow",
    "Recipient",
    "RollingPlan",
    "Rules",
    "split_plan",
]

ALL_WEEKDAYS: frozenset[int] = frozenset(range(7))
"""Monday is 0, as in ``date.weekday()`` and ISO 8601."""

_NO_IDS: frozenset[str] = frozenset()


class MessageKind(enum.Enum):
    """The kind a category was registered with; never taken from a flag on a message."""

    TRANSACTIONAL = "TRANSACTIONAL"
    MARKETING = "MARKETING"


class CapScope(enum.Enum):
    """Which past sends a cap rule counts."""

    ALL_MARKETING = "ALL_MARKETING"
    CATEGORY = "CATEGORY"
    CAMPAIGN = "CAMPAIGN"


class CalendarWindow(enum.Enum):
    """A calendar window in the recipient's own zone; weeks start on Monday (ISO 8601)."""

    DAY = "DAY"
    WEEK = "WEEK"


class CapAction(enum.Enum):
    """What a message that would exceed a cap gets."""

    DROP = "DROP"
    DEFER = "DEFER"


class FrequencyPreference(enum.Enum):
    """The mode of a user's opt-down choice; it only ever adds caps to the app's own.

    DAILY_MAX and WEEKLY_MAX take the user's number from ``Recipient.frequency_max``
    (0: the app's ``Rules.opt_down_daily_max`` / ``opt_down_weekly_max``).
    """

    NORMAL = "NORMAL"
    DAILY_MAX = "DAILY_MAX"
    WEEKLY_MAX = "WEEKLY_MAX"
    DIGEST = "DIGEST"


class DigestPeriod(enum.Enum):
    """How often a digest slot comes round."""

    DAILY = "DAILY"
    WEEKLY = "WEEKLY"


def _require_aware(value: datetime | None, what: str) -> None:
    if value is not None and value.utcoffset() is None:
        raise ValueError(f"{what} must be timezone-aware")


_E = TypeVar("_E", bound=enum.Enum)


def _member(owner: object, name: str, kind: type[_E], extra: str = "") -> _E:
    """The enum field ``name`` of ``owner`` as a member of ``kind``, stored back.

    A member passes as is and a member's name (``"DAY"``) is converted; anything else
    (another enum's member, a value of the wrong case, a number) is refused, so a plain
    string can never silently mean another member.
    """
    value = getattr(owner, name)
    if type(value) is kind:
        return value
    if isinstance(value, str) and not isinstance(value, enum.Enum):
        member = kind.__members__.get(value)
        if member is not None:
            object.__setattr__(owner, name, member)
            return member
    names = ", ".join(kind.__members__)
    raise TypeError(
        f"{type(owner).__name__}.{name} must be a {kind.__name__} or one of its names "
        f"({names}){extra}, not {value!r}"
    )


@dataclass(frozen=True, slots=True)
class Category:
    """A notification category as registered with the consent service.

    ``opt_out_allowed`` only matters for transactional categories (a security alert may
    refuse opt-out); a marketing category must always allow it.
    """

    category_id: str
    kind: MessageKind
    opt_out_allowed: bool = True

    def __post_init__(self) -> None:
        _member(self, "kind", MessageKind)
        if self.kind is MessageKind.MARKETING and not self.opt_out_allowed:
            raise ValueError("a marketing category must allow opting out")


@dataclass(frozen=True, slots=True)
class Message:
    """One message about to be sent to one recipient.

    ``message_id`` identifies the content (campaign variant, trigger or transactional
    request) and feeds the jitter hash and arbitration tiebreak. ``send_key`` is the
    idempotency key of this particular send; a history entry with the same key makes the
    send a DUPLICATE. ``priority``: higher wins arbitration. ``respects_quiet_hours`` is an
    opt-in for transactional messages; marketing messages always respect quiet hours.
    """

    message_id: str
    category: Category
    campaign_id: str | None = None
    trigger_id: str | None = None
    topic_id: str | None = None
    priority: int = 0
    expires_at: datetime | None = None
    respects_quiet_hours: bool = False
    send_key: str | None = None
    source_id: str | None = field(init=False, compare=False, repr=False)
    """The campaign or trigger this message comes from (holdout key), derived once."""

    def __post_init__(self) -> None:
        _require_aware(self.expires_at, "expires_at")
        source = self.campaign_id if self.campaign_id is not None else self.trigger_id
        object.__setattr__(self, "source_id", source)

    @property
    def kind(self) -> MessageKind:
        """The registered kind of the message's category."""
        return self.category.kind


@dataclass(frozen=True, slots=True)
class ContactEntry:
    """One past send to the recipient (the scheduler's contact history).

    ``kind`` is the kind the send went out as, and it alone decides how caps count the
    entry: a transactional entry is never counted by a cap unless the rule says
    ``count_transactional``, even when its category id names a marketing category
    (categories are immutable, so such an entry comes from a stale or hand-made record,
    and what was sent is what counts). ``campaign_id`` and ``trigger_id`` are the send's
    source; a send with a campaign counts for that campaign, one with only a trigger for
    that trigger, and the two id spaces never meet.
    """

    at: datetime
    category_id: str
    kind: MessageKind
    campaign_id: str | None = None
    send_key: str | None = None
    trigger_id: str | None = None

    def __post_init__(self) -> None:
        _require_aware(self.at, "ContactEntry.at")
        _member(self, "kind", MessageKind)


@dataclass(frozen=True, slots=True)
class QuietWindow:
    """A local wall-clock window ``[start, end)`` that starts on each of ``weekdays``.

    ``end <= start`` means the window crosses midnight and ends on the next local day.
    ``weekdays`` are the days on which the window *starts* (Monday = 0).
    """

    start: time
    end: time
    weekdays: frozenset[int] = ALL_WEEKDAYS

    def __post_init__(self) -> None:
        if self.start.tzinfo is not None or self.end.tzinfo is not None:
            raise ValueError("quiet window times are local wall-clock times without tzinfo")
        if self.start == self.end:
            raise ValueError("a quiet window must not be empty or last a whole day")
        if not self.weekdays or not self.weekdays <= ALL_WEEKDAYS:
            raise ValueError("weekdays must be a non-empty subset of 0..6")

    @property
    def crosses_midnight(self) -> bool:
        """Whether the window ends on the local day after it starts."""
        return self.end <= self.start


_SpansMemo = dict[tuple[object, int], tuple[tuple[datetime, datetime], ...]]
_DaysMemo = dict[object, dict[int, "QuietDay | None"]]
_ViewsMemo = dict[tuple[object, int], "DayView"]
_SHARED_MEMOS: dict[tuple[QuietWindow, ...], tuple[_SpansMemo, _DaysMemo, _ViewsMemo]] = {}
_SHARED_MEMOS_LIMIT = 4096


@dataclass(frozen=True, slots=True)
class QuietHours:
    """A set of quiet windows; an empty set means no quiet hours.

    The hash is computed once because quiet hours key the per-day instant cache on the
    hot path.
    """

    windows: tuple[QuietWindow, ...] = ()
    by_weekday: tuple[tuple[QuietWindow, ...], ...] = field(init=False, repr=False, compare=False)
    _hash: int = field(init=False, repr=False, compare=False)
    spans_cache: _SpansMemo = field(init=False, repr=False, compare=False)
    days_cache: _DaysMemo = field(init=False, repr=False, compare=False)
    views_cache: _ViewsMemo = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        table = tuple(tuple(w for w in self.windows if day in w.weekdays) for day in range(7))
        object.__setattr__(self, "by_weekday", table)
        object.__setattr__(self, "_hash", hash(self.windows))
        # Memos of ``clock.quiet_spans`` (UTC spans per zone and local day),
        # ``clock.quiet_day`` (per zone, then UTC day) and ``clock.day_view`` (per zone and
        # local day). Equal quiet hours share them, so the copies a caller builds per
        # recipient (from a protobuf, say) find them warm. They are value caches:
        # equality and hash ignore them.
        memos = _SHARED_MEMOS.get(self.windows)
        if memos is None:
            if len(_SHARED_MEMOS) >= _SHARED_MEMOS_LIMIT:
                _SHARED_MEMOS.clear()
            memos = _SHARED_MEMOS[self.windows] = ({}, {}, {})
        object.__setattr__(self, "spans_cache", memos[0])
        object.__setattr__(self, "days_cache", memos[1])
        object.__setattr__(self, "views_cache", memos[2])

    def __hash__(self) -> int:
        return self._hash


NO_QUIET_HOURS = QuietHours(())


@dataclass(frozen=True, slots=True)
class DigestSlot:
    """When a DIGEST user's one marketing push per period goes out (local wall time)."""

    period: DigestPeriod = DigestPeriod.DAILY
    at: time = time(9, 0)
    weekday: int = 0
    _hash: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _member(self, "period", DigestPeriod)
        if self.at.tzinfo is not None:
            raise ValueError("digest slot time is a local wall-clock time without tzinfo")
        if not 0 <= self.weekday <= 6:
            raise ValueError("weekday must be 0..6 (Monday = 0)")
        # Computed once: slots key the engine's digest-period memo on the hot path.
        object.__setattr__(self, "_hash", hash((self.period, self.at, self.weekday)))

    def __hash__(self) -> int:
        return self._hash


@dataclass(frozen=True, slots=True)
class Recipient:
    """What the scheduler knows about the user at decision time.

    Zones are IANA names; the chain is ``zone`` (profile), then ``device_zone``, then the
    app's ``Rules.default_zone``. ``quiet_hours`` replaces the app default when set
    (an empty ``QuietHours`` means the user turned quiet hours off). ``suppressed``,
    ``erased`` and ``holdout_sources`` are facts the scheduler already holds that the
    policy turns into the right DROP. ``frequency_max`` is the user's number for a
    DAILY_MAX / WEEKLY_MAX opt-down ("at most 2 a day"); 0 means the app's default for the
    mode, and it is ignored for other modes.
    """

    user_id: str
    push_consent: bool = True
    marketing_opt_out: bool = False
    category_opt_outs: frozenset[str] = _NO_IDS
    topic_opt_outs: frozenset[str] = _NO_IDS
    os_permission: bool = True
    usable_devices: int = 1
    zone: str | None = None
    device_zone: str | None = None
    quiet_hours: QuietHours | None = None
    frequency: FrequencyPreference = FrequencyPreference.NORMAL
    digest: DigestSlot | None = None
    suppressed: bool = False
    erased: bool = False
    holdout_sources: frozenset[str] = _NO_IDS
    frequency_max: int = 0
    # The gates on facts of the recipient alone, folded once per recipient so the hot path
    # reads one flag; ``decide`` walks its gate table for the reason when one is set.
    marketing_blocked: bool = field(init=False, compare=False, repr=False)
    transactional_blocked: bool = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        # Validated here, once per recipient, so ``decide`` never has to.
        _member(self, "frequency", FrequencyPreference)
        if self.frequency_max < 0:
            raise ValueError("frequency_max must be 0 (app default) or a positive count")
        unreachable = self.erased or not self.os_permission or self.usable_devices <= 0
        marketing = (
            unreachable or self.suppressed or not self.push_consent or self.marketing_opt_out
        )
        object.__setattr__(self, "marketing_blocked", marketing)
        object.__setattr__(self, "transactional_blocked", unreachable)
        # ``frozenset()`` is a new 216-byte object each time: share one for the empty sets
        # so the hot path's membership tests on them never touch a recipient's own memory.
        for name in ("category_opt_outs", "topic_opt_outs", "holdout_sources"):
            if not getattr(self, name):
                object.__setattr__(self, name, _NO_IDS)


SELECT_MARKETING = 0
SELECT_ALL = 1
SELECT_CATEGORY = 2
SELECT_CAMPAIGN = 3
SELECT_CATEGORY_ALL = 4
SELECT_CAMPAIGN_ALL = 5


@dataclass(frozen=True, slots=True)
class CapRule:
    """A frequency cap.

    ``window`` is a rolling ``timedelta`` or a ``CalendarWindow`` in the recipient's zone.
    For CATEGORY and CAMPAIGN scope, ``target_id=None`` applies the cap to each category
    (campaign) separately, counting the one the message belongs to; a set ``target_id``
    limits the rule to that one. CAMPAIGN scope counts the message's campaign, or, for a
    message with only a trigger, that trigger's sends (a ``target_id`` names a campaign).
    Only marketing sends count unless ``count_transactional`` is set; then transactional
    sends in the scope count too (they are never capped themselves). ``name`` shows in
    explanations.
    ``user_preference`` marks the rule a user's opt-down adds (``Rules.caps_for`` builds
    it, named ``OPT_DOWN_RULE``); an exceeded one reports ``Reason.FREQUENCY_PREFERENCE``.
    """

    scope: CapScope
    limit: int
    window: timedelta | CalendarWindow
    on_exceed: CapAction = CapAction.DEFER
    target_id: str | None = None
    count_transactional: bool = False
    name: str = ""
    user_preference: bool = False
    # Derived once so the hot path reads plain attributes instead of comparing enums.
    selector: int = field(init=False, repr=False, compare=False)
    rolling: timedelta | None = field(init=False, repr=False, compare=False)
    calendar_day: bool = field(init=False, repr=False, compare=False)
    drops: bool = field(init=False, repr=False, compare=False)
    plan: CapPlan = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _member(self, "scope", CapScope)
        _member(self, "on_exceed", CapAction)
        if not isinstance(self.window, timedelta):
            _member(self, "window", CalendarWindow, " or a rolling timedelta")
        if self.limit < 1:
            raise ValueError("a cap's limit must be at least 1")
        if isinstance(self.window, timedelta) and self.window <= timedelta(0):
            raise ValueError("a rolling window must be positive")
        if self.scope is CapScope.ALL_MARKETING and self.target_id is not None:
            raise ValueError("target_id only applies to CATEGORY and CAMPAIGN scope")
        every = self.count_transactional
        if self.scope is CapScope.ALL_MARKETING:
            selector = SELECT_ALL if every else SELECT_MARKETING
        elif self.scope is CapScope.CATEGORY:
            selector = SELECT_CATEGORY_ALL if every else SELECT_CATEGORY
        else:
            selector = SELECT_CAMPAIGN_ALL if every else SELECT_CAMPAIGN
        rolling = self.window if isinstance(self.window, timedelta) else None
        object.__setattr__(self, "selector", selector)
        object.__setattr__(self, "rolling", rolling)
        object.__setattr__(self, "calendar_day", self.window is CalendarWindow.DAY)
        object.__setattr__(self, "drops", self.on_exceed is CapAction.DROP)
        # Everything the hot loop reads, as one tuple: unpacking it costs less than
        # reading the attributes one by one.
        plan = (
            selector,
            self.target_id,
            rolling,
            self.window is CalendarWindow.DAY,
            self.limit,
            self.on_exceed is CapAction.DROP,
            self.user_preference,
        )
        object.__setattr__(self, "plan", plan)


CapPlan = tuple[int, str | None, timedelta | None, bool, int, bool, bool]
"""A cap rule as the engine's loop reads it: (selector, target_id, rolling window or None,
calendar day?, limit, drops?, user preference?). It holds no reference back to the rule,
so ``dataclasses.asdict`` and friends see no cycle."""

RollingPlan = tuple[int, timedelta, bool, bool]
"""A rolling ALL_MARKETING rule (the commonest cap) as the engine's first loop reads it:
(limit, window, drops?, user preference?)."""

CategoryPlan = tuple[int, timedelta | None, bool, bool, bool]
"""A CATEGORY rule that applies to every category (``target_id=None``), as the engine's
second loop reads it: (limit, rolling window or None, calendar day?, drops?, user
preference?)."""

PlanParts = tuple[tuple[RollingPlan, ...], tuple[CategoryPlan, ...], tuple[CapPlan, ...]]
"""A rule list split for the engine: the rolling ALL_MARKETING rules (which all count the
one marketing list), the per-category rules (which all count the message's category),
then every other rule in its declared order. Only the order of evaluation changes; what
a rule decides does not, and the reason a full rule gives (CAPPED for an app rule,
FREQUENCY_PREFERENCE for the opt-down rule, which is a calendar rule over all marketing
sends and always comes last) is the same in either order."""


def split_plan(plan: tuple[CapPlan, ...]) -> PlanParts:
    """``plan`` as ``PlanParts``."""
    rolling: list[RollingPlan] = []
    per_category: list[CategoryPlan] = []
    rest: list[CapPlan] = []
    for step in plan:
        selector, target, window, calendar_day, limit, drops, preference = step
        if selector == SELECT_MARKETING and window is not None:
            rolling.append((limit, window, drops, preference))
        elif selector == SELECT_CATEGORY and target is None:
            per_category.append((limit, window, calendar_day, drops, preference))
        else:
            rest.append(step)
    return tuple(rolling), tuple(per_category), tuple(rest)


_DEFAULT_JITTER = timedelta(minutes=30)

OPT_DOWN_RULE = "opt-down"
"""The name of the cap a user's DAILY_MAX / WEEKLY_MAX opt-down adds (the contract's rule_id)."""

_OPT_DOWN_WINDOW = {
    FrequencyPreference.DAILY_MAX: CalendarWindow.DAY,
    FrequencyPreference.WEEKLY_MAX: CalendarWindow.WEEK,
}


@dataclass(frozen=True, slots=True)
class Rules:
    """An app's policy configuration.

    ``default_zone`` ends the recipient's zone chain; ``None`` means the app has none, and
    a message that needs a zone then drops as NO_TIMEZONE rather than guessing UTC.
    ``preference_on_exceed`` is what the caps added by a user's opt-down do;
    ``opt_down_daily_max`` / ``opt_down_weekly_max`` are their limits for users who chose
    no number (the contract's defaults: 1 a day, 3 a week).
    ``digest_grace`` is how long after the slot a DIGEST send may still go out.
    ``jitter`` (whole seconds) spreads deferrals that a quiet window's end or a digest
    slot set; it is independent of ``digest_grace``: a spread is always cut to the
    allowed stretch it starts (a digest's spread ends when its slot closes).
    """

    caps: tuple[CapRule, ...] = ()
    quiet_hours: QuietHours = NO_QUIET_HOURS
    jitter: timedelta = _DEFAULT_JITTER
    default_zone: str | None = None
    preference_on_exceed: CapAction = CapAction.DEFER
    default_digest: DigestSlot = DigestSlot()
    digest_grace: timedelta = timedelta(hours=2)
    opt_down_daily_max: int = 1
    opt_down_weekly_max: int = 3
    jitter_seconds: int = field(init=False, repr=False, compare=False)
    plan: tuple[CapPlan, ...] = field(init=False, repr=False, compare=False)
    parts: PlanParts = field(init=False, repr=False, compare=False)
    # Per-Rules memos of the cap list and its split plan for each (mode, count) seen:
    # built once, read on the hot path. Value caches: equality and hash ignore them.
    _caps_memo: dict[tuple[FrequencyPreference, int], tuple[CapRule, ...]] = field(
        init=False, repr=False, compare=False, hash=False
    )
    _parts_memo: dict[tuple[FrequencyPreference, int], PlanParts] = field(
        init=False, repr=False, compare=False, hash=False
    )

    def __post_init__(self) -> None:
        _member(self, "preference_on_exceed", CapAction)
        if self.jitter < timedelta(0):
            raise ValueError("jitter must not be negative")
        if self.jitter.microseconds:
            # Offsets are whole seconds: a fraction would be dropped without a word.
            raise ValueError("jitter must be a whole number of seconds")
        if self.digest_grace <= timedelta(0):
            raise ValueError("digest_grace must be positive")
        if self.opt_down_daily_max < 1 or self.opt_down_weekly_max < 1:
            raise ValueError("opt-down defaults must be at least 1")
        if any(rule.user_preference for rule in self.caps):
            raise ValueError("user_preference marks the opt-down rule, not an app cap")
        object.__setattr__(self, "jitter_seconds", int(self.jitter.total_seconds()))
        object.__setattr__(self, "_caps_memo", {})
        object.__setattr__(self, "plan", tuple(rule.plan for rule in self.caps))
        object.__setattr__(self, "parts", split_plan(self.plan))
        object.__setattr__(self, "_parts_memo", {})

    def caps_for(self, frequency: FrequencyPreference, max_count: int = 0) -> tuple[CapRule, ...]:
        """The app's caps plus the one a DAILY_MAX / WEEKLY_MAX opt-down adds.

        ``max_count`` is the user's number (0: this app's default for the mode). The user's
        rule is only ever appended, so whatever the number, it can tighten the app's caps
        but never loosen them.
        """
        window = _OPT_DOWN_WINDOW.get(frequency)
        if window is None:
            return self.caps
        key = (frequency, max_count)
        try:
            return self._caps_memo[key]
        except KeyError:
            pass
        default = (
            self.opt_down_daily_max if window is CalendarWindow.DAY else self.opt_down_weekly_max
        )
        rule = CapRule(
            CapScope.ALL_MARKETING,
            max_count if max_count > 0 else default,
            window,
            self.preference_on_exceed,
            name=OPT_DOWN_RULE,
            user_preference=True,
        )
        caps = (*self.caps, rule)
        if len(self._caps_memo) < 512:
            self._caps_memo[key] = caps
        return caps

    def plan_for(self, frequency: FrequencyPreference, max_count: int = 0) -> tuple[CapPlan, ...]:
        """``caps_for`` as the engine's loops read it (``CapRule.plan`` of each).

        Not memoised: the engine reads ``parts_for``, which is.
        """
        return tuple(rule.plan for rule in self.caps_for(frequency, max_count))

    def parts_for(self, frequency: FrequencyPreference, max_count: int = 0) -> PlanParts:
        """``plan_for`` split as the engine's loops read it (``split_plan``), memoised."""
        key = (frequency, max_count)
        try:
            return self._parts_memo[key]
        except KeyError:
            pass
        parts = split_plan(self.plan_for(frequency, max_count))
        if len(self._parts_memo) < 512:
            self._parts_memo[key] = parts
        return parts
