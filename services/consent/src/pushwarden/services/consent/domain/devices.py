"""Devices: push tokens of an app, each registered to one user at a time.

A device is keyed by (app, token). Its platform and provider never change; its user
may (the token moves when another user registers it); its status follows the
lifecycle ACTIVE -> INVALID (a provider reported the token dead) or UNREGISTERED (the
app said so), and back to ACTIVE through a new registration, which revives an INVALID
token only when it happens after the provider's ``invalidated_at``.

Writes that overwrite fields (RegisterDevice, UpdateDevice) carry the caller's clock
(``client_time``); ``changed_at`` keeps the latest applied one, and an older write
changes nothing, so a late retry never undoes a newer write.
"""

from __future__ import annotations

import enum
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Final, NamedTuple

from google.protobuf.field_mask_pb2 import FieldMask
from google.protobuf.timestamp_pb2 import Timestamp

from pushwarden.common.v1 import types_pb2
from pushwarden.consent.v1 import messages_pb2, resources_pb2
from pushwarden.runtime.protoenum import ProtoEnum
from pushwarden.runtime.validation import Violations

MAX_TOKEN_CHARS: Final = 1024
MAX_LOCALE_CHARS: Final = 64
MAX_VERSION_CHARS: Final = 64
MAX_MODEL_CHARS: Final = 128
MAX_ZONE_CHARS: Final = 64
MAX_PROVIDER_DETAIL_CHARS: Final = 1024
MAX_PAGE_SIZE: Final = 1000
# A provider timestamp further ahead than this is a caller's bug, not a clock skew: it
# would keep the token dead against every registration until then.
MAX_FUTURE_SKEW: Final = timedelta(minutes=5)
# Earliest and latest instants a proto Timestamp may name (0001-01-01 .. 9999-12-31).
_MIN_SECONDS: Final = -62_135_596_800
_MAX_SECONDS: Final = 253_402_300_799


class Platform(ProtoEnum[types_pb2.Platform.ValueType], enum.StrEnum, proto=types_pb2.Platform):
    """What a device runs on."""

    IOS = "IOS"
    ANDROID = "ANDROID"
    WEB = "WEB"


class Provider(ProtoEnum[types_pb2.Provider.ValueType], enum.StrEnum, proto=types_pb2.Provider):
    """The push service that serves a token."""

    APNS = "APNS"
    FCM = "FCM"


class Permission(
    ProtoEnum[types_pb2.PermissionState.ValueType],
    enum.StrEnum,
    proto=types_pb2.PermissionState,
    unspecified="NOT_DETERMINED",  # "not reported", as the contract's default says
):
    """The OS notification permission on a device."""

    GRANTED = "GRANTED"
    PROVISIONAL = "PROVISIONAL"
    DENIED = "DENIED"
    NOT_DETERMINED = "NOT_DETERMINED"

    @property
    def allows_push(self) -> bool:
        """Whether a push may be shown (provisional pushes are delivered quietly)."""
        return self in (Permission.GRANTED, Permission.PROVISIONAL)


class DeviceStatus(
    ProtoEnum[resources_pb2.DeviceStatus.ValueType],
    enum.StrEnum,
    proto=resources_pb2.DeviceStatus,
):
    """Where a device is in its lifecycle."""

    ACTIVE = "ACTIVE"
    INVALID = "INVALID"
    UNREGISTERED = "UNREGISTERED"


class InvalidReason(
    ProtoEnum[resources_pb2.InvalidationReason.ValueType],
    enum.StrEnum,
    proto=resources_pb2.InvalidationReason,
):
    """Why a provider rejected a token."""

    UNREGISTERED = "UNREGISTERED"
    BAD_DEVICE_TOKEN = "BAD_DEVICE_TOKEN"
    TOKEN_NOT_FOR_TOPIC = "TOKEN_NOT_FOR_TOPIC"
    EXPIRED_TOKEN = "EXPIRED_TOKEN"
    OTHER = "OTHER"


