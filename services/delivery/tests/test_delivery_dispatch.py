"""Deliver through real gRPC, a real consent service, the real aioapns and firebase-admin
against the fake APNs and FCM: what reaches the fakes, exactly how often, and what
GetDelivery and consent say afterwards. Time is moved with the shared clock file."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from typing import TYPE_CHECKING

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, NumberDataPoint
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from pushwarden.common.v1 import content_pb2, decision_pb2, types_pb2
from pushwarden.consent.v1 import messages_pb2 as consent_messages
from pushwarden.consent.v1 import resources_pb2 as consent_resources
from pushwarden.delivery.v1 import messages_pb2, resources_pb2
from pushwarden.payload import DeliveryOptions, render_apns, render_fcm
from pushwarden.runtime.clock import FileClock, shift_clock_file
from pushwarden.sandbox.faults import FaultSpec
from pushwarden.services.delivery.telemetry import AttemptTelemetry

if TYPE_CHECKING:
    from pushwarden.delivery.v1.delivery_pb2_grpc import (
        DeliveryServiceAsyncStub as DeliveryStub,
    )

    from .conftest import Platform

pytestmark = pytest.mark.timeout(120)

IOS, ANDROID = types_pb2.PLATFORM_IOS, types_pb2.PLATFORM_ANDROID
S = resources_pb2
CONTENT = content_pb2.Content(title="Spring sale", body="20 % off", custom_data={"sku": "42"})


def new_send(user_id: str, category_id: str = "promos", **fields: object) -> resources_pb2.Send:
    return resources_pb2.Send(
        send_id=f"send-{uuid.uuid4()}",
        user_id=user_id,
        category_id=category_id,
        content=CONTENT,
        **fields,  # type: ignore[arg-type]
    )


async def deliver(stub: DeliveryStub, app: str, *sends: resources_pb2.Send) -> None:
    answer = await stub.Deliver(messages_pb2.DeliverRequest(app_id=app, sends=list(sends)))
    assert [r.status for r in answer.results] == [types_pb2.ITEM_STATUS_APPLIED] * len(sends)


async def delivery_of(stub: DeliveryStub, app: str, send_id: str) -> resources_pb2.Delivery:
    answer = await stub.GetDelivery(messages_pb2.GetDeliveryRequest(app_id=app, send_id=send_id))
    return answer.delivery


async def wait_status(
    platform: Platform,
    stub: DeliveryStub,
    send_id: str,
    status: resources_pb2.DeliveryStatus.ValueType,
) -> resources_pb2.Delivery:
    found: list[resources_pb2.Delivery] = []

    async def reached() -> bool:
        found[:] = [await delivery_of(stub, platform.app, send_id)]
        return found[0].status == status

    await platform.eventually(reached, what=f"{send_id} {S.DeliveryStatus.Name(status)}")
    return found[0]


def fcm_sends(platform: Platform, token: str) -> list[dict[str, object]]:
    return [
        json.loads(r.body)["message"] for r in platform.sandbox.fcm.recorder.requests(token=token)
    ]


async def test_a_user_with_an_iphone_and_an_android_phone_gets_one_rendered_push_on_each(
    platform: Platform,
) -> None:
    iphone = await platform.register("ada", IOS)
    android = await platform.register("ada", ANDROID)
    send = new_send("ada", campaign_id="spring", variant_id="a")
    async with platform.delivery() as stub:
        await deliver(stub, platform.app, send)
        delivery = await wait_status(platform, stub, send.send_id, S.DELIVERY_STATUS_DELIVERED)

    options = DeliveryOptions.for_send(send, now=dt.datetime.now(dt.UTC), apns_topic=platform.topic)
    [apns_request] = platform.sandbox.apns.recorder.requests(token=iphone.token)
    assert apns_request.body == render_apns(CONTENT, options).body
    assert apns_request.header("apns-topic") == platform.topic
    [fcm_message] = fcm_sends(platform, android.token)
    rendered = render_fcm(CONTENT, options).message
    assert fcm_message["data"] == rendered.data
    assert rendered.notification is not None
    assert fcm_message["notification"] == {
        "title": rendered.notification.title,
        "body": rendered.notification.body,
    }
    assert (rendered.data or {}).get("pw_send_id") == send.send_id

    assert delivery.category_kind == types_pb2.CATEGORY_KIND_MARKETING
    assert delivery.send == send
    assert delivery.HasField("completed_at")
    devices = {d.device_id: d for d in delivery.devices}
    assert set(devices) == {iphone.device_id, android.device_id}
    [apns_try] = devices[iphone.device_id].attempts
    [fcm_try] = devices[android.device_id].attempts
    assert apns_try.outcome == fcm_try.outcome == S.ATTEMPT_OUTCOME_DELIVERED
    assert apns_try.apns_id == apns_request.apns_id
    assert fcm_try.fcm_message_id.startswith("projects/shop-project/messages/")
    assert {d.status for d in delivery.devices} == {S.DELIVERY_STATUS_DELIVERED}


async def test_an_opt_out_after_deliver_stops_marketing_but_not_a_transactional_send(
    platform: Platform,
) -> None:
    iphone = await platform.register("bea", IOS)
    promo, order = new_send("bea", "promos"), new_send("bea", "orders")
    async with platform.delivery(dispatch=False) as api:  # stores, never dispatches
        await deliver(api, platform.app, promo, order)
        assert (await delivery_of(api, platform.app, promo.send_id)).status == (
            S.DELIVERY_STATUS_PENDING
        )
    await platform.consent.RecordConsent(
        consent_messages.RecordConsentRequest(
            app_id=platform.app,
            user_id="bea",
            scope=consent_resources.ConsentScope(
                kind=consent_resources.CONSENT_SCOPE_KIND_ALL_MARKETING
            ),
            action=consent_resources.CONSENT_ACTION_OPT_OUT,
            source=consent_resources.CONSENT_SOURCE_PREFERENCE_CENTER,
            idempotency_key="bea-out",
        )
    )
    async with platform.delivery() as stub:
        suppressed = await wait_status(platform, stub, promo.send_id, S.DELIVERY_STATUS_SUPPRESSED)
        delivered = await wait_status(platform, stub, order.send_id, S.DELIVERY_STATUS_DELIVERED)

    assert suppressed.suppressed_reason == decision_pb2.REASON_CODE_OPTED_OUT
    assert not suppressed.devices
    assert delivered.category_kind == types_pb2.CATEGORY_KIND_TRANSACTIONAL
    [request] = platform.sandbox.apns.recorder.requests(token=iphone.token)
    assert json.loads(request.body)["pw_send_id"] == order.send_id


async def test_a_dead_token_is_one_call_and_the_device_is_invalid_at_consent(
    platform: Platform,
) -> None:
    iphone = await platform.register("cy", IOS)
    # Just after the registration (an older provider timestamp would be stale at
    # consent) and before the answer arrives (a later one, from a provider clock running
    # ahead of ours, is recorded as the instant delivery learned it).
    stamp_ms = iphone.registered_at.ToMilliseconds() + 1
    platform.sandbox.apns.faults.add(
        FaultSpec("status", token=iphone.token, status=410, timestamp_ms=stamp_ms)
    )
    send = new_send("cy")
    async with platform.delivery() as stub:
        await deliver(stub, platform.app, send)
        failed = await wait_status(platform, stub, send.send_id, S.DELIVERY_STATUS_FAILED)

        async def invalid_at_consent() -> bool:
            answer = await platform.consent.CheckEligibility(
                consent_messages.CheckEligibilityRequest(
                    app_id=platform.app, category_id="promos", user_ids=["cy"]
                )
            )
            [user] = answer.users
            return not user.devices and user.reason == decision_pb2.REASON_CODE_NO_DEVICE

        await platform.eventually(invalid_at_consent, what="device invalid at consent")

    assert platform.sandbox.apns.recorder.count(token=iphone.token) == 1
    assert failed.failure_reason == "Unregistered"
    [device] = failed.devices
    [attempt] = device.attempts
    assert attempt.outcome == S.ATTEMPT_OUTCOME_TOKEN_DEAD
    listed = await platform.consent.ListDevices(
        consent_messages.ListDevicesRequest(
            app_id=platform.app,
            user_id="cy",
            statuses=[consent_resources.DEVICE_STATUS_INVALID],
        )
    )
    [invalid] = listed.devices
    assert invalid.device_id == iphone.device_id
    assert invalid.invalid_reason == consent_resources.INVALIDATION_REASON_UNREGISTERED
    assert invalid.invalidated_at.ToMilliseconds() == stamp_ms


async def test_a_503_is_retried_with_the_same_apns_id_after_the_backoff(
    platform: Platform,
) -> None:
    iphone = await platform.register("dee", IOS)
    platform.sandbox.apns.faults.add(FaultSpec("status", token=iphone.token, status=503, times=1))
    send = new_send("dee", "orders")
    async with platform.delivery() as stub:
        await deliver(stub, platform.app, send)

        async def first_try_failed() -> bool:
            delivery = await delivery_of(stub, platform.app, send.send_id)
            return bool(delivery.devices and delivery.devices[0].attempts)

        await platform.eventually(first_try_failed, what="the first try")
        waiting = await delivery_of(stub, platform.app, send.send_id)
        assert waiting.status == S.DELIVERY_STATUS_IN_PROGRESS
        [first] = waiting.devices[0].attempts
        assert first.outcome == S.ATTEMPT_OUTCOME_RETRYABLE
        assert first.reason == "ServiceUnavailable"
        # The backoff (30 s base, so at least 15 s) holds on the service clock ...
        now = FileClock(platform.clock_file).now()
        assert first.next_attempt_at.ToDatetime(dt.UTC) >= now + dt.timedelta(seconds=10)
        assert platform.sandbox.apns.recorder.count(token=iphone.token) == 1
        # ... until the clock passes it.
        shift_clock_file(platform.clock_file, advance=dt.timedelta(seconds=31))
        delivered = await wait_status(platform, stub, send.send_id, S.DELIVERY_STATUS_DELIVERED)

    requests = platform.sandbox.apns.recorder.requests(token=iphone.token)
    assert [r.status for r in requests] == [503, 200]
    assert requests[0].apns_id == requests[1].apns_id == first.apns_id
    assert [a.retry_number for a in delivered.devices[0].attempts] == [0, 1]


async def test_an_expired_send_ends_expired_without_a_provider_call(
    platform: Platform,
) -> None:
    iphone = await platform.register("eve", IOS)
    now = FileClock(platform.clock_file).now()
    send = new_send("eve")
    send.expires_at.FromDatetime(now + dt.timedelta(minutes=5))
    async with platform.delivery(dispatch=False) as api:
        await deliver(api, platform.app, send)
    shift_clock_file(platform.clock_file, advance=dt.timedelta(minutes=6))
    async with platform.delivery() as stub:
        expired = await wait_status(platform, stub, send.send_id, S.DELIVERY_STATUS_EXPIRED)

    assert platform.sandbox.apns.recorder.count(token=iphone.token) == 0
    assert not expired.devices
    assert expired.HasField("completed_at")


async def test_an_apns_expiry_counts_on_the_service_clock_not_the_wall_clock(
    platform: Platform,
) -> None:
    # The service's clock a day ahead of the wall clock: a send that expires in an hour
    # by it goes with an hour of life at APNs (not a day and an hour, as a TTL taken
    # from the wall clock would give).
    iphone = await platform.register("ida", IOS)
    now = shift_clock_file(platform.clock_file, advance=dt.timedelta(days=1))
    send = new_send("ida")
    send.expires_at.FromDatetime(now + dt.timedelta(hours=1))
    async with platform.delivery() as stub:
        await deliver(stub, platform.app, send)
        await wait_status(platform, stub, send.send_id, S.DELIVERY_STATUS_DELIVERED)

    [request] = platform.sandbox.apns.recorder.requests(token=iphone.token)
    expiration = int(dict(request.headers)["apns-expiration"])
    assert abs(expiration - (request.time + 3600)) < 120, expiration - request.time


async def test_each_provider_attempt_is_a_span_of_the_sends_trace_and_is_counted(
    platform: Platform,
) -> None:
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    reader = InMemoryMetricReader()
    telemetry = AttemptTelemetry(tracer_provider, MeterProvider(metric_readers=[reader]))
    iphone = await platform.register("kit", IOS)
    platform.sandbox.apns.faults.add(FaultSpec("status", token=iphone.token, status=503, times=1))
    trace_id, parent_id = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    send = new_send("kit", "orders", traceparent=f"00-{trace_id}-{parent_id}-01")
    async with platform.delivery(telemetry=telemetry, RETRY_BASE_S="0.01") as stub:
        await deliver(stub, platform.app, send)
        await wait_status(platform, stub, send.send_id, S.DELIVERY_STATUS_DELIVERED)

    finished = spans.get_finished_spans()
    assert [s.attributes["pushwarden.delivery.outcome"] for s in finished if s.attributes] == [
        "RETRYABLE",
        "DELIVERED",
    ]
    for number, span in enumerate(finished):
        assert span.context is not None
        assert span.parent is not None
        assert f"{span.context.trace_id:032x}" == trace_id
        assert f"{span.parent.span_id:016x}" == parent_id
        assert span.attributes is not None
        assert span.attributes["pushwarden.delivery.retry_number"] == number
        assert span.attributes["pushwarden.send_id"] == send.send_id
    data = reader.get_metrics_data()
    assert data is not None
    counts = {
        (point.attributes or {}).get("outcome"): point.value
        for resource in data.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
        if metric.name == "pushwarden.delivery.attempts"
        for point in metric.data.data_points
        if isinstance(point, NumberDataPoint)
    }
    assert counts == {"RETRYABLE": 1, "DELIVERED": 1}
