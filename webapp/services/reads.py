"""Read models for the dashboard and the API: customer summary, events, ledger, customers.

Lists are keyset pages over ``id``, newest first (``paging``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

from sqlalchemy import Select, or_, select

from ..errors import ValidationError
from ..extensions import db
from ..models import (
    LEDGER_TYPES,
    CreditCost,
    CreditSystem,
    Customer,
    Entitlement,
    Feature,
    LedgerEntry,
    UsageCorrection,
    UsageCounter,
    UsageEvent,
    Wallet,
    utcnow,
)
from . import validation
from .actors import VIEW, VIEW_LEDGER, Actor, require
from .catalog import get_credit_system, get_customer, get_feature
from .credits.reads import (
    GrantView,
    grants_of_wallets,
    wallet_credits,
    wallet_runways,
    wanted_statuses,
)
from .credits.runway import Runway
from .paging import AnySelect, Page, keyset_page
from .periods import effective_period, next_reset, period_start

# ---------------------------------------------------------------- customer summary


@dataclass(frozen=True)
class EntitlementView:
    feature_key: str
    feature_name: str
    event_name: str
    feature_type: str
    allowance_micros: int | None
    used_micros: int
    reset_period: str
    overage: str
    reset_at: datetime | None
    credit_system: str | None
    cost_micros: int | None
    # Plans: where the values come from, the fields an override sets, a scheduled reset change.
    source: str = "customer"
    overridden: tuple[str, ...] = ()
    pending_reset_period: str | None = None
    pending_reset_at: datetime | None = None

    @property
    def available_micros(self) -> int | None:
        return None if self.allowance_micros is None else self.allowance_micros - self.used_micros


@dataclass(frozen=True)
class WalletView:
    credit_system: str
    name: str
    unit_singular: str
    unit_plural: str
    balance_micros: int  # available now: its grants effective and not expired (domain.md)
    wallet_id: int
    credit_system_id: int
    low_balance_threshold_micros: int | None
    scheduled_micros: int = 0  # grants effective later
    ledger_balance_micros: int = 0  # Σ ledger entries (expiries not yet booked included)
    runway: Runway | None = None  # burn, runway, run-out, expiring unused (domain.md, "Runway")

    @property
    def burn_rate_per_day(self) -> str | None:
        return None if self.runway is None else self.runway.burn_text

    @property
    def runway_days(self) -> str | None:
        return None if self.runway is None else self.runway.runway_text

    @property
    def runs_out_at(self) -> datetime | None:
        return None if self.runway is None else self.runway.runs_out_at

    @property
    def expiring_unused(self) -> str | None:
        return None if self.runway is None else self.runway.expiring_unused_text


@dataclass(frozen=True)
class CustomerSummary:
    customer: Customer
    entitlements: list[EntitlementView]
    wallets: list[WalletView]


def customer_summary(actor: Actor, key: object, *, now: datetime | None = None) -> CustomerSummary:
    """The customer with every entitlement's used / allowance / available / reset time and every
    wallet balance; four queries whatever the history size."""
    require(actor, VIEW)
    customer = get_customer(key)
    now = now or utcnow()
    rows = db.session.execute(
        select(Entitlement, Feature, CreditCost, CreditSystem.key)
        .join(Feature, Feature.id == Entitlement.feature_id)
        .outerjoin(CreditCost, CreditCost.feature_id == Feature.id)
        .outerjoin(CreditSystem, CreditSystem.id == CreditCost.credit_system_id)
        .where(Entitlement.customer_id == customer.id)
        .order_by(Feature.key)
    ).all()
    starts = {
        (ent.feature_id, period_start(now, effective_period(f.type, ent.reset_period)))
        for ent, f, _, _ in rows
    }
    used: dict[tuple[int, datetime], int] = {}
    if starts:
        for fid, start, micros in db.session.execute(
            select(UsageCounter.feature_id, UsageCounter.period_start, UsageCounter.used_micros)
            .where(UsageCounter.customer_id == customer.id)
            .where(
                or_(
                    *[
                        (UsageCounter.feature_id == fid) & (UsageCounter.period_start == start)
                        for fid, start in sorted(starts)
                    ]
                )
            )
        ):
            used[(fid, start)] = micros
    entitlements = []
    for ent, feature, cost, system_key in rows:
        period = effective_period(feature.type, ent.reset_period)
        start = period_start(now, period)
        entitlements.append(
            EntitlementView(
                feature_key=feature.key,
                feature_name=feature.name,
                event_name=feature.event_name,
                feature_type=feature.type,
                allowance_micros=ent.allowance_micros,
                used_micros=used.get((feature.id, start), 0),
                reset_period=ent.reset_period,
                overage=ent.overage,
                reset_at=next_reset(now, period) if feature.type == "consumable" else None,
                credit_system=system_key,
                cost_micros=None if cost is None else cost.cost_micros,
                source=ent.source,
                overridden=tuple(ent.overridden.split(",")) if ent.overridden else (),
                pending_reset_period=ent.pending_reset_period,
                pending_reset_at=ent.pending_reset_at,
            )
        )
    return CustomerSummary(customer, entitlements, wallets_of(customer.id, now))


def wallets_of(customer_id: int, now: datetime | None = None) -> list[WalletView]:
    rows = db.session.execute(
        select(Wallet, CreditSystem)
        .join(CreditSystem, CreditSystem.id == Wallet.credit_system_id)
        .where(Wallet.customer_id == customer_id)
        .order_by(CreditSystem.key)
    ).all()
    now = now or utcnow()
    standing = wallet_credits([wallet.id for wallet, _ in rows], now)
    runways = wallet_runways({wid: c.available_micros for wid, c in standing.items()}, now)
    return [
        WalletView(
            credit_system=system.key,
            name=system.name,
            unit_singular=system.unit_singular,
            unit_plural=system.unit_plural,
            balance_micros=standing[wallet.id].available_micros,
            wallet_id=wallet.id,
            credit_system_id=system.id,
            low_balance_threshold_micros=wallet.low_balance_threshold_micros,
            scheduled_micros=standing[wallet.id].scheduled_micros,
            ledger_balance_micros=wallet.balance_micros,
            runway=runways[wallet.id],
        )
        for wallet, system in rows
    ]


@dataclass(frozen=True)
class WalletGrants:
    wallet: WalletView
    grants: list[GrantView]  # in spending order


def customer_wallets(
    actor: Actor, customer_key: object, *, status: object = None, now: datetime | None = None
) -> list[WalletGrants]:
    """A customer's wallets with their credits and their grants of some statuses (`status`: one,
    a comma-separated list or `all`; default scheduled and active); three queries."""
    require(actor, VIEW)
    customer = get_customer(customer_key)
    now = now or utcnow()
    statuses = wanted_statuses(status)
    views = wallets_of(customer.id, now)
    grants = grants_of_wallets([w.wallet_id for w in views], statuses=statuses, now=now)
    return [WalletGrants(w, grants[w.wallet_id]) for w in views]


# ---------------------------------------------------------------- lists


@dataclass(frozen=True)
class CorrectionView:
    id: int
    event_id: str
    delta_micros: int
    effective_after_micros: int
    credits_micros: int | None
    reason: str
    actor: str
    created_at: datetime


def corrections_of_events(event_pks: Sequence[int]) -> dict[int, list[CorrectionView]]:
    """The corrections of these events (by usage_events.id), oldest first: one query for a page."""
    found: dict[int, list[CorrectionView]] = {}
    if not event_pks:
        return found
    rows = db.session.execute(
        select(UsageCorrection, UsageEvent.event_id)
        .join(UsageEvent, UsageEvent.id == UsageCorrection.usage_event_id)
        .where(UsageCorrection.usage_event_id.in_(sorted(set(event_pks))))
        .order_by(UsageCorrection.id)
    )
    for c, event_id in rows:
        found.setdefault(c.usage_event_id, []).append(
            CorrectionView(
                c.id,
                event_id,
                c.delta_micros,
                c.effective_after_micros,
                c.credits_micros,
                c.reason,
                c.actor,
                c.created_at,
            )
        )
    return found


@dataclass(frozen=True)
class EventView:
    id: int
    event_id: str
    customer_key: str
    feature_key: str
    event_name: str
    feature_type: str
    amount_micros: int
    timestamp: datetime
    metadata: dict[str, Any] | None
    credits_micros: int | None
    overage_micros: int
    actor: str
    recorded_at: datetime
    # domain.md, "Usage corrections": the amount after its corrections (oldest first).
    effective_amount_micros: int = 0
    # The credits it costs after its corrections: recorded - returned + charged; None when the
    # event charges no credits and no correction did either.
    effective_credits_micros: int | None = None
    corrections: tuple[CorrectionView, ...] = ()

    @classmethod
    def of(
        cls,
        event: UsageEvent,
        feature: Feature,
        customer_key: str,
        corrections: Sequence[CorrectionView] = (),
    ) -> EventView:
        given: dict[str, Any] = {
            "customer_key": customer_key,
            "feature_key": feature.key,
            "event_name": feature.event_name,
            "feature_type": feature.type,
            "metadata": event.extra,
            "effective_amount_micros": event.amount_micros
            + sum(c.delta_micros for c in corrections),
            "effective_credits_micros": net_credits(event.credits_micros, corrections),
            "corrections": tuple(corrections),
        }
        return cls(**given, **_rest(cls, event, given))


def net_credits(recorded: int | None, corrections: Sequence[CorrectionView]) -> int | None:
    """What an event costs after its corrections (a correction's credits are + returned,
    - charged); None when neither the event nor a correction moved credits."""
    moved = [c.credits_micros for c in corrections if c.credits_micros is not None]
    if recorded is None and not moved:
        return None
    return (recorded or 0) - sum(moved)


def _rest(view: type, row: Any, given: dict[str, Any]) -> dict[str, Any]:
    """The fields of ``view`` not ``given``, read from ``row``'s attributes of the same name."""
    return {f.name: getattr(row, f.name) for f in fields(view) if f.name not in given}


