"""Permission-prompt use cases: record a funnel event, read the opt-in funnel.

A funnel event is statistics only: it changes no device's permission, appends no ledger
entry and publishes nothing on the change feed, so recording one takes no append lock.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from pushwarden.services.consent.domain.prompts import FunnelQuery, FunnelStats, PromptEventSpec
from pushwarden.services.consent.handlers.common import ConsentDeps, replay_or_refuse
from pushwarden.services.consent.storage.idempotency import Remembered


@dataclass(frozen=True, slots=True)
class Funnel:
    """GetOptInFunnel's answer: each context's stats in context order, and the total."""

    contexts: list[FunnelStats]
    total: FunnelStats


def _replayed(stored_digest: str, digest: str, key: str) -> bool:
    """True when the key came with this very request before, else ALREADY_EXISTS
    (IDEMPOTENCY_KEY_REUSED). The event row keeps the digest; the response is only
    ``replayed``, so there is nothing else to remember."""
    replay_or_refuse(Remembered(stored_digest, b""), digest, key)
    return True


class PromptHandlers:
    """The permission-prompt use cases."""

    def __init__(self, deps: ConsentDeps) -> None:
        self._uow = deps.uow
        self._clock = deps.clock

    def now(self) -> datetime:
        """The service's time, which requests are checked against."""
        return self._clock.now()

    async def record(self, event: PromptEventSpec, request_digest: str) -> bool:
        """Store the event once per idempotency key; returns whether the call was a
        replay of an earlier one (then nothing is written). The same key with another
        request (``request_digest`` differs) is ALREADY_EXISTS."""
        key = event.idempotency_key
        async with self._uow() as work:
            stored = await work.prompts.request_digest(event.app_id, key)
            if stored is not None:
                return _replayed(stored, request_digest, key)
            if await work.prompts.insert(event, request_digest):
                await work.commit()
                return False
            # A concurrent call with the same key committed between our read and insert.
            stored = await work.prompts.request_digest(event.app_id, key)
            if stored is None:
                raise LookupError("prompt event neither inserted nor found")
            return _replayed(stored, request_digest, key)

    async def funnel(self, query: FunnelQuery) -> Funnel:
        """The app's funnel over the query's period and filters."""
        async with self._uow(read_only=True) as work:
            contexts = await work.prompts.funnel(query)
        return Funnel(contexts, FunnelStats.total(contexts))
