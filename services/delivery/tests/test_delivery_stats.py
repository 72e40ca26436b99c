"""RecordAssignments, ReportEngagement, GetCampaignStats, GetOpenHours and ExportUserData
through real gRPC with a real consent service and the fake providers, on SQLite and on
PostgreSQL: batches stored before the answer, idempotent resends, per-item rejections,
INVALID_ARGUMENT naming the field with nothing written, and statistics computed intent
to treat with the Newcombe interval."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import TYPE_CHECKING

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from pushwarden.common.v1 import content_pb2, types_pb2
from pushwarden.consent.v1 import messages_pb2 as consent_messages
from pushwarden.consent.v1 import resources_pb2 as consent_resources
from pushwarden.delivery.v1 import messages_pb2, resources_pb2
from pushwarden.runtime.clock import FileClock
from pushwarden.runtime.servicetest import rich_error
from pushwarden.sandbox.faults import FaultSpec
from pushwarden.services.delivery.domain.lift import holdout_lift

if TYPE_CHECKING:
    from pushwarden.delivery.v1.delivery_pb2_grpc import (
        DeliveryServiceAsyncStub as DeliveryStub,
    )

    from .conftest import Platform

pytestmark = pytest.mark.timeout(180)

IOS = types_pb2.PLATFORM_IOS
APPLIED, UNCHANGED, REJECTED = (
    types_pb2.ITEM_STATUS_APPLIED,
    types_pb2.ITEM_STATUS_UNCHANGED,
    types_pb2.ITEM_STATUS_REJECTED,
)
OPENED, DISMISSED, CONVERTED, DELIVERED = (
    resources_pb2.ENGAGEMENT_KIND_OPENED,
    resources_pb2.ENGAGEMENT_KIND_DISMISSED,
    resources_pb2.ENGAGEMENT_KIND_CONVERTED,
    resources_pb2.ENGAGEMENT_KIND_DELIVERED,
)
CONTENT = content_pb2.Content(title="Spring sale", body="20 % off")


def stamp(instant: dt.datetime) -> Timestamp:
    value = Timestamp()
    value.FromDatetime(instant)
    return value


def seconds(value: float) -> Duration:
    window = Duration()
    window.FromTimedelta(dt.timedelta(seconds=value))
    return window


def now(platform: Platform) -> dt.datetime:
    return FileClock(platform.clock_file).now()


def new_send(user_id: str, **fields: object) -> resources_pb2.Send:
    return resources_pb2.Send(
        send_id=f"send-{uuid.uuid4()}",
        user_id=user_id,
        category_id="promos",
        content=CONTENT,
        **fields,  # type: ignore[arg-type]
    )


def assignment(
    user_id: str, at: dt.datetime, variant: str | None = None, firing_id: str = ""
) -> resources_pb2.Assignment:
    item = resources_pb2.Assignment(user_id=user_id, assigned_at=stamp(at), firing_id=firing_id)
    if variant == "holdout":
        item.holdout = True
    elif variant is not None:
        item.variant_id = variant
    return item


def event(
    kind: resources_pb2.EngagementKind.ValueType,
    user_id: str,
    at: dt.datetime,
    send_id: str = "",
    **fields: object,
) -> resources_pb2.EngagementEvent:
    return resources_pb2.EngagementEvent(
        event_id=f"ev-{uuid.uuid4()}",
        kind=kind,
        user_id=user_id,
        send_id=send_id,
        occurred_at=stamp(at),
        **fields,  # type: ignore[arg-type]
    )


async def deliver(stub: DeliveryStub, app: str, *sends: resources_pb2.Send) -> None:
    answer = await stub.Deliver(messages_pb2.DeliverRequest(app_id=app, sends=list(sends)))
    assert [r.status for r in answer.results] == [APPLIED] * len(sends)


async def record(
    stub: DeliveryStub, app: str, *items: resources_pb2.Assignment, **subject: str
) -> list[tuple[str, int]]:
    answer = await stub.RecordAssignments(
        messages_pb2.RecordAssignmentsRequest(app_id=app, assignments=list(items), **subject)
    )
    return [(r.id, r.status) for r in answer.results]


async def report(
    stub: DeliveryStub, app: str, *events: resources_pb2.EngagementEvent
) -> list[types_pb2.ItemResult]:
    answer = await stub.ReportEngagement(
        messages_pb2.ReportEngagementRequest(app_id=app, events=list(events))
    )
    return list(answer.results)


async def stats(
    stub: DeliveryStub,
    app: str,
    window: Duration | None = None,
    *,
    campaign_id: str | None = None,
    trigger_id: str | None = None,
) -> messages_pb2.GetCampaignStatsResponse:
    request = messages_pb2.GetCampaignStatsRequest(app_id=app)
    if campaign_id is not None:
        request.campaign_id = campaign_id
    if trigger_id is not None:
        request.trigger_id = trigger_id
    if window is not None:
        request.attribution_window.CopyFrom(window)
    return await stub.GetCampaignStats(request)


async def refused(call: object) -> dict[str, str]:
    """The field violations of an INVALID_ARGUMENT refusal."""
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call  # type: ignore[misc]
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT, raised.value.details()
    return rich_error(raised.value).fields


async def not_found(
    stub: DeliveryStub, app: str, *, campaign_id: str | None = None, trigger_id: str | None = None
) -> bool:
    try:
        await stats(stub, app, campaign_id=campaign_id, trigger_id=trigger_id)
    except grpc.aio.AioRpcError as error:
        return error.code() == grpc.StatusCode.NOT_FOUND
    return False


async def wait_final(platform: Platform, stub: DeliveryStub, *send_ids: str) -> None:
    async def final() -> bool:
        for send_id in send_ids:
            answer = await stub.GetDelivery(
                messages_pb2.GetDeliveryRequest(app_id=platform.app, send_id=send_id)
            )
            if answer.delivery.status in (
                resources_pb2.DELIVERY_STATUS_PENDING,
                resources_pb2.DELIVERY_STATUS_IN_PROGRESS,
            ):
                return False
        return True

    await platform.eventually(final, what="every send final")


async def test_assignments_are_idempotent_per_key_and_a_changed_one_is_rejected_alone(
    platform: Platform,
) -> None:
    app, at = platform.app, now(platform)
    async with platform.delivery(dispatch=False) as api:
        first = [assignment("ann", at, "A"), assignment("bob", at, "holdout")]
        assert await record(api, app, *first, campaign_id="spring") == [
            ("ann", APPLIED),
            ("bob", APPLIED),
        ]
        assert await record(api, app, *first, campaign_id="spring") == [
            ("ann", UNCHANGED),
            ("bob", UNCHANGED),
        ]
        answer = await api.RecordAssignments(
            messages_pb2.RecordAssignmentsRequest(
                app_id=app,
                campaign_id="spring",
                assignments=[assignment("ann", at, "B"), assignment("cy", at, "B")],
            )
        )
        changed, new = answer.results
        assert (changed.id, changed.status, changed.field) == ("ann", REJECTED, "assignments[0]")
        assert "variant 'A'" in changed.message
        assert (new.id, new.status) == ("cy", APPLIED)
        # A trigger records one assignment per firing; its ids are a space of their own.
        firings = [
            assignment("ann", at, firing_id="fire-1"),
            assignment("ann", at + dt.timedelta(hours=1), firing_id="fire-2"),
        ]
        assert await record(api, app, *firings, trigger_id="spring") == [
            ("fire-1", APPLIED),
            ("fire-2", APPLIED),
        ]
        assert await record(api, app, *firings, trigger_id="spring") == [
            ("fire-1", UNCHANGED),
            ("fire-2", UNCHANGED),
        ]
        campaign = await stats(api, app, campaign_id="spring")
        trigger = await stats(api, app, trigger_id="spring")
    assert (campaign.total.targeted, campaign.holdout.users) == (2, 1)
    assert [(v.variant_id, v.targeted) for v in campaign.variants] == [("A", 1), ("B", 1)]
    assert (trigger.trigger_id, trigger.campaign_id) == ("spring", "")
    assert (trigger.total.targeted, list(trigger.variants)) == (2, [])
    assert not trigger.HasField("holdout")
    assert not trigger.total.HasField("lift")


async def test_bad_assignments_are_invalid_argument_naming_the_field_and_write_nothing(
    platform: Platform,
) -> None:
    app, at = platform.app, now(platform)
    good = assignment("ann", at, "A")
    no_group = resources_pb2.Assignment(user_id="bob", assigned_at=stamp(at))
    not_holdout = resources_pb2.Assignment(user_id="cy", assigned_at=stamp(at), holdout=False)
    not_holdout.holdout = False  # set to false: present in the oneof, but not true
    cases: list[tuple[dict[str, object], str]] = [
        ({"assignments": [good]}, "campaign_id"),
        ({"campaign_id": "c", "assignments": []}, "assignments"),
        ({"campaign_id": "c", "assignments": [good, no_group]}, "assignments[1].variant_id"),
        (
            {"campaign_id": "c", "assignments": [good, assignment("ann", at, "B")]},
            "assignments[1].user_id",
        ),
        (
            {"campaign_id": "c", "assignments": [assignment("x", at, "A", firing_id="f")]},
            "assignments[0].firing_id",
        ),
        (
            {
                "campaign_id": "c",
                "assignments": [resources_pb2.Assignment(user_id="x", variant_id="A")],
            },
            "assignments[0].assigned_at",
        ),
        ({"trigger_id": "c", "assignments": [assignment("x", at)]}, "assignments[0].firing_id"),
        (
            {"trigger_id": "c", "assignments": [assignment("x", at, "A", firing_id="f")]},
            "assignments[0].variant_id",
        ),
        (
            {
                "campaign_id": "c",
                "assignments": [assignment(f"u{i}", at, "A") for i in range(10_001)],
            },
            "assignments",
        ),
    ]
    async with platform.delivery(dispatch=False) as api:
        for fields, field in cases:
            request = messages_pb2.RecordAssignmentsRequest(app_id=app, **fields)  # type: ignore[arg-type]
            violations = await refused(api.RecordAssignments(request))
            assert field in violations, (field, violations)
        assert await not_found(api, app, campaign_id="c")
        assert await not_found(api, app, trigger_id="c")


async def test_engagement_is_idempotent_by_event_id_and_bad_items_are_rejected_alone(
    platform: Platform,
) -> None:
    app = platform.app
    mine, theirs = new_send("ann"), new_send("bob")
    at = now(platform)
    async with platform.delivery(dispatch=False) as api:
        await deliver(api, app, mine, theirs)
        opened = event(OPENED, "ann", at, mine.send_id, device_id="dev-1")
        bought = event(CONVERTED, "ann", at, value=12.5, currency="EUR", conversion_name="buy")
        batch = [
            opened,
            bought,
            event(OPENED, "ann", at, "send-unknown"),
            event(OPENED, "ann", at, theirs.send_id),
            event(DISMISSED, "ann", at + dt.timedelta(minutes=10), mine.send_id),
            event(DISMISSED, "ann", at + dt.timedelta(minutes=4), mine.send_id),
        ]
        results = await report(api, app, *batch)
        assert [(r.id, r.status) for r in results] == [
            (batch[0].event_id, APPLIED),
            (batch[1].event_id, APPLIED),
            (batch[2].event_id, REJECTED),
            (batch[3].event_id, REJECTED),
            (batch[4].event_id, REJECTED),
            (batch[5].event_id, APPLIED),
        ]
        assert [r.field for r in results[2:5]] == [
            "events[2].send_id",
            "events[3].send_id",
            "events[4].occurred_at",
        ]
        assert "another user" in results[3].message
        # A resend, even with another body, is UNCHANGED: the first write wins.
        changed = resources_pb2.EngagementEvent()
        changed.CopyFrom(bought)
        changed.value = 99.0
        again = await report(api, app, opened, changed)
        assert [r.status for r in again] == [UNCHANGED, UNCHANGED]
        export = await api.ExportUserData(
            messages_pb2.ExportUserDataRequest(app_id=app, user_id="ann")
        )
    stored = {e.event_id: e for e in export.engagement}
    assert set(stored) == {opened.event_id, bought.event_id, batch[5].event_id}
    assert stored[bought.event_id] == bought
    assert stored[opened.event_id] == opened


async def test_bad_engagement_is_invalid_argument_naming_the_field_and_writes_nothing(
    platform: Platform,
) -> None:
    app = platform.app
    send = new_send("ann")
    at = now(platform)
    good = event(OPENED, "ann", at, send.send_id)
    cases: list[tuple[list[resources_pb2.EngagementEvent], str]] = [
        ([], "events"),
        (
            [good, event(resources_pb2.ENGAGEMENT_KIND_UNSPECIFIED, "ann", at, send.send_id)],
            "events[1].kind",
        ),
        ([good, event(OPENED, "ann", at)], "events[1].send_id"),
        ([good, event(DISMISSED, "", at, send.send_id)], "events[1].user_id"),
        ([good, event(CONVERTED, "ann", at, value=-1.0)], "events[1].value"),
        ([good, event(CONVERTED, "ann", at, value=float("nan"))], "events[1].value"),
        ([good, event(CONVERTED, "ann", at, currency="euro")], "events[1].currency"),
        ([good, event(OPENED, "ann", at, send.send_id, value=3.0)], "events[1].value"),
        (
            [good, resources_pb2.EngagementEvent(event_id="e", kind=CONVERTED, user_id="ann")],
            "events[1].occurred_at",
        ),
        ([good, good], "events[1].event_id"),
        ([event(CONVERTED, "ann", at) for _ in range(1001)], "events"),
    ]
    async with platform.delivery(dispatch=False) as api:
        await deliver(api, app, send)
        for events, field in cases:
            request = messages_pb2.ReportEngagementRequest(app_id=app, events=events)
            violations = await refused(api.ReportEngagement(request))
            assert field in violations, (field, violations)
        export = await api.ExportUserData(
            messages_pb2.ExportUserDataRequest(app_id=app, user_id="ann")
        )
    assert list(export.engagement) == []
    assert [d.send.send_id for d in export.deliveries] == [send.send_id]


async def test_campaign_stats_count_sends_engagement_and_intent_to_treat_lift(
    platform: Platform,
) -> None:
    """Variant A: ann (delivered, opened twice, converts), ben (delivered, dismissed),
    cy (never sent: capped; converts, and still counts). Variant B: dee (token dead),
    eve (no device: suppressed; converts after the default window). Holdout: four users,
    one converting inside the window, one only before being assigned."""
    app = platform.app
    devices = {user: await platform.register(user, IOS) for user in ("ann", "ben", "dee")}
    platform.sandbox.apns.faults.add(
        FaultSpec("status", token=devices["dee"].token, status=400, reason="BadDeviceToken")
    )
    sends = {
        user: new_send(user, campaign_id="spring", variant_id=variant)
        for user, variant in (("ann", "A"), ("ben", "A"), ("dee", "B"), ("eve", "B"))
    }
    assigned_at = now(platform) - dt.timedelta(hours=2)
    async with platform.delivery() as api:
        assert await record(
            api,
            app,
            *(assignment(u, assigned_at, "A") for u in ("ann", "ben", "cy")),
            *(assignment(u, assigned_at, "B") for u in ("dee", "eve")),
            *(assignment(u, assigned_at, "holdout") for u in ("h1", "h2", "h3", "h4")),
            campaign_id="spring",
        ) == [(u, APPLIED) for u in ("ann", "ben", "cy", "dee", "eve", "h1", "h2", "h3", "h4")]
        await deliver(api, app, *sends.values())
        await wait_final(platform, api, *(s.send_id for s in sends.values()))
        ann = (
            await api.GetDelivery(
                messages_pb2.GetDeliveryRequest(app_id=app, send_id=sends["ann"].send_id)
            )
        ).delivery
        [attempt] = ann.devices[0].attempts
        accepted = attempt.started_at.ToDatetime(dt.UTC) + attempt.latency.ToTimedelta()
        results = await report(
            api,
            app,
            event(DELIVERED, "ann", accepted, sends["ann"].send_id),
            event(OPENED, "ann", accepted + dt.timedelta(seconds=30), sends["ann"].send_id),
            event(OPENED, "ann", accepted + dt.timedelta(seconds=90), sends["ann"].send_id),
            event(DISMISSED, "ben", accepted, sends["ben"].send_id),
            event(CONVERTED, "ann", assigned_at + dt.timedelta(hours=1), value=10.0),
            event(CONVERTED, "ann", assigned_at + dt.timedelta(hours=1, minutes=5), value=5.0),
            event(CONVERTED, "cy", assigned_at + dt.timedelta(minutes=30), value=7.0),
            event(CONVERTED, "eve", assigned_at - dt.timedelta(days=1)),
            event(CONVERTED, "h1", assigned_at + dt.timedelta(minutes=1), value=3.0),
            event(CONVERTED, "h2", assigned_at - dt.timedelta(minutes=1)),
        )
        assert [r.status for r in results] == [APPLIED] * 10
        figures = await stats(api, app, campaign_id="spring")
        wider = await stats(api, app, seconds(30 * 86400), campaign_id="spring")
        too_wide = await refused(stats(api, app, seconds(31 * 86400), campaign_id="spring"))
        negative = await refused(stats(api, app, seconds(-1), campaign_id="spring"))
        no_subject = await refused(
            api.GetCampaignStats(messages_pb2.GetCampaignStatsRequest(app_id=app))
        )
        assert await not_found(api, app, campaign_id="autumn")
        assert await not_found(api, app, trigger_id="spring")
    assert "attribution_window" in too_wide
    assert "attribution_window" in negative
    assert "campaign_id" in no_subject
    assert figures.campaign_id == "spring"
    assert figures.attribution_window.ToTimedelta() == dt.timedelta(hours=72)
    total = figures.total
    assert (total.targeted, total.sent, total.delivered, total.failed, total.suppressed) == (
        5, 4, 2, 1, 1,
    )  # fmt: skip
    assert [(r.reason, r.count) for r in total.failed_by_reason] == [("BadDeviceToken", 1)]
    assert total.tokens_invalidated == 1
    assert (total.device_delivered, total.opened, total.dismissed) == (1, 1, 1)
    assert total.open_rate == pytest.approx(0.5)
    assert total.median_time_to_open.ToTimedelta().total_seconds() == pytest.approx(30, abs=0.01)
    # ann and cy converted (cy was never sent: intent to treat); eve only before.
    assert (total.converted_users, total.conversions) == (2, 3)
    assert total.conversion_value == pytest.approx(22.0)
    assert total.conversion_rate == pytest.approx(2 / 5)
    assert (figures.holdout.users, figures.holdout.converted_users) == (4, 1)
    expected = holdout_lift(2, 5, 1, 4)
    assert expected.interval is not None
    assert total.lift.absolute_lift == pytest.approx(2 / 5 - 1 / 4)
    assert total.lift.relative_lift == pytest.approx((2 / 5 - 1 / 4) / (1 / 4))
    ci = total.lift.absolute_lift_ci
    assert ci.lower == pytest.approx(expected.interval.lower)
    assert ci.upper == pytest.approx(expected.interval.upper)
    assert ci.level == 0.95
    assert ci.method == messages_pb2.INTERVAL_METHOD_NEWCOMBE_HYBRID_SCORE
    assert not total.lift.significant
    a, b = figures.variants
    assert (a.variant_id, a.targeted, a.sent, a.delivered, a.converted_users) == ("A", 3, 2, 2, 2)
    assert (b.variant_id, b.targeted, b.sent, b.failed, b.suppressed, b.converted_users) == (
        "B", 2, 2, 1, 1, 0,
    )  # fmt: skip
    assert a.lift.absolute_lift == pytest.approx(2 / 3 - 1 / 4)
    assert b.lift.absolute_lift_ci.lower < 0 < b.lift.absolute_lift_ci.upper
    assert not b.HasField("median_time_to_open")
    # eve's conversion a day before her assignment never counts; a 30-day window changes
    # nothing for her, but it is the window the answer names.
    assert wider.attribution_window.ToTimedelta() == dt.timedelta(days=30)
    assert wider.total.converted_users == 2


async def test_a_marketing_opt_out_after_a_delivered_send_is_counted_from_the_feed(
    platform: Platform,
) -> None:
    """ben opts out of a transactional category (no marketing scope) and dan of e-mail
    (not push), then ann of all marketing and cat of the marketing category: the feed
    brings them in that order, so once cat's is counted ben's and dan's have been read."""
    app = platform.app
    await platform.consent.DefineCategory(
        consent_messages.DefineCategoryRequest(
            app_id=app,
            category=consent_resources.Category(
                category_id="receipts",
                kind=types_pb2.CATEGORY_KIND_TRANSACTIONAL,
                default_state=consent_resources.DEFAULT_STATE_OPTED_IN,
                user_can_opt_out=True,
            ),
        )
    )
    users = ("ann", "ben", "cat", "dan")
    for user in users:
        await platform.register(user, IOS)
    # cat, the last on the feed, alone in variant B: once B counts her, all is read.
    sends = [
        new_send(u, campaign_id="summer", variant_id="B" if u == "cat" else "A") for u in users
    ]
    scopes = {
        "ben": consent_resources.ConsentScope(
            kind=consent_resources.CONSENT_SCOPE_KIND_CATEGORY, category_id="receipts"
        ),
        "dan": consent_resources.ConsentScope(
            kind=consent_resources.CONSENT_SCOPE_KIND_CHANNEL, channel=types_pb2.CHANNEL_EMAIL
        ),
        "ann": consent_resources.ConsentScope(
            kind=consent_resources.CONSENT_SCOPE_KIND_ALL_MARKETING
        ),
        "cat": consent_resources.ConsentScope(
            kind=consent_resources.CONSENT_SCOPE_KIND_CATEGORY, category_id="promos"
        ),
    }
    async with platform.delivery() as api:
        await deliver(api, app, *sends)
        await wait_final(platform, api, *(s.send_id for s in sends))
        for user, scope in scopes.items():
            await platform.consent.RecordConsent(
                consent_messages.RecordConsentRequest(
                    app_id=app,
                    user_id=user,
                    scope=scope,
                    action=consent_resources.CONSENT_ACTION_OPT_OUT,
                    source=consent_resources.CONSENT_SOURCE_PREFERENCE_CENTER,
                    idempotency_key=f"{user}-out",
                )
            )

        async def counted() -> bool:
            figures = await stats(api, app, campaign_id="summer")
            return [v.opt_outs_within_24h for v in figures.variants][1:] == [1]

        await platform.eventually(counted, what="cat's opt-out counted")
        figures = await stats(api, app, campaign_id="summer")
    assert figures.total.opt_outs_within_24h == 2
    a, b = figures.variants
    assert (a.variant_id, a.opt_outs_within_24h, a.sent, a.delivered) == ("A", 1, 3, 3)
    assert (b.variant_id, b.opt_outs_within_24h, b.sent, b.delivered) == ("B", 1, 1, 1)
    assert not figures.HasField("holdout")
    assert not figures.total.HasField("lift")


