"""Segments: create (idempotent by id or key; references checked, nothing written on bad
input), get, list, delete (hidden from new references, rules kept), and evaluation
inside the database: a page of members, a count, memberships of a batch of users."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Final

from pushwarden.runtime.errors import FailedPrecondition, NotFound
from pushwarden.runtime.validation import Violations
from pushwarden.segmentation.v1 import resources_pb2
from pushwarden.services.segmentation.domain.rules import Node, ParsedRule, parse_rule
from pushwarden.services.segmentation.domain.values import to_timestamp
from pushwarden.services.segmentation.handlers.common import (
    SegmentationDeps,
    id_taken,
    key_reused,
    new_id,
    request_digest,
)
from pushwarden.services.segmentation.storage.rules_sql import Scope
from pushwarden.services.segmentation.storage.segments import NewSegment, StoredSegment
from pushwarden.services.segmentation.storage.uow import SegmentationUnitOfWork

MAX_NAME_CHARS: Final = 256
MAX_DESCRIPTION_CHARS: Final = 1024
MAX_PAGE_SIZE: Final = 1000


@dataclass(frozen=True, slots=True)
class SegmentSpec:
    """A requested segment (CreateSegment's input, checked); an empty id is
    server-assigned."""

    app_id: str
    segment_id: str
    name: str
    description: str
    rule: resources_pb2.Rule
    parsed: ParsedRule

    @classmethod
    def from_proto(cls, app_id: str, proto: resources_pb2.Segment, key: str) -> SegmentSpec:
        """Check a requested segment; raises InvalidArgument naming every bad field (for
        the rule tree, the offending node's path)."""
        problems = Violations()
        problems.caller_id("app_id", app_id)
        problems.caller_id("segment.segment_id", proto.segment_id, required=False)
        problems.text("segment.name", proto.name, max_chars=MAX_NAME_CHARS, required=True)
        problems.text("segment.description", proto.description, max_chars=MAX_DESCRIPTION_CHARS)
        problems.caller_id("idempotency_key", key, required=False)
        parsed = None
        if problems.required("segment.rule", proto.HasField("rule")):
            parsed = parse_rule(proto.rule, "segment.rule", problems)
        problems.raise_if_any("the segment is invalid")
        assert parsed is not None
        return cls(app_id, proto.segment_id, proto.name, proto.description, proto.rule, parsed)

    def definition(self) -> resources_pb2.Segment:
        """What identifies a retry: the definition without output fields."""
        return resources_pb2.Segment(
            segment_id=self.segment_id,
            name=self.name,
            description=self.description,
            rule=self.rule,
        )


def segment_proto(segment: StoredSegment) -> resources_pb2.Segment:
    """A stored segment as the contract's Segment."""
    proto = resources_pb2.Segment(
        segment_id=segment.segment_id,
        name=segment.name,
        description=segment.description,
        rule=resources_pb2.Rule.FromString(segment.rule),
        referenced_segment_ids=segment.referenced_segment_ids,
        referenced_list_ids=segment.referenced_list_ids,
        created_at=to_timestamp(segment.created_at),
    )
    if segment.deleted_at is not None:
        proto.deleted_at.CopyFrom(to_timestamp(segment.deleted_at))
    return proto


def stored_rule(blob: bytes) -> Node:
    """The tree of a stored rule (checked when it was stored)."""
    problems = Violations()
    parsed = parse_rule(resources_pb2.Rule.FromString(blob), "rule", problems)
    if parsed is None:
        raise ValueError(f"a stored rule no longer parses: {problems.items}")
    return parsed.root


@dataclass(frozen=True, slots=True)
class Created:
    """What CreateSegment did."""

    segment: StoredSegment
    replayed: bool


@dataclass(frozen=True, slots=True)
class Evaluable:
    """A rule tree ready to run, with the rules of every segment it references."""

    root: Node
    segments: dict[str, Node]

    def scope(self, app_id: str, as_of: datetime, dialect: str) -> Scope:
        """The scope to compile it in."""
        return Scope(app_id, as_of, dialect, self.segments)


@dataclass(frozen=True, slots=True)
class Memberships:
    """CheckMembership's answer, before conversion."""

    known: set[str]
    segments: dict[str, set[str]]
    lists: set[tuple[str, str]]
    suppression_list_ids: list[str]
    unknown_segment_ids: list[str]
    unknown_list_ids: list[str]


async def check_references(
    work: SegmentationUnitOfWork, app_id: str, parsed: ParsedRule, own_id: str = ""
) -> None:
    """Refuse (INVALID_ARGUMENT, UNKNOWN_REFERENCE) references to lists the app does
    not have and to segments that do not exist or are deleted, and a segment that
    contains itself, each at its node's path."""
    problems = Violations()
    lists = await work.lists.existing_ids(app_id, list(parsed.list_paths))
    for list_id, path in parsed.list_paths.items():
        if list_id not in lists:
            problems.add(path, f"unknown list {list_id!r}")
            problems.reason = "UNKNOWN_REFERENCE"
    segments = await work.segments.get_many(app_id, list(parsed.segment_paths))
    for segment_id, path in parsed.segment_paths.items():
        if own_id and segment_id == own_id:
            problems.add(path, f"cycle: segment {segment_id!r} would contain itself")
        elif segment_id not in segments:
            problems.add(path, f"unknown segment {segment_id!r}")
            problems.reason = "UNKNOWN_REFERENCE"
        elif segments[segment_id].deleted_at is not None:
            problems.add(path, f"segment {segment_id!r} is deleted: no new references")
            problems.reason = "UNKNOWN_REFERENCE"
    problems.raise_if_any("the rule's references are invalid")


async def referenced_rules(
    work: SegmentationUnitOfWork, app_id: str, segment_ids: Sequence[str]
) -> dict[str, Node]:
    """The rules of the segments and of every segment they reference, transitively
    (deleted ones included: they evaluate as before)."""
    found: dict[str, Node] = {}
    pending = set(segment_ids)
    while pending:
        batch = await work.segments.get_many(app_id, sorted(pending))
        for segment_id, segment in batch.items():
            found[segment_id] = stored_rule(segment.rule)
            pending.update(segment.referenced_segment_ids)
        pending -= set(found)
        pending -= set(segment_ids) - set(batch)  # never existed: nothing to load
        if not batch:
            break
    return found


class SegmentHandlers:
    """The segment use cases."""

    def __init__(self, deps: SegmentationDeps) -> None:
        self._deps = deps

    def now(self) -> datetime:
        """The service clock's instant (the default ``as_of``)."""
        return self._deps.clock.now()

    async def create(self, spec: SegmentSpec, key: str) -> Created:
        """Create a segment. The same id (or, without one, the same key) with the same
        definition replays the first result; another definition is ALREADY_EXISTS."""
        digest = request_digest(spec.definition())
        refs = (tuple(sorted(spec.parsed.segment_paths)), tuple(sorted(spec.parsed.list_paths)))
        async with self._deps.uow() as work:
            now = self._deps.clock.now()
            if spec.segment_id:
                stored = await work.segments.get(spec.app_id, spec.segment_id)
                if stored is not None:
                    if stored.request_digest != digest:
                        raise id_taken("segment", spec.segment_id)
                    return Created(stored, replayed=True)
            elif key:
                stored = await work.segments.by_key(spec.app_id, key)
                if stored is not None:
                    if stored.request_digest != digest:
                        raise key_reused(key)
                    return Created(stored, replayed=True)
            await check_references(work, spec.app_id, spec.parsed, spec.segment_id)
            assigned = spec if spec.segment_id else replace(spec, segment_id=new_id("seg"))
            new = NewSegment(
                app_id=spec.app_id,
                segment_id=assigned.segment_id,
                name=spec.name,
                description=spec.description,
                rule=spec.rule.SerializeToString(deterministic=True),
                idempotency_key=(key or None) if not spec.segment_id else None,
                request_digest=digest,
                referenced_segment_ids=refs[0],
                referenced_list_ids=refs[1],
            )
            if not await work.segments.insert(new, now):
                # A concurrent create won the id (or key): a retry of the same definition
                # replays it, anything else is refused.
                winner = (
                    await work.segments.get(spec.app_id, spec.segment_id)
                    if spec.segment_id
                    else await work.segments.by_key(spec.app_id, key)
                )
                if winner is not None and winner.request_digest == digest:
                    return Created(winner, replayed=True)
                if spec.segment_id:
                    raise id_taken("segment", spec.segment_id)
                raise key_reused(key)
            created = await work.segments.get(spec.app_id, assigned.segment_id)
            await work.commit()
        assert created is not None
        return Created(created, replayed=False)

    async def get(self, app_id: str, segment_id: str) -> StoredSegment:
        """One segment, deleted ones too (NOT_FOUND when it never existed)."""
        async with self._deps.uow(read_only=True) as work:
            found = await work.segments.get(app_id, segment_id)
        if found is None:
            raise _not_found(segment_id)
        return found

    async def page(
        self, app_id: str, after: str | None, size: int
    ) -> tuple[list[StoredSegment], str | None]:
        """A page of live segments and the id the next page starts after (None: last)."""
        async with self._deps.uow(read_only=True, snapshot=True) as work:
            found = await work.segments.page(app_id, after, size + 1)
        page = found[:size]
        return page, page[-1].segment_id if len(found) > size and page else None

    async def delete(self, app_id: str, segment_id: str) -> StoredSegment:
        """Hide a segment from new references; its rules stay. NOT_FOUND when it never
        existed; FAILED_PRECONDITION (IN_USE) while a live segment references it."""
        async with self._deps.uow() as work:
            found = await work.segments.get(app_id, segment_id)
            if found is None:
                raise _not_found(segment_id)
            if found.deleted_at is not None:
                return found
            referrers = await work.segments.live_referrers(app_id, segment_id)
            if referrers:
                raise FailedPrecondition(
                    f"segment {segment_id!r} is referenced by live segments: "
                    + ", ".join(repr(r) for r in referrers),
                    [("IN_USE", f"segments/{r}", f"references {segment_id!r}") for r in referrers],
                    reason="IN_USE",
                    metadata={"segment_id": segment_id},
                )
            await work.segments.mark_deleted(app_id, segment_id, self._deps.clock.now())
            deleted = await work.segments.get(app_id, segment_id)
            await work.commit()
        assert deleted is not None
        return deleted

    async def evaluable_segment(self, app_id: str, segment_id: str) -> Evaluable:
        """A saved segment ready to run (NOT_FOUND when it never existed)."""
        async with self._deps.uow(read_only=True, snapshot=True) as work:
            rules = await referenced_rules(work, app_id, [segment_id])
        if segment_id not in rules:
            raise _not_found(segment_id)
        return Evaluable(rules[segment_id], rules)

    async def evaluable_rule(self, app_id: str, parsed: ParsedRule) -> Evaluable:
        """An inline rule ready to run; its references are checked like CreateSegment's."""
        async with self._deps.uow(read_only=True, snapshot=True) as work:
            await check_references(work, app_id, parsed)
            rules = await referenced_rules(work, app_id, list(parsed.segment_paths))
        return Evaluable(parsed.root, rules)

    async def members_page(
        self, app_id: str, target: Evaluable, as_of: datetime, after: str | None, limit: int
    ) -> list[str]:
        """Up to ``limit`` members after ``after`` (code-point order), from one snapshot
        (the page is read a window of users at a time)."""
        async with self._deps.uow(read_only=True, snapshot=True) as work:
            scope = target.scope(app_id, as_of, work.dialect)
            return await work.segments.members_page(target.root, scope, after, limit)

    async def count(self, app_id: str, target: Evaluable, as_of: datetime) -> int:
        """How many members."""
        async with self._deps.uow(read_only=True) as work:
            return await work.segments.count(target.root, target.scope(app_id, as_of, work.dialect))

    async def memberships(
        self,
        app_id: str,
        user_ids: Sequence[str],
        segment_ids: Sequence[str],
        list_ids: Sequence[str],
        with_suppression: bool,
        as_of: datetime,
    ) -> Memberships:
        """Which of the segments and lists (and, ``with_suppression``, the app's
        suppression lists) each user belongs to, from one snapshot; unknown segment and
        list ids are reported, not refused."""
        async with self._deps.uow(read_only=True, snapshot=True) as work:
            rules = await referenced_rules(work, app_id, segment_ids)
            known_lists = await work.lists.existing_ids(app_id, list_ids)
            suppression = await work.lists.suppression_ids(app_id) if with_suppression else []
            known = await work.segments.known_among(app_id, work.dialect, user_ids)
            members: dict[str, set[str]] = {}
            for segment_id in segment_ids:
                if segment_id in rules and known:
                    scope = Scope(app_id, as_of, work.dialect, rules)
                    members[segment_id] = await work.segments.members_among(
                        rules[segment_id], scope, sorted(known)
                    )
            on_lists = await work.lists.memberships(
                app_id, sorted(known), sorted(known_lists | set(suppression))
            )
        return Memberships(
            known=known,
            segments=members,
            lists=on_lists,
            suppression_list_ids=suppression,
            unknown_segment_ids=[s for s in segment_ids if s not in rules],
            unknown_list_ids=[item for item in list_ids if item not in known_lists],
        )


def _not_found(segment_id: str) -> NotFound:
    return NotFound(
        f"segment {segment_id!r} does not exist",
        resource_type="segment",
        resource_name=segment_id,
    )
