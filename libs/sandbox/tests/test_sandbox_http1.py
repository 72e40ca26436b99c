"""The HTTP/1.1 connection handler on its own: plain TCP on port 0, an h11 client.

``serve_http1`` is given a dispatch function that answers by path, so each fault
action can be asked for; the TLS and ALPN side is the core's (covered with the
real clients in the FCM tests).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import h11
import pytest

from pushwarden.sandbox.core import (
    Action,
    Delay,
    DropConnection,
    GoAway,
    NoAnswer,
    Request,
    ResetStream,
    Response,
)
from pushwarden.sandbox.http1 import serve_http1

OK = Response(200, (("content-type", "text/plain"),), b"ok")


@dataclass
class Harness:
    """A TCP server running ``serve_http1`` and what its dispatch saw."""

    port: int = 0
    seen: list[Request] = field(default_factory=list)
    handlers_done: int = 0


ROUTES: dict[str, Action] = {
    "/ok": OK,
    "/delay": Delay(0.3, OK),
    "/silent": NoAnswer(),
    "/reset": ResetStream(),
    "/drop": DropConnection(),
    "/goaway": GoAway(),
    "/goaway-answered": GoAway(then=Response(503, (), b"bye")),
}


@pytest.fixture
async def harness() -> AsyncIterator[Harness]:
    state = Harness()
    ids = iter(range(1, 1000))

    async def dispatch(request: Request) -> Action:
        state.seen.append(request)
        if request.path == "/boom":
            raise RuntimeError("app bug")
        if request.path == "/echo":
            return Response(200, (), request.body)
        return ROUTES[request.path]

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await serve_http1(reader, writer, dispatch, next(ids))
        finally:
            state.handlers_done += 1

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    state.port = server.sockets[0].getsockname()[1]
    try:
        yield state
    finally:
        server.close()
        await server.wait_closed()


class Client:
    """A minimal keep-alive HTTP/1.1 client on h11."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.conn = h11.Connection(h11.CLIENT)

    @classmethod
    async def connect(cls, port: int) -> Client:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    async def request(
        self, path: str, body: bytes = b"", headers: list[tuple[str, str]] | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        if self.conn.our_state is h11.DONE:
            self.conn.start_next_cycle()
        all_headers = [("host", "sandbox"), *(headers or [])]
        if not any(name == "transfer-encoding" for name, _ in all_headers):
            all_headers.append(("content-length", str(len(body))))
        out = self.conn.send(h11.Request(method="POST", target=path, headers=all_headers))
        assert out is not None
        if body:
            data = self.conn.send(h11.Data(data=body))
            assert data is not None
            out += data
        end = self.conn.send(h11.EndOfMessage())
        assert end is not None
        self.writer.write(out + end)
        await self.writer.drain()
        return await self._response()

    async def _response(self) -> tuple[int, dict[str, str], bytes]:
        status, headers, chunks = 0, {}, []
        while True:
            try:
                event = self.conn.next_event()
            except h11.RemoteProtocolError as exc:
                # h11 calls a close before the response a protocol error.
                raise ConnectionError("closed without an answer") from exc
            if event is h11.NEED_DATA:
                self.conn.receive_data(await self.reader.read(65536))
            elif isinstance(event, h11.Response):
                status = event.status_code
                headers = {k.decode(): v.decode() for k, v in event.headers}
            elif isinstance(event, h11.Data):
                chunks.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                return status, headers, b"".join(chunks)
            elif isinstance(event, h11.ConnectionClosed):
                raise ConnectionError("closed without an answer")

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()


async def test_keep_alive_serves_several_requests_on_one_connection(harness: Harness) -> None:
    client = await Client.connect(harness.port)
    try:
        for n in range(3):
            status, headers, body = await client.request("/echo", f"body-{n}".encode())
            assert (status, body, headers["content-length"]) == (200, f"body-{n}".encode(), "6")
    finally:
        await client.close()
    assert [r.body for r in harness.seen] == [b"body-0", b"body-1", b"body-2"]
    assert {r.connection_id for r in harness.seen} == {1}
    first = harness.seen[0]
    assert (first.method, first.http_version, first.stream_id) == ("POST", "1.1", None)
    assert first.header("HOST") == "sandbox"
    assert first.received_at == pytest.approx(time.time(), abs=30)


async def test_chunked_request_bodies_are_reassembled(harness: Harness) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", harness.port)
    writer.write(
        b"POST /echo HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
    )
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert await reader.readexactly(11) == b"hello world"
    writer.close()


async def test_delay_answers_late(harness: Harness) -> None:
    client = await Client.connect(harness.port)
    started = time.monotonic()
    status, _, body = await client.request("/delay")
    assert (status, body) == (200, b"ok")
    assert time.monotonic() - started >= 0.25
    await client.close()


async def test_no_answer_keeps_the_connection_open_until_the_client_gives_up(
    harness: Harness,
) -> None:
    client = await Client.connect(harness.port)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(client.request("/silent"), timeout=0.5)
    assert harness.handlers_done == 0
    other = await Client.connect(harness.port)
    assert (await other.request("/ok"))[0] == 200
    await other.close()
    await client.close()
    for _ in range(100):
        if harness.handlers_done == 2:
            break
        await asyncio.sleep(0.02)
    assert harness.handlers_done == 2


@pytest.mark.parametrize("path", ["/reset", "/drop", "/goaway"])
async def test_reset_drop_and_goaway_end_the_connection_without_an_answer(
    harness: Harness, path: str
) -> None:
    client = await Client.connect(harness.port)
    assert (await client.request("/ok"))[0] == 200
    with pytest.raises(ConnectionError):
        await client.request(path)
    await client.close()
    assert [r.path for r in harness.seen] == ["/ok", path]


async def test_goaway_with_an_answer_sends_it_with_connection_close(harness: Harness) -> None:
    client = await Client.connect(harness.port)
    status, headers, body = await client.request("/goaway-answered")
    assert (status, body, headers["connection"]) == (503, b"bye", "close")
    assert await client.reader.read() == b""
    await client.close()


async def test_a_failing_app_gets_a_500_and_the_connection_survives(harness: Harness) -> None:
    client = await Client.connect(harness.port)
    assert (await client.request("/boom"))[0] == 500
    assert (await client.request("/ok"))[0] == 200
    await client.close()


async def test_garbage_gets_a_400_and_a_close(harness: Harness) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", harness.port)
    writer.write(b"NOT HTTP AT ALL\r\n\r\n")
    await writer.drain()
    answer = await reader.read()
    assert answer.startswith(b"HTTP/1.1 400")
    assert harness.seen == []
    writer.close()


async def test_client_connection_close_header_is_honoured(harness: Harness) -> None:
    client = await Client.connect(harness.port)
    status, _, _ = await client.request("/ok", headers=[("connection", "close")])
    assert status == 200
    assert await client.reader.read() == b""
    await client.close()
