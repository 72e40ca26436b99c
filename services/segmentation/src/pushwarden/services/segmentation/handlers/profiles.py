"""UpsertProfiles and GetProfiles: partial updates, removals and full replaces of typed
attributes, last write wins per attribute by ``client_time``; reading profiles back.

Every attribute remembers the ``client_time`` of its latest write, removals included
(a tombstone), so a late retry that is older than what is stored changes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from pushwarden.services.segmentation.domain.profiles import (
    MAX_ATTRIBUTES_PER_PROFILE,
    ProfileChange,
)
from pushwarden.services.segmentation.domain.values import Value
from pushwarden.services.segmentation.handlers.common import SegmentationDeps
from pushwarden.services.segmentation.storage.events import StoredEvent
from pushwarden.services.segmentation.storage.profiles import (
    AttributeWrite,
    StoredAttribute,
    StoredProfile,
)


@dataclass(frozen=True, slots=True)
class ProfileOutcome:
    """What happened to one update: APPLIED, UNCHANGED or REJECTED (with field and why)."""

    user_id: str
    status: str
    field: str = ""
    message: str = ""


def plan_change(
    change: ProfileChange, stored: dict[str, StoredAttribute], now: datetime
) -> tuple[list[AttributeWrite], bool, int]:
    """The writes one update makes against the stored attributes, whether any of them is
    visible (a value set, changed or removed), and how many attributes live after it."""
    at = change.client_time or now
    writes: dict[str, AttributeWrite] = {}
    visible = False
    for name, value in change.set_attributes.items():
        current = stored.get(name)
        if current is not None and current.written_at > at:
            continue  # a newer write wins
        if current is None or current.value != value:
            visible = True
        writes[name] = AttributeWrite(change.user_id, name, value, at)
    removals = list(change.remove_attributes)
    if change.replace:
        removals += [
            name
            for name, current in stored.items()
            if name not in change.set_attributes and current.written_at < at
        ]
    for name in removals:
        current = stored.get(name)
        if current is not None and current.written_at > at:
            continue
        if current is not None and current.value is not None:
            visible = True
        # A tombstone even for an absent attribute: an older set arriving later must lose.
        writes[name] = AttributeWrite(change.user_id, name, None, at)
    live = {name for name, current in stored.items() if current.value is not None}
    for name, write in writes.items():
        if write.value is None:
            live.discard(name)
        else:
            live.add(name)
    return list(writes.values()), visible, len(live)


class ProfileHandlers:
    """The profile use cases."""

    def __init__(self, deps: SegmentationDeps) -> None:
        self._deps = deps

    async def upsert(self, app_id: str, changes: Sequence[ProfileChange]) -> list[ProfileOutcome]:
        """Apply a checked batch in one transaction; one outcome per update, in order."""
        deps = self._deps
        users = [change.user_id for change in changes]
        async with deps.uow() as work:
            now = deps.clock.now()
            before = await work.profiles.lock_or_create(app_id, users, now)
            stored = await work.profiles.attributes_of(app_id, users)
            writes: list[AttributeWrite] = []
            changed: list[str] = []
            dropped: list[str] = []
            outcomes: list[ProfileOutcome] = []
            for index, change in enumerate(changes):
                planned, visible, live = plan_change(change, stored.get(change.user_id, {}), now)
                if live > MAX_ATTRIBUTES_PER_PROFILE:
                    if change.user_id not in before:
                        dropped.append(change.user_id)
                    outcomes.append(
                        ProfileOutcome(
                            change.user_id,
                            "REJECTED",
                            f"profiles[{index}].set_attributes",
                            f"a profile holds at most {MAX_ATTRIBUTES_PER_PROFILE} attributes; "
                            f"this update would leave {live}",
                        )
                    )
                    continue
                writes += planned
                if visible:
                    changed.append(change.user_id)
                created = change.user_id not in before
                outcomes.append(
                    ProfileOutcome(change.user_id, "APPLIED" if visible or created else "UNCHANGED")
                )
            await work.profiles.write(app_id, writes)
            await work.profiles.touch(app_id, changed, now)
            await work.profiles.delete_profiles(app_id, dropped)
            await work.commit()
        return outcomes


@dataclass(frozen=True, slots=True)
class FoundProfile:
    """One user's profile (None when there is none) and latest events."""

    user_id: str
    profile: StoredProfile | None
    attributes: dict[str, Value]
    latest_events: list[StoredEvent]


class ProfileReads:
    """GetProfiles."""

    def __init__(self, deps: SegmentationDeps) -> None:
        self._deps = deps

    async def get(
        self,
        app_id: str,
        user_ids: Sequence[str],
        attribute_names: Sequence[str],
        event_names: Sequence[str],
    ) -> list[FoundProfile]:
        """Profiles (restricted to ``attribute_names`` unless empty) and each user's
        latest event of each of ``event_names``, in request order, from one snapshot."""
        async with self._deps.uow(read_only=True, snapshot=True) as work:
            profiles = await work.profiles.get_many(app_id, user_ids)
            stored = await work.profiles.attributes_of(app_id, user_ids)
            latest = await work.events.latest_of(app_id, user_ids, event_names)
        wanted = set(attribute_names)
        return [
            FoundProfile(
                user_id,
                profiles.get(user_id),
                {
                    name: attribute.value
                    for name, attribute in sorted(stored.get(user_id, {}).items())
                    if attribute.value is not None and (not wanted or name in wanted)
                },
                latest.get(user_id, []),
            )
            for user_id in user_ids
        ]
