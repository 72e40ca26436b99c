"""The sandbox server core shared by the fake providers.

One TLS listener per fake.  After the handshake the negotiated ALPN protocol
picks the connection handler: ``h2`` is served here (a lean ``asyncio.Protocol``
around an ``h2`` state machine), ``http/1.1`` goes to
``pushwarden.sandbox.http1.serve_http1`` over asyncio streams.  A client that
offers no ALPN at all (aioapns, as shipped) is told apart by its first bytes:
the HTTP/2 connection preface means HTTP/2 with prior knowledge, as Apple
serves it; anything else is HTTP/1.1.  Both handlers hand each
complete request to one dispatch function: the control routes
(``/_sandbox/...``) first, then the provider app, whose answer is an
:data:`Action` (a response, or a fault the core carries out).

The HTTP/2 path is built to cost the fake as little CPU as possible, since the
fake shares the machine with the client in benchmarks: an app coroutine that
never suspends is run to completion in place (no task per request), and every
answer produced while handling one read is written in one transport write.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import ssl
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, Union

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
from hpack import NeverIndexedHeaderTuple

if TYPE_CHECKING:
    from pushwarden.sandbox.certs import TlsMaterial
    from pushwarden.sandbox.faults import FaultPlan
    from pushwarden.sandbox.recording import Recorder


@dataclass(frozen=True, slots=True)
class Request:
    """A complete request as received (pseudo-headers moved to fields)."""

    method: str
    path: str
    headers: tuple[tuple[str, str], ...]
    body: bytes
    connection_id: int
    stream_id: int | None
    http_version: str
    received_at: float

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (case-insensitive)."""
        key = name.lower()
        for k, v in self.headers:
            if k == key:
                return v
        return None


@dataclass(frozen=True, slots=True)
class Response:
    """An answer to send."""

    status: int
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""


@dataclass(frozen=True, slots=True)
class Delay:
    """Answer ``then`` after ``seconds``; the connection's other streams keep flowing."""

    seconds: float
    then: Action


@dataclass(frozen=True, slots=True)
class NoAnswer:
    """Never answer this request; the connection and its other streams stay healthy."""


@dataclass(frozen=True, slots=True)
class ResetStream:
    """RST_STREAM with ``error_code`` (INTERNAL_ERROR by default); closes an HTTP/1.1 connection."""

    error_code: int = 2


@dataclass(frozen=True, slots=True)
class DropConnection:
    """Abort the TCP connection at once, mid-stream, without GOAWAY."""


@dataclass(frozen=True, slots=True)
class GoAway:
    """Send GOAWAY and close.

    Without ``then`` the GOAWAY's last stream id excludes this request (the
    client may retry it elsewhere); with ``then`` the request is answered first
    and included.
    """

    error_code: int = 0
    then: Response | None = None


@dataclass(frozen=True, slots=True)
class Http2Only:
    """Refuse a request that did not come over HTTP/2, as an HTTP/2-only server does.

    Such a server reads a client's first bytes as the HTTP/2 connection
    preface: an HTTP/1.1 request line is not one, so it answers with its
    SETTINGS and a GOAWAY (PROTOCOL_ERROR) and hangs up.  An HTTP/1.1 client
    gets no HTTP/1.1 answer at all.  On an HTTP/2 stream it is a GOAWAY.
    """


Action = Union[Response, Delay, NoAnswer, ResetStream, DropConnection, GoAway, Http2Only]  # noqa: UP007


class App(Protocol):
    """A provider behind the core.

    An app that keeps state per connection may also define
    ``connection_closed(connection_id: int) -> None``; the core calls it when
    a connection ends.
    """

    name: str

    async def handle(self, request: Request) -> Action:
        """Answer one request (never raises for bad input: answers it)."""
        ...


Dispatch = Callable[[Request], Awaitable[Action]]

