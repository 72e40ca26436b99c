"""Random sequences of consent, preference, device and erasure changes over a few users,
through real gRPC on SQLite and PostgreSQL, checked after every step against two folds
written here from the contract, not from the service's code:

- a model that folds the requests the test sent, and
- a fold of the ledger read back through GetLedger (consent entries: latest per scope in
  ledger order; preference entries: the zone override, quiet hours and the topics whose
  state the entry changed; device and permission entries: each device's status and
  permission; an ERASURE entry starts afresh, and every entry before it has lost its
  payload).

Both must give the same facts, and GetConsentState, CheckErasure and CheckEligibility
must answer what those facts imply; the chain always verifies.

Tokens stay with their user here (no token moves): a user's ledger records the devices
that come to the user, not the ones that leave, so a per-user fold of the ledger cannot
follow a token to another user.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import grpc
import pytest
from google.protobuf import field_mask_pb2
from google.protobuf.message import Message
from google.rpc import error_details_pb2  # type: ignore[import-untyped]
from grpc_status import rpc_status  # type: ignore[import-untyped]
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from pushwarden.common.v1 import decision_pb2, policy_pb2, types_pb2
from pushwarden.consent.v1 import consent_pb2_grpc, messages_pb2, resources_pb2
from pushwarden.runtime.servicetest import local_test_config, serving
from pushwarden.services.consent.bootstrap import bootstrap
from pushwarden.services.consent.config import ConsentConfig

if TYPE_CHECKING:  # the async stub type exists in the typed stubs only
    from pushwarden.consent.v1.consent_pb2_grpc import ConsentServiceAsyncStub as AsyncStub

KEY = "m" * 64
USERS = ("ann", "bob")
TOPICS = ("news", "sports")
TOKENS_PER_USER = 2
TOKEN_ZONES = ("Europe/Berlin", "America/Chicago")
OVERRIDE_ZONES = ("", "Asia/Tokyo", "Europe/Paris")

R = resources_pb2
D = decision_pb2
T = types_pb2
IN, OUT = R.CONSENT_ACTION_OPT_IN, R.CONSENT_ACTION_OPT_OUT
PUSH, EMAIL = T.CHANNEL_PUSH, T.CHANNEL_EMAIL
ALL_MARKETING, CHANNEL = R.CONSENT_SCOPE_KIND_ALL_MARKETING, R.CONSENT_SCOPE_KIND_CHANNEL
CATEGORY, TOPIC = R.CONSENT_SCOPE_KIND_CATEGORY, R.CONSENT_SCOPE_KIND_TOPIC
ACTIVE, INVALID, UNREGISTERED = (
    R.DEVICE_STATUS_ACTIVE,
    R.DEVICE_STATUS_INVALID,
    R.DEVICE_STATUS_UNREGISTERED,
)
GRANTED, PROVISIONAL = T.PERMISSION_STATE_GRANTED, T.PERMISSION_STATE_PROVISIONAL
PERMISSIONS = (GRANTED, PROVISIONAL, T.PERMISSION_STATE_DENIED, T.PERMISSION_STATE_NOT_DETERMINED)


@dataclass(frozen=True)
class CategorySpec:
    """A category every example defines."""

    category_id: str
    marketing: bool
    default_in: bool
    can_opt_out: bool

    def proto(self) -> R.Category:
        return R.Category(
            category_id=self.category_id,
            kind=T.CATEGORY_KIND_MARKETING if self.marketing else T.CATEGORY_KIND_TRANSACTIONAL,
            default_state=R.DEFAULT_STATE_OPTED_IN
            if self.default_in
            else R.DEFAULT_STATE_OPTED_OUT,
            user_can_opt_out=self.can_opt_out,
        )


CATEGORIES = (
    CategorySpec("promo", marketing=True, default_in=True, can_opt_out=True),
    CategorySpec("digest", marketing=True, default_in=False, can_opt_out=True),
    CategorySpec("orders", marketing=False, default_in=True, can_opt_out=False),
    CategorySpec("alerts", marketing=False, default_in=False, can_opt_out=True),
)

# A scope as (kind, channel, category_id, topic_id).
Scope = tuple[int, int, str, str]
SCOPES: tuple[Scope, ...] = (
    (ALL_MARKETING, 0, "", ""),
    (CHANNEL, PUSH, "", ""),
    (CHANNEL, EMAIL, "", ""),
    *((CATEGORY, channel, c.category_id, "") for c in CATEGORIES for channel in (0, PUSH)),
    (CATEGORY, EMAIL, "promo", ""),
    *((TOPIC, channel, "", topic) for topic in TOPICS for channel in (0, PUSH)),
    (TOPIC, EMAIL, "", "news"),
)


# Half the draws come from the scopes around erasure: the two that lift its suppression
# and their near misses (another channel, a category, a topic).
NEAR_ERASURE: tuple[Scope, ...] = (
    (ALL_MARKETING, 0, "", ""),
    (CHANNEL, PUSH, "", ""),
    (CHANNEL, EMAIL, "", ""),
    (CATEGORY, PUSH, "promo", ""),
    (TOPIC, 0, "", "news"),
)
scopes = st.one_of(st.sampled_from(NEAR_ERASURE), st.sampled_from(SCOPES))


def scope_proto(scope: Scope) -> R.ConsentScope:
    kind, channel, category_id, topic_id = scope
    return R.ConsentScope(kind=kind, channel=channel, category_id=category_id, topic_id=topic_id)  # type: ignore[arg-type]


def scope_of(proto: R.ConsentScope) -> Scope:
    return (proto.kind, proto.channel, proto.category_id, proto.topic_id)


def lifts_erasure(scope: Scope) -> bool:
    """Only an opt-in to all marketing or to the push channel ends an erasure's suppression."""
    return scope[0] == ALL_MARKETING or scope[:2] == (CHANNEL, PUSH)


