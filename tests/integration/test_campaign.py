"""Scenario 2 of the integration suite: a marketing campaign to a segment with two variants
and a holdout, across users in four zones, two of them in quiet hours when it starts, and
users near or at their cap: the right people get the right variant at the right local
time, nobody in the holdout gets anything, nobody exceeds the cap."""

from __future__ import annotations

import time as pytime
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from google.protobuf.duration_pb2 import Duration

from pushwarden.common.v1 import decision_pb2, policy_pb2, types_pb2
from pushwarden.consent.v1 import resources_pb2 as consent_resources
from pushwarden.scheduler.v1 import messages_pb2, resources_pb2

from .conftest import APP, Platform
from .harness import eventually
from .scenarios import (
    NOW,
    PROMOS,
    decisions,
    get_campaign,
    segment_of,
    set_up,
    start_campaign,
    variant,
    wait_state,
)

# At NOW (08:00 UTC): 10:00 in Paris, 17:00 in Tokyo, 04:00 in New York, 01:00 in LA.
AWAKE = ("Europe/Paris", "Asia/Tokyo")
ASLEEP = ("America/New_York", "America/Los_Angeles")
QUIET_START, QUIET_END = time(21, 0), time(8, 0)
# The deferred wake up within 10 minutes after their quiet hours end (jitter).
JITTER = timedelta(minutes=10)
CAP = 2  # marketing pushes per rolling 24 h


def short(zone: str) -> str:
    return zone.split("/")[1].lower()


@pytest.fixture(scope="module", autouse=True)
def world(platform: Platform) -> None:
    set_up_scenario_2(platform)


def set_up_scenario_2(platform: Platform) -> None:
    """The clock, the categories, and the app's cap, quiet hours and jitter."""
    set_up(platform)
    platform.scheduler.SetPolicy(
        messages_pb2.SetPolicyRequest(
            app_id=APP,
            policy=resources_pb2.Policy(
                cap_rules=[
                    policy_pb2.CapRule(
                        rule_id="daily",
                        scope=policy_pb2.CAP_SCOPE_ALL_MARKETING,
                        max_count=CAP,
                        rolling=Duration(seconds=24 * 3600),
                        on_exceed=policy_pb2.ON_EXCEED_DROP,
                    )
                ],
                default_quiet_hours=policy_pb2.QuietHours(
                    windows=[
                        policy_pb2.QuietHoursWindow(
                            start=types_pb2.LocalTime(hours=QUIET_START.hour),
                            end=types_pb2.LocalTime(hours=QUIET_END.hour),
                        )
                    ]
                ),
                jitter_window=Duration(seconds=int(JITTER.total_seconds())),
            ),
        )
    )


def immediate(
    name: str, segment: str, *variants: resources_pb2.Variant, holdout: int = 0
) -> resources_pb2.Campaign:
    return resources_pb2.Campaign(
        name=name,
        category_id=PROMOS,
        audience=resources_pb2.Audience(include_segment_ids=[segment]),
        variants=list(variants),
        holdout_basis_points=holdout,
        schedule=resources_pb2.Schedule(immediate=resources_pb2.ImmediateSchedule()),
    )


def run_to_completion(platform: Platform, key: str, campaign: resources_pb2.Campaign) -> str:
    campaign_id = start_campaign(platform, key, campaign)
    wait_state(platform, campaign_id, resources_pb2.CAMPAIGN_STATE_COMPLETED)
    return campaign_id


def test_2_variants_holdout_zones_quiet_hours_and_caps(platform: Platform) -> None:
    run_scenario_2(platform)


