"""``pairs_in``: the rows of a set of (first, second) keys, through the index on both
columns on SQLite (a row-value IN list is a scan of the whole table there), the same
rows as the keys name, across several first values and for no keys at all."""

from __future__ import annotations

from sqlalchemy import Column, MetaData, String, Table, create_engine, insert, select

from pushwarden.runtime.db import pairs_in

metadata = MetaData()
sends = Table(
    "sends",
    metadata,
    Column("app_id", String, primary_key=True),
    Column("send_id", String, primary_key=True),
)


def test_the_keys_rows_come_through_the_primary_key() -> None:
    engine = create_engine("sqlite://")
    metadata.create_all(engine)
    rows = [
        {"app_id": app, "send_id": f"s{n}"} for app in ("shop", "news", "bank") for n in range(50)
    ]
    keys = [("shop", "s1"), ("news", "s1"), ("shop", "s49"), ("bank", "s7"), ("bank", "nope")]
    with engine.begin() as connection:
        connection.execute(insert(sends), rows)

        def chosen(pairs: list[tuple[str, str]]) -> set[tuple[str, str]]:
            query = select(sends.c.app_id, sends.c.send_id).where(
                pairs_in(sends.c.app_id, sends.c.send_id, pairs)
            )
            return {(a, s) for a, s in connection.execute(query)}

        assert chosen(keys) == set(keys) - {("bank", "nope")}
        assert chosen([("shop", "s3")]) == {("shop", "s3")}
        assert chosen([]) == set()
        query = select(sends.c.send_id).where(pairs_in(sends.c.app_id, sends.c.send_id, keys[:3]))
        compiled = query.compile(engine, compile_kwargs={"literal_binds": True})
        plan = [str(row) for row in connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {compiled}")]
    assert not any("SCAN sends" in line for line in plan), plan
    assert any("(app_id=? AND send_id=?)" in line for line in plan), plan
