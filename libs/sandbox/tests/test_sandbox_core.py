"""The sandbox core: faults, recording, TLS material, control routes, the server itself."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import random
import ssl
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import h2.config
import h2.connection
import h2.events
import httpx
import pytest
from aioapns import NotificationRequest
from cryptography import x509
from hpack import Decoder, Encoder, NeverIndexedHeaderTuple
from hpack.exceptions import HPACKDecodingError, HPACKError
from hpack.huffman import HuffmanEncoder
from hpack.huffman_constants import REQUEST_CODES, REQUEST_CODES_LENGTH
from hpack.huffman_table import decode_huffman as hpack_decode_huffman

from pushwarden.sandbox import speedups
from pushwarden.sandbox.apns import ApnsKey, run_apns_in_thread
from pushwarden.sandbox.certs import generate_tls_material, server_ssl_context
from pushwarden.sandbox.clients import ApnsCredentials, apns_client_for
from pushwarden.sandbox.core import (
    Action,
    Delay,
    Request,
    Response,
    SandboxServer,
    start_server,
)
from pushwarden.sandbox.faults import FaultPlan, FaultSpec, FaultSpecError, parse_specs
from pushwarden.sandbox.recording import RecordedRequest, Recorder

TOKEN = "c3" * 32


# -- faults ------------------------------------------------------------------------


def test_fault_spec_json_round_trip() -> None:
    spec = FaultSpec(
        "status", token_prefix="ab", status=410, reason="Unregistered", timestamp_ms=5, times=2
    )
    data = spec.to_json()
    assert data == {
        "effect": "status",
        "token_prefix": "ab",
        "status": 410,
        "reason": "Unregistered",
        "timestamp_ms": 5,
        "times": 2,
        "probability": 1.0,
        "seed": 0,
    }
    assert FaultSpec.from_json(json.loads(json.dumps(data))) == spec


@pytest.mark.parametrize(
    "data",
    [
        {"effect": "explode"},
        {"effect": "status"},
        {"effect": "status", "token": "a"},
        {"effect": "status", "status": 500, "token": "a", "token_prefix": "a"},
        {"effect": "status", "status": 500, "probability": 1.5},
        {"effect": "delay"},
        {"effect": "expired_token_window"},
        {"effect": "no_answer", "colour": "red"},
        {"token": "abc"},
    ],
)
def test_fault_spec_refuses_nonsense(data: dict[str, object]) -> None:
    with pytest.raises(FaultSpecError):
        FaultSpec.from_json(data)


def test_plan_consumes_times_in_order() -> None:
    plan = FaultPlan()
    first = plan.add(FaultSpec("status", token="t1", status=429, times=2))
    second = plan.add(FaultSpec("no_answer", token_prefix="t"))
    assert (first.id, second.id) == (1, 2)
    hits = [plan.match("t1") for _ in range(3)] + [plan.match("x1"), plan.match("t9")]
    assert [s.effect if s else None for s in hits] == [
        "status",
        "status",
        "no_answer",
        None,
        "no_answer",
    ]
    assert [s.times for s in plan.specs()] == [0, None]
    assert plan.hits() == {1: 2, 2: 2}
    assert plan.clear() == 2
    assert plan.match("t1") is None


def test_expired_token_window_matching() -> None:
    plan = FaultPlan()
    plan.add(FaultSpec("expired_token_window", issued_before=1000.0, until=2000.0))
    assert plan.match("t", issued_at=999.0, now=1500.0) is not None
    assert plan.match("t", issued_at=1000.0, now=1500.0) is None
    assert plan.match("t", issued_at=999.0, now=2000.0) is None
    # Other effects are looked up separately from the window.
    assert plan.match("t", issued_at=1.0, now=1500.0, effects=frozenset({"status"})) is None


def test_parse_specs_and_file(tmp_path: Path) -> None:
    path = tmp_path / "faults.json"
    path.write_text(json.dumps([{"effect": "no_answer"}, {"effect": "delay", "seconds": 1}]))
    assert [s.effect for s in FaultPlan.from_file(path).specs()] == ["no_answer", "delay"]
    assert len(parse_specs({"effect": "goaway"})) == 1
    with pytest.raises(FaultSpecError):
        parse_specs([1, 2])


# -- recording ---------------------------------------------------------------------


def _rec(token: str, apns_id: str, status: int | None) -> RecordedRequest:
    return RecordedRequest(
        time=1.0,
        connection_id=1,
        stream_id=1,
        http_version="2",
        method="POST",
        path=f"/3/device/{token}",
        headers=(("apns-id", apns_id),),
        body=b"\xff{}",
        provider="apns",
        token=token,
        apns_id=apns_id,
        status=status,
    )


def test_recorder_filters_counts_and_clears() -> None:
    rec = Recorder()
    for token, apns_id, status in [("a", "1", 200), ("b", "2", 410), ("a", "3", None)]:
        rec.append(_rec(token, apns_id, status))
    assert rec.count() == 3
    assert rec.count(token="a") == 2
    assert rec.count(apns_id="2") == 1
    assert [r.apns_id for r in rec.requests(token="a")] == ["1", "3"]
    assert rec.count(message_name="m") == 0
    [as_json] = rec.to_json(apns_id="2")
    assert as_json["status"] == 410
    assert as_json["body"] == "\ufffd{}"
    assert as_json["headers"] == [["apns-id", "2"]]
    assert rec.requests()[0].header("APNS-ID") == "1"
    assert rec.clear() == 3
    assert rec.count() == 0


def test_recorder_limit_forgets_the_oldest() -> None:
    rec = Recorder(limit=20)
    for i in range(45):
        rec.append(_rec("t", str(i), 200))
    kept = [int(r.apns_id or 0) for r in rec.requests()]
    assert len(kept) <= 20
    assert kept == list(range(45 - len(kept), 45))
    assert rec.dropped == 45 - len(kept)


# -- TLS material ------------------------------------------------------------------


def test_tls_material_is_reused_and_names_127_0_0_1(tmp_path: Path) -> None:
    first = generate_tls_material(tmp_path)
    before = first.cert_file.read_bytes()
    again = generate_tls_material(tmp_path)
    assert again == first
    assert again.cert_file.read_bytes() == before
    assert oct(first.key_file.stat().st_mode & 0o777) == "0o600"
    cert = x509.load_pem_x509_certificate(before)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert ipaddress.IPv4Address("127.0.0.1") in san.get_values_for_type(x509.IPAddress)
    assert "localhost" in san.get_values_for_type(x509.DNSName)
    ca = x509.load_pem_x509_certificate(first.ca_file.read_bytes())
    cert.verify_directly_issued_by(ca)


# -- the server with a minimal app -------------------------------------------------


class EchoApp:
    """Answers with what it got; ``/slow`` awaits first; ``/boom`` raises; ``/late`` delays."""

    name = "echo"

    async def handle(self, request: Request) -> Action:
        if request.path == "/slow":
            await asyncio.sleep(0.05)
        if request.path == "/boom":
            raise RuntimeError("app bug")
        body = json.dumps(
            {"path": request.path, "version": request.http_version, "body": request.body.decode()}
        ).encode()
        if request.path == "/late":
            return Delay(0.1, Response(202, (), body))
        return Response(200, (("x-stream", str(request.stream_id)),), body)


@pytest.fixture
async def echo_server(sandbox_state_dir: Path) -> AsyncIterator[SandboxServer]:
    material = generate_tls_material(sandbox_state_dir)
    server = await start_server(
        EchoApp(),
        ssl_context=server_ssl_context(material),
        recorder=Recorder(),
        faults=FaultPlan(),
        material=material,
    )
    async with server:
        yield server


def _verify(server: SandboxServer) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=server.ca_file)


async def test_server_answers_inline_suspended_and_failing_apps(echo_server: SandboxServer) -> None:
    async with httpx.AsyncClient(http2=True, verify=_verify(echo_server)) as http:
        fast, slow, late, boom = await asyncio.gather(
            http.post(f"{echo_server.url}/fast", content=b"x" * 70_000),
            http.post(f"{echo_server.url}/slow", content=b"y"),
            http.post(f"{echo_server.url}/late", content=b"z"),
            http.post(f"{echo_server.url}/boom", content=b"!"),
        )
    assert fast.status_code == 200
    assert fast.json()["body"] == "x" * 70_000
    assert fast.json()["version"] == "2"
    assert fast.http_version == "HTTP/2"
    assert (slow.status_code, slow.json()["body"]) == (200, "y")
    assert late.status_code == 202
    assert boom.status_code == 500
    # The client closed its connection; the server notices soon after.
    for _ in range(200):
        if echo_server.connection_count == 0:
            break
        await asyncio.sleep(0.01)
    assert echo_server.connection_count == 0


async def test_close_aborts_open_connections(echo_server: SandboxServer) -> None:
    http = httpx.AsyncClient(http2=True, verify=_verify(echo_server))
    assert (await http.get(f"{echo_server.url}/x")).status_code == 200
    assert echo_server.connection_count == 1
    await echo_server.close()
    assert echo_server.connection_count == 0
    with pytest.raises(httpx.TransportError):
        await http.get(f"{echo_server.url}/x")
    await http.aclose()


# -- control routes ----------------------------------------------------------------


@pytest.mark.parametrize("http2", [True, False], ids=["h2", "http1.1"])
async def test_control_routes(
    apns_server: SandboxServer, apns_creds: ApnsCredentials, http2: bool
) -> None:
    url = f"{apns_server.url}/_sandbox"
    async with httpx.AsyncClient(http2=http2, verify=_verify(apns_server)) as http:
        added = await http.post(
            f"{url}/faults",
            json=[{"effect": "status", "token": TOKEN, "status": 410, "timestamp_ms": 42}],
        )
        assert added.status_code == 200
        assert added.json()["added"][0]["id"] == 1
        assert (await http.post(f"{url}/faults", content=b"{nope")).status_code == 400
        assert (await http.post(f"{url}/faults", json={"effect": "x"})).status_code == 400

        apns = apns_client_for(apns_server, apns_creds)
        gone = await apns.send_notification(NotificationRequest(TOKEN, {"aps": {}}))
        ok = await apns.send_notification(NotificationRequest("d4" * 32, {"aps": {}}))
        apns.pool.close()
        assert (gone.status, gone.timestamp, ok.status) == ("410", 42, "200")

        assert (await http.get(f"{url}/count")).json() == {"count": 2}
        assert (await http.get(f"{url}/count", params={"token": TOKEN})).json() == {"count": 1}
        [listed] = (
            await http.get(f"{url}/requests", params={"apns_id": ok.notification_id})
        ).json()
        assert (listed["status"], listed["token"], listed["http_version"]) == (200, "d4" * 32, "2")
        faults = (await http.get(f"{url}/faults")).json()
        assert [(f["effect"], f["token"]) for f in faults] == [("status", TOKEN)]
        health = (await http.get(f"{url}/health")).json()
        assert health == {"provider": "apns", "requests": 2, "faults": 1}

        assert (await http.delete(f"{url}/requests")).json() == {"cleared": 2}
        assert (await http.delete(f"{url}/faults")).json() == {"cleared": 1}
        assert (await http.get(f"{url}/nothing")).status_code == 404
        assert (await http.put(f"{url}/faults")).status_code == 405
    # Control traffic itself is never recorded.
    assert apns_server.recorder.count() == 0
    assert len(apns_server.faults) == 0


def test_threaded_sandbox_serves_a_blocking_client(
    sandbox_state_dir: Path, apns_signing_key: str
) -> None:
    key = ApnsKey.from_private_pem("K", "T", apns_signing_key, ["com.example.app"])
    with run_apns_in_thread([key], state_dir=sandbox_state_dir) as sandbox:
        sandbox.faults.add(FaultSpec("no_answer"))
        with httpx.Client(verify=ssl.create_default_context(cafile=sandbox.ca_file)) as http:
            health = http.get(f"{sandbox.url}/_sandbox/health").json()
        assert health == {"provider": "apns", "requests": 0, "faults": 1}
    with pytest.raises(httpx.ConnectError), httpx.Client(verify=False) as http:
        http.get(f"{sandbox.url}/_sandbox/health")


# -- speed-ups (the CLI installs them; checked here without installing) ------------


def test_fast_huffman_decoder_matches_hpack() -> None:
    rng = random.Random(3)
    encoder = HuffmanEncoder(REQUEST_CODES, REQUEST_CODES_LENGTH)
    fast = speedups.fast_decode_huffman(speedups._byte_table())
    for _ in range(500):
        raw = rng.randbytes(rng.randrange(0, 70))
        assert fast(encoder.encode(raw)) == hpack_decode_huffman(encoder.encode(raw)) == raw
        junk = rng.randbytes(rng.randrange(1, 12))
        try:
            expected: bytes | None = hpack_decode_huffman(junk)
        except HPACKDecodingError:
            expected = None
        try:
            got: bytes | None = fast(junk)
        except HPACKDecodingError:
            got = None
        assert got == expected


def test_lean_hpack_decoder_matches_hpack() -> None:
    rng = random.Random(5)
    names = [b":path", b"apns-id", b"authorization", b"apns-topic", b"x-custom"]
    lean_huffman = speedups._memoised(speedups.fast_decode_huffman(speedups._byte_table()))
    for _ in range(40):
        encoder, reference, lean = Encoder(), Decoder(), speedups.LeanDecoder()
        lean.huffman = lean_huffman
        for _ in range(20):
            if rng.random() < 0.1:
                encoder.header_table_size = rng.choice([0, 256, 4096])
            headers: list[tuple[bytes, bytes]] = [
                (rng.choice(names), rng.randbytes(rng.randrange(0, 60)).hex().encode())
                for _ in range(rng.randrange(0, 10))
            ]
            headers += [NeverIndexedHeaderTuple(b"authorization", b"bearer " + b"j" * 150)]
            block = encoder.encode(headers, huffman=rng.random() < 0.7)
            expected = [tuple(h) for h in reference.decode(block, raw=True)]
            assert [tuple(h) for h in lean.decode(block, raw=True)] == expected
    for _ in range(300):
        junk = rng.randbytes(rng.randrange(1, 16))
        outcomes: list[list[tuple[bytes, ...]] | None] = []
        for decoder in (Decoder(), speedups.LeanDecoder()):
            try:
                outcomes.append([tuple(h) for h in decoder.decode(junk, raw=True)])
            except HPACKError:
                outcomes.append(None)
        assert outcomes[0] == outcomes[1]


async def test_without_http1_handler_a_non_h2_connection_is_closed_cleanly(
    echo_server: SandboxServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "pushwarden.sandbox.http1", None)
    async with httpx.AsyncClient(http2=False, verify=_verify(echo_server)) as http:
        with pytest.raises(httpx.TransportError):
            await http.get(f"{echo_server.url}/x")
    async with httpx.AsyncClient(http2=True, verify=_verify(echo_server)) as http:
        assert (await http.get(f"{echo_server.url}/x")).status_code == 200


# -- protocol choice without ALPN ----------------------------------------------------


async def _open_without_alpn(
    server: SandboxServer,
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection(
        server.host, server.port, ssl=ssl.create_default_context(cafile=server.ca_file)
    )
    assert writer.get_extra_info("ssl_object").selected_alpn_protocol() is None
    return reader, writer


async def test_without_alpn_the_http2_preface_selects_http2_even_byte_by_byte(
    echo_server: SandboxServer,
) -> None:
    reader, writer = await _open_without_alpn(echo_server)
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    sid = conn.get_next_available_stream_id()
    conn.send_headers(
        sid,
        [(":method", "POST"), (":scheme", "https"), (":authority", "x"), (":path", "/prior")],
    )
    conn.send_data(sid, b"knowledge", end_stream=True)
    for byte in conn.data_to_send():
        writer.write(bytes([byte]))
        await writer.drain()
    answer: dict[str, object] = {}
    while "body" not in answer:
        data = await asyncio.wait_for(reader.read(65536), timeout=10)
        assert data, "connection closed before the answer"
        for event in conn.receive_data(data):
            if isinstance(event, h2.events.ResponseReceived):
                answer["status"] = dict(event.headers)[b":status"]
            elif isinstance(event, h2.events.DataReceived):
                answer["body"] = json.loads(event.data)
        writer.write(conn.data_to_send())
    writer.close()
    assert answer == {
        "status": b"200",
        "body": {"path": "/prior", "version": "2", "body": "knowledge"},
    }


async def test_without_alpn_anything_else_is_http1(echo_server: SandboxServer) -> None:
    reader, writer = await _open_without_alpn(echo_server)
    # "P" is where both a POST and the preface start: the choice waits for "O".
    writer.write(b"P")
    await writer.drain()
    await asyncio.sleep(0.05)
    writer.write(b"OST /plain HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\nhi")
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=10)
    assert head.startswith(b"HTTP/1.1 200")
    fields = dict(line.split(b": ", 1) for line in head.split(b"\r\n")[1:] if line)
    body = json.loads(await reader.readexactly(int(fields[b"content-length"])))
    assert body == {"path": "/plain", "version": "1.1", "body": "hi"}
    writer.close()


async def test_without_alpn_a_silent_client_that_leaves_is_forgotten(
    echo_server: SandboxServer,
) -> None:
    _, writer = await _open_without_alpn(echo_server)
    writer.write(b"PRI * HT")
    await writer.drain()
    writer.close()
    for _ in range(200):
        if echo_server.connection_count == 0:
            break
        await asyncio.sleep(0.01)
    assert echo_server.connection_count == 0
