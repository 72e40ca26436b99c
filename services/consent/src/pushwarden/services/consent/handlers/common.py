"""What every consent handler shares: its dependencies, and the two ways a change
becomes durable history (a ledger entry and a change on the feed).

A write handler that changes consent-relevant state opens one unit of work, takes the
append lock first (``await work.lock_appends()``), reads what it needs, writes the new
state, then calls :func:`record` (ledger) and :func:`publish` (feed) inside the same
transaction, commits, and finally :meth:`FeedSignal.notify` wakes the followers that
wait in this process. Either everything is durable or nothing is.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime

from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from pushwarden.consent.v1 import resources_pb2
from pushwarden.runtime.clock import Clock
from pushwarden.runtime.errors import AlreadyExists
from pushwarden.runtime.feed import FeedSignal
from pushwarden.services.consent.domain.changes import ChangeKind
from pushwarden.services.consent.domain.ledger import EntryKind, StoredEntry
from pushwarden.services.consent.domain.subjects import Pseudonyms
from pushwarden.services.consent.storage.idempotency import Remembered
from pushwarden.services.consent.storage.ledger import NewEntry
from pushwarden.services.consent.storage.uow import ConsentUnitOfWork, ConsentUow


@dataclass(frozen=True, slots=True)
class ConsentDeps:
    """The dependencies of every consent handler, built by the composition root."""

    uow: ConsentUow
    clock: Clock
    pseudonyms: Pseudonyms
    signal: FeedSignal = field(default_factory=FeedSignal)


def timestamp(instant: datetime | None) -> Timestamp | None:
    """A proto Timestamp, or None."""
    if instant is None:
        return None
    stamp = Timestamp()
    stamp.FromDatetime(instant)
    return stamp


async def record(
    work: ConsentUnitOfWork,
    deps: ConsentDeps,
    *,
    app_id: str,
    user_id: str,
    kind: EntryKind,
    payload: resources_pb2.LedgerEntry,
    now: datetime,
    client_time: datetime | None = None,
    scope_key: str = "",
    action: str = "",
) -> StoredEntry:
    """Append a ledger entry for the user (under the append lock). ``payload`` is a
    LedgerEntry with only its payload oneof set; it is stored beside the entry."""
    await work.lock_appends()
    return await work.ledger.append(
        NewEntry(
            app_id=app_id,
            subject=deps.pseudonyms.subject(app_id, user_id),
            kind=kind.value,
            recorded_at=now,
            client_time=client_time,
            scope_key=scope_key,
            action=action,
            payload=payload.SerializeToString(deterministic=True),
        ),
        deps.pseudonyms.ledger_key,
    )


async def publish(
    work: ConsentUnitOfWork,
    *,
    app_id: str,
    user_id: str,
    kind: ChangeKind,
    change: resources_pb2.Change,
    now: datetime,
) -> int:
    """Append a change to the feed (under the append lock); ``change`` carries its
    detail (and consent_source / previous_user_id where they apply). Returns its
    sequence."""
    await work.lock_appends()
    change.kind = kind.to_proto()
    change.app_id = app_id
    change.user_id = user_id
    change.committed_at.FromDatetime(now)
    return await work.feed.append(
        app_id=app_id,
        user_id=user_id,
        kind=kind.value,
        committed_at=now,
        detail=change.SerializeToString(deterministic=True),
        related_user_id=change.previous_user_id,
    )


def request_digest(request: Message) -> str:
    """The digest that tells a retry (same request) from a reused key (another one):
    SHA-256 of the request's deterministic serialization."""
    return hashlib.sha256(request.SerializeToString(deterministic=True)).hexdigest()


def replay_or_refuse(remembered: Remembered, digest: str, key: str) -> bytes:
    """The first call's response when ``digest`` matches, else ALREADY_EXISTS
    (IDEMPOTENCY_KEY_REUSED)."""
    if remembered.request_digest != digest:
        raise AlreadyExists(
            f"idempotency key {key!r} was used with a different request",
            reason="IDEMPOTENCY_KEY_REUSED",
            resource_type="idempotency_key",
            resource_name=key,
        )
    return remembered.response
