"""Deterministic assignment of a campaign's users to its holdout or one of its variants.

Pure: the answer is a function of the campaign id, the user id, the holdout size and the
variants alone, the same in every process, replica and Python version (SHA-256 of the
UTF-8 ids, never the salted built-in ``hash``), so a repeated fan-out page assigns every
user exactly as before.

Two independent hashes decide, each over ``campaign id NUL user id`` with its own
purpose tag:

- the *holdout bucket*, 0..9,999: a user is in the holdout when the bucket is below the
  campaign's ``holdout_basis_points``;
- the *variant point*, 0..(sum of weights - 1): the variant whose cumulative weight range
  holds the point.

Because the variant point does not depend on the bucket, the holdout takes the same
share of every variant and the treated users split by exactly the weights, whatever the
holdout size. Ids never contain control characters (the contract's id rules), so the NUL
separator cannot make two different pairs hash alike.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

BUCKETS: Final = 10_000
"""Holdout buckets: one per basis point."""

_HOLDOUT_TAG: Final = b"pushwarden.holdout\0"
_VARIANT_TAG: Final = b"pushwarden.variant\0"


@dataclass(frozen=True, slots=True)
class Assignment:
    """Where one user of a campaign goes.

    ``holdout``: never sent (recorded with delivery all the same); ``variant_id``: the
    variant sent to a treated user, empty for a holdout user; ``bucket``: the user's
    holdout bucket, 0..9,999 (in the holdout when below the basis points).
    """

    holdout: bool
    variant_id: str
    bucket: int


def _draw(tag: bytes, campaign_id: str, user_id: str, size: int) -> int:
    """A uniform draw in ``0..size-1`` from SHA-256 of the tagged pair.

    64 bits of the digest modulo ``size`` (at most a few thousand): the modulo bias is
    below 1e-15, far under any share a campaign can measure.
    """
    digest = hashlib.sha256(tag + f"{campaign_id}\0{user_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % size


def holdout_bucket(campaign_id: str, user_id: str) -> int:
    """The user's holdout bucket in the campaign, 0..9,999."""
    return _draw(_HOLDOUT_TAG, campaign_id, user_id, BUCKETS)


def variant_for(campaign_id: str, user_id: str, variants: Sequence[tuple[str, int]]) -> str:
    """The variant a treated user gets: weights are relative shares (the contract's add
    up to 100); a variant of weight 0 is never chosen.

    Independent of the holdout bucket, so it is also the variant a holdout user would
    have got. Raises ``ValueError`` without variants, with a negative weight or with no
    positive weight.
    """
    if not variants:
        raise ValueError("a campaign needs at least one variant")
    if any(weight < 0 for _, weight in variants):
        raise ValueError("variant weights must not be negative")
    total = sum(weight for _, weight in variants)
    if total <= 0:
        raise ValueError("variant weights must add up to more than 0")
    point = _draw(_VARIANT_TAG, campaign_id, user_id, total)
    for variant_id, weight in variants:
        if point < weight:
            return variant_id
        point -= weight
    raise AssertionError("unreachable: the point lies below the total weight")


def assign(
    campaign_id: str,
    user_id: str,
    holdout_basis_points: int,
    variants: Sequence[tuple[str, int]],
) -> Assignment:
    """Assign one user: the holdout if their bucket is below ``holdout_basis_points``
    (0..10,000; 0 is no holdout), else a variant by weight (see :func:`variant_for`)."""
    if not 0 <= holdout_basis_points <= BUCKETS:
        raise ValueError(f"holdout basis points must be 0..{BUCKETS}, got {holdout_basis_points}")
    bucket = holdout_bucket(campaign_id, user_id)
    if bucket < holdout_basis_points:
        return Assignment(holdout=True, variant_id="", bucket=bucket)
    return Assignment(
        holdout=False, variant_id=variant_for(campaign_id, user_id, variants), bucket=bucket
    )
