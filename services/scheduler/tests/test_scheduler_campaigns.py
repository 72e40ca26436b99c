"""Campaigns end to end on SQLite and PostgreSQL, with real consent, segmentation and
delivery and the fake APNs: creation and its refusals, the lifecycle, fan-out with
variants and a holdout, suppression lists, audience changes and opt-outs between
fan-out and dispatch, and the progress counters."""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from pushwarden.common.v1 import content_pb2, decision_pb2, values_pb2
from pushwarden.consent.v1 import messages_pb2 as consent_messages
from pushwarden.consent.v1 import resources_pb2 as consent_resources
from pushwarden.runtime.clock import shift_clock_file
from pushwarden.runtime.servicetest import rich_error
from pushwarden.scheduler.v1 import messages_pb2, resources_pb2
from pushwarden.segmentation.v1 import messages_pb2 as seg_messages
from pushwarden.segmentation.v1 import resources_pb2 as seg_resources
from pushwarden.services.scheduler.peers import PeerUnavailable
from pushwarden.services.scheduler.peers.segmentation import SegmentationPeer

from .conftest import APP, Platform

pytestmark = pytest.mark.storage

NOW = datetime(2026, 6, 1, 8, 0, tzinfo=UTC)  # 10:00 in Paris, outside quiet hours
USERS = [f"u{i:02d}" for i in range(24)]


def variant(variant_id: str, weight: int, title: str) -> resources_pb2.Variant:
    return resources_pb2.Variant(
        variant_id=variant_id,
        weight=weight,
        template=resources_pb2.Template(content=content_pb2.Content(title=title, body="Sale")),
    )


def campaign(**overrides: object) -> resources_pb2.Campaign:
    built = resources_pb2.Campaign(
        name="Summer sale",
        category_id="promos",
        audience=resources_pb2.Audience(include_segment_ids=["pro"]),
        variants=[variant("A", 50, "Title A"), variant("B", 50, "Title B")],
        holdout_basis_points=2500,
        schedule=resources_pb2.Schedule(immediate=resources_pb2.ImmediateSchedule()),
    )
    for name, value in overrides.items():
        field = getattr(built, name)
        if hasattr(field, "CopyFrom"):
            field.CopyFrom(value)
        elif isinstance(value, list):
            del field[:]
            field.extend(value)
        else:
            setattr(built, name, value)
    return built


async def seed(platform: Platform, users: list[str]) -> dict[str, str]:
    """Devices for ``users`` (token by user), all on the "pro" plan, and the segment."""
    shift_clock_file(platform.clock_file, to=NOW, speed=1.0)
    tokens = {}
    for user in users:
        tokens[user] = (await platform.register(user)).token
    await platform.pro_segment(users)
    return tokens


def received(platform: Platform, tokens: dict[str, str]) -> dict[str, list[str]]:
    """Titles each user's device received at the fake APNs."""
    return {
        user: [
            json.loads(r.body)["aps"]["alert"]["title"]
            for r in platform.sandbox.apns.recorder.requests(token=token)
        ]
        for user, token in tokens.items()
    }


async def wait_state(
    platform: Platform, scheduler: object, campaign_id: str, state: int
) -> resources_pb2.Campaign:
    found: list[resources_pb2.Campaign] = []

    async def reached() -> bool:
        answer = await scheduler.GetCampaign(  # type: ignore[attr-defined]
            messages_pb2.GetCampaignRequest(app_id=APP, campaign_id=campaign_id)
        )
        found[:] = [answer.campaign]
        return bool(answer.campaign.state == state)

    await platform.eventually(reached, what=f"campaign state {state}")
    return found[0]


async def decisions(scheduler: object, campaign_id: str) -> list[resources_pb2.ContactRecord]:
    answer = await scheduler.ListCampaignDecisions(  # type: ignore[attr-defined]
        messages_pb2.ListCampaignDecisionsRequest(
            app_id=APP, campaign_id=campaign_id, page_size=1000
        )
    )
    return list(answer.records)


