"""Consent choices and what they mean for a message: the rules, as pure functions.

A user's explicit choices are kept one per scope (the latest wins; the ledger keeps
them all). What a category's message may do follows the policy library's gates for its
kind:

- MARKETING: an erased user id stays SUPPRESSED until an OPT_IN to all marketing or to
  the channel after the erasure; the universal opt-out and a channel opt-out are
  OPTED_OUT; then the category's own choice (for the channel, or for every channel: the
  later of the two wins) or, without one, its default state (CATEGORY_OPTED_OUT when
  the default is OPTED_OUT).
- TRANSACTIONAL: only a category opt-out, when the category allows one, blocks
  (CATEGORY_OPTED_OUT). Marketing, channel and erasure state do not apply.
- A topic, when the message has one, must be subscribed (TOPIC_OPTED_OUT otherwise);
  topic subscriptions are opt-in.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pushwarden.common.v1 import decision_pb2, types_pb2
from pushwarden.consent.v1 import resources_pb2
from pushwarden.runtime.validation import Violations
from pushwarden.services.consent.domain.categories import Category, CategoryKind, DefaultState

MAX_REASON_CODE_CHARS = 64
MAX_REASON_TEXT_CHARS = 1024
MAX_ACTOR_ID_CHARS = 128


class ScopeKind(enum.StrEnum):
    """What a choice is about."""

    CHANNEL = "CHANNEL"
    ALL_MARKETING = "ALL_MARKETING"
    CATEGORY = "CATEGORY"
    TOPIC = "TOPIC"


class Action(enum.StrEnum):
    """Opt in or out."""

    OPT_IN = "OPT_IN"
    OPT_OUT = "OPT_OUT"


def _enum_names(enum_type: object, prefix: str) -> dict[int, str]:
    values: dict[int, str] = {}
    for name, number in enum_type.items():  # type: ignore[attr-defined]
        if number:
            values[number] = name.removeprefix(prefix)
    return values


CHANNELS = _enum_names(types_pb2.Channel, "CHANNEL_")
SOURCES = _enum_names(resources_pb2.ConsentSource, "CONSENT_SOURCE_")
LEGAL_BASES = _enum_names(resources_pb2.LegalBasis, "LEGAL_BASIS_")
ACTOR_TYPES = _enum_names(resources_pb2.ActorType, "ACTOR_TYPE_")
SCOPE_KINDS = _enum_names(resources_pb2.ConsentScopeKind, "CONSENT_SCOPE_KIND_")
ACTIONS = _enum_names(resources_pb2.ConsentAction, "CONSENT_ACTION_")
PUSH = "PUSH"


def enum_number(enum_type: object, prefix: str, name: str) -> Any:
    """The proto number of ``prefix + name`` ("" maps to 0), typed for any enum field."""
    return int(enum_type.Value(prefix + name)) if name else 0  # type: ignore[attr-defined]


@dataclass(frozen=True, slots=True)
class Scope:
    """What a choice is about; ``channel`` "" means every channel."""

    kind: ScopeKind
    channel: str = ""
    category_id: str = ""
    topic_id: str = ""

    @property
    def key(self) -> str:
        """The storage key of the scope: one current choice per key."""
        return f"{self.kind.value}:{self.channel}:{self.category_id}:{self.topic_id}"

    @classmethod
    def from_proto(
        cls, proto: resources_pb2.ConsentScope, problems: Violations, path: str
    ) -> Scope:
        """Check a requested scope; records violations under ``path``."""
        if not problems.enum(f"{path}.kind", proto.kind, SCOPE_KINDS):
            return cls(ScopeKind.ALL_MARKETING)
        kind = ScopeKind(SCOPE_KINDS[proto.kind])
        channel = ""
        if proto.channel and problems.enum(f"{path}.channel", proto.channel, CHANNELS):
            channel = CHANNELS[proto.channel]
        if kind is ScopeKind.CHANNEL:
            problems.required(f"{path}.channel", bool(proto.channel))
        if kind is ScopeKind.ALL_MARKETING and proto.channel:
            problems.add(f"{path}.channel", "must be unset for ALL_MARKETING (every channel)")
        if kind is ScopeKind.CATEGORY:
            problems.caller_id(f"{path}.category_id", proto.category_id)
        elif proto.category_id:
            problems.add(f"{path}.category_id", f"must be unset for {kind.value}")
        if kind is ScopeKind.TOPIC:
            problems.caller_id(f"{path}.topic_id", proto.topic_id)
        elif proto.topic_id:
            problems.add(f"{path}.topic_id", f"must be unset for {kind.value}")
        return cls(kind, channel, proto.category_id, proto.topic_id)

    def to_proto(self) -> resources_pb2.ConsentScope:
        """The contract's ConsentScope."""
        return resources_pb2.ConsentScope(
            kind=enum_number(resources_pb2.ConsentScopeKind, "CONSENT_SCOPE_KIND_", self.kind),
            channel=enum_number(types_pb2.Channel, "CHANNEL_", self.channel),
            category_id=self.category_id,
            topic_id=self.topic_id,
        )

    @property
    def lifts_erasure(self) -> bool:
        """Whether an OPT_IN of this scope lifts an erasure's suppression."""
        return self.kind is ScopeKind.ALL_MARKETING or (
            self.kind is ScopeKind.CHANNEL and self.channel == PUSH
        )


