"""The policy benchmark's workloads are the mixes they claim to be, and on them (and on
two other rule sets) the fast path and the reference evaluator give the same decisions.

The benchmark times ``decide``'s fast path, which inlines what ``reference.evaluate``
does step by step; reading a decision's trace runs the reference evaluator, which raises
if it reaches another outcome, reason or instant. The property tests check that on drawn
scenarios; this runs the benchmark's own cases, so that what is timed is also what is
checked.
"""

from __future__ import annotations

import importlib.util
import sys
from collections import Counter
from dataclasses import replace
from datetime import time, timedelta
from pathlib import Path
from types import ModuleType

import pytest

from pushwarden.policy import (
    CalendarWindow,
    CapAction,
    CapRule,
    CapScope,
    QuietHours,
    QuietWindow,
    Rules,
    decide,
)

BENCH = Path(__file__).resolve().parents[1] / "bench" / "policy_decisions.py"


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("pushwarden_bench_policy", BENCH)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _other_rules(rules: Rules) -> list[Rules]:
    return [
        replace(
            rules,
            caps=(
                CapRule(CapScope.CATEGORY, 2, timedelta(hours=36), CapAction.DEFER),
                CapRule(CapScope.CATEGORY, 3, CalendarWindow.WEEK, CapAction.DEFER),
                CapRule(CapScope.ALL_MARKETING, 2, timedelta(hours=12), CapAction.DROP),
            ),
        ),
        replace(
            rules,
            caps=(
                CapRule(CapScope.CAMPAIGN, 1, CalendarWindow.DAY),
                CapRule(CapScope.ALL_MARKETING, 5, timedelta(days=3), count_transactional=True),
            ),
            # Overlapping windows (no bisect shortcut) and a weekday-only one.
            quiet_hours=QuietHours(
                (
                    QuietWindow(time(21), time(9)),
                    QuietWindow(time(8), time(10)),
                    QuietWindow(time(12), time(13), frozenset({0, 2})),
                )
            ),
        ),
    ]


def test_fast_and_tracing_evaluators_agree_on_the_benchmark_cases(bench: ModuleType) -> None:
    cases, _ = bench.build_cases(1500)
    for rules in [bench.RULES, *_other_rules(bench.RULES)]:
        mix: Counter[str] = Counter()
        for message, recipient, history, now in cases:
            decision = decide(message, recipient, history, rules, now)
            assert len(decision.trace) > 0  # expands, and checks the two agree
            mix[f"{decision.outcome.value}:{decision.reason}"] += 1
        assert len(mix) >= 6, mix  # the run does not end at the first check


def test_the_headline_mix_and_the_bytecode_count(bench: ModuleType) -> None:
    cases, _ = bench.build_cases(2000)
    mix = bench.decision_mix([decide(m, r, h, bench.RULES, now) for m, r, h, now in cases])
    share = {label: n / len(cases) for label, n in mix.items()}
    assert 0.4 < share["ALLOW"] < 0.7
    assert share["DEFER:QUIET_HOURS"] > 0.1
    assert {"DROP:CAPPED", "DROP:EXPIRED", "DROP:OPTED_OUT", "DEFER:DIGEST"} <= set(share)
    count = bench.bytecodes_per_decision(cases[:200])
    assert 50 < count < 2000
    assert bench.bytecodes_per_decision(cases[:200]) == count  # exact, run to run


def test_the_capped_mix_meets_full_caps_that_defer_and_quiet_hours(bench: ModuleType) -> None:
    cases = bench.build_capped_cases(2000)
    decisions = [decide(m, r, h, bench.CAPPED_RULES, now) for m, r, h, now in cases]
    shares = bench.capped_mix_shares(cases, decisions)  # reads every trace: both agree
    assert shares["full"] >= 0.25  # a quarter meet a full cap
    assert shares["deferred"] > 0.5  # most of those are deferred to the caps' release
    assert 0.15 < shares["night"] < 0.25  # about a fifth fall in quiet hours
    mix = bench.decision_mix(decisions)
    assert mix["DEFER:CAPPED"] > mix["DROP:CAPPED"] > 0
    assert mix["DEFER:QUIET_HOURS"] > 0
