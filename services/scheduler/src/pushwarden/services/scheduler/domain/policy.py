"""An app's governance policy (``pushwarden.scheduler.v1.Policy``): its checks, its
defaults, SetPolicy's field mask, and the policy library's ``Rules`` built from it.

Pure: protobuf messages and policy-library values in and out, nothing else.

Defaults are explicit. :func:`with_defaults` fills every field the contract gives a
default (jitter 30 min, digest grace 2 h, digest slot 09:00 on Monday, opt-down 1 a
day and 3 a week, DEFER for opt-down and for cap rules without ``on_exceed``,
time-zone fallback SKIP), taking the numbers from the policy library's own ``Rules()``
so the two cannot drift apart. GetPolicy returns that effective policy (for an app that
never set one: the defaults, version 0), and SetPolicy stores it, so a field left unset
and a field set to its default are the same stored policy, and sending either again
changes nothing (the version stays).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import time, timedelta
from typing import Any

from google.protobuf import duration_pb2, field_mask_pb2

from pushwarden.common.v1 import policy_pb2, types_pb2
from pushwarden.policy import (
    ALL_WEEKDAYS,
    NO_QUIET_HOURS,
    OPT_DOWN_RULE,
    CalendarWindow,
    CapAction,
    CapRule,
    CapScope,
    DigestPeriod,
    DigestSlot,
    FrequencyPreference,
    QuietHours,
    QuietWindow,
    Rules,
)
from pushwarden.runtime.validation import Violations, id_problem
from pushwarden.scheduler.v1 import messages_pb2, resources_pb2

Policy = resources_pb2.Policy

MAX_CAP_RULES = 20
MAX_RULE_ID_CHARS = 64
MAX_ROLLING_WINDOW = timedelta(days=90)
MAX_JITTER = timedelta(hours=6)

_LIBRARY_DEFAULTS = Rules()
DEFAULT_JITTER = _LIBRARY_DEFAULTS.jitter
DEFAULT_DIGEST_GRACE = _LIBRARY_DEFAULTS.digest_grace
DEFAULT_DIGEST_SLOT = _LIBRARY_DEFAULTS.default_digest.at
DEFAULT_OPT_DOWN_DAILY_MAX = _LIBRARY_DEFAULTS.opt_down_daily_max
DEFAULT_OPT_DOWN_WEEKLY_MAX = _LIBRARY_DEFAULTS.opt_down_weekly_max
# Proto weekdays are ISO (MONDAY = 1), the library's are date.weekday() (Monday = 0).
DEFAULT_DIGEST_WEEKDAY = _LIBRARY_DEFAULTS.default_digest.weekday + 1

MASK_FIELDS: tuple[str, ...] = (
    "cap_rules",
    "default_quiet_hours",
    "jitter_window",
    "time_zone_fallback",
    "opt_out_confirmation",
    "opt_down_on_exceed",
    "default_digest_slot",
    "default_digest_weekday",
    "digest_grace",
    "opt_down_daily_max",
    "opt_down_weekly_max",
)
"""The fields SetPolicy's ``update_mask`` may name (the contract's list)."""
REPEATED_FIELDS = frozenset({"cap_rules"})
MESSAGE_FIELDS = frozenset(
    {
        "default_quiet_hours",
        "jitter_window",
        "time_zone_fallback",
        "opt_out_confirmation",
        "default_digest_slot",
        "digest_grace",
    }
)
"""Which of MASK_FIELDS are repeated and which are messages (the rest are scalars)."""

_DAYS = frozenset(v for v in types_pb2.DayOfWeek.values() if v)
_SCOPES = {
    policy_pb2.CAP_SCOPE_ALL_MARKETING: CapScope.ALL_MARKETING,
    policy_pb2.CAP_SCOPE_CATEGORY: CapScope.CATEGORY,
    policy_pb2.CAP_SCOPE_CAMPAIGN: CapScope.CAMPAIGN,
}
_CALENDARS = {
    policy_pb2.CALENDAR_PERIOD_DAY: CalendarWindow.DAY,
    policy_pb2.CALENDAR_PERIOD_WEEK: CalendarWindow.WEEK,
}
_ON_EXCEED = frozenset({policy_pb2.ON_EXCEED_DROP, policy_pb2.ON_EXCEED_DEFER})
_FALLBACK_MODES = frozenset(
    {resources_pb2.TIME_ZONE_FALLBACK_MODE_DEFAULT_ZONE, resources_pb2.TIME_ZONE_FALLBACK_MODE_SKIP}
)
_FREQUENCY_MODES = {
    policy_pb2.FREQUENCY_MODE_NORMAL: FrequencyPreference.NORMAL,
    policy_pb2.FREQUENCY_MODE_DAILY_MAX: FrequencyPreference.DAILY_MAX,
    policy_pb2.FREQUENCY_MODE_WEEKLY_MAX: FrequencyPreference.WEEKLY_MAX,
    policy_pb2.FREQUENCY_MODE_DIGEST: FrequencyPreference.DIGEST,
}
_MAX_DURATION_SECONDS = 315_576_000_000  # google.protobuf.Duration's own range

TemplateCheck = Callable[[resources_pb2.Template, Violations, str], None]
"""Checks a template, adding violations under the path it is given
(``policy.opt_out_confirmation.template``)."""


# Checks.


def _duration(problems: Violations, path: str, value: duration_pb2.Duration) -> timedelta | None:
    """The duration as a ``timedelta``, or None (with a violation) when malformed."""
    seconds, nanos = value.seconds, value.nanos
    if (
        abs(seconds) > _MAX_DURATION_SECONDS
        or abs(nanos) > 999_999_999
        or (seconds > 0 and nanos < 0)
        or (seconds < 0 and nanos > 0)
    ):
        problems.add(path, "not a valid duration (seconds and nanos must share their sign)")
        return None
    return value.ToTimedelta()


def _local_time_ok(problems: Violations, path: str, value: types_pb2.LocalTime) -> bool:
    ok = True
    if not 0 <= value.hours <= 23:
        problems.add(f"{path}.hours", "must be 0..23")
        ok = False
    if not 0 <= value.minutes <= 59:
        problems.add(f"{path}.minutes", "must be 0..59")
        ok = False
    return ok


def check_quiet_hours(problems: Violations, path: str, hours: policy_pb2.QuietHours) -> None:
    """Every window has a valid start and end that differ, and only real weekdays."""
    for index, window in enumerate(hours.windows):
        where = f"{path}.windows[{index}]"
        has_start = problems.required(f"{where}.start", window.HasField("start"))
        has_end = problems.required(f"{where}.end", window.HasField("end"))
        valid = _local_time_ok(problems, f"{where}.start", window.start)
        valid = _local_time_ok(problems, f"{where}.end", window.end) and valid
        if has_start and has_end and valid and _same_time(window.start, window.end):
            problems.add(
                f"{where}.end",
                "equals start: an empty window or a whole day? set them apart "
                "(an end before start crosses midnight)",
            )
        for day_index, day in enumerate(window.days):
            if day not in _DAYS:
                problems.add(f"{where}.days[{day_index}]", "must be a weekday (not UNSPECIFIED)")


def _same_time(a: types_pb2.LocalTime, b: types_pb2.LocalTime) -> bool:
    return (a.hours, a.minutes) == (b.hours, b.minutes)


def check_template_content(
    template: resources_pb2.Template, problems: Violations, path: str
) -> None:
    """The minimum a template needs: content with a title or a body (or a silent push).

    The default check of the opt-out confirmation's template; the composition root may
    pass the scheduler's full template check (placeholders, sizes) instead."""
    if not problems.required(f"{path}.content", template.HasField("content")):
        return
    content = template.content
    if not (content.title or content.body or content.apns.content_available):
        problems.add(f"{path}.content", "title or body is required (unless the push is silent)")


