"""PreviewCampaign and ExplainDecision: the decisions a campaign or a message would get,
sending and recording nothing.

Both run the path a campaign user takes, on the real facts of now: fan-out's steps (the
variant or holdout assignment, the due time in the user's zone) and dispatch's (consent's
answer, audience and suppression lists and template rendering by the :class:`Preparer`,
the policy library at the user's due instant with the user's real contact history, the
payload size). A preview streams the campaign's audience from segmentation page by page
and asks every peer once per page; nothing is written.

The scheduler's own checks become the trace's leading steps, in the order they decide:
send time (LOCAL_TIME_PASSED, NO_TIMEZONE), holdout, audience, template (missing value);
a payload over the limit after an ALLOW is a trailing template step. A trigger's
explanation leads with its re-eligibility step; a category's is the policy's trace alone.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from pushwarden.common.v1 import content_pb2, decision_pb2, types_pb2
from pushwarden.consent.v1 import messages_pb2 as consent_messages
from pushwarden.delivery.v1 import messages_pb2 as delivery_messages
from pushwarden.payload import DeliveryOptions
from pushwarden.policy import Decision, Outcome, Rules
from pushwarden.policy.zones import get_zone
from pushwarden.runtime.errors import InvalidArgument, NotFound, Unavailable
from pushwarden.scheduler.v1 import resources_pb2
from pushwarden.services.scheduler.domain import schedule
from pushwarden.services.scheduler.domain.assignment import Assignment, assign
from pushwarden.services.scheduler.domain.campaigns import audience_rule, campaign_send_id
from pushwarden.services.scheduler.domain.deciding import (
    Due,
    decide_user,
    history_of,
    message_for,
    recipient_for,
    zone_name,
)
from pushwarden.services.scheduler.domain.decisions import (
    decision_to_proto,
    explanation_lines,
    reason_code,
)
from pushwarden.services.scheduler.domain.intents import ClaimedIntent, Lane, PastContact
from pushwarden.services.scheduler.domain.templates import rendered_size
from pushwarden.services.scheduler.domain.throttle import ThrottleSlot, throttle_step
from pushwarden.services.scheduler.domain.triggers import StoredFiring
from pushwarden.services.scheduler.handlers.campaigns import CampaignHandlers
from pushwarden.services.scheduler.handlers.common import SchedulerDeps
from pushwarden.services.scheduler.handlers.dispatch import HISTORY_SPAN, PolicySource
from pushwarden.services.scheduler.handlers.fanout import DEFAULT_LOOKBACK, PageHours
from pushwarden.services.scheduler.handlers.prepare import Prepared, Preparer
from pushwarden.services.scheduler.peers import PeerUnavailable
from pushwarden.services.scheduler.peers.consent import Eligibility, UnknownCategory
from pushwarden.services.scheduler.peers.segmentation import SegmentationPeer

PAGE_SIZE = 1000
DEFAULT_SAMPLES = 5
MAX_SAMPLES = 50

ProtoStep = decision_pb2.TraceStep

_PASS = decision_pb2.STEP_RESULT_PASS
_DROP = decision_pb2.STEP_RESULT_DROP
_HOLDOUT = decision_pb2.REASON_CODE_HOLDOUT
_NOT_IN_AUDIENCE = decision_pb2.REASON_CODE_NOT_IN_AUDIENCE
_UNKNOWN_CATEGORY = decision_pb2.REASON_CODE_UNKNOWN_CATEGORY
_PAYLOAD_TOO_LARGE = decision_pb2.REASON_CODE_PAYLOAD_TOO_LARGE
_LOCAL_TIME_PASSED = decision_pb2.REASON_CODE_LOCAL_TIME_PASSED
_PASSED_BASES = (schedule.DueBasis.LOCAL_TIME_SEND_NOW, schedule.DueBasis.LOCAL_TIME_NEXT_DAY)


@dataclass(frozen=True, slots=True)
class Bucket:
    """Users with one outcome ("ALLOW", "DEFER", "DROP") and reason (0 for ALLOW)."""

    outcome: str
    reason: int
    count: int
    samples: list[str]


@dataclass(frozen=True, slots=True)
class Preview:
    """A preview's answer."""

    audience_size: int
    evaluated: int
    truncated: bool
    buckets: list[Bucket]
    variants: dict[str, int]
    as_of: datetime


