"""The fake FCM app in process: token endpoint, auth, validation and faults via ``handle``.

No network here: each test builds a :class:`Request` and reads the action the
app returns, and what it recorded. The real firebase-admin against the fake over
TLS is in ``test_sandbox_fcm_client.py``.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from pushwarden.sandbox import fcm
from pushwarden.sandbox.__main__ import build_parser
from pushwarden.sandbox.certs import generate_tls_material
from pushwarden.sandbox.core import (
    Delay,
    DropConnection,
    GoAway,
    NoAnswer,
    Request,
    ResetStream,
    Response,
)
from pushwarden.sandbox.faults import FaultPlan, FaultSpec, parse_specs

PROJECT = "unit-project"
SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
SEND_PATH = f"/v1/projects/{PROJECT}/messages:send"


class Clock:
    """A settable clock for the app."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def account_key() -> tuple[fcm.ServiceAccount, rsa.RSAPrivateKey]:
    return fcm.new_service_account(PROJECT)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def app(account_key: tuple[fcm.ServiceAccount, rsa.RSAPrivateKey], clock: Clock) -> fcm.FcmApp:
    return fcm.FcmApp([account_key[0]], token_lifetime=600, clock=clock)


def request(path: str, body: bytes, headers: dict[str, str] | None = None) -> Request:
    return Request(
        method="POST",
        path=path,
        headers=tuple((headers or {}).items()),
        body=body,
        connection_id=1,
        stream_id=1,
        http_version="2",
        received_at=time.time(),
    )


def assertion(key: rsa.RSAPrivateKey, email: str, now: float, **overrides: Any) -> str:
    claims: dict[str, Any] = {
        "iss": email,
        "aud": "https://oauth2.googleapis.com/token",
        "iat": int(now),
        "exp": int(now) + 3600,
        "scope": f"https://www.googleapis.com/auth/cloud-platform {SCOPE}",
    }
    claims.update(overrides)
    return jwt.encode(claims, key, algorithm="RS256")


def token_request(grant: str) -> Request:
    form = urlencode({"grant_type": fcm.JWT_BEARER_GRANT, "assertion": grant}).encode()
    return request("/token", form, {"content-type": "application/x-www-form-urlencoded"})


def answer(action: object) -> tuple[int, dict[str, Any], dict[str, str]]:
    assert isinstance(action, Response)
    return action.status, json.loads(action.body), dict(action.headers)


async def access_token(app: fcm.FcmApp, key: rsa.RSAPrivateKey, clock: Clock) -> str:
    email = next(iter(app.accounts))
    status, body, _ = answer(await app.handle(token_request(assertion(key, email, clock.now))))
    assert status == 200
    return str(body["access_token"])


async def send(app: fcm.FcmApp, token: str, body: Any, project: str = PROJECT) -> Any:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    path = f"/v1/projects/{project}/messages:send"
    return await app.handle(request(path, raw, {"authorization": f"Bearer {token}"}))


# -- token endpoint ----------------------------------------------------------------------


async def test_token_endpoint_issues_bearer_token_with_expiry(
    app: fcm.FcmApp, account_key: tuple[fcm.ServiceAccount, rsa.RSAPrivateKey], clock: Clock
) -> None:
    account, key = account_key
    status, body, _ = answer(
        await app.handle(token_request(assertion(key, account.client_email, clock.now)))
    )
    assert status == 200
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 600
    assert body["access_token"].startswith("ya29.")
    [recorded] = app.recorder.requests()
    assert (recorded.path, recorded.status, recorded.token) == ("/token", 200, None)


