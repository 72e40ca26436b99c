"""DefineCategory, ListCategories, BatchGetCategories."""

from __future__ import annotations

from pushwarden.common.v1 import types_pb2
from pushwarden.consent.v1 import consent_pb2_grpc, messages_pb2
from pushwarden.runtime.auth import require_app
from pushwarden.runtime.validation import Violations, decode_page_token, encode_page_token
from pushwarden.services.consent.domain.categories import (
    MAX_BATCH_GET,
    MAX_PAGE_SIZE,
    CategoryKind,
    CategorySpec,
)
from pushwarden.services.consent.handlers.categories import CategoryHandlers
from pushwarden.services.consent.rpc.context import Context

_KINDS = (types_pb2.CATEGORY_KIND_TRANSACTIONAL, types_pb2.CATEGORY_KIND_MARKETING)


class CategoryRpcs(consent_pb2_grpc.ConsentServiceServicer):
    """The category RPCs."""

    _categories: CategoryHandlers

    async def DefineCategory(
        self, request: messages_pb2.DefineCategoryRequest, context: Context
    ) -> messages_pb2.DefineCategoryResponse:
        """Create or update a category (its kind never changes)."""
        require_app(request.app_id)
        defined = await self._categories.define(
            CategorySpec.from_proto(request.app_id, request.category)
        )
        return messages_pb2.DefineCategoryResponse(
            category=defined.category.to_proto(), created=defined.created
        )

    async def BatchGetCategories(
        self, request: messages_pb2.BatchGetCategoriesRequest, context: Context
    ) -> messages_pb2.BatchGetCategoriesResponse:
        """Categories by id in request order; unknown ids are listed, not an error."""
        require_app(request.app_id)
        problems = Violations()
        problems.caller_id("app_id", request.app_id)
        ids = problems.caller_ids("category_ids", request.category_ids, limit=MAX_BATCH_GET)
        problems.raise_if_any()
        found = await self._categories.get_many(request.app_id, ids)
        return messages_pb2.BatchGetCategoriesResponse(
            categories=[found[i].to_proto() for i in ids if i in found],
            unknown_category_ids=[i for i in ids if i not in found],
        )

    async def ListCategories(
        self, request: messages_pb2.ListCategoriesRequest, context: Context
    ) -> messages_pb2.ListCategoriesResponse:
        """A page of the app's categories, ordered by id."""
        require_app(request.app_id)
        problems = Violations()
        problems.caller_id("app_id", request.app_id)
        problems.enum("kind", request.kind, _KINDS, required=False)
        size = problems.page_size("page_size", request.page_size, maximum=MAX_PAGE_SIZE)
        filters = {"app_id": request.app_id, "kind": request.kind}
        cursor = decode_page_token(request.page_token, filters, problems)
        problems.raise_if_any()
        kind = CategoryKind.from_proto(request.kind) if request.kind else None
        page = await self._categories.list(
            request.app_id, kind, cursor.after[0] if cursor else None, size
        )
        return messages_pb2.ListCategoriesResponse(
            categories=[category.to_proto() for category in page.categories],
            next_page_token=(
                encode_page_token([page.last_id], filters) if page.last_id is not None else ""
            ),
        )
