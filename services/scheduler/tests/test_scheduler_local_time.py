"""A LOCAL_TIME campaign through gRPC on SQLite and PostgreSQL, with real consent,
segmentation and delivery and the fake APNs, across zones and the night Europe moves
its clocks forward (2026-03-29): 09:00 local reaches Tokyo at 00:00 UTC, Paris at 07:00
UTC (CEST, one hour earlier than the day before) and New York at 13:00 UTC (EDT since
March 8), each not a minute before. The runtime's test clock crosses the night."""

from __future__ import annotations

import asyncio
import functools
from datetime import UTC, datetime, timedelta

import pytest

from pushwarden.common.v1 import types_pb2
from pushwarden.runtime.clock import shift_clock_file
from pushwarden.scheduler.v1 import messages_pb2, resources_pb2

from .conftest import APP, Platform
from .test_scheduler_campaigns import campaign, received

pytestmark = pytest.mark.storage

START = datetime(2026, 3, 28, 20, 0, tzinfo=UTC)
ZONES = {"tokyo": "Asia/Tokyo", "paris": "Europe/Paris", "new-york": "America/New_York"}
DUE = {
    "tokyo": datetime(2026, 3, 29, 0, 0, tzinfo=UTC),
    "paris": datetime(2026, 3, 29, 7, 0, tzinfo=UTC),
    "new-york": datetime(2026, 3, 29, 13, 0, tzinfo=UTC),
}


async def reached(platform: Platform, tokens: dict[str, str], users: frozenset[str]) -> bool:
    """Whether exactly ``users`` have received something."""
    return {u for u, titles in received(platform, tokens).items() if titles} == users


async def test_local_time_reaches_each_zone_at_its_own_nine_across_a_dst_night(
    platform: Platform,
) -> None:
    shift_clock_file(platform.clock_file, to=START, speed=1.0)
    tokens = {
        user: (await platform.register(user, time_zone=zone)).token for user, zone in ZONES.items()
    }
    await platform.pro_segment(list(ZONES))
    body = campaign(
        holdout_basis_points=0,
        schedule=resources_pb2.Schedule(
            local_time=resources_pb2.LocalTimeSchedule(
                date=types_pb2.LocalDate(year=2026, month=3, day=29),
                time=types_pb2.LocalTime(hours=9),
            )
        ),
    )
    async with platform.scheduler() as scheduler:
        created = await scheduler.CreateCampaign(
            messages_pb2.CreateCampaignRequest(app_id=APP, campaign=body, idempotency_key="lt")
        )
        campaign_id = created.campaign.campaign_id
        await scheduler.StartCampaign(
            messages_pb2.StartCampaignRequest(app_id=APP, campaign_id=campaign_id)
        )
        expected: set[str] = set()
        for user in ("tokyo", "paris", "new-york"):
            # A minute before the user's nine: nobody new has anything.
            shift_clock_file(platform.clock_file, to=DUE[user] - timedelta(minutes=1))
            await asyncio.sleep(1.0)  # dispatch polls every 50 ms
            got = received(platform, tokens)
            assert {u for u, titles in got.items() if titles} == expected, (user, got)
            # At nine local, the user's push arrives, and only theirs.
            shift_clock_file(platform.clock_file, to=DUE[user])
            expected.add(user)

            await platform.eventually(
                functools.partial(reached, platform, tokens, frozenset(expected)),
                what=f"{user}'s push at 09:00 local",
            )
        answer = await scheduler.GetCampaign(
            messages_pb2.GetCampaignRequest(app_id=APP, campaign_id=campaign_id)
        )
    assert answer.campaign.progress.sent == len(ZONES)
    assert all(len(titles) == 1 for titles in received(platform, tokens).values())
