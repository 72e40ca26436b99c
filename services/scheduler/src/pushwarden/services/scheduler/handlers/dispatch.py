"""The dispatch loop: claims due intents, asks consent, runs the policy, records.

One pass, hosted as a worker of the app (one loop per lane, so a transactional send
never waits behind a marketing batch):

1. claim a batch of due intents in one short transaction (a lease);
2. ask consent once per category and topic of the batch (one ``CheckEligibility`` per
   1,000 users): consent state, devices, zone and preferences as of now;
3. learn who left a campaign's audience or is on a suppression list, and render each
   send's content (``prepare``);
4. read the users' contact history and decide every user's due intents together with
   the policy library (arbitration between a user's competing intents) on that
   snapshot, outside any write transaction;
5. in one transaction per app: lock the batch's users, check the claims still hold and
   each user's history is still the snapshot's (deciding again, on the fresh history,
   any user it is not), let each throttled campaign's slot (locked too) hold back what
   its minute has no room for (DEFER THROTTLED to the minute with room), and write the
   decisions: ALLOW records the contact and the send for the outbox, DEFER sets the new
   due time, DROP ends the intent;
6. wake the outbox of the lane.

Trigger firings are recorded with delivery as assignments before step 2 (each firing
that reaches its due time counts, whatever the policy decides).

When consent cannot be reached the claims are given back for a retry a second later;
nothing is decided on stale facts.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from pushwarden.common.v1 import content_pb2, decision_pb2, types_pb2
from pushwarden.delivery.v1 import resources_pb2 as delivery_pb2
from pushwarden.payload import DeliveryOptions, check_size, surely_fits
from pushwarden.policy import Decision, Outcome, Recipient, Rules
from pushwarden.runtime.workers import WorkerContext
from pushwarden.scheduler.v1 import resources_pb2
from pushwarden.services.scheduler.domain.deciding import (
    Due,
    decide_user,
    history_of,
    latest_send_at,
    message_for,
    recipient_for,
    zone_name,
)
from pushwarden.services.scheduler.domain.decisions import decision_to_proto, reason_code
from pushwarden.services.scheduler.domain.intents import (
    ClaimedIntent,
    Lane,
    PastContact,
    Verdict,
)
from pushwarden.services.scheduler.domain.throttle import ThrottleSlot, throttle_step
from pushwarden.services.scheduler.handlers.common import SchedulerDeps
from pushwarden.services.scheduler.handlers.prepare import Prepared, Preparer
from pushwarden.services.scheduler.peers import PeerUnavailable
from pushwarden.services.scheduler.peers.consent import Eligibility, UnknownCategory

logger = logging.getLogger(__name__)

# How far back the contact history is read: the longest window a cap may have (rolling
# windows are at most 90 days; a calendar week spans at most 8 UTC days).
HISTORY_SPAN = timedelta(days=91)
RETRY_AFTER_UNAVAILABLE = timedelta(seconds=1)
YIELD_EVERY_USERS = 50
_UNKNOWN_CATEGORY = decision_pb2.REASON_CODE_UNKNOWN_CATEGORY
_PAYLOAD_TOO_LARGE = decision_pb2.REASON_CODE_PAYLOAD_TOO_LARGE
_THROTTLED = decision_pb2.REASON_CODE_THROTTLED
_OUTCOME_NAMES = {Outcome.ALLOW: "ALLOW", Outcome.DEFER: "DEFER", Outcome.DROP: "DROP"}


class PolicySource(Protocol):
    """Where a pass finds an app's effective policy (the policy handlers)."""

    async def rules(self, app_id: str) -> tuple[Rules, resources_pb2.Policy]:
        """The app's policy as the library's rules, and as the contract's message."""
        ...


@dataclass(frozen=True, slots=True)
class DispatchSettings:
    """How much a pass takes, how long a claim lasts, which lanes a loop serves."""

    lanes: tuple[Lane, ...]
    batch: int = 500
    poll_s: float = 0.5
    lease_s: float = 60.0


