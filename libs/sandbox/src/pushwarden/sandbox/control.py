"""The control routes under ``/_sandbox/``, served on each fake's own port.

They let another process (``make run``, a benchmark, a shell with curl) query
the recording and change the faults of a running fake.  Bodies are JSON.

=======  ======================  ==============================================
method   path                    does
=======  ======================  ==============================================
GET      /_sandbox/health        ``{"provider": ..., "requests": n, "faults": n}``
GET      /_sandbox/requests      recorded requests (``?token=&apns_id=&message=``)
GET      /_sandbox/count         ``{"count": n}`` with the same filters
DELETE   /_sandbox/requests      forget the recording: ``{"cleared": n}``
GET      /_sandbox/faults        active fault specs (``times`` = hits left)
POST     /_sandbox/faults        add one spec or a list: ``{"added": [specs]}``
DELETE   /_sandbox/faults        remove every fault: ``{"cleared": n}``
=======  ======================  ==============================================
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

from pushwarden.sandbox.core import Request, Response
from pushwarden.sandbox.faults import FaultPlan, FaultSpecError, parse_specs
from pushwarden.sandbox.recording import Recorder

_JSON = (("content-type", "application/json"),)


def _json(status: int, data: Any) -> Response:
    return Response(status, _JSON, json.dumps(data).encode())


def _filters(query: str) -> dict[str, str | None]:
    params = parse_qs(query)

    def first(name: str) -> str | None:
        values = params.get(name)
        return values[0] if values else None

    return {"token": first("token"), "apns_id": first("apns_id"), "message_name": first("message")}


Handler = Callable[[Request, str, str, Recorder, FaultPlan], Response]


def _health(
    request: Request, query: str, provider: str, rec: Recorder, faults: FaultPlan
) -> Response:
    return _json(200, {"provider": provider, "requests": rec.count(), "faults": len(faults)})


def _list(
    request: Request, query: str, provider: str, rec: Recorder, faults: FaultPlan
) -> Response:
    return _json(200, rec.to_json(**_filters(query)))


def _count(
    request: Request, query: str, provider: str, rec: Recorder, faults: FaultPlan
) -> Response:
    return _json(200, {"count": rec.count(**_filters(query))})


def _clear_requests(
    request: Request, query: str, provider: str, rec: Recorder, faults: FaultPlan
) -> Response:
    return _json(200, {"cleared": rec.clear()})


def _list_faults(
    request: Request, query: str, provider: str, rec: Recorder, faults: FaultPlan
) -> Response:
    return _json(200, [s.to_json() for s in faults.specs()])


def _add_faults(
    request: Request, query: str, provider: str, rec: Recorder, faults: FaultPlan
) -> Response:
    try:
        specs = parse_specs(json.loads(request.body or b"null"))
    except (ValueError, FaultSpecError) as exc:
        return _json(400, {"error": str(exc)})
    return _json(200, {"added": [faults.add(s).to_json() for s in specs]})


def _clear_faults(
    request: Request, query: str, provider: str, rec: Recorder, faults: FaultPlan
) -> Response:
    return _json(200, {"cleared": faults.clear()})


ROUTES: dict[tuple[str, str], Handler] = {
    ("GET", "/_sandbox/health"): _health,
    ("GET", "/_sandbox/requests"): _list,
    ("GET", "/_sandbox/count"): _count,
    ("DELETE", "/_sandbox/requests"): _clear_requests,
    ("GET", "/_sandbox/faults"): _list_faults,
    ("POST", "/_sandbox/faults"): _add_faults,
    ("DELETE", "/_sandbox/faults"): _clear_faults,
}


def control_response(
    request: Request, provider: str, recorder: Recorder, faults: FaultPlan
) -> Response:
    """Answer a request whose path starts with ``/_sandbox/``."""
    parts = urlsplit(request.path)
    handler = ROUTES.get((request.method.upper(), parts.path))
    if handler is None:
        known = any(path == parts.path for _, path in ROUTES)
        return _json(405 if known else 404, {"error": f"no route {request.method} {parts.path}"})
    return handler(request, parts.query, provider, recorder, faults)