CONTROL_PREFIX = "/_sandbox/"
#: What an HTTP/2 client sends first (RFC 9113, section 3.4).
H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
#: Streams a client may open at once on one connection (Apple advertises 1000).
DEFAULT_MAX_STREAMS = 1000
_STREAM_WINDOW = 1 << 20
_CONNECTION_WINDOW = (1 << 31) - 1
_ACK_THRESHOLD = 1 << 24
_STATUS = {code: str(code).encode() for code in (200, 400, 403, 404, 405, 410, 413, 429, 500, 503)}
#: Response headers whose value differs on every answer: never indexed.
_UNIQUE = frozenset({"apns-id", "apns-unique-id", "date"})
_INTERNAL_ERROR = Response(
    500, (("content-type", "application/json"),), b'{"reason":"InternalServerError"}'
)


def run_inline(coro: Coroutine[Any, Any, Action]) -> tuple[bool, Any]:
    """Step ``coro`` once: ``(True, result)`` if it finished without suspending.

    Otherwise ``(False, yielded)``: the caller must finish it with
    :func:`finish_coroutine`.  Saves a task per request on the common path
    where the app answers at once.
    """
    try:
        yielded = coro.send(None)
    except StopIteration as stop:
        return True, stop.value
    return False, yielded


async def finish_coroutine(coro: Coroutine[Any, Any, Action], yielded: Any) -> Action:
    """Drive a coroutine that already yielded ``yielded`` to completion, as a task would."""
    while True:
        try:
            if yielded is None:
                await asyncio.sleep(0)
            else:
                # What a Task does with a future its coroutine awaits.
                yielded._asyncio_future_blocking = False
                await asyncio.wait([yielded])
        except asyncio.CancelledError:
            coro.close()
            raise
        try:
            yielded = coro.send(None)
        except StopIteration as stop:
            result: Action = stop.value
            return result


class _LeanH2Connection(h2.connection.H2Connection):
    """h2's connection, minus a scan of every stream for each new stream.

    h2 counts open streams (to enforce SETTINGS_MAX_CONCURRENT_STREAMS) by
    walking all of them, purging closed ones, every time a stream opens: a
    cost linear in the streams in flight.  The number of streams it still
    holds bounds that count from above, so the exact walk is needed only when
    the bound reaches the limit; in between, closed streams wait to be purged.
    """

    @property
    def open_inbound_streams(self) -> int:
        held = len(self.streams)
        if held < self.local_settings.max_concurrent_streams:
            return held
        return super().open_inbound_streams


