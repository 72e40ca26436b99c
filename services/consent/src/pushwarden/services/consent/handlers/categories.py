"""Category use cases: define (create or update), list, and look up in batches."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from pushwarden.consent.v1 import resources_pb2
from pushwarden.runtime.errors import FailedPrecondition
from pushwarden.services.consent.domain.categories import Category, CategoryKind, CategorySpec
from pushwarden.services.consent.domain.changes import ChangeKind
from pushwarden.services.consent.handlers.common import ConsentDeps, publish
from pushwarden.services.consent.storage.uow import ConsentUnitOfWork


@dataclass(frozen=True, slots=True)
class Defined:
    """What DefineCategory did."""

    category: Category
    created: bool


@dataclass(frozen=True, slots=True)
class Page:
    """One page of categories and the id the next page starts after (None: last page)."""

    categories: list[Category]
    last_id: str | None


class CategoryHandlers:
    """The category use cases."""

    def __init__(self, deps: ConsentDeps) -> None:
        self._deps = deps
        self._uow = deps.uow
        self._clock = deps.clock

    async def define(self, spec: CategorySpec) -> Defined:
        """Create the category, or update its mutable fields; a different kind for an
        existing id is FAILED_PRECONDITION (CATEGORY_KIND_IMMUTABLE) and changes nothing.
        Defining it again unchanged writes nothing (``updated_at`` stays). Every effective
        change is a CATEGORY change on the feed."""
        async with self._uow() as work:
            await work.lock_appends()
            now = self._clock.now()
            stored = await work.categories.get_for_update(spec.app_id, spec.category_id)
            if stored is None and await work.categories.insert(spec, now):
                created = Category.from_spec(spec, now, now)
                await self._publish(work, created, now)
                await work.commit()
                self._deps.signal.notify()
                return Defined(created, created=True)
            if stored is None:  # a concurrent define inserted it between our read and write
                stored = await work.categories.get_for_update(spec.app_id, spec.category_id)
                if stored is None:
                    raise LookupError("category neither inserted nor found")
            if stored.kind is not spec.kind:
                raise FailedPrecondition(
                    f"category {spec.category_id!r} is {stored.kind.value}; its kind never "
                    "changes (define a new category instead)",
                    [("CATEGORY_KIND_IMMUTABLE", f"categories/{spec.category_id}", "kind")],
                    reason="CATEGORY_KIND_IMMUTABLE",
                    metadata={"category_id": spec.category_id, "kind": stored.kind.value},
                )
            if stored.same_settings(spec):
                return Defined(stored, created=False)
            await work.categories.update_settings(spec, now)
            updated = Category.from_spec(spec, stored.created_at, now)
            await self._publish(work, updated, now)
            await work.commit()
            self._deps.signal.notify()
            return Defined(updated, created=False)

    async def _publish(self, work: ConsentUnitOfWork, category: Category, now: datetime) -> None:
        await publish(
            work,
            app_id=category.app_id,
            user_id="",
            kind=ChangeKind.CATEGORY,
            change=resources_pb2.Change(category=category.to_proto()),
            now=now,
        )

    async def list(
        self, app_id: str, kind: CategoryKind | None, after: str | None, size: int
    ) -> Page:
        """A page of the app's categories ordered by id."""
        async with self._uow(read_only=True) as work:
            found = await work.categories.list_page(app_id, kind, after, size + 1)
        more = len(found) > size
        page = found[:size]
        return Page(page, page[-1].category_id if more and page else None)

    async def get_many(self, app_id: str, category_ids: Sequence[str]) -> dict[str, Category]:
        """The requested categories that exist, by id."""
        async with self._uow(read_only=True) as work:
            return await work.categories.get_many(app_id, category_ids)