class Dispatcher:
    """One dispatch loop (a worker of the app)."""

    def __init__(
        self,
        deps: SchedulerDeps,
        policies: PolicySource,
        preparer: Preparer,
        settings: DispatchSettings,
    ) -> None:
        self._deps = deps
        self._policies = policies
        self._preparer = preparer
        self._settings = settings

    async def run(self, ctx: WorkerContext) -> None:
        """Dispatch until the app stops; claims in flight finish, the rest stays stored."""
        wake = _Wake(self._deps, self._settings.lanes)
        try:
            while not ctx.stopping:
                wake.event.clear()
                if await self.dispatch_once() == 0:
                    await ctx.idle(wake.event, self._settings.poll_s)
        finally:
            wake.close()

    async def dispatch_once(self) -> int:
        """Claim one batch of due intents and decide it; returns how many were claimed."""
        deps = self._deps
        now = deps.clock.now()
        lease_until = now + timedelta(seconds=self._settings.lease_s)
        async with deps.uow() as work:
            claimed = await work.intents.claim_due(
                now, self._settings.batch, lease_until, self._settings.lanes
            )
            await work.commit()
        if not claimed:
            return 0
        by_app: dict[str, list[ClaimedIntent]] = defaultdict(list)
        for intent in claimed:
            by_app[intent.app_id].append(intent)
        for app_id, intents in by_app.items():
            try:
                await self._decide_app(app_id, intents)
            except PeerUnavailable as error:
                logger.warning(
                    "dispatch postponed: %s",
                    error,
                    extra={"app_id": app_id, "intents": len(intents)},
                )
                async with deps.uow() as work:
                    await work.intents.release(intents, deps.clock.now() + RETRY_AFTER_UNAVAILABLE)
                    await work.commit()
        return len(claimed)

    async def _decide_app(self, app_id: str, claimed: Sequence[ClaimedIntent]) -> None:
        # A traced intent is decided (and its send handed on) in a span of its own trace.
        intents, spans = self._deps.tracing.deciding(claimed)
        with spans:
            spans.decided(await self._decide(app_id, intents))

    async def _decide(self, app_id: str, intents: Sequence[ClaimedIntent]) -> list[Verdict]:
        """Decide one app's claimed intents and write the decisions; returns them."""
        deps = self._deps
        await self._record_firings(app_id, intents)
        rules, policy = await self._policies.rules(app_id)
        groups: dict[tuple[str, str], list[ClaimedIntent]] = defaultdict(list)
        for intent in intents:
            groups[(intent.category_id, intent.topic_id)].append(intent)
        dues: list[Due] = []
        unknown: list[ClaimedIntent] = []
        for (category_id, topic_id), members in groups.items():
            try:
                answer = await deps.consent.eligibility(
                    app_id, category_id, topic_id, [i.user_id for i in members]
                )
            except UnknownCategory:
                unknown.extend(members)
                continue
            dues.extend(_dues(members, answer))
        prepared = await self._preparer.prepare(app_id, dues)
        users = {i.user_id for i in intents}
        by_user: dict[str, list[Due]] = defaultdict(list)
        for due in dues:
            if due.intent.key not in prepared.drops:
                by_user[due.intent.user_id].append(due)
        # Decide on a snapshot of the contact history, outside the write transaction (the
        # policy's work is most of a pass's CPU, and a SQLite write transaction holds up
        # every other writer); the transaction then checks, with the users locked, that
        # each user's history is still the snapshot's, and decides again only those it
        # is not for (another process or loop decided for them meanwhile).
        now = deps.clock.now()
        since = now - HISTORY_SPAN
        async with deps.uow(read_only=True) as work:
            histories = await work.intents.history(app_id, users, since)
        drafts: dict[str, list[_Draft]] = {}
        for count, (user_id, mine) in enumerate(by_user.items(), 1):
            drafts[user_id] = self._verdicts(
                user_id, mine, policy, rules, histories[user_id], now, prepared
            )
            if count % YIELD_EVERY_USERS == 0:
                # A batch's policy work is CPU for a quarter of a second: let the other
                # lane (a transactional send) and the RPCs in between.
                await asyncio.sleep(0)
        async with deps.uow() as work:
            await work.intents.lock_users(app_id, users)
            held = await work.intents.still_claimed(intents)
            current = await work.intents.history_keys(app_id, by_user, since)
            changed = [
                user_id
                for user_id in by_user
                if current[user_id] != {c.send_id for c in histories[user_id]}
            ]
            if changed:
                fresh = await work.intents.history(app_id, changed, since)
                for user_id in changed:
                    drafts[user_id] = self._verdicts(
                        user_id, by_user[user_id], policy, rules, fresh[user_id], now, prepared
                    )
            limits = await work.campaigns.throttle_limits(
                app_id, {i.campaign_id for i in intents if i.campaign_id is not None}
            )
            slots = await work.campaigns.lock_throttle_slots(app_id, limits, now)
            verdicts = [
                Verdict(intent=i, outcome="DROP", reason=_UNKNOWN_CATEGORY, decided_at=now)
                for i in unknown
                if i.key in held
            ]
            for due in dues:
                reason = prepared.drops.get(due.intent.key)
                if reason is not None and due.intent.key in held:
                    verdicts.append(
                        Verdict(intent=due.intent, outcome="DROP", reason=reason, decided_at=now)
                    )
            for drafted in drafts.values():
                for draft in drafted:
                    if draft.verdict.intent.key in held:
                        verdicts.append(_throttle(draft, slots, now))
            await work.campaigns.save_throttle_slots(app_id, slots)
            await work.intents.apply(verdicts)
            await work.campaigns.count(_campaign_counts(verdicts))
            await work.commit()
        for lane in {v.intent.lane for v in verdicts if v.outcome == "ALLOW"}:
            deps.sends_allowed(lane)
        return verdicts

    def _verdicts(
        self,
        user_id: str,
        dues: Sequence[Due],
        policy: resources_pb2.Policy,
        rules: Rules,
        history: Sequence[PastContact],
        now: datetime,
        prepared: Prepared,
    ) -> list[_Draft]:
        """The policy's verdicts on one user's due intents (before any throttle)."""
        recipient = recipient_for(user_id, dues, policy, suppressed=user_id in prepared.suppressed)
        decided = decide_user(dues, recipient, history_of(history), rules, now)
        zone = zone_name(recipient, rules)
        drafts: list[_Draft] = []
        for due, decision in decided:
            intent = due.intent
            keep_trace = intent.lane is Lane.TRANSACTIONAL or decision.outcome is not Outcome.ALLOW
            stored = decision_to_proto(
                decision, evaluated_at=now, include_trace=keep_trace, zone_name=zone
            ).SerializeToString(deterministic=True)
            if decision.outcome is Outcome.ALLOW:
                content = prepared.contents[intent.key]
                verdict = self._allowed(due, content, recipient, rules, now, stored)
                drafts.append(_Draft(verdict, decision, zone))
                continue
            verdict = Verdict(
                intent=intent,
                outcome=_OUTCOME_NAMES[decision.outcome],
                reason=reason_code(decision.reason),
                decided_at=now,
                until=decision.until,
                decision=stored,
            )
            drafts.append(_Draft(verdict, decision, zone))
        return drafts

    async def _record_firings(self, app_id: str, intents: Sequence[ClaimedIntent]) -> None:
        """Record the trigger firings reaching their due time with delivery (one
        assignment each, assigned at the due time) before any is decided, whatever the
        policy then says: intent to treat. A deferred firing was recorded on its first
        pass; delivery ignores a repeated assignment (a pass that failed after it)."""
        firings: dict[str, list[delivery_pb2.Assignment]] = defaultdict(list)
        for intent in intents:
            if intent.trigger_id is not None and intent.deferrals == 0:
                assignment = delivery_pb2.Assignment(
                    user_id=intent.user_id, firing_id=intent.send_id
                )
                assignment.assigned_at.FromDatetime(intent.due_at)
                firings[intent.trigger_id].append(assignment)
        for trigger_id, assignments in firings.items():
            await self._deps.delivery.record_assignments(app_id, assignments, trigger_id=trigger_id)

    def _allowed(
        self,
        due: Due,
        content: content_pb2.Content,
        recipient: Recipient,
        rules: Rules,
        now: datetime,
        stored: bytes,
    ) -> Verdict:
        intent = due.intent
        latest = latest_send_at(recipient, rules, message_for(due), now)
        send = delivery_pb2.Send(
            send_id=intent.send_id,
            user_id=intent.user_id,
            category_id=intent.category_id,
            topic_id=intent.topic_id,
            campaign_id=intent.campaign_id or "",
            variant_id=intent.variant_id,
            trigger_id=intent.trigger_id or "",
            priority=types_pb2.Priority.ValueType(intent.priority),
            content=content,
            respect_quiet_hours=intent.respect_quiet_hours,
            traceparent=intent.traceparent,
            tracestate=intent.tracestate,
        )
        send.dispatched_at.FromDatetime(now)
        if intent.expires_at is not None:
            send.expires_at.FromDatetime(intent.expires_at)
        if latest is not None:
            send.latest_send_at.FromDatetime(latest)
        options = DeliveryOptions.for_send(send, now=now)
        if not surely_fits(content, options) and not check_size(content, options).fits:
            return Verdict(
                intent=intent,
                outcome="DROP",
                reason=_PAYLOAD_TOO_LARGE,
                decided_at=now,
                decision=decision_pb2.Decision(
                    outcome=decision_pb2.OUTCOME_DROP, reason=_PAYLOAD_TOO_LARGE
                ).SerializeToString(deterministic=True),
            )
        return Verdict(
            intent=intent,
            outcome="ALLOW",
            reason=0,
            decided_at=now,
            decision=stored,
            send=send.SerializeToString(deterministic=True),
            kind=due.kind,
            latest_send_at=latest,
        )