class InvalidationOutcome(
    ProtoEnum[messages_pb2.InvalidationOutcome.ValueType],
    enum.StrEnum,
    proto=messages_pb2.InvalidationOutcome,
):
    """What an InvalidateDevice call did."""

    INVALIDATED = "INVALIDATED"
    ALREADY_INVALID = "ALREADY_INVALID"
    STALE = "STALE"


# The values this server knows; anything else from a newer client is INVALID_ARGUMENT.
KNOWN_PLATFORMS: Final = tuple(member.to_proto() for member in Platform)
KNOWN_PROVIDERS: Final = tuple(member.to_proto() for member in Provider)
KNOWN_PERMISSIONS: Final = tuple(member.to_proto() for member in Permission)
KNOWN_STATUSES: Final = tuple(member.to_proto() for member in DeviceStatus)
KNOWN_REASONS: Final = tuple(member.to_proto() for member in InvalidReason)

# Which providers may serve a platform's tokens (the contract's allowed pairs).
ALLOWED_PROVIDERS: Final[Mapping[Platform, frozenset[Provider]]] = {
    Platform.IOS: frozenset({Provider.APNS, Provider.FCM}),
    Platform.ANDROID: frozenset({Provider.FCM}),
    Platform.WEB: frozenset({Provider.FCM}),
}

# The fields UpdateDevice may change, by their mask path.
UPDATABLE_FIELDS: Final = (
    "user_id",
    "time_zone",
    "locale",
    "app_version",
    "permission",
    "os_version",
    "model",
)


def new_device_id() -> str:
    """A fresh server-assigned device id: opaque, 35 ASCII characters."""
    return "dev_" + secrets.token_urlsafe(23)


def token_problem(token: str) -> str | None:
    """Why ``token`` is no push token, or None."""
    if len(token) > MAX_TOKEN_CHARS:
        return f"at most {MAX_TOKEN_CHARS:,} characters, got {len(token):,}"
    if not all("!" <= ch <= "~" for ch in token):
        return "printable ASCII without spaces only"
    return None


def _check_token(problems: Violations, field: str, token: str) -> None:
    if problems.required(field, bool(token)):
        problem = token_problem(token)
        if problem:
            problems.add(field, problem)


def check_instant(problems: Violations, field: str, stamp: Timestamp) -> datetime | None:
    """The instant ``stamp`` names (microsecond precision, UTC), or a violation."""
    if not _MIN_SECONDS <= stamp.seconds <= _MAX_SECONDS or not 0 <= stamp.nanos < 10**9:
        problems.add(field, "not a valid timestamp (years 1 to 9999)")
        return None
    return stamp.ToDatetime(tzinfo=UTC)


def _check_attributes(
    problems: Violations, proto: resources_pb2.Device, fields: tuple[str, ...]
) -> None:
    """Check the mutable attributes among ``fields`` of ``proto`` (paths ``device.*``)."""
    if "user_id" in fields:
        problems.caller_id("device.user_id", proto.user_id)
    zone_known = "time_zone" in fields and problems.time_zone("device.time_zone", proto.time_zone)
    # Every IANA name fits; an alias path the local tz database accepts may not.
    if zone_known and len(proto.time_zone) > MAX_ZONE_CHARS:
        problems.add("device.time_zone", f"at most {MAX_ZONE_CHARS} characters")
    if "locale" in fields:
        problems.text("device.locale", proto.locale, max_chars=MAX_LOCALE_CHARS)
    if "app_version" in fields:
        problems.text("device.app_version", proto.app_version, max_chars=MAX_VERSION_CHARS)
    if "permission" in fields:
        problems.enum("device.permission", proto.permission, KNOWN_PERMISSIONS, required=False)
    if "os_version" in fields:
        problems.text("device.os_version", proto.os_version, max_chars=MAX_VERSION_CHARS)
    if "model" in fields:
        problems.text("device.model", proto.model, max_chars=MAX_MODEL_CHARS)


