"""Segments through real gRPC on SQLite and PostgreSQL: every predicate kind and its
edges (missing attributes, type mismatches, code-point string order, no events, an
event exactly on a window boundary, counts, property filters, recency, lists, nested
and deleted segments, as_of), unknown users matching nothing even under negate,
EvaluateSegment paging and resuming, CountSegment, CheckMembership, the segment
lifecycle (idempotency, NOT_FOUND, IN_USE) and bad rule trees refused with the node's
path and nothing written."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration

from pushwarden.common.v1 import values_pb2
from pushwarden.runtime.clock import shift_clock_file
from pushwarden.runtime.servicetest import RichError, local_test_config, rich_error, serving
from pushwarden.segmentation.v1 import messages_pb2, resources_pb2, segmentation_pb2_grpc
from pushwarden.services.segmentation.bootstrap import bootstrap
from pushwarden.services.segmentation.config import SegmentationConfig
from pushwarden.services.segmentation.domain.values import to_timestamp
from pushwarden.services.segmentation.rpc.segments import EVALUATE_READ

if TYPE_CHECKING:
    from pushwarden.segmentation.v1.segmentation_pb2_grpc import (
        SegmentationServiceAsyncStub as Stub,
    )

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
APP = "shop"
Rule = resources_pb2.Rule


@pytest.fixture
async def stub(any_database_url: str, tmp_path: Path) -> AsyncIterator[Stub]:
    clock = tmp_path / "clock.json"
    shift_clock_file(clock, to=NOW, speed=1.0)
    config = local_test_config(SegmentationConfig, any_database_url, CLOCK_FILE=str(clock))
    async with serving(bootstrap(config)) as channel:
        yield segmentation_pb2_grpc.SegmentationServiceStub(channel)


# Rule and value builders.


def val(value: Any) -> values_pb2.AttributeValue:
    if isinstance(value, bool):
        return values_pb2.AttributeValue(bool_value=value)
    if isinstance(value, int | float):
        return values_pb2.AttributeValue(number_value=float(value))
    if isinstance(value, datetime):
        return values_pb2.AttributeValue(timestamp_value=to_timestamp(value))
    if isinstance(value, list):
        return values_pb2.AttributeValue(string_list_value=values_pb2.StringList(values=value))
    return values_pb2.AttributeValue(string_value=value)


def flt(
    name: str, op: str, value: Any = None, values: Iterable[Any] = ()
) -> values_pb2.PropertyFilter:
    proto = values_pb2.PropertyFilter(
        name=name, operator=values_pb2.Operator.Value(f"OPERATOR_{op}")
    )
    if value is not None:
        proto.value.CopyFrom(val(value))
    proto.values.extend(val(v) for v in values)
    return proto


def attr(name: str, op: str, value: Any = None, values: Iterable[Any] = ()) -> Rule:
    return Rule(attribute=resources_pb2.AttributePredicate(filter=flt(name, op, value, values)))


def all_(*rules: Rule) -> Rule:
    return Rule(all=resources_pb2.RuleGroup(rules=rules))


def any_(*rules: Rule) -> Rule:
    return Rule(any=resources_pb2.RuleGroup(rules=rules))


def not_(rule: Rule) -> Rule:
    return Rule(negate=rule)


def seconds(delta: timedelta) -> Duration:
    return Duration(seconds=int(delta.total_seconds()))


def did(
    name: str,
    *,
    within: timedelta | None = None,
    between: tuple[datetime, datetime] | None = None,
    min_count: int = 0,
    max_count: int | None = None,
    negative: bool = False,
    filters: Iterable[values_pb2.PropertyFilter] = (),
) -> Rule:
    proto = resources_pb2.EventPredicate(
        event_name=name,
        occurrence=(resources_pb2.OCCURRENCE_DID_NOT if negative else resources_pb2.OCCURRENCE_DID),
        min_count=min_count,
        property_filters=list(filters),
    )
    if max_count is not None:
        proto.max_count = max_count
    if within is not None:
        proto.window.within.CopyFrom(seconds(within))
    if between is not None:
        proto.window.between.start.CopyFrom(to_timestamp(between[0]))
        proto.window.between.end.CopyFrom(to_timestamp(between[1]))
    return Rule(event=proto)


def recency(
    *,
    event: str | None = None,
    attribute: str | None = None,
    before: bool = True,
    ago: timedelta | None = None,
    instant: datetime | None = None,
    include_never: bool = False,
    filters: Iterable[values_pb2.PropertyFilter] = (),
) -> Rule:
    proto = resources_pb2.RecencyPredicate(
        comparison=(
            resources_pb2.RECENCY_COMPARISON_BEFORE
            if before
            else resources_pb2.RECENCY_COMPARISON_AFTER
        ),
        include_never=include_never,
        property_filters=list(filters),
    )
    if event is not None:
        proto.event_name = event
    if attribute is not None:
        proto.timestamp_attribute = attribute
    if ago is not None:
        proto.ago.CopyFrom(seconds(ago))
    if instant is not None:
        proto.instant.CopyFrom(to_timestamp(instant))
    return Rule(recency=proto)


def in_list(list_id: str) -> Rule:
    return Rule(list=resources_pb2.ListMembership(list_id=list_id))


def in_segment(segment_id: str) -> Rule:
    return Rule(segment=resources_pb2.SegmentMembership(segment_id=segment_id))


# RPC helpers.


async def profiles(stub: Stub, **users: dict[str, Any]) -> None:
    await stub.UpsertProfiles(
        messages_pb2.UpsertProfilesRequest(
            app_id=APP,
            profiles=[
                resources_pb2.ProfileUpdate(
                    user_id=user, set_attributes={k: val(v) for k, v in attributes.items()}
                )
                for user, attributes in users.items()
            ],
        )
    )


_event_ids = iter(range(10**9))


async def events(
    stub: Stub, *items: tuple[str, str, datetime] | tuple[str, str, datetime, dict[str, Any]]
) -> None:
    await stub.TrackEvents(
        messages_pb2.TrackEventsRequest(
            app_id=APP,
            events=[
                resources_pb2.Event(
                    event_id=f"e{next(_event_ids)}",
                    user_id=item[0],
                    name=item[1],
                    occurred_at=to_timestamp(item[2]),
                    properties={k: val(v) for k, v in (item[3] if len(item) > 3 else {}).items()},
                )
                for item in items
            ],
        )
    )


async def members(
    stub: Stub, rule: Rule, as_of: datetime | None = None, page_size: int = 0
) -> list[str]:
    request = messages_pb2.EvaluateSegmentRequest(
        app_id=APP, target=messages_pb2.SegmentTarget(rule=rule), page_size=page_size
    )
    if as_of is not None:
        request.as_of.CopyFrom(to_timestamp(as_of))
    found: list[str] = []
    async for page in stub.EvaluateSegment(request):
        found += page.user_ids
    count = await stub.CountSegment(
        messages_pb2.CountSegmentRequest(
            app_id=APP,
            target=messages_pb2.SegmentTarget(rule=rule),
            as_of=request.as_of if as_of is not None else None,
        )
    )
    assert count.count == len(found)
    return found


async def create(
    stub: Stub, segment_id: str, rule: Rule, key: str = "", name: str = "s"
) -> messages_pb2.CreateSegmentResponse:
    return await stub.CreateSegment(
        messages_pb2.CreateSegmentRequest(
            app_id=APP,
            segment=resources_pb2.Segment(segment_id=segment_id, name=name, rule=rule),
            idempotency_key=key,
        )
    )


async def make_list(stub: Stub, list_id: str, kind: int = resources_pb2.LIST_KIND_GENERIC) -> None:
    await stub.CreateList(
        messages_pb2.CreateListRequest(
            app_id=APP,
            list=resources_pb2.StaticList(list_id=list_id, name=list_id, kind=kind),  # type: ignore[arg-type]
        )
    )


async def add(
    stub: Stub, list_id: str, *users: str, at: datetime | None = None
) -> messages_pb2.AddToListResponse:
    request = messages_pb2.AddToListRequest(app_id=APP, list_id=list_id, user_ids=users)
    if at is not None:
        request.client_time.CopyFrom(to_timestamp(at))
    return await stub.AddToList(request)


async def remove(
    stub: Stub, list_id: str, *users: str, at: datetime | None = None
) -> messages_pb2.RemoveFromListResponse:
    request = messages_pb2.RemoveFromListRequest(app_id=APP, list_id=list_id, user_ids=users)
    if at is not None:
        request.client_time.CopyFrom(to_timestamp(at))
    return await stub.RemoveFromList(request)


async def finish(call: Any) -> None:
    """Await a unary call, or read a stream to its end."""
    if hasattr(call, "__aiter__"):
        async for _ in call:
            pass
    else:
        await call


async def refused(call: Any) -> RichError:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await finish(call)
    return rich_error(raised.value)


# Attribute predicates.


async def test_attribute_operators_by_type_with_missing_and_mismatched_values(stub: Stub) -> None:
    seen = datetime(2026, 5, 1, tzinfo=UTC)
    await profiles(
        stub,
        a={"plan": "pro", "score": 10, "vip": True, "seen": seen, "tags": ["x", "y%"]},
        b={"plan": "free", "score": 2.5, "vip": False, "seen": seen - timedelta(days=1)},
        c={"plan": "Pro", "score": "10", "tags": ["y"]},
        d={},
    )
    await events(stub, ("e", "view", NOW - timedelta(hours=1)))  # known, no profile
    assert await members(stub, attr("plan", "EQ", "pro")) == ["a"]
    assert await members(stub, attr("plan", "NEQ", "pro")) == ["b", "c"]  # missing: no match
    assert await members(stub, attr("score", "EQ", 10)) == ["a"]  # c's "10" is a string
    assert await members(stub, attr("score", "GT", 2.5)) == ["a"]
    assert await members(stub, attr("score", "GTE", 2.5)) == ["a", "b"]
    assert await members(stub, attr("score", "LT", 10)) == ["b"]
    assert await members(stub, attr("score", "LTE", 10)) == ["a", "b"]
    assert await members(stub, attr("vip", "EQ", False)) == ["b"]
    assert await members(stub, attr("seen", "GTE", seen)) == ["a"]
    assert await members(stub, attr("seen", "LT", seen)) == ["b"]
    assert await members(stub, attr("plan", "IN", values=["free", "Pro"])) == ["b", "c"]
    assert await members(stub, attr("score", "IN", values=[2.5, 99])) == ["b"]
    assert await members(stub, attr("tags", "CONTAINS", "y")) == ["c"]  # an item, not a substring
    assert await members(stub, attr("tags", "CONTAINS", "y%")) == ["a"]  # no LIKE wildcards
    assert await members(stub, attr("plan", "CONTAINS", "o")) == ["a", "c"]  # substring
    assert await members(stub, attr("plan", "CONTAINS", "O")) == []  # case-sensitive
    assert await members(stub, attr("plan", "PREFIX", "P")) == ["c"]
    assert await members(stub, attr("tags", "EQ", ["x", "y%"])) == ["a"]
    assert await members(stub, attr("tags", "EXISTS")) == ["a", "c"]
    assert await members(stub, not_(attr("tags", "EXISTS"))) == ["b", "d", "e"]
    assert await members(stub, all_()) == ["a", "b", "c", "d", "e"]  # every known user
    assert await members(stub, any_()) == []


async def test_strings_compare_by_code_point_on_every_backend(stub: Stub) -> None:
    await profiles(stub, u1={"s": "Z"}, u2={"s": "a"}, u3={"s": "é"}, u4={"s": "z"}, u5={"s": "ab"})
    assert await members(stub, attr("s", "GT", "a")) == ["u3", "u4", "u5"]
    assert await members(stub, attr("s", "LT", "a")) == ["u1"]
    assert await members(stub, attr("s", "GTE", "z")) == ["u3", "u4"]
    code_point_order: dict[str, dict[str, Any]] = {
        n: {"s": "x"} for n in ("éclair", "alpha", "Zed")
    }
    await profiles(stub, **code_point_order)
    assert await members(stub, attr("s", "EQ", "x")) == ["Zed", "alpha", "éclair"]


# Event predicates.


async def test_event_counts_windows_boundaries_filters_and_as_of(stub: Stub) -> None:
    day = timedelta(days=1)
    await profiles(stub, idle={})
    await events(
        stub,
        ("a", "purchase", NOW - 30 * day, {"amount": 50, "sku": ["s1", "s2"]}),  # on the boundary
        ("a", "purchase", NOW - 2 * day, {"amount": 5}),
        ("b", "purchase", NOW - 31 * day, {"amount": 500}),
        ("b", "view", NOW - day),
        ("c", "purchase", NOW - day, {"amount": 20}),
        ("c", "purchase", NOW - day, {"amount": 30}),
        ("c", "purchase", NOW - day, {"amount": 40}),
    )
    month = timedelta(days=30)
    assert await members(stub, did("purchase", within=month)) == ["a", "c"]
    twice = did("purchase", within=month, min_count=2)
    assert await members(stub, twice, as_of=NOW) == ["a", "c"]  # the boundary counts
    assert await members(stub, twice, as_of=NOW + timedelta(microseconds=1)) == ["c"]
    assert await members(stub, did("purchase")) == ["a", "b", "c"]
    assert await members(stub, did("purchase", min_count=2)) == ["a", "c"]
    assert await members(stub, did("purchase", min_count=2, max_count=2)) == ["a"]
    assert await members(stub, did("purchase", negative=True)) == ["idle"]  # known users only
    assert await members(stub, did("purchase", within=month, negative=True)) == ["b", "idle"]
    assert await members(stub, did("purchase", filters=[flt("amount", "GTE", 30)])) == [
        "a",
        "b",
        "c",
    ]
    assert await members(
        stub, did("purchase", min_count=2, filters=[flt("amount", "GTE", 30)])
    ) == ["c"]
    assert await members(stub, did("purchase", filters=[flt("sku", "CONTAINS", "s2")])) == ["a"]
    assert await members(stub, did("purchase", filters=[flt("missing", "EXISTS")])) == []
    window = (NOW - 31 * day, NOW - 30 * day)
    assert await members(stub, did("purchase", between=window)) == ["b"]  # end is exclusive
    # as_of: only events before it count, and relative windows end at it.
    earlier = NOW - 10 * day
    assert await members(stub, did("purchase", within=month), as_of=earlier) == ["a", "b"]
    assert await members(stub, did("view"), as_of=earlier) == []


async def test_a_window_starts_inclusive_and_ends_at_as_of_exclusive(stub: Stub) -> None:
    hour = timedelta(hours=1)
    await events(stub, ("start", "x", NOW - hour), ("end", "x", NOW - 2 * hour))
    as_of = NOW - hour
    assert await members(stub, did("x", within=hour), as_of=as_of) == ["end"]
    assert await members(stub, did("x", within=hour), as_of=as_of + timedelta(microseconds=1)) == [
        "start"
    ]


async def test_recency_of_events_and_timestamp_attributes(stub: Stub) -> None:
    day = timedelta(days=1)
    await profiles(
        stub,
        old={"last_seen": NOW - 10 * day},
        new={"last_seen": NOW - day},
        never={"last_seen": "yesterday"},  # not a timestamp
    )
    await events(
        stub,
        ("old", "open", NOW - 10 * day, {"push": True}),
        ("new", "open", NOW - day, {"push": False}),
        ("new", "open", NOW - 20 * day, {"push": True}),
    )
    week = 7 * day
    assert await members(stub, recency(event="open", before=False, ago=week)) == ["new"]
    assert await members(stub, recency(event="open", ago=week)) == ["old"]
    assert await members(stub, recency(event="open", ago=week, include_never=True)) == [
        "never",
        "old",
    ]
    pushed = [flt("push", "EQ", True)]
    assert await members(stub, recency(event="open", ago=week, filters=pushed)) == ["new", "old"]
    assert await members(stub, recency(event="open", instant=NOW - 10 * day, before=False)) == [
        "new",
        "old",
    ]
    assert await members(stub, recency(attribute="last_seen", ago=week)) == ["old"]
    assert await members(stub, recency(attribute="last_seen", before=False, ago=week)) == ["new"]
    assert await members(stub, recency(attribute="last_seen", ago=week, include_never=True)) == [
        "never",
        "old",
    ]
    # as_of moves the reference and hides later events.
    assert await members(
        stub, recency(event="open", before=False, ago=week), as_of=NOW - 5 * day
    ) == ["old"]


async def test_recency_after_includes_its_reference_instant_and_before_excludes_it(
    stub: Stub,
) -> None:
    week = timedelta(days=7)
    edge = NOW - week
    just_before = edge - timedelta(microseconds=1)
    await profiles(stub, on_edge={"last_seen": edge}, earlier={"last_seen": just_before})
    await events(stub, ("on_edge", "open", edge), ("earlier", "open", just_before))
    for subject in ({"event": "open"}, {"attribute": "last_seen"}):
        after = recency(**subject, before=False, ago=week)  # type: ignore[arg-type]
        before = recency(**subject, ago=week)  # type: ignore[arg-type]
        assert await members(stub, after, as_of=NOW) == ["on_edge"], subject
        assert await members(stub, before, as_of=NOW) == ["earlier"], subject
        fixed = recency(**subject, before=False, instant=edge)  # type: ignore[arg-type]
        assert await members(stub, fixed) == ["on_edge"], subject


async def test_a_resumed_evaluation_keeps_its_as_of_and_nested_segments_use_it(
    stub: Stub,
) -> None:
    day = timedelta(days=1)
    then = NOW - 10 * day
    await events(
        stub,
        *[(f"u{i}", "purchase", NOW - 12 * day) for i in range(5)],
        ("u5", "purchase", NOW - day),
    )
    await create(stub, "recent-buyers", did("purchase", within=7 * day))
    rule = in_segment("recent-buyers")
    # The referenced segment's relative window ends at the evaluation's as_of.
    assert await members(stub, rule, as_of=then) == ["u0", "u1", "u2", "u3", "u4"]
    assert await members(stub, rule) == ["u5"]  # as of the service clock
    target = messages_pb2.SegmentTarget(rule=rule)
    call = stub.EvaluateSegment(
        messages_pb2.EvaluateSegmentRequest(
            app_id=APP, target=target, as_of=to_timestamp(then), page_size=2
        )
    )
    first = await call.read()
    call.cancel()
    assert isinstance(first, messages_pb2.EvaluateSegmentResponse)
    assert list(first.user_ids) == ["u0", "u1"]
    # Resumed without as_of, the cursor's instant applies, not the clock's: u5 (a member
    # now, not then) never joins a running evaluation.
    resumed = [
        page
        async for page in stub.EvaluateSegment(
            messages_pb2.EvaluateSegmentRequest(app_id=APP, target=target, cursor=first.cursor)
        )
    ]
    assert [u for page in resumed for u in page.user_ids] == ["u2", "u3", "u4"]
    assert {page.as_of.ToDatetime(UTC) for page in resumed} == {then}


# Lists, nested segments, unknown users.


async def test_lists_nested_and_deleted_segments_and_unknown_users(stub: Stub) -> None:
    await profiles(stub, a={"plan": "pro"}, b={"plan": "free"}, c={})
    await make_list(stub, "vips")
    await make_list(stub, "blocked", resources_pb2.LIST_KIND_SUPPRESSION)
    await add(stub, "vips", "b", "listed-only")
    await add(stub, "blocked", "a")
    assert await members(stub, in_list("vips")) == ["b", "listed-only"]
    await create(stub, "pro", attr("plan", "EQ", "pro"))
    await create(stub, "pro-or-vip", any_(in_segment("pro"), in_list("vips")))
    await create(stub, "outer", not_(in_segment("pro-or-vip")))
    assert await members(stub, in_segment("pro-or-vip")) == ["a", "b", "listed-only"]
    assert await members(stub, in_segment("outer")) == ["c"]
    reply = await stub.CheckMembership(
        messages_pb2.CheckMembershipRequest(
            app_id=APP,
            user_ids=["a", "c", "stranger", "listed-only"],
            segment_ids=["outer", "pro", "nope"],
            list_ids=["vips", "missing"],
            include_suppression_lists=True,
        )
    )
    assert list(reply.unknown_segment_ids) == ["nope"]
    assert list(reply.unknown_list_ids) == ["missing"]
    by_user = {u.user_id: u for u in reply.users}
    assert [u.user_id for u in reply.users] == ["a", "c", "stranger", "listed-only"]
    assert list(by_user["a"].segment_ids) == ["pro"]
    assert list(by_user["a"].suppression_list_ids) == ["blocked"]
    assert list(by_user["c"].segment_ids) == ["outer"]
    assert list(by_user["listed-only"].list_ids) == ["vips"]
    stranger = by_user["stranger"]
    assert not stranger.known_user
    assert list(stranger.segment_ids) == []  # not even "outer", a negation
    assert by_user["c"].known_user
    # Deleting: refused while a live segment references it; once deleted, running
    # references evaluate as before and new references are refused.
    error = await refused(
        stub.DeleteSegment(messages_pb2.DeleteSegmentRequest(app_id=APP, segment_id="pro"))
    )
    assert error.code == grpc.StatusCode.FAILED_PRECONDITION
    assert error.reason == "IN_USE"
    for segment_id in ("outer", "pro-or-vip", "pro"):
        deleted = await stub.DeleteSegment(
            messages_pb2.DeleteSegmentRequest(app_id=APP, segment_id=segment_id)
        )
        assert deleted.segment.HasField("deleted_at")
    again = await stub.DeleteSegment(
        messages_pb2.DeleteSegmentRequest(app_id=APP, segment_id="pro")
    )
    assert again.segment.deleted_at == deleted.segment.deleted_at
    error = await refused(members(stub, in_segment("outer")))  # a new reference
    assert error.reason == "UNKNOWN_REFERENCE"
    assert "target.rule.segment.segment_id" in error.fields
    error = await refused(create(stub, "new", in_segment("pro")))
    assert error.reason == "UNKNOWN_REFERENCE"
    assert "segment.rule.segment.segment_id" in error.fields
    by_id = await stub.EvaluateSegment(
        messages_pb2.EvaluateSegmentRequest(
            app_id=APP, target=messages_pb2.SegmentTarget(segment_id="outer")
        )
    ).read()
    assert isinstance(by_id, messages_pb2.EvaluateSegmentResponse)
    assert list(by_id.user_ids) == ["c"]  # a deleted segment evaluates as before
    listed = await stub.ListSegments(messages_pb2.ListSegmentsRequest(app_id=APP))
    assert list(listed.segments) == []
    got = await stub.GetSegment(messages_pb2.GetSegmentRequest(app_id=APP, segment_id="outer"))
    assert got.segment.rule == not_(in_segment("pro-or-vip"))
    assert list(got.segment.referenced_segment_ids) == ["pro-or-vip"]


# EvaluateSegment paging.


async def test_evaluate_pages_resume_by_cursor_without_repeats(stub: Stub) -> None:
    users = {f"u{i:03d}": {"n": i} for i in range(57)}
    await profiles(stub, **users)
    rule = attr("n", "GTE", 7)
    request = messages_pb2.EvaluateSegmentRequest(
        app_id=APP, target=messages_pb2.SegmentTarget(rule=rule), page_size=10
    )
    pages = [page async for page in stub.EvaluateSegment(request)]
    assert [len(p.user_ids) for p in pages] == [10, 10, 10, 10, 10]
    assert [p.done for p in pages] == [False] * 4 + [True]
    everything = [u for p in pages for u in p.user_ids]
    assert everything == [f"u{i:03d}" for i in range(7, 57)]
    request.cursor = pages[1].cursor
    resumed = [u async for p in stub.EvaluateSegment(request) for u in p.user_ids]
    assert resumed == everything[20:]
    other = messages_pb2.EvaluateSegmentRequest(
        app_id=APP,
        target=messages_pb2.SegmentTarget(rule=attr("n", "GTE", 8)),
        cursor=pages[1].cursor,
    )
    error = await refused(stub.EvaluateSegment(other))
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "cursor" in error.fields
    empty = [
        p
        async for p in stub.EvaluateSegment(
            messages_pb2.EvaluateSegmentRequest(
                app_id=APP, target=messages_pb2.SegmentTarget(rule=any_())
            )
        )
    ]
    assert len(empty) == 1
    assert empty[0].done
    error = await refused(
        stub.EvaluateSegment(
            messages_pb2.EvaluateSegmentRequest(
                app_id=APP, target=messages_pb2.SegmentTarget(segment_id="never")
            )
        )
    )
    assert error.code == grpc.StatusCode.NOT_FOUND


async def test_pages_stream_across_the_services_reads_without_repeats_or_gaps(
    stub: Stub,
) -> None:
    total = EVALUATE_READ + 7  # one more read than the service makes at a time
    for start in range(0, total, 1000):
        users = {f"u{i:05d}": {"n": i} for i in range(start, min(total, start + 1000))}
        await profiles(stub, **users)
    target = messages_pb2.SegmentTarget(rule=attr("n", "GTE", 3))
    request = messages_pb2.EvaluateSegmentRequest(app_id=APP, target=target, page_size=999)
    pages = [page async for page in stub.EvaluateSegment(request)]
    everything = [u for page in pages for u in page.user_ids]
    assert everything == [f"u{i:05d}" for i in range(3, total)]
    assert [page.done for page in pages] == [False] * (len(pages) - 1) + [True]
    assert all(len(page.user_ids) == 999 for page in pages[:-1] if page.user_ids)
    for number, page in enumerate(pages[:-1]):  # every cursor resumes right after its page
        resumed = messages_pb2.EvaluateSegmentRequest(
            app_id=APP, target=target, page_size=5000, cursor=page.cursor
        )
        first = await stub.EvaluateSegment(resumed).read()
        assert isinstance(first, messages_pb2.EvaluateSegmentResponse)
        assert first.user_ids[0] == pages[number + 1].user_ids[0], number


# Lifecycle and bad input.


async def test_create_is_idempotent_by_id_and_key_and_refuses_a_changed_definition(
    stub: Stub,
) -> None:
    first = await create(stub, "s1", attr("plan", "EQ", "pro"))
    assert not first.replayed
    again = await create(stub, "s1", attr("plan", "EQ", "pro"))
    assert again.replayed
    assert again.segment.created_at == first.segment.created_at
    error = await refused(create(stub, "s1", attr("plan", "EQ", "free")))
    assert error.code == grpc.StatusCode.ALREADY_EXISTS
    assert error.reason == "ID_TAKEN"
    keyed = await create(stub, "", attr("x", "EXISTS"), key="k1")
    assert keyed.segment.segment_id
    replay = await create(stub, "", attr("x", "EXISTS"), key="k1")
    assert replay.replayed
    assert replay.segment.segment_id == keyed.segment.segment_id
    error = await refused(create(stub, "", attr("y", "EXISTS"), key="k1"))
    assert error.reason == "IDEMPOTENCY_KEY_REUSED"
    error = await refused(create(stub, "s2", in_segment("s2")))
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "cycle" in error.fields["segment.rule.segment.segment_id"]
    error = await refused(
        stub.GetSegment(messages_pb2.GetSegmentRequest(app_id=APP, segment_id="nope"))
    )
    assert error.code == grpc.StatusCode.NOT_FOUND
    error = await refused(
        stub.DeleteSegment(messages_pb2.DeleteSegmentRequest(app_id=APP, segment_id="nope"))
    )
    assert error.code == grpc.StatusCode.NOT_FOUND
    for index in range(3):
        await create(stub, f"p{index}", all_())
    ids: list[str] = []
    token = ""
    while True:
        listed = await stub.ListSegments(
            messages_pb2.ListSegmentsRequest(app_id=APP, page_size=2, page_token=token)
        )
        assert len(listed.segments) <= 2
        ids += [s.segment_id for s in listed.segments]
        token = listed.next_page_token
        if not token:
            break
    assert len(ids) == 5
    assert ids == sorted(ids)


async def test_bad_rule_trees_name_the_offending_node_and_write_nothing(stub: Stub) -> None:
    bad_operator = attr("plan", "EQ", "x")
    bad_operator.attribute.filter.operator = 99  # type: ignore[assignment]
    cases: list[tuple[Rule, str, str | None]] = [
        (
            all_(attr("a", "EXISTS"), attr("b", "EXISTS"), did("x", within=timedelta(0))),
            "segment.rule.all.rules[2].event.window.within",
            None,
        ),
        (any_(bad_operator), "segment.rule.any.rules[0].attribute.filter.operator", None),
        (attr("vip", "GT", True), "segment.rule.attribute.filter.value", None),
        (attr("tags", "CONTAINS", 3), "segment.rule.attribute.filter.value", None),
        (attr("x", "IN", values=[1, "a"]), "segment.rule.attribute.filter.values", None),
        (attr("x", "EXISTS", "v"), "segment.rule.attribute.filter.value", None),
        (not_(did("x", between=(NOW, NOW))), "segment.rule.negate.event.window.between.end", None),
        (did("x", min_count=3, max_count=2), "segment.rule.event.max_count", None),
        (recency(event="x"), "segment.rule.recency.ago", None),
        (in_list("nope"), "segment.rule.list.list_id", "UNKNOWN_REFERENCE"),
        (in_segment("nope"), "segment.rule.segment.segment_id", "UNKNOWN_REFERENCE"),
        (Rule(), "segment.rule", None),
    ]
    negative = did("x", within=timedelta(seconds=5))
    negative.event.window.within.seconds = -5
    cases.append((negative, "segment.rule.event.window.within", None))
    for rule, path, reason in cases:
        error = await refused(create(stub, "bad", rule))
        assert error.code == grpc.StatusCode.INVALID_ARGUMENT, path
        assert path in error.fields, (path, error.fields)
        if reason:
            assert error.reason == reason
    listed = await stub.ListSegments(messages_pb2.ListSegmentsRequest(app_id=APP))
    assert list(listed.segments) == []  # nothing written
    error = await refused(members(stub, attr("vip", "LT", True)))
    assert "target.rule.attribute.filter.value" in error.fields
    error = await refused(
        stub.CheckMembership(messages_pb2.CheckMembershipRequest(app_id=APP, user_ids=["u"]))
    )
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT


# Lists.


async def test_list_membership_is_last_write_wins_and_lists_are_listed(stub: Stub) -> None:
    t1, t2, t3 = (NOW - timedelta(minutes=m) for m in (30, 20, 10))
    await make_list(stub, "l1")
    added = await add(stub, "l1", "a", "b", "a", at=t2)
    assert (added.added, added.already_present, added.superseded) == (2, 0, 0)
    again = await add(stub, "l1", "a", "c", at=t2)
    assert (again.added, again.already_present) == (1, 1)
    late = await remove(stub, "l1", "a", "z", at=t1)
    assert (late.removed, late.not_present, late.superseded) == (0, 1, 1)
    removed = await remove(stub, "l1", "b", at=t3)
    assert removed.removed == 1
    stale_add = await add(stub, "l1", "b", at=t2)
    assert stale_add.superseded == 1
    assert await members(stub, in_list("l1")) == ["a", "c"]
    created = await stub.CreateList(
        messages_pb2.CreateListRequest(
            app_id=APP, list=resources_pb2.StaticList(list_id="l1", name="l1")
        )
    )
    assert created.replayed
    assert created.list.member_count == 2
    error = await refused(
        stub.CreateList(
            messages_pb2.CreateListRequest(
                app_id=APP, list=resources_pb2.StaticList(list_id="l1", name="other")
            )
        )
    )
    assert error.reason == "ID_TAKEN"
    error = await refused(add(stub, "nope", "a"))
    assert error.code == grpc.StatusCode.NOT_FOUND
    error = await refused(add(stub, "l1", *[f"u{i}" for i in range(10_001)]))
    assert error.reason == "BATCH_SIZE"
    await make_list(stub, "sup", resources_pb2.LIST_KIND_SUPPRESSION)
    only = await stub.ListLists(
        messages_pb2.ListListsRequest(app_id=APP, kind=resources_pb2.LIST_KIND_SUPPRESSION)
    )
    assert [item.list_id for item in only.lists] == ["sup"]
    everything = await stub.ListLists(messages_pb2.ListListsRequest(app_id=APP))
    assert [item.list_id for item in everything.lists] == ["l1", "sup"]


async def test_concurrent_creates_of_one_segment_make_one_and_replay_the_rest(
    stub: Stub,
) -> None:
    replies = await asyncio.gather(*(create(stub, "same", attr("x", "EXISTS")) for _ in range(6)))
    assert sorted(reply.replayed for reply in replies) == [False] + [True] * 5
    keyed = await asyncio.gather(
        *(create(stub, "", attr("y", "EXISTS"), key="one-key") for _ in range(6))
    )
    assert len({reply.segment.segment_id for reply in keyed}) == 1
    assert sorted(reply.replayed for reply in keyed) == [False] + [True] * 5
