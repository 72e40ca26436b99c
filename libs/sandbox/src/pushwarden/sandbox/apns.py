"""A fake Apple Push Notification service (HTTP/2 provider API, token auth).

``POST /3/device/<token>`` is checked the way Apple documents it: the provider
token (an ES256 JWT whose ``kid`` and ``iss`` name a configured key, at most
an hour old), the ``apns-*`` headers against the key's topics and Apple's
value rules, the device token's format and the payload's size for its push
type.  A connection that changes its provider token again within 20 minutes
gets ``TooManyProviderTokenUpdates``.  The provider API is served over HTTP/2
only (ALPN ``h2`` or, as aioapns connects, no ALPN and the HTTP/2 preface); a
request over HTTP/1.1 gets what an HTTP/2-only server sends, never an answer.
Answers are Apple's: 200 with the ``apns-id`` echoed (or assigned), or
the error status with ``{"reason": ...}`` (and ``timestamp`` on 410).  Faults
from the :class:`~pushwarden.sandbox.faults.FaultPlan` come first, so every
row of Apple's error table can be produced on demand.

Lean on purpose: a verified JWT is cached by its exact string, so the common
path does one dict lookup for auth; error bodies are pre-encoded.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from pushwarden.sandbox.certs import TlsMaterial, generate_tls_material, server_ssl_context
from pushwarden.sandbox.core import (
    DEFAULT_MAX_STREAMS,
    Action,
    Delay,
    Http2Only,
    Request,
    Response,
    SandboxServer,
    ThreadedSandbox,
    run_in_thread,
    start_server,
)
from pushwarden.sandbox.faults import FaultPlan, FaultSpec, fault_action
from pushwarden.sandbox.recording import RecordedRequest, Recorder

#: Apple refuses provider tokens older than one hour.
TOKEN_MAX_AGE = 3600.0
#: Apple refuses a connection's new provider token within 20 minutes of its last one
#: ("update the authentication token no more than once every 20 minutes").
TOKEN_UPDATE_INTERVAL = 20 * 60.0
#: Payload limits by push type (bytes); Apple allows 5 KB for VoIP, 4 KB otherwise.
PAYLOAD_LIMITS: Mapping[str, int] = {"voip": 5120}
DEFAULT_PAYLOAD_LIMIT = 4096
PUSH_TYPES = frozenset(
    {
        "alert",
        "background",
        "location",
        "voip",
        "complication",
        "fileprovider",
        "mdm",
        "liveactivity",
        "pushtotalk",
        "widgets",
        "controls",
    }
)
#: Topic suffix a push type requires on top of the app's bundle id.
TOPIC_SUFFIXES: Mapping[str, str] = {
    "voip": ".voip",
    "complication": ".complication",
    "fileprovider": ".pushkit.fileprovider",
    "liveactivity": ".push-type.liveactivity",
    "location": ".location-query",
    "pushtotalk": ".voip-ptt",
}
#: Priorities Apple accepts, per push type (others: 5 and 10).
PRIORITIES: Mapping[str, frozenset[int]] = {
    "background": frozenset({1, 5}),
    "alert": frozenset({1, 5, 10}),
    "liveactivity": frozenset({1, 5, 10}),
}
DEFAULT_PRIORITIES = frozenset({5, 10})
MAX_COLLAPSE_ID = 64
DEVICE_PATH = "/3/device/"
_TOKEN_RE = re.compile(r"[0-9a-fA-F]{64,200}")
_UUID_RE = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
)
_JSON_CT = ("content-type", "application/json")

#: Apple's error reasons and the status each comes with.
REASON_STATUS: Mapping[str, int] = {
    "BadCollapseId": 400,
    "BadDeviceToken": 400,
    "BadExpirationDate": 400,
    "BadMessageId": 400,
    "BadPriority": 400,
    "BadTopic": 400,
    "DeviceTokenNotForTopic": 400,
    "DuplicateHeaders": 400,
    "IdleTimeout": 400,
    "InvalidPushType": 400,
    "MissingDeviceToken": 400,
    "MissingTopic": 400,
    "PayloadEmpty": 400,
    "TopicDisallowed": 400,
    "BadCertificate": 403,
    "BadCertificateEnvironment": 403,
    "ExpiredProviderToken": 403,
    "Forbidden": 403,
    "InvalidProviderToken": 403,
    "MissingProviderToken": 403,
    "UnrelatedKeyIdInToken": 403,
    "BadPath": 404,
    "MethodNotAllowed": 405,
    "ExpiredToken": 410,
    "Unregistered": 410,
    "PayloadTooLarge": 413,
    "TooManyProviderTokenUpdates": 429,
    "TooManyRequests": 429,
    "InternalServerError": 500,
    "ServiceUnavailable": 503,
    "Shutdown": 503,
}
#: Reason used when a fault gives only a status.
DEFAULT_REASONS: Mapping[int, str] = {
    400: "BadDeviceToken",
    403: "InvalidProviderToken",
    404: "BadPath",
    405: "MethodNotAllowed",
    410: "Unregistered",
    413: "PayloadTooLarge",
    429: "TooManyRequests",
    500: "InternalServerError",
    503: "ServiceUnavailable",
}


@dataclass(frozen=True, slots=True)
class ApnsKey:
    """A provider key the fake accepts: its id, team, public key and allowed bundle ids."""

    key_id: str
    team_id: str
    public_key_pem: str
    topics: tuple[str, ...]

    @classmethod
    def from_private_pem(
        cls, key_id: str, team_id: str, private_pem: str, topics: Iterable[str]
    ) -> ApnsKey:
        """The key whose private half (the .p8 PEM text) the client signs with."""
        private = serialization.load_pem_private_key(private_pem.encode(), password=None)
        public = private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return cls(key_id, team_id, public.decode(), tuple(topics))

    @classmethod
    def from_json(cls, data: Mapping[str, Any], base: Path | None = None) -> ApnsKey:
        """From a config object: ``key_id``, ``team_id``, ``topics`` and one of
        ``public_key_pem``, ``public_key_file`` or ``private_key_file`` (a .p8)."""
        topics = tuple(data.get("topics", ()))
        if "public_key_pem" in data:
            return cls(data["key_id"], data["team_id"], data["public_key_pem"], topics)

        def read(name: str) -> str:
            path = Path(data[name])
            return (path if base is None or path.is_absolute() else base / path).read_text()

        if "public_key_file" in data:
            return cls(data["key_id"], data["team_id"], read("public_key_file"), topics)
        return cls.from_private_pem(
            data["key_id"], data["team_id"], read("private_key_file"), topics
        )


def generate_signing_key() -> str:
    """A throwaway EC P-256 key as PKCS#8 PEM text, the form of an Apple .p8 key."""
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


