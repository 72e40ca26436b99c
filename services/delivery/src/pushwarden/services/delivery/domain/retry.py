"""The retry rule: how long a retryable send waits, and when it has had enough.

Every HTTP request a provider was sent for a device counts against one budget
(``max_attempts``), the SDKs' own resends included (the adapters report them as
``Outcome.requests``). The wait doubles from ``base_s`` up to ``max_s`` with "equal
jitter" (half fixed, half random), so a burst of failures does not come back as one
burst; a provider's Retry-After is a floor the wait never goes under.
"""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RetryRule:
    """Budget and backoff of retryable provider outcomes."""

    max_attempts: int = 5
    base_s: float = 1.0
    max_s: float = 600.0

    def exhausted(self, requests_made: int) -> bool:
        """Whether a device that has cost ``requests_made`` requests gets no further try."""
        return requests_made >= self.max_attempts

    def delay(self, retry_number: int, retry_after_s: float | None, draw: float) -> float:
        """Seconds before try ``retry_number + 1`` after try ``retry_number`` (0-based)
        failed; ``draw`` is uniform in [0, 1) (the jitter)."""
        ceiling = min(self.max_s, self.base_s * 2.0**retry_number)
        wait = ceiling / 2 + draw * ceiling / 2
        if retry_after_s is not None:
            wait = max(wait, retry_after_s)
        return wait

    def jittered(self, retry_number: int, retry_after_s: float | None) -> float:
        """:meth:`delay` with a fresh random draw."""
        return self.delay(retry_number, retry_after_s, random.random())
