"""SendTransactional end to end on SQLite and PostgreSQL: stored before the answer,
decided by the transactional dispatch loop against the real consent service, handed to
the real delivery service by the outbox, and received by the fake APNs; replays,
refusals, policy drops, locale choice, quiet-hours opt-in, and an outbox that outlives
an unreachable delivery."""

from __future__ import annotations

import json
import socket
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
from google.protobuf import field_mask_pb2

from pushwarden.common.v1 import content_pb2, decision_pb2, policy_pb2, types_pb2
from pushwarden.consent.v1 import messages_pb2 as consent_messages
from pushwarden.consent.v1 import resources_pb2 as consent_resources
from pushwarden.delivery.v1 import messages_pb2 as delivery_messages
from pushwarden.delivery.v1 import resources_pb2 as delivery_resources
from pushwarden.runtime.clock import shift_clock_file
from pushwarden.runtime.servicetest import rich_error
from pushwarden.scheduler.v1 import messages_pb2, resources_pb2

from .conftest import APP, Platform

pytestmark = pytest.mark.storage


def order_update(
    key: str, user: str = "ada", **extra: object
) -> messages_pb2.SendTransactionalRequest:
    request = messages_pb2.SendTransactionalRequest(
        app_id=APP,
        user_id=user,
        category_id="orders",
        idempotency_key=key,
        content=content_pb2.Content(title="Your order shipped", body="Arrives Tuesday"),
    )
    for name, value in extra.items():
        if isinstance(value, list):
            getattr(request, name).extend(value)
        elif hasattr(value, "CopyFrom"):
            getattr(request, name).CopyFrom(value)
        else:
            setattr(request, name, value)
    return request


def apns_titles(platform: Platform, token: str) -> list[str]:
    return [
        json.loads(r.body)["aps"]["alert"]["title"]
        for r in platform.sandbox.apns.recorder.requests(token=token)
    ]


async def test_a_transactional_send_reaches_the_fake_apns_once(platform: Platform) -> None:
    phone = await platform.register("ada")
    async with platform.scheduler() as scheduler:
        first = await scheduler.SendTransactional(order_update("order-1"))
        again = await scheduler.SendTransactional(order_update("order-1"))
        assert not first.replayed
        assert again.replayed
        assert again.send_id == first.send_id
        assert again.accepted_at == first.accepted_at

        async def delivered() -> bool:
            try:
                answer = await platform.delivery.GetDelivery(
                    delivery_messages.GetDeliveryRequest(app_id=APP, send_id=first.send_id)
                )
            except grpc.aio.AioRpcError as error:
                if error.code() == grpc.StatusCode.NOT_FOUND:  # not handed over yet
                    return False
                raise
            return answer.delivery.status == delivery_resources.DELIVERY_STATUS_DELIVERED

        await platform.eventually(delivered, what="delivery of the order update")
        assert apns_titles(platform, phone.token) == ["Your order shipped"]
        record = (
            await scheduler.GetSend(
                messages_pb2.GetSendRequest(app_id=APP, idempotency_key="order-1")
            )
        ).record
        assert record.send_id == first.send_id
        assert record.decision.outcome == decision_pb2.OUTCOME_ALLOW
        assert record.HasField("sent_at")
        assert record.idempotency_key == "order-1"


async def test_the_same_key_with_another_body_is_refused(platform: Platform) -> None:
    async with platform.scheduler() as scheduler:
        await scheduler.SendTransactional(order_update("order-2"))
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await scheduler.SendTransactional(order_update("order-2", user="bob"))
        assert refused.value.code() == grpc.StatusCode.ALREADY_EXISTS
        assert rich_error(refused.value).reason == "IDEMPOTENCY_KEY_REUSED"


