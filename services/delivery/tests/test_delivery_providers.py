"""The provider layer with the real, unpatched aioapns and firebase-admin against the fakes.

Each test asserts the outcome (data, never an exception) and exactly how many
requests the fake recorded.  Providers are built the way the service builds
them: a credentials TOML file named by PUSHWARDEN_DELIVERY_CREDENTIALS, read
through DeliveryConfig.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pushwarden.common.v1 import content_pb2, types_pb2
from pushwarden.payload import DeliveryOptions, render_apns
from pushwarden.runtime.config import load_config
from pushwarden.sandbox import fcm
from pushwarden.sandbox.apns import ApnsKey, generate_signing_key, start_apns
from pushwarden.sandbox.core import SandboxServer, ThreadedSandbox
from pushwarden.sandbox.faults import FaultSpec
from pushwarden.services.delivery.config import DeliveryConfig
from pushwarden.services.delivery.providers import (
    ApnsProvider,
    Delivered,
    Failed,
    FcmProvider,
    Outcome,
    OutgoingPush,
    Providers,
    RetryAfter,
    TokenDead,
    apns_id_for,
)

pytestmark = pytest.mark.timeout(60)

PREFIX = "PUSHWARDEN_DELIVERY_"
SHOP, NEWS = "shop", "news"
TOPICS = {SHOP: "com.example.shop", NEWS: "com.example.news"}
PROJECTS = {SHOP: "shop-project", NEWS: "news-project"}
CONTENT = content_pb2.Content(title="Order 42", body="On its way", custom_data={"order": "42"})
_tokens = itertools.count(1)


def apns_token() -> str:
    return f"{next(_tokens):064x}"


def fcm_token() -> str:
    return f"fcm-token-{next(_tokens)}"


def push(token: str, *, send_id: str | None = None, content: Any = CONTENT) -> OutgoingPush:
    now = dt.datetime.now(dt.UTC)
    return OutgoingPush(
        send_id=send_id or f"send-{uuid.uuid4()}",
        token=token,
        content=content,
        options=DeliveryOptions(
            priority=types_pb2.PRIORITY_HIGH,
            expires_at=now + dt.timedelta(hours=1),
            now=now,
            send_id="s",
        ),
    )


@dataclass
class Fakes:
    apns: SandboxServer
    fcm: ThreadedSandbox
    credentials_file: Path


@pytest.fixture
def fcm_token_lifetime() -> int:
    """Seconds the fake FCM's access tokens last (as Google's: an hour)."""
    return 3599


@pytest.fixture
async def fakes(tmp_path: Path, fcm_token_lifetime: int) -> AsyncIterator[Fakes]:
    """A fake APNs (on this loop) and a fake FCM (own thread: google-auth blocks), sharing
    one CA, with two apps' credentials in one TOML file; the CA is trusted process-wide."""
    state = tmp_path / "state"
    lines: list[str] = []
    apns_keys, accounts = [], []
    for number, app in enumerate((SHOP, NEWS)):
        pem = generate_signing_key()
        key_id, team = f"KEY{number:07d}", f"TEAM{number:06d}"
        (tmp_path / f"{app}.p8").write_text(pem)
        apns_keys.append(ApnsKey.from_private_pem(key_id, team, pem, [TOPICS[app]]))
        account, key = fcm.new_service_account(PROJECTS[app])
        accounts.append((app, account, key))
        lines += [
            f"[apps.{app}.apns]",
            f'key_file = "{app}.p8"',
            f'key_id = "{key_id}"',
            f'team_id = "{team}"',
            f'topic = "{TOPICS[app]}"',
            'environment = "sandbox"',
            "endpoint = '{apns}'",
            f"[apps.{app}.fcm]",
            f'service_account_file = "{app}-sa.json"',
            f'project_id = "{PROJECTS[app]}"',
            "endpoint = '{fcm}'",
        ]
    apns_server = await start_apns(apns_keys, state_dir=state)
    assert apns_server.ca_file is not None
    try:
        with (
            fcm.run_fcm_in_thread(
                [a for _, a, _ in accounts], state_dir=state, token_lifetime=fcm_token_lifetime
            ) as fcm_server,
            fcm.sandbox_ca_trust(apns_server.ca_file),
        ):
            for app, account, key in accounts:
                fcm.write_service_account_file(
                    tmp_path / f"{app}-sa.json", account, key, f"{fcm_server.url}/token"
                )
            text = "\n".join(lines).replace("{apns}", apns_server.url)
            credentials_file = tmp_path / "credentials.toml"
            credentials_file.write_text(text.replace("{fcm}", fcm_server.url) + "\n")
            yield Fakes(apns_server, fcm_server, credentials_file)
    finally:
        await apns_server.close()


