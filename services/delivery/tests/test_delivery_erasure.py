"""Erasure end to end: EraseUser at the real consent service, delivery follows the change
feed and deletes the user's sends, devices and attempts, assignments, engagement events
and recorded opt-outs; a scan of every delivery table then finds neither the user id nor
a token, while other users' rows stay."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from sqlalchemy import MetaData, select

from pushwarden.common.v1 import content_pb2, types_pb2
from pushwarden.consent.v1 import messages_pb2 as consent_messages
from pushwarden.consent.v1 import resources_pb2 as consent_resources
from pushwarden.delivery.v1 import messages_pb2, resources_pb2
from pushwarden.runtime.app import open_database
from pushwarden.runtime.clock import FileClock
from pushwarden.runtime.db import create_engine_for
from pushwarden.runtime.settings import DatabaseSettings
from pushwarden.services.delivery.bootstrap import MIGRATIONS
from pushwarden.services.delivery.consent import ConsentPeer
from pushwarden.services.delivery.handlers.common import DeliveryDeps
from pushwarden.services.delivery.handlers.erasure import CURSOR_NAME, ErasureHandlers
from pushwarden.services.delivery.storage.uow import unit_of_work_factory

if TYPE_CHECKING:
    from pushwarden.delivery.v1.delivery_pb2_grpc import (
        DeliveryServiceAsyncStub as DeliveryStub,
    )

    from .conftest import Platform

pytestmark = pytest.mark.timeout(120)


def dump_database(url: str) -> list[str]:
    """Every row of every table, as text."""
    engine = create_engine_for(DatabaseSettings(url, pool_size=1))
    try:
        metadata = MetaData()
        metadata.reflect(engine)
        with engine.connect() as connection:
            return [
                repr(tuple(row))
                for table in metadata.sorted_tables
                for row in connection.execute(select(table))
            ]
    finally:
        engine.dispose()


async def status_of(stub: DeliveryStub, app: str, send_id: str) -> grpc.StatusCode | int:
    try:
        answer = await stub.GetDelivery(
            messages_pb2.GetDeliveryRequest(app_id=app, send_id=send_id)
        )
    except grpc.aio.AioRpcError as error:
        return error.code()
    return answer.delivery.status


async def test_an_erased_user_leaves_no_row_and_no_token_in_delivery(platform: Platform) -> None:
    devices = [
        await platform.register("zed", types_pb2.PLATFORM_IOS),
        await platform.register("zed", types_pb2.PLATFORM_ANDROID),
    ]
    await platform.register("amy", types_pb2.PLATFORM_IOS)
    sends = {
        user: resources_pb2.Send(
            send_id=f"send-{uuid.uuid4()}",
            user_id=user,
            category_id="orders",
            content=content_pb2.Content(title="Your order", body="shipped"),
        )
        for user in ("zed", "amy")
    }
    async with platform.delivery() as stub:

        async def following() -> bool:  # the follower starts at the feed's head
            return any(CURSOR_NAME in row for row in dump_database(platform.database_url))

        await platform.eventually(following, what="the feed follower's first cursor")
        await stub.Deliver(
            messages_pb2.DeliverRequest(app_id=platform.app, sends=list(sends.values()))
        )

        async def delivered() -> bool:
            return {await status_of(stub, platform.app, s.send_id) for s in sends.values()} == {
                resources_pb2.DELIVERY_STATUS_DELIVERED
            }

        await platform.eventually(delivered, what="both sends delivered")
        at = FileClock(platform.clock_file).now()
        assigned_at = Timestamp()
        assigned_at.FromDatetime(at)
        answer = await stub.RecordAssignments(
            messages_pb2.RecordAssignmentsRequest(
                app_id=platform.app,
                campaign_id="spring",
                assignments=[
                    resources_pb2.Assignment(
                        user_id="zed", variant_id="A", assigned_at=assigned_at
                    ),
                    resources_pb2.Assignment(user_id="amy", holdout=True, assigned_at=assigned_at),
                ],
            )
        )
        assert {r.status for r in answer.results} == {types_pb2.ITEM_STATUS_APPLIED}
        await stub.RecordAssignments(
            messages_pb2.RecordAssignmentsRequest(
                app_id=platform.app,
                trigger_id="cart",
                assignments=[
                    resources_pb2.Assignment(
                        user_id="zed", firing_id="firing-1", assigned_at=assigned_at
                    )
                ],
            )
        )
        amy_bought = f"ev-{uuid.uuid4()}"
        reported = await stub.ReportEngagement(
            messages_pb2.ReportEngagementRequest(
                app_id=platform.app,
                events=[
                    resources_pb2.EngagementEvent(
                        event_id=f"ev-{uuid.uuid4()}",
                        kind=resources_pb2.ENGAGEMENT_KIND_OPENED,
                        user_id="zed",
                        send_id=sends["zed"].send_id,
                        device_id=devices[0].device_id,
                        occurred_at=assigned_at,
                    ),
                    resources_pb2.EngagementEvent(
                        event_id=f"ev-{uuid.uuid4()}",
                        kind=resources_pb2.ENGAGEMENT_KIND_CONVERTED,
                        user_id="zed",
                        occurred_at=assigned_at,
                        value=3.0,
                    ),
                    resources_pb2.EngagementEvent(
                        event_id=amy_bought,
                        kind=resources_pb2.ENGAGEMENT_KIND_CONVERTED,
                        user_id="amy",
                        occurred_at=assigned_at,
                    ),
                ],
            )
        )
        assert {r.status for r in reported.results} == {types_pb2.ITEM_STATUS_APPLIED}
        await platform.consent.RecordConsent(
            consent_messages.RecordConsentRequest(
                app_id=platform.app,
                user_id="zed",
                scope=consent_resources.ConsentScope(
                    kind=consent_resources.CONSENT_SCOPE_KIND_ALL_MARKETING
                ),
                action=consent_resources.CONSENT_ACTION_OPT_OUT,
                source=consent_resources.CONSENT_SOURCE_PREFERENCE_CENTER,
                idempotency_key="zed-out",
            )
        )

        async def opt_out_recorded() -> bool:
            return any(
                "zed" in row and "ALL_MARKETING" in row
                for row in dump_database(platform.database_url)
            )

        await platform.eventually(opt_out_recorded, what="zed's opt-out read from the feed")
        rows = "\n".join(dump_database(platform.database_url))
        assert "zed" in rows
        assert devices[0].device_id in rows
        assert "firing-1" in rows

        await platform.consent.EraseUser(
            consent_messages.EraseUserRequest(app_id=platform.app, user_id="zed")
        )

        async def erased() -> bool:
            return (
                await status_of(stub, platform.app, sends["zed"].send_id)
                == grpc.StatusCode.NOT_FOUND
            )

        await platform.eventually(erased, what="zed's send erased")
        assert await status_of(stub, platform.app, sends["amy"].send_id) == (
            resources_pb2.DELIVERY_STATUS_DELIVERED
        )

    rows = "\n".join(dump_database(platform.database_url))
    assert "zed" not in rows
    assert sends["zed"].send_id not in rows
    for device in devices:
        assert device.token not in rows
        assert device.device_id not in rows
    assert sends["amy"].send_id in rows
    assert amy_bought in rows
    assert "firing-1" not in rows


async def test_a_resync_after_a_lost_cursor_finds_users_held_only_in_assignments_or_engagement(
    platform: Platform,
) -> None:
    """The resync (run when the stored cursor outlived consent's retention) asks
    CheckErasure about every user delivery holds, not only those with sends: ghost has
    only an assignment, wraith only a conversion; both erased while delivery was down."""
    at = Timestamp()
    at.FromDatetime(FileClock(platform.clock_file).now())
    async with platform.delivery(dispatch=False) as stub:
        await stub.RecordAssignments(
            messages_pb2.RecordAssignmentsRequest(
                app_id=platform.app,
                campaign_id="spring",
                assignments=[
                    resources_pb2.Assignment(user_id=user, variant_id="A", assigned_at=at)
                    for user in ("ghost", "amy")
                ],
            )
        )
        await stub.ReportEngagement(
            messages_pb2.ReportEngagementRequest(
                app_id=platform.app,
                events=[
                    resources_pb2.EngagementEvent(
                        event_id="wraith-bought",
                        kind=resources_pb2.ENGAGEMENT_KIND_CONVERTED,
                        user_id="wraith",
                        occurred_at=at,
                    )
                ],
            )
        )
    for user in ("ghost", "wraith"):
        await platform.consent.EraseUser(
            consent_messages.EraseUserRequest(app_id=platform.app, user_id=user)
        )
    rows = "\n".join(dump_database(platform.database_url))
    assert "ghost" in rows
    assert "wraith" in rows

    config = platform.delivery_config(dispatch=False)
    database = open_database(config, MIGRATIONS)
    channel = grpc.aio.insecure_channel(platform.consent_addr)
    try:
        deps = DeliveryDeps(
            uow=unit_of_work_factory(database),
            clock=FileClock(platform.clock_file),
            consent=ConsentPeer(channel, 10.0),
        )
        await ErasureHandlers(deps).resync()
    finally:
        await channel.close()
        await database.dispose()

    rows = "\n".join(dump_database(platform.database_url))
    assert "ghost" not in rows
    assert "wraith" not in rows
    assert "amy" in rows