# --- the facts both folds produce, and what the contract says they imply -------------


@dataclass
class Facts:
    """What consent knows of one user, as far as eligibility goes."""

    # scope -> (order, action); order is any number increasing with time
    choices: dict[Scope, tuple[int, int]] = field(default_factory=dict)
    suppressed: bool = False
    erased: bool = False
    devices: dict[str, tuple[int, int]] = field(default_factory=dict)  # id -> (status, perm)
    zone_override: str = ""
    quiet_hours: policy_pb2.QuietHours | None = None

    def action(self, *scopes: Scope) -> int | None:
        """The latest action among ``scopes`` (None: no choice)."""
        found = [self.choices[scope] for scope in scopes if scope in self.choices]
        return max(found)[1] if found else None

    def topics(self) -> dict[str, bool]:
        """Every-channel topic subscriptions (what Preferences.topics holds)."""
        return {s[3]: a == IN for s, (_, a) in self.choices.items() if s[0] == TOPIC and not s[1]}

    def write_topics(self, listed: dict[str, bool], order: int) -> None:
        """A full topic list: listed topics take their value, other known ones are
        unsubscribed; only a topic whose state changes is written."""
        before = self.topics()
        for topic, subscribed in (dict.fromkeys(before, False) | listed).items():
            if before.get(topic) != subscribed:
                self.choices[(TOPIC, 0, "", topic)] = (order, IN if subscribed else OUT)


@dataclass(frozen=True)
class Verdict:
    """What the contract says about one category (and maybe a topic) for a user."""

    allowed: bool
    reasons: tuple[int, ...]
    consent_reason: int  # CategoryState.reason: consent reasons only
    is_default: bool
    category_allowed: bool
    topic_subscribed: bool
    usable: int
    without_permission: int
    invalidated: int