@dataclass(frozen=True, slots=True)
class Explanation:
    """An explained decision: the Decision with its trace, the text lines, and for a
    campaign the user's variant, holdout and due instant."""

    decision: decision_pb2.Decision
    lines: list[str]
    variant_id: str = ""
    holdout: bool = False
    due_at: datetime | None = None


@dataclass(slots=True)
class _Judged:
    """One campaign user's evaluation (the trace and lines only when asked for)."""

    user_id: str
    outcome: str
    reason: int
    choice: Assignment
    due_at: datetime | None
    decision: decision_pb2.Decision | None = None
    lines: list[str] = field(default_factory=list)


@dataclass(slots=True)
class _Tally:
    """Counts and the lowest user ids per (outcome, reason), and users per variant."""

    samples_per_reason: int
    counts: Counter[tuple[str, int]] = field(default_factory=Counter)
    samples: dict[tuple[str, int], list[str]] = field(default_factory=dict)
    variants: Counter[str] = field(default_factory=Counter)

    def add(self, judged: Sequence[_Judged]) -> None:
        for one in judged:
            key = (one.outcome, one.reason)
            self.counts[key] += 1
            kept = self.samples.setdefault(key, [])
            kept.append(one.user_id)
            if len(kept) > self.samples_per_reason:
                kept.sort()
                del kept[self.samples_per_reason :]
            if not one.choice.holdout:
                self.variants[one.choice.variant_id] += 1

    def buckets(self) -> list[Bucket]:
        order = {"ALLOW": 0, "DEFER": 1, "DROP": 2}
        return [
            Bucket(outcome, reason, count, sorted(self.samples[(outcome, reason)]))
            for (outcome, reason), count in sorted(
                self.counts.items(), key=lambda item: (order[item[0][0]], item[0][1])
            )
        ]


