"""Triggers end to end on SQLite and PostgreSQL, with real consent, segmentation and
delivery and the fake APNs: the cart-abandonment example (a purchase of the same cart
cancels it, another cart's does not), across a scheduler restart, suppression lists,
disabling a trigger, re-eligibility, and refused definitions with their field paths."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration

from pushwarden.common.v1 import content_pb2, decision_pb2, types_pb2, values_pb2
from pushwarden.delivery.v1 import messages_pb2 as delivery_messages
from pushwarden.runtime.clock import shift_clock_file
from pushwarden.runtime.servicetest import rich_error
from pushwarden.scheduler.v1 import messages_pb2, resources_pb2
from pushwarden.segmentation.v1 import messages_pb2 as seg_messages
from pushwarden.segmentation.v1 import resources_pb2 as seg_resources
from pushwarden.services.scheduler.domain.triggers import (
    ActiveTrigger,
    StoredFiring,
    condition_holds,
    firing_send_id,
    plan_batch,
)

from .conftest import APP, Platform

pytestmark = pytest.mark.storage

NOW = datetime(2026, 6, 1, 8, 0, tzinfo=UTC)  # 10:00 in Paris, outside quiet hours
_probes = itertools.count(1)


def _string(value: str) -> values_pb2.AttributeValue:
    return values_pb2.AttributeValue(string_value=value)


def cart_abandonment(**overrides: object) -> resources_pb2.Trigger:
    """add_to_cart fires after an hour unless a purchase of the same cart comes first."""
    built = resources_pb2.Trigger(
        name="Cart abandonment",
        event=resources_pb2.EventMatcher(event_name="add_to_cart"),
        delay=Duration(seconds=3600),
        cancel_events=[resources_pb2.EventMatcher(event_name="purchase", correlate_on=["cart_id"])],
        category_id="promos",
        template=resources_pb2.Template(
            content=content_pb2.Content(title="Your cart", body="Still thinking about {{item}}?"),
            placeholders=[
                resources_pb2.Placeholder(
                    name="item", source=resources_pb2.PLACEHOLDER_SOURCE_EVENT_PROPERTY, key="item"
                )
            ],
        ),
    )
    # No ttl: delivery measures a send's expiry against real time, and the tests' clock
    # reads another day.
    for name, value in overrides.items():
        field = getattr(built, name)
        if hasattr(field, "CopyFrom"):
            field.CopyFrom(value)
        else:
            setattr(built, name, value)
    return built


def event(
    event_id: str, user_id: str, name: str, at: datetime, **properties: str
) -> seg_resources.Event:
    built = seg_resources.Event(
        event_id=event_id,
        user_id=user_id,
        name=name,
        properties={key: _string(value) for key, value in properties.items()},
    )
    built.occurred_at.FromDatetime(at)
    return built


async def track(platform: Platform, *events: seg_resources.Event) -> None:
    answer = await platform.segmentation.TrackEvents(
        seg_messages.TrackEventsRequest(app_id=APP, events=list(events))
    )
    assert [r.id for r in answer.results] == [e.event_id for e in events]
    assert all(r.status in (types_pb2.ITEM_STATUS_APPLIED,) for r in answer.results), answer


async def record(scheduler: object, send_id: str) -> resources_pb2.ContactRecord | None:
    try:
        answer = await scheduler.GetSend(  # type: ignore[attr-defined]
            messages_pb2.GetSendRequest(app_id=APP, send_id=send_id)
        )
    except grpc.aio.AioRpcError as error:
        if error.code() == grpc.StatusCode.NOT_FOUND:
            return None
        raise
    return answer.record  # type: ignore[no-any-return]


async def wait_record(
    platform: Platform, scheduler: object, send_id: str, *, sent: bool = False, reason: int = -1
) -> resources_pb2.ContactRecord:
    found: list[resources_pb2.ContactRecord] = []

    async def there() -> bool:
        got = await record(scheduler, send_id)
        if got is None:
            return False
        found[:] = [got]
        if sent:
            return got.HasField("sent_at")
        if reason >= 0:
            return bool(got.decision.reason == reason)
        return True

    await platform.eventually(there, what=f"record of {send_id}")
    return found[0]


async def follower_ready(platform: Platform, scheduler: object, trigger_id: str) -> None:
    """Probe until the scheduler's event follower applies new events (a first start
    begins at the stream's head, so events tracked before it would never fire)."""
    await follower_ready_for(platform, scheduler, trigger_id, "add_to_cart", cart_id="p")