@dataclass(frozen=True, slots=True)
class Attributes:
    """What a device says about itself: every field a registration overwrites."""

    user_id: str
    time_zone: str
    locale: str
    app_version: str
    permission: Permission
    os_version: str
    model: str

    @classmethod
    def from_proto(cls, proto: resources_pb2.Device) -> Attributes:
        """The attributes of a checked Device message."""
        return cls(
            user_id=proto.user_id,
            time_zone=proto.time_zone,
            locale=proto.locale,
            app_version=proto.app_version,
            permission=Permission.from_proto(proto.permission),
            os_version=proto.os_version,
            model=proto.model,
        )


@dataclass(frozen=True, slots=True)
class Registration:
    """A checked RegisterDevice request. ``permission_reported`` is False when the
    request left the permission unset ("not reported"): a new device then starts
    NOT_DETERMINED, a known one keeps what it had."""

    app_id: str
    token: str
    platform: Platform
    provider: Provider
    attributes: Attributes
    client_time: datetime | None
    permission_reported: bool = True

    @classmethod
    def from_proto(
        cls, app_id: str, proto: resources_pb2.Device, client_time: Timestamp | None
    ) -> Registration:
        """Check a registration; raises InvalidArgument naming every bad field."""
        problems = Violations()
        problems.caller_id("app_id", app_id)
        _check_token(problems, "device.token", proto.token)
        platform_ok = problems.enum("device.platform", proto.platform, KNOWN_PLATFORMS)
        provider_ok = problems.enum("device.provider", proto.provider, KNOWN_PROVIDERS)
        _check_attributes(problems, proto, UPDATABLE_FIELDS)
        when = None if client_time is None else check_instant(problems, "client_time", client_time)
        if platform_ok and provider_ok:
            platform = Platform.from_proto(proto.platform)
            provider = Provider.from_proto(proto.provider)
            if provider not in ALLOWED_PROVIDERS[platform]:
                served = " or ".join(sorted(ALLOWED_PROVIDERS[platform]))
                problems.add(
                    "device.provider",
                    f"{provider.value} does not serve {platform.value} tokens (use {served})",
                )
        problems.raise_if_any("the device registration is invalid")
        return cls(
            app_id=app_id,
            token=proto.token,
            platform=Platform.from_proto(proto.platform),
            provider=Provider.from_proto(proto.provider),
            attributes=Attributes.from_proto(proto),
            client_time=when,
            permission_reported=proto.permission != types_pb2.PERMISSION_STATE_UNSPECIFIED,
        )

    def attributes_over(self, stored: Device) -> Attributes:
        """What the device says about itself after this registration of a known token."""
        if self.permission_reported:
            return self.attributes
        return replace(self.attributes, permission=stored.permission)


@dataclass(frozen=True, slots=True)
class DeviceUpdate:
    """A checked UpdateDevice request: the new values of the masked fields only."""

    app_id: str
    device_id: str
    values: Mapping[str, object]
    client_time: datetime | None

    @classmethod
    def from_proto(
        cls,
        app_id: str,
        device_id: str,
        proto: resources_pb2.Device | None,
        mask: FieldMask | None,
        client_time: Timestamp | None,
    ) -> DeviceUpdate:
        """Check an update; raises InvalidArgument naming every bad field, each mask path
        that is not updatable included."""
        problems = Violations()
        problems.caller_id("app_id", app_id)
        if problems.required("device_id", bool(device_id)):
            check_server_id(problems, "device_id", device_id)
        problems.required("device", proto is not None)
        paths: list[str] = []
        if problems.required("update_mask", mask is not None and bool(mask.paths)):
            assert mask is not None
            for index, path in enumerate(mask.paths):
                if path in UPDATABLE_FIELDS:
                    paths.append(path)
                else:
                    problems.add(
                        f"update_mask.paths[{index}]",
                        f"{path!r} cannot be updated (updatable: {', '.join(UPDATABLE_FIELDS)})",
                    )
        fields = tuple(dict.fromkeys(paths))
        if proto is not None:
            _check_attributes(problems, proto, fields)
        when = None if client_time is None else check_instant(problems, "client_time", client_time)
        problems.raise_if_any("the device update is invalid")
        assert proto is not None
        attributes = Attributes.from_proto(proto)
        return cls(
            app_id=app_id,
            device_id=device_id,
            values={name: getattr(attributes, name) for name in fields},
            client_time=when,
        )