async def test_open_hours_per_user_and_app_wide_by_utc_and_local_hour(
    platform: Platform,
) -> None:
    app = platform.app
    for user in ("ann", "ben"):
        await platform.register(user, IOS)  # Europe/Paris: UTC+1 in winter
    base = now(platform)
    day = (base - dt.timedelta(days=2)).replace(hour=7, minute=30, second=0, microsecond=0)
    sends = {f"{u}{i}": new_send(u) for u in ("ann", "ben") for i in range(3)}
    async with platform.delivery(dispatch=False) as api:
        await deliver(api, app, *sends.values())
        results = await report(
            api,
            app,
            # ann: two sends opened at 07:xx UTC (one of them twice), one at 19:xx.
            event(OPENED, "ann", day, sends["ann0"].send_id),
            event(OPENED, "ann", day + dt.timedelta(hours=3), sends["ann0"].send_id),
            event(OPENED, "ann", day + dt.timedelta(days=1, minutes=5), sends["ann1"].send_id),
            event(OPENED, "ann", day + dt.timedelta(hours=12), sends["ann2"].send_id),
            # ben: one open inside the lookback, one far outside.
            event(OPENED, "ben", day + dt.timedelta(hours=1), sends["ben0"].send_id),
            event(OPENED, "ben", base - dt.timedelta(days=200), sends["ben1"].send_id),
            event(DISMISSED, "ben", day, sends["ben2"].send_id),
        )
        assert {r.status for r in results} == {APPLIED}
        hours = await api.GetOpenHours(
            messages_pb2.GetOpenHoursRequest(app_id=app, user_ids=["ben", "ann", "nobody"])
        )
        short = await api.GetOpenHours(
            messages_pb2.GetOpenHoursRequest(
                app_id=app,
                user_ids=["ann"],
                lookback=seconds(base.timestamp() - day.timestamp() - 3600),
            )
        )
        bad = [
            await refused(api.GetOpenHours(messages_pb2.GetOpenHoursRequest(app_id=app))),
            await refused(
                api.GetOpenHours(messages_pb2.GetOpenHoursRequest(app_id=app, user_ids=["a", "a"]))
            ),
            await refused(
                api.GetOpenHours(
                    messages_pb2.GetOpenHoursRequest(
                        app_id=app, user_ids=[f"u{i}" for i in range(1001)]
                    )
                )
            ),
            await refused(
                api.GetOpenHours(
                    messages_pb2.GetOpenHoursRequest(
                        app_id=app, user_ids=["a"], lookback=seconds(0)
                    )
                )
            ),
        ]
    assert [u.user_id for u in hours.users] == ["ben", "ann", "nobody"]
    ben, ann, nobody = (list(u.opens_by_utc_hour) for u in hours.users)
    assert ann == [2 if h == 7 else 1 if h == 19 else 0 for h in range(24)]
    assert ben == [1 if h == 8 else 0 for h in range(24)]
    assert nobody == [0] * 24
    assert list(hours.app_opens_by_utc_hour) == [a + b for a, b in zip(ann, ben, strict=True)]
    # Paris is UTC+1 in winter (the clock says December): every open one hour later.
    utc = list(hours.app_opens_by_utc_hour)
    assert list(hours.app_opens_by_local_hour) == [utc[(h - 1) % 24] for h in range(24)]
    # A lookback starting at 08:30 on the first day: each send's first open after it
    # (ann0's second open, at 10:30, now counts once for ann0).
    assert list(short.users[0].opens_by_utc_hour) == [
        1 if h in (7, 10, 19) else 0 for h in range(24)
    ]
    assert [next(iter(fields)) for fields in bad] == [
        "user_ids",
        "user_ids[1]",
        "user_ids",
        "lookback",
    ]


