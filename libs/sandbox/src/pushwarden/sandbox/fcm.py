"""Fake Firebase Cloud Messaging (HTTP v1 API) with Google's OAuth 2.0 token endpoint.

What firebase-admin (and google-auth underneath it) talks to:

- ``POST /token``: the JWT-bearer grant a service account makes. The RS256
  assertion is verified against the public key of the account named by its
  ``iss``; ``aud``, ``exp``/``iat`` and ``scope`` are checked as Google does,
  and an opaque access token with an expiry is issued. Errors are OAuth
  errors (``400 {"error": "invalid_grant", ...}``).
- ``POST /v1/projects/<project>/messages:send``: checks the bearer token
  (401 ``UNAUTHENTICATED``) and that the project is the account's (403
  ``PERMISSION_DENIED``), validates the message as FCM does (one target, string
  data, the Android / APNs / Webpush sections), applies any matching fault and
  answers ``{"name": "projects/<p>/messages/<id>"}`` or an error in Google's
  format with the FCM error code in ``details``.

Faults (see :mod:`pushwarden.sandbox.faults`) are matched on the message's target
token, after authentication and validation. A ``status`` fault names the FCM
error code in ``reason`` (``UNREGISTERED``, ``QUOTA_EXCEEDED``...) and/or the
HTTP status; an ``expired_token_window`` makes access tokens issued before its
``issued_before`` (or any, while it lasts) answer 401 as expired ones do.

The module also holds the client-side helpers that point the real
firebase-admin at a running fake (:func:`open_firebase_app` and friends), so
that the private URL override lives in one place.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import itertools
import json
import os
import re
import secrets
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from pushwarden.sandbox.certs import TlsMaterial, generate_tls_material, server_ssl_context
from pushwarden.sandbox.core import (
    Action,
    Delay,
    GoAway,
    Request,
    Response,
    SandboxServer,
    ThreadedSandbox,
    run_in_thread,
    start_server,
)
from pushwarden.sandbox.faults import FaultPlan, FaultSpec, fault_action
from pushwarden.sandbox.recording import RecordedRequest, Recorder

__all__ = [
    "FCM_ERRORS",
    "FcmApp",
    "FcmErrorCode",
    "ServiceAccount",
    "add_cli_arguments",
    "build_app",
    "close_firebase_app",
    "firebase_retry_backoff",
    "new_service_account",
    "open_firebase_app",
    "run_fcm_in_thread",
    "sandbox_ca_trust",
    "start_fcm",
    "validate_send_body",
    "write_service_account_file",
]

JWT_BEARER_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
#: Audiences Google's token endpoint accepts (google-auth always signs the first).
GOOGLE_TOKEN_AUDIENCES = frozenset(
    {
        "https://oauth2.googleapis.com/token",
        "https://www.googleapis.com/oauth2/v4/token",
        "https://accounts.google.com/o/oauth2/token",
    }
)
#: Either scope lets a token send FCM messages.
MESSAGING_SCOPES = frozenset(
    {
        "https://www.googleapis.com/auth/firebase.messaging",
        "https://www.googleapis.com/auth/cloud-platform",
    }
)
DEFAULT_TOKEN_LIFETIME = 3599
#: Google refuses assertions valid for longer than an hour.
MAX_ASSERTION_LIFETIME = 3600
CLOCK_SKEW = 300
FCM_ERROR_TYPE = "type.googleapis.com/google.firebase.fcm.v1.FcmError"
BAD_REQUEST_TYPE = "type.googleapis.com/google.rpc.BadRequest"
DEFAULT_RETRY_AFTER = 60
#: FCM refuses data + notification payloads above 4 KiB.
MAX_PAYLOAD_BYTES = 4096
MAX_TTL_SECONDS = 28 * 24 * 3600

_JSON_HEADERS = (("content-type", "application/json; charset=UTF-8"),)
_SEND_PATH = re.compile(r"/v1/projects/([^/]+)/messages:send")
_TOKEN_PATH = "/token"
#: A long-running fake forgets expired access tokens once it holds this many.
_PRUNE_GRANTS_AT = 1000


# --------------------------------------------------------------------------------------
# Error table


@dataclass(frozen=True, slots=True)
class FcmErrorCode:
    """One FCM error code: the HTTP status and Google status it comes with."""

    code: str
    http_status: int
    status: str
    message: str


FCM_ERRORS: Mapping[str, FcmErrorCode] = {
    row.code: row
    for row in (
        FcmErrorCode("UNREGISTERED", 404, "NOT_FOUND", "Requested entity was not found."),
        FcmErrorCode(
            "INVALID_ARGUMENT", 400, "INVALID_ARGUMENT", "Request contains an invalid argument."
        ),
        FcmErrorCode(
            "QUOTA_EXCEEDED",
            429,
            "RESOURCE_EXHAUSTED",
            "Quota exceeded for quota metric 'Messages' and limit 'Messages per minute'.",
        ),
        FcmErrorCode("UNAVAILABLE", 503, "UNAVAILABLE", "The service is currently unavailable."),
        FcmErrorCode("INTERNAL", 500, "INTERNAL", "Internal error encountered."),
        FcmErrorCode(
            "THIRD_PARTY_AUTH_ERROR",
            401,
            "UNAUTHENTICATED",
            "Auth error from APNS or Web Push Service",
        ),
        FcmErrorCode("SENDER_ID_MISMATCH", 403, "PERMISSION_DENIED", "SenderId mismatch"),
        FcmErrorCode("APNS_AUTH_ERROR", 401, "UNAUTHENTICATED", "Auth error from APNS"),
    )
}
#: The FCM code a bare HTTP status stands for in a fault spec.
_CODE_BY_STATUS: Mapping[int, str] = {
    row.http_status: row.code for row in FCM_ERRORS.values() if row.code != "APNS_AUTH_ERROR"
}
_GOOGLE_STATUS_BY_HTTP: Mapping[int, str] = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ABORTED",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    501: "NOT_IMPLEMENTED",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}


def _json_response(status: int, payload: Any, extra: tuple[tuple[str, str], ...] = ()) -> Response:
    body = json.dumps(payload, separators=(",", ":")).encode()
    return Response(status, _JSON_HEADERS + extra, body)


def google_error(
    http_status: int,
    status: str,
    message: str,
    *,
    fcm_code: str | None = None,
    details: Iterable[Mapping[str, Any]] = (),
    headers: tuple[tuple[str, str], ...] = (),
) -> Response:
    """An error in Google's JSON format, with the FCM error code in ``details`` if given."""
    all_details = [dict(d) for d in details]
    if fcm_code is not None:
        all_details.insert(0, {"@type": FCM_ERROR_TYPE, "errorCode": fcm_code})
    error: dict[str, Any] = {"code": http_status, "message": message, "status": status}
    if all_details:
        error["details"] = all_details
    return _json_response(http_status, {"error": error}, headers)


