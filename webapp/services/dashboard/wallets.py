"""The wallets page: every wallet, lowest balance first, with search and pages."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, or_, select

from ...extensions import db
from ...models import CreditSystem, Customer, Wallet, utcnow
from ..actors import VIEW, Actor, require
from ..credits import available_balance
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
    default_threshold_micros: int | None = None  # its credit system's, for wallets without one

    @property
    def threshold_micros(self) -> int | None:
        """The threshold in force: the wallet's own, else its credit system's."""
        own = self.low_balance_threshold_micros
        return self.default_threshold_micros if own is None else own


@dataclass(frozen=True)
class WalletList:
    rows: list[WalletRow]
    total: int
    page: int
    per_page: int

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
) -> WalletList:
    require(actor, VIEW)
    page, per_page = page_bounds(page, per_page)
    available = available_balance(utcnow())
    stmt = (
        select(Wallet, Customer, CreditSystem, available.label("available"))
        .join(Customer, Customer.id == Wallet.customer_id)
        .join(CreditSystem, CreditSystem.id == Wallet.credit_system_id)
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
            system.low_balance_threshold_micros,
        )
        for wallet, customer, system, balance in db.session.execute(
            stmt.order_by(available, Wallet.id).offset((page - 1) * per_page).limit(per_page)
        )
    ]
    return WalletList(rows, total, page, per_page)
