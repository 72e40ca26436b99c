"""The devices repository: rows of ``devices`` in and out as domain objects."""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Collection, Sequence
from typing import Any

from sqlalchemy import Select, bindparam, delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from pushwarden.runtime.db import insert_ignoring_duplicates
from pushwarden.services.consent.domain.devices import (
    Device,
    DeviceFilter,
    DeviceStatus,
    DeviceSummary,
    InvalidReason,
    Permission,
    Platform,
    Provider,
)
from pushwarden.services.consent.models import DeviceRow
from pushwarden.services.consent.storage.batches import in_batch

# Users per devices_of_users call (bound as one value: see storage.batches).
MAX_USERS_PER_LOOKUP = 1000


# Rows are read through Core (no ORM identity map), column by column in the order of
# Device's fields, and built positionally: eligibility loads thousands per call.
_FIELDS = tuple(field.name for field in dataclasses.fields(Device))
_COLUMNS = tuple(DeviceRow.__table__.columns[name] for name in _FIELDS)
_SUMMARY_COLUMNS = tuple(DeviceRow.__table__.columns[name] for name in DeviceSummary._fields)
_PLATFORMS = {member.value: member for member in Platform}
_PROVIDERS = {member.value: member for member in Provider}
_PERMISSIONS = {member.value: member for member in Permission}
_STATUSES = {member.value: member for member in DeviceStatus}
_REASONS = {member.value: member for member in InvalidReason}


def _device(row: Sequence[Any]) -> Device:
    (
        device_id,
        app_id,
        token,
        platform,
        provider,
        user_id,
        time_zone,
        locale,
        app_version,
        permission,
        os_version,
        model,
        status,
        invalid_reason,
        invalid_detail,
        invalidated_at,
        created_at,
        updated_at,
        registered_at,
        changed_at,
    ) = row
    return Device(
        device_id,
        app_id,
        token,
        _PLATFORMS[platform],
        _PROVIDERS[provider],
        user_id,
        time_zone,
        locale,
        app_version,
        _PERMISSIONS[permission],
        os_version,
        model,
        _STATUSES[status],
        None if invalid_reason is None else _REASONS[invalid_reason],
        invalid_detail,
        invalidated_at,
        created_at,
        updated_at,
        registered_at,
        changed_at,
    )


def _values(device: Device) -> dict[str, Any]:
    """Every column of ``device`` (enumerations by name)."""
    return {
        "device_id": device.device_id,
        "app_id": device.app_id,
        "token": device.token,
        "platform": device.platform.value,
        "provider": device.provider.value,
        "user_id": device.user_id,
        "time_zone": device.time_zone,
        "locale": device.locale,
        "app_version": device.app_version,
        "permission": device.permission.value,
        "os_version": device.os_version,
        "model": device.model,
        "status": device.status.value,
        "invalid_reason": None if device.invalid_reason is None else device.invalid_reason.value,
        "invalid_detail": device.invalid_detail,
        "invalidated_at": device.invalidated_at,
        "created_at": device.created_at,
        "updated_at": device.updated_at,
        "registered_at": device.registered_at,
        "changed_at": device.changed_at,
    }


# What a save may overwrite: never the key, the app, the token, platform or provider.
_IMMUTABLE = frozenset({"device_id", "app_id", "token", "platform", "provider", "created_at"})


def _of_users(columns: tuple[Any, ...], statuses: Collection[DeviceStatus] | None) -> Select[Any]:
    """One query for the devices of a batch of users (parameters ``app_id`` and
    ``user_ids``, the whole batch bound as one value), most recently registered first."""
    query = select(*columns).where(
        DeviceRow.app_id == bindparam("app_id"), in_batch(DeviceRow.user_id, "user_ids")
    )
    if statuses is not None:
        query = query.where(DeviceRow.status.in_(sorted(s.value for s in statuses)))
    return query.order_by(DeviceRow.user_id, DeviceRow.registered_at.desc(), DeviceRow.device_id)


def _batch(app_id: str, user_ids: Sequence[str]) -> dict[str, Any]:
    if len(user_ids) > MAX_USERS_PER_LOOKUP:
        raise ValueError(f"at most {MAX_USERS_PER_LOOKUP} users per lookup")
    return {"app_id": app_id, "user_ids": user_ids}


_DEVICES_OF_USERS = _of_users(_COLUMNS, None)
_SUMMARIES_OF_USERS = _of_users(_SUMMARY_COLUMNS, None)


