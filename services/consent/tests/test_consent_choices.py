"""RecordConsent, GetConsentState and GetLedger through real gRPC on SQLite and
PostgreSQL: what each choice means per category kind, idempotency, documented errors
that write nothing, and a ledger that names no one and shows any edit."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import grpc
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import NullPool

from pushwarden.common.v1 import decision_pb2, types_pb2
from pushwarden.consent.v1 import consent_pb2_grpc, messages_pb2, resources_pb2
from pushwarden.runtime.servicetest import local_test_config, rich_error, serving
from pushwarden.runtime.testing import postgres_unavailable_reason, throwaway_postgres_database
from pushwarden.services.consent.bootstrap import bootstrap
from pushwarden.services.consent.config import ConsentConfig
from pushwarden.services.consent.domain.ledger import EntryFields, entry_hash
from pushwarden.services.consent.domain.subjects import Pseudonyms

if TYPE_CHECKING:
    from pushwarden.consent.v1.consent_pb2_grpc import ConsentServiceAsyncStub as Stub

KEY = "k" * 64
APP = "shop"
MARKETING = types_pb2.CATEGORY_KIND_MARKETING
TRANSACTIONAL = types_pb2.CATEGORY_KIND_TRANSACTIONAL
OPT_IN = resources_pb2.CONSENT_ACTION_OPT_IN
OPT_OUT = resources_pb2.CONSENT_ACTION_OPT_OUT
PREFERENCE_CENTER = resources_pb2.CONSENT_SOURCE_PREFERENCE_CENTER
ALL_MARKETING = resources_pb2.ConsentScope(kind=resources_pb2.CONSENT_SCOPE_KIND_ALL_MARKETING)
PUSH_CHANNEL = resources_pb2.ConsentScope(
    kind=resources_pb2.CONSENT_SCOPE_KIND_CHANNEL, channel=types_pb2.CHANNEL_PUSH
)
R = decision_pb2


def category_scope(category_id: str) -> resources_pb2.ConsentScope:
    return resources_pb2.ConsentScope(
        kind=resources_pb2.CONSENT_SCOPE_KIND_CATEGORY, category_id=category_id
    )


@pytest.fixture
async def stub(any_database_url: str) -> AsyncIterator[Stub]:
    config = local_test_config(ConsentConfig, any_database_url, PSEUDONYM_KEY=KEY)
    async with serving(bootstrap(config)) as channel:
        stub: Stub = consent_pb2_grpc.ConsentServiceStub(channel)
        for category_id, kind, default, can_opt_out in (
            ("promos", MARKETING, resources_pb2.DEFAULT_STATE_OPTED_IN, True),
            ("beta", MARKETING, resources_pb2.DEFAULT_STATE_OPTED_OUT, True),
            ("orders", TRANSACTIONAL, resources_pb2.DEFAULT_STATE_OPTED_IN, False),
            ("digest", TRANSACTIONAL, resources_pb2.DEFAULT_STATE_OPTED_IN, True),
        ):
            await stub.DefineCategory(
                messages_pb2.DefineCategoryRequest(
                    app_id=APP,
                    category=resources_pb2.Category(
                        category_id=category_id,
                        kind=kind,
                        default_state=default,
                        user_can_opt_out=can_opt_out,
                    ),
                )
            )
        yield stub


_keys = iter(range(1_000_000))


async def consent(
    stub: Stub,
    user: str,
    scope: resources_pb2.ConsentScope,
    action: resources_pb2.ConsentAction.ValueType,
    *,
    key: str | None = None,
    **fields: Any,
) -> messages_pb2.RecordConsentResponse:
    request = messages_pb2.RecordConsentRequest(
        app_id=APP,
        user_id=user,
        scope=scope,
        action=action,
        source=fields.pop("source", PREFERENCE_CENTER),
        idempotency_key=key or f"k{next(_keys)}",
        **fields,
    )
    return await stub.RecordConsent(request)


async def state(stub: Stub, user: str) -> resources_pb2.ConsentState:
    reply = await stub.GetConsentState(
        messages_pb2.GetConsentStateRequest(app_id=APP, user_id=user)
    )
    return reply.state


def verdicts(current: resources_pb2.ConsentState) -> dict[str, tuple[bool, int, bool]]:
    return {c.category_id: (c.allowed, c.reason, c.is_default) for c in current.categories}


async def ledger(stub: Stub, user: str) -> messages_pb2.GetLedgerResponse:
    return await stub.GetLedger(messages_pb2.GetLedgerRequest(app_id=APP, user_id=user))


async def test_an_unknown_user_gets_the_defaults(stub: Stub) -> None:
    current = await state(stub, "nobody")
    assert list(current.entries) == []
    assert not current.marketing_opted_out
    assert verdicts(current) == {
        "beta": (False, R.REASON_CODE_CATEGORY_OPTED_OUT, True),
        "digest": (True, 0, True),
        "orders": (True, 0, True),
        "promos": (True, 0, True),
    }


async def test_the_universal_opt_out_stops_marketing_only(stub: Stub) -> None:
    await consent(stub, "u1", ALL_MARKETING, OPT_OUT)
    current = await state(stub, "u1")
    assert current.marketing_opted_out
    assert verdicts(current) == {
        "beta": (False, R.REASON_CODE_OPTED_OUT, True),
        "digest": (True, 0, True),
        "orders": (True, 0, True),
        "promos": (False, R.REASON_CODE_OPTED_OUT, True),
    }
    await consent(stub, "u1", ALL_MARKETING, OPT_IN)  # the latest choice wins
    assert verdicts(await state(stub, "u1"))["promos"] == (True, 0, True)


async def test_a_push_channel_opt_out_is_a_marketing_opt_out(stub: Stub) -> None:
    await consent(stub, "u1", PUSH_CHANNEL, OPT_OUT)
    current = verdicts(await state(stub, "u1"))
    assert current["promos"] == (False, R.REASON_CODE_OPTED_OUT, True)
    assert current["orders"] == (True, 0, True)


async def test_category_choices_override_defaults(stub: Stub) -> None:
    await consent(stub, "u1", category_scope("beta"), OPT_IN)
    await consent(
        stub,
        "u1",
        category_scope("promos"),
        OPT_OUT,
        reason=resources_pb2.OptOutReason(code="too_many", text="Far too many pushes"),
    )
    await consent(stub, "u1", category_scope("digest"), OPT_OUT)
    current = await state(stub, "u1")
    assert verdicts(current) == {
        "beta": (True, 0, False),
        "digest": (False, R.REASON_CODE_CATEGORY_OPTED_OUT, False),
        "orders": (True, 0, True),
        "promos": (False, R.REASON_CODE_CATEGORY_OPTED_OUT, False),
    }
    assert [e.scope.category_id for e in current.entries] == ["beta", "promos", "digest"]
    assert current.as_of_sequence == max(e.ledger_sequence for e in current.entries)


async def test_an_opt_out_of_a_category_that_allows_none_is_refused(stub: Stub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await consent(stub, "u1", category_scope("orders"), OPT_OUT)
    error = rich_error(raised.value)
    assert error.code == grpc.StatusCode.FAILED_PRECONDITION
    assert error.reason == "OPT_OUT_NOT_ALLOWED"
    assert list((await ledger(stub, "u1")).entries) == []


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"user_id": ""}, "user_id"),
        ({"scope": category_scope("nope")}, "scope.category_id"),
        ({"scope": resources_pb2.ConsentScope()}, "scope.kind"),
        (
            {"scope": resources_pb2.ConsentScope(kind=resources_pb2.CONSENT_SCOPE_KIND_CHANNEL)},
            "scope.channel",
        ),
        (
            {"scope": resources_pb2.ConsentScope(kind=resources_pb2.CONSENT_SCOPE_KIND_TOPIC)},
            "scope.topic_id",
        ),
        ({"action": resources_pb2.CONSENT_ACTION_UNSPECIFIED}, "action"),
        ({"source": resources_pb2.CONSENT_SOURCE_UNSPECIFIED}, "source"),
        ({"idempotency_key": ""}, "idempotency_key"),
        ({"action": OPT_IN, "reason": resources_pb2.OptOutReason(code="x")}, "reason"),
        ({"reason": resources_pb2.OptOutReason(text="t" * 1025)}, "reason.text"),
        ({"legal_basis": 42}, "legal_basis"),
    ],
)
async def test_bad_records_are_refused_naming_the_field_and_write_nothing(
    stub: Stub, changes: dict[str, Any], field: str
) -> None:
    values: dict[str, Any] = {
        "app_id": APP,
        "user_id": "u1",
        "scope": ALL_MARKETING,
        "action": OPT_OUT,
        "source": PREFERENCE_CENTER,
        "idempotency_key": "bad-1",
    }
    values.update(changes)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.RecordConsent(messages_pb2.RecordConsentRequest(**values))
    error = rich_error(raised.value)
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert field in error.fields, error.fields
    assert list((await ledger(stub, "u1")).entries) == []
    assert list((await state(stub, "u1")).entries) == []


async def test_a_repeated_key_records_once_and_another_body_is_refused(stub: Stub) -> None:
    first = await consent(stub, "u1", ALL_MARKETING, OPT_OUT, key="same")
    again = await consent(stub, "u1", ALL_MARKETING, OPT_OUT, key="same")
    assert not first.replayed
    assert again.replayed
    assert again.entry == first.entry
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await consent(stub, "u1", ALL_MARKETING, OPT_IN, key="same")
    error = rich_error(raised.value)
    assert error.code == grpc.StatusCode.ALREADY_EXISTS
    assert error.reason == "IDEMPOTENCY_KEY_REUSED"
    assert len((await ledger(stub, "u1")).entries) == 1
    # Keys are per user: another user may use the same one.
    assert not (await consent(stub, "u2", ALL_MARKETING, OPT_OUT, key="same")).replayed


async def test_the_ledger_names_a_pseudonym_keeps_details_and_verifies(stub: Stub) -> None:
    reason = resources_pb2.OptOutReason(code="too_many", text="Please stop, Alice here")
    await consent(stub, "alice", ALL_MARKETING, OPT_OUT, reason=reason)
    await consent(stub, "alice", category_scope("beta"), OPT_IN)
    reply = await ledger(stub, "alice")
    assert reply.subject == Pseudonyms(KEY).subject(APP, "alice")
    assert "alice" not in reply.subject
    assert [e.kind for e in reply.entries] == [resources_pb2.LEDGER_ENTRY_KIND_CONSENT] * 2
    assert reply.entries[0].consent.reason == reason
    assert reply.entries[1].previous_hash == reply.entries[0].entry_hash
    assert reply.verification.verified
    assert reply.verification.entries_checked == 2


async def test_the_ledger_pages_and_verifies_the_whole_chain_on_each_page(stub: Stub) -> None:
    for index in range(5):
        await consent(stub, "u1", ALL_MARKETING, OPT_OUT if index % 2 else OPT_IN)
    seen: list[int] = []
    token = ""
    while True:
        reply = await stub.GetLedger(
            messages_pb2.GetLedgerRequest(app_id=APP, user_id="u1", page_size=2, page_token=token)
        )
        seen += [entry.sequence for entry in reply.entries]
        assert reply.verification.entries_checked == 5
        token = reply.next_page_token
        if not token:
            break
    assert len(seen) == 5
    assert seen == sorted(seen)


async def test_an_edited_ledger_row_is_reported(tmp_path: Any) -> None:
    path = tmp_path / "consent.db"
    config = local_test_config(ConsentConfig, f"sqlite:///{path}", PSEUDONYM_KEY=KEY)
    async with serving(bootstrap(config)) as channel:
        stub: Stub = consent_pb2_grpc.ConsentServiceStub(channel)
        for index in range(3):
            await consent(stub, "u1", ALL_MARKETING, OPT_OUT if index % 2 else OPT_IN)
        entries = (await ledger(stub, "u1")).entries
        first, last = entries[0].sequence, entries[-1].sequence
        editor = sqlite3.connect(path)
        try:
            # 1. Rewrite the last entry's action and recompute its hash without the key.
            row = editor.execute(
                "SELECT app_id, subject, kind, scope_key, action, recorded_at, client_time,"
                " previous_hash, payload_digest FROM ledger_entries WHERE sequence = ?",
                (last,),
            ).fetchone()
            forged = entry_hash(_fields(last, row, action="OPT_OUT"), b"")
            with editor:
                editor.execute(
                    "UPDATE ledger_entries SET action = 'OPT_OUT', entry_hash = ? "
                    "WHERE sequence = ?",
                    (forged, last),
                )
            verification = (await ledger(stub, "u1")).verification
            assert not verification.verified
            assert verification.broken_at_sequence == last
            assert verification.fault == messages_pb2.CHAIN_FAULT_ENTRY_HASH_MISMATCH
            # 2. Rewrite the first entry and recompute its hash WITH the key: the link
            # from the next entry breaks.
            row = editor.execute(
                "SELECT app_id, subject, kind, scope_key, action, recorded_at, client_time,"
                " previous_hash, payload_digest FROM ledger_entries WHERE sequence = ?",
                (first,),
            ).fetchone()
            key = Pseudonyms(KEY).ledger_key
            forged = entry_hash(_fields(first, row, action="OPT_OUT"), key)
            with editor:
                editor.execute(
                    "UPDATE ledger_entries SET action = 'OPT_OUT', entry_hash = ? "
                    "WHERE sequence = ?",
                    (forged, first),
                )
            verification = (await ledger(stub, "u1")).verification
            assert verification.broken_at_sequence == entries[1].sequence
            assert verification.fault == messages_pb2.CHAIN_FAULT_PREVIOUS_HASH_MISMATCH
            # 3. Edit a payload: its digest no longer matches.
            with editor:
                editor.execute(
                    "UPDATE ledger_payloads SET body = X'00' WHERE sequence = ?", (first,)
                )
            verification = (await ledger(stub, "u1")).verification
            assert not verification.verified
        finally:
            editor.close()


def _fields(sequence: int, row: tuple[Any, ...], *, action: str) -> EntryFields:
    from datetime import UTC, datetime

    def instant(text: str | None) -> datetime | None:
        return None if text is None else datetime.fromisoformat(text).replace(tzinfo=UTC)

    app_id, subject, kind, scope_key, _, recorded_at, client_time, previous, digest = row
    recorded = instant(recorded_at)
    assert recorded is not None
    return EntryFields(
        sequence=sequence,
        app_id=app_id,
        subject=subject,
        kind=kind,
        scope_key=scope_key,
        action=action,
        recorded_at=recorded,
        client_time=instant(client_time),
        previous_hash=previous,
        payload_digest=digest,
    )


async def test_postgresql_refuses_to_update_or_delete_ledger_entries(tmp_path: Any) -> None:
    reason = postgres_unavailable_reason()
    if reason is not None:
        pytest.skip(f"PostgreSQL unavailable: {reason}")
    with throwaway_postgres_database() as url:
        config = local_test_config(ConsentConfig, url, PSEUDONYM_KEY=KEY)
        async with serving(bootstrap(config)) as channel:
            stub: Stub = consent_pb2_grpc.ConsentServiceStub(channel)
            await consent(stub, "u1", ALL_MARKETING, OPT_OUT)
        engine = create_engine(url, poolclass=NullPool)
        try:
            for statement in (
                "UPDATE ledger_entries SET action = 'OPT_IN'",
                "DELETE FROM ledger_entries",
                "TRUNCATE ledger_entries CASCADE",
                "UPDATE ledger_payloads SET body = ''",
            ):
                with engine.connect() as connection, pytest.raises(DBAPIError) as raised:
                    connection.execute(text(statement))
                assert "append-only" in str(raised.value)
            with engine.connect() as connection:
                count = connection.execute(text("SELECT count(*) FROM ledger_entries")).scalar()
            assert count == 1
        finally:
            engine.dispose()