@pytest.mark.parametrize(
    ("request_", "code", "reason", "field"),
    [
        (
            order_update("k", category_id="promos"),
            grpc.StatusCode.FAILED_PRECONDITION,
            "CATEGORY_KIND_MISMATCH",
            "",
        ),
        (
            order_update("k", category_id="nope"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "UNKNOWN_REFERENCE",
            "category_id",
        ),
        (
            order_update("k", content=content_pb2.Content()),
            grpc.StatusCode.INVALID_ARGUMENT,
            "",
            "content",
        ),
        (order_update(""), grpc.StatusCode.INVALID_ARGUMENT, "", "idempotency_key"),
        (
            order_update(
                "k",
                localized=[
                    resources_pb2.LocalizedContent(locale="fr", content=content_pb2.Content())
                ],
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "",
            "localized[0].content",
        ),
        (
            order_update(
                "k", content=content_pb2.Content(title="x", custom_data={"pw_send_id": "x"})
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "",
            "content.custom_data[pw_send_id]",
        ),
    ],
)
async def test_bad_requests_are_refused_and_store_nothing(
    platform: Platform,
    request_: messages_pb2.SendTransactionalRequest,
    code: grpc.StatusCode,
    reason: str,
    field: str,
) -> None:
    async with platform.scheduler() as scheduler:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await scheduler.SendTransactional(request_)
        error = rich_error(refused.value)
        assert error.code == code
        assert (error.reason or "") == reason
        if field:
            assert field in error.fields
        if request_.idempotency_key:
            with pytest.raises(grpc.aio.AioRpcError) as missing:
                await scheduler.GetSend(
                    messages_pb2.GetSendRequest(
                        app_id=APP, idempotency_key=request_.idempotency_key
                    )
                )
            assert missing.value.code() == grpc.StatusCode.NOT_FOUND


async def test_an_expiry_in_the_past_is_refused(platform: Platform) -> None:
    request = order_update("late")
    request.expires_at.FromDatetime(datetime.now(UTC) - timedelta(minutes=1))
    async with platform.scheduler() as scheduler:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await scheduler.SendTransactional(request)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "expires_at" in rich_error(refused.value).fields


async def test_a_user_without_a_device_is_dropped_before_delivery(platform: Platform) -> None:
    async with platform.scheduler() as scheduler:
        sent = await scheduler.SendTransactional(order_update("order-3", user="nobody"))

        async def dropped() -> bool:
            record = (
                await scheduler.GetSend(
                    messages_pb2.GetSendRequest(
                        app_id=APP, send_id=sent.send_id, include_trace=True
                    )
                )
            ).record
            return record.decision.outcome == decision_pb2.OUTCOME_DROP

        await platform.eventually(dropped, what="the drop")
        record = (
            await scheduler.GetSend(
                messages_pb2.GetSendRequest(app_id=APP, send_id=sent.send_id, include_trace=True)
            )
        ).record
        assert record.decision.reason == decision_pb2.REASON_CODE_NO_DEVICE
        assert not record.HasField("sent_at")
        assert len(record.decision.trace.steps) > 0
        with pytest.raises(grpc.aio.AioRpcError) as unknown:
            await platform.delivery.GetDelivery(
                delivery_messages.GetDeliveryRequest(app_id=APP, send_id=sent.send_id)
            )
        assert unknown.value.code() == grpc.StatusCode.NOT_FOUND


async def test_the_device_language_picks_the_translation(platform: Platform) -> None:
    french = await platform.register("chloe", locale="fr-CA")
    german = await platform.register("dieter", locale="de-AT")
    translations = [
        resources_pb2.LocalizedContent(locale="fr", content=content_pb2.Content(title="Expédiée")),
        resources_pb2.LocalizedContent(
            locale="de-DE", content=content_pb2.Content(title="Versandt")
        ),
    ]
    async with platform.scheduler() as scheduler:
        await scheduler.SendTransactional(
            order_update("fr-1", user="chloe", localized=translations)
        )
        await scheduler.SendTransactional(
            order_update("de-1", user="dieter", localized=translations)
        )

        async def both() -> bool:
            return bool(apns_titles(platform, french.token)) and bool(
                apns_titles(platform, german.token)
            )

        await platform.eventually(both, what="both sends")
    assert apns_titles(platform, french.token) == ["Expédiée"]
    # de-AT matches neither "de-DE" exactly nor a bare "de": the default content.
    assert apns_titles(platform, german.token) == ["Your order shipped"]


async def test_an_opted_in_quiet_hours_send_waits_for_morning(platform: Platform) -> None:
    night = datetime(2026, 3, 10, 22, 30, tzinfo=UTC)  # 23:30 in Paris
    shift_clock_file(platform.clock_file, to=night, speed=1.0)
    phone = await platform.register("eve")
    await platform.consent.SetPreferences(
        consent_messages.SetPreferencesRequest(
            app_id=APP,
            user_id="eve",
            preferences=consent_resources.Preferences(
                quiet_hours=policy_pb2.QuietHours(
                    windows=[
                        policy_pb2.QuietHoursWindow(
                            start=types_pb2.LocalTime(hours=22), end=types_pb2.LocalTime(hours=7)
                        )
                    ]
                )
            ),
            update_mask=field_mask_pb2.FieldMask(paths=["quiet_hours"]),
            source=consent_resources.CONSENT_SOURCE_PREFERENCE_CENTER,
        )
    )
    async with platform.scheduler() as scheduler:
        sent = await scheduler.SendTransactional(
            order_update("night-1", user="eve", respect_quiet_hours=True)
        )

        async def deferred() -> bool:
            record = (
                await scheduler.GetSend(
                    messages_pb2.GetSendRequest(app_id=APP, send_id=sent.send_id)
                )
            ).record
            return record.decision.outcome == decision_pb2.OUTCOME_DEFER

        await platform.eventually(deferred, what="the deferral")
        record = (
            await scheduler.GetSend(messages_pb2.GetSendRequest(app_id=APP, send_id=sent.send_id))
        ).record
        until = record.decision.defer_until.ToDatetime(UTC)
        morning = datetime(2026, 3, 11, 6, 0, tzinfo=UTC)  # 07:00 in Paris
        assert morning <= until < morning + timedelta(minutes=30)
        assert apns_titles(platform, phone.token) == []
        shift_clock_file(platform.clock_file, to=until + timedelta(seconds=1), speed=1.0)

        async def arrived() -> bool:
            return bool(apns_titles(platform, phone.token))

        await platform.eventually(arrived, what="the morning send")


async def test_the_outbox_waits_for_an_unreachable_delivery(
    platform: Platform, tmp_path: Path
) -> None:
    phone = await platform.register("fay")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    async with platform.scheduler(
        DELIVERY_ADDR=f"127.0.0.1:{port}", PEER_TIMEOUT_S="5", HANDOFF_RETRY_MAX_S="0.5"
    ) as scheduler:
        sent = await scheduler.SendTransactional(order_update("away-1", user="fay"))

        async def in_outbox() -> bool:
            record = (
                await scheduler.GetSend(
                    messages_pb2.GetSendRequest(app_id=APP, send_id=sent.send_id)
                )
            ).record
            return record.decision.outcome == decision_pb2.OUTCOME_ALLOW

        await platform.eventually(in_outbox, what="the decision")
        async with platform.another_delivery(tmp_path, PORT=str(port)):

            async def arrived() -> bool:
                return bool(apns_titles(platform, phone.token))

            await platform.eventually(arrived, what="the hand-over once delivery is up")