def fcm_error(
    code: str,
    *,
    message: str | None = None,
    http_status: int | None = None,
    retry_after: int | None = None,
) -> Response:
    """The response FCM gives for error ``code`` (an FCM code or a bare Google status)."""
    row = FCM_ERRORS.get(code)
    headers: tuple[tuple[str, str], ...] = ()
    if row is None:
        status = http_status or 400
        if retry_after is not None:
            headers = (("retry-after", str(retry_after)),)
        return google_error(status, code, message or code, headers=headers)
    status = http_status or row.http_status
    if retry_after is None and row.code == "QUOTA_EXCEEDED":
        retry_after = DEFAULT_RETRY_AFTER
    if retry_after is not None:
        headers = (("retry-after", str(retry_after)),)
    return google_error(
        status,
        _GOOGLE_STATUS_BY_HTTP.get(status, row.status),
        message or row.message,
        fcm_code=row.code,
        headers=headers,
    )


def _fault_error(spec: FaultSpec) -> Response:
    if spec.effect == "expired_token_window":
        return _unauthenticated(expired=True)
    code = spec.reason or _CODE_BY_STATUS.get(spec.status or 0, "INTERNAL")
    return fcm_error(code, http_status=spec.status, retry_after=spec.retry_after)


def _oauth_error(error: str, description: str, status: int = 400) -> Response:
    return _json_response(status, {"error": error, "error_description": description})


_MISSING_CREDENTIAL = (
    "Request is missing required authentication credential. Expected OAuth 2 access token, "
    "login cookie or other valid authentication credential. "
    "See https://developers.google.com/identity/sign-in/web/devconsole-project."
)
_INVALID_CREDENTIAL = (
    "Request had invalid authentication credentials. Expected OAuth 2 access token, "
    "login cookie or other valid authentication credential. "
    "See https://developers.google.com/identity/sign-in/web/devconsole-project."
)


def _unauthenticated(*, expired: bool, missing: bool = False) -> Response:
    challenge = 'Bearer realm="https://accounts.google.com/"'
    if not missing:
        challenge += ', error="invalid_token"'
    message = _MISSING_CREDENTIAL if missing else _INVALID_CREDENTIAL
    details = (
        [
            {
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": "ACCESS_TOKEN_EXPIRED" if expired else "ACCESS_TOKEN_TYPE_UNSUPPORTED",
                "domain": "googleapis.com",
            }
        ]
        if not missing
        else []
    )
    return google_error(
        401, "UNAUTHENTICATED", message, details=details, headers=(("www-authenticate", challenge),)
    )


# --------------------------------------------------------------------------------------
# Message validation


class InvalidMessage(Exception):
    """A send request FCM would refuse with 400 INVALID_ARGUMENT."""

    def __init__(self, message: str, *, field: str | None = None, fcm: bool = True) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.fcm = fcm

    def response(self) -> Response:
        """The 400 answer, shaped as FCM shapes it for this kind of mistake."""
        details: list[dict[str, Any]] = []
        if self.field is not None:
            details.append(
                {
                    "@type": BAD_REQUEST_TYPE,
                    "fieldViolations": [{"field": self.field, "description": self.message}],
                }
            )
        return google_error(
            400,
            "INVALID_ARGUMENT",
            self.message,
            fcm_code="INVALID_ARGUMENT" if self.fcm else None,
            details=details,
        )


@functools.cache
def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def _fields(names: str) -> frozenset[str]:
    # Google's JSON parser takes both the proto field name and its lowerCamel form.
    split = names.split()
    return frozenset(split) | frozenset(_camel(n) for n in split)


_TARGETS = ("token", "topic", "condition", "fid")
_BODY_FIELDS = _fields("message validate_only")
_MESSAGE_FIELDS = _fields(
    "name data notification android webpush apns fcm_options " + " ".join(_TARGETS)
)
_NOTIFICATION_FIELDS = _fields("title body image")
_ANDROID_FIELDS = _fields(
    "collapse_key priority ttl restricted_package_name data notification "
    "fcm_options direct_boot_ok bandwidth_constrained_ok "
    "restricted_satellite_ok"
)
_ANDROID_NOTIFICATION_FIELDS = _fields(
    "title body icon color sound tag click_action body_loc_key "
    "body_loc_args title_loc_key title_loc_args channel_id ticker sticky "
    "event_time local_only notification_priority default_sound "
    "default_vibrate_timings default_light_settings vibrate_timings "
    "visibility notification_count light_settings image "
    "bypass_proxy_notification proxy"
)
_APNS_FIELDS = _fields("headers payload fcm_options live_activity_token")
_WEBPUSH_FIELDS = _fields("headers data notification fcm_options")
_FCM_OPTIONS_FIELDS = _fields("analytics_label")
_APNS_FCM_OPTIONS_FIELDS = _fields("analytics_label image")
_WEBPUSH_FCM_OPTIONS_FIELDS = _fields("link analytics_label")

