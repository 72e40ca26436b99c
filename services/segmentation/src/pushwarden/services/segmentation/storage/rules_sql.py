"""Rule trees compiled to SQL (SQLAlchemy Core), evaluated inside the database.

A segment is a boolean condition on one user id, correlated with the set of users
segmentation knows (a profile, an event or a list membership): ``all`` / ``any`` /
``not`` become AND / OR / NOT, every predicate an EXISTS (or a COUNT) over the
indexed tables of that user. Since the outer query ranges over known users only, an
unknown user matches nothing, inside ``not`` too. Nothing is loaded into Python but the
page of ids asked for (or one count).

Strings compare by code point on both backends: PostgreSQL is told ``COLLATE "C"``
wherever order matters (range operators, paging), SQLite's default is binary already.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any as AnyType

from sqlalchemy import (
    ColumnElement,
    Select,
    and_,
    false,
    func,
    literal,
    not_,
    or_,
    select,
    true,
    union,
)
from sqlalchemy.orm import aliased
from sqlalchemy.sql.selectable import Subquery

from pushwarden.services.segmentation.domain.rules import (
    All,
    Any,
    Attribute,
    Between,
    EventCount,
    Filter,
    InList,
    InSegment,
    Node,
    Not,
    Op,
    Recency,
    Within,
)
from pushwarden.services.segmentation.domain.values import Kind, Value, encode_list
from pushwarden.services.segmentation.models import (
    EventPropertyItemRow,
    EventPropertyRow,
    EventRow,
    ListMemberRow,
    ProfileAttributeItemRow,
    ProfileAttributeRow,
    ProfileRow,
)

REMOVED = "REMOVED"


@dataclass(frozen=True, slots=True)
class Scope:
    """What a rule is evaluated against: the app, the instant, the backend and the
    rules of every segment the tree references (directly or not)."""

    app_id: str
    as_of: datetime
    dialect: str
    segments: Mapping[str, Node]


def ordered(column: ColumnElement[str], dialect: str) -> ColumnElement[str]:
    """``column`` compared by code point (byte order of UTF-8)."""
    return column.collate("C") if dialect == "postgresql" else column


def _operand(value: Value) -> object:
    return encode_list(value.items()) if value.kind is Kind.STRING_LIST else value.value


def _typed_column(table: AnyType, kind: Kind) -> ColumnElement[AnyType]:
    if kind is Kind.NUMBER:
        return table.number_value  # type: ignore[no-any-return]
    if kind is Kind.BOOL:
        return table.bool_value  # type: ignore[no-any-return]
    if kind is Kind.TIMESTAMP:
        return table.timestamp_value  # type: ignore[no-any-return]
    return table.string_value  # type: ignore[no-any-return]


def _contains_text(
    column: ColumnElement[AnyType], needle: str, dialect: str
) -> ColumnElement[bool]:
    # LIKE would treat % and _ as wildcards and, on SQLite, ignore ASCII case.
    position = func.strpos if dialect == "postgresql" else func.instr
    return position(column, needle) > 0


def filter_condition(
    flt: Filter,
    table: AnyType,
    list_contains: Callable[[str], ColumnElement[bool]],
    dialect: str,
) -> ColumnElement[bool]:
    """The condition ``flt`` puts on one typed-value row ``table`` (an alias of the
    attributes or the event properties); ``list_contains(item)`` tests the row's
    string-list items."""
    if flt.op is Op.EXISTS:
        return table.kind != REMOVED  # type: ignore[no-any-return]
    kind = flt.operands[0].kind
    column = _typed_column(table, kind)
    operand = _operand(flt.operands[0])
    if flt.op is Op.CONTAINS:
        needle = str(operand)
        return or_(
            and_(table.kind == Kind.STRING.value, _contains_text(column, needle, dialect)),
            and_(table.kind == Kind.STRING_LIST.value, list_contains(needle)),
        )
    if flt.op is Op.PREFIX:
        prefix = str(operand)
        return and_(
            table.kind == Kind.STRING.value,
            func.substr(column, 1, len(prefix)) == literal(prefix),
        )
    if kind is Kind.STRING and flt.op in (Op.GT, Op.GTE, Op.LT, Op.LTE):
        column = ordered(column, dialect)
    comparison: ColumnElement[bool]
    if flt.op is Op.EQ:
        comparison = column == operand
    elif flt.op is Op.NEQ:
        comparison = column != operand
    elif flt.op is Op.GT:
        comparison = column > operand
    elif flt.op is Op.GTE:
        comparison = column >= operand
    elif flt.op is Op.LT:
        comparison = column < operand
    elif flt.op is Op.LTE:
        comparison = column <= operand
    else:  # IN
        comparison = column.in_([_operand(value) for value in flt.operands])
    return and_(table.kind == kind.value, comparison)


class _Compiler:
    def __init__(self, scope: Scope) -> None:
        self.scope = scope

    def node(
        self, node: Node, user: ColumnElement[str], seen: frozenset[str]
    ) -> ColumnElement[bool]:
        if isinstance(node, All):
            return and_(true(), *(self.node(child, user, seen) for child in node.children))
        if isinstance(node, Any):
            return or_(false(), *(self.node(child, user, seen) for child in node.children))
        if isinstance(node, Not):
            return not_(self.node(node.child, user, seen))
        if isinstance(node, Attribute):
            return self.attribute(node.filter, user)
        if isinstance(node, EventCount):
            return self.event_count(node, user)
        if isinstance(node, Recency):
            return self.recency(node, user)
        if isinstance(node, InList):
            member = aliased(ListMemberRow)
            return (
                select(literal(1))
                .where(
                    member.app_id == self.scope.app_id,
                    member.list_id == node.list_id,
                    member.user_id == user,
                    member.present.is_(True),
                )
                .exists()
            )
        assert isinstance(node, InSegment)
        referenced = self.scope.segments.get(node.segment_id)
        if referenced is None or node.segment_id in seen:
            # Creation refuses cycles and unknown segments; never widen if one slipped by.
            return false()
        return self.node(referenced, user, seen | {node.segment_id})

    def attribute(self, flt: Filter, user: ColumnElement[str]) -> ColumnElement[bool]:
        row = aliased(ProfileAttributeRow)

        def list_contains(item: str) -> ColumnElement[bool]:
            entry = aliased(ProfileAttributeItemRow)
            return (
                select(literal(1))
                .where(
                    entry.app_id == row.app_id,
                    entry.user_id == row.user_id,
                    entry.name == row.name,
                    entry.value == item,
                )
                .exists()
            )

        return (
            select(literal(1))
            .where(
                row.app_id == self.scope.app_id,
                row.user_id == user,
                row.name == flt.name,
                filter_condition(flt, row, list_contains, self.scope.dialect),
            )
            .exists()
        )

    def _property(self, flt: Filter, event: AnyType) -> ColumnElement[bool]:
        row = aliased(EventPropertyRow)

        def list_contains(item: str) -> ColumnElement[bool]:
            entry = aliased(EventPropertyItemRow)
            return (
                select(literal(1))
                .where(entry.sequence == row.sequence, entry.name == row.name, entry.value == item)
                .exists()
            )

        return (
            select(literal(1))
            .where(
                row.sequence == event.sequence,
                row.name == flt.name,
                filter_condition(flt, row, list_contains, self.scope.dialect),
            )
            .exists()
        )

    def _events(
        self, event: AnyType, user: ColumnElement[str], name: str, filters: Sequence[Filter]
    ) -> list[ColumnElement[bool]]:
        return [
            event.app_id == self.scope.app_id,
            event.user_id == user,
            event.name == name,
            event.occurred_at < self.scope.as_of,
            *(self._property(flt, event) for flt in filters),
        ]

    def event_count(self, node: EventCount, user: ColumnElement[str]) -> ColumnElement[bool]:
        event = aliased(EventRow)
        conditions = self._events(event, user, node.name, node.filters)
        if isinstance(node.window, Within):
            conditions.append(event.occurred_at >= self.scope.as_of - node.window.length)
        elif isinstance(node.window, Between):
            conditions += [
                event.occurred_at >= node.window.start,
                event.occurred_at < node.window.end,
            ]
        did: ColumnElement[bool]
        if node.min_count == 1 and node.max_count is None:
            did = select(literal(1)).where(*conditions).exists()
        else:
            count = select(func.count()).select_from(event).where(*conditions).scalar_subquery()
            did = count >= node.min_count
            if node.max_count is not None:
                did = and_(did, count <= node.max_count)
        return did if node.did else not_(did)

    def recency(self, node: Recency, user: ColumnElement[str]) -> ColumnElement[bool]:
        scope = self.scope
        if node.instant is not None:
            reference = node.instant
        else:
            assert node.ago is not None
            reference = scope.as_of - node.ago
        if node.attribute is not None:
            row = aliased(ProfileAttributeRow)
            stamped = [
                row.app_id == scope.app_id,
                row.user_id == user,
                row.name == node.attribute,
                row.kind == Kind.TIMESTAMP.value,
            ]
            if not node.before:
                return select(literal(1)).where(*stamped, row.timestamp_value >= reference).exists()
            earlier = select(literal(1)).where(*stamped, row.timestamp_value < reference).exists()
            if node.include_never:
                return or_(earlier, not_(select(literal(1)).where(*stamped).exists()))
            return earlier
        assert node.event_name is not None
        event = aliased(EventRow)
        conditions = self._events(event, user, node.event_name, node.filters)
        since = select(literal(1)).where(*conditions, event.occurred_at >= reference).exists()
        if not node.before:
            return since
        if node.include_never:
            return not_(since)
        ever = aliased(EventRow)
        did_ever = (
            select(literal(1))
            .where(*self._events(ever, user, node.event_name, node.filters))
            .exists()
        )
        return and_(did_ever, not_(since))


def condition(root: Node, user: ColumnElement[str], scope: Scope) -> ColumnElement[bool]:
    """Whether the user in ``user`` matches ``root``."""
    return _Compiler(scope).node(root, user, frozenset())


def known_users(
    app_id: str,
    dialect: str,
    *,
    only: Sequence[str] | None = None,
    after: str | None = None,
    upto: str | None = None,
) -> Subquery:
    """The users segmentation knows in the app (one column, ``user_id``), optionally
    among ``only``, after ``after`` and up to ``upto`` (inclusive) in code-point
    order."""

    def branch(column: AnyType, *where: ColumnElement[bool]) -> Select[str]:
        query = select(column.label("user_id")).where(*where)
        if only is not None:
            query = query.where(column.in_(list(only)))
        if after is not None:
            query = query.where(ordered(column, dialect) > after)
        if upto is not None:
            query = query.where(ordered(column, dialect) <= upto)
        return query

    return union(
        branch(ProfileRow.user_id, ProfileRow.app_id == app_id),
        branch(EventRow.user_id, EventRow.app_id == app_id),
        branch(
            ListMemberRow.user_id,
            ListMemberRow.app_id == app_id,
            ListMemberRow.present.is_(True),
        ),
    ).subquery("known")


def window_ends(app_id: str, dialect: str, after: str | None, size: int) -> list[Select[str]]:
    """Per source of known users (profiles, events, list memberships), the ``size``-th
    distinct user id after ``after`` in code-point order (no row when the source has
    fewer). Each walks ``size`` ids of an index ordered by (app, user id): on
    PostgreSQL the ``COLLATE "C"`` ones, so that the walk is in code-point order."""

    def end(column: AnyType, *where: ColumnElement[bool]) -> Select[str]:
        key = ordered(column, dialect)
        query = select(key.label("user_id")).where(*where)
        if after is not None:
            query = query.where(key > after)
        # GROUP BY rather than DISTINCT: both backends walk the index in order and
        # collapse equal neighbours, without sorting or hashing what they read.
        return query.group_by(key).order_by(key).offset(size - 1).limit(1)

    return [
        end(ProfileRow.user_id, ProfileRow.app_id == app_id),
        end(EventRow.user_id, EventRow.app_id == app_id),
        end(ListMemberRow.user_id, ListMemberRow.app_id == app_id, ListMemberRow.present.is_(True)),
    ]


def members_page(
    root: Node, scope: Scope, after: str | None, limit: int, upto: str | None = None
) -> Select[str]:
    """Up to ``limit`` members after ``after`` (and up to ``upto``, inclusive), in
    code-point order."""
    users = known_users(scope.app_id, scope.dialect, after=after, upto=upto)
    return (
        select(users.c.user_id)
        .where(condition(root, users.c.user_id, scope))
        .order_by(ordered(users.c.user_id, scope.dialect))
        .limit(limit)
    )


def members_count(root: Node, scope: Scope) -> Select[int]:
    """How many users match."""
    users = known_users(scope.app_id, scope.dialect)
    return select(func.count()).select_from(users).where(condition(root, users.c.user_id, scope))


def members_among(root: Node, scope: Scope, user_ids: Sequence[str]) -> Select[str]:
    """Which of ``user_ids`` match."""
    users = known_users(scope.app_id, scope.dialect, only=user_ids)
    return select(users.c.user_id).where(condition(root, users.c.user_id, scope))


def known_among(app_id: str, dialect: str, user_ids: Sequence[str]) -> Select[str]:
    """Which of ``user_ids`` segmentation knows."""
    users = known_users(app_id, dialect, only=user_ids)
    return select(users.c.user_id)
