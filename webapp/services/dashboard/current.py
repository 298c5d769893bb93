"""What every read model shares: the page size cap, and the one definition of "usage this
period": each entitlement's counter of its current period (never a sum of events)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, or_, select

from ...models import RESET_PERIODS, Entitlement, Feature, UsageCounter
from ..periods import EPOCH, period_start

MAX_PER_PAGE = 100


def current_usage(now: datetime) -> Select[int, int, int]:
    """(customer_id, feature_id, used_micros) of every entitlement's current-period counter.
    Narrow it with .where() on Feature or UsageCounter, or use it as a subquery."""
    return (
        select(UsageCounter.customer_id, UsageCounter.feature_id, UsageCounter.used_micros)
        .join(
            Entitlement,
            and_(
                Entitlement.customer_id == UsageCounter.customer_id,
                Entitlement.feature_id == UsageCounter.feature_id,
            ),
        )
        .join(Feature, Feature.id == UsageCounter.feature_id)
        .where(_is_current(now))
    )


def _is_current(now: datetime) -> ColumnElement[bool]:
    """This counter is of its entitlement's current period (persistent features and `never`
    have one everlasting period, starting at EPOCH)."""
    consumable: list[Any] = [
        and_(
            Feature.type == "consumable",
            Entitlement.reset_period == period,
            UsageCounter.period_start == period_start(now, period),
        )
        for period in RESET_PERIODS
    ]
    return or_(and_(Feature.type != "consumable", UsageCounter.period_start == EPOCH), *consumable)


def page_bounds(page: int, per_page: int) -> tuple[int, int]:
    return max(1, page), min(max(1, per_page), MAX_PER_PAGE)


def page_count(total: int, per_page: int) -> int:
    return max(1, -(-total // per_page))
