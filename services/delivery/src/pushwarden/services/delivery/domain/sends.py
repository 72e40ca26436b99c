"""Sends: what Deliver accepts, how a send's status is named, and how it reads back.

A send is one message to one user. Deliver checks every field of the batch before
anything is written (a malformed batch is INVALID_ARGUMENT and changes nothing), then
per item: an unknown category or content no provider mapping can carry is REJECTED
alone, a send id already accepted is UNCHANGED (first body wins), the rest are stored.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from pushwarden.common.v1 import types_pb2
from pushwarden.delivery.v1 import resources_pb2
from pushwarden.runtime.validation import Violations

MAX_SENDS = 1000
MAX_TRACE_CHARS = 128
MAX_TRACESTATE_CHARS = 512

_PRIORITIES = (types_pb2.PRIORITY_LOW, types_pb2.PRIORITY_NORMAL, types_pb2.PRIORITY_HIGH)


class Kind(enum.StrEnum):
    """A category's kind as consent registered it; it decides the send's lane."""

    TRANSACTIONAL = "TRANSACTIONAL"
    MARKETING = "MARKETING"

    @property
    def lane(self) -> int:
        """Dispatch order: transactional sends go ahead of marketing ones."""
        return 0 if self is Kind.TRANSACTIONAL else 1

    def to_proto(self) -> types_pb2.CategoryKind.ValueType:
        """The contract's CategoryKind."""
        if self is Kind.TRANSACTIONAL:
            return types_pb2.CATEGORY_KIND_TRANSACTIONAL
        return types_pb2.CATEGORY_KIND_MARKETING

    @classmethod
    def from_proto(cls, value: int) -> Kind | None:
        """The kind of a proto value; None for one this server does not know."""
        if value == types_pb2.CATEGORY_KIND_TRANSACTIONAL:
            return cls.TRANSACTIONAL
        if value == types_pb2.CATEGORY_KIND_MARKETING:
            return cls.MARKETING
        return None


class SendStatus(enum.StrEnum):
    """A send's overall status (the contract's DeliveryStatus)."""

    PENDING = "PENDING"
    IN_PROGRESS = "IN_PROGRESS"
    DELIVERED = "DELIVERED"
    FAILED = "FAILED"
    EXPIRED = "EXPIRED"
    SUPPRESSED = "SUPPRESSED"
    DEAD_LETTERED = "DEAD_LETTERED"
    LATE = "LATE"

    @property
    def final(self) -> bool:
        """Whether nothing more will happen to the send."""
        return self not in (SendStatus.PENDING, SendStatus.IN_PROGRESS)

    def to_proto(self) -> resources_pb2.DeliveryStatus.ValueType:
        """The contract's DeliveryStatus."""
        return resources_pb2.DeliveryStatus.Value(f"DELIVERY_STATUS_{self.value}")


ACTIVE_STATUSES = (SendStatus.PENDING.value, SendStatus.IN_PROGRESS.value)


class DeviceStatus(enum.StrEnum):
    """Where the fan-out of a send to one device stands."""

    RETRYING = "RETRYING"
    DELIVERED = "DELIVERED"
    FAILED = "FAILED"
    TOKEN_DEAD = "TOKEN_DEAD"
    DEAD_LETTERED = "DEAD_LETTERED"
    # No longer usable at the re-check before a retry (invalidated, unregistered,
    # permission withdrawn): not tried again.
    SKIPPED = "SKIPPED"

    def to_proto(self) -> resources_pb2.DeliveryStatus.ValueType:
        """This device's status in the contract's terms."""
        return _DEVICE_TO_PROTO[self]


_DEVICE_TO_PROTO = {
    DeviceStatus.RETRYING: resources_pb2.DELIVERY_STATUS_IN_PROGRESS,
    DeviceStatus.DELIVERED: resources_pb2.DELIVERY_STATUS_DELIVERED,
    DeviceStatus.FAILED: resources_pb2.DELIVERY_STATUS_FAILED,
    DeviceStatus.TOKEN_DEAD: resources_pb2.DELIVERY_STATUS_FAILED,
    DeviceStatus.DEAD_LETTERED: resources_pb2.DELIVERY_STATUS_DEAD_LETTERED,
    DeviceStatus.SKIPPED: resources_pb2.DELIVERY_STATUS_SUPPRESSED,
}


class AttemptOutcome(enum.StrEnum):
    """One provider call's outcome class (the retry table's rows)."""

    DELIVERED = "DELIVERED"
    TOKEN_DEAD = "TOKEN_DEAD"
    RETRYABLE = "RETRYABLE"
    FAILED = "FAILED"

    def to_proto(self) -> resources_pb2.AttemptOutcome.ValueType:
        """The contract's AttemptOutcome."""
        return resources_pb2.AttemptOutcome.Value(f"ATTEMPT_OUTCOME_{self.value}")


def utc(stamp: Timestamp) -> datetime:
    """An aware UTC datetime of a set Timestamp."""
    return stamp.ToDatetime(UTC)


def timestamp(instant: datetime | None) -> Timestamp | None:
    """A proto Timestamp, or None."""
    if instant is None:
        return None
    stamp = Timestamp()
    stamp.FromDatetime(instant)
    return stamp


def duration(seconds: float) -> Duration:
    """A proto Duration of ``seconds``."""
    value = Duration()
    value.FromNanoseconds(round(seconds * 1e9))
    return value