async def follower_ready_for(
    platform: Platform, scheduler: object, trigger_id: str, name: str, **properties: str
) -> None:
    """:func:`follower_ready` with an event of ``name`` (the probe user has no device)."""
    for _ in range(200):
        probe = f"probe-{next(_probes)}"
        await track(platform, event(probe, "probe-user", name, NOW, **properties))
        for _ in range(20):
            if await record(scheduler, firing_send_id(trigger_id, probe)) is not None:
                return
            await asyncio.sleep(0.05)
    pytest.fail("the event follower never applied an event")


def titles(platform: Platform, token: str) -> list[tuple[str, str]]:
    return [
        (
            json.loads(r.body)["aps"]["alert"]["title"],
            json.loads(r.body)["aps"]["alert"]["body"],
        )
        for r in platform.sandbox.apns.recorder.requests(token=token)
    ]


async def devices(platform: Platform, users: Sequence[str]) -> dict[str, str]:
    shift_clock_file(platform.clock_file, to=NOW, speed=1.0)
    return {user: (await platform.register(user)).token for user in users}


async def create(scheduler: object, trigger: resources_pb2.Trigger, key: str) -> str:
    answer = await scheduler.CreateTrigger(  # type: ignore[attr-defined]
        messages_pb2.CreateTriggerRequest(app_id=APP, trigger=trigger, idempotency_key=key)
    )
    return str(answer.trigger.trigger_id)


async def test_cart_abandonment_fires_after_the_delay_unless_the_same_cart_is_bought(
    platform: Platform,
) -> None:
    tokens = await devices(platform, ["ann", "bob", "cyd", "dan"])
    async with platform.scheduler() as scheduler:
        trigger_id = await create(scheduler, cart_abandonment(), "cart")
        await follower_ready(platform, scheduler, trigger_id)
        at = NOW + timedelta(minutes=1)
        await track(
            platform,
            event("e-ann", "ann", "add_to_cart", at, cart_id="c1", item="red shoes"),
            event("e-bob", "bob", "add_to_cart", at, cart_id="c2", item="a hat"),
            event("e-cyd", "cyd", "add_to_cart", at, cart_id="c3", item="gloves"),
        )
        # Bob buys his cart; Cyd buys another cart (nothing of hers is cancelled).
        await track(
            platform,
            event("p-bob", "bob", "purchase", at + timedelta(minutes=2), cart_id="c2"),
            event("p-cyd", "cyd", "purchase", at + timedelta(minutes=2), cart_id="c9"),
        )
        # A second add_to_cart of Ann's while hers is pending fires nothing more.
        await track(platform, event("e-ann2", "ann", "add_to_cart", at, cart_id="c4", item="x"))
        # Dan's cart and its purchase in one call reach the follower in one batch: his
        # firing is recorded as cancelled all the same.
        await track(
            platform,
            event("e-dan", "dan", "add_to_cart", at, cart_id="c5", item="a scarf"),
            event("p-dan", "dan", "purchase", at + timedelta(minutes=1), cart_id="c5"),
        )
        dan = await wait_record(
            platform,
            scheduler,
            firing_send_id(trigger_id, "e-dan"),
            reason=decision_pb2.REASON_CODE_TRIGGER_CANCELLED,
        )
        assert dan.decision.outcome == decision_pb2.OUTCOME_DROP
        bob = await wait_record(
            platform,
            scheduler,
            firing_send_id(trigger_id, "e-bob"),
            reason=decision_pb2.REASON_CODE_TRIGGER_CANCELLED,
        )
        assert bob.decision.outcome == decision_pb2.OUTCOME_DROP
        assert not bob.HasField("sent_at")
        again = await wait_record(
            platform,
            scheduler,
            firing_send_id(trigger_id, "e-ann2"),
            reason=decision_pb2.REASON_CODE_NOT_REELIGIBLE,
        )
        assert not again.HasField("sent_at")
        assert all(titles(platform, token) == [] for token in tokens.values())
        shift_clock_file(platform.clock_file, to=at + timedelta(hours=1, seconds=1), speed=1.0)
        ann = await wait_record(platform, scheduler, firing_send_id(trigger_id, "e-ann"), sent=True)
        await wait_record(platform, scheduler, firing_send_id(trigger_id, "e-cyd"), sent=True)
        assert ann.trigger_id == trigger_id

        async def delivered() -> bool:
            return bool(titles(platform, tokens["ann"]) and titles(platform, tokens["cyd"]))

        await platform.eventually(delivered, what="APNs requests")
        # Delivery holds one assignment per firing that reached its due time: Ann's,
        # Cyd's and the probe's; Bob's was cancelled before, Ann's second never fired.
        stats = await platform.delivery.GetCampaignStats(
            delivery_messages.GetCampaignStatsRequest(app_id=APP, trigger_id=trigger_id)
        )
        assert stats.total.targeted == 3
    assert titles(platform, tokens["ann"]) == [("Your cart", "Still thinking about red shoes?")]
    assert titles(platform, tokens["cyd"]) == [("Your cart", "Still thinking about gloves?")]
    assert titles(platform, tokens["bob"]) == []
    assert titles(platform, tokens["dan"]) == []


