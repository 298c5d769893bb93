"""The overview page: customers, credits and usage this period in totals, and the daily chart.
Totals are exact at any size (models.exact_sum; usage_daily's two parts)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import case, func, literal, select

from ...extensions import db
from ...models import (
    DAILY_BASE,
    CreditGrant,
    CreditSystem,
    Customer,
    Entitlement,
    Feature,
    UsageCounter,
    UsageDaily,
    UsageEvent,
    Wallet,
    exact_sum,
    utcnow,
)
from ..actors import VIEW, Actor, require
from ..catalog import get_customer
from ..credits import status_filter
from ..periods import period_start
from .current import current_usage


@dataclass(frozen=True)
class FeatureTotal:
    key: str
    name: str
    type: str
    used_micros: int
    allowance_micros: int | None  # persistent: sum of the limited allowances


@dataclass(frozen=True)
class CreditTotal:
    key: str
    name: str
    balance_micros: int
    wallets: int


@dataclass(frozen=True)
class Overview:
    customers: int
    active_customers: int
    seats_used_micros: int
    seats_allowance_micros: int
    credits: list[CreditTotal]
    usage: list[FeatureTotal]


def used_by_feature(now: datetime) -> dict[str, int]:
    """Usage this period per feature key, all customers."""
    current = current_usage(now).subquery()
    return {
        key: used
        for key, used in db.session.execute(
            select(Feature.key, exact_sum(current.c.used_micros))
            .join(current, current.c.feature_id == Feature.id)
            .group_by(Feature.key)
        )
    }


def overview(actor: Actor, *, now: datetime | None = None) -> Overview:
    require(actor, VIEW)
    now = now or utcnow()
    total, active = db.session.execute(
        select(func.count(), func.count(case((Customer.status == "active", 1))))
    ).one()
    used = used_by_feature(now)
    allowances: dict[str, int | None] = dict(
        db.session.execute(
            select(Feature.key, exact_sum(Entitlement.allowance_micros))
            .join(Feature, Feature.id == Entitlement.feature_id)
            .where(Feature.type == "persistent")
            .group_by(Feature.key)
        ).all()
    )
    features = db.session.execute(
        select(Feature.key, Feature.name, Feature.type)
        .where(Feature.type != "boolean")
        .order_by(Feature.type, Feature.key)
    )
    usage = [
        FeatureTotal(
            key,
            name,
            ftype,
            used.get(key, 0),
            (allowances.get(key) or 0) if ftype == "persistent" else None,
        )
        for key, name, ftype in features
    ]
    # Outstanding = available now: credits of grants effective and not expired (booked or not).
    live = (
        select(
            Wallet.credit_system_id.label("system_id"),
            exact_sum(CreditGrant.remaining_micros).label("available"),
        )
        .join(CreditGrant, CreditGrant.wallet_id == Wallet.id)
        .where(status_filter("active", utcnow()))
        .group_by(Wallet.credit_system_id)
        .subquery()
    )
    credits = [
        CreditTotal(key, name, balance or 0, count)
        for key, name, balance, count in db.session.execute(
            select(
                CreditSystem.key,
                CreditSystem.name,
                func.max(live.c.available),
                func.count(Wallet.id),
            )
            .outerjoin(Wallet, Wallet.credit_system_id == CreditSystem.id)
            .outerjoin(live, live.c.system_id == CreditSystem.id)
            .group_by(CreditSystem.key, CreditSystem.name)
            .order_by(CreditSystem.key)
        )
    ]
    seats = [u for u in usage if u.type == "persistent"]
    return Overview(
        customers=total,
        active_customers=active,
        seats_used_micros=sum(u.used_micros for u in seats),
        seats_allowance_micros=sum(u.allowance_micros or 0 for u in seats),
        credits=credits,
        usage=usage,
    )


@dataclass(frozen=True)
class DailySeries:
    feature_key: str
    feature_name: str
    days: list[tuple[date, int]]  # every day of the window, oldest first, 0 where nothing
    # One customer's chart: its entitlement's finite allowance and reset period, and for a period
    # longer than a day what was used in the period so far at the end of each day of the window
    # (what the allowance is compared with; it starts again at each period's start).
    allowance_micros: int | None = None
    reset_period: str | None = None
    in_period: list[int] | None = None

    @property
    def total_micros(self) -> int:
        return sum(v for _, v in self.days)


def daily_usage(
    actor: Actor,
    *,
    customer_key: object = None,
    days: int = 30,
    now: datetime | None = None,
) -> list[DailySeries]:
    """Consumable usage per feature per UTC day over the last ``days`` days (today included)."""
    require(actor, VIEW)
    now = now or utcnow()
    first = (now - timedelta(days=days - 1)).replace(hour=0, minute=0, second=0, microsecond=0)
    stmt: Any
    customer_id = None if customer_key in (None, "") else get_customer(customer_key).id
    if customer_id is not None:
        # One customer's events of the window, by the (customer_id, timestamp) index.
        day = func.date(UsageEvent.timestamp)
        stmt = (
            select(Feature.key, day, exact_sum(UsageEvent.amount_micros), literal(0))
            .join(Feature, Feature.id == UsageEvent.feature_id)
            .where(UsageEvent.timestamp >= first, Feature.type == "consumable")
            .where(UsageEvent.customer_id == customer_id)
            .group_by(Feature.key, day)
        )
    else:
        # Everyone: the daily rollup (features x days x shards rows), never the events.
        stmt = (
            select(
                Feature.key,
                UsageDaily.day,
                exact_sum(UsageDaily.amount_micros),
                exact_sum(UsageDaily.amount_high),
            )
            .join(Feature, Feature.id == UsageDaily.feature_id)
            .where(UsageDaily.day >= first.date(), Feature.type == "consumable")
            .group_by(Feature.key, UsageDaily.day)
        )
    sums: dict[tuple[str, date], int] = {}
    for key, when, low, high in db.session.execute(stmt):
        if isinstance(when, str):  # SQLite's date() is text
            when = date.fromisoformat(when)
        sums[(key, when)] = int(high) * DAILY_BASE + int(low)
    window = [(first + timedelta(days=i)).date() for i in range(days)]
    series = [
        DailySeries(key, name, [(d, sums.get((key, d), 0)) for d in window])
        for key, name in db.session.execute(
            select(Feature.key, Feature.name)
            .where(Feature.type == "consumable")
            .order_by(Feature.key)
        )
    ]
    return series if customer_id is None else _with_allowances(customer_id, series)


def _with_allowances(customer_id: int, series: list[DailySeries]) -> list[DailySeries]:
    """Each series of one customer with its finite allowance and, for a reset period longer than
    a day, the usage of the period so far at the end of each day: the period's counter (what
    the period holds in all, also before the window) less the window's days of the period
    after that day. Two queries, whatever the window."""
    limits = {
        key: (allowance, period)
        for key, allowance, period in db.session.execute(
            select(Feature.key, Entitlement.allowance_micros, Entitlement.reset_period)
            .join(Feature, Feature.id == Entitlement.feature_id)
            .where(
                Entitlement.customer_id == customer_id,
                Feature.type == "consumable",
                Entitlement.allowance_micros.is_not(None),
            )
        )
    }
    starts = {
        (s.feature_key, _day_period_start(day, limits[s.feature_key][1]))
        for s in series
        if s.feature_key in limits and limits[s.feature_key][1] != "day"
        for day, _ in s.days
    }
    totals: dict[tuple[str, datetime], int] = {}
    if starts:
        for key, start, used in db.session.execute(
            select(Feature.key, UsageCounter.period_start, UsageCounter.used_micros)
            .join(Feature, Feature.id == UsageCounter.feature_id)
            .where(
                UsageCounter.customer_id == customer_id,
                Feature.key.in_({k for k, _ in starts}),
                UsageCounter.period_start.in_({p for _, p in starts}),
            )
        ):
            totals[(key, start)] = used
    out = []
    for s in series:
        if s.feature_key not in limits:
            out.append(s)
            continue
        allowance, period = limits[s.feature_key]
        in_period = None
        if period != "day":
            starts_of = [_day_period_start(day, period) for day, _ in s.days]
            shown: dict[datetime, int] = {}  # per period: its days in the window, in all
            for start, (_, value) in zip(starts_of, s.days, strict=True):
                shown[start] = shown.get(start, 0) + value
            so_far: dict[datetime, int] = {}  # per period: its days in the window up to this one
            in_period = []
            for start, (_, value) in zip(starts_of, s.days, strict=True):
                so_far[start] = so_far.get(start, 0) + value
                total = totals.get((s.feature_key, start), 0)
                # max(): a counter of a period cut by another reset period (changed since)
                # may hold less than the window shows; never below what the window shows
                in_period.append(max(total - (shown[start] - so_far[start]), so_far[start]))
        out.append(replace(s, allowance_micros=allowance, reset_period=period, in_period=in_period))
    return out


def _day_period_start(day: date, reset_period: str) -> datetime:
    return period_start(datetime(day.year, day.month, day.day, tzinfo=UTC), reset_period)
