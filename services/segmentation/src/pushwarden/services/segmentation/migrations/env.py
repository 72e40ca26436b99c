"""Alembic environment of the segmentation service; run by ``upgrade_to_head`` at start."""

from alembic import context

from pushwarden.runtime.migrations import run_env
from pushwarden.services.segmentation.models import Base, include_in_schema_diff

run_env(context, Base.metadata, include_object=include_in_schema_diff)
