"""UpsertProfiles, GetProfiles, TrackEvents and StreamEvents: what comes in, what a
template reads back, and the stream out."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Final

from pushwarden.common.v1 import types_pb2
from pushwarden.runtime.auth import require_app
from pushwarden.runtime.validation import Violations
from pushwarden.segmentation.v1 import messages_pb2, segmentation_pb2_grpc
from pushwarden.services.segmentation.domain.events import (
    check_event_name,
    decode_cursor,
    tracked_events_from_proto,
)
from pushwarden.services.segmentation.domain.profiles import profile_changes_from_proto
from pushwarden.services.segmentation.domain.values import check_name, to_timestamp
from pushwarden.services.segmentation.handlers.events import EventHandlers, stored_event_proto
from pushwarden.services.segmentation.handlers.profiles import ProfileHandlers, ProfileReads
from pushwarden.services.segmentation.rpc.context import Context

DEFAULT_STREAM_BATCH: Final = 500
MAX_STREAM_BATCH: Final = 5000
MAX_STREAM_NAMES: Final = 100
MAX_PROFILE_READS: Final = 1000
MAX_LATEST_EVENT_NAMES: Final = 20
ITEM_STATUS: Final = {
    "APPLIED": types_pb2.ITEM_STATUS_APPLIED,
    "UNCHANGED": types_pb2.ITEM_STATUS_UNCHANGED,
    "REJECTED": types_pb2.ITEM_STATUS_REJECTED,
}


class IngestRpcs(segmentation_pb2_grpc.SegmentationServiceServicer):
    """Profiles and events in, the event stream out."""

    _profiles: ProfileHandlers
    _events: EventHandlers
    _profile_reads: ProfileReads

    async def UpsertProfiles(
        self, request: messages_pb2.UpsertProfilesRequest, context: Context
    ) -> messages_pb2.UpsertProfilesResponse:
        """Create or partially update up to 1,000 profiles, answered per item."""
        require_app(request.app_id)
        changes = profile_changes_from_proto(request)
        outcomes = await self._profiles.upsert(request.app_id, changes)
        return messages_pb2.UpsertProfilesResponse(
            results=[
                types_pb2.ItemResult(
                    id=o.user_id, status=ITEM_STATUS[o.status], field=o.field, message=o.message
                )
                for o in outcomes
            ]
        )

    async def GetProfiles(
        self, request: messages_pb2.GetProfilesRequest, context: Context
    ) -> messages_pb2.GetProfilesResponse:
        """Profiles and latest events of up to 1,000 users, in request order."""
        require_app(request.app_id)
        problems = Violations()
        problems.caller_id("app_id", request.app_id)
        users = problems.caller_ids("user_ids", request.user_ids, limit=MAX_PROFILE_READS)
        for index, name in enumerate(request.attribute_names):
            check_name(problems, f"attribute_names[{index}]", name)
        if len(request.latest_event_names) > MAX_LATEST_EVENT_NAMES:
            problems.add("latest_event_names", f"at most {MAX_LATEST_EVENT_NAMES}")
        for index, name in enumerate(request.latest_event_names):
            check_event_name(problems, f"latest_event_names[{index}]", name)
        problems.raise_if_any()
        found = await self._profile_reads.get(
            request.app_id,
            users,
            list(request.attribute_names),
            list(dict.fromkeys(request.latest_event_names)),
        )
        reply = messages_pb2.GetProfilesResponse()
        for item in found:
            user = reply.users.add(user_id=item.user_id, found=item.profile is not None)
            if item.profile is not None:
                user.profile.user_id = item.user_id
                for name, value in item.attributes.items():
                    user.profile.attributes[name].CopyFrom(value.to_proto())
                user.profile.created_at.CopyFrom(to_timestamp(item.profile.created_at))
                user.profile.updated_at.CopyFrom(to_timestamp(item.profile.updated_at))
            user.latest_events.extend(stored_event_proto(e) for e in item.latest_events)
        return reply

    async def TrackEvents(
        self, request: messages_pb2.TrackEventsRequest, context: Context
    ) -> messages_pb2.TrackEventsResponse:
        """Record up to 1,000 events, answered per item."""
        require_app(request.app_id)
        events = tracked_events_from_proto(request)
        outcomes = await self._events.track(request.app_id, events)
        return messages_pb2.TrackEventsResponse(
            results=[
                types_pb2.ItemResult(
                    id=o.event_id, status=ITEM_STATUS[o.status], field=o.field, message=o.message
                )
                for o in outcomes
            ]
        )

    async def StreamEvents(
        self, request: messages_pb2.StreamEventsRequest, context: Context
    ) -> AsyncIterator[messages_pb2.StreamEventsResponse]:
        """The event stream from a cursor (see the handler for the guarantees)."""
        require_app(request.app_id)
        problems = Violations()
        problems.caller_id("app_id", request.app_id, required=False)
        cursor = None
        if request.cursor:
            cursor = decode_cursor(request.cursor, request.app_id)
            if cursor is None:
                problems.add("cursor", "not a cursor of this stream (or made for another app_id)")
        if len(request.event_names) > MAX_STREAM_NAMES:
            problems.add("event_names", f"at most {MAX_STREAM_NAMES}")
        for index, name in enumerate(request.event_names):
            check_event_name(problems, f"event_names[{index}]", name)
        if request.max_batch_size < 0:
            problems.add("max_batch_size", "must not be negative")
        problems.raise_if_any()
        batch = min(request.max_batch_size or DEFAULT_STREAM_BATCH, MAX_STREAM_BATCH)
        start = await self._events.start_sequence(cursor, request.from_head)
        async for message in self._events.stream(
            request.app_id,
            start,
            set(request.event_names),
            batch,
            stop_at_head=request.stop_at_head,
            announce=cursor is None and request.from_head,
        ):
            yield message
