"""The transactional outbox: `emit` writes an event in the caller's transaction, so that the
event exists exactly when the write that caused it committed (docs/domain.md, "Alerts").
Delivery is the worker's business, not the writer's; `envelope` is the one shape an event has
outside the database (a webhook's body, an item of `GET /api/v1/events`)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import Table, literal_column
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection
from sqlalchemy.sql.elements import ColumnClause

from ..models import OutboxEvent, utcnow

_table = cast(Table, OutboxEvent.__table__)
# On PostgreSQL each row carries the id of the transaction that wrote it: the event log reads
# only rows whose transaction is older than every one still in flight (services/events.py).
TX_ORDER: ColumnClause[Any] = literal_column("pg_current_xact_id()::text::bigint")
# Inserts never conflict unless they carry a dedupe_key. Rows go in as one multi-row INSERT
# (no RETURNING, so it may ride in the hot path's pipeline), CHUNK rows per statement.
_DIALECTS: dict[str, Any] = {"sqlite": sqlite, "postgresql": postgresql}
CHUNK = 500
MAX_DEDUPE_KEY = 300


def event_row(
    type: str,
    data: dict[str, Any],
    *,
    customer_key: str | None = None,
    dedupe_key: str | None = None,
    at: datetime | None = None,
) -> dict[str, Any]:
    """The parameters of one outbox row (for ``emit_many``)."""
    if dedupe_key is not None and len(dedupe_key) > MAX_DEDUPE_KEY:
        raise ValueError(f"dedupe_key longer than {MAX_DEDUPE_KEY}: {dedupe_key[:40]}...")
    return {
        "type": type,
        "data": data,
        "customer_key": customer_key,
        "dedupe_key": dedupe_key,
        "created_at": at or utcnow(),
    }


def emit_many(conn: Connection, rows: Sequence[dict[str, Any]]) -> None:
    """Write events (``event_row``s) in the current transaction with one statement (per CHUNK
    rows); nothing at all when there are none. A row whose dedupe_key exists already, or
    repeats one of an earlier row, is silently not written."""
    if not rows:
        return
    dialect = conn.dialect.name
    extra = {"tx_order": TX_ORDER} if dialect == "postgresql" else {}
    for start in range(0, len(rows), CHUNK):
        chunk = [{**row, **extra} for row in rows[start : start + CHUNK]]
        stmt = (
            _DIALECTS[dialect]
            .insert(_table)
            .values(chunk)
            .on_conflict_do_nothing(index_elements=["dedupe_key"])
        )
        conn.execute(stmt)


def emit(
    conn: Connection,
    type: str,
    data: dict[str, Any],
    *,
    customer_key: str | None = None,
    dedupe_key: str | None = None,
    at: datetime | None = None,
) -> None:
    """Write one event in the current transaction. With a dedupe_key, a second event with the
    same key (a concurrent writer of the same crossing) is silently not written."""
    emit_many(
        conn,
        [event_row(type, data, customer_key=customer_key, dedupe_key=dedupe_key, at=at)],
    )


def event_id(row_id: int) -> str:
    """An event's public id: stable, and the `webhook-id` of its deliveries."""
    return f"evt_{row_id}"


def envelope(row: Any) -> dict[str, Any]:
    """An outbox row (OutboxEvent, or any row with id, type, created_at and data) as Metrifox's
    envelope ``{id, type, created_at, data}``; created_at in RFC 3339, UTC, with a ``Z``."""
    created = row.created_at
    if created.tzinfo is None:
        created = created.replace(tzinfo=UTC)
    return {
        "id": event_id(row.id),
        "type": row.type,
        "created_at": created.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        "data": row.data,
    }
