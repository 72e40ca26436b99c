"""Scenarios 1, 4, 5, 6 and 7 of the integration suite, on one platform: onboarding and
the opt-in funnel, an order update during a large campaign, an opt-out mid-campaign, a
dead token, and GDPR export and erasure. Each asserts what the fake providers received."""

from __future__ import annotations

import time
from datetime import datetime, timedelta

import pytest
from google.protobuf import field_mask_pb2
from google.protobuf.timestamp_pb2 import Timestamp

from pushwarden.common.v1 import content_pb2, decision_pb2, types_pb2
from pushwarden.consent.v1 import messages_pb2 as consent_messages
from pushwarden.consent.v1 import resources_pb2 as consent_resources
from pushwarden.delivery.v1 import messages_pb2 as delivery_messages
from pushwarden.scheduler.v1 import messages_pb2, resources_pb2
from pushwarden.segmentation.v1 import messages_pb2 as seg_messages
from pushwarden.segmentation.v1 import resources_pb2 as seg_resources

from .conftest import APP, Platform
from .harness import eventually
from .scenarios import (
    ORDERS,
    PROMOS,
    decisions,
    get_campaign,
    join_segment,
    opt_out_of_marketing,
    order_update,
    segment_of,
    set_up,
    start_campaign,
    variant,
    wait_delivered,
    wait_state,
)

UNSUBSCRIBED = "You are unsubscribed"


@pytest.fixture(scope="module", autouse=True)
def world(platform: Platform) -> None:
    """The clock, the categories, and an app policy that confirms opt-outs."""
    set_up(platform)
    platform.scheduler.SetPolicy(
        messages_pb2.SetPolicyRequest(
            app_id=APP,
            policy=resources_pb2.Policy(
                opt_out_confirmation=resources_pb2.OptOutConfirmation(
                    enabled=True,
                    category_id=ORDERS,
                    template=resources_pb2.Template(
                        content=content_pb2.Content(title=UNSUBSCRIBED, body="Bye")
                    ),
                )
            ),
        )
    )


def prompt(
    platform: Platform,
    user: str,
    device: str,
    event: consent_resources.PromptEvent.ValueType,
    n: int,
) -> None:
    platform.consent.RecordPermissionPrompt(
        consent_messages.RecordPermissionPromptRequest(
            app_id=APP,
            user_id=user,
            device_id=device,
            event=event,
            context="onboarding",
            idempotency_key=f"{user}-prompt-{n}",
        )
    )


