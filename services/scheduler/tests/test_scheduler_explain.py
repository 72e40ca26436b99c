"""PreviewCampaign and ExplainDecision end to end on SQLite and PostgreSQL, with real
consent, segmentation and delivery and the fake APNs: exact buckets and samples over a
small audience with a holdout, an opt-out, a user without device, a suppressed user, one
in quiet hours and one capped by a prior transactional send; a decision at the user's
due instant; truncation; the traces and their text; refusals; and that nothing is sent
or stored."""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from pushwarden.common.v1 import content_pb2, decision_pb2, policy_pb2, types_pb2, values_pb2
from pushwarden.consent.v1 import messages_pb2 as consent_messages
from pushwarden.consent.v1 import resources_pb2 as consent_resources
from pushwarden.runtime.clock import shift_clock_file
from pushwarden.runtime.servicetest import rich_error
from pushwarden.scheduler.v1 import messages_pb2, resources_pb2
from pushwarden.segmentation.v1 import messages_pb2 as seg_messages
from pushwarden.segmentation.v1 import resources_pb2 as seg_resources
from pushwarden.services.scheduler.domain.assignment import assign
from pushwarden.services.scheduler.domain.campaigns import campaign_id_for
from pushwarden.services.scheduler.domain.triggers import firing_send_id

from .conftest import APP, Platform

if TYPE_CHECKING:
    from pushwarden.scheduler.v1.scheduler_pb2_grpc import (
        SchedulerServiceAsyncStub as SchedulerStub,
    )

pytestmark = pytest.mark.storage

NOW = datetime(2026, 6, 1, 8, 0, tzinfo=UTC)  # 10:00 in Paris, 04:00 in New York
USERS = [f"u{i:02d}" for i in range(10)]
HOLDOUT_BP = 2500
VARIANTS = [("A", 50), ("B", 50)]
ROLES = ("opted_out", "no_device", "suppressed", "quiet", "capped")
ALLOW = decision_pb2.OUTCOME_ALLOW
DEFER = decision_pb2.OUTCOME_DEFER
DROP = decision_pb2.OUTCOME_DROP
R = decision_pb2