class DeviceRepository:
    """Devices of every app, keyed by device id and unique by (app, token)."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def _one(self, query: Select[Any], for_update: bool) -> Device | None:
        if for_update:
            query = query.with_for_update()
        row = (await self._session.execute(query)).one_or_none()
        return None if row is None else _device(row)

    async def get(self, app_id: str, device_id: str, *, for_update: bool = False) -> Device | None:
        """The app's device with this id (another app's device is None)."""
        query = select(*_COLUMNS).where(
            DeviceRow.app_id == app_id, DeviceRow.device_id == device_id
        )
        return await self._one(query, for_update)

    async def get_by_token(
        self, app_id: str, token: str, *, for_update: bool = False
    ) -> Device | None:
        """The app's device with this push token."""
        query = select(*_COLUMNS).where(DeviceRow.app_id == app_id, DeviceRow.token == token)
        return await self._one(query, for_update)

    async def insert(self, device: Device) -> bool:
        """Insert a new device; False when (app, token) or the id exists already."""
        return await insert_ignoring_duplicates(self._session, DeviceRow, [_values(device)]) == 1

    async def save(self, device: Device) -> None:
        """Overwrite the mutable columns of a stored device."""
        changes = {k: v for k, v in _values(device).items() if k not in _IMMUTABLE}
        result = await self._session.execute(
            update(DeviceRow)
            .where(DeviceRow.device_id == device.device_id, DeviceRow.app_id == device.app_id)
            .values(**changes)
            .execution_options(synchronize_session=False)
        )
        if getattr(result, "rowcount", 1) != 1:
            raise LookupError(f"device {device.device_id!r} vanished inside its transaction")

    async def list_page(self, where: DeviceFilter, after: str | None, limit: int) -> list[Device]:
        """Up to ``limit`` devices matching ``where``, ordered by id, after ``after``."""
        query = select(*_COLUMNS).where(DeviceRow.app_id == where.app_id)
        if where.user_id is not None:
            query = query.where(DeviceRow.user_id == where.user_id)
        query = query.where(DeviceRow.status.in_(sorted(s.value for s in where.statuses)))
        if where.platform is not None:
            query = query.where(DeviceRow.platform == where.platform.value)
        if after is not None:
            query = query.where(DeviceRow.device_id > after)
        rows = await self._session.execute(query.order_by(DeviceRow.device_id).limit(limit))
        return [_device(row) for row in rows]

    async def devices_of_users(
        self,
        app_id: str,
        user_ids: Sequence[str],
        statuses: Collection[DeviceStatus] | None = None,
    ) -> dict[str, list[Device]]:
        """The devices of up to 1,000 users of one app in one query, by user (users
        without a device are absent), each list most recently registered first; only
        those in ``statuses`` when given."""
        if not user_ids:
            return {}
        params = _batch(app_id, user_ids)
        query = _DEVICES_OF_USERS if statuses is None else _of_users(_COLUMNS, statuses)
        found: defaultdict[str, list[Device]] = defaultdict(list)
        for row in await self._session.execute(query, params):
            device = _device(row)
            found[device.user_id].append(device)
        return dict(found)

    async def summaries_of_users(
        self,
        app_id: str,
        user_ids: Sequence[str],
        statuses: Collection[DeviceStatus] | None = None,
    ) -> dict[str, list[DeviceSummary]]:
        """As :meth:`devices_of_users`, but only what eligibility needs of each device
        (:class:`DeviceSummary`): no timestamp is read, which makes it several times
        cheaper per row; read through the session's connection (Core rows, no ORM
        result layer): this runs for every eligibility batch."""
        if not user_ids:
            return {}
        params = _batch(app_id, user_ids)
        query = _SUMMARIES_OF_USERS if statuses is None else _of_users(_SUMMARY_COLUMNS, statuses)
        found: defaultdict[str, list[DeviceSummary]] = defaultdict(list)
        platforms, providers, permissions, states = _PLATFORMS, _PROVIDERS, _PERMISSIONS, _STATUSES
        connection = await self._session.connection()
        for row in (await connection.execute(query, params)).all():
            (
                device_id,
                user_id,
                platform,
                provider,
                token,
                zone,
                locale,
                version,
                permission,
                status,
            ) = row
            found[user_id].append(
                DeviceSummary(
                    device_id,
                    user_id,
                    platforms[platform],
                    providers[provider],
                    token,
                    zone,
                    locale,
                    version,
                    permissions[permission],
                    states[status],
                )
            )
        return dict(found)

    async def delete_of_user(self, app_id: str, user_id: str) -> int:
        """Erasure: delete every device (token included) the user has in the app;
        returns how many."""
        result = await self._session.execute(
            delete(DeviceRow).where(DeviceRow.app_id == app_id, DeviceRow.user_id == user_id)
        )
        return int(getattr(result, "rowcount", 0) or 0)