def test_1_onboarding_records_the_two_step_prompt_and_the_funnel_shows_its_rates(
    platform: Platform,
) -> None:
    # Four users install the app; the pre-prompt is shown to all four, three accept it,
    # the OS prompt is shown to those three, two grant and one denies.
    answers = {
        "onb-ada": (True, True),
        "onb-bob": (True, True),
        "onb-cy": (True, False),
        "onb-dee": (False, False),
    }
    devices = {}
    for index, (user, (accepts, grants)) in enumerate(answers.items()):
        device = platform.register(
            user, ios=index % 2 == 0, permission=types_pb2.PERMISSION_STATE_NOT_DETERMINED
        )
        prompt(platform, user, device.device_id, consent_resources.PROMPT_EVENT_PRE_PROMPT_SHOWN, 1)
        if not accepts:
            prompt(
                platform,
                user,
                device.device_id,
                consent_resources.PROMPT_EVENT_PRE_PROMPT_DECLINED,
                2,
            )
        else:
            prompt(
                platform,
                user,
                device.device_id,
                consent_resources.PROMPT_EVENT_PRE_PROMPT_ACCEPTED,
                2,
            )
            prompt(
                platform, user, device.device_id, consent_resources.PROMPT_EVENT_OS_PROMPT_SHOWN, 3
            )
            event = (
                consent_resources.PROMPT_EVENT_OS_GRANTED
                if grants
                else consent_resources.PROMPT_EVENT_OS_DENIED
            )
            prompt(platform, user, device.device_id, event, 4)
            permission = (
                types_pb2.PERMISSION_STATE_GRANTED if grants else types_pb2.PERMISSION_STATE_DENIED
            )
            device = platform.consent.UpdateDevice(
                consent_messages.UpdateDeviceRequest(
                    app_id=APP,
                    device_id=device.device_id,
                    device=consent_resources.Device(permission=permission),
                    update_mask=field_mask_pb2.FieldMask(paths=["permission"]),
                )
            ).device
        devices[user] = device

    funnel = platform.consent.GetOptInFunnel(
        consent_messages.GetOptInFunnelRequest(app_id=APP, context="onboarding")
    ).total
    assert (
        funnel.pre_prompt_shown,
        funnel.pre_prompt_accepted,
        funnel.pre_prompt_declined,
        funnel.os_prompt_shown,
        funnel.os_granted,
        funnel.os_denied,
    ) == (4, 3, 1, 3, 2, 1)
    assert funnel.pre_prompt_acceptance_rate == pytest.approx(0.75)
    assert funnel.os_grant_rate == pytest.approx(2 / 3)
    assert funnel.overall_opt_in_rate == pytest.approx(0.5)

    # A welcome (transactional) to everyone: only the two devices with OS permission
    # get it, on their own provider; the others receive nothing at all.
    sends = {
        user: platform.scheduler.SendTransactional(order_update(user, f"welcome-{user}", "Welcome"))
        for user in answers
    }
    for user in ("onb-ada", "onb-bob"):
        wait_delivered(platform, sends[user].send_id)
    assert platform.titles(devices["onb-ada"]) == ["Welcome"]
    assert platform.titles(devices["onb-bob"]) == ["Welcome"]
    assert devices["onb-bob"].provider == types_pb2.PROVIDER_FCM
    for user in ("onb-cy", "onb-dee"):
        decided = decision_of(platform, sends[user].send_id)
        assert decided.outcome == decision_pb2.OUTCOME_DROP, user
        assert decided.reason == decision_pb2.REASON_CODE_NO_PERMISSION, user
    for user in ("onb-cy", "onb-dee"):
        fake = platform.apns if devices[user].provider == types_pb2.PROVIDER_APNS else platform.fcm
        assert fake.requests(token=devices[user].token) == [], user


def decision_of(platform: Platform, send_id: str) -> decision_pb2.Decision:
    """The scheduler's decision on a transactional send, once made."""

    def record() -> resources_pb2.ContactRecord:
        request = messages_pb2.GetSendRequest(app_id=APP, send_id=send_id)
        return platform.scheduler.GetSend(request).record

    eventually(lambda: record().HasField("decision"), what=f"the decision on {send_id}")
    return record().decision


def many_users(platform: Platform, prefix: str, count: int) -> dict[str, consent_resources.Device]:
    return {f"{prefix}{i:03d}": platform.register(f"{prefix}{i:03d}") for i in range(count)}


