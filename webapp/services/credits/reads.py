"""Reads of credit grants (domain.md, "Credit grants"): a customer's grants by wallet and status,
one grant with its allocations (paged), the allocations of ledger entries, and each wallet's
available / scheduled credits. Every door (API, dashboard, Metrifox) reads through here."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, and_, func, or_, select

from ...errors import NotFound, ValidationError
from ...extensions import db
from ...models import (
    DAILY_BASE,
    GRANT_STATUSES,
    CreditAllocation,
    CreditGrant,
    CreditSystem,
    Customer,
    Feature,
    LedgerEntry,
    UsageEvent,
    Wallet,
    WalletBurnDaily,
    grant_status,
    utcnow,
)
from ..actors import VIEW, Actor, require
from ..catalog import get_credit_system, get_customer
from ..paging import AnySelect, Page, keyset_page
from . import burn, runway, status_filter
from .rules import GrantRef, spending_key
from .runway import Runway


@dataclass(frozen=True)
class GrantView:
    id: int
    customer_key: str
    credit_system: str
    wallet_id: int
    kind: str
    status: str
    amount_micros: int
    remaining_micros: int
    consumed_micros: int  # Σ allocations: amount - remaining - expired - voided
    expired_micros: int
    voided_micros: int
    priority: int
    effective_at: datetime
    expires_at: datetime | None
    reference: str | None
    note: str | None
    unit_price: str | None
    currency: str | None
    actor: str
    created_at: datetime
    expired_at: datetime | None
    voided_at: datetime | None

    @classmethod
    def of(
        cls, grant: CreditGrant, customer_key: str, credit_system: str, now: datetime
    ) -> GrantView:
        return cls(
            id=grant.id,
            customer_key=customer_key,
            credit_system=credit_system,
            wallet_id=grant.wallet_id,
            kind=grant.kind,
            status=grant.status_at(now),
            amount_micros=grant.amount_micros,
            remaining_micros=grant.remaining_micros,
            consumed_micros=grant.amount_micros
            - grant.remaining_micros
            - grant.expired_micros
            - grant.voided_micros,
            expired_micros=grant.expired_micros,
            voided_micros=grant.voided_micros,
            priority=grant.priority,
            effective_at=grant.effective_at,
            expires_at=grant.expires_at,
            reference=grant.reference,
            note=grant.note,
            unit_price=grant.unit_price,
            currency=grant.currency,
            actor=grant.actor,
            created_at=grant.created_at,
            expired_at=grant.expired_at,
            voided_at=grant.voided_at,
        )

    @property
    def available_micros(self) -> int:
        """What it can still pay for now: its remaining while active, else nothing."""
        return self.remaining_micros if self.status == "active" else 0


@dataclass(frozen=True)
class AllocationView:
    id: int
    grant_id: int
    ledger_entry_id: int
    amount_micros: int
    entry_type: str  # usage / adjustment
    event_id: str | None  # the usage event's own id, for usage entries
    feature_key: str | None
    timestamp: datetime  # the deduction's time: the event's timestamp, or the entry's creation
    created_at: datetime


def _grant_rows() -> AnySelect:
    return (
        select(CreditGrant, Customer.key, CreditSystem.key)
        .join(Customer, Customer.id == CreditGrant.customer_id)
        .join(Wallet, Wallet.id == CreditGrant.wallet_id)
        .join(CreditSystem, CreditSystem.id == Wallet.credit_system_id)
    )


def _statuses(status: object) -> list[str]:
    """`status` as one status, a comma-separated list, or None/"" (all)."""
    if status in (None, ""):
        return []
    if not isinstance(status, str):
        raise ValidationError("`status` must be a string.", field="status")
    wanted = [s.strip() for s in status.split(",") if s.strip()]
    for s in wanted:
        if s not in GRANT_STATUSES:
            raise ValidationError(
                f"`status` must be one or more of: {', '.join(GRANT_STATUSES)}.", field="status"
            )
    return wanted


# What a wallet read lists when no `status` is asked for: the grants that can still pay.
LIVE_STATUSES = ("scheduled", "active")


def wanted_statuses(status: object, *, default: Iterable[str] = LIVE_STATUSES) -> list[str]:
    """A `status` filter as given to a read: one status, a comma-separated list, or `all`;
    None or "" is ``default``. An empty list means every status."""
    if status in (None, ""):
        return list(default)
    if status == "all":
        return []
    wanted = _statuses(status)
    if not wanted:
        raise ValidationError(
            f"`status` must be `all` or one or more of: {', '.join(GRANT_STATUSES)}.",
            field="status",
        )
    return list(dict.fromkeys(wanted))


def list_grants(
    actor: Actor,
    customer_key: object,
    *,
    credit_system: object = None,
    status: object = None,
    cursor: str | None = None,
    limit: object = None,
    now: datetime | None = None,
) -> Page[GrantView]:
    """A customer's grants, newest first, optionally of one credit system and some statuses."""
    require(actor, VIEW)
    now = now or utcnow()
    customer = get_customer(customer_key)
    stmt = _grant_rows().where(CreditGrant.customer_id == customer.id)
    if credit_system not in (None, ""):
        stmt = stmt.where(Wallet.credit_system_id == get_credit_system(credit_system).id)
    wanted = _statuses(status)
    if wanted:
        stmt = stmt.where(or_(*[status_filter(s, now) for s in wanted]))
    page = keyset_page(stmt, CreditGrant.id, lambda row: row[0].id, cursor=cursor, limit=limit)
    return Page([GrantView.of(g, ck, cs, now) for g, ck, cs in page.items], page.next_cursor)