def config(fakes: Fakes, **settings: str) -> DeliveryConfig:
    environ = {f"{PREFIX}CREDENTIALS": str(fakes.credentials_file)}
    environ.update({f"{PREFIX}{name.upper()}": value for name, value in settings.items()})
    return load_config(DeliveryConfig, environ=environ)


@pytest.fixture
async def providers(fakes: Fakes) -> AsyncIterator[Providers]:
    cfg = config(fakes, apns_timeout="1.0", fcm_timeout="1.0", fcm_chunk_size="100")
    built = Providers(cfg.provider_credentials(), cfg.provider_settings())
    try:
        yield built
    finally:
        await built.aclose()


def apns_of(providers: Providers, app: str = SHOP) -> ApnsProvider:
    provider = providers.apns(app)
    assert provider is not None
    return provider


def fcm_of(providers: Providers, app: str = SHOP) -> FcmProvider:
    provider = providers.fcm(app)
    assert provider is not None
    return provider


async def send_one(provider: ApnsProvider | FcmProvider, item: OutgoingPush) -> Outcome:
    [outcome] = await provider.send([item])
    return outcome


# --- APNs --------------------------------------------------------------------------------


async def test_apns_delivers_the_rendered_request_with_the_sends_apns_id(
    fakes: Fakes, providers: Providers
) -> None:
    token = apns_token()
    item = push(token, send_id="order-42-shipped")
    outcome = await send_one(apns_of(providers), item)

    assert outcome == Delivered(provider_id=apns_id_for("order-42-shipped"), requests=1)
    [recorded] = fakes.apns.recorder.requests(token=token)
    rendered = render_apns(CONTENT, item.options)
    assert recorded.body == rendered.body
    assert recorded.apns_id == item.apns_id
    assert recorded.header("apns-topic") == TOPICS[SHOP]
    assert recorded.header("apns-push-type") == "alert"
    assert recorded.header("apns-priority") == "10"


# (fault, expected outcome); every row is one request at the fake.
APNS_ROWS: list[tuple[dict[str, Any], Outcome]] = [
    ({"status": 410, "reason": "Unregistered"}, TokenDead(reason="Unregistered")),
    ({"status": 400, "reason": "BadDeviceToken"}, TokenDead(reason="BadDeviceToken")),
    (
        {"status": 400, "reason": "DeviceTokenNotForTopic"},
        TokenDead(reason="DeviceTokenNotForTopic"),
    ),
    ({"status": 400, "reason": "BadCollapseId"}, Failed(reason="BadCollapseId", permanent=True)),
    (
        {"status": 413, "reason": "PayloadTooLarge"},
        Failed(reason="PayloadTooLarge", permanent=True),
    ),
    ({"status": 403, "reason": "BadCertificate"}, Failed(reason="BadCertificate", permanent=True)),
    ({"status": 429, "reason": "TooManyRequests"}, RetryAfter(reason="TooManyRequests")),
    # aioapns hands over no response headers; the adapter's protocol class notes it.
    (
        {"status": 429, "reason": "TooManyRequests", "retry_after": 30},
        RetryAfter(reason="TooManyRequests", seconds=30.0),
    ),
    ({"status": 500, "reason": "InternalServerError"}, RetryAfter(reason="InternalServerError")),
    ({"status": 503, "reason": "ServiceUnavailable"}, RetryAfter(reason="ServiceUnavailable")),
    ({"status": 503, "reason": "Shutdown"}, RetryAfter(reason="Shutdown")),
]


