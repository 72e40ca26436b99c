"""What the scheduler does with consent's change feed (followed by the runtime's
``ConsentFeedFollower`` from a cursor kept in ``service_state``):

- ERASED: delete the user's intents and contact history from before the erasure
  (rows made after it, when the user came back, stay);
- a CONSENT opt-out of all marketing or of the PUSH channel (not from an IMPORT), when
  the app's policy enables it: store the opt-out confirmation as a transactional
  intent, whose send id derives from the change's sequence, so a re-read feed never
  sends it twice. An opt-out older than an hour when it is read (a first start reading
  the feed from its oldest change, a long outage) gets none: a late confirmation
  confuses more than it reassures.

Handlers are idempotent, as the follower redelivers a batch after a crash. When the
stored cursor has outlived the feed's retention, every user the scheduler holds is
checked with ``CheckErasure`` instead.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, timedelta

from pushwarden.common.v1 import types_pb2
from pushwarden.consent.v1 import resources_pb2 as consent_pb2
from pushwarden.scheduler.v1 import messages_pb2, resources_pb2
from pushwarden.services.scheduler.domain.intents import Lane, NewIntent
from pushwarden.services.scheduler.domain.templates import Missing, render
from pushwarden.services.scheduler.handlers.common import SchedulerDeps
from pushwarden.services.scheduler.handlers.dispatch import PolicySource

logger = logging.getLogger(__name__)

FEED_CURSOR = "consent_feed_cursor"
RESYNC_BATCH = 1000
CONFIRMATION_MAX_AGE = timedelta(hours=1)
KINDS = (consent_pb2.CHANGE_KIND_ERASED, consent_pb2.CHANGE_KIND_CONSENT)
_OPT_OUT = consent_pb2.CONSENT_ACTION_OPT_OUT
_CONFIRMED_SCOPES = (
    consent_pb2.CONSENT_SCOPE_KIND_ALL_MARKETING,
    consent_pb2.CONSENT_SCOPE_KIND_CHANNEL,
)


def confirmation_send_id(app_id: str, sequence: int) -> str:
    """The send id of the opt-out confirmation for the change at ``sequence``."""
    return f"optout_{app_id}_{sequence}"


class FeedHandlers:
    """What the consent feed follower calls."""

    def __init__(self, deps: SchedulerDeps, policies: PolicySource) -> None:
        self._deps = deps
        self._policies = policies

    async def on_changes(self, changes: Sequence[consent_pb2.Change]) -> None:
        """Erase erased users; queue opt-out confirmations."""
        erased = [c for c in changes if c.kind == consent_pb2.CHANGE_KIND_ERASED and c.user_id]
        confirmations: list[NewIntent] = []
        for change in changes:
            if (
                change.kind == consent_pb2.CHANGE_KIND_CONSENT
                and _confirms(change)
                and change.committed_at.ToDatetime(UTC)
                >= self._deps.clock.now() - CONFIRMATION_MAX_AGE
            ):
                intent = await self._confirmation(change)
                if intent is not None:
                    confirmations.append(intent)
        if not erased and not confirmations:
            return
        async with self._deps.uow() as work:
            removed = 0
            for change in erased:
                at = (
                    change.erasure.erased_at.ToDatetime(UTC)
                    if change.erasure.HasField("erased_at")
                    else change.committed_at.ToDatetime(UTC)
                )
                removed += await work.intents.erase_user(change.app_id, change.user_id, at)
            added = await work.intents.add(confirmations)
            await work.commit()
        if erased:
            logger.info("erased users", extra={"users": len(erased), "intents": removed})
        if added:
            self._deps.intents_arrived(Lane.TRANSACTIONAL)

    async def _confirmation(self, change: consent_pb2.Change) -> NewIntent | None:
        _, policy = await self._policies.rules(change.app_id)
        setting = policy.opt_out_confirmation
        if not setting.enabled or not setting.category_id:
            return None
        content = render(setting.template, locale="", attributes={}, event_properties={})
        if isinstance(content, Missing):
            logger.warning(
                "opt-out confirmation skipped: its template needs %s",
                content.placeholder,
                extra={"app_id": change.app_id},
            )
            return None
        send_id = confirmation_send_id(change.app_id, change.sequence)
        request = messages_pb2.SendTransactionalRequest(
            app_id=change.app_id,
            user_id=change.user_id,
            category_id=setting.category_id,
            content=content,
            idempotency_key=send_id,
            localized=_translations(setting.template),
        )
        now = self._deps.clock.now()
        return NewIntent(
            app_id=change.app_id,
            send_id=send_id,
            user_id=change.user_id,
            lane=Lane.TRANSACTIONAL,
            category_id=setting.category_id,
            idempotency_key=send_id,
            body=request.SerializeToString(deterministic=True),
            priority=types_pb2.PRIORITY_HIGH,
            due_at=now,
            created_at=now,
        )

    async def resync(self) -> None:
        """After a lost cursor: ask consent about every user the scheduler holds and
        erase those erased since their rows were written."""
        after = ("", "")
        while True:
            async with self._deps.uow(read_only=True) as work:
                pairs = await work.intents.users_after(after, RESYNC_BATCH)
            if not pairs:
                return
            by_app: dict[str, list[str]] = {}
            for app_id, user_id in pairs:
                by_app.setdefault(app_id, []).append(user_id)
            for app_id, users in by_app.items():
                erasures = await self._deps.consent.erasures(app_id, users)
                async with self._deps.uow() as work:
                    for user_id, erased_at in erasures.items():
                        await work.intents.erase_user(app_id, user_id, erased_at)
                    await work.commit()
            after = pairs[-1]


def _confirms(change: consent_pb2.Change) -> bool:
    """An opt-out of all marketing or of PUSH, not imported: it gets a confirmation."""
    entry = change.consent
    return (
        entry.action == _OPT_OUT
        and entry.scope.kind in _CONFIRMED_SCOPES
        and (
            entry.scope.kind == consent_pb2.CONSENT_SCOPE_KIND_ALL_MARKETING
            or entry.scope.channel == types_pb2.CHANNEL_PUSH
        )
        and change.consent_source != consent_pb2.CONSENT_SOURCE_IMPORT
    )


def _translations(template: resources_pb2.Template) -> list[resources_pb2.LocalizedContent]:
    """Each translation of a template rendered alone (placeholders take their defaults,
    as a confirmation is sent without reading the profile); one that needs a value it
    cannot have is left out, so the default content goes instead."""
    rendered: list[resources_pb2.LocalizedContent] = []
    for entry in template.localized:
        alone = resources_pb2.Template(content=entry.content, placeholders=template.placeholders)
        content = render(alone, locale="", attributes={}, event_properties={})
        if not isinstance(content, Missing):
            rendered.append(resources_pb2.LocalizedContent(locale=entry.locale, content=content))
    return rendered