def test_4_an_order_update_during_a_large_campaign_does_not_wait_for_it(
    platform: Platform,
) -> None:
    devices = many_users(platform, "big-", 200)
    segment_of(platform, "big", devices)
    # Start at the beginning of a minute: the first throttle slot lasts a whole minute.
    now = platform.compose.now()
    platform.compose.shift_clock(to=now.replace(second=0, microsecond=0) + timedelta(minutes=1))
    campaign_id = start_campaign(
        platform,
        "big-sale",
        resources_pb2.Campaign(
            name="Big sale",
            category_id=PROMOS,
            audience=resources_pb2.Audience(include_segment_ids=["big"]),
            variants=[variant("A", 100, "Big sale")],
            schedule=resources_pb2.Schedule(immediate=resources_pb2.ImmediateSchedule()),
            # 50 a minute: four minutes of the test clock to reach everyone.
            throttle=resources_pb2.Throttle(sends_per_minute=50),
        ),
    )
    eventually(
        lambda: get_campaign(platform, campaign_id).progress.sent > 0,
        what="the campaign's first sends",
    )
    customer = "big-007"
    sent = platform.scheduler.SendTransactional(order_update(customer, "order-4711"))
    wait_delivered(platform, sent.send_id)
    # The order update is there while the campaign still holds 150 users for later
    # minutes: it did not wait for them.
    running = get_campaign(platform, campaign_id)
    assert running.state == resources_pb2.CAMPAIGN_STATE_RUNNING
    assert running.progress.sent <= 50
    assert "Your order shipped" in platform.titles(devices[customer])

    finish_throttled(platform, campaign_id)
    expected = {user: ["Big sale"] for user in devices}
    expected[customer] = ["Big sale", "Your order shipped"]
    eventually(lambda: fake_total(platform, devices) >= len(devices) + 1, what="every push")
    got = {user: sorted(platform.titles(device)) for user, device in devices.items()}
    assert got == {user: sorted(titles) for user, titles in expected.items()}
    records = platform.apns.requests(token=devices[customer].token)
    order_at = next(r["time"] for r in records if "order" in r["body"])
    last_campaign_push = max(
        r["time"]
        for device in devices.values()
        for r in platform.apns.requests(token=device.token)
        if "Big sale" in r["body"]
    )
    assert order_at < last_campaign_push


def finish_throttled(platform: Platform, campaign_id: str) -> None:
    """Move the clock a minute at a time until the throttled campaign completes."""
    for _ in range(30):
        campaign = get_campaign(platform, campaign_id)
        if campaign.state == resources_pb2.CAMPAIGN_STATE_COMPLETED:
            return
        sent = campaign.progress.sent
        platform.compose.shift_clock(advance=timedelta(minutes=1))

        def moved_on(sent: int = sent) -> bool:
            now = get_campaign(platform, campaign_id)
            return now.progress.sent > sent or now.state == resources_pb2.CAMPAIGN_STATE_COMPLETED

        eventually(moved_on, what="the next minute's sends")
    wait_state(platform, campaign_id, resources_pb2.CAMPAIGN_STATE_COMPLETED)


def fake_total(platform: Platform, devices: dict[str, consent_resources.Device]) -> int:
    return sum(len(platform.apns.requests(token=d.token)) for d in devices.values())


def test_5_an_opt_out_mid_campaign_stops_everything_but_its_confirmation(
    platform: Platform,
) -> None:
    devices = many_users(platform, "mid-", 40)
    segment_of(platform, "mid", devices)
    campaign_id = start_campaign(
        platform,
        "mid-sale",
        resources_pb2.Campaign(
            name="Mid sale",
            category_id=PROMOS,
            audience=resources_pb2.Audience(include_segment_ids=["mid"]),
            variants=[variant("A", 100, "Mid sale")],
            schedule=resources_pb2.Schedule(immediate=resources_pb2.ImmediateSchedule()),
            throttle=resources_pb2.Throttle(sends_per_minute=10),
        ),
    )
    eventually(lambda: fake_total(platform, devices) >= 5, what="the first pushes")
    platform.scheduler.PauseCampaign(
        messages_pb2.PauseCampaignRequest(app_id=APP, campaign_id=campaign_id)
    )
    # Paused: wait until every send handed to delivery has reached the fake.
    eventually(
        lambda: (
            get_campaign(platform, campaign_id).state == resources_pb2.CAMPAIGN_STATE_PAUSED
            and fake_total(platform, devices) == get_campaign(platform, campaign_id).progress.sent
        ),
        what="the paused campaign's sends at the fake",
    )
    leavers = [user for user, device in devices.items() if not platform.titles(device)][:3]
    assert len(leavers) == 3
    for user in leavers:
        opt_out_of_marketing(platform, user, f"{user}-out")
    platform.scheduler.ResumeCampaign(
        messages_pb2.ResumeCampaignRequest(app_id=APP, campaign_id=campaign_id)
    )
    finish_throttled(platform, campaign_id)
    for user in leavers:
        eventually(
            lambda user=user: bool(platform.titles(devices[user])),  # type: ignore[misc]
            what=f"the confirmation to {user}",
        )
    for user, device in devices.items():
        expected = [UNSUBSCRIBED] if user in leavers else ["Mid sale"]
        assert platform.titles(device) == expected, user
    by_user = {record.user_id: record for record in decisions(platform, campaign_id)}
    for user in leavers:
        assert by_user[user].decision.outcome != decision_pb2.OUTCOME_ALLOW, user


