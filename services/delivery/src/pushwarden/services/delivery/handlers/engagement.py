"""RecordAssignments and ReportEngagement: batches stored in one transaction before the
answer, idempotent by key (an assignment's subject and key, an event's id)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime
from zoneinfo import ZoneInfo

from pushwarden.runtime.db import background_writes
from pushwarden.services.delivery.consent import ConsentUnavailable, UnknownCategory
from pushwarden.services.delivery.domain.engagement import (
    FUTURE_TOLERANCE,
    EngagementEvent,
    EngagementKind,
    ItemResult,
    NewAssignment,
    Subject,
    SubjectKind,
)
from pushwarden.services.delivery.handlers.common import DeliveryDeps
from pushwarden.services.delivery.storage.engagement import SendOwner

logger = logging.getLogger(__name__)


class EngagementHandlers:
    """The RecordAssignments and ReportEngagement use cases."""

    def __init__(self, deps: DeliveryDeps) -> None:
        self._deps = deps

    async def record_assignments(
        self, app_id: str, subject: Subject, items: Sequence[NewAssignment]
    ) -> list[ItemResult]:
        """Store new assignments; a key recorded before is UNCHANGED when identical and
        REJECTED when it differs (the first recording stands)."""
        now = self._deps.clock.now()
        # A campaign's page of assignments waits for nobody (a trigger's firing is on its
        # way to a send): on SQLite its write queues behind the ones a send waits for.
        with background_writes(subject.kind is SubjectKind.CAMPAIGN):
            async with self._deps.uow() as work:
                inserted = await work.assignments.insert_new(app_id, subject, items, now)
                earlier = await work.assignments.get_many(
                    app_id, subject, [item.key for item in items if item.key not in inserted]
                )
                await work.commit()
        results: list[ItemResult] = []
        for index, item in enumerate(items):
            if item.key in inserted:
                results.append(ItemResult(item.key, "APPLIED"))
                continue
            stored = earlier.get(item.key)
            if stored is None or stored.same_as(item):
                # None: erased between the two statements; nothing to compare with.
                results.append(ItemResult(item.key, "UNCHANGED"))
            else:
                results.append(
                    ItemResult(
                        item.key,
                        "REJECTED",
                        f"assignments[{index}]",
                        f"recorded differently before: {stored.describe()}",
                    )
                )
        return results

    async def report_engagement(
        self, app_id: str, events: Sequence[EngagementEvent]
    ) -> list[ItemResult]:
        """Store new events. An unknown send, a send of another user or an event more
        than 5 minutes in the future is REJECTED alone; a resent id is UNCHANGED."""
        deps = self._deps
        now = deps.clock.now()
        async with deps.uow(read_only=True) as work:
            owners = await work.engagement.send_owners(
                app_id, [event.send_id for event in events if event.send_id]
            )
        results: dict[str, ItemResult] = {}
        accepted: list[EngagementEvent] = []
        for index, event in enumerate(events):
            problem = _problem(event, owners, now)
            if problem is None:
                accepted.append(event)
            else:
                field, message = problem
                results[event.event_id] = ItemResult(
                    event.event_id, "REJECTED", f"events[{index}].{field}", message
                )
        zones = await self._zones(app_id, accepted, owners)
        rows = [(event, _local_hour(event, zones.get(event.user_id, ""))) for event in accepted]
        inserted: set[str] = set()
        if rows:
            async with deps.uow() as work:
                inserted = await work.engagement.insert_new(app_id, rows, now)
                await work.commit()
        for event in accepted:
            status = "APPLIED" if event.event_id in inserted else "UNCHANGED"
            results[event.event_id] = ItemResult(event.event_id, status)
        return [results[event.event_id] for event in events]

    async def _zones(
        self, app_id: str, events: Sequence[EngagementEvent], owners: dict[str, SendOwner]
    ) -> dict[str, str]:
        """The zone consent names for each user who opened something (for the app's
        local-hour histogram): one CheckEligibility batch per category of the opened
        sends. Best effort: when consent cannot answer, the opens are stored without a
        local hour rather than refused (they still count by UTC hour)."""
        by_category: dict[tuple[str, str], set[str]] = {}
        for event in events:
            if event.kind is EngagementKind.OPENED:
                owner = owners[event.send_id]
                by_category.setdefault((owner.category_id, owner.topic_id), set()).add(
                    event.user_id
                )
        zones: dict[str, str] = {}
        for (category_id, topic_id), users in by_category.items():
            missing = sorted(users - zones.keys())
            if not missing:
                continue
            try:
                answer = await self._deps.consent.eligibility(
                    app_id, category_id, topic_id, missing
                )
            except (ConsentUnavailable, UnknownCategory) as exc:
                logger.warning(
                    "opens stored without a local hour: consent named no zone",
                    extra={"app_id": app_id, "users": len(missing), "error": str(exc)},
                )
                continue
            zones.update({user_id: found.time_zone for user_id, found in answer.items()})
        return zones


def _problem(
    event: EngagementEvent, owners: dict[str, SendOwner], now: datetime
) -> tuple[str, str] | None:
    if event.occurred_at > now + FUTURE_TOLERANCE:
        return "occurred_at", (
            f"{event.occurred_at.isoformat()} is more than "
            f"{FUTURE_TOLERANCE.total_seconds() / 60:g} minutes in the future"
        )
    if event.send_id:
        owner = owners.get(event.send_id)
        if owner is None:
            return "send_id", f"no send {event.send_id!r} was handed to delivery"
        if owner.user_id != event.user_id:
            return "send_id", f"send {event.send_id!r} went to another user"
    return None


def _local_hour(event: EngagementEvent, zone: str) -> int | None:
    if event.kind is not EngagementKind.OPENED or not zone:
        return None
    try:
        return event.occurred_at.astimezone(ZoneInfo(zone)).hour
    except (ValueError, KeyError, OSError):
        return None
