"""Domain enums declared once with the proto enum they mirror: both directions for every
member, the prefix derived from the proto enum's name, an optional reading of 0, and a
member without a proto value refused at import."""

from __future__ import annotations

import enum

import pytest

from pushwarden.common.v1 import types_pb2
from pushwarden.runtime.protoenum import ProtoEnum, value_prefix


class Permission(
    ProtoEnum[types_pb2.PermissionState.ValueType],
    enum.StrEnum,
    proto=types_pb2.PermissionState,
    unspecified="NOT_DETERMINED",
):
    GRANTED = "GRANTED"
    PROVISIONAL = "PROVISIONAL"
    DENIED = "DENIED"
    NOT_DETERMINED = "NOT_DETERMINED"


class Channel(ProtoEnum[types_pb2.Channel.ValueType], enum.StrEnum, proto=types_pb2.Channel):
    PUSH = "PUSH"


def test_every_member_converts_both_ways() -> None:
    for member in Permission:
        number = member.to_proto()
        assert types_pb2.PermissionState.Name(number) == f"PERMISSION_STATE_{member.value}"
        assert Permission.from_proto(number) is member
    assert Channel.PUSH.to_proto() == types_pb2.CHANNEL_PUSH


def test_zero_reads_as_the_named_member_or_is_refused() -> None:
    assert Permission.from_proto(types_pb2.PERMISSION_STATE_UNSPECIFIED) is (
        Permission.NOT_DETERMINED
    )
    assert Permission.NOT_DETERMINED.to_proto() == types_pb2.PERMISSION_STATE_NOT_DETERMINED
    with pytest.raises(ValueError, match="not a known Channel value"):
        Channel.from_proto(types_pb2.CHANNEL_UNSPECIFIED)
    with pytest.raises(ValueError, match="not a known Channel value"):
        Channel.from_proto(999)


def test_the_prefix_is_the_proto_enum_name_in_upper_snake_case() -> None:
    assert value_prefix("Platform") == "PLATFORM_"
    assert value_prefix("PermissionState") == "PERMISSION_STATE_"
    assert value_prefix("InvalidationReason") == "INVALIDATION_REASON_"


def test_a_member_without_a_proto_value_is_refused_when_declared() -> None:
    with pytest.raises(TypeError, match="no PLATFORM_\\* value for TV"):

        class Platform(
            ProtoEnum[types_pb2.Platform.ValueType], enum.StrEnum, proto=types_pb2.Platform
        ):
            IOS = "IOS"
            TV = "TV"
