"""Domain enums that convert themselves to and from a contract's proto enum.

A domain enum names its members as the proto's values without the prefix buf lint
requires (``PLATFORM_IOS`` is ``Platform.IOS``); it is declared once, with the proto
enum it mirrors, and gets ``to_proto`` and ``from_proto``::

    class Platform(ProtoEnum[types_pb2.Platform.ValueType], enum.StrEnum,
                   proto=types_pb2.Platform):
        IOS = "IOS"
        ANDROID = "ANDROID"

The prefix is the proto enum's name in upper snake case (``PermissionState`` ->
``PERMISSION_STATE_``); ``unspecified`` names the member that the proto's 0 ("not
set") reads as, when the contract gives it one. The tables are built once per class:
conversions run once per device in every eligibility batch.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Self, TypeVar

if TYPE_CHECKING:  # the generic wrapper type exists in the typed stubs only
    from google.protobuf.internal.enum_type_wrapper import _EnumTypeWrapper

V = TypeVar("V", bound=int)


def value_prefix(proto_enum_name: str) -> str:
    """The prefix of a proto enum's value names (``InvalidationReason`` ->
    ``INVALIDATION_REASON_``)."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", proto_enum_name).upper() + "_"


class ProtoEnum(Generic[V]):
    """Mixin of a ``StrEnum`` whose values are a proto enum's value names without their
    prefix (put it before ``enum.StrEnum``; ``V`` is the proto enum's ``ValueType``)."""

    _names: ClassVar[dict[int, str]]
    _numbers: ClassVar[dict[str, int]]
    value: str

    def __init_subclass__(
        cls,
        *,
        proto: _EnumTypeWrapper[Any] | None = None,
        unspecified: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init_subclass__(**kwargs)
        if proto is None:
            return
        prefix = value_prefix(proto.DESCRIPTOR.name)
        names = {number: name.removeprefix(prefix) for name, number in proto.items() if number}
        cls._numbers = {name: number for number, name in names.items()}
        # Python fills the members in before calling this: check them at import.
        members = getattr(cls, "__members__", {}).values()
        unknown = [m.value for m in members if m.value not in cls._numbers]
        if unknown:
            raise TypeError(f"{cls.__name__}: no {prefix}* value for {', '.join(unknown)}")
        if unspecified is not None:
            names[0] = unspecified
        cls._names = names

    def to_proto(self) -> V:
        """The proto enum value."""
        return self._numbers[self.value]  # type: ignore[return-value]

    @classmethod
    def from_proto(cls, value: int) -> Self:
        """The member of a checked proto value; ValueError for one it does not know."""
        name = cls._names.get(value)
        if name is None:
            raise ValueError(f"{value} is not a known {cls.__name__} value")
        return cls(name)  # type: ignore[call-arg]
