"""GetCampaignStats, GetOpenHours and ExportUserData."""

from __future__ import annotations

from datetime import datetime
from typing import Final

from pushwarden.delivery.v1 import delivery_pb2_grpc, messages_pb2
from pushwarden.runtime.auth import require_app
from pushwarden.runtime.validation import Violations, decode_page_token, encode_page_token
from pushwarden.services.delivery.domain.engagement import check_campaign_stats, check_open_hours
from pushwarden.services.delivery.domain.sends import timestamp
from pushwarden.services.delivery.handlers.stats import ExportCursor, StatsHandlers
from pushwarden.services.delivery.rpc.context import Context

DEFAULT_EXPORT_PAGE: Final = 1000
MAX_EXPORT_PAGE: Final = 10_000

_Position = tuple[datetime, str] | str | None


class StatsRpcs(delivery_pb2_grpc.DeliveryServiceServicer):
    """The read-only statistics and export RPCs."""

    _stats: StatsHandlers

    async def GetCampaignStats(
        self, request: messages_pb2.GetCampaignStatsRequest, context: Context
    ) -> messages_pb2.GetCampaignStatsResponse:
        """A campaign's or trigger's figures with the holdout lift."""
        require_app(request.app_id)
        subject, window = check_campaign_stats(request)
        stats = await self._stats.campaign_stats(request.app_id, subject, window)
        return stats.to_proto()

    async def GetOpenHours(
        self, request: messages_pb2.GetOpenHoursRequest, context: Context
    ) -> messages_pb2.GetOpenHoursResponse:
        """Opens by hour of day for a batch of users and for the whole app."""
        require_app(request.app_id)
        users, lookback = check_open_hours(request)
        hours = await self._stats.open_hours(request.app_id, users, lookback)
        return messages_pb2.GetOpenHoursResponse(
            users=[
                messages_pb2.UserOpenHours(
                    user_id=user_id, opens_by_utc_hour=hours.by_user[user_id]
                )
                for user_id in users
            ],
            app_opens_by_utc_hour=hours.app_by_utc_hour,
            app_opens_by_local_hour=hours.app_by_local_hour,
        )

    async def ExportUserData(
        self, request: messages_pb2.ExportUserDataRequest, context: Context
    ) -> messages_pb2.ExportUserDataResponse:
        """A page of the user's deliveries and engagement events, oldest first."""
        require_app(request.app_id)
        problems = Violations()
        problems.caller_id("app_id", request.app_id)
        problems.caller_id("user_id", request.user_id)
        if request.page_size < 0:
            problems.add("page_size", "must not be negative")
        size = min(request.page_size or DEFAULT_EXPORT_PAGE, MAX_EXPORT_PAGE)
        filters = {"app_id": request.app_id, "user_id": request.user_id}
        cursor = ExportCursor()
        token = decode_page_token(request.page_token, filters, problems)
        if token is not None:
            try:
                cursor = ExportCursor(
                    deliveries=_position(token.after[0:3]), engagement=_position(token.after[3:6])
                )
            except (ValueError, IndexError):
                problems.add("page_token", "not a page token of this export")
        problems.raise_if_any()
        page = await self._stats.export(request.app_id, request.user_id, cursor, size)
        return messages_pb2.ExportUserDataResponse(
            deliveries=[record.to_proto() for record in page.deliveries],
            engagement=[event.to_proto() for event in page.engagement],
            exported_at=timestamp(page.exported_at),
            next_page_token=(
                encode_page_token(
                    [*_token_part(page.next.deliveries), *_token_part(page.next.engagement)],
                    filters,
                )
                if page.next is not None
                else ""
            ),
        )


def _token_part(position: _Position) -> tuple[str, str, str]:
    if position is None:
        return ("start", "", "")
    if isinstance(position, str):
        return ("done", "", "")
    return ("after", position[0].isoformat(), position[1])


def _position(part: tuple[str, ...]) -> _Position:
    state, at, key = part
    if state == "start":
        return None
    if state == "done":
        return "done"
    if state == "after":
        instant = datetime.fromisoformat(at)
        if instant.tzinfo is None:
            raise ValueError("a page token's instant carries its zone")
        return (instant, key)
    raise ValueError(f"unknown list state {state!r}")
