"""Hypothesis profiles for the policy suite.

``HYPOTHESIS_PROFILE=ci`` (the default) keeps the whole suite well under a minute on a
shared machine; ``dev`` digs deeper when working on the policy itself.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    max_examples=60,
    deadline=None,
    derandomize=False,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "dev",
    max_examples=1000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