_ANDROID_PRIORITIES = frozenset({"NORMAL", "HIGH"})
_NOTIFICATION_PRIORITIES = frozenset(
    f"PRIORITY_{level}" for level in ("UNSPECIFIED", "MIN", "LOW", "DEFAULT", "HIGH", "MAX")
)
_VISIBILITIES = frozenset({"VISIBILITY_UNSPECIFIED", "PRIVATE", "PUBLIC", "SECRET"})
_PROXIES = frozenset({"PROXY_UNSPECIFIED", "ALLOW", "DENY", "IF_PRIORITY_LOWERED"})
_APNS_PRIORITIES = frozenset({"1", "5", "10"})
_APNS_PUSH_TYPES = frozenset(
    {"alert", "background", "location", "voip", "complication", "fileprovider", "mdm"}
    | {"liveactivity", "pushtotalk"}
)
_WEBPUSH_URGENCIES = frozenset({"very-low", "low", "normal", "high"})
_RESERVED_DATA_KEYS = frozenset({"from", "notification", "message_type"})
_RESERVED_DATA_PREFIXES = ("google.", "gcm.")
_TOKEN_RE = re.compile(r"[A-Za-z0-9_\-:.]{1,4096}")
_TOPIC_RE = re.compile(r"(/topics/)?[A-Za-z0-9\-_.~%]{1,900}")
_CONDITION_TOPIC_RE = re.compile(r"'([^']*)'\s+in\s+topics")
_DURATION_RE = re.compile(r"(\d+)(\.\d{1,9})?s")
_COLOR_RE = re.compile(r"#[0-9a-fA-F]{6}")
_LABEL_RE = re.compile(r"[a-zA-Z0-9\-_.~%]{1,50}")
_DIGITS_RE = re.compile(r"\d+")


def _get(obj: Mapping[str, Any], name: str) -> Any:
    value = obj.get(name)
    return obj.get(_camel(name)) if value is None else value


def _object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InvalidMessage(
            f"Invalid value at '{where}': expected a JSON object, got {json.dumps(value)}",
            field=where,
            fcm=False,
        )
    return value


def _known(obj: Mapping[str, Any], allowed: frozenset[str], where: str) -> None:
    for key in obj:
        if key not in allowed:
            text = f"Unknown name \"{key}\" at '{where}': Cannot find field."
            raise InvalidMessage(f"Invalid JSON payload received. {text}", field=where, fcm=False)


