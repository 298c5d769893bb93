"""The customers page: customers with search, sort (by a column, a feature's usage this period or
a wallet balance) and pages, each row with its usage and balances."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Numeric, and_, case, cast, func, or_, select

from ...errors import ValidationError
from ...extensions import db
from ...models import (
    CUSTOMER_STATUSES,
    CreditSystem,
    Customer,
    Entitlement,
    Feature,
    UsageCounter,
    Wallet,
    utcnow,
)
from ..actors import VIEW, Actor, require
from ..credits import available_balance
from .current import current_usage, page_bounds, page_count


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

    @property
    def percent(self) -> int | None:
        """The highest share of an allowance used this period, in whole percent (rounded down),
        over the entitlements with a finite allowance above zero; None when there is none."""
        shares = [used * 100 // allow for used, allow in self.usage.values() if allow]
        return max(shares, default=None)

    @property
    def near_limit(self) -> bool:
        return self.percent is not None and self.percent >= NEAR_LIMIT_PERCENT


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
        return page_count(self.total, self.per_page)


NEAR_LIMIT_PERCENT = 80  # an allowance this much used (or more) is "near its limit"
CUSTOMER_SORTS = ("key", "name", "email", "status", "created")
STATUS_FILTERS = ("all", *CUSTOMER_STATUSES)


def list_customers(
    actor: Actor,
    *,
    search: str | None = None,
    status: str = "all",
    near_limit: bool = False,
    sort: str = "key",
    direction: str = "asc",
    page: int = 1,
    per_page: int = 25,
    now: datetime | None = None,
) -> CustomerList:
    """Customers with offset pages. ``status`` is active, archived or all. ``sort`` is a column
    name, ``feature:<key>`` (usage this period) or ``credits:<key>`` (wallet balance); unknown
    values fall back to ``key``. ``near_limit`` keeps the customers that used at least
    NEAR_LIMIT_PERCENT of a finite allowance this period."""
    require(actor, VIEW)
    if status not in STATUS_FILTERS:
        raise ValidationError(
            f"`status` must be one of {', '.join(STATUS_FILTERS)}.", field="status"
        )
    now = now or utcnow()
    page, per_page = page_bounds(page, per_page)
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
    if status != "all":
        base = base.where(Customer.status == status)
    if search:
        term = search.strip()[:100].lower()  # `%` and `_` are letters here (autoescape)
        base = base.where(
            or_(
                func.lower(Customer.key).contains(term, autoescape=True),
                func.lower(Customer.name).contains(term, autoescape=True),
                func.lower(Customer.email).contains(term, autoescape=True),
            )
        )
    if near_limit:
        # used / allowance >= 80 / 100, in integers; Numeric so that x100 cannot overflow BIGINT
        used = cast(UsageCounter.used_micros, Numeric) * 100
        base = base.where(
            Customer.id.in_(
                current_usage(now)
                .with_only_columns(UsageCounter.customer_id)
                .where(
                    Entitlement.allowance_micros > 0,
                    used >= cast(Entitlement.allowance_micros, Numeric) * NEAR_LIMIT_PERCENT,
                )
            )
        )
    total = db.session.scalar(select(func.count()).select_from(base.subquery())) or 0

    order: Any
    kind, _, arg = sort.partition(":")
    if kind == "feature" and arg in {c.key for c in columns}:
        usage = (
            current_usage(now)
            .where(Feature.key == arg)
            .with_only_columns(UsageCounter.customer_id, UsageCounter.used_micros)
            .subquery()
        )
        base = base.outerjoin(usage, usage.c.customer_id == Customer.id)
        order = func.coalesce(usage.c.used_micros, 0)
    elif kind == "credits" and arg in {s.key for s in systems}:
        wallet = (
            select(Wallet.customer_id, available_balance(now).label("balance_micros"))
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
        current = current_usage(now).where(UsageCounter.customer_id.in_(rows)).subquery()
        for cid, fkey, used, allowance in db.session.execute(
            select(
                Entitlement.customer_id,
                Feature.key,
                current.c.used_micros,
                Entitlement.allowance_micros,
            )
            .select_from(Entitlement)
            .join(Feature, Feature.id == Entitlement.feature_id)
            .outerjoin(
                current,
                and_(
                    current.c.customer_id == Entitlement.customer_id,
                    current.c.feature_id == Entitlement.feature_id,
                ),
            )
            .where(Entitlement.customer_id.in_(rows), Feature.type != "boolean")
        ):
            rows[cid].usage[fkey] = (int(used or 0), allowance)
        for cid, skey, balance in db.session.execute(
            select(Wallet.customer_id, CreditSystem.key, available_balance(now))
            .join(CreditSystem, CreditSystem.id == Wallet.credit_system_id)
            .where(Wallet.customer_id.in_(rows))
        ):
            rows[cid].balances[skey] = int(balance)
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