async def test_a_campaign_reaches_its_variants_and_never_its_holdout(platform: Platform) -> None:
    tokens = await seed(platform, USERS)
    async with platform.scheduler() as scheduler:
        created = await scheduler.CreateCampaign(
            messages_pb2.CreateCampaignRequest(
                app_id=APP, campaign=campaign(), idempotency_key="c1"
            )
        )
        assert created.campaign.state == resources_pb2.CAMPAIGN_STATE_DRAFT
        campaign_id = created.campaign.campaign_id
        started = await scheduler.StartCampaign(
            messages_pb2.StartCampaignRequest(app_id=APP, campaign_id=campaign_id)
        )
        assert started.campaign.state == resources_pb2.CAMPAIGN_STATE_SCHEDULED
        done = await wait_state(
            platform, scheduler, campaign_id, resources_pb2.CAMPAIGN_STATE_COMPLETED
        )
        records = await decisions(scheduler, campaign_id)
    by_user = {record.user_id: record for record in records}
    assert set(by_user) == set(USERS)
    got = received(platform, tokens)
    for user in USERS:
        record = by_user[user]
        if record.holdout:
            assert got[user] == [], user
            assert record.decision.reason == decision_pb2.REASON_CODE_HOLDOUT
        else:
            assert got[user] == [f"Title {record.variant_id}"], user
    progress = done.progress
    holdout = sum(1 for r in records if r.holdout)
    assert 0 < holdout < len(USERS)
    assert progress.audience_size == len(USERS)
    assert progress.fan_out_complete
    assert progress.holdout == holdout
    assert progress.sent == len(USERS) - holdout
    assert progress.pending == 0
    counts = {(c.outcome, c.reason): c.count for c in progress.by_outcome}
    assert (
        counts[(decision_pb2.OUTCOME_ALLOW, decision_pb2.REASON_CODE_UNSPECIFIED)]
        == len(USERS) - holdout
    )
    assert counts[(decision_pb2.OUTCOME_DROP, decision_pb2.REASON_CODE_HOLDOUT)] == holdout
    assert sum(v.assigned for v in progress.variants) == len(USERS) - holdout


async def test_creation_replays_by_key_and_refuses_bad_campaigns(platform: Platform) -> None:
    await seed(platform, USERS[:2])
    async with platform.scheduler() as scheduler:
        first = await scheduler.CreateCampaign(
            messages_pb2.CreateCampaignRequest(app_id=APP, campaign=campaign(), idempotency_key="k")
        )
        again = await scheduler.CreateCampaign(
            messages_pb2.CreateCampaignRequest(app_id=APP, campaign=campaign(), idempotency_key="k")
        )
        assert again.replayed
        assert again.campaign.campaign_id == first.campaign.campaign_id
        cases = [
            (
                campaign(name="Other"),
                grpc.StatusCode.ALREADY_EXISTS,
                "IDEMPOTENCY_KEY_REUSED",
                "k",
                "",
            ),
            (
                campaign(variants=[variant("A", 60, "x"), variant("B", 50, "y")]),
                grpc.StatusCode.INVALID_ARGUMENT,
                None,
                "k2",
                "campaign.variants",
            ),
            (
                campaign(audience=resources_pb2.Audience(include_segment_ids=["nope"])),
                grpc.StatusCode.INVALID_ARGUMENT,
                "UNKNOWN_REFERENCE",
                "k3",
                "campaign.audience.include_segment_ids[0]",
            ),
            (
                campaign(category_id="orders"),
                grpc.StatusCode.FAILED_PRECONDITION,
                "CATEGORY_KIND_MISMATCH",
                "k4",
                "",
            ),
            (
                campaign(
                    schedule=resources_pb2.Schedule(
                        at=resources_pb2.AtSchedule(send_at=_stamp(NOW - timedelta(hours=1)))
                    )
                ),
                grpc.StatusCode.INVALID_ARGUMENT,
                None,
                "k5",
                "campaign.schedule.at.send_at",
            ),
        ]
        for body, code, reason, key, field in cases:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await scheduler.CreateCampaign(
                    messages_pb2.CreateCampaignRequest(
                        app_id=APP, campaign=body, idempotency_key=key
                    )
                )
            error = rich_error(refused.value)
            assert error.code == code, (key, error)
            assert error.reason == reason, (key, error)
            if field:
                assert field in error.fields, (key, error)
        listed = await scheduler.ListCampaigns(messages_pb2.ListCampaignsRequest(app_id=APP))
        assert [c.campaign_id for c in listed.campaigns] == [first.campaign.campaign_id]


