"""What every segmentation handler shares: its dependencies and the signal that wakes
StreamEvents followers when events commit."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass, field
from datetime import timedelta

from google.protobuf.message import Message

from pushwarden.runtime.clock import Clock
from pushwarden.runtime.errors import AlreadyExists
from pushwarden.runtime.feed import FeedSignal
from pushwarden.services.segmentation.storage.uow import SegmentationUow


@dataclass(frozen=True, slots=True)
class SegmentationDeps:
    """The dependencies of every segmentation handler, built by the composition root."""

    uow: SegmentationUow
    clock: Clock
    retention: timedelta
    signal: FeedSignal = field(default_factory=FeedSignal)


def request_digest(request: Message) -> str:
    """SHA-256 of a message's deterministic serialization: tells a retry (the same
    request) from a different one under the same key or id."""
    return hashlib.sha256(request.SerializeToString(deterministic=True)).hexdigest()


def new_id(prefix: str) -> str:
    """A server-assigned id: a prefix and 24 random hex digits (well under 64 ASCII)."""
    return f"{prefix}_{secrets.token_hex(12)}"


def id_taken(kind: str, resource_id: str) -> AlreadyExists:
    """ALREADY_EXISTS (ID_TAKEN): the id names a different definition."""
    return AlreadyExists(
        f"{kind} {resource_id!r} exists with a different definition",
        reason="ID_TAKEN",
        resource_type=kind,
        resource_name=resource_id,
    )


def key_reused(key: str) -> AlreadyExists:
    """ALREADY_EXISTS (IDEMPOTENCY_KEY_REUSED)."""
    return AlreadyExists(
        f"idempotency key {key!r} was used with a different request",
        reason="IDEMPOTENCY_KEY_REUSED",
        resource_type="idempotency_key",
        resource_name=key,
    )