@pytest.mark.parametrize(
    ("overrides", "error", "fragment"),
    [
        ({"aud": "https://example.com/token"}, "invalid_grant", "audience"),
        ({"iss": "nobody@example.iam.gserviceaccount.com"}, "invalid_grant", "account not found"),
        ({"exp": 1_800_000_000 + 7200}, "invalid_grant", "short-lived"),
        (
            {"iat": 1_800_000_000 - 7200, "exp": 1_800_000_000 - 3600},
            "invalid_grant",
            "short-lived",
        ),
        ({"scope": "https://www.googleapis.com/auth/userinfo.email"}, "invalid_scope", "scope"),
    ],
    ids=["audience", "issuer", "lifetime", "expired", "scope"],
)
async def test_token_endpoint_refuses_bad_claims(
    app: fcm.FcmApp,
    account_key: tuple[fcm.ServiceAccount, rsa.RSAPrivateKey],
    clock: Clock,
    overrides: dict[str, Any],
    error: str,
    fragment: str,
) -> None:
    account, key = account_key
    grant = assertion(key, account.client_email, clock.now, **overrides)
    status, body, _ = answer(await app.handle(token_request(grant)))
    assert (status, body["error"]) == (400, error)
    assert fragment in body["error_description"]
    assert app.issued_tokens() == 0


async def test_token_endpoint_refuses_assertion_signed_with_another_key(
    app: fcm.FcmApp, account_key: tuple[fcm.ServiceAccount, rsa.RSAPrivateKey], clock: Clock
) -> None:
    _, stranger = fcm.new_service_account(PROJECT)
    grant = assertion(stranger, account_key[0].client_email, clock.now)
    status, body, _ = answer(await app.handle(token_request(grant)))
    assert (status, body) == (
        400,
        {"error": "invalid_grant", "error_description": "Invalid JWT Signature."},
    )


async def test_token_endpoint_refuses_other_grant_types_and_missing_assertion(
    app: fcm.FcmApp,
) -> None:
    wrong = request("/token", b"grant_type=client_credentials", {})
    status, body, _ = answer(await app.handle(wrong))
    assert (status, body["error"]) == (400, "unsupported_grant_type")
    missing = request("/token", urlencode({"grant_type": fcm.JWT_BEARER_GRANT}).encode(), {})
    status, body, _ = answer(await app.handle(missing))
    assert (status, body["error"]) == (400, "invalid_request")


# -- authentication and project -------------------------------------------------------------


async def test_send_without_or_with_unknown_bearer_is_unauthenticated(app: fcm.FcmApp) -> None:
    body = {"message": {"token": "abc"}}
    missing = await app.handle(request(SEND_PATH, json.dumps(body).encode(), {}))
    status, payload, headers = answer(missing)
    assert (status, payload["error"]["status"]) == (401, "UNAUTHENTICATED")
    assert headers["www-authenticate"].startswith("Bearer")
    status, payload, _ = answer(await send(app, "ya29.never-issued", body))
    assert (status, payload["error"]["status"]) == (401, "UNAUTHENTICATED")
    assert [r.status for r in app.recorder.requests()] == [401, 401]


async def test_access_token_expires_and_can_be_revoked(
    app: fcm.FcmApp, account_key: tuple[fcm.ServiceAccount, rsa.RSAPrivateKey], clock: Clock
) -> None:
    token = await access_token(app, account_key[1], clock)
    body = {"message": {"token": "abc"}}
    assert answer(await send(app, token, body))[0] == 200
    clock.now += 601
    status, payload, _ = answer(await send(app, token, body))
    assert status == 401
    assert payload["error"]["details"][0]["reason"] == "ACCESS_TOKEN_EXPIRED"
    fresh = await access_token(app, account_key[1], clock)
    assert answer(await send(app, fresh, body))[0] == 200
    assert app.revoke_access_tokens() == 2
    assert answer(await send(app, fresh, body))[0] == 401


async def test_send_to_another_project_is_permission_denied(
    app: fcm.FcmApp, account_key: tuple[fcm.ServiceAccount, rsa.RSAPrivateKey], clock: Clock
) -> None:
    token = await access_token(app, account_key[1], clock)
    status, payload, _ = answer(await send(app, token, {"message": {"token": "abc"}}, "other"))
    assert (status, payload["error"]["status"]) == (403, "PERMISSION_DENIED")
    assert "cloudmessaging.messages.create" in payload["error"]["message"]


# -- success -------------------------------------------------------------------------------


