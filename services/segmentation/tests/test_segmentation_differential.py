"""Differential property test, on SQLite and PostgreSQL: hypothesis draws a world
(profiles, events, a list) and rule trees; the members the service computes in the
database (EvaluateSegment in small pages, and CountSegment) equal those of a plain
Python evaluation of the same rules written here, independently of the SQL compiler.

Values, instants and windows come from small grids so that equal values, events exactly
on a window boundary, type mismatches and missing attributes are common. The test
reports (and requires at least 30 % of) rule trees that select neither nobody nor every
known user, so that agreement is not won on trivial trees (run with ``-s`` to see it).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import threading
from collections.abc import Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import grpc
from google.protobuf.duration_pb2 import Duration
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pushwarden.common.v1 import types_pb2, values_pb2
from pushwarden.runtime.clock import shift_clock_file
from pushwarden.runtime.servicetest import local_test_config, serving
from pushwarden.segmentation.v1 import messages_pb2, resources_pb2, segmentation_pb2_grpc
from pushwarden.services.segmentation.bootstrap import bootstrap
from pushwarden.services.segmentation.config import SegmentationConfig
from pushwarden.services.segmentation.domain.values import to_timestamp

if TYPE_CHECKING:
    from pushwarden.segmentation.v1.segmentation_pb2_grpc import (
        SegmentationServiceAsyncStub as Stub,
    )

T = TypeVar("T")
NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)
USERS = [f"u{i}" for i in range(6)]
EXAMPLES = 25  # worlds
TREES = 4  # rule trees per world
MIN_SPLIT_SHARE = 0.30

# Plain values: str, float, bool, datetime, tuple[str, ...] (a string list).
strings = st.sampled_from(["x", "xy", "y", "é", "", "Z"])
numbers = st.sampled_from([1.5, 0.0, 2.0, -1.0])
instants = st.sampled_from([NOW - d * DAY for d in (0, 1, 7, 30)])
# What a name mostly holds: few values, so that predicates split the population.
common_strings = st.sampled_from(["x", "y", "xy"])
common_numbers = st.sampled_from([0.0, 1.5])
common_instants = st.sampled_from([NOW - DAY, NOW - 7 * DAY])
string_lists = st.lists(st.sampled_from(["x", "y", "z"]), max_size=3, unique=True).map(tuple)
values = st.one_of(strings, numbers, st.booleans(), instants, string_lists)


def kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, datetime):
        return "timestamp"
    return "list"


# Each name mostly holds one kind, sometimes another (a type mismatch never matches).
NATIVE = {
    "a": common_strings,
    "b": common_numbers,
    "c": common_instants,
    "k": st.one_of(common_strings, common_numbers),
}


def named_values(name: str) -> st.SearchStrategy[Any]:
    return st.one_of(*[NATIVE[name]] * 5, values)


# Rules as plain tuples.
@st.composite
def filters(draw: st.DrawFn, names: list[str]) -> tuple[Any, ...]:
    name = draw(st.sampled_from(names))
    op = draw(
        st.sampled_from(
            # Hypothesis favours the first choices: lead with ones that split a population.
            ["GTE", "LTE", "EQ", "CONTAINS", "NEQ", "GT", "LT", "IN", "PREFIX", "EXISTS"]
        )
    )
    native = NATIVE[name]
    if op in ("EQ", "NEQ"):
        operands: list[Any] = [draw(named_values(name))]
    elif op in ("GT", "GTE", "LT", "LTE"):
        operands = [draw(st.one_of(*[native] * 5, strings, numbers, instants))]
    elif op == "IN":
        pool = draw(st.sampled_from([native, native, strings, numbers, st.booleans(), instants]))
        operands = draw(st.lists(pool, min_size=1, max_size=3))
        # One kind per list, as the contract requires ("k" mixes kinds across users).
        operands = [v for v in operands if kind(v) == kind(operands[0])]
    elif op in ("CONTAINS", "PREFIX"):
        operands = [draw(st.sampled_from(["", "x", "y", "é"]))]
    else:
        operands = []
    return ("filter", name, op, tuple(operands))


windows = st.one_of(
    st.none(),
    st.sampled_from([1, 7, 30]).map(lambda d: ("within", d * DAY)),
    st.sampled_from([(40, 30), (31, 7), (30, 1), (8, 0), (1, 0)]).map(
        lambda days: ("between", NOW - days[0] * DAY, NOW - days[1] * DAY)
    ),
)
references = st.one_of(
    st.sampled_from([1, 7, 30]).map(lambda d: ("ago", d * DAY)),
    instants.map(lambda t: ("instant", t)),
)
leaves = st.one_of(
    st.just(("list",)),
    st.builds(lambda f: ("attr", f), filters(["a", "b", "c"])),
    st.builds(
        lambda name, did, low, extra, window, flts: (
            "event",
            name,
            did,
            low,
            None if extra is None else max(low, 1) + extra,
            window,
            tuple(flts),
        ),
        st.sampled_from(["p", "q"]),
        st.booleans(),
        st.integers(0, 3),
        st.one_of(st.none(), st.integers(0, 2)),
        windows,
        st.lists(filters(["k"]), max_size=1),
    ),
    st.builds(
        lambda name, before, ref, never, flts: (
            "recency_event",
            name,
            before,
            ref,
            never,
            tuple(flts),
        ),
        st.sampled_from(["p", "q"]),
        st.booleans(),
        references,
        st.booleans(),
        st.lists(filters(["k"]), max_size=1),
    ),
    st.builds(
        lambda before, ref, never: ("recency_attr", "c", before, ref, never),
        st.booleans(),
        references,
        st.booleans(),
    ),
)


def groups(children: st.SearchStrategy[tuple[Any, ...]]) -> st.SearchStrategy[tuple[Any, ...]]:
    every = st.lists(children, min_size=1, max_size=3).map(lambda c: ("all", tuple(c)))
    some = st.lists(children, min_size=1, max_size=3).map(lambda c: ("any", tuple(c)))
    negated = children.map(lambda c: ("not", c))
    # Fewer negations: a negated leaf that selects nobody selects everybody.
    return st.one_of(every, some, every, some, negated)


rules = st.recursive(leaves, groups, max_leaves=6)

POOLS: dict[str, tuple[list[Any], list[Any]]] = {
    "a": (["x", "y", "xy"], ["", "Z", "é", 1.5, True, ("x",)]),
    "b": ([0.0, 1.5], [2.0, -1.0, "x", False]),
    "c": ([NOW - DAY, NOW - 7 * DAY], [NOW, NOW - 30 * DAY, "x", 0.0]),
    "k": (["x", "y", 0.0, 1.5], ["", "é", True, ("x", "y"), NOW]),
}
EVENT_DAYS = [0, 1, 2, 3, 5, 7, 8, 12, 20, 29, 30, 31, 40]


def pick(rnd: random.Random, name: str) -> Any:
    """Mostly one of the name's common values, sometimes an odd one or another type."""
    common, odd = POOLS[name]
    return rnd.choice(common if rnd.random() < 0.85 else odd)


