"""ExportUserData, EraseUser and CheckErasure through real gRPC on SQLite and PostgreSQL:
a complete paged export, an erasure that leaves nothing personal anywhere in the
database but the ERASED change, a ledger that still verifies, and suppression that only
an opt-in to all marketing or to push lifts."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import pytest
from sqlalchemy import LargeBinary, String, Text, create_engine, func, select
from sqlalchemy.pool import NullPool

from pushwarden.common.v1 import decision_pb2, types_pb2
from pushwarden.consent.v1 import consent_pb2_grpc, messages_pb2, resources_pb2
from pushwarden.runtime.servicetest import local_test_config, serving
from pushwarden.services.consent.bootstrap import bootstrap
from pushwarden.services.consent.config import ConsentConfig
from pushwarden.services.consent.models import Base, ChangeRow

if TYPE_CHECKING:
    from pushwarden.consent.v1.consent_pb2_grpc import ConsentServiceAsyncStub as Stub

KEY = "k" * 64
APP = "shop"
USER = "alice-7f3c2b"
TOKENS = ("a1" * 32, "fcm-token-alice-9b8c7d")
LOCALE = "fr-CA"
MODEL = "Pixel-Unique-Model-42"
REASON = "Stop it, I moved to Lisbon"
R = decision_pb2


class Harness:
    def __init__(self, url: str, stub: Stub) -> None:
        self.url = url
        self.stub = stub


@pytest.fixture
async def harness(any_database_url: str) -> AsyncIterator[Harness]:
    config = local_test_config(ConsentConfig, any_database_url, PSEUDONYM_KEY=KEY)
    async with serving(bootstrap(config)) as channel:
        stub: Stub = consent_pb2_grpc.ConsentServiceStub(channel)
        for category_id, kind in (
            ("promos", types_pb2.CATEGORY_KIND_MARKETING),
            ("orders", types_pb2.CATEGORY_KIND_TRANSACTIONAL),
        ):
            await stub.DefineCategory(
                messages_pb2.DefineCategoryRequest(
                    app_id=APP,
                    category=resources_pb2.Category(
                        category_id=category_id,
                        kind=kind,
                        default_state=resources_pb2.DEFAULT_STATE_OPTED_IN,
                    ),
                )
            )
        yield Harness(any_database_url, stub)


_keys = iter(range(1_000_000))


async def register(stub: Stub, token: str, platform: int, provider: int) -> None:
    await stub.RegisterDevice(
        messages_pb2.RegisterDeviceRequest(
            app_id=APP,
            device=resources_pb2.Device(
                user_id=USER,
                platform=platform,  # type: ignore[arg-type]
                provider=provider,  # type: ignore[arg-type]
                token=token,
                time_zone="America/Toronto",
                locale=LOCALE,
                model=MODEL,
                permission=types_pb2.PERMISSION_STATE_GRANTED,
            ),
        )
    )


async def consent(
    stub: Stub, scope: resources_pb2.ConsentScope, opt_in: bool, **extra: Any
) -> None:
    await stub.RecordConsent(
        messages_pb2.RecordConsentRequest(
            app_id=APP,
            user_id=USER,
            scope=scope,
            action=resources_pb2.CONSENT_ACTION_OPT_IN
            if opt_in
            else resources_pb2.CONSENT_ACTION_OPT_OUT,
            source=resources_pb2.CONSENT_SOURCE_PREFERENCE_CENTER,
            idempotency_key=f"g{next(_keys)}",
            **extra,
        )
    )


ALL_MARKETING = resources_pb2.ConsentScope(kind=resources_pb2.CONSENT_SCOPE_KIND_ALL_MARKETING)
PROMOS = resources_pb2.ConsentScope(
    kind=resources_pb2.CONSENT_SCOPE_KIND_CATEGORY, category_id="promos"
)


async def populate(stub: Stub) -> None:
    await register(stub, TOKENS[0], types_pb2.PLATFORM_IOS, types_pb2.PROVIDER_APNS)
    await register(stub, TOKENS[1], types_pb2.PLATFORM_ANDROID, types_pb2.PROVIDER_FCM)
    await consent(
        stub, ALL_MARKETING, False, reason=resources_pb2.OptOutReason(code="moved", text=REASON)
    )
    await consent(stub, ALL_MARKETING, True)
    await stub.SetPreferences(
        messages_pb2.SetPreferencesRequest(
            app_id=APP,
            user_id=USER,
            preferences=resources_pb2.Preferences(
                time_zone_override="Europe/Lisbon",
                topics=[resources_pb2.TopicSubscription(topic_id="sale", subscribed=True)],
            ),
        )
    )
    for index, event in enumerate(
        (resources_pb2.PROMPT_EVENT_PRE_PROMPT_SHOWN, resources_pb2.PROMPT_EVENT_OS_GRANTED)
    ):
        await stub.RecordPermissionPrompt(
            messages_pb2.RecordPermissionPromptRequest(
                app_id=APP,
                user_id=USER,
                event=event,
                context="onboarding",
                idempotency_key=f"p{index}",
            )
        )


async def export_all(stub: Stub, page_size: int = 0) -> list[messages_pb2.UserDataExport]:
    pages = []
    token = ""
    while True:
        reply = await stub.ExportUserData(
            messages_pb2.ExportUserDataRequest(
                app_id=APP, user_id=USER, page_size=page_size, page_token=token
            )
        )
        pages.append(reply.export)
        token = reply.next_page_token
        if not token:
            return pages


async def test_the_export_holds_everything_and_pages_through_long_lists(harness: Harness) -> None:
    stub = harness.stub
    await populate(stub)
    [whole] = await export_all(stub)
    assert sorted(d.token for d in whole.devices) == sorted(TOKENS)
    assert {d.model for d in whole.devices} == {MODEL}
    assert len(whole.consent.entries) == 2  # ALL_MARKETING and the topic
    assert whole.preferences.time_zone_override == "Europe/Lisbon"
    assert whole.ledger[2].consent.reason.text == REASON or any(
        entry.consent.reason.text == REASON for entry in whole.ledger
    )
    assert [p.event for p in whole.prompts] == [
        resources_pb2.PROMPT_EVENT_PRE_PROMPT_SHOWN,
        resources_pb2.PROMPT_EVENT_OS_GRANTED,
    ]
    assert whole.subject
    pages = await export_all(stub, page_size=2)
    assert len(pages) >= 3
    ledger = [entry.sequence for page in pages for entry in page.ledger]
    assert ledger == [entry.sequence for entry in whole.ledger]
    prompts = [p.event for page in pages for p in page.prompts]
    assert prompts == [p.event for p in whole.prompts]
    assert all(len(page.devices) == 2 for page in pages)  # complete on every page


def scan(url: str, needles: list[str]) -> dict[str, list[str]]:
    """Every text and binary column of every table, searched for each needle."""
    engine = create_engine(url, poolclass=NullPool)
    found: dict[str, list[str]] = {}
    try:
        with engine.connect() as connection:
            for table in Base.metadata.sorted_tables:
                for column in table.columns:
                    for needle in needles:
                        if isinstance(column.type, String | Text):
                            hits = connection.execute(
                                select(func.count()).where(column.contains(needle, autoescape=True))
                            ).scalar()
                            if hits:
                                found.setdefault(f"{table.name}.{column.name}", []).append(needle)
                        elif isinstance(column.type, LargeBinary):
                            for (value,) in connection.execute(select(column)):
                                if value is not None and needle.encode() in bytes(value):
                                    found.setdefault(f"{table.name}.{column.name}", []).append(
                                        needle
                                    )
                                    break
    finally:
        engine.dispose()
    return found


async def test_erasure_leaves_nothing_personal_but_the_erased_change(harness: Harness) -> None:
    stub = harness.stub
    await populate(stub)
    # A token that moved from the user to someone else: bob's change names the user.
    await register(stub, "shared-token-42", types_pb2.PLATFORM_ANDROID, types_pb2.PROVIDER_FCM)
    moved = await stub.RegisterDevice(
        messages_pb2.RegisterDeviceRequest(
            app_id=APP,
            device=resources_pb2.Device(
                user_id="bob",
                platform=types_pb2.PLATFORM_ANDROID,
                provider=types_pb2.PROVIDER_FCM,
                token="shared-token-42",
            ),
        )
    )
    assert moved.previous_user_id == USER
    needles = [USER, *TOKENS, LOCALE, MODEL, REASON]
    assert set(scan(harness.url, needles))  # the needles are really there before
    reply = await stub.EraseUser(messages_pb2.EraseUserRequest(app_id=APP, user_id=USER))
    assert not reply.already_erased
    assert reply.devices_deleted == 2  # the shared token is bob's now
    assert reply.erasure.subject
    assert reply.cursor
    left = scan(harness.url, needles)
    # The ERASED change carries the user id (only it, only for the feed's retention).
    assert left == {"changes.user_id": [USER], "changes.detail": [USER]}
    engine = create_engine(harness.url, poolclass=NullPool)
    try:
        with engine.connect() as connection:
            kinds = (
                connection.execute(select(ChangeRow.kind).where(ChangeRow.user_id == USER))
                .scalars()
                .all()
            )
    finally:
        engine.dispose()
    assert kinds == ["ERASED"]
    ledger = await stub.GetLedger(messages_pb2.GetLedgerRequest(app_id=APP, user_id=USER))
    assert ledger.verification.verified
    assert all(entry.payload_erased for entry in ledger.entries[:-1])
    assert ledger.entries[-1].kind == resources_pb2.LEDGER_ENTRY_KIND_ERASURE
    again = await stub.EraseUser(messages_pb2.EraseUserRequest(app_id=APP, user_id=USER))
    assert again.already_erased
    assert again.erasure.erased_at == reply.erasure.erased_at
    [exported] = await export_all(stub)
    assert list(exported.devices) == []
    assert list(exported.prompts) == []


async def test_an_erased_user_id_stays_out_of_marketing_until_a_lifting_opt_in(
    harness: Harness,
) -> None:
    stub = harness.stub
    await populate(stub)
    await stub.EraseUser(messages_pb2.EraseUserRequest(app_id=APP, user_id=USER))
    checked = await stub.CheckErasure(
        messages_pb2.CheckErasureRequest(app_id=APP, user_ids=[USER, "never-erased"])
    )
    assert checked.users[0].suppressed
    assert checked.users[0].HasField("erased_at")
    assert not checked.users[1].HasField("erased_at")
    await register(stub, TOKENS[0], types_pb2.PLATFORM_IOS, types_pb2.PROVIDER_APNS)

    async def eligible(category: str) -> messages_pb2.UserEligibility:
        reply = await stub.CheckEligibility(
            messages_pb2.CheckEligibilityRequest(app_id=APP, category_id=category, user_ids=[USER])
        )
        return reply.users[0]

    marketing = await eligible("promos")
    assert list(marketing.reasons) == [R.REASON_CODE_SUPPRESSED]
    # Registered again: no longer erased "right now", but marketing stays suppressed.
    assert not marketing.consent.erased
    assert marketing.consent.suppressed
    assert (await eligible("orders")).allowed  # transactional still goes
    await consent(stub, PROMOS, True)  # a category opt-in does not lift it
    assert list((await eligible("promos")).reasons) == [R.REASON_CODE_SUPPRESSED]
    await consent(stub, ALL_MARKETING, True)
    assert (await eligible("promos")).allowed
    lifted = await stub.CheckErasure(messages_pb2.CheckErasureRequest(app_id=APP, user_ids=[USER]))
    assert not lifted.users[0].suppressed
    state = await stub.GetConsentState(
        messages_pb2.GetConsentStateRequest(app_id=APP, user_id=USER)
    )
    assert not state.state.suppressed