class _H2Handler:
    """HTTP/2 server side of one connection."""

    __slots__ = (
        "closed",
        "conn",
        "connection_id",
        "dispatch",
        "in_batch",
        "loop",
        "pending",
        "streams",
        "tasks",
        "timers",
        "transport",
        "unacked",
    )

    def __init__(
        self,
        transport: asyncio.Transport,
        dispatch: Dispatch,
        connection_id: int,
        max_streams: int,
    ) -> None:
        # Header validation and normalisation are skipped both ways: they cost
        # the fake a fifth of its CPU per request, the clients under test are
        # well-behaved and the answers are built here, lower-case already.
        config = h2.config.H2Configuration(
            client_side=False,
            header_encoding=None,
            validate_inbound_headers=False,
            normalize_inbound_headers=False,
            validate_outbound_headers=False,
            normalize_outbound_headers=False,
        )
        conn = _LeanH2Connection(config=config)
        conn.local_settings = h2.settings.Settings(
            client=False,
            initial_values={
                h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: max_streams,
                h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: _STREAM_WINDOW,
                h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: 65536,
            },
        )
        # Answers carry a fresh apns-id each: sent as plain never-indexed
        # literals, they cost neither side Huffman coding (pure Python in hpack)
        # nor dynamic-table churn.
        conn.encoder.encode = functools.partial(conn.encoder.encode, huffman=False)  # type: ignore[method-assign]
        conn.initiate_connection()
        conn.increment_flow_control_window(_CONNECTION_WINDOW - 65535)
        self.conn = conn
        self.transport = transport
        self.dispatch = dispatch
        self.connection_id = connection_id
        self.loop = asyncio.get_running_loop()
        self.streams: dict[int, tuple[list[tuple[bytes, bytes]], list[bytes]]] = {}
        self.pending: dict[int, bytes] = {}
        self.timers: set[asyncio.TimerHandle] = set()
        self.tasks: set[asyncio.Task[Action]] = set()
        self.unacked = 0
        self.closed = False
        self.in_batch = False
        transport.write(conn.data_to_send())

    # -- inbound -------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        self.in_batch = True
        try:
            events = self.conn.receive_data(data)
        except h2.exceptions.ProtocolError:
            # h2 has queued a GOAWAY saying why; send it, then hang up.
            self.in_batch = False
            self._write_now()
            self.close()
            return
        try:
            for event in events:
                self._on_event(event)
        finally:
            self.in_batch = False
        self._flush()

    def _on_event(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.DataReceived):
            sid = event.stream_id
            entry = self.streams.get(sid)
            if entry is not None and event.data:
                entry[1].append(event.data)
            self._ack(event.flow_controlled_length, sid, entry)
        elif isinstance(event, h2.events.RequestReceived):
            self.streams[event.stream_id] = (list(event.headers), [])
        elif isinstance(event, h2.events.StreamEnded):
            self._complete(event.stream_id)
        elif isinstance(event, h2.events.StreamReset):
            self.streams.pop(event.stream_id, None)
            self.pending.pop(event.stream_id, None)
        elif isinstance(event, h2.events.WindowUpdated):
            if self.pending:
                self._resume(event.stream_id)
        elif isinstance(event, h2.events.ConnectionTerminated):
            self.close()

    def _ack(self, length: int, stream_id: int, entry: Any) -> None:
        # The connection window starts near 2**31 and is topped up in large
        # steps; streams get a 1 MiB window that request bodies never exhaust,
        # so the common path sends no WINDOW_UPDATE at all.
        self.unacked += length
        if self.unacked >= _ACK_THRESHOLD:
            self.conn.increment_flow_control_window(self.unacked)
            self.unacked = 0
        if entry is not None and sum(map(len, entry[1])) > _STREAM_WINDOW // 2:
            with contextlib.suppress(h2.exceptions.StreamClosedError):
                self.conn.increment_flow_control_window(length, stream_id=stream_id)

    def _complete(self, stream_id: int) -> None:
        entry = self.streams.pop(stream_id, None)
        if entry is None:
            return
        raw_headers, chunks = entry
        method = path = ""
        headers: list[tuple[str, str]] = []
        for name, value in raw_headers:
            if name[:1] == b":":
                if name == b":method":
                    method = value.decode("ascii", "replace")
                elif name == b":path":
                    path = value.decode("utf-8", "replace")
            else:
                headers.append((name.decode("ascii", "replace"), value.decode("utf-8", "replace")))
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        request = Request(
            method=method,
            path=path,
            headers=tuple(headers),
            body=body,
            connection_id=self.connection_id,
            stream_id=stream_id,
            http_version="2",
            received_at=time.time(),
        )
        coro = self.dispatch(request)
        if not isinstance(coro, Coroutine):
            task = asyncio.ensure_future(coro)
            task.add_done_callback(lambda t: self._on_task_done(stream_id, t))
            return
        try:
            done, value = run_inline(coro)
        except Exception:
            self._act(stream_id, _INTERNAL_ERROR)
            return
        if done:
            self._act(stream_id, value)
            return
        finishing: asyncio.Task[Action] = self.loop.create_task(finish_coroutine(coro, value))
        self.tasks.add(finishing)
        finishing.add_done_callback(lambda t: self._on_task_done(stream_id, t))

    def _on_task_done(self, stream_id: int, task: asyncio.Future[Action]) -> None:
        self.tasks.discard(task)
        if task.cancelled() or self.closed:
            return
        action = _INTERNAL_ERROR if task.exception() is not None else task.result()
        self._act(stream_id, action)
        self._flush()

    # -- outbound ------------------------------------------------------------

    def _act(self, stream_id: int, action: Action) -> None:
        if self.closed:
            return
        try:
            if isinstance(action, Response):
                self._respond(stream_id, action)
            elif isinstance(action, Delay):
                self._delay(stream_id, action)
            elif isinstance(action, ResetStream):
                self.conn.reset_stream(stream_id, action.error_code)
            elif isinstance(action, DropConnection):
                self.closed = True
                self.transport.abort()
            elif isinstance(action, GoAway):
                self._goaway(stream_id, action)
            elif isinstance(action, Http2Only):
                self._goaway(stream_id, GoAway(h2.errors.ErrorCodes.PROTOCOL_ERROR))
            # NoAnswer: leave the stream open for ever.
        except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
            # The client reset or closed the stream meanwhile; nothing to answer.
            pass

    def _respond(self, stream_id: int, response: Response) -> None:
        headers: list[tuple[bytes, bytes]] = [
            (b":status", _STATUS.get(response.status) or str(response.status).encode())
        ]
        headers.extend(
            (
                NeverIndexedHeaderTuple(k.encode(), v.encode())
                if k in _UNIQUE
                else (k.encode(), v.encode())
            )
            for k, v in response.headers
        )
        body = response.body
        if body:
            headers.append((b"content-length", str(len(body)).encode()))
            self.conn.send_headers(stream_id, headers)
            self._send_body(stream_id, body)
        else:
            self.conn.send_headers(stream_id, headers, end_stream=True)

    def _send_body(self, stream_id: int, body: bytes) -> None:
        # Small bodies (every APNs answer) leave in one DATA frame, which is
        # what aioapns needs to parse an error; larger ones follow the peer's
        # flow-control window and frame size, the rest waiting for WINDOW_UPDATE.
        conn = self.conn
        while body:
            room = min(conn.local_flow_control_window(stream_id), conn.max_outbound_frame_size)
            if room <= 0:
                self.pending[stream_id] = body
                return
            chunk, body = body[:room], body[room:]
            conn.send_data(stream_id, chunk, end_stream=not body)
        self.pending.pop(stream_id, None)

    def _resume(self, stream_id: int) -> None:
        targets = list(self.pending) if stream_id == 0 else [stream_id]
        for sid in targets:
            body = self.pending.pop(sid, None)
            if body is not None:
                with contextlib.suppress(h2.exceptions.ProtocolError):
                    self._send_body(sid, body)

    def _delay(self, stream_id: int, delay: Delay) -> None:
        def fire() -> None:
            self.timers.discard(handle)
            self._act(stream_id, delay.then)
            self._flush()

        handle = self.loop.call_later(delay.seconds, fire)
        self.timers.add(handle)

    def _goaway(self, stream_id: int, goaway: GoAway) -> None:
        if goaway.then is not None:
            self._respond(stream_id, goaway.then)
            last = stream_id
        else:
            last = max(0, stream_id - 2)
        self.conn.close_connection(error_code=goaway.error_code, last_stream_id=last)
        # Written now, even mid-batch: nothing is sent on this connection after it.
        self._write_now()
        self.closed = True
        self.transport.close()

    def _flush(self) -> None:
        if self.in_batch or self.closed:
            return
        self._write_now()

    def _write_now(self) -> None:
        data = self.conn.data_to_send()
        if data:
            self.transport.write(data)

    def close(self) -> None:
        """Stop answering and close the transport."""
        if not self.closed:
            self.closed = True
            self.transport.close()
        self.connection_lost()

    def connection_lost(self) -> None:
        self.closed = True
        for handle in self.timers:
            handle.cancel()
        self.timers.clear()
        for task in list(self.tasks):
            task.cancel()


