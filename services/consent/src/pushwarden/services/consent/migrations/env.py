"""Alembic environment of the consent service; run by ``upgrade_to_head`` at start."""

from alembic import context

from pushwarden.runtime.migrations import run_env
from pushwarden.services.consent.models import Base

run_env(context, Base.metadata)
