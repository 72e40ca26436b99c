"""Permission prompts: the funnel an app walks a user through before push is allowed.

An app may show its own pre-prompt ("Can we tell you when your order ships?") and, on
acceptance, the OS prompt. Each step is recorded as one event; the funnel counts them
per context (where in the app the prompt appeared). Events are statistics only: the
device's OS permission changes through RegisterDevice / UpdateDevice, never here.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final

from google.protobuf.timestamp_pb2 import Timestamp

from pushwarden.common.v1 import types_pb2
from pushwarden.consent.v1 import messages_pb2, resources_pb2
from pushwarden.runtime.validation import MAX_SERVER_ID_CHARS, Violations, id_problem

MAX_CONTEXT_CHARS: Final = 128
# A device clock slightly ahead is normal; further ahead is a wrong clock, not an event.
MAX_FUTURE_SKEW: Final = timedelta(minutes=5)

# What google.protobuf.Timestamp allows: 0001-01-01T00:00:00Z .. 9999-12-31T23:59:59Z.
_MIN_SECONDS: Final = -62_135_596_800
_MAX_SECONDS: Final = 253_402_300_799


class PromptStep(enum.StrEnum):
    """A step of the funnel (the contract's PromptEvent), stored by name."""

    PRE_PROMPT_SHOWN = "PRE_PROMPT_SHOWN"
    PRE_PROMPT_ACCEPTED = "PRE_PROMPT_ACCEPTED"
    PRE_PROMPT_DECLINED = "PRE_PROMPT_DECLINED"
    OS_PROMPT_SHOWN = "OS_PROMPT_SHOWN"
    OS_GRANTED = "OS_GRANTED"
    OS_DENIED = "OS_DENIED"

    @classmethod
    def from_proto(cls, value: int) -> PromptStep:
        """The step of a valid (checked) proto value."""
        return _STEP_FROM_PROTO[resources_pb2.PromptEvent.ValueType(value)]


class PromptPlatform(enum.StrEnum):
    """The platform an event came from, stored by name ("" when the caller gave none)."""

    IOS = "IOS"
    ANDROID = "ANDROID"
    WEB = "WEB"

    @classmethod
    def from_proto(cls, value: int) -> PromptPlatform:
        """The platform of a valid (checked), set proto value."""
        return _PLATFORM_FROM_PROTO[types_pb2.Platform.ValueType(value)]


_STEP_FROM_PROTO = {
    resources_pb2.PROMPT_EVENT_PRE_PROMPT_SHOWN: PromptStep.PRE_PROMPT_SHOWN,
    resources_pb2.PROMPT_EVENT_PRE_PROMPT_ACCEPTED: PromptStep.PRE_PROMPT_ACCEPTED,
    resources_pb2.PROMPT_EVENT_PRE_PROMPT_DECLINED: PromptStep.PRE_PROMPT_DECLINED,
    resources_pb2.PROMPT_EVENT_OS_PROMPT_SHOWN: PromptStep.OS_PROMPT_SHOWN,
    resources_pb2.PROMPT_EVENT_OS_GRANTED: PromptStep.OS_GRANTED,
    resources_pb2.PROMPT_EVENT_OS_DENIED: PromptStep.OS_DENIED,
}
_PLATFORM_FROM_PROTO = {
    types_pb2.PLATFORM_IOS: PromptPlatform.IOS,
    types_pb2.PLATFORM_ANDROID: PromptPlatform.ANDROID,
    types_pb2.PLATFORM_WEB: PromptPlatform.WEB,
}


def _platform(problems: Violations, field: str, value: int) -> PromptPlatform | None:
    if problems.enum(field, value, _PLATFORM_FROM_PROTO, required=False) and value:
        return PromptPlatform.from_proto(value)
    return None


def _instant(problems: Violations, field: str, stamp: Timestamp) -> datetime | None:
    """A Timestamp the contract allows, as an aware UTC datetime (to the microsecond,
    what both databases keep); None with a violation otherwise."""
    if not (_MIN_SECONDS <= stamp.seconds <= _MAX_SECONDS and 0 <= stamp.nanos < 1_000_000_000):
        problems.add(field, "not a valid timestamp (0001-01-01 to 9999-12-31, nanos 0..999999999)")
        return None
    return stamp.ToDatetime(UTC)


def _context(problems: Violations, field: str, value: str) -> None:
    problems.text(field, value, max_chars=MAX_CONTEXT_CHARS)


@dataclass(frozen=True, slots=True)
class PromptEventSpec:
    """One funnel event to record (RecordPermissionPrompt's input, checked)."""

    app_id: str
    user_id: str
    device_id: str
    step: PromptStep
    context: str
    platform: PromptPlatform | None
    occurred_at: datetime
    idempotency_key: str

    @classmethod
    def from_proto(
        cls, request: messages_pb2.RecordPermissionPromptRequest, *, now: datetime
    ) -> PromptEventSpec:
        """Check a request against the service's ``now``; raises InvalidArgument naming
        every bad field. Without ``occurred_at`` the event happened ``now``."""
        problems = Violations()
        problems.caller_id("app_id", request.app_id)
        problems.caller_id("user_id", request.user_id)
        if request.device_id:
            problem = id_problem(request.device_id, MAX_SERVER_ID_CHARS)
            if problem is None and not request.device_id.isascii():
                problem = "a device id is ASCII (server-assigned)"
            if problem:
                problems.add("device_id", problem)
        problems.enum("event", request.event, _STEP_FROM_PROTO)
        _context(problems, "context", request.context)
        platform = _platform(problems, "platform", request.platform)
        occurred_at = now
        if request.HasField("occurred_at"):
            given = _instant(problems, "occurred_at", request.occurred_at)
            if given is not None and given > now + MAX_FUTURE_SKEW:
                problems.add(
                    "occurred_at",
                    f"more than {MAX_FUTURE_SKEW.seconds // 60} minutes in the future "
                    f"(server time {now.isoformat()})",
                )
            occurred_at = given or now
        problems.caller_id("idempotency_key", request.idempotency_key)
        problems.raise_if_any("the prompt event is invalid")
        return cls(
            app_id=request.app_id,
            user_id=request.user_id,
            device_id=request.device_id,
            step=PromptStep.from_proto(request.event),
            context=request.context,
            platform=platform,
            occurred_at=occurred_at,
            idempotency_key=request.idempotency_key,
        )


@dataclass(frozen=True, slots=True)
class FunnelQuery:
    """Which events a funnel counts (GetOptInFunnel's input, checked): those of the app
    in [start, end), optionally of one context and one platform."""

    app_id: str
    start: datetime | None
    end: datetime
    context: str | None
    platform: PromptPlatform | None

    @classmethod
    def from_proto(
        cls, request: messages_pb2.GetOptInFunnelRequest, *, now: datetime
    ) -> FunnelQuery:
        """Check a request; without ``end_time`` the period ends ``now``, without
        ``start_time`` it has no start. Raises InvalidArgument naming every bad field."""
        problems = Violations()
        problems.caller_id("app_id", request.app_id)
        start = end = None
        if request.HasField("start_time"):
            start = _instant(problems, "start_time", request.start_time)
        if request.HasField("end_time"):
            end = _instant(problems, "end_time", request.end_time)
            if start is not None and end is not None and end < start:
                problems.add("end_time", "must not be before start_time")
        _context(problems, "context", request.context)
        platform = _platform(problems, "platform", request.platform)
        problems.raise_if_any("the funnel request is invalid")
        return cls(
            app_id=request.app_id,
            start=start,
            end=now if end is None else end,
            context=request.context or None,
            platform=platform,
        )


def _rate(part: int, whole: int) -> float:
    return part / whole if whole else 0.0


@dataclass(frozen=True, slots=True)
class FunnelStats:
    """The counts of one context (or of all together) and the rates they give."""

    context: str
    pre_prompt_shown: int
    pre_prompt_accepted: int
    pre_prompt_declined: int
    os_prompt_shown: int
    os_granted: int
    os_denied: int
    # Users who entered the funnel: those shown the pre-prompt, or, in a context that
    # used none, those shown the OS prompt. Kept apart from the counts because the total
    # adds up each context's own entry step.
    entered: int

    @classmethod
    def of_context(
        cls,
        context: str,
        *,
        pre_prompt_shown: int,
        pre_prompt_accepted: int,
        pre_prompt_declined: int,
        os_prompt_shown: int,
        os_granted: int,
        os_denied: int,
    ) -> FunnelStats:
        """One context's stats from its counts."""
        return cls(
            context=context,
            pre_prompt_shown=pre_prompt_shown,
            pre_prompt_accepted=pre_prompt_accepted,
            pre_prompt_declined=pre_prompt_declined,
            os_prompt_shown=os_prompt_shown,
            os_granted=os_granted,
            os_denied=os_denied,
            entered=pre_prompt_shown or os_prompt_shown,
        )

    @classmethod
    def total(cls, contexts: list[FunnelStats]) -> FunnelStats:
        """Every context together (context ""); its funnel entries are the sum of each
        context's, so a context without a pre-prompt still counts its OS prompts."""
        return cls(
            context="",
            pre_prompt_shown=sum(c.pre_prompt_shown for c in contexts),
            pre_prompt_accepted=sum(c.pre_prompt_accepted for c in contexts),
            pre_prompt_declined=sum(c.pre_prompt_declined for c in contexts),
            os_prompt_shown=sum(c.os_prompt_shown for c in contexts),
            os_granted=sum(c.os_granted for c in contexts),
            os_denied=sum(c.os_denied for c in contexts),
            entered=sum(c.entered for c in contexts),
        )

    def to_proto(self) -> messages_pb2.FunnelStats:
        """The contract's FunnelStats, rates 0 where their denominator is 0."""
        return messages_pb2.FunnelStats(
            context=self.context,
            pre_prompt_shown=self.pre_prompt_shown,
            pre_prompt_accepted=self.pre_prompt_accepted,
            pre_prompt_declined=self.pre_prompt_declined,
            os_prompt_shown=self.os_prompt_shown,
            os_granted=self.os_granted,
            os_denied=self.os_denied,
            pre_prompt_acceptance_rate=_rate(self.pre_prompt_accepted, self.pre_prompt_shown),
            os_grant_rate=_rate(self.os_granted, self.os_prompt_shown),
            overall_opt_in_rate=_rate(self.os_granted, self.entered),
        )