def make_world(rnd: random.Random, as_of: datetime) -> World:
    """A population drawn uniformly (hypothesis' own draws favour their first choices,
    which makes every user alike and most predicates select nobody or everybody)."""
    people = {
        user: {
            name: pick(rnd, name)
            for name, chance in (("a", 0.9), ("b", 0.6), ("c", 0.6))
            if rnd.random() < chance
        }
        for user in USERS
        if rnd.random() < 0.8
    }
    happened = [
        (
            rnd.choice(USERS),
            rnd.choice(["p", "q"]),
            NOW - rnd.choice(EVENT_DAYS) * DAY,
            {"k": pick(rnd, "k")} if rnd.random() < 0.7 else {},
        )
        for _ in range(rnd.randint(6, 20))
    ]
    listed = set(rnd.sample(USERS, rnd.randint(1, 4)))
    return World(people, happened, listed, as_of)


as_ofs = st.sampled_from([NOW, NOW - DAY, NOW, NOW - 7 * DAY])


# The reference evaluator.
def matches(stored: Any, flt: tuple[Any, ...]) -> bool:
    _, _, op, operands = flt
    if stored is None:
        return False
    if op == "EXISTS":
        return True
    if op == "CONTAINS":
        return kind(stored) in ("string", "list") and operands[0] in stored
    if op == "PREFIX":
        return kind(stored) == "string" and stored.startswith(operands[0])
    if op == "IN":
        return any(kind(stored) == kind(o) and stored == o for o in operands)
    operand = operands[0]
    if kind(stored) != kind(operand):
        return False
    outcome: bool = {
        "EQ": stored == operand,
        "NEQ": stored != operand,
        "GT": stored > operand,
        "GTE": stored >= operand,
        "LT": stored < operand,
        "LTE": stored <= operand,
    }[op]
    return outcome


