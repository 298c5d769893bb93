"""Bulk inserts for the hot path: COPY on PostgreSQL, executemany on SQLite.

Rows are dicts keyed by column name, with the values the model columns take (aware datetimes,
dicts for JSON); the conversion below is what the column types would do."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from psycopg.types.json import Json
from sqlalchemy import JSON, Connection, Table, insert

COPY_FROM = 20  # fewer rows go in as one INSERT: COPY costs more round trips than it saves


def use_copy(conn: Connection, count: int) -> bool:
    return conn.dialect.name == "postgresql" and count >= COPY_FROM


def bulk_insert(conn: Connection, table: Table, rows: list[dict[str, Any]]) -> None:
    if not rows:
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