def _string(value: Any, where: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidMessage(
            f"Invalid value at '{where}' (TYPE_STRING), {json.dumps(value)}", field=where, fcm=False
        )
    return value


def _boolean(value: Any, where: str) -> None:
    if value is not None and not isinstance(value, bool):
        raise InvalidMessage(
            f"Invalid value at '{where}' (TYPE_BOOL), {json.dumps(value)}", field=where, fcm=False
        )


def _string_map(value: Any, where: str) -> dict[str, str]:
    if value is None:
        return {}
    mapping = _object(value, where)
    for index, item in enumerate(mapping.values()):
        if not isinstance(item, str):
            at = f"{where}[{index}].value"
            raise InvalidMessage(
                f"Invalid value at '{at}' (TYPE_STRING), {json.dumps(item)}", field=at, fcm=False
            )
    return mapping


def _enum(value: Any, allowed: frozenset[str], where: str, type_name: str) -> None:
    if value is None:
        return
    if not isinstance(value, str) or value.upper() not in allowed:
        raise InvalidMessage(
            f"Invalid value at '{where}' ({type_name}), {json.dumps(value)}", field=where, fcm=False
        )


def _duration_seconds(value: Any, where: str) -> float:
    match = _DURATION_RE.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise InvalidMessage(
            f"Invalid value at '{where}' (type.googleapis.com/google.protobuf.Duration), "
            f"{json.dumps(value)}",
            field=where,
            fcm=False,
        )
    return float(value[:-1])


def _target(message: Mapping[str, Any]) -> tuple[str, str]:
    present = [name for name in _TARGETS if message.get(name) is not None]
    if not present:
        raise InvalidMessage("Recipient of the message is not set.")
    if len(present) > 1:
        raise InvalidMessage(
            "Invalid JSON payload received. Oneof field 'target' is already set. "
            f"Cannot set '{present[1]}'",
            field="message",
            fcm=False,
        )
    kind = present[0]
    value = _string(message[kind], f"message.{kind}") or ""
    _check_target(kind, value)
    return kind, value


def _check_target(kind: str, value: str) -> None:
    if kind in ("token", "fid") and _TOKEN_RE.fullmatch(value) is None:
        raise InvalidMessage("The registration token is not a valid FCM registration token")
    if kind == "topic" and _TOPIC_RE.fullmatch(value) is None:
        raise InvalidMessage("Invalid topic name.")
    if kind == "condition":
        topics = _CONDITION_TOPIC_RE.findall(value)
        if not topics or len(topics) > 5:
            raise InvalidMessage("Invalid condition expression provided.")


def _check_data(data: Mapping[str, str], where: str) -> int:
    size = 0
    for key, value in data.items():
        if key in _RESERVED_DATA_KEYS or key.startswith(_RESERVED_DATA_PREFIXES):
            raise InvalidMessage(f"Invalid data payload key: {key}", field=where)
        size += len(key.encode()) + len(value.encode())
    return size


def _check_notification(value: Any, where: str) -> int:
    if value is None:
        return 0
    notification = _object(value, where)
    _known(notification, _NOTIFICATION_FIELDS, where)
    size = 0
    for name in ("title", "body", "image"):
        text = _string(notification.get(name), f"{where}.{name}")
        size += len(text.encode()) if text else 0
    return size


def _check_android(value: Any) -> int:
    where = "message.android"
    android = _object(value, where)
    _known(android, _ANDROID_FIELDS, where)
    _string(_get(android, "collapse_key"), f"{where}.collapse_key")
    _string(_get(android, "restricted_package_name"), f"{where}.restricted_package_name")
    _enum(
        android.get("priority"),
        _ANDROID_PRIORITIES,
        f"{where}.priority",
        "type.googleapis.com/google.firebase.fcm.v1.AndroidMessagePriority",
    )
    ttl = android.get("ttl")
    if ttl is not None and _duration_seconds(ttl, f"{where}.ttl") > MAX_TTL_SECONDS:
        raise InvalidMessage(
            f"The ttl of an Android message must not exceed {MAX_TTL_SECONDS}s (28 days).",
            field=f"{where}.ttl",
        )
    for flag in ("direct_boot_ok", "bandwidth_constrained_ok", "restricted_satellite_ok"):
        _boolean(_get(android, flag), f"{where}.{flag}")
    size = _check_data(_string_map(android.get("data"), f"{where}.data"), f"{where}.data")
    _check_options(_get(android, "fcm_options"), _FCM_OPTIONS_FIELDS, f"{where}.fcm_options")
    notification = android.get("notification")
    if notification is not None:
        size += _check_android_notification(notification, f"{where}.notification")
    return size


def _check_android_notification(value: Any, where: str) -> int:
    notification = _object(value, where)
    _known(notification, _ANDROID_NOTIFICATION_FIELDS, where)
    size = 0
    for name in ("title", "body", "icon", "sound", "tag", "click_action", "channel_id", "image"):
        text = _string(_get(notification, name), f"{where}.{name}")
        size += len(text.encode()) if text else 0
    color = _string(notification.get("color"), f"{where}.color")
    if color is not None and _COLOR_RE.fullmatch(color) is None:
        raise InvalidMessage("color must be in the form #RRGGBB", field=f"{where}.color")
    _enum(
        _get(notification, "notification_priority"),
        _NOTIFICATION_PRIORITIES,
        f"{where}.notification_priority",
        "type.googleapis.com/google.firebase.fcm.v1.AndroidNotification.NotificationPriority",
    )
    _enum(
        notification.get("visibility"),
        _VISIBILITIES,
        f"{where}.visibility",
        "type.googleapis.com/google.firebase.fcm.v1.AndroidNotification.Visibility",
    )
    _enum(
        notification.get("proxy"),
        _PROXIES,
        f"{where}.proxy",
        "type.googleapis.com/google.firebase.fcm.v1.AndroidNotification.Proxy",
    )
    return size


def _check_apns(value: Any) -> int:
    where = "message.apns"
    apns = _object(value, where)
    _known(apns, _APNS_FIELDS, where)
    headers = _string_map(apns.get("headers"), f"{where}.headers")
    priority = headers.get("apns-priority")
    if priority is not None and priority not in _APNS_PRIORITIES:
        raise InvalidMessage("Invalid APNs priority.", field=f"{where}.headers")
    expiration = headers.get("apns-expiration")
    if expiration is not None and _DIGITS_RE.fullmatch(expiration) is None:
        raise InvalidMessage("Invalid APNs expiration.", field=f"{where}.headers")
    push_type = headers.get("apns-push-type")
    if push_type is not None and push_type not in _APNS_PUSH_TYPES:
        raise InvalidMessage("Invalid APNs push type.", field=f"{where}.headers")
    _string(_get(apns, "live_activity_token"), f"{where}.live_activity_token")
    _check_options(_get(apns, "fcm_options"), _APNS_FCM_OPTIONS_FIELDS, f"{where}.fcm_options")
    payload = apns.get("payload")
    if payload is None:
        return 0
    payload = _object(payload, f"{where}.payload")
    aps = payload.get("aps")
    if aps is not None:
        _object(aps, f"{where}.payload.aps")
    size = len(json.dumps(payload, separators=(",", ":")).encode())
    if size > MAX_PAYLOAD_BYTES:
        raise InvalidMessage("APNs payload is too big.", field=f"{where}.payload")
    return 0


def _check_webpush(value: Any) -> int:
    where = "message.webpush"
    webpush = _object(value, where)
    _known(webpush, _WEBPUSH_FIELDS, where)
    headers = _string_map(webpush.get("headers"), f"{where}.headers")
    ttl = headers.get("TTL", headers.get("ttl"))
    if ttl is not None and _DIGITS_RE.fullmatch(ttl) is None:
        raise InvalidMessage("Invalid Webpush TTL header.", field=f"{where}.headers")
    urgency = headers.get("Urgency", headers.get("urgency"))
    if urgency is not None and urgency not in _WEBPUSH_URGENCIES:
        raise InvalidMessage("Invalid Webpush Urgency header.", field=f"{where}.headers")
    size = _check_data(_string_map(webpush.get("data"), f"{where}.data"), f"{where}.data")
    notification = webpush.get("notification")
    if notification is not None:
        _object(notification, f"{where}.notification")
    options = _check_options(
        _get(webpush, "fcm_options"), _WEBPUSH_FCM_OPTIONS_FIELDS, f"{where}.fcm_options"
    )
    link = _string(options.get("link"), f"{where}.fcm_options.link")
    if link is not None and not link.startswith("https://"):
        raise InvalidMessage("The link must be an HTTPS URL.", field=f"{where}.fcm_options.link")
    return size


def _check_options(value: Any, allowed: frozenset[str], where: str) -> dict[str, Any]:
    if value is None:
        return {}
    options = _object(value, where)
    _known(options, allowed, where)
    label = _string(_get(options, "analytics_label"), f"{where}.analytics_label")
    if label is not None and _LABEL_RE.fullmatch(label) is None:
        raise InvalidMessage("Invalid analytics label.", field=f"{where}.analytics_label")
    return options


_SECTION_CHECKS: tuple[tuple[str, Callable[[Any], int]], ...] = (
    ("android", _check_android),
    ("apns", _check_apns),
    ("webpush", _check_webpush),
)


@dataclass(frozen=True, slots=True)
class SendRequest:
    """A send request that passed validation."""

    target_kind: str
    target: str
    validate_only: bool

    @property
    def token(self) -> str | None:
        """The registration token (or Firebase installation id) the message is for."""
        return self.target if self.target_kind in ("token", "fid") else None


def validate_send_body(body: Any) -> SendRequest:
    """Check a decoded ``messages:send`` body as FCM does; raises :class:`InvalidMessage`."""
    body = _object(body, "request")
    _known(body, _BODY_FIELDS, "request")
    validate_only = _get(body, "validate_only")
    _boolean(validate_only, "validate_only")
    message = body.get("message")
    if message is None:
        raise InvalidMessage("Request contains an invalid argument.", field="message")
    message = _object(message, "message")
    _known(message, _MESSAGE_FIELDS, "message")
    kind, target = _target(message)
    size = _check_data(_string_map(message.get("data"), "message.data"), "message.data")
    size += _check_notification(message.get("notification"), "message.notification")
    _check_options(_get(message, "fcm_options"), _FCM_OPTIONS_FIELDS, "message.fcm_options")
    for name, check in _SECTION_CHECKS:
        section = message.get(name)
        if section is not None:
            size += check(section)
    if size > MAX_PAYLOAD_BYTES:
        raise InvalidMessage(f"Message is too big: {size} bytes of payload (at most 4096).")
    return SendRequest(kind, target, bool(validate_only))


# --------------------------------------------------------------------------------------
# Service accounts and the token endpoint


@dataclass(frozen=True, slots=True)
class ServiceAccount:
    """A service account the fake knows: who it is, its project, its public key."""

    client_email: str
    project_id: str
    public_key: rsa.RSAPublicKey
    private_key_id: str | None = None

    @classmethod
    def from_key_file(cls, path: Path) -> ServiceAccount:
        """The account of a service-account JSON key file (public key from its private key)."""
        info = json.loads(path.read_text())
        key = serialization.load_pem_private_key(info["private_key"].encode(), password=None)
        if not isinstance(key, rsa.RSAPrivateKey):
            raise ValueError(f"{path}: the private key is not an RSA key")
        return cls(
            info["client_email"], info["project_id"], key.public_key(), info.get("private_key_id")
        )


def new_service_account(
    project_id: str = "pushwarden-sandbox",
    client_email: str | None = None,
) -> tuple[ServiceAccount, rsa.RSAPrivateKey]:
    """A fresh RSA key and the account the fake should accept for it."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    email = client_email or f"firebase-adminsdk@{project_id}.iam.gserviceaccount.com"
    account = ServiceAccount(email, project_id, key.public_key(), secrets.token_hex(20))
    return account, key


def write_service_account_file(
    path: Path, account: ServiceAccount, key: rsa.RSAPrivateKey, token_uri: str
) -> Path:
    """Write a service-account JSON key file (as Google issues them) with ``token_uri``."""
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    info = {
        "type": "service_account",
        "project_id": account.project_id,
        "private_key_id": account.private_key_id or "",
        "private_key": pem,
        "client_email": account.client_email,
        "client_id": "100000000000000000000",
        "auth_uri": "https://accounts.google.com/o/oauth2/auth",
        "token_uri": token_uri,
        "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
        "client_x509_cert_url": "https://www.googleapis.com/robot/v1/metadata/x509/sandbox",
        "universe_domain": "googleapis.com",
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(info, indent=2))
    tmp.chmod(0o600)
    tmp.replace(path)
    return path


@dataclass(frozen=True, slots=True)
class _Grant:
    account: ServiceAccount
    issued_at: float
    expires_at: float


class _AssertionRefused(Exception):
    def __init__(self, error: str, description: str) -> None:
        super().__init__(description)
        self.error = error
        self.description = description


def _verify_assertion(
    assertion: str,
    accounts: Mapping[str, ServiceAccount],
    audiences: frozenset[str],
    now: float,
) -> ServiceAccount:
    try:
        claims = jwt.decode(assertion, options={"verify_signature": False})
        header = jwt.get_unverified_header(assertion)
    except jwt.PyJWTError as exc:
        raise _AssertionRefused("invalid_grant", f"Invalid JWT: {exc}") from exc
    account = accounts.get(str(claims.get("iss")))
    if account is None:
        raise _AssertionRefused("invalid_grant", "Invalid grant: account not found")
    if header.get("alg") != "RS256":
        raise _AssertionRefused(
            "invalid_grant", "Invalid JWT: the signing algorithm must be RS256."
        )
    try:
        jwt.decode(
            assertion,
            account.public_key,
            algorithms=["RS256"],
            options={"verify_aud": False, "verify_exp": False, "verify_iat": False},
        )
    except jwt.InvalidSignatureError as exc:
        raise _AssertionRefused("invalid_grant", "Invalid JWT Signature.") from exc
    except jwt.PyJWTError as exc:
        raise _AssertionRefused("invalid_grant", f"Invalid JWT: {exc}") from exc
    if claims.get("aud") not in audiences:
        raise _AssertionRefused(
            "invalid_grant",
            "Invalid JWT: Failed audience check. The right audience is "
            "https://oauth2.googleapis.com/token",
        )
    iat, exp = claims.get("iat"), claims.get("exp")
    if (
        not isinstance(iat, int | float)
        or not isinstance(exp, int | float)
        or exp - iat > MAX_ASSERTION_LIFETIME
        or iat > now + CLOCK_SKEW
        or exp < now - CLOCK_SKEW
    ):
        raise _AssertionRefused(
            "invalid_grant",
            "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable "
            "timeframe. Check your iat and exp values in the JWT claim.",
        )
    scopes = str(claims.get("scope", "")).split()
    if not MESSAGING_SCOPES.intersection(scopes):
        raise _AssertionRefused(
            "invalid_scope", "Invalid OAuth scope or ID token audience provided."
        )
    return account


# --------------------------------------------------------------------------------------
# The app


class FcmApp:
    """The fake FCM v1 provider (token endpoint and ``messages:send``)."""

    name = "fcm"

    def __init__(
        self,
        accounts: Iterable[ServiceAccount],
        *,
        recorder: Recorder | None = None,
        faults: FaultPlan | None = None,
        token_lifetime: int = DEFAULT_TOKEN_LIFETIME,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.accounts = {a.client_email: a for a in accounts}
        self.recorder = recorder if recorder is not None else Recorder()
        self.faults = faults if faults is not None else FaultPlan()
        self.token_lifetime = token_lifetime
        self.clock = clock
        #: What the command line may print about this fake (set by :func:`build_app`).
        self.announce: dict[str, Any] = {}
        self._grants: dict[str, _Grant] = {}
        self._ids = itertools.count(1)
        self._id_prefix = f"0:{int(clock() * 1000)}%"

    # -- tests' handles -----------------------------------------------------------

    def issued_tokens(self) -> int:
        """How many access tokens are currently valid or expired-but-known."""
        return len(self._grants)

    def revoke_access_tokens(self) -> int:
        """Forget every access token issued (clients get 401 until they refresh)."""
        count = len(self._grants)
        self._grants.clear()
        return count

    # -- dispatch -----------------------------------------------------------------

    async def handle(self, request: Request) -> Action:
        """Answer one request; never suspends unless a fault delays the answer."""
        path = request.path.split("?", 1)[0]
        if request.method == "POST":
            match = _SEND_PATH.fullmatch(path)
            if match is not None:
                return self._send(request, match.group(1))
            if path == _TOKEN_PATH:
                return self._token(request)
        response = google_error(
            404, "NOT_FOUND", f"The requested URL {path} was not found on this server."
        )
        self._record(request, None, None, response.status, "NOT_FOUND", None)
        return response

    def _record(
        self,
        request: Request,
        token: str | None,
        message_name: str | None,
        status: int | None,
        reason: str | None,
        fault: str | None,
    ) -> None:
        self.recorder.append(
            RecordedRequest.of(
                request,
                provider="fcm",
                token=token,
                message_name=message_name,
                status=status,
                reason=reason,
                fault=fault,
            )
        )

    # -- OAuth 2.0 token endpoint --------------------------------------------------

    def _token(self, request: Request) -> Response:
        response, reason = self._grant(request)
        self._record(request, None, None, response.status, reason, None)
        return response

    def _grant(self, request: Request) -> tuple[Response, str | None]:
        form = _form(request)
        grant_type = form.get("grant_type")
        if grant_type != JWT_BEARER_GRANT:
            return (
                _oauth_error("unsupported_grant_type", f"Invalid grant_type: {grant_type or ''}"),
                "unsupported_grant_type",
            )
        assertion = form.get("assertion")
        if not assertion:
            return (
                _oauth_error("invalid_request", "Missing required parameter: assertion"),
                "invalid_request",
            )
        now = self.clock()
        try:
            account = _verify_assertion(assertion, self.accounts, self._audiences(request), now)
        except _AssertionRefused as refused:
            return _oauth_error(refused.error, refused.description), refused.error
        access_token = "ya29.sandbox-" + secrets.token_urlsafe(32)
        if len(self._grants) >= _PRUNE_GRANTS_AT:
            self._grants = {t: g for t, g in self._grants.items() if g.expires_at > now}
        self._grants[access_token] = _Grant(account, now, now + self.token_lifetime)
        payload = {
            "access_token": access_token,
            "expires_in": self.token_lifetime,
            "token_type": "Bearer",
        }
        return _json_response(200, payload, (("cache-control", "no-store"),)), None

    @staticmethod
    def _audiences(request: Request) -> frozenset[str]:
        # Also accept the fake's own URL, for clients that sign for the token_uri they use.
        host = request.header("host")
        if host is None:
            return GOOGLE_TOKEN_AUDIENCES
        return GOOGLE_TOKEN_AUDIENCES | {f"https://{host}{_TOKEN_PATH}"}

    # -- messages:send -------------------------------------------------------------

    def _send(self, request: Request, project: str) -> Action:
        grant, refusal = self._authorize(request, project)
        if refusal is not None:
            status_name = "UNAUTHENTICATED" if refusal.status == 401 else "PERMISSION_DENIED"
            self._record(
                request, _loose_token(request.body), None, refusal.status, status_name, None
            )
            return refusal
        assert grant is not None
        try:
            send = validate_send_body(_decode_json(request.body))
        except InvalidMessage as invalid:
            self._record(request, _loose_token(request.body), None, 400, "INVALID_ARGUMENT", None)
            return invalid.response()
        token = send.token
        spec = self.faults.match(token, issued_at=grant.issued_at) if len(self.faults) else None
        if spec is None:
            name = self._message_name(project, send.validate_only)
            self._record(request, token, name, 200, None, None)
            return Response(200, _JSON_HEADERS, b'{"name":"' + name.encode() + b'"}')
        return self._faulted(request, project, send, spec)

    def _authorize(self, request: Request, project: str) -> tuple[_Grant | None, Response | None]:
        header = request.header("authorization")
        if header is None or not header.startswith("Bearer "):
            return None, _unauthenticated(expired=False, missing=True)
        grant = self._grants.get(header[7:])
        if grant is None:
            return None, _unauthenticated(expired=False)
        if grant.expires_at <= self.clock():
            return None, _unauthenticated(expired=True)
        if grant.account.project_id != project:
            return None, google_error(
                403,
                "PERMISSION_DENIED",
                f"Permission 'cloudmessaging.messages.create' denied on resource "
                f"'//cloudresourcemanager.googleapis.com/projects/{project}' "
                "(or it may not exist).",
                details=[
                    {
                        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                        "reason": "IAM_PERMISSION_DENIED",
                        "domain": "cloudresourcemanager.googleapis.com",
                        "metadata": {"permission": "cloudmessaging.messages.create"},
                    }
                ],
            )
        return grant, None

    def _message_name(self, project: str, validate_only: bool) -> str:
        # FCM answers a validate_only request with this fixed id.
        if validate_only:
            return f"projects/{project}/messages/fake_message_id"
        return f"projects/{project}/messages/{self._id_prefix}{next(self._ids):016x}"

    def _faulted(
        self, request: Request, project: str, send: SendRequest, spec: FaultSpec
    ) -> Action:
        name: list[str] = []

        def normal() -> Response:
            name.append(self._message_name(project, send.validate_only))
            return _json_response(200, {"name": name[0]})

        action = fault_action(spec, normal=normal, error=_fault_error)
        answer = _final_response(action)
        reason = None
        if answer is not None and answer.status != 200:
            reason = _error_code(answer)
        self._record(
            request,
            send.token,
            name[0] if name else None,
            None if answer is None else answer.status,
            reason,
            spec.effect,
        )
        return action


def _decode_json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError as exc:
        raise InvalidMessage(f"Invalid JSON payload received. {exc}", field="", fcm=False) from exc


def _final_response(action: Action) -> Response | None:
    while isinstance(action, Delay):
        action = action.then
    if isinstance(action, Response):
        return action
    if isinstance(action, GoAway):
        return action.then
    return None


def _error_code(response: Response) -> str | None:
    error = json.loads(response.body).get("error", {})
    for detail in error.get("details", ()):
        if detail.get("@type") == FCM_ERROR_TYPE:
            return str(detail.get("errorCode"))
    status = error.get("status")
    return None if status is None else str(status)


def _form(request: Request) -> dict[str, str]:
    content_type = request.header("content-type") or ""
    text = request.body.decode("utf-8", "replace")
    if content_type.startswith("application/json"):
        try:
            data = json.loads(text)
        except ValueError:
            return {}
        return (
            {k: v for k, v in data.items() if isinstance(v, str)} if isinstance(data, dict) else {}
        )
    return {k: v[0] for k, v in parse_qs(text).items()}


def _loose_token(body: bytes) -> str | None:
    # Record the target of a refused message when it can be made out at all.
    try:
        message = json.loads(body).get("message", {})
        token = message.get("token") or message.get("fid")
    except (ValueError, AttributeError):
        return None
    return token if isinstance(token, str) else None


# --------------------------------------------------------------------------------------
# Command line (``python -m pushwarden.sandbox fcm``)


def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``fcm`` subcommand's own options."""
    parser.add_argument(
        "--service-account",
        action="append",
        type=Path,
        default=[],
        metavar="JSON",
        help="a service-account key file whose account may get tokens (repeatable); "
        "without any, one is generated under the state directory",
    )
    parser.add_argument(
        "--project-id",
        default="pushwarden-sandbox",
        help="project of the generated service account (default: pushwarden-sandbox)",
    )
    parser.add_argument(
        "--token-lifetime",
        type=int,
        default=DEFAULT_TOKEN_LIFETIME,
        metavar="SECONDS",
        help=f"lifetime of the access tokens issued (default: {DEFAULT_TOKEN_LIFETIME})",
    )


def build_app(args: argparse.Namespace, material: Any) -> FcmApp:
    """The fake FCM app configured from the command line.

    Without ``--service-account``, a key file is generated once (then reused) at
    ``<state-dir>/fcm-service-account.json``; its ``token_uri`` is rewritten to
    this server's port whenever a fixed port is given, so firebase-admin can use
    the file as it is.
    """
    accounts = [ServiceAccount.from_key_file(p) for p in args.service_account]
    key_files = [str(p) for p in args.service_account]
    if not accounts:
        state_dir = Path(getattr(args, "state_dir", None) or Path(material.ca_file).parent)
        demo = state_dir / "fcm-service-account.json"
        accounts.append(_demo_account(demo, args))
        key_files.append(str(demo))
    faults_file = getattr(args, "faults", None)
    faults = FaultPlan.from_file(Path(faults_file)) if faults_file else FaultPlan()
    app = FcmApp(accounts, faults=faults, token_lifetime=args.token_lifetime)
    app.announce = {
        "service_account_files": key_files,
        "projects": sorted({a.project_id for a in accounts}),
        "token_uri_path": _TOKEN_PATH,
    }
    return app


def _demo_account(path: Path, args: argparse.Namespace) -> ServiceAccount:
    port = getattr(args, "port", 0) or 0
    host = getattr(args, "host", "127.0.0.1")
    token_uri = f"https://{host}:{port}{_TOKEN_PATH}"
    if not path.is_file():
        account, key = new_service_account(args.project_id)
        write_service_account_file(path, account, key, token_uri)
        return account
    info = json.loads(path.read_text())
    if port and info.get("token_uri") != token_uri:
        info["token_uri"] = token_uri
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(info, indent=2))
        tmp.chmod(0o600)
        tmp.replace(path)
    return ServiceAccount.from_key_file(path)