async def test_send_answers_unique_message_names_and_records_them(
    app: fcm.FcmApp, account_key: tuple[fcm.ServiceAccount, rsa.RSAPrivateKey], clock: Clock
) -> None:
    token = await access_token(app, account_key[1], clock)
    names = []
    for target in (
        {"token": "tok-1"},
        {"topic": "news"},
        {"condition": "'a' in topics && 'b' in topics"},
    ):
        status, payload, _ = answer(
            await send(app, token, {"message": {**target, "data": {"k": "v"}}})
        )
        assert status == 200
        names.append(payload["name"])
    assert len(set(names)) == 3
    assert all(n.startswith(f"projects/{PROJECT}/messages/") for n in names)
    sends = [r for r in app.recorder.requests() if r.path == SEND_PATH]
    assert [r.message_name for r in sends] == names
    assert [r.token for r in sends] == ["tok-1", None, None]
    assert app.recorder.count(message_name=names[0]) == 1


async def test_validate_only_answers_the_fake_message_id(
    app: fcm.FcmApp, account_key: tuple[fcm.ServiceAccount, rsa.RSAPrivateKey], clock: Clock
) -> None:
    token = await access_token(app, account_key[1], clock)
    body = {"message": {"token": "tok-1"}, "validate_only": True}
    status, payload, _ = answer(await send(app, token, body))
    assert (status, payload) == (200, {"name": f"projects/{PROJECT}/messages/fake_message_id"})


# -- validation ------------------------------------------------------------------------------

VALID_FULL_MESSAGE: dict[str, Any] = {
    "token": "dGVzdA:APA91bH-token_1",
    "notification": {"title": "Hi", "body": "There", "image": "https://example.com/i.png"},
    "data": {"order": "42"},
    "android": {
        "priority": "high",
        "ttl": "3.5s",
        "collapse_key": "orders",
        "data": {"x": "y"},
        "notification": {
            "channel_id": "orders",
            "color": "#ff0000",
            "notification_priority": "PRIORITY_HIGH",
        },
        "fcm_options": {"analytics_label": "label-1"},
    },
    "apns": {
        "headers": {"apns-priority": "10", "apns-push-type": "alert", "apns-expiration": "0"},
        "payload": {"aps": {"alert": {"title": "Hi"}, "badge": 1}, "custom": 1},
    },
    "webpush": {
        "headers": {"TTL": "60", "Urgency": "high"},
        "data": {"a": "b"},
        "notification": {"title": "Hi", "actions": []},
        "fcm_options": {"link": "https://example.com/o/42"},
    },
    "fcm_options": {"analytics_label": "campaign_7"},
}


def test_a_full_message_with_every_section_is_valid() -> None:
    send = fcm.validate_send_body({"message": VALID_FULL_MESSAGE, "validateOnly": False})
    assert (send.target_kind, send.token, send.validate_only) == (
        "token",
        "dGVzdA:APA91bH-token_1",
        False,
    )


