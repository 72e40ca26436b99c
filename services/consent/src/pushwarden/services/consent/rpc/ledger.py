"""GetLedger and WatchChanges: the two histories."""

from __future__ import annotations

from collections.abc import AsyncIterator

from pushwarden.consent.v1 import consent_pb2_grpc, messages_pb2
from pushwarden.runtime.auth import require_app
from pushwarden.runtime.feed import decode_cursor
from pushwarden.runtime.validation import Violations, decode_page_token, encode_page_token
from pushwarden.services.consent.domain.changes import ChangeKind
from pushwarden.services.consent.handlers.feed import FeedHandlers
from pushwarden.services.consent.handlers.ledger import LedgerHandlers
from pushwarden.services.consent.rpc.context import Context

MAX_LEDGER_PAGE = 1000
DEFAULT_FEED_BATCH = 500
MAX_FEED_BATCH = 5000


class HistoryRpcs(consent_pb2_grpc.ConsentServiceServicer):
    """The ledger and the change feed."""

    _ledger: LedgerHandlers
    _feed: FeedHandlers

    async def GetLedger(
        self, request: messages_pb2.GetLedgerRequest, context: Context
    ) -> messages_pb2.GetLedgerResponse:
        """A page of a user's ledger, with the whole chain's verification."""
        require_app(request.app_id)
        problems = Violations()
        problems.caller_id("app_id", request.app_id)
        problems.caller_id("user_id", request.user_id)
        size = problems.page_size("page_size", request.page_size, maximum=MAX_LEDGER_PAGE)
        filters = {"app_id": request.app_id, "user_id": request.user_id}
        cursor = decode_page_token(request.page_token, filters, problems)
        after = 0
        if cursor is not None:
            try:
                after = int(cursor.after[0])
            except (ValueError, IndexError):
                problems.add("page_token", "not a page token of this list")
        problems.raise_if_any()
        page = await self._ledger.page(request.app_id, request.user_id, after, size)
        return messages_pb2.GetLedgerResponse(
            entries=page.entries,
            next_page_token=(
                encode_page_token([str(page.last_sequence)], filters)
                if page.last_sequence is not None
                else ""
            ),
            subject=page.subject,
            verification=page.verification,
        )

    async def WatchChanges(
        self, request: messages_pb2.WatchChangesRequest, context: Context
    ) -> AsyncIterator[messages_pb2.WatchChangesResponse]:
        """The change feed from a cursor (see the handler for the guarantees)."""
        require_app(request.app_id)
        problems = Violations()
        problems.caller_id("app_id", request.app_id, required=False)
        cursor = None
        if request.cursor:
            cursor = decode_cursor(request.cursor, request.app_id)
            if cursor is None:
                problems.add("cursor", "not a cursor of this feed (or made for another app_id)")
        kinds: set[str] = set()
        for index, value in enumerate(request.kinds):
            kind = ChangeKind.from_proto(value)
            if kind is None:
                problems.add(f"kinds[{index}]", f"unknown change kind {value}")
            else:
                kinds.add(kind.value)
        if request.max_batch_size < 0:
            problems.add("max_batch_size", "must not be negative")
        problems.raise_if_any()
        batch = min(request.max_batch_size or DEFAULT_FEED_BATCH, MAX_FEED_BATCH)
        start = await self._feed.start_sequence(cursor, request.from_head)
        async for message in self._feed.watch(
            request.app_id,
            start,
            kinds,
            batch,
            stop_at_head=request.stop_at_head,
            announce=cursor is None and request.from_head,
        ):
            yield message
