"""Credit grants in the database (domain.md, "Credit grants"): the wallet lock every wallet write
takes, ledger posting, issuing a grant, deducting with allocations, booking expiries (before any
write's own decision, and in the `flask credits expire` sweep), and the reads of grants.

The pure rules (eligibility, spending order, allocation) are in rules.py. The usage hot path
(services/usage/store.py) applies the same rules to rows it loads and writes in bulk."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, ScalarSelect, and_, case, func, or_, select
from sqlalchemy.orm import InstrumentedAttribute

from ...errors import InsufficientCredits, ValidationError
from ...extensions import db
from ...models import (
    CreditAllocation,
    CreditGrant,
    CreditSystem,
    Customer,
    LedgerEntry,
    Wallet,
    utcnow,
)
from .. import alerts, outbox
from ..money import check_total, format_micros
from ..tx import transactional
from . import burn, rollup
from .rules import GrantRef, allocate, due, eligible, eligible_balance, spending_key

__all__ = [
    "EXPIRY_ACTOR",
    "GrantRef",
    "allocate",
    "available_balance",
    "book_expiries",
    "burn",
    "deduct",
    "due",
    "eligible",
    "eligible_balance",
    "expire_due",
    "live_grants",
    "lock_wallet",
    "locked_wallet",
    "post",
    "spending_key",
]

EXPIRY_ACTOR = "system:expiry"


def locked_wallet(customer: Customer, system: CreditSystem, *, create: bool) -> Wallet | None:
    """The wallet to write to, locked. Every wallet write by a person or a key comes here first,
    so an archived customer's wallets are refused in one place, whatever the write."""
    if customer.status != "active":
        raise ValidationError(f"Customer {customer.key!r} is archived.", field="customer_key")
    stmt = (
        select(Wallet)
        .where(Wallet.customer_id == customer.id, Wallet.credit_system_id == system.id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    wallet = db.session.scalar(stmt)
    if wallet is None and create:
        # Created on first topup. Two first topups at once: one insert fails on the unique key
        # and its transaction is retried, finding this wallet.
        wallet = Wallet(customer_id=customer.id, credit_system_id=system.id, balance_micros=0)
        db.session.add(wallet)
        db.session.flush()
    return wallet


def lock_wallet(wallet_id: int) -> Wallet:
    """A wallet locked by id, whatever its customer's status (the expiry sweep, voids)."""
    wallet = db.session.scalar(
        select(Wallet)
        .where(Wallet.id == wallet_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    assert wallet is not None
    return wallet


def live_grants(wallet_id: int) -> list[CreditGrant]:
    """The wallet's grants with credits left (read under the wallet's lock)."""
    return list(
        db.session.scalars(
            select(CreditGrant)
            .where(CreditGrant.wallet_id == wallet_id, CreditGrant.remaining_micros > 0)
            .order_by(CreditGrant.id)
            .execution_options(populate_existing=True)
        )
    )


def post(
    actor_label: str,
    wallet: Wallet,
    *,
    type: str,
    amount_micros: int,
    now: datetime,
    grant_id: int | None = None,
    kind: str | None = None,
    reference: str | None = None,
    note: str | None = None,
    idempotency_key: str | None = None,
    fingerprint: str | None = None,
) -> LedgerEntry:
    """One ledger entry, moving the (locked) wallet's balance with it."""
    balance = wallet.balance_micros + amount_micros
    check_total(balance, what="The wallet balance")
    wallet.balance_micros = balance
    wallet.updated_at = now
    wallet.version = (wallet.version or 0) + 1
    entry = LedgerEntry(
        wallet_id=wallet.id,
        customer_id=wallet.customer_id,
        type=type,
        kind=kind,
        amount_micros=amount_micros,
        balance_after_micros=balance,
        grant_id=grant_id,
        reference=reference,
        note=note,
        idempotency_key=idempotency_key,
        fingerprint=fingerprint,
        actor=actor_label,
        created_at=now,
    )
    db.session.add(entry)
    db.session.flush()
    category = rollup.entry_category(type, amount_micros)
    if category is not None and grant_id is not None:
        # The entry's grant is in the session (just issued, or loaded under the wallet's lock):
        # no query. Entries paid by allocations are rolled up where those are made (deduct).
        grant = db.session.get(CreditGrant, grant_id)
        assert grant is not None
        name, sign = category
        rollup.defer(
            db.session(),
            [
                rollup.grant_row(
                    wallet.credit_system_id,
                    wallet.customer_id,
                    now,
                    name,
                    grant,
                    sign * amount_micros,
                )
            ],
        )
    return entry


def book_expiries(wallet: Wallet, grants: Sequence[CreditGrant], now: datetime) -> None:
    """Book the expiry of every grant whose time has come with credits left: one `expiry` entry
    each, taking its remaining out of the wallet. Done under the wallet's lock, before the
    write's own decision; a grant is emptied by it, so it is never booked twice. Each booking
    with credits left writes credits.expired to the outbox (docs/domain.md, "Alerts")."""
    booked = due(grants, now)
    if booked:
        customer_key, system_key, _ = alerts.wallet_context(wallet)
        outbox.emit_many(
            db.session.connection(),
            [
                alerts.expired_event(
                    customer_key=customer_key,
                    credit_system=system_key,
                    grant_id=g.id,
                    amount=g.remaining_micros,
                    at=now,
                )
                for g in sorted(booked, key=lambda g: g.id)
            ],
        )
    for grant in booked:
        left = grant.remaining_micros
        grant.remaining_micros = 0
        grant.expired_micros = left
        grant.expired_at = now
        post(
            EXPIRY_ACTOR,
            wallet,
            type="expiry",
            amount_micros=-left,
            now=now,
            grant_id=grant.id,
            reference=f"grant:{grant.id}",
        )


def deduct(
    wallet: Wallet,
    grants: Sequence[CreditGrant],
    amount: int,
    at: datetime,
    entry_for: Callable[[], LedgerEntry],
    *,
    refusal: str = "This needs {amount} credits; the wallet has {available} available.",
) -> LedgerEntry:
    """Spend ``amount`` micros from the grants eligible at ``at`` (after book_expiries): raises
    InsufficientCredits (nothing written) when they hold less; otherwise posts the entry
    (``entry_for``) and its allocations."""
    refs = {g.id: _ref(g) for g in grants}
    available = eligible_balance(refs.values(), at)
    if available < amount:
        raise InsufficientCredits(
            refusal.format(amount=format_micros(amount), available=format_micros(available)),
            field="amount",
            credits_required=format_micros(amount),
            eligible_balance=format_micros(available),
            # what reads call the balance: available now (RecordUsage's 402 says the same)
            wallet_balance=format_micros(eligible_balance(refs.values(), utcnow())),
        )
    entry = entry_for()
    by_id = {g.id: g for g in grants}
    name, sign = rollup.ALLOCATION_CATEGORY[entry.type]
    rows = []
    for ref, part in allocate(list(refs.values()), amount, at):
        by_id[ref.id].remaining_micros = ref.remaining_micros
        db.session.add(
            CreditAllocation(ledger_entry_id=entry.id, grant_id=ref.id, amount_micros=part)
        )
        rows.append(
            rollup.grant_row(
                wallet.credit_system_id,
                wallet.customer_id,
                entry.created_at,
                name,
                by_id[ref.id],
                sign * part,
            )
        )
    db.session.flush()
    rollup.defer(db.session(), rows)
    return entry


def _ref(grant: CreditGrant) -> GrantRef:
    return GrantRef(
        grant.id,
        grant.kind,
        grant.priority,
        grant.effective_at,
        grant.expires_at,
        grant.remaining_micros,
    )


# ---------------------------------------------------------------- the expiry sweep


@dataclass(frozen=True)
class SweepProgress:
    wallets: int
    grants: int


def _due_wallets(now: datetime, after: int, limit: int) -> list[int]:
    return list(
        db.session.scalars(
            select(CreditGrant.wallet_id)
            .where(
                CreditGrant.expires_at <= now,
                CreditGrant.remaining_micros > 0,
                CreditGrant.wallet_id > after,
            )
            .group_by(CreditGrant.wallet_id)
            .order_by(CreditGrant.wallet_id)
            .limit(limit)
        )
    )


@transactional
def _expire_wallets(wallet_ids: list[int], now: datetime) -> int:
    booked = 0
    for wallet_id in sorted(wallet_ids):  # lock order: wallet id, as every writer
        wallet = lock_wallet(wallet_id)
        grants = live_grants(wallet_id)
        before = sum(1 for g in grants if g.remaining_micros > 0)
        value = alerts.spendable(grants, now)
        book_expiries(wallet, grants, now)
        alerts.wallet_written(wallet, value, grants, now, cause="expiry")
        booked += before - sum(1 for g in grants if g.remaining_micros > 0)
    return booked


def expire_due(
    *,
    now: datetime | None = None,
    batch: int = 200,
    progress: Callable[[SweepProgress], None] | None = None,
) -> SweepProgress:
    """`flask credits expire`: book every due expiry, a batch of wallets per transaction, in
    wallet order. Idempotent (a booked grant is empty) and safe beside traffic and beside another
    sweep (each wallet is re-read under its lock)."""
    now = now or utcnow()
    wallets = grants = 0
    after = 0
    while True:
        ids = _due_wallets(now, after, batch)
        db.session.rollback()  # end the read transaction before the write one
        if not ids:
            break
        grants += _expire_wallets(ids, now)
        wallets += len(ids)
        after = ids[-1]
        if progress is not None:
            progress(SweepProgress(wallets, grants))
    return SweepProgress(wallets, grants)


# ---------------------------------------------------------------- reads


def available_balance(now: datetime) -> ScalarSelect[int]:
    """SQL: a wallet's credits available at ``now`` (Σ remaining of its grants effective and not
    expired at ``now``), as a correlated scalar subquery on Wallet. Expired credits are not
    available from the instant of expiry, booked or not."""
    return (
        select(func.coalesce(func.sum(CreditGrant.remaining_micros), 0))
        .where(
            CreditGrant.wallet_id == Wallet.id,
            CreditGrant.remaining_micros > 0,
            CreditGrant.effective_at <= now,
            or_(CreditGrant.expires_at.is_(None), CreditGrant.expires_at > now),
        )
        .correlate(Wallet)
        .scalar_subquery()
    )


def spending_order(now: datetime) -> tuple[ColumnElement[Any] | InstrumentedAttribute[Any], ...]:
    """ORDER BY for grants: the ones effective at ``now`` first, then rules.spending_key in SQL
    (priority, soonest expiry with none last, granted first, earliest effective, id)."""
    g = CreditGrant
    return (
        case((g.effective_at <= now, 0), else_=1),
        g.priority,
        case((g.expires_at.is_(None), 1), else_=0),
        g.expires_at,
        case((g.kind == "granted", 0), else_=1),
        g.effective_at,
        g.id,
    )


def status_filter(status: str, now: datetime) -> ColumnElement[bool]:
    """SQL condition for a grant status (scheduled / active / depleted / expired / voided); the
    same as models.grant_status."""
    g = CreditGrant
    not_expired = or_(g.expires_at.is_(None), g.expires_at > now)
    return {
        "voided": g.voided_at.is_not(None),
        "expired": and_(
            g.voided_at.is_(None),
            or_(g.expired_micros > 0, and_(g.remaining_micros > 0, ~not_expired)),
        ),
        "depleted": and_(g.voided_at.is_(None), g.expired_micros == 0, g.remaining_micros == 0),
        "scheduled": and_(g.remaining_micros > 0, not_expired, g.effective_at > now),
        "active": and_(g.remaining_micros > 0, not_expired, g.effective_at <= now),
    }[status]
