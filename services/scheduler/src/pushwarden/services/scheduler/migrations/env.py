"""Alembic environment of the scheduler service; run by ``upgrade_to_head`` at start."""

from alembic import context

from pushwarden.runtime.migrations import run_env
from pushwarden.services.scheduler.models import Base

run_env(context, Base.metadata)