async def test_a_restart_neither_misses_nor_repeats_a_firing(platform: Platform) -> None:
    tokens = await devices(platform, ["ann", "bob", "cyd"])
    at = NOW + timedelta(minutes=1)
    async with platform.scheduler() as scheduler:
        trigger_id = await create(scheduler, cart_abandonment(), "cart")
        await follower_ready(platform, scheduler, trigger_id)
        await track(platform, event("e-ann", "ann", "add_to_cart", at, cart_id="c1", item="A"))
        await track(platform, event("e-bob", "bob", "add_to_cart", at, cart_id="c2", item="B"))
        await wait_record(platform, scheduler, firing_send_id(trigger_id, "e-bob"))
        await wait_record(platform, scheduler, firing_send_id(trigger_id, "e-ann"))
    # While no scheduler runs: Cyd adds a cart, Bob buys his.
    await track(platform, event("e-cyd", "cyd", "add_to_cart", at, cart_id="c3", item="C"))
    await track(
        platform, event("p-bob", "bob", "purchase", at + timedelta(minutes=2), cart_id="c2")
    )
    async with platform.scheduler() as scheduler:
        await wait_record(platform, scheduler, firing_send_id(trigger_id, "e-cyd"))
        await wait_record(
            platform,
            scheduler,
            firing_send_id(trigger_id, "e-bob"),
            reason=decision_pb2.REASON_CODE_TRIGGER_CANCELLED,
        )
        shift_clock_file(platform.clock_file, to=at + timedelta(hours=1, seconds=1), speed=1.0)
        for user in ("ann", "cyd"):
            await wait_record(
                platform, scheduler, firing_send_id(trigger_id, f"e-{user}"), sent=True
            )

        async def delivered() -> bool:
            return bool(titles(platform, tokens["ann"]) and titles(platform, tokens["cyd"]))

        await platform.eventually(delivered, what="APNs requests")
    # A third scheduler on the same database re-reads nothing.
    async with platform.scheduler() as scheduler:
        await track(platform, event("e-late", "bob", "add_to_cart", at, cart_id="c5", item="L"))
        await wait_record(platform, scheduler, firing_send_id(trigger_id, "e-late"))
    assert titles(platform, tokens["ann"]) == [("Your cart", "Still thinking about A?")]
    assert titles(platform, tokens["cyd"]) == [("Your cart", "Still thinking about C?")]
    assert titles(platform, tokens["bob"]) == []


