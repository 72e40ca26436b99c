"""Durability under SIGKILL: the scheduler runs as its own OS process (``python -m
pushwarden.services.scheduler``, configured through the environment as ``make run``
configures it) against real consent, segmentation and delivery and the fake APNs. A
campaign to 600 users with a holdout starts; the process is killed with SIGKILL once
about a third of the audience has been decided (so intents are claimed, decided and in
the outbox at that moment), then started again.

Afterwards the campaign completed with every audience member decided exactly once:
exactly one contact-history row per sent user (the scheduler's own record, whatever
delivery's send-id de-duplication would have absorbed), one intent per user, nobody in
the holdout sent, and every sent user's device received exactly one push.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections import Counter
from pathlib import Path

import grpc
import pytest
from sqlalchemy import func, select

from pushwarden.runtime.clock import shift_clock_file
from pushwarden.runtime.db import Database, create_async_engine_for
from pushwarden.runtime.settings import DatabaseSettings
from pushwarden.scheduler.v1 import messages_pb2, resources_pb2, scheduler_pb2_grpc
from pushwarden.services.scheduler.models import ContactRow, IntentRow

from .conftest import APP, Platform
from .test_scheduler_campaigns import NOW, campaign

pytestmark = [pytest.mark.storage, pytest.mark.timeout(300), pytest.mark.slow]

USERS = [f"k{i:04d}" for i in range(600)]
LEASE_S = 30


async def contacts(database: Database) -> int:
    async with database.sessions() as session:
        return int(await session.scalar(select(func.count()).select_from(ContactRow)) or 0)


async def test_a_sigkill_mid_campaign_misses_nobody_and_decides_each_user_once(
    platform: Platform, tmp_path: Path
) -> None:
    shift_clock_file(platform.clock_file, to=NOW, speed=1.0)
    tokens: dict[str, str] = {}
    for start in range(0, len(USERS), 100):
        chunk = USERS[start : start + 100]
        devices = await asyncio.gather(*(platform.register(user) for user in chunk))
        tokens.update((user, device.token) for user, device in zip(chunk, devices, strict=True))
    await platform.pro_segment(USERS)

    # Small batches: many transactions in flight, so the kill lands mid-way.
    scheduler = platform.scheduler_process(
        tmp_path, DB_POOL_SIZE="3", DISPATCH_BATCH="20", CLAIM_LEASE_S=str(LEASE_S)
    )
    database = Database(
        create_async_engine_for(DatabaseSettings(platform.database_url, pool_size=2))
    )
    try:
        await scheduler.start()
        async with grpc.aio.insecure_channel(scheduler.address) as channel:
            stub = scheduler_pb2_grpc.SchedulerServiceStub(channel)
            created = await stub.CreateCampaign(
                messages_pb2.CreateCampaignRequest(
                    app_id=APP, campaign=campaign(holdout_basis_points=1000), idempotency_key="k"
                )
            )
            campaign_id = created.campaign.campaign_id
            await stub.StartCampaign(
                messages_pb2.StartCampaignRequest(app_id=APP, campaign_id=campaign_id)
            )

        async def a_third_decided() -> bool:
            return await contacts(database) >= len(USERS) // 3

        await platform.eventually(a_third_decided, within_s=120, what="a third decided")
        await scheduler.kill()
        at_kill = await contacts(database)
        assert at_kill < len(USERS) * 0.9 * 0.9, "killed too late: the campaign was done"

        # Restart; what the dead process held comes back once its leases run out.
        await scheduler.start()
        shift_clock_file(platform.clock_file, advance=dt.timedelta(seconds=LEASE_S + 1))
        async with grpc.aio.insecure_channel(scheduler.address) as channel:
            stub = scheduler_pb2_grpc.SchedulerServiceStub(channel)
            final: list[resources_pb2.Campaign] = []

            async def completed() -> bool:
                answer = await stub.GetCampaign(
                    messages_pb2.GetCampaignRequest(app_id=APP, campaign_id=campaign_id)
                )
                final[:] = [answer.campaign]
                progress = answer.campaign.progress
                return (
                    answer.campaign.state == resources_pb2.CAMPAIGN_STATE_COMPLETED
                    and progress.pending == 0
                )

            await platform.eventually(completed, within_s=120, what="the campaign completed")

            async def handed_over() -> bool:
                async with database.sessions() as session:
                    left = await session.scalar(
                        select(func.count()).where(IntentRow.state == "OUTBOX")
                    )
                return not left

            await platform.eventually(handed_over, within_s=60, what="the outbox emptied")
        async with database.sessions() as session:
            rows = (
                await session.execute(
                    select(IntentRow.user_id, IntentRow.state, IntentRow.holdout).where(
                        IntentRow.campaign_id == campaign_id
                    )
                )
            ).all()
            contact_users = Counter((await session.scalars(select(ContactRow.user_id))).all())
    except BaseException:
        print(scheduler.output())
        raise
    finally:
        await scheduler.stop()
        await database.dispose()

    # One intent per audience member; the holdout dropped, everyone else sent.
    assert Counter(user for user, _, _ in rows) == Counter(USERS)
    held = {user for user, _, holdout in rows if holdout}
    sent = {user for user, state, _ in rows if state == "SENT"}
    assert 0 < len(held) < len(USERS) // 5
    assert sent == set(USERS) - held
    # Exactly one contact row per sent user: the scheduler decided nobody twice.
    assert set(contact_users) == sent
    assert set(contact_users.values()) == {1}
    # And the fake received exactly one push per sent user, none for the holdout.
    apns = platform.sandbox.apns.recorder
    pushes = {user: len(apns.requests(token=tokens[user])) for user in USERS}
    assert {user for user, n in pushes.items() if n} == sent
    assert {pushes[user] for user in sent} == {1}
    progress = final[0].progress
    assert (progress.audience_size, progress.holdout, progress.sent) == (
        len(USERS),
        len(held),
        len(sent),
    )
    print(f"\ncontacts at the kill {at_kill} of {len(sent)}; runs {scheduler.runs}")