class _SandboxProtocol(asyncio.Protocol):
    """Accepts one TLS connection and hands it to the handler for its protocol.

    ALPN decides when the client offered it; without ALPN the first bytes do
    (``sniffed`` holds them until they match the HTTP/2 preface or cannot).
    """

    def __init__(self, server: SandboxServer) -> None:
        self.server = server
        self.h2: _H2Handler | None = None
        self.stream_protocol: asyncio.StreamReaderProtocol | None = None
        self.transport: asyncio.Transport | None = None
        self.http1_task: asyncio.Task[None] | None = None
        self.connection_id = 0
        self.sniffed: bytes | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        server = self.server
        server._connections.add(self)
        self.connection_id = next(server._ids)
        ssl_object = transport.get_extra_info("ssl_object")
        alpn = ssl_object.selected_alpn_protocol() if ssl_object is not None else None
        if alpn == "h2":
            self._serve_h2()
        elif alpn is None:
            self.sniffed = b""
        else:
            self._serve_http1()

    def _serve_h2(self) -> None:
        assert self.transport is not None
        self.h2 = _H2Handler(
            self.transport, self.server.dispatch, self.connection_id, self.server.max_streams
        )

    def _serve_http1(self) -> None:
        transport = self.transport
        assert transport is not None
        try:
            from pushwarden.sandbox.http1 import serve_http1
        except ImportError:
            # No HTTP/1.1 handler installed: refuse the connection cleanly.
            transport.close()
            return
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=1 << 20)
        protocol = asyncio.StreamReaderProtocol(reader)
        protocol.connection_made(transport)
        writer = asyncio.StreamWriter(transport, protocol, reader, loop)
        self.stream_protocol = protocol
        self.http1_task = loop.create_task(
            serve_http1(reader, writer, self.server.dispatch, self.connection_id)
        )

    def _sniff(self, data: bytes) -> None:
        seen = (self.sniffed or b"") + data
        if len(seen) < len(H2_PREFACE) and H2_PREFACE.startswith(seen):
            self.sniffed = seen
            return
        self.sniffed = None
        if seen.startswith(H2_PREFACE):
            self._serve_h2()
            if self.h2 is not None:
                self.h2.data_received(seen)
        else:
            self._serve_http1()
            if self.stream_protocol is not None:
                self.stream_protocol.data_received(seen)

    def data_received(self, data: bytes) -> None:
        if self.h2 is not None:
            self.h2.data_received(data)
        elif self.stream_protocol is not None:
            self.stream_protocol.data_received(data)
        elif self.sniffed is not None:
            self._sniff(data)

    def eof_received(self) -> bool | None:
        if self.stream_protocol is not None:
            return self.stream_protocol.eof_received()
        return None

    def pause_writing(self) -> None:
        if self.stream_protocol is not None:
            self.stream_protocol.pause_writing()

    def resume_writing(self) -> None:
        if self.stream_protocol is not None:
            self.stream_protocol.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self._forget()
        if self.h2 is not None:
            self.h2.connection_lost()
        if self.stream_protocol is not None:
            self.stream_protocol.connection_lost(exc)

    def abort(self) -> None:
        self._forget()
        if self.http1_task is not None:
            self.http1_task.cancel()
        if self.h2 is not None:
            self.h2.connection_lost()
        if self.transport is not None:
            self.transport.abort()

    def _forget(self) -> None:
        if self in self.server._connections:
            self.server._connections.discard(self)
            closed = getattr(self.server.app, "connection_closed", None)
            if closed is not None:
                closed(self.connection_id)