async def test_two_replicas_fire_each_event_once(platform: Platform) -> None:
    users = [f"u{i}" for i in range(6)]
    tokens = await devices(platform, users)
    async with platform.scheduler() as first, platform.scheduler() as second:
        trigger_id = await create(first, cart_abandonment(delay=Duration()), "now")
        await follower_ready(platform, first, trigger_id)
        await follower_ready(platform, second, trigger_id)
        for user in users:
            await track(
                platform, event(f"e-{user}", user, "add_to_cart", NOW, cart_id="c", item=user)
            )
        for user in users:
            await wait_record(platform, second, firing_send_id(trigger_id, f"e-{user}"), sent=True)

        async def delivered() -> bool:
            return all(titles(platform, tokens[user]) for user in users)

        await platform.eventually(delivered, what="APNs requests")
    for user in users:
        assert titles(platform, tokens[user]) == [("Your cart", f"Still thinking about {user}?")]


async def test_a_suppressed_user_gets_nothing(platform: Platform) -> None:
    tokens = await devices(platform, ["ann", "bob"])
    await platform.segmentation.CreateList(
        seg_messages.CreateListRequest(
            app_id=APP,
            list=seg_resources.StaticList(
                list_id="complained", name="Complaints", kind=seg_resources.LIST_KIND_SUPPRESSION
            ),
        )
    )
    await platform.segmentation.AddToList(
        seg_messages.AddToListRequest(app_id=APP, list_id="complained", user_ids=["ann"])
    )
    async with platform.scheduler() as scheduler:
        trigger_id = await create(scheduler, cart_abandonment(delay=Duration()), "now")
        await follower_ready(platform, scheduler, trigger_id)
        for user in ("ann", "bob"):
            await track(
                platform, event(f"e-{user}", user, "add_to_cart", NOW, cart_id="c", item="i")
            )
        ann = await wait_record(
            platform,
            scheduler,
            firing_send_id(trigger_id, "e-ann"),
            reason=decision_pb2.REASON_CODE_SUPPRESSED,
        )
        await wait_record(platform, scheduler, firing_send_id(trigger_id, "e-bob"), sent=True)

        async def delivered() -> bool:
            return bool(titles(platform, tokens["bob"]))

        await platform.eventually(delivered, what="APNs request")
    assert ann.decision.outcome == decision_pb2.OUTCOME_DROP
    assert titles(platform, tokens["ann"]) == []
    assert titles(platform, tokens["bob"]) == [("Your cart", "Still thinking about i?")]


