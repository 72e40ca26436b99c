"""The dispatcher: claims due sends, re-checks consent, calls the providers, records.

One pass, hosted as a worker of the app:

1. claim a batch of due sends (transactional lane first), in one short transaction;
2. end those past ``expires_at`` (EXPIRED) or ``latest_send_at`` (LATE) without a call;
3. ask consent once per category of the batch (one ``CheckEligibility`` for all its
   users) who may still receive it and on which devices, with their tokens: an opt-out
   or a dead token since Deliver is honoured, and so before every retry;
4. render and send every push of the batch through the app's providers, one call per
   provider with all its pushes;
5. record every attempt and the sends' new status in one transaction, then tell
   consent about dead tokens (an outbox: unreported ones are retried on later passes).

Passes overlap so that the providers are not left idle while the database and consent
work: while one batch is at the providers, the next one is claimed and checked with
consent (steps 1-3), and the batch before it is recorded (step 5). One batch at a time
is at the providers, so ``batch`` bounds the pushes in flight. Right before a batch
goes, expiry and the latest-send instant are checked again, and consent is asked
again when its answer is older than :data:`ELIGIBILITY_MAX_AGE_S` (a slow provider
held the batch before).

A device the provider accepted is never sent again. The window where a push can go
twice is between the provider's acceptance and step 5's commit: a process killed there
leaves its claim to expire, and the next pass sends those pushes again with the same
``apns-id``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import TypeVar

from pushwarden.common.v1 import decision_pb2, types_pb2
from pushwarden.consent.v1 import messages_pb2
from pushwarden.payload import DeliveryOptions
from pushwarden.runtime.workers import WorkerContext
from pushwarden.services.delivery.consent import ConsentUnavailable, UnknownCategory
from pushwarden.services.delivery.domain.retry import RetryRule
from pushwarden.services.delivery.domain.sends import (
    AttemptOutcome,
    AttemptRecord,
    DeviceStatus,
    Kind,
    SendStatus,
)
from pushwarden.services.delivery.handlers.common import DeliveryDeps
from pushwarden.services.delivery.providers import (
    Delivered,
    Failed,
    Outcome,
    OutgoingPush,
    Providers,
    PushProvider,
    RetryAfter,
    TokenDead,
    apns_id_for,
)
from pushwarden.services.delivery.storage.sends import (
    ClaimedSend,
    DeviceState,
    PassResult,
    PendingInvalidation,
)
from pushwarden.services.delivery.telemetry import AttemptTelemetry

logger = logging.getLogger(__name__)
_T = TypeVar("_T")

MAX_USERS_PER_CHECK = 1000
INVALIDATIONS_PER_PASS = 200
# A batch claimed and checked while the one before it was at the providers goes with
# that consent answer if it is at most this old, else consent is asked again.
ELIGIBILITY_MAX_AGE_S = 0.5
NO_CREDENTIALS = "no_credentials"


@dataclass(frozen=True, slots=True)
class DispatchSettings:
    """How much a pass takes, how long a claim lasts, and which lanes a dispatcher
    serves (None: every lane, transactional first)."""

    batch: int = 500
    poll_s: float = 0.5
    lease_s: float = 120.0
    lanes: tuple[int, ...] | None = None


@dataclass(slots=True)
class _Plan:
    """A send's pass in the making: its result once decided (early, when no push
    goes), the attempts made and the delays its retrying devices asked for."""

    claimed: ClaimedSend
    result: PassResult | None = None
    attempts: list[AttemptRecord] = field(default_factory=list)
    waits: list[float] = field(default_factory=list)


@dataclass(slots=True)
class _Push:
    """One push of the pass: the send's plan, the device, the provider that carries it."""

    plan: _Plan
    device: DeviceState
    provider: PushProvider
    outgoing: OutgoingPush


@dataclass(slots=True)
class _Batch:
    """A claimed batch checked with consent: its plans, the pushes to make, and when
    consent answered (monotonic seconds)."""

    claimed: list[ClaimedSend]
    stored_devices: dict[tuple[str, str], dict[str, DeviceState]]
    plans: list[_Plan]
    pushes: list[_Push]
    checked_at: float


def push_seed(send_id: str, device_id: str) -> str:
    """What a device's ``apns-id`` is derived from: the send and the device, so that
    every retry of that pair (in any process) carries the same id and two devices of one
    send never share one on a connection."""
    return f"{send_id}/{device_id}"


