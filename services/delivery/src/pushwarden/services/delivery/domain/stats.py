"""Campaign statistics from aggregated figures: per-send delivery figures, intent-to-treat
conversions and the holdout lift (``domain.lift``), as the contract's messages.

The database aggregates (``storage.stats``); this module only divides, picks and names:
rates, the lift of each variant and of the whole treated group against the holdout, and
the proto messages.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from pushwarden.delivery.v1 import messages_pb2
from pushwarden.services.delivery.domain.engagement import Subject, SubjectKind
from pushwarden.services.delivery.domain.lift import Lift, holdout_lift
from pushwarden.services.delivery.domain.sends import SendStatus, duration, timestamp

_METHODS = {"NEWCOMBE_HYBRID_SCORE": messages_pb2.INTERVAL_METHOD_NEWCOMBE_HYBRID_SCORE}


@dataclass(slots=True)
class SendFigures:
    """Per-send figures of one group (a variant, or the whole subject)."""

    statuses: dict[str, int] = field(default_factory=dict)
    failed_by_reason: dict[str, int] = field(default_factory=dict)
    tokens_invalidated: int = 0
    device_delivered: int = 0
    opened: int = 0
    dismissed: int = 0
    median_time_to_open_s: float | None = None
    opt_outs_within_24h: int = 0

    def count(self, *statuses: SendStatus) -> int:
        """Sends in any of ``statuses``."""
        return sum(self.statuses.get(status.value, 0) for status in statuses)


@dataclass(slots=True)
class AssignmentFigures:
    """Intent-to-treat figures of one group of assignments."""

    targeted: int = 0
    converted: int = 0
    conversions: int = 0
    conversion_value: float = 0.0

    def plus(self, other: AssignmentFigures) -> AssignmentFigures:
        """Both groups together (disjoint: a campaign assigns each user once)."""
        return AssignmentFigures(
            self.targeted + other.targeted,
            self.converted + other.converted,
            self.conversions + other.conversions,
            self.conversion_value + other.conversion_value,
        )


@dataclass(slots=True)
class SubjectFigures:
    """What the database says about a campaign or trigger. ``sends`` is keyed by variant
    id, ``None`` naming the whole subject; ``treated`` by variant id ("" for a trigger)."""

    sends: dict[str | None, SendFigures]
    treated: dict[str, AssignmentFigures]
    holdout: AssignmentFigures | None


@dataclass(frozen=True, slots=True)
class OpenHistograms:
    """Opens (the first of each send) by hour of day."""

    by_user: dict[str, list[int]]
    app_by_utc_hour: list[int]
    app_by_local_hour: list[int]


@dataclass(frozen=True, slots=True)
class GroupStats:
    """The figures of a variant or of the whole campaign or trigger."""

    variant_id: str
    sends: SendFigures
    assigned: AssignmentFigures
    lift: Lift | None

    def to_proto(self) -> messages_pb2.GroupStats:
        """The contract's GroupStats."""
        sends, assigned = self.sends, self.assigned
        delivered = sends.count(SendStatus.DELIVERED)
        stats = messages_pb2.GroupStats(
            variant_id=self.variant_id,
            targeted=assigned.targeted,
            sent=sum(sends.statuses.values()),
            delivered=delivered,
            failed=sends.count(SendStatus.FAILED, SendStatus.DEAD_LETTERED),
            failed_by_reason=[
                messages_pb2.ReasonCount(reason=reason, count=count)
                for reason, count in sorted(
                    sends.failed_by_reason.items(), key=lambda item: (-item[1], item[0])
                )
            ],
            suppressed=sends.count(SendStatus.SUPPRESSED),
            expired=sends.count(SendStatus.EXPIRED),
            late=sends.count(SendStatus.LATE),
            tokens_invalidated=sends.tokens_invalidated,
            device_delivered=sends.device_delivered,
            opened=sends.opened,
            open_rate=sends.opened / delivered if delivered else 0.0,
            dismissed=sends.dismissed,
            converted_users=assigned.converted,
            conversions=assigned.conversions,
            conversion_value=assigned.conversion_value,
            conversion_rate=(assigned.converted / assigned.targeted if assigned.targeted else 0.0),
            opt_outs_within_24h=sends.opt_outs_within_24h,
        )
        if sends.median_time_to_open_s is not None:
            stats.median_time_to_open.CopyFrom(duration(sends.median_time_to_open_s))
        if self.lift is not None:
            lift = self.lift
            stats.lift.treatment_rate = lift.treatment_rate
            stats.lift.holdout_rate = lift.holdout_rate
            stats.lift.absolute_lift = lift.absolute_lift
            stats.lift.relative_lift = lift.relative_lift
            stats.lift.significant = lift.significant
            if lift.interval is not None:
                stats.lift.absolute_lift_ci.CopyFrom(
                    messages_pb2.ConfidenceInterval(
                        lower=lift.interval.lower,
                        upper=lift.interval.upper,
                        level=lift.interval.level,
                        method=_METHODS[lift.interval.method.value],
                    )
                )
        return stats


