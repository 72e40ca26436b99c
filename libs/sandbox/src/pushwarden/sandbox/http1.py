"""HTTP/1.1 connection handler of the sandbox servers, on h11.

The core hands a TLS connection here when ALPN did not pick ``h2`` (google-auth's
token refresh and firebase-admin's synchronous ``send`` both use ``requests``,
which speaks HTTP/1.1 only). One request at a time per connection, keep-alive,
``Content-Length`` or chunked request bodies. Fault actions are carried out as
far as HTTP/1.1 can express them: there are no streams, so resetting a stream
or sending GOAWAY both end the connection. A request a provider serves over
HTTP/2 only (APNs) is refused with :class:`~pushwarden.sandbox.core.Http2Only`:
HTTP/2 SETTINGS and GOAWAY frames where the client expects a status line.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import h2.config
import h2.connection
import h2.errors
import h11

from pushwarden.sandbox.core import (
    Action,
    Delay,
    Dispatch,
    DropConnection,
    GoAway,
    Http2Only,
    NoAnswer,
    Request,
    ResetStream,
    Response,
)

__all__ = ["serve_http1"]

_log = logging.getLogger(__name__)

_READ_SIZE = 65536
_MAX_BODY = 16 * 1024 * 1024
_SERVER_HEADER = (b"server", b"pushwarden-sandbox")
_INTERNAL_ERROR = Response(500, (("content-type", "text/plain"),), b"sandbox error")


class _Close(Exception):
    """Raised inside the handler to end the connection; ``abort`` drops it without TLS close."""

    def __init__(self, *, abort: bool = False) -> None:
        super().__init__()
        self.abort = abort


async def serve_http1(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    dispatch: Dispatch,
    connection_id: int,
) -> None:
    """Serve HTTP/1.1 requests on one connection until either side closes it.

    Each complete request becomes a :class:`Request` passed to ``dispatch``; the
    returned action is carried out before the next request is read.
    """
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=_MAX_BODY)
    abort = False
    try:
        while True:
            request = await _read_request(conn, reader, connection_id)
            if request is None:
                break
            try:
                action = await dispatch(request)
            except Exception:
                _log.exception("sandbox dispatch failed for %s %s", request.method, request.path)
                action = _INTERNAL_ERROR
            await _carry_out(conn, reader, writer, action)
            if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
                break
            conn.start_next_cycle()
    except _Close as close:
        abort = close.abort
    except h11.RemoteProtocolError as exc:
        await _answer_protocol_error(conn, writer, exc)
    except (ConnectionError, asyncio.IncompleteReadError, h11.LocalProtocolError):
        abort = True
    except asyncio.CancelledError:
        abort = True
        raise
    finally:
        await _finish(writer, abort=abort)


async def _read_request(
    conn: h11.Connection, reader: asyncio.StreamReader, connection_id: int
) -> Request | None:
    """Read one whole request (head and body); ``None`` when the client closed cleanly."""
    head: h11.Request | None = None
    chunks: list[bytes] = []
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            data = await reader.read(_READ_SIZE)
            conn.receive_data(data)
            continue
        if isinstance(event, h11.Request):
            head = event
        elif isinstance(event, h11.Data):
            chunks.append(bytes(event.data))
        elif isinstance(event, h11.EndOfMessage) and head is not None:
            return _to_request(head, b"".join(chunks), connection_id)
        elif isinstance(event, h11.ConnectionClosed) or event is h11.PAUSED:
            return None


def _to_request(head: h11.Request, body: bytes, connection_id: int) -> Request:
    return Request(
        method=head.method.decode("ascii"),
        path=head.target.decode("latin-1"),
        headers=tuple(
            (name.decode("latin-1"), value.decode("latin-1")) for name, value in head.headers
        ),
        body=body,
        connection_id=connection_id,
        stream_id=None,
        http_version="1.1",
        received_at=time.time(),
    )


async def _carry_out(
    conn: h11.Connection,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    action: Action,
) -> None:
    """Carry out one action; raises :class:`_Close` when the connection must end."""
    while isinstance(action, Delay):
        await asyncio.sleep(action.seconds)
        action = action.then
    if isinstance(action, Response):
        await _send_response(conn, writer, action)
    elif isinstance(action, NoAnswer):
        # Stay silent but keep the socket open until the client gives up, as a hung server would.
        await _drain_until_eof(reader)
        raise _Close()
    elif isinstance(action, ResetStream):
        raise _Close()
    elif isinstance(action, DropConnection):
        raise _Close(abort=True)
    elif isinstance(action, GoAway):
        # The closest HTTP/1.1 has to GOAWAY: answer (if asked to) with Connection: close.
        if action.then is not None:
            closing = Response(
                action.then.status,
                (*action.then.headers, ("connection", "close")),
                action.then.body,
            )
            await _send_response(conn, writer, closing)
        raise _Close()
    elif isinstance(action, Http2Only):
        writer.write(_http2_refusal())
        await writer.drain()
        raise _Close()


def _http2_refusal() -> bytes:
    """What an HTTP/2-only server writes to a client whose first bytes are not the preface."""
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
    conn.initiate_connection()
    conn.close_connection(error_code=h2.errors.ErrorCodes.PROTOCOL_ERROR)
    return conn.data_to_send()


async def _send_response(
    conn: h11.Connection, writer: asyncio.StreamWriter, response: Response
) -> None:
    headers = [
        (name.encode("latin-1"), value.encode("latin-1")) for name, value in response.headers
    ]
    if not any(name.lower() == b"content-length" for name, _ in headers):
        headers.append((b"content-length", str(len(response.body)).encode("ascii")))
    headers.append(_SERVER_HEADER)
    out = conn.send(h11.Response(status_code=response.status, headers=headers))
    assert out is not None
    if response.body:
        data = conn.send(h11.Data(data=response.body))
        assert data is not None
        out += data
    end = conn.send(h11.EndOfMessage())
    assert end is not None
    writer.write(out + end)
    await writer.drain()


async def _drain_until_eof(reader: asyncio.StreamReader) -> None:
    with contextlib.suppress(ConnectionError):
        while await reader.read(_READ_SIZE):
            pass


async def _answer_protocol_error(
    conn: h11.Connection, writer: asyncio.StreamWriter, exc: h11.RemoteProtocolError
) -> None:
    if conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
        return
    body = f"Bad request: {exc}".encode()
    with contextlib.suppress(h11.LocalProtocolError, ConnectionError):
        await _send_response(
            conn,
            writer,
            Response(exc.error_status_hint, (("content-type", "text/plain"),), body),
        )


async def _finish(writer: asyncio.StreamWriter, *, abort: bool) -> None:
    if abort:
        writer.transport.abort()
        return
    writer.close()
    with contextlib.suppress(ConnectionError, OSError, asyncio.TimeoutError):
        await asyncio.wait_for(writer.wait_closed(), timeout=5)