@pytest.mark.parametrize(("fault", "expected"), APNS_ROWS, ids=lambda v: str(v)[:40])
async def test_apns_answer_rows_are_one_request_each(
    fakes: Fakes, providers: Providers, fault: dict[str, Any], expected: Outcome
) -> None:
    token = apns_token()
    fakes.apns.faults.add(FaultSpec("status", token=token, **fault))
    outcome = await send_one(apns_of(providers), push(token))
    if isinstance(outcome, TokenDead) and fault["status"] == 410:
        assert outcome.invalidated_at is not None  # the fake stamps "now" by default
        outcome = TokenDead(reason=outcome.reason)
    assert outcome == expected
    assert fakes.apns.recorder.count(token=token) == 1


async def test_apns_410_carries_the_providers_timestamp(fakes: Fakes, providers: Providers) -> None:
    token = apns_token()
    stamp = 1_700_000_000_123
    fakes.apns.faults.add(FaultSpec("status", token=token, status=410, timestamp_ms=stamp))
    outcome = await send_one(apns_of(providers), push(token))
    assert outcome == TokenDead(
        reason="Unregistered",
        invalidated_at=dt.datetime(2023, 11, 14, 22, 13, 20, 123000, tzinfo=dt.UTC),
    )
    assert fakes.apns.recorder.count(token=token) == 1


async def test_apns_503_is_retryable_and_the_retry_carries_the_same_apns_id(
    fakes: Fakes, providers: Providers
) -> None:
    token = apns_token()
    fakes.apns.faults.add(FaultSpec("status", token=token, status=503, times=1))
    item = push(token)
    apns = apns_of(providers)
    assert await send_one(apns, item) == RetryAfter(reason="ServiceUnavailable")
    assert await send_one(apns, item) == Delivered(provider_id=item.apns_id)
    recorded = fakes.apns.recorder.requests(token=token)
    assert [(r.status, r.apns_id) for r in recorded] == [(503, item.apns_id), (200, item.apns_id)]


async def test_apns_no_answer_fails_within_its_deadline_while_other_sends_carry_on(
    fakes: Fakes, providers: Providers
) -> None:
    hung, *others = [apns_token() for _ in range(6)]
    fakes.apns.faults.add(FaultSpec("no_answer", token=hung))
    apns = apns_of(providers)
    await send_one(apns, push(apns_token()))  # one connection, already open

    started = time.monotonic()
    hung_task = asyncio.create_task(send_one(apns, push(hung)))
    delivered = await apns.send([push(token) for token in others])
    assert not hung_task.done()  # the others did not wait for the hung stream
    hung_outcome = await hung_task
    hung_done = time.monotonic() - started

    assert all(isinstance(o, Delivered) for o in delivered)
    assert hung_outcome == RetryAfter(reason="Timeout")
    assert 1.0 <= hung_done < 5.0
    assert fakes.apns.recorder.count(token=hung) == 1
    assert {r.connection_id for r in fakes.apns.recorder.requests()} == {
        fakes.apns.recorder.requests(token=hung)[0].connection_id
    }


async def test_apns_sends_beyond_the_streams_queue_outside_their_deadline(
    fakes: Fakes,
) -> None:
    cfg = config(fakes, apns_timeout="1.0", apns_max_connections="1", apns_max_streams="2")
    providers = Providers(cfg.provider_credentials(), cfg.provider_settings())
    tokens = [apns_token() for _ in range(10)]
    for token in tokens:
        fakes.apns.faults.add(FaultSpec("delay", token=token, seconds=0.4))
    try:
        # Five waves of two streams take 2 s, twice the deadline of each request.
        outcomes = await apns_of(providers).send([push(token) for token in tokens])
    finally:
        await providers.aclose()
    assert all(isinstance(o, Delivered) for o in outcomes), outcomes
    assert [fakes.apns.recorder.count(token=token) for token in tokens] == [1] * 10
    assert len({r.connection_id for r in fakes.apns.recorder.requests()}) == 1


