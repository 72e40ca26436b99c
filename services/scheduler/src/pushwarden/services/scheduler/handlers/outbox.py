"""The outbox: hands allowed sends to delivery until delivery acknowledges them.

A decision that allows a send records the contact and the ``Send`` in the same
transaction (the outbox entry); this worker claims entries in batches, calls
``Deliver`` once per app and batch, and marks them SENT when delivery holds them
(APPLIED, or UNCHANGED for a send id it already had: a retry after a lost answer never
sends twice). A send delivery REJECTED is final: the intent ends DROPPED with
DELIVERY_REJECTED and leaves the contact history. Delivery's answers are written in
the transaction that claims the next batch, or before the loop idles: one transaction
per hand-over, so a transactional send does not queue behind the previous one's
bookkeeping (until then the entries stay claimed; a process that dies first hands them
over again, and delivery answers UNCHANGED). While delivery is unreachable the batch is
retried with a doubling wait; nothing is lost, since the entry stays stored.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

from pushwarden.common.v1 import decision_pb2, types_pb2
from pushwarden.delivery.v1 import resources_pb2 as delivery_pb2
from pushwarden.runtime.workers import WorkerContext
from pushwarden.services.scheduler.domain.intents import Lane
from pushwarden.services.scheduler.handlers.common import SchedulerDeps
from pushwarden.services.scheduler.peers import PeerUnavailable
from pushwarden.services.scheduler.storage.uow import SchedulerUnitOfWork

logger = logging.getLogger(__name__)

FIRST_RETRY_S = 0.5
_REJECTED = types_pb2.ITEM_STATUS_REJECTED


@dataclass(frozen=True, slots=True)
class OutboxSettings:
    """How much one hand-over takes and how long its claim lasts."""

    lanes: tuple[Lane, ...]
    batch: int = 500
    poll_s: float = 0.5
    lease_s: float = 60.0
    retry_max_s: float = 30.0


class Outbox:
    """One outbox loop (a worker of the app)."""

    def __init__(self, deps: SchedulerDeps, settings: OutboxSettings) -> None:
        self._deps = deps
        self._settings = settings
        self._retry_s = FIRST_RETRY_S
        # What delivery answered and is not written yet: (held, refused) entry keys.
        self._held: list[tuple[str, str]] = []
        self._refused: list[tuple[str, str]] = []

    async def run(self, ctx: WorkerContext) -> None:
        """Hand over sends until the app stops; what is left stays stored."""
        wake = asyncio.Event()
        for lane in self._settings.lanes:
            self._deps.outbox_wakers.setdefault(lane, []).append(wake)
        try:
            while not ctx.stopping:
                wake.clear()
                if await self.hand_over_once() == 0:
                    await self.write_answers()
                    await ctx.idle(wake, self._settings.poll_s)
        finally:
            for lane in self._settings.lanes:
                self._deps.outbox_wakers[lane].remove(wake)
            await self.write_answers()

    async def hand_over_once(self) -> int:
        """Claim one batch of outbox entries and hand it to delivery; returns how many
        were acknowledged or rejected (0 when none was due or delivery was away)."""
        deps = self._deps
        now = deps.clock.now()
        lease_until = now + timedelta(seconds=self._settings.lease_s)
        async with deps.uow() as work:
            await self._write_answers(work)
            entries = await work.intents.claim_outbox(
                now, self._settings.batch, lease_until, self._settings.lanes
            )
            await work.commit()
        self._held, self._refused = [], []
        if not entries:
            return 0
        by_app: dict[str, list[tuple[str, bytes]]] = defaultdict(list)
        for app_id, send_id, body in entries:
            by_app[app_id].append((send_id, body))
        done = 0
        for app_id, sends in by_app.items():
            done += await self._hand_over(app_id, sends)
        return done

    async def _hand_over(self, app_id: str, sends: Sequence[tuple[str, bytes]]) -> int:
        deps = self._deps
        batch = [delivery_pb2.Send.FromString(body) for _, body in sends]
        try:
            with deps.tracing.handing_over(app_id, batch):
                results = await deps.delivery.deliver(app_id, batch)
        except PeerUnavailable as error:
            wait = self._retry_s
            self._retry_s = min(self._retry_s * 2, self._settings.retry_max_s)
            logger.warning(
                "delivery unreachable, retrying in %.1f s: %s",
                wait,
                error,
                extra={"app_id": app_id, "sends": len(sends)},
            )
            async with deps.uow() as work:
                await work.intents.retry_outbox(
                    [(app_id, send_id) for send_id, _ in sends],
                    deps.clock.now() + timedelta(seconds=wait),
                )
                await work.commit()
            return 0
        self._retry_s = FIRST_RETRY_S
        held = [(app_id, s) for s, _ in sends if s in results and results[s].status != _REJECTED]
        refused = [(app_id, s) for s, _ in sends if s in results and results[s].status == _REJECTED]
        for _, send_id in refused:
            logger.warning(
                "delivery rejected a send: %s",
                results[send_id].message,
                extra={"app_id": app_id, "send_id": send_id},
            )
        self._held.extend(held)
        self._refused.extend(refused)
        return len(held) + len(refused)

    async def write_answers(self) -> None:
        """Write what delivery answered so far (SENT, or DROPPED for a rejected send)."""
        if not (self._held or self._refused):
            return
        async with self._deps.uow() as work:
            await self._write_answers(work)
            await work.commit()
        self._held, self._refused = [], []

    async def _write_answers(self, work: SchedulerUnitOfWork) -> None:
        if self._held:
            await work.intents.acknowledged(self._held, self._deps.clock.now())
        if self._refused:
            await work.intents.rejected(self._refused, decision_pb2.REASON_CODE_DELIVERY_REJECTED)
