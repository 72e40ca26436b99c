"""CreateSegment, GetSegment, ListSegments, DeleteSegment, EvaluateSegment, CountSegment
and CheckMembership."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Final

from google.protobuf.timestamp_pb2 import Timestamp

from pushwarden.runtime.auth import require_app
from pushwarden.runtime.validation import Violations, decode_page_token, encode_page_token
from pushwarden.segmentation.v1 import messages_pb2, segmentation_pb2_grpc
from pushwarden.services.segmentation.domain.rules import parse_rule
from pushwarden.services.segmentation.domain.values import (
    from_timestamp,
    timestamp_problem,
    to_timestamp,
)
from pushwarden.services.segmentation.handlers.segments import (
    MAX_PAGE_SIZE,
    Evaluable,
    SegmentHandlers,
    SegmentSpec,
    segment_proto,
)
from pushwarden.services.segmentation.rpc.context import Context

DEFAULT_EVALUATE_PAGE: Final = 1000
MAX_EVALUATE_PAGE: Final = 10_000
# Members read per query of an evaluation, then sent in pages of the requested size: a
# query after a cursor evaluates the rule for every known user after it before sorting,
# so fewer, larger reads cost fewer passes over the population. Bounded (whole pages of
# at most this many members), so memory stays flat as the population grows.
EVALUATE_READ: Final = 10_000
MAX_MEMBERSHIP_USERS: Final = 1000
MAX_MEMBERSHIP_TARGETS: Final = 20


def _target_tag(app_id: str, target: messages_pb2.SegmentTarget) -> str:
    body = app_id.encode() + b"\0" + target.SerializeToString(deterministic=True)
    return hashlib.sha256(body).hexdigest()[:24]


def encode_evaluate_cursor(tag: str, as_of: datetime, after: str | None) -> str:
    """The resume point after user ``after`` of an evaluation as of ``as_of``."""
    body = {"v": 1, "t": tag, "a": as_of.isoformat(), "u": after}
    raw = json.dumps(body, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_evaluate_cursor(cursor: str, tag: str) -> tuple[datetime, str | None] | None:
    """``(as_of, after)`` of a cursor made for the same app and target, else None."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        body = json.loads(raw)
        if body["v"] != 1 or body["t"] != tag:
            return None
        as_of = datetime.fromisoformat(body["a"])
        after = body["u"]
    except (ValueError, KeyError, TypeError):
        return None
    if as_of.tzinfo is None or not (after is None or isinstance(after, str)):
        return None
    return as_of, after