@pytest.mark.parametrize(
    ("message", "fragment", "fcm_detail"),
    [
        ({"token": "a", "topic": "b"}, "Oneof field 'target' is already set", False),
        ({"data": {"k": "v"}}, "Recipient of the message is not set", True),
        ({"token": "a", "data": {"n": 1}}, "'message.data[0].value' (TYPE_STRING), 1", False),
        ({"token": "a", "data": {"from": "x"}}, "Invalid data payload key: from", True),
        ({"token": "a", "data": {"google.x": "y"}}, "Invalid data payload key", True),
        ({"token": "a", "bogus": 1}, 'Unknown name "bogus"', False),
        ({"token": "not a token!"}, "not a valid FCM registration token", True),
        ({"topic": "bad topic"}, "Invalid topic name", True),
        ({"condition": "nonsense"}, "Invalid condition", True),
        ({"token": "a", "android": {"priority": "urgent"}}, "message.android.priority", False),
        ({"token": "a", "android": {"ttl": "3.5"}}, "message.android.ttl", False),
        ({"token": "a", "android": {"ttl": "2419201s"}}, "ttl", True),
        ({"token": "a", "android": {"notification": {"color": "red"}}}, "#RRGGBB", True),
        ({"token": "a", "android": {"data": {"k": True}}}, "message.android.data[0].value", False),
        ({"token": "a", "apns": {"headers": {"apns-priority": "7"}}}, "APNs priority", True),
        ({"token": "a", "apns": {"payload": {"aps": "alert"}}}, "message.apns.payload.aps", False),
        ({"token": "a", "apns": {"payload": {"aps": {}, "x": "y" * 5000}}}, "too big", True),
        ({"token": "a", "webpush": {"fcm_options": {"link": "http://x"}}}, "HTTPS", True),
        ({"token": "a", "webpush": {"headers": {"Urgency": "now"}}}, "Urgency", True),
        ({"token": "a", "data": {"k": "v" * 4100}}, "too big", True),
        ({"token": "a", "fcm_options": {"analytics_label": "has space"}}, "analytics label", True),
    ],
)
async def test_invalid_messages_are_refused_as_fcm_refuses_them(
    app: fcm.FcmApp,
    account_key: tuple[fcm.ServiceAccount, rsa.RSAPrivateKey],
    clock: Clock,
    message: dict[str, Any],
    fragment: str,
    fcm_detail: bool,
) -> None:
    token = await access_token(app, account_key[1], clock)
    status, payload, _ = answer(await send(app, token, {"message": message}))
    error = payload["error"]
    assert (status, error["code"], error["status"]) == (400, 400, "INVALID_ARGUMENT")
    assert fragment in error["message"]
    codes = [
        d.get("errorCode") for d in error.get("details", ()) if d["@type"] == fcm.FCM_ERROR_TYPE
    ]
    assert codes == (["INVALID_ARGUMENT"] if fcm_detail else [])
    [recorded] = [r for r in app.recorder.requests() if r.path == SEND_PATH]
    assert (recorded.status, recorded.reason) == (400, "INVALID_ARGUMENT")


async def test_malformed_json_and_missing_message_are_invalid(
    app: fcm.FcmApp, account_key: tuple[fcm.ServiceAccount, rsa.RSAPrivateKey], clock: Clock
) -> None:
    token = await access_token(app, account_key[1], clock)
    status, payload, _ = answer(await send(app, token, b"{not json"))
    assert (status, payload["error"]["status"]) == (400, "INVALID_ARGUMENT")
    assert "Invalid JSON payload received" in payload["error"]["message"]
    status, payload, _ = answer(await send(app, token, {"validate_only": True}))
    assert status == 400


async def test_unknown_routes_are_not_found(app: fcm.FcmApp) -> None:
    status, payload, _ = answer(await app.handle(request("/v1/nothing", b"", {})))
    assert (status, payload["error"]["status"]) == (404, "NOT_FOUND")


# -- faults ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "status", "google_status"),
    [
        ("UNREGISTERED", 404, "NOT_FOUND"),
        ("INVALID_ARGUMENT", 400, "INVALID_ARGUMENT"),
        ("QUOTA_EXCEEDED", 429, "RESOURCE_EXHAUSTED"),
        ("UNAVAILABLE", 503, "UNAVAILABLE"),
        ("INTERNAL", 500, "INTERNAL"),
        ("THIRD_PARTY_AUTH_ERROR", 401, "UNAUTHENTICATED"),
        ("SENDER_ID_MISMATCH", 403, "PERMISSION_DENIED"),
    ],
)
async def test_status_faults_answer_in_googles_error_format(
    app: fcm.FcmApp,
    account_key: tuple[fcm.ServiceAccount, rsa.RSAPrivateKey],
    clock: Clock,
    code: str,
    status: int,
    google_status: str,
) -> None:
    token = await access_token(app, account_key[1], clock)
    # A bare status names its FCM code; the reason is given explicitly on the odd rows.
    spec = FaultSpec(
        effect="status", token="doomed", status=status, reason=code if status % 2 else None
    )
    app.faults.add(spec)
    got_status, payload, headers = answer(await send(app, token, {"message": {"token": "doomed"}}))
    assert got_status == status
    assert payload["error"]["status"] == google_status
    assert payload["error"]["details"] == [{"@type": fcm.FCM_ERROR_TYPE, "errorCode": code}]
    assert ("retry-after" in headers) == (code == "QUOTA_EXCEEDED")
    assert answer(await send(app, token, {"message": {"token": "healthy"}}))[0] == 200
    [recorded] = app.recorder.requests(token="doomed")
    assert (recorded.status, recorded.reason, recorded.fault) == (status, code, "status")


