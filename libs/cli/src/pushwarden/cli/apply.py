"""``pushwarden apply``: each resource sent with the RPC its contract names, idempotently.

What "unchanged" means is the service's own answer, never a guess from comparing
messages here (a service fills in defaults):

- Category: DefineCategory (an upsert); consent writes nothing for the same settings, so
  ``updated_at`` stays: unchanged. ``created`` when BatchGetCategories did not know it.
- Policy: SetPolicy (replace all); the scheduler moves the version only when the
  effective policy changes: unchanged when the version stayed.
- Segment: CreateSegment with its id; the same id and definition is ``replayed``:
  unchanged. Segments are immutable: another definition under the same id is refused
  (ALREADY_EXISTS, ID_TAKEN).
- Campaign: CreateCampaign with the document's idempotency key; ``replayed``: unchanged.
  A campaign cannot be edited: another definition under the same key is refused
  (ALREADY_EXISTS, IDEMPOTENCY_KEY_REUSED).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

from pushwarden.cli.connection import Clients
from pushwarden.cli.errors import CliError
from pushwarden.cli.manifests import Resource
from pushwarden.consent.v1 import messages_pb2 as consent_messages
from pushwarden.consent.v1 import resources_pb2 as consent_resources
from pushwarden.scheduler.v1 import messages_pb2 as scheduler_messages
from pushwarden.scheduler.v1 import resources_pb2 as scheduler_resources
from pushwarden.segmentation.v1 import messages_pb2 as segmentation_messages
from pushwarden.segmentation.v1 import resources_pb2 as segmentation_resources

__all__ = ["Applied", "apply_resource"]

CREATED, CONFIGURED, UNCHANGED = "created", "configured", "unchanged"


@dataclass(frozen=True, slots=True)
class Applied:
    """What applying one resource did; ``ref`` is its id at the service."""

    kind: str
    app_id: str
    name: str
    result: str
    ref: str
    origin: str


async def _category(clients: Clients, resource: Resource) -> tuple[str, str]:
    category = cast(consent_resources.Category, resource.message)
    before = await clients.call(
        "consent",
        clients.consent.BatchGetCategories,
        consent_messages.BatchGetCategoriesRequest(
            app_id=resource.app_id, category_ids=[category.category_id]
        ),
    )
    answer = await clients.call(
        "consent",
        clients.consent.DefineCategory,
        consent_messages.DefineCategoryRequest(app_id=resource.app_id, category=category),
    )
    if answer.created or not before.categories:
        return CREATED, category.category_id
    same = answer.category.updated_at == before.categories[0].updated_at
    return (UNCHANGED if same else CONFIGURED), category.category_id


async def _policy(clients: Clients, resource: Resource) -> tuple[str, str]:
    policy = cast(scheduler_resources.Policy, resource.message)
    before = await clients.call(
        "scheduler",
        clients.scheduler.GetPolicy,
        scheduler_messages.GetPolicyRequest(app_id=resource.app_id),
    )
    answer = await clients.call(
        "scheduler",
        clients.scheduler.SetPolicy,
        scheduler_messages.SetPolicyRequest(app_id=resource.app_id, policy=policy),
    )
    version = answer.policy.version
    if version == before.policy.version:
        return UNCHANGED, f"version {version}"
    return (CREATED if before.policy.version == 0 else CONFIGURED), f"version {version}"


async def _segment(clients: Clients, resource: Resource) -> tuple[str, str]:
    segment = cast(segmentation_resources.Segment, resource.message)
    answer = await clients.call(
        "segmentation",
        clients.segmentation.CreateSegment,
        segmentation_messages.CreateSegmentRequest(app_id=resource.app_id, segment=segment),
    )
    return (UNCHANGED if answer.replayed else CREATED), answer.segment.segment_id


async def _campaign(clients: Clients, resource: Resource) -> tuple[str, str]:
    campaign = cast(scheduler_resources.Campaign, resource.message)
    answer = await clients.call(
        "scheduler",
        clients.scheduler.CreateCampaign,
        scheduler_messages.CreateCampaignRequest(
            app_id=resource.app_id, campaign=campaign, idempotency_key=resource.key
        ),
    )
    return (UNCHANGED if answer.replayed else CREATED), answer.campaign.campaign_id


_APPLIERS = {"Category": _category, "Policy": _policy, "Segment": _segment, "Campaign": _campaign}


async def apply_resource(clients: Clients, resource: Resource) -> Applied:
    """Apply one resource; a refusal becomes a :class:`CliError` naming the document."""
    try:
        result, ref = await _APPLIERS[resource.kind](clients, resource)
    except CliError as error:
        raise CliError(
            f"{resource.origin} ({resource.kind} {resource.name}): {error.message}",
            error.exit_code,
        ) from None
    return Applied(resource.kind, resource.app_id, resource.name, result, ref, resource.origin)
