"""CheckEligibility: for up to 1,000 users and one category, everything the scheduler's
policy needs, from the database on every call (an opt-out is seen by the very next
call), in one read snapshot and one query per table for the whole batch.

Reasons follow the policy library's gate order. MARKETING: SUPPRESSED (an erased user
id), OPTED_OUT (channel, then all marketing), CATEGORY_OPTED_OUT, TOPIC_OPTED_OUT,
NO_PERMISSION, NO_DEVICE. TRANSACTIONAL: CATEGORY_OPTED_OUT and TOPIC_OPTED_OUT only where
the category allows an opt-out, then NO_PERMISSION, NO_DEVICE.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pushwarden.common.v1 import decision_pb2
from pushwarden.consent.v1 import messages_pb2, resources_pb2
from pushwarden.runtime.errors import InvalidArgument
from pushwarden.services.consent.domain.categories import Category, CategoryKind
from pushwarden.services.consent.domain.consent import (
    Choices,
    category_standing,
    channel_opted_out,
    marketing_opted_out,
    topic_subscribed,
)
from pushwarden.services.consent.domain.devices import DeviceStatus, DeviceSummary
from pushwarden.services.consent.handlers.common import ConsentDeps, timestamp
from pushwarden.services.consent.storage.choices import Suppression

MAX_USERS = 1000
MAX_DEVICES_PER_USER = 10
R = decision_pb2


@dataclass(frozen=True, slots=True)
class EligibilityQuery:
    """A checked CheckEligibility request."""

    app_id: str
    category_id: str
    topic_id: str
    user_ids: Sequence[str]
    channel: str


def _devices_part(
    devices: Sequence[DeviceSummary],
) -> tuple[list[DeviceSummary], decision_pb2.DeviceDetail, bool]:
    """Usable devices (newest first, at most 10), the counts, and whether any active
    device allows pushes."""
    active = [d for d in devices if d.status is DeviceStatus.ACTIVE]
    usable = [d for d in active if d.usable]
    counts = decision_pb2.DeviceDetail(
        usable=len(usable),
        without_permission=len(active) - len(usable),
        invalidated=sum(1 for d in devices if d.status is DeviceStatus.INVALID),
    )
    return usable[:MAX_DEVICES_PER_USER], counts, bool(usable) or not active


def _zone(
    preferences: resources_pb2.Preferences | None, devices: Sequence[DeviceSummary]
) -> tuple[str, int]:
    if preferences is not None and preferences.time_zone_override:
        return preferences.time_zone_override, R.TIME_ZONE_SOURCE_PROFILE
    for device in devices:  # newest registration first
        if device.status is DeviceStatus.ACTIVE and device.time_zone:
            return device.time_zone, R.TIME_ZONE_SOURCE_DEVICE
    return "", R.TIME_ZONE_SOURCE_NONE


def judge_user(
    user_id: str,
    category: Category,
    query: EligibilityQuery,
    choices: Choices,
    devices: Sequence[DeviceSummary],
    preferences: resources_pb2.Preferences | None,
    suppression: Suppression | None,
) -> messages_pb2.UserEligibility:
    """One user's answer (pure: every input already loaded)."""
    marketing = category.kind is CategoryKind.MARKETING
    suppressed = suppression is not None and suppression.lifted_at is None
    all_out = marketing_opted_out(choices)
    channel_out = channel_opted_out(choices, query.channel)
    standing = category_standing(choices, category, query.channel)
    reasons: list[int] = []
    if marketing and suppressed:
        reasons.append(R.REASON_CODE_SUPPRESSED)
    if marketing and (channel_out or all_out):
        reasons.append(R.REASON_CODE_OPTED_OUT)
    if not standing.allowed:
        reasons.append(R.REASON_CODE_CATEGORY_OPTED_OUT)
    topic_state = messages_pb2.TOPIC_STATE_UNSPECIFIED
    subscribed = False
    if query.topic_id:
        subscribed = topic_subscribed(choices, query.topic_id, query.channel)
        topic_state = (
            messages_pb2.TOPIC_STATE_SUBSCRIBED
            if subscribed
            else messages_pb2.TOPIC_STATE_NOT_SUBSCRIBED
        )
        if not subscribed and (marketing or category.user_can_opt_out):
            reasons.append(R.REASON_CODE_TOPIC_OPTED_OUT)
    usable, counts, permitted = _devices_part(devices)
    if not permitted:
        reasons.append(R.REASON_CODE_NO_PERMISSION)
    if not usable:
        reasons.append(R.REASON_CODE_NO_DEVICE)
    zone, zone_source = _zone(preferences, devices)
    answer = messages_pb2.UserEligibility(
        user_id=user_id,
        allowed=not reasons,
        reason=reasons[0] if reasons else R.REASON_CODE_UNSPECIFIED,  # type: ignore[arg-type]
        reasons=reasons,  # type: ignore[arg-type]
        devices=[device.to_usable_proto() for device in usable],
        time_zone=zone,
        time_zone_source=zone_source,  # type: ignore[arg-type]
        topic_state=topic_state,
        consent=decision_pb2.ConsentDetail(
            marketing_opted_out=all_out,
            channel_opted_out=channel_out,
            category_id=category.category_id,
            category_allowed=standing.allowed,
            category_default=standing.is_default,
            topic_id=query.topic_id,
            topic_subscribed=subscribed,
            recorded_at=timestamp(standing.recorded_at),
            suppressed=suppressed,
            erased=suppression is not None,
        ),
        device_counts=counts,
        known_user=bool(choices or devices or preferences is not None or suppression),
    )
    if preferences is not None and preferences.HasField("quiet_hours"):
        answer.quiet_hours.CopyFrom(preferences.quiet_hours)
    if preferences is not None and preferences.HasField("frequency"):
        answer.frequency.CopyFrom(preferences.frequency)
    return answer


class EligibilityHandlers:
    """Batch eligibility."""

    def __init__(self, deps: ConsentDeps) -> None:
        self._deps = deps

    async def check(self, query: EligibilityQuery) -> messages_pb2.CheckEligibilityResponse:
        """Answer every user of the batch, in request order."""
        deps = self._deps
        subjects = {user: deps.pseudonyms.subject(query.app_id, user) for user in query.user_ids}
        async with deps.uow(read_only=True, snapshot=True) as work:
            category = await work.categories.get(query.app_id, query.category_id)
            if category is None:
                raise InvalidArgument(
                    f"unknown category {query.category_id!r}",
                    [("category_id", "no category of the app has this id")],
                    reason="UNKNOWN_REFERENCE",
                )
            as_of = await work.ledger.head_sequence()
            choices = await work.choices.of_users(query.app_id, query.user_ids)
            devices = await work.devices.summaries_of_users(query.app_id, query.user_ids)
            preferences = await work.preferences.of_users(query.app_id, query.user_ids)
            suppressions = await work.suppressions.of_subjects(
                query.app_id, list(subjects.values())
            )
        return messages_pb2.CheckEligibilityResponse(
            category_kind=category.kind.to_proto(),
            users=[
                judge_user(
                    user,
                    category,
                    query,
                    choices.get(user, {}),
                    devices.get(user, []),
                    preferences.get(user),
                    suppressions.get(subjects[user]),
                )
                for user in query.user_ids
            ],
            as_of_sequence=as_of,
            category=category.to_proto(),
        )
