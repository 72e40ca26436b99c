"""Current consent choices (one per user and scope) and erasure suppressions."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import bindparam, delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from pushwarden.services.consent.domain.consent import Action, Choice, Scope, ScopeKind
from pushwarden.services.consent.models import ConsentChoiceRow, SuppressionRow
from pushwarden.services.consent.storage.batches import in_batch


def _choice(row: ConsentChoiceRow) -> Choice:
    return Choice(
        scope=Scope(ScopeKind(row.scope_kind), row.channel, row.category_id, row.topic_id),
        action=Action(row.action),
        source=row.source,
        wording_id=row.wording_id,
        legal_basis=row.legal_basis,
        recorded_at=row.recorded_at,
        client_time=row.client_time,
        ledger_sequence=row.ledger_sequence,
    )


_C = ConsentChoiceRow
_CHOICES_OF_USERS = select(
    _C.user_id,
    _C.scope_key,
    _C.scope_kind,
    _C.channel,
    _C.category_id,
    _C.topic_id,
    _C.action,
    _C.source,
    _C.wording_id,
    _C.legal_basis,
    _C.recorded_at,
    _C.client_time,
    _C.ledger_sequence,
).where(_C.app_id == bindparam("app_id"), in_batch(_C.user_id, "user_ids"))
_ACTIONS = {action.value: action for action in Action}


class ChoiceRepository:
    """The ``consent_choices`` table."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def put(self, app_id: str, user_id: str, choice: Choice) -> None:
        """Make ``choice`` the user's current one for its scope."""
        key = (app_id, user_id, choice.scope.key)
        row = await self._session.get(ConsentChoiceRow, key)
        if row is None:
            row = ConsentChoiceRow(app_id=app_id, user_id=user_id, scope_key=choice.scope.key)
            self._session.add(row)
        row.scope_kind = choice.scope.kind.value
        row.channel = choice.scope.channel
        row.category_id = choice.scope.category_id
        row.topic_id = choice.scope.topic_id
        row.action = choice.action.value
        row.source = choice.source
        row.wording_id = choice.wording_id
        row.legal_basis = choice.legal_basis
        row.recorded_at = choice.recorded_at
        row.client_time = choice.client_time
        row.ledger_sequence = choice.ledger_sequence
        await self._session.flush()

    async def of_user(self, app_id: str, user_id: str) -> dict[str, Choice]:
        """A user's choices by scope key."""
        rows = await self._session.scalars(
            select(ConsentChoiceRow).where(
                ConsentChoiceRow.app_id == app_id, ConsentChoiceRow.user_id == user_id
            )
        )
        return {row.scope_key: _choice(row) for row in rows}

    async def of_users(self, app_id: str, user_ids: Sequence[str]) -> dict[str, dict[str, Choice]]:
        """The choices of many users by user and scope key, in one query (read as plain
        columns through the session's connection: this runs for every eligibility
        batch)."""
        found: dict[str, dict[str, Choice]] = {}
        scopes: dict[str, Scope] = {}
        connection = await self._session.connection()
        result = await connection.execute(
            _CHOICES_OF_USERS, {"app_id": app_id, "user_ids": user_ids}
        )
        for (
            user_id,
            key,
            kind,
            channel,
            category_id,
            topic_id,
            action,
            source,
            wording_id,
            legal_basis,
            recorded_at,
            client_time,
            sequence,
        ) in result.all():
            scope = scopes.get(key)
            if scope is None:
                scope = scopes[key] = Scope(ScopeKind(kind), channel, category_id, topic_id)
            found.setdefault(user_id, {})[key] = Choice(
                scope,
                _ACTIONS[action],
                source,
                wording_id,
                legal_basis,
                recorded_at,
                client_time,
                sequence,
            )
        return found

    async def delete_user(self, app_id: str, user_id: str) -> int:
        """Erasure: forget a user's choices (the ledger keeps the minimised history)."""
        result = await self._session.execute(
            delete(ConsentChoiceRow).where(
                ConsentChoiceRow.app_id == app_id, ConsentChoiceRow.user_id == user_id
            )
        )
        return int(getattr(result, "rowcount", 0) or 0)


@dataclass(frozen=True, slots=True)
class Suppression:
    """An erased user id's record: when it was erased, and when an opt-in lifted it."""

    erased_at: datetime
    lifted_at: datetime | None

    @property
    def active(self) -> bool:
        """Marketing is still suppressed."""
        return self.lifted_at is None


_SUPPRESSIONS_OF_SUBJECTS = select(
    SuppressionRow.subject, SuppressionRow.erased_at, SuppressionRow.lifted_at
).where(
    SuppressionRow.app_id == bindparam("app_id"),
    in_batch(SuppressionRow.subject, "subjects"),
)


class SuppressionRepository:
    """The ``suppressions`` table, keyed by pseudonym."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def get(self, app_id: str, subject: str) -> Suppression | None:
        """The suppression record of a pseudonym, if any."""
        row = await self._session.get(SuppressionRow, (app_id, subject))
        return None if row is None else Suppression(row.erased_at, row.lifted_at)

    async def active_among(self, app_id: str, subjects: Sequence[str]) -> set[str]:
        """The pseudonyms among ``subjects`` whose marketing is suppressed (one query)."""
        rows = await self._session.scalars(
            select(SuppressionRow.subject).where(
                SuppressionRow.app_id == app_id,
                SuppressionRow.subject.in_(list(subjects)),
                SuppressionRow.lifted_at.is_(None),
            )
        )
        return set(rows)

    async def of_subjects(self, app_id: str, subjects: Sequence[str]) -> dict[str, Suppression]:
        """The suppression records of many pseudonyms (one query)."""
        connection = await self._session.connection()
        result = await connection.execute(
            _SUPPRESSIONS_OF_SUBJECTS, {"app_id": app_id, "subjects": subjects}
        )
        return {subject: Suppression(erased, lifted) for subject, erased, lifted in result.all()}

    async def lift(self, app_id: str, subject: str, now: datetime) -> bool:
        """An opt-in that lifts suppression was recorded after the erasure."""
        row = await self._session.get(SuppressionRow, (app_id, subject))
        if row is None or row.lifted_at is not None or now < row.erased_at:
            return False
        row.lifted_at = now
        await self._session.flush()
        return True

    async def erase(self, app_id: str, subject: str, now: datetime) -> None:
        """Record (again) that the pseudonym was erased now; suppression in force."""
        row = await self._session.get(SuppressionRow, (app_id, subject))
        if row is None:
            self._session.add(
                SuppressionRow(app_id=app_id, subject=subject, erased_at=now, lifted_at=None)
            )
        else:
            row.erased_at = now
            row.lifted_at = None
        await self._session.flush()
