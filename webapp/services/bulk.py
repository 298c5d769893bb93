"""Bulk inserts for the hot path: COPY on PostgreSQL, a plain driver executemany on SQLite.

Rows are dicts keyed by column name, with the values the model columns take (aware datetimes,
dicts for JSON); the conversion below is what the column types would do, once per value instead
of through SQLAlchemy's per-row parameter processing."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime
from typing import Any

import psycopg
from psycopg.types.json import Json
from sqlalchemy import JSON, ColumnDefault, Connection, Table, insert
from sqlalchemy.exc import DBAPIError

COPY_FROM = 20  # fewer rows go in as one INSERT: COPY costs more round trips than it saves
SQLITE_DRIVER_FROM = 2  # one row: the cached SQLAlchemy statement is as fast


def use_copy(conn: Connection, count: int) -> bool:
    return conn.dialect.name == "postgresql" and count >= COPY_FROM


def bulk_insert(conn: Connection, table: Table, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    if conn.dialect.name == "sqlite" and len(rows) >= SQLITE_DRIVER_FROM:
        _driver_insert(conn, table, rows, "?", _sqlite_value)
        return
    if conn.dialect.name == "postgresql" and not use_copy(conn, len(rows)):
        # No implicit RETURNING of the new id (nobody reads it), so it can be pipelined.
        _driver_insert(conn, table, rows, "%s", _pg_value)
        return
    if not use_copy(conn, len(rows)):
        conn.execute(insert(table), rows)
        return
    names, params = _tuples(table, rows, _pg_value)
    quoted = ", ".join(f'"{n}"' for n in names)
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    with cursor.copy(f'COPY "{table.name}" ({quoted}) FROM STDIN') as copy:
        for values in params:
            copy.write_row(values)


@contextmanager
def pipelined(conn: Connection, *, enabled: bool = True) -> Iterator[None]:
    """On PostgreSQL, send the statements of the block in psycopg's pipeline mode: one round trip
    for all of them. Only for statements whose results are not read (SQLAlchemy cannot read a
    result before the pipeline syncs). Errors surface at the end of the block, wrapped as
    SQLAlchemy would wrap them (IntegrityError, OperationalError...), so that the transaction's
    retry rules still apply."""
    if not enabled or conn.dialect.name != "postgresql":
        yield
        return
    driver = conn.connection.driver_connection
    try:
        with driver.pipeline():  # type: ignore[union-attr]
            yield
    except psycopg.Error as exc:
        raise DBAPIError.instance(None, None, exc, psycopg.Error, dialect=conn.dialect) from exc


def _tuples(
    table: Table, rows: list[dict[str, Any]], convert: Callable[[Any, bool | None], Any]
) -> tuple[list[str], list[tuple[Any, ...]]]:
    """The column names and one tuple per row, with the values the column types would bind
    (``convert``) and the Python-side column defaults for the columns the rows leave out."""
    columns = list(rows[0])
    defaults = [
        (c.name, c.default.arg)
        for c in table.c
        if c.name not in rows[0] and isinstance(c.default, ColumnDefault) and not c.primary_key
    ]
    names = columns + [name for name, _ in defaults]
    json_null = {
        name: not column_type.none_as_null
        for name in names
        for column_type in (table.c[name].type,)
        if isinstance(column_type, JSON)
    }
    params = []
    for row in rows:
        values = [convert(row[name], json_null.get(name)) for name in columns]
        for name, arg in defaults:
            values.append(convert(arg(None) if callable(arg) else arg, json_null.get(name)))
        params.append(tuple(values))
    return names, params


def _driver_insert(
    conn: Connection,
    table: Table,
    rows: list[dict[str, Any]],
    placeholder: str,
    convert: Callable[[Any, bool | None], Any],
) -> None:
    """One driver-level execute(many) of plain tuples."""
    names, params = _tuples(table, rows, convert)
    quoted = ", ".join(f'"{n}"' for n in names)
    sql = f'INSERT INTO "{table.name}" ({quoted}) VALUES ({", ".join(placeholder for _ in names)})'
    conn.exec_driver_sql(sql, params if len(params) > 1 else params[0])


def _pg_value(value: Any, json_null: bool | None) -> Any:
    if json_null is not None:
        if value is None:
            return Json(None) if json_null else None
        return Json(value)
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC).replace(tzinfo=None)
    return value


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