async def test_apns_an_answer_after_the_deadline_leaves_the_connection_serving(
    fakes: Fakes, providers: Providers
) -> None:
    late, after = apns_token(), apns_token()
    fakes.apns.faults.add(FaultSpec("delay", token=late, seconds=1.5))
    apns = apns_of(providers)
    assert await send_one(apns, push(late)) == RetryAfter(reason="Timeout")
    await asyncio.sleep(1.0)  # the late answer arrives on the connection meanwhile
    assert isinstance(await send_one(apns, push(after)), Delivered)
    [late_request] = fakes.apns.recorder.requests(token=late)
    [after_request] = fakes.apns.recorder.requests(token=after)
    assert late_request.status == 200  # answered, late
    assert after_request.connection_id == late_request.connection_id


async def test_apns_expired_provider_token_rebuilds_the_client_once_then_delivers(
    fakes: Fakes, providers: Providers
) -> None:
    apns = apns_of(providers)
    assert isinstance(await send_one(apns, push(apns_token())), Delivered)
    assert apns.clients_built == 1
    # Refuse every provider token signed so far, and let that second pass so that a
    # rebuilt client signs a later one.
    cutoff = int(time.time()) + 1
    fakes.apns.faults.add(FaultSpec("expired_token_window", issued_before=cutoff))
    await asyncio.sleep(cutoff - time.time() + 0.05)

    tokens = [apns_token() for _ in range(20)]
    outcomes = await apns.send([push(token) for token in tokens])

    assert all(isinstance(o, Delivered) and o.requests == 2 for o in outcomes), outcomes
    assert apns.clients_built == 2  # twenty refusals, one new client
    for token in tokens:
        recorded = fakes.apns.recorder.requests(token=token)
        assert [(r.status, r.reason) for r in recorded] == [
            (403, "ExpiredProviderToken"),
            (200, None),
        ]
        assert recorded[0].apns_id == recorded[1].apns_id


async def test_apns_a_key_refused_after_the_refresh_fails_permanently(
    fakes: Fakes, tmp_path: Path
) -> None:
    other = tmp_path / "unknown.p8"
    other.write_text(generate_signing_key())
    text = fakes.credentials_file.read_text().replace('"shop.p8"', f'"{other}"')
    fakes.credentials_file.write_text(text)
    cfg = config(fakes, apns_timeout="2")
    providers = Providers(cfg.provider_credentials(), cfg.provider_settings())
    try:
        apns = apns_of(providers)
        token = apns_token()
        outcome = await send_one(apns, push(token))
        assert outcome == Failed(reason="InvalidProviderToken", permanent=True, requests=2)
        assert apns.clients_built == 2
        assert fakes.apns.recorder.count(token=token) == 2
    finally:
        await providers.aclose()


async def test_apns_an_oversized_payload_is_never_sent(fakes: Fakes, providers: Providers) -> None:
    token = apns_token()
    big = content_pb2.Content(title="x", custom_data={"pad": "y" * 5000})
    outcome = await send_one(apns_of(providers), push(token, content=big))
    assert outcome == Failed(reason="PayloadTooLarge", permanent=True, requests=0)
    assert fakes.apns.recorder.count() == 0


async def test_apns_a_lost_connection_is_retryable_and_one_request(
    fakes: Fakes, providers: Providers
) -> None:
    token = apns_token()
    fakes.apns.faults.add(FaultSpec("drop_connection", token=token, times=1))
    outcome = await send_one(apns_of(providers), push(token))
    assert isinstance(outcome, RetryAfter)
    assert outcome.reason.startswith("Connection:")
    assert fakes.apns.recorder.count(token=token) == 1  # aioapns' own resend is off


# --- FCM ---------------------------------------------------------------------------------


async def test_fcm_delivers_in_chunks_one_request_per_message(
    fakes: Fakes, providers: Providers
) -> None:
    tokens = [fcm_token() for _ in range(250)]
    outcomes = await fcm_of(providers).send([push(token) for token in tokens])
    assert all(isinstance(o, Delivered) and o.requests == 1 for o in outcomes)
    names = [o.provider_id for o in outcomes if isinstance(o, Delivered)]
    assert all(name.startswith(f"projects/{PROJECTS[SHOP]}/messages/") for name in names)
    assert len(set(names)) == 250
    sends = [r for r in fakes.fcm.recorder.requests() if r.token is not None]
    assert sorted(r.token for r in sends if r.token) == sorted(tokens)


