"""Alembic env of the runtime's sample migration tree: what a service's env.py looks like
(a service passes its models' metadata instead of None)."""

from alembic import context

from pushwarden.runtime.migrations import run_env

run_env(context, None)