def _check_cap_rule(
    problems: Violations, where: str, rule: policy_pb2.CapRule, seen: set[str]
) -> None:
    rule_id = rule.rule_id
    if not rule_id:
        problems.add(f"{where}.rule_id", "required")
    else:
        problem = id_problem(rule_id, MAX_RULE_ID_CHARS)
        if problem is not None:
            problems.add(f"{where}.rule_id", problem)
        elif rule_id == OPT_DOWN_RULE:
            problems.add(
                f"{where}.rule_id",
                f"{OPT_DOWN_RULE!r} is reserved for the rule a user's opt-down adds",
            )
        elif rule_id in seen:
            problems.add(f"{where}.rule_id", f"repeats {rule_id!r}")
        seen.add(rule_id)
    problems.enum(f"{where}.scope", rule.scope, _SCOPES)
    if rule.category_id:
        if rule.scope != policy_pb2.CAP_SCOPE_CATEGORY:
            problems.add(f"{where}.category_id", "must be empty unless scope is CATEGORY")
        else:
            problems.caller_id(f"{where}.category_id", rule.category_id)
    if rule.max_count < 1:
        problems.add(f"{where}.max_count", "must be at least 1")
    window = rule.WhichOneof("window")
    if window is None:
        problems.add(f"{where}.window", "required: a rolling duration or a calendar period")
    elif window == "rolling":
        span = _duration(problems, f"{where}.rolling", rule.rolling)
        if span is not None and not timedelta(0) < span <= MAX_ROLLING_WINDOW:
            problems.add(f"{where}.rolling", "must be positive and at most 90 days")
    else:
        problems.enum(f"{where}.calendar", rule.calendar, _CALENDARS)
    problems.enum(f"{where}.on_exceed", rule.on_exceed, _ON_EXCEED, required=False)