class ExplainHandlers:
    """The dry-run RPCs' logic."""

    def __init__(
        self,
        deps: SchedulerDeps,
        segmentation: SegmentationPeer,
        policies: PolicySource,
        preparer: Preparer,
        campaigns: CampaignHandlers,
    ) -> None:
        self._deps = deps
        self._segmentation = segmentation
        self._policies = policies
        self._preparer = preparer
        self._campaigns = campaigns

    def now(self) -> datetime:
        """The service clock's now (the default ``as_of``)."""
        return self._deps.clock.now()

    async def preview(
        self,
        app_id: str,
        *,
        campaign_id: str | None,
        campaign: resources_pb2.Campaign | None,
        as_of: datetime,
        samples_per_reason: int,
        max_users: int,
    ) -> Preview:
        """Counts by outcome and reason over the campaign's real audience. ``campaign``
        is an unsaved definition (already checked alone; its references are checked
        here); a saved one is read by ``campaign_id`` (NOT_FOUND)."""
        try:
            if campaign is None:
                assert campaign_id is not None
                campaign = await self._saved(app_id, campaign_id)
            else:
                await self._campaigns.check_references(app_id, campaign)
                campaign_id = ""  # unsaved: assigned as a campaign without an id
            return await self._preview(
                app_id, campaign_id, campaign, as_of, samples_per_reason, max_users
            )
        except PeerUnavailable as error:
            raise Unavailable(f"cannot preview the campaign: {error}") from error

    async def _preview(
        self,
        app_id: str,
        campaign_id: str,
        campaign: resources_pb2.Campaign,
        as_of: datetime,
        samples_per_reason: int,
        max_users: int,
    ) -> Preview:
        rules, policy = await self._policies.rules(app_id)
        tally = _Tally(samples_per_reason)
        audience_size = evaluated = 0
        truncated = False
        pages = self._segmentation.audience(
            app_id,
            audience_rule(campaign.audience),
            cursor="",
            as_of=as_of if as_of <= self.now() else None,
            page_size=PAGE_SIZE,
        )
        async for page in pages:
            audience_size += len(page.user_ids)
            users = page.user_ids
            if max_users:
                users = users[: max(0, max_users - evaluated)]
                truncated = truncated or len(users) < len(page.user_ids)
            if users:
                judged = await self._judge(
                    app_id, campaign_id, campaign, users, as_of, rules, policy, trace=False
                )
                tally.add(judged)
                evaluated += len(users)
            if page.done:
                break
        return Preview(
            audience_size=audience_size,
            evaluated=evaluated,
            truncated=truncated,
            buckets=tally.buckets(),
            variants=dict(tally.variants),
            as_of=as_of,
        )

    async def explain_campaign(
        self, app_id: str, user_id: str, campaign_id: str, as_of: datetime
    ) -> Explanation:
        """The user's decision in a saved campaign, with the scheduler's steps."""
        try:
            campaign = await self._saved(app_id, campaign_id)
            rules, policy = await self._policies.rules(app_id)
            (judged,) = await self._judge(
                app_id, campaign_id, campaign, [user_id], as_of, rules, policy, trace=True
            )
        except PeerUnavailable as error:
            raise Unavailable(f"cannot explain the decision: {error}") from error
        assert judged.decision is not None
        return Explanation(
            decision=judged.decision,
            lines=judged.lines,
            variant_id=judged.choice.variant_id,
            holdout=judged.choice.holdout,
            due_at=judged.due_at,
        )

    async def explain_category(
        self,
        app_id: str,
        user_id: str,
        category_id: str,
        *,
        topic_id: str,
        respect_quiet_hours: bool,
        as_of: datetime,
    ) -> Explanation:
        """An ad-hoc message of the category to the user at ``as_of`` (INVALID_ARGUMENT
        naming ``category_id`` when consent does not know the category)."""
        deps = self._deps
        try:
            try:
                answer = await deps.consent.eligibility(app_id, category_id, topic_id, [user_id])
            except UnknownCategory as error:
                raise InvalidArgument(
                    f"no category {category_id!r} at consent",
                    [("category_id", "no such category at consent")],
                    reason="UNKNOWN_REFERENCE",
                ) from error
            transactional = answer.kind == "TRANSACTIONAL"
            intent = _intent(
                app_id,
                user_id,
                send_id=f"explain:{category_id}:{user_id}",
                lane=Lane.TRANSACTIONAL if transactional else Lane.MARKETING,
                category_id=category_id,
                topic_id=topic_id,
                due_at=as_of,
                respect_quiet_hours=respect_quiet_hours and transactional,
            )
            due = _due(intent, answer)
            prepared = await self._preparer.prepare(app_id, [due])
            histories = await self._histories(app_id, [user_id], as_of)
            rules, policy = await self._policies.rules(app_id)
        except PeerUnavailable as error:
            raise Unavailable(f"cannot explain the decision: {error}") from error
        decision, lines = _policy_trace(
            due, prepared, histories[user_id], rules, policy, as_of, leading=[], extra=[]
        )
        return Explanation(decision=decision, lines=lines)

    async def explain_trigger(
        self, app_id: str, user_id: str, trigger_id: str, as_of: datetime
    ) -> Explanation:
        """A firing of the trigger for the user at ``as_of`` (NOT_FOUND for an unknown
        trigger): its re-eligibility against the user's stored firings, then the policy
        for its category, topic and priority. No event fired it, so its template (which
        may read the event's properties) is not rendered, and cancel events are not
        replayed."""
        deps = self._deps
        async with deps.uow(read_only=True) as work:
            row = await work.triggers.get(app_id, trigger_id)
            if row is None:
                raise NotFound(
                    f"no trigger {trigger_id!r}", resource_type="trigger", resource_name=trigger_id
                )
            definition = resources_pb2.Trigger.FromString(row.definition)
            lane = Lane(row.lane)
            stored = await work.triggers.firings([(app_id, user_id)], [trigger_id])
        step = _reeligibility_step(
            trigger_id, definition, stored[(app_id, trigger_id, user_id)], as_of
        )
        no_choice = Assignment(holdout=False, variant_id="", bucket=0)
        if step.result == _DROP:
            judged = _dropped(user_id, no_choice, None, step.reason, [step], as_of, trace=True)
            assert judged.decision is not None
            return Explanation(decision=judged.decision, lines=judged.lines)
        try:
            try:
                answer = await deps.consent.eligibility(
                    app_id, definition.category_id, definition.topic_id, [user_id]
                )
            except UnknownCategory:
                judged = _dropped(
                    user_id, no_choice, None, _UNKNOWN_CATEGORY, [step], as_of, trace=True
                )
                assert judged.decision is not None
                return Explanation(decision=judged.decision, lines=judged.lines)
            intent = _intent(
                app_id,
                user_id,
                send_id=f"explain:{trigger_id}:{user_id}",
                lane=lane,
                category_id=definition.category_id,
                topic_id=definition.topic_id,
                due_at=as_of,
                trigger_id=trigger_id,
                priority=int(definition.priority),
                expires_at=as_of + definition.ttl.ToTimedelta()
                if definition.HasField("ttl")
                else None,
            )
            due = _due(intent, answer)
            # For the suppression lists (marketing); the rendering is left out (above).
            prepared = await self._preparer.prepare(app_id, [due])
            histories = await self._histories(app_id, [user_id], as_of)
            rules, policy = await self._policies.rules(app_id)
        except PeerUnavailable as error:
            raise Unavailable(f"cannot explain the decision: {error}") from error
        decision, lines = _policy_trace(
            due, prepared, histories[user_id], rules, policy, as_of, leading=[step], extra=[]
        )
        return Explanation(decision=decision, lines=lines)

    async def _saved(self, app_id: str, campaign_id: str) -> resources_pb2.Campaign:
        async with self._deps.uow(read_only=True) as work:
            row = await work.campaigns.get(app_id, campaign_id)
            if row is None:
                raise NotFound(
                    f"no campaign {campaign_id!r}",
                    resource_type="campaign",
                    resource_name=campaign_id,
                )
            return resources_pb2.Campaign.FromString(row.definition)

    async def _throttle_slot(
        self, app_id: str, campaign_id: str, campaign: resources_pb2.Campaign
    ) -> ThrottleSlot | None:
        """The campaign's throttle slot as dispatch left it (None: not throttled)."""
        limit = campaign.throttle.sends_per_minute
        if not limit:
            return None
        async with self._deps.uow(read_only=True) as work:
            return await work.campaigns.throttle_slot(app_id, campaign_id, limit)

    async def _histories(
        self, app_id: str, user_ids: Sequence[str], as_of: datetime
    ) -> dict[str, list[PastContact]]:
        async with self._deps.uow(read_only=True) as work:
            return await work.intents.history(app_id, user_ids, as_of - HISTORY_SPAN)

    async def _open_hours(
        self, app_id: str, campaign: resources_pb2.Campaign, user_ids: Sequence[str]
    ) -> PageHours:
        """Delivery's open hours for a BEST_TIME campaign's page, as fan-out reads them."""
        if campaign.schedule.WhichOneof("mode") != "best_time":
            return PageHours({}, None)
        best = campaign.schedule.best_time
        lookback = best.lookback.ToTimedelta() if best.HasField("lookback") else DEFAULT_LOOKBACK
        answer = await self._deps.delivery.open_hours(app_id, list(user_ids), lookback)
        by_hour = list(answer.app_opens_by_local_hour)
        best_hour = (
            max(range(len(by_hour)), key=lambda h: (by_hour[h], -h)) if any(by_hour) else None
        )
        users: dict[str, delivery_messages.UserOpenHours] = {u.user_id: u for u in answer.users}
        return PageHours(users, best_hour)

    async def _judge(
        self,
        app_id: str,
        campaign_id: str,
        campaign: resources_pb2.Campaign,
        user_ids: Sequence[str],
        as_of: datetime,
        rules: Rules,
        policy: resources_pb2.Policy,
        *,
        trace: bool,
    ) -> list[_Judged]:
        """One page of a campaign's users decided as fan-out and dispatch would: one
        consent call, one open-hours call (BEST_TIME), the Preparer's batched calls and
        one history read for the page."""
        variants = [(v.variant_id, v.weight) for v in campaign.variants]
        choices = {
            user: assign(campaign_id, user, campaign.holdout_basis_points, variants)
            for user in user_ids
        }
        try:
            answer = await self._deps.consent.eligibility(
                app_id, campaign.category_id, campaign.topic_id, list(user_ids)
            )
        except UnknownCategory:
            return [
                _dropped(user, choices[user], None, _UNKNOWN_CATEGORY, [], as_of, trace)
                for user in user_ids
            ]
        hours = await self._open_hours(app_id, campaign, user_ids)
        expires = campaign.expires_at.ToDatetime(UTC) if campaign.HasField("expires_at") else None
        judged: dict[str, _Judged] = {}
        pending: list[tuple[Due, list[ProtoStep]]] = []
        for user in user_ids:
            choice = choices[user]
            facts = answer.users.get(user) or consent_messages.UserEligibility(user_id=user)
            zone = get_zone(facts.time_zone or rules.default_zone)
            due = schedule.due_time(
                campaign.schedule,
                zone=zone,
                now=as_of,
                started_at=as_of,
                open_hours=hours.users.get(user),
                app_best_local_hour=hours.app_best_local_hour,
                user_id=user,
                campaign_id=campaign_id,
            )
            steps = [_send_time_step(due, zone)] if trace else []
            if isinstance(due, schedule.NotDue):
                judged[user] = _dropped(user, choice, None, due.reason, steps, as_of, trace)
                continue
            if trace:
                steps.append(_holdout_step(campaign_id, campaign, choice))
            if choice.holdout:
                judged[user] = _dropped(user, choice, due.at, _HOLDOUT, steps, as_of, trace)
                continue
            intent = _intent(
                app_id,
                user,
                send_id=campaign_send_id(campaign_id, user),
                lane=Lane.MARKETING,
                category_id=campaign.category_id,
                topic_id=campaign.topic_id,
                due_at=due.at,
                campaign_id=campaign_id,
                variant_id=choice.variant_id,
                priority=campaign.priority,
                expires_at=expires,
            )
            pending.append((_due(intent, answer), steps))
        if pending:
            dues = [due for due, _ in pending]
            prepared = await self._preparer.prepare_campaign(app_id, campaign, dues)
            histories = await self._histories(app_id, [d.intent.user_id for d in dues], as_of)
            slot = await self._throttle_slot(app_id, campaign_id, campaign) if trace else None
            for waiting, steps in pending:
                user = waiting.intent.user_id
                judged[user] = self._judge_due(
                    waiting, steps, campaign, choices[user], prepared, histories,
                    rules, policy, as_of, trace, slot,
                )  # fmt: skip
        return [judged[user] for user in user_ids]

    def _judge_due(
        self,
        due: Due,
        steps: list[ProtoStep],
        campaign: resources_pb2.Campaign,
        choice: Assignment,
        prepared: Prepared,
        histories: dict[str, list[PastContact]],
        rules: Rules,
        policy: resources_pb2.Policy,
        as_of: datetime,
        trace: bool,
        slot: ThrottleSlot | None = None,
    ) -> _Judged:
        intent = due.intent
        user = intent.user_id
        drop = prepared.drops.get(intent.key)
        if trace:
            steps.append(_audience_step(campaign.audience, prepared, user, drop))
        if drop == _NOT_IN_AUDIENCE:
            return _dropped(user, choice, intent.due_at, drop, steps, as_of, trace)
        at = max(intent.due_at, as_of)
        content = prepared.contents.get(intent.key)
        size = _size(due, content, at) if content is not None else None
        if trace:
            steps.append(_template_step(prepared, due, size, drop))
        if drop is not None or content is None:
            reason = drop if drop is not None else _UNKNOWN_CATEGORY
            return _dropped(user, choice, intent.due_at, reason, steps, as_of, trace)
        too_large = size is not None and size[0] > size[1]
        if trace:
            extra = [_size_step(due, size)] if too_large else []
            if slot is not None and not too_large:
                # As dispatch would place it now (a copy: explaining takes no place).
                held = ThrottleSlot(slot.sends_per_minute, slot.slot_at, slot.used)
                extra.append(throttle_step(held, at, held.admit(at, None)))
            proto, lines = _policy_trace(
                due, prepared, histories[user], rules, policy, at, leading=steps, extra=extra
            )
            outcome, reason = _names(proto)
            return _Judged(user, outcome, reason, choice, intent.due_at, proto, lines)
        decision = _decide(due, prepared, histories[user], rules, policy, at)
        if decision.outcome is Outcome.ALLOW and too_large:
            return _Judged(user, "DROP", _PAYLOAD_TOO_LARGE, choice, intent.due_at)
        return _Judged(
            user, decision.outcome.value, reason_code(decision.reason), choice, intent.due_at
        )


