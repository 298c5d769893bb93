"""The wallets page: every wallet, the one that runs out first first (or lowest balance first),
with search and pages; each row with its runway (domain.md, "Runway")."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, case, func, or_, select

from ...extensions import db
from ...models import CreditSystem, Customer, Wallet, utcnow
from ..actors import VIEW, Actor, require
from ..credits import available_balance, burn
from ..credits.reads import consumed_in_window, live_grant_refs
from ..credits.runway import WINDOW_DAYS, Runway, runway
from .current import page_bounds, page_count


@dataclass(frozen=True)
class WalletRow:
    customer_key: str
    customer_name: str
    customer_status: str
    credit_system: str
    credit_system_name: str
    balance_micros: int
    low_balance_threshold_micros: int | None  # the wallet's own
    updated_at: datetime
    runway: Runway | None = None
    default_threshold_micros: int | None = None  # its credit system's, for wallets without one

    @property
    def threshold_micros(self) -> int | None:
        """The threshold in force: the wallet's own, else its credit system's."""
        own = self.low_balance_threshold_micros
        return self.default_threshold_micros if own is None else own


# "runway": who runs out first (balance ÷ burn ascending; wallets that burn nothing last, lowest
# balance first among them); "balance": lowest balance available now first.
WALLET_SORTS = ("runway", "balance")


@dataclass(frozen=True)
class WalletList:
    rows: list[WalletRow]
    total: int
    page: int
    per_page: int
    sort: str = "balance"

    @property
    def pages(self) -> int:
        return page_count(self.total, self.per_page)


def lowest_wallets(
    actor: Actor,
    *,
    search: str | None = None,
    credit_system: str | None = None,
    page: int = 1,
    per_page: int = 25,
    sort: str = "balance",
) -> WalletList:
    """A page of wallets in ``sort`` order (WALLET_SORTS; another value is "runway"), ties by
    wallet id so that pages never repeat or skip a row: a count, the page (its burn from one
    grouped subquery over the rollup), the page's burn and its live grants; four queries."""
    require(actor, VIEW)
    page, per_page = page_bounds(page, per_page)
    sort = sort if sort in WALLET_SORTS else "runway"
    now = utcnow()
    available = available_balance(now)
    window = burn.consumed_in_window(now)
    consumed = func.coalesce(window.c.consumed, 0)
    stmt = (
        select(
            Wallet,
            Customer,
            CreditSystem,
            available.label("available"),
            consumed.label("consumed"),
        )
        .join(Customer, Customer.id == Wallet.customer_id)
        .join(CreditSystem, CreditSystem.id == Wallet.credit_system_id)
        .outerjoin(window, window.c.wallet_id == Wallet.id)
    )
    if search:
        term = search.strip()[:100].lower()  # `%` and `_` are letters here (autoescape)
        stmt = stmt.where(
            or_(
                func.lower(Customer.key).contains(term, autoescape=True),
                func.lower(Customer.name).contains(term, autoescape=True),
            )
        )
    if credit_system:
        stmt = stmt.where(CreditSystem.key == credit_system)
    total = db.session.scalar(select(func.count()).select_from(stmt.subquery())) or 0
    order: tuple[Any, ...] = (available, Wallet.id)
    if sort == "runway":
        order = (
            case((consumed > 0, 0), else_=1),  # nothing burned: last
            _runway_key(available, consumed),  # balance ÷ burn, as runway_days says
            available,
            Wallet.id,
        )
    found = db.session.execute(
        stmt.order_by(*order).offset((page - 1) * per_page).limit(per_page)
    ).all()
    ids = [wallet.id for wallet, *_ in found]
    grants = live_grant_refs(ids, now)
    # The SQL sum orders; the page's own burn is read again exactly (a Python integer of any
    # size, where SQLite's arithmetic may have left the integers).
    spent = consumed_in_window(ids, now)
    rows = [
        WalletRow(
            customer.key,
            customer.name,
            customer.status,
            system.key,
            system.name,
            int(balance),
            wallet.low_balance_threshold_micros,
            wallet.updated_at,
            runway(
                available_micros=int(balance),
                consumed_micros=spent.get(wallet.id, 0),
                grants=grants[wallet.id],
                now=now,
            ),
            system.low_balance_threshold_micros,
        )
        for wallet, customer, system, balance, _ in found
    ]
    return WalletList(rows, total, page, per_page, sort)


def _runway_key(available: Any, consumed: ColumnElement[int]) -> ColumnElement[int]:
    """SQL: runway in hundredths of a day (available × 3000 ÷ consumed) for a wallet that burns;
    NULL otherwise. Never a float: on SQLite an integer division (whole hundredths, rounded down
    as runway_days shows them); on PostgreSQL the sums are NUMERIC and so is the quotient. Either
    way it orders as runway_days does."""
    hundredths: ColumnElement[int] = (
        available * (WINDOW_DAYS * 100) // case((consumed > 0, consumed), else_=None)
    )
    return hundredths
