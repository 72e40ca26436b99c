"""Holdout lift as a pure function: Newcombe's hybrid score interval (1998, method 10)
reproduces the published values, and on many seeded synthetic campaigns analysed intent
to treat (treated users who were never sent stay in the denominator) it covers the true
effect at about the nominal 95 %."""

from __future__ import annotations

import random

import pytest

from pushwarden.services.delivery.domain.lift import (
    IntervalMethod,
    holdout_lift,
    newcombe_interval,
    wilson,
    z_value,
)

# Newcombe (1998), Statistics in Medicine 17:873-890, Table II, method 10 (score
# interval without continuity correction, "hybrid" of the two Wilson intervals).
NEWCOMBE_TABLE_II = [
    ((56, 70, 48, 80), (0.0524, 0.3339)),
    ((9, 10, 3, 10), (0.1705, 0.8090)),
    ((6, 7, 2, 7), (0.0582, 0.8062)),
    ((5, 56, 0, 29), (-0.0381, 0.1926)),
    ((0, 10, 0, 20), (-0.1611, 0.2775)),
    ((0, 10, 0, 10), (-0.2775, 0.2775)),
    ((10, 10, 0, 20), (0.6791, 1.0000)),
    ((10, 10, 0, 10), (0.6075, 1.0000)),
]


@pytest.mark.parametrize(("counts", "published"), NEWCOMBE_TABLE_II)
def test_the_interval_matches_newcombes_published_values(
    counts: tuple[int, int, int, int], published: tuple[float, float]
) -> None:
    interval = newcombe_interval(*counts)
    assert (round(interval.lower, 4), round(interval.upper, 4)) == published
    assert interval.level == 0.95
    assert interval.method is IntervalMethod.NEWCOMBE_HYBRID_SCORE


def test_wilson_limits_at_zero_and_all_successes() -> None:
    z2 = z_value(0.95) ** 2
    lower, upper = wilson(0, 10)
    assert lower == 0.0
    assert upper == pytest.approx(z2 / (10 + z2))
    lower, upper = wilson(10, 10)
    assert lower == pytest.approx(10 / (10 + z2))
    assert upper == 1.0
    assert z_value(0.95) == pytest.approx(1.959964, abs=1e-6)


def test_the_difference_is_antisymmetric() -> None:
    forward = newcombe_interval(56, 70, 48, 80)
    backward = newcombe_interval(48, 80, 56, 70)
    assert backward.lower == pytest.approx(-forward.upper)
    assert backward.upper == pytest.approx(-forward.lower)


def test_lift_rates_and_significance() -> None:
    lift = holdout_lift(56, 70, 48, 80)
    assert lift.treatment_rate == pytest.approx(0.8)
    assert lift.holdout_rate == pytest.approx(0.6)
    assert lift.absolute_lift == pytest.approx(0.2)
    assert lift.relative_lift == pytest.approx(0.2 / 0.6)
    assert lift.significant
    none_converted = holdout_lift(0, 10, 0, 10)
    assert none_converted.relative_lift == 0.0
    assert none_converted.interval is not None
    assert not none_converted.significant
    empty_holdout = holdout_lift(3, 10, 0, 0)
    assert empty_holdout.interval is None
    assert not empty_holdout.significant


def test_bad_counts_are_refused() -> None:
    for counts in ((1, 0, 1, 1), (3, 2, 1, 1), (-1, 2, 1, 1)):
        with pytest.raises(ValueError, match="successes"):
            newcombe_interval(*counts)


def _binomial(rng: random.Random, n: int, p: float) -> int:
    return sum(rng.random() < p for _ in range(n))


def test_intent_to_treat_intervals_cover_the_true_effect_at_about_the_nominal_rate() -> None:
    """2,000 synthetic campaigns: a holdout converting at the base rate; treated users of
    whom only a fraction is ever sent (the rest were capped, opted out or had no device
    and convert at the base rate), the sent ones at base + effect. The intent-to-treat
    effect is fraction x effect; the interval must cover it in about 95 % of campaigns,
    and call a campaign without effect significant in about 5 %."""
    rng = random.Random(20261205)
    campaigns = 2000
    covered = 0
    null_campaigns = false_positives = 0
    for _ in range(campaigns):
        base = rng.uniform(0.02, 0.2)
        effect = rng.choice((0.0, 0.02, 0.05))
        sent_fraction = rng.uniform(0.5, 0.9)
        n_treated, n_holdout = rng.randint(200, 800), rng.randint(100, 400)
        n_sent = _binomial(rng, n_treated, sent_fraction)
        treated_converted = _binomial(rng, n_sent, base + effect) + _binomial(
            rng, n_treated - n_sent, base
        )
        holdout_converted = _binomial(rng, n_holdout, base)
        true_effect = sent_fraction * effect
        lift = holdout_lift(treated_converted, n_treated, holdout_converted, n_holdout)
        assert lift.interval is not None
        covered += lift.interval.lower <= true_effect <= lift.interval.upper
        if effect == 0.0:
            null_campaigns += 1
            false_positives += lift.significant
    coverage = covered / campaigns
    # Nominal 0.95; the binomial sd of the estimate over 2,000 campaigns is about 0.005.
    assert 0.93 <= coverage <= 0.97, coverage
    assert 0.02 <= false_positives / null_campaigns <= 0.08, false_positives / null_campaigns
