"""Delivery's side of the consent contract: category kinds, eligibility, dead tokens.

Delivery calls consent for three things only, each in batches: the kind of each
category a send names (immutable, so cached for the life of the process), the
eligibility and usable devices of a batch's users right before the provider call, and
the report of a token a provider declared dead. Every call has a deadline; a failed
call raises :class:`ConsentUnavailable` and the caller retries later.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import grpc

from pushwarden.common.v1 import types_pb2
from pushwarden.consent.v1 import consent_pb2, consent_pb2_grpc, messages_pb2, resources_pb2
from pushwarden.services.delivery.domain.sends import Kind, timestamp

CONSENT_SERVICE = consent_pb2.DESCRIPTOR.services_by_name["ConsentService"]

# Provider reasons that name why a token died, as consent records it.
_INVALIDATION_REASONS: dict[str, resources_pb2.InvalidationReason.ValueType] = {
    "Unregistered": resources_pb2.INVALIDATION_REASON_UNREGISTERED,
    "UNREGISTERED": resources_pb2.INVALIDATION_REASON_UNREGISTERED,
    "BadDeviceToken": resources_pb2.INVALIDATION_REASON_BAD_DEVICE_TOKEN,
    "INVALID_ARGUMENT": resources_pb2.INVALIDATION_REASON_BAD_DEVICE_TOKEN,
    "DeviceTokenNotForTopic": resources_pb2.INVALIDATION_REASON_TOKEN_NOT_FOR_TOPIC,
    "ExpiredToken": resources_pb2.INVALIDATION_REASON_EXPIRED_TOKEN,
}


class ConsentUnavailable(Exception):
    """Consent did not answer in time or refused for a reason worth retrying."""


class UnknownCategory(Exception):
    """Consent does not know the category a send names."""


class ConsentPeer:
    """Calls to the consent service over one channel, with a deadline each."""

    def __init__(self, channel: grpc.aio.Channel, timeout_s: float) -> None:
        self._stub = consent_pb2_grpc.ConsentServiceStub(channel)
        self._timeout = timeout_s
        self._kinds: dict[tuple[str, str], Kind] = {}

    async def kinds(self, app_id: str, category_ids: Sequence[str]) -> dict[str, Kind]:
        """The kind of each category consent knows, by id (unknown ones are left out).
        Kinds never change, so an answer is kept for the life of the process."""
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
                raise ConsentUnavailable(_describe(error)) from error
            for category in answer.categories:
                kind = Kind.from_proto(category.kind)
                if kind is not None:
                    self._kinds[(app_id, category.category_id)] = kind
        return {c: self._kinds[(app_id, c)] for c in category_ids if (app_id, c) in self._kinds}

    async def eligibility(
        self, app_id: str, category_id: str, topic_id: str, user_ids: Sequence[str]
    ) -> dict[str, messages_pb2.UserEligibility]:
        """Each user's eligibility and usable devices for the category, from one
        snapshot of consent (one call for up to 1,000 distinct users)."""
        try:
            answer = await self._stub.CheckEligibility(
                messages_pb2.CheckEligibilityRequest(
                    app_id=app_id,
                    category_id=category_id,
                    topic_id=topic_id,
                    user_ids=list(user_ids),
                    channel=types_pb2.CHANNEL_PUSH,
                ),
                timeout=self._timeout,
            )
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.INVALID_ARGUMENT:
                raise UnknownCategory(_describe(error)) from error
            raise ConsentUnavailable(_describe(error)) from error
        return {user.user_id: user for user in answer.users}

    async def erasures(self, app_id: str, user_ids: Sequence[str]) -> dict[str, datetime]:
        """When each of the users was last erased (users never erased are left out)."""
        try:
            answer = await self._stub.CheckErasure(
                messages_pb2.CheckErasureRequest(app_id=app_id, user_ids=list(user_ids)),
                timeout=self._timeout,
            )
        except grpc.aio.AioRpcError as error:
            raise ConsentUnavailable(_describe(error)) from error
        return {
            user.user_id: user.erased_at.ToDatetime(UTC)
            for user in answer.users
            if user.HasField("erased_at")
        }

    async def invalidate(
        self,
        *,
        app_id: str,
        device_id: str,
        provider: int,
        reason: str,
        at: datetime | None,
        send_id: str,
    ) -> None:
        """Tell consent a provider declared the device's token dead at ``at``. A device
        consent no longer knows (erased, never registered) needs nothing more."""
        try:
            await self._stub.InvalidateDevice(
                messages_pb2.InvalidateDeviceRequest(
                    app_id=app_id,
                    device_id=device_id,
                    provider=types_pb2.Provider.ValueType(provider),
                    reason=_INVALIDATION_REASONS.get(
                        reason, resources_pb2.INVALIDATION_REASON_OTHER
                    ),
                    provider_detail=reason,
                    provider_timestamp=timestamp(at),
                    send_id=send_id,
                ),
                timeout=self._timeout,
            )
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.NOT_FOUND:
                return
            raise ConsentUnavailable(_describe(error)) from error


def _describe(error: grpc.aio.AioRpcError) -> str:
    return f"consent answered {error.code().name}: {error.details()}"