def judge(facts: Facts, category: CategorySpec, topic: str) -> Verdict:
    """The gates in the policy library's order: for MARKETING suppression, the push
    channel and all marketing (OPTED_OUT), the category, the topic, then permission and
    devices; for TRANSACTIONAL only a category or topic opt-out where the category
    allows one, then permission and devices."""
    all_out = facts.action((ALL_MARKETING, 0, "", "")) == OUT
    push_out = facts.action((CHANNEL, PUSH, "", "")) == OUT
    chosen = facts.action(
        (CATEGORY, PUSH, category.category_id, ""), (CATEGORY, 0, category.category_id, "")
    )
    is_default = chosen is None
    category_allowed = category.default_in if is_default else chosen == IN
    reasons: list[int] = []
    if category.marketing and facts.suppressed:
        reasons.append(D.REASON_CODE_SUPPRESSED)
    if category.marketing and (all_out or push_out):
        reasons.append(D.REASON_CODE_OPTED_OUT)
    if not category_allowed:
        reasons.append(D.REASON_CODE_CATEGORY_OPTED_OUT)
    consent_reason = reasons[0] if reasons else 0
    subscribed = bool(topic) and facts.action((TOPIC, PUSH, "", topic), (TOPIC, 0, "", topic)) == IN
    if topic and not subscribed and (category.marketing or category.can_opt_out):
        reasons.append(D.REASON_CODE_TOPIC_OPTED_OUT)
    active = [perm for status, perm in facts.devices.values() if status == ACTIVE]
    usable = sum(1 for perm in active if perm in (GRANTED, PROVISIONAL))
    if active and not usable:
        reasons.append(D.REASON_CODE_NO_PERMISSION)
    if not usable:
        reasons.append(D.REASON_CODE_NO_DEVICE)
    return Verdict(
        allowed=not reasons,
        reasons=tuple(reasons),
        consent_reason=consent_reason,
        is_default=is_default,
        category_allowed=category_allowed,
        topic_subscribed=subscribed,
        usable=usable,
        without_permission=len(active) - usable,
        invalidated=sum(1 for status, _ in facts.devices.values() if status == INVALID),
    )


def implied(facts: Facts) -> dict[str, Any]:
    """Everything the facts imply, to compare two folds by their consequences (their
    orders are on different scales)."""
    return {
        "marketing_opted_out": facts.action((ALL_MARKETING, 0, "", "")) == OUT,
        "push_opted_out": facts.action((CHANNEL, PUSH, "", "")) == OUT,
        "suppressed": facts.suppressed,
        "erased": facts.erased,
        "choices": {scope: action for scope, (_, action) in facts.choices.items()},
        "verdicts": {
            (c.category_id, t): judge(facts, c, t) for c in CATEGORIES for t in ("", *TOPICS)
        },
        "devices": dict(facts.devices),
        "zone_override": facts.zone_override,
        "quiet_hours": facts.quiet_hours,
    }


def fold_ledger(entries: list[R.LedgerEntry]) -> Facts:
    """The user's facts from the ledger alone."""
    erasures = [e.sequence for e in entries if e.kind == R.LEDGER_ENTRY_KIND_ERASURE]
    last_erasure = erasures[-1] if erasures else 0
    for entry in entries:
        # Erasure deletes every earlier payload and nothing later.
        assert entry.payload_erased == (entry.sequence < last_erasure), entry
    facts = Facts()
    for entry in entries:
        if entry.kind == R.LEDGER_ENTRY_KIND_ERASURE:
            facts = Facts(suppressed=True, erased=True)
        elif entry.payload_erased:
            continue
        elif entry.kind == R.LEDGER_ENTRY_KIND_CONSENT:
            scope = scope_of(entry.consent.scope)
            facts.choices[scope] = (entry.sequence, entry.consent.action)
            if entry.consent.action == IN and lifts_erasure(scope):
                facts.suppressed = False
        elif entry.kind == R.LEDGER_ENTRY_KIND_PREFERENCES:
            prefs = entry.preferences
            facts.write_topics({t.topic_id: t.subscribed for t in prefs.topics}, entry.sequence)
            facts.zone_override = prefs.time_zone_override
            facts.quiet_hours = prefs.quiet_hours if prefs.HasField("quiet_hours") else None
        elif entry.kind in (R.LEDGER_ENTRY_KIND_DEVICE, R.LEDGER_ENTRY_KIND_PERMISSION):
            facts.devices[entry.device.device_id] = (entry.device.status, entry.device.permission)
        else:
            pytest.fail(f"unexpected ledger entry {entry}")
    return facts


# --- the model of the requests ---------------------------------------------------------


@dataclass
class ModelDevice:
    """A device as the requests left it."""

    device_id: str
    status: int
    permission: int
    registered: int  # order of its latest RegisterDevice
    zone: str


