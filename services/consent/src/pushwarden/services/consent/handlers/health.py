"""GetAudienceHealth: how much of an app's audience push can reach, and how fast it opts
out.

Device figures and opt-out counts are SQL aggregates (opt-outs from the ledger's
non-personal columns, so erasure, which deletes payloads, does not change them). Whether
a category allows a user is the same pure rule GetConsentState uses
(:func:`judge_category` on the push channel, erasure suppression included); it needs
the pseudonym, which only the service can compute, so the users with a usable device
are walked in batches of at most 1,000, one query per table per batch, all in one read
snapshot.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from google.protobuf.duration_pb2 import Duration

from pushwarden.consent.v1 import messages_pb2
from pushwarden.runtime.validation import Violations
from pushwarden.services.consent.domain.categories import Category
from pushwarden.services.consent.domain.consent import PUSH, judge_category
from pushwarden.services.consent.handlers.common import ConsentDeps
from pushwarden.services.consent.storage.uow import ConsentUnitOfWork

DEFAULT_WINDOW = timedelta(days=30)
# The longest Duration the protobuf well-known type allows (10,000 years).
MAX_WINDOW_SECONDS = 315_576_000_000
_EARLIEST = datetime.min.replace(tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class HealthQuery:
    """A checked GetAudienceHealth request."""

    app_id: str
    window: timedelta

    @classmethod
    def from_proto(cls, request: messages_pb2.GetAudienceHealthRequest) -> HealthQuery:
        """Check a request; raises InvalidArgument naming every bad field."""
        problems = Violations()
        problems.caller_id("app_id", request.app_id)
        window = DEFAULT_WINDOW
        if request.HasField("window"):
            given = request.window
            nanos = given.seconds * 1_000_000_000 + given.nanos
            if nanos <= 0:
                problems.add("window", "must be positive")
            elif given.seconds > MAX_WINDOW_SECONDS or not -1e9 < given.nanos < 1e9:
                problems.add("window", "not a valid duration (at most 10,000 years)")
            else:
                # timedelta keeps microseconds: round up so that no window becomes empty.
                window = timedelta(microseconds=-(-nanos // 1000))
        problems.raise_if_any("the audience-health request is invalid")
        return cls(request.app_id, window)


def _rate(part: int, whole: int) -> float:
    return part / whole if whole else 0.0


def _duration(window: timedelta) -> Duration:
    duration = Duration()
    duration.FromTimedelta(window)
    return duration


class HealthHandlers:
    """Audience health."""

    def __init__(self, deps: ConsentDeps) -> None:
        self._deps = deps

    async def audience_health(self, query: HealthQuery) -> messages_pb2.GetAudienceHealthResponse:
        """The app's device opt-in figures, universal opt-outs in the window ending now,
        and per category (ordered by id) the users it may reach and its opt-outs."""
        deps = self._deps
        now = deps.clock.now()
        since = now - query.window if now - _EARLIEST > query.window else _EARLIEST
        async with deps.uow(read_only=True, snapshot=True) as work:
            devices = await work.health.device_counts(query.app_id)
            opt_outs = await work.health.opt_outs(query.app_id, since, now)
            categories = await work.categories.all_of_app(query.app_id)
            reachable, allowed = await self._allowed_users(work, query.app_id, categories)
        return messages_pb2.GetAudienceHealthResponse(
            devices_total=devices.active,
            devices_opted_in=devices.active_allowing_push,
            device_opt_in_rate=_rate(devices.active_allowing_push, devices.active),
            devices_invalid=devices.invalid,
            users_total=devices.users_with_active,
            opt_outs_in_window=opt_outs.universal,
            window=_duration(query.window),
            categories=[
                messages_pb2.CategoryHealth(
                    category_id=category.category_id,
                    kind=category.kind.to_proto(),
                    users_allowed=allowed[category.category_id],
                    opt_in_rate=_rate(allowed[category.category_id], reachable),
                    opt_outs_in_window=(
                        opt_outs.by_category.get(category.category_id, 0) + opt_outs.universal
                    ),
                )
                for category in categories
            ],
        )

    async def _allowed_users(
        self, work: ConsentUnitOfWork, app_id: str, categories: list[Category]
    ) -> tuple[int, dict[str, int]]:
        """Users with a usable device, and how many of them each category allows."""
        pseudonyms = self._deps.pseudonyms
        reachable = 0
        allowed = {category.category_id: 0 for category in categories}
        async for users in work.health.users_with_usable_device(app_id):
            reachable += len(users)
            if not categories:
                continue
            subjects = {user: pseudonyms.subject(app_id, user) for user in users}
            choices = await work.choices.of_users(app_id, users)
            suppressions = await work.suppressions.of_subjects(app_id, list(subjects.values()))
            for user in users:
                mine = choices.get(user, {})
                record = suppressions.get(subjects[user])
                suppressed = record is not None and record.active
                for category in categories:
                    if judge_category(mine, category, PUSH, suppressed=suppressed).allowed:
                        allowed[category.category_id] += 1
        return reachable, allowed
