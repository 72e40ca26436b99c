"""The statistics queries: every figure is aggregated by the database (GROUP BY, window
functions for medians), so a million-send campaign comes back as a few rows per variant.

Time arithmetic is the one dialect difference: PostgreSQL stores ``timestamptz`` and adds
intervals; SQLite stores ISO text, compared as text for order and through ``julianday``
for sums. Both read the same instants.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Integer,
    and_,
    case,
    cast,
    distinct,
    extract,
    func,
    literal,
    select,
)
from sqlalchemy.ext.asyncio import AsyncSession

from pushwarden.services.delivery.domain.engagement import EngagementKind, Subject, SubjectKind
from pushwarden.services.delivery.domain.sends import AttemptOutcome, DeviceStatus, SendStatus
from pushwarden.services.delivery.domain.stats import (
    AssignmentFigures,
    OpenHistograms,
    SendFigures,
    SubjectFigures,
)
from pushwarden.services.delivery.models import (
    AssignmentRow,
    AttemptRow,
    EngagementRow,
    OptOutRow,
    SendDeviceRow,
    SendRow,
)

OPT_OUT_HORIZON = timedelta(hours=24)
_FAILED = (SendStatus.FAILED.value, SendStatus.DEAD_LETTERED.value)


class StatsRepository:
    """Aggregations for GetCampaignStats and GetOpenHours."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    @property
    def _postgres(self) -> bool:
        bind = self._session.bind
        return bind is not None and bind.dialect.name == "postgresql"

    def _epoch(self, column: Any) -> ColumnElement[Any]:
        """Seconds since 1970 of a stored instant."""
        if self._postgres:
            return extract("epoch", column)
        return (func.julianday(column) - 2440587.5) * 86400.0

    def _before_end(self, instant: Any, start: Any, span: timedelta) -> ColumnElement[bool]:
        """``instant < start + span``."""
        ends: ColumnElement[bool]
        if self._postgres:
            ends = instant < start + literal(span)
        else:
            ends = self._epoch(instant) < self._epoch(start) + span.total_seconds()
        return ends

    def _utc_hour(self, column: Any) -> ColumnElement[int]:
        if self._postgres:
            return cast(extract("hour", func.timezone("UTC", column)), Integer)
        return cast(func.strftime("%H", column), Integer)

    async def subject_figures(
        self, app_id: str, subject: Subject, window: timedelta
    ) -> SubjectFigures:
        """Every figure of a campaign (per variant and whole) or trigger."""
        sends: dict[str | None, SendFigures] = {}
        is_subject = _sends_of(app_id, subject)
        for grouped in (True, False):
            group = SendRow.variant_id if grouped else literal("")

            def figures(key: str, grouped: bool = grouped) -> SendFigures:
                return sends.setdefault(key if grouped else None, SendFigures())

            statuses = await self._session.execute(
                select(group, SendRow.status, func.count())
                .where(is_subject)
                .group_by(group, SendRow.status)
            )
            for key, status, count in statuses:
                figures(key).statuses[status] = count
            if not grouped and not sends:
                break  # no send at all
            reasons = await self._session.execute(
                select(group, SendRow.failure_reason, func.count())
                .where(is_subject, SendRow.status.in_(_FAILED))
                .group_by(group, SendRow.failure_reason)
            )
            for key, reason, count in reasons:
                figures(key).failed_by_reason[reason] = count
            rows = await self._session.execute(
                select(group, func.count())
                .select_from(SendDeviceRow)
                .join(
                    SendRow,
                    and_(
                        SendRow.app_id == SendDeviceRow.app_id,
                        SendRow.send_id == SendDeviceRow.send_id,
                    ),
                )
                .where(is_subject, SendDeviceRow.status == DeviceStatus.TOKEN_DEAD.value)
                .group_by(group)
            )
            for key, count in rows:
                figures(key).tokens_invalidated = count
            engaged = await self._session.execute(
                select(
                    group,
                    *(
                        func.count(
                            distinct(
                                case((EngagementRow.kind == kind.value, EngagementRow.send_id))
                            )
                        )
                        for kind in (
                            EngagementKind.DELIVERED,
                            EngagementKind.OPENED,
                            EngagementKind.DISMISSED,
                        )
                    ),
                )
                .select_from(EngagementRow)
                .join(
                    SendRow,
                    and_(
                        SendRow.app_id == EngagementRow.app_id,
                        SendRow.send_id == EngagementRow.send_id,
                    ),
                )
                .where(is_subject)
                .group_by(group)
            )
            for row in engaged.all():
                found = figures(row[0])
                found.device_delivered, found.opened, found.dismissed = row[1], row[2], row[3]
            for key, median in await self._median_time_to_open(is_subject, grouped):
                figures(key).median_time_to_open_s = float(median)
            for key, count in await self._opt_outs(is_subject, grouped):
                figures(key).opt_outs_within_24h = count
        treated, holdout = await self._assignments(app_id, subject, window)
        return SubjectFigures(sends=sends, treated=treated, holdout=holdout)

    async def _median_time_to_open(
        self, is_subject: ColumnElement[bool], grouped: bool
    ) -> Sequence[Any]:
        """Per group: the median over opened sends of (first open - first provider
        acceptance), in seconds, an early device clock counting as 0."""
        # Both restricted to the subject's sends before grouping (indexes by send).
        first_open = (
            select(EngagementRow.send_id, func.min(EngagementRow.occurred_at).label("at"))
            .join(
                SendRow,
                and_(
                    SendRow.app_id == EngagementRow.app_id,
                    SendRow.send_id == EngagementRow.send_id,
                ),
            )
            .where(is_subject, EngagementRow.kind == EngagementKind.OPENED.value)
            .group_by(EngagementRow.send_id)
            .subquery()
        )
        accepted = (
            select(AttemptRow.send_id, func.min(AttemptRow.finished_at).label("at"))
            .join(
                SendRow,
                and_(SendRow.app_id == AttemptRow.app_id, SendRow.send_id == AttemptRow.send_id),
            )
            .where(is_subject, AttemptRow.outcome == AttemptOutcome.DELIVERED.value)
            .group_by(AttemptRow.send_id)
            .subquery()
        )
        gap = self._epoch(first_open.c.at) - self._epoch(accepted.c.at)
        group = SendRow.variant_id if grouped else literal("")
        per_send = (
            select(
                group.label("g"),
                case((gap < 0, 0.0), else_=gap).label("s"),
            )
            .select_from(SendRow)
            .join(first_open, first_open.c.send_id == SendRow.send_id)
            .join(accepted, accepted.c.send_id == SendRow.send_id)
            .where(is_subject)
            .subquery()
        )
        ranked = select(
            per_send.c.g,
            per_send.c.s,
            func.row_number().over(partition_by=per_send.c.g, order_by=per_send.c.s).label("rn"),
            func.count().over(partition_by=per_send.c.g).label("n"),
        ).subquery()
        middle = (ranked.c.n + 1) // 2, (ranked.c.n + 2) // 2
        rows = await self._session.execute(
            select(ranked.c.g, func.avg(ranked.c.s))
            .where(ranked.c.rn.in_(middle))
            .group_by(ranked.c.g)
        )
        return rows.all()

    async def _opt_outs(self, is_subject: ColumnElement[bool], grouped: bool) -> Sequence[Any]:
        """Per group: users with a marketing opt-out within 24 h after a delivered send."""
        group = SendRow.variant_id if grouped else literal("")
        rows = await self._session.execute(
            select(group, func.count(distinct(SendRow.user_id)))
            .select_from(SendRow)
            .join(
                OptOutRow,
                and_(
                    OptOutRow.app_id == SendRow.app_id,
                    OptOutRow.user_id == SendRow.user_id,
                    OptOutRow.opted_out_at >= SendRow.completed_at,
                    self._before_end(OptOutRow.opted_out_at, SendRow.completed_at, OPT_OUT_HORIZON),
                ),
            )
            .where(is_subject, SendRow.status == SendStatus.DELIVERED.value)
            .group_by(group)
        )
        return rows.all()

    async def _assignments(
        self, app_id: str, subject: Subject, window: timedelta
    ) -> tuple[dict[str, AssignmentFigures], AssignmentFigures | None]:
        """Per variant and for the holdout: assignments, those followed by a conversion
        of their user within the window after ``assigned_at`` (intent to treat), and the
        distinct conversion events so attributed with their value (an event in the
        windows of two firings of a trigger counts once)."""
        attributed = and_(
            EngagementRow.app_id == AssignmentRow.app_id,
            EngagementRow.user_id == AssignmentRow.user_id,
            EngagementRow.kind == EngagementKind.CONVERTED.value,
            EngagementRow.occurred_at >= AssignmentRow.assigned_at,
            self._before_end(EngagementRow.occurred_at, AssignmentRow.assigned_at, window),
        )
        of_subject = and_(
            AssignmentRow.app_id == app_id,
            AssignmentRow.subject_kind == subject.kind.value,
            AssignmentRow.subject_id == subject.subject_id,
        )
        groups = (AssignmentRow.holdout, AssignmentRow.variant_id)
        converted_key = case((EngagementRow.event_id.is_not(None), AssignmentRow.assignment_key))
        assigned = await self._session.execute(
            select(
                *groups,
                func.count(distinct(AssignmentRow.assignment_key)),
                func.count(distinct(converted_key)),
            )
            .select_from(AssignmentRow)
            .outerjoin(EngagementRow, attributed)
            .where(of_subject)
            .group_by(*groups)
        )
        figures: dict[tuple[bool, str], AssignmentFigures] = {
            (bool(is_holdout), variant_id): AssignmentFigures(targeted, converted)
            for is_holdout, variant_id, targeted, converted in assigned
        }
        events = (
            select(*groups, EngagementRow.event_id, EngagementRow.value)
            .distinct()
            .select_from(AssignmentRow)
            .join(EngagementRow, attributed)
            .where(of_subject)
            .subquery()
        )
        conversions = await self._session.execute(
            select(
                events.c.holdout,
                events.c.variant_id,
                func.count(),
                func.coalesce(func.sum(events.c.value), 0.0),
            ).group_by(events.c.holdout, events.c.variant_id)
        )
        for is_holdout, variant_id, count, value in conversions:
            found = figures[(bool(is_holdout), variant_id)]
            found.conversions, found.conversion_value = count, float(value)
        treated = {variant: found for (held, variant), found in figures.items() if not held}
        return treated, figures.get((True, ""))

    async def open_histograms(
        self, app_id: str, user_ids: Sequence[str], since: datetime
    ) -> OpenHistograms:
        """Each user's opens by UTC hour, and the app's by UTC and by local hour: one
        per send, its first open since ``since`` (ranked within the lookback, so the
        query reads only the lookback's range of the index)."""
        first_opens = select(
            EngagementRow.user_id,
            EngagementRow.occurred_at,
            EngagementRow.local_hour,
            func.row_number()
            .over(
                partition_by=EngagementRow.send_id,
                order_by=(EngagementRow.occurred_at, EngagementRow.event_id),
            )
            .label("rn"),
        ).where(
            EngagementRow.app_id == app_id,
            EngagementRow.kind == EngagementKind.OPENED.value,
            EngagementRow.occurred_at >= since,
        )
        users = first_opens.where(EngagementRow.user_id.in_(list(user_ids))).subquery()
        everyone = first_opens.subquery()
        by_user: dict[str, list[int]] = {user_id: [0] * 24 for user_id in user_ids}
        hour = self._utc_hour(users.c.occurred_at)
        rows = await self._session.execute(
            select(users.c.user_id, hour, func.count())
            .where(users.c.rn == 1)
            .group_by(users.c.user_id, hour)
        )
        for user_id, at_hour, count in rows:
            by_user[user_id][at_hour] = count
        app_utc = [0] * 24
        hour = self._utc_hour(everyone.c.occurred_at)
        rows = await self._session.execute(
            select(hour, func.count()).where(everyone.c.rn == 1).group_by(hour)
        )
        for at_hour, count in rows:
            app_utc[at_hour] = count
        app_local = [0] * 24
        rows = await self._session.execute(
            select(everyone.c.local_hour, func.count())
            .where(everyone.c.rn == 1, everyone.c.local_hour.is_not(None))
            .group_by(everyone.c.local_hour)
        )
        for at_hour, count in rows:
            app_local[at_hour] = count
        return OpenHistograms(by_user, app_utc, app_local)


def _sends_of(app_id: str, subject: Subject) -> ColumnElement[bool]:
    column = SendRow.campaign_id if subject.kind is SubjectKind.CAMPAIGN else SendRow.trigger_id
    return and_(SendRow.app_id == app_id, column == subject.subject_id)
