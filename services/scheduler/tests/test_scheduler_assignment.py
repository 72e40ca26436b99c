"""Holdout and variant assignment, pure: deterministic across processes, shares that
match the basis points and the weights over 100,000 users, and a variant split that does
not depend on the holdout."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from collections import Counter

import pytest

from pushwarden.services.scheduler.domain.assignment import (
    BUCKETS,
    Assignment,
    assign,
    holdout_bucket,
    variant_for,
)

USERS = [f"user-{n}" for n in range(100_000)]
CAMPAIGN = "cmp_0123456789abcdef01234567"
ABC = [("A", 50), ("B", 30), ("C", 20)]


def within_binomial(observed: int, trials: int, share: float, sigmas: float = 5.0) -> bool:
    """Whether ``observed`` successes in ``trials`` are within ``sigmas`` standard
    deviations of a binomial with success probability ``share``."""
    spread = math.sqrt(trials * share * (1 - share))
    return abs(observed - trials * share) <= sigmas * spread


def test_the_same_inputs_give_the_same_assignment() -> None:
    first = [assign(CAMPAIGN, user, 1000, ABC) for user in USERS[:1000]]
    again = [assign(CAMPAIGN, user, 1000, ABC) for user in USERS[:1000]]
    assert first == again
    # Another campaign shuffles users differently.
    other = [assign("cmp_other", user, 1000, ABC) for user in USERS[:1000]]
    assert [a.bucket for a in first] != [a.bucket for a in other]


def test_assignments_are_pinned_values() -> None:
    """Stable across releases: a change of hashing would reassign running campaigns."""
    assert assign("cmp_1", "alice", 0, ABC) == Assignment(False, "A", 1117)
    assert assign("cmp_1", "bob", 0, ABC) == Assignment(False, "B", 4088)
    assert assign("cmp_1", "alice", 5000, ABC) == Assignment(True, "", 1117)
    assert assign("cmp_1", "alice", 1117, ABC) == Assignment(False, "A", 1117)
    assert holdout_bucket("cmp_2", "carol") == 9000
    assert variant_for("cmp_2", "carol", ABC) == "C"


def test_assignments_agree_across_processes_with_other_hash_seeds() -> None:
    """The built-in ``hash`` of a str changes with PYTHONHASHSEED; the assignment must not."""
    users = USERS[:200]
    here = [[*_fields(assign(CAMPAIGN, user, 2500, ABC))] for user in users]
    script = (
        "import json, sys\n"
        "from pushwarden.services.scheduler.domain.assignment import assign\n"
        "users = json.loads(sys.argv[1])\n"
        f"print(json.dumps([[a.holdout, a.variant_id, a.bucket] for a in "
        f"(assign({CAMPAIGN!r}, u, 2500, {ABC!r}) for u in users)]))\n"
    )
    for seed in ("1", "4242"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        out = subprocess.run(
            [sys.executable, "-c", script, json.dumps(users)],
            capture_output=True,
            text=True,
            check=True,
            env=env,
        )
        assert json.loads(out.stdout) == here


def _fields(a: Assignment) -> tuple[bool, str, int]:
    return a.holdout, a.variant_id, a.bucket


@pytest.mark.parametrize("basis_points", [0, 1, 250, 1000, 5000])
def test_holdout_share_matches_the_basis_points(basis_points: int) -> None:
    held = sum(assign(CAMPAIGN, user, basis_points, ABC).holdout for user in USERS)
    assert within_binomial(held, len(USERS), basis_points / BUCKETS)
    if basis_points == 0:
        assert held == 0


def test_buckets_cover_the_range_uniformly() -> None:
    buckets = [holdout_bucket(CAMPAIGN, user) for user in USERS]
    assert min(buckets) >= 0
    assert max(buckets) < BUCKETS
    tenths = Counter(bucket * 10 // BUCKETS for bucket in buckets)
    assert all(within_binomial(tenths[t], len(USERS), 0.1) for t in range(10))


@pytest.mark.parametrize("basis_points", [0, 1000, 5000])
def test_treated_users_split_by_the_weights(basis_points: int) -> None:
    treated = [a for user in USERS if not (a := assign(CAMPAIGN, user, basis_points, ABC)).holdout]
    counts = Counter(a.variant_id for a in treated)
    assert set(counts) == {"A", "B", "C"}
    for variant_id, weight in ABC:
        assert within_binomial(counts[variant_id], len(treated), weight / 100)
    assert all(a.variant_id for a in treated)


def test_the_holdout_does_not_skew_the_variants() -> None:
    """The holdout takes the same share of every variant's would-be users, and a treated
    user's variant is the same whatever the holdout size."""
    would_be = {user: variant_for(CAMPAIGN, user, ABC) for user in USERS}
    held = {user for user in USERS if assign(CAMPAIGN, user, 2000, ABC).holdout}
    for variant_id, _ in ABC:
        members = [user for user, v in would_be.items() if v == variant_id]
        in_holdout = sum(1 for user in members if user in held)
        assert within_binomial(in_holdout, len(members), 0.2)
    for user in USERS[:5000]:
        small, large = assign(CAMPAIGN, user, 0, ABC), assign(CAMPAIGN, user, 5000, ABC)
        assert small.bucket == large.bucket
        if not large.holdout:
            assert large.variant_id == small.variant_id == would_be[user]
        else:
            assert large.variant_id == ""


def test_half_the_users_are_held_out_at_5000_basis_points() -> None:
    held = [assign(CAMPAIGN, user, 5000, ABC) for user in USERS]
    assert all(a.holdout == (a.bucket < 5000) for a in held)
    assert within_binomial(sum(a.holdout for a in held), len(USERS), 0.5)


def test_one_variant_of_weight_100_gets_every_treated_user() -> None:
    assert {assign(CAMPAIGN, user, 0, [("only", 100)]).variant_id for user in USERS} == {"only"}


def test_a_variant_of_weight_zero_is_never_chosen() -> None:
    chosen = {variant_for(CAMPAIGN, user, [("A", 0), ("B", 1), ("C", 0)]) for user in USERS[:5000]}
    assert chosen == {"B"}


@pytest.mark.parametrize(
    ("basis_points", "variants", "problem"),
    [
        (-1, ABC, "basis points"),
        (10_001, ABC, "basis points"),
        (0, [], "at least one variant"),
        (0, [("A", -1), ("B", 101)], "negative"),
        (0, [("A", 0)], "more than 0"),
    ],
)
def test_impossible_inputs_are_refused(
    basis_points: int, variants: list[tuple[str, int]], problem: str
) -> None:
    with pytest.raises(ValueError, match=problem):
        assign(CAMPAIGN, "user-1", basis_points, variants)
