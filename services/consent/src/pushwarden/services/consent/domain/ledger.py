"""The consent ledger's hash chain, as pure functions.

Each entry names its user by the keyed pseudonym (``subject``) and keeps its personal
details in a payload beside it. The entry's hash is an HMAC-SHA256, keyed with a secret
derived from the deployment's pseudonym key, over its own fields, the previous entry of
the same subject (``previous_hash``) and the SHA-256 of its payload (``payload_digest``),
so:

- editing an entry breaks its own hash (ENTRY_HASH_MISMATCH); someone with write access
  to the database but not the key cannot compute a valid one, and even with the key a
  recomputed hash breaks the next entry's ``previous_hash`` (PREVIOUS_HASH_MISMATCH);
- removing, inserting or reordering entries breaks the ``previous_hash`` links;
- editing a payload breaks its digest (PAYLOAD_DIGEST_MISMATCH);
- deleting a payload (erasure) breaks nothing: the digest stays in the entry.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

GENESIS_HASH = "0" * 64


class EntryKind(enum.StrEnum):
    """What a ledger entry records."""

    CONSENT = "CONSENT"
    PREFERENCES = "PREFERENCES"
    PERMISSION = "PERMISSION"
    DEVICE = "DEVICE"
    ERASURE = "ERASURE"


class ChainFault(enum.StrEnum):
    """What breaks a chain (the contract's ChainFault)."""

    ENTRY_HASH_MISMATCH = "ENTRY_HASH_MISMATCH"
    PREVIOUS_HASH_MISMATCH = "PREVIOUS_HASH_MISMATCH"
    PAYLOAD_DIGEST_MISMATCH = "PAYLOAD_DIGEST_MISMATCH"


@dataclass(frozen=True, slots=True)
class EntryFields:
    """The hashed fields of one entry."""

    sequence: int
    app_id: str
    subject: str
    kind: str
    scope_key: str
    action: str
    recorded_at: datetime
    client_time: datetime | None
    previous_hash: str
    payload_digest: str


def payload_digest(body: bytes) -> str:
    """SHA-256 (hex) of a payload's bytes."""
    return hashlib.sha256(body).hexdigest()


def _instant(value: datetime | None) -> str:
    # Microseconds since the epoch: exact, and the same on both backends.
    if value is None:
        return ""
    return str(round(value.timestamp() * 1_000_000))


def entry_hash(fields: EntryFields, key: bytes) -> str:
    """The hash an entry must carry: HMAC-SHA256 with ``key`` over a versioned,
    unambiguous (length-prefixed) encoding of its fields."""
    parts = (
        "pushwarden-ledger-v1",
        str(fields.sequence),
        fields.app_id,
        fields.subject,
        fields.kind,
        fields.scope_key,
        fields.action,
        _instant(fields.recorded_at),
        _instant(fields.client_time),
        fields.previous_hash,
        fields.payload_digest,
    )
    encoded = b"".join(len(p.encode()).to_bytes(4, "big") + p.encode() for p in parts)
    return hmac.new(key, encoded, hashlib.sha256).hexdigest()


@dataclass(frozen=True, slots=True)
class StoredEntry:
    """An entry as read back, with its payload when it still exists."""

    fields: EntryFields
    entry_hash: str
    payload: bytes | None


@dataclass(frozen=True, slots=True)
class Verification:
    """The outcome of walking a subject's chain."""

    verified: bool
    entries_checked: int
    broken_at_sequence: int = 0
    fault: ChainFault | None = None


def verify_chain(entries: Iterable[StoredEntry], key: bytes) -> Verification:
    """Walk a subject's entries in sequence order and report the first fault."""
    previous = GENESIS_HASH
    checked = 0
    for entry in entries:
        checked += 1
        fields = entry.fields
        if fields.previous_hash != previous:
            return Verification(False, checked, fields.sequence, ChainFault.PREVIOUS_HASH_MISMATCH)
        if not hmac.compare_digest(entry_hash(fields, key), entry.entry_hash):
            return Verification(False, checked, fields.sequence, ChainFault.ENTRY_HASH_MISMATCH)
        if entry.payload is not None and payload_digest(entry.payload) != fields.payload_digest:
            return Verification(False, checked, fields.sequence, ChainFault.PAYLOAD_DIGEST_MISMATCH)
        previous = entry.entry_hash
    return Verification(True, checked)
