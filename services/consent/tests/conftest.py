"""Consent's service tests start from databases already at the migrations' head (copied
from a template migrated once per session: see ``pushwarden.runtime.testing``)."""

from pushwarden.services.consent.bootstrap import MIGRATIONS

PUSHWARDEN_TEST_MIGRATIONS = MIGRATIONS