@dataclass
class World:
    profiles: dict[str, dict[str, Any]]
    events: list[tuple[str, str, datetime, dict[str, Any]]]
    list_members: set[str]
    as_of: datetime
    known: set[str] = field(init=False)

    def __post_init__(self) -> None:
        self.known = set(self.profiles) | {e[0] for e in self.events} | self.list_members

    def reference(self, ref: tuple[str, Any]) -> datetime:
        instant: datetime = self.as_of - ref[1] if ref[0] == "ago" else ref[1]
        return instant

    def times(self, user: str, name: str, flts: tuple[Any, ...]) -> list[datetime]:
        return [
            at
            for who, what, at, props in self.events
            if who == user
            and what == name
            and at < self.as_of
            and all(matches(props.get(f[1]), f) for f in flts)
        ]

    def holds(self, rule: tuple[Any, ...], user: str) -> bool:
        tag = rule[0]
        if tag == "all":
            return all(self.holds(child, user) for child in rule[1])
        if tag == "any":
            return any(self.holds(child, user) for child in rule[1])
        if tag == "not":
            return not self.holds(rule[1], user)
        if tag == "attr":
            flt = rule[1]
            return matches(self.profiles.get(user, {}).get(flt[1]), flt)
        if tag == "event":
            _, name, did, low, high, window, flts = rule
            times = self.times(user, name, flts)
            if window is not None and window[0] == "within":
                times = [t for t in times if t >= self.as_of - window[1]]
            elif window is not None:
                times = [t for t in times if window[1] <= t < window[2]]
            enough = len(times) >= max(low, 1) and (high is None or len(times) <= high)
            return enough if did else not enough
        if tag == "recency_event":
            _, name, before, ref, never, flts = rule
            times = self.times(user, name, flts)
            since = any(t >= self.reference(ref) for t in times)
            if not before:
                return since
            return not since and (bool(times) or never)
        if tag == "recency_attr":
            _, name, before, ref, never = rule
            stored = self.profiles.get(user, {}).get(name)
            if not isinstance(stored, datetime):
                return bool(before and never)
            return stored < self.reference(ref) if before else stored >= self.reference(ref)
        return user in self.list_members

    def members(self, rule: tuple[Any, ...]) -> list[str]:
        return sorted(user for user in self.known if self.holds(rule, user))


worlds = st.builds(make_world, st.randoms(use_true_random=False), as_ofs)


# Plain values and rules as the contract's messages.
def val(value: Any) -> values_pb2.AttributeValue:
    if isinstance(value, bool):
        return values_pb2.AttributeValue(bool_value=value)
    if isinstance(value, float):
        return values_pb2.AttributeValue(number_value=value)
    if isinstance(value, datetime):
        return values_pb2.AttributeValue(timestamp_value=to_timestamp(value))
    if isinstance(value, tuple):
        return values_pb2.AttributeValue(string_list_value=values_pb2.StringList(values=value))
    return values_pb2.AttributeValue(string_value=value)


def filter_proto(flt: tuple[Any, ...]) -> values_pb2.PropertyFilter:
    _, name, op, operands = flt
    proto = values_pb2.PropertyFilter(
        name=name, operator=values_pb2.Operator.Value(f"OPERATOR_{op}")
    )
    if op == "IN":
        proto.values.extend(val(o) for o in operands)
    elif operands:
        proto.value.CopyFrom(val(operands[0]))
    return proto


def duration(delta: timedelta) -> Duration:
    return Duration(seconds=int(delta.total_seconds()))


def rule_proto(rule: tuple[Any, ...]) -> resources_pb2.Rule:
    tag = rule[0]
    if tag in ("all", "any"):
        group = resources_pb2.RuleGroup(rules=[rule_proto(child) for child in rule[1]])
        return resources_pb2.Rule(all=group) if tag == "all" else resources_pb2.Rule(any=group)
    if tag == "not":
        return resources_pb2.Rule(negate=rule_proto(rule[1]))
    if tag == "attr":
        return resources_pb2.Rule(
            attribute=resources_pb2.AttributePredicate(filter=filter_proto(rule[1]))
        )
    if tag == "event":
        _, name, did, low, high, window, flts = rule
        event = resources_pb2.EventPredicate(
            event_name=name,
            occurrence=resources_pb2.OCCURRENCE_DID if did else resources_pb2.OCCURRENCE_DID_NOT,
            min_count=low,
            property_filters=[filter_proto(f) for f in flts],
        )
        if high is not None:
            event.max_count = high
        if window is not None and window[0] == "within":
            event.window.within.CopyFrom(duration(window[1]))
        elif window is not None:
            event.window.between.start.CopyFrom(to_timestamp(window[1]))
            event.window.between.end.CopyFrom(to_timestamp(window[2]))
        return resources_pb2.Rule(event=event)
    if tag in ("recency_event", "recency_attr"):
        before, ref, never = rule[2], rule[3], rule[4]
        recency = resources_pb2.RecencyPredicate(
            comparison=(
                resources_pb2.RECENCY_COMPARISON_BEFORE
                if before
                else resources_pb2.RECENCY_COMPARISON_AFTER
            ),
            include_never=never,
        )
        if tag == "recency_event":
            recency.event_name = rule[1]
            recency.property_filters.extend(filter_proto(f) for f in rule[5])
        else:
            recency.timestamp_attribute = rule[1]
        if ref[0] == "ago":
            recency.ago.CopyFrom(duration(ref[1]))
        else:
            recency.instant.CopyFrom(to_timestamp(ref[1]))
        return resources_pb2.Rule(recency=recency)
    return resources_pb2.Rule(list=resources_pb2.ListMembership(list_id="L"))


