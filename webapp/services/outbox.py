"""The transactional outbox: `emit` writes an event in the caller's transaction, so that the
event exists exactly when the write that caused it committed (docs/domain.md, "Alerts and
webhooks"). Delivery is the worker's business, not the writer's."""

from __future__ import annotations

from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, insert
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from ..models import OutboxEvent, utcnow

_table = cast(Table, OutboxEvent.__table__)
_INSERT = {
    "sqlite": sqlite.insert(_table).on_conflict_do_nothing(index_elements=["dedupe_key"]),
    "postgresql": postgresql.insert(_table).on_conflict_do_nothing(index_elements=["dedupe_key"]),
}


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
    row = {
        "type": type,
        "data": data,
        "customer_key": customer_key,
        "dedupe_key": dedupe_key,
        "created_at": at or utcnow(),
    }
    stmt = _INSERT.get(conn.dialect.name, insert(_table)) if dedupe_key else insert(_table)
    conn.execute(stmt, row)


def envelope(row: OutboxEvent) -> dict[str, Any]:
    """The event as sent and listed, in Metrifox's envelope: ``{id, type, created_at, data}``."""
    return {
        "id": f"evt_{row.id}",
        "type": row.type,
        "created_at": row.created_at.isoformat().replace("+00:00", "Z"),
        "data": row.data,
    }
