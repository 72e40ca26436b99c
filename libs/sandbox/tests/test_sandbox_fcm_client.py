"""The real, unpatched firebase-admin against the fake FCM over TLS.

Each test runs the fake on its own thread (google-auth fetches tokens with
blocking ``requests``), writes a service-account key file whose ``token_uri``
points at the fake, and asserts both what firebase-admin returned and how many
requests the fake recorded.

How many requests one send makes, with firebase-admin 7.7.0:
- success, 400, 403, 404: one;
- 429: one on the async path (httpx: not retried, Retry-After ignored); five on
  the sync path (urllib3 retries it four times, sleeping Retry-After each time);
- 500 and 503: five (the SDK retries four times; backoff is set to 0 here);
- 401: three sends and two more token requests (the SDK refreshes its access
  token and tries again, twice);
- async path (httpx, HTTP/2) transport failures: one, never retried;
- sync path (requests, HTTP/1.1) transport failures and timeouts: two (urllib3
  retries a read error once).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import firebase_admin
import google.auth.exceptions
import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from firebase_admin import exceptions, messaging

from pushwarden.sandbox import fcm
from pushwarden.sandbox.certs import client_ssl_context
from pushwarden.sandbox.core import ThreadedSandbox
from pushwarden.sandbox.faults import FaultSpec

pytestmark = pytest.mark.filterwarnings("ignore:Message.token is deprecated:DeprecationWarning")

PROJECT = "sandbox-project"
_app_names = itertools.count()


@pytest.fixture(scope="module")
def account_key() -> tuple[fcm.ServiceAccount, rsa.RSAPrivateKey]:
    return fcm.new_service_account(PROJECT)


@pytest.fixture
def fake(
    sandbox_state_dir: Path, account_key: tuple[fcm.ServiceAccount, rsa.RSAPrivateKey]
) -> Iterator[ThreadedSandbox]:
    with fcm.run_fcm_in_thread([account_key[0]], state_dir=sandbox_state_dir) as server:
        yield server


@pytest.fixture
def sa_file(
    tmp_path: Path,
    fake: ThreadedSandbox,
    account_key: tuple[fcm.ServiceAccount, rsa.RSAPrivateKey],
) -> Path:
    account, key = account_key
    return fcm.write_service_account_file(tmp_path / "sa.json", account, key, f"{fake.url}/token")


@pytest.fixture
def trusted(fake: ThreadedSandbox) -> Iterator[None]:
    with fcm.sandbox_ca_trust(fake.ca_file), fcm.firebase_retry_backoff(0):
        yield


@pytest.fixture
async def fb_app(fake: ThreadedSandbox, sa_file: Path, trusted: None) -> AsyncIterator[Any]:
    app = fcm.open_firebase_app(
        fake.url, sa_file, name=f"async-{next(_app_names)}", http_timeout=10
    )
    try:
        yield app
    finally:
        await fcm.close_firebase_app(app)


@pytest.fixture
def sync_app(fake: ThreadedSandbox, sa_file: Path, trusted: None) -> Iterator[Any]:
    app = fcm.open_firebase_app(fake.url, sa_file, name=f"sync-{next(_app_names)}", http_timeout=10)
    try:
        yield app
    finally:
        firebase_admin.delete_app(app)


def sends(fake: ThreadedSandbox, token: str | None = None) -> int:
    """Send requests the fake recorded (for ``token``, or all)."""
    return sum(1 for r in fake.recorder.requests(token=token) if r.path.endswith("messages:send"))


def token_requests(fake: ThreadedSandbox) -> int:
    return sum(1 for r in fake.recorder.requests() if r.path == "/token")


def message(token: str, **kwargs: Any) -> messaging.Message:
    return messaging.Message(token=token, data={"kind": "test"}, **kwargs)


# -- the service-account flow ---------------------------------------------------------------


async def test_service_account_flow_sends_chunks_with_send_each_async(
    fake: ThreadedSandbox, fb_app: Any
) -> None:
    tokens = [f"tok-{n}" for n in range(250)]
    results = []
    for start in range(0, len(tokens), 100):
        chunk = [message(t) for t in tokens[start : start + 100]]
        results.extend((await messaging.send_each_async(chunk, app=fb_app)).responses)
    assert all(r.success for r in results)
    assert token_requests(fake) == 1
    assert sends(fake) == 250
    recorded = {r.token: r for r in fake.recorder.requests() if r.token}
    assert [recorded[t].message_name for t in tokens] == [r.message_id for r in results]
    assert {recorded[t].http_version for t in tokens} == {"2"}
    assert recorded["tok-0"].header("authorization") is not None
    body = json.loads(recorded["tok-7"].body)
    assert body == {"message": {"token": "tok-7", "data": {"kind": "test"}}}


def test_service_account_flow_sends_with_sync_send_over_http1(
    fake: ThreadedSandbox, sync_app: Any
) -> None:
    name = messaging.send(
        message(
            "sync-tok",
            android=messaging.AndroidConfig(priority="high", ttl=3.5, collapse_key="k"),
            apns=messaging.APNSConfig(
                headers={"apns-priority": "10"},
                payload=messaging.APNSPayload(aps=messaging.Aps(badge=1)),
            ),
        ),
        app=sync_app,
    )
    assert name.startswith(f"projects/{PROJECT}/messages/")
    assert messaging.send(message("sync-tok"), dry_run=True, app=sync_app).endswith(
        "/fake_message_id"
    )
    [first, _] = fake.recorder.requests(token="sync-tok")
    assert (first.http_version, first.message_name) == ("1.1", name)
    assert json.loads(first.body)["message"]["android"]["ttl"] == "3.500000000s"
    assert token_requests(fake) == 1


def test_assertion_signed_with_the_wrong_key_is_refused(
    fake: ThreadedSandbox,
    tmp_path: Path,
    account_key: tuple[fcm.ServiceAccount, rsa.RSAPrivateKey],
    trusted: None,
) -> None:
    _, stranger_key = fcm.new_service_account(PROJECT)
    path = fcm.write_service_account_file(
        tmp_path / "wrong.json", account_key[0], stranger_key, f"{fake.url}/token"
    )
    app = fcm.open_firebase_app(fake.url, path, name=f"wrong-{next(_app_names)}")
    try:
        with pytest.raises(google.auth.exceptions.RefreshError, match="Invalid JWT Signature"):
            messaging.send(message("tok"), app=app)
    finally:
        firebase_admin.delete_app(app)
    [refused] = fake.recorder.requests()
    assert (refused.path, refused.status, refused.reason) == ("/token", 400, "invalid_grant")
    assert sends(fake) == 0


async def test_a_revoked_access_token_is_refreshed_by_the_client(
    fake: ThreadedSandbox, fb_app: Any
) -> None:
    assert (await messaging.send_each_async([message("a")], app=fb_app)).success_count == 1
    fake.app.revoke_access_tokens()
    assert (await messaging.send_each_async([message("b")], app=fb_app)).success_count == 1
    assert [r.status for r in fake.recorder.requests(token="b")] == [401, 200]
    assert token_requests(fake) == 2


async def test_an_expired_token_window_makes_the_client_fetch_a_new_token(
    fake: ThreadedSandbox, fb_app: Any
) -> None:
    assert (await messaging.send_each_async([message("a")], app=fb_app)).success_count == 1
    fake.faults.add(FaultSpec(effect="expired_token_window", issued_before=time.time()))
    assert (await messaging.send_each_async([message("b")], app=fb_app)).success_count == 1
    assert [r.status for r in fake.recorder.requests(token="b")] == [401, 200]
    assert token_requests(fake) == 2


async def test_a_project_the_account_does_not_own_is_permission_denied(
    fake: ThreadedSandbox, sa_file: Path, trusted: None
) -> None:
    app = fcm.open_firebase_app(
        fake.url, sa_file, name=f"other-{next(_app_names)}", project_id="someone-else"
    )
    try:
        [result] = (await messaging.send_each_async([message("x")], app=app)).responses
    finally:
        await fcm.close_firebase_app(app)
    assert isinstance(result.exception, exceptions.PermissionDeniedError)
    [refused] = fake.recorder.requests()[1:]
    assert (refused.path, refused.status) == ("/v1/projects/someone-else/messages:send", 403)


# -- every FCM error code ---------------------------------------------------------------------

# code, HTTP status, firebase-admin exception class, send requests, extra token requests
ERROR_ROWS = [
    ("UNREGISTERED", 404, messaging.UnregisteredError, 1, 0),
    ("INVALID_ARGUMENT", 400, exceptions.InvalidArgumentError, 1, 0),
    ("QUOTA_EXCEEDED", 429, messaging.QuotaExceededError, 1, 0),
    ("UNAVAILABLE", 503, exceptions.UnavailableError, 5, 0),
    ("INTERNAL", 500, exceptions.InternalError, 5, 0),
    ("THIRD_PARTY_AUTH_ERROR", 401, messaging.ThirdPartyAuthError, 3, 2),
    ("SENDER_ID_MISMATCH", 403, messaging.SenderIdMismatchError, 1, 0),
]


@pytest.mark.parametrize(
    ("code", "status", "exc_type", "requests", "refreshes"),
    ERROR_ROWS,
    ids=[r[0] for r in ERROR_ROWS],
)
async def test_each_fcm_error_code_reaches_send_each_async_as_its_exception(
    fake: ThreadedSandbox,
    fb_app: Any,
    code: str,
    status: int,
    exc_type: type[exceptions.FirebaseError],
    requests: int,
    refreshes: int,
) -> None:
    fake.faults.add(
        FaultSpec(effect="status", token="doomed", status=status, reason=code, retry_after=7)
    )
    batch = await messaging.send_each_async([message("doomed"), message("fine")], app=fb_app)
    failed, ok = batch.responses
    assert ok.success
    assert type(failed.exception) is exc_type
    assert failed.exception.http_response.status_code == status
    if code == "QUOTA_EXCEEDED":
        assert failed.exception.http_response.headers["retry-after"] == "7"
    assert sends(fake, "doomed") == requests
    assert sends(fake, "fine") == 1
    assert token_requests(fake) == 1 + refreshes
    assert {r.reason for r in fake.recorder.requests(token="doomed")} == {code}


@pytest.mark.parametrize(
    ("code", "status", "exc_type", "requests", "refreshes"),
    ERROR_ROWS,
    ids=[r[0] for r in ERROR_ROWS],
)
def test_each_fcm_error_code_reaches_sync_send_as_its_exception(
    fake: ThreadedSandbox,
    sync_app: Any,
    code: str,
    status: int,
    exc_type: type[exceptions.FirebaseError],
    requests: int,
    refreshes: int,
) -> None:
    # Unlike the async path, urllib3 honours Retry-After on a 429: four retries,
    # each after Retry-After seconds (1 s here).
    quota = code == "QUOTA_EXCEEDED"
    retry_after = 1 if quota else None
    fake.faults.add(
        FaultSpec(
            effect="status", token="doomed", status=status, reason=code, retry_after=retry_after
        )
    )
    started = time.monotonic()
    with pytest.raises(exc_type) as caught:
        messaging.send(message("doomed"), app=sync_app)
    assert type(caught.value) is exc_type
    if quota:
        assert caught.value.http_response.headers["Retry-After"] == "1"
        assert time.monotonic() - started >= 3.9
    assert sends(fake, "doomed") == (5 if quota else requests)
    assert token_requests(fake) == 1 + refreshes


async def test_a_probabilistic_fault_hits_a_seeded_share_of_a_prefix(
    fake: ThreadedSandbox, fb_app: Any
) -> None:
    spec = fake.faults.add(
        FaultSpec(
            effect="status",
            token_prefix="p-",
            status=404,
            reason="UNREGISTERED",
            probability=0.3,
            seed=5,
        )
    )
    messages = [message(f"p-{n}") for n in range(100)] + [message("other")]
    batch = await messaging.send_each_async(messages, app=fb_app)
    hits = fake.faults.hits()[spec.id or 0]
    assert 10 <= hits <= 50
    unregistered = [
        r for r in batch.responses if isinstance(r.exception, messaging.UnregisteredError)
    ]
    assert len(unregistered) == hits
    assert batch.success_count == 101 - hits
    assert sends(fake) == 101
    assert sum(1 for r in fake.recorder.requests() if r.fault == "status") == hits


# -- slow, silent and broken answers ------------------------------------------------------------


async def warm_up(app: Any) -> None:
    """One send, so the token is fetched and the HTTP/2 connection is open."""
    assert (await messaging.send_each_async([message("warm-up")], app=app)).success_count == 1


async def test_no_answer_leaves_the_client_waiting_until_its_timeout_while_others_complete(
    fake: ThreadedSandbox, sa_file: Path, trusted: None
) -> None:
    # Generous timeout and delay: the other sends must finish first even on a busy machine.
    app = fcm.open_firebase_app(
        fake.url, sa_file, name=f"timeout-{next(_app_names)}", http_timeout=3
    )
    try:
        await warm_up(app)
        fake.faults.add(FaultSpec(effect="no_answer", token="silent"))
        started = time.monotonic()
        silent = asyncio.create_task(messaging.send_each_async([message("silent")], app=app))
        await asyncio.sleep(0.2)
        others = await messaging.send_each_async([message("a"), message("b")], app=app)
        assert others.success_count == 2
        assert not silent.done()
        [result] = (await silent).responses
        elapsed = time.monotonic() - started
    finally:
        await fcm.close_firebase_app(app)
    assert isinstance(result.exception, exceptions.DeadlineExceededError)
    assert 2.8 <= elapsed < 30
    assert sends(fake, "silent") == 1
    connections = {r.connection_id for r in fake.recorder.requests() if r.token}
    assert len(connections) == 1, "the silent stream and the others shared one connection"


async def test_a_delayed_answer_arrives_after_the_others(
    fake: ThreadedSandbox, fb_app: Any
) -> None:
    await warm_up(fb_app)
    fake.faults.add(FaultSpec(effect="delay", token="slow", seconds=1.5))
    started = time.monotonic()
    slow = asyncio.create_task(messaging.send_each_async([message("slow")], app=fb_app))
    await asyncio.sleep(0.1)
    assert (await messaging.send_each_async([message("quick")], app=fb_app)).success_count == 1
    assert not slow.done()
    assert (await slow).success_count == 1
    assert time.monotonic() - started >= 1.45
    assert sends(fake, "slow") == 1


@pytest.mark.parametrize("effect", ["reset_stream", "drop_connection", "goaway"])
async def test_broken_answers_fail_the_send_once_and_the_next_send_works(
    fake: ThreadedSandbox, fb_app: Any, effect: str
) -> None:
    await warm_up(fb_app)
    fake.faults.add(FaultSpec(effect=effect, token="broken"))
    [result] = (await messaging.send_each_async([message("broken")], app=fb_app)).responses
    assert isinstance(result.exception, exceptions.UnknownError)
    assert isinstance(result.exception.cause, httpx.RemoteProtocolError)
    assert (await messaging.send_each_async([message("after")], app=fb_app)).success_count == 1
    # A GOAWAY whose last stream id excludes the request tells the client it was not
    # processed: httpx retries it once on a new connection, which gets the GOAWAY too.
    assert sends(fake, "broken") == (2 if effect == "goaway" else 1)
    broken = fake.recorder.requests(token="broken")[-1]
    [after] = fake.recorder.requests(token="after")
    assert broken.fault == effect
    reused = after.connection_id == broken.connection_id
    assert reused == (effect == "reset_stream"), "only a reset stream keeps the connection"


@pytest.mark.parametrize("effect", ["reset_stream", "drop_connection", "goaway"])
def test_sync_send_retries_a_broken_http1_answer_once(
    fake: ThreadedSandbox, sync_app: Any, effect: str
) -> None:
    fake.faults.add(FaultSpec(effect=effect, token="broken", times=1))
    assert messaging.send(message("broken"), app=sync_app).startswith("projects/")
    assert [r.fault for r in fake.recorder.requests(token="broken")] == [effect, None]


def test_sync_send_times_out_on_no_answer_after_one_retry(
    fake: ThreadedSandbox, sa_file: Path, trusted: None
) -> None:
    app = fcm.open_firebase_app(
        fake.url, sa_file, name=f"sync-to-{next(_app_names)}", http_timeout=1
    )
    try:
        fake.faults.add(FaultSpec(effect="no_answer", token="silent"))
        # requests reports the timed-out retry as "max retries exceeded", a
        # ConnectionError, which firebase-admin turns into UnavailableError.
        with pytest.raises(exceptions.UnavailableError, match="Read timed out"):
            messaging.send(message("silent"), app=app)
    finally:
        firebase_admin.delete_app(app)
    assert sends(fake, "silent") == 2


# -- validation -------------------------------------------------------------------------------


async def test_firebase_admin_refuses_two_targets_before_sending(
    fake: ThreadedSandbox, fb_app: Any
) -> None:
    with pytest.raises(ValueError, match="Exactly one of"):
        await messaging.send_each_async([messaging.Message(token="a", topic="b")], app=fb_app)
    with pytest.raises(ValueError, match="non-string values"):
        await messaging.send_each_async([messaging.Message(token="a", data={"n": 1})], app=fb_app)
    assert sends(fake) == 0


async def test_the_fake_itself_refuses_what_the_sdk_would_not_send(
    fake: ThreadedSandbox, sa_file: Path, trusted: None
) -> None:
    # A token from the real google-auth flow, then raw HTTP/2 sends of bodies
    # firebase-admin would never build.
    credential = firebase_admin.credentials.Certificate(str(sa_file))
    access = await asyncio.to_thread(credential.get_access_token)
    url = f"{fake.url}/v1/projects/{PROJECT}/messages:send"
    headers = {"authorization": f"Bearer {access.access_token}"}
    bodies = {
        "two targets": {"message": {"token": "a", "topic": "b"}},
        "non-string data": {"message": {"token": "a", "data": {"n": 1}}},
    }
    async with httpx.AsyncClient(http2=True, verify=fcm_ssl(fake)) as client:
        answers = {
            name: await client.post(url, json=body, headers=headers)
            for name, body in bodies.items()
        }
    for answer in answers.values():
        assert answer.status_code == 400
        assert answer.json()["error"]["status"] == "INVALID_ARGUMENT"
        assert answer.http_version == "HTTP/2"
    assert "Oneof field 'target'" in answers["two targets"].json()["error"]["message"]
    assert "(TYPE_STRING), 1" in answers["non-string data"].json()["error"]["message"]
    assert sends(fake) == 2


def fcm_ssl(fake: ThreadedSandbox) -> ssl.SSLContext:
    return client_ssl_context(fake.ca_file)


# -- control routes and the command line ----------------------------------------------------------


@pytest.mark.parametrize(
    "given",
    [{"status": 404, "reason": "UNREGISTERED"}, {"reason": "UNREGISTERED"}, {"status": 404}],
    ids=["both", "reason", "status"],
)
async def test_faults_added_through_the_control_route_apply(
    fake: ThreadedSandbox, fb_app: Any, given: dict[str, Any]
) -> None:
    spec = {"effect": "status", "token_prefix": "gone-", **given}
    async with httpx.AsyncClient(verify=fcm_ssl(fake)) as client:
        added = await client.post(f"{fake.url}/_sandbox/faults", json=spec)
        assert added.status_code < 300
        batch = await messaging.send_each_async([message("gone-1"), message("here")], app=fb_app)
        counted = await client.get(f"{fake.url}/_sandbox/requests", params={"token": "gone-1"})
    assert isinstance(batch.responses[0].exception, messaging.UnregisteredError)
    assert batch.responses[1].success
    assert counted.status_code == 200
    assert "gone-1" in counted.text


def test_the_command_line_serves_the_fcm_fake_and_stops_on_sigterm(
    tmp_path: Path, account_key: tuple[fcm.ServiceAccount, rsa.RSAPrivateKey]
) -> None:
    account, key = account_key
    sa = fcm.write_service_account_file(tmp_path / "sa.json", account, key, "https://unused/token")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pushwarden.sandbox",
            "fcm",
            "--port",
            "0",
            "--state-dir",
            str(tmp_path),
            "--service-account",
            str(sa),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = json.loads(proc.stdout.readline())
        assert line["provider"] == "fcm"
        credential = firebase_admin.credentials.Certificate(
            str(fcm.write_service_account_file(sa, account, key, f"{line['url']}/token"))
        )
        with fcm.sandbox_ca_trust(line["ca_file"]):
            access = credential.get_access_token()
        with httpx.Client(verify=client_ssl_context(line["ca_file"])) as client:
            sent = client.post(
                f"{line['url']}/v1/projects/{PROJECT}/messages:send",
                json={"message": {"token": "cli"}},
                headers={"authorization": f"Bearer {access.access_token}"},
            )
        assert sent.status_code == 200
        assert sent.json()["name"].startswith(f"projects/{PROJECT}/messages/")
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
