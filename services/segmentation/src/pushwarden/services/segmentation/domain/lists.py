"""Static lists: generic, suppression (every marketing send of the app checks them) and
seed lists of user ids."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from pushwarden.runtime.validation import Violations, id_problem
from pushwarden.segmentation.v1 import resources_pb2
from pushwarden.services.segmentation.domain.values import to_timestamp

MAX_LIST_BATCH: Final = 10_000
MAX_NAME_CHARS: Final = 256
MAX_DESCRIPTION_CHARS: Final = 1024
MAX_PAGE_SIZE: Final = 1000


class ListKind(enum.StrEnum):
    """What a list is for (stored by name)."""

    GENERIC = "GENERIC"
    SUPPRESSION = "SUPPRESSION"
    SEED = "SEED"

    @classmethod
    def from_proto(cls, value: int) -> ListKind:
        """The kind of a known proto value (UNSPECIFIED reads as GENERIC)."""
        return _FROM_PROTO.get(value, ListKind.GENERIC)

    def to_proto(self) -> resources_pb2.ListKind.ValueType:
        """The proto enum value."""
        return _TO_PROTO[self]


_TO_PROTO = {
    ListKind.GENERIC: resources_pb2.LIST_KIND_GENERIC,
    ListKind.SUPPRESSION: resources_pb2.LIST_KIND_SUPPRESSION,
    ListKind.SEED: resources_pb2.LIST_KIND_SEED,
}
_FROM_PROTO: dict[int, ListKind] = {v: k for k, v in _TO_PROTO.items()}
KNOWN_KINDS: Final = tuple(_FROM_PROTO)


@dataclass(frozen=True, slots=True)
class ListSpec:
    """A requested list (CreateList's input, checked); an empty id is server-assigned."""

    app_id: str
    list_id: str
    name: str
    description: str
    kind: ListKind

    @classmethod
    def from_proto(cls, app_id: str, proto: resources_pb2.StaticList, key: str) -> ListSpec:
        """Check a requested list; raises InvalidArgument naming every bad field."""
        problems = Violations()
        problems.caller_id("app_id", app_id)
        problems.caller_id("list.list_id", proto.list_id, required=False)
        problems.text("list.name", proto.name, max_chars=MAX_NAME_CHARS, required=True)
        problems.text("list.description", proto.description, max_chars=MAX_DESCRIPTION_CHARS)
        problems.enum("list.kind", proto.kind, KNOWN_KINDS, required=False)
        problems.caller_id("idempotency_key", key, required=False)
        problems.raise_if_any("the list is invalid")
        return cls(
            app_id, proto.list_id, proto.name, proto.description, ListKind.from_proto(proto.kind)
        )

    def definition(self) -> resources_pb2.StaticList:
        """What identifies a retry: the definition without output fields."""
        return resources_pb2.StaticList(
            list_id=self.list_id,
            name=self.name,
            description=self.description,
            kind=self.kind.to_proto(),
        )


@dataclass(frozen=True, slots=True)
class StaticList:
    """A list as stored, with its member count."""

    app_id: str
    list_id: str
    name: str
    description: str
    kind: ListKind
    created_at: datetime
    member_count: int

    def to_proto(self) -> resources_pb2.StaticList:
        """The contract's StaticList."""
        return resources_pb2.StaticList(
            list_id=self.list_id,
            name=self.name,
            description=self.description,
            kind=self.kind.to_proto(),
            member_count=self.member_count,
            created_at=to_timestamp(self.created_at),
        )


def check_member_ids(problems: Violations, field: str, user_ids: list[str]) -> list[str]:
    """1..10,000 valid user ids; repeats are allowed (set semantics) and dropped."""
    if not user_ids or len(user_ids) > MAX_LIST_BATCH:
        problems.add(field, f"1 to {MAX_LIST_BATCH:,} per call, got {len(user_ids):,}")
        problems.reason = "BATCH_SIZE"
        return []
    for index, user_id in enumerate(user_ids):
        problem = "required" if not user_id else id_problem(user_id)
        if problem:
            problems.add(f"{field}[{index}]", problem)
    return list(dict.fromkeys(user_ids))