async def test_disabling_drops_pending_firings_and_reenabling_ignores_the_events_between(
    platform: Platform,
) -> None:
    tokens = await devices(platform, ["ann", "bob", "cyd"])
    at = NOW + timedelta(minutes=1)
    async with platform.scheduler() as scheduler:
        trigger_id = await create(scheduler, cart_abandonment(), "cart")
        await follower_ready(platform, scheduler, trigger_id)
        await track(platform, event("e-ann", "ann", "add_to_cart", at, cart_id="c1", item="A"))
        await wait_record(platform, scheduler, firing_send_id(trigger_id, "e-ann"))
        off = await scheduler.SetTriggerEnabled(
            messages_pb2.SetTriggerEnabledRequest(app_id=APP, trigger_id=trigger_id, enabled=False)
        )
        assert not off.trigger.enabled
        ann = await record(scheduler, firing_send_id(trigger_id, "e-ann"))
        assert ann is not None
        assert ann.decision.reason == decision_pb2.REASON_CODE_TRIGGER_DISABLED
        # While disabled: an event that must never fire it, even after re-enabling.
        await track(platform, event("e-bob", "bob", "add_to_cart", at, cart_id="c2", item="B"))
        listed = await scheduler.ListTriggers(
            messages_pb2.ListTriggersRequest(app_id=APP, enabled=False)
        )
        assert [t.trigger_id for t in listed.triggers] == [trigger_id]
        shift_clock_file(platform.clock_file, advance=timedelta(seconds=2))
        on = await scheduler.SetTriggerEnabled(
            messages_pb2.SetTriggerEnabledRequest(app_id=APP, trigger_id=trigger_id, enabled=True)
        )
        assert on.trigger.enabled
        await track(platform, event("e-cyd", "cyd", "add_to_cart", at, cart_id="c3", item="C"))
        await wait_record(platform, scheduler, firing_send_id(trigger_id, "e-cyd"))
        assert await record(scheduler, firing_send_id(trigger_id, "e-bob")) is None
        shift_clock_file(platform.clock_file, to=at + timedelta(hours=1, seconds=5), speed=1.0)
        await wait_record(platform, scheduler, firing_send_id(trigger_id, "e-cyd"), sent=True)

        async def delivered() -> bool:
            return bool(titles(platform, tokens["cyd"]))

        await platform.eventually(delivered, what="APNs request")
        assert await record(scheduler, firing_send_id(trigger_id, "e-bob")) is None
    assert titles(platform, tokens["ann"]) == titles(platform, tokens["bob"]) == []
    assert titles(platform, tokens["cyd"]) == [("Your cart", "Still thinking about C?")]


async def test_max_firings_one_fires_once_per_user(platform: Platform) -> None:
    tokens = await devices(platform, ["ann"])
    once = cart_abandonment(
        delay=Duration(), re_eligibility=resources_pb2.ReEligibility(max_firings=1)
    )
    async with platform.scheduler() as scheduler:
        trigger_id = await create(scheduler, once, "once")
        await follower_ready(platform, scheduler, trigger_id)
        await track(platform, event("e-1", "ann", "add_to_cart", NOW, cart_id="c1", item="A"))
        await wait_record(platform, scheduler, firing_send_id(trigger_id, "e-1"), sent=True)
        await track(platform, event("e-2", "ann", "add_to_cart", NOW, cart_id="c2", item="B"))
        second = await wait_record(
            platform,
            scheduler,
            firing_send_id(trigger_id, "e-2"),
            reason=decision_pb2.REASON_CODE_NOT_REELIGIBLE,
        )
        assert not second.HasField("sent_at")

        async def delivered() -> bool:
            return bool(titles(platform, tokens["ann"]))

        await platform.eventually(delivered, what="APNs request")
    assert titles(platform, tokens["ann"]) == [("Your cart", "Still thinking about A?")]


async def test_a_transactional_trigger_with_conditions_and_a_minimum_interval(
    platform: Platform,
) -> None:
    tokens = await devices(platform, ["ann", "bob"])
    shipped = resources_pb2.Trigger(
        name="Shipped",
        event=resources_pb2.EventMatcher(
            event_name="order_shipped",
            conditions=[
                values_pb2.PropertyFilter(
                    name="carrier", operator=values_pb2.OPERATOR_EQ, value=_string("ups")
                )
            ],
        ),
        category_id="orders",
        template=resources_pb2.Template(
            content=content_pb2.Content(title="Shipped", body="Order {{order}} is on its way"),
            placeholders=[
                resources_pb2.Placeholder(
                    name="order",
                    source=resources_pb2.PLACEHOLDER_SOURCE_EVENT_PROPERTY,
                    key="order",
                )
            ],
        ),
        re_eligibility=resources_pb2.ReEligibility(min_interval=Duration(seconds=86400)),
    )
    async with platform.scheduler() as scheduler:
        trigger_id = await create(scheduler, shipped, "shipped")
        await follower_ready_for(platform, scheduler, trigger_id, "order_shipped", carrier="ups")
        await track(
            platform,
            event("s-1", "ann", "order_shipped", NOW, carrier="ups", order="A1"),
            event("s-2", "bob", "order_shipped", NOW, carrier="dhl", order="B1"),
        )
        first = await wait_record(platform, scheduler, firing_send_id(trigger_id, "s-1"), sent=True)
        assert first.category_id == "orders"
        # Within a day of the first send: not re-eligible.
        await track(platform, event("s-3", "ann", "order_shipped", NOW, carrier="ups", order="A2"))
        await wait_record(
            platform,
            scheduler,
            firing_send_id(trigger_id, "s-3"),
            reason=decision_pb2.REASON_CODE_NOT_REELIGIBLE,
        )

        async def delivered() -> bool:
            return bool(titles(platform, tokens["ann"]))

        await platform.eventually(delivered, what="APNs request")
        assert await record(scheduler, firing_send_id(trigger_id, "s-2")) is None
    assert titles(platform, tokens["ann"]) == [("Shipped", "Order A1 is on its way")]
    assert titles(platform, tokens["bob"]) == []


