"""An app's cap rules as the fast path reads them: compiled once per ``Rules`` value.

This is engine plumbing, not API: ``decide`` reads plain tuples instead of comparing
enums and dispatching on scopes for every rule of every decision. The rules are split
in four groups evaluated in turn: the rolling ALL_MARKETING rules (they all read the
one marketing list), the per-category rules (they all read the message's category), the
per-campaign rules (they all read the message's campaign), then every other
rule in its declared order. Only the order of evaluation changes, never
what a rule decides, and the reason a full rule gives is the same in either order: every
app rule reports CAPPED, and the opt-down rule (FREQUENCY_PREFERENCE) always comes last.
"""

from __future__ import annotations

from datetime import timedelta
from typing import NamedTuple

from .clock import QuietTables, quiet_tables
from .memo import Memo, bounded_put
from .model import CalendarWindow, CapAction, CapRule, CapScope, FrequencyPreference, Rules

__all__ = [
    "PLANS",
    "SELECT_ALL",
    "SELECT_CAMPAIGN",
    "SELECT_CAMPAIGN_ALL",
    "SELECT_CATEGORY",
    "SELECT_CATEGORY_ALL",
    "SELECT_MARKETING",
    "CapPlan",
    "OtherCap",
    "RollingCap",
    "RulesPlan",
    "ScopedCap",
    "ScopedGroup",
    "caps_plan",
    "compile_caps",
    "rules_plan",
]

# Which sends a rule of the third group counts.
SELECT_MARKETING = 0
SELECT_ALL = 1
SELECT_CATEGORY = 2
SELECT_CATEGORY_ALL = 3
SELECT_CAMPAIGN = 4
SELECT_CAMPAIGN_ALL = 5


class RollingCap(NamedTuple):
    """A rolling ALL_MARKETING rule that counts marketing sends only."""

    limit: int
    window: timedelta
    drops: bool
    preference: bool


class ScopedCap(NamedTuple):
    """A CATEGORY or CAMPAIGN rule for each category (campaign) separately (no target),
    counting marketing sends only."""

    limit: int
    window: timedelta | None
    calendar_day: bool
    drops: bool
    preference: bool


class OtherCap(NamedTuple):
    """Any other rule: what it counts (``SELECT_*``), its target, its window."""

    selector: int
    target: str | None
    window: timedelta | None
    calendar_day: bool
    limit: int
    drops: bool
    preference: bool


class ScopedGroup(NamedTuple):
    """The per-category rules (``by_campaign`` False) or the per-campaign ones (True)."""

    by_campaign: bool
    caps: tuple[ScopedCap, ...]


class CapPlan(NamedTuple):
    """A rule list split in its groups, each in declared order; ``scoped`` holds only the
    scoped groups that have rules, the per-category one first."""

    rolling: tuple[RollingCap, ...]
    scoped: tuple[ScopedGroup, ...]
    other: tuple[OtherCap, ...]


class RulesPlan(NamedTuple):
    """What the fast path reads of a ``Rules`` value (a ``PLANS`` entry: ``rules`` is the
    value it was built for, which the entry keeps alive)."""

    rules: Rules
    jitter_seconds: int
    caps: CapPlan
    """The app's caps (a user with no opt-down)."""
    with_opt_down: dict[tuple[FrequencyPreference, int], CapPlan]
    """The app's caps plus an opt-down rule, per (mode, number)."""
    quiet: QuietTables
    """The tables of the app's quiet hours, which most users keep (``clock.view_in``
    fills them: should the shared memo replace them, they stay this plan's own)."""


def _selector(rule: CapRule) -> int:
    every = rule.count_transactional
    if rule.scope is CapScope.ALL_MARKETING:
        return SELECT_ALL if every else SELECT_MARKETING
    if rule.scope is CapScope.CATEGORY:
        return SELECT_CATEGORY_ALL if every else SELECT_CATEGORY
    return SELECT_CAMPAIGN_ALL if every else SELECT_CAMPAIGN


def compile_caps(caps: tuple[CapRule, ...]) -> CapPlan:
    """``caps`` split and compiled for the fast path."""
    rolling: list[RollingCap] = []
    per_category: list[ScopedCap] = []
    per_campaign: list[ScopedCap] = []
    other: list[OtherCap] = []
    for rule in caps:
        selector = _selector(rule)
        window = rule.window if isinstance(rule.window, timedelta) else None
        day = rule.window is CalendarWindow.DAY
        drops = rule.on_exceed is CapAction.DROP
        if selector == SELECT_MARKETING and window is not None:
            rolling.append(RollingCap(rule.limit, window, drops, rule.user_preference))
        elif selector == SELECT_CATEGORY and rule.target_id is None:
            per_category.append(ScopedCap(rule.limit, window, day, drops, rule.user_preference))
        elif selector == SELECT_CAMPAIGN and rule.target_id is None:
            per_campaign.append(ScopedCap(rule.limit, window, day, drops, rule.user_preference))
        else:
            other.append(
                OtherCap(
                    selector, rule.target_id, window, day, rule.limit, drops, rule.user_preference
                )
            )
    scoped = tuple(
        ScopedGroup(by_campaign, tuple(group))
        for by_campaign, group in ((False, per_category), (True, per_campaign))
        if group
    )
    return CapPlan(tuple(rolling), scoped, tuple(other))


PLANS: Memo[int, RulesPlan] = Memo("rules plans", 1024)
"""``rules_plan`` by ``id(rules)``: check ``plan.rules is rules``."""


def rules_plan(rules: Rules) -> RulesPlan:
    """The plan of ``rules``, memoised by identity (the entry keeps ``rules`` alive, so
    its ``id`` is not reused while the entry lives)."""
    plan = PLANS.data.get(id(rules))
    if plan is not None and plan.rules is rules:
        return plan
    plan = RulesPlan(
        rules,
        int(rules.jitter.total_seconds()),
        compile_caps(rules.caps),
        {},
        quiet_tables(rules.quiet_hours),
    )
    return PLANS.put(id(rules), plan)


def caps_plan(rules: Rules, plan: RulesPlan, frequency: FrequencyPreference, count: int) -> CapPlan:
    """The compiled ``rules.caps_for(frequency, count)``, memoised in ``plan``."""
    key = (frequency, count)
    found = plan.with_opt_down.get(key)
    if found is None:
        found = compile_caps(rules.caps_for(frequency, count))
        bounded_put(plan.with_opt_down, key, found, 512)
    return found