def grants_of_wallets(
    wallet_ids: Iterable[int], *, statuses: Iterable[str] = (), now: datetime | None = None
) -> dict[int, list[GrantView]]:
    """Grants of some wallets in spending order (for a customer page: a handful of wallets),
    optionally only some statuses."""
    now = now or utcnow()
    ids = sorted(set(wallet_ids))
    if not ids:
        return {}
    stmt = _grant_rows().where(CreditGrant.wallet_id.in_(ids))
    wanted = list(statuses)
    if wanted:
        stmt = stmt.where(or_(*[status_filter(s, now) for s in wanted]))
    found: dict[int, list[GrantView]] = {wid: [] for wid in ids}
    for g, ck, cs in db.session.execute(stmt.order_by(CreditGrant.id)):
        found[g.wallet_id].append(GrantView.of(g, ck, cs, now))
    for views in found.values():
        views.sort(key=spending_key)
    return found


def get_grant(actor: Actor, grant_id: object, *, now: datetime | None = None) -> GrantView:
    require(actor, VIEW)
    gid = grant_id_of(grant_id)
    row = db.session.execute(_grant_rows().where(CreditGrant.id == gid)).first()
    if row is None:
        raise NotFound(f"No credit grant with id {gid}.", field="grant_id")
    grant, customer_key, credit_system = row
    return GrantView.of(grant, customer_key, credit_system, now or utcnow())


