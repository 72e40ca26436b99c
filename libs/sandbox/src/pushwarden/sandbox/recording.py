"""Recording of every request a sandbox provider handled.

Apps append one :class:`RecordedRequest` per request once they know its
outcome (status and reason, or the fault that left it unanswered).  Tests read
the :class:`Recorder` in process; other processes use the control routes.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pushwarden.sandbox.core import Request


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """One request as the fake saw it, with what it answered.

    ``status`` and ``reason`` are None when no answer was sent (a fault such as
    ``no_answer`` or ``drop_connection``); ``fault`` names the effect applied.
    """

    time: float
    connection_id: int
    stream_id: int | None
    http_version: str
    method: str
    path: str
    headers: tuple[tuple[str, str], ...]
    body: bytes
    provider: str
    token: str | None = None
    apns_id: str | None = None
    message_name: str | None = None
    status: int | None = None
    reason: str | None = None
    fault: str | None = None

    @classmethod
    def of(cls, request: Request, *, provider: str, **outcome: Any) -> RecordedRequest:
        """The record of ``request`` as received, plus what the fake made of it
        (``token``, ``apns_id`` or ``message_name``, ``status``, ``reason``, ``fault``)."""
        return cls(
            time=request.received_at,
            connection_id=request.connection_id,
            stream_id=request.stream_id,
            http_version=request.http_version,
            method=request.method,
            path=request.path,
            headers=request.headers,
            body=request.body,
            provider=provider,
            **outcome,
        )

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (case-insensitive)."""
        key = name.lower()
        for k, v in self.headers:
            if k == key:
                return v
        return None

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (the body as UTF-8 text, undecodable bytes replaced)."""
        return {
            "time": self.time,
            "connection_id": self.connection_id,
            "stream_id": self.stream_id,
            "http_version": self.http_version,
            "method": self.method,
            "path": self.path,
            "headers": [list(h) for h in self.headers],
            "body": self.body.decode("utf-8", "replace"),
            "provider": self.provider,
            "token": self.token,
            "apns_id": self.apns_id,
            "message_name": self.message_name,
            "status": self.status,
            "reason": self.reason,
            "fault": self.fault,
        }


def _selects(
    r: RecordedRequest, token: str | None, apns_id: str | None, message_name: str | None
) -> bool:
    return (
        (token is None or r.token == token)
        and (apns_id is None or r.apns_id == apns_id)
        and (message_name is None or r.message_name == message_name)
    )


@dataclass(slots=True)
class Recorder:
    """Thread-safe, append-only (until cleared) list of recorded requests.

    ``limit`` bounds memory for long-running fakes: past it the oldest
    requests are forgotten (``dropped`` counts them); None keeps everything.
    """

    limit: int | None = None
    dropped: int = 0
    _items: list[RecordedRequest] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def append(self, request: RecordedRequest) -> None:
        """Record one request."""
        with self._lock:
            self._items.append(request)
            if self.limit is not None and len(self._items) > self.limit:
                # Trim in steps of a tenth so the copy is paid rarely.
                cut = len(self._items) - self.limit + self.limit // 10
                del self._items[:cut]
                self.dropped += cut

    def requests(
        self,
        token: str | None = None,
        apns_id: str | None = None,
        message_name: str | None = None,
    ) -> list[RecordedRequest]:
        """Recorded requests in arrival order, filtered by the given fields."""
        with self._lock:
            items = list(self._items)
        if token is None and apns_id is None and message_name is None:
            return items
        return [r for r in items if _selects(r, token, apns_id, message_name)]

    def count(
        self,
        token: str | None = None,
        apns_id: str | None = None,
        message_name: str | None = None,
    ) -> int:
        """How many recorded requests match the filters."""
        if token is None and apns_id is None and message_name is None:
            return len(self._items)
        return len(self.requests(token, apns_id, message_name))

    def clear(self) -> int:
        """Forget every request; returns how many there were."""
        with self._lock:
            n = len(self._items)
            self._items.clear()
            self.dropped = 0
        return n

    def to_json(
        self,
        token: str | None = None,
        apns_id: str | None = None,
        message_name: str | None = None,
    ) -> list[dict[str, Any]]:
        """The filtered requests as JSON-ready dicts."""
        return [r.to_json() for r in self.requests(token, apns_id, message_name)]
