"""Consent use cases: record a choice (ledger entry, current state, feed), read a user's
state."""

from __future__ import annotations

from dataclasses import dataclass

from pushwarden.consent.v1 import messages_pb2, resources_pb2
from pushwarden.runtime.errors import FailedPrecondition, InvalidArgument
from pushwarden.services.consent.domain.changes import ChangeKind
from pushwarden.services.consent.domain.consent import (
    PUSH,
    Action,
    Choice,
    ConsentRequest,
    ScopeKind,
    enum_number,
    judge_category,
    marketing_opted_out,
)
from pushwarden.services.consent.domain.ledger import EntryKind
from pushwarden.services.consent.handlers.common import (
    ConsentDeps,
    publish,
    record,
    replay_or_refuse,
    request_digest,
)

RPC_RECORD_CONSENT = "RecordConsent"


@dataclass(frozen=True, slots=True)
class Recorded:
    """What RecordConsent answers."""

    response: messages_pb2.RecordConsentResponse


class ChoiceHandlers:
    """Record and read consent."""

    def __init__(self, deps: ConsentDeps) -> None:
        self._deps = deps

    async def record_consent(
        self, checked: ConsentRequest, request: messages_pb2.RecordConsentRequest
    ) -> messages_pb2.RecordConsentResponse:
        """Record one choice: a ledger entry, the user's current choice for the scope,
        an erasure lift where it applies, a CONSENT change on the feed, all in one
        transaction, committed before the answer. Idempotent by key."""
        deps = self._deps
        subject = deps.pseudonyms.subject(checked.app_id, checked.user_id)
        digest = request_digest(request)
        async with deps.uow() as work:
            await work.lock_appends()
            remembered = await work.idempotency.find(
                checked.app_id, RPC_RECORD_CONSENT, subject, checked.idempotency_key
            )
            if remembered is not None:
                reply = messages_pb2.RecordConsentResponse.FromString(
                    replay_or_refuse(remembered, digest, checked.idempotency_key)
                )
                reply.replayed = True
                return reply
            if checked.scope.kind is ScopeKind.CATEGORY:
                category = await work.categories.get(checked.app_id, checked.scope.category_id)
                if category is None:
                    raise InvalidArgument(
                        f"unknown category {checked.scope.category_id!r}",
                        [("scope.category_id", "no category of the app has this id")],
                        reason="UNKNOWN_REFERENCE",
                    )
                if checked.action is Action.OPT_OUT and not category.user_can_opt_out:
                    raise FailedPrecondition(
                        f"users may not opt out of category {category.category_id!r}",
                        [
                            (
                                "OPT_OUT_NOT_ALLOWED",
                                f"categories/{category.category_id}",
                                "the category is transactional and allows no opt-out",
                            )
                        ],
                        reason="OPT_OUT_NOT_ALLOWED",
                    )
            now = deps.clock.now()
            entry = await record(
                work,
                deps,
                app_id=checked.app_id,
                user_id=checked.user_id,
                kind=EntryKind.CONSENT,
                payload=resources_pb2.LedgerEntry(consent=checked.change_proto()),
                now=now,
                client_time=checked.client_time,
                scope_key=checked.scope.key,
                action=checked.action.value,
            )
            choice = Choice(
                scope=checked.scope,
                action=checked.action,
                source=checked.source,
                wording_id=checked.wording_id,
                legal_basis=checked.legal_basis,
                recorded_at=now,
                client_time=checked.client_time,
                ledger_sequence=entry.fields.sequence,
            )
            await work.choices.put(checked.app_id, checked.user_id, choice)
            if checked.action is Action.OPT_IN and checked.scope.lifts_erasure:
                await work.suppressions.lift(checked.app_id, subject, now)
            consent_entry = choice.to_proto()
            await publish(
                work,
                app_id=checked.app_id,
                user_id=checked.user_id,
                kind=ChangeKind.CONSENT,
                change=resources_pb2.Change(
                    consent=consent_entry,
                    consent_source=enum_number(
                        resources_pb2.ConsentSource, "CONSENT_SOURCE_", checked.source
                    ),
                ),
                now=now,
            )
            reply = messages_pb2.RecordConsentResponse(entry=consent_entry)
            await work.idempotency.remember(
                checked.app_id,
                RPC_RECORD_CONSENT,
                subject,
                checked.idempotency_key,
                digest,
                reply.SerializeToString(deterministic=True),
                now,
            )
            await work.commit()
        deps.signal.notify()
        return reply

    async def consent_state(self, app_id: str, user_id: str) -> resources_pb2.ConsentState:
        """A user's explicit choices and their effect on every category of the app, from
        one snapshot; an unknown user gets the defaults."""
        deps = self._deps
        subject = deps.pseudonyms.subject(app_id, user_id)
        async with deps.uow(read_only=True) as work:
            as_of = await work.ledger.head_sequence()
            choices = await work.choices.of_user(app_id, user_id)
            suppression = await work.suppressions.get(app_id, subject)
            categories = await work.categories.all_of_app(app_id)
            suppressed = suppression is not None and suppression.lifted_at is None
        ordered = sorted(choices.values(), key=lambda choice: choice.ledger_sequence)
        return resources_pb2.ConsentState(
            user_id=user_id,
            entries=[choice.to_proto() for choice in ordered],
            marketing_opted_out=marketing_opted_out(choices),
            suppressed=suppressed,
            categories=[
                judge_category(choices, category, PUSH, suppressed=suppressed).state_proto(category)
                for category in categories
            ],
            as_of_sequence=as_of,
        )