def run_scenario_2(platform: Platform) -> dict[str, tuple[consent_resources.Device, list[str]]]:
    """Scenario 2 on ``platform`` (also run by the scale-out test on several replicas);
    returns each user's device and the titles it received."""
    zones = {f"z-{short(zone)}-{i}": zone for zone in AWAKE + ASLEEP for i in range(6)}
    # Awake users who already had marketing today: one push (room for one more) or two
    # (at the cap).
    once = {f"once-{short(zone)}-{i}": zone for zone in AWAKE for i in range(2)}
    twice = {f"twice-{short(zone)}-{i}": zone for zone in AWAKE for i in range(2)}
    everyone = zones | once | twice
    devices = {
        user: platform.register(user, ios=i % 3 != 0, time_zone=zone)
        for i, (user, zone) in enumerate(everyone.items())
    }

    segment_of(platform, "warm-1", list(once) + list(twice))
    segment_of(platform, "warm-2", list(twice))
    run_to_completion(
        platform, "warm-1", immediate("Warm 1", "warm-1", variant("W", 100, "Warm-up 1"))
    )
    run_to_completion(
        platform, "warm-2", immediate("Warm 2", "warm-2", variant("W", 100, "Warm-up 2"))
    )
    eventually(
        lambda: (
            all(len(platform.titles(devices[u])) == 1 for u in once)
            and all(len(platform.titles(devices[u])) == 2 for u in twice)
        ),
        what="the warm-up pushes",
    )
    before = {user: platform.titles(device) for user, device in devices.items()}

    segment_of(platform, "sale", everyone)
    campaign_id = start_campaign(
        platform,
        "sale",
        immediate(
            "Sale", "sale", variant("A", 50, "Sale A"), variant("B", 50, "Sale B"), holdout=2500
        ),
    )

    def assigned() -> dict[str, resources_pb2.ContactRecord]:
        return {r.user_id: r for r in decisions(platform, campaign_id)}

    eventually(lambda: set(assigned()) == set(everyone), what="the fan-out")
    records = assigned()
    holdout = {u for u, r in records.items() if r.holdout}
    capped = {u for u in twice if u not in holdout}
    expected = {
        user: before[user]
        + ([] if user in holdout or user in capped else [f"Sale {records[user].variant_id}"])
        for user in everyone
    }
    assert holdout
    assert {records[u].variant_id for u in everyone if u not in holdout} == {"A", "B"}
    for zone in ASLEEP:
        assert any(zones.get(u) == zone for u in everyone if u not in holdout), zone
    assert capped

    def received_by(users: set[str]) -> bool:
        return all(platform.titles(devices[u]) == expected[u] for u in users)

    awake = {u for u, zone in everyone.items() if zone in AWAKE}
    eventually(lambda: received_by(awake), what="the awake users' pushes")
    # The sleepers got nothing yet: deferred to the end of their quiet hours.
    for user, zone in everyone.items():
        if zone in ASLEEP:
            assert platform.titles(devices[user]) == [], user
    assert get_campaign(platform, campaign_id).state == resources_pb2.CAMPAIGN_STATE_RUNNING

    # Morning in New York (08:00 local = 12:00 UTC), then in Los Angeles (15:00 UTC).
    for zone, utc_hour in zip(ASLEEP, (12, 15), strict=True):
        woken = {u for u, z in everyone.items() if z == zone}
        # A minute before their quiet hours end: still nothing.
        platform.compose.shift_clock(to=NOW.replace(hour=utc_hour) - timedelta(minutes=1))
        pytime.sleep(1.0)
        assert all(platform.titles(devices[u]) == [] for u in woken), zone
        platform.compose.shift_clock(to=NOW.replace(hour=utc_hour) + JITTER + timedelta(seconds=5))
        eventually(lambda: received_by(woken), what=f"the pushes in {zone}")  # noqa: B023
    wait_state(platform, campaign_id, resources_pb2.CAMPAIGN_STATE_COMPLETED)

    got = {user: platform.titles(device) for user, device in devices.items()}
    assert got == expected
    # Nobody above the cap; the capped were dropped as CAPPED, the holdout as HOLDOUT.
    assert max(len(titles) for titles in got.values()) <= CAP
    final = assigned()
    for user in everyone:
        decision = final[user].decision
        if user in holdout:
            assert decision.reason == decision_pb2.REASON_CODE_HOLDOUT, user
        elif user in capped:
            assert (decision.outcome, decision.reason) == (
                decision_pb2.OUTCOME_DROP,
                decision_pb2.REASON_CODE_CAPPED,
            ), user
        else:
            assert decision.outcome == decision_pb2.OUTCOME_ALLOW, user
            local = final[user].due_at.ToDatetime(tzinfo=ZoneInfo(everyone[user])).time()
            if everyone[user] in ASLEEP:
                # At the end of the quiet hours, within the jitter window.
                end = (datetime.combine(NOW.date(), QUIET_END) + JITTER).time()
                assert QUIET_END <= local <= end, (user, local)
            else:
                assert QUIET_END <= local < QUIET_START, (user, local)
    return {user: (devices[user], got[user]) for user in everyone}
