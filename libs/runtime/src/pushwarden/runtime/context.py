"""Per-RPC context that the auth interceptor sets and handlers and log lines read."""

from __future__ import annotations

from contextvars import ContextVar

from pushwarden.runtime.settings import CallerGrant

current_caller: ContextVar[str | None] = ContextVar("pushwarden_caller", default=None)
"""The name of the caller whose token authenticated the current RPC (None when auth is
off or the method is open)."""

current_grant: ContextVar[CallerGrant | None] = ContextVar("pushwarden_grant", default=None)
"""The grant that authenticated the current RPC (None when auth is off)."""