def validate_policy(
    policy: Policy,
    violations: Violations,
    field_prefix: str = "policy",
    *,
    check_template: TemplateCheck = check_template_content,
) -> None:
    """Add a violation, with its full field path (``policy.cap_rules[2].max_count``), for
    every contract rule ``policy`` breaks. References to categories (a cap rule's
    category must exist; the opt-out confirmation's must be TRANSACTIONAL) need consent
    and are checked by the SetPolicy handler. Output-only fields are ignored."""
    p = field_prefix
    if len(policy.cap_rules) > MAX_CAP_RULES:
        violations.add(
            f"{p}.cap_rules", f"at most {MAX_CAP_RULES} rules, got {len(policy.cap_rules)}"
        )
    seen: set[str] = set()
    for index, rule in enumerate(policy.cap_rules):
        _check_cap_rule(violations, f"{p}.cap_rules[{index}]", rule, seen)
    if policy.HasField("default_quiet_hours"):
        check_quiet_hours(violations, f"{p}.default_quiet_hours", policy.default_quiet_hours)
    if policy.HasField("jitter_window"):
        jitter = _duration(violations, f"{p}.jitter_window", policy.jitter_window)
        if jitter is not None:
            if not timedelta(0) <= jitter <= MAX_JITTER:
                violations.add(f"{p}.jitter_window", "must be 0 to 6 hours")
            elif policy.jitter_window.nanos:
                violations.add(f"{p}.jitter_window", "must be a whole number of seconds")
    fallback = policy.time_zone_fallback
    violations.enum(f"{p}.time_zone_fallback.mode", fallback.mode, _FALLBACK_MODES, required=False)
    zone_path = f"{p}.time_zone_fallback.default_time_zone"
    if fallback.mode == resources_pb2.TIME_ZONE_FALLBACK_MODE_DEFAULT_ZONE:
        violations.time_zone(zone_path, fallback.default_time_zone, required=True)
    elif fallback.default_time_zone:
        violations.add(zone_path, "must be empty unless mode is DEFAULT_ZONE")
    confirmation = policy.opt_out_confirmation
    where = f"{p}.opt_out_confirmation"
    if confirmation.category_id:
        violations.caller_id(f"{where}.category_id", confirmation.category_id)
    if confirmation.enabled:
        violations.required(f"{where}.category_id", bool(confirmation.category_id))
        violations.required(f"{where}.template", confirmation.HasField("template"))
    if confirmation.HasField("template"):
        check_template(confirmation.template, violations, f"{where}.template")
    violations.enum(
        f"{p}.opt_down_on_exceed", policy.opt_down_on_exceed, _ON_EXCEED, required=False
    )
    if policy.HasField("default_digest_slot"):
        _local_time_ok(violations, f"{p}.default_digest_slot", policy.default_digest_slot)
    violations.enum(
        f"{p}.default_digest_weekday", policy.default_digest_weekday, _DAYS, required=False
    )
    if policy.HasField("digest_grace"):
        grace = _duration(violations, f"{p}.digest_grace", policy.digest_grace)
        if grace is not None and grace <= timedelta(0):
            violations.add(f"{p}.digest_grace", "must be positive")


