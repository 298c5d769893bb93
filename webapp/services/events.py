"""The event log: `GET /api/v1/events?after=<cursor>`, the outbox read in order by consumers that
poll instead of receiving webhooks (docs/api.md, "Events").

The order is (tx_order, id). On PostgreSQL ids come from a sequence when the row is inserted, not
when its transaction commits: a transaction that inserted id 10 may commit after another one
that inserted id 11, and a poller that read 11 and moved its cursor past it would never see 10.
So each row carries the id of the transaction that wrote it (``tx_order``, from
``pg_current_xact_id()``) and the log shows only rows whose transaction is older than every
transaction still in flight (``pg_snapshot_xmin`` of the reading statement's snapshot): every
such transaction has finished, and every transaction that starts later gets a larger id, so no
row can ever appear behind the cursor. A row waits at most as long as the oldest transaction
running beside it. On SQLite writers are serialized (BEGIN IMMEDIATE): ids follow commits,
``tx_order`` is 0 and every committed row is shown at once."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any

from sqlalchemy import literal_column, select, tuple_
from sqlalchemy.sql.elements import ColumnClause

from ..errors import ValidationError
from ..extensions import db
from ..models import OutboxEvent
from . import outbox, validation
from .actors import ADMIN, Actor, require
from .alerts import EVENT_TYPES
from .paging import MAX_ID, parse_limit, whole_number

# The transactions still in flight at the reading statement's snapshot have ids at or above it.
_HORIZON: ColumnClause[Any] = literal_column(
    "pg_snapshot_xmin(pg_current_snapshot())::text::bigint"
)


@dataclass(frozen=True)
class EventLogPage:
    items: list[dict[str, Any]]  # envelopes {id, type, created_at, data}
    next_cursor: str  # where to poll from next: after the last item, or the cursor given
    has_more: bool


def encode_cursor(tx_order: int, row_id: int) -> str:
    return base64.urlsafe_b64encode(f"e1:{tx_order}:{row_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: object) -> tuple[int, int]:
    """(tx_order, id) a cursor continues after; none or "" is the start of the log."""
    if cursor is None or cursor == "":
        return (-1, 0)
    try:
        raw = str(cursor)
        text = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)).decode()
    except (ValueError, UnicodeDecodeError, binascii.Error):
        text = ""
    parts = text.split(":")
    try:
        if len(parts) != 3 or parts[0] != "e1":
            raise ValidationError("")
        return (
            whole_number(parts[1], field="after", low=0, high=MAX_ID),
            whole_number(parts[2], field="after", low=1, high=MAX_ID),
        )
    except ValidationError:
        raise ValidationError(
            "`after` is not a cursor this server gave out.", field="after"
        ) from None


def list_events(
    actor: Actor,
    *,
    after: object = None,
    type: object = None,
    customer: object = None,
    limit: object = None,
) -> EventLogPage:
    """The events after the cursor, oldest first (admins only: events name every customer)."""
    require(actor, ADMIN)
    position = decode_cursor(after)
    size = parse_limit(limit)
    stmt = select(
        OutboxEvent.id,
        OutboxEvent.type,
        OutboxEvent.created_at,
        OutboxEvent.data,
        OutboxEvent.tx_order,
    ).where(tuple_(OutboxEvent.tx_order, OutboxEvent.id) > tuple_(*position))
    if type not in (None, ""):
        stmt = stmt.where(OutboxEvent.type == validation.choice(type, EVENT_TYPES, field="type"))
    if customer not in (None, ""):
        stmt = stmt.where(
            OutboxEvent.customer_key == validation.lookup_key(customer, field="customer")
        )
    if db.session.connection().dialect.name == "postgresql":
        stmt = stmt.where(OutboxEvent.tx_order < _HORIZON)
    rows = db.session.execute(
        stmt.order_by(OutboxEvent.tx_order, OutboxEvent.id).limit(size + 1)
    ).all()
    more = len(rows) > size
    rows = rows[:size]
    cursor = (
        encode_cursor(rows[-1].tx_order, rows[-1].id)
        if rows
        else encode_cursor(*position)
        if position[1]
        else ""
    )
    return EventLogPage([outbox.envelope(r) for r in rows], cursor, more)