# --------------------------------------------------------------------------------------
# Client side: the real firebase-admin pointed at a fake


@contextlib.contextmanager
def sandbox_ca_trust(ca_file: str | Path) -> Iterator[None]:
    """Make httpx (``SSL_CERT_FILE``) and requests (``REQUESTS_CA_BUNDLE``) trust the fake's CA.

    The variables are process-wide and read when clients are built (httpx) or
    per request (requests), so they stay set for the duration of the block.
    """
    names = ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE")
    saved = {name: os.environ.get(name) for name in names}
    for name in names:
        os.environ[name] = str(ca_file)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def open_firebase_app(
    base_url: str,
    service_account_file: str | Path,
    *,
    name: str = "pushwarden-sandbox",
    http_timeout: float | None = None,
    project_id: str | None = None,
) -> Any:
    """A firebase-admin ``App`` whose messaging service sends to the fake at ``base_url``.

    firebase-admin has no endpoint option: the URL is the private class attribute
    ``_MessagingService.FCM_URL``, read once when an app's messaging service is
    built. It is overridden only while this app's service is built, then restored,
    so other apps keep Google's URL. The CA must already be trusted (see
    :func:`sandbox_ca_trust`) since the HTTP/2 client is built here too.
    ``project_id`` overrides the key file's project (the URL's project).
    """
    import firebase_admin
    from firebase_admin import credentials, messaging

    options: dict[str, Any] = {}
    if http_timeout is not None:
        options["httpTimeout"] = http_timeout
    if project_id is not None:
        options["projectId"] = project_id
    app = firebase_admin.initialize_app(
        credentials.Certificate(str(service_account_file)), options, name=name
    )
    service_class = messaging._MessagingService
    saved = service_class.FCM_URL
    service_class.FCM_URL = base_url.rstrip("/") + "/v1/projects/{0}/messages:send"
    try:
        messaging._get_messaging_service(app)
    except BaseException:
        firebase_admin.delete_app(app)
        raise
    finally:
        service_class.FCM_URL = saved
    return app


