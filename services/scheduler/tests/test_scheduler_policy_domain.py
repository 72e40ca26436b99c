"""The scheduler's policy domain, pure: the contract's checks of a Policy (each with its
field path), its defaults and field mask, its conversion to the policy library's Rules,
and the library's decisions (made by the real ``decide``) as contract Decisions."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, time, timedelta
from typing import Any

import pytest
from google.protobuf import duration_pb2, field_mask_pb2
from hypothesis import given, settings
from hypothesis import strategies as st

from pushwarden.common.v1 import content_pb2, decision_pb2, policy_pb2, types_pb2
from pushwarden.policy import (
    ALL_WEEKDAYS,
    NO_QUIET_HOURS,
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
    explain,
)
from pushwarden.runtime.errors import InvalidArgument
from pushwarden.runtime.validation import Violations
from pushwarden.scheduler.v1 import messages_pb2, resources_pb2
from pushwarden.services.scheduler.domain.decisions import (
    attach_detail,
    decision_to_proto,
    explanation_lines,
    outcome_code,
    reason_code,
    step_line,
)
from pushwarden.services.scheduler.domain.policy import (
    MASK_FIELDS,
    MESSAGE_FIELDS,
    REPEATED_FIELDS,
    Policy,
    PolicyChange,
    apply_mask,
    frequency_from_proto,
    quiet_hours_from_proto,
    to_rules,
    validate_policy,
    with_defaults,
)

D = types_pb2.DayOfWeek
LT = types_pb2.LocalTime


def _rule(rule_id: str = "daily", **fields: object) -> policy_pb2.CapRule:
    rule = policy_pb2.CapRule(
        rule_id=rule_id, scope=policy_pb2.CAP_SCOPE_ALL_MARKETING, max_count=3
    )
    rule.rolling.FromTimedelta(timedelta(hours=24))
    for name, value in fields.items():
        if name == "rolling":
            assert isinstance(value, timedelta)
            rule.rolling.FromTimedelta(value)
        else:
            setattr(rule, name, value)
    return rule


def _window(
    start: tuple[int, int], end: tuple[int, int], *days: int
) -> policy_pb2.QuietHoursWindow:
    return policy_pb2.QuietHoursWindow(
        start=LT(hours=start[0], minutes=start[1]),
        end=LT(hours=end[0], minutes=end[1]),
        days=[D.ValueType(day) for day in days],
    )


def _template() -> resources_pb2.Template:
    return resources_pb2.Template(content=content_pb2.Content(title="You opted out"))


def full_policy() -> Policy:
    """A valid policy that sets every field."""
    policy = Policy(
        cap_rules=[
            _rule("daily"),
            _rule(
                "promos-per-day",
                scope=policy_pb2.CAP_SCOPE_CATEGORY,
                category_id="promos",
                calendar=policy_pb2.CALENDAR_PERIOD_DAY,
                max_count=1,
                on_exceed=policy_pb2.ON_EXCEED_DROP,
            ),
            _rule(
                "per-category-week",
                scope=policy_pb2.CAP_SCOPE_CATEGORY,
                calendar=policy_pb2.CALENDAR_PERIOD_WEEK,
                max_count=5,
                count_transactional=True,
            ),
            _rule("per-campaign", scope=policy_pb2.CAP_SCOPE_CAMPAIGN, max_count=2),
        ],
        default_quiet_hours=policy_pb2.QuietHours(
            windows=[
                _window((22, 0), (8, 0)),
                _window((13, 0), (14, 30), D.DAY_OF_WEEK_SATURDAY, D.DAY_OF_WEEK_SUNDAY),
            ]
        ),
        time_zone_fallback=resources_pb2.TimeZoneFallback(
            mode=resources_pb2.TIME_ZONE_FALLBACK_MODE_DEFAULT_ZONE,
            default_time_zone="America/New_York",
        ),
        opt_out_confirmation=resources_pb2.OptOutConfirmation(
            enabled=True, category_id="account", template=_template()
        ),
        opt_down_on_exceed=policy_pb2.ON_EXCEED_DROP,
        default_digest_slot=LT(hours=20, minutes=30),
        default_digest_weekday=D.DAY_OF_WEEK_FRIDAY,
        opt_down_daily_max=2,
        opt_down_weekly_max=5,
    )
    policy.jitter_window.FromTimedelta(timedelta(minutes=10))
    policy.digest_grace.FromTimedelta(timedelta(hours=1))
    return policy


def violations_of(policy: Policy, prefix: str = "policy") -> list[tuple[str, str]]:
    problems = Violations()
    validate_policy(policy, problems, prefix)
    return problems.items


# Validation.


def test_a_full_valid_policy_and_the_empty_policy_have_no_violations() -> None:
    assert violations_of(full_policy()) == []
    assert violations_of(Policy()) == []
    assert violations_of(with_defaults(Policy())) == []


def _set_jitter(seconds: int, nanos: int = 0) -> Callable[[Policy], None]:
    def change(policy: Policy) -> None:
        policy.jitter_window.seconds = seconds
        policy.jitter_window.nanos = nanos

    return change


def _cap(index: int, **fields: object) -> Callable[[Policy], None]:
    def change(policy: Policy) -> None:
        del policy.cap_rules[:]
        policy.cap_rules.extend(_rule(f"r{i}") for i in range(index))
        extra = dict(fields)
        rule_id = extra.pop("rule_id", f"r{index}")
        assert isinstance(rule_id, str)
        policy.cap_rules.append(_rule(rule_id, **extra))

    return change


def _rolling(index: int, seconds: int, nanos: int = 0) -> Callable[[Policy], None]:
    def change(policy: Policy) -> None:
        _cap(index)(policy)
        policy.cap_rules[index].rolling.seconds = seconds
        policy.cap_rules[index].rolling.nanos = nanos

    return change


def _no_window(policy: Policy) -> None:
    _cap(0)(policy)
    policy.cap_rules[0].ClearField("rolling")


def _quiet(*windows: policy_pb2.QuietHoursWindow) -> Callable[[Policy], None]:
    def change(policy: Policy) -> None:
        policy.default_quiet_hours.CopyFrom(policy_pb2.QuietHours(windows=windows))

    return change


def _fallback(mode: int, zone: str) -> Callable[[Policy], None]:
    def change(policy: Policy) -> None:
        policy.time_zone_fallback.mode = resources_pb2.TimeZoneFallbackMode.ValueType(mode)
        policy.time_zone_fallback.default_time_zone = zone

    return change


def _confirmation(**fields: object) -> Callable[[Policy], None]:
    def change(policy: Policy) -> None:
        policy.opt_out_confirmation.CopyFrom(resources_pb2.OptOutConfirmation(**fields))  # type: ignore[arg-type]

    return change


def _many_rules(policy: Policy) -> None:
    del policy.cap_rules[:]
    policy.cap_rules.extend(_rule(f"r{i}") for i in range(21))


def _duplicate_ids(policy: Policy) -> None:
    del policy.cap_rules[:]
    policy.cap_rules.extend([_rule("same"), _rule("other"), _rule("same")])


def _missing_start(policy: Policy) -> None:
    window = _window((22, 0), (8, 0))
    window.ClearField("start")
    _quiet(window)(policy)


def _grace(seconds: int) -> Callable[[Policy], None]:
    def change(policy: Policy) -> None:
        policy.digest_grace.seconds = seconds

    return change


def _field(name: str, value: object) -> Callable[[Policy], None]:
    def change(policy: Policy) -> None:
        setattr(policy, name, value)

    return change


def _slot(hours: int, minutes: int) -> Callable[[Policy], None]:
    def change(policy: Policy) -> None:
        policy.default_digest_slot.CopyFrom(LT(hours=hours, minutes=minutes))

    return change


SKIP = resources_pb2.TIME_ZONE_FALLBACK_MODE_SKIP
DEFAULT_ZONE = resources_pb2.TIME_ZONE_FALLBACK_MODE_DEFAULT_ZONE

# (what breaks the full policy, the one path reported, words of its description)
BAD_POLICIES: list[tuple[Callable[[Policy], None], str, str]] = [
    (_many_rules, "policy.cap_rules", "at most 20"),
    (_cap(0, rule_id=""), "policy.cap_rules[0].rule_id", "required"),
    (_cap(1, rule_id="x" * 65), "policy.cap_rules[1].rule_id", "at most 64"),
    (_cap(0, rule_id=" padded"), "policy.cap_rules[0].rule_id", "white space"),
    (_cap(2, rule_id="opt-down"), "policy.cap_rules[2].rule_id", "reserved"),
    (_duplicate_ids, "policy.cap_rules[2].rule_id", "repeats 'same'"),
    (_cap(0, scope=policy_pb2.CAP_SCOPE_UNSPECIFIED), "policy.cap_rules[0].scope", "required"),
    (_cap(0, scope=42), "policy.cap_rules[0].scope", "unknown value 42"),
    (_cap(0, category_id="promos"), "policy.cap_rules[0].category_id", "unless scope is CATEGORY"),
    (
        _cap(0, scope=policy_pb2.CAP_SCOPE_CAMPAIGN, category_id="promos"),
        "policy.cap_rules[0].category_id",
        "unless scope is CATEGORY",
    ),
    (_cap(2, max_count=0), "policy.cap_rules[2].max_count", "at least 1"),
    (_no_window, "policy.cap_rules[0].window", "required"),
    (_rolling(0, 0), "policy.cap_rules[0].rolling", "positive"),
    (_rolling(0, -60), "policy.cap_rules[0].rolling", "positive"),
    (_rolling(1, 90 * 86400 + 1), "policy.cap_rules[1].rolling", "at most 90 days"),
    (_rolling(0, 5, -1), "policy.cap_rules[0].rolling", "not a valid duration"),
    (
        _cap(0, calendar=policy_pb2.CALENDAR_PERIOD_UNSPECIFIED),
        "policy.cap_rules[0].calendar",
        "required",
    ),
    (_cap(0, on_exceed=9), "policy.cap_rules[0].on_exceed", "unknown value 9"),
    (
        _quiet(_window((22, 0), (8, 0)), _window((9, 15), (9, 15))),
        "policy.default_quiet_hours.windows[1].end",
        "equals start",
    ),
    (
        _quiet(_window((22, 0), (8, 0), D.DAY_OF_WEEK_MONDAY, D.DAY_OF_WEEK_UNSPECIFIED)),
        "policy.default_quiet_hours.windows[0].days[1]",
        "weekday",
    ),
    (_missing_start, "policy.default_quiet_hours.windows[0].start", "required"),
    (
        _quiet(_window((24, 0), (8, 0))),
        "policy.default_quiet_hours.windows[0].start.hours",
        "0..23",
    ),
    (
        _quiet(_window((22, 0), (8, 60))),
        "policy.default_quiet_hours.windows[0].end.minutes",
        "0..59",
    ),
    (_set_jitter(6 * 3600 + 1), "policy.jitter_window", "0 to 6 hours"),
    (_set_jitter(-1), "policy.jitter_window", "0 to 6 hours"),
    (_set_jitter(1, 500_000_000), "policy.jitter_window", "whole number of seconds"),
    (_fallback(DEFAULT_ZONE, ""), "policy.time_zone_fallback.default_time_zone", "required"),
    (
        _fallback(DEFAULT_ZONE, "Mars/Olympus_Mons"),
        "policy.time_zone_fallback.default_time_zone",
        "unknown IANA time zone",
    ),
    (
        _fallback(SKIP, "Europe/Paris"),
        "policy.time_zone_fallback.default_time_zone",
        "unless mode is DEFAULT_ZONE",
    ),
    (
        _fallback(0, "Europe/Paris"),
        "policy.time_zone_fallback.default_time_zone",
        "unless mode is DEFAULT_ZONE",
    ),
    (_fallback(7, ""), "policy.time_zone_fallback.mode", "unknown value 7"),
    (
        _confirmation(enabled=True, template=_template()),
        "policy.opt_out_confirmation.category_id",
        "required",
    ),
    (
        _confirmation(enabled=True, category_id="account"),
        "policy.opt_out_confirmation.template",
        "required",
    ),
    (
        _confirmation(
            enabled=True,
            category_id="account",
            template=resources_pb2.Template(content=content_pb2.Content(sound="default")),
        ),
        "policy.opt_out_confirmation.template.content",
        "title or body",
    ),
    (
        _confirmation(enabled=False, category_id="bad\u0007id"),
        "policy.opt_out_confirmation.category_id",
        "control characters",
    ),
    (_field("opt_down_on_exceed", 5), "policy.opt_down_on_exceed", "unknown value 5"),
    (_slot(9, 75), "policy.default_digest_slot.minutes", "0..59"),
    (_field("default_digest_weekday", 8), "policy.default_digest_weekday", "unknown value 8"),
    (_grace(0), "policy.digest_grace", "positive"),
    (_grace(-3600), "policy.digest_grace", "positive"),
]


@pytest.mark.parametrize(("breaks", "path", "words"), BAD_POLICIES)
def test_each_broken_contract_rule_is_one_violation_naming_its_field(
    breaks: Callable[[Policy], None], path: str, words: str
) -> None:
    policy = full_policy()
    breaks(policy)
    found = violations_of(policy)
    assert [field for field, _ in found] == [path], found
    assert words in found[0][1]


def test_every_violation_is_reported_at_once_under_the_given_prefix() -> None:
    policy = full_policy()
    policy.cap_rules[0].max_count = 0
    policy.default_quiet_hours.windows[0].end.CopyFrom(LT(hours=22))
    policy.jitter_window.seconds = 86400
    fields = [field for field, _ in violations_of(policy, "request.policy")]
    assert fields == [
        "request.policy.cap_rules[0].max_count",
        "request.policy.default_quiet_hours.windows[0].end",
        "request.policy.jitter_window",
    ]


def test_a_disabled_confirmation_may_be_kept_without_a_template() -> None:
    policy = Policy(opt_out_confirmation=resources_pb2.OptOutConfirmation(category_id="account"))
    assert violations_of(policy) == []


# Defaults.


def test_defaults_are_the_contracts_and_the_librarys() -> None:
    effective = with_defaults(Policy())
    assert effective.jitter_window.ToTimedelta() == timedelta(minutes=30)
    assert effective.digest_grace.ToTimedelta() == timedelta(hours=2)
    assert (effective.default_digest_slot.hours, effective.default_digest_slot.minutes) == (9, 0)
    assert effective.default_digest_weekday == D.DAY_OF_WEEK_MONDAY
    assert (effective.opt_down_daily_max, effective.opt_down_weekly_max) == (1, 3)
    assert effective.opt_down_on_exceed == policy_pb2.ON_EXCEED_DEFER
    assert effective.time_zone_fallback.mode == SKIP
    assert not effective.time_zone_fallback.default_time_zone
    assert not effective.HasField("default_quiet_hours")  # none unless set
    assert not effective.opt_out_confirmation.enabled
    assert to_rules(Policy()) == Rules()


def test_defaults_fill_only_what_is_unset_and_are_idempotent() -> None:
    policy = Policy(cap_rules=[_rule("daily")])
    policy.jitter_window.FromTimedelta(timedelta(0))  # an explicit 0 disables jitter
    effective = with_defaults(policy)
    assert effective.HasField("jitter_window")
    assert effective.jitter_window.ToTimedelta() == timedelta(0)
    assert effective.cap_rules[0].on_exceed == policy_pb2.ON_EXCEED_DEFER
    assert with_defaults(effective) == effective
    full = full_policy()
    for rule in full.cap_rules:
        rule.on_exceed = rule.on_exceed or policy_pb2.ON_EXCEED_DEFER
    assert with_defaults(full) == full  # every field already set
    assert to_rules(effective).jitter == timedelta(0)


# Conversion to the library.


def test_a_full_policy_becomes_the_librarys_rules() -> None:
    rules = to_rules(full_policy())
    assert rules.caps == (
        CapRule(CapScope.ALL_MARKETING, 3, timedelta(hours=24), CapAction.DEFER, name="daily"),
        CapRule(
            CapScope.CATEGORY,
            1,
            CalendarWindow.DAY,
            CapAction.DROP,
            target_id="promos",
            name="promos-per-day",
        ),
        CapRule(
            CapScope.CATEGORY,
            5,
            CalendarWindow.WEEK,
            CapAction.DEFER,
            target_id=None,  # each category separately
            count_transactional=True,
            name="per-category-week",
        ),
        CapRule(CapScope.CAMPAIGN, 2, timedelta(hours=24), CapAction.DEFER, name="per-campaign"),
    )
    assert rules.quiet_hours == QuietHours(
        (
            QuietWindow(time(22, 0), time(8, 0), ALL_WEEKDAYS),
            QuietWindow(time(13, 0), time(14, 30), frozenset({5, 6})),
        )
    )
    assert rules.jitter == timedelta(minutes=10)
    assert rules.default_zone == "America/New_York"
    assert rules.preference_on_exceed is CapAction.DROP
    assert rules.default_digest == DigestSlot(DigestPeriod.DAILY, time(20, 30), 4)
    assert rules.digest_grace == timedelta(hours=1)
    assert (rules.opt_down_daily_max, rules.opt_down_weekly_max) == (2, 5)


def test_a_zone_kept_while_fallback_is_skip_is_no_default_zone() -> None:
    policy = with_defaults(Policy())
    assert to_rules(policy).default_zone is None


def test_quiet_hours_map_iso_days_and_leave_out_unusable_windows() -> None:
    hours = policy_pb2.QuietHours(
        windows=[
            _window((22, 0), (7, 0), D.DAY_OF_WEEK_MONDAY, D.DAY_OF_WEEK_SUNDAY),
            _window((10, 0), (10, 0)),  # start == end: refused upstream, left out here
            _window((12, 0), (13, 0), D.DAY_OF_WEEK_UNSPECIFIED),  # no real day
            _window((25, 0), (13, 0)),  # out of range
        ]
    )
    assert quiet_hours_from_proto(hours) == QuietHours(
        (QuietWindow(time(22, 0), time(7, 0), frozenset({0, 6})),)
    )
    assert quiet_hours_from_proto(policy_pb2.QuietHours()) == NO_QUIET_HOURS


def test_frequency_preferences_become_mode_count_and_slot() -> None:
    policy = full_policy()  # default slot Friday 20:30
    pref = policy_pb2.FrequencyPreference
    assert frequency_from_proto(pref(), policy) == (FrequencyPreference.NORMAL, 0, None)
    assert frequency_from_proto(
        pref(mode=policy_pb2.FREQUENCY_MODE_NORMAL, max_count=4), policy
    ) == (
        FrequencyPreference.NORMAL,
        0,
        None,
    )
    assert frequency_from_proto(
        pref(mode=policy_pb2.FREQUENCY_MODE_DAILY_MAX, max_count=2), policy
    ) == (FrequencyPreference.DAILY_MAX, 2, None)
    assert frequency_from_proto(pref(mode=policy_pb2.FREQUENCY_MODE_WEEKLY_MAX), policy) == (
        FrequencyPreference.WEEKLY_MAX,
        0,
        None,
    )
    weekly = pref(
        mode=policy_pb2.FREQUENCY_MODE_DIGEST,
        digest_period=policy_pb2.DIGEST_PERIOD_WEEKLY,
        digest_slot=LT(hours=7, minutes=15),
        digest_weekday=D.DAY_OF_WEEK_SUNDAY,
    )
    assert frequency_from_proto(weekly, policy) == (
        FrequencyPreference.DIGEST,
        0,
        DigestSlot(DigestPeriod.WEEKLY, time(7, 15), 6),
    )
    daily = pref(
        mode=policy_pb2.FREQUENCY_MODE_DIGEST, digest_period=policy_pb2.DIGEST_PERIOD_DAILY
    )
    assert frequency_from_proto(daily, policy) == (
        FrequencyPreference.DIGEST,
        0,
        DigestSlot(DigestPeriod.DAILY, time(20, 30), 4),
    )
    assert frequency_from_proto(daily, Policy())[2] == DigestSlot(DigestPeriod.DAILY, time(9), 0)
    # A mode added to the contract later reads as NORMAL.
    unknown = pref(mode=policy_pb2.FrequencyMode.ValueType(99))
    assert frequency_from_proto(unknown, policy) == (FrequencyPreference.NORMAL, 0, None)


# The field mask.


def test_the_mask_field_kinds_match_the_message() -> None:
    fields = Policy.DESCRIPTOR.fields_by_name
    assert set(MASK_FIELDS) == set(fields) - {"version", "updated_at"}
    for name in MASK_FIELDS:
        descriptor = fields[name]
        repeated = descriptor.is_repeated
        assert (name in REPEATED_FIELDS) == repeated, name
        assert (name in MESSAGE_FIELDS) == (descriptor.message_type is not None and not repeated)


def test_an_unset_mask_replaces_everything() -> None:
    incoming = Policy(opt_down_daily_max=4, version=9)
    result = apply_mask(full_policy(), incoming, None)
    assert result == Policy(opt_down_daily_max=4)  # output-only fields are cleared


def test_a_mask_changes_only_the_fields_it_names() -> None:
    incoming = Policy(cap_rules=[_rule("only")], opt_down_weekly_max=7)
    incoming.jitter_window.FromTimedelta(timedelta(minutes=5))
    mask = field_mask_pb2.FieldMask(paths=["jitter_window", "opt_down_weekly_max"])
    result = apply_mask(full_policy(), incoming, mask)
    expected = full_policy()
    expected.jitter_window.FromTimedelta(timedelta(minutes=5))
    expected.opt_down_weekly_max = 7
    assert result == expected  # the stored cap rules stayed


def test_a_masked_field_left_unset_clears_it_back_to_its_default() -> None:
    mask = field_mask_pb2.FieldMask(paths=["default_quiet_hours", "cap_rules", "digest_grace"])
    result = with_defaults(apply_mask(full_policy(), Policy(), mask))
    assert not result.HasField("default_quiet_hours")
    assert list(result.cap_rules) == []
    assert result.digest_grace.ToTimedelta() == timedelta(hours=2)
    assert result.opt_down_daily_max == 2  # not in the mask


def test_unknown_mask_paths_are_refused_naming_them() -> None:
    mask = field_mask_pb2.FieldMask(paths=["jitter_window", "version", "cap_rules.max_count"])
    with pytest.raises(InvalidArgument) as refused:
        apply_mask(full_policy(), Policy(), mask)
    assert [field for field, _ in refused.value.violations] == [
        "update_mask.paths[1]",
        "update_mask.paths[2]",
    ]
    with pytest.raises(InvalidArgument) as empty:
        apply_mask(full_policy(), Policy(), field_mask_pb2.FieldMask())
    assert [field for field, _ in empty.value.violations] == ["update_mask.paths"]


def test_a_change_checks_only_the_fields_its_mask_names() -> None:
    request = messages_pb2.SetPolicyRequest(app_id="shop", policy=full_policy())
    request.policy.cap_rules[0].max_count = 0  # not in the mask: not being changed
    request.policy.opt_down_daily_max = 9
    request.update_mask.paths.append("opt_down_daily_max")
    change = PolicyChange.from_proto(request)
    assert change.fields == frozenset({"opt_down_daily_max"})
    assert change.policy == Policy(opt_down_daily_max=9)
    assert change.referenced_categories() == {}

    request.update_mask.paths.append("cap_rules")
    request.app_id = ""
    with pytest.raises(InvalidArgument) as refused:
        PolicyChange.from_proto(request)
    assert [field for field, _ in refused.value.violations] == [
        "app_id",
        "policy.cap_rules[0].max_count",
    ]


def test_a_change_lists_the_categories_it_references_with_their_fields() -> None:
    policy = full_policy()
    policy.cap_rules.append(
        _rule("more-promos", scope=policy_pb2.CAP_SCOPE_CATEGORY, category_id="promos")
    )
    change = PolicyChange.from_proto(messages_pb2.SetPolicyRequest(app_id="shop", policy=policy))
    assert change.referenced_categories() == {
        "promos": ["policy.cap_rules[1].category_id", "policy.cap_rules[4].category_id"],
        "account": ["policy.opt_out_confirmation.category_id"],
    }


# Decisions.

PARIS = "Europe/Paris"
# A winter Tuesday: Paris is UTC+1.
NOON = datetime(2026, 1, 13, 11, 0, tzinfo=UTC)
PROMOS = Category("promos", MessageKind.MARKETING)
ORDERS = Category("orders", MessageKind.TRANSACTIONAL)
NIGHT = QuietHours((QuietWindow(time(22, 0), time(8, 0)),))


def _message(category: Category = PROMOS, **fields: object) -> Message:
    return Message("m1", category, campaign_id="c1", **fields)  # type: ignore[arg-type]


def _decide(
    message: Message,
    recipient: Recipient,
    rules: Rules,
    now: datetime,
    history: tuple[ContactEntry, ...] = (),
) -> Decision:
    return decide(message, recipient, history, rules, now)


def _steps(proto: decision_pb2.Decision) -> list[tuple[str, str, str]]:
    return [
        (
            decision_pb2.Check.Name(step.check).removeprefix("CHECK_"),
            decision_pb2.StepResult.Name(step.result).removeprefix("STEP_RESULT_"),
            decision_pb2.ReasonCode.Name(step.reason).removeprefix("REASON_CODE_"),
        )
        for step in proto.trace.steps
    ]


MARKETING_GATES_PASSED = [
    (check, "PASS", "UNSPECIFIED")
    for check in (
        "ERASED",
        "SUPPRESSION",
        "HOLDOUT",
        "DUPLICATE",
        "EXPIRY",
        "CHANNEL_CONSENT",
        "MARKETING_CONSENT",
        "CATEGORY_CONSENT",
        "TOPIC_CONSENT",
        "OS_PERMISSION",
        "DEVICES",
    )
]


def test_every_library_reason_and_outcome_has_its_contract_code() -> None:
    for reason in Reason:
        assert decision_pb2.ReasonCode.Name(reason_code(reason)) == f"REASON_CODE_{reason.value}"
    assert reason_code(None) == decision_pb2.REASON_CODE_UNSPECIFIED
    for outcome in Outcome:
        assert decision_pb2.Outcome.Name(outcome_code(outcome)) == f"OUTCOME_{outcome.value}"


def test_allow_without_the_trace_never_expands_it() -> None:
    decision = _decide(_message(), Recipient("u1", zone=PARIS), Rules(quiet_hours=NIGHT), NOON)
    assert decision.outcome is Outcome.ALLOW
    proto = decision_to_proto(decision, evaluated_at=NOON, include_trace=False, zone_name=PARIS)
    assert proto == decision_pb2.Decision(outcome=decision_pb2.OUTCOME_ALLOW)
    assert not decision.trace.expanded


def test_allow_with_the_trace_lists_every_check_with_its_numbers() -> None:
    recipient = Recipient("u1", zone=PARIS)
    decision = _decide(_message(), recipient, Rules(quiet_hours=NIGHT), NOON)
    proto = decision_to_proto(
        decision, evaluated_at=NOON, include_trace=True, zone_name=None, recipient=recipient
    )
    assert proto.outcome == decision_pb2.OUTCOME_ALLOW
    assert proto.reason == decision_pb2.REASON_CODE_UNSPECIFIED
    assert not proto.HasField("defer_until")
    assert proto.trace.evaluated_at.ToDatetime(UTC) == NOON
    assert (proto.trace.time_zone, proto.trace.time_zone_source) == (
        PARIS,
        decision_pb2.TIME_ZONE_SOURCE_PROFILE,
    )
    assert _steps(proto) == [
        *MARKETING_GATES_PASSED,
        ("ZONE", "PASS", "UNSPECIFIED"),
        ("QUIET_HOURS", "PASS", "UNSPECIFIED"),
    ]
    quiet = proto.trace.steps[-1].quiet_hours
    assert (quiet.local_time.hours, quiet.local_time.minutes) == (12, 0)
    assert quiet.local_day == D.DAY_OF_WEEK_TUESDAY
    assert (quiet.local_date.year, quiet.local_date.month, quiet.local_date.day) == (2026, 1, 13)
    assert (quiet.time_zone, quiet.window_count, quiet.user_override) == (PARIS, 1, False)
    assert not quiet.HasField("window")


def test_defer_in_quiet_hours_carries_the_window_and_the_search() -> None:
    late = datetime(2026, 1, 13, 22, 30, tzinfo=UTC)  # 23:30 in Paris
    recipient = Recipient("u1", zone=PARIS)
    rules = Rules(quiet_hours=NIGHT)
    decision = _decide(_message(), recipient, rules, late)
    assert (decision.outcome, decision.reason) == (Outcome.DEFER, Reason.QUIET_HOURS)
    assert decision.until is not None
    proto = decision_to_proto(
        decision, evaluated_at=late, include_trace=True, recipient=recipient, rules=rules
    )
    assert proto.outcome == decision_pb2.OUTCOME_DEFER
    assert proto.reason == decision_pb2.REASON_CODE_QUIET_HOURS
    assert proto.defer_until.ToDatetime(UTC) == decision.until
    assert _steps(proto)[-2:] == [
        ("QUIET_HOURS", "DEFER", "QUIET_HOURS"),
        ("SCHEDULE", "DEFER", "QUIET_HOURS"),
    ]
    quiet_step = proto.trace.steps[-2]
    ends = datetime(2026, 1, 14, 7, 0, tzinfo=UTC)  # 08:00 in Paris
    assert quiet_step.defer_until.ToDatetime(UTC) == ends
    quiet = quiet_step.quiet_hours
    assert quiet.window == policy_pb2.QuietHoursWindow(start=LT(hours=22), end=LT(hours=8))
    assert quiet.window_starts_at.ToDatetime(UTC) == datetime(2026, 1, 13, 21, 0, tzinfo=UTC)
    assert quiet.window_ends_at.ToDatetime(UTC) == ends
    assert (quiet.local_time.hours, quiet.local_time.minutes) == (23, 30)
    schedule = proto.trace.steps[-1]
    assert schedule.defer_until.ToDatetime(UTC) == decision.until
    deferral = schedule.deferral
    assert deferral.until.ToDatetime(UTC) == decision.until
    assert deferral.jitter_window.ToTimedelta() == timedelta(minutes=30)
    assert [hop.check for hop in deferral.hops] == [decision_pb2.CHECK_QUIET_HOURS]
    hop = deferral.hops[0]
    assert hop.to.ToDatetime(UTC) == decision.until
    assert ends + hop.jitter.ToTimedelta() == decision.until


def test_a_user_window_named_on_some_days_is_reported_as_configured() -> None:
    late = datetime(2026, 1, 13, 22, 30, tzinfo=UTC)  # Tuesday 23:30 in Paris
    own = QuietHours((QuietWindow(time(21, 0), time(7, 0), frozenset({1, 2})),))
    recipient = Recipient("u1", zone=PARIS, quiet_hours=own)
    decision = _decide(_message(), recipient, Rules(quiet_hours=NIGHT), late)
    proto = decision_to_proto(
        decision, evaluated_at=late, include_trace=True, recipient=recipient, rules=Rules()
    )
    quiet = proto.trace.steps[-2].quiet_hours
    assert quiet.user_override
    assert quiet.window == policy_pb2.QuietHoursWindow(
        start=LT(hours=21), end=LT(hours=7), days=[D.DAY_OF_WEEK_TUESDAY, D.DAY_OF_WEEK_WEDNESDAY]
    )


def test_drop_capped_carries_the_rules_numbers() -> None:
    rule = CapRule(CapScope.ALL_MARKETING, 1, timedelta(hours=24), CapAction.DROP, name="one-a-day")
    sent = NOON - timedelta(hours=1)
    history = (ContactEntry(sent, "promos", MessageKind.MARKETING, campaign_id="c0"),)
    decision = _decide(_message(), Recipient("u1", zone=PARIS), Rules(caps=(rule,)), NOON, history)
    assert (decision.outcome, decision.reason) == (Outcome.DROP, Reason.CAPPED)
    proto = decision_to_proto(decision, evaluated_at=NOON, include_trace=True)
    assert (proto.outcome, proto.reason) == (
        decision_pb2.OUTCOME_DROP,
        decision_pb2.REASON_CODE_CAPPED,
    )
    assert _steps(proto)[-1] == ("CAP", "DROP", "CAPPED")
    cap = proto.trace.steps[-1].cap
    assert (cap.rule_id, cap.scope, cap.count, cap.max_count) == (
        "one-a-day",
        policy_pb2.CAP_SCOPE_ALL_MARKETING,
        1,
        1,
    )
    assert cap.rolling.ToTimedelta() == timedelta(hours=24)
    assert cap.window_start.ToDatetime(UTC) == NOON - timedelta(hours=24)
    assert cap.window_end.ToDatetime(UTC) == NOON
    assert cap.frees_at.ToDatetime(UTC) == sent + timedelta(hours=24)
    assert cap.oldest_leaves_at.ToDatetime(UTC) == sent + timedelta(hours=24)
    assert cap.on_exceed == policy_pb2.ON_EXCEED_DROP
    assert not cap.user_preference


def test_a_deferring_calendar_cap_names_its_category_and_local_day() -> None:
    rule = CapRule(CapScope.CATEGORY, 1, CalendarWindow.DAY, name="per-category")
    sent = NOON - timedelta(hours=2)
    history = (ContactEntry(sent, "promos", MessageKind.MARKETING),)
    message = _message()
    decision = _decide(message, Recipient("u1", zone=PARIS), Rules(caps=(rule,)), NOON, history)
    assert (decision.outcome, decision.reason) == (Outcome.DEFER, Reason.CAPPED)
    proto = decision_to_proto(decision, evaluated_at=NOON, include_trace=True, message=message)
    cap_step = next(s for s in proto.trace.steps if s.check == decision_pb2.CHECK_CAP)
    midnight = datetime(2026, 1, 13, 23, 0, tzinfo=UTC)  # the next midnight in Paris
    assert (cap_step.result, cap_step.reason) == (
        decision_pb2.STEP_RESULT_DEFER,
        decision_pb2.REASON_CODE_CAPPED,
    )
    assert cap_step.defer_until.ToDatetime(UTC) == midnight
    cap = cap_step.cap
    assert (cap.scope_id, cap.calendar) == ("promos", policy_pb2.CALENDAR_PERIOD_DAY)
    assert cap.window_start.ToDatetime(UTC) == datetime(2026, 1, 12, 23, 0, tzinfo=UTC)
    assert cap.window_end.ToDatetime(UTC) == midnight
    assert _steps(proto)[-1] == ("SCHEDULE", "DEFER", "CAPPED")


def test_the_opt_down_rule_reports_frequency_preference() -> None:
    recipient = Recipient("u1", zone=PARIS, frequency=FrequencyPreference.DAILY_MAX)
    history = (ContactEntry(NOON - timedelta(hours=1), "promos", MessageKind.MARKETING),)
    decision = _decide(
        _message(), recipient, Rules(preference_on_exceed=CapAction.DROP), NOON, history
    )
    assert (decision.outcome, decision.reason) == (Outcome.DROP, Reason.FREQUENCY_PREFERENCE)
    proto = decision_to_proto(decision, evaluated_at=NOON, include_trace=True)
    assert proto.reason == decision_pb2.REASON_CODE_FREQUENCY_PREFERENCE
    assert _steps(proto)[-1] == ("CAP", "DROP", "FREQUENCY_PREFERENCE")
    cap = proto.trace.steps[-1].cap
    assert (cap.rule_id, cap.user_preference, cap.calendar) == (
        "opt-down",
        True,
        policy_pb2.CALENDAR_PERIOD_DAY,
    )


def test_digest_defers_to_the_slot_with_its_period() -> None:
    recipient = Recipient(
        "u1",
        zone=PARIS,
        frequency=FrequencyPreference.DIGEST,
        digest=DigestSlot(DigestPeriod.DAILY, time(9, 0)),
    )
    rules = Rules()
    decision = _decide(_message(), recipient, rules, NOON)  # 12:00: the 09:00-11:00 slot closed
    assert (decision.outcome, decision.reason) == (Outcome.DEFER, Reason.DIGEST)
    proto = decision_to_proto(
        decision, evaluated_at=NOON, include_trace=True, recipient=recipient, rules=rules
    )
    assert proto.reason == decision_pb2.REASON_CODE_DIGEST
    assert _steps(proto)[-2:] == [("DIGEST", "DEFER", "DIGEST"), ("SCHEDULE", "DEFER", "DIGEST")]
    digest = proto.trace.steps[-2].digest
    assert digest.period == policy_pb2.DIGEST_PERIOD_DAILY
    assert digest.opens_at.ToDatetime(UTC) == datetime(2026, 1, 13, 8, 0, tzinfo=UTC)
    assert digest.closes_at.ToDatetime(UTC) == datetime(2026, 1, 13, 10, 0, tzinfo=UTC)
    assert digest.sent_in_period == 0
    assert decision.until is not None
    assert datetime(2026, 1, 14, 8, 0, tzinfo=UTC) <= decision.until
    assert proto.trace.steps[-1].deferral.hops[0].check == decision_pb2.CHECK_DIGEST


def test_no_timezone_drops_marketing_at_the_zone_step() -> None:
    decision = _decide(_message(), Recipient("u1"), Rules(quiet_hours=NIGHT), NOON)
    assert (decision.outcome, decision.reason) == (Outcome.DROP, Reason.NO_TIMEZONE)
    proto = decision_to_proto(decision, evaluated_at=NOON, include_trace=True, zone_name="")
    assert (proto.outcome, proto.reason) == (
        decision_pb2.OUTCOME_DROP,
        decision_pb2.REASON_CODE_NO_TIMEZONE,
    )
    assert _steps(proto) == [*MARKETING_GATES_PASSED, ("ZONE", "DROP", "NO_TIMEZONE")]
    zone = proto.trace.steps[-1].zone
    assert (zone.time_zone, zone.source) == ("", decision_pb2.TIME_ZONE_SOURCE_NONE)
    assert proto.trace.time_zone_source == decision_pb2.TIME_ZONE_SOURCE_NONE


def test_an_opted_in_transactional_message_without_a_zone_goes() -> None:
    message = _message(ORDERS, respects_quiet_hours=True)
    decision = _decide(message, Recipient("u1"), Rules(quiet_hours=NIGHT), NOON)
    assert decision.outcome is Outcome.ALLOW
    proto = decision_to_proto(decision, evaluated_at=NOON, include_trace=True, message=message)
    assert _steps(proto)[-4:] == [
        ("DEVICES", "PASS", "UNSPECIFIED"),
        ("TRANSACTIONAL_EXEMPTION", "PASS", "UNSPECIFIED"),
        ("CAP", "EXEMPT", "CAPPED"),
        ("ZONE", "EXEMPT", "NO_TIMEZONE"),
    ]


def test_a_transactional_message_is_exempt_from_caps_and_quiet_hours() -> None:
    message = _message(ORDERS)
    late = datetime(2026, 1, 13, 22, 30, tzinfo=UTC)
    decision = _decide(message, Recipient("u1", zone=PARIS), Rules(quiet_hours=NIGHT), late)
    assert decision.outcome is Outcome.ALLOW
    proto = decision_to_proto(
        decision, evaluated_at=late, include_trace=True, message=message, zone_name=PARIS
    )
    assert _steps(proto)[-3:] == [
        ("TRANSACTIONAL_EXEMPTION", "PASS", "UNSPECIFIED"),
        ("CAP", "EXEMPT", "CAPPED"),
        ("QUIET_HOURS", "EXEMPT", "QUIET_HOURS"),
    ]
    category = proto.trace.steps[-3].category
    assert (category.category_id, category.kind) == (
        "orders",
        types_pb2.CATEGORY_KIND_TRANSACTIONAL,
    )
    assert proto.trace.time_zone == PARIS  # no zone step: the zone the caller named


def test_a_failed_gate_drops_with_its_reason_and_takes_a_known_detail() -> None:
    decision = _decide(
        _message(), Recipient("u1", zone=PARIS, marketing_opt_out=True), Rules(), NOON
    )
    consent = decision_pb2.ConsentDetail(marketing_opted_out=True, category_id="promos")
    proto = decision_to_proto(
        decision,
        evaluated_at=NOON,
        include_trace=True,
        step_details={decision_pb2.CHECK_MARKETING_CONSENT: consent},
    )
    assert (proto.outcome, proto.reason) == (
        decision_pb2.OUTCOME_DROP,
        decision_pb2.REASON_CODE_OPTED_OUT,
    )
    assert _steps(proto)[-1] == ("MARKETING_CONSENT", "DROP", "OPTED_OUT")
    assert proto.trace.steps[-1].consent == consent


def test_scheduler_steps_go_before_and_after_and_read_as_sentences() -> None:
    late = datetime(2026, 1, 13, 22, 30, tzinfo=UTC)
    decision = _decide(_message(), Recipient("u1", zone=PARIS), Rules(quiet_hours=NIGHT), late)
    audience = decision_pb2.TraceStep(check=decision_pb2.CHECK_AUDIENCE, result=_pass())
    audience.audience.included_by_segment_ids.append("vip")
    template = decision_pb2.TraceStep(check=decision_pb2.CHECK_TEMPLATE, result=_pass())
    attach_detail(template, decision_pb2.TemplateDetail(payload_bytes=310, limit_bytes=4096))
    proto = decision_to_proto(
        decision,
        evaluated_at=late,
        include_trace=True,
        leading_steps=[audience],
        extra_steps=[template],
    )
    assert proto.trace.steps[0] == audience
    assert proto.trace.steps[-1] == template
    assert len(proto.trace.steps) == len(decision.trace) + 2
    lines = explanation_lines(decision, leading_steps=[audience], extra_steps=[template])
    library = explain(decision)
    assert lines == [step_line(audience), *library[:-1], step_line(template), library[-1]]
    assert lines[0] == "audience: PASS: in vip"
    assert lines[-2] == "template: PASS: content default, 310 of 4096 bytes"
    assert lines[-1].startswith("→ DEFER until ")


def test_a_scheduler_step_may_decide_the_explanation() -> None:
    dropped = decision_pb2.TraceStep(
        check=decision_pb2.CHECK_AUDIENCE,
        result=decision_pb2.STEP_RESULT_DROP,
        reason=decision_pb2.REASON_CODE_NOT_IN_AUDIENCE,
    )
    final = decision_pb2.Decision(
        outcome=decision_pb2.OUTCOME_DROP, reason=decision_pb2.REASON_CODE_NOT_IN_AUDIENCE
    )
    assert explanation_lines(None, leading_steps=[dropped], final=final) == [
        "audience: DROP (NOT_IN_AUDIENCE)",
        "→ DROP (NOT_IN_AUDIENCE)",
    ]
    with pytest.raises(TypeError):
        attach_detail(dropped, decision_pb2.Decision())


def _pass() -> decision_pb2.StepResult.ValueType:
    return decision_pb2.STEP_RESULT_PASS


# What the checks accept, the library accepts.


def _mostly(valid: st.SearchStrategy[Any], invalid: st.SearchStrategy[Any]) -> Any:
    """``valid`` 49 times in 50, else ``invalid``: most drawn policies pass every check,
    and every check still gets broken now and then."""
    return st.integers(0, 49).flatmap(lambda n: invalid if n == 0 else valid)


def _durations(*valid_seconds: int) -> st.SearchStrategy[duration_pb2.Duration]:
    return st.builds(
        duration_pb2.Duration,
        seconds=_mostly(st.sampled_from(valid_seconds), st.sampled_from([-60, 0, 10**7])),
        nanos=_mostly(st.just(0), st.sampled_from([1, 500_000_000, -5])),
    )


_local_times = st.builds(
    types_pb2.LocalTime,
    hours=_mostly(st.integers(0, 23), st.sampled_from([-1, 24])),
    minutes=_mostly(st.sampled_from([0, 15, 30, 59]), st.just(60)),
)
_days = st.lists(_mostly(st.integers(1, 7), st.sampled_from([0, 8])), max_size=3)


@st.composite
def _cap_rules(draw: st.DrawFn, rule_id: str) -> policy_pb2.CapRule:
    scope = draw(_mostly(st.integers(1, 3), st.sampled_from([0, 4])))
    rule = policy_pb2.CapRule(
        rule_id=draw(_mostly(st.just(rule_id), st.sampled_from(["opt-down", "", "x" * 65]))),
        scope=scope,
        category_id=draw(
            st.sampled_from(["", "promos"])
            if scope == policy_pb2.CAP_SCOPE_CATEGORY
            else _mostly(st.just(""), st.just("promos"))
        ),
        max_count=draw(_mostly(st.integers(1, 5), st.just(0))),
        on_exceed=draw(_mostly(st.integers(0, 2), st.just(3))),
        count_transactional=draw(st.booleans()),
    )
    window = draw(_mostly(st.sampled_from(["rolling", "calendar"]), st.just("none")))
    if window == "rolling":
        rule.rolling.CopyFrom(draw(_durations(1, 3600, 86400, 7 * 86400, 90 * 86400)))
    elif window == "calendar":
        rule.calendar = draw(_mostly(st.integers(1, 2), st.sampled_from([0, 3])))
    return rule


@st.composite
def _policies(draw: st.DrawFn) -> Policy:
    count = draw(_mostly(st.integers(0, 4), st.just(21)))
    policy = Policy(
        cap_rules=[draw(_cap_rules(f"rule-{index}")) for index in range(count)],
        opt_down_on_exceed=draw(_mostly(st.integers(0, 2), st.just(3))),
        default_digest_weekday=draw(_mostly(st.integers(0, 7), st.just(8))),
        opt_down_daily_max=draw(st.integers(0, 3)),
        opt_down_weekly_max=draw(st.integers(0, 3)),
    )
    if draw(st.booleans()):
        windows = [
            policy_pb2.QuietHoursWindow(
                start=draw(_local_times), end=draw(_local_times), days=draw(_days)
            )
            for _ in range(draw(st.integers(0, 3)))
        ]
        policy.default_quiet_hours.CopyFrom(policy_pb2.QuietHours(windows=windows))
    if draw(st.booleans()):
        policy.jitter_window.CopyFrom(draw(_durations(0, 1, 1800, 6 * 3600)))
    if draw(st.booleans()):
        policy.digest_grace.CopyFrom(draw(_durations(1, 600, 7200, 86400)))
    if draw(st.booleans()):
        policy.default_digest_slot.CopyFrom(draw(_local_times))
    mode = draw(_mostly(st.integers(0, 2), st.just(3)))
    zones = ["Europe/Paris", "Pacific/Chatham", "America/St_Johns"]
    zone = draw(
        st.sampled_from(zones)
        if mode == resources_pb2.TIME_ZONE_FALLBACK_MODE_DEFAULT_ZONE
        else _mostly(st.just(""), st.sampled_from(zones))
    )
    policy.time_zone_fallback.mode = mode
    policy.time_zone_fallback.default_time_zone = draw(
        _mostly(st.just(zone), st.sampled_from(["", "Nowhere/Land"]))
    )
    return policy


@settings(max_examples=400, deadline=None)
@given(_policies())
def test_a_policy_the_checks_accept_is_one_the_library_accepts(policy: Policy) -> None:
    if violations_of(policy):
        return
    rules = to_rules(policy)  # the library's own checks raise on anything it refuses
    assert [rule.name for rule in rules.caps] == [rule.rule_id for rule in policy.cap_rules]
    windows = policy.default_quiet_hours.windows
    assert len(rules.quiet_hours.windows) == len(windows)  # no accepted window is lost
    effective = with_defaults(policy)
    assert violations_of(effective) == []
    assert with_defaults(effective) == effective
    assert to_rules(effective) == rules