@dataclass(frozen=True, slots=True)
class CampaignStats:
    """GetCampaignStats' answer."""

    subject: Subject
    window: timedelta
    total: GroupStats
    variants: list[GroupStats]
    holdout: AssignmentFigures | None
    computed_at: datetime

    def to_proto(self) -> messages_pb2.GetCampaignStatsResponse:
        """The contract's GetCampaignStatsResponse."""
        campaign = self.subject.kind is SubjectKind.CAMPAIGN
        reply = messages_pb2.GetCampaignStatsResponse(
            campaign_id=self.subject.subject_id if campaign else "",
            trigger_id="" if campaign else self.subject.subject_id,
            attribution_window=duration(self.window.total_seconds()),
            total=self.total.to_proto(),
            variants=[variant.to_proto() for variant in self.variants],
            computed_at=timestamp(self.computed_at),
        )
        if self.holdout is not None:
            users, converted = self.holdout.targeted, self.holdout.converted
            reply.holdout.CopyFrom(
                messages_pb2.HoldoutStats(
                    users=users,
                    converted_users=converted,
                    conversion_rate=converted / users if users else 0.0,
                )
            )
        return reply


def _lift(treated: AssignmentFigures, holdout: AssignmentFigures | None) -> Lift | None:
    if holdout is None or holdout.targeted == 0:
        return None
    return holdout_lift(treated.converted, treated.targeted, holdout.converted, holdout.targeted)


def campaign_stats(
    subject: Subject, window: timedelta, figures: SubjectFigures, now: datetime
) -> CampaignStats:
    """The statistics of a campaign (variants ordered by id) or a trigger (no variants:
    every firing is treated, none held out)."""
    treated_total = AssignmentFigures()
    for assigned in figures.treated.values():
        treated_total = treated_total.plus(assigned)
    variants: list[GroupStats] = []
    if subject.kind is SubjectKind.CAMPAIGN:
        variant_ids = {key for key in figures.sends if key} | {
            key for key in figures.treated if key
        }
        for variant_id in sorted(variant_ids):
            assigned = figures.treated.get(variant_id, AssignmentFigures())
            variants.append(
                GroupStats(
                    variant_id=variant_id,
                    sends=figures.sends.get(variant_id, SendFigures()),
                    assigned=assigned,
                    lift=_lift(assigned, figures.holdout),
                )
            )
    total = GroupStats(
        variant_id="",
        sends=figures.sends.get(None, SendFigures()),
        assigned=treated_total,
        lift=_lift(treated_total, figures.holdout),
    )
    return CampaignStats(
        subject=subject,
        window=window,
        total=total,
        variants=variants,
        holdout=figures.holdout,
        computed_at=now,
    )
