"""The change feed's vocabulary: the kinds of change (cursors are the runtime's,
:mod:`pushwarden.runtime.feed`, keyed by the app filter)."""

from __future__ import annotations

import enum

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