async def test_quota_exceeded_carries_the_chosen_retry_after(
    app: fcm.FcmApp, account_key: tuple[fcm.ServiceAccount, rsa.RSAPrivateKey], clock: Clock
) -> None:
    token = await access_token(app, account_key[1], clock)
    app.faults.add(
        FaultSpec(effect="status", token_prefix="q-", status=429, retry_after=17, times=1)
    )
    _, _, headers = answer(await send(app, token, {"message": {"token": "q-1"}}))
    assert headers["retry-after"] == "17"
    assert answer(await send(app, token, {"message": {"token": "q-1"}}))[0] == 200


async def test_transport_faults_become_actions_for_the_core(
    app: fcm.FcmApp, account_key: tuple[fcm.ServiceAccount, rsa.RSAPrivateKey], clock: Clock
) -> None:
    token = await access_token(app, account_key[1], clock)
    effects = {
        "delay": Delay,
        "no_answer": NoAnswer,
        "reset_stream": ResetStream,
        "drop_connection": DropConnection,
        "goaway": GoAway,
    }
    for effect in effects:
        extra = {"seconds": 0.5} if effect == "delay" else {}
        app.faults.add(FaultSpec(effect=effect, token=f"t-{effect}", **extra))  # type: ignore[arg-type]
    for effect, kind in effects.items():
        action = await send(app, token, {"message": {"token": f"t-{effect}"}})
        assert isinstance(action, kind)
    delayed = await send(app, token, {"message": {"token": "t-delay"}})
    assert isinstance(delayed, Delay)
    assert answer(delayed.then)[0] == 200
    recorded = {r.token: r for r in app.recorder.requests() if r.token}
    assert recorded["t-delay"].status == 200
    assert recorded["t-delay"].message_name is not None
    assert recorded["t-no_answer"].status is None
    assert recorded["t-no_answer"].fault == "no_answer"


async def test_expired_token_window_refuses_tokens_issued_before_it(
    app: fcm.FcmApp, account_key: tuple[fcm.ServiceAccount, rsa.RSAPrivateKey], clock: Clock
) -> None:
    old = await access_token(app, account_key[1], clock)
    app.faults.add(FaultSpec(effect="expired_token_window", issued_before=clock.now + 1))
    status, payload, _ = answer(await send(app, old, {"message": {"token": "abc"}}))
    assert (status, payload["error"]["status"]) == (401, "UNAUTHENTICATED")
    clock.now += 2
    fresh = await access_token(app, account_key[1], clock)
    assert answer(await send(app, fresh, {"message": {"token": "abc"}}))[0] == 200


# -- command-line configuration --------------------------------------------------------------


def test_cli_generates_a_demo_service_account_once_and_loads_faults(
    tmp_path: Path, sandbox_state_dir: Path
) -> None:
    material = generate_tls_material(sandbox_state_dir)
    faults_file = tmp_path / "faults.json"
    faults_file.write_text(json.dumps([{"effect": "status", "token": "x", "status": 404}]))
    argv = ["fcm", "--port", "50999", "--state-dir", str(tmp_path), "--faults", str(faults_file)]
    first = fcm.build_app(build_parser().parse_args(argv), material)
    key_file = tmp_path / "fcm-service-account.json"
    info = json.loads(key_file.read_text())
    assert info["token_uri"] == "https://127.0.0.1:50999/token"
    assert info["type"] == "service_account"
    assert list(first.accounts) == [info["client_email"]]
    assert len(first.faults) == 1
    assert first.announce["service_account_files"] == [str(key_file)]
    argv = ["fcm", "--port", "51000", "--state-dir", str(tmp_path), "--token-lifetime", "60"]
    second = fcm.build_app(build_parser().parse_args(argv), material)
    again = json.loads(key_file.read_text())
    assert again["token_uri"] == "https://127.0.0.1:51000/token"
    assert again["private_key"] == info["private_key"]
    assert second.token_lifetime == 60
    assert len(second.faults) == 0