def _intent(
    app_id: str,
    user_id: str,
    *,
    send_id: str,
    lane: Lane,
    category_id: str,
    topic_id: str,
    due_at: datetime,
    campaign_id: str | None = None,
    trigger_id: str | None = None,
    variant_id: str = "",
    priority: int = 0,
    expires_at: datetime | None = None,
    respect_quiet_hours: bool = False,
) -> ClaimedIntent:
    """The intent fan-out (or a send) would have stored, never stored."""
    return ClaimedIntent(
        app_id=app_id,
        send_id=send_id,
        user_id=user_id,
        lane=lane,
        category_id=category_id,
        topic_id=topic_id,
        campaign_id=campaign_id,
        trigger_id=trigger_id,
        variant_id=variant_id,
        event_id="",
        idempotency_key=None,
        body=None,
        priority=priority,
        respect_quiet_hours=respect_quiet_hours,
        expires_at=expires_at,
        due_at=due_at,
        deferrals=0,
        traceparent="",
        tracestate="",
        claimed_until=due_at,
    )


def _due(intent: ClaimedIntent, answer: Eligibility) -> Due:
    facts = answer.users.get(intent.user_id) or consent_messages.UserEligibility(
        user_id=intent.user_id
    )
    return Due(
        intent=intent,
        kind=answer.kind or "MARKETING",
        opt_out_allowed=answer.opt_out_allowed,
        facts=facts,
    )


