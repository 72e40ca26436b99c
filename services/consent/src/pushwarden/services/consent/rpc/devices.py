"""RegisterDevice, UpdateDevice, UnregisterDevice, InvalidateDevice, ListDevices."""

from __future__ import annotations

from pushwarden.consent.v1 import consent_pb2_grpc, messages_pb2
from pushwarden.runtime.auth import require_app
from pushwarden.runtime.validation import Violations, decode_page_token, encode_page_token
from pushwarden.services.consent.domain.devices import (
    KNOWN_PLATFORMS,
    KNOWN_STATUSES,
    MAX_PAGE_SIZE,
    DeviceFilter,
    DeviceRef,
    DeviceStatus,
    DeviceUpdate,
    Invalidation,
    Platform,
    Registration,
)
from pushwarden.services.consent.handlers.devices import DeviceHandlers
from pushwarden.services.consent.rpc.context import Context


class DeviceRpcs(consent_pb2_grpc.ConsentServiceServicer):
    """The device RPCs."""

    _devices: DeviceHandlers

    async def RegisterDevice(
        self, request: messages_pb2.RegisterDeviceRequest, context: Context
    ) -> messages_pb2.RegisterDeviceResponse:
        """Register a push token, or update the device that has it."""
        require_app(request.app_id)
        registration = Registration.from_proto(
            request.app_id,
            request.device,
            request.client_time if request.HasField("client_time") else None,
        )
        registered = await self._devices.register(registration)
        return messages_pb2.RegisterDeviceResponse(
            device=registered.device.to_proto(),
            created=registered.created,
            previous_user_id=registered.previous_user_id,
            superseded=registered.superseded,
        )

    async def UpdateDevice(
        self, request: messages_pb2.UpdateDeviceRequest, context: Context
    ) -> messages_pb2.UpdateDeviceResponse:
        """Change the masked fields of a device."""
        require_app(request.app_id)
        change = DeviceUpdate.from_proto(
            request.app_id,
            request.device_id,
            request.device if request.HasField("device") else None,
            request.update_mask if request.HasField("update_mask") else None,
            request.client_time if request.HasField("client_time") else None,
        )
        updated = await self._devices.update(change)
        return messages_pb2.UpdateDeviceResponse(
            device=updated.device.to_proto(), superseded=updated.superseded
        )

    async def UnregisterDevice(
        self, request: messages_pb2.UnregisterDeviceRequest, context: Context
    ) -> messages_pb2.UnregisterDeviceResponse:
        """Mark a device UNREGISTERED."""
        require_app(request.app_id)
        problems = Violations()
        which = request.WhichOneof("device")
        ref = DeviceRef.check(
            problems, request.app_id, which, getattr(request, which) if which else ""
        )
        problems.raise_if_any()
        device = await self._devices.unregister(ref)
        return messages_pb2.UnregisterDeviceResponse(device=device.to_proto())

    async def InvalidateDevice(
        self, request: messages_pb2.InvalidateDeviceRequest, context: Context
    ) -> messages_pb2.InvalidateDeviceResponse:
        """Record that a provider reported a token dead."""
        require_app(request.app_id)
        done = await self._devices.invalidate(Invalidation.from_proto(request))
        return messages_pb2.InvalidateDeviceResponse(
            device=done.device.to_proto(), outcome=done.outcome.to_proto()
        )

    async def ListDevices(
        self, request: messages_pb2.ListDevicesRequest, context: Context
    ) -> messages_pb2.ListDevicesResponse:
        """A page of the app's devices, ordered by id."""
        require_app(request.app_id)
        problems = Violations()
        problems.caller_id("app_id", request.app_id)
        problems.caller_id("user_id", request.user_id, required=False)
        for index, status in enumerate(request.statuses):
            problems.enum(f"statuses[{index}]", status, KNOWN_STATUSES)
        problems.enum("platform", request.platform, KNOWN_PLATFORMS, required=False)
        size = problems.page_size("page_size", request.page_size, maximum=MAX_PAGE_SIZE)
        statuses = sorted(set(request.statuses))
        filters = {
            "app_id": request.app_id,
            "user_id": request.user_id,
            "statuses": statuses,
            "platform": request.platform,
        }
        cursor = decode_page_token(request.page_token, filters, problems)
        problems.raise_if_any()
        where = DeviceFilter(
            app_id=request.app_id,
            user_id=request.user_id or None,
            statuses=frozenset(DeviceStatus.from_proto(s) for s in statuses)
            or frozenset({DeviceStatus.ACTIVE}),
            platform=Platform.from_proto(request.platform) if request.platform else None,
        )
        page = await self._devices.list(where, cursor.after[0] if cursor else None, size)
        return messages_pb2.ListDevicesResponse(
            devices=[device.to_proto() for device in page.devices],
            next_page_token=(
                encode_page_token([page.last_id], filters) if page.last_id is not None else ""
            ),
        )
