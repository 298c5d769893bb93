"""The two-part upsert shared by the rollup tables (usage_daily, wallet_burn_daily,
credit_monthly): a sum kept as a low part in [0, base) and a high part, so that no total
overflows a 64-bit column."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql.dml import Insert


def carry_upserts(
    table: Table, keys: Sequence[str], low_name: str, high_name: str, base: int
) -> dict[str, Insert]:
    """An INSERT … ON CONFLICT (``keys``) DO UPDATE per dialect name that adds the new row's two
    parts to the stored ones in one statement: both low parts are in [0, base), so their sum is
    never negative and SQL's integer division and remainder (which truncate) carry it exactly
    into the high part, whatever the signs of the high parts."""

    def upsert(dialect: Any) -> Insert:
        stmt = dialect.insert(table)
        low = table.c[low_name] + stmt.excluded[low_name]
        high = table.c[high_name] + stmt.excluded[high_name] + low // base
        done: Insert = stmt.on_conflict_do_update(
            index_elements=list(keys), set_={low_name: low % base, high_name: high}
        )
        return done

    return {"sqlite": upsert(sqlite), "postgresql": upsert(postgresql)}