def _decide(
    due: Due,
    prepared: Prepared,
    history: Sequence[PastContact],
    rules: Rules,
    policy: resources_pb2.Policy,
    at: datetime,
) -> Decision:
    user = due.intent.user_id
    recipient = recipient_for(user, [due], policy, suppressed=user in prepared.suppressed)
    ((_, decision),) = decide_user([due], recipient, history_of(history), rules, at)
    return decision


def _policy_trace(
    due: Due,
    prepared: Prepared,
    history: Sequence[PastContact],
    rules: Rules,
    policy: resources_pb2.Policy,
    at: datetime,
    *,
    leading: Sequence[ProtoStep],
    extra: Sequence[ProtoStep],
) -> tuple[decision_pb2.Decision, list[str]]:
    """The policy's decision at ``at`` with its full trace and text; a trailing
    ``extra`` step that is not a PASS (payload too large, a full throttle minute) turns
    an ALLOW into its DROP or DEFER."""
    user = due.intent.user_id
    recipient = recipient_for(user, [due], policy, suppressed=user in prepared.suppressed)
    ((_, decision),) = decide_user([due], recipient, history_of(history), rules, at)
    member = prepared.memberships.get(user)
    suppression = decision_pb2.SuppressionDetail(
        erased_not_reopted=due.facts.consent.suppressed,
        list_ids=list(member.suppression_list_ids) if member is not None else [],
    )
    proto = decision_to_proto(
        decision,
        evaluated_at=at,
        include_trace=True,
        zone_name=zone_name(recipient, rules),
        leading_steps=leading,
        extra_steps=extra if decision.outcome is Outcome.ALLOW else (),
        step_details={decision_pb2.CHECK_SUPPRESSION: suppression},
        message=message_for(due),
        recipient=recipient,
        rules=rules,
    )
    final = None
    if decision.outcome is Outcome.ALLOW and extra and extra[-1].result != _PASS:
        last = extra[-1]
        proto.reason = last.reason
        if last.result == decision_pb2.STEP_RESULT_DEFER:
            proto.outcome = decision_pb2.OUTCOME_DEFER
            proto.defer_until.CopyFrom(last.defer_until)
        else:
            proto.outcome = decision_pb2.OUTCOME_DROP
        final = proto
    lines = explanation_lines(
        decision,
        leading_steps=leading,
        extra_steps=extra if decision.outcome is Outcome.ALLOW else (),
        final=final,
    )
    return proto, lines


