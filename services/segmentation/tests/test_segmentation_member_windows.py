"""Members pages read a window of known users at a time (storage.segments
``members_page(..., window=...)``), on SQLite and PostgreSQL: with windows as small as
one user, over users known only by a profile, only by events or only by a list
membership (a removed membership makes nobody known), with gaps and ids whose
code-point order differs from a dictionary's, every page is the next ``limit`` members
in code-point order, resuming after any member gives exactly the rest, and nothing is
repeated or missed. A window bound taken one user too early or too late (``<`` for
``<=``, or the next window starting at its bound instead of after it) misses or repeats
the user at the bound, who is a member in these worlds."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from sqlalchemy import text

from pushwarden.common.v1 import values_pb2
from pushwarden.runtime.app import open_database
from pushwarden.runtime.clock import shift_clock_file
from pushwarden.runtime.db import Database
from pushwarden.runtime.servicetest import local_test_config, serving
from pushwarden.runtime.validation import Violations
from pushwarden.segmentation.v1 import messages_pb2, resources_pb2, segmentation_pb2_grpc
from pushwarden.services.segmentation.bootstrap import MIGRATIONS, bootstrap
from pushwarden.services.segmentation.config import SegmentationConfig
from pushwarden.services.segmentation.domain.rules import Node, parse_rule
from pushwarden.services.segmentation.domain.values import to_timestamp
from pushwarden.services.segmentation.models import CODE_POINT_INDEXES
from pushwarden.services.segmentation.storage.rules_sql import Scope
from pushwarden.services.segmentation.storage.uow import unit_of_work_factory

if TYPE_CHECKING:
    from pushwarden.segmentation.v1.segmentation_pb2_grpc import (
        SegmentationServiceAsyncStub as Stub,
    )

pytestmark = pytest.mark.storage

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
APP = "shop"
OTHER_APP = "elsewhere"
Rule = resources_pb2.Rule
# First letters whose code-point order ("A" < "Z" < "a" < "z" < "é" < "ж") is not a
# dictionary's; ids are drawn with gaps from 0..99 under each.
PREFIXES = ("A", "Z", "a", "z", "é", "ж")


@dataclass(frozen=True, slots=True)
class World:
    """Who is known and how, and who the subset rule selects."""

    known: list[str]  # code-point order
    chosen: list[str]  # members of SUBSET, code-point order


def subset_rule() -> Rule:
    """A member by any of the three sources: the profile flag, a purchase, the vip list."""
    flag = values_pb2.PropertyFilter(
        name="chosen",
        operator=values_pb2.OPERATOR_EQ,
        value=values_pb2.AttributeValue(bool_value=True),
    )
    return Rule(
        any=resources_pb2.RuleGroup(
            rules=[
                Rule(attribute=resources_pb2.AttributePredicate(filter=flag)),
                Rule(event=resources_pb2.EventPredicate(event_name="purchase")),
                Rule(list=resources_pb2.ListMembership(list_id="vip")),
            ]
        )
    )


def everyone_rule() -> Rule:
    """Every known user (nobody has the attribute ``never``)."""
    never = values_pb2.PropertyFilter(name="never", operator=values_pb2.OPERATOR_EXISTS)
    return Rule(negate=Rule(attribute=resources_pb2.AttributePredicate(filter=never)))


def root(rule: Rule) -> Node:
    parsed = parse_rule(rule, "rule", Violations())
    assert parsed is not None
    return parsed.root


async def seed(stub: Stub, rng: random.Random) -> World:
    """Users of three kinds (profile only, events only, list only) in random order."""
    ids = [f"{p}{n:02d}" for p in PREFIXES for n in rng.sample(range(100), 9)]
    rng.shuffle(ids)
    kinds = {user: ("profile", "events", "list")[i % 3] for i, user in enumerate(ids)}
    chosen = {user for user in ids if rng.random() < 0.5}
    profiles = [u for u in ids if kinds[u] == "profile"]
    await stub.UpsertProfiles(
        messages_pb2.UpsertProfilesRequest(
            app_id=APP,
            profiles=[
                resources_pb2.ProfileUpdate(
                    user_id=user,
                    set_attributes={"chosen": values_pb2.AttributeValue(bool_value=user in chosen)},
                )
                for user in profiles
            ],
        )
    )
    events = [
        resources_pb2.Event(
            event_id=f"e-{user}-{n}",
            user_id=user,
            name="purchase" if user in chosen and n == 0 else "view",
            occurred_at=to_timestamp(NOW - timedelta(hours=1 + n)),
        )
        for user in ids
        if kinds[user] == "events"
        for n in range(rng.randrange(1, 4))  # several events per user: DISTINCT matters
    ]
    await stub.TrackEvents(messages_pb2.TrackEventsRequest(app_id=APP, events=events))
    for list_id in ("vip", "other", "gone"):
        await stub.CreateList(
            messages_pb2.CreateListRequest(
                app_id=APP, list=resources_pb2.StaticList(list_id=list_id, name=list_id)
            )
        )
    listed = [u for u in ids if kinds[u] == "list"]
    for user in listed:
        await stub.AddToList(
            messages_pb2.AddToListRequest(
                app_id=APP, list_id="vip" if user in chosen else "other", user_ids=[user]
            )
        )
    # Known by another list too: one user, two memberships, counted once.
    await stub.AddToList(messages_pb2.AddToListRequest(app_id=APP, list_id="gone", user_ids=listed))
    # Added then removed, and nothing else: not known at all, so never a member.
    removed = [f"{p}x" for p in PREFIXES]
    await stub.AddToList(
        messages_pb2.AddToListRequest(app_id=APP, list_id="gone", user_ids=removed)
    )
    await stub.RemoveFromList(
        messages_pb2.RemoveFromListRequest(app_id=APP, list_id="gone", user_ids=removed)
    )
    # Another app's users fall between ours and must not bound or fill a window.
    await stub.UpsertProfiles(
        messages_pb2.UpsertProfilesRequest(
            app_id=OTHER_APP,
            profiles=[
                resources_pb2.ProfileUpdate(user_id=f"{p}{n:02d}x")
                for p in PREFIXES
                for n in range(0, 100, 7)
            ],
        )
    )
    return World(known=sorted(ids), chosen=sorted(chosen))


@pytest.fixture
async def world(any_database_url: str, tmp_path: Path) -> AsyncIterator[tuple[World, Database]]:
    clock = tmp_path / "clock.json"
    shift_clock_file(clock, to=NOW, speed=1.0)
    config = local_test_config(SegmentationConfig, any_database_url, CLOCK_FILE=str(clock))
    async with serving(bootstrap(config)) as channel:
        seeded = await seed(
            segmentation_pb2_grpc.SegmentationServiceStub(channel), random.Random(7)
        )
    database = open_database(config, MIGRATIONS)
    try:
        yield seeded, database
    finally:
        await database.dispose()


async def page(
    database: Database, rule: Rule, after: str | None, limit: int, window: int
) -> list[str]:
    uow = unit_of_work_factory(database)
    async with uow(read_only=True, snapshot=True) as work:
        scope = Scope(APP, NOW, work.dialect, {})
        return await work.segments.members_page(root(rule), scope, after, limit, window=window)


async def stream(database: Database, rule: Rule, limit: int, window: int) -> list[list[str]]:
    """Every page, each resumed after the last member of the one before."""
    pages: list[list[str]] = []
    after: str | None = None
    while True:
        found = await page(database, rule, after, limit, window)
        pages.append(found)
        if len(found) < limit:
            return pages
        after = found[-1]


@pytest.mark.parametrize("window", [1, 3, 1000])
async def test_small_windows_page_every_member_once_in_code_point_order(
    world: tuple[World, Database], window: int
) -> None:
    seeded, database = world
    for rule, expected in ((everyone_rule(), seeded.known), (subset_rule(), seeded.chosen)):
        assert 10 < len(expected) < len(seeded.known) or expected == seeded.known
        for limit in (1, 7, len(expected) + 1):
            pages = await stream(database, rule, limit, window)
            assert all(len(p) == limit for p in pages[:-1]), (limit, window)
            flat = [user for p in pages for user in p]
            assert flat == expected, (limit, window)
        # Resuming after any member (or any known non-member) gives exactly the rest.
        for after in seeded.known[:: max(1, len(seeded.known) // 6)]:
            rest = [user for user in expected if user > after]
            assert await page(database, rule, after, len(expected), window) == rest, after


async def test_a_page_stops_at_its_limit_inside_a_window(world: tuple[World, Database]) -> None:
    seeded, database = world
    # One window holds every user; the page still ends at its limit, and resumes.
    first = await page(database, everyone_rule(), None, 5, window=10_000)
    assert first == seeded.known[:5]
    assert await page(database, everyone_rule(), first[-1], 5, window=10_000) == seeded.known[5:10]
    with pytest.raises(ValueError, match="window"):
        await page(database, everyone_rule(), None, 5, window=0)


async def test_postgresql_has_the_code_point_indexes_the_windows_walk(
    world: tuple[World, Database],
) -> None:
    _, database = world
    uow = unit_of_work_factory(database)
    async with uow(read_only=True) as work:
        if work.dialect != "postgresql":
            pytest.skip("SQLite orders ids by code point in its ordinary indexes")
        found = {
            str(name): str(definition)
            for name, definition in await work.session.execute(
                text("SELECT indexname, indexdef FROM pg_indexes WHERE indexname LIKE 'ix_%'")
            )
        }
    for name in CODE_POINT_INDEXES:
        assert 'COLLATE "C"' in found[name], name