@dataclass(frozen=True, slots=True)
class NewSend:
    """A checked send of a Deliver batch, as it will be stored (before its kind is known)."""

    app_id: str
    proto: resources_pb2.Send

    @property
    def send_id(self) -> str:
        """The caller's id of the send."""
        return self.proto.send_id

    @property
    def expires_at(self) -> datetime | None:
        """Nothing is sent after this instant."""
        return utc(self.proto.expires_at) if self.proto.HasField("expires_at") else None

    @property
    def latest_send_at(self) -> datetime | None:
        """No provider call starts at or after this instant."""
        return utc(self.proto.latest_send_at) if self.proto.HasField("latest_send_at") else None


def check_deliver(app_id: str, sends: Sequence[resources_pb2.Send]) -> list[NewSend]:
    """Check a Deliver batch; raises InvalidArgument naming every bad field at once."""
    problems = Violations()
    problems.caller_id("app_id", app_id)
    if not sends or len(sends) > MAX_SENDS:
        problems.add("sends", f"1 to {MAX_SENDS:,} per call, got {len(sends):,}")
        problems.reason = "BATCH_SIZE"
    seen: set[str] = set()
    for index, send in enumerate(sends):
        at = f"sends[{index}]"
        if problems.caller_id(f"{at}.send_id", send.send_id) and send.send_id in seen:
            problems.add(f"{at}.send_id", f"repeats {send.send_id!r}")
        seen.add(send.send_id)
        problems.caller_id(f"{at}.user_id", send.user_id)
        problems.caller_id(f"{at}.category_id", send.category_id)
        for name in ("topic_id", "campaign_id", "variant_id", "trigger_id"):
            problems.caller_id(f"{at}.{name}", getattr(send, name), required=False)
        if send.campaign_id and send.trigger_id:
            problems.add(f"{at}.trigger_id", "at most one of campaign_id and trigger_id")
        if send.variant_id and not send.campaign_id:
            problems.add(f"{at}.variant_id", "a variant needs its campaign_id")
        problems.enum(f"{at}.priority", send.priority, _PRIORITIES, required=False)
        if not send.HasField("content") or send.content.ByteSize() == 0:
            problems.add(f"{at}.content", "required (empty content)")
        problems.text(f"{at}.traceparent", send.traceparent, max_chars=MAX_TRACE_CHARS)
        problems.text(f"{at}.tracestate", send.tracestate, max_chars=MAX_TRACESTATE_CHARS)
        for name, present, stamp in (
            ("expires_at", send.HasField("expires_at"), send.expires_at),
            ("latest_send_at", send.HasField("latest_send_at"), send.latest_send_at),
            ("dispatched_at", send.HasField("dispatched_at"), send.dispatched_at),
        ):
            if present:
                _check_timestamp(problems, f"{at}.{name}", stamp)
    problems.raise_if_any("the sends are invalid")
    return [NewSend(app_id, send) for send in sends]


def _check_timestamp(problems: Violations, name: str, stamp: Timestamp) -> None:
    try:
        stamp.ToDatetime(UTC)
    except (ValueError, OverflowError):
        problems.add(name, "not a valid timestamp")


@dataclass(frozen=True, slots=True)
class AttemptRecord:
    """One stored provider attempt."""

    device_id: str
    retry_number: int
    provider: int
    started_at: datetime
    finished_at: datetime
    outcome: AttemptOutcome
    http_status: int
    reason: str
    apns_id: str
    fcm_message_id: str
    requests: int
    retry_after_s: float | None
    next_attempt_at: datetime | None

    def to_proto(self) -> resources_pb2.Attempt:
        """The contract's Attempt."""
        attempt = resources_pb2.Attempt(
            retry_number=self.retry_number,
            provider=types_pb2.Provider.ValueType(self.provider),
            started_at=timestamp(self.started_at),
            latency=duration(max(0.0, (self.finished_at - self.started_at).total_seconds())),
            outcome=self.outcome.to_proto(),
            http_status=self.http_status,
            reason=self.reason,
            apns_id=self.apns_id,
            fcm_message_id=self.fcm_message_id,
            next_attempt_at=timestamp(self.next_attempt_at),
        )
        if self.retry_after_s is not None:
            attempt.retry_after.CopyFrom(duration(self.retry_after_s))
        return attempt


@dataclass(frozen=True, slots=True)
class DeviceRecord:
    """The fan-out of a send to one device, with its attempts."""

    device_id: str
    provider: int
    platform: int
    status: DeviceStatus
    attempts: list[AttemptRecord] = field(default_factory=list)

    def to_proto(self) -> resources_pb2.DeviceDelivery:
        """The contract's DeviceDelivery."""
        return resources_pb2.DeviceDelivery(
            device_id=self.device_id,
            provider=types_pb2.Provider.ValueType(self.provider),
            platform=types_pb2.Platform.ValueType(self.platform),
            status=self.status.to_proto(),
            attempts=[attempt.to_proto() for attempt in self.attempts],
        )


@dataclass(frozen=True, slots=True)
class DeliveryRecord:
    """A send as delivery knows it (GetDelivery)."""

    send: resources_pb2.Send
    kind: Kind
    status: SendStatus
    failure_reason: str
    suppressed_reason: int
    devices: list[DeviceRecord]
    accepted_at: datetime
    completed_at: datetime | None

    def to_proto(self) -> resources_pb2.Delivery:
        """The contract's Delivery."""
        return resources_pb2.Delivery(
            send=self.send,
            category_kind=self.kind.to_proto(),
            status=self.status.to_proto(),
            failure_reason=self.failure_reason,
            suppressed_reason=self.suppressed_reason,  # type: ignore[arg-type]
            devices=[device.to_proto() for device in self.devices],
            accepted_at=timestamp(self.accepted_at),
            completed_at=timestamp(self.completed_at),
        )