async def test_the_lifecycle_refuses_what_a_state_does_not_allow(platform: Platform) -> None:
    await seed(platform, USERS[:2])
    later = campaign(
        schedule=resources_pb2.Schedule(
            at=resources_pb2.AtSchedule(send_at=_stamp(NOW + timedelta(days=1)))
        )
    )
    async with platform.scheduler() as scheduler:
        created = await scheduler.CreateCampaign(
            messages_pb2.CreateCampaignRequest(app_id=APP, campaign=later, idempotency_key="life")
        )
        ident = messages_pb2.PauseCampaignRequest(
            app_id=APP, campaign_id=created.campaign.campaign_id
        )
        with pytest.raises(grpc.aio.AioRpcError) as draft:
            await scheduler.PauseCampaign(ident)
        assert rich_error(draft.value).reason == "INVALID_STATE"
        start = messages_pb2.StartCampaignRequest(app_id=APP, campaign_id=ident.campaign_id)
        assert (
            await scheduler.StartCampaign(start)
        ).campaign.state == resources_pb2.CAMPAIGN_STATE_SCHEDULED
        assert (
            await scheduler.StartCampaign(start)
        ).campaign.state == resources_pb2.CAMPAIGN_STATE_SCHEDULED
        assert (
            await scheduler.PauseCampaign(ident)
        ).campaign.state == resources_pb2.CAMPAIGN_STATE_PAUSED
        resume = messages_pb2.ResumeCampaignRequest(app_id=APP, campaign_id=ident.campaign_id)
        assert (
            await scheduler.ResumeCampaign(resume)
        ).campaign.state == resources_pb2.CAMPAIGN_STATE_SCHEDULED
        cancel = messages_pb2.CancelCampaignRequest(app_id=APP, campaign_id=ident.campaign_id)
        assert (
            await scheduler.CancelCampaign(cancel)
        ).campaign.state == resources_pb2.CAMPAIGN_STATE_CANCELLED
        assert (
            await scheduler.CancelCampaign(cancel)
        ).campaign.state == resources_pb2.CAMPAIGN_STATE_CANCELLED
        with pytest.raises(grpc.aio.AioRpcError) as cancelled:
            await scheduler.StartCampaign(start)
        assert rich_error(cancelled.value).code == grpc.StatusCode.FAILED_PRECONDITION
        with pytest.raises(grpc.aio.AioRpcError) as missing:
            await scheduler.GetCampaign(
                messages_pb2.GetCampaignRequest(app_id=APP, campaign_id="nope")
            )
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND


