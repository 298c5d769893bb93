"""The monthly credit rollup (table credit_monthly; domain.md, "Finance roll-forward"), written in
the transaction of every ledger write:

- ``issued``: a topup's amount, to its grant;
- ``consumed``: a usage entry's allocations, each to its grant;
- ``expired`` / ``voided``: what an expiry / void entry took out of its grant;
- ``adjusted``: a positive adjustment's amount to the granted grant it created; a negative
  adjustment's allocations, negated, each to its grant;
- ``corrected``: minus the allocations of a `correction` entry (a refund's allocations are
  negative, so it adds back; an extra charge's are positive and take away), each to its grant.

Two ways in, both in the transaction of the ledger write:

- :func:`defer` (the wallet services: topups, adjustments, voids, expiries, the sweep): the rows
  are kept on the session and added with one statement just before it commits, in key order,
  after every wallet lock the transaction takes (so that two writers never hold rollup rows
  while waiting for a wallet, nor take two rollup rows in opposite orders);
- :func:`add` (the usage hot path, which has locked everything it writes when it gets there, and
  the demo seed): one statement now.

The month is the UTC month of the entry's booking (``created_at``), so the closing balance of a
month is what the ledger held at its end.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, date, datetime
from typing import NamedTuple, cast

from sqlalchemy import Connection, Table, event
from sqlalchemy.orm import Session, SessionTransaction

from ...models import CREDIT_BASE, CREDIT_SHARDS, CreditGrant, CreditMonthly
from ..carry import carry_upserts

# Which category a ledger entry's own amount (entries naming one grant) or its allocations go to,
# and with which sign: the row's amount is sign * the entry amount / the allocation amount.
ENTRY_CATEGORY = {"topup": ("issued", 1), "expiry": ("expired", -1), "void": ("voided", -1)}
POSITIVE_ADJUSTMENT = ("adjusted", 1)
ALLOCATION_CATEGORY = {
    "usage": ("consumed", 1),
    "adjustment": ("adjusted", -1),
    "correction": ("corrected", -1),
}


class Row(NamedTuple):
    """One contribution to the rollup. ``currency`` / ``unit_price``: None when the grant has
    none. ``customer_id`` chooses the shard."""

    credit_system_id: int
    at: datetime
    category: str
    kind: str
    currency: str | None
    unit_price: str | None
    amount: int
    customer_id: int = 0


Key = tuple[int, date, str, str, str, str, int]


def month_of(at: datetime) -> date:
    """The first day of ``at``'s UTC month."""
    utc = at.astimezone(UTC)
    return date(utc.year, utc.month, 1)


_table = cast(Table, CreditMonthly.__table__)


_UPSERT = carry_upserts(
    _table,
    ["credit_system_id", "month", "category", "kind", "currency", "unit_price", "shard"],
    "amount_micros",
    "amount_high",
    CREDIT_BASE,
)


def sums(rows: Iterable[Row]) -> dict[Key, int]:
    """The rows added up per rollup row (key order), zero sums left out."""
    out: dict[Key, int] = {}
    for r in rows:
        key = (
            r.credit_system_id,
            month_of(r.at),
            r.category,
            r.kind,
            r.currency or "",
            r.unit_price or "",
            r.customer_id % CREDIT_SHARDS,
        )
        out[key] = out.get(key, 0) + r.amount
    return {k: v for k, v in sorted(out.items()) if v}


def add(conn: Connection, rows: Iterable[Row]) -> None:
    """Add rows to credit_monthly: one upsert statement (an executemany of one parameter set per
    rollup row, in key order, so that concurrent writers lock rows in the same order)."""
    params = [
        {
            "credit_system_id": sid,
            "month": month,
            "category": category,
            "kind": kind,
            "currency": currency,
            "unit_price": price,
            "shard": shard,
            "amount_high": high,
            "amount_micros": low,
        }
        for (sid, month, category, kind, currency, price, shard), amount in sums(rows).items()
        for high, low in (divmod(amount, CREDIT_BASE),)
    ]
    if params:
        conn.execute(_UPSERT[conn.dialect.name], params)


def grant_row(
    credit_system_id: int,
    customer_id: int,
    at: datetime,
    category: str,
    grant: CreditGrant,
    amount: int,
) -> Row:
    return Row(
        credit_system_id,
        at,
        category,
        grant.kind,
        grant.currency,
        grant.unit_price,
        amount,
        customer_id,
    )


def entry_category(type_: str, amount: int) -> tuple[str, int] | None:
    """For an entry that names one grant (its issuing, expiry or void): its category and sign;
    None for an entry whose rollup rows come from its allocations."""
    if type_ == "adjustment" and amount > 0:
        return POSITIVE_ADJUSTMENT
    return ENTRY_CATEGORY.get(type_)


_PENDING = "credit_rollup_rows"


def defer(session: Session, rows: Iterable[Row]) -> None:
    """Add ``rows`` to the rollup when ``session`` commits (one statement for the transaction);
    a rollback forgets them."""
    session.info.setdefault(_PENDING, []).extend(rows)


@event.listens_for(Session, "before_commit")
def _add_deferred(session: Session) -> None:
    rows = session.info.pop(_PENDING, None)
    if rows:
        add(session.connection(), rows)


@event.listens_for(Session, "after_transaction_end")
def _forget(session: Session, transaction: SessionTransaction) -> None:
    if transaction.parent is None:  # the outermost: committed (added above) or rolled back
        session.info.pop(_PENDING, None)