def _between(stmt: AnySelect, column: Any, since: object, until: object) -> AnySelect:
    """Rows with ``since <= column < until``; either end may be left open (None or "")."""
    if since not in (None, ""):
        stmt = stmt.where(column >= validation.parse_time(since, field="since"))
    if until not in (None, ""):
        stmt = stmt.where(column < validation.parse_time(until, field="until"))
    return stmt


def list_events(
    actor: Actor,
    customer_key: object,
    *,
    feature_key: object = None,
    since: object = None,
    until: object = None,
    event_id: object = None,
    cursor: str | None = None,
    limit: object = None,
) -> Page[EventView]:
    require(actor, VIEW)
    customer = get_customer(customer_key)
    stmt = (
        select(UsageEvent, Feature)
        .join(Feature, Feature.id == UsageEvent.feature_id)
        .where(UsageEvent.customer_id == customer.id)
    )
    if feature_key not in (None, ""):
        stmt = stmt.where(UsageEvent.feature_id == get_feature(feature_key=feature_key).id)
    stmt = _between(stmt, UsageEvent.timestamp, since, until)
    if event_id not in (None, ""):
        stmt = stmt.where(UsageEvent.event_id == validation.lookup_key(event_id, field="event_id"))
    page = keyset_page(stmt, UsageEvent.id, lambda row: row[0].id, cursor=cursor, limit=limit)
    # One query for the page's corrections.
    fixes = corrections_of_events([e.id for e, _ in page.items])
    return Page(
        [EventView.of(e, f, customer.key, fixes.get(e.id, ())) for e, f in page.items],
        page.next_cursor,
    )


