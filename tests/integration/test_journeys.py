"""Scenarios 3 and 8 of the integration suite: cart abandonment (a trigger fires after its
delay, except for users who purchased meanwhile), and campaign statistics that match what
the fakes received and the engagement reported."""

from __future__ import annotations

import time
from datetime import datetime, timedelta

import pytest
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from pushwarden.common.v1 import content_pb2, decision_pb2, types_pb2, values_pb2
from pushwarden.consent.v1 import resources_pb2 as consent_resources
from pushwarden.delivery.v1 import messages_pb2 as delivery_messages
from pushwarden.delivery.v1 import resources_pb2 as delivery_resources
from pushwarden.scheduler.v1 import messages_pb2, resources_pb2
from pushwarden.segmentation.v1 import messages_pb2 as seg_messages
from pushwarden.segmentation.v1 import resources_pb2 as seg_resources

from .conftest import APP, Platform
from .harness import eventually
from .scenarios import (
    PROMOS,
    decisions,
    segment_of,
    set_up,
    start_campaign,
    variant,
    wait_state,
)


@pytest.fixture(scope="module", autouse=True)
def world(platform: Platform) -> None:
    set_up(platform)


def stamp(instant: datetime) -> Timestamp:
    built = Timestamp()
    built.FromDatetime(instant)
    return built


def event(
    event_id: str, user: str, name: str, at: datetime, **properties: str
) -> seg_resources.Event:
    return seg_resources.Event(
        event_id=event_id,
        user_id=user,
        name=name,
        occurred_at=stamp(at),
        properties={k: values_pb2.AttributeValue(string_value=v) for k, v in properties.items()},
    )


def track(platform: Platform, *events: seg_resources.Event) -> None:
    answer = platform.segmentation.TrackEvents(
        seg_messages.TrackEventsRequest(app_id=APP, events=list(events))
    )
    assert [r.status for r in answer.results] == [types_pb2.ITEM_STATUS_APPLIED] * len(events)


def scheduled_for(platform: Platform, user: str) -> list[resources_pb2.ContactRecord]:
    """What the scheduler holds for ``user`` (intents and contacts)."""
    return list(
        platform.scheduler.ExportUserData(
            messages_pb2.ExportUserDataRequest(app_id=APP, user_id=user)
        ).contacts
    )


def cart_abandonment() -> resources_pb2.Trigger:
    """add_to_cart fires after an hour unless a purchase of the same cart comes first."""
    return resources_pb2.Trigger(
        name="Cart abandonment",
        event=resources_pb2.EventMatcher(event_name="add_to_cart"),
        delay=Duration(seconds=3600),
        cancel_events=[resources_pb2.EventMatcher(event_name="purchase", correlate_on=["cart_id"])],
        category_id=PROMOS,
        template=resources_pb2.Template(
            content=content_pb2.Content(title="Your cart", body="Still thinking about {{item}}?"),
            placeholders=[
                resources_pb2.Placeholder(
                    name="item", source=resources_pb2.PLACEHOLDER_SOURCE_EVENT_PROPERTY, key="item"
                )
            ],
        ),
    )


def alerts(platform: Platform, device: consent_resources.Device) -> list[tuple[str, str]]:
    return [
        (body["aps"]["alert"]["title"], body["aps"]["alert"]["body"])
        for body in platform.received(device)
    ]


def test_3_cart_abandonment_fires_after_its_delay_except_for_buyers(platform: Platform) -> None:
    devices = {user: platform.register(user) for user in ("cart-ann", "cart-bob", "cart-cyd")}
    created = platform.scheduler.CreateTrigger(
        messages_pb2.CreateTriggerRequest(
            app_id=APP, trigger=cart_abandonment(), idempotency_key="cart"
        )
    )
    trigger_id = created.trigger.trigger_id
    # The event follower starts at the stream's head: probe until it applies new events.
    probes = iter(range(1000))

    def follower_applies() -> bool:
        track(
            platform,
            event(
                f"probe-{next(probes)}",
                "cart-probe",
                "add_to_cart",
                platform.compose.now(),
                cart_id="p",
            ),
        )
        time.sleep(0.2)
        return bool(scheduled_for(platform, "cart-probe"))

    eventually(follower_applies, what="the scheduler following the event stream")

    at = platform.compose.now()
    track(
        platform,
        event("e-ann", "cart-ann", "add_to_cart", at, cart_id="c1", item="red shoes"),
        event("e-bob", "cart-bob", "add_to_cart", at, cart_id="c2", item="a hat"),
        event("e-cyd", "cart-cyd", "add_to_cart", at, cart_id="c3", item="gloves"),
    )
    # Bob buys his cart 10 minutes later; Cyd buys another cart (hers stays abandoned).
    later = at + timedelta(minutes=10)
    platform.compose.shift_clock(to=later)
    track(
        platform,
        event("p-bob", "cart-bob", "purchase", later, cart_id="c2"),
        event("p-cyd", "cart-cyd", "purchase", later, cart_id="c9"),
    )
    eventually(
        lambda: (
            [r.decision.reason for r in scheduled_for(platform, "cart-bob")]
            == [decision_pb2.REASON_CODE_TRIGGER_CANCELLED]
        ),
        what="Bob's firing cancelled by his purchase",
    )
    # 59 minutes after the carts: nothing has fired yet.
    platform.compose.shift_clock(to=at + timedelta(minutes=59))
    time.sleep(1.0)
    assert all(alerts(platform, device) == [] for device in devices.values())

    platform.compose.shift_clock(to=at + timedelta(hours=1, seconds=1))
    eventually(
        lambda: bool(
            alerts(platform, devices["cart-ann"]) and alerts(platform, devices["cart-cyd"])
        ),
        what="the abandoned carts' pushes",
    )
    assert alerts(platform, devices["cart-ann"]) == [
        ("Your cart", "Still thinking about red shoes?")
    ]
    assert alerts(platform, devices["cart-cyd"]) == [("Your cart", "Still thinking about gloves?")]
    assert alerts(platform, devices["cart-bob"]) == []
    sent = {
        user: [r.trigger_id for r in scheduled_for(platform, user) if r.HasField("sent_at")]
        for user in devices
    }
    assert sent == {"cart-ann": [trigger_id], "cart-bob": [], "cart-cyd": [trigger_id]}