class SandboxServer:
    """A running sandbox provider: its port, TLS files, recorder and fault plan."""

    def __init__(
        self,
        app: App,
        *,
        recorder: Recorder,
        faults: FaultPlan,
        material: TlsMaterial | None,
        host: str,
        max_streams: int,
    ) -> None:
        self.app = app
        self.recorder = recorder
        self.faults = faults
        self.material = material
        self.host = host
        self.port = 0
        self.max_streams = max_streams
        self._server: asyncio.Server | None = None
        self._connections: set[_SandboxProtocol] = set()
        self._ids = itertools.count(1)

    @property
    def ca_file(self) -> str | None:
        """The CA certificate clients must trust (None when no material was given)."""
        return None if self.material is None else str(self.material.ca_file)

    @property
    def cert_file(self) -> str | None:
        """The server certificate."""
        return None if self.material is None else str(self.material.cert_file)

    @property
    def key_file(self) -> str | None:
        """The server certificate's private key."""
        return None if self.material is None else str(self.material.key_file)

    @property
    def url(self) -> str:
        """``https://host:port`` of this server."""
        return f"https://{self.host}:{self.port}"

    @property
    def connection_count(self) -> int:
        """Connections currently open."""
        return len(self._connections)

    async def dispatch(self, request: Request) -> Action:
        """Control routes first, then the app."""
        if request.path.startswith(CONTROL_PREFIX):
            from pushwarden.sandbox.control import control_response

            return control_response(request, self.app.name, self.recorder, self.faults)
        return await self.app.handle(request)

    async def _start(self, port: int, ssl_context: ssl.SSLContext) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _SandboxProtocol(self), self.host, port, ssl=ssl_context, reuse_address=True
        )
        self.port = self._server.sockets[0].getsockname()[1]

    def drop_connections(self) -> int:
        """Abort every open connection (as a network failure would); returns how many."""
        conns = list(self._connections)
        for conn in conns:
            conn.abort()
        return len(conns)

    async def close(self) -> None:
        """Stop listening and abort the open connections."""
        if self._server is not None:
            self._server.close()
            self.drop_connections()
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> SandboxServer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


