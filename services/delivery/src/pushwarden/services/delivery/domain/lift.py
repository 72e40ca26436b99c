"""Holdout lift: the difference of two conversion rates with Newcombe's hybrid score
interval (Newcombe 1998, "Interval estimation for the difference between independent
proportions: comparison of eleven methods", Statistics in Medicine 17, method 10).

Pure functions on counts; no I/O. The interval is built from each group's Wilson score
interval (without continuity correction), so it stays inside [-1, 1], is defined at zero
(and at all) conversions, and behaves well for small groups, where the simple Wald
interval collapses to a point or overshoots.

For rates p1 = x1/n1 and p2 = x2/n2 with Wilson limits (l1, u1) and (l2, u2), the
interval of d = p1 - p2 is::

    L = d - sqrt((p1 - l1)**2 + (u2 - p2)**2)
    U = d + sqrt((u1 - p1)**2 + (p2 - l2)**2)
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from statistics import NormalDist
from typing import Final

DEFAULT_LEVEL: Final = 0.95


class IntervalMethod(enum.StrEnum):
    """How an interval was computed (the contract's IntervalMethod)."""

    NEWCOMBE_HYBRID_SCORE = "NEWCOMBE_HYBRID_SCORE"


@dataclass(frozen=True, slots=True)
class Interval:
    """A two-sided confidence interval."""

    lower: float
    upper: float
    level: float
    method: IntervalMethod

    def excludes(self, value: float) -> bool:
        """Whether ``value`` lies outside the interval."""
        return value < self.lower or value > self.upper


@dataclass(frozen=True, slots=True)
class Lift:
    """The conversion lift of a treated group against the holdout (intent to treat:
    both rates divide by every assigned user of their group)."""

    treatment_rate: float
    holdout_rate: float
    absolute_lift: float
    relative_lift: float
    interval: Interval | None

    @property
    def significant(self) -> bool:
        """True when the interval excludes 0."""
        return self.interval is not None and self.interval.excludes(0.0)


def z_value(level: float) -> float:
    """The standard normal quantile of a two-sided ``level`` (1.959964 for 0.95)."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"a confidence level lies in (0, 1), got {level}")
    return NormalDist().inv_cdf(1.0 - (1.0 - level) / 2.0)


def wilson(successes: int, trials: int, level: float = DEFAULT_LEVEL) -> tuple[float, float]:
    """The Wilson score interval of ``successes / trials`` (no continuity correction)."""
    _check_counts(successes, trials)
    z = z_value(level)
    z2 = z * z
    denominator = trials + z2
    center = (successes + z2 / 2.0) / denominator
    half = z * math.sqrt(successes * (trials - successes) / trials + z2 / 4.0) / denominator
    # Exact at 0 and n successes, where rounding would leave a hair off 0 or 1.
    lower = 0.0 if successes == 0 else max(0.0, center - half)
    upper = 1.0 if successes == trials else min(1.0, center + half)
    return lower, upper


def newcombe_interval(x1: int, n1: int, x2: int, n2: int, level: float = DEFAULT_LEVEL) -> Interval:
    """Newcombe's hybrid score interval (method 10) of ``x1/n1 - x2/n2``."""
    _check_counts(x1, n1)
    _check_counts(x2, n2)
    p1, p2 = x1 / n1, x2 / n2
    l1, u1 = wilson(x1, n1, level)
    l2, u2 = wilson(x2, n2, level)
    difference = p1 - p2
    lower = difference - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2)
    upper = difference + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)
    return Interval(
        lower=max(-1.0, lower),
        upper=min(1.0, upper),
        level=level,
        method=IntervalMethod.NEWCOMBE_HYBRID_SCORE,
    )


def holdout_lift(
    treated_converted: int,
    treated: int,
    holdout_converted: int,
    holdout: int,
    level: float = DEFAULT_LEVEL,
) -> Lift:
    """The lift of a treated group over the holdout; the interval is None when either
    group has no assigned user (rates of an empty group are 0)."""
    treatment_rate = treated_converted / treated if treated else 0.0
    holdout_rate = holdout_converted / holdout if holdout else 0.0
    absolute = treatment_rate - holdout_rate
    return Lift(
        treatment_rate=treatment_rate,
        holdout_rate=holdout_rate,
        absolute_lift=absolute,
        relative_lift=absolute / holdout_rate if holdout_rate else 0.0,
        interval=(
            newcombe_interval(treated_converted, treated, holdout_converted, holdout, level)
            if treated and holdout
            else None
        ),
    )


def _check_counts(successes: int, trials: int) -> None:
    if trials <= 0 or not 0 <= successes <= trials:
        raise ValueError(f"need 0 <= successes <= trials and trials > 0, got {successes}/{trials}")
