"""Fan-out: a started campaign's audience becomes per-user intents.

A worker of the app. It claims one campaign whose fan-out is due (a lease, SKIP LOCKED
so replicas take different campaigns), streams its audience from segmentation (one
inline rule: any include segment and none of the exclusions) from the stored cursor,
and for every page:

1. assigns each user a variant or the holdout (a deterministic hash of campaign and
   user);
2. computes each user's due time (IMMEDIATE, AT, LOCAL_TIME in the user's zone,
   BEST_TIME from delivery's open hours), asking consent for the page's zones when the
   schedule needs them;
3. records every assignment with delivery (RecordAssignments, idempotent), treatment
   and holdout alike, with the due time as ``assigned_at`` (intent to treat);
4. stores the page's intents and the new cursor in one transaction: treated users as
   PENDING intents, holdout users and users who cannot be scheduled as DROPPED records.

A crash anywhere repeats at most the current page, and every step of it is idempotent
(assignments by user, intents by send id). When the stream ends the fan-out is
complete; the same worker marks finished campaigns COMPLETED.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from pushwarden.common.v1 import decision_pb2
from pushwarden.delivery.v1 import messages_pb2 as delivery_messages
from pushwarden.delivery.v1 import resources_pb2 as delivery_pb2
from pushwarden.policy.zones import get_zone
from pushwarden.runtime.workers import WorkerContext
from pushwarden.scheduler.v1 import resources_pb2
from pushwarden.services.scheduler.domain.assignment import assign
from pushwarden.services.scheduler.domain.campaigns import (
    CampaignState,
    audience_rule,
    campaign_send_id,
)
from pushwarden.services.scheduler.domain.intents import Lane, NewIntent
from pushwarden.services.scheduler.domain.schedule import NotDue, due_time
from pushwarden.services.scheduler.handlers.common import SchedulerDeps
from pushwarden.services.scheduler.handlers.dispatch import PolicySource
from pushwarden.services.scheduler.models import CampaignRow
from pushwarden.services.scheduler.peers import PeerUnavailable
from pushwarden.services.scheduler.peers.consent import UnknownCategory
from pushwarden.services.scheduler.peers.segmentation import SegmentationPeer

logger = logging.getLogger(__name__)

DEFAULT_LOOKBACK = timedelta(days=90)
_HOLDOUT = decision_pb2.REASON_CODE_HOLDOUT


@dataclass(frozen=True, slots=True)
class PageHours:
    """Open hours of a page's users, and the app's most likely local open hour."""

    users: dict[str, delivery_messages.UserOpenHours]
    app_best_local_hour: int | None


@dataclass(frozen=True, slots=True)
class FanoutSettings:
    """Page size, poll interval and claim lease of the fan-out worker."""

    page_size: int = 1000
    poll_s: float = 0.5
    lease_s: float = 60.0


class Fanout:
    """The fan-out worker."""

    def __init__(
        self,
        deps: SchedulerDeps,
        segmentation: SegmentationPeer,
        policies: PolicySource,
        settings: FanoutSettings,
    ) -> None:
        self._deps = deps
        self._segmentation = segmentation
        self._policies = policies
        self._settings = settings

    async def run(self, ctx: WorkerContext) -> None:
        """Fan out and complete campaigns until the app stops."""
        while not ctx.stopping:
            worked = await self.fan_out_once()
            await self.complete_finished()
            if not worked:
                await ctx.sleep(self._settings.poll_s)

    async def complete_finished(self) -> int:
        """Mark RUNNING campaigns with nothing left to decide or hand over COMPLETED."""
        deps = self._deps
        async with deps.uow(read_only=True) as work:
            if not await work.campaigns.finished_fanouts(1):
                return 0  # the usual case: no write transaction for nothing
        async with deps.uow() as work:
            done = await work.campaigns.finished_fanouts(100)
            now = deps.clock.now()
            for app_id, campaign_id in done:
                row = await work.campaigns.get(app_id, campaign_id, lock=True)
                if row is not None and row.state == CampaignState.RUNNING.value:
                    row.state, row.finished_at = CampaignState.COMPLETED.value, now
            await work.commit()
        return len(done)

    async def fan_out_once(self) -> bool:
        """Claim one due campaign and stream its audience to the end (or until the
        lease nears its end); returns whether there was one."""
        deps = self._deps
        now = deps.clock.now()
        lease = timedelta(seconds=self._settings.lease_s)
        async with deps.uow() as work:
            row = await work.campaigns.claim_fanout(now, now + lease)
            await work.commit()
        if row is None:
            return False
        try:
            await self._stream(row)
        except (PeerUnavailable, UnknownCategory) as error:
            logger.warning(
                "fan-out postponed: %s",
                error,
                extra={"app_id": row.app_id, "campaign_id": row.campaign_id},
            )
            # Give the claim back at once: the stored cursor resumes the stream after the
            # loop's pause (a long audience outlives one stream's deadline; waiting for
            # the lease to run out would stall the campaign for a whole lease).
            async with deps.uow() as work:
                await work.campaigns.release_fanout(row.app_id, row.campaign_id)
                await work.commit()
            return False
        return True

    async def _stream(self, row: CampaignRow) -> None:
        campaign = resources_pb2.Campaign.FromString(row.definition)
        started_at = row.started_at or self._deps.clock.now()
        pages = self._segmentation.audience(
            row.app_id,
            audience_rule(campaign.audience),
            cursor=row.fanout_cursor or "",
            as_of=None,
            page_size=self._settings.page_size,
        )
        async for page in pages:
            await self._store_page(row, campaign, started_at, page.user_ids, page.cursor, page.done)
            if page.done:
                return

    async def _store_page(
        self,
        row: CampaignRow,
        campaign: resources_pb2.Campaign,
        started_at: datetime,
        user_ids: Sequence[str],
        cursor: str,
        done: bool,
    ) -> None:
        deps = self._deps
        app_id, campaign_id = row.app_id, row.campaign_id
        now = deps.clock.now()
        zones = await self._zones(app_id, campaign, user_ids)
        hours = await self._open_hours(app_id, campaign, user_ids)
        variants = [(v.variant_id, v.weight) for v in campaign.variants]
        expires = campaign.expires_at.ToDatetime(UTC) if campaign.HasField("expires_at") else None
        intents: list[NewIntent] = []
        assignments: list[delivery_pb2.Assignment] = []
        dropped: list[tuple[NewIntent, int]] = []
        for user_id in user_ids:
            choice = assign(campaign_id, user_id, campaign.holdout_basis_points, variants)
            due = due_time(
                campaign.schedule,
                zone=zones.get(user_id),
                now=now,
                started_at=started_at,
                open_hours=hours.users.get(user_id),
                app_best_local_hour=hours.app_best_local_hour,
                user_id=user_id,
                campaign_id=campaign_id,
            )
            due_at = now if isinstance(due, NotDue) else due.at
            intent = NewIntent(
                app_id=app_id,
                send_id=campaign_send_id(campaign_id, user_id),
                user_id=user_id,
                lane=Lane.MARKETING,
                category_id=campaign.category_id,
                topic_id=campaign.topic_id,
                campaign_id=campaign_id,
                variant_id="" if choice.holdout else choice.variant_id,
                holdout=choice.holdout,
                priority=campaign.priority,
                expires_at=expires,
                due_at=due_at,
                created_at=now,
            )
            assignment = delivery_pb2.Assignment(user_id=user_id)
            if choice.holdout:
                assignment.holdout = True
            else:
                assignment.variant_id = choice.variant_id
            assignment.assigned_at.FromDatetime(due_at)
            if isinstance(due, NotDue):
                dropped.append((intent, due.reason))
                continue
            assignments.append(assignment)
            if choice.holdout:
                dropped.append((intent, _HOLDOUT))
            else:
                intents.append(intent)
        await deps.delivery.record_assignments(app_id, assignments, campaign_id=campaign_id)
        async with deps.uow() as work:
            current = await work.campaigns.get(app_id, campaign_id, lock=True)
            if current is None or current.state not in (
                CampaignState.RUNNING.value,
                CampaignState.PAUSED.value,
            ):
                return  # cancelled meanwhile: store nothing more
            added = await work.intents.add(intents)
            ended = await work.intents.add_dropped(dropped, now)
            counts: Counter[tuple[str, str, str, int]] = Counter()
            for _, reason in dropped:
                counts[(app_id, campaign_id, "DROP", reason)] += 1
            await work.campaigns.count(counts)
            current.fanout_cursor = cursor
            current.audience_size += len(user_ids)
            current.holdout_size += sum(1 for _, reason in dropped if reason == _HOLDOUT)
            current.fan_out_complete = done
            current.claimed_until = now + timedelta(seconds=self._settings.lease_s)
            await work.commit()
        if added or ended:
            deps.intents_arrived(Lane.MARKETING)

    async def _zones(
        self, app_id: str, campaign: resources_pb2.Campaign, user_ids: Sequence[str]
    ) -> dict[str, ZoneInfo]:
        """Each user's zone (with the app's fallback) when the schedule needs one."""
        mode = campaign.schedule.WhichOneof("mode")
        if mode not in ("local_time", "best_time"):
            return {}
        rules, _ = await self._policies.rules(app_id)
        answer = await self._deps.consent.eligibility(
            app_id, campaign.category_id, "", list(user_ids)
        )
        zones: dict[str, ZoneInfo] = {}
        for user_id in user_ids:
            facts = answer.users.get(user_id)
            name = facts.time_zone if facts is not None and facts.time_zone else rules.default_zone
            zone = get_zone(name)
            if zone is not None:
                zones[user_id] = zone
        return zones

    async def _open_hours(
        self, app_id: str, campaign: resources_pb2.Campaign, user_ids: Sequence[str]
    ) -> PageHours:
        """Delivery's open hours for a BEST_TIME campaign's page (none otherwise)."""
        if campaign.schedule.WhichOneof("mode") != "best_time":
            return PageHours({}, None)
        best = campaign.schedule.best_time
        lookback = best.lookback.ToTimedelta() if best.HasField("lookback") else DEFAULT_LOOKBACK
        answer = await self._deps.delivery.open_hours(app_id, list(user_ids), lookback)
        by_hour = list(answer.app_opens_by_local_hour)
        best_hour = (
            max(range(len(by_hour)), key=lambda h: (by_hour[h], -h)) if any(by_hour) else None
        )
        return PageHours({user.user_id: user for user in answer.users}, best_hour)
