"""Preference center use cases: SetPreferences (a PREFERENCES ledger entry and feed
change per effective change) and GetPreferences."""

from __future__ import annotations

from datetime import UTC, datetime

from pushwarden.consent.v1 import messages_pb2, resources_pb2
from pushwarden.services.consent.domain.changes import ChangeKind
from pushwarden.services.consent.domain.consent import (
    SOURCES,
    Action,
    Choice,
    Scope,
    ScopeKind,
)
from pushwarden.services.consent.domain.ledger import EntryKind
from pushwarden.services.consent.domain.preferences import (
    PreferenceChange,
    merged,
    stored_part,
    topics_of,
)
from pushwarden.services.consent.handlers.common import (
    ConsentDeps,
    publish,
    record,
    replay_or_refuse,
    request_digest,
)
from pushwarden.services.consent.storage.uow import ConsentUnitOfWork

RPC_SET_PREFERENCES = "SetPreferences"
DEFAULT_SOURCE = "PREFERENCE_CENTER"


def _with_topics(
    stored: resources_pb2.Preferences | None, topics: dict[str, bool]
) -> resources_pb2.Preferences:
    full = resources_pb2.Preferences()
    if stored is not None:
        full.CopyFrom(stored)
    full.ClearField("updated_at")
    full.topics.extend(
        resources_pb2.TopicSubscription(topic_id=topic, subscribed=subscribed)
        for topic, subscribed in sorted(topics.items())
    )
    return full


class PreferenceHandlers:
    """Read and change preferences."""

    def __init__(self, deps: ConsentDeps) -> None:
        self._deps = deps

    async def _current(
        self, work: ConsentUnitOfWork, app_id: str, user_id: str
    ) -> tuple[resources_pb2.Preferences, resources_pb2.Preferences | None]:
        stored = await work.preferences.get(app_id, user_id)
        topics = topics_of(await work.choices.of_user(app_id, user_id))
        return _with_topics(stored, topics), stored

    async def get(self, app_id: str, user_id: str) -> resources_pb2.Preferences:
        """A user's preferences (empty for an unknown user)."""
        async with self._deps.uow(read_only=True) as work:
            full, stored = await self._current(work, app_id, user_id)
        if stored is not None and stored.HasField("updated_at"):
            full.updated_at.CopyFrom(stored.updated_at)
        return full

    async def set(
        self, change: PreferenceChange, request: messages_pb2.SetPreferencesRequest
    ) -> messages_pb2.SetPreferencesResponse:
        """Replace the named fields; the same values again write nothing."""
        deps = self._deps
        subject = deps.pseudonyms.subject(change.app_id, change.user_id)
        key = request.idempotency_key
        digest = request_digest(request)
        async with deps.uow() as work:
            await work.lock_appends()
            if key:
                remembered = await work.idempotency.find(
                    change.app_id, RPC_SET_PREFERENCES, subject, key
                )
                if remembered is not None:
                    reply = messages_pb2.SetPreferencesResponse.FromString(
                        replay_or_refuse(remembered, digest, key)
                    )
                    reply.unchanged = True
                    return reply
            current, stored = await self._current(work, change.app_id, change.user_id)
            new = merged(current, change)
            now = deps.clock.now()
            if new == current:
                reply = messages_pb2.SetPreferencesResponse(preferences=current, unchanged=True)
                if stored is not None and stored.HasField("updated_at"):
                    reply.preferences.updated_at.CopyFrom(stored.updated_at)
            else:
                client_time = (
                    request.client_time.ToDatetime(UTC) if request.HasField("client_time") else None
                )
                entry = await record(
                    work,
                    deps,
                    app_id=change.app_id,
                    user_id=change.user_id,
                    kind=EntryKind.PREFERENCES,
                    payload=resources_pb2.LedgerEntry(preferences=new),
                    now=now,
                    client_time=client_time,
                    scope_key="PREFERENCES",
                )
                await work.preferences.put(change.app_id, change.user_id, stored_part(new), now)
                await self._write_topics(
                    work,
                    change,
                    before={t.topic_id: t.subscribed for t in current.topics},
                    after={t.topic_id: t.subscribed for t in new.topics},
                    source=SOURCES.get(request.source, DEFAULT_SOURCE),
                    sequence=entry.fields.sequence,
                    recorded_at=now,
                    client_time=client_time,
                )
                new.updated_at.FromDatetime(now)
                await publish(
                    work,
                    app_id=change.app_id,
                    user_id=change.user_id,
                    kind=ChangeKind.PREFERENCES,
                    change=resources_pb2.Change(preferences=new),
                    now=now,
                )
                reply = messages_pb2.SetPreferencesResponse(preferences=new, unchanged=False)
            if key:
                await work.idempotency.remember(
                    change.app_id,
                    RPC_SET_PREFERENCES,
                    subject,
                    key,
                    digest,
                    reply.SerializeToString(deterministic=True),
                    now,
                )
            await work.commit()
        if not reply.unchanged:
            deps.signal.notify()
        return reply

    @staticmethod
    async def _write_topics(
        work: ConsentUnitOfWork,
        change: PreferenceChange,
        *,
        before: dict[str, bool],
        after: dict[str, bool],
        source: str,
        sequence: int,
        recorded_at: datetime,
        client_time: datetime | None,
    ) -> None:
        """Topic subscriptions are TOPIC choices: write the ones that changed (a topic
        no longer listed is unsubscribed)."""
        if "topics" not in change.fields:
            return
        wanted = dict.fromkeys(before, False) | after
        for topic, subscribed in wanted.items():
            if before.get(topic) == subscribed:
                continue
            await work.choices.put(
                change.app_id,
                change.user_id,
                Choice(
                    scope=Scope(ScopeKind.TOPIC, topic_id=topic),
                    action=Action.OPT_IN if subscribed else Action.OPT_OUT,
                    source=source,
                    wording_id="",
                    legal_basis="",
                    recorded_at=recorded_at,
                    client_time=client_time,
                    ledger_sequence=sequence,
                ),
            )
