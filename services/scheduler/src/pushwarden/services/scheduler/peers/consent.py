"""Calls to consent: category kinds (cached for ever: kinds are immutable) and batch
eligibility (never cached: an opt-out must be seen by the very next decision)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import grpc

from pushwarden.common.v1 import types_pb2
from pushwarden.consent.v1 import consent_pb2, consent_pb2_grpc, messages_pb2, resources_pb2
from pushwarden.services.scheduler.peers import PeerUnavailable

CONSENT_SERVICE = consent_pb2.DESCRIPTOR.services_by_name["ConsentService"]
ELIGIBILITY_BATCH = 1000  # CheckEligibility's limit of distinct users per call

_KIND_NAMES = {
    types_pb2.CATEGORY_KIND_TRANSACTIONAL: "TRANSACTIONAL",
    types_pb2.CATEGORY_KIND_MARKETING: "MARKETING",
}


class UnknownCategory(Exception):
    """Consent does not know the category (or refused the request for it)."""


@dataclass(frozen=True, slots=True)
class Eligibility:
    """One category's answer for a batch of users: the category's registered kind
    (``TRANSACTIONAL`` or ``MARKETING``), whether its users may opt out, and each
    user's facts by user id."""

    kind: str
    opt_out_allowed: bool
    users: dict[str, messages_pb2.UserEligibility]


class ConsentPeer:
    """Consent over one channel, with a deadline per call."""

    def __init__(self, channel: grpc.aio.Channel, timeout_s: float) -> None:
        self._stub = consent_pb2_grpc.ConsentServiceStub(channel)
        self._timeout = timeout_s
        self._kinds: dict[tuple[str, str], str] = {}

    async def kinds(self, app_id: str, category_ids: Sequence[str]) -> dict[str, str]:
        """``TRANSACTIONAL`` or ``MARKETING`` for each category consent knows, by id;
        unknown ids are left out. An answer is kept for the life of the process."""
        missing = sorted({c for c in category_ids if (app_id, c) not in self._kinds})
        for start in range(0, len(missing), 1000):
            try:
                answer = await self._stub.BatchGetCategories(
                    messages_pb2.BatchGetCategoriesRequest(
                        app_id=app_id, category_ids=missing[start : start + 1000]
                    ),
                    timeout=self._timeout,
                )
            except grpc.aio.AioRpcError as error:
                raise PeerUnavailable.of("consent", error) from error
            for category in answer.categories:
                kind = _KIND_NAMES.get(category.kind)
                if kind is not None:
                    self._kinds[(app_id, category.category_id)] = kind
        return {c: self._kinds[(app_id, c)] for c in category_ids if (app_id, c) in self._kinds}

    async def eligibility(
        self, app_id: str, category_id: str, topic_id: str, user_ids: Sequence[str]
    ) -> Eligibility:
        """Each user's consent facts, devices, zone and preferences for the category:
        one CheckEligibility call per 1,000 distinct users. A category consent does not
        know raises :class:`UnknownCategory`."""
        distinct = list(dict.fromkeys(user_ids))
        answers: dict[str, messages_pb2.UserEligibility] = {}
        category = resources_pb2.Category()
        for start in range(0, len(distinct), ELIGIBILITY_BATCH):
            try:
                answer = await self._stub.CheckEligibility(
                    messages_pb2.CheckEligibilityRequest(
                        app_id=app_id,
                        category_id=category_id,
                        topic_id=topic_id,
                        user_ids=distinct[start : start + ELIGIBILITY_BATCH],
                        channel=types_pb2.CHANNEL_PUSH,
                    ),
                    timeout=self._timeout,
                )
            except grpc.aio.AioRpcError as error:
                if error.code() == grpc.StatusCode.INVALID_ARGUMENT:
                    raise UnknownCategory(error.details() or category_id) from error
                raise PeerUnavailable.of("consent", error) from error
            answers.update((user.user_id, user) for user in answer.users)
            category = answer.category
        kind = _KIND_NAMES.get(category.kind, "")
        if kind:
            self._kinds[(app_id, category_id)] = kind
        return Eligibility(
            kind=kind,
            opt_out_allowed=category.user_can_opt_out
            if category.HasField("user_can_opt_out")
            else kind == "MARKETING",
            users=answers,
        )

    async def erasures(self, app_id: str, user_ids: Sequence[str]) -> dict[str, datetime]:
        """When each of the users was last erased (users never erased are left out)."""
        try:
            answer = await self._stub.CheckErasure(
                messages_pb2.CheckErasureRequest(app_id=app_id, user_ids=list(user_ids)),
                timeout=self._timeout,
            )
        except grpc.aio.AioRpcError as error:
            raise PeerUnavailable.of("consent", error) from error
        return {
            user.user_id: user.erased_at.ToDatetime(UTC)
            for user in answer.users
            if user.HasField("erased_at")
        }
