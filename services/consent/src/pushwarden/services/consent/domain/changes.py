"""The change feed's vocabulary: kinds of change and the opaque cursor followers keep."""

from __future__ import annotations

import base64
import enum
import hashlib

from pushwarden.consent.v1 import resources_pb2


class ChangeKind(enum.StrEnum):
    """What a change is about (the contract's ChangeKind)."""

    CONSENT = "CONSENT"
    PREFERENCES = "PREFERENCES"
    DEVICE = "DEVICE"
    ERASED = "ERASED"
    CATEGORY = "CATEGORY"

    def to_proto(self) -> resources_pb2.ChangeKind.ValueType:
        """The proto enum value."""
        return resources_pb2.ChangeKind.Value(f"CHANGE_KIND_{self.value}")

    @classmethod
    def from_proto(cls, value: int) -> ChangeKind | None:
        """The kind of a proto value, None for one this server does not know."""
        try:
            name = resources_pb2.ChangeKind.Name(value)  # type: ignore[arg-type]
        except ValueError:
            return None
        return cls.__members__.get(name.removeprefix("CHANGE_KIND_"))


def _app_tag(app_id: str) -> str:
    return hashlib.sha256(app_id.encode()).hexdigest()[:12]


def encode_cursor(app_id: str, sequence: int) -> str:
    """The cursor after change ``sequence`` of the feed of ``app_id`` ("" = every app)."""
    raw = f"v1:{sequence}:{_app_tag(app_id)}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, app_id: str) -> int | None:
    """The sequence in ``cursor``; None when it is malformed or was made for another
    app filter."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        version, sequence, tag = raw.split(":")
        value = int(sequence)
    except (ValueError, UnicodeDecodeError):
        return None
    if version != "v1" or tag != _app_tag(app_id) or value < 0:
        return None
    return value
