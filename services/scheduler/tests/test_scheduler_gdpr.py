"""The scheduler and consent's change feed, on SQLite and PostgreSQL: ExportUserData
pages a user's intents and contacts; EraseUser at consent removes them from the
scheduler (GetSend then answers NOT_FOUND); an opt-out of all marketing sends the
app's opt-out confirmation (transactional) once, when the policy enables it."""

from __future__ import annotations

import json

import grpc
import pytest

from pushwarden.common.v1 import content_pb2, decision_pb2
from pushwarden.consent.v1 import messages_pb2 as consent_messages
from pushwarden.consent.v1 import resources_pb2 as consent_resources
from pushwarden.scheduler.v1 import messages_pb2, resources_pb2

from .conftest import APP, Platform

pytestmark = pytest.mark.storage


def order(key: str, user: str) -> messages_pb2.SendTransactionalRequest:
    return messages_pb2.SendTransactionalRequest(
        app_id=APP,
        user_id=user,
        category_id="orders",
        idempotency_key=key,
        content=content_pb2.Content(title=f"Order {key}", body="Shipped"),
    )


async def test_export_pages_a_users_sends_and_erasure_removes_them(platform: Platform) -> None:
    await platform.register("ada")
    async with platform.scheduler() as scheduler:
        sent = [await scheduler.SendTransactional(order(f"o{i}", "ada")) for i in range(3)]
        await scheduler.SendTransactional(order("other", "bob"))

        async def decided() -> bool:
            for answer in sent:
                record = (
                    await scheduler.GetSend(
                        messages_pb2.GetSendRequest(app_id=APP, send_id=answer.send_id)
                    )
                ).record
                if record.decision.outcome != decision_pb2.OUTCOME_ALLOW:
                    return False
            return True

        await platform.eventually(decided, what="the three sends")
        seen: list[str] = []
        token = ""
        pages = 0
        while True:
            page = await scheduler.ExportUserData(
                messages_pb2.ExportUserDataRequest(
                    app_id=APP, user_id="ada", page_size=2, page_token=token
                )
            )
            pages += 1
            seen.extend(record.send_id for record in page.contacts)
            assert all(record.user_id == "ada" for record in page.contacts)
            token = page.next_page_token
            if not token:
                break
        assert pages == 2
        assert sorted(seen) == sorted(answer.send_id for answer in sent)

        await platform.consent.EraseUser(
            consent_messages.EraseUserRequest(
                app_id=APP, user_id="ada", actor_type=consent_resources.ACTOR_TYPE_APP_BACKEND
            )
        )

        async def erased() -> bool:
            page = await scheduler.ExportUserData(
                messages_pb2.ExportUserDataRequest(app_id=APP, user_id="ada")
            )
            return not page.contacts

        await platform.eventually(erased, what="the erasure at the scheduler")
        with pytest.raises(grpc.aio.AioRpcError) as gone:
            await scheduler.GetSend(
                messages_pb2.GetSendRequest(app_id=APP, send_id=sent[0].send_id)
            )
        assert gone.value.code() == grpc.StatusCode.NOT_FOUND
        bob = await scheduler.ExportUserData(
            messages_pb2.ExportUserDataRequest(app_id=APP, user_id="bob")
        )
        assert len(bob.contacts) == 1


async def test_an_opt_out_gets_one_confirmation_when_the_policy_asks(platform: Platform) -> None:
    phone = await platform.register("cleo")
    async with platform.scheduler() as scheduler:
        await scheduler.SetPolicy(
            messages_pb2.SetPolicyRequest(
                app_id=APP,
                policy=resources_pb2.Policy(
                    opt_out_confirmation=resources_pb2.OptOutConfirmation(
                        enabled=True,
                        category_id="orders",
                        template=resources_pb2.Template(
                            content=content_pb2.Content(title="You are unsubscribed", body="Bye")
                        ),
                    )
                ),
            )
        )
        for key in ("out-1", "out-2"):  # the second opt-out is recorded too: two changes
            await platform.consent.RecordConsent(
                consent_messages.RecordConsentRequest(
                    app_id=APP,
                    user_id="cleo",
                    scope=consent_resources.ConsentScope(
                        kind=consent_resources.CONSENT_SCOPE_KIND_ALL_MARKETING
                    ),
                    action=consent_resources.CONSENT_ACTION_OPT_OUT,
                    source=consent_resources.CONSENT_SOURCE_PREFERENCE_CENTER,
                    idempotency_key=key,
                )
            )

        def titles() -> list[str]:
            return [
                json.loads(r.body)["aps"]["alert"]["title"]
                for r in platform.sandbox.apns.recorder.requests(token=phone.token)
            ]

        async def confirmed() -> bool:
            return bool(titles())

        await platform.eventually(confirmed, what="the confirmation")
        # A category opt-out gets none.
        await platform.consent.RecordConsent(
            consent_messages.RecordConsentRequest(
                app_id=APP,
                user_id="cleo",
                scope=consent_resources.ConsentScope(
                    kind=consent_resources.CONSENT_SCOPE_KIND_CATEGORY, category_id="promos"
                ),
                action=consent_resources.CONSENT_ACTION_OPT_OUT,
                source=consent_resources.CONSENT_SOURCE_PREFERENCE_CENTER,
                idempotency_key="out-3",
            )
        )
        export = await scheduler.ExportUserData(
            messages_pb2.ExportUserDataRequest(app_id=APP, user_id="cleo")
        )

        # One confirmation per recorded opt-out change of the feed, never a repeat of one
        # (the second may still be on its way to the fake when the export answers).
        async def all_arrived() -> bool:
            return len(titles()) == len(export.contacts)

        await platform.eventually(all_arrived, what="every confirmation at the fake")
    assert set(titles()) == {"You are unsubscribed"}
    assert len(titles()) == len(export.contacts) <= 2
