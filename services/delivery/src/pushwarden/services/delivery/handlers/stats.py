"""GetCampaignStats, GetOpenHours and ExportUserData: read-only, each from one snapshot."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from pushwarden.runtime.errors import NotFound
from pushwarden.services.delivery.domain.engagement import EngagementEvent, Subject
from pushwarden.services.delivery.domain.sends import DeliveryRecord
from pushwarden.services.delivery.domain.stats import CampaignStats, OpenHistograms, campaign_stats
from pushwarden.services.delivery.handlers.common import DeliveryDeps

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class ExportCursor:
    """Where each list of an export resumes: None at its start, "done" when exhausted,
    else after this (instant, id)."""

    deliveries: tuple[datetime, str] | str | None = None
    engagement: tuple[datetime, str] | str | None = None


@dataclass(frozen=True, slots=True)
class ExportPage:
    """One page of a user's data, and where the next one starts (None: the last)."""

    deliveries: list[DeliveryRecord]
    engagement: list[EngagementEvent]
    exported_at: datetime
    next: ExportCursor | None


class StatsHandlers:
    """The read-only statistics and export use cases."""

    def __init__(self, deps: DeliveryDeps) -> None:
        self._deps = deps

    async def campaign_stats(
        self, app_id: str, subject: Subject, window: timedelta
    ) -> CampaignStats:
        """The figures of a campaign or trigger; NOT_FOUND without a send or assignment."""
        async with self._deps.uow(read_only=True, snapshot=True) as work:
            figures = await work.stats.subject_figures(app_id, subject, window)
        if not figures.sends and not figures.treated and figures.holdout is None:
            kind = subject.kind.value.lower()
            raise NotFound(
                f"no send or assignment of {kind} {subject.subject_id!r} in app {app_id!r}",
                resource_type=kind,
                resource_name=subject.subject_id,
            )
        return campaign_stats(subject, window, figures, self._deps.clock.now())

    async def open_hours(
        self, app_id: str, user_ids: Sequence[str], lookback: timedelta
    ) -> OpenHistograms:
        """Opens by hour of the users and of the whole app over the lookback."""
        now = self._deps.clock.now()
        since = now - lookback if now - _EPOCH > lookback else _EPOCH
        async with self._deps.uow(read_only=True, snapshot=True) as work:
            return await work.stats.open_histograms(app_id, user_ids, since)

    async def export(
        self, app_id: str, user_id: str, cursor: ExportCursor, size: int
    ) -> ExportPage:
        """A page of up to ``size`` deliveries and ``size`` engagement events, each list
        oldest first."""
        async with self._deps.uow(read_only=True, snapshot=True) as work:
            deliveries: list[DeliveryRecord] = []
            if cursor.deliveries != "done":
                after = cursor.deliveries if isinstance(cursor.deliveries, tuple) else None
                deliveries = await work.sends.page_of_user(app_id, user_id, after, size + 1)
            events: list[EngagementEvent] = []
            if cursor.engagement != "done":
                since = cursor.engagement if isinstance(cursor.engagement, tuple) else None
                events = await work.engagement.page_of_user(app_id, user_id, since, size + 1)
        more_deliveries, more_events = len(deliveries) > size, len(events) > size
        deliveries, events = deliveries[:size], events[:size]
        following: ExportCursor | None = None
        if more_deliveries or more_events:
            following = ExportCursor(
                deliveries=(
                    (deliveries[-1].accepted_at, deliveries[-1].send.send_id)
                    if more_deliveries
                    else "done"
                ),
                engagement=(
                    (events[-1].occurred_at, events[-1].event_id) if more_events else "done"
                ),
            )
        return ExportPage(deliveries, events, self._deps.clock.now(), following)
