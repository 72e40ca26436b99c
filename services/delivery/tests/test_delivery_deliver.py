"""Deliver and GetDelivery through real gRPC with a real consent service: the batch is
checked whole, stored before it is acknowledged, idempotent by send id (a repeat is
UNCHANGED and never sent twice), per-item rejections, and the errors."""

from __future__ import annotations

import uuid
from collections import Counter
from typing import TYPE_CHECKING

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from pushwarden.common.v1 import content_pb2, types_pb2
from pushwarden.delivery.v1 import delivery_pb2_grpc, messages_pb2, resources_pb2
from pushwarden.runtime.db import writer_gate
from pushwarden.runtime.servicetest import rich_error, serving
from pushwarden.services.delivery.bootstrap import bootstrap

if TYPE_CHECKING:
    from pushwarden.delivery.v1.delivery_pb2_grpc import (
        DeliveryServiceAsyncStub as DeliveryStub,
    )

    from .conftest import Platform

pytestmark = pytest.mark.timeout(120)

APPLIED, UNCHANGED, REJECTED = (
    types_pb2.ITEM_STATUS_APPLIED,
    types_pb2.ITEM_STATUS_UNCHANGED,
    types_pb2.ITEM_STATUS_REJECTED,
)
CONTENT = content_pb2.Content(title="Hello", body="World")


def send(user_id: str = "ada", category_id: str = "promos", **fields: object) -> resources_pb2.Send:
    values: dict[str, object] = {
        "send_id": f"send-{uuid.uuid4()}",
        "user_id": user_id,
        "category_id": category_id,
        "content": CONTENT,
    }
    values.update(fields)
    return resources_pb2.Send(**values)  # type: ignore[arg-type]


async def call_deliver(
    stub: DeliveryStub, app: str, *sends: resources_pb2.Send
) -> list[types_pb2.ItemResult]:
    answer = await stub.Deliver(messages_pb2.DeliverRequest(app_id=app, sends=list(sends)))
    return list(answer.results)


async def test_a_repeated_send_id_is_unchanged_keeps_the_first_body_and_goes_once(
    platform: Platform,
) -> None:
    iphone = await platform.register("ada", types_pb2.PLATFORM_IOS)
    first = send()
    again = resources_pb2.Send()
    again.CopyFrom(first)
    again.content.title = "Another title"
    async with platform.delivery(dispatch=False) as api:
        assert [r.status for r in await call_deliver(api, platform.app, first)] == [APPLIED]
        results = await call_deliver(api, platform.app, again, send())
        assert [(r.id, r.status) for r in results[:1]] == [(first.send_id, UNCHANGED)]
        assert results[1].status == APPLIED
        stored = await api.GetDelivery(
            messages_pb2.GetDeliveryRequest(app_id=platform.app, send_id=first.send_id)
        )
        assert stored.delivery.send == first
        assert stored.delivery.status == resources_pb2.DELIVERY_STATUS_PENDING
        assert stored.delivery.HasField("accepted_at")
    async with platform.delivery() as stub:

        async def delivered() -> bool:
            answer = await stub.GetDelivery(
                messages_pb2.GetDeliveryRequest(app_id=platform.app, send_id=first.send_id)
            )
            return answer.delivery.status == resources_pb2.DELIVERY_STATUS_DELIVERED

        await platform.eventually(delivered, what="the first send delivered")
        # Delivering it again after it went changes nothing and sends nothing.
        assert [r.status for r in await call_deliver(stub, platform.app, again)] == [UNCHANGED]
    bodies = [r.body for r in platform.sandbox.apns.recorder.requests(token=iphone.token)]
    assert sum(first.send_id.encode() in body for body in bodies) == 1
    assert not any(b"Another title" in body for body in bodies)


async def test_unknown_categories_and_oversized_content_are_rejected_alone(
    platform: Platform,
) -> None:
    good = send()
    unknown = send(category_id="nope")
    huge = send(content=content_pb2.Content(title="x", body="y" * 5000))
    async with platform.delivery(dispatch=False) as api:
        results = await call_deliver(api, platform.app, unknown, good, huge)
        assert [r.status for r in results] == [REJECTED, APPLIED, REJECTED]
        assert (results[0].field, results[2].field) == ("sends[0].category_id", "sends[2].content")
        assert "nope" in results[0].message
        assert "limit" in results[2].message
        for rejected in (unknown, huge):
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await api.GetDelivery(
                    messages_pb2.GetDeliveryRequest(app_id=platform.app, send_id=rejected.send_id)
                )
            error = rich_error(raised.value)
            assert error.code == grpc.StatusCode.NOT_FOUND