@dataclass(frozen=True)
class LedgerView:
    id: int
    credit_system: str
    type: str
    kind: str | None
    amount_micros: int
    balance_after_micros: int
    reference: str | None
    note: str | None
    event_id: str | None
    actor: str
    created_at: datetime
    customer_key: str = ""
    grant_id: int | None = None  # topup, positive adjustment, expiry, void: its one grant

    @classmethod
    def of(
        cls, entry: LedgerEntry, credit_system: str, event_id: str | None, customer_key: str = ""
    ) -> LedgerView:
        given: dict[str, Any] = {
            "credit_system": credit_system,
            "event_id": event_id,
            "customer_key": customer_key,
        }
        return cls(**given, **_rest(cls, entry, given))


def _ledger_page(stmt: AnySelect, cursor: str | None, limit: object) -> Page[LedgerView]:
    """One keyset page of ledger rows (entry, credit system key, event id, customer key)."""
    page = keyset_page(stmt, LedgerEntry.id, lambda row: row[0].id, cursor=cursor, limit=limit)
    return Page([LedgerView.of(*row) for row in page.items], page.next_cursor)


def ledger_rows(credit_system: object) -> AnySelect:
    """Ledger rows as the reads show them: entry, credit system key, event id, customer key
    (optionally of one credit system)."""
    stmt = (
        select(LedgerEntry, CreditSystem.key, UsageEvent.event_id, Customer.key)
        .join(Wallet, Wallet.id == LedgerEntry.wallet_id)
        .join(CreditSystem, CreditSystem.id == Wallet.credit_system_id)
        .join(Customer, Customer.id == LedgerEntry.customer_id)
        .outerjoin(UsageEvent, UsageEvent.id == LedgerEntry.usage_event_id)
    )
    if credit_system not in (None, ""):
        stmt = stmt.where(Wallet.credit_system_id == get_credit_system(credit_system).id)
    return stmt


