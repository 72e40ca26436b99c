"""GetLedger: a user's ledger entries, oldest first, with the verification of the
user's whole chain."""

from __future__ import annotations

from dataclasses import dataclass

from google.protobuf.message import DecodeError

from pushwarden.consent.v1 import messages_pb2, resources_pb2
from pushwarden.services.consent.domain.ledger import StoredEntry, Verification, verify_chain
from pushwarden.services.consent.handlers.common import ConsentDeps

_KIND = {
    "CONSENT": resources_pb2.LEDGER_ENTRY_KIND_CONSENT,
    "PREFERENCES": resources_pb2.LEDGER_ENTRY_KIND_PREFERENCES,
    "PERMISSION": resources_pb2.LEDGER_ENTRY_KIND_PERMISSION,
    "DEVICE": resources_pb2.LEDGER_ENTRY_KIND_DEVICE,
    "ERASURE": resources_pb2.LEDGER_ENTRY_KIND_ERASURE,
}
_FAULT = {
    "ENTRY_HASH_MISMATCH": messages_pb2.CHAIN_FAULT_ENTRY_HASH_MISMATCH,
    "PREVIOUS_HASH_MISMATCH": messages_pb2.CHAIN_FAULT_PREVIOUS_HASH_MISMATCH,
    "PAYLOAD_DIGEST_MISMATCH": messages_pb2.CHAIN_FAULT_PAYLOAD_DIGEST_MISMATCH,
}


def entry_proto(entry: StoredEntry) -> resources_pb2.LedgerEntry:
    """The contract's LedgerEntry: the entry's fields and, unless erased, its payload."""
    fields = entry.fields
    if entry.payload is None:
        proto = resources_pb2.LedgerEntry(payload_erased=True)
    else:
        try:
            proto = resources_pb2.LedgerEntry.FromString(entry.payload)
        except DecodeError:
            # A payload edited into garbage: the verification reports the digest
            # mismatch; the entry is still listed, without a payload.
            proto = resources_pb2.LedgerEntry()
    proto.sequence = fields.sequence
    proto.subject = fields.subject
    proto.kind = _KIND.get(fields.kind, resources_pb2.LEDGER_ENTRY_KIND_UNSPECIFIED)
    proto.recorded_at.FromDatetime(fields.recorded_at)
    if fields.client_time is not None:
        proto.client_time.FromDatetime(fields.client_time)
    proto.previous_hash = fields.previous_hash
    proto.entry_hash = entry.entry_hash
    proto.payload_digest = fields.payload_digest
    return proto


def verification_proto(verification: Verification) -> messages_pb2.LedgerVerification:
    """The contract's LedgerVerification."""
    return messages_pb2.LedgerVerification(
        verified=verification.verified,
        entries_checked=verification.entries_checked,
        broken_at_sequence=verification.broken_at_sequence,
        fault=(
            _FAULT[verification.fault.value]
            if verification.fault
            else messages_pb2.CHAIN_FAULT_UNSPECIFIED
        ),
    )


@dataclass(frozen=True, slots=True)
class LedgerPage:
    """One page of a user's ledger."""

    subject: str
    entries: list[resources_pb2.LedgerEntry]
    last_sequence: int | None
    verification: messages_pb2.LedgerVerification


class LedgerHandlers:
    """Read the ledger."""

    def __init__(self, deps: ConsentDeps) -> None:
        self._deps = deps

    async def page(self, app_id: str, user_id: str, after: int, size: int) -> LedgerPage:
        """Entries after sequence ``after`` (up to ``size``); the whole chain verified."""
        subject = self._deps.pseudonyms.subject(app_id, user_id)
        async with self._deps.uow(read_only=True) as work:
            chain = await work.ledger.entries(subject)
        verification = verify_chain(chain, self._deps.pseudonyms.ledger_key)
        remaining = [entry for entry in chain if entry.fields.sequence > after]
        page = remaining[:size]
        more = len(remaining) > size
        return LedgerPage(
            subject=subject,
            entries=[entry_proto(entry) for entry in page],
            last_sequence=page[-1].fields.sequence if more and page else None,
            verification=verification_proto(verification),
        )