FCM_ROWS: list[tuple[dict[str, Any], Outcome]] = [
    ({"reason": "UNREGISTERED"}, TokenDead(reason="UNREGISTERED")),
    (
        {"reason": "QUOTA_EXCEEDED", "retry_after": 7},
        RetryAfter(reason="QUOTA_EXCEEDED", seconds=7.0),
    ),
    ({"reason": "UNAVAILABLE"}, RetryAfter(reason="UNAVAILABLE")),
    ({"reason": "UNAVAILABLE", "retry_after": 3}, RetryAfter(reason="UNAVAILABLE", seconds=3.0)),
    ({"reason": "INTERNAL"}, RetryAfter(reason="INTERNAL")),
    ({"reason": "SENDER_ID_MISMATCH"}, Failed(reason="SENDER_ID_MISMATCH", permanent=True)),
    # An INVALID_ARGUMENT that does not name the token is about the message.
    ({"reason": "INVALID_ARGUMENT"}, Failed(reason="INVALID_ARGUMENT", permanent=True)),
]


@pytest.mark.parametrize(("fault", "expected"), FCM_ROWS, ids=lambda v: str(v)[:40])
async def test_fcm_answer_rows_are_one_request_each(
    fakes: Fakes, providers: Providers, fault: dict[str, Any], expected: Outcome
) -> None:
    token, bystander = fcm_token(), fcm_token()
    fakes.fcm.faults.add(FaultSpec("status", token=token, **fault))
    outcomes = await fcm_of(providers).send([push(token), push(bystander)])
    assert outcomes[0] == expected
    assert isinstance(outcomes[1], Delivered)
    # 500 and 503 included: the SDK's own four resends are off.
    assert fakes.fcm.recorder.count(token=token) == 1


async def test_fcm_third_party_auth_error_is_permanent_with_the_sdks_refreshes_counted(
    fakes: Fakes, providers: Providers
) -> None:
    token = fcm_token()
    fakes.fcm.faults.add(FaultSpec("status", token=token, reason="THIRD_PARTY_AUTH_ERROR"))
    outcome = await send_one(fcm_of(providers), push(token))
    # firebase-admin refreshes its access token on a 401 and tries again, twice.
    assert outcome == Failed(reason="THIRD_PARTY_AUTH_ERROR", permanent=True, requests=3)
    assert fakes.fcm.recorder.count(token=token) == 3


async def test_fcm_a_malformed_token_is_dead(fakes: Fakes, providers: Providers) -> None:
    token = "not a token!"
    outcome = await send_one(fcm_of(providers), push(token))
    assert outcome == TokenDead(reason="INVALID_ARGUMENT")
    assert fakes.fcm.recorder.count(token=token) == 1


async def test_fcm_quota_exceeded_default_retry_after(fakes: Fakes, providers: Providers) -> None:
    token = fcm_token()
    fakes.fcm.faults.add(FaultSpec("status", token=token, status=429))
    outcome = await send_one(fcm_of(providers), push(token))
    assert outcome == RetryAfter(reason="QUOTA_EXCEEDED", seconds=60.0)
    assert fakes.fcm.recorder.count(token=token) == 1


async def test_fcm_no_answer_fails_within_its_deadline_while_other_sends_carry_on(
    fakes: Fakes, providers: Providers
) -> None:
    hung, *others = [fcm_token() for _ in range(5)]
    fakes.fcm.faults.add(FaultSpec("no_answer", token=hung))
    started = time.monotonic()
    outcomes = await fcm_of(providers).send([push(hung), *(push(t) for t in others)])
    assert outcomes[0] == RetryAfter(reason="DEADLINE_EXCEEDED")
    assert all(isinstance(o, Delivered) for o in outcomes[1:])
    assert time.monotonic() - started < 5.0
    assert fakes.fcm.recorder.count(token=hung) == 1


