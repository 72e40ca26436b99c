"""The ledger repository: appends entries (with their payloads) to a subject's chain and
reads chains back. Appends must run under the unit of work's append lock."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, func, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from pushwarden.services.consent.domain.ledger import (
    GENESIS_HASH,
    EntryFields,
    StoredEntry,
    entry_hash,
    payload_digest,
)
from pushwarden.services.consent.models import LedgerEntryRow, LedgerPayloadRow


@dataclass(frozen=True, slots=True)
class NewEntry:
    """What a handler appends: the entry's facts and its personal payload."""

    app_id: str
    subject: str
    kind: str
    recorded_at: datetime
    payload: bytes
    client_time: datetime | None = None
    scope_key: str = ""
    action: str = ""


def _fields(row: LedgerEntryRow) -> EntryFields:
    return EntryFields(
        sequence=row.sequence,
        app_id=row.app_id,
        subject=row.subject,
        kind=row.kind,
        scope_key=row.scope_key,
        action=row.action,
        recorded_at=row.recorded_at,
        client_time=row.client_time,
        previous_hash=row.previous_hash,
        payload_digest=row.payload_digest,
    )


class LedgerRepository:
    """Ledger entries and payloads; never updates or deletes an entry.

    One repository lives for one transaction, whose append lock stops every other
    appender until it ends: the ledger's last sequence and the chain heads it read or
    wrote are remembered here, so a second append in the same transaction (a new
    device's registration and its permission, say) reads nothing again."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session
        self._last: int | None = None
        self._heads: dict[str, str] = {}

    async def append(self, entry: NewEntry, key: bytes) -> StoredEntry:
        """Append ``entry`` to its subject's chain; returns it as stored. The caller
        holds the append lock, so the next sequence and the chain head cannot race;
        ``key`` signs the entry's hash."""
        if self._last is None:
            self._last = int(
                await self._session.scalar(select(func.max(LedgerEntryRow.sequence))) or 0
            )
        head = self._heads.get(entry.subject)
        if head is None:
            head = (
                await self._session.scalar(
                    select(LedgerEntryRow.entry_hash)
                    .where(LedgerEntryRow.subject == entry.subject)
                    .order_by(LedgerEntryRow.sequence.desc())
                    .limit(1)
                )
                or GENESIS_HASH
            )
        fields = EntryFields(
            sequence=self._last + 1,
            app_id=entry.app_id,
            subject=entry.subject,
            kind=entry.kind,
            scope_key=entry.scope_key,
            action=entry.action,
            recorded_at=entry.recorded_at,
            client_time=entry.client_time,
            previous_hash=head,
            payload_digest=payload_digest(entry.payload),
        )
        digest = entry_hash(fields, key)
        await self._session.execute(
            insert(LedgerEntryRow).values(
                sequence=fields.sequence,
                app_id=fields.app_id,
                subject=fields.subject,
                kind=fields.kind,
                scope_key=fields.scope_key,
                action=fields.action,
                recorded_at=fields.recorded_at,
                client_time=fields.client_time,
                previous_hash=fields.previous_hash,
                entry_hash=digest,
                payload_digest=fields.payload_digest,
            )
        )
        await self._session.execute(
            insert(LedgerPayloadRow).values(sequence=fields.sequence, body=entry.payload)
        )
        self._last = fields.sequence
        self._heads[entry.subject] = digest
        return StoredEntry(fields, digest, entry.payload)

    async def head_sequence(self) -> int:
        """The latest sequence of the whole ledger (0 when empty)."""
        return int(await self._session.scalar(select(func.max(LedgerEntryRow.sequence))) or 0)

    async def entries(
        self, subject: str, *, after: int = 0, limit: int | None = None
    ) -> list[StoredEntry]:
        """A subject's entries after sequence ``after``, oldest first, with payloads."""
        query = (
            select(LedgerEntryRow, LedgerPayloadRow.body)
            .outerjoin(LedgerPayloadRow, LedgerPayloadRow.sequence == LedgerEntryRow.sequence)
            .where(LedgerEntryRow.subject == subject, LedgerEntryRow.sequence > after)
            .order_by(LedgerEntryRow.sequence)
        )
        if limit is not None:
            query = query.limit(limit)
        rows = (await self._session.execute(query)).all()
        return [StoredEntry(_fields(row), row.entry_hash, body) for row, body in rows]

    async def delete_payloads(self, subject: str) -> int:
        """Erasure: delete every payload of the subject (the entries stay)."""
        sequences = select(LedgerEntryRow.sequence).where(LedgerEntryRow.subject == subject)
        result = await self._session.execute(
            delete(LedgerPayloadRow).where(LedgerPayloadRow.sequence.in_(sequences))
        )
        return int(getattr(result, "rowcount", 0) or 0)
