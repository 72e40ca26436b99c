"""The queue measured at the fake, not in memory: with a 10,000-send marketing backlog
flowing to a slow APNs, one transactional send reaches the fake before twice the
marketing lane's concurrency of further marketing sends do; two delivery apps on one
database share a backlog and send each push once."""

from __future__ import annotations

import time
import uuid
from typing import TYPE_CHECKING

import pytest

from pushwarden.common.v1 import content_pb2, types_pb2
from pushwarden.delivery.v1 import messages_pb2, resources_pb2
from pushwarden.sandbox.faults import FaultSpec

if TYPE_CHECKING:
    from .conftest import Platform

pytestmark = [pytest.mark.timeout(300), pytest.mark.slow]

BACKLOG = 10_000
USERS = 20
# Marketing pushes in flight at once: one claimed batch, all sent together.
MARKETING_CONCURRENCY = 100
SLOW_S = 0.5


def send(user_id: str, category_id: str) -> resources_pb2.Send:
    return resources_pb2.Send(
        send_id=f"{category_id}-{uuid.uuid4()}",
        user_id=user_id,
        category_id=category_id,
        content=content_pb2.Content(title="t", body="b"),
    )


async def test_a_transactional_send_overtakes_a_marketing_backlog_at_a_slow_fake(
    platform: Platform,
) -> None:
    marketing_tokens = {
        (await platform.register(f"user-{n}", types_pb2.PLATFORM_IOS)).token for n in range(USERS)
    }
    vip = await platform.register("vip", types_pb2.PLATFORM_IOS)
    recorder = platform.sandbox.apns.recorder
    platform.sandbox.apns.faults.add(FaultSpec("delay", seconds=SLOW_S))
    async with platform.delivery(dispatch=False) as api:
        for start in range(0, BACKLOG, 1000):
            batch = [send(f"user-{n % USERS}", "promos") for n in range(start, start + 1000)]
            await api.Deliver(messages_pb2.DeliverRequest(app_id=platform.app, sends=batch))
    async with platform.delivery(DISPATCH_BATCH=str(MARKETING_CONCURRENCY)) as stub:

        async def flowing() -> bool:
            return recorder.count() >= 3 * MARKETING_CONCURRENCY

        await platform.eventually(flowing, what="the marketing backlog flowing")
        order = send("vip", "orders")
        answer = await stub.Deliver(messages_pb2.DeliverRequest(app_id=platform.app, sends=[order]))
        assert answer.results[0].status == types_pb2.ITEM_STATUS_APPLIED
        accepted = time.time()

        async def arrived() -> bool:
            return recorder.count(token=vip.token) == 1

        await platform.eventually(arrived, what="the transactional send at the fake")
        [request] = recorder.requests(token=vip.token)
        overtaken = [
            r
            for r in recorder.requests()
            if r.token in marketing_tokens and accepted <= r.time <= request.time
        ]
        remaining = BACKLOG - sum(1 for r in recorder.requests() if r.token in marketing_tokens)

    assert remaining > 5 * MARKETING_CONCURRENCY  # the backlog was still deep
    assert len(overtaken) < 2 * MARKETING_CONCURRENCY


async def test_two_delivery_apps_on_one_database_share_a_backlog_and_send_each_once(
    platform: Platform,
) -> None:
    tokens = {
        (await platform.register(f"user-{n}", types_pb2.PLATFORM_IOS)).token for n in range(USERS)
    }
    backlog = [send(f"user-{n % USERS}", "promos") for n in range(2000)]
    async with platform.delivery(dispatch=False) as api:
        for start in range(0, len(backlog), 1000):
            await api.Deliver(
                messages_pb2.DeliverRequest(
                    app_id=platform.app, sends=backlog[start : start + 1000]
                )
            )
    recorder = platform.sandbox.apns.recorder
    async with platform.delivery(DISPATCH_BATCH="50"), platform.delivery(DISPATCH_BATCH="50"):

        async def drained() -> bool:
            return recorder.count() >= len(backlog)

        await platform.eventually(drained, within_s=120, what="the backlog sent")
    requests = recorder.requests()
    assert {r.token for r in requests} <= tokens
    apns_ids = [r.apns_id for r in requests]
    assert len(apns_ids) == len(set(apns_ids)) == len(backlog)  # every send exactly once