@dataclass
class ModelUser:
    """What the requests sent for one user imply."""

    facts: Facts = field(default_factory=Facts)
    devices: dict[str, ModelDevice] = field(default_factory=dict)  # by token
    known_ids: dict[str, str] = field(default_factory=dict)  # token -> last device id seen
    preferences_stored: bool = False
    # RecordConsent requests by key since the last erasure (the ones a retry replays).
    keys: dict[str, tuple[messages_pb2.RecordConsentRequest, R.ConsentEntry]] = field(
        default_factory=dict
    )

    def sync_devices(self) -> None:
        self.facts.devices = {d.device_id: (d.status, d.permission) for d in self.devices.values()}

    @property
    def holds_anything(self) -> bool:
        return bool(self.facts.choices or self.devices or self.preferences_stored)


@dataclass
class Failure:
    """A call's error: the code and the ErrorInfo reason."""

    code: grpc.StatusCode
    reason: str


ResponseT = TypeVar("ResponseT", bound=Message)


def call(method: Callable[[Any], ResponseT], request: Message) -> ResponseT | Failure:
    """The response, or the error's code and reason."""
    try:
        return method(request)
    except grpc.RpcError as error:
        status = rpc_status.from_call(error)
        reason = ""
        for detail in status.details if status is not None else ():
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                reason = info.reason
        return Failure(error.code(), reason)


def succeeded(result: ResponseT | Failure) -> ResponseT:
    assert not isinstance(result, Failure), result
    return result


def failed(result: Message | Failure, code: grpc.StatusCode, reason: str = "") -> None:
    assert isinstance(result, Failure), result
    assert result.code == code, result
    if reason:
        assert result.reason == reason, result