def _dropped(
    user: str,
    choice: Assignment,
    due_at: datetime | None,
    reason: int,
    steps: Sequence[ProtoStep],
    as_of: datetime,
    trace: bool,
) -> _Judged:
    """A user the scheduler drops before the policy runs."""
    if not trace:
        return _Judged(user, "DROP", reason, choice, due_at)
    proto = decision_pb2.Decision(
        outcome=decision_pb2.OUTCOME_DROP, reason=decision_pb2.ReasonCode.ValueType(reason)
    )
    proto.trace.evaluated_at.FromDatetime(as_of)
    proto.trace.steps.extend(steps)
    lines = explanation_lines(None, leading_steps=steps, final=proto)
    return _Judged(user, "DROP", reason, choice, due_at, proto, lines)


def _reeligibility_step(
    trigger_id: str,
    definition: resources_pb2.Trigger,
    firings: Sequence[StoredFiring],
    as_of: datetime,
) -> ProtoStep:
    """The trigger's re-eligibility for one user, as the event follower judges a new
    firing: not while one is pending, not past ``max_firings`` sent ones, not before
    ``min_interval`` after the latest sent one."""
    step = ProtoStep(check=decision_pb2.CHECK_TRIGGER, result=_PASS)
    detail = step.trigger
    detail.trigger_id = trigger_id
    rule = definition.re_eligibility
    sent = sorted(f.sent_at for f in firings if f.sent_at is not None)
    detail.firings = len(sent)
    detail.max_firings = rule.max_firings
    if rule.HasField("min_interval"):
        detail.min_interval.CopyFrom(rule.min_interval)
    if sent:
        detail.last_fired_at.FromDatetime(sent[-1])
    eligible = True
    if any(f.state == "PENDING" for f in firings) or (
        rule.max_firings and len(sent) >= rule.max_firings
    ):
        eligible = False
    elif rule.HasField("min_interval") and sent:
        again = sent[-1] + rule.min_interval.ToTimedelta()
        if as_of < again:
            eligible = False
            detail.eligible_again_at.FromDatetime(again)
    if not eligible:
        step.result = _DROP
        step.reason = decision_pb2.REASON_CODE_NOT_REELIGIBLE
    return step