def dead_token(platform: Platform, user: str, provider_clock_ahead: timedelta) -> None:
    """APNs answers 410 Unregistered for ``user``'s phone, with the token's death stamped
    by a provider clock ``provider_clock_ahead`` of the platform's; two order updates and
    a campaign follow. The phone's token is tried once, the tablet gets all three."""
    phone = platform.register(user)
    tablet = platform.register(user, ios=False)
    dead_since = platform.compose.now() + provider_clock_ahead
    platform.apns.add_faults(
        {
            "effect": "status",
            "status": 410,
            "token": phone.token,
            "timestamp_ms": int(dead_since.timestamp() * 1000),
        }
    )
    first = platform.scheduler.SendTransactional(order_update(user, f"{user}-1", "First"))
    eventually(
        lambda: (
            bool(platform.apns.requests(token=phone.token)) and platform.titles(tablet) == ["First"]
        ),
        what="both devices tried",
    )
    wait_delivered(platform, first.send_id)
    if not provider_clock_ahead:
        invalid = consent_messages.ListDevicesRequest(
            app_id=APP, user_id=user, statuses=[consent_resources.DEVICE_STATUS_INVALID]
        )
        eventually(
            lambda: (
                [d.device_id for d in platform.consent.ListDevices(invalid).devices]
                == [phone.device_id]
            ),
            what="the phone marked invalid at consent",
        )
    else:
        time.sleep(2.0)  # as long as the report takes when consent accepts it
    second = platform.scheduler.SendTransactional(order_update(user, f"{user}-2", "Second"))
    wait_delivered(platform, second.send_id)
    segment_of(platform, user, [user])
    campaign_id = start_campaign(
        platform,
        f"{user}-sale",
        resources_pb2.Campaign(
            name="Dead sale",
            category_id=PROMOS,
            audience=resources_pb2.Audience(include_segment_ids=[user]),
            variants=[variant("A", 100, "Third")],
            schedule=resources_pb2.Schedule(immediate=resources_pb2.ImmediateSchedule()),
        ),
    )
    wait_state(platform, campaign_id, resources_pb2.CAMPAIGN_STATE_COMPLETED)
    eventually(lambda: len(platform.titles(tablet)) == 3, what="the campaign push")
    assert platform.titles(tablet) == ["First", "Second", "Third"]
    # The phone's token was tried exactly once (answered 410), never again.
    assert [r["status"] for r in platform.apns.requests(token=phone.token)] == [410]


def test_6_a_token_the_provider_reports_dead_is_never_used_again(platform: Platform) -> None:
    dead_token(platform, "dead-ada", provider_clock_ahead=timedelta(0))


def test_6_a_dead_token_stamped_by_a_provider_clock_ten_minutes_ahead_is_never_used_again(
    platform: Platform,
) -> None:
    dead_token(platform, "dead-bea", provider_clock_ahead=timedelta(minutes=10))


