"""Calls to segmentation: the segments and lists a campaign names, its audience as a
stream of pages, due-time membership and suppression checks, and profile values for
templates, and the event stream triggers follow."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime

import grpc

from pushwarden.segmentation.v1 import (
    messages_pb2,
    resources_pb2,
    segmentation_pb2,
    segmentation_pb2_grpc,
)
from pushwarden.services.scheduler.peers import PeerUnavailable

SEGMENTATION_SERVICE = segmentation_pb2.DESCRIPTOR.services_by_name["SegmentationService"]
MEMBERSHIP_BATCH = 1000  # CheckMembership's limit of users per call
# A user id no one has: asking about it answers only which ids are unknown.
_PROBE_USER = "pushwarden-scheduler-probe"


@dataclass(frozen=True, slots=True)
class AudiencePage:
    """One page of an audience: members (ascending) and the resume point after them."""

    user_ids: list[str]
    cursor: str
    done: bool


class SegmentationPeer:
    """Segmentation over one channel, with a deadline per call."""

    def __init__(self, channel: grpc.aio.Channel, timeout_s: float) -> None:
        self._stub = segmentation_pb2_grpc.SegmentationServiceStub(channel)
        self._timeout = timeout_s

    async def segments(
        self, app_id: str, segment_ids: Sequence[str]
    ) -> dict[str, resources_pb2.Segment]:
        """The named segments that exist (deleted ones too, with ``deleted_at``)."""
        found: dict[str, resources_pb2.Segment] = {}
        for segment_id in dict.fromkeys(segment_ids):
            try:
                answer = await self._stub.GetSegment(
                    messages_pb2.GetSegmentRequest(app_id=app_id, segment_id=segment_id),
                    timeout=self._timeout,
                )
            except grpc.aio.AioRpcError as error:
                if error.code() == grpc.StatusCode.NOT_FOUND:
                    continue
                raise PeerUnavailable.of("segmentation", error) from error
            found[segment_id] = answer.segment
        return found

    async def unknown_lists(self, app_id: str, list_ids: Sequence[str]) -> set[str]:
        """Which of ``list_ids`` the app never had."""
        if not list_ids:
            return set()
        try:
            answer = await self._stub.CheckMembership(
                messages_pb2.CheckMembershipRequest(
                    app_id=app_id, user_ids=[_PROBE_USER], list_ids=list(dict.fromkeys(list_ids))
                ),
                timeout=self._timeout,
            )
        except grpc.aio.AioRpcError as error:
            raise PeerUnavailable.of("segmentation", error) from error
        return set(answer.unknown_list_ids)

    async def audience(
        self,
        app_id: str,
        rule: resources_pb2.Rule,
        *,
        cursor: str,
        as_of: datetime | None,
        page_size: int,
    ) -> AsyncIterator[AudiencePage]:
        """The members of ``rule``, page by page from ``cursor`` (empty: the start)."""
        request = messages_pb2.EvaluateSegmentRequest(
            app_id=app_id,
            target=messages_pb2.SegmentTarget(rule=rule),
            cursor=cursor,
            page_size=page_size,
        )
        if as_of is not None and not cursor:
            request.as_of.FromDatetime(as_of)
        try:
            async for page in self._stub.EvaluateSegment(request, timeout=self._timeout * 20):
                yield AudiencePage(list(page.user_ids), page.cursor, page.done)
        except grpc.aio.AioRpcError as error:
            raise PeerUnavailable.of("segmentation", error) from error

    async def memberships(
        self,
        app_id: str,
        user_ids: Sequence[str],
        *,
        segment_ids: Sequence[str] = (),
        list_ids: Sequence[str] = (),
        suppression: bool = False,
    ) -> dict[str, messages_pb2.UserMembership]:
        """Each user's memberships of the segments and lists (and, with
        ``suppression``, the app's suppression lists they are on): one call per 1,000."""
        distinct = list(dict.fromkeys(user_ids))
        found: dict[str, messages_pb2.UserMembership] = {}
        for start in range(0, len(distinct), MEMBERSHIP_BATCH):
            try:
                answer = await self._stub.CheckMembership(
                    messages_pb2.CheckMembershipRequest(
                        app_id=app_id,
                        user_ids=distinct[start : start + MEMBERSHIP_BATCH],
                        segment_ids=list(segment_ids),
                        list_ids=list(list_ids),
                        include_suppression_lists=suppression,
                    ),
                    timeout=self._timeout,
                )
            except grpc.aio.AioRpcError as error:
                raise PeerUnavailable.of("segmentation", error) from error
            found.update((user.user_id, user) for user in answer.users)
        return found

    async def profiles(
        self,
        app_id: str,
        user_ids: Sequence[str],
        *,
        attribute_names: Sequence[str],
        latest_event_names: Sequence[str] = (),
    ) -> dict[str, messages_pb2.UserProfile]:
        """Profile attributes (and latest events) of the users, for templates."""
        distinct = list(dict.fromkeys(user_ids))
        found: dict[str, messages_pb2.UserProfile] = {}
        for start in range(0, len(distinct), MEMBERSHIP_BATCH):
            try:
                answer = await self._stub.GetProfiles(
                    messages_pb2.GetProfilesRequest(
                        app_id=app_id,
                        user_ids=distinct[start : start + MEMBERSHIP_BATCH],
                        attribute_names=list(attribute_names),
                        latest_event_names=list(latest_event_names),
                    ),
                    timeout=self._timeout,
                )
            except grpc.aio.AioRpcError as error:
                raise PeerUnavailable.of("segmentation", error) from error
            found.update((user.user_id, user) for user in answer.users)
        return found

    def stream_events(
        self, cursor: str, *, from_head: bool, batch: int, timeout_s: float
    ) -> grpc.aio.UnaryStreamCall[
        messages_pb2.StreamEventsRequest, messages_pb2.StreamEventsResponse
    ]:
        """Every app's events after ``cursor`` in commit order (``from_head`` with an
        empty cursor: only events committed after the call, announced by a first empty
        caught-up message). The caller iterates the call, cancels it to stop, and sees
        ``grpc.aio.AioRpcError`` (OUT_OF_RANGE: the cursor outlived the retention)."""
        return self._stub.StreamEvents(
            messages_pb2.StreamEventsRequest(
                cursor=cursor, from_head=from_head and not cursor, max_batch_size=batch
            ),
            timeout=timeout_s,
        )