@dataclass(frozen=True, slots=True)
class _Draft:
    """A verdict of the policy, with what a throttle needs to hold it back."""

    verdict: Verdict
    decision: Decision
    zone: str | None


def _throttle(draft: _Draft, slots: Mapping[str, ThrottleSlot], now: datetime) -> Verdict:
    """The verdict once its campaign's throttle (if any) placed an ALLOW."""
    verdict = draft.verdict
    intent = verdict.intent
    slot = slots.get(intent.campaign_id or "")
    if verdict.outcome != "ALLOW" or slot is None:
        return verdict
    reserved = intent.defer_until if intent.reason == _THROTTLED else None
    later = slot.admit(now, reserved)
    if later is None:
        return verdict
    return _throttled(intent, draft.decision, slot, later, now, draft.zone)


def _throttled(
    intent: ClaimedIntent,
    decision: Decision,
    slot: ThrottleSlot,
    later: datetime,
    now: datetime,
    zone: str | None,
) -> Verdict:
    """An allowed send its campaign's throttle holds back to the minute ``later``: the
    policy's trace with the throttle step after it."""
    step = throttle_step(slot, now, later)
    stored = decision_to_proto(
        decision, evaluated_at=now, include_trace=True, zone_name=zone, extra_steps=[step]
    )
    stored.outcome = decision_pb2.OUTCOME_DEFER
    stored.reason = _THROTTLED
    stored.defer_until.FromDatetime(later)
    return Verdict(
        intent=intent,
        outcome="DEFER",
        reason=_THROTTLED,
        decided_at=now,
        until=later,
        decision=stored.SerializeToString(deterministic=True),
    )