async def start_server(
    app: App,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    ssl_context: ssl.SSLContext,
    recorder: Recorder,
    faults: FaultPlan,
    material: TlsMaterial | None = None,
    max_streams: int = DEFAULT_MAX_STREAMS,
) -> SandboxServer:
    """Start serving ``app`` over TLS on ``host:port`` (0: any free port)."""
    server = SandboxServer(
        app,
        recorder=recorder,
        faults=faults,
        material=material,
        host=host,
        max_streams=max_streams,
    )
    await server._start(port, ssl_context)
    return server


class ThreadedSandbox:
    """A sandbox server running on its own event loop in a daemon thread.

    For tests whose client blocks the calling loop.  Exposes the same
    attributes as :class:`SandboxServer`; ``stop()`` closes it and joins.
    """

    def __init__(self, start: Callable[[], Awaitable[SandboxServer]]) -> None:
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._server: SandboxServer | None = None
        self._thread = threading.Thread(
            target=self._run, args=(start,), name="sandbox", daemon=True
        )
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            raise self._error

    def _run(self, start: Callable[[], Awaitable[SandboxServer]]) -> None:
        asyncio.set_event_loop(self._loop)

        async def boot() -> None:
            self._server = await start()

        try:
            self._loop.run_until_complete(boot())
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        self._loop.run_forever()
        self._loop.run_until_complete(self._loop.shutdown_asyncgens())
        self._loop.close()

    @property
    def server(self) -> SandboxServer:
        """The server (valid once constructed)."""
        assert self._server is not None
        return self._server

    def __getattr__(self, name: str) -> Any:
        # port, ca_file, recorder, faults, url... come from the server.
        return getattr(self.server, name)

    def stop(self) -> None:
        """Close the server and stop its thread."""
        if not self._thread.is_alive():
            return
        fut = asyncio.run_coroutine_threadsafe(self.server.close(), self._loop)
        fut.result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)

    def __enter__(self) -> ThreadedSandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def run_in_thread(
    app: App,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    ssl_context: ssl.SSLContext,
    recorder: Recorder,
    faults: FaultPlan,
    material: TlsMaterial | None = None,
    max_streams: int = DEFAULT_MAX_STREAMS,
) -> ThreadedSandbox:
    """Start ``app`` like :func:`start_server`, on a loop in a background thread."""

    async def start() -> SandboxServer:
        return await start_server(
            app,
            host=host,
            port=port,
            ssl_context=ssl_context,
            recorder=recorder,
            faults=faults,
            material=material,
            max_streams=max_streams,
        )

    return ThreadedSandbox(start)