class SegmentRpcs(segmentation_pb2_grpc.SegmentationServiceServicer):
    """The segment RPCs."""

    _segments: SegmentHandlers

    async def CreateSegment(
        self, request: messages_pb2.CreateSegmentRequest, context: Context
    ) -> messages_pb2.CreateSegmentResponse:
        """Create a segment from a rule tree (idempotent by id or key)."""
        require_app(request.app_id)
        if not request.HasField("segment"):
            problems = Violations()
            problems.caller_id("app_id", request.app_id)
            problems.add("segment", "required")
            problems.raise_if_any()
        spec = SegmentSpec.from_proto(request.app_id, request.segment, request.idempotency_key)
        created = await self._segments.create(spec, request.idempotency_key)
        return messages_pb2.CreateSegmentResponse(
            segment=segment_proto(created.segment), replayed=created.replayed
        )

    async def GetSegment(
        self, request: messages_pb2.GetSegmentRequest, context: Context
    ) -> messages_pb2.GetSegmentResponse:
        """One segment, deleted ones too."""
        require_app(request.app_id)
        _check_ids(app_id=request.app_id, segment_id=request.segment_id)
        found = await self._segments.get(request.app_id, request.segment_id)
        return messages_pb2.GetSegmentResponse(segment=segment_proto(found))

    async def ListSegments(
        self, request: messages_pb2.ListSegmentsRequest, context: Context
    ) -> messages_pb2.ListSegmentsResponse:
        """A page of live segments, ordered by id."""
        require_app(request.app_id)
        problems = Violations()
        problems.caller_id("app_id", request.app_id)
        size = problems.page_size("page_size", request.page_size, maximum=MAX_PAGE_SIZE)
        filters = {"app_id": request.app_id}
        cursor = decode_page_token(request.page_token, filters, problems)
        problems.raise_if_any()
        segments, last = await self._segments.page(
            request.app_id, cursor.after[0] if cursor else None, size
        )
        return messages_pb2.ListSegmentsResponse(
            segments=[segment_proto(segment) for segment in segments],
            next_page_token=encode_page_token([last], filters) if last is not None else "",
        )

    async def DeleteSegment(
        self, request: messages_pb2.DeleteSegmentRequest, context: Context
    ) -> messages_pb2.DeleteSegmentResponse:
        """Hide a segment from new references; its rules stay for running ones."""
        require_app(request.app_id)
        _check_ids(app_id=request.app_id, segment_id=request.segment_id)
        deleted = await self._segments.delete(request.app_id, request.segment_id)
        return messages_pb2.DeleteSegmentResponse(segment=segment_proto(deleted))

    async def _target(
        self, app_id: str, target: messages_pb2.SegmentTarget, problems: Violations
    ) -> Evaluable:
        """What to evaluate; raises InvalidArgument with every problem collected so far."""
        which = target.WhichOneof("kind")
        if which is None:
            problems.add("target", "required: a segment_id or a rule")
            problems.raise_if_any()
        if which == "segment_id":
            problems.caller_id("target.segment_id", target.segment_id)
            problems.raise_if_any()
            return await self._segments.evaluable_segment(app_id, target.segment_id)
        parsed = parse_rule(target.rule, "target.rule", problems)
        problems.raise_if_any()
        assert parsed is not None
        return await self._segments.evaluable_rule(app_id, parsed)

    def _as_of(self, stamp: Timestamp | None, problems: Violations) -> datetime:
        if stamp is None:
            return self._segments.now()
        problem = timestamp_problem(stamp)
        if problem:
            problems.add("as_of", problem)
            return self._segments.now()
        return from_timestamp(stamp)

    async def EvaluateSegment(
        self, request: messages_pb2.EvaluateSegmentRequest, context: Context
    ) -> AsyncIterator[messages_pb2.EvaluateSegmentResponse]:
        """Pages of member ids in code-point order, resumable by cursor."""
        require_app(request.app_id)
        problems = Violations()
        problems.caller_id("app_id", request.app_id)
        if request.page_size < 0:
            problems.add("page_size", "must not be negative")
        size = min(request.page_size or DEFAULT_EVALUATE_PAGE, MAX_EVALUATE_PAGE)
        as_of = self._as_of(request.as_of if request.HasField("as_of") else None, problems)
        tag = _target_tag(request.app_id, request.target)
        after: str | None = None
        if request.cursor:
            resumed = decode_evaluate_cursor(request.cursor, tag)
            if resumed is None:
                problems.add("cursor", "not a cursor of this evaluation (app_id and target)")
            else:
                as_of, after = resumed
        problems.raise_if_any()
        target = await self._target(request.app_id, request.target, problems)
        read = size * max(1, EVALUATE_READ // size)  # whole pages
        while True:
            found = await self._segments.members_page(
                request.app_id, target, as_of, after, read + 1
            )
            more = len(found) > read
            found = found[:read]
            pages = [found[start : start + size] for start in range(0, len(found), size)]
            for number, page in enumerate(pages or [[]]):
                if page:
                    after = page[-1]
                yield messages_pb2.EvaluateSegmentResponse(
                    user_ids=page,
                    cursor=encode_evaluate_cursor(tag, as_of, after),
                    as_of=to_timestamp(as_of),
                    done=not more and number >= len(pages) - 1,
                )
            if not more:
                return

    async def CountSegment(
        self, request: messages_pb2.CountSegmentRequest, context: Context
    ) -> messages_pb2.CountSegmentResponse:
        """How many members, as of an instant."""
        require_app(request.app_id)
        problems = Violations()
        problems.caller_id("app_id", request.app_id)
        as_of = self._as_of(request.as_of if request.HasField("as_of") else None, problems)
        target = await self._target(request.app_id, request.target, problems)
        count = await self._segments.count(request.app_id, target, as_of)
        return messages_pb2.CountSegmentResponse(count=count, as_of=to_timestamp(as_of))

    async def CheckMembership(
        self, request: messages_pb2.CheckMembershipRequest, context: Context
    ) -> messages_pb2.CheckMembershipResponse:
        """Memberships of up to 1,000 users in up to 20 segments and 20 lists (and every
        suppression list of the app)."""
        require_app(request.app_id)
        problems = Violations()
        problems.caller_id("app_id", request.app_id)
        users = problems.caller_ids("user_ids", request.user_ids, limit=MAX_MEMBERSHIP_USERS)
        for field, ids in (("segment_ids", request.segment_ids), ("list_ids", request.list_ids)):
            if len(ids) > MAX_MEMBERSHIP_TARGETS:
                problems.add(field, f"at most {MAX_MEMBERSHIP_TARGETS}, got {len(ids)}")
            for index, value in enumerate(ids):
                problems.caller_id(f"{field}[{index}]", value)
        if not (request.segment_ids or request.list_ids or request.include_suppression_lists):
            problems.add("segment_ids", "name a segment or a list, or include_suppression_lists")
        as_of = self._as_of(request.as_of if request.HasField("as_of") else None, problems)
        problems.raise_if_any()
        segment_ids = list(dict.fromkeys(request.segment_ids))
        list_ids = list(dict.fromkeys(request.list_ids))
        found = await self._segments.memberships(
            request.app_id, users, segment_ids, list_ids, request.include_suppression_lists, as_of
        )
        reply = messages_pb2.CheckMembershipResponse(
            as_of=to_timestamp(as_of),
            unknown_segment_ids=found.unknown_segment_ids,
            unknown_list_ids=found.unknown_list_ids,
        )
        for user in users:
            reply.users.add(
                user_id=user,
                known_user=user in found.known,
                segment_ids=[s for s in segment_ids if user in found.segments.get(s, ())],
                list_ids=[item for item in list_ids if (user, item) in found.lists],
                suppression_list_ids=[
                    item for item in found.suppression_list_ids if (user, item) in found.lists
                ],
            )
        return reply


def _check_ids(*, app_id: str, segment_id: str) -> None:
    problems = Violations()
    problems.caller_id("app_id", app_id)
    problems.caller_id("segment_id", segment_id)
    problems.raise_if_any()