def _names(proto: decision_pb2.Decision) -> tuple[str, int]:
    outcome = decision_pb2.Outcome.Name(proto.outcome).removeprefix("OUTCOME_")
    return outcome, int(proto.reason)


def _send_time_step(due: schedule.Due | schedule.NotDue, zone: ZoneInfo | None) -> ProtoStep:
    step = ProtoStep(check=decision_pb2.CHECK_SEND_TIME)
    detail = step.send_time
    if zone is not None:
        detail.time_zone = zone.key
    if isinstance(due, schedule.NotDue):
        step.result = _DROP
        step.reason = due.reason
        detail.local_time_passed = due.reason == _LOCAL_TIME_PASSED
        return step
    step.result = _PASS
    detail.due_at.FromDatetime(due.at)
    if zone is not None:
        local = due.at.astimezone(zone)
        detail.local_time.CopyFrom(types_pb2.LocalTime(hours=local.hour, minutes=local.minute))
    detail.personal_best_time = due.basis is schedule.DueBasis.BEST_TIME_USER
    detail.local_time_passed = due.basis in _PASSED_BASES
    return step


def _holdout_step(
    campaign_id: str, campaign: resources_pb2.Campaign, choice: Assignment
) -> ProtoStep:
    step = ProtoStep(check=decision_pb2.CHECK_HOLDOUT, result=_PASS)
    step.holdout.CopyFrom(
        decision_pb2.HoldoutDetail(
            campaign_id=campaign_id,
            in_holdout=choice.holdout,
            variant_id=choice.variant_id,
            bucket=choice.bucket,
            holdout_basis_points=campaign.holdout_basis_points,
        )
    )
    if choice.holdout:
        step.result = _DROP
        step.reason = _HOLDOUT
    return step


