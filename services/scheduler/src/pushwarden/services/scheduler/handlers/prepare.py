"""What a dispatch pass learns besides consent before it decides: who is still in a
campaign's audience, who is on one of the app's suppression lists, and what each send
says (a transactional request's content in the device's language, a campaign
variant's template rendered with the user's profile, a trigger's with the firing
event's properties and the user's profile).

Everything is asked in batches: one CheckMembership per campaign of the batch (with
the app's suppression lists), one per batch for the other marketing sends, one
GetProfiles per campaign for the attributes its templates use, one per batch for the
triggers' (marketing firings join the batch's suppression check).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from pushwarden.common.v1 import content_pb2, decision_pb2
from pushwarden.scheduler.v1 import messages_pb2, resources_pb2
from pushwarden.segmentation.v1 import messages_pb2 as segmentation_messages
from pushwarden.segmentation.v1 import resources_pb2 as segmentation_resources
from pushwarden.services.scheduler.domain.campaigns import in_audience
from pushwarden.services.scheduler.domain.deciding import Due
from pushwarden.services.scheduler.domain.intents import Lane, localized_content
from pushwarden.services.scheduler.domain.templates import (
    TRIGGER_EVENT,
    Missing,
    Rendering,
    ValueLike,
    placeholders_needed,
    render_detailed,
)
from pushwarden.services.scheduler.handlers.common import SchedulerDeps
from pushwarden.services.scheduler.peers.segmentation import SegmentationPeer

_NOT_IN_AUDIENCE = decision_pb2.REASON_CODE_NOT_IN_AUDIENCE
_MISSING_VALUE = decision_pb2.REASON_CODE_MISSING_TEMPLATE_VALUE
_CAMPAIGN_CANCELLED = decision_pb2.REASON_CODE_CAMPAIGN_CANCELLED
_TRIGGER_DISABLED = decision_pb2.REASON_CODE_TRIGGER_DISABLED


@dataclass
class Prepared:
    """Per intent key: its content, or the reason it drops before the policy; and the
    users on a suppression list."""

    contents: dict[tuple[str, str], content_pb2.Content] = field(default_factory=dict)
    drops: dict[tuple[str, str], int] = field(default_factory=dict)
    suppressed: set[str] = field(default_factory=set)
    # What ExplainDecision shows besides: a campaign user's memberships and rendering.
    memberships: dict[str, segmentation_messages.UserMembership] = field(default_factory=dict)
    renderings: dict[tuple[str, str], Rendering] = field(default_factory=dict)


class Preparer:
    """Builds a :class:`Prepared` for one app's dues."""

    def __init__(self, deps: SchedulerDeps, segmentation: SegmentationPeer) -> None:
        self._deps = deps
        self._segmentation = segmentation
        # Campaign definitions never change once created: kept for the process's life.
        self._campaigns: dict[tuple[str, str], resources_pb2.Campaign] = {}
        # Trigger definitions never change either (SetTriggerEnabled drops what is pending).
        self._triggers: dict[tuple[str, str], resources_pb2.Trigger] = {}

    async def prepare(self, app_id: str, dues: Sequence[Due]) -> Prepared:
        """Contents, pre-policy drops and suppression for ``dues`` (one app)."""
        prepared = Prepared()
        by_campaign: dict[str, list[Due]] = defaultdict(list)
        others: list[Due] = []
        triggered: list[Due] = []
        for due in dues:
            intent = due.intent
            if intent.trigger_id is not None:
                triggered.append(due)
                if intent.lane is Lane.MARKETING:  # suppression lists apply
                    others.append(due)
            elif intent.lane is Lane.TRANSACTIONAL:
                prepared.contents[intent.key] = _transactional_content(due)
            elif intent.campaign_id is not None:
                by_campaign[intent.campaign_id].append(due)
            else:
                others.append(due)
        campaigns = await self._definitions(app_id, list(by_campaign))
        for campaign_id, members in by_campaign.items():
            campaign = campaigns.get(campaign_id)
            if campaign is None:  # the campaign is gone (erased app data): nothing to send
                for due in members:
                    prepared.drops[due.intent.key] = _CAMPAIGN_CANCELLED
                continue
            await self._campaign(app_id, campaign, members, prepared)
        if triggered:
            await self._triggered(app_id, triggered, prepared)
        if others:
            found = await self._segmentation.memberships(
                app_id, [d.intent.user_id for d in others], suppression=True
            )
            prepared.suppressed.update(
                user for user, member in found.items() if member.suppression_list_ids
            )
            prepared.memberships.update(found)
        return prepared

    async def prepare_campaign(
        self, app_id: str, campaign: resources_pb2.Campaign, members: Sequence[Due]
    ) -> Prepared:
        """What :meth:`prepare` learns for one campaign's dues, given its definition
        (a saved or an unsaved one: previews and explanations)."""
        prepared = Prepared()
        await self._campaign(app_id, campaign, members, prepared)
        return prepared

    async def _campaign(
        self,
        app_id: str,
        campaign: resources_pb2.Campaign,
        members: Sequence[Due],
        prepared: Prepared,
    ) -> None:
        audience = campaign.audience
        users = [due.intent.user_id for due in members]
        found = await self._segmentation.memberships(
            app_id,
            users,
            segment_ids=[*audience.include_segment_ids, *audience.exclude_segment_ids],
            list_ids=list(audience.exclude_list_ids),
            suppression=True,
        )
        variants = {variant.variant_id: variant.template for variant in campaign.variants}
        needed_attributes: set[str] = set()
        needed_events: set[str] = set()
        # A variant whose template reads no profile or event renders the same for every
        # user of one locale: rendered once per locale, not once per user.
        constant: set[str] = set()
        for variant_id, template in variants.items():
            attribute_keys, event_keys = placeholders_needed(template)
            needed_attributes.update(attribute_keys)
            needed_events.update(event_keys)
            if not attribute_keys and not event_keys:
                constant.add(variant_id)
        rendered: dict[tuple[str, str], Rendering] = {}
        profiles = (
            await self._segmentation.profiles(
                app_id,
                users,
                attribute_names=sorted(needed_attributes),
                latest_event_names=sorted(needed_events),
            )
            if needed_attributes or needed_events
            else {}
        )
        for due in members:
            intent = due.intent
            member = found.get(intent.user_id)
            if member is not None:
                prepared.memberships[intent.user_id] = member
            if member is not None and member.suppression_list_ids:
                prepared.suppressed.add(intent.user_id)
            if member is None or not in_audience(
                audience, set(member.segment_ids), set(member.list_ids)
            ):
                prepared.drops[intent.key] = _NOT_IN_AUDIENCE
                continue
            locale = due.facts.devices[0].locale if due.facts.devices else ""
            once = (intent.variant_id, locale) if intent.variant_id in constant else None
            rendering = rendered.get(once) if once is not None else None
            if rendering is None:
                profile = profiles.get(intent.user_id)
                attributes = dict(profile.profile.attributes) if profile is not None else {}
                events = (
                    {event.name: dict(event.properties) for event in profile.latest_events}
                    if profile is not None
                    else {}
                )
                rendering = render_detailed(
                    variants[intent.variant_id],
                    locale=locale,
                    attributes=attributes,
                    event_properties=events,
                )
                if once is not None:
                    rendered[once] = rendering
            prepared.renderings[intent.key] = rendering
            content = rendering.result
            if isinstance(content, Missing):
                prepared.drops[intent.key] = _MISSING_VALUE
            else:
                prepared.contents[intent.key] = content

    async def _triggered(self, app_id: str, dues: Sequence[Due], prepared: Prepared) -> None:
        """Trigger firings: each trigger's template rendered with the firing event's
        properties (under ``TRIGGER_EVENT``) and the profile values it uses."""
        triggers = await self._trigger_definitions(
            app_id, {d.intent.trigger_id or "" for d in dues}
        )
        attribute_names: set[str] = set()
        event_names: set[str] = set()
        for definition in triggers.values():
            attribute_keys, event_keys = placeholders_needed(definition.template)
            attribute_names.update(attribute_keys)
            event_names.update(name for name in event_keys if name != TRIGGER_EVENT)
        profiles = (
            await self._segmentation.profiles(
                app_id,
                [due.intent.user_id for due in dues],
                attribute_names=sorted(attribute_names),
                latest_event_names=sorted(event_names),
            )
            if attribute_names or event_names
            else {}
        )
        for due in dues:
            intent = due.intent
            trigger = triggers.get(intent.trigger_id or "")
            if trigger is None:  # the trigger is gone (erased app data): nothing to send
                prepared.drops[intent.key] = _TRIGGER_DISABLED
                continue
            profile = profiles.get(intent.user_id)
            attributes = dict(profile.profile.attributes) if profile is not None else {}
            events: dict[str, Mapping[str, ValueLike]] = (
                {event.name: dict(event.properties) for event in profile.latest_events}
                if profile is not None
                else {}
            )
            firing = segmentation_resources.Event.FromString(intent.body or b"")
            events[TRIGGER_EVENT] = dict(firing.properties)
            rendering = render_detailed(
                trigger.template,
                locale=due.facts.devices[0].locale if due.facts.devices else "",
                attributes=attributes,
                event_properties=events,
            )
            prepared.renderings[intent.key] = rendering
            if isinstance(rendering.result, Missing):
                prepared.drops[intent.key] = _MISSING_VALUE
            else:
                prepared.contents[intent.key] = rendering.result

    async def _trigger_definitions(
        self, app_id: str, trigger_ids: set[str]
    ) -> dict[str, resources_pb2.Trigger]:
        missing = [t for t in trigger_ids if (app_id, t) not in self._triggers]
        if missing:
            async with self._deps.uow(read_only=True) as work:
                for row in await work.triggers.many(app_id, missing):
                    self._triggers[(app_id, row.trigger_id)] = resources_pb2.Trigger.FromString(
                        row.definition
                    )
        return {
            t: self._triggers[(app_id, t)] for t in trigger_ids if (app_id, t) in self._triggers
        }

    async def _definitions(
        self, app_id: str, campaign_ids: Sequence[str]
    ) -> dict[str, resources_pb2.Campaign]:
        missing = [c for c in campaign_ids if (app_id, c) not in self._campaigns]
        if missing:
            async with self._deps.uow(read_only=True) as work:
                for campaign_id in missing:
                    row = await work.campaigns.get(app_id, campaign_id)
                    if row is not None:
                        self._campaigns[(app_id, campaign_id)] = resources_pb2.Campaign.FromString(
                            row.definition
                        )
        return {
            c: self._campaigns[(app_id, c)] for c in campaign_ids if (app_id, c) in self._campaigns
        }


def _transactional_content(due: Due) -> content_pb2.Content:
    """A transactional request's content in the language of the user's latest device."""
    request = messages_pb2.SendTransactionalRequest.FromString(due.intent.body or b"")
    locale = due.facts.devices[0].locale if due.facts.devices else ""
    return localized_content(
        request.content, {entry.locale: entry.content for entry in request.localized}, locale
    )