@dataclass(frozen=True, slots=True)
class Choice:
    """A user's current choice for one scope."""

    scope: Scope
    action: Action
    source: str
    wording_id: str
    legal_basis: str
    recorded_at: datetime
    client_time: datetime | None
    ledger_sequence: int

    def to_proto(self) -> resources_pb2.ConsentEntry:
        """The contract's ConsentEntry."""
        entry = resources_pb2.ConsentEntry(
            scope=self.scope.to_proto(),
            action=enum_number(resources_pb2.ConsentAction, "CONSENT_ACTION_", self.action),
            source=enum_number(resources_pb2.ConsentSource, "CONSENT_SOURCE_", self.source),
            wording_id=self.wording_id,
            legal_basis=enum_number(resources_pb2.LegalBasis, "LEGAL_BASIS_", self.legal_basis),
            ledger_sequence=self.ledger_sequence,
        )
        entry.recorded_at.FromDatetime(self.recorded_at)
        if self.client_time is not None:
            entry.client_time.FromDatetime(self.client_time)
        return entry


Choices = Mapping[str, Choice]


def _latest(choices: Choices, *keys: str) -> Choice | None:
    found = [choices[key] for key in keys if key in choices]
    return max(found, key=lambda choice: choice.ledger_sequence) if found else None


def marketing_opted_out(choices: Choices) -> bool:
    """The universal opt-out is in force."""
    choice = choices.get(Scope(ScopeKind.ALL_MARKETING).key)
    return choice is not None and choice.action is Action.OPT_OUT


def channel_opted_out(choices: Choices, channel: str) -> bool:
    """The channel's marketing subscription is opted out."""
    choice = choices.get(Scope(ScopeKind.CHANNEL, channel).key)
    return choice is not None and choice.action is Action.OPT_OUT


def category_choice(choices: Choices, category_id: str, channel: str) -> Choice | None:
    """The choice that governs a category on a channel: the later of the channel's own
    and the every-channel one."""
    return _latest(
        choices,
        Scope(ScopeKind.CATEGORY, channel, category_id).key,
        Scope(ScopeKind.CATEGORY, "", category_id).key,
    )


def topic_subscribed(choices: Choices, topic_id: str, channel: str) -> bool:
    """Whether the user is subscribed to a topic on a channel (opt-in only)."""
    choice = _latest(
        choices,
        Scope(ScopeKind.TOPIC, channel, topic_id=topic_id).key,
        Scope(ScopeKind.TOPIC, "", topic_id=topic_id).key,
    )
    return choice is not None and choice.action is Action.OPT_IN


@dataclass(frozen=True, slots=True)
class CategoryVerdict:
    """What consent says about one category's messages for a user."""

    allowed: bool
    reason: int  # a common.v1 ReasonCode, 0 when allowed
    is_default: bool
    marketing_opted_out: bool
    channel_opted_out: bool
    suppressed: bool
    recorded_at: datetime | None

    def state_proto(self, category: Category) -> resources_pb2.CategoryState:
        """The contract's CategoryState."""
        return resources_pb2.CategoryState(
            category_id=category.category_id,
            kind=category.kind.to_proto(),
            allowed=self.allowed,
            reason=self.reason,  # type: ignore[arg-type]
            is_default=self.is_default,
        )


@dataclass(frozen=True, slots=True)
class CategoryStanding:
    """The category's own state for a user: its choice, or its default."""

    allowed: bool
    is_default: bool
    recorded_at: datetime | None


