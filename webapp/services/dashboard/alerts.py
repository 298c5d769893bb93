"""The overview's in-app alerts, for every role (docs/domain.md, "Alerts"): customers near a
limit, wallets at or under their low-balance threshold, credits expiring soon. What the alert
events say, read from the current state: three queries, whatever the size (each returns its
first rows and the total count)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import Numeric, cast, func, select

from ...extensions import db
from ...models import (
    CreditGrant,
    CreditSystem,
    Customer,
    Entitlement,
    Feature,
    UsageCounter,
    Wallet,
    utcnow,
)
from ..actors import VIEW, Actor, require
from ..alerts import expiring_days
from ..credits import available_balance
from .current import current_usage
from .customers import NEAR_LIMIT_PERCENT

SHOWN = 5


@dataclass(frozen=True)
class NearLimit:
    customer_key: str
    customer_name: str
    feature_key: str
    feature_name: str
    used_micros: int
    allowance_micros: int

    @property
    def percent(self) -> int:
        return self.used_micros * 100 // self.allowance_micros


@dataclass(frozen=True)
class LowWallet:
    customer_key: str
    customer_name: str
    credit_system: str
    credit_system_name: str
    balance_micros: int
    threshold_micros: int


@dataclass(frozen=True)
class Expiring:
    customer_key: str
    customer_name: str
    credit_system: str
    grant_id: int
    remaining_micros: int
    expires_at: datetime


@dataclass(frozen=True)
class InAppAlerts:
    near_limit: list[NearLimit] = field(default_factory=list)
    near_limit_total: int = 0
    low_wallets: list[LowWallet] = field(default_factory=list)
    low_wallets_total: int = 0
    expiring: list[Expiring] = field(default_factory=list)
    expiring_total: int = 0
    expiring_days: int = 7
    near_limit_percent: int = NEAR_LIMIT_PERCENT

    @property
    def any(self) -> bool:
        return bool(self.near_limit_total or self.low_wallets_total or self.expiring_total)


def in_app_alerts(actor: Actor, *, now: datetime | None = None) -> InAppAlerts:
    require(actor, VIEW)
    now = now or utcnow()
    total = func.count().over()

    # Active customers' entitlements used at NEAR_LIMIT_PERCENT or more this period, fullest first.
    used = cast(UsageCounter.used_micros, Numeric)
    # The share in percent (whole on SQLite, exact on PostgreSQL): only for the order.
    share = used * 100 / cast(Entitlement.allowance_micros, Numeric)
    near = db.session.execute(
        current_usage(now)
        .with_only_columns(
            Customer.key,
            Customer.name,
            Feature.key,
            Feature.name,
            UsageCounter.used_micros,
            Entitlement.allowance_micros,
            total,
        )
        .join(Customer, Customer.id == Entitlement.customer_id)
        .where(
            Customer.status == "active",
            Entitlement.allowance_micros > 0,
            used * 100 >= cast(Entitlement.allowance_micros, Numeric) * NEAR_LIMIT_PERCENT,
        )
        .order_by(share.desc(), Customer.key, Feature.key)
        .limit(SHOWN)
    ).all()

    # Wallets at or under their threshold (their own, else their credit system's), lowest first.
    available = available_balance(now)
    threshold = func.coalesce(
        Wallet.low_balance_threshold_micros, CreditSystem.low_balance_threshold_micros
    )
    low = db.session.execute(
        select(
            Customer.key,
            Customer.name,
            CreditSystem.key,
            CreditSystem.name,
            available,
            threshold,
            total,
        )
        .select_from(Wallet)
        .join(Customer, Customer.id == Wallet.customer_id)
        .join(CreditSystem, CreditSystem.id == Wallet.credit_system_id)
        .where(Customer.status == "active", threshold.is_not(None), available <= threshold)
        .order_by(available, Wallet.id)
        .limit(SHOWN)
    ).all()

    # Grants with credits left that expire within CREDITS_EXPIRING_SOON_DAYS, soonest first.
    days = expiring_days()
    expiring = db.session.execute(
        select(
            Customer.key,
            Customer.name,
            CreditSystem.key,
            CreditGrant.id,
            CreditGrant.remaining_micros,
            CreditGrant.expires_at,
            total,
        )
        .select_from(CreditGrant)
        .join(Wallet, Wallet.id == CreditGrant.wallet_id)
        .join(Customer, Customer.id == Wallet.customer_id)
        .join(CreditSystem, CreditSystem.id == Wallet.credit_system_id)
        .where(
            CreditGrant.remaining_micros > 0,
            CreditGrant.voided_at.is_(None),
            CreditGrant.expires_at > now,
            CreditGrant.expires_at <= now + timedelta(days=days),
        )
        .order_by(CreditGrant.expires_at, CreditGrant.id)
        .limit(SHOWN)
    ).all()
    return InAppAlerts(
        near_limit=[NearLimit(r[0], r[1], r[2], r[3], r[4], r[5] or 0) for r in near],
        near_limit_total=near[0][-1] if near else 0,
        low_wallets=[LowWallet(*row[:4], int(row[4]), int(row[5])) for row in low],
        low_wallets_total=low[0][-1] if low else 0,
        expiring=[Expiring(r[0], r[1], r[2], r[3], r[4], r[5] or now) for r in expiring],
        expiring_total=expiring[0][-1] if expiring else 0,
        expiring_days=days,
    )