def _campaign_counts(verdicts: Sequence[Verdict]) -> Counter[tuple[str, str, str, int]]:
    """The decision counters a batch adds to its campaigns."""
    counts: Counter[tuple[str, str, str, int]] = Counter()
    for verdict in verdicts:
        campaign_id = verdict.intent.campaign_id
        if campaign_id is not None:
            counts[(verdict.intent.app_id, campaign_id, verdict.outcome, verdict.reason)] += 1
    return counts


def _dues(members: Sequence[ClaimedIntent], answer: Eligibility) -> list[Due]:
    return [
        Due(
            intent=intent,
            kind=answer.kind or "MARKETING",
            opt_out_allowed=answer.opt_out_allowed,
            facts=answer.users[intent.user_id],
        )
        for intent in members
        if intent.user_id in answer.users
    ]


class _Wake:
    """This loop's wake-up event, registered for its lanes while it runs."""

    def __init__(self, deps: SchedulerDeps, lanes: Sequence[Lane]) -> None:
        self.event = asyncio.Event()
        self._deps = deps
        self._lanes = tuple(lanes)
        for lane in self._lanes:
            deps.dispatch_wakers.setdefault(lane, []).append(self.event)

    def close(self) -> None:
        for lane in self._lanes:
            self._deps.dispatch_wakers[lane].remove(self.event)
