"""Campaign RPCs: create, start, pause, resume, cancel, get and list.

Creation checks what other services own before anything is stored: the category at
consent (it must exist and be MARKETING: a broadcast is marketing), the segments and
lists at segmentation (they must exist; a deleted segment cannot be newly referenced).
The campaign id derives from the creation key, so a retry names the same campaign and
a retry with another body is refused.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pushwarden.common.v1 import decision_pb2
from pushwarden.runtime.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Unavailable,
)
from pushwarden.runtime.validation import Violations
from pushwarden.scheduler.v1 import resources_pb2
from pushwarden.services.scheduler.domain import campaigns as lifecycle
from pushwarden.services.scheduler.domain.campaigns import CampaignState, campaign_id_for
from pushwarden.services.scheduler.domain.intents import IntentRecord, Lane
from pushwarden.services.scheduler.domain.schedule import check_schedule, fan_out_start
from pushwarden.services.scheduler.handlers.common import SchedulerDeps
from pushwarden.services.scheduler.models import CampaignRow
from pushwarden.services.scheduler.peers import PeerUnavailable
from pushwarden.services.scheduler.peers.segmentation import SegmentationPeer
from pushwarden.services.scheduler.storage.campaigns import Progress
from pushwarden.services.scheduler.storage.uow import SchedulerUnitOfWork

_OUTPUT_ONLY = ("campaign_id", "state", "progress", "created_at", "started_at", "finished_at")


@dataclass(frozen=True, slots=True)
class StoredCampaign:
    """A campaign row's values, read inside its unit of work."""

    campaign_id: str
    idempotency_key: str
    state: str
    definition: bytes
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    fan_out_complete: bool
    audience_size: int
    holdout_size: int

    @classmethod
    def of(cls, row: CampaignRow) -> StoredCampaign:
        """A copy of ``row`` that outlives its session."""
        return cls(
            campaign_id=row.campaign_id,
            idempotency_key=row.idempotency_key,
            state=row.state,
            definition=row.definition,
            created_at=row.created_at,
            started_at=row.started_at,
            finished_at=row.finished_at,
            fan_out_complete=row.fan_out_complete,
            audience_size=row.audience_size,
            holdout_size=row.holdout_size,
        )


@dataclass(frozen=True, slots=True)
class CampaignView:
    """A stored campaign with its progress (None where not computed)."""

    row: StoredCampaign
    progress: Progress | None
    computed_at: datetime


def definition_of(campaign: resources_pb2.Campaign) -> bytes:
    """The stored form of a campaign: output-only fields cleared, deterministic bytes."""
    copy = resources_pb2.Campaign()
    copy.CopyFrom(campaign)
    for name in _OUTPUT_ONLY:
        copy.ClearField(name)  # type: ignore[arg-type]
    return copy.SerializeToString(deterministic=True)