def grant_id_of(value: object) -> int:
    """A grant id from a path or a form: a positive integer, else 404."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise NotFound("No credit grant with that id.", field="grant_id")
    text = str(value).strip()
    if not text.isascii() or not text.isdigit() or len(text) > 18 or int(text) == 0:
        raise NotFound("No credit grant with that id.", field="grant_id")
    return int(text)


def _allocation_rows() -> AnySelect:
    return (
        select(
            CreditAllocation.id,
            CreditAllocation.grant_id,
            CreditAllocation.ledger_entry_id,
            CreditAllocation.amount_micros,
            LedgerEntry.type,
            UsageEvent.event_id,
            Feature.key,
            func.coalesce(UsageEvent.timestamp, LedgerEntry.created_at),
            LedgerEntry.created_at,
        )
        .join(LedgerEntry, LedgerEntry.id == CreditAllocation.ledger_entry_id)
        .outerjoin(UsageEvent, UsageEvent.id == LedgerEntry.usage_event_id)
        .outerjoin(Feature, Feature.id == UsageEvent.feature_id)
    )


def _allocation(row: tuple[object, ...]) -> AllocationView:
    return AllocationView(*row)  # type: ignore[arg-type]


def grant_allocations(
    actor: Actor, grant_id: object, *, cursor: str | None = None, limit: object = None
) -> Page[AllocationView]:
    """What one grant paid for, newest first (paged)."""
    grant = get_grant(actor, grant_id)
    stmt = _allocation_rows().where(CreditAllocation.grant_id == grant.id)
    page = keyset_page(stmt, CreditAllocation.id, lambda row: row[0], cursor=cursor, limit=limit)
    return Page([_allocation(row) for row in page.items], page.next_cursor)


def allocations_of_entries(entry_ids: Iterable[int]) -> dict[int, list[AllocationView]]:
    """Which grants paid for each of these ledger entries (one query, for a page of entries)."""
    ids = sorted(set(entry_ids))
    found: dict[int, list[AllocationView]] = {}
    if not ids:
        return found
    rows = db.session.execute(
        _allocation_rows()
        .where(CreditAllocation.ledger_entry_id.in_(ids))
        .order_by(CreditAllocation.id)
    )
    for row in rows:
        view = _allocation(tuple(row))
        found.setdefault(view.ledger_entry_id, []).append(view)
    return found


@dataclass(frozen=True)
class WalletCredits:
    """A wallet's credits by standing at one instant. ``available`` is what reads call the
    balance: credits effective and not expired now (booked or not)."""

    available_micros: int
    scheduled_micros: int  # effective later
    ledger_balance_micros: int  # Σ ledger entries = Σ remaining (expiries not yet booked included)


def wallet_credits(
    wallet_ids: Iterable[int], now: datetime | None = None
) -> dict[int, WalletCredits]:
    """Available and scheduled credits of some wallets, in one grouped query."""
    now = now or utcnow()
    ids = sorted(set(wallet_ids))
    if not ids:
        return {}
    g = CreditGrant
    live = and_(
        g.wallet_id == Wallet.id,
        g.remaining_micros > 0,
        or_(g.expires_at.is_(None), g.expires_at > now),
    )

    def total(when: ColumnElement[bool]) -> ColumnElement[int]:
        return func.coalesce(
            select(func.sum(g.remaining_micros)).where(live, when).scalar_subquery(), 0
        )

    rows = db.session.execute(
        select(
            Wallet.id,
            Wallet.balance_micros,
            total(g.effective_at <= now),
            total(g.effective_at > now),
        ).where(Wallet.id.in_(ids))
    )
    return {
        wid: WalletCredits(int(available), int(scheduled), balance)
        for wid, balance, available, scheduled in rows
    }


# ---------------------------------------------------------------- runway


def consumed_in_window(wallet_ids: Iterable[int], now: datetime) -> dict[int, int]:
    """What each wallet consumed over the burn window (runway), from the daily rollup: one
    grouped query, at most 30 rows a wallet, never the ledger or the events."""
    ids = sorted(set(wallet_ids))
    if not ids:
        return {}
    b = WalletBurnDaily
    rows = db.session.execute(
        select(b.wallet_id, func.sum(b.consumed_high), func.sum(b.consumed_micros))
        .where(b.wallet_id.in_(ids), b.day >= burn.window_start(now))
        .group_by(b.wallet_id)
    )
    # at most 30 rows a wallet: the parts' sums stay small; the total is a Python integer
    return {wid: int(high) * DAILY_BASE + int(low) for wid, high, low in rows}


def live_grant_refs(wallet_ids: Iterable[int], now: datetime) -> dict[int, list[GrantRef]]:
    """The grants that can still pay (credits left, expiry ahead; effective now or later) of some
    wallets, in one query: what the runway simulation spends."""
    ids = sorted(set(wallet_ids))
    found: dict[int, list[GrantRef]] = {wid: [] for wid in ids}
    if not ids:
        return found
    g = CreditGrant
    rows = db.session.execute(
        select(
            g.wallet_id, g.id, g.kind, g.priority, g.effective_at, g.expires_at, g.remaining_micros
        )
        .where(
            g.wallet_id.in_(ids),
            g.remaining_micros > 0,
            or_(g.expires_at.is_(None), g.expires_at > now),
        )
        .order_by(g.wallet_id, g.id)
    )
    for wid, gid, kind, priority, effective_at, expires_at, remaining in rows:
        found[wid].append(GrantRef(gid, kind, priority, effective_at, expires_at, remaining))
    return found


def wallet_runways(available: dict[int, int], now: datetime) -> dict[int, Runway]:
    """The runway of some wallets (``available``: wallet id -> balance available now): two
    queries whatever their number (the window's consumption, the live grants)."""
    consumed = consumed_in_window(available, now)
    grants = live_grant_refs(available, now)
    return {
        wid: runway.runway(
            available_micros=micros,
            consumed_micros=consumed.get(wid, 0),
            grants=grants.get(wid, []),
            now=now,
        )
        for wid, micros in available.items()
    }


__all__ = [
    "LIVE_STATUSES",
    "AllocationView",
    "GrantView",
    "WalletCredits",
    "allocations_of_entries",
    "get_grant",
    "grant_allocations",
    "grant_id_of",
    "grants_of_wallets",
    "list_grants",
    "wallet_credits",
    "wallet_runways",
    "wanted_statuses",
    "grant_status",
]
