"""Deliver (store a batch of sends before acknowledging it) and GetDelivery."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pushwarden.payload import DeliveryOptions, check_size, surely_fits
from pushwarden.runtime.db import background_writes
from pushwarden.runtime.errors import NotFound, Unavailable
from pushwarden.services.delivery.consent import ConsentUnavailable
from pushwarden.services.delivery.domain.sends import DeliveryRecord, Kind, NewSend
from pushwarden.services.delivery.handlers.common import DeliveryDeps


@dataclass(frozen=True, slots=True)
class ItemOutcome:
    """What Deliver did with one send (in request order)."""

    send_id: str
    status: str  # APPLIED, UNCHANGED or REJECTED
    field: str = ""
    message: str = ""


class DeliveryHandlers:
    """The Deliver and GetDelivery use cases."""

    def __init__(self, deps: DeliveryDeps) -> None:
        self._deps = deps

    async def deliver(self, app_id: str, sends: Sequence[NewSend]) -> list[ItemOutcome]:
        """Store every new send of a checked batch in one transaction, then answer.

        A send id already accepted is UNCHANGED (first body wins, never sent twice); an
        unknown category or content that no provider can carry is REJECTED alone and
        not stored. The kind of each category comes from consent (cached: kinds never
        change); when consent cannot answer nothing is stored and the call is
        UNAVAILABLE, so the caller retries the whole batch.
        """
        deps = self._deps
        ids = [send.send_id for send in sends]
        async with deps.uow(read_only=True) as work:
            existing = await work.sends.existing(app_id, ids)
        fresh = [send for send in sends if send.send_id not in existing]
        try:
            kinds = await deps.consent.kinds(app_id, [s.proto.category_id for s in fresh])
        except ConsentUnavailable as exc:
            raise Unavailable(
                f"consent could not name the categories' kinds; nothing was stored ({exc})",
                retry_after_s=1.0,
            ) from exc
        now = deps.clock.now()
        outcomes: dict[str, ItemOutcome] = {}
        accepted: list[tuple[NewSend, Kind]] = []
        for index, send in enumerate(sends):
            if send.send_id in existing:
                outcomes[send.send_id] = ItemOutcome(send.send_id, "UNCHANGED")
                continue
            kind = kinds.get(send.proto.category_id)
            if kind is None:
                outcomes[send.send_id] = ItemOutcome(
                    send.send_id,
                    "REJECTED",
                    f"sends[{index}].category_id",
                    f"consent knows no category {send.proto.category_id!r} in app {app_id!r}",
                )
                continue
            # Rendering both payloads costs more than the rest of Deliver together; a
            # bound tells nearly every send fits without it.
            options = DeliveryOptions.for_send(send.proto, now=now)
            if surely_fits(send.proto.content, options):
                accepted.append((send, kind))
                continue
            size = check_size(send.proto.content, options)
            if not size.fits:
                outcomes[send.send_id] = ItemOutcome(
                    send.send_id,
                    "REJECTED",
                    f"sends[{index}].content",
                    f"the {size.provider} payload is {size.size} bytes, over its "
                    f"{size.limit}-byte limit",
                )
                continue
            accepted.append((send, kind))
        inserted: set[str] = set()
        if accepted:
            # A batch of marketing sends (a campaign's) waits for nobody: on SQLite its
            # write queues behind the ones a transactional send is waiting for.
            with background_writes(all(kind is Kind.MARKETING for _, kind in accepted)):
                async with deps.uow() as work:
                    inserted = await work.sends.insert_new(accepted, now)
                    await work.commit()
            deps.work_arrived()
        for send, _ in accepted:
            # Not inserted: a concurrent Deliver of the same id got there first.
            status = "APPLIED" if send.send_id in inserted else "UNCHANGED"
            outcomes[send.send_id] = ItemOutcome(send.send_id, status)
        return [outcomes[send_id] for send_id in ids]

    async def get(self, app_id: str, send_id: str) -> DeliveryRecord:
        """A send with its devices and attempts; NOT_FOUND when never accepted."""
        async with self._deps.uow(read_only=True, snapshot=True) as work:
            record = await work.sends.get(app_id, send_id)
        if record is None:
            raise NotFound(
                f"no send {send_id!r} in app {app_id!r} was handed to delivery",
                resource_type="send",
                resource_name=send_id,
            )
        return record