def check_server_id(problems: Violations, field: str, value: str) -> bool:
    """A server-assigned id as a caller sends it back: at most 64 ASCII characters."""
    if len(value) > 64 or not value.isascii() or not value.isprintable():
        problems.add(field, "not a device id (at most 64 printable ASCII characters)")
        return False
    return True


@dataclass(frozen=True, slots=True)
class DeviceRef:
    """Which device a call is about: by id or by token."""

    app_id: str
    device_id: str = ""
    token: str = ""

    @classmethod
    def check(cls, problems: Violations, app_id: str, which: str | None, value: str) -> DeviceRef:
        """The reference in a request's ``device`` oneof (``which`` is the field set)."""
        problems.caller_id("app_id", app_id)
        if which == "device_id":
            if problems.required("device_id", bool(value)):
                check_server_id(problems, "device_id", value)
            return cls(app_id, device_id=value)
        if which == "token":
            _check_token(problems, "token", value)
            return cls(app_id, token=value)
        problems.add("device", "required: device_id or token")
        return cls(app_id)

    def describe(self) -> str:
        """How to name the device in an error (never the token itself: it is personal)."""
        return f"device {self.device_id!r}" if self.device_id else "the device with this token"


@dataclass(frozen=True, slots=True)
class Invalidation:
    """A checked InvalidateDevice request."""

    ref: DeviceRef
    provider: Provider
    reason: InvalidReason
    provider_detail: str
    provider_time: datetime | None
    send_id: str

    @classmethod
    def from_proto(cls, request: messages_pb2.InvalidateDeviceRequest) -> Invalidation:
        """Check a report; raises InvalidArgument naming every bad field."""
        problems = Violations()
        which = request.WhichOneof("device")
        ref = DeviceRef.check(
            problems, request.app_id, which, getattr(request, which) if which else ""
        )
        problems.enum("provider", request.provider, KNOWN_PROVIDERS)
        problems.enum("reason", request.reason, KNOWN_REASONS)
        problems.text(
            "provider_detail", request.provider_detail, max_chars=MAX_PROVIDER_DETAIL_CHARS
        )
        problems.caller_id("send_id", request.send_id, required=False)
        when = (
            check_instant(problems, "provider_timestamp", request.provider_timestamp)
            if request.HasField("provider_timestamp")
            else None
        )
        problems.raise_if_any("the invalidation report is invalid")
        return cls(
            ref=ref,
            provider=Provider.from_proto(request.provider),
            reason=InvalidReason.from_proto(request.reason),
            provider_detail=request.provider_detail,
            provider_time=when,
            send_id=request.send_id,
        )


@dataclass(frozen=True, slots=True)
class DeviceFilter:
    """ListDevices' filters: one user or all, statuses (ACTIVE when none), a platform."""

    app_id: str
    user_id: str | None
    statuses: frozenset[DeviceStatus]
    platform: Platform | None