def _audience_step(
    audience: resources_pb2.Audience, prepared: Prepared, user: str, drop: int | None
) -> ProtoStep:
    step = ProtoStep(check=decision_pb2.CHECK_AUDIENCE, result=_PASS)
    member = prepared.memberships.get(user)
    segments = set(member.segment_ids) if member is not None else set()
    lists = set(member.list_ids) if member is not None else set()
    step.audience.CopyFrom(
        decision_pb2.AudienceDetail(
            included_by_segment_ids=[s for s in audience.include_segment_ids if s in segments],
            excluded_by_segment_ids=[s for s in audience.exclude_segment_ids if s in segments],
            excluded_by_list_ids=[lst for lst in audience.exclude_list_ids if lst in lists],
        )
    )
    if drop == _NOT_IN_AUDIENCE:
        step.result = _DROP
        step.reason = _NOT_IN_AUDIENCE
    return step


def _options(due: Due, at: datetime) -> DeliveryOptions:
    intent = due.intent
    expires = intent.expires_at
    if expires is not None and expires <= at:
        expires = None
    return DeliveryOptions(
        priority=types_pb2.Priority.ValueType(intent.priority),
        expires_at=expires,
        now=at,
        send_id=intent.send_id,
        campaign_id=intent.campaign_id or "",
        variant_id=intent.variant_id,
    )


def _size(due: Due, content: content_pb2.Content, at: datetime) -> tuple[int, int]:
    """The payload's bytes and its tightest provider limit, as delivery will send it."""
    checked = rendered_size(content, _options(due, at))
    return checked.size, checked.limit


def _template_step(
    prepared: Prepared, due: Due, size: tuple[int, int] | None, drop: int | None
) -> ProtoStep:
    step = ProtoStep(check=decision_pb2.CHECK_TEMPLATE, result=_PASS)
    rendering = prepared.renderings.get(due.intent.key)
    detail = step.template
    if rendering is not None:
        detail.locale = rendering.locale
        detail.missing_placeholders.extend(rendering.missing)
        detail.defaulted_placeholders.extend(rendering.defaulted)
    if size is not None:
        detail.payload_bytes, detail.limit_bytes = size
    if drop is not None:
        step.result = _DROP
        step.reason = decision_pb2.ReasonCode.ValueType(drop)
    return step


def _size_step(due: Due, size: tuple[int, int] | None) -> ProtoStep:
    step = ProtoStep(check=decision_pb2.CHECK_TEMPLATE, result=_DROP, reason=_PAYLOAD_TOO_LARGE)
    if size is not None:
        step.template.payload_bytes, step.template.limit_bytes = size
    return step
