"""Bulk inserts for the hot path: COPY on PostgreSQL, a plain driver executemany on SQLite.

Rows are dicts keyed by column name, with the values the model columns take (aware datetimes,
dicts for JSON); the conversion below is what the column types would do, once per value instead
of through SQLAlchemy's per-row parameter processing."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from typing import Any

from psycopg.types.json import Json
from sqlalchemy import JSON, Connection, Table, insert

COPY_FROM = 20  # fewer rows go in as one INSERT: COPY costs more round trips than it saves
SQLITE_DRIVER_FROM = 2  # one row: the cached SQLAlchemy statement is as fast


def use_copy(conn: Connection, count: int) -> bool:
    return conn.dialect.name == "postgresql" and count >= COPY_FROM


def bulk_insert(conn: Connection, table: Table, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    if conn.dialect.name == "sqlite" and len(rows) >= SQLITE_DRIVER_FROM:
        _sqlite_executemany(conn, table, rows)
        return
    if not use_copy(conn, len(rows)):
        conn.execute(insert(table), rows)
        return
    columns = list(rows[0])
    json_columns = {name for name in columns if isinstance(table.c[name].type, JSON)}
    quoted = ", ".join(f'"{name}"' for name in columns)
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    with cursor.copy(f'COPY "{table.name}" ({quoted}) FROM STDIN') as copy:
        for row in rows:
            copy.write_row([_value(row[name], name in json_columns) for name in columns])


def _value(value: Any, is_json: bool) -> Any:
    if value is None:
        return None
    if is_json:
        return Json(value)
    if isinstance(value, datetime):
        return value.astimezone(UTC).replace(tzinfo=None)
    return value


def _sqlite_executemany(conn: Connection, table: Table, rows: list[dict[str, Any]]) -> None:
    """One executemany of plain tuples, with the values SQLAlchemy's SQLite types would store
    (naive UTC 'YYYY-MM-DD HH:MM:SS.ffffff' text, ISO dates, JSON text; Python-side column
    defaults for the columns the rows leave out)."""
    columns = list(rows[0])
    defaults = [
        (c.name, c.default.arg)
        for c in table.c
        if c.name not in rows[0] and c.default is not None and not c.primary_key
    ]
    names = columns + [name for name, _ in defaults]
    json_null = {
        name: not table.c[name].type.none_as_null
        for name in names
        if isinstance(table.c[name].type, JSON)
    }
    sql = (
        f'INSERT INTO "{table.name}" ({", ".join(f"{chr(34)}{n}{chr(34)}" for n in names)}) '
        f"VALUES ({', '.join('?' for _ in names)})"
    )
    params = []
    for row in rows:
        values = [_sqlite_value(row[name], json_null.get(name)) for name in columns]
        for name, arg in defaults:
            values.append(_sqlite_value(arg(None) if callable(arg) else arg, json_null.get(name)))
        params.append(tuple(values))
    conn.exec_driver_sql(sql, params)


def _sqlite_value(value: Any, json_null: bool | None) -> Any:
    if json_null is not None:  # a JSON column; json_null: None is stored as JSON null
        if value is None:
            return "null" if json_null else None
        return json.dumps(value)
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")
    if isinstance(value, date):
        return value.isoformat()
    return value
