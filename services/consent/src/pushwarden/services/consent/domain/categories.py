"""Categories: what kind of message a send is, and how consent applies to it.

A category's kind (TRANSACTIONAL or MARKETING) is immutable, so every service may cache
it without expiry; a transactional category's users may not opt out unless the app says
so, a marketing category's users always may.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime

from google.protobuf.timestamp_pb2 import Timestamp

from pushwarden.common.v1 import types_pb2
from pushwarden.consent.v1 import resources_pb2
from pushwarden.runtime.validation import Violations

MAX_DESCRIPTION_CHARS = 1024
MAX_DISPLAY_NAME_CHARS = 256
MAX_PAGE_SIZE = 1000
MAX_BATCH_GET = 1000


class CategoryKind(enum.StrEnum):
    """Transactional messages are exempt from marketing rules; marketing ones are not."""

    TRANSACTIONAL = "TRANSACTIONAL"
    MARKETING = "MARKETING"

    @classmethod
    def from_proto(cls, value: int) -> CategoryKind:
        """The kind of a valid (checked) proto value."""
        return _KIND_FROM_PROTO[types_pb2.CategoryKind.ValueType(value)]

    def to_proto(self) -> types_pb2.CategoryKind.ValueType:
        """The proto enum value."""
        return _KIND_TO_PROTO[self]


class DefaultState(enum.StrEnum):
    """What users who never chose get."""

    OPTED_IN = "OPTED_IN"
    OPTED_OUT = "OPTED_OUT"

    @classmethod
    def from_proto(cls, value: int) -> DefaultState:
        """The state of a valid (checked) proto value."""
        return _STATE_FROM_PROTO[resources_pb2.DefaultState.ValueType(value)]

    def to_proto(self) -> resources_pb2.DefaultState.ValueType:
        """The proto enum value."""
        return _STATE_TO_PROTO[self]


_KIND_TO_PROTO = {
    CategoryKind.TRANSACTIONAL: types_pb2.CATEGORY_KIND_TRANSACTIONAL,
    CategoryKind.MARKETING: types_pb2.CATEGORY_KIND_MARKETING,
}
_KIND_FROM_PROTO = {v: k for k, v in _KIND_TO_PROTO.items()}
_STATE_TO_PROTO = {
    DefaultState.OPTED_IN: resources_pb2.DEFAULT_STATE_OPTED_IN,
    DefaultState.OPTED_OUT: resources_pb2.DEFAULT_STATE_OPTED_OUT,
}
_STATE_FROM_PROTO = {v: k for k, v in _STATE_TO_PROTO.items()}


@dataclass(frozen=True, slots=True)
class CategorySpec:
    """What a caller asks a category to be (DefineCategory's input, checked)."""

    app_id: str
    category_id: str
    kind: CategoryKind
    default_state: DefaultState
    user_can_opt_out: bool
    display_name: str
    description: str

    @classmethod
    def from_proto(cls, app_id: str, proto: resources_pb2.Category) -> CategorySpec:
        """Check a requested category; raises InvalidArgument naming every bad field."""
        problems = Violations()
        problems.caller_id("app_id", app_id)
        problems.caller_id("category.category_id", proto.category_id)
        kind_ok = problems.enum("category.kind", proto.kind, _KIND_FROM_PROTO)
        problems.enum("category.default_state", proto.default_state, _STATE_FROM_PROTO)
        problems.text("category.display_name", proto.display_name, max_chars=MAX_DISPLAY_NAME_CHARS)
        problems.text("category.description", proto.description, max_chars=MAX_DESCRIPTION_CHARS)
        can_opt_out = proto.user_can_opt_out if proto.HasField("user_can_opt_out") else None
        if kind_ok and proto.kind == types_pb2.CATEGORY_KIND_MARKETING and can_opt_out is False:
            problems.add(
                "category.user_can_opt_out",
                "must be true for a MARKETING category: users may always opt out of marketing",
            )
        problems.raise_if_any("the category is invalid")
        kind = CategoryKind.from_proto(proto.kind)
        return cls(
            app_id=app_id,
            category_id=proto.category_id,
            kind=kind,
            default_state=DefaultState.from_proto(proto.default_state),
            # Transactional categories default to "no opt-out", marketing ones always allow it.
            user_can_opt_out=kind is CategoryKind.MARKETING or bool(can_opt_out),
            display_name=proto.display_name,
            description=proto.description,
        )


@dataclass(frozen=True, slots=True)
class Category:
    """A category as stored."""

    app_id: str
    category_id: str
    kind: CategoryKind
    default_state: DefaultState
    user_can_opt_out: bool
    display_name: str
    description: str
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_spec(cls, spec: CategorySpec, created_at: datetime, updated_at: datetime) -> Category:
        """The category ``spec`` describes, stored at those instants."""
        return cls(
            app_id=spec.app_id,
            category_id=spec.category_id,
            kind=spec.kind,
            default_state=spec.default_state,
            user_can_opt_out=spec.user_can_opt_out,
            display_name=spec.display_name,
            description=spec.description,
            created_at=created_at,
            updated_at=updated_at,
        )

    def same_settings(self, spec: CategorySpec) -> bool:
        """Whether ``spec`` asks for exactly what is stored (a define that changes nothing)."""
        return (
            self.default_state,
            self.user_can_opt_out,
            self.display_name,
            self.description,
        ) == (spec.default_state, spec.user_can_opt_out, spec.display_name, spec.description)

    def to_proto(self) -> resources_pb2.Category:
        """The contract's Category."""
        return resources_pb2.Category(
            category_id=self.category_id,
            kind=self.kind.to_proto(),
            default_state=self.default_state.to_proto(),
            user_can_opt_out=self.user_can_opt_out,
            display_name=self.display_name,
            description=self.description,
            created_at=_timestamp(self.created_at),
            updated_at=_timestamp(self.updated_at),
        )


def _timestamp(instant: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(instant)
    return stamp
