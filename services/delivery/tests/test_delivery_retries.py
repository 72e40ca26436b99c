"""The retry table through the whole service: Retry-After honoured on the service clock,
the request budget ending in DEAD_LETTERED with its history, consent re-checked before a
retry, LATE sends, apps without credentials; each with the exact calls at the fakes."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from typing import TYPE_CHECKING

import pytest

from pushwarden.common.v1 import content_pb2, decision_pb2, types_pb2
from pushwarden.consent.v1 import messages_pb2 as consent_messages
from pushwarden.consent.v1 import resources_pb2 as consent_resources
from pushwarden.delivery.v1 import messages_pb2, resources_pb2
from pushwarden.runtime.clock import FileClock, shift_clock_file
from pushwarden.sandbox.faults import FaultSpec
from pushwarden.services.delivery.domain.retry import RetryRule

if TYPE_CHECKING:
    from pushwarden.delivery.v1.delivery_pb2_grpc import (
        DeliveryServiceAsyncStub as DeliveryStub,
    )

    from .conftest import Platform

pytestmark = pytest.mark.timeout(120)

S = resources_pb2
IOS, ANDROID = types_pb2.PLATFORM_IOS, types_pb2.PLATFORM_ANDROID


def new_send(user_id: str, category_id: str = "promos") -> resources_pb2.Send:
    return resources_pb2.Send(
        send_id=f"send-{uuid.uuid4()}",
        user_id=user_id,
        category_id=category_id,
        content=content_pb2.Content(title="Hi", body="there"),
    )


async def deliver(stub: DeliveryStub, app: str, *sends: resources_pb2.Send) -> None:
    answer = await stub.Deliver(messages_pb2.DeliverRequest(app_id=app, sends=list(sends)))
    assert {r.status for r in answer.results} == {types_pb2.ITEM_STATUS_APPLIED}


async def get(stub: DeliveryStub, app: str, send_id: str) -> resources_pb2.Delivery:
    answer = await stub.GetDelivery(messages_pb2.GetDeliveryRequest(app_id=app, send_id=send_id))
    return answer.delivery


async def wait_attempts(
    platform: Platform, stub: DeliveryStub, send_id: str, count: int
) -> resources_pb2.Delivery:
    found: list[resources_pb2.Delivery] = []

    async def tried() -> bool:
        found[:] = [await get(stub, platform.app, send_id)]
        return sum(len(d.attempts) for d in found[0].devices) >= count

    await platform.eventually(tried, what=f"{count} attempts of {send_id}")
    return found[0]


async def wait_final(
    platform: Platform, stub: DeliveryStub, send_id: str
) -> resources_pb2.Delivery:
    found: list[resources_pb2.Delivery] = []

    async def final() -> bool:
        found[:] = [await get(stub, platform.app, send_id)]
        return found[0].status not in (S.DELIVERY_STATUS_PENDING, S.DELIVERY_STATUS_IN_PROGRESS)

    await platform.eventually(final, what=f"{send_id} final")
    return found[0]


def test_backoff_doubles_with_jitter_and_never_undercuts_retry_after() -> None:
    rule = RetryRule(max_attempts=3, base_s=1.0, max_s=10.0)
    assert [rule.delay(n, None, 0.0) for n in range(5)] == [0.5, 1.0, 2.0, 4.0, 5.0]
    assert [rule.delay(n, None, 0.999) for n in range(3)] == pytest.approx([1.0, 2.0, 4.0], 0.01)
    assert rule.delay(0, 120.0, 0.5) == 120.0
    assert rule.delay(4, 1.0, 0.5) == 7.5
    assert (rule.exhausted(2), rule.exhausted(3)) == (False, True)


async def test_a_429_with_retry_after_waits_at_least_that_long_on_the_service_clock(
    platform: Platform,
) -> None:
    android = await platform.register("fay", ANDROID)
    platform.sandbox.fcm.faults.add(
        FaultSpec("status", token=android.token, status=429, retry_after=120, times=1)
    )
    send = new_send("fay")
    async with platform.delivery() as stub:
        await deliver(stub, platform.app, send)
        waiting = await wait_attempts(platform, stub, send.send_id, 1)
        [first] = waiting.devices[0].attempts
        assert first.outcome == S.ATTEMPT_OUTCOME_RETRYABLE
        assert first.retry_after.seconds == 120
        finished = first.started_at.ToDatetime(dt.UTC) + first.latency.ToTimedelta()
        assert first.next_attempt_at.ToDatetime(dt.UTC) >= finished + dt.timedelta(seconds=120)
        # 90 s later (past the 15-30 s backoff, short of Retry-After): still one call.
        shift_clock_file(platform.clock_file, advance=dt.timedelta(seconds=90))
        await asyncio.sleep(0.5)  # ten dispatcher polls (0.05 s) that must find it not due
        assert platform.sandbox.fcm.recorder.count(token=android.token) == 1
        assert (await get(stub, platform.app, send.send_id)).status == (
            S.DELIVERY_STATUS_IN_PROGRESS
        )
        shift_clock_file(platform.clock_file, advance=dt.timedelta(seconds=35))
        delivered = await wait_final(platform, stub, send.send_id)

    assert delivered.status == S.DELIVERY_STATUS_DELIVERED
    assert platform.sandbox.fcm.recorder.count(token=android.token) == 2


async def test_retries_stop_at_the_request_budget_and_the_send_is_dead_lettered(
    platform: Platform,
) -> None:
    iphone = await platform.register("gus", IOS)
    platform.sandbox.apns.faults.add(FaultSpec("status", token=iphone.token, status=500))
    send = new_send("gus", "orders")
    async with platform.delivery(MAX_ATTEMPTS="3", RETRY_BASE_S="0.01") as stub:
        await deliver(stub, platform.app, send)
        dead = await wait_final(platform, stub, send.send_id)

    assert dead.status == S.DELIVERY_STATUS_DEAD_LETTERED
    assert dead.failure_reason == "InternalServerError"
    [device] = dead.devices
    assert device.status == S.DELIVERY_STATUS_DEAD_LETTERED
    assert [a.retry_number for a in device.attempts] == [0, 1, 2]
    assert {a.outcome for a in device.attempts} == {S.ATTEMPT_OUTCOME_RETRYABLE}
    requests = platform.sandbox.apns.recorder.requests(token=iphone.token)
    assert len(requests) == 3
    assert {r.apns_id for r in requests} == {device.attempts[0].apns_id}


async def test_an_opt_out_between_two_tries_stops_the_retry(platform: Platform) -> None:
    iphone = await platform.register("hal", IOS)
    platform.sandbox.apns.faults.add(FaultSpec("status", token=iphone.token, status=503, times=1))
    send = new_send("hal")
    async with platform.delivery() as stub:
        await deliver(stub, platform.app, send)
        await wait_attempts(platform, stub, send.send_id, 1)
        await platform.consent.RecordConsent(
            consent_messages.RecordConsentRequest(
                app_id=platform.app,
                user_id="hal",
                scope=consent_resources.ConsentScope(
                    kind=consent_resources.CONSENT_SCOPE_KIND_CATEGORY, category_id="promos"
                ),
                action=consent_resources.CONSENT_ACTION_OPT_OUT,
                source=consent_resources.CONSENT_SOURCE_PREFERENCE_CENTER,
                idempotency_key="hal-out",
            )
        )
        shift_clock_file(platform.clock_file, advance=dt.timedelta(seconds=61))
        stopped = await wait_final(platform, stub, send.send_id)

    assert stopped.status == S.DELIVERY_STATUS_SUPPRESSED
    assert stopped.suppressed_reason == decision_pb2.REASON_CODE_CATEGORY_OPTED_OUT
    assert platform.sandbox.apns.recorder.count(token=iphone.token) == 1


async def test_a_send_past_its_latest_send_instant_ends_late_without_a_call(
    platform: Platform,
) -> None:
    iphone = await platform.register("ida", IOS)
    send = new_send("ida")
    send.latest_send_at.FromDatetime(FileClock(platform.clock_file).now() + dt.timedelta(hours=1))
    async with platform.delivery(dispatch=False) as api:
        await deliver(api, platform.app, send)
    shift_clock_file(platform.clock_file, advance=dt.timedelta(hours=1))
    async with platform.delivery() as stub:
        late = await wait_final(platform, stub, send.send_id)
    assert late.status == S.DELIVERY_STATUS_LATE
    assert platform.sandbox.apns.recorder.count(token=iphone.token) == 0


async def test_an_app_without_credentials_fails_its_devices_without_a_call(
    platform: Platform,
) -> None:
    await platform.consent.DefineCategory(
        consent_messages.DefineCategoryRequest(
            app_id="bare",
            category=consent_resources.Category(
                category_id="news",
                kind=types_pb2.CATEGORY_KIND_MARKETING,
                default_state=consent_resources.DEFAULT_STATE_OPTED_IN,
            ),
        )
    )
    await platform.consent.RegisterDevice(
        consent_messages.RegisterDeviceRequest(
            app_id="bare",
            device=consent_resources.Device(
                user_id="jo",
                platform=IOS,
                provider=types_pb2.PROVIDER_APNS,
                token="ab" * 32,
                permission=types_pb2.PERMISSION_STATE_GRANTED,
            ),
        )
    )
    send = new_send("jo", "news")
    async with platform.delivery() as stub:
        answer = await stub.Deliver(messages_pb2.DeliverRequest(app_id="bare", sends=[send]))
        assert answer.results[0].status == types_pb2.ITEM_STATUS_APPLIED
        found: list[resources_pb2.Delivery] = []

        async def final() -> bool:
            found[:] = [await get(stub, "bare", send.send_id)]
            return found[0].status == S.DELIVERY_STATUS_FAILED

        await platform.eventually(final, what="no-credentials failure")
    assert found[0].failure_reason == "no_credentials"
    assert not found[0].devices[0].attempts
    assert platform.sandbox.apns.recorder.count(token="ab" * 32) == 0
