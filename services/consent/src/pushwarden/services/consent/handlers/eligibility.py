"""CheckEligibility: for up to 1,000 users and one category, everything the scheduler's
policy needs, from the database on every call (an opt-out is seen by the very next
call), in one read snapshot and one query per table for the whole batch.

Reasons follow the policy library's gate order. MARKETING: SUPPRESSED (an erased user
id), OPTED_OUT (channel, then all marketing), CATEGORY_OPTED_OUT, TOPIC_OPTED_OUT,
NO_PERMISSION, NO_DEVICE. TRANSACTIONAL: CATEGORY_OPTED_OUT and TOPIC_OPTED_OUT only where
the category allows an opt-out, then NO_PERMISSION, NO_DEVICE.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from pushwarden.common.v1 import decision_pb2
from pushwarden.consent.v1 import messages_pb2, resources_pb2
from pushwarden.runtime.errors import InvalidArgument
from pushwarden.services.consent.domain.categories import Category, CategoryKind, DefaultState
from pushwarden.services.consent.domain.consent import (
    Action,
    Choice,
    Choices,
    Scope,
    ScopeKind,
)
from pushwarden.services.consent.domain.devices import DeviceStatus, DeviceSummary, Permission
from pushwarden.services.consent.handlers.common import ConsentDeps
from pushwarden.services.consent.storage.choices import Suppression

MAX_USERS = 1000
MAX_DEVICES_PER_USER = 10
R = decision_pb2
OPT_IN, OPT_OUT = Action.OPT_IN, Action.OPT_OUT
ACTIVE, INVALID = DeviceStatus.ACTIVE, DeviceStatus.INVALID
# The permissions that let a device show a push (Permission.allows_push), as one set.
PUSHABLE = frozenset(permission for permission in Permission if permission.allows_push)


@dataclass(frozen=True, slots=True)
class EligibilityQuery:
    """A checked CheckEligibility request."""

    app_id: str
    category_id: str
    topic_id: str
    user_ids: Sequence[str]
    channel: str


class BatchJudge:
    """Judges every user of one batch: the scope keys and the category's facts are
    worked out once per batch, each user's devices walked once. It applies the rules of
    :mod:`..domain.consent` (``category_standing``, ``marketing_opted_out``,
    ``channel_opted_out``, ``topic_subscribed``) in the gate order above; the eligibility
    tests and the consent model test hold it to them."""

    def __init__(self, category: Category, query: EligibilityQuery) -> None:
        channel = query.channel
        self.category = category
        self.category_id = category.category_id
        self.topic_id = query.topic_id
        self.query = query
        self._stamps: dict[datetime, Timestamp] = {}
        self.marketing = category.kind is CategoryKind.MARKETING
        self.can_opt_out = self.marketing or category.user_can_opt_out
        self.default_allowed = category.default_state is DefaultState.OPTED_IN
        self.all_key = Scope(ScopeKind.ALL_MARKETING).key
        self.channel_key = Scope(ScopeKind.CHANNEL, channel).key
        self.category_keys = (
            Scope(ScopeKind.CATEGORY, channel, category.category_id).key,
            Scope(ScopeKind.CATEGORY, "", category.category_id).key,
        )
        topic = query.topic_id
        self.topic_keys = (
            (
                Scope(ScopeKind.TOPIC, channel, topic_id=topic).key,
                Scope(ScopeKind.TOPIC, "", topic_id=topic).key,
            )
            if topic
            else ()
        )

    @staticmethod
    def _later(choices: Choices, keys: tuple[str, ...]) -> Choice | None:
        found: Choice | None = None
        for key in keys:
            choice = choices.get(key)
            if choice is not None and (
                found is None or choice.ledger_sequence > found.ledger_sequence
            ):
                found = choice
        return found

    def judge(
        self,
        add: Callable[..., messages_pb2.UserEligibility],
        user_id: str,
        choices: Choices,
        devices: Sequence[DeviceSummary],
        preferences: resources_pb2.Preferences | None,
        suppression: Suppression | None,
    ) -> messages_pb2.UserEligibility:
        """One user's eligibility, every input already loaded, as a new message made by
        ``add`` (typically ``response.users.add``: made in place, nothing copied), built
        from its field values in one call rather than field by field."""
        marketing = self.marketing
        suppressed = suppression is not None and suppression.lifted_at is None
        choice = choices.get(self.all_key)
        all_out = choice is not None and choice.action is OPT_OUT
        choice = choices.get(self.channel_key)
        channel_out = choice is not None and choice.action is OPT_OUT
        choice = self._later(choices, self.category_keys)
        if choice is not None and choice.action is OPT_IN:
            category_allowed, category_default = True, False
        elif choice is not None and self.can_opt_out:
            category_allowed, category_default = False, False
        else:
            category_allowed, category_default = self.default_allowed, True
        reasons: list[int] = []
        if marketing and suppressed:
            reasons.append(R.REASON_CODE_SUPPRESSED)
        if marketing and (channel_out or all_out):
            reasons.append(R.REASON_CODE_OPTED_OUT)
        if not category_allowed:
            reasons.append(R.REASON_CODE_CATEGORY_OPTED_OUT)
        consent: dict[str, Any] = {
            "category_id": self.category_id,
            "category_allowed": category_allowed,
            "category_default": category_default,
        }
        fields: dict[str, Any] = {"user_id": user_id, "consent": consent}
        if self.topic_keys:
            topic_choice = self._later(choices, self.topic_keys)
            subscribed = topic_choice is not None and topic_choice.action is OPT_IN
            fields["topic_state"] = (
                messages_pb2.TOPIC_STATE_SUBSCRIBED
                if subscribed
                else messages_pb2.TOPIC_STATE_NOT_SUBSCRIBED
            )
            if not subscribed and self.can_opt_out:
                reasons.append(R.REASON_CODE_TOPIC_OPTED_OUT)
            consent["topic_id"] = self.topic_id
            consent["topic_subscribed"] = subscribed
        usable = 0
        active = invalid = 0
        device_zone = ""
        listed: list[dict[str, Any]] = []
        for device in devices:  # newest registration first
            status = device.status
            if status is ACTIVE:
                active += 1
                if not device_zone:
                    device_zone = device.time_zone
                if device.permission in PUSHABLE:
                    usable += 1
                    if usable <= MAX_DEVICES_PER_USER:
                        listed.append(device.usable_fields())
            elif status is INVALID:
                invalid += 1
        if active and not usable:
            reasons.append(R.REASON_CODE_NO_PERMISSION)
        if not usable:
            reasons.append(R.REASON_CODE_NO_DEVICE)
        if listed:
            fields["devices"] = listed
        if reasons:
            fields["reason"] = reasons[0]
            fields["reasons"] = reasons
        else:
            fields["allowed"] = True
        if preferences is not None and preferences.time_zone_override:
            fields["time_zone"] = preferences.time_zone_override
            fields["time_zone_source"] = R.TIME_ZONE_SOURCE_PROFILE
        elif device_zone:
            fields["time_zone"] = device_zone
            fields["time_zone_source"] = R.TIME_ZONE_SOURCE_DEVICE
        else:
            fields["time_zone_source"] = R.TIME_ZONE_SOURCE_NONE
        if all_out:
            consent["marketing_opted_out"] = True
        if channel_out:
            consent["channel_opted_out"] = True
        if suppression is not None:
            # Erased "right now": nothing of the user id since the erasure. Once it
            # registers a device (or records a choice or preferences) again it is a user
            # again: transactional sends go, marketing stays SUPPRESSED until it opts in.
            if not (choices or devices or preferences is not None):
                consent["erased"] = True
            consent["suppressed"] = suppressed
        if choice is not None:
            consent["recorded_at"] = self._stamp(choice.recorded_at)
        # Always set, even when every count is 0 (as the consent facts are).
        fields["device_counts"] = {
            "usable": usable,
            "without_permission": active - usable,
            "invalidated": invalid,
        }
        fields["known_user"] = bool(choices or devices or preferences is not None or suppression)
        if preferences is not None:
            if preferences.HasField("quiet_hours"):
                fields["quiet_hours"] = preferences.quiet_hours
            if preferences.HasField("frequency"):
                fields["frequency"] = preferences.frequency
        return add(**fields)

    def _stamp(self, instant: datetime) -> Timestamp:
        """``instant`` as a Timestamp, converted once per batch."""
        stamp = self._stamps.get(instant)
        if stamp is None:
            stamp = self._stamps[instant] = Timestamp()
            stamp.FromDatetime(instant)
        return stamp


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
    return BatchJudge(category, query).judge(
        messages_pb2.UserEligibility, user_id, choices, devices, preferences, suppression
    )


class EligibilityHandlers:
    """Batch eligibility."""

    def __init__(self, deps: ConsentDeps) -> None:
        self._deps = deps

    async def check(self, query: EligibilityQuery) -> messages_pb2.CheckEligibilityResponse:
        """Answer every user of the batch, in request order."""
        deps = self._deps
        subjects = {user: deps.pseudonyms.subject(query.app_id, user) for user in query.user_ids}
        async with deps.uow(read_only=True, snapshot=True) as work:
            found = await work.categories.get_with_ledger_head(query.app_id, query.category_id)
            if found is None:
                raise InvalidArgument(
                    f"unknown category {query.category_id!r}",
                    [("category_id", "no category of the app has this id")],
                    reason="UNKNOWN_REFERENCE",
                )
            category, as_of = found
            choices = await work.choices.of_users(query.app_id, query.user_ids)
            devices = await work.devices.summaries_of_users(query.app_id, query.user_ids)
            preferences = await work.preferences.of_users(query.app_id, query.user_ids)
            suppressions = await work.suppressions.of_subjects(
                query.app_id, list(subjects.values())
            )
        response = messages_pb2.CheckEligibilityResponse(
            category_kind=category.kind.to_proto(),
            as_of_sequence=as_of,
            category=category.to_proto(),
        )
        judge = BatchJudge(category, query).judge
        add = response.users.add
        for user in query.user_ids:
            judge(
                add,
                user,
                choices.get(user, {}),
                devices.get(user, []),
                preferences.get(user),
                suppressions.get(subjects[user]),
            )
        return response