def test_cli_accepts_given_service_account_files(tmp_path: Path, sandbox_state_dir: Path) -> None:
    material = generate_tls_material(sandbox_state_dir)
    account, key = fcm.new_service_account(
        "given-project", "sender@given-project.iam.gserviceaccount.com"
    )
    path = fcm.write_service_account_file(tmp_path / "sa.json", account, key, "https://x/token")
    argv = ["fcm", "--state-dir", str(tmp_path), "--service-account", str(path)]
    app = fcm.build_app(build_parser().parse_args(argv), material)
    [loaded] = app.accounts.values()
    assert (loaded.client_email, loaded.project_id) == (account.client_email, "given-project")
    assert loaded.public_key.public_numbers() == account.public_key.public_numbers()
    assert not (tmp_path / "fcm-service-account.json").exists()


# -- the README's fault syntax ---------------------------------------------------------------

README = Path(__file__).resolve().parents[1] / "README.md"


def _readme_fault_blocks() -> list[Any]:
    blocks = [json.loads(b) for b in re.findall(r"```json\n(.*?)```", README.read_text(), re.S)]
    return [
        b
        for b in blocks
        if all(isinstance(i, dict) and "effect" in i for i in (b if isinstance(b, list) else [b]))
    ]


def _readme_fcm_codes() -> list[tuple[str, int]]:
    rows = re.findall(r"^\| `([A-Z_]+)` \| (\d{3})\b", README.read_text(), re.M)
    return [(code, int(status)) for code, status in rows]


def test_every_fault_example_in_the_readme_is_accepted() -> None:
    blocks = _readme_fault_blocks()
    assert len(blocks) == 2, "the APNs --faults example and the FCM status example"
    for block in blocks:
        plan = FaultPlan.from_specs(parse_specs(block))
        assert len(plan) == len(block)


@pytest.mark.parametrize("form", ["reason", "status"])
async def test_the_readme_fcm_code_table_holds_for_either_form(
    app: fcm.FcmApp,
    account_key: tuple[fcm.ServiceAccount, rsa.RSAPrivateKey],
    clock: Clock,
    form: str,
) -> None:
    rows = _readme_fcm_codes()
    assert [code for code, _ in rows] == [
        "UNREGISTERED",
        "INVALID_ARGUMENT",
        "QUOTA_EXCEEDED",
        "UNAVAILABLE",
        "INTERNAL",
        "THIRD_PARTY_AUTH_ERROR",
        "SENDER_ID_MISMATCH",
    ]
    token = await access_token(app, account_key[1], clock)
    for code, status in rows:
        given = {"reason": code} if form == "reason" else {"status": status}
        app.faults.add(FaultSpec.from_json({"effect": "status", "token": code, **given}))
        got, payload, headers = answer(await send(app, token, {"message": {"token": code}}))
        assert got == status
        assert payload["error"]["details"][0]["errorCode"] == code
        assert ("retry-after" in headers) == (code == "QUOTA_EXCEEDED")
    assert [r.reason for r in app.recorder.requests() if r.token] == [c for c, _ in rows]


async def test_a_delay_naming_only_a_reason_answers_that_error_late(
    app: fcm.FcmApp, account_key: tuple[fcm.ServiceAccount, rsa.RSAPrivateKey], clock: Clock
) -> None:
    token = await access_token(app, account_key[1], clock)
    app.faults.add(FaultSpec.from_json({"effect": "delay", "seconds": 0.2, "reason": "INTERNAL"}))
    delayed = await send(app, token, {"message": {"token": "late"}})
    assert isinstance(delayed, Delay)
    assert answer(delayed.then)[0] == 500
