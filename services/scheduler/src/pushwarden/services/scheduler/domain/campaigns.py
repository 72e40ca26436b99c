"""Campaigns: their checks, their lifecycle and their audience rule (pure).

A campaign is created in DRAFT; StartCampaign makes it SCHEDULED (RUNNING once its
fan-out begins); PauseCampaign and ResumeCampaign hold and release dispatch;
CancelCampaign drops what is pending; it is COMPLETED when fan-out is over and every
intent is decided. Each transition is idempotent: asking for the state a campaign is in
returns it as it is.
"""

from __future__ import annotations

import enum
import hashlib
from datetime import UTC, datetime

from pushwarden.common.v1 import types_pb2
from pushwarden.runtime.errors import FailedPrecondition
from pushwarden.runtime.validation import Violations
from pushwarden.scheduler.v1 import resources_pb2
from pushwarden.segmentation.v1 import resources_pb2 as segmentation_pb2
from pushwarden.services.scheduler.domain.schedule import check_schedule
from pushwarden.services.scheduler.domain.templates import check_template

MAX_SEGMENTS = 10
MAX_LISTS = 10
MAX_VARIANTS = 10
MAX_HOLDOUT_BP = 5000
_PRIORITIES = (types_pb2.PRIORITY_LOW, types_pb2.PRIORITY_NORMAL, types_pb2.PRIORITY_HIGH)


class CampaignState(enum.Enum):
    """A campaign's lifecycle state (stored by name, as the contract names it)."""

    DRAFT = "DRAFT"
    SCHEDULED = "SCHEDULED"
    RUNNING = "RUNNING"
    PAUSED = "PAUSED"
    COMPLETED = "COMPLETED"
    CANCELLED = "CANCELLED"

    @property
    def proto(self) -> resources_pb2.CampaignState.ValueType:
        """The contract's value."""
        return resources_pb2.CampaignState.Value(f"CAMPAIGN_STATE_{self.value}")

    @classmethod
    def from_proto(cls, value: int) -> CampaignState | None:
        """The state of a contract value (None for UNSPECIFIED or unknown)."""
        if not value or value not in _KNOWN_STATES:
            return None
        name = resources_pb2.CampaignState.Name(resources_pb2.CampaignState.ValueType(value))
        return cls(name.removeprefix("CAMPAIGN_STATE_"))


_KNOWN_STATES = set(resources_pb2.CampaignState.values())
LIVE = (CampaignState.SCHEDULED, CampaignState.RUNNING, CampaignState.PAUSED)


def campaign_id_for(app_id: str, idempotency_key: str) -> str:
    """A campaign's id, derived from its creation key: a retried CreateCampaign (even
    one racing the first) names the same campaign."""
    digest = hashlib.sha256(f"{app_id}\0{idempotency_key}".encode()).hexdigest()
    return f"cmp_{digest[:24]}"


def campaign_send_id(campaign_id: str, user_id: str) -> str:
    """The send id of a campaign's intent for one user (one per user and campaign)."""
    digest = hashlib.sha256(f"{campaign_id}\0{user_id}".encode()).hexdigest()
    return f"cs_{digest[:40]}"


def _refuse(state: CampaignState, action: str) -> FailedPrecondition:
    return FailedPrecondition(
        f"a {state.value.lower()} campaign cannot be {action}",
        [("INVALID_STATE", "campaign", f"{state.value} campaigns cannot be {action}")],
        reason="INVALID_STATE",
    )


def started(state: CampaignState) -> CampaignState:
    """The state after StartCampaign (DRAFT → SCHEDULED; a started one stays as it is)."""
    if state is CampaignState.DRAFT:
        return CampaignState.SCHEDULED
    if state in LIVE:
        return state
    raise _refuse(state, "started")


def paused(state: CampaignState) -> CampaignState:
    """The state after PauseCampaign."""
    if state in LIVE:
        return CampaignState.PAUSED
    raise _refuse(state, "paused")


def resumed(state: CampaignState, *, fanned_out: bool) -> CampaignState:
    """The state after ResumeCampaign (a paused campaign whose fan-out had not begun
    goes back to SCHEDULED)."""
    if state is CampaignState.PAUSED:
        return CampaignState.RUNNING if fanned_out else CampaignState.SCHEDULED
    if state in (CampaignState.RUNNING, CampaignState.SCHEDULED):
        return state
    raise _refuse(state, "resumed")


def cancelled(state: CampaignState) -> CampaignState:
    """The state after CancelCampaign."""
    if state is CampaignState.COMPLETED:
        raise _refuse(state, "cancelled")
    return CampaignState.CANCELLED


