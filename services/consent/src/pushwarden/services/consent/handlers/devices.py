"""Device use cases: register (upsert by token), update, unregister, invalidate, list.

Every effective change of a device is a DEVICE change on the feed (the device after it,
and the previous user when the token moved). The ledger keeps what consent depends on,
for the device's current user: a PERMISSION entry whenever the OS permission changes
(the first registration included), and a DEVICE entry whenever the device's user or
status changes (registered for a user for the first time, moved to a user, unregistered,
invalidated, active again). Neither kind of entry names the token, locale or model.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime

from pushwarden.consent.v1 import resources_pb2
from pushwarden.runtime.errors import Aborted, InvalidArgument, NotFound
from pushwarden.services.consent.domain.changes import ChangeKind
from pushwarden.services.consent.domain.devices import (
    MAX_FUTURE_SKEW,
    Device,
    DeviceFilter,
    DeviceRef,
    DeviceStatus,
    DeviceUpdate,
    Invalidation,
    InvalidationOutcome,
    Registration,
    new_device_id,
)
from pushwarden.services.consent.domain.ledger import EntryKind
from pushwarden.services.consent.handlers.common import ConsentDeps, publish, record
from pushwarden.services.consent.storage.uow import ConsentUnitOfWork


@dataclass(frozen=True, slots=True)
class Registered:
    """What RegisterDevice did."""

    device: Device
    created: bool
    previous_user_id: str
    superseded: bool


@dataclass(frozen=True, slots=True)
class Updated:
    """What UpdateDevice did."""

    device: Device
    superseded: bool


@dataclass(frozen=True, slots=True)
class Invalidated:
    """What InvalidateDevice did."""

    device: Device
    outcome: InvalidationOutcome


@dataclass(frozen=True, slots=True)
class DevicePage:
    """One page of devices and the id the next page starts after (None: last page)."""

    devices: list[Device]
    last_id: str | None


def _not_found(ref: DeviceRef) -> NotFound:
    return NotFound(
        f"{ref.describe()} is not registered in app {ref.app_id!r}",
        resource_type="device",
        resource_name=ref.device_id,
    )


class DeviceHandlers:
    """The device use cases."""

    def __init__(self, deps: ConsentDeps) -> None:
        self._deps = deps
        self._uow = deps.uow
        self._clock = deps.clock

    async def register(self, registration: Registration) -> Registered:
        """Create the device of (app, token) or overwrite what it says about itself.

        A registration whose client time is older than the device's latest applied
        change writes nothing (``superseded``). A different platform or provider than
        the stored one is INVALID_ARGUMENT (IMMUTABLE_FIELD). An INVALID device becomes
        ACTIVE only when this call's server time is after its ``invalidated_at``; an
        UNREGISTERED one becomes ACTIVE again.
        """
        async with self._uow() as work:
            await work.lock_appends()
            now = self._clock.now()
            stored = await work.devices.get_by_token(
                registration.app_id, registration.token, for_update=True
            )
            if stored is None:
                device = self._new_device(registration, now)
                if not await work.devices.insert(device):
                    raise Aborted("a concurrent registration took the device id; retry the call")
                await self._history(work, None, device, now, registration.client_time)
                await work.commit()
                self._deps.signal.notify()
                return Registered(device, created=True, previous_user_id="", superseded=False)
            _check_immutable(stored, registration)
            client_time = registration.client_time or now
            if client_time < stored.changed_at:
                return Registered(stored, created=False, previous_user_id="", superseded=True)
            attributes = registration.attributes_over(stored)
            device = _revived_or_not(stored.with_attributes(attributes), now)
            device = replace(device, registered_at=now, changed_at=client_time)
            device, published = await self._save(
                work, stored, device, now, registration.client_time
            )
            await work.commit()
        if published:
            self._deps.signal.notify()
        moved = stored.user_id if stored.user_id != device.user_id else ""
        return Registered(device, created=False, previous_user_id=moved, superseded=False)

    @staticmethod
    def _new_device(registration: Registration, now: datetime) -> Device:
        attributes = registration.attributes
        return Device(
            device_id=new_device_id(),
            app_id=registration.app_id,
            token=registration.token,
            platform=registration.platform,
            provider=registration.provider,
            user_id=attributes.user_id,
            time_zone=attributes.time_zone,
            locale=attributes.locale,
            app_version=attributes.app_version,
            permission=attributes.permission,
            os_version=attributes.os_version,
            model=attributes.model,
            status=DeviceStatus.ACTIVE,
            invalid_reason=None,
            invalid_detail="",
            invalidated_at=None,
            created_at=now,
            updated_at=now,
            registered_at=now,
            changed_at=registration.client_time or now,
        )

    async def update(self, change: DeviceUpdate) -> Updated:
        """Overwrite the masked fields of a device of the app; NOT_FOUND when the app
        has no such device; an older client time than the latest applied change writes
        nothing (``superseded``)."""
        ref = DeviceRef(change.app_id, device_id=change.device_id)
        async with self._uow() as work:
            await work.lock_appends()
            now = self._clock.now()
            stored = await work.devices.get(change.app_id, change.device_id, for_update=True)
            if stored is None:
                raise _not_found(ref)
            client_time = change.client_time or now
            if client_time < stored.changed_at:
                return Updated(stored, superseded=True)
            device = replace(stored, **change.values, changed_at=client_time)  # type: ignore[arg-type]
            device, published = await self._save(work, stored, device, now, change.client_time)
            await work.commit()
        if published:
            self._deps.signal.notify()
        return Updated(device, superseded=False)

    async def unregister(self, ref: DeviceRef) -> Device:
        """Mark the device UNREGISTERED (again: nothing changes); NOT_FOUND when the
        app has no such device."""
        async with self._uow() as work:
            await work.lock_appends()
            now = self._clock.now()
            stored = await self._find(work, ref)
            if stored.status is DeviceStatus.UNREGISTERED:
                return stored
            device, _ = await self._save(
                work, stored, replace(stored, status=DeviceStatus.UNREGISTERED), now, None
            )
            await work.commit()
        self._deps.signal.notify()
        return device

    async def invalidate(self, report: Invalidation) -> Invalidated:
        """Record that a provider reported the token dead: INVALIDATED, or
        ALREADY_INVALID (a retried report), or STALE (the token was registered again
        after the provider's timestamp); only INVALIDATED writes."""
        now = self._clock.now()
        if report.provider_time is not None and report.provider_time > now + MAX_FUTURE_SKEW:
            raise InvalidArgument(
                "the invalidation report is invalid: provider_timestamp",
                [("provider_timestamp", "more than 5 minutes in the future")],
            )
        async with self._uow() as work:
            await work.lock_appends()
            now = self._clock.now()
            stored = await self._find(work, report.ref)
            if stored.provider is not report.provider:
                raise InvalidArgument(
                    "the invalidation report is invalid: provider",
                    [("provider", f"the device's tokens are served by {stored.provider.value}")],
                )
            if stored.status is DeviceStatus.INVALID:
                return Invalidated(stored, InvalidationOutcome.ALREADY_INVALID)
            died_at = report.provider_time or now
            if died_at < stored.registered_at:
                return Invalidated(stored, InvalidationOutcome.STALE)
            device = replace(
                stored,
                status=DeviceStatus.INVALID,
                invalid_reason=report.reason,
                invalid_detail=report.provider_detail,
                invalidated_at=died_at,
            )
            device, _ = await self._save(work, stored, device, now, None)
            await work.commit()
        self._deps.signal.notify()
        return Invalidated(device, InvalidationOutcome.INVALIDATED)

    async def list(self, where: DeviceFilter, after: str | None, size: int) -> DevicePage:
        """A page of the app's devices matching ``where``, ordered by id."""
        async with self._uow(read_only=True) as work:
            found = await work.devices.list_page(where, after, size + 1)
        more = len(found) > size
        page = found[:size]
        return DevicePage(page, page[-1].device_id if more and page else None)

    async def _find(self, work: ConsentUnitOfWork, ref: DeviceRef) -> Device:
        if ref.device_id:
            found = await work.devices.get(ref.app_id, ref.device_id, for_update=True)
        else:
            found = await work.devices.get_by_token(ref.app_id, ref.token, for_update=True)
        if found is None:
            raise _not_found(ref)
        return found

    async def _save(
        self,
        work: ConsentUnitOfWork,
        stored: Device,
        device: Device,
        now: datetime,
        client_time: datetime | None,
    ) -> tuple[Device, bool]:
        """Store ``device`` in place of ``stored``; when anything a follower sees
        changed, bump ``updated_at`` and write its history. Returns the device as
        stored and whether it changed."""
        changed = not stored.same_state(device)
        if changed:
            device = replace(device, updated_at=now)
        await work.devices.save(device)
        if changed:
            await self._history(work, stored, device, now, client_time)
        return device, changed

    async def _history(
        self,
        work: ConsentUnitOfWork,
        before: Device | None,
        after: Device,
        now: datetime,
        client_time: datetime | None,
    ) -> None:
        """The ledger entries and the feed change of one effective change."""
        platform = after.platform.value
        payload = resources_pb2.LedgerEntry(device=after.change_proto())
        moved = before is not None and before.user_id != after.user_id
        if before is None or moved or before.status is not after.status:
            await record(
                work,
                self._deps,
                app_id=after.app_id,
                user_id=after.user_id,
                kind=EntryKind.DEVICE,
                payload=payload,
                now=now,
                client_time=client_time,
                scope_key=f"DEVICE:{platform}",
                action=after.status.value,
            )
        if before is None or before.permission is not after.permission:
            await record(
                work,
                self._deps,
                app_id=after.app_id,
                user_id=after.user_id,
                kind=EntryKind.PERMISSION,
                payload=payload,
                now=now,
                client_time=client_time,
                scope_key=f"PERMISSION:{platform}",
                action=after.permission.value,
            )
        change = resources_pb2.Change(device=after.to_proto())
        if moved and before is not None:
            change.previous_user_id = before.user_id
        await publish(
            work,
            app_id=after.app_id,
            user_id=after.user_id,
            kind=ChangeKind.DEVICE,
            change=change,
            now=now,
        )


def _check_immutable(stored: Device, registration: Registration) -> None:
    """Refuse a registration that would change the platform or the provider."""
    violations = [
        (f"device.{name}", f"is {old.value} for this token and never changes")
        for name, old, new in (
            ("platform", stored.platform, registration.platform),
            ("provider", stored.provider, registration.provider),
        )
        if old is not new
    ]
    if violations:
        fields = ", ".join(field for field, _ in violations)
        raise InvalidArgument(
            f"the device registration is invalid: {fields}", violations, reason="IMMUTABLE_FIELD"
        )


def _revived_or_not(device: Device, now: datetime) -> Device:
    """The status a registration at server time ``now`` leaves: ACTIVE, unless a
    provider reported the token dead at or after ``now``."""
    if device.invalidated_at is not None and now <= device.invalidated_at:
        return replace(device, status=DeviceStatus.INVALID)
    return replace(
        device,
        status=DeviceStatus.ACTIVE,
        invalid_reason=None,
        invalid_detail="",
        invalidated_at=None,
    )
