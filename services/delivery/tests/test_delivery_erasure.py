"""Erasure end to end: EraseUser at the real consent service, delivery follows the change
feed and deletes the user's sends, devices and attempts; a scan of every delivery table
then finds neither the user id nor a token, while other users' rows stay."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

import grpc
import pytest
from sqlalchemy import MetaData, select

from pushwarden.common.v1 import content_pb2, types_pb2
from pushwarden.consent.v1 import messages_pb2 as consent_messages
from pushwarden.delivery.v1 import messages_pb2, resources_pb2
from pushwarden.runtime.db import create_engine_for
from pushwarden.runtime.settings import DatabaseSettings
from pushwarden.services.delivery.handlers.erasure import CURSOR_NAME

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
        rows = "\n".join(dump_database(platform.database_url))
        assert "zed" in rows

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
