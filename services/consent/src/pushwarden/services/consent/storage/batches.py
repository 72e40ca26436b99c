"""A whole batch of ids as ONE bound parameter: ``column IN <the batch>``.

An expanding ``IN (:id_1, ..., :id_1000)`` is rendered afresh for every execution (a
thousand placeholders named, a thousand parameters bound) and, on PostgreSQL, parsed and
planned as a thousand-element list each time. Eligibility reads several tables per batch
of up to 1,000 users, so it binds the batch once, as one JSON array of strings (encoded
in C by the json module; the database decodes it):

- PostgreSQL: ``column = ANY(ARRAY(SELECT json_array_elements_text(CAST(:batch AS json))))``
  (an array bound through the driver would be quoted element by element in Python);
- SQLite: ``column IN (SELECT value FROM json_each(:batch))`` (SQLite's JSON functions
  are built in since 3.38).

Both probe the column's index once per id, exactly as the expanded list does.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Boolean, Dialect, Text, bindparam
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import BindParameter, ColumnElement
from sqlalchemy.sql.visitors import InternalTraversal
from sqlalchemy.types import TypeDecorator


class IdBatch(TypeDecorator[Sequence[str]]):
    """A list of string ids bound as one JSON array."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: Sequence[str] | None, dialect: Dialect) -> str:
        """The ids as a JSON array."""
        if value is None:
            raise ValueError("an id batch must not be None")
        return json.dumps(list(value))

    def process_result_value(self, value: Any, dialect: Dialect) -> Sequence[str]:
        """Never read back (the type only binds)."""
        raise NotImplementedError("IdBatch is for parameters only")


class InBatch(ColumnElement[bool]):
    """``column`` is one of the ids bound to the parameter ``name`` (see the module)."""

    inherit_cache = True
    type = Boolean()
    _is_implicitly_boolean = True  # a predicate: no "= 1" appended where booleans are ints
    _traverse_internals = [  # noqa: RUF012 (SQLAlchemy's own declaration: a list)
        ("column", InternalTraversal.dp_clauseelement),
        ("batch", InternalTraversal.dp_clauseelement),
    ]

    def __init__(self, column: ColumnElement[Any], name: str) -> None:
        self.column = column
        self.batch: BindParameter[Sequence[str]] = bindparam(name, type_=IdBatch())


def in_batch(column: Any, name: str) -> InBatch:
    """``column IN <the ids bound to name>``, for a statement built once."""
    return InBatch(column, name)


@compiles(InBatch)
def _in_json_array(element: InBatch, compiler: SQLCompiler, **kw: Any) -> str:
    column = compiler.process(element.column, **kw)
    batch = compiler.process(element.batch, **kw)
    return f"{column} IN (SELECT value FROM json_each({batch}))"


@compiles(InBatch, "postgresql")
def _any_of_array(element: InBatch, compiler: SQLCompiler, **kw: Any) -> str:
    column = compiler.process(element.column, **kw)
    batch = compiler.process(element.batch, **kw)
    return f"{column} = ANY(ARRAY(SELECT json_array_elements_text(CAST({batch} AS json))))"