# Defaults.


def with_defaults(policy: Policy) -> Policy:
    """The effective policy: a copy of ``policy`` with every default the contract names
    filled in explicitly (output-only fields are kept as they are)."""
    out = Policy()
    out.CopyFrom(policy)
    for rule in out.cap_rules:
        if rule.on_exceed == policy_pb2.ON_EXCEED_UNSPECIFIED:
            rule.on_exceed = policy_pb2.ON_EXCEED_DEFER
    if not out.HasField("jitter_window"):
        out.jitter_window.FromTimedelta(DEFAULT_JITTER)
    if out.time_zone_fallback.mode == resources_pb2.TIME_ZONE_FALLBACK_MODE_UNSPECIFIED:
        out.time_zone_fallback.mode = resources_pb2.TIME_ZONE_FALLBACK_MODE_SKIP
    if out.opt_down_on_exceed == policy_pb2.ON_EXCEED_UNSPECIFIED:
        out.opt_down_on_exceed = policy_pb2.ON_EXCEED_DEFER
    if not out.HasField("default_digest_slot"):
        out.default_digest_slot.hours = DEFAULT_DIGEST_SLOT.hour
        out.default_digest_slot.minutes = DEFAULT_DIGEST_SLOT.minute
    if out.default_digest_weekday == types_pb2.DAY_OF_WEEK_UNSPECIFIED:
        out.default_digest_weekday = types_pb2.DayOfWeek.ValueType(DEFAULT_DIGEST_WEEKDAY)
    if not out.HasField("digest_grace"):
        out.digest_grace.FromTimedelta(DEFAULT_DIGEST_GRACE)
    if out.opt_down_daily_max == 0:
        out.opt_down_daily_max = DEFAULT_OPT_DOWN_DAILY_MAX
    if out.opt_down_weekly_max == 0:
        out.opt_down_weekly_max = DEFAULT_OPT_DOWN_WEEKLY_MAX
    return out


# The field mask.


def mask_fields(
    update_mask: field_mask_pb2.FieldMask | None, violations: Violations
) -> frozenset[str]:
    """The fields a SetPolicy changes: every one for an unset mask (replace all), else
    the listed ones; an unknown path (or an empty mask) is a violation naming
    ``update_mask.paths[i]``."""
    if update_mask is None:
        return frozenset(MASK_FIELDS)
    if not update_mask.paths:
        violations.add("update_mask.paths", "empty: name the fields to change, or leave it unset")
    fields: set[str] = set()
    for index, path in enumerate(update_mask.paths):
        if path in MASK_FIELDS:
            fields.add(path)
        else:
            violations.add(
                f"update_mask.paths[{index}]", f"{path!r} is not one of {', '.join(MASK_FIELDS)}"
            )
    return frozenset(fields)


