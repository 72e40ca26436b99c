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
from datetime import timedelta
from typing import Any

import pytest

from pushwarden.common.v1 import decision_pb2, policy_pb2
from pushwarden.runtime.app import open_database
from pushwarden.runtime.clock import shift_clock_file
from pushwarden.runtime.db import READ_ONLY_INFO
from pushwarden.runtime.servicetest import local_test_config
from pushwarden.scheduler.v1 import messages_pb2, resources_pb2
from pushwarden.services.scheduler.bootstrap import MIGRATIONS
from pushwarden.services.scheduler.config import SchedulerConfig
from pushwarden.services.scheduler.domain.intents import PastContact
from pushwarden.services.scheduler.domain.triggers import firing_send_id
from pushwarden.services.scheduler.storage.intents import IntentRepository
from pushwarden.services.scheduler.storage.uow import unit_of_work_factory

from .conftest import APP, Platform
from .test_scheduler_campaigns import NOW, USERS, _stamp, campaign, seed, wait_state
from .test_scheduler_triggers import (
    cart_abandonment,
    create,
    event,
    follower_ready,
    record,
    track,
    wait_record,
)

pytestmark = pytest.mark.storage

# The app cap these tests hold the scheduler to: one marketing push per local day, DROP.
ONE_MARKETING_PUSH_A_DAY = messages_pb2.SetPolicyRequest(
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


async def test_two_schedulers_and_two_campaigns_never_exceed_a_cap(platform: Platform) -> None:
    tokens = await seed(platform, USERS)
    async with contextlib.AsyncExitStack() as stack:
        first = await stack.enter_async_context(platform.scheduler(DISPATCH_BATCH="2"))
        second = await stack.enter_async_context(platform.scheduler(DISPATCH_BATCH="2"))
        await first.SetPolicy(ONE_MARKETING_PUSH_A_DAY)
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


_HISTORY = IntentRepository.history


async def _stale_when_read_only(
    self: IntentRepository, app_id: str, user_ids: Any, since: Any
) -> dict[str, list[PastContact]]:
    """The history, empty for every user when read outside a write transaction."""
    found = await _HISTORY(self, app_id, user_ids, since)
    if self._session.info.get(READ_ONLY_INFO):
        return {user: [] for user in found}
    return found


async def test_a_stale_history_snapshot_is_decided_again_inside_the_transaction(
    platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Dispatch decides on a snapshot of the contact history read before its write
    transaction; when the snapshot misses a contact (another process decided for the
    user meanwhile), the transaction notices and decides that user again, so the cap
    holds. Here every read-only snapshot is made to miss the first campaign's contacts."""
    users = USERS[:4]
    tokens = await seed(platform, users)
    async with platform.scheduler() as scheduler:
        await scheduler.SetPolicy(ONE_MARKETING_PUSH_A_DAY)
        ids = []
        for key in ("first", "second"):
            created = await scheduler.CreateCampaign(
                messages_pb2.CreateCampaignRequest(
                    app_id=APP, campaign=campaign(holdout_basis_points=0), idempotency_key=key
                )
            )
            campaign_id = created.campaign.campaign_id
            ids.append(campaign_id)
            if key == "second":
                monkeypatch.setattr(IntentRepository, "history", _stale_when_read_only)
            await scheduler.StartCampaign(
                messages_pb2.StartCampaignRequest(app_id=APP, campaign_id=campaign_id)
            )
            await wait_state(
                platform, scheduler, campaign_id, resources_pb2.CAMPAIGN_STATE_COMPLETED
            )
        second = await scheduler.GetCampaign(
            messages_pb2.GetCampaignRequest(app_id=APP, campaign_id=ids[1])
        )
    apns = platform.sandbox.apns.recorder
    pushes = {user: len(apns.requests(token=token)) for user, token in tokens.items()}
    assert set(pushes.values()) == {1}, pushes
    counts = {(c.outcome, c.reason): c.count for c in second.campaign.progress.by_outcome}
    assert counts == {(decision_pb2.OUTCOME_DROP, decision_pb2.REASON_CODE_CAPPED): len(users)}


async def test_two_campaigns_and_a_trigger_due_together_never_exceed_a_cap(
    platform: Platform,
) -> None:
    """Two campaigns and a trigger's firings, all due at the same instant for the same
    users, decided by two scheduler apps on one database under one marketing push a day:
    each user gets exactly one push, whichever source wins."""
    users = USERS[:8]
    tokens = await seed(platform, users)
    due = NOW + timedelta(hours=1)
    async with contextlib.AsyncExitStack() as stack:
        first = await stack.enter_async_context(platform.scheduler(DISPATCH_BATCH="3"))
        second = await stack.enter_async_context(platform.scheduler(DISPATCH_BATCH="3"))
        await first.SetPolicy(ONE_MARKETING_PUSH_A_DAY)
        trigger_id = await create(first, cart_abandonment(), "cart")
        await follower_ready(platform, first, trigger_id)
        ids = []
        for key, stub in (("sale-1", first), ("sale-2", second)):
            body = campaign(
                holdout_basis_points=0,
                schedule=resources_pb2.Schedule(at=resources_pb2.AtSchedule(send_at=_stamp(due))),
            )
            created = await stub.CreateCampaign(
                messages_pb2.CreateCampaignRequest(app_id=APP, campaign=body, idempotency_key=key)
            )
            ids.append(created.campaign.campaign_id)
            await stub.StartCampaign(
                messages_pb2.StartCampaignRequest(app_id=APP, campaign_id=ids[-1])
            )
        # Carts added now fire in an hour: the campaigns' instant.
        await track(
            platform,
            *(event(f"e-{u}", u, "add_to_cart", NOW, cart_id=f"c-{u}", item="X") for u in users),
        )
        for user in users:
            await wait_record(platform, first, firing_send_id(trigger_id, f"e-{user}"))

        async def fanned_out() -> bool:
            for campaign_id in ids:
                answer = await first.GetCampaign(
                    messages_pb2.GetCampaignRequest(app_id=APP, campaign_id=campaign_id)
                )
                if not answer.campaign.progress.fan_out_complete:
                    return False
            return True

        await platform.eventually(fanned_out, what="both fan-outs")
        shift_clock_file(platform.clock_file, to=due + timedelta(seconds=1))
        for campaign_id in ids:
            await wait_state(platform, first, campaign_id, resources_pb2.CAMPAIGN_STATE_COMPLETED)
        firings: list[resources_pb2.ContactRecord] = []

        async def firings_decided() -> bool:
            found = [await record(first, firing_send_id(trigger_id, f"e-{u}")) for u in users]
            firings[:] = [f for f in found if f is not None]
            return len(firings) == len(users) and all(
                f.HasField("sent_at") or f.decision.outcome == decision_pb2.OUTCOME_DROP
                for f in firings
            )

        await platform.eventually(firings_decided, what="every firing decided")
    apns = platform.sandbox.apns.recorder
    pushes = {user: len(apns.requests(token=token)) for user, token in tokens.items()}
    assert set(pushes.values()) == {1}, pushes
    capped_firings = sum(1 for f in firings if f.decision.reason == decision_pb2.REASON_CODE_CAPPED)
    sent_firings = sum(1 for f in firings if f.HasField("sent_at"))
    assert capped_firings + sent_firings == len(users)
