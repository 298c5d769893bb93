"""The customers page: customers with search, sort (by a column, a feature's usage this period or
a wallet balance) and pages, each row with its usage, balances and, when asked, each consumable
feature's usage this month against last month."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Numeric, and_, case, cast, func, literal, or_, select

from ...errors import ValidationError
from ...extensions import db
from ...models import (
    CUSTOMER_STATUSES,
    CreditSystem,
    Customer,
    Entitlement,
    Feature,
    Plan,
    UsageCounter,
    UsageEvent,
    Wallet,
    exact_sum,
    utcnow,
)
from ..actors import VIEW, Actor, require
from ..credits import available_balance
from ..periods import next_reset, period_start
from .current import current_usage, page_bounds, page_count


@dataclass(frozen=True)
class Column:
    key: str
    name: str
    type: str


@dataclass(frozen=True)
class MonthChange:
    """One consumable feature's usage this UTC month so far against last month, from the usage
    events by their timestamp. The change compares like with like: this month so far against
    last month up to the same point (the same day and time, or its end when it is shorter), so
    that the 1st of a month is not a fall from a whole month; last month's total is kept too."""

    this_month_micros: int = 0  # from the 1st, 00:00 UTC, to now
    last_month_to_date_micros: int = 0  # last month from its 1st to the same point
    last_month_micros: int = 0  # all of last month

    @property
    def change_percent(self) -> int | None:
        """(this − last to date) × 100 / last to date, rounded half away from zero to a whole
        percent; None when last month had nothing to this point (no base to compare with)."""
        base = self.last_month_to_date_micros
        if not base:
            return None
        diff = self.this_month_micros - base
        whole, rest = divmod(abs(diff) * 100, base)
        whole += 1 if rest * 2 >= base else 0
        return whole if diff >= 0 else -whole

    @property
    def trend(self) -> str:
        """up, down, flat, new (nothing last month to this point, something now) or none."""
        if self.change_percent is None:
            return "new" if self.this_month_micros else "none"
        return "up" if self.change_percent > 0 else "down" if self.change_percent < 0 else "flat"


def month_bounds(now: datetime) -> tuple[datetime, datetime, datetime, datetime]:
    """(last month's start, last month's "same point" as now, this month's start, next month's
    start), all UTC."""
    this_start = period_start(now, "month")
    last_start = period_start(this_start - timedelta(microseconds=1), "month")
    next_start = next_reset(now, "month") or this_start  # a month always ends
    cut = min(last_start + (now - this_start), this_start)
    return last_start, cut, this_start, next_start


@dataclass
class CustomerRow:
    customer: Customer
    usage: dict[str, tuple[int, int | None]] = field(default_factory=dict)  # key -> used, allow
    balances: dict[str, int] = field(default_factory=dict)  # credit system key -> micros
    months: dict[str, MonthChange] = field(default_factory=dict)  # consumable key -> change

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
    # Plans (the filter's choices and the plan column): key -> (id, name).
    plans: dict[str, tuple[int, str]] = field(default_factory=dict)

    @property
    def plan_names(self) -> dict[int, str]:
        return {pid: name for pid, name in self.plans.values()}

    @property
    def plan_keys(self) -> dict[int, str]:
        return {pid: key for key, (pid, _) in self.plans.items()}

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
    compare_months: bool = False,
    now: datetime | None = None,
    plan: str | None = None,
) -> CustomerList:
    """Customers with offset pages. ``status`` is active, archived or all. ``sort`` is a column
    name, ``feature:<key>`` (usage this period) or ``credits:<key>`` (wallet balance); unknown
    values fall back to ``key``. ``near_limit`` keeps the customers that used at least
    NEAR_LIMIT_PERCENT of a finite allowance this period. ``compare_months`` fills each row's
    ``months`` (MonthChange per consumable feature it used this month or last) with one grouped
    query for the page."""
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
    plans = {
        key: (pid, name)
        for pid, key, name in db.session.execute(
            select(Plan.id, Plan.key, Plan.name).order_by(Plan.name)
        )
    }
    base = select(Customer)
    if plan == "none":  # customers on no plan
        base = base.where(Customer.plan_id.is_(None))
    elif plan:
        # An unknown plan key matches nobody (a link to a plan since renamed shows none).
        base = base.where(Customer.plan_id == plans.get(plan, (-1, ""))[0])
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
        if compare_months:
            _fill_month_changes(rows, now)
    return CustomerList(
        rows=list(rows.values()),
        columns=columns,
        credit_systems=systems,
        total=total,
        page=page,
        per_page=per_page,
        sort=sort,
        direction=direction,
        plans=plans,
    )


def _fill_month_changes(rows: dict[int, CustomerRow], now: datetime) -> None:
    """One grouped query over the page's customers' consumable events of last month and this
    one, by the (customer_id, timestamp) index: a sum per customer, feature and part of the
    two months (0: last month to the same point, 1: the rest of last month, 2: this month)."""
    last_start, cut, this_start, next_start = month_bounds(now)
    events = (
        select(
            UsageEvent.customer_id.label("customer_id"),
            Feature.key.label("feature_key"),
            case(
                (UsageEvent.timestamp >= this_start, literal(2)),
                (UsageEvent.timestamp < cut, literal(0)),
                else_=literal(1),
            ).label("part"),
            UsageEvent.amount_micros.label("amount"),
        )
        .join(Feature, Feature.id == UsageEvent.feature_id)
        .where(
            UsageEvent.customer_id.in_(rows),
            UsageEvent.timestamp >= last_start,
            UsageEvent.timestamp < next_start,
            Feature.type == "consumable",
        )
        .subquery()
    )
    sums: dict[tuple[int, str], list[int]] = {}
    for cid, fkey, part, amount in db.session.execute(
        select(
            events.c.customer_id, events.c.feature_key, events.c.part, exact_sum(events.c.amount)
        ).group_by(events.c.customer_id, events.c.feature_key, events.c.part)
    ):
        sums.setdefault((cid, fkey), [0, 0, 0])[int(part)] = int(amount or 0)
    for (cid, fkey), (to_date, rest, this) in sums.items():
        rows[cid].months[fkey] = MonthChange(this, to_date, to_date + rest)
