"""A campaign's throttle on SQLite and PostgreSQL, with real consent, segmentation and
delivery and the fake APNs: two scheduler apps on one database hand on at most the
limit per clock minute, the rest waits (DEFER THROTTLED, with the throttle step in its
trace) for the minute that has room; ExplainDecision shows the same; and the slot's
arithmetic on its own."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime, timedelta

import pytest

from pushwarden.common.v1 import decision_pb2 as R
from pushwarden.runtime.clock import shift_clock_file
from pushwarden.scheduler.v1 import messages_pb2, resources_pb2
from pushwarden.services.scheduler.domain.throttle import ThrottleSlot

from .conftest import APP, Platform
from .test_scheduler_campaigns import NOW, campaign, decisions, seed

MINUTE = timedelta(minutes=1)
USERS = [f"t{i:02d}" for i in range(10)]
LIMIT = 4


def sent_count(platform: Platform, tokens: dict[str, str]) -> int:
    return sum(len(platform.sandbox.apns.recorder.requests(token=t)) for t in tokens.values())


@pytest.mark.storage
async def test_two_schedulers_hand_on_at_most_the_limit_per_minute(platform: Platform) -> None:
    tokens = await seed(platform, USERS)
    body = campaign(holdout_basis_points=0, throttle=resources_pb2.Throttle(sends_per_minute=LIMIT))
    async with contextlib.AsyncExitStack() as stack:
        scheduler = await stack.enter_async_context(platform.scheduler())
        await stack.enter_async_context(platform.scheduler())
        created = await scheduler.CreateCampaign(
            messages_pb2.CreateCampaignRequest(app_id=APP, campaign=body, idempotency_key="t")
        )
        campaign_id = created.campaign.campaign_id
        await scheduler.StartCampaign(
            messages_pb2.StartCampaignRequest(app_id=APP, campaign_id=campaign_id)
        )

        async def progress() -> resources_pb2.CampaignProgress:
            answer = await scheduler.GetCampaign(
                messages_pb2.GetCampaignRequest(app_id=APP, campaign_id=campaign_id)
            )
            return answer.campaign.progress

        async def settled(sent: int) -> bool:
            now = await progress()
            return (
                now.fan_out_complete
                and now.sent == sent
                and now.pending == len(USERS) - sent
                and sent_count(platform, tokens) == sent
            )

        # 08:00 (the clock runs from 08:00:00 at real speed): the first minute's four.
        await platform.eventually(lambda: settled(LIMIT), what="the first minute's sends")
        await asyncio.sleep(0.5)  # both dispatch loops have polled again meanwhile
        assert sent_count(platform, tokens) == LIMIT
        records = {r.user_id: r for r in await decisions(scheduler, campaign_id)}
        waiting = [r for r in records.values() if r.decision.outcome == R.OUTCOME_DEFER]
        assert len(waiting) == len(USERS) - LIMIT
        slots = sorted(r.decision.defer_until.ToDatetime(UTC) for r in waiting)
        assert slots == [NOW + MINUTE] * LIMIT + [NOW + 2 * MINUTE] * (len(USERS) - 2 * LIMIT)
        for record in waiting:
            assert record.decision.reason == R.REASON_CODE_THROTTLED
            traced = await scheduler.GetSend(
                messages_pb2.GetSendRequest(app_id=APP, send_id=record.send_id, include_trace=True)
            )
            last = traced.record.decision.trace.steps[-1]
            assert (last.check, last.result, last.reason) == (
                R.CHECK_THROTTLE,
                R.STEP_RESULT_DEFER,
                R.REASON_CODE_THROTTLED,
            )
            assert last.throttle.sends_per_minute == LIMIT
            assert last.throttle.sent_this_minute == LIMIT
            assert last.throttle.next_slot_at == record.decision.defer_until

        # Explained now, a waiting user's send (taking no reserved place) would wait for
        # 08:02, the first minute with room.
        explained = await scheduler.ExplainDecision(
            messages_pb2.ExplainDecisionRequest(
                app_id=APP, user_id=waiting[0].user_id, campaign_id=campaign_id
            )
        )
        assert (explained.decision.outcome, explained.decision.reason) == (
            R.OUTCOME_DEFER,
            R.REASON_CODE_THROTTLED,
        )
        assert explained.decision.defer_until.ToDatetime(UTC) == NOW + 2 * MINUTE
        assert explained.decision.trace.steps[-1].check == R.CHECK_THROTTLE

        shift_clock_file(platform.clock_file, to=NOW + MINUTE, speed=1.0)
        await platform.eventually(lambda: settled(2 * LIMIT), what="the second minute's sends")
        await asyncio.sleep(0.5)
        assert sent_count(platform, tokens) == 2 * LIMIT

        shift_clock_file(platform.clock_file, to=NOW + 2 * MINUTE, speed=1.0)
        await platform.eventually(lambda: settled(len(USERS)), what="the last sends")
        final = await progress()
    counts = {(c.outcome, c.reason): c.count for c in final.by_outcome}
    assert counts[(R.OUTCOME_DEFER, R.REASON_CODE_THROTTLED)] == len(USERS) - LIMIT
    assert counts[(R.OUTCOME_ALLOW, R.REASON_CODE_UNSPECIFIED)] == len(USERS)
    assert all(len(platform.sandbox.apns.recorder.requests(token=t)) == 1 for t in tokens.values())


def test_a_slot_fills_minute_after_minute_and_honours_reservations() -> None:
    at = datetime(2026, 6, 1, 8, 0, 30, tzinfo=UTC)
    minute = at.replace(second=0)
    slot = ThrottleSlot(2)
    placed = [slot.admit(at, None) for _ in range(5)]
    assert placed == [None, None, minute + MINUTE, minute + MINUTE, minute + 2 * MINUTE]
    # In the next minute: the two reserved places go without taking another place;
    # a fresh send finds that minute full and queues behind the last reservation.
    later = at + MINUTE
    assert slot.admit(later, minute + MINUTE) is None
    assert slot.admit(later, minute + MINUTE) is None
    assert slot.admit(later, None) == minute + 2 * MINUTE
    assert slot.admit(later, None) == minute + 3 * MINUTE
    # A reservation claimed too late (its minute has passed) takes a fresh place.
    assert slot.admit(at + 3 * MINUTE, minute + MINUTE) is None
    assert slot.sent_in(minute + 3 * MINUTE) == 2
    # An idle spell: the slot starts over at the current minute.
    assert slot.admit(at + 10 * MINUTE, None) is None
    assert slot.sent_in(minute + 10 * MINUTE) == 1
