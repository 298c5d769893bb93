"""The per-wallet daily burn rollup (domain.md, "Runway"): credits consumed per wallet and UTC
day, written in the same transaction as the ledger entries that consume them, so that a burn rate
reads at most 30 rows per wallet and never scans the ledger or the events.

What a ledger entry adds to its day's consumption (``consumed``) is the one contract:
- ``usage``: its charge (−amount);
- ``adjustment`` with a negative amount: −amount (spent like usage); a positive one adds a grant,
  consumes nothing;
- ``correction``: −amount (a positive correction is a refund and lowers the day's consumption, a
  negative one is an extra charge and raises it);
- ``topup``, ``expiry``, ``void``: nothing (expired and voided credits were not consumed).

Every writer of such an entry calls ``add(conn, [(wallet_id, day_of(entry_time), micros)])`` in
its own transaction; ``ledger verify`` checks the rollup against the ledger per wallet and day."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta
from typing import cast

from sqlalchemy import (
    ColumnElement,
    Connection,
    Subquery,
    Table,
    and_,
    case,
    func,
    select,
)

from ...models import DAILY_BASE, LedgerEntry, WalletBurnDaily
from ..carry import carry_upserts

WINDOW_DAYS = 30  # the burn rate is what the last 30 UTC days (today included) consumed, ÷ 30

_table = cast(Table, WalletBurnDaily.__table__)


_UPSERT = carry_upserts(
    _table, ["wallet_id", "day"], "consumed_micros", "consumed_high", DAILY_BASE
)


def day_of(at: datetime) -> date:
    """The UTC day a ledger entry's time counts toward."""
    return at.astimezone(UTC).date()


def add(conn: Connection, parts: Iterable[tuple[int, date, int]]) -> None:
    """Add consumption: ``parts`` are (wallet id, UTC day, micros consumed; negative for a
    refund). Summed in memory per (wallet, day) and written as one upsert statement (an
    executemany), in key order, whatever the number of parts. Call it in the transaction of the
    ledger entries it accounts for."""
    sums: dict[tuple[int, date], int] = {}
    for wallet_id, day, micros in parts:
        if micros:
            sums[(wallet_id, day)] = sums.get((wallet_id, day), 0) + micros
    if sums:
        conn.execute(
            _UPSERT[conn.dialect.name],
            [
                {"wallet_id": w, "day": d, "consumed_high": high, "consumed_micros": low}
                for (w, d), micros in sorted(sums.items())
                for high, low in (divmod(micros, DAILY_BASE),)  # low in [0, BASE), always
            ],
        )


def window_start(now: datetime) -> date:
    """The first day of the burn window: the 30 UTC days that end with today."""
    return day_of(now) - timedelta(days=WINDOW_DAYS - 1)


def consumed_in_window(now: datetime) -> Subquery:
    """SQL: (wallet_id, consumed) = Σ consumption of each wallet over the burn window, one grouped
    subquery over the rollup (wallets that consumed nothing have no row). Exact on PostgreSQL
    (NUMERIC sums); on SQLite past 2^63 micros in 30 days the product leaves the integers."""
    b = WalletBurnDaily
    return (
        select(
            b.wallet_id,
            (func.sum(b.consumed_high) * DAILY_BASE + func.sum(b.consumed_micros)).label(
                "consumed"
            ),
        )
        .where(b.day >= window_start(now))
        .group_by(b.wallet_id)
        .subquery("burn")
    )


def consumed_by_entry() -> ColumnElement[int]:
    """SQL: what one ledger entry adds to its day's consumption (the contract above)."""
    e = LedgerEntry
    return case(
        (e.type.in_(("usage", "correction")), -e.amount_micros),
        (and_(e.type == "adjustment", e.amount_micros < 0), -e.amount_micros),
        else_=0,
    )


__all__ = [
    "WINDOW_DAYS",
    "add",
    "consumed_by_entry",
    "consumed_in_window",
    "day_of",
    "window_start",
]