class ConsentMachine(RuleBasedStateMachine):
    """Each example runs in an app of its own on the one server of the test."""

    stub: ClassVar[consent_pb2_grpc.ConsentServiceStub]

    def __init__(self) -> None:
        super().__init__()
        self.app = f"app-{uuid.uuid4().hex[:12]}"
        self.users = {user: ModelUser() for user in USERS}
        self.order = itertools.count(1)
        self.keys = itertools.count(1)
        self.checks = itertools.count()
        for category in CATEGORIES:
            succeeded(
                call(
                    self.stub.DefineCategory,
                    messages_pb2.DefineCategoryRequest(app_id=self.app, category=category.proto()),
                )
            )

    # --- consent -------------------------------------------------------------------

    @rule(user=st.sampled_from(USERS), scope=scopes, opt_in=st.booleans())
    def record_consent(self, user: str, scope: Scope, opt_in: bool) -> None:
        model = self.users[user]
        request = messages_pb2.RecordConsentRequest(
            app_id=self.app,
            user_id=user,
            scope=scope_proto(scope),
            action=IN if opt_in else OUT,
            source=R.CONSENT_SOURCE_PREFERENCE_CENTER,
            idempotency_key=f"key-{next(self.keys)}",
        )
        if not opt_in:
            request.reason.code = "too_many"
        result = call(self.stub.RecordConsent, request)
        category = next((c for c in CATEGORIES if c.category_id == scope[2]), None)
        if not opt_in and category is not None and not category.can_opt_out:
            failed(result, grpc.StatusCode.FAILED_PRECONDITION, "OPT_OUT_NOT_ALLOWED")
            return
        reply = succeeded(result)
        assert not reply.replayed
        assert scope_of(reply.entry.scope) == scope
        assert reply.entry.action == request.action
        model.facts.choices[scope] = (next(self.order), request.action)
        if opt_in and lifts_erasure(scope):
            model.facts.suppressed = False
        model.keys[request.idempotency_key] = (request, reply.entry)

    @precondition(lambda self: any(user.facts.suppressed for user in self.users.values()))
    @rule(data=st.data(), scope=st.sampled_from(NEAR_ERASURE))
    def opt_in_while_suppressed(self, data: st.DataObject, scope: Scope) -> None:
        """Only some of these lift the suppression: try them where it is in force."""
        suppressed = [user for user in USERS if self.users[user].facts.suppressed]
        self.record_consent(data.draw(st.sampled_from(suppressed)), scope, opt_in=True)

    @rule(user=st.sampled_from(USERS), data=st.data())
    def retry_consent(self, user: str, data: st.DataObject) -> None:
        """The same key: the first answer again, nothing recorded; the same key with
        another body: ALREADY_EXISTS."""
        model = self.users[user]
        if not model.keys:
            return
        key = data.draw(st.sampled_from(sorted(model.keys)))
        request, first = model.keys[key]
        entries = len(read_ledger(self.stub, self.app, user).entries)
        reply = succeeded(call(self.stub.RecordConsent, request))
        assert reply.replayed
        assert reply.entry == first
        other = messages_pb2.RecordConsentRequest()
        other.CopyFrom(request)
        other.wording_id = "another-wording"
        result = call(self.stub.RecordConsent, other)
        failed(result, grpc.StatusCode.ALREADY_EXISTS, "IDEMPOTENCY_KEY_REUSED")
        assert len(read_ledger(self.stub, self.app, user).entries) == entries

    # --- preferences ---------------------------------------------------------------

    @rule(
        user=st.sampled_from(USERS),
        fields=st.one_of(
            st.none(),
            st.sets(st.sampled_from(("topics", "quiet_hours", "time_zone_override")), min_size=1),
        ),
        topics=st.dictionaries(st.sampled_from(TOPICS), st.booleans()),
        quiet=st.sampled_from((None, (), ((22, 7),), ((12, 14), (23, 6)))),
        zone=st.sampled_from(OVERRIDE_ZONES),
    )
    def set_preferences(
        self,
        user: str,
        fields: set[str] | None,
        topics: dict[str, bool],
        quiet: tuple[tuple[int, int], ...] | None,
        zone: str,
    ) -> None:
        model = self.users[user]
        preferences = R.Preferences(
            topics=[R.TopicSubscription(topic_id=t, subscribed=s) for t, s in topics.items()],
            time_zone_override=zone,
        )
        if quiet is not None:
            preferences.quiet_hours.SetInParent()
            for start, end in quiet:
                window = preferences.quiet_hours.windows.add()
                window.start.hours, window.end.hours = start, end
        request = messages_pb2.SetPreferencesRequest(
            app_id=self.app, user_id=user, preferences=preferences
        )
        if fields is not None:
            request.update_mask.CopyFrom(field_mask_pb2.FieldMask(paths=sorted(fields)))
        changed = (
            set(fields) if fields is not None else {"topics", "quiet_hours", "time_zone_override"}
        )
        reply = succeeded(call(self.stub.SetPreferences, request))

        before = implied(model.facts)
        order = next(self.order)
        if "topics" in changed:
            model.facts.write_topics(topics, order)
        if "time_zone_override" in changed:
            model.facts.zone_override = zone
        if "quiet_hours" in changed:
            model.facts.quiet_hours = preferences.quiet_hours if quiet is not None else None
        effective = implied(model.facts) != before
        if effective:
            assert not reply.unchanged
            model.preferences_stored = True
        assert reply.preferences.time_zone_override == model.facts.zone_override
        # Topics not listed are unsubscribed.
        subscribed = {t.topic_id for t in reply.preferences.topics if t.subscribed}
        assert subscribed == {t for t, on in model.facts.topics().items() if on}

    # --- devices -------------------------------------------------------------------

    def token(self, user: str, index: int) -> str:
        return f"{self.app}-{user}-token-{index}"

    @rule(
        user=st.sampled_from(USERS),
        index=st.integers(0, TOKENS_PER_USER - 1),
        permission=st.sampled_from(PERMISSIONS),
    )
    def register_device(self, user: str, index: int, permission: int) -> None:
        model = self.users[user]
        token = self.token(user, index)
        device = R.Device(
            user_id=user,
            platform=T.PLATFORM_ANDROID,
            provider=T.PROVIDER_FCM,
            token=token,
            time_zone=TOKEN_ZONES[index],
            permission=permission,  # type: ignore[arg-type]
            locale="de-DE",
        )
        reply = succeeded(
            call(
                self.stub.RegisterDevice,
                messages_pb2.RegisterDeviceRequest(app_id=self.app, device=device),
            )
        )
        assert reply.created == (token not in model.devices)
        assert not reply.superseded
        assert not reply.previous_user_id
        stored = model.devices.get(token)
        device_id = stored.device_id if stored else reply.device.device_id
        assert reply.device.device_id == device_id
        # Server time moves on between calls, so a registration revives an INVALID device.
        model.devices[token] = ModelDevice(
            device_id, ACTIVE, permission, next(self.order), TOKEN_ZONES[index]
        )
        model.known_ids[token] = device_id
        model.sync_devices()
        assert (reply.device.status, reply.device.permission) == (ACTIVE, permission)

    @rule(
        user=st.sampled_from(USERS),
        index=st.integers(0, TOKENS_PER_USER - 1),
        permission=st.sampled_from(PERMISSIONS),
    )
    def update_permission(self, user: str, index: int, permission: int) -> None:
        model = self.users[user]
        token = self.token(user, index)
        device_id = model.known_ids.get(token, f"never-{token}")
        result = call(
            self.stub.UpdateDevice,
            messages_pb2.UpdateDeviceRequest(
                app_id=self.app,
                device_id=device_id,
                device=R.Device(permission=permission),  # type: ignore[arg-type]
                update_mask=field_mask_pb2.FieldMask(paths=["permission"]),
            ),
        )
        stored = model.devices.get(token)
        if stored is None:
            failed(result, grpc.StatusCode.NOT_FOUND)
            return
        reply = succeeded(result)
        stored.permission = permission
        model.sync_devices()
        assert (reply.device.status, reply.device.permission) == (stored.status, permission)

    @rule(user=st.sampled_from(USERS), index=st.integers(0, TOKENS_PER_USER - 1))
    def invalidate_device(self, user: str, index: int) -> None:
        model = self.users[user]
        token = self.token(user, index)
        result = call(
            self.stub.InvalidateDevice,
            messages_pb2.InvalidateDeviceRequest(
                app_id=self.app,
                token=token,
                provider=T.PROVIDER_FCM,
                reason=R.INVALIDATION_REASON_UNREGISTERED,
                provider_detail="UNREGISTERED",
            ),
        )
        stored = model.devices.get(token)
        if stored is None:
            failed(result, grpc.StatusCode.NOT_FOUND)
            return
        reply = succeeded(result)
        expected = (
            messages_pb2.INVALIDATION_OUTCOME_ALREADY_INVALID
            if stored.status == INVALID
            else messages_pb2.INVALIDATION_OUTCOME_INVALIDATED
        )
        assert reply.outcome == expected
        stored.status = INVALID
        model.sync_devices()

    @rule(user=st.sampled_from(USERS), index=st.integers(0, TOKENS_PER_USER - 1))
    def unregister_device(self, user: str, index: int) -> None:
        model = self.users[user]
        token = self.token(user, index)
        result = call(
            self.stub.UnregisterDevice,
            messages_pb2.UnregisterDeviceRequest(app_id=self.app, token=token),
        )
        stored = model.devices.get(token)
        if stored is None:
            failed(result, grpc.StatusCode.NOT_FOUND)
            return
        succeeded(result)
        stored.status = UNREGISTERED
        model.sync_devices()

    # --- erasure -------------------------------------------------------------------

    @rule(user=st.sampled_from(USERS))
    def erase_user(self, user: str) -> None:
        model = self.users[user]
        reply = succeeded(
            call(self.stub.EraseUser, messages_pb2.EraseUserRequest(app_id=self.app, user_id=user))
        )
        assert reply.already_erased == (model.facts.erased and not model.holds_anything)
        if reply.already_erased:
            return
        assert reply.devices_deleted == len(model.devices)
        self.users[user] = ModelUser(
            facts=Facts(suppressed=True, erased=True), known_ids=model.known_ids
        )

    # --- after every step ------------------------------------------------------------

    @invariant()
    def service_agrees_with_both_folds(self) -> None:
        step = next(self.checks)
        erasure = succeeded(
            call(
                self.stub.CheckErasure,
                messages_pb2.CheckErasureRequest(app_id=self.app, user_ids=USERS),
            )
        )
        for user, answer in zip(USERS, erasure.users, strict=True):
            model = self.users[user]
            assert answer.user_id == user
            assert answer.HasField("erased_at") == model.facts.erased
            assert answer.suppressed == model.facts.suppressed
            self.check_user(user, model)
        # One marketing and one transactional category each step (GetConsentState covers
        # every category's consent part), with no topic or one of the topics in turn.
        for index, category in enumerate(CATEGORIES):
            if (index + step) % 2 == 0:
                self.check_eligibility(category, ("", *TOPICS)[(step + index) % (len(TOPICS) + 1)])

    def check_user(self, user: str, model: ModelUser) -> None:
        ledger = read_ledger(self.stub, self.app, user)
        assert ledger.verification.verified, ledger.verification
        assert ledger.verification.entries_checked == len(ledger.entries)
        expected = implied(model.facts)
        assert implied(fold_ledger(list(ledger.entries))) == expected

        state = succeeded(
            call(
                self.stub.GetConsentState,
                messages_pb2.GetConsentStateRequest(app_id=self.app, user_id=user),
            )
        ).state
        assert state.marketing_opted_out == expected["marketing_opted_out"]
        assert state.suppressed == expected["suppressed"]
        assert {scope_of(e.scope): e.action for e in state.entries} == expected["choices"]
        categories = {c.category_id: c for c in state.categories}
        assert set(categories) == {c.category_id for c in CATEGORIES}
        for category in CATEGORIES:
            verdict: Verdict = expected["verdicts"][(category.category_id, "")]
            got = categories[category.category_id]
            assert (got.allowed, got.reason, got.is_default) == (
                verdict.consent_reason == 0,
                verdict.consent_reason,
                verdict.is_default,
            ), (category, got)

    def check_eligibility(self, category: CategorySpec, topic: str) -> None:
        reply = succeeded(
            call(
                self.stub.CheckEligibility,
                messages_pb2.CheckEligibilityRequest(
                    app_id=self.app,
                    category_id=category.category_id,
                    topic_id=topic,
                    user_ids=USERS,
                ),
            )
        )
        assert [answer.user_id for answer in reply.users] == list(USERS)
        for user, answer in zip(USERS, reply.users, strict=True):
            model = self.users[user]
            verdict = judge(model.facts, category, topic)
            where = (user, category.category_id, topic)
            assert answer.allowed == verdict.allowed, where
            assert tuple(answer.reasons) == verdict.reasons, where
            assert answer.reason == (verdict.reasons[0] if verdict.reasons else 0), where
            expected_topic = (
                messages_pb2.TOPIC_STATE_UNSPECIFIED
                if not topic
                else messages_pb2.TOPIC_STATE_SUBSCRIBED
                if verdict.topic_subscribed
                else messages_pb2.TOPIC_STATE_NOT_SUBSCRIBED
            )
            assert answer.topic_state == expected_topic, where
            usable = sorted(
                (
                    d
                    for d in model.devices.values()
                    if d.status == ACTIVE and d.permission in (GRANTED, PROVISIONAL)
                ),
                key=lambda d: -d.registered,
            )
            assert [d.device_id for d in answer.devices] == [d.device_id for d in usable], where
            counts = answer.device_counts
            assert (counts.usable, counts.without_permission, counts.invalidated) == (
                verdict.usable,
                verdict.without_permission,
                verdict.invalidated,
            ), where
            detail = answer.consent
            # Erased "right now": erased, and nothing of the user id written since (a
            # user id that registered again is a user again, still suppressed).
            assert (detail.suppressed, detail.erased) == (
                model.facts.suppressed,
                model.facts.erased and not model.holds_anything,
            ), where
            assert detail.marketing_opted_out == implied(model.facts)["marketing_opted_out"]
            assert detail.channel_opted_out == implied(model.facts)["push_opted_out"]
            assert (detail.category_allowed, detail.category_default) == (
                verdict.category_allowed,
                verdict.is_default,
            ), where
            assert detail.topic_subscribed == verdict.topic_subscribed, where
            assert answer.known_user == (model.facts.erased or model.holds_anything), where
            # The zone: the override, else the newest active device's.
            active = sorted(
                (d for d in model.devices.values() if d.status == ACTIVE),
                key=lambda d: -d.registered,
            )
            zone = model.facts.zone_override or (active[0].zone if active else "")
            assert answer.time_zone == zone, where
            if model.facts.quiet_hours is None:
                assert not answer.HasField("quiet_hours"), where
            else:
                assert answer.quiet_hours == model.facts.quiet_hours, where