class Dispatcher:
    """The dispatch loop; :meth:`run` is the worker body."""

    def __init__(
        self,
        deps: DeliveryDeps,
        providers: Providers,
        rule: RetryRule,
        settings: DispatchSettings,
        telemetry: AttemptTelemetry | None = None,
    ) -> None:
        self._deps = deps
        self._providers = providers
        self._rule = rule
        self._settings = settings
        self._telemetry = telemetry or AttemptTelemetry()

    async def run(self, ctx: WorkerContext) -> None:
        """Dispatch until the app stops; in-flight work finishes, the rest stays stored
        (a batch claimed ahead and not sent is given back). The dispatcher of every
        lane also reports dead tokens to consent."""
        wake = asyncio.Event()
        self._deps.wakers.append(wake)
        batch: _Batch | None = None
        ahead: asyncio.Task[_Batch | None] | None = None
        recording: asyncio.Task[None] | None = None
        try:
            while not ctx.stopping:
                wake.clear()
                if batch is None:
                    batch = await self._prepare()
                if batch is None:
                    if recording is not None:
                        await recording
                        recording = None
                    if self._settings.lanes is None:
                        await self.report_invalidations()
                    await ctx.idle(wake, self._settings.poll_s)
                    continue
                # The next batch is claimed and checked while this one is out (of the
                # marketing lane only, for the dispatcher of every lane: a transactional
                # send does not wait behind a batch in flight; the transactional
                # dispatcher takes it at once).
                ahead = asyncio.create_task(self._prepare(self._ahead_lanes))
                carrying, batch = batch, None  # once out, it is never given back
                results = await self._carry(carrying)
                if recording is not None:
                    await recording
                recording = asyncio.create_task(self._record(results))
                batch = await ahead
                ahead = None
                if self._settings.lanes is None:
                    await self.report_invalidations()
        finally:
            self._deps.wakers.remove(wake)
            if ahead is not None:
                batch = await _settled(ahead)
            if batch is not None:
                await self._give_back(batch)
            if recording is not None:
                await _settled(recording)

    async def dispatch_once(self) -> int:
        """Claim one batch of due sends and carry it through; returns how many."""
        batch = await self._prepare()
        if batch is None:
            return 0
        await self._record(await self._carry(batch))
        return len(batch.claimed)

    @property
    def _ahead_lanes(self) -> tuple[int, ...]:
        """The lanes a batch claimed while another is out comes from."""
        if self._settings.lanes is None:
            return (Kind.MARKETING.lane,)
        return self._settings.lanes

    async def _prepare(self, lanes: tuple[int, ...] | None = None) -> _Batch | None:
        """Claim a batch (of ``lanes``, else of the dispatcher's) and check it with
        consent; None when nothing is due."""
        deps = self._deps
        now = deps.clock.now()
        lease_until = now + timedelta(seconds=self._settings.lease_s)
        async with deps.uow() as work:
            claimed = await work.sends.claim_due(
                now, self._settings.batch, lease_until, lanes or self._settings.lanes
            )
            await work.commit()
        if not claimed:
            return None
        stored = {
            (send.app_id, send.send_id): {k: replace(d) for k, d in send.devices.items()}
            for send in claimed
            if send.devices
        }
        batch = _Batch(claimed, stored, [], [], 0.0)
        await self._check(batch)
        return batch

    async def _check(self, batch: _Batch) -> None:
        """Steps 2 and 3: expiry, then consent, from the devices as claimed."""
        now = self._deps.clock.now()
        for send in batch.claimed:
            stored = batch.stored_devices.get((send.app_id, send.send_id), {})
            send.devices = {k: replace(d) for k, d in stored.items()}
        batch.plans = [_Plan(send) for send in batch.claimed]
        live = [plan for plan in batch.plans if not self._ended(plan, now)]
        batch.checked_at = time.monotonic()
        batch.pushes = await self._resolve(live, now)

    def _ended(self, plan: _Plan, now: datetime) -> bool:
        """Close a send past its expiry or latest-send instant (no call); True if so."""
        send = plan.claimed
        if send.expires_at is not None and now >= send.expires_at:
            plan.result = _closed(send, SendStatus.EXPIRED, now)
        elif send.latest_send_at is not None and now >= send.latest_send_at:
            plan.result = _closed(send, SendStatus.LATE, now)
        else:
            return False
        return True

    async def _carry(self, batch: _Batch) -> list[PassResult]:
        """Step 4 (consent asked again first if its answer has aged): the results."""
        if time.monotonic() - batch.checked_at > ELIGIBILITY_MAX_AGE_S:
            await self._check(batch)
        now = self._deps.clock.now()
        ended = {id(plan) for plan in batch.plans if plan.result is None and self._ended(plan, now)}
        pushes = [push for push in batch.pushes if id(push.plan) not in ended]
        outcomes = await self._send(pushes)
        finished = self._deps.clock.now()
        for push, (outcome, started, stopped) in zip(pushes, outcomes, strict=True):
            self._apply(push, outcome, started, stopped)
        for plan in batch.plans:
            if plan.result is None:
                plan.result = self._conclude(plan, finished)
            plan.result.attempts = plan.attempts
        return [plan.result for plan in batch.plans if plan.result is not None]

    async def _record(self, results: list[PassResult]) -> None:
        """Step 5: the attempts and the sends' new status, in one transaction."""
        async with self._deps.uow() as work:
            await work.sends.record(results)
            await work.commit()

    async def _give_back(self, batch: _Batch) -> None:
        """A batch claimed and never sent: due again now, for this or another process."""
        keys = [(send.app_id, send.send_id) for send in batch.claimed]
        try:
            async with self._deps.uow() as work:
                await work.sends.release(keys, self._deps.clock.now())
                await work.commit()
        except Exception:  # its lease runs out instead
            logger.warning("claimed batch not given back", exc_info=True)

    async def report_invalidations(self) -> int:
        """Tell consent about dead tokens not reported yet; returns how many were."""
        deps = self._deps
        async with deps.uow(read_only=True) as work:
            pending = await work.sends.pending_invalidations(INVALIDATIONS_PER_PASS)
        if not pending:
            return 0

        now = deps.clock.now()

        async def report(item: PendingInvalidation) -> bool:
            # The provider answered before now: a stamp from a clock running ahead of
            # ours (which consent shares) would be refused as from the future.
            at = item.invalidated_at
            if at is not None and at > now:
                at = now
            try:
                await deps.consent.invalidate(
                    app_id=item.app_id,
                    device_id=item.device_id,
                    provider=item.provider,
                    reason=item.reason,
                    at=at,
                    send_id=item.send_id,
                )
            except ConsentUnavailable as exc:
                logger.warning("dead token not reported yet", extra={"reason": str(exc)})
                return False
            return True

        done = await asyncio.gather(*(report(item) for item in pending))
        reported = [item for item, ok in zip(pending, done, strict=True) if ok]
        async with deps.uow() as work:
            await work.sends.mark_reported(reported)
            await work.commit()
        return len(reported)

    async def _resolve(self, live: list[_Plan], now: datetime) -> list[_Push]:
        """One CheckEligibility per (app, category, topic) of the batch; the pushes of
        every send consent still allows, to the devices it names."""
        groups: dict[tuple[str, str, str], list[_Plan]] = defaultdict(list)
        for plan in live:
            send = plan.claimed
            groups[(send.app_id, send.category_id, send.topic_id)].append(plan)
        answers = await asyncio.gather(
            *(self._eligibility(key, group) for key, group in groups.items()),
            return_exceptions=True,
        )
        pushes: list[_Push] = []
        retry_at = now + timedelta(seconds=self._rule.base_s)
        for group, answer in zip(groups.values(), answers, strict=True):
            if isinstance(answer, UnknownCategory):
                for plan in group:
                    plan.result = _closed(
                        plan.claimed, SendStatus.FAILED, now, reason="unknown_category"
                    )
                continue
            if isinstance(answer, BaseException):
                if not isinstance(answer, ConsentUnavailable):
                    logger.error("eligibility check failed", exc_info=answer)
                # Consent could not say: nothing is sent, the sends come back later.
                for plan in group:
                    plan.result = PassResult(
                        plan.claimed, SendStatus.IN_PROGRESS, retry_at, counted_pass=False
                    )
                continue
            for plan in group:
                eligibility = answer.get(plan.claimed.user_id)
                if eligibility is None:  # consent left the user out: ask again later
                    plan.result = PassResult(
                        plan.claimed, SendStatus.IN_PROGRESS, retry_at, counted_pass=False
                    )
                    continue
                pushes.extend(self._plan_pushes(plan, eligibility, now))
        return pushes

    async def _eligibility(
        self, key: tuple[str, str, str], group: list[_Plan]
    ) -> dict[str, messages_pb2.UserEligibility]:
        app_id, category_id, topic_id = key
        users = list(dict.fromkeys(plan.claimed.user_id for plan in group))
        answers: dict[str, messages_pb2.UserEligibility] = {}
        for start in range(0, len(users), MAX_USERS_PER_CHECK):
            answers.update(
                await self._deps.consent.eligibility(
                    app_id, category_id, topic_id, users[start : start + MAX_USERS_PER_CHECK]
                )
            )
        return answers

    def _plan_pushes(
        self, plan: _Plan, eligibility: messages_pb2.UserEligibility, now: datetime
    ) -> list[_Push]:
        send = plan.claimed
        if not eligibility.allowed:
            reason = eligibility.reason or decision_pb2.REASON_CODE_NO_DEVICE
            plan.result = _closed(send, SendStatus.SUPPRESSED, now, suppressed=reason)
            return []
        usable = {device.device_id: device for device in eligibility.devices}
        if not send.devices:  # first pass: the send goes to the devices usable now
            for device in eligibility.devices:
                send.devices[device.device_id] = DeviceState(
                    device_id=device.device_id,
                    provider=device.provider,
                    platform=device.platform,
                    status=DeviceStatus.RETRYING,
                    apns_id=apns_id_for(push_seed(send.send_id, device.device_id))
                    if device.provider == types_pb2.PROVIDER_APNS
                    else "",
                    stored=False,
                )
        options = DeliveryOptions.for_send(send.send, now=now)
        pushes: list[_Push] = []
        for state in send.devices.values():
            if state.status is not DeviceStatus.RETRYING:
                continue
            target = usable.get(state.device_id)
            if target is None:  # invalidated, unregistered or denied since the last try
                state.status = DeviceStatus.SKIPPED
                continue
            provider = self._provider(send.app_id, state.provider)
            if provider is None:
                state.status, state.reason = DeviceStatus.FAILED, NO_CREDENTIALS
                continue
            outgoing = OutgoingPush(
                send_id=push_seed(send.send_id, state.device_id),
                token=target.token,
                content=send.send.content,
                options=options,
            )
            pushes.append(_Push(plan, state, provider, outgoing))
        return pushes

    def _provider(self, app_id: str, provider: int) -> PushProvider | None:
        if provider == types_pb2.PROVIDER_APNS:
            return self._providers.apns(app_id)
        if provider == types_pb2.PROVIDER_FCM:
            return self._providers.fcm(app_id)
        return None

    async def _send(self, pushes: list[_Push]) -> list[tuple[Outcome, datetime, datetime]]:
        """Every push of the pass, one ``send`` per provider, all providers at once."""
        by_provider: dict[int, list[int]] = defaultdict(list)
        providers: dict[int, PushProvider] = {}
        for index, push in enumerate(pushes):
            by_provider[id(push.provider)].append(index)
            providers[id(push.provider)] = push.provider
        results: list[tuple[Outcome, datetime, datetime] | None] = [None] * len(pushes)

        async def one_provider(key: int) -> None:
            indexes = by_provider[key]
            started = self._deps.clock.now()
            began = time.monotonic()
            try:
                outcomes = await providers[key].send([pushes[i].outgoing for i in indexes])
            except Exception as exc:  # an adapter bug must not lose the pass's records
                logger.exception("provider send raised", extra={"provider": providers[key].name})
                outcomes = [RetryAfter(reason=f"ClientError:{type(exc).__name__}") for _ in indexes]
            ended = started + timedelta(seconds=time.monotonic() - began)
            for index, outcome in zip(indexes, outcomes, strict=True):
                results[index] = (outcome, started, ended)

        await asyncio.gather(*(one_provider(key) for key in by_provider))
        return [result for result in results if result is not None]

    def _apply(self, push: _Push, outcome: Outcome, started: datetime, ended: datetime) -> None:
        plan, device = push.plan, push.device
        send = plan.claimed
        retry_number = device.tries
        device.tries += 1
        device.requests += outcome.requests
        send.requests += outcome.requests
        fcm = device.provider == types_pb2.PROVIDER_FCM
        next_at: datetime | None = None
        retry_after: float | None = None
        match outcome:
            case Delivered():
                device.status, device.reason = DeviceStatus.DELIVERED, ""
                kind, http, reason = AttemptOutcome.DELIVERED, 200, ""
            case TokenDead():
                device.status, device.reason = DeviceStatus.TOKEN_DEAD, outcome.reason
                device.invalidated_at = outcome.invalidated_at or ended
                kind, http, reason = AttemptOutcome.TOKEN_DEAD, 0, outcome.reason
            case Failed(permanent=True):
                device.status, device.reason = DeviceStatus.FAILED, outcome.reason
                kind, http, reason = AttemptOutcome.FAILED, 0, outcome.reason
            case RetryAfter() | Failed():
                kind, http, reason = AttemptOutcome.RETRYABLE, 0, outcome.reason
                retry_after = outcome.seconds if isinstance(outcome, RetryAfter) else None
                device.reason = reason
                if self._rule.exhausted(device.requests):
                    device.status = DeviceStatus.DEAD_LETTERED
                else:
                    wait = self._rule.jittered(retry_number, retry_after)
                    next_at = ended + timedelta(seconds=wait)
                    plan.waits.append(wait)
        self._telemetry.attempt(
            app_id=send.app_id,
            send_id=send.send_id,
            traceparent=send.send.traceparent,
            tracestate=send.send.tracestate,
            provider=push.provider.name,
            outcome=kind.value,
            reason=reason,
            retry_number=retry_number,
            apns_id=device.apns_id,
            requests=outcome.requests,
            latency_s=(ended - started).total_seconds(),
        )
        plan.attempts.append(
            AttemptRecord(
                device_id=device.device_id,
                retry_number=retry_number,
                provider=device.provider,
                started_at=started,
                finished_at=ended,
                outcome=kind,
                http_status=http,
                reason=reason,
                apns_id=device.apns_id,
                fcm_message_id=outcome.provider_id
                if fcm and isinstance(outcome, Delivered)
                else "",
                requests=outcome.requests,
                retry_after_s=retry_after,
                next_attempt_at=next_at,
            )
        )

    def _conclude(self, plan: _Plan, now: datetime) -> PassResult:
        """A send's status once every push of the pass has an outcome."""
        send = plan.claimed
        statuses = [device.status for device in send.devices.values()]
        if DeviceStatus.RETRYING in statuses:
            # Every retrying device waits at least as long as it asked (Retry-After).
            wait = max(plan.waits or [self._rule.base_s])
            return PassResult(send, SendStatus.IN_PROGRESS, now + timedelta(seconds=wait))
        if DeviceStatus.DELIVERED in statuses:
            return _closed(send, SendStatus.DELIVERED, now)
        if DeviceStatus.DEAD_LETTERED in statuses:
            return _closed(
                send, SendStatus.DEAD_LETTERED, now, reason=_first_reason(send, "DEAD_LETTERED")
            )
        if statuses and all(status is DeviceStatus.SKIPPED for status in statuses):
            return _closed(
                send, SendStatus.SUPPRESSED, now, suppressed=decision_pb2.REASON_CODE_NO_DEVICE
            )
        return _closed(send, SendStatus.FAILED, now, reason=_first_reason(send, ""))


async def _settled(task: asyncio.Task[_T]) -> _T | None:
    """What a claiming or recording task gave, once it is done (None if it failed: the
    sends it held come back when their lease runs out)."""
    try:
        return await task
    except Exception:
        logger.warning("dispatch step failed", exc_info=True)
        return None


def _first_reason(send: ClaimedSend, status: str) -> str:
    for device in send.devices.values():
        if device.reason and (not status or device.status.value == status):
            return device.reason
    return ""


def _closed(
    send: ClaimedSend,
    status: SendStatus,
    now: datetime,
    *,
    reason: str = "",
    suppressed: int = 0,
) -> PassResult:
    """A final result; a device a provider accepted makes the send DELIVERED whatever
    stopped the others (expiry, opt-out, exhausted retries)."""
    if any(device.status is DeviceStatus.DELIVERED for device in send.devices.values()):
        status, reason, suppressed = SendStatus.DELIVERED, "", 0
    for device in send.devices.values():
        if device.status is DeviceStatus.RETRYING:
            device.status = DeviceStatus.SKIPPED
    return PassResult(
        send,
        status,
        now,
        failure_reason=reason,
        suppressed_reason=suppressed,
        completed_at=now,
    )
