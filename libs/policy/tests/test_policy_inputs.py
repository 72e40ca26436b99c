"""Strict inputs: every enum field takes a member or a member's name, and nothing else.

A plain string used to pass through unchecked and then fail every ``is`` comparison in
the engine, so ``CapRule(window="DAY")`` counted a week and ``Category("promo",
"MARKETING")`` took the transactional path. Now a name converts to its member, and
anything else is refused with an error that names the field and the valid names.
"""

from __future__ import annotations

import ast
import enum
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import pushwarden.policy as package
from pushwarden.policy import (
    CalendarWindow,
    CapAction,
    CapRule,
    CapScope,
    Category,
    ContactEntry,
    DigestPeriod,
    DigestSlot,
    FrequencyPreference,
    Message,
    MessageKind,
    QuietHours,
    QuietWindow,
    Recipient,
    Rules,
    decide,
)

NOW = datetime(2026, 11, 23, 21, 30, tzinfo=UTC)  # 22:30 in Berlin: quiet hours
NIGHT = QuietHours((QuietWindow(time(22), time(7)),))

# Each enum field: how to build its owner with a given value.
FIELDS: list[tuple[str, type[enum.Enum], Callable[[Any], object]]] = [
    ("Category.kind", MessageKind, lambda v: Category("c", v)),
    ("ContactEntry.kind", MessageKind, lambda v: ContactEntry(NOW, "c", v)),
    ("CapRule.scope", CapScope, lambda v: CapRule(v, 1, timedelta(hours=1))),
    ("CapRule.window", CalendarWindow, lambda v: CapRule(CapScope.ALL_MARKETING, 1, v)),
    (
        "CapRule.on_exceed",
        CapAction,
        lambda v: CapRule(CapScope.ALL_MARKETING, 1, timedelta(hours=1), v),
    ),
    ("Recipient.frequency", FrequencyPreference, lambda v: Recipient("u", frequency=v)),
    ("DigestSlot.period", DigestPeriod, lambda v: DigestSlot(v)),
    ("Rules.preference_on_exceed", CapAction, lambda v: Rules(preference_on_exceed=v)),
]
IDS = [name for name, _, _ in FIELDS]


@pytest.mark.parametrize(("field", "kind", "build"), FIELDS, ids=IDS)
def test_a_members_name_converts_to_the_member(
    field: str, kind: type[enum.Enum], build: Callable[[Any], object]
) -> None:
    attribute = field.split(".")[1]
    for member in kind:
        assert getattr(build(member.name), attribute) is member
        assert build(member.name) == build(member)


@pytest.mark.parametrize(("field", "kind", "build"), FIELDS, ids=IDS)
@pytest.mark.parametrize("bad", ["day", "NOPE", "", 1, None, 2.5])
def test_anything_else_is_refused_with_a_clear_error(
    field: str, kind: type[enum.Enum], build: Callable[[Any], object], bad: object
) -> None:
    with pytest.raises(TypeError, match=rf"{field} must be a {kind.__name__}"):
        build(bad)


@pytest.mark.parametrize(("field", "kind", "build"), FIELDS, ids=IDS)
def test_another_enums_member_is_refused(
    field: str, kind: type[enum.Enum], build: Callable[[Any], object]
) -> None:
    # The same name in the wrong enum (DROP is an Outcome name too) is not this field's.
    stranger = MessageKind.MARKETING if kind is not MessageKind else CapScope.CATEGORY
    with pytest.raises(TypeError, match=field):
        build(stranger)


