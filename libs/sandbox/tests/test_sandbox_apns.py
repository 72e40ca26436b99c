"""The fake APNs driven by the real, unpatched aioapns client.

Each test asserts what the client returned (``NotificationResult`` status,
description, timestamp, or the exception it raised) and exactly how many
requests the fake recorded.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import ssl
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

import httpx
import jwt
import pytest
from aioapns import APNs, NotificationRequest, PushType
from aioapns.exceptions import MaxAttemptsExceeded

from pushwarden.sandbox.apns import (
    REASON_STATUS,
    TOKEN_UPDATE_INTERVAL,
    ApnsApp,
    ApnsKey,
    generate_signing_key,
    start_apns,
)
from pushwarden.sandbox.clients import ApnsCredentials, apns_client_for, apns_protocol_for
from pushwarden.sandbox.core import SandboxServer
from pushwarden.sandbox.faults import FaultSpec

APNS_TOPIC = "com.example.app"
TOKEN = "a1" * 32
PAYLOAD = b'{"aps": {"alert": "hi"}}'
OTHER = "b2" * 32
ALERT = {"aps": {"alert": {"title": "Hello", "body": "World"}}}


@pytest.fixture
async def client(apns_server: SandboxServer, apns_creds: ApnsCredentials) -> AsyncIterator[APNs]:
    """An aioapns client with one connection, aimed at the fake."""
    apns = apns_client_for(apns_server, apns_creds, max_connections=1)
    try:
        yield apns
    finally:
        apns.pool.close()


def note(
    token: str = TOKEN, message: dict[str, Any] | None = None, **kw: Any
) -> NotificationRequest:
    return NotificationRequest(
        device_token=token, message=ALERT if message is None else message, **kw
    )


def app_of(server: SandboxServer) -> ApnsApp:
    return cast(ApnsApp, server.app)


async def test_success_echoes_apns_id(client: APNs, apns_server: SandboxServer) -> None:
    apns_id = str(uuid.uuid4())
    result = await client.send_notification(note(notification_id=apns_id))
    assert (result.status, result.description, result.notification_id) == ("200", None, apns_id)
    [rec] = apns_server.recorder.requests()
    assert (rec.token, rec.apns_id, rec.status, rec.reason, rec.fault) == (
        TOKEN,
        apns_id,
        200,
        None,
        None,
    )
    assert rec.http_version == "2"
    assert rec.stream_id == 1
    assert rec.method == "POST"
    assert rec.header("apns-topic") == "com.example.app"
    assert rec.body == b'{"aps": {"alert": {"title": "Hello", "body": "World"}}}'


def _sign(
    key_pem: str, *, kid: str = "TESTKEY001", iss: str = "TESTTEAM01", iat: float | None = None
) -> str:
    issued = int(time.time() if iat is None else iat)
    return jwt.encode({"iss": iss, "iat": issued}, key_pem, algorithm="ES256", headers={"kid": kid})


async def _raw(
    server: SandboxServer, method: str, path: str, headers: dict[str, str], body: bytes = b""
) -> httpx.Response:
    """One request over HTTP/2 with exactly the given headers (for what aioapns cannot send)."""
    async with httpx.AsyncClient(
        http2=True, verify=ssl.create_default_context(cafile=server.ca_file)
    ) as http:
        return await http.request(method, f"{server.url}{path}", headers=headers, content=body)


async def test_assigns_apns_id_when_absent(
    apns_server: SandboxServer, apns_signing_key: str
) -> None:
    headers = {
        "authorization": f"bearer {_sign(apns_signing_key)}",
        "apns-topic": "com.example.app",
    }
    resp = await _raw(apns_server, "POST", f"/3/device/{TOKEN}", headers, b'{"aps":{}}')
    assert resp.status_code == 200
    assert resp.http_version == "HTTP/2"
    assigned = resp.headers["apns-id"]
    assert uuid.UUID(assigned)
    assert [r.apns_id for r in apns_server.recorder.requests()] == [assigned]


# -- validation done by the fake, driven through aioapns --------------------------

VALIDATION_ROWS: list[tuple[str, dict[str, Any], str, str]] = [
    ("bad device token", {"token": "not-hex"}, "400", "BadDeviceToken"),
    ("short device token", {"token": "ab" * 10}, "400", "BadDeviceToken"),
    ("collapse id over 64 bytes", {"collapse_key": "c" * 65}, "400", "BadCollapseId"),
    ("priority 7", {"priority": 7}, "400", "BadPriority"),
    (
        "background at priority 10",
        {"priority": 10, "push_type": PushType.BACKGROUND},
        "400",
        "BadPriority",
    ),
    ("negative expiration", {"time_to_live": -(10**11)}, "400", "BadExpirationDate"),
    ("apns-id not a UUID", {"notification_id": "not-a-uuid"}, "400", "BadMessageId"),
    ("topic of another app", {"apns_topic": "com.other.app"}, "400", "TopicDisallowed"),
    ("voip without .voip topic", {"push_type": PushType.VOIP}, "400", "TopicDisallowed"),
    ("empty payload", {"message": {}}, "400", "PayloadEmpty"),
    ("alert over 4 KB", {"message": {"aps": {"alert": "x" * 4100}}}, "413", "PayloadTooLarge"),
    (
        "voip over 5 KB",
        {
            "message": {"aps": {}, "d": "x" * 5200},
            "push_type": PushType.VOIP,
            "apns_topic": "com.example.app.voip",
        },
        "413",
        "PayloadTooLarge",
    ),
]


@pytest.mark.parametrize(
    ("case", "fields", "status", "reason"), VALIDATION_ROWS, ids=[r[0] for r in VALIDATION_ROWS]
)
async def test_validation_rows(
    client: APNs,
    apns_server: SandboxServer,
    case: str,
    fields: dict[str, Any],
    status: str,
    reason: str,
) -> None:
    fields = dict(fields)
    token = fields.pop("token", TOKEN)
    result = await client.send_notification(note(token, **fields))
    assert (result.status, result.description, result.timestamp) == (status, reason, None)
    assert apns_server.recorder.count() == 1
    assert apns_server.recorder.requests()[0].reason == reason


async def test_voip_up_to_5kb_is_accepted(client: APNs, apns_server: SandboxServer) -> None:
    message = {"aps": {}, "d": "x" * 4900}
    result = await client.send_notification(
        note(
            message=message, push_type=PushType.VOIP, apns_topic="com.example.app.voip", priority=10
        )
    )
    assert result.status == "200"
    assert apns_server.recorder.count() == 1


async def test_device_token_of_another_topic(client: APNs, apns_server: SandboxServer) -> None:
    app_of(apns_server).bind_token(OTHER, "com.example.watch")
    result = await client.send_notification(note(OTHER))
    assert (result.status, result.description) == ("400", "DeviceTokenNotForTopic")
    assert (await client.send_notification(note(TOKEN))).status == "200"
    assert apns_server.recorder.count() == 2


RAW_ROWS: list[tuple[str, str, str, dict[str, str], bytes, int, str]] = [
    ("GET is refused", "GET", f"/3/device/{TOKEN}", {}, b"", 405, "MethodNotAllowed"),
    ("unknown path", "POST", "/3/devices/abc", {}, b"{}", 404, "BadPath"),
    (
        "no provider token",
        "POST",
        f"/3/device/{TOKEN}",
        {"authorization": ""},
        b'{"a":1}',
        403,
        "MissingProviderToken",
    ),
    ("no topic", "POST", f"/3/device/{TOKEN}", {"apns-topic": ""}, b'{"a":1}', 400, "MissingTopic"),
    (
        "unknown push type",
        "POST",
        f"/3/device/{TOKEN}",
        {"apns-push-type": "fax"},
        b'{"a":1}',
        400,
        "InvalidPushType",
    ),
    (
        "expiration not a number",
        "POST",
        f"/3/device/{TOKEN}",
        {"apns-expiration": "soon"},
        b'{"a":1}',
        400,
        "BadExpirationDate",
    ),
    ("payload not JSON", "POST", f"/3/device/{TOKEN}", {}, b"hello", 400, "PayloadEmpty"),
    ("missing device token", "POST", "/3/device/", {}, b'{"a":1}', 400, "MissingDeviceToken"),
]


@pytest.mark.parametrize(
    ("case", "method", "path", "headers", "body", "status", "reason"),
    RAW_ROWS,
    ids=[r[0] for r in RAW_ROWS],
)
async def test_raw_rows(
    apns_server: SandboxServer,
    apns_signing_key: str,
    case: str,
    method: str,
    path: str,
    headers: dict[str, str],
    body: bytes,
    status: int,
    reason: str,
) -> None:
    base = {"authorization": f"bearer {_sign(apns_signing_key)}", "apns-topic": "com.example.app"}
    sent = {k: v for k, v in {**base, **headers}.items() if v}
    resp = await _raw(apns_server, method, path, sent, body)
    assert (resp.status_code, resp.json()) == (status, {"reason": reason})
    assert uuid.UUID(resp.headers["apns-id"])
    assert apns_server.recorder.count() == 1


async def test_duplicate_headers(apns_server: SandboxServer, apns_signing_key: str) -> None:
    headers = [
        ("authorization", f"bearer {_sign(apns_signing_key)}"),
        ("apns-topic", "com.example.app"),
        ("apns-topic", "com.example.app"),
    ]
    async with httpx.AsyncClient(
        http2=True, verify=ssl.create_default_context(cafile=apns_server.ca_file)
    ) as http:
        resp = await http.post(
            f"{apns_server.url}/3/device/{TOKEN}", headers=headers, content=b'{"a":1}'
        )
    assert (resp.status_code, resp.json()) == (400, {"reason": "DuplicateHeaders"})


# -- provider token ----------------------------------------------------------------


async def test_wrong_signature_is_refused(
    apns_server: SandboxServer, apns_creds: ApnsCredentials
) -> None:
    impostor = apns_client_for(apns_server, replace(apns_creds, key=generate_signing_key()))
    result = await impostor.send_notification(note())
    assert (result.status, result.description) == ("403", "InvalidProviderToken")
    assert apns_server.recorder.count() == 1
    impostor.pool.close()


@pytest.mark.parametrize("field", ["key_id", "team_id"])
async def test_unknown_key_or_team_is_refused(
    apns_server: SandboxServer, apns_creds: ApnsCredentials, field: str
) -> None:
    stranger = apns_client_for(apns_server, replace(apns_creds, **{field: "SOMEONEELSE"}))
    result = await stranger.send_notification(note())
    assert (result.status, result.description) == ("403", "InvalidProviderToken")
    assert apns_server.recorder.count() == 1
    stranger.pool.close()


async def test_provider_token_older_than_an_hour_is_refused(
    sandbox_state_dir: Path, apns_signing_key: str, apns_creds: ApnsCredentials
) -> None:
    # aioapns signs with iat = now, so the fake's clock runs two hours ahead.
    key = ApnsKey.from_private_pem(
        "TESTKEY001", "TESTTEAM01", apns_signing_key, ["com.example.app"]
    )
    async with await start_apns([key], state_dir=sandbox_state_dir) as server:
        app_of(server).clock = lambda: time.time() + 7200
        apns = apns_client_for(server, apns_creds)
        result = await apns.send_notification(note())
        assert (result.status, result.description) == ("403", "ExpiredProviderToken")
        assert server.recorder.count() == 1
        apns.pool.close()


async def test_expired_token_window_for_a_while(client: APNs, apns_server: SandboxServer) -> None:
    apns_server.faults.add(FaultSpec("expired_token_window", seconds=0.6))
    first = await client.send_notification(note())
    assert (first.status, first.description) == ("403", "ExpiredProviderToken")
    await asyncio.sleep(0.7)
    # aioapns keeps its JWT (it refreshes only after 30 minutes): once the
    # window closes the very same token is accepted again.
    assert (await client.send_notification(note())).status == "200"
    recs = apns_server.recorder.requests()
    assert [(r.status, r.fault) for r in recs] == [(403, "expired_token_window"), (200, None)]
    assert recs[0].header("authorization") == recs[1].header("authorization")


async def test_expired_token_window_for_tokens_issued_before(
    client: APNs, apns_server: SandboxServer, apns_creds: ApnsCredentials
) -> None:
    assert (await client.send_notification(note())).status == "200"
    cutoff = time.time()
    apns_server.faults.add(FaultSpec("expired_token_window", issued_before=cutoff))
    refused = [await client.send_notification(note()) for _ in range(2)]
    assert [(r.status, r.description) for r in refused] == [("403", "ExpiredProviderToken")] * 2
    # aioapns does not refresh its JWT on ExpiredProviderToken: both retries
    # carried the token it signed before the cutoff.
    recs = apns_server.recorder.requests()
    assert len({r.header("authorization") for r in recs}) == 1
    # A client that signs after the cutoff (JWT iat has whole seconds) gets through.
    await asyncio.sleep(math.ceil(cutoff) - time.time() + 0.05)
    fresh = apns_client_for(apns_server, apns_creds)
    assert (await fresh.send_notification(note())).status == "200"
    fresh.pool.close()
    assert [(r.status, r.fault) for r in apns_server.recorder.requests()] == [
        (200, None),
        (403, "expired_token_window"),
        (403, "expired_token_window"),
        (200, None),
    ]


# -- every error row by fault injection --------------------------------------------


@pytest.mark.parametrize(("reason", "status"), sorted(REASON_STATUS.items()))
async def test_every_error_row_can_be_injected(
    client: APNs, apns_server: SandboxServer, reason: str, status: int
) -> None:
    apns_server.faults.add(FaultSpec("status", token=TOKEN, status=status, reason=reason, times=1))
    result = await client.send_notification(note())
    assert (result.status, result.description) == (str(status), reason)
    if status == 410:
        assert isinstance(result.timestamp, int)
        assert abs(result.timestamp / 1000 - time.time()) < 60
    else:
        assert result.timestamp is None
    assert (await client.send_notification(note())).status == "200"
    assert [r.status for r in apns_server.recorder.requests(token=TOKEN)] == [status, 200]


async def test_unregistered_with_chosen_timestamp(client: APNs, apns_server: SandboxServer) -> None:
    apns_server.faults.add(
        FaultSpec(
            "status", token=TOKEN, status=410, reason="Unregistered", timestamp_ms=1_700_000_000_123
        )
    )
    result = await client.send_notification(note())
    assert (result.status, result.description, result.timestamp) == (
        "410",
        "Unregistered",
        1_700_000_000_123,
    )
    assert (await client.send_notification(note(OTHER))).status == "200"
    assert apns_server.recorder.count(token=TOKEN) == 1
    assert apns_server.recorder.count() == 2


async def test_token_prefix_fault(client: APNs, apns_server: SandboxServer) -> None:
    apns_server.faults.add(
        FaultSpec("status", token_prefix="a1", status=429, reason="TooManyRequests", retry_after=3)
    )
    results = await asyncio.gather(
        *(client.send_notification(note(t)) for t in (TOKEN, OTHER, "a1ff" * 16))
    )
    assert [r.status for r in results] == ["429", "200", "429"]
    assert apns_server.recorder.count() == 3


# -- transport faults --------------------------------------------------------------


async def test_delay_keeps_other_streams_flowing(client: APNs, apns_server: SandboxServer) -> None:
    apns_server.faults.add(FaultSpec("delay", token=TOKEN, seconds=0.4))
    started = time.monotonic()
    slow = asyncio.ensure_future(client.send_notification(note()))
    await asyncio.sleep(0.05)
    fast = await client.send_notification(note(OTHER))
    assert fast.status == "200"
    assert not slow.done()
    assert (await slow).status == "200"
    assert time.monotonic() - started >= 0.4
    recs = apns_server.recorder.requests()
    assert len(recs) == 2
    assert recs[0].fault == "delay"
    assert recs[0].connection_id == recs[1].connection_id


async def test_no_answer_leaves_client_waiting_while_others_complete(
    client: APNs, apns_server: SandboxServer
) -> None:
    apns_server.faults.add(FaultSpec("no_answer", token=TOKEN))
    silent = asyncio.ensure_future(asyncio.wait_for(client.send_notification(note()), timeout=1.0))
    await asyncio.sleep(0.05)
    others = await asyncio.gather(*(client.send_notification(note(OTHER)) for _ in range(5)))
    assert [r.status for r in others] == ["200"] * 5
    assert not silent.done()
    with pytest.raises(TimeoutError):
        await silent
    recs = apns_server.recorder.requests()
    assert len(recs) == 6
    assert (recs[0].status, recs[0].fault) == (None, "no_answer")
    assert len({r.connection_id for r in recs}) == 1


async def test_reset_stream(client: APNs, apns_server: SandboxServer) -> None:
    apns_server.faults.add(FaultSpec("reset_stream", token=TOKEN, times=1))
    # aioapns ignores RST_STREAM (logs "Unknown event"): the send never ends.
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(client.send_notification(note()), timeout=0.5)
    assert (await client.send_notification(note())).status == "200"
    recs = apns_server.recorder.requests()
    assert [(r.status, r.fault) for r in recs] == [(None, "reset_stream"), (200, None)]
    assert recs[0].connection_id == recs[1].connection_id


async def test_dropped_connection_is_retried_on_a_new_one(
    client: APNs, apns_server: SandboxServer
) -> None:
    apns_server.faults.add(FaultSpec("drop_connection", token=TOKEN, times=1))
    result = await client.send_notification(note())
    assert result.status == "200"
    recs = apns_server.recorder.requests()
    assert [(r.status, r.fault) for r in recs] == [(None, "drop_connection"), (200, None)]
    assert recs[0].connection_id != recs[1].connection_id


async def test_dropped_every_time_exhausts_attempts(
    apns_server: SandboxServer, apns_creds: ApnsCredentials
) -> None:
    apns_server.faults.add(FaultSpec("drop_connection", token=TOKEN))
    apns = apns_client_for(apns_server, apns_creds, max_connection_attempts=3)
    with pytest.raises(MaxAttemptsExceeded):
        await apns.send_notification(note())
    assert apns_server.recorder.count() == 3
    apns.pool.close()


async def test_goaway_makes_the_client_retry(
    client: APNs, apns_server: SandboxServer, caplog: pytest.LogCaptureFixture
) -> None:
    apns_server.faults.add(FaultSpec("goaway", token=TOKEN, times=1, error_code=0))
    with caplog.at_level(logging.WARNING, logger="aioapns"):
        result = await client.send_notification(note())
    assert result.status == "200"
    # aioapns saw the GOAWAY frame itself (it logs it), not just a closed socket.
    assert any("terminated: code=" in r.getMessage() for r in caplog.records)
    recs = apns_server.recorder.requests()
    assert [(r.status, r.fault) for r in recs] == [(None, "goaway"), (200, None)]
    assert recs[0].connection_id != recs[1].connection_id


async def test_probability_fault_with_seed_is_deterministic(
    client: APNs, apns_server: SandboxServer
) -> None:
    apns_server.faults.add(
        FaultSpec("status", status=503, reason="ServiceUnavailable", probability=0.3, seed=42)
    )
    results = await asyncio.gather(*(client.send_notification(note()) for _ in range(100)))
    rng = random.Random(42)
    expected = sum(rng.random() < 0.3 for _ in range(100))
    assert sum(r.status == "503" for r in results) == expected
    assert 10 < expected < 50
    assert apns_server.recorder.count() == 100
    assert sum(r.status == 503 for r in apns_server.recorder.requests()) == expected


# -- HTTP/2 as Apple serves it: no ALPN needed, HTTP/1.1 refused -------------------


async def test_aioapns_as_shipped_is_served_http2_without_alpn(
    apns_server: SandboxServer, apns_creds: ApnsCredentials, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No ssl_context: aioapns builds its own default one (no ALPN); the sandbox
    # CA is trusted the way a deployment trusts a private CA, through OpenSSL's
    # SSL_CERT_FILE.  Only the host and port differ from Apple's.
    assert apns_server.ca_file is not None
    monkeypatch.setenv("SSL_CERT_FILE", apns_server.ca_file)
    apns = APNs(
        key=apns_creds.key,
        key_id=apns_creds.key_id,
        team_id=apns_creds.team_id,
        topic=apns_creds.topic,
    )
    apns.pool.protocol_class = apns_protocol_for(apns_server.host, apns_server.port)
    try:
        results = await asyncio.gather(*(apns.send_notification(note()) for _ in range(3)))
    finally:
        apns.pool.close()
    assert [r.status for r in results] == ["200"] * 3
    recs = apns_server.recorder.requests()
    assert [r.http_version for r in recs] == ["2"] * 3
    # The same default context really offers no ALPN: the server selected none.
    _, writer = await asyncio.open_connection(
        apns_server.host, apns_server.port, ssl=ssl.create_default_context()
    )
    assert writer.get_extra_info("ssl_object").selected_alpn_protocol() is None
    writer.close()


def _frames(data: bytes) -> list[tuple[int, bytes]]:
    """(type, payload) of each HTTP/2 frame in ``data``."""
    frames: list[tuple[int, bytes]] = []
    while data:
        length = int.from_bytes(data[:3], "big")
        frames.append((data[3], data[9 : 9 + length]))
        data = data[9 + length :]
    return frames


@pytest.mark.parametrize("alpn", [["http/1.1"], None], ids=["alpn-http1.1", "no-alpn"])
async def test_an_http1_send_gets_http2_frames_not_an_answer(
    apns_server: SandboxServer, apns_signing_key: str, alpn: list[str] | None
) -> None:
    context = ssl.create_default_context(cafile=apns_server.ca_file)
    if alpn is not None:
        context.set_alpn_protocols(alpn)
    reader, writer = await asyncio.open_connection(apns_server.host, apns_server.port, ssl=context)
    body = b'{"aps":{"alert":"hi"}}'
    writer.write(
        (
            f"POST /3/device/{TOKEN} HTTP/1.1\r\nhost: api.push.apple.com\r\n"
            f"authorization: bearer {_sign(apns_signing_key)}\r\n"
            f"apns-topic: com.example.app\r\ncontent-length: {len(body)}\r\n\r\n"
        ).encode()
        + body
    )
    received = await asyncio.wait_for(reader.read(), timeout=10)
    writer.close()
    assert not received.startswith(b"HTTP/")
    # SETTINGS, then GOAWAY with PROTOCOL_ERROR (1) in its error-code field.
    frames = _frames(received)
    assert [kind for kind, _ in frames] == [0x4, 0x7]
    assert int.from_bytes(frames[1][1][4:8], "big") == 1
    assert apns_server.recorder.count() == 0


async def test_httpx_over_http1_cannot_send_but_the_control_routes_answer(
    apns_server: SandboxServer, apns_signing_key: str
) -> None:
    headers = {"authorization": f"bearer {_sign(apns_signing_key)}", "apns-topic": APNS_TOPIC}
    async with httpx.AsyncClient(
        http1=True, http2=False, verify=ssl.create_default_context(cafile=apns_server.ca_file)
    ) as http:
        with pytest.raises(httpx.RemoteProtocolError):
            await http.post(f"{apns_server.url}/3/device/{TOKEN}", headers=headers, content=PAYLOAD)
        health = await http.get(f"{apns_server.url}/_sandbox/health")
    assert health.http_version == "HTTP/1.1"
    assert health.json()["requests"] == 0


# -- TooManyProviderTokenUpdates ----------------------------------------------------


async def test_a_new_provider_token_within_20_minutes_on_one_connection_is_refused(
    apns_server: SandboxServer, apns_signing_key: str
) -> None:
    app = app_of(apns_server)
    now = time.time()
    app.clock = lambda: now
    first, second = _sign(apns_signing_key, iat=now), _sign(apns_signing_key, iat=now - 1)
    assert first != second

    def post(http: httpx.AsyncClient, jwt_text: str) -> Any:
        headers = {"authorization": f"bearer {jwt_text}", "apns-topic": APNS_TOPIC}
        return http.post(f"{apns_server.url}/3/device/{TOKEN}", headers=headers, content=PAYLOAD)

    verify = ssl.create_default_context(cafile=apns_server.ca_file)
    async with httpx.AsyncClient(http2=True, verify=verify) as http:
        answers = [await post(http, first), await post(http, second), await post(http, first)]
        assert [(a.status_code, a.content) for a in answers] == [
            (200, b""),
            (429, b'{"reason": "TooManyProviderTokenUpdates"}'),
            (200, b""),
        ]
        # Twenty minutes after the connection's token was set, a new one is taken;
        # the old one is then itself an update too soon.
        now += TOKEN_UPDATE_INTERVAL
        assert (await post(http, second)).status_code == 200
        assert (await post(http, first)).status_code == 429
        # Another connection starts with whichever valid token it brings.
        async with httpx.AsyncClient(http2=True, verify=verify) as other:
            assert (await post(other, first)).status_code == 200
    recs = apns_server.recorder.requests()
    assert [r.reason for r in recs] == [
        None,
        "TooManyProviderTokenUpdates",
        None,
        None,
        "TooManyProviderTokenUpdates",
        None,
    ]
    assert len({r.connection_id for r in recs[:5]}) == 1
    assert recs[5].connection_id != recs[0].connection_id
    # Closed connections leave nothing behind.
    for _ in range(200):
        if not app._connection_tokens:
            break
        await asyncio.sleep(0.01)
    assert app._connection_tokens == {}


async def test_an_invalid_token_does_not_count_as_an_update(
    apns_server: SandboxServer, apns_signing_key: str
) -> None:
    good = _sign(apns_signing_key)
    forged = _sign(generate_signing_key())
    verify = ssl.create_default_context(cafile=apns_server.ca_file)
    async with httpx.AsyncClient(http2=True, verify=verify) as http:
        statuses = []
        for jwt_text in (forged, good, forged, good):
            headers = {"authorization": f"bearer {jwt_text}", "apns-topic": APNS_TOPIC}
            resp = await http.post(
                f"{apns_server.url}/3/device/{TOKEN}", headers=headers, content=PAYLOAD
            )
            statuses.append((resp.status_code, resp.json()["reason"] if resp.content else None))
    assert statuses == [
        (403, "InvalidProviderToken"),
        (200, None),
        (403, "InvalidProviderToken"),
        (200, None),
    ]


async def test_aioapns_keeps_one_token_per_connection_so_never_meets_the_limit(
    apns_server: SandboxServer, apns_creds: ApnsCredentials
) -> None:
    apns = apns_client_for(apns_server, apns_creds, max_connections=3)
    try:
        results = await asyncio.gather(*(apns.send_notification(note()) for _ in range(300)))
    finally:
        apns.pool.close()
    assert {r.status for r in results} == {"200"}
    recs = apns_server.recorder.requests()
    assert len(recs) == 300
    by_connection: dict[int, set[str | None]] = {}
    for rec in recs:
        by_connection.setdefault(rec.connection_id, set()).add(rec.header("authorization"))
    assert all(len(tokens) == 1 for tokens in by_connection.values())


@pytest.mark.parametrize(
    ("reason", "status"), [("Unregistered", 410), ("TooManyRequests", 429), ("Shutdown", 503)]
)
async def test_a_status_fault_may_name_only_the_reason(
    client: APNs, apns_server: SandboxServer, reason: str, status: int
) -> None:
    apns_server.faults.add(FaultSpec.from_json({"effect": "status", "reason": reason, "times": 1}))
    result = await client.send_notification(note())
    assert (result.status, result.description) == (str(status), reason)
    assert (await client.send_notification(note())).status == "200"
