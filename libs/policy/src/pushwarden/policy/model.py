"""Input types of the policy: messages, recipients, contact history entries and rules.

Every type here is an immutable value. The scheduler builds them from its protobuf
messages and the consent service's answers; the policy never fetches anything itself.
All instants are timezone-aware ``datetime`` values; the policy works in UTC internally
and uses the recipient's IANA zone only for wall-clock rules (quiet hours, calendar
windows, digest slots).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from typing import TypeVar

__all__ = [
    "ALL_WEEKDAYS",
    "NO_QUIET_HOURS",
    "OPT_DOWN_RULE",
    "CalendarWindow",
    "CapAction",
    "CapRule",
    "CapScope",
    "Category",
    "ContactEntry",
    "DigestPeriod",
    "DigestSlot",
    "FrequencyPreference",
    "Message",
    "MessageKind",
    "QuietHours",
    "QuietWindow",
    "Recipient",
    "Rules",
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

    def __post_init__(self) -> None:
        _require_aware(self.expires_at, "expires_at")
        if not isinstance(self.category, Category):
            raise TypeError(f"Message.category must be a Category, not {self.category!r}")

    @property
    def source_id(self) -> str | None:
        """The campaign this message belongs to, else its trigger (the holdout key)."""
        return self.campaign_id if self.campaign_id is not None else self.trigger_id

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
    source, kept apart: CAMPAIGN caps count sends by ``campaign_id`` only, so a
    trigger's sends (``trigger_id`` set, no campaign) never count there, even when a
    trigger id equals a campaign id; they count under ALL_MARKETING and CATEGORY caps like
    every marketing send.
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


@dataclass(frozen=True, slots=True)
class QuietHours:
    """A set of quiet windows; an empty set means no quiet hours.

    Windows may overlap (a time inside any window is quiet) and may differ by weekday.
    """

    windows: tuple[QuietWindow, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "windows", tuple(self.windows))
        for window in self.windows:
            if not isinstance(window, QuietWindow):
                raise TypeError(f"QuietHours.windows must hold QuietWindow values, not {window!r}")


NO_QUIET_HOURS = QuietHours(())


@dataclass(frozen=True, slots=True)
class DigestSlot:
    """When a DIGEST user's one marketing push per period goes out (local wall time)."""

    period: DigestPeriod = DigestPeriod.DAILY
    at: time = time(9, 0)
    weekday: int = 0

    def __post_init__(self) -> None:
        _member(self, "period", DigestPeriod)
        if self.at.tzinfo is not None:
            raise ValueError("digest slot time is a local wall-clock time without tzinfo")
        if not 0 <= self.weekday <= 6:
            raise ValueError("weekday must be 0..6 (Monday = 0)")


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

    def __post_init__(self) -> None:
        # Validated here, once per recipient, so ``decide`` never has to.
        _member(self, "frequency", FrequencyPreference)
        if self.frequency_max < 0:
            raise ValueError("frequency_max must be 0 (app default) or a positive count")
        # ``frozenset()`` is a new 216-byte object each time: share one for the empty sets
        # so the hot path's membership tests on them never touch a recipient's own memory.
        for name in ("category_opt_outs", "topic_opt_outs", "holdout_sources"):
            if not getattr(self, name):
                object.__setattr__(self, name, _NO_IDS)


@dataclass(frozen=True, slots=True)
class CapRule:
    """A frequency cap.

    ``window`` is a rolling ``timedelta`` or a ``CalendarWindow`` in the recipient's zone.
    For CATEGORY and CAMPAIGN scope, ``target_id=None`` applies the cap to each category
    (campaign) separately, counting the one the message belongs to; a set ``target_id``
    limits the rule to that one. CAMPAIGN scope is keyed by campaign id: it counts the
    sends of the message's campaign and does not apply to a message with no campaign (a
    trigger's), as the contract's CAP_SCOPE_CAMPAIGN says.
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
        object.__setattr__(self, "caps", tuple(self.caps))
        for rule in self.caps:
            if not isinstance(rule, CapRule):
                raise TypeError(f"Rules.caps must hold CapRule values, not {rule!r}")
        if any(rule.user_preference for rule in self.caps):
            raise ValueError("user_preference marks the opt-down rule, not an app cap")
        if not isinstance(self.quiet_hours, QuietHours):
            raise TypeError(f"Rules.quiet_hours must be QuietHours, not {self.quiet_hours!r}")

    def caps_for(self, frequency: FrequencyPreference, max_count: int = 0) -> tuple[CapRule, ...]:
        """The app's caps plus the one a DAILY_MAX / WEEKLY_MAX opt-down adds.

        ``max_count`` is the user's number (0: this app's default for the mode). The user's
        rule is only ever appended, so whatever the number, it can tighten the app's caps
        but never loosen them.
        """
        window = _OPT_DOWN_WINDOW.get(frequency)
        if window is None:
            return self.caps
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
        return (*self.caps, rule)