def test_8_campaign_statistics_match_the_fakes_and_the_reported_engagement(
    platform: Platform,
) -> None:
    users = [f"stats-{i:02d}" for i in range(40)]
    devices = {user: platform.register(user, ios=i % 2 == 0) for i, user in enumerate(users)}
    segment_of(platform, "stats", users)
    campaign_id = start_campaign(
        platform,
        "stats-sale",
        resources_pb2.Campaign(
            name="Stats sale",
            category_id=PROMOS,
            audience=resources_pb2.Audience(include_segment_ids=["stats"]),
            variants=[variant("A", 50, "Sale A"), variant("B", 50, "Sale B")],
            holdout_basis_points=2000,
            schedule=resources_pb2.Schedule(immediate=resources_pb2.ImmediateSchedule()),
        ),
    )
    wait_state(platform, campaign_id, resources_pb2.CAMPAIGN_STATE_COMPLETED)
    records = {r.user_id: r for r in decisions(platform, campaign_id)}
    assert set(records) == set(users)
    holdout = sorted(u for u, r in records.items() if r.holdout)
    treated = sorted(u for u, r in records.items() if not r.holdout)
    assert holdout
    assert treated
    eventually(
        lambda: all(platform.titles(devices[u]) for u in treated), what="every treated user's push"
    )
    got = {u: platform.titles(devices[u]) for u in users}
    assert got == {
        u: [] if records[u].holdout else [f"Sale {records[u].variant_id}"] for u in users
    }

    # The app reports engagement: every other treated user opens, every third converts;
    # two holdout users convert too.
    now = platform.compose.now()
    opened = treated[::2]
    converted = treated[::3]
    holdout_converted = holdout[:2]
    events = [
        delivery_resources.EngagementEvent(
            event_id=f"open-{u}",
            kind=delivery_resources.ENGAGEMENT_KIND_OPENED,
            user_id=u,
            send_id=records[u].send_id,
            occurred_at=stamp(now),
        )
        for u in opened
    ] + [
        delivery_resources.EngagementEvent(
            event_id=f"buy-{u}",
            kind=delivery_resources.ENGAGEMENT_KIND_CONVERTED,
            user_id=u,
            occurred_at=stamp(now),
            value=10.0,
            currency="EUR",
        )
        for u in converted + holdout_converted
    ]
    answer = platform.delivery.ReportEngagement(
        delivery_messages.ReportEngagementRequest(app_id=APP, events=events)
    )
    assert [r.status for r in answer.results] == [types_pb2.ITEM_STATUS_APPLIED] * len(events)

    stats = platform.delivery.GetCampaignStats(
        delivery_messages.GetCampaignStatsRequest(app_id=APP, campaign_id=campaign_id)
    )
    # What the fakes received (answered 200), by variant.
    accepted = {
        variant_id: sum(
            len(platform.received(devices[u]))
            for u in treated
            if records[u].variant_id == variant_id
        )
        for variant_id in ("A", "B")
    }
    assert stats.total.targeted == len(treated)
    assert stats.total.sent == stats.total.delivered == sum(accepted.values()) == len(treated)
    assert stats.total.failed == 0
    assert stats.total.opened == len(opened)
    assert stats.total.converted_users == len(converted)
    assert stats.total.conversion_value == pytest.approx(10.0 * len(converted))
    by_variant = {v.variant_id: v for v in stats.variants}
    assert set(by_variant) == {"A", "B"}
    for variant_id, group in by_variant.items():
        members = [u for u in treated if records[u].variant_id == variant_id]
        assert group.targeted == len(members)
        assert group.delivered == accepted[variant_id]
        assert group.opened == len([u for u in opened if u in members])
        assert group.converted_users == len([u for u in converted if u in members])
    assert stats.holdout.users == len(holdout)
    assert stats.holdout.converted_users == len(holdout_converted)
    assert stats.total.lift.treatment_rate == pytest.approx(len(converted) / len(treated))
    assert stats.total.lift.holdout_rate == pytest.approx(len(holdout_converted) / len(holdout))