def list_ledger(
    actor: Actor,
    customer_key: object,
    *,
    credit_system: object = None,
    cursor: str | None = None,
    limit: object = None,
) -> Page[LedgerView]:
    require(actor, VIEW)
    customer = get_customer(customer_key)
    stmt = ledger_rows(credit_system).where(LedgerEntry.customer_id == customer.id)
    return _ledger_page(stmt, cursor, limit)


def list_all_ledger(
    actor: Actor,
    *,
    entry_type: object = None,
    credit_system: object = None,
    since: object = None,
    until: object = None,
    actor_label: object = None,
    cursor: str | None = None,
    limit: object = None,
) -> Page[LedgerView]:
    """Every customer's ledger entries, newest first: finance's view across customers. Filters:
    entry type, credit system, a time range [since, until) and the exact actor label."""
    require(actor, VIEW_LEDGER)
    stmt = ledger_rows(credit_system)
    if entry_type not in (None, ""):
        if entry_type not in LEDGER_TYPES:
            raise ValidationError(f"`type` must be one of {', '.join(LEDGER_TYPES)}.", field="type")
        stmt = stmt.where(LedgerEntry.type == entry_type)
    stmt = _between(stmt, LedgerEntry.created_at, since, until)
    if actor_label not in (None, ""):
        stmt = stmt.where(LedgerEntry.actor == str(actor_label)[:300])
    return _ledger_page(stmt, cursor, limit)


def customers_matching(search: object) -> Select[Customer]:
    """Customers whose key, name or email contains ``search`` (all of them without one)."""
    stmt = select(Customer)
    if search not in (None, ""):
        term = str(search)[:100].lower()  # `%` and `_` are letters here (autoescape)
        stmt = stmt.where(
            or_(
                Customer.key.icontains(term, autoescape=True),
                Customer.name.icontains(term, autoescape=True),
                Customer.email.icontains(term, autoescape=True),
            )
        )
    return stmt


def list_customers(
    actor: Actor, *, cursor: str | None = None, limit: object = None, search: object = None
) -> Page[Customer]:
    require(actor, VIEW)
    stmt = customers_matching(search)
    return keyset_page(stmt, Customer.id, lambda c: c.id, cursor=cursor, limit=limit, scalars=True)
