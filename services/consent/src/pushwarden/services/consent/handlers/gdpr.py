"""GDPR: export everything consent holds about a user, erase a user, and tell followers
which user ids were erased.

Erasure deletes the user's devices (tokens included), choices, preferences, prompt
events, preference idempotency keys, ledger payloads and earlier feed changes (and
scrubs the user id from other users' changes); it keeps the
minimised ledger (entries name only the keyed pseudonym and still verify) and writes
the suppression record (the same pseudonym), appends an ERASURE ledger entry and
publishes ERASED on the feed. The ERASED change is the one place the user id remains,
for the feed's retention, so that the other services can erase too. Marketing to the
same user id stays suppressed until an OPT_IN to all marketing or to the push channel
is recorded after the erasure.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pushwarden.consent.v1 import messages_pb2, resources_pb2
from pushwarden.runtime.feed import encode_cursor
from pushwarden.services.consent.domain.changes import ChangeKind
from pushwarden.services.consent.domain.ledger import EntryKind
from pushwarden.services.consent.handlers.common import ConsentDeps, publish, record
from pushwarden.services.consent.handlers.consent import ChoiceHandlers
from pushwarden.services.consent.handlers.ledger import entry_proto
from pushwarden.services.consent.handlers.preferences import (
    RPC_SET_PREFERENCES,
    PreferenceHandlers,
)
from pushwarden.services.consent.storage.uow import ConsentUnitOfWork

# A page position past every id: that list is exhausted.
EXHAUSTED = 2**62


@dataclass(frozen=True, slots=True)
class ExportPage:
    """One page of an export, and where the next one starts (None: the last page)."""

    export: messages_pb2.UserDataExport
    next_position: tuple[int, int] | None


class GdprHandlers:
    """Export, erase, check erasure."""

    def __init__(
        self, deps: ConsentDeps, choices: ChoiceHandlers, preferences: PreferenceHandlers
    ) -> None:
        self._deps = deps
        self._choices = choices
        self._preferences = preferences

    async def export(
        self, app_id: str, user_id: str, position: tuple[int, int], size: int
    ) -> ExportPage:
        """Devices, consent, preferences and subject in full; a page of the ledger and of
        the prompt events (each resuming after its own position)."""
        deps = self._deps
        subject = deps.pseudonyms.subject(app_id, user_id)
        ledger_after, prompts_after = position
        consent = await self._choices.consent_state(app_id, user_id)
        preferences = await self._preferences.get(app_id, user_id)
        async with deps.uow(read_only=True, snapshot=True) as work:
            devices = (await work.devices.devices_of_users(app_id, [user_id])).get(user_id, [])
            entries = await work.ledger.entries(subject, after=ledger_after, limit=size + 1)
            prompts = await work.userdata.prompt_events(app_id, user_id, prompts_after, size + 1)
        export = messages_pb2.UserDataExport(
            app_id=app_id,
            user_id=user_id,
            devices=[device.to_proto() for device in devices],
            consent=consent,
            preferences=preferences,
            ledger=[entry_proto(entry) for entry in entries[:size]],
            prompts=[prompt for _, prompt in prompts[:size]],
            subject=subject,
        )
        export.exported_at.FromDatetime(deps.clock.now())
        more = len(entries) > size or len(prompts) > size
        next_position = None
        if more:
            next_position = (
                entries[size - 1].fields.sequence if len(entries) > size else EXHAUSTED,
                prompts[size - 1][0] if len(prompts) > size else EXHAUSTED,
            )
        return ExportPage(export, next_position)

    async def erase(self, app_id: str, user_id: str) -> messages_pb2.EraseUserResponse:
        """Erase the user (see the module docstring); again is a no-op answering
        ``already_erased``."""
        deps = self._deps
        subject = deps.pseudonyms.subject(app_id, user_id)
        async with deps.uow() as work:
            await work.lock_appends()
            suppression = await work.suppressions.get(app_id, subject)
            if suppression is not None and not await self._holds_anything(work, app_id, user_id):
                erasure = resources_pb2.Erasure(subject=subject)
                erasure.erased_at.FromDatetime(suppression.erased_at)
                return messages_pb2.EraseUserResponse(erasure=erasure, already_erased=True)
            now = deps.clock.now()
            devices_deleted = await work.devices.delete_of_user(app_id, user_id)
            await work.choices.delete_user(app_id, user_id)
            await work.preferences.delete_user(app_id, user_id)
            await work.userdata.delete_prompt_events(app_id, user_id)
            # RecordConsent keys stay as long as the (minimised) ledger entry does: their
            # answer names only the scope and the sequence, and a client's retry of a
            # choice made before the erasure must replay it, not record it (and lift
            # the suppression) again. SetPreferences answers hold the preferences: gone.
            await work.idempotency.forget_owner(app_id, subject, (RPC_SET_PREFERENCES,))
            await work.ledger.delete_payloads(subject)
            await work.feed.delete_user(app_id, user_id)
            for sequence, detail in await work.feed.mentioning(app_id, user_id):
                change = resources_pb2.Change.FromString(detail)
                change.previous_user_id = ""
                await work.feed.rewrite(sequence, change.SerializeToString(deterministic=True))
            await work.suppressions.erase(app_id, subject, now)
            await record(
                work,
                deps,
                app_id=app_id,
                user_id=user_id,
                kind=EntryKind.ERASURE,
                payload=resources_pb2.LedgerEntry(),
                now=now,
                scope_key="ERASURE",
            )
            erasure = resources_pb2.Erasure(subject=subject)
            erasure.erased_at.FromDatetime(now)
            sequence = await publish(
                work,
                app_id=app_id,
                user_id=user_id,
                kind=ChangeKind.ERASED,
                change=resources_pb2.Change(erasure=erasure),
                now=now,
            )
            await work.commit()
        deps.signal.notify()
        return messages_pb2.EraseUserResponse(
            erasure=erasure,
            devices_deleted=devices_deleted,
            already_erased=False,
            cursor=encode_cursor(app_id, sequence),
        )

    @staticmethod
    async def _holds_anything(work: ConsentUnitOfWork, app_id: str, user_id: str) -> bool:
        """Whether anything of the user id was written since its last erasure."""
        if (await work.devices.devices_of_users(app_id, [user_id])).get(user_id):
            return True
        if await work.choices.of_user(app_id, user_id):
            return True
        if await work.preferences.get(app_id, user_id) is not None:
            return True
        return bool(await work.userdata.prompt_events(app_id, user_id, 0, 1))

    async def check_erasure(
        self, app_id: str, user_ids: Sequence[str]
    ) -> messages_pb2.CheckErasureResponse:
        """When each user id was last erased, and whether marketing stays suppressed."""
        deps = self._deps
        subjects = {user: deps.pseudonyms.subject(app_id, user) for user in user_ids}
        async with deps.uow(read_only=True) as work:
            found = await work.suppressions.of_subjects(app_id, list(subjects.values()))
        answers = []
        for user in user_ids:
            row = found.get(subjects[user])
            answer = messages_pb2.UserErasure(user_id=user)
            if row is not None:
                answer.erased_at.FromDatetime(row.erased_at)
                answer.suppressed = row.lifted_at is None
            answers.append(answer)
        return messages_pb2.CheckErasureResponse(users=answers)