async def close_firebase_app(app: Any) -> None:
    """Close an app from :func:`open_firebase_app` inside a running event loop.

    ``delete_app`` closes the async HTTP client with ``asyncio.run``, which cannot
    run inside a loop: close the client here first, then delete the app from a
    worker thread (where closing the already-closed client is harmless).
    """
    import asyncio

    import firebase_admin
    from firebase_admin import messaging

    await messaging._get_messaging_service(app)._async_client.aclose()
    await asyncio.to_thread(firebase_admin.delete_app, app)


@contextlib.contextmanager
def firebase_retry_backoff(factor: float) -> Iterator[None]:
    """Set firebase-admin's retry backoff factor (both HTTP clients), restoring it afterwards.

    The SDK retries 500 and 503 four times with 0.5 s exponential backoff (a 503
    surfaces after ~7 s); tests set 0 so that the same five requests happen at once.
    """
    from firebase_admin import _http_client

    configs = (_http_client.DEFAULT_HTTPX_RETRY_CONFIG, _http_client.DEFAULT_RETRY_CONFIG)
    saved = [config.backoff_factor for config in configs]
    for config in configs:
        config.backoff_factor = factor
    try:
        yield
    finally:
        for config, value in zip(configs, saved, strict=True):
            config.backoff_factor = value