@dataclass(frozen=True, slots=True)
class _Verified:
    key: ApnsKey
    issued_at: float


class _Refused(Exception):
    """A request refused for ``reason`` (by an expired-token ``window`` fault if given)."""

    def __init__(self, reason: str, window: FaultSpec | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.window = window


_HEADER_NAMES = frozenset(
    {
        "authorization",
        "apns-id",
        "apns-topic",
        "apns-push-type",
        "apns-priority",
        "apns-expiration",
        "apns-collapse-id",
    }
)
_JWT_CACHE_LIMIT = 10_000


def _base_topic(topic: str, push_type: str | None) -> str:
    suffix = TOPIC_SUFFIXES.get(push_type or "")
    if suffix and topic.endswith(suffix):
        return topic[: -len(suffix)]
    return topic


class ApnsApp:
    """The fake APNs provider API (an :class:`~pushwarden.sandbox.core.App`)."""

    name = "apns"

    def __init__(
        self,
        keys: Iterable[ApnsKey],
        *,
        recorder: Recorder,
        faults: FaultPlan,
        clock: Callable[[], float] = time.time,
        device_topics: Mapping[str, str] | None = None,
    ) -> None:
        self.keys = {k.key_id: k for k in keys}
        self.recorder = recorder
        self.faults = faults
        self.clock = clock
        #: Tokens known to belong to one app: another topic gets DeviceTokenNotForTopic.
        self.device_topics: dict[str, str] = dict(device_topics or {})
        self._public_keys = {
            k.key_id: serialization.load_pem_public_key(k.public_key_pem.encode())
            for k in self.keys.values()
        }
        self._jwt_cache: dict[str, _Verified | str] = {}
        self._error_bodies: dict[str, bytes] = {}
        #: Per open connection: the provider token it last established, and since when.
        self._connection_tokens: dict[int, tuple[str, float]] = {}

    def bind_token(self, token: str, topic: str) -> None:
        """Declare that ``token`` belongs to the app ``topic``."""
        self.device_topics[token] = topic

    def connection_closed(self, connection_id: int) -> None:
        """Forget what a closed connection held (its provider token)."""
        self._connection_tokens.pop(connection_id, None)

    async def handle(self, request: Request) -> Action:
        """Answer one provider API request (and record it).

        A request over HTTP/1.1 is refused as Apple's HTTP/2-only endpoint
        refuses it, and not recorded: it never reaches the provider API.
        """
        if request.http_version != "2":
            return Http2Only()
        token: str | None = None
        fault: FaultSpec | None = None
        headers = dict(request.headers)
        apns_id = headers.get("apns-id")
        path = request.path
        if path.startswith(DEVICE_PATH):
            token = path[len(DEVICE_PATH) :].split("?", 1)[0]
        if request.method != "POST":
            action: Action = self._error("MethodNotAllowed", apns_id)
        elif token is None:
            action = self._error("BadPath", apns_id)
        else:
            fault = self.faults.match(token, effects=_REQUEST_EFFECTS) if len(self.faults) else None
            if fault is None:
                action, fault = self._answer(request, token, headers, apns_id)
            else:
                action = fault_action(
                    fault,
                    normal=lambda: self._answer(request, token or "", headers, apns_id)[0],
                    error=lambda spec: self._fault_error(spec, apns_id),
                )
        self._record(request, token, apns_id, action, fault)
        return action

    # -- the checks --------------------------------------------------------------

    def _answer(
        self, request: Request, token: str, headers: dict[str, str], apns_id: str | None
    ) -> tuple[Response, FaultSpec | None]:
        """The normal answer, and the expired-token window that caused it if any."""
        try:
            self._check(request, token, headers, apns_id)
        except _Refused as refused:
            if refused.window is not None:
                return self._fault_error(refused.window, apns_id), refused.window
            return self._error(refused.reason, apns_id), None
        return Response(200, (("apns-id", apns_id or str(uuid.uuid4())),)), None

    def _check(
        self, request: Request, token: str, headers: dict[str, str], apns_id: str | None
    ) -> None:
        if len(headers) != len(request.headers) and self._duplicated(request):
            raise _Refused("DuplicateHeaders")
        verified = self._verify(headers.get("authorization"))
        if len(self.faults):
            window = self.faults.match(token, issued_at=verified.issued_at, effects=_WINDOW_EFFECTS)
            if window is not None:
                raise _Refused("ExpiredProviderToken", window)
        self._check_token_update(request.connection_id, headers["authorization"])
        push_type = headers.get("apns-push-type")
        if push_type is not None and push_type not in PUSH_TYPES:
            raise _Refused("InvalidPushType")
        topic = headers.get("apns-topic")
        if not topic:
            raise _Refused("MissingTopic")
        base = _base_topic(topic, push_type)
        if base not in verified.key.topics:
            raise _Refused("TopicDisallowed")
        if (suffix := TOPIC_SUFFIXES.get(push_type or "")) and not topic.endswith(suffix):
            raise _Refused("TopicDisallowed")
        bound = self.device_topics.get(token)
        if bound is not None and bound != base:
            raise _Refused("DeviceTokenNotForTopic")
        priority = headers.get("apns-priority")
        if priority is not None:
            allowed = PRIORITIES.get(push_type or "alert", DEFAULT_PRIORITIES)
            if not priority.isdigit() or int(priority) not in allowed:
                raise _Refused("BadPriority")
        expiration = headers.get("apns-expiration")
        if expiration is not None and not expiration.isdigit():
            raise _Refused("BadExpirationDate")
        collapse = headers.get("apns-collapse-id")
        if collapse is not None and len(collapse.encode()) > MAX_COLLAPSE_ID:
            raise _Refused("BadCollapseId")
        if apns_id is not None and not _UUID_RE.fullmatch(apns_id):
            raise _Refused("BadMessageId")
        if not token:
            raise _Refused("MissingDeviceToken")
        if not _TOKEN_RE.fullmatch(token):
            raise _Refused("BadDeviceToken")
        self._check_payload(request.body, push_type)

    def _check_token_update(self, connection_id: int, authorization: str) -> None:
        held = self._connection_tokens.get(connection_id)
        if held is not None and held[0] == authorization:
            return
        now = self.clock()
        if held is not None and now - held[1] < TOKEN_UPDATE_INTERVAL:
            raise _Refused("TooManyProviderTokenUpdates")
        self._connection_tokens[connection_id] = (authorization, now)

    @staticmethod
    def _duplicated(request: Request) -> bool:
        seen: set[str] = set()
        for name, _ in request.headers:
            if name in _HEADER_NAMES:
                if name in seen:
                    return True
                seen.add(name)
        return False

    @staticmethod
    def _check_payload(body: bytes, push_type: str | None) -> None:
        if not body.strip():
            raise _Refused("PayloadEmpty")
        if len(body) > PAYLOAD_LIMITS.get(push_type or "", DEFAULT_PAYLOAD_LIMIT):
            raise _Refused("PayloadTooLarge")
        try:
            payload = json.loads(body)
        except ValueError:
            raise _Refused("PayloadEmpty") from None
        if not isinstance(payload, dict) or not payload:
            raise _Refused("PayloadEmpty")

    def _verify(self, authorization: str | None) -> _Verified:
        if not authorization:
            raise _Refused("MissingProviderToken")
        cached = self._jwt_cache.get(authorization)
        if cached is None:
            cached = self._decode(authorization)
            if len(self._jwt_cache) >= _JWT_CACHE_LIMIT:
                self._jwt_cache.clear()
            self._jwt_cache[authorization] = cached
        if isinstance(cached, str):
            raise _Refused(cached)
        if self.clock() - cached.issued_at > TOKEN_MAX_AGE:
            raise _Refused("ExpiredProviderToken")
        return cached

    def _decode(self, authorization: str) -> _Verified | str:
        """The verified key and issue time of a bearer JWT, or the reason it is refused."""
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token:
            return "InvalidProviderToken"
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError:
            return "InvalidProviderToken"
        key = self.keys.get(str(header.get("kid")))
        if key is None or header.get("alg") != "ES256":
            return "InvalidProviderToken"
        try:
            claims = jwt.decode(
                token,
                self._public_keys[key.key_id],  # type: ignore[arg-type]
                algorithms=["ES256"],
                options={"verify_iat": False, "verify_exp": False, "require": ["iss", "iat"]},
            )
        except jwt.InvalidTokenError:
            return "InvalidProviderToken"
        if claims.get("iss") != key.team_id or not isinstance(claims.get("iat"), int | float):
            return "InvalidProviderToken"
        return _Verified(key, float(claims["iat"]))

    # -- answers -----------------------------------------------------------------

    def _error(self, reason: str, apns_id: str | None, status: int | None = None) -> Response:
        body = self._error_bodies.get(reason)
        if body is None:
            body = self._error_bodies[reason] = json.dumps({"reason": reason}).encode()
        return Response(
            status or REASON_STATUS.get(reason, 400),
            (("apns-id", apns_id or str(uuid.uuid4())), _JSON_CT),
            body,
        )

    def _fault_error(self, spec: FaultSpec, apns_id: str | None) -> Response:
        if spec.effect == "expired_token_window":
            status, reason = 403, spec.reason or "ExpiredProviderToken"
        elif spec.status is None:
            # A fault may name only Apple's reason: its status is Apple's too.
            reason = spec.reason or "InternalServerError"
            status = REASON_STATUS.get(reason, 400)
        else:
            status = spec.status
            reason = spec.reason or DEFAULT_REASONS.get(status, "InternalServerError")
        headers: list[tuple[str, str]] = [("apns-id", apns_id or str(uuid.uuid4())), _JSON_CT]
        if spec.retry_after is not None:
            headers.append(("retry-after", str(spec.retry_after)))
        data: dict[str, Any] = {"reason": reason}
        if status == 410:
            stamp = spec.timestamp_ms
            data["timestamp"] = int(self.clock() * 1000) if stamp is None else stamp
        return Response(status, tuple(headers), json.dumps(data).encode())

    def _record(
        self,
        request: Request,
        token: str | None,
        apns_id: str | None,
        action: Action,
        fault: FaultSpec | None,
    ) -> None:
        final = action.then if isinstance(action, Delay) else action
        status = reason = None
        if isinstance(final, Response):
            status = final.status
            if status != 200:
                reason = _reason_of(final.body)
            if apns_id is None:
                apns_id = _header(final.headers, "apns-id")
        fault_name = fault.effect if fault is not None else None
        self.recorder.append(
            RecordedRequest.of(
                request,
                provider="apns",
                token=token,
                apns_id=apns_id,
                status=status,
                reason=reason,
                fault=fault_name,
            )
        )


_REQUEST_EFFECTS = frozenset(
    {"status", "delay", "no_answer", "reset_stream", "drop_connection", "goaway"}
)
_WINDOW_EFFECTS = frozenset({"expired_token_window"})


def _header(headers: tuple[tuple[str, str], ...], name: str) -> str | None:
    for k, v in headers:
        if k == name:
            return v
    return None


def _reason_of(body: bytes) -> str | None:
    try:
        data = json.loads(body)
    except ValueError:
        return None
    reason = data.get("reason") if isinstance(data, dict) else None
    return reason if isinstance(reason, str) else None


async def start_apns(
    keys: Iterable[ApnsKey],
    *,
    state_dir: Path,
    host: str = "127.0.0.1",
    port: int = 0,
    faults: FaultPlan | None = None,
    recorder: Recorder | None = None,
    max_streams: int = DEFAULT_MAX_STREAMS,
) -> SandboxServer:
    """Start a fake APNs on the running loop (TLS material under ``state_dir``)."""
    material = generate_tls_material(state_dir)
    app, recorder, faults = _build(keys, faults, recorder)
    return await start_server(
        app,
        host=host,
        port=port,
        ssl_context=server_ssl_context(material),
        recorder=recorder,
        faults=faults,
        material=material,
        max_streams=max_streams,
    )


def run_apns_in_thread(
    keys: Iterable[ApnsKey],
    *,
    state_dir: Path,
    host: str = "127.0.0.1",
    port: int = 0,
    faults: FaultPlan | None = None,
    max_streams: int = DEFAULT_MAX_STREAMS,
) -> ThreadedSandbox:
    """Start a fake APNs on its own loop in a background thread."""
    material: TlsMaterial = generate_tls_material(state_dir)
    app, recorder, plan = _build(keys, faults, None)
    return run_in_thread(
        app,
        host=host,
        port=port,
        ssl_context=server_ssl_context(material),
        recorder=recorder,
        faults=plan,
        material=material,
        max_streams=max_streams,
    )


def _build(
    keys: Iterable[ApnsKey], faults: FaultPlan | None, recorder: Recorder | None
) -> tuple[ApnsApp, Recorder, FaultPlan]:
    recorder = recorder if recorder is not None else Recorder()
    faults = faults if faults is not None else FaultPlan()
    return ApnsApp(keys, recorder=recorder, faults=faults), recorder, faults