def check_campaign(
    problems: Violations, field: str, campaign: resources_pb2.Campaign, now: datetime
) -> None:
    """Everything about a campaign definition that needs no other service."""
    problems.text(f"{field}.name", campaign.name, max_chars=200, required=True)
    problems.text(f"{field}.description", campaign.description, max_chars=2000)
    problems.caller_id(f"{field}.category_id", campaign.category_id)
    problems.caller_id(f"{field}.topic_id", campaign.topic_id, required=False)
    _check_audience(problems, f"{field}.audience", campaign)
    _check_variants(problems, f"{field}.variants", campaign)
    if campaign.holdout_basis_points > MAX_HOLDOUT_BP:
        problems.add(f"{field}.holdout_basis_points", "0 to 5,000 (50 %)")
    if problems.required(f"{field}.schedule", campaign.HasField("schedule")):
        check_schedule(problems, f"{field}.schedule", campaign.schedule, now)
    if campaign.HasField("expires_at") and campaign.expires_at.ToDatetime(UTC) <= now:
        problems.add(f"{field}.expires_at", "must be in the future")
    problems.enum(f"{field}.priority", campaign.priority, _PRIORITIES, required=False)


def _check_audience(problems: Violations, field: str, campaign: resources_pb2.Campaign) -> None:
    audience = campaign.audience
    include = list(audience.include_segment_ids)
    if not include or len(include) > MAX_SEGMENTS:
        problems.add(f"{field}.include_segment_ids", f"1 to {MAX_SEGMENTS} segments")
    for name, ids, limit in (
        ("include_segment_ids", include, MAX_SEGMENTS),
        ("exclude_segment_ids", list(audience.exclude_segment_ids), MAX_SEGMENTS),
        ("exclude_list_ids", list(audience.exclude_list_ids), MAX_LISTS),
    ):
        if len(ids) > limit:
            problems.add(f"{field}.{name}", f"at most {limit}")
        for index, value in enumerate(ids):
            problems.caller_id(f"{field}.{name}[{index}]", value)


def _check_variants(problems: Violations, field: str, campaign: resources_pb2.Campaign) -> None:
    variants = list(campaign.variants)
    if not variants or len(variants) > MAX_VARIANTS:
        problems.add(field, f"1 to {MAX_VARIANTS} variants")
        return
    seen: set[str] = set()
    for index, variant in enumerate(variants):
        at = f"{field}[{index}]"
        if (
            problems.caller_id(f"{at}.variant_id", variant.variant_id)
            and len(variant.variant_id) > 64
        ):
            problems.add(f"{at}.variant_id", "at most 64 characters")
        if variant.variant_id in seen:
            problems.add(f"{at}.variant_id", f"repeats {variant.variant_id!r}")
        seen.add(variant.variant_id)
        if not 1 <= variant.weight <= 100:
            problems.add(f"{at}.weight", "1 to 100")
        if problems.required(f"{at}.template", variant.HasField("template")):
            check_template(problems, f"{at}.template", variant.template, trigger=False)
    total = sum(variant.weight for variant in variants)
    if total != 100:
        problems.add(field, f"weights must add up to 100, got {total}")


def audience_rule(audience: resources_pb2.Audience) -> segmentation_pb2.Rule:
    """The one inline rule fan-out evaluates: any include segment, and none of the
    exclude segments or lists."""
    include = segmentation_pb2.Rule(
        any=segmentation_pb2.RuleGroup(
            rules=[
                segmentation_pb2.Rule(
                    segment=segmentation_pb2.SegmentMembership(segment_id=segment_id)
                )
                for segment_id in audience.include_segment_ids
            ]
        )
    )
    excluded = [
        segmentation_pb2.Rule(segment=segmentation_pb2.SegmentMembership(segment_id=segment_id))
        for segment_id in audience.exclude_segment_ids
    ] + [
        segmentation_pb2.Rule(list=segmentation_pb2.ListMembership(list_id=list_id))
        for list_id in audience.exclude_list_ids
    ]
    if not excluded:
        return include
    return segmentation_pb2.Rule(
        all=segmentation_pb2.RuleGroup(
            rules=[
                include,
                segmentation_pb2.Rule(
                    negate=segmentation_pb2.Rule(any=segmentation_pb2.RuleGroup(rules=excluded))
                ),
            ]
        )
    )


def in_audience(
    audience: resources_pb2.Audience, segment_ids: set[str], list_ids: set[str]
) -> bool:
    """Whether a user with these memberships is (still) in the audience."""
    return (
        any(s in segment_ids for s in audience.include_segment_ids)
        and not any(s in segment_ids for s in audience.exclude_segment_ids)
        and not any(lst in list_ids for lst in audience.exclude_list_ids)
    )