def category_standing(choices: Choices, category: Category, channel: str) -> CategoryStanding:
    """Whether the category's own choice (or default) lets its messages through. An
    opt-out counts only where the category allows one (RecordConsent refuses others)."""
    choice = category_choice(choices, category.category_id, channel)
    can_opt_out = category.kind is CategoryKind.MARKETING or category.user_can_opt_out
    if choice is not None and choice.action is Action.OPT_IN:
        return CategoryStanding(True, False, choice.recorded_at)
    if choice is not None and can_opt_out:
        return CategoryStanding(False, False, choice.recorded_at)
    recorded_at = choice.recorded_at if choice is not None else None
    return CategoryStanding(category.default_state is DefaultState.OPTED_IN, True, recorded_at)


def judge_category(
    choices: Choices, category: Category, channel: str, *, suppressed: bool
) -> CategoryVerdict:
    """Apply the rules of the module docstring to one category."""
    marketing = category.kind is CategoryKind.MARKETING
    all_out = marketing_opted_out(choices)
    channel_out = channel_opted_out(choices, channel)
    standing = category_standing(choices, category, channel)
    reason: int
    if marketing and suppressed:
        reason = decision_pb2.REASON_CODE_SUPPRESSED
    elif marketing and (all_out or channel_out):
        reason = decision_pb2.REASON_CODE_OPTED_OUT
    elif not standing.allowed:
        reason = decision_pb2.REASON_CODE_CATEGORY_OPTED_OUT
    else:
        reason = 0
    return CategoryVerdict(
        allowed=reason == 0,
        reason=reason,
        is_default=standing.is_default,
        marketing_opted_out=all_out,
        channel_opted_out=channel_out,
        suppressed=suppressed,
        recorded_at=standing.recorded_at,
    )


@dataclass(frozen=True, slots=True)
class ConsentRequest:
    """A checked RecordConsent request."""

    app_id: str
    user_id: str
    scope: Scope
    action: Action
    source: str
    wording_id: str
    legal_basis: str
    actor: resources_pb2.Actor
    client_time: datetime | None
    idempotency_key: str
    reason: resources_pb2.OptOutReason | None
    device_id: str

    @classmethod
    def from_proto(cls, request: Any) -> ConsentRequest:
        """Check a RecordConsentRequest; raises InvalidArgument naming every bad field."""
        problems = Violations()
        problems.caller_id("app_id", request.app_id)
        problems.caller_id("user_id", request.user_id)
        scope = Scope.from_proto(request.scope, problems, "scope")
        problems.enum("action", request.action, ACTIONS)
        problems.enum("source", request.source, SOURCES)
        problems.caller_id("wording_id", request.wording_id, required=False)
        problems.enum("legal_basis", request.legal_basis, LEGAL_BASES, required=False)
        problems.enum("actor.type", request.actor.type, ACTOR_TYPES, required=False)
        problems.text("actor.actor_id", request.actor.actor_id, max_chars=MAX_ACTOR_ID_CHARS)
        problems.caller_id("idempotency_key", request.idempotency_key)
        problems.caller_id("device_id", request.device_id, required=False)
        reason = request.reason if request.HasField("reason") else None
        if reason is not None:
            if request.action != resources_pb2.CONSENT_ACTION_OPT_OUT:
                problems.add("reason", "only an OPT_OUT may carry a reason")
            problems.text("reason.code", reason.code, max_chars=MAX_REASON_CODE_CHARS)
            problems.text("reason.text", reason.text, max_chars=MAX_REASON_TEXT_CHARS)
        problems.raise_if_any("the consent record is invalid")
        return cls(
            app_id=request.app_id,
            user_id=request.user_id,
            scope=scope,
            action=Action(ACTIONS[request.action]),
            source=SOURCES[request.source],
            wording_id=request.wording_id,
            legal_basis=LEGAL_BASES.get(request.legal_basis, ""),
            actor=request.actor,
            client_time=(
                request.client_time.ToDatetime(UTC) if request.HasField("client_time") else None
            ),
            idempotency_key=request.idempotency_key,
            reason=reason,
            device_id=request.device_id,
        )

    def change_proto(self) -> resources_pb2.ConsentChange:
        """The ledger payload of this record (personal details included)."""
        change = resources_pb2.ConsentChange(
            scope=self.scope.to_proto(),
            action=enum_number(resources_pb2.ConsentAction, "CONSENT_ACTION_", self.action),
            source=enum_number(resources_pb2.ConsentSource, "CONSENT_SOURCE_", self.source),
            wording_id=self.wording_id,
            legal_basis=enum_number(resources_pb2.LegalBasis, "LEGAL_BASIS_", self.legal_basis),
            actor=self.actor,
        )
        if self.reason is not None:
            change.reason.CopyFrom(self.reason)
        return change