class CampaignHandlers:
    """The campaign RPCs' logic."""

    def __init__(self, deps: SchedulerDeps, segmentation: SegmentationPeer) -> None:
        self._deps = deps
        self._segmentation = segmentation

    def now(self) -> datetime:
        """The service clock's now (schedules in the past are refused against it)."""
        return self._deps.clock.now()

    async def create(
        self, app_id: str, campaign: resources_pb2.Campaign, idempotency_key: str
    ) -> tuple[CampaignView, bool]:
        """Store a DRAFT campaign; the same key returns the first one (replayed)."""
        definition = definition_of(campaign)
        async with self._deps.uow(read_only=True) as work:
            found = await work.campaigns.by_key(app_id, idempotency_key)
            first = None if found is None else StoredCampaign.of(found)
        if first is not None:
            return self._replay(first, definition), True
        await self.check_references(app_id, campaign)
        now = self._deps.clock.now()
        campaign_id = campaign_id_for(app_id, idempotency_key)
        async with self._deps.uow() as work:
            added = await work.campaigns.add(
                {
                    "app_id": app_id,
                    "campaign_id": campaign_id,
                    "idempotency_key": idempotency_key,
                    "state": CampaignState.DRAFT.value,
                    "category_id": campaign.category_id,
                    "definition": definition,
                    "created_at": now,
                    "fan_out_complete": False,
                    "audience_size": 0,
                    "holdout_size": 0,
                }
            )
            stored = await work.campaigns.get(app_id, campaign_id)
            assert stored is not None
            row = StoredCampaign.of(stored)
            await work.commit()
        if not added:
            return self._replay(row, definition), True
        return CampaignView(row, None, now), False

    def _replay(self, row: StoredCampaign, definition: bytes) -> CampaignView:
        if row.definition != definition:
            raise AlreadyExists(
                "this idempotency key created another campaign",
                resource_type="idempotency_key",
                resource_name=row.idempotency_key,
                reason="IDEMPOTENCY_KEY_REUSED",
            )
        return CampaignView(row, None, self._deps.clock.now())

    async def check_references(self, app_id: str, campaign: resources_pb2.Campaign) -> None:
        """Refuse a definition naming what other services do not have: the category at
        consent (INVALID_ARGUMENT when unknown, FAILED_PRECONDITION unless MARKETING),
        segments (unknown or deleted) and lists at segmentation (CreateCampaign's and
        PreviewCampaign's check)."""
        audience = campaign.audience
        try:
            kinds = await self._deps.consent.kinds(app_id, [campaign.category_id])
            segments = await self._segmentation.segments(
                app_id, [*audience.include_segment_ids, *audience.exclude_segment_ids]
            )
            unknown_lists = await self._segmentation.unknown_lists(
                app_id, list(audience.exclude_list_ids)
            )
        except PeerUnavailable as error:
            raise Unavailable(f"cannot check the campaign's references: {error}") from error
        problems: list[tuple[str, str]] = []
        kind = kinds.get(campaign.category_id)
        if kind is None:
            problems.append(("campaign.category_id", "no such category at consent"))
        for name in ("include_segment_ids", "exclude_segment_ids"):
            for index, segment_id in enumerate(getattr(audience, name)):
                segment = segments.get(segment_id)
                if segment is None:
                    problems.append((f"campaign.audience.{name}[{index}]", "no such segment"))
                elif segment.HasField("deleted_at"):
                    problems.append(
                        (f"campaign.audience.{name}[{index}]", "the segment was deleted")
                    )
        for index, list_id in enumerate(audience.exclude_list_ids):
            if list_id in unknown_lists:
                problems.append((f"campaign.audience.exclude_list_ids[{index}]", "no such list"))
        if problems:
            raise InvalidArgument(
                "the campaign names what does not exist: "
                + ", ".join(field for field, _ in problems),
                problems,
                reason="UNKNOWN_REFERENCE",
            )
        if kind != "MARKETING":
            raise FailedPrecondition(
                f"category {campaign.category_id!r} is {kind}: a campaign is a broadcast, "
                "and a broadcast is marketing",
                [("CATEGORY_KIND", f"category_id {campaign.category_id}", "must be MARKETING")],
                reason="CATEGORY_KIND_MISMATCH",
            )

    async def start(self, app_id: str, campaign_id: str) -> CampaignView:
        """DRAFT → SCHEDULED (fan-out begins at its time); a started one as it is."""
        now = self._deps.clock.now()
        async with self._deps.uow() as work:
            row = await self._locked(work, app_id, campaign_id)
            state = CampaignState(row.state)
            after = lifecycle.started(state)
            if state is CampaignState.DRAFT:
                campaign = resources_pb2.Campaign.FromString(row.definition)
                # The definition passed this check when it was created: only time can
                # have made it fail (an AT or LOCAL_TIME schedule now entirely past).
                passed = Violations()
                check_schedule(passed, "campaign.schedule", campaign.schedule, now)
                if passed:
                    raise FailedPrecondition(
                        "the campaign's schedule is entirely in the past: "
                        + "; ".join(f"{f}: {d}" for f, d in passed.items),
                        [("SCHEDULE_PASSED", "campaign.schedule", "nothing is left to send")],
                        reason="INVALID_STATE",
                    )
                row.state, row.started_at = after.value, now
                row.fanout_at = fan_out_start(campaign.schedule, now)
            stored = StoredCampaign.of(row)
            await work.commit()
        return CampaignView(stored, None, now)

    async def pause(self, app_id: str, campaign_id: str) -> CampaignView:
        """Hold a scheduled or running campaign: nothing more is dispatched."""
        return await self._move(app_id, campaign_id, lifecycle.paused)

    async def resume(self, app_id: str, campaign_id: str) -> CampaignView:
        """Release a paused campaign; intents that fell due meanwhile are decided now."""
        now = self._deps.clock.now()
        async with self._deps.uow() as work:
            row = await self._locked(work, app_id, campaign_id)
            after = lifecycle.resumed(
                CampaignState(row.state), fanned_out=row.audience_size > 0 or row.fan_out_complete
            )
            if after.value != row.state:
                row.state = after.value
            stored = StoredCampaign.of(row)
            await work.commit()
        self._deps.intents_arrived(Lane.MARKETING)
        return CampaignView(stored, None, now)

    async def cancel(self, app_id: str, campaign_id: str) -> CampaignView:
        """Cancel: pending intents are dropped (CAMPAIGN_CANCELLED)."""
        now = self._deps.clock.now()
        async with self._deps.uow() as work:
            row = await self._locked(work, app_id, campaign_id)
            after = lifecycle.cancelled(CampaignState(row.state))
            if after.value != row.state:
                row.state, row.finished_at = after.value, now
                await work.campaigns.cancel_pending(
                    app_id, campaign_id, decision_pb2.REASON_CODE_CAMPAIGN_CANCELLED, now
                )
            stored = StoredCampaign.of(row)
            await work.commit()
        return CampaignView(stored, None, now)

    async def _move(
        self, app_id: str, campaign_id: str, step: Callable[[CampaignState], CampaignState]
    ) -> CampaignView:
        now = self._deps.clock.now()
        async with self._deps.uow() as work:
            row = await self._locked(work, app_id, campaign_id)
            after = step(CampaignState(row.state))
            if after.value != row.state:
                row.state = after.value
            stored = StoredCampaign.of(row)
            await work.commit()
        return CampaignView(stored, None, now)

    async def get(self, app_id: str, campaign_id: str) -> CampaignView:
        """A campaign with its progress counters."""
        async with self._deps.uow(read_only=True) as work:
            row = await work.campaigns.get(app_id, campaign_id)
            if row is None:
                raise _not_found(campaign_id)
            stored = StoredCampaign.of(row)
            progress = await work.campaigns.progress(app_id, campaign_id)
        return CampaignView(stored, progress, self._deps.clock.now())

    async def decisions(
        self, app_id: str, campaign_id: str, after_user: str | None, limit: int, **filters: Any
    ) -> list[IntentRecord]:
        """A page of a campaign's per-user records (NOT_FOUND for an unknown campaign)."""
        async with self._deps.uow(read_only=True) as work:
            if await work.campaigns.get(app_id, campaign_id) is None:
                raise _not_found(campaign_id)
            return await work.intents.of_campaign(
                app_id, campaign_id, after_user=after_user, limit=limit, **filters
            )

    async def page(
        self,
        app_id: str,
        states: list[str],
        after: tuple[datetime, str] | None,
        limit: int,
    ) -> list[CampaignView]:
        """A page of campaigns, newest first (without progress)."""
        async with self._deps.uow(read_only=True) as work:
            rows = [
                StoredCampaign.of(row)
                for row in await work.campaigns.page(app_id, states, after, limit)
            ]
        now = self._deps.clock.now()
        return [CampaignView(row, None, now) for row in rows]

    @staticmethod
    async def _locked(work: SchedulerUnitOfWork, app_id: str, campaign_id: str) -> CampaignRow:
        row = await work.campaigns.get(app_id, campaign_id, lock=True)
        if row is None:
            raise _not_found(campaign_id)
        return row


def _not_found(campaign_id: str) -> NotFound:
    return NotFound(
        f"no campaign {campaign_id!r}", resource_type="campaign", resource_name=campaign_id
    )