class Served:
    """The service running on an event loop of its own thread, so that hypothesis (which
    drives examples synchronously) can call it."""

    def __init__(self, config: SegmentationConfig) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        # Built on the service's own loop: grpc.aio binds to the loop that is running.
        self._serving = self.run(self._build(config))
        channel = self.run(self._serving.__aenter__())
        self.stub: Stub = segmentation_pb2_grpc.SegmentationServiceStub(channel)

    @staticmethod
    async def _build(
        config: SegmentationConfig,
    ) -> contextlib.AbstractAsyncContextManager[grpc.aio.Channel]:
        return serving(bootstrap(config))

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout=60)

    def close(self) -> None:
        try:
            self.run(self._serving.__aexit__(None, None, None))
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout=10)
            self.loop.close()


async def evaluate(
    stub: Stub, app: str, world: World, rules: list[tuple[Any, ...]]
) -> list[tuple[list[str], int]]:
    """Store the world under a fresh app, then select each rule's members."""
    if world.profiles:
        await stub.UpsertProfiles(
            messages_pb2.UpsertProfilesRequest(
                app_id=app,
                profiles=[
                    resources_pb2.ProfileUpdate(
                        user_id=user, set_attributes={k: val(v) for k, v in attributes.items()}
                    )
                    for user, attributes in world.profiles.items()
                ],
            )
        )
    if world.events:
        tracked = await stub.TrackEvents(
            messages_pb2.TrackEventsRequest(
                app_id=app,
                events=[
                    resources_pb2.Event(
                        event_id=f"e{index}",
                        user_id=user,
                        name=name,
                        occurred_at=to_timestamp(at),
                        properties={k: val(v) for k, v in props.items()},
                    )
                    for index, (user, name, at, props) in enumerate(world.events)
                ],
            )
        )
        assert all(r.status == types_pb2.ITEM_STATUS_APPLIED for r in tracked.results)
    await stub.CreateList(
        messages_pb2.CreateListRequest(
            app_id=app, list=resources_pb2.StaticList(list_id="L", name="L")
        )
    )
    if world.list_members:
        await stub.AddToList(
            messages_pb2.AddToListRequest(
                app_id=app, list_id="L", user_ids=sorted(world.list_members)
            )
        )
    return [await select_members(stub, app, world.as_of, rule) for rule in rules]


async def select_members(
    stub: Stub, app: str, as_of: datetime, rule: tuple[Any, ...]
) -> tuple[list[str], int]:
    """EvaluateSegment in small pages, and CountSegment, of an inline rule."""
    target = messages_pb2.SegmentTarget(rule=rule_proto(rule))
    instant = to_timestamp(as_of)
    found: list[str] = []
    request = messages_pb2.EvaluateSegmentRequest(
        app_id=app, target=target, as_of=instant, page_size=3
    )
    async for page in stub.EvaluateSegment(request):
        found += page.user_ids
    counted = await stub.CountSegment(
        messages_pb2.CountSegmentRequest(app_id=app, target=target, as_of=instant)
    )
    return found, counted.count


def test_the_database_selects_what_a_plain_python_evaluation_selects(
    any_database_url: str, tmp_path: Path
) -> None:
    clock = tmp_path / "clock.json"
    shift_clock_file(clock, to=NOW, speed=1.0)
    served = Served(local_test_config(SegmentationConfig, any_database_url, CLOCK_FILE=str(clock)))
    apps = itertools.count()
    outcomes = {"nobody": 0, "everybody": 0, "split": 0}
    try:

        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        )
        @given(worlds, st.lists(rules, min_size=TREES, max_size=TREES))
        def agree(world: World, trees: list[tuple[Any, ...]]) -> None:
            answers = served.run(evaluate(served.stub, f"d{next(apps)}", world, trees))
            for rule, (found, count) in zip(trees, answers, strict=True):
                expected = world.members(rule)
                assert found == expected, rule
                assert count == len(expected)
                if not expected:
                    outcomes["nobody"] += 1
                elif len(expected) == len(world.known):
                    outcomes["everybody"] += 1
                else:
                    outcomes["split"] += 1

        agree()
    finally:
        served.close()
    total = sum(outcomes.values())
    share = outcomes["split"] / total
    print(f"\ndifferential: {total} rule trees, {share:.0%} select some but not all ({outcomes})")
    assert share >= MIN_SPLIT_SHARE, outcomes