def merge(stored: Policy, incoming: Policy, fields: Iterable[str]) -> Policy:
    """``stored`` with each of ``fields`` replaced by ``incoming``'s value (an unset
    field in ``incoming`` clears it, so it takes its default); output-only fields cleared."""
    result = Policy()
    result.CopyFrom(stored)
    # The untyped message API: the names come from MASK_FIELDS, not from the caller.
    out: Any = result
    source: Any = incoming
    for name in fields:
        out.ClearField(name)
        if name in REPEATED_FIELDS:
            getattr(out, name).extend(getattr(source, name))
        elif name in MESSAGE_FIELDS:
            if source.HasField(name):
                getattr(out, name).CopyFrom(getattr(source, name))
        else:
            setattr(out, name, getattr(source, name))
    result.ClearField("version")
    result.ClearField("updated_at")
    return result


def apply_mask(
    stored: Policy, incoming: Policy, update_mask: field_mask_pb2.FieldMask | None
) -> Policy:
    """SetPolicy's field-mask semantics: ``stored`` with the fields the mask lists taken
    from ``incoming`` (an unset mask replaces everything). Raises InvalidArgument naming
    ``update_mask.paths[i]`` for a path the contract does not list."""
    problems = Violations()
    fields = mask_fields(update_mask, problems)
    problems.raise_if_any("the update mask is invalid")
    return merge(stored, incoming, fields)


@dataclass(frozen=True, slots=True)
class PolicyChange:
    """A checked SetPolicy request: the app, the fields to change with their new values
    (only those fields of ``policy`` count) and the version it expects (0: any)."""

    app_id: str
    policy: Policy
    fields: frozenset[str]
    expected_version: int

    @classmethod
    def from_proto(
        cls,
        request: messages_pb2.SetPolicyRequest,
        *,
        check_template: TemplateCheck = check_template_content,
    ) -> PolicyChange:
        """Check the request; raises InvalidArgument naming every bad field. Only the
        fields the mask names are checked (the others are not being changed)."""
        problems = Violations()
        problems.caller_id("app_id", request.app_id)
        mask = request.update_mask if request.HasField("update_mask") else None
        fields = mask_fields(mask, problems)
        changed = merge(Policy(), request.policy, fields)
        validate_policy(changed, problems, "policy", check_template=check_template)
        problems.raise_if_any("the policy is invalid")
        return cls(request.app_id, changed, fields, request.expected_version)

    def referenced_categories(self) -> dict[str, list[str]]:
        """The category ids the changed fields name, each with the field paths naming it:
        CATEGORY cap rules' ``category_id`` and the opt-out confirmation's."""
        found: dict[str, list[str]] = {}
        if "cap_rules" in self.fields:
            for index, rule in enumerate(self.policy.cap_rules):
                if rule.category_id:
                    found.setdefault(rule.category_id, []).append(
                        f"policy.cap_rules[{index}].category_id"
                    )
        confirmation = self.policy.opt_out_confirmation
        if "opt_out_confirmation" in self.fields and confirmation.category_id:
            found.setdefault(confirmation.category_id, []).append(
                "policy.opt_out_confirmation.category_id"
            )
        return found


# Conversion to the policy library.


def local_time(value: types_pb2.LocalTime) -> time | None:
    """A proto LocalTime as a wall-clock ``time``; None when out of range."""
    if 0 <= value.hours <= 23 and 0 <= value.minutes <= 59:
        return time(value.hours, value.minutes)
    return None


def weekday(value: int) -> int | None:
    """A proto DayOfWeek (MONDAY = 1) as the library's weekday (Monday = 0); None for
    UNSPECIFIED or an unknown value."""
    return value - 1 if value in _DAYS else None


def quiet_hours_from_proto(hours: policy_pb2.QuietHours) -> QuietHours:
    """Quiet hours (the app's default or a user's) as the library's value.

    Consent and SetPolicy refuse bad windows, so none should arrive; a window that is
    still unusable (start equal to end, a time out of range, no real weekday) is left
    out rather than failing every decision for the user."""
    windows: list[QuietWindow] = []
    for window in hours.windows:
        start, end = local_time(window.start), local_time(window.end)
        if start is None or end is None or start == end:
            continue
        if window.days:
            days = frozenset(d for d in (weekday(day) for day in window.days) if d is not None)
            if not days:
                continue
        else:
            days = ALL_WEEKDAYS
        windows.append(QuietWindow(start, end, days))
    return QuietHours(tuple(windows)) if windows else NO_QUIET_HOURS