async def test_export_pages_deliveries_and_engagement_oldest_first(platform: Platform) -> None:
    app = platform.app
    sends = [new_send("ann") for _ in range(3)]
    at = now(platform)
    async with platform.delivery(dispatch=False) as api:
        for send in sends:  # one call each: accepted in this order
            await deliver(api, app, send)
        await deliver(api, app, new_send("bob"))
        events = [
            event(CONVERTED, "ann", at - dt.timedelta(minutes=m), value=1.0)
            for m in (1, 3, 2, 4, 5)
        ]
        await report(api, app, *events)
        pages = []
        token = ""
        while True:
            page = await api.ExportUserData(
                messages_pb2.ExportUserDataRequest(
                    app_id=app, user_id="ann", page_size=2, page_token=token
                )
            )
            pages.append(page)
            token = page.next_page_token
            if not token:
                break
        bad_token = await refused(
            api.ExportUserData(
                messages_pb2.ExportUserDataRequest(app_id=app, user_id="ann", page_token="x!")
            )
        )
        other_user = await refused(
            api.ExportUserData(
                messages_pb2.ExportUserDataRequest(
                    app_id=app, user_id="bob", page_token=pages[0].next_page_token
                )
            )
        )
        no_user = await refused(api.ExportUserData(messages_pb2.ExportUserDataRequest(app_id=app)))
        negative = await refused(
            api.ExportUserData(
                messages_pb2.ExportUserDataRequest(app_id=app, user_id="ann", page_size=-1)
            )
        )
        nobody = await api.ExportUserData(
            messages_pb2.ExportUserDataRequest(app_id=app, user_id="nobody")
        )
    assert [(len(p.deliveries), len(p.engagement)) for p in pages] == [(2, 2), (1, 2), (0, 1)]
    assert [d.send.send_id for p in pages for d in p.deliveries] == [s.send_id for s in sends]
    assert [d.send for p in pages for d in p.deliveries] == sends
    ordered = sorted(events, key=lambda e: e.occurred_at.ToDatetime())
    assert [e.event_id for p in pages for e in p.engagement] == [e.event_id for e in ordered]
    assert all(p.HasField("exported_at") for p in pages)
    assert "page_token" in bad_token
    assert "page_token" in other_user
    assert "user_id" in no_user
    assert "page_size" in negative
    assert (list(nobody.deliveries), list(nobody.engagement), nobody.next_page_token) == (
        [],
        [],
        "",
    )


