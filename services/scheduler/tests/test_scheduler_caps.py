"""Caps stay exact under concurrency, on SQLite and PostgreSQL: two campaigns aimed at
the same users, dispatched by two scheduler apps on one database at once, under an app
cap of one marketing push per local day (DROP): every user gets exactly one push, and
the other campaign's intent for them is dropped CAPPED. And the per-user lock under it:
a second decision transaction for a user waits for the first."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import Counter

import pytest

from pushwarden.common.v1 import decision_pb2, policy_pb2
from pushwarden.runtime.app import open_database
from pushwarden.runtime.servicetest import local_test_config
from pushwarden.scheduler.v1 import messages_pb2, resources_pb2
from pushwarden.services.scheduler.bootstrap import MIGRATIONS
from pushwarden.services.scheduler.config import SchedulerConfig
from pushwarden.services.scheduler.storage.uow import unit_of_work_factory

from .conftest import APP, Platform
from .test_scheduler_campaigns import NOW, USERS, campaign, seed, wait_state

pytestmark = pytest.mark.storage


async def test_two_schedulers_and_two_campaigns_never_exceed_a_cap(platform: Platform) -> None:
    tokens = await seed(platform, USERS)
    async with contextlib.AsyncExitStack() as stack:
        first = await stack.enter_async_context(platform.scheduler(DISPATCH_BATCH="2"))
        second = await stack.enter_async_context(platform.scheduler(DISPATCH_BATCH="2"))
        await first.SetPolicy(
            messages_pb2.SetPolicyRequest(
                app_id=APP,
                policy=resources_pb2.Policy(
                    cap_rules=[
                        policy_pb2.CapRule(
                            rule_id="one-a-day",
                            scope=policy_pb2.CAP_SCOPE_ALL_MARKETING,
                            max_count=1,
                            calendar=policy_pb2.CALENDAR_PERIOD_DAY,
                            on_exceed=policy_pb2.ON_EXCEED_DROP,
                        )
                    ]
                ),
            )
        )
        ids = []
        for key, stub in (("sale-1", first), ("sale-2", second)):
            created = await stub.CreateCampaign(
                messages_pb2.CreateCampaignRequest(
                    app_id=APP, campaign=campaign(holdout_basis_points=0), idempotency_key=key
                )
            )
            ids.append(created.campaign.campaign_id)
        await asyncio.gather(
            *(
                stub.StartCampaign(
                    messages_pb2.StartCampaignRequest(app_id=APP, campaign_id=campaign_id)
                )
                for stub, campaign_id in zip((first, second), ids, strict=True)
            )
        )
        finished = [
            await wait_state(platform, first, campaign_id, resources_pb2.CAMPAIGN_STATE_COMPLETED)
            for campaign_id in ids
        ]
    pushes = Counter(
        {
            user: len(platform.sandbox.apns.recorder.requests(token=token))
            for user, token in tokens.items()
        }
    )
    assert set(pushes.values()) == {1}, pushes
    titles = {
        json.loads(r.body)["aps"]["alert"]["title"]
        for token in tokens.values()
        for r in platform.sandbox.apns.recorder.requests(token=token)
    }
    assert titles <= {"Title A", "Title B"}
    sent = sum(c.progress.sent for c in finished)
    capped = sum(
        count.count
        for c in finished
        for count in c.progress.by_outcome
        if count.reason == decision_pb2.REASON_CODE_CAPPED
    )
    assert sent == len(USERS)
    assert capped == len(USERS)


async def test_a_second_decision_for_the_same_user_waits_for_the_first(
    any_database_url: str,
) -> None:
    """The lock a decision transaction takes per user (PostgreSQL: an advisory lock;
    SQLite: the write lock) holds a concurrent one back until the first commits, so it
    reads the contacts the first wrote."""
    database = open_database(local_test_config(SchedulerConfig, any_database_url), MIGRATIONS)
    uow = unit_of_work_factory(database)
    try:
        first_locked = asyncio.Event()
        release = asyncio.Event()

        async def first() -> None:
            async with uow() as work:
                await work.intents.lock_users(APP, ["ada"])
                await work.intents.history(APP, ["ada"], NOW)
                first_locked.set()
                await release.wait()
                await work.commit()

        async def second() -> None:
            await first_locked.wait()
            async with uow() as work:
                await work.intents.lock_users(APP, ["ada", "bob"])
                await work.intents.history(APP, ["ada"], NOW)
                await work.commit()

        one = asyncio.create_task(first())
        two = asyncio.create_task(second())
        await first_locked.wait()
        await asyncio.sleep(0.5)  # generous: an unlocked second transaction ends at once
        assert not two.done()
        release.set()
        await asyncio.wait_for(asyncio.gather(one, two), 30)
    finally:
        await database.dispose()
