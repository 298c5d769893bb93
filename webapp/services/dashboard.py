"""Read models of the dashboard: overview numbers, lists with search / sort / pages, charts.

Every function runs a constant number of queries whatever the page or history size. "Usage this
period" comes from the usage counters of each entitlement's current period, never from summing
events; only the daily chart reads events, over an indexed 30-day window.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import and_, case, func, or_, select

from ..extensions import db
from ..models import (
    RESET_PERIODS,
    AuditLog,
    CreditCost,
    CreditSystem,
    Customer,
    Entitlement,
    Feature,
    UsageCounter,
    UsageDaily,
    UsageEvent,
    Wallet,
    utcnow,
)
from .actors import VIEW, Actor, require
from .catalog import get_customer
from .periods import EPOCH, period_start

MAX_PER_PAGE = 100


def _current_counter(now: datetime) -> Any:
    """SQL condition: this usage counter is of its entitlement's current period.

    Needs UsageCounter, Entitlement (same customer and feature) and Feature in the FROM clause."""
    consumable = [
        and_(
            Feature.type == "consumable",
            Entitlement.reset_period == period,
            UsageCounter.period_start == period_start(now, period),
        )
        for period in RESET_PERIODS
    ]
    return or_(and_(Feature.type != "consumable", UsageCounter.period_start == EPOCH), *consumable)


def _current_usage_query(now: datetime) -> Any:
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
        .where(_current_counter(now))
    )


# ---------------------------------------------------------------- overview


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


def overview(actor: Actor, *, now: datetime | None = None) -> Overview:
    require(actor, VIEW)
    now = now or utcnow()
    total, active = db.session.execute(
        select(func.count(), func.count(case((Customer.status == "active", 1))))
    ).one()
    usage_rows = db.session.execute(
        select(
            Feature.key,
            Feature.name,
            Feature.type,
            func.coalesce(func.sum(UsageCounter.used_micros), 0),
        )
        .select_from(UsageCounter)
        .join(
            Entitlement,
            and_(
                Entitlement.customer_id == UsageCounter.customer_id,
                Entitlement.feature_id == UsageCounter.feature_id,
            ),
        )
        .join(Feature, Feature.id == UsageCounter.feature_id)
        .where(_current_counter(now))
        .group_by(Feature.key, Feature.name, Feature.type)
    ).all()
    allowances = dict(
        db.session.execute(
            select(Feature.key, func.sum(Entitlement.allowance_micros))
            .join(Feature, Feature.id == Entitlement.feature_id)
            .where(Feature.type == "persistent")
            .group_by(Feature.key)
        ).all()
    )
    features = db.session.execute(
        select(Feature.key, Feature.name, Feature.type)
        .where(Feature.type != "boolean")
        .order_by(Feature.type, Feature.key)
    ).all()
    used = {key: int(micros) for key, _, _, micros in usage_rows}
    usage = [
        FeatureTotal(
            key,
            name,
            ftype,
            used.get(key, 0),
            int(allowances.get(key) or 0) if ftype == "persistent" else None,
        )
        for key, name, ftype in features
    ]
    credits = [
        CreditTotal(key, name, int(balance or 0), int(count))
        for key, name, balance, count in db.session.execute(
            select(
                CreditSystem.key,
                CreditSystem.name,
                func.sum(Wallet.balance_micros),
                func.count(Wallet.id),
            )
            .outerjoin(Wallet, Wallet.credit_system_id == CreditSystem.id)
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


# ---------------------------------------------------------------- daily usage chart


@dataclass(frozen=True)
class DailySeries:
    feature_key: str
    feature_name: str
    days: list[tuple[date, int]]  # every day of the window, oldest first, 0 where nothing

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
    if customer_key not in (None, ""):
        # One customer's events of the window, by the (customer_id, timestamp) index.
        day = func.date(UsageEvent.timestamp)
        stmt = (
            select(Feature.key, day, func.sum(UsageEvent.amount_micros))
            .join(Feature, Feature.id == UsageEvent.feature_id)
            .where(UsageEvent.timestamp >= first, Feature.type == "consumable")
            .where(UsageEvent.customer_id == get_customer(customer_key).id)
            .group_by(Feature.key, day)
        )
    else:
        # Everyone: the daily rollup (features x days x shards rows), never the events.
        stmt = (
            select(Feature.key, UsageDaily.day, func.sum(UsageDaily.amount_micros))
            .join(Feature, Feature.id == UsageDaily.feature_id)
            .where(UsageDaily.day >= first.date(), Feature.type == "consumable")
            .group_by(Feature.key, UsageDaily.day)
        )
    sums: dict[tuple[str, date], int] = {}
    for key, when, micros in db.session.execute(stmt):
        if isinstance(when, str):  # SQLite's date() is text
            when = date.fromisoformat(when)
        sums[(key, when)] = int(micros)
    window = [(first + timedelta(days=i)).date() for i in range(days)]
    series = []
    for key, name in db.session.execute(
        select(Feature.key, Feature.name).where(Feature.type == "consumable").order_by(Feature.key)
    ):
        points = [(d, sums.get((key, d), 0)) for d in window]
        series.append(DailySeries(key, name, points))
    return series


# ---------------------------------------------------------------- customers list


@dataclass(frozen=True)
class Column:
    key: str
    name: str
    type: str


@dataclass
class CustomerRow:
    customer: Customer
    usage: dict[str, tuple[int, int | None]] = field(default_factory=dict)  # key -> used, allow
    balances: dict[str, int] = field(default_factory=dict)  # credit system key -> micros


@dataclass(frozen=True)
class CustomerList:
    rows: list[CustomerRow]
    columns: list[Column]  # non-boolean features, persistent first
    credit_systems: list[Column]
    total: int
    page: int
    per_page: int
    sort: str
    direction: str

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.per_page))


CUSTOMER_SORTS = ("key", "name", "email", "status", "created")


def list_customers(
    actor: Actor,
    *,
    search: str | None = None,
    sort: str = "key",
    direction: str = "asc",
    page: int = 1,
    per_page: int = 25,
    now: datetime | None = None,
) -> CustomerList:
    """Customers with offset pages. ``sort`` is a column name, ``feature:<key>`` (usage this
    period) or ``credits:<key>`` (wallet balance); unknown values fall back to ``key``."""
    require(actor, VIEW)
    now = now or utcnow()
    page = max(1, page)
    per_page = min(max(1, per_page), MAX_PER_PAGE)
    direction = "desc" if direction == "desc" else "asc"
    columns = [
        Column(k, n, t)
        for k, n, t in db.session.execute(
            select(Feature.key, Feature.name, Feature.type)
            .where(Feature.type != "boolean")
            .order_by(case((Feature.type == "persistent", 0), else_=1), Feature.key)
        )
    ]
    systems = [
        Column(k, n, "credits")
        for k, n in db.session.execute(
            select(CreditSystem.key, CreditSystem.name).order_by(CreditSystem.key)
        )
    ]
    base = select(Customer)
    if search:
        term = search.strip()[:100].lower()  # `%` and `_` are letters here (autoescape)
        base = base.where(
            or_(
                func.lower(Customer.key).contains(term, autoescape=True),
                func.lower(Customer.name).contains(term, autoescape=True),
                func.lower(Customer.email).contains(term, autoescape=True),
            )
        )
    total = db.session.scalar(select(func.count()).select_from(base.subquery())) or 0

    order: Any
    kind, _, arg = sort.partition(":")
    if kind == "feature" and arg in {c.key for c in columns}:
        usage = (
            _current_usage_query(now)
            .where(Feature.key == arg)
            .with_only_columns(UsageCounter.customer_id, UsageCounter.used_micros)
            .subquery()
        )
        base = base.outerjoin(usage, usage.c.customer_id == Customer.id)
        order = func.coalesce(usage.c.used_micros, 0)
    elif kind == "credits" and arg in {s.key for s in systems}:
        wallet = (
            select(Wallet.customer_id, Wallet.balance_micros)
            .join(CreditSystem, CreditSystem.id == Wallet.credit_system_id)
            .where(CreditSystem.key == arg)
            .subquery()
        )
        base = base.outerjoin(wallet, wallet.c.customer_id == Customer.id)
        order = func.coalesce(wallet.c.balance_micros, 0)
    else:
        sort = sort if sort in CUSTOMER_SORTS else "key"
        order = {
            "key": Customer.key,
            "name": Customer.name,
            "email": Customer.email,
            "status": Customer.status,
            "created": Customer.created_at,
        }[sort]
    order = order.desc() if direction == "desc" else order.asc()
    customers = list(
        db.session.scalars(
            base.order_by(order, Customer.id).offset((page - 1) * per_page).limit(per_page)
        )
    )
    rows = {c.id: CustomerRow(c) for c in customers}
    if rows:
        for cid, fkey, used, allowance in db.session.execute(
            select(
                Entitlement.customer_id,
                Feature.key,
                UsageCounter.used_micros,
                Entitlement.allowance_micros,
            )
            .select_from(Entitlement)
            .join(Feature, Feature.id == Entitlement.feature_id)
            .outerjoin(
                UsageCounter,
                and_(
                    UsageCounter.customer_id == Entitlement.customer_id,
                    UsageCounter.feature_id == Entitlement.feature_id,
                    _current_counter(now),
                ),
            )
            .where(Entitlement.customer_id.in_(rows), Feature.type != "boolean")
        ):
            rows[cid].usage[fkey] = (int(used or 0), allowance)
        for cid, skey, balance in db.session.execute(
            select(Wallet.customer_id, CreditSystem.key, Wallet.balance_micros)
            .join(CreditSystem, CreditSystem.id == Wallet.credit_system_id)
            .where(Wallet.customer_id.in_(rows))
        ):
            rows[cid].balances[skey] = balance
    return CustomerList(
        rows=list(rows.values()),
        columns=columns,
        credit_systems=systems,
        total=total,
        page=page,
        per_page=per_page,
        sort=sort,
        direction=direction,
    )


# ---------------------------------------------------------------- wallets, lowest first


@dataclass(frozen=True)
class WalletRow:
    customer_key: str
    customer_name: str
    customer_status: str
    credit_system: str
    credit_system_name: str
    balance_micros: int
    low_balance_threshold_micros: int | None
    updated_at: datetime


@dataclass(frozen=True)
class WalletList:
    rows: list[WalletRow]
    total: int
    page: int
    per_page: int

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.per_page))


def lowest_wallets(
    actor: Actor,
    *,
    search: str | None = None,
    credit_system: str | None = None,
    page: int = 1,
    per_page: int = 25,
) -> WalletList:
    require(actor, VIEW)
    page = max(1, page)
    per_page = min(max(1, per_page), MAX_PER_PAGE)
    stmt = (
        select(Wallet, Customer, CreditSystem)
        .join(Customer, Customer.id == Wallet.customer_id)
        .join(CreditSystem, CreditSystem.id == Wallet.credit_system_id)
    )
    if search:
        term = search.strip()[:100].lower()
        stmt = stmt.where(
            or_(
                func.lower(Customer.key).contains(term, autoescape=True),
                func.lower(Customer.name).contains(term, autoescape=True),
            )
        )
    if credit_system:
        stmt = stmt.where(CreditSystem.key == credit_system)
    total = db.session.scalar(select(func.count()).select_from(stmt.subquery())) or 0
    rows = [
        WalletRow(
            customer.key,
            customer.name,
            customer.status,
            system.key,
            system.name,
            wallet.balance_micros,
            wallet.low_balance_threshold_micros,
            wallet.updated_at,
        )
        for wallet, customer, system in db.session.execute(
            stmt.order_by(Wallet.balance_micros, Wallet.id)
            .offset((page - 1) * per_page)
            .limit(per_page)
        )
    ]
    return WalletList(rows, total, page, per_page)


# ---------------------------------------------------------------- audit log


@dataclass(frozen=True)
class AuditPage:
    rows: list[AuditLog]
    next_before: int | None  # id to pass as ``before`` for the next (older) page
    actions: list[str]


def audit_log(
    actor: Actor,
    *,
    actor_label: str | None = None,
    action: str | None = None,
    customer_key: str | None = None,
    before: int | None = None,
    per_page: int = 50,
) -> AuditPage:
    """Newest first, keyset pages over id (``before``), filtered by exact actor, action prefix
    (``wallet.`` or ``wallet.topup``) and customer key."""
    require(actor, VIEW)
    per_page = min(max(1, per_page), MAX_PER_PAGE)
    stmt = select(AuditLog)
    if actor_label:
        stmt = stmt.where(AuditLog.actor == actor_label.strip())
    if action:
        stmt = stmt.where(AuditLog.action.like(action.strip().replace("%", "") + "%"))
    if customer_key:
        stmt = stmt.where(AuditLog.customer_key == customer_key.strip())
    if before is not None:
        stmt = stmt.where(AuditLog.id < before)
    rows = list(db.session.scalars(stmt.order_by(AuditLog.id.desc()).limit(per_page + 1)))
    more = len(rows) > per_page
    rows = rows[:per_page]
    actions = list(db.session.scalars(select(AuditLog.action).distinct().order_by(AuditLog.action)))
    return AuditPage(rows, rows[-1].id if more and rows else None, actions)


# ---------------------------------------------------------------- features


@dataclass(frozen=True)
class FeatureRow:
    feature: Feature
    credit_system: str | None
    cost_micros: int | None
    customers: int  # entitled customers
    used_micros: int  # this period, all customers


def features(actor: Actor, *, now: datetime | None = None) -> list[FeatureRow]:
    require(actor, VIEW)
    now = now or utcnow()
    entitled = (
        select(Entitlement.feature_id, func.count().label("n"))
        .group_by(Entitlement.feature_id)
        .subquery()
    )
    used = dict(
        db.session.execute(
            select(Feature.key, func.sum(UsageCounter.used_micros))
            .select_from(UsageCounter)
            .join(
                Entitlement,
                and_(
                    Entitlement.customer_id == UsageCounter.customer_id,
                    Entitlement.feature_id == UsageCounter.feature_id,
                ),
            )
            .join(Feature, Feature.id == UsageCounter.feature_id)
            .where(_current_counter(now))
            .group_by(Feature.key)
        ).all()
    )
    return [
        FeatureRow(
            feature,
            system,
            None if cost is None else cost.cost_micros,
            int(n or 0),
            int(used.get(feature.key) or 0),
        )
        for feature, cost, system, n in db.session.execute(
            select(Feature, CreditCost, CreditSystem.key, entitled.c.n)
            .outerjoin(CreditCost, CreditCost.feature_id == Feature.id)
            .outerjoin(CreditSystem, CreditSystem.id == CreditCost.credit_system_id)
            .outerjoin(entitled, entitled.c.feature_id == Feature.id)
            .order_by(Feature.key)
        )
    ]