async def test_trigger_stats_count_firings_and_each_attributed_conversion_once(
    platform: Platform,
) -> None:
    """ann fires twice (the second sent), ben once (sent), cy once (never sent). ann's
    one purchase falls in both of her firings' windows: two converted firings, one
    conversion event. Opens 20 s and 60 s after acceptance: median 40 s."""
    app = platform.app
    for user in ("ann", "ben"):
        await platform.register(user, IOS)
    base = now(platform)
    firings = {
        "fire-1": ("ann", base - dt.timedelta(hours=3)),
        "fire-2": ("ann", base - dt.timedelta(hours=2)),
        "fire-3": ("ben", base - dt.timedelta(hours=2)),
        "fire-4": ("cy", base - dt.timedelta(hours=2)),
    }
    sends = {
        firing: resources_pb2.Send(
            send_id=firing, user_id=user, category_id="promos", trigger_id="cart", content=CONTENT
        )
        for firing, user in (("fire-2", "ann"), ("fire-3", "ben"))
    }
    async with platform.delivery() as api:
        assert await record(
            api,
            app,
            *(assignment(user, at, firing_id=firing) for firing, (user, at) in firings.items()),
            trigger_id="cart",
        ) == [(firing, APPLIED) for firing in firings]
        await deliver(api, app, *sends.values())
        await wait_final(platform, api, *sends)
        opens = []
        for firing, gap in (("fire-2", 20), ("fire-3", 60)):
            delivery = (
                await api.GetDelivery(messages_pb2.GetDeliveryRequest(app_id=app, send_id=firing))
            ).delivery
            [attempt] = delivery.devices[0].attempts
            accepted = attempt.started_at.ToDatetime(dt.UTC) + attempt.latency.ToTimedelta()
            opens.append(
                event(OPENED, sends[firing].user_id, accepted + dt.timedelta(seconds=gap), firing)
            )
        results = await report(
            api,
            app,
            *opens,
            event(CONVERTED, "ann", base - dt.timedelta(hours=1), value=8.0),
            event(CONVERTED, "cy", base - dt.timedelta(hours=1), value=2.0),
        )
        assert [r.status for r in results] == [APPLIED] * 4
        figures = await stats(api, app, trigger_id="cart")
        narrow = await stats(api, app, seconds(1800), trigger_id="cart")
        assert await not_found(api, app, campaign_id="cart")
    assert (figures.trigger_id, figures.campaign_id, list(figures.variants)) == ("cart", "", [])
    total = figures.total
    assert (total.targeted, total.sent, total.delivered, total.opened) == (4, 2, 2, 2)
    assert total.open_rate == pytest.approx(1.0)
    assert total.median_time_to_open.ToTimedelta().total_seconds() == pytest.approx(40, abs=0.01)
    assert (total.converted_users, total.conversions) == (3, 2)
    assert total.conversion_value == pytest.approx(10.0)
    assert total.conversion_rate == pytest.approx(3 / 4)
    assert not total.HasField("lift")
    assert (narrow.total.converted_users, narrow.total.conversions) == (0, 0)
    assert narrow.total.conversion_value == 0.0


async def test_a_full_batch_of_ten_thousand_assignments_is_stored_once(platform: Platform) -> None:
    app, at = platform.app, now(platform)
    users = [f"user-{i:05d}" for i in range(10_000)]
    batch = [
        assignment(user, at, "holdout" if i % 10 == 0 else "AB"[i % 2])
        for i, user in enumerate(users)
    ]
    async with platform.delivery(dispatch=False) as api:
        assert {status for _, status in await record(api, app, *batch, campaign_id="big")} == {
            APPLIED
        }
        again = await record(api, app, *batch, campaign_id="big")
        figures = await stats(api, app, campaign_id="big")
    assert [user for user, _ in again] == users
    assert {status for _, status in again} == {UNCHANGED}
    assert (figures.total.targeted, figures.holdout.users) == (9000, 1000)
    assert [(v.variant_id, v.targeted) for v in figures.variants] == [("A", 4000), ("B", 5000)]
    assert figures.total.lift.absolute_lift_ci.method == (
        messages_pb2.INTERVAL_METHOD_NEWCOMBE_HYBRID_SCORE
    )
    assert figures.total.converted_users == 0