async def test_bad_triggers_are_refused_with_their_field_paths(platform: Platform) -> None:
    bad_condition = values_pb2.PropertyFilter(
        name="total",
        operator=values_pb2.OPERATOR_GT,
        value=values_pb2.AttributeValue(bool_value=True),
    )
    cases = [
        (
            cart_abandonment(delay=Duration(seconds=31 * 86400)),
            "trigger.delay",
        ),
        (
            cart_abandonment(event=resources_pb2.EventMatcher(event_name="")),
            "trigger.event.event_name",
        ),
        (
            cart_abandonment(
                event=resources_pb2.EventMatcher(
                    event_name="add_to_cart", conditions=[bad_condition]
                )
            ),
            "trigger.event.conditions[0].value",
        ),
        (
            cart_abandonment(ttl=Duration(seconds=60)),
            "trigger.ttl",
        ),
        (
            cart_abandonment(template=resources_pb2.Template(content=content_pb2.Content())),
            "trigger.template.content",
        ),
    ]
    async with platform.scheduler() as scheduler:
        for index, (body, field) in enumerate(cases):
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await create(scheduler, body, f"bad-{index}")
            error = rich_error(refused.value)
            assert error.code == grpc.StatusCode.INVALID_ARGUMENT, field
            assert any(f.startswith(field) for f in error.fields), (field, error.fields)
        with pytest.raises(grpc.aio.AioRpcError) as unknown:
            await create(scheduler, cart_abandonment(category_id="nope"), "unknown")
        error = rich_error(unknown.value)
        assert error.code == grpc.StatusCode.INVALID_ARGUMENT
        assert error.reason == "UNKNOWN_REFERENCE"
        assert "trigger.category_id" in error.fields
        listed = await scheduler.ListTriggers(messages_pb2.ListTriggersRequest(app_id=APP))
        assert list(listed.triggers) == []
        # Idempotent by key; another body under the same key is refused.
        first = await scheduler.CreateTrigger(
            messages_pb2.CreateTriggerRequest(
                app_id=APP, trigger=cart_abandonment(), idempotency_key="k"
            )
        )
        again = await scheduler.CreateTrigger(
            messages_pb2.CreateTriggerRequest(
                app_id=APP, trigger=cart_abandonment(), idempotency_key="k"
            )
        )
        assert again.replayed
        assert not first.replayed
        assert again.trigger.trigger_id == first.trigger.trigger_id
        with pytest.raises(grpc.aio.AioRpcError) as reused:
            await create(scheduler, cart_abandonment(name="Other"), "k")
        assert reused.value.code() == grpc.StatusCode.ALREADY_EXISTS
        assert rich_error(reused.value).reason == "IDEMPOTENCY_KEY_REUSED"
        # A transactional trigger is accepted too; paging by id.
        await create(scheduler, cart_abandonment(category_id="orders"), "k2")
        page = await scheduler.ListTriggers(
            messages_pb2.ListTriggersRequest(app_id=APP, page_size=1)
        )
        assert len(page.triggers) == 1
        assert page.next_page_token
        rest = await scheduler.ListTriggers(
            messages_pb2.ListTriggersRequest(
                app_id=APP, page_size=1, page_token=page.next_page_token
            )
        )
        assert len(rest.triggers) == 1
        assert not rest.next_page_token
        assert page.triggers[0].trigger_id < rest.triggers[0].trigger_id
        with pytest.raises(grpc.aio.AioRpcError) as missing:
            await scheduler.SetTriggerEnabled(
                messages_pb2.SetTriggerEnabledRequest(app_id=APP, trigger_id="trg_nope")
            )
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND


