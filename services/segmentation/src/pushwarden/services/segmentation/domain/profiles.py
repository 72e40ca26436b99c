"""Profile updates: what an UpsertProfiles item asks for, checked."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Final

from pushwarden.runtime.validation import Violations
from pushwarden.segmentation.v1 import messages_pb2
from pushwarden.services.segmentation.domain.values import (
    MAX_NAMED_VALUES,
    Value,
    check_name,
    from_timestamp,
    timestamp_problem,
    values_from_proto,
)

MAX_PROFILES_PER_BATCH: Final = 1000
MAX_ATTRIBUTES_PER_PROFILE: Final = 500


@dataclass(frozen=True, slots=True)
class ProfileChange:
    """One checked ProfileUpdate."""

    user_id: str
    set_attributes: dict[str, Value]
    remove_attributes: tuple[str, ...]
    replace: bool
    client_time: datetime | None


def profile_changes_from_proto(request: messages_pb2.UpsertProfilesRequest) -> list[ProfileChange]:
    """The checked updates of a request; raises InvalidArgument naming every bad field."""
    problems = Violations()
    problems.caller_id("app_id", request.app_id)
    updates = list(request.profiles)
    if not updates or len(updates) > MAX_PROFILES_PER_BATCH:
        problems.add("profiles", f"1 to {MAX_PROFILES_PER_BATCH:,} per call, got {len(updates):,}")
        problems.reason = "BATCH_SIZE"
        problems.raise_if_any()
    changes: list[ProfileChange] = []
    seen: set[str] = set()
    for index, update in enumerate(updates):
        field = f"profiles[{index}]"
        if problems.caller_id(f"{field}.user_id", update.user_id) and update.user_id in seen:
            problems.add(f"{field}.user_id", f"repeats {update.user_id!r}: one update per user")
        seen.add(update.user_id)
        values = values_from_proto(update.set_attributes, f"{field}.set_attributes", problems)
        removals = list(update.remove_attributes)
        if len(removals) > MAX_NAMED_VALUES:
            problems.add(f"{field}.remove_attributes", f"at most {MAX_NAMED_VALUES}")
        for position, name in enumerate(removals):
            path = f"{field}.remove_attributes[{position}]"
            if check_name(problems, path, name) and name in update.set_attributes:
                problems.add(path, f"{name!r} is both set and removed")
        client_time = None
        if update.HasField("client_time"):
            problem = timestamp_problem(update.client_time)
            if problem:
                problems.add(f"{field}.client_time", problem)
            else:
                client_time = from_timestamp(update.client_time)
        changes.append(
            ProfileChange(
                user_id=update.user_id,
                set_attributes=values,
                remove_attributes=tuple(dict.fromkeys(removals)),
                replace=update.replace,
                client_time=client_time,
            )
        )
    problems.raise_if_any("the profiles are invalid")
    return changes