def timestamp(instant: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(instant)
    return stamp


def export_everywhere(platform: Platform, user: str) -> dict[str, object]:
    consent = platform.consent.ExportUserData(
        consent_messages.ExportUserDataRequest(app_id=APP, user_id=user)
    ).export
    segmentation = platform.segmentation.ExportUserData(
        seg_messages.ExportUserDataRequest(app_id=APP, user_id=user)
    )
    scheduler = platform.scheduler.ExportUserData(
        messages_pb2.ExportUserDataRequest(app_id=APP, user_id=user)
    )
    delivery = platform.delivery.ExportUserData(
        delivery_messages.ExportUserDataRequest(app_id=APP, user_id=user)
    )
    return {
        "consent.devices": len(consent.devices),
        "segmentation.profile": bool(segmentation.profile.attributes),
        "segmentation.events": len(segmentation.events),
        "scheduler.contacts": len(scheduler.contacts),
        "delivery.deliveries": len(delivery.deliveries),
    }


def test_7_gdpr_export_and_one_erasure_leave_only_the_suppression_record(
    platform: Platform,
) -> None:
    user = "gdpr-eve"
    phone = platform.register(user)
    platform.segmentation.TrackEvents(
        seg_messages.TrackEventsRequest(
            app_id=APP,
            events=[
                seg_resources.Event(
                    user_id=user,
                    name="app_opened",
                    event_id="gdpr-e1",
                    occurred_at=timestamp(platform.compose.now()),
                )
            ],
        )
    )
    segment_of(platform, "gdpr", [user, "gdpr-other"])
    other = platform.register("gdpr-other")
    sent = platform.scheduler.SendTransactional(order_update(user, "gdpr-order"))
    wait_delivered(platform, sent.send_id)

    before = export_everywhere(platform, user)
    assert before == {
        "consent.devices": 1,
        "segmentation.profile": True,
        "segmentation.events": 1,
        "scheduler.contacts": 1,
        "delivery.deliveries": 1,
    }

    erased = platform.consent.EraseUser(
        consent_messages.EraseUserRequest(
            app_id=APP, user_id=user, actor_type=consent_resources.ACTOR_TYPE_APP_BACKEND
        )
    )
    assert not erased.already_erased
    nothing = {
        "consent.devices": 0,
        "segmentation.profile": False,
        "segmentation.events": 0,
        "scheduler.contacts": 0,
        "delivery.deliveries": 0,
    }
    eventually(lambda: export_everywhere(platform, user) == nothing, what="erasure everywhere")
    check = platform.consent.CheckErasure(
        consent_messages.CheckErasureRequest(app_id=APP, user_ids=[user])
    )
    assert [u.suppressed for u in check.users] == [True]

    # The same user id registers again: still out of marketing, transactional reaches it.
    again = platform.register(user)
    join_segment(platform, "gdpr", [user])
    campaign_id = start_campaign(
        platform,
        "gdpr-sale",
        resources_pb2.Campaign(
            name="After erasure",
            category_id=PROMOS,
            audience=resources_pb2.Audience(include_segment_ids=["gdpr"]),
            variants=[variant("A", 100, "After erasure")],
            schedule=resources_pb2.Schedule(immediate=resources_pb2.ImmediateSchedule()),
        ),
    )
    wait_state(platform, campaign_id, resources_pb2.CAMPAIGN_STATE_COMPLETED)
    eventually(lambda: platform.titles(other) == ["After erasure"], what="the other user's push")
    by_user = {record.user_id: record for record in decisions(platform, campaign_id)}
    assert by_user[user].decision.outcome == decision_pb2.OUTCOME_DROP
    assert platform.titles(again) == []
    assert platform.titles(phone) == ["Your order shipped"]


def test_7_an_erased_user_id_registering_again_gets_its_order_updates(platform: Platform) -> None:
    user = "gdpr-fay"
    platform.register(user)
    platform.consent.EraseUser(
        consent_messages.EraseUserRequest(
            app_id=APP, user_id=user, actor_type=consent_resources.ACTOR_TYPE_APP_BACKEND
        )
    )
    again = platform.register(user)
    sent = platform.scheduler.SendTransactional(order_update(user, "fay-order", "Again"))
    decided = decision_of(platform, sent.send_id)
    # Suppression keeps the user out of marketing only (consent.proto, EraseUser).
    assert (decided.outcome, decided.reason) == (
        decision_pb2.OUTCOME_ALLOW,
        decision_pb2.REASON_CODE_UNSPECIFIED,
    )
    wait_delivered(platform, sent.send_id)
    assert platform.titles(again) == ["Again"]
