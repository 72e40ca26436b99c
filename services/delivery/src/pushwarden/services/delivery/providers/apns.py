"""APNs on aioapns 4.0, token auth, as shipped.

What aioapns does not do, done here: a deadline per send (it ignores
RST_STREAM and has no timeout), a new client when Apple refuses its provider
token (it signs one JWT per connection and never re-signs it), no hidden
resends (``max_connection_attempts=1``, so each send is one request and the
attempt budget stays exact), and the endpoint override.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import functools
from collections.abc import Sequence
from typing import Any

from aioapns import APNs, NotificationRequest, PushType
from aioapns.common import NotificationResult
from aioapns.connection import (
    APNsDevelopmentClientProtocol,
    APNsProductionClientProtocol,
    APNsTLSClientProtocol,
)
from aioapns.exceptions import ConnectionClosed, ConnectionError, MaxAttemptsExceeded
from h2.settings import SettingCodes

from pushwarden.payload import render_apns
from pushwarden.services.delivery.providers.classify import (
    Verdict,
    classify_apns,
    retry_after_seconds,
)
from pushwarden.services.delivery.providers.credentials import ApnsCredentials, Endpoint
from pushwarden.services.delivery.providers.model import (
    Delivered,
    Failed,
    Outcome,
    OutgoingPush,
    RetryAfter,
    TokenDead,
)

# Transport trouble that a later attempt may not meet.
_TRANSPORT_ERRORS = (ConnectionError, ConnectionClosed, MaxAttemptsExceeded, OSError)
# Streams per connection Apple allows (SETTINGS_MAX_CONCURRENT_STREAMS).
_APPLE_STREAMS = 1000
# Retry-After of error answers by apns-id (unique per send), noted by the protocol
# class since aioapns' results carry no headers; taken by the send that awaits it.
_retry_after: dict[str, float] = {}


@functools.cache
def protocol_class(
    endpoint: Endpoint | None, sandbox: bool, max_streams: int | None
) -> type[APNsTLSClientProtocol]:
    """The aioapns protocol class a client's pool connects with.

    aioapns has no host or port option: its pool connects to
    ``protocol_class.APNS_SERVER`` / ``APNS_PORT``.  This is the one place that
    aims it elsewhere (a fake APNs) and caps the streams it keeps in flight per
    connection (it otherwise takes the server's 1000; h2 scans every open
    stream whenever one opens, so fewer streams and more connections cost less).
    It notes a Retry-After (aioapns passes on no headers), and drops an
    answer that arrives after its send gave up: aioapns would
    set a result on the cancelled future, and the exception would close the
    connection under every other send on it.

    Two costs of aioapns per request are cut without changing a byte on the
    wire: each send writes to the socket (one TLS record and one syscall per
    push) and re-arms the inactivity timer, where a batch of pushes started in
    one turn of the loop now leaves in one write at the end of it; and the
    provider token, which h2 sends never-indexed so HPACK Huffman-codes it in
    Python on every request, is coded once per connection (see
    :class:`_TokenHuffman`).
    """
    base = APNsDevelopmentClientProtocol if sandbox else APNsProductionClientProtocol
    attrs: dict[str, Any] = {}
    if endpoint is not None:
        attrs["APNS_SERVER"], attrs["APNS_PORT"] = endpoint.host, endpoint.port
    cap = max_streams

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        base.__init__(self, *args, **kwargs)
        self.conn.encoder.huffman_coder = _TokenHuffman(self.conn.encoder.huffman_coder)
        self.flush_pending = False
        if cap is not None:
            self.free_channels.bound = cap

    def flush(self: Any) -> None:
        if not self.flush_pending:
            self.flush_pending = True
            self.loop.call_soon(flush_now, self)

    def flush_now(self: Any) -> None:
        self.flush_pending = False
        if self.transport is not None and not self.transport.is_closing():
            base.flush(self)

    attrs["__init__"] = __init__
    attrs["flush"] = flush

    def _drop_abandoned(self: Any, notification_id: str | None) -> None:
        future = self.requests.get(notification_id)
        if future is not None and future.done():
            del self.requests[notification_id]
            self.request_statuses.pop(notification_id, None)

    def on_response_received(self: Any, headers: dict[bytes, bytes]) -> None:
        notification_id = headers.get(b"apns-id", b"").decode("utf8")
        _drop_abandoned(self, notification_id)
        retry_after = headers.get(b"retry-after")
        if retry_after is not None and notification_id in self.requests:
            seconds = retry_after_seconds(retry_after.decode("latin-1"))
            if seconds is not None:
                _retry_after[notification_id] = seconds
        base.on_response_received(self, headers)

    def on_data_received(self: Any, raw_data: bytes, stream_id: int) -> None:
        _drop_abandoned(self, self.request_streams.get(stream_id))
        base.on_data_received(self, raw_data, stream_id)

    attrs["on_response_received"] = on_response_received
    attrs["on_data_received"] = on_data_received
    if cap is not None:

        def on_remote_settings_changed(self: Any, changed_settings: Any) -> None:
            limit = changed_settings.get(SettingCodes.MAX_CONCURRENT_STREAMS)
            if limit is not None:
                self.free_channels.bound = min(limit.new_value, cap)

        attrs["on_remote_settings_changed"] = on_remote_settings_changed
    return type(f"PushwardenAPNsProtocol_{base.__name__}", (base,), attrs)


class _TokenHuffman:
    """HPACK's Huffman coder of one connection, remembering the codes of long values.

    The one long value a connection sends again and again is the provider token in
    ``authorization`` (a ~200-byte JWT, the same for 30 minutes), which h2 marks
    never-indexed, so hpack codes it bit by bit in Python on every request. The code
    is a pure function of the bytes; shorter values (unique device paths, apns-ids)
    are coded as before, and a handful of entries bounds the memory.
    """

    _LONG = 128
    _ENTRIES = 8

    def __init__(self, coder: Any) -> None:
        self._coder = coder
        self._codes: dict[bytes, bytes] = {}

    def encode(self, value: bytes) -> bytes:
        if len(value) < self._LONG:
            return bytes(self._coder.encode(value))
        code = self._codes.get(value)
        if code is None:
            if len(self._codes) >= self._ENTRIES:
                self._codes.clear()
            code = self._codes[value] = bytes(self._coder.encode(value))
        return code


class ApnsProvider:
    """One app's APNs key and topic behind :class:`~.model.PushProvider`.

    The aioapns client is built on first use, inside the running loop (built
    outside it, its sends never complete).  ``timeout`` bounds each request
    once it has a stream; ``max_connections`` and ``max_streams`` bound what
    is in flight, further sends queue.
    """

    name = "apns"

    def __init__(
        self,
        credentials: ApnsCredentials,
        *,
        timeout: float = 10.0,
        max_connections: int = 10,
        max_streams: int | None = None,
    ) -> None:
        self._credentials = credentials
        self._timeout = timeout
        self._max_connections = max_connections
        self._protocol = protocol_class(
            credentials.endpoint, credentials.environment == "sandbox", max_streams
        )
        self._client: APNs | None = None
        self._retired: list[APNs] = []
        self._closing: set[asyncio.TimerHandle] = set()
        # Sends beyond what the connections can carry wait here, outside their
        # deadline, instead of in aioapns, which polls every 10 ms for a free stream.
        self._in_flight = asyncio.Semaphore(max_connections * (max_streams or _APPLE_STREAMS))
        self.clients_built = 0

    def _build(self) -> APNs:
        creds = self._credentials
        client = APNs(
            key=creds.key_pem,
            key_id=creds.key_id,
            team_id=creds.team_id,
            topic=creds.topic,
            max_connections=self._max_connections,
            max_connection_attempts=1,
            use_sandbox=creds.environment == "sandbox",
        )
        client.pool.protocol_class = self._protocol
        self.clients_built += 1
        return client

    def _current(self) -> APNs:
        if self._client is None:
            self._client = self._build()
        return self._client

    def _renew(self, refused: APNs) -> APNs:
        """A client with a fresh provider token, built once however many sends were refused.

        The old client keeps serving the sends in flight on it; it is closed once
        their deadline has passed.
        """
        if self._client is refused:
            self._client = self._build()
            self._retired.append(refused)
            handle = asyncio.get_running_loop().call_later(
                self._timeout + 1, self._close_retired, refused
            )
            self._closing.add(handle)
        return self._current()

    def _close_retired(self, client: APNs) -> None:
        now = asyncio.get_running_loop().time()
        self._closing = {handle for handle in self._closing if handle.when() > now}
        if client in self._retired:
            self._retired.remove(client)
            client.pool.close()

    async def send(self, batch: Sequence[OutgoingPush]) -> list[Outcome]:
        """Each push once (and once more on a fresh client if the token was refused)."""
        return list(await asyncio.gather(*(self.send_one(push) for push in batch)))

    async def send_one(self, push: OutgoingPush) -> Outcome:
        """One push; the outcome is data whatever happens."""
        options = push.options
        if not options.apns_topic:
            options = dataclasses.replace(options, apns_topic=self._credentials.topic)
        rendered = render_apns(push.content, options)
        if not rendered.size.fits:
            return Failed(reason="PayloadTooLarge", permanent=True, requests=0)
        # Seconds left by the service's clock (the runtime clock: options.now is when
        # dispatch built the push), which aioapns counts from its own wall clock.
        ttl = None
        if rendered.expiration is not None and options.now is not None:
            ttl = rendered.expiration - int(options.now.timestamp())
        if ttl is not None and ttl <= 0:
            return Failed(reason="Expired", permanent=True, requests=0)
        try:
            push_type = PushType(rendered.push_type)
        except ValueError:
            return Failed(
                reason=f"UnsupportedPushType:{rendered.push_type}", permanent=True, requests=0
            )
        request = NotificationRequest(
            push.token,
            rendered.payload,
            notification_id=push.apns_id,
            time_to_live=ttl,
            priority=rendered.priority,
            collapse_key=rendered.collapse_id,
            push_type=push_type,
            apns_topic=rendered.topic,
        )
        client = self._current()
        outcome, verdict = await self._attempt(client, request)
        if verdict is not Verdict.REFRESH_CREDENTIALS:
            return outcome
        # Refused again with a fresh token: the key itself is wrong (Failed, permanent).
        outcome, _ = await self._attempt(self._renew(client), request)
        return dataclasses.replace(outcome, requests=2)

    async def aclose(self) -> None:
        """Close every connection of the current and retired clients."""
        for handle in self._closing:
            handle.cancel()
        self._closing.clear()
        clients = [*self._retired, *([self._client] if self._client is not None else [])]
        self._retired.clear()
        self._client = None
        for client in clients:
            client.pool.close()

    async def _attempt(
        self, client: APNs, request: NotificationRequest
    ) -> tuple[Outcome, Verdict | None]:
        try:
            async with self._in_flight, asyncio.timeout(self._timeout):
                result = await client.send_notification(request)
        except TimeoutError:
            return RetryAfter(reason="Timeout"), None
        except _TRANSPORT_ERRORS as exc:
            return RetryAfter(reason=f"Connection:{type(exc).__name__}"), None
        except Exception as exc:  # an SDK failure must not leak out of the adapter
            return Failed(reason=f"ClientError:{type(exc).__name__}", permanent=False), None
        finally:
            retry_after = _retry_after.pop(request.notification_id, None)
        verdict = classify_apns(result.status, result.description)
        return _outcome(result, verdict, retry_after), verdict


def _outcome(result: NotificationResult, verdict: Verdict, retry_after: float | None) -> Outcome:
    reason = result.description or f"HTTP{result.status}"
    match verdict:
        case Verdict.DELIVERED:
            return Delivered(provider_id=result.notification_id)
        case Verdict.TOKEN_DEAD:
            stamp = result.timestamp
            at = None if stamp is None else dt.datetime.fromtimestamp(stamp / 1000, dt.UTC)
            return TokenDead(reason=reason, invalidated_at=at)
        case Verdict.RETRY:
            # Apple documents no Retry-After for APNs; honoured if one comes.
            return RetryAfter(reason=reason, seconds=retry_after)
        case Verdict.PERMANENT | Verdict.REFRESH_CREDENTIALS:
            return Failed(reason=reason, permanent=True)
