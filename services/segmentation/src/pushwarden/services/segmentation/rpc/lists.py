"""CreateList, ListLists, AddToList and RemoveFromList."""

from __future__ import annotations

from datetime import datetime
from typing import Final

from pushwarden.runtime.auth import require_app
from pushwarden.runtime.validation import Violations, decode_page_token, encode_page_token
from pushwarden.segmentation.v1 import messages_pb2, segmentation_pb2_grpc
from pushwarden.services.segmentation.domain.lists import (
    KNOWN_KINDS,
    MAX_PAGE_SIZE,
    ListKind,
    ListSpec,
    check_member_ids,
)
from pushwarden.services.segmentation.domain.values import from_timestamp, timestamp_problem
from pushwarden.services.segmentation.handlers.lists import ListHandlers
from pushwarden.services.segmentation.rpc.context import Context

_MEMBERS: Final = "user_ids"


class ListRpcs(segmentation_pb2_grpc.SegmentationServiceServicer):
    """The static-list RPCs."""

    _lists: ListHandlers

    async def CreateList(
        self, request: messages_pb2.CreateListRequest, context: Context
    ) -> messages_pb2.CreateListResponse:
        """Create a list (idempotent by id or key)."""
        require_app(request.app_id)
        spec = ListSpec.from_proto(request.app_id, request.list, request.idempotency_key)
        created = await self._lists.create(spec, request.idempotency_key)
        return messages_pb2.CreateListResponse(
            list=created.list.to_proto(), replayed=created.replayed
        )

    async def ListLists(
        self, request: messages_pb2.ListListsRequest, context: Context
    ) -> messages_pb2.ListListsResponse:
        """A page of the app's lists, ordered by id."""
        require_app(request.app_id)
        problems = Violations()
        problems.caller_id("app_id", request.app_id)
        problems.enum("kind", request.kind, KNOWN_KINDS, required=False)
        size = problems.page_size("page_size", request.page_size, maximum=MAX_PAGE_SIZE)
        filters = {"app_id": request.app_id, "kind": request.kind}
        cursor = decode_page_token(request.page_token, filters, problems)
        problems.raise_if_any()
        kind = ListKind.from_proto(request.kind) if request.kind else None
        lists, last = await self._lists.page(
            request.app_id, kind, cursor.after[0] if cursor else None, size
        )
        return messages_pb2.ListListsResponse(
            lists=[item.to_proto() for item in lists],
            next_page_token=encode_page_token([last], filters) if last is not None else "",
        )

    async def AddToList(
        self, request: messages_pb2.AddToListRequest, context: Context
    ) -> messages_pb2.AddToListResponse:
        """Add users to a list (last write wins per user)."""
        require_app(request.app_id)
        users, client_time = _membership_request(request)
        counts = await self._lists.set_membership(
            request.app_id, request.list_id, users, True, client_time
        )
        return messages_pb2.AddToListResponse(
            added=counts.changed, already_present=counts.unchanged, superseded=counts.superseded
        )

    async def RemoveFromList(
        self, request: messages_pb2.RemoveFromListRequest, context: Context
    ) -> messages_pb2.RemoveFromListResponse:
        """Remove users from a list (last write wins per user)."""
        require_app(request.app_id)
        users, client_time = _membership_request(request)
        counts = await self._lists.set_membership(
            request.app_id, request.list_id, users, False, client_time
        )
        return messages_pb2.RemoveFromListResponse(
            removed=counts.changed, not_present=counts.unchanged, superseded=counts.superseded
        )


def _membership_request(
    request: messages_pb2.AddToListRequest | messages_pb2.RemoveFromListRequest,
) -> tuple[list[str], datetime | None]:
    problems = Violations()
    problems.caller_id("app_id", request.app_id)
    problems.caller_id("list_id", request.list_id)
    users = check_member_ids(problems, _MEMBERS, list(request.user_ids))
    client_time = None
    if request.HasField("client_time"):
        problem = timestamp_problem(request.client_time)
        if problem:
            problems.add("client_time", problem)
        else:
            client_time = from_timestamp(request.client_time)
    problems.raise_if_any()
    return users, client_time
