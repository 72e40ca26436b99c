"""ExportUserData: everything segmentation holds about a user, paged by events."""

from __future__ import annotations

from datetime import datetime
from typing import Final

from pushwarden.runtime.auth import require_app
from pushwarden.runtime.validation import Violations, decode_page_token, encode_page_token
from pushwarden.segmentation.v1 import messages_pb2, segmentation_pb2_grpc
from pushwarden.services.segmentation.domain.values import to_timestamp
from pushwarden.services.segmentation.handlers.events import stored_event_proto
from pushwarden.services.segmentation.handlers.gdpr import GdprHandlers
from pushwarden.services.segmentation.rpc.context import Context

DEFAULT_EXPORT_PAGE: Final = 1000
MAX_EXPORT_PAGE: Final = 10_000


class GdprRpcs(segmentation_pb2_grpc.SegmentationServiceServicer):
    """The data-subject RPCs."""

    _gdpr: GdprHandlers

    async def ExportUserData(
        self, request: messages_pb2.ExportUserDataRequest, context: Context
    ) -> messages_pb2.ExportUserDataResponse:
        """The profile, list memberships and a page of events of one user."""
        require_app(request.app_id)
        problems = Violations()
        problems.caller_id("app_id", request.app_id)
        problems.caller_id("user_id", request.user_id)
        if request.page_size < 0:
            problems.add("page_size", "must not be negative")
        size = min(request.page_size or DEFAULT_EXPORT_PAGE, MAX_EXPORT_PAGE)
        filters = {"app_id": request.app_id, "user_id": request.user_id}
        cursor = decode_page_token(request.page_token, filters, problems)
        after: tuple[datetime, int] | None = None
        if cursor is not None:
            try:
                after = (datetime.fromisoformat(cursor.after[0]), int(cursor.after[1]))
            except (ValueError, IndexError):
                problems.add("page_token", "not a page token of this export")
        problems.raise_if_any()
        export = await self._gdpr.export(request.app_id, request.user_id, after, size)
        reply = messages_pb2.ExportUserDataResponse(
            events=[stored_event_proto(event) for event in export.events],
            list_ids=export.list_ids,
            exported_at=to_timestamp(export.exported_at),
            next_page_token=(
                encode_page_token(
                    [export.next_after[0].isoformat(), str(export.next_after[1])], filters
                )
                if export.next_after is not None
                else ""
            ),
        )
        if export.profile is not None:
            reply.profile.user_id = request.user_id
            for name, value in export.attributes.items():
                reply.profile.attributes[name].CopyFrom(value.to_proto())
            reply.profile.created_at.CopyFrom(to_timestamp(export.profile.created_at))
            reply.profile.updated_at.CopyFrom(to_timestamp(export.profile.updated_at))
        return reply
