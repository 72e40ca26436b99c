"""Profiles and events in, through real gRPC on SQLite and PostgreSQL: UpsertProfiles
(typed attributes, partial updates, removal, replace, last write wins by client_time,
the attribute limit), GetProfiles, TrackEvents (resends, skewed items rejected alone)
and their documented errors."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import pytest

from pushwarden.common.v1 import types_pb2, values_pb2
from pushwarden.runtime.clock import shift_clock_file
from pushwarden.runtime.servicetest import local_test_config, rich_error, serving
from pushwarden.segmentation.v1 import messages_pb2, resources_pb2, segmentation_pb2_grpc
from pushwarden.services.segmentation.bootstrap import bootstrap
from pushwarden.services.segmentation.config import SegmentationConfig
from pushwarden.services.segmentation.domain.values import to_timestamp

if TYPE_CHECKING:
    from pushwarden.segmentation.v1.segmentation_pb2_grpc import (
        SegmentationServiceAsyncStub as Stub,
    )

APPLIED = types_pb2.ITEM_STATUS_APPLIED
UNCHANGED = types_pb2.ITEM_STATUS_UNCHANGED
REJECTED = types_pb2.ITEM_STATUS_REJECTED
NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
async def stub(any_database_url: str, tmp_path: Path) -> AsyncIterator[Stub]:
    clock = tmp_path / "clock.json"
    shift_clock_file(clock, to=NOW, speed=1.0)
    config = local_test_config(SegmentationConfig, any_database_url, CLOCK_FILE=str(clock))
    async with serving(bootstrap(config)) as channel:
        yield segmentation_pb2_grpc.SegmentationServiceStub(channel)


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


def plain(value: values_pb2.AttributeValue) -> Any:
    which = value.WhichOneof("kind")
    if which == "timestamp_value":
        return value.timestamp_value.ToDatetime(UTC)
    if which == "string_list_value":
        return list(value.string_list_value.values)
    return getattr(value, str(which))


def update(
    user: str,
    *,
    at: datetime | None = None,
    remove: tuple[str, ...] = (),
    replace: bool = False,
    **attributes: Any,
) -> resources_pb2.ProfileUpdate:
    proto = resources_pb2.ProfileUpdate(
        user_id=user,
        set_attributes={name: val(v) for name, v in attributes.items()},
        remove_attributes=list(remove),
        replace=replace,
    )
    if at is not None:
        proto.client_time.CopyFrom(to_timestamp(at))
    return proto


async def upsert(
    stub: Stub, *updates: resources_pb2.ProfileUpdate, app: str = "shop"
) -> list[types_pb2.ItemResult]:
    reply = await stub.UpsertProfiles(
        messages_pb2.UpsertProfilesRequest(app_id=app, profiles=list(updates))
    )
    return list(reply.results)


async def attributes(stub: Stub, user: str, app: str = "shop") -> dict[str, Any] | None:
    reply = await stub.GetProfiles(messages_pb2.GetProfilesRequest(app_id=app, user_ids=[user]))
    found = reply.users[0]
    if not found.found:
        return None
    return {name: plain(v) for name, v in found.profile.attributes.items()}


def event(
    event_id: str, user: str, name: str, at: datetime, **properties: Any
) -> resources_pb2.Event:
    return resources_pb2.Event(
        event_id=event_id,
        user_id=user,
        name=name,
        occurred_at=to_timestamp(at),
        properties={k: val(v) for k, v in properties.items()},
    )


async def track(
    stub: Stub, *events: resources_pb2.Event, app: str = "shop"
) -> list[types_pb2.ItemResult]:
    reply = await stub.TrackEvents(messages_pb2.TrackEventsRequest(app_id=app, events=events))
    return list(reply.results)


async def test_typed_attributes_round_trip_and_partial_updates_keep_the_rest(stub: Stub) -> None:
    seen = datetime(2026, 5, 1, 8, 30, 15, 123456, tzinfo=UTC)
    first = await upsert(
        stub,
        update("u1", plan="pro", score=4.5, vip=True, last_seen=seen, tags=["a", "b"]),
        update("u2"),
    )
    assert [(r.id, r.status) for r in first] == [("u1", APPLIED), ("u2", APPLIED)]
    assert await attributes(stub, "u1") == {
        "plan": "pro",
        "score": 4.5,
        "vip": True,
        "last_seen": seen,
        "tags": ["a", "b"],
    }
    assert await attributes(stub, "u2") == {}  # created empty
    assert await attributes(stub, "nobody") is None
    partial = await upsert(stub, update("u1", score=5, remove=("vip", "absent")))
    assert partial[0].status == APPLIED
    assert await attributes(stub, "u1") == {
        "plan": "pro",
        "score": 5.0,
        "last_seen": seen,
        "tags": ["a", "b"],
    }
    same = await upsert(stub, update("u1", plan="pro"), update("u2", remove=("nothing",)))
    assert [r.status for r in same] == [UNCHANGED, UNCHANGED]
    retyped = await upsert(stub, update("u1", plan=3))
    assert retyped[0].status == APPLIED
    assert (await attributes(stub, "u1") or {})["plan"] == 3.0  # a new type replaces the old
    replaced = await upsert(stub, update("u1", replace=True, city="Lyon"))
    assert replaced[0].status == APPLIED
    assert await attributes(stub, "u1") == {"city": "Lyon"}


async def test_last_write_wins_per_attribute_by_client_time(stub: Stub) -> None:
    t1, t2, t3 = (NOW - timedelta(minutes=m) for m in (30, 20, 10))
    await upsert(stub, update("u1", at=t2, plan="pro", city="Paris"))
    late = await upsert(stub, update("u1", at=t1, plan="free", country="FR"))
    assert late[0].status == APPLIED  # country is new; plan stays (older write)
    assert await attributes(stub, "u1") == {"plan": "pro", "city": "Paris", "country": "FR"}
    stale = await upsert(stub, update("u1", at=t1, plan="free"))
    assert stale[0].status == UNCHANGED
    await upsert(stub, update("u1", at=t3, remove=("city",)))
    resurrect = await upsert(stub, update("u1", at=t2, city="Nice"))
    assert resurrect[0].status == UNCHANGED  # the newer removal wins over a late set
    assert await attributes(stub, "u1") == {"plan": "pro", "country": "FR"}
    absent_removed = await upsert(stub, update("u2", at=t3, remove=("x",)))
    assert absent_removed[0].status == APPLIED  # the profile is new
    assert (await upsert(stub, update("u2", at=t1, x="late")))[0].status == UNCHANGED
    assert await attributes(stub, "u2") == {}
    older_replace = await upsert(stub, update("u1", at=t2, replace=True, plan="pro"))
    assert older_replace[0].status == APPLIED  # country (t1) is older: removed
    assert await attributes(stub, "u1") == {"plan": "pro"}
    older_still = await upsert(stub, update("u1", at=t1, replace=True, plan="free"))
    assert older_still[0].status == UNCHANGED  # nothing is older than t1 now
    assert await attributes(stub, "u1") == {"plan": "pro"}


async def test_an_update_over_the_attribute_limit_is_rejected_alone(stub: Stub) -> None:
    for batch in range(5):
        names: dict[str, Any] = {f"a{batch}_{i}": i for i in range(100)}
        assert (await upsert(stub, update("big", **names)))[0].status == APPLIED
    results = await upsert(stub, update("big", extra=1), update("new", n=1))
    assert results[0].status == REJECTED
    assert results[0].field == "profiles[0].set_attributes"
    assert results[1].status == APPLIED
    assert len(await attributes(stub, "big") or {}) == 500


async def test_bad_profile_batches_are_refused_whole_with_every_path(stub: Stub) -> None:
    bad_name: dict[str, Any] = {"bad name": 1}
    bad = [
        update("u1", **bad_name),
        update("u1", plan="x"),
        update(" u3", remove=("plan",), plan="x"),
        resources_pb2.ProfileUpdate(
            user_id="u4", set_attributes={"n": values_pb2.AttributeValue()}
        ),
        update("u5", n=float("nan")),
    ]
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await upsert(stub, *bad)
    error = rich_error(raised.value)
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert set(error.fields) == {
        "profiles[0].set_attributes['bad name']",
        "profiles[1].user_id",
        "profiles[2].user_id",
        "profiles[2].remove_attributes[0]",
        "profiles[3].set_attributes['n']",
        "profiles[4].set_attributes['n']",
    }
    assert await attributes(stub, "u5") is None  # nothing written
    for count in (0, 1001):
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await upsert(stub, *[update(f"u{i}") for i in range(count)])
        assert rich_error(raised.value).reason == "BATCH_SIZE"


async def test_events_resend_is_unchanged_and_skewed_items_are_rejected_alone(
    stub: Stub,
) -> None:
    hour_ago = NOW - timedelta(hours=1)
    first = await track(
        stub,
        event("e1", "u1", "purchase", hour_ago, amount=12.5, sku=["a", "b"]),
        event("e2", "u1", "view", NOW + timedelta(minutes=4)),
        event("e3", "u1", "view", NOW + timedelta(minutes=6)),
        event("e4", "u2", "view", NOW - timedelta(days=91)),
        event("e1", "u1", "other", hour_ago),  # repeated in the batch: first wins
    )
    assert [(r.id, r.status) for r in first] == [
        ("e1", APPLIED),
        ("e2", APPLIED),
        ("e3", REJECTED),
        ("e4", REJECTED),
        ("e1", UNCHANGED),
    ]
    assert first[2].field == "events[2].occurred_at"
    assert "future" in first[2].message
    assert "retention" in first[3].message
    again = await track(stub, event("e1", "u1", "different", NOW), event("e5", "u1", "x", NOW))
    assert [r.status for r in again] == [UNCHANGED, APPLIED]
    other_app = await track(stub, event("e1", "u1", "purchase", NOW), app="news")
    assert other_app[0].status == APPLIED  # ids are unique per app
    reply = await stub.GetProfiles(
        messages_pb2.GetProfilesRequest(
            app_id="shop", user_ids=["u1", "u2"], latest_event_names=["purchase", "view"]
        )
    )
    u1, u2 = reply.users
    assert not u1.found
    assert not u2.found
    assert [(e.name, e.event_id) for e in u1.latest_events] == [("purchase", "e1"), ("view", "e2")]
    purchase = u1.latest_events[0]
    assert plain(purchase.properties["amount"]) == 12.5
    assert plain(purchase.properties["sku"]) == ["a", "b"]
    assert purchase.received_at.ToDatetime(UTC) >= NOW
    assert purchase.app_id == "shop"
    assert purchase.sequence > 0
    assert list(u2.latest_events) == []


async def test_bad_event_batches_are_refused_whole(stub: Stub) -> None:
    bad = [
        resources_pb2.Event(event_id="e1", user_id="u1", name="x"),
        event("", "u1", "x", NOW),
        event("e3", "u1", "", NOW, **{"bad prop": 1}),
    ]
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await track(stub, *bad)
    error = rich_error(raised.value)
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert set(error.fields) == {
        "events[0].occurred_at",
        "events[1].event_id",
        "events[2].name",
        "events[2].properties['bad prop']",
    }
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await track(stub, *[event(f"e{i}", "u", "x", NOW) for i in range(1001)])
    assert rich_error(raised.value).reason == "BATCH_SIZE"
    assert (await track(stub, event("e1", "u1", "x", NOW)))[0].status == APPLIED


async def test_concurrent_writers_to_one_profile_end_with_the_newest_write(stub: Stub) -> None:
    times = [NOW - timedelta(minutes=m) for m in range(20, 0, -1)]
    shuffled = times[1::2] + times[::2]
    await asyncio.gather(
        *(upsert(stub, update("shared", at=at, stamp=at.isoformat())) for at in shuffled)
    )
    assert await attributes(stub, "shared") == {"stamp": times[-1].isoformat()}