async def test_fcm_expired_access_token_is_renewed_by_the_sdk_and_counted(
    fakes: Fakes, providers: Providers
) -> None:
    provider = fcm_of(providers)
    assert isinstance(await send_one(provider, push(fcm_token())), Delivered)
    fakes.fcm.faults.add(FaultSpec("expired_token_window", issued_before=time.time()))
    await asyncio.sleep(0.05)
    token = fcm_token()
    outcome = await send_one(provider, push(token))
    assert isinstance(outcome, Delivered)
    assert outcome.requests == 2
    assert [r.status for r in fakes.fcm.recorder.requests(token=token)] == [401, 200]


# google-auth renews a token within 3 min 45 s of its expiry; 200 s tokens are due at once.
@pytest.mark.parametrize("fcm_token_lifetime", [200])
async def test_fcm_a_token_near_expiry_is_renewed_before_any_send_is_refused(
    fakes: Fakes, providers: Providers
) -> None:
    provider = fcm_of(providers)
    tokens = [fcm_token() for _ in range(3)]
    for token in tokens:
        assert isinstance(await send_one(provider, push(token)), Delivered)
        await asyncio.sleep(0.2)  # room for the background renewal
    recorded = fakes.fcm.recorder.requests()
    token_requests = [r for r in recorded if r.path == "/token"]
    assert len(token_requests) >= 2  # the first, fetched at open, then a renewal
    assert [fakes.fcm.recorder.requests(token=t)[0].status for t in tokens] == [200] * 3
    assert all(r.status != 401 for r in recorded)


# --- several apps ------------------------------------------------------------------------


async def test_several_apps_in_one_process_each_with_its_own_credentials(
    fakes: Fakes, providers: Providers
) -> None:
    sent: dict[str, tuple[str, str]] = {}
    jobs = []
    for app in (SHOP, NEWS):
        sent[app] = (apns_token(), fcm_token())
        jobs.append(apns_of(providers, app).send([push(sent[app][0])]))
        jobs.append(fcm_of(providers, app).send([push(sent[app][1])]))
    results = await asyncio.gather(*jobs)
    assert all(isinstance(o, Delivered) for [o] in results)

    for number, app in enumerate((SHOP, NEWS)):
        [apns_request] = fakes.apns.recorder.requests(token=sent[app][0])
        assert apns_request.header("apns-topic") == TOPICS[app]
        header = apns_request.header("authorization") or ""
        jwt_header = json.loads(_b64(header.removeprefix("bearer ").split(".")[0]))
        assert jwt_header["kid"] == f"KEY{number:07d}"
        [fcm_request] = fakes.fcm.recorder.requests(token=sent[app][1])
        assert fcm_request.path == f"/v1/projects/{PROJECTS[app]}/messages:send"


def _b64(text: str) -> bytes:
    import base64

    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@pytest.fixture(autouse=True)
def _no_leftover_firebase_apps() -> Iterator[None]:
    import firebase_admin

    yield
    assert not [name for name in firebase_admin._apps if name.startswith("pushwarden-delivery")]


async def test_fcm_a_message_firebase_admin_refuses_fails_alone_and_unsent(
    fakes: Fakes, providers: Providers
) -> None:
    # Contracts carry the Android colour as text; firebase-admin insists on #RRGGBB.
    bad = content_pb2.Content(title="Hi", android=content_pb2.AndroidOverrides(color="red"))
    good = [fcm_token(), fcm_token()]
    bad_token = fcm_token()
    outcomes = await fcm_of(providers).send(
        [push(good[0]), push(bad_token, content=bad), push(good[1])]
    )
    assert isinstance(outcomes[0], Delivered)
    assert isinstance(outcomes[2], Delivered)
    assert isinstance(outcomes[1], Failed)
    assert outcomes[1].permanent
    assert outcomes[1].requests == 0
    assert outcomes[1].reason.startswith("InvalidMessage:")
    assert fakes.fcm.recorder.count(token=bad_token) == 0
    assert [fakes.fcm.recorder.count(token=t) for t in good] == [1, 1]