# ---- the pure parts -----------------------------------------------------------------


def _filter(op: int, value: values_pb2.AttributeValue | None = None) -> values_pb2.PropertyFilter:
    built = values_pb2.PropertyFilter(name="total", operator=op)  # type: ignore[arg-type]
    if value is not None:
        built.value.CopyFrom(value)
    return built


def test_conditions_compare_values_of_the_same_type() -> None:
    number = {"total": values_pb2.AttributeValue(number_value=30)}
    text = {"total": _string("30")}
    gt20 = _filter(values_pb2.OPERATOR_GT, values_pb2.AttributeValue(number_value=20))
    assert condition_holds(gt20, number)
    assert not condition_holds(gt20, text)
    assert not condition_holds(gt20, {})
    assert condition_holds(_filter(values_pb2.OPERATOR_EXISTS), text)
    assert condition_holds(_filter(values_pb2.OPERATOR_PREFIX, _string("3")), text)
    assert not condition_holds(_filter(values_pb2.OPERATOR_NEQ, _string("30")), text)
    in_list = values_pb2.PropertyFilter(
        name="total", operator=values_pb2.OPERATOR_IN, values=[_string("1"), _string("30")]
    )
    assert condition_holds(in_list, text)


def _seq(built: seg_resources.Event, sequence: int, received: datetime) -> seg_resources.Event:
    built.app_id = APP
    built.sequence = sequence
    built.received_at.FromDatetime(received)
    return built


def test_a_batch_plan_cancels_within_the_batch_and_respects_enabled_at() -> None:
    trigger = ActiveTrigger(APP, "trg", 1, NOW, cart_abandonment())
    late = NOW + timedelta(seconds=1)
    events = [
        _seq(event("old", "ann", "add_to_cart", NOW, cart_id="c0"), 1, NOW - timedelta(seconds=1)),
        _seq(event("a1", "ann", "add_to_cart", NOW, cart_id="c1"), 2, late),
        _seq(event("p9", "ann", "purchase", NOW, cart_id="c9"), 3, late),
        _seq(event("p1", "ann", "purchase", NOW, cart_id="c1"), 4, late),
        _seq(event("b1", "bob", "add_to_cart", NOW, cart_id="c2"), 5, late),
    ]
    plan = plan_batch(events, [trigger], {}, NOW)
    assert [f.send_id for f in plan.firings] == [firing_send_id("trg", "b1")]
    assert plan.firings[0].due_at == NOW + timedelta(hours=1)
    assert plan.not_reeligible == []
    # Ann's firing and its cancellation came in one batch: it is kept as cancelled.
    assert [f.send_id for f in plan.cancelled] == [firing_send_id("trg", "a1")]
    assert plan.cancel == {}
    # A stored pending firing is cancelled by a later correlated purchase, not an earlier one.
    triggering = _seq(event("a0", "ann", "add_to_cart", NOW, cart_id="c1"), 10, late)
    stored = {
        (APP, "trg", "ann"): [
            StoredFiring("tf_a0", "PENDING", NOW + timedelta(hours=1), None, triggering)
        ]
    }
    before = [_seq(event("p0", "ann", "purchase", NOW, cart_id="c1"), 9, late)]
    assert plan_batch(before, [trigger], stored, NOW).cancel == {}
    after = [_seq(event("p2", "ann", "purchase", NOW, cart_id="c1"), 11, late)]
    assert plan_batch(after, [trigger], stored, NOW).cancel == {(APP, "tf_a0"): "p2"}