@dataclass(frozen=True, slots=True)
class Device:
    """A device as stored."""

    device_id: str
    app_id: str
    token: str
    platform: Platform
    provider: Provider
    user_id: str
    time_zone: str
    locale: str
    app_version: str
    permission: Permission
    os_version: str
    model: str
    status: DeviceStatus
    invalid_reason: InvalidReason | None
    invalid_detail: str
    invalidated_at: datetime | None
    created_at: datetime
    updated_at: datetime
    registered_at: datetime
    changed_at: datetime

    @property
    def usable(self) -> bool:
        """Whether a push may go to it now: ACTIVE with a permission that shows pushes."""
        return self.status is DeviceStatus.ACTIVE and self.permission.allows_push

    @property
    def attributes(self) -> Attributes:
        """What the device last said about itself."""
        return Attributes(
            user_id=self.user_id,
            time_zone=self.time_zone,
            locale=self.locale,
            app_version=self.app_version,
            permission=self.permission,
            os_version=self.os_version,
            model=self.model,
        )

    def with_attributes(self, attributes: Attributes) -> Device:
        """This device with ``attributes`` in place of its own."""
        return replace(
            self,
            user_id=attributes.user_id,
            time_zone=attributes.time_zone,
            locale=attributes.locale,
            app_version=attributes.app_version,
            permission=attributes.permission,
            os_version=attributes.os_version,
            model=attributes.model,
        )

    def same_state(self, other: Device) -> bool:
        """Whether ``other`` differs only in the bookkeeping instants (what a feed
        follower would not notice)."""
        ignored = {"updated_at": None, "registered_at": None, "changed_at": None}
        return replace(self, **ignored) == replace(other, **ignored)  # type: ignore[arg-type]

    def to_proto(self) -> resources_pb2.Device:
        """The contract's Device."""
        proto = resources_pb2.Device(
            device_id=self.device_id,
            app_id=self.app_id,
            user_id=self.user_id,
            platform=self.platform.to_proto(),
            provider=self.provider.to_proto(),
            token=self.token,
            time_zone=self.time_zone,
            locale=self.locale,
            app_version=self.app_version,
            permission=self.permission.to_proto(),
            os_version=self.os_version,
            model=self.model,
            status=self.status.to_proto(),
            invalid_detail=self.invalid_detail,
        )
        if self.invalid_reason is not None:
            proto.invalid_reason = self.invalid_reason.to_proto()
        if self.invalidated_at is not None:
            proto.invalidated_at.FromDatetime(self.invalidated_at)
        proto.created_at.FromDatetime(self.created_at)
        proto.updated_at.FromDatetime(self.updated_at)
        proto.registered_at.FromDatetime(self.registered_at)
        return proto

    def change_proto(self) -> resources_pb2.DeviceChange:
        """What a ledger entry about this device keeps: no token, locale or model."""
        return resources_pb2.DeviceChange(
            device_id=self.device_id,
            permission=self.permission.to_proto(),
            status=self.status.to_proto(),
            platform=self.platform.to_proto(),
        )


class DeviceSummary(NamedTuple):
    """What a batch eligibility check needs of a device: no bookkeeping instants, no
    invalidation details, cheap to read by the thousand."""

    device_id: str
    user_id: str
    platform: Platform
    provider: Provider
    token: str
    time_zone: str
    locale: str
    app_version: str
    permission: Permission
    status: DeviceStatus

    @property
    def usable(self) -> bool:
        """Whether a push may go to it now (as :attr:`Device.usable`)."""
        return self.status is DeviceStatus.ACTIVE and self.permission.allows_push

    def usable_fields(self) -> dict[str, Any]:
        """The fields of this device's UsableDevice, for building it in one call (the
        enumerations' numbers looked up, not converted, per device)."""
        return {
            "device_id": self.device_id,
            "provider": _PROVIDER_NUMBERS[self.provider],
            "token": self.token,
            "platform": _PLATFORM_NUMBERS[self.platform],
            "permission": _PERMISSION_NUMBERS[self.permission],
            "locale": self.locale,
            "app_version": self.app_version,
        }

    def to_usable_proto(self) -> messages_pb2.UsableDevice:
        """The contract's UsableDevice (meaningful for a usable device)."""
        return messages_pb2.UsableDevice(**self.usable_fields())


# Proto numbers by member, for eligibility's per-device path.
_PLATFORM_NUMBERS: Final = {member: member.to_proto() for member in Platform}
_PROVIDER_NUMBERS: Final = {member: member.to_proto() for member in Provider}
_PERMISSION_NUMBERS: Final = {member: member.to_proto() for member in Permission}