def test_the_examples_that_used_to_mean_something_else() -> None:
    assert CapRule(CapScope.ALL_MARKETING, 1, "DAY").window is CalendarWindow.DAY  # type: ignore[arg-type]
    assert CapRule("ALL_MARKETING", 1, timedelta(hours=1)).scope is CapScope.ALL_MARKETING  # type: ignore[arg-type]
    drop = CapRule(CapScope.ALL_MARKETING, 1, timedelta(hours=1), "DROP")  # type: ignore[arg-type]
    assert drop.on_exceed is CapAction.DROP
    promo = Category("promo", "MARKETING")  # type: ignore[arg-type]
    rules = Rules(caps=(drop,), quiet_hours=NIGHT, default_zone="Europe/Berlin")
    sent = ContactEntry(NOW - timedelta(minutes=5), "promo", "MARKETING")  # type: ignore[arg-type]
    ad = Message("ad", promo)
    user = Recipient("u", zone="Europe/Berlin", frequency="DAILY_MAX")  # type: ignore[arg-type]
    assert user.frequency is FrequencyPreference.DAILY_MAX
    # A promotion in quiet hours and over its cap: never ALLOW.
    assert decide(ad, user, [sent], rules, NOW).outcome.name == "DROP"
    assert decide(ad, user, [], rules, NOW).outcome.name == "DEFER"
    # The opt-down rule is added for a DAILY_MAX given by name.
    assert len(rules.caps_for(user.frequency)) == 2


def _by_name(member: enum.Enum | timedelta) -> object:
    return member.name if isinstance(member, enum.Enum) else member


windows = st.sampled_from([*CalendarWindow, timedelta(hours=6), timedelta(days=1)])


@given(
    kind=st.sampled_from(list(MessageKind)),
    entry_kind=st.sampled_from(list(MessageKind)),
    scope=st.sampled_from(list(CapScope)),
    window=windows,
    action=st.sampled_from(list(CapAction)),
    frequency=st.sampled_from(list(FrequencyPreference)),
    period=st.sampled_from(list(DigestPeriod)),
    preference=st.sampled_from(list(CapAction)),
    minutes=st.integers(0, 14 * 24 * 60),
    ago=st.lists(st.integers(1, 9 * 24 * 60), max_size=5),
)
def test_inputs_built_from_names_decide_as_the_members_do(
    kind: MessageKind,
    entry_kind: MessageKind,
    scope: CapScope,
    window: CalendarWindow | timedelta,
    action: CapAction,
    frequency: FrequencyPreference,
    period: DigestPeriod,
    preference: CapAction,
    minutes: int,
    ago: list[int],
) -> None:
    now = NOW + timedelta(minutes=minutes)

    def build(name: Callable[[Any], Any]) -> tuple[Message, Recipient, list[ContactEntry], Rules]:
        category = Category("promo", name(kind))
        rule = CapRule(name(scope), 1, name(window), name(action))
        rules = Rules(
            caps=(rule,),
            quiet_hours=NIGHT,
            default_zone="Europe/Berlin",
            preference_on_exceed=name(preference),
        )
        entries = [
            ContactEntry(now - timedelta(minutes=m), "promo", name(entry_kind), "camp") for m in ago
        ]
        recipient = Recipient(
            "u",
            zone="Europe/Berlin",
            frequency=name(frequency),
            digest=DigestSlot(name(period), time(18)),
        )
        message = Message("ad", category, campaign_id="camp", respects_quiet_hours=True)
        return message, recipient, entries, rules

    members = build(lambda v: v)
    names = build(_by_name)
    assert members == names
    assert decide(*members, now)[:3] == decide(*names, now)[:3]
    assert replace(names[3], caps=()).preference_on_exceed is preference


def test_no_module_imports_another_modules_private_names() -> None:
    for path in Path(package.__file__).parent.glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module != "__future__":
                private = [a.name for a in node.names if a.name.startswith("_")]
                assert not private, f"{path.name} imports {private} from {node.module}"


def test_the_public_api_holds_no_engine_plumbing() -> None:
    exported = set(package.__all__)
    assert not exported & {"CapPlan", "split_plan", "RollingPlan", "CategoryPlan", "PlanParts"}
    assert not hasattr(Recipient("u"), "marketing_blocked")
    rule = CapRule(CapScope.ALL_MARKETING, 1, timedelta(hours=1))
    assert not hasattr(rule, "plan")
    assert not hasattr(rule, "selector")
