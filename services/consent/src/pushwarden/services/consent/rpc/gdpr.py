"""ExportUserData, EraseUser, CheckErasure."""

from __future__ import annotations

from pushwarden.consent.v1 import consent_pb2_grpc, messages_pb2
from pushwarden.runtime.auth import require_app
from pushwarden.runtime.validation import Violations, decode_page_token, encode_page_token
from pushwarden.services.consent.domain.consent import ACTOR_TYPES
from pushwarden.services.consent.handlers.gdpr import GdprHandlers
from pushwarden.services.consent.rpc.context import Context

DEFAULT_EXPORT_PAGE = 1000
MAX_EXPORT_PAGE = 10_000
MAX_CHECK_ERASURE = 1000


class GdprRpcs(consent_pb2_grpc.ConsentServiceServicer):
    """Export and erasure."""

    _gdpr: GdprHandlers

    async def ExportUserData(
        self, request: messages_pb2.ExportUserDataRequest, context: Context
    ) -> messages_pb2.ExportUserDataResponse:
        """Everything consent holds about a user, paged."""
        require_app(request.app_id)
        problems = Violations()
        problems.caller_id("app_id", request.app_id)
        problems.caller_id("user_id", request.user_id)
        if request.page_size < 0:
            problems.add("page_size", "must not be negative")
        size = min(request.page_size or DEFAULT_EXPORT_PAGE, MAX_EXPORT_PAGE)
        filters = {"app_id": request.app_id, "user_id": request.user_id}
        cursor = decode_page_token(request.page_token, filters, problems)
        position = (0, 0)
        if cursor is not None:
            try:
                position = (int(cursor.after[0]), int(cursor.after[1]))
            except (ValueError, IndexError):
                problems.add("page_token", "not a page token of this export")
        problems.raise_if_any()
        page = await self._gdpr.export(request.app_id, request.user_id, position, size)
        token = ""
        if page.next_position is not None:
            token = encode_page_token([str(p) for p in page.next_position], filters)
        return messages_pb2.ExportUserDataResponse(export=page.export, next_page_token=token)

    async def EraseUser(
        self, request: messages_pb2.EraseUserRequest, context: Context
    ) -> messages_pb2.EraseUserResponse:
        """Erase a user; the suppression record stays."""
        require_app(request.app_id)
        problems = Violations()
        problems.caller_id("app_id", request.app_id)
        problems.caller_id("user_id", request.user_id)
        problems.enum("actor_type", request.actor_type, ACTOR_TYPES, required=False)
        problems.raise_if_any()
        return await self._gdpr.erase(request.app_id, request.user_id)

    async def CheckErasure(
        self, request: messages_pb2.CheckErasureRequest, context: Context
    ) -> messages_pb2.CheckErasureResponse:
        """Erasure state of up to 1,000 user ids."""
        require_app(request.app_id)
        problems = Violations()
        problems.caller_id("app_id", request.app_id)
        users = problems.caller_ids("user_ids", request.user_ids, limit=MAX_CHECK_ERASURE)
        problems.raise_if_any()
        return await self._gdpr.check_erasure(request.app_id, users)