def _stamp(at: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(at)
    return stamp


def a_campaign(**overrides: object) -> resources_pb2.Campaign:
    built = resources_pb2.Campaign(
        name="Summer sale",
        category_id="promos",
        audience=resources_pb2.Audience(include_segment_ids=["pro"]),
        variants=[
            resources_pb2.Variant(
                variant_id=variant_id,
                weight=weight,
                template=resources_pb2.Template(
                    content=content_pb2.Content(title=f"Title {variant_id}", body="Sale")
                ),
            )
            for variant_id, weight in VARIANTS
        ],
        holdout_basis_points=HOLDOUT_BP,
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


def pick_key() -> tuple[str, str, set[str], dict[str, str]]:
    """A creation key whose campaign puts 1..4 of the users in the holdout (so the
    other roles go to treated users); its id, the holdout and the roles."""
    for number in range(100):
        key = f"preview-{number}"
        campaign_id = campaign_id_for(APP, key)
        holdout = {u for u in USERS if assign(campaign_id, u, HOLDOUT_BP, VARIANTS).holdout}
        if 1 <= len(holdout) <= 4:
            treated = [u for u in USERS if u not in holdout]
            return key, campaign_id, holdout, dict(zip(ROLES, treated, strict=False))
    raise AssertionError("no key gives a usable holdout")


async def seed(platform: Platform, roles: dict[str, str]) -> dict[str, str]:
    """Devices (New York for the quiet user, none for the no-device one), the "pro"
    segment, the opt-out, the suppression list and the app policy (quiet hours 22-08,
    one marketing push a day counting transactional ones); tokens by user."""
    shift_clock_file(platform.clock_file, to=NOW, speed=1.0)
    tokens = {}
    for user in USERS:
        if user == roles["no_device"]:
            continue
        zone = "America/New_York" if user == roles["quiet"] else "Europe/Paris"
        tokens[user] = (await platform.register(user, time_zone=zone)).token
    await platform.pro_segment(USERS)
    await platform.segmentation.CreateList(
        seg_messages.CreateListRequest(
            app_id=APP,
            list=seg_resources.StaticList(
                list_id="complained", name="Complaints", kind=seg_resources.LIST_KIND_SUPPRESSION
            ),
        )
    )
    await platform.segmentation.AddToList(
        seg_messages.AddToListRequest(
            app_id=APP, list_id="complained", user_ids=[roles["suppressed"]]
        )
    )
    await platform.consent.RecordConsent(
        consent_messages.RecordConsentRequest(
            app_id=APP,
            user_id=roles["opted_out"],
            scope=consent_resources.ConsentScope(
                kind=consent_resources.CONSENT_SCOPE_KIND_ALL_MARKETING
            ),
            action=consent_resources.CONSENT_ACTION_OPT_OUT,
            source=consent_resources.CONSENT_SOURCE_PREFERENCE_CENTER,
            idempotency_key="out",
        )
    )
    return tokens


def app_policy() -> resources_pb2.Policy:
    rule = policy_pb2.CapRule(
        rule_id="daily",
        scope=policy_pb2.CAP_SCOPE_ALL_MARKETING,
        max_count=1,
        on_exceed=policy_pb2.ON_EXCEED_DROP,
        count_transactional=True,
    )
    rule.rolling.FromTimedelta(timedelta(hours=24))
    return resources_pb2.Policy(
        cap_rules=[rule],
        default_quiet_hours=policy_pb2.QuietHours(
            windows=[
                policy_pb2.QuietHoursWindow(
                    start=types_pb2.LocalTime(hours=22), end=types_pb2.LocalTime(hours=8)
                )
            ]
        ),
    )


async def send_before(platform: Platform, scheduler: object, user: str) -> None:
    """A transactional push to ``user``, waited for at the fake APNs (a contact)."""
    await scheduler.SendTransactional(  # type: ignore[attr-defined]
        messages_pb2.SendTransactionalRequest(
            app_id=APP,
            user_id=user,
            category_id="orders",
            idempotency_key=f"order-{user}",
            content=content_pb2.Content(title="Your order shipped", body="Arrives Tuesday"),
        )
    )

    async def delivered() -> bool:
        return len(platform.sandbox.apns.recorder.requests()) == 1

    await platform.eventually(delivered, what="the transactional push")


def buckets(answer: messages_pb2.PreviewCampaignResponse) -> dict[tuple[int, int], list[str]]:
    found: dict[tuple[int, int], list[str]] = {}
    for bucket in answer.buckets:
        assert bucket.count >= len(bucket.sample_user_ids)
        found[(bucket.outcome, bucket.reason)] = list(bucket.sample_user_ids)
    return found


def counts(answer: messages_pb2.PreviewCampaignResponse) -> dict[tuple[int, int], int]:
    return {(b.outcome, b.reason): b.count for b in answer.buckets}


def steps(decision: decision_pb2.Decision) -> list[tuple[int, int, int]]:
    return [(s.check, s.result, s.reason) for s in decision.trace.steps]


async def test_a_preview_counts_every_reason_and_explains_one_user(platform: Platform) -> None:
    key, campaign_id, holdout, roles = pick_key()
    await seed(platform, roles)
    treated = [u for u in USERS if u not in holdout]
    allowed = [u for u in treated if u not in roles.values()]
    async with platform.scheduler() as scheduler:
        await scheduler.SetPolicy(messages_pb2.SetPolicyRequest(app_id=APP, policy=app_policy()))
        await send_before(platform, scheduler, roles["capped"])
        created = await scheduler.CreateCampaign(
            messages_pb2.CreateCampaignRequest(
                app_id=APP, campaign=a_campaign(), idempotency_key=key
            )
        )
        assert created.campaign.campaign_id == campaign_id
        ident = messages_pb2.GetCampaignRequest(app_id=APP, campaign_id=campaign_id)
        before = (await scheduler.GetCampaign(ident)).campaign

        answer = await scheduler.PreviewCampaign(
            messages_pb2.PreviewCampaignRequest(app_id=APP, campaign_id=campaign_id)
        )
        assert answer.audience_size == 10
        assert answer.evaluated == 10
        assert not answer.truncated
        assert answer.as_of.ToDatetime(UTC) >= NOW
        assert buckets(answer) == {
            (ALLOW, R.REASON_CODE_UNSPECIFIED): sorted(allowed)[:5],
            (DEFER, R.REASON_CODE_QUIET_HOURS): [roles["quiet"]],
            (DROP, R.REASON_CODE_OPTED_OUT): [roles["opted_out"]],
            (DROP, R.REASON_CODE_NO_DEVICE): [roles["no_device"]],
            (DROP, R.REASON_CODE_CAPPED): [roles["capped"]],
            (DROP, R.REASON_CODE_SUPPRESSED): [roles["suppressed"]],
            (DROP, R.REASON_CODE_HOLDOUT): sorted(holdout),
        }
        assert counts(answer)[(ALLOW, R.REASON_CODE_UNSPECIFIED)] == len(allowed)
        assert counts(answer)[(DROP, R.REASON_CODE_HOLDOUT)] == len(holdout)
        # Buckets in a stable order: ALLOW, DEFER, DROP, then by reason.
        order = [(b.outcome, b.reason) for b in answer.buckets]
        assert order == sorted(order)
        expected_variants = Counter(
            assign(campaign_id, u, HOLDOUT_BP, VARIANTS).variant_id for u in treated
        )
        assert {v.variant_id: v.assigned for v in answer.variants} == dict(expected_variants)
        assert all(v.sent == 0 for v in answer.variants)

        # The same again (repeatable), and truncated with one sample per reason.
        again = await scheduler.PreviewCampaign(
            messages_pb2.PreviewCampaignRequest(app_id=APP, campaign_id=campaign_id)
        )
        assert buckets(again) == buckets(answer)
        short = await scheduler.PreviewCampaign(
            messages_pb2.PreviewCampaignRequest(
                app_id=APP, campaign_id=campaign_id, max_users=4, samples_per_reason=1
            )
        )
        assert (short.audience_size, short.evaluated, short.truncated) == (10, 4, True)
        assert sum(b.count for b in short.buckets) == 4
        assert all(len(b.sample_user_ids) == 1 for b in short.buckets)

        # Explained: the quiet-hours user defers to 08:00 in New York.
        quiet = await scheduler.ExplainDecision(
            messages_pb2.ExplainDecisionRequest(
                app_id=APP, user_id=roles["quiet"], campaign_id=campaign_id
            )
        )
        assert not quiet.holdout
        assert (
            quiet.variant_id == assign(campaign_id, roles["quiet"], HOLDOUT_BP, VARIANTS).variant_id
        )
        assert quiet.decision.outcome == DEFER
        assert quiet.decision.reason == R.REASON_CODE_QUIET_HOURS
        assert quiet.decision.defer_until.ToDatetime(UTC) >= datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
        assert quiet.decision.trace.time_zone == "America/New_York"
        trace = steps(quiet.decision)
        assert [check for check, _, _ in trace[:4]] == [
            R.CHECK_SEND_TIME,
            R.CHECK_HOLDOUT,
            R.CHECK_AUDIENCE,
            R.CHECK_TEMPLATE,
        ]
        assert all(result == R.STEP_RESULT_PASS for _, result, _ in trace[:4])
        assert (R.CHECK_QUIET_HOURS, R.STEP_RESULT_DEFER, R.REASON_CODE_QUIET_HOURS) in trace
        first = quiet.decision.trace.steps[0].send_time
        assert first.time_zone == "America/New_York"
        assert quiet.decision.trace.steps[2].audience.included_by_segment_ids == ["pro"]
        assert quiet.decision.trace.steps[3].template.payload_bytes > 0
        lines = list(quiet.explanation)
        assert lines[0].startswith("send time: PASS: due at ")
        assert lines[1].startswith("holdout: PASS: bucket ")
        assert lines[2] == "audience: PASS: in pro"
        assert lines[3].startswith("template: PASS: content default, ")
        assert any("quiet" in line.lower() for line in lines[4:-1])
        assert lines[-1].startswith("→ DEFER until ")
        assert lines[-1].endswith("(QUIET_HOURS)")

        # A holdout user: DROP before the policy runs.
        held = sorted(holdout)[0]
        out = await scheduler.ExplainDecision(
            messages_pb2.ExplainDecisionRequest(app_id=APP, user_id=held, campaign_id=campaign_id)
        )
        assert out.holdout
        assert out.variant_id == ""
        assert (out.decision.outcome, out.decision.reason) == (DROP, R.REASON_CODE_HOLDOUT)
        assert steps(out.decision)[-1] == (
            R.CHECK_HOLDOUT,
            R.STEP_RESULT_DROP,
            R.REASON_CODE_HOLDOUT,
        )
        assert out.decision.trace.steps[-1].holdout.in_holdout
        assert list(out.explanation)[-1] == "→ DROP (HOLDOUT)"

        # The capped user: one cap step, 1 of 1, transactional sends counted.
        capped = await scheduler.ExplainDecision(
            messages_pb2.ExplainDecisionRequest(
                app_id=APP, user_id=roles["capped"], campaign_id=campaign_id
            )
        )
        assert (capped.decision.outcome, capped.decision.reason) == (DROP, R.REASON_CODE_CAPPED)
        caps = [s.cap for s in capped.decision.trace.steps if s.check == R.CHECK_CAP]
        assert [(c.rule_id, c.count, c.max_count, c.count_transactional) for c in caps] == [
            ("daily", 1, 1, True)
        ]

        # Nothing was sent or stored.
        assert len(platform.sandbox.apns.recorder.requests()) == 1
        after = (await scheduler.GetCampaign(ident)).campaign
        before.progress.ClearField("updated_at")
        after.progress.ClearField("updated_at")
        assert after == before
        assert after.state == resources_pb2.CAMPAIGN_STATE_DRAFT
        listed = await scheduler.ListCampaignDecisions(
            messages_pb2.ListCampaignDecisionsRequest(app_id=APP, campaign_id=campaign_id)
        )
        assert list(listed.records) == []


async def test_an_inline_preview_decides_at_each_users_due_time(platform: Platform) -> None:
    """LOCAL_TIME 09:00 (skip when passed): at 10:00 in Paris it has passed, in New York
    it is 04:00 and the user's send is decided at 09:00 there, after quiet hours. A
    SKIP_USER placeholder drops the users without the attribute."""
    _, _, _, roles = pick_key()
    await seed(platform, roles)
    await platform.segmentation.UpsertProfiles(
        seg_messages.UpsertProfilesRequest(
            app_id=APP,
            profiles=[
                seg_resources.ProfileUpdate(
                    user_id=user,
                    set_attributes={"first_name": values_pb2.AttributeValue(string_value="Ann")},
                )
                for user in USERS[:5]
            ],
        )
    )
    template = resources_pb2.Template(
        content=content_pb2.Content(title="Hi {{name}}", body="Sale"),
        placeholders=[
            resources_pb2.Placeholder(
                name="name",
                source=resources_pb2.PLACEHOLDER_SOURCE_PROFILE_ATTRIBUTE,
                key="first_name",
                on_missing=resources_pb2.MISSING_VALUE_POLICY_SKIP_USER,
            )
        ],
    )
    local = resources_pb2.Schedule(
        local_time=resources_pb2.LocalTimeSchedule(
            date=types_pb2.LocalDate(year=2026, month=6, day=1),
            time=types_pb2.LocalTime(hours=9),
            if_passed=resources_pb2.PASSED_TIME_POLICY_SKIP,
        )
    )
    body = a_campaign(
        holdout_basis_points=0,
        variants=[resources_pb2.Variant(variant_id="A", weight=100, template=template)],
        schedule=local,
    )
    quiet = roles["quiet"]
    async with platform.scheduler() as scheduler:
        await scheduler.SetPolicy(messages_pb2.SetPolicyRequest(app_id=APP, policy=app_policy()))
        answer = await scheduler.PreviewCampaign(
            messages_pb2.PreviewCampaignRequest(app_id=APP, campaign=body)
        )
        assert (answer.audience_size, answer.evaluated) == (10, 10)
        found = counts(answer)
        ny_outcome = (ALLOW, R.REASON_CODE_UNSPECIFIED)
        if quiet not in USERS[:5]:
            ny_outcome = (DROP, R.REASON_CODE_MISSING_TEMPLATE_VALUE)
        # Everyone in Paris passed 09:00; the no-device user has no zone at all.
        assert found[(DROP, R.REASON_CODE_LOCAL_TIME_PASSED)] == 8
        assert buckets(answer)[(DROP, R.REASON_CODE_NO_TIMEZONE)] == [roles["no_device"]]
        assert buckets(answer)[ny_outcome] == [quiet]
        assert [(v.variant_id, v.assigned) for v in answer.variants] == [("A", 10)]
        explained = await scheduler.ExplainDecision(
            messages_pb2.ExplainDecisionRequest(
                app_id=APP, user_id=roles["no_device"], category_id="promos"
            )
        )
        assert (explained.decision.outcome, explained.decision.reason) == (
            DROP,
            R.REASON_CODE_NO_DEVICE,
        )
    assert platform.sandbox.apns.recorder.requests() == []


async def test_a_category_is_explained_as_an_ad_hoc_message_now(platform: Platform) -> None:
    _, _, _, roles = pick_key()
    await seed(platform, roles)
    quiet = roles["quiet"]
    async with platform.scheduler() as scheduler:
        await scheduler.SetPolicy(messages_pb2.SetPolicyRequest(app_id=APP, policy=app_policy()))
        promo = await scheduler.ExplainDecision(
            messages_pb2.ExplainDecisionRequest(app_id=APP, user_id=quiet, category_id="promos")
        )
        assert (promo.decision.outcome, promo.decision.reason) == (
            DEFER,
            R.REASON_CODE_QUIET_HOURS,
        )
        assert not promo.HasField("due_at")
        assert promo.explanation[-1].startswith("→ DEFER until ")
        order = await scheduler.ExplainDecision(
            messages_pb2.ExplainDecisionRequest(app_id=APP, user_id=quiet, category_id="orders")
        )
        assert order.decision.outcome == ALLOW
        assert (R.CHECK_QUIET_HOURS, R.STEP_RESULT_EXEMPT, R.REASON_CODE_QUIET_HOURS) in steps(
            order.decision
        )
        assert order.explanation[-1] == "→ ALLOW: send now"
        opted_in = await scheduler.ExplainDecision(
            messages_pb2.ExplainDecisionRequest(
                app_id=APP, user_id=quiet, category_id="orders", respect_quiet_hours=True
            )
        )
        assert opted_in.decision.outcome == DEFER
        # As of noon UTC (08:00 in New York) the window is over.
        later = await scheduler.ExplainDecision(
            messages_pb2.ExplainDecisionRequest(
                app_id=APP,
                user_id=quiet,
                category_id="promos",
                as_of=_stamp(datetime(2026, 6, 1, 12, 30, tzinfo=UTC)),
            )
        )
        assert later.decision.outcome == ALLOW
        assert later.decision.trace.evaluated_at.ToDatetime(UTC) == datetime(
            2026, 6, 1, 12, 30, tzinfo=UTC
        )
        suppressed = await scheduler.ExplainDecision(
            messages_pb2.ExplainDecisionRequest(
                app_id=APP, user_id=roles["suppressed"], category_id="promos"
            )
        )
        assert suppressed.decision.reason == R.REASON_CODE_SUPPRESSED
        detail = [
            s.suppression for s in suppressed.decision.trace.steps if s.check == R.CHECK_SUPPRESSION
        ]
        assert [list(d.list_ids) for d in detail] == [["complained"]]
    assert platform.sandbox.apns.recorder.requests() == []


async def call(scheduler: SchedulerStub, request: object) -> object:
    """PreviewCampaign or ExplainDecision, as the request says."""
    if isinstance(request, messages_pb2.PreviewCampaignRequest):
        return await scheduler.PreviewCampaign(request)
    assert isinstance(request, messages_pb2.ExplainDecisionRequest)
    return await scheduler.ExplainDecision(request)


async def test_bad_requests_are_refused_naming_the_field(platform: Platform) -> None:
    _, _, _, roles = pick_key()
    await seed(platform, roles)
    async with platform.scheduler() as scheduler:
        cases: list[tuple[object, grpc.StatusCode, str]] = [
            (
                messages_pb2.PreviewCampaignRequest(app_id=APP, campaign_id="nope"),
                grpc.StatusCode.NOT_FOUND,
                "",
            ),
            (
                messages_pb2.PreviewCampaignRequest(app_id=APP),
                grpc.StatusCode.INVALID_ARGUMENT,
                "campaign_id",
            ),
            (
                messages_pb2.PreviewCampaignRequest(
                    app_id=APP, campaign=a_campaign(), samples_per_reason=51
                ),
                grpc.StatusCode.INVALID_ARGUMENT,
                "samples_per_reason",
            ),
            (
                messages_pb2.PreviewCampaignRequest(
                    app_id=APP,
                    campaign=a_campaign(
                        audience=resources_pb2.Audience(include_segment_ids=["missing"])
                    ),
                ),
                grpc.StatusCode.INVALID_ARGUMENT,
                "campaign.audience.include_segment_ids[0]",
            ),
            (
                messages_pb2.PreviewCampaignRequest(app_id=APP, campaign=a_campaign(name="")),
                grpc.StatusCode.INVALID_ARGUMENT,
                "campaign.name",
            ),
            (
                messages_pb2.ExplainDecisionRequest(app_id=APP, user_id="u00", category_id="nope"),
                grpc.StatusCode.INVALID_ARGUMENT,
                "category_id",
            ),
            (
                messages_pb2.ExplainDecisionRequest(app_id=APP, user_id="u00", campaign_id="nope"),
                grpc.StatusCode.NOT_FOUND,
                "",
            ),
            (
                messages_pb2.ExplainDecisionRequest(app_id=APP, user_id="u00", trigger_id="nope"),
                grpc.StatusCode.NOT_FOUND,
                "",
            ),
            (
                messages_pb2.ExplainDecisionRequest(app_id=APP, category_id="promos"),
                grpc.StatusCode.INVALID_ARGUMENT,
                "user_id",
            ),
            (
                messages_pb2.ExplainDecisionRequest(app_id=APP, user_id="u00"),
                grpc.StatusCode.INVALID_ARGUMENT,
                "campaign_id",
            ),
        ]
        for request, code, field in cases:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await call(scheduler, request)
            error = rich_error(refused.value)
            assert error.code == code, (request, error)
            if field:
                assert field in error.fields, (request, error)
        listed = await scheduler.ListCampaigns(messages_pb2.ListCampaignsRequest(app_id=APP))
        assert list(listed.campaigns) == []


async def stored(scheduler: SchedulerStub, send_id: str) -> bool:
    """Whether the scheduler holds a record of ``send_id``."""
    try:
        await scheduler.GetSend(messages_pb2.GetSendRequest(app_id=APP, send_id=send_id))
    except grpc.aio.AioRpcError as error:
        if error.code() == grpc.StatusCode.NOT_FOUND:
            return False
        raise
    return True


async def test_a_trigger_is_explained_with_its_re_eligibility(platform: Platform) -> None:
    """A pending firing makes the user not re-eligible; another user passes the trigger
    step and gets the policy's decision for the trigger's category."""
    shift_clock_file(platform.clock_file, to=NOW, speed=1.0)
    for user in ("ann", "bob"):
        await platform.register(user)
    trigger = resources_pb2.Trigger(
        name="Cart abandonment",
        event=resources_pb2.EventMatcher(event_name="add_to_cart"),
        delay=Duration(seconds=3600),
        category_id="promos",
        template=resources_pb2.Template(content=content_pb2.Content(title="Cart", body="Hi")),
        re_eligibility=resources_pb2.ReEligibility(max_firings=1),
    )
    async with platform.scheduler() as scheduler:
        created = await scheduler.CreateTrigger(
            messages_pb2.CreateTriggerRequest(app_id=APP, trigger=trigger, idempotency_key="t")
        )
        trigger_id = created.trigger.trigger_id
        # The follower starts at the stream's head: track until one of ann's fires.
        for number in itertools.count():
            event_id = f"e{number}"
            tracked = seg_resources.Event(event_id=event_id, user_id="ann", name="add_to_cart")
            tracked.occurred_at.FromDatetime(NOW)
            await platform.segmentation.TrackEvents(
                seg_messages.TrackEventsRequest(app_id=APP, events=[tracked])
            )
            await asyncio.sleep(0.1)
            if await stored(scheduler, firing_send_id(trigger_id, event_id)):
                break
            assert number < 200, "the event follower never applied an event"
        ann = await scheduler.ExplainDecision(
            messages_pb2.ExplainDecisionRequest(app_id=APP, user_id="ann", trigger_id=trigger_id)
        )
        assert (ann.decision.outcome, ann.decision.reason) == (
            DROP,
            R.REASON_CODE_NOT_REELIGIBLE,
        )
        (step,) = ann.decision.trace.steps
        assert step.check == R.CHECK_TRIGGER
        assert (step.trigger.trigger_id, step.trigger.max_firings) == (trigger_id, 1)
        assert ann.explanation[-1] == "→ DROP (NOT_REELIGIBLE)"
        bob = await scheduler.ExplainDecision(
            messages_pb2.ExplainDecisionRequest(app_id=APP, user_id="bob", trigger_id=trigger_id)
        )
        assert bob.decision.outcome == ALLOW
        first = bob.decision.trace.steps[0]
        assert (first.check, first.result, first.trigger.firings) == (
            R.CHECK_TRIGGER,
            R.STEP_RESULT_PASS,
            0,
        )
        assert bob.explanation[0] == f"trigger: PASS: trigger {trigger_id}: 0 of 1 firings sent"
        assert bob.explanation[-1] == "→ ALLOW: send now"
    assert platform.sandbox.apns.recorder.requests() == []


async def test_a_payload_over_the_limit_drops_after_the_policy_allows(platform: Platform) -> None:
    """A profile value repeated by the template makes one user's payload too large."""
    shift_clock_file(platform.clock_file, to=NOW, speed=1.0)
    bios = {"big": "x" * 1024, "small": "hi"}
    for user in bios:
        await platform.register(user)
    await platform.segmentation.UpsertProfiles(
        seg_messages.UpsertProfilesRequest(
            app_id=APP,
            profiles=[
                seg_resources.ProfileUpdate(
                    user_id=user,
                    set_attributes={
                        "plan": values_pb2.AttributeValue(string_value="pro"),
                        "bio": values_pb2.AttributeValue(string_value=bio),
                    },
                )
                for user, bio in bios.items()
            ],
        )
    )
    await platform.create_pro_segment()
    template = resources_pb2.Template(
        content=content_pb2.Content(title="About you", body="{{bio}}" * 5),
        placeholders=[
            resources_pb2.Placeholder(
                name="bio", source=resources_pb2.PLACEHOLDER_SOURCE_PROFILE_ATTRIBUTE, key="bio"
            )
        ],
    )
    body = a_campaign(
        holdout_basis_points=0,
        variants=[resources_pb2.Variant(variant_id="A", weight=100, template=template)],
    )
    async with platform.scheduler() as scheduler:
        answer = await scheduler.PreviewCampaign(
            messages_pb2.PreviewCampaignRequest(app_id=APP, campaign=body)
        )
        assert buckets(answer) == {
            (ALLOW, R.REASON_CODE_UNSPECIFIED): ["small"],
            (DROP, R.REASON_CODE_PAYLOAD_TOO_LARGE): ["big"],
        }
        created = await scheduler.CreateCampaign(
            messages_pb2.CreateCampaignRequest(app_id=APP, campaign=body, idempotency_key="big")
        )
        big = await scheduler.ExplainDecision(
            messages_pb2.ExplainDecisionRequest(
                app_id=APP, user_id="big", campaign_id=created.campaign.campaign_id
            )
        )
        assert (big.decision.outcome, big.decision.reason) == (
            DROP,
            R.REASON_CODE_PAYLOAD_TOO_LARGE,
        )
        last = big.decision.trace.steps[-1]
        assert (last.check, last.result) == (R.CHECK_TEMPLATE, R.STEP_RESULT_DROP)
        assert last.template.payload_bytes > last.template.limit_bytes > 0
        assert big.explanation[-1] == "→ DROP (PAYLOAD_TOO_LARGE)"
    assert platform.sandbox.apns.recorder.requests() == []