async def test_a_malformed_batch_names_every_bad_field_and_stores_nothing(
    platform: Platform,
) -> None:
    twin = send()
    bad = [
        twin,
        twin,  # repeated id
        send(user_id=""),
        send(content=content_pb2.Content()),
        send(campaign_id="c", trigger_id="t"),
        send(priority=99),
    ]
    async with platform.delivery(dispatch=False) as api:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await call_deliver(api, platform.app, *bad)
        error = rich_error(raised.value)
        assert error.code == grpc.StatusCode.INVALID_ARGUMENT
        assert set(error.fields) == {
            "sends[1].send_id",
            "sends[2].user_id",
            "sends[3].content",
            "sends[4].trigger_id",
            "sends[5].priority",
        }
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await api.GetDelivery(
                messages_pb2.GetDeliveryRequest(app_id=platform.app, send_id=twin.send_id)
            )
        assert raised.value.code() == grpc.StatusCode.NOT_FOUND
        for empty in ([], [send() for _ in range(1001)]):
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await call_deliver(api, platform.app, *empty)
            error = rich_error(raised.value)
            assert (error.code, error.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "BATCH_SIZE")


async def test_get_delivery_of_an_unknown_send_is_not_found_naming_it(platform: Platform) -> None:
    async with platform.delivery(dispatch=False) as api:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await api.GetDelivery(
                messages_pb2.GetDeliveryRequest(app_id=platform.app, send_id="never")
            )
        error = rich_error(raised.value)
        assert error.code == grpc.StatusCode.NOT_FOUND
        assert "never" in error.message
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await api.GetDelivery(messages_pb2.GetDeliveryRequest(app_id=platform.app))
        assert rich_error(raised.value).fields.keys() == {"send_id"}


async def test_without_consent_deliver_is_unavailable_and_stores_nothing(
    platform: Platform,
) -> None:
    config = platform.delivery_config(dispatch=False, CONSENT_ADDR="127.0.0.1:1")
    item = send()
    async with serving(bootstrap(config)) as channel:
        stub: DeliveryStub = delivery_pb2_grpc.DeliveryServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await call_deliver(stub, platform.app, item)
        assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
    async with platform.delivery(dispatch=False) as api:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await api.GetDelivery(
                messages_pb2.GetDeliveryRequest(app_id=platform.app, send_id=item.send_id)
            )
        assert raised.value.code() == grpc.StatusCode.NOT_FOUND


async def test_a_campaign_s_batches_write_behind_the_sends_people_wait_for(
    platform: Platform,
) -> None:
    """On SQLite, a batch of marketing sends and a campaign's assignments queue their
    write as background work; a batch with a transactional send, and a trigger's
    assignment (a firing on its way to a send), queue with the RPCs, first."""
    if not platform.database_url.startswith("sqlite"):
        pytest.skip("PostgreSQL writers do not queue in the process")
    app = bootstrap(platform.delivery_config(dispatch=False))
    gate = writer_gate(app.database.engine)
    assert gate is not None
    at = Timestamp()
    at.GetCurrentTime()

    def ranks(before: Counter[str]) -> str:
        # The RPC's one write; the erasure follower's background writes may come along.
        firsts = gate.taken["first"] - before["first"]
        assert firsts in (0, 1)
        return "first" if firsts else "background"

    async with serving(app) as channel:
        api: DeliveryStub = delivery_pb2_grpc.DeliveryServiceStub(channel)
        taken = gate.taken.copy()
        results = await call_deliver(api, platform.app, send(), send())
        assert [r.status for r in results] == [APPLIED, APPLIED]
        assert ranks(taken) == "background"
        taken = gate.taken.copy()
        mixed = (send(), send(category_id="orders"))
        results = await call_deliver(api, platform.app, *mixed)
        assert [r.status for r in results] == [APPLIED, APPLIED]
        assert ranks(taken) == "first"
        for subject, rank in (
            ({"campaign_id": "spring"}, "background"),
            ({"trigger_id": "cart"}, "first"),
        ):
            taken = gate.taken.copy()
            item = resources_pb2.Assignment(user_id="ada", assigned_at=at)
            if "trigger_id" in subject:
                item.firing_id = "f-1"
            else:
                item.variant_id = "A"
            await api.RecordAssignments(
                messages_pb2.RecordAssignmentsRequest(
                    app_id=platform.app, assignments=[item], **subject
                )
            )
            assert ranks(taken) == rank, subject