# --------------------------------------------------------------------------------------
# Starting a fake FCM (tests, benchmarks)


def _fcm_parts(
    accounts: Iterable[ServiceAccount],
    state_dir: Path,
    recorder: Recorder | None,
    faults: FaultPlan | None,
    token_lifetime: int,
) -> tuple[FcmApp, TlsMaterial]:
    material = generate_tls_material(state_dir)
    app = FcmApp(accounts, recorder=recorder, faults=faults, token_lifetime=token_lifetime)
    return app, material


async def start_fcm(
    accounts: Iterable[ServiceAccount],
    *,
    state_dir: Path,
    host: str = "127.0.0.1",
    port: int = 0,
    recorder: Recorder | None = None,
    faults: FaultPlan | None = None,
    token_lifetime: int = DEFAULT_TOKEN_LIFETIME,
) -> SandboxServer:
    """Start a fake FCM on the running loop (TLS material under ``state_dir``).

    Only for clients that never block the loop: google-auth fetches tokens with
    ``requests``, so firebase-admin in the same loop needs :func:`run_fcm_in_thread`.
    """
    app, material = _fcm_parts(accounts, state_dir, recorder, faults, token_lifetime)
    return await start_server(
        app,
        host=host,
        port=port,
        ssl_context=server_ssl_context(material),
        recorder=app.recorder,
        faults=app.faults,
        material=material,
    )


def run_fcm_in_thread(
    accounts: Iterable[ServiceAccount],
    *,
    state_dir: Path,
    host: str = "127.0.0.1",
    port: int = 0,
    recorder: Recorder | None = None,
    faults: FaultPlan | None = None,
    token_lifetime: int = DEFAULT_TOKEN_LIFETIME,
) -> ThreadedSandbox:
    """Start a fake FCM on its own loop in a background thread (``.stop()`` ends it)."""
    app, material = _fcm_parts(accounts, state_dir, recorder, faults, token_lifetime)
    return run_in_thread(
        app,
        host=host,
        port=port,
        ssl_context=server_ssl_context(material),
        recorder=app.recorder,
        faults=app.faults,
        material=material,
    )