def _default_slot(policy: Policy) -> tuple[time, int]:
    at = local_time(policy.default_digest_slot) if policy.HasField("default_digest_slot") else None
    day = weekday(policy.default_digest_weekday)
    return (
        DEFAULT_DIGEST_SLOT if at is None else at,
        DEFAULT_DIGEST_WEEKDAY - 1 if day is None else day,
    )


def frequency_from_proto(
    preference: policy_pb2.FrequencyPreference, policy: Policy
) -> tuple[FrequencyPreference, int, DigestSlot | None]:
    """A user's opt-down as the library's ``(mode, max_count, digest slot)``.

    ``max_count`` is the user's number for DAILY_MAX / WEEKLY_MAX (0: the app's default,
    which ``Rules`` applies) and 0 otherwise; it goes to ``Recipient.frequency_max``.
    The slot is set for DIGEST only: the user's period (DAILY when unset), their slot
    time and weekday, else the app policy's defaults. An unknown mode is NORMAL."""
    mode = _FREQUENCY_MODES.get(preference.mode, FrequencyPreference.NORMAL)
    if mode is FrequencyPreference.DAILY_MAX or mode is FrequencyPreference.WEEKLY_MAX:
        return mode, preference.max_count, None
    if mode is not FrequencyPreference.DIGEST:
        return FrequencyPreference.NORMAL, 0, None
    default_at, default_day = _default_slot(policy)
    at = local_time(preference.digest_slot) if preference.HasField("digest_slot") else None
    day = weekday(preference.digest_weekday)
    period = (
        DigestPeriod.WEEKLY
        if preference.digest_period == policy_pb2.DIGEST_PERIOD_WEEKLY
        else DigestPeriod.DAILY
    )
    slot = DigestSlot(period, default_at if at is None else at, default_day if day is None else day)
    return mode, 0, slot


def cap_rule_from_proto(rule: policy_pb2.CapRule) -> CapRule:
    """One checked cap rule as the library's value (named by its ``rule_id``)."""
    window: timedelta | CalendarWindow
    if rule.WhichOneof("window") == "rolling":
        window = rule.rolling.ToTimedelta()
    else:
        window = _CALENDARS[rule.calendar]
    scope = _SCOPES[rule.scope]
    return CapRule(
        scope,
        rule.max_count,
        window,
        CapAction.DROP if rule.on_exceed == policy_pb2.ON_EXCEED_DROP else CapAction.DEFER,
        target_id=(rule.category_id or None) if scope is CapScope.CATEGORY else None,
        count_transactional=rule.count_transactional,
        name=rule.rule_id,
    )


def to_rules(policy: Policy) -> Rules:
    """The library's ``Rules`` for a checked policy (its defaults applied first)."""
    effective = with_defaults(policy)
    fallback = effective.time_zone_fallback
    default_at, default_day = _default_slot(effective)
    return Rules(
        caps=tuple(cap_rule_from_proto(rule) for rule in effective.cap_rules),
        quiet_hours=(
            quiet_hours_from_proto(effective.default_quiet_hours)
            if effective.HasField("default_quiet_hours")
            else NO_QUIET_HOURS
        ),
        jitter=effective.jitter_window.ToTimedelta(),
        default_zone=(
            fallback.default_time_zone or None
            if fallback.mode == resources_pb2.TIME_ZONE_FALLBACK_MODE_DEFAULT_ZONE
            else None
        ),
        preference_on_exceed=(
            CapAction.DROP
            if effective.opt_down_on_exceed == policy_pb2.ON_EXCEED_DROP
            else CapAction.DEFER
        ),
        default_digest=DigestSlot(DigestPeriod.DAILY, default_at, default_day),
        digest_grace=effective.digest_grace.ToTimedelta(),
        opt_down_daily_max=effective.opt_down_daily_max,
        opt_down_weekly_max=effective.opt_down_weekly_max,
    )