def read_ledger(
    stub: consent_pb2_grpc.ConsentServiceStub, app: str, user: str
) -> messages_pb2.GetLedgerResponse:
    """Every page of a user's ledger (small pages, so paging is exercised)."""
    whole = messages_pb2.GetLedgerResponse()
    token = ""
    while True:
        page = stub.GetLedger(
            messages_pb2.GetLedgerRequest(app_id=app, user_id=user, page_size=16, page_token=token)
        )
        whole.entries.extend(page.entries)
        whole.verification.CopyFrom(page.verification)
        token = page.next_page_token
        if not token:
            return whole


@contextmanager
def served_in_a_thread(database_url: str) -> Iterator[grpc.Channel]:
    """The service on its own event loop in a thread, and a blocking channel to it
    (hypothesis' state machines are synchronous)."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    app = bootstrap(local_test_config(ConsentConfig, database_url, PSEUDONYM_KEY=KEY))
    runtime = asyncio.run_coroutine_threadsafe(app.start(), loop).result(60)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{runtime.port}") as channel:
            yield channel
    finally:
        asyncio.run_coroutine_threadsafe(app.stop(runtime, grace_s=1.0), loop).result(60)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def test_random_sequences_agree_with_a_model_and_a_fold_of_the_ledger(
    any_database_url: str,
) -> None:
    with served_in_a_thread(any_database_url) as channel:
        ConsentMachine.stub = consent_pb2_grpc.ConsentServiceStub(channel)
        run_state_machine_as_test(
            ConsentMachine,
            settings=settings(
                max_examples=10,
                stateful_step_count=20,
                deadline=None,
                suppress_health_check=[HealthCheck.too_slow],
            ),
        )


# --- deviations from the contract found by the sequences above, pinned one by one -------


@pytest.fixture
async def stub(any_database_url: str) -> AsyncIterator[AsyncStub]:
    config = local_test_config(ConsentConfig, any_database_url, PSEUDONYM_KEY=KEY)
    async with serving(bootstrap(config)) as channel:
        yield consent_pb2_grpc.ConsentServiceStub(channel)


async def ledger_length(stub: AsyncStub, user: str) -> int:
    reply = await stub.GetLedger(
        messages_pb2.GetLedgerRequest(app_id="shop", user_id=user, page_size=1000)
    )
    assert reply.verification.verified
    return len(reply.entries)


async def test_the_same_topics_again_write_no_ledger_entry(stub: AsyncStub) -> None:
    topics_only = field_mask_pb2.FieldMask(paths=["topics"])
    subscribed = R.Preferences(topics=[R.TopicSubscription(topic_id="news", subscribed=True)])
    for preferences in (subscribed, R.Preferences()):
        await stub.SetPreferences(
            messages_pb2.SetPreferencesRequest(
                app_id="shop", user_id="ann", preferences=preferences, update_mask=topics_only
            )
        )
    before = await ledger_length(stub, "ann")
    again = await stub.SetPreferences(
        messages_pb2.SetPreferencesRequest(
            app_id="shop", user_id="ann", preferences=R.Preferences(), update_mask=topics_only
        )
    )
    assert again.unchanged
    assert await ledger_length(stub, "ann") == before


async def test_a_retry_of_a_choice_made_before_the_erasure_lifts_nothing(stub: AsyncStub) -> None:
    opt_in = messages_pb2.RecordConsentRequest(
        app_id="shop",
        user_id="ann",
        scope=R.ConsentScope(kind=ALL_MARKETING),
        action=IN,
        source=R.CONSENT_SOURCE_PREFERENCE_CENTER,
        idempotency_key="opt-in-1",
    )
    first = await stub.RecordConsent(opt_in)  # its answer is lost on the way back
    await stub.EraseUser(messages_pb2.EraseUserRequest(app_id="shop", user_id="ann"))
    entries = await ledger_length(stub, "ann")

    retry = await stub.RecordConsent(opt_in)

    state = await stub.GetConsentState(
        messages_pb2.GetConsentStateRequest(app_id="shop", user_id="ann")
    )
    assert state.state.suppressed
    assert await ledger_length(stub, "ann") == entries
    assert retry.replayed
    assert retry.entry == first.entry
