"""Provider answers to outcomes, as tables: the tables are the documentation.

Each table is walked in order and the first matching row wins.  A verdict says
what the answer means; the adapters turn it into an :data:`~.model.Outcome`
(adding the timestamp, Retry-After and request count they know about).
"""

from __future__ import annotations

import datetime as dt
import email.utils
import enum


class Verdict(enum.Enum):
    """What a provider's answer means for the push."""

    DELIVERED = "delivered"
    TOKEN_DEAD = "token_dead"
    RETRY = "retry"
    PERMANENT = "permanent"
    #: The provider refused our credentials: build a new client (a fresh provider
    #: token), try once more, and fail permanently if it is refused again.
    REFRESH_CREDENTIALS = "refresh_credentials"


# APNs: (status prefix, reason or None for any) -> verdict.  A status prefix of
# "5" matches every 5xx.  Reasons are Apple's (developer.apple.com, "Handling
# notification responses from APNs").
APNS_TABLE: tuple[tuple[str, str | None, Verdict], ...] = (
    ("200", None, Verdict.DELIVERED),
    # The token is gone for good: 410 (Unregistered, ExpiredToken) carries the time.
    ("410", None, Verdict.TOKEN_DEAD),
    ("400", "BadDeviceToken", Verdict.TOKEN_DEAD),
    ("400", "DeviceTokenNotForTopic", Verdict.TOKEN_DEAD),
    ("", "Unregistered", Verdict.TOKEN_DEAD),
    # aioapns signs one JWT per connection and never re-signs it on these.
    ("403", "ExpiredProviderToken", Verdict.REFRESH_CREDENTIALS),
    ("403", "InvalidProviderToken", Verdict.REFRESH_CREDENTIALS),
    # TooManyRequests (one token too often) and TooManyProviderTokenUpdates.
    ("429", None, Verdict.RETRY),
    ("5", None, Verdict.RETRY),
    # Every other 4xx: the request itself is wrong (400), too large (413),
    # refused (403: topic, certificate, key), or our bug (404, 405).
    ("4", None, Verdict.PERMANENT),
)


def classify_apns(status: str, reason: str | None) -> Verdict:
    """The verdict for an APNs answer (unknown statuses are retried: they are not ours)."""
    for prefix, row_reason, verdict in APNS_TABLE:
        if status.startswith(prefix) and (row_reason is None or row_reason == reason):
            return verdict
    return Verdict.RETRY


# FCM HTTP v1: the FCM error code (the FcmError detail; else Google's status) ->
# verdict.  Codes from firebase.google.com/docs/reference/fcm/rest/v1/ErrorCode.
FCM_TABLE: dict[str, Verdict] = {
    "UNREGISTERED": Verdict.TOKEN_DEAD,
    # A bad token and a bad message share INVALID_ARGUMENT.  The renderer's
    # messages are valid by construction, yet a payload bug must never wipe an
    # app's devices: it is TOKEN_DEAD only when FCM says the token is what is
    # invalid (see fcm.token_is_invalid), else permanent.
    "INVALID_ARGUMENT": Verdict.PERMANENT,
    # The token belongs to another sender.  Per token this means "never for this
    # project", but one wrong service account in the credentials file would make
    # every token of the app look so: fail it and leave the device alone.
    "SENDER_ID_MISMATCH": Verdict.PERMANENT,
    "THIRD_PARTY_AUTH_ERROR": Verdict.PERMANENT,
    "APNS_AUTH_ERROR": Verdict.PERMANENT,
    "QUOTA_EXCEEDED": Verdict.RETRY,
    "UNAVAILABLE": Verdict.RETRY,
    "INTERNAL": Verdict.RETRY,
    # Google statuses when no FCM code came with the answer.
    "RESOURCE_EXHAUSTED": Verdict.RETRY,
    "DEADLINE_EXCEEDED": Verdict.RETRY,
    "ABORTED": Verdict.RETRY,
    # firebase-admin's code for transport failures (reset stream, lost connection).
    "UNKNOWN": Verdict.RETRY,
    # Our access token was refused after the SDK refreshed it: credentials problem.
    "UNAUTHENTICATED": Verdict.PERMANENT,
    "PERMISSION_DENIED": Verdict.PERMANENT,
    "NOT_FOUND": Verdict.PERMANENT,
}


def classify_fcm(code: str, http_status: int | None) -> Verdict:
    """The verdict for an FCM error code; unknown codes go by the HTTP status class."""
    verdict = FCM_TABLE.get(code)
    if verdict is not None:
        return verdict
    if http_status is not None and 400 <= http_status < 500 and http_status != 429:
        return Verdict.PERMANENT
    return Verdict.RETRY


def retry_after_seconds(value: str | None, *, now: dt.datetime | None = None) -> float | None:
    """A Retry-After header (delay seconds or an HTTP date) in seconds; None if absent or bad."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, (when - (now or dt.datetime.now(dt.UTC))).total_seconds())