async def test_suppression_audience_changes_and_opt_outs_stop_the_send_at_due_time(
    platform: Platform,
) -> None:
    users = USERS[:6]
    tokens = await seed(platform, users)
    await platform.segmentation.CreateList(
        seg_messages.CreateListRequest(
            app_id=APP,
            list=seg_resources.StaticList(
                list_id="complained", name="Complaints", kind=seg_resources.LIST_KIND_SUPPRESSION
            ),
        )
    )
    due = NOW + timedelta(hours=1)
    body = campaign(
        holdout_basis_points=0,
        schedule=resources_pb2.Schedule(at=resources_pb2.AtSchedule(send_at=_stamp(due))),
    )
    async with platform.scheduler() as scheduler:
        created = await scheduler.CreateCampaign(
            messages_pb2.CreateCampaignRequest(app_id=APP, campaign=body, idempotency_key="due")
        )
        campaign_id = created.campaign.campaign_id
        await scheduler.StartCampaign(
            messages_pb2.StartCampaignRequest(app_id=APP, campaign_id=campaign_id)
        )

        async def fanned_out() -> bool:
            answer = await scheduler.GetCampaign(
                messages_pb2.GetCampaignRequest(app_id=APP, campaign_id=campaign_id)
            )
            return answer.campaign.progress.fan_out_complete

        await platform.eventually(fanned_out, what="fan-out")
        # Between fan-out and the due time: u00 is suppressed, u01 leaves the segment,
        # u02 opts out of marketing.
        await platform.segmentation.AddToList(
            seg_messages.AddToListRequest(app_id=APP, list_id="complained", user_ids=["u00"])
        )
        await platform.segmentation.UpsertProfiles(
            seg_messages.UpsertProfilesRequest(
                app_id=APP,
                profiles=[
                    seg_resources.ProfileUpdate(
                        user_id="u01",
                        set_attributes={"plan": values_pb2.AttributeValue(string_value="free")},
                    )
                ],
            )
        )
        await platform.consent.RecordConsent(
            consent_messages.RecordConsentRequest(
                app_id=APP,
                user_id="u02",
                scope=consent_resources.ConsentScope(
                    kind=consent_resources.CONSENT_SCOPE_KIND_ALL_MARKETING
                ),
                action=consent_resources.CONSENT_ACTION_OPT_OUT,
                source=consent_resources.CONSENT_SOURCE_PREFERENCE_CENTER,
                idempotency_key="u02-out",
            )
        )
        assert all(titles == [] for titles in received(platform, tokens).values())
        shift_clock_file(platform.clock_file, to=due, speed=1.0)
        await wait_state(platform, scheduler, campaign_id, resources_pb2.CAMPAIGN_STATE_COMPLETED)
        records = {r.user_id: r for r in await decisions(scheduler, campaign_id)}
    got = received(platform, tokens)
    assert got["u00"] == got["u01"] == got["u02"] == []
    assert records["u00"].decision.reason == decision_pb2.REASON_CODE_SUPPRESSED
    assert records["u01"].decision.reason == decision_pb2.REASON_CODE_NOT_IN_AUDIENCE
    assert records["u02"].decision.reason == decision_pb2.REASON_CODE_OPTED_OUT
    for user in users[3:]:
        assert len(got[user]) == 1, user
    assert Counter(r.decision.outcome for r in records.values())[decision_pb2.OUTCOME_ALLOW] == 3


def _stamp(at: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(at)
    return stamp


async def test_a_broken_audience_stream_resumes_from_its_cursor_without_waiting_a_lease(
    platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The audience stream breaks after its first page (segmentation away, or a long
    audience outliving one stream's deadline): fan-out gives its claim back and resumes
    at the stored cursor on its next pass, not after its one-hour lease; every user is
    reached once."""
    tokens = await seed(platform, USERS)
    original = SegmentationPeer.audience
    broken: list[str] = []

    async def breaks_once(self: SegmentationPeer, *args: Any, **kwargs: Any) -> Any:
        pages = 0
        async for page in original(self, *args, **kwargs):
            yield page
            pages += 1
            if not broken and not page.done:
                broken.append(page.cursor)
                raise PeerUnavailable("segmentation answered DEADLINE_EXCEEDED: test")

    monkeypatch.setattr(SegmentationPeer, "audience", breaks_once)
    async with platform.scheduler(CLAIM_LEASE_S="3600", FANOUT_PAGE_SIZE="5") as scheduler:
        created = await scheduler.CreateCampaign(
            messages_pb2.CreateCampaignRequest(
                app_id=APP, campaign=campaign(holdout_basis_points=0), idempotency_key="broken"
            )
        )
        campaign_id = created.campaign.campaign_id
        await scheduler.StartCampaign(
            messages_pb2.StartCampaignRequest(app_id=APP, campaign_id=campaign_id)
        )
        done = await wait_state(
            platform, scheduler, campaign_id, resources_pb2.CAMPAIGN_STATE_COMPLETED
        )
    assert broken
    assert done.progress.audience_size == len(USERS)
    assert all(len(titles) == 1 for titles in received(platform, tokens).values())
