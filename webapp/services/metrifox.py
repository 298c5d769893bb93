"""Reads for the Metrifox-compatible door: the SDK pages with `page` / `per_page` and expects
totals, so its lists are ``paging.numbered_page`` over the same newest-first queries. Its credit
allocations are our credit grants, read here in the shapes the SDK pages through."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, or_, select

from ..errors import NotFound, ValidationError
from ..extensions import db
from ..models import (
    GRANT_STATUSES,
    AuditLog,
    CreditAllocation,
    CreditGrant,
    CreditSystem,
    Customer,
    Feature,
    LedgerEntry,
    UsageEvent,
    Wallet,
    utcnow,
)
from .actors import VIEW, Actor, require
from .catalog import get_customer, get_feature
from .credits import reads as credit_reads
from .credits import spending_order, status_filter
from .credits.reads import GrantView
from .paging import AnySelect, NumberedPage, numbered_page
from .reads import EventView, corrections_of_events, customers_matching


def list_events_paged(
    actor: Actor,
    *,
    customer_key: object = None,
    feature_key: object = None,
    page: object = None,
    per_page: object = None,
) -> NumberedPage[EventView]:
    """Usage events, newest first, optionally of one customer and/or one feature."""
    require(actor, VIEW)
    conditions = []
    if customer_key not in (None, ""):
        conditions.append(UsageEvent.customer_id == get_customer(customer_key).id)
    if feature_key not in (None, ""):
        conditions.append(UsageEvent.feature_id == get_feature(feature_key=feature_key).id)
    stmt = (
        select(UsageEvent, Feature, Customer.key)
        .join(Feature, Feature.id == UsageEvent.feature_id)
        .join(Customer, Customer.id == UsageEvent.customer_id)
        .where(*conditions)
    )
    found = numbered_page(stmt, UsageEvent.id, page=page, per_page=per_page)
    fixes = corrections_of_events([e.id for e, _, _ in found.items])  # one query a page
    items = [EventView.of(e, f, ckey, fixes.get(e.id, ())) for e, f, ckey in found.items]
    return NumberedPage(items, found.page, found.per_page, found.total_count)


def list_customers_paged(
    actor: Actor, *, page: object = None, per_page: object = None, search: object = None
) -> NumberedPage[Customer]:
    """Customers, newest first, optionally matching ``search`` in key, name or email."""
    require(actor, VIEW)
    stmt = customers_matching(search)
    return numbered_page(stmt, Customer.id, page=page, per_page=per_page, scalars=True)


def archived_at(actor: Actor, customer_keys: list[str]) -> dict[str, datetime]:
    """When each archived customer among ``customer_keys`` was last archived (from the audit log);
    active customers are left out."""
    require(actor, VIEW)
    if not customer_keys:
        return {}
    rows = db.session.execute(
        select(AuditLog.customer_key, func.max(AuditLog.at))
        .join(Customer, Customer.key == AuditLog.customer_key)
        .where(
            AuditLog.customer_key.in_(customer_keys),
            AuditLog.action == "customer.archived",
            Customer.status == "archived",
        )
        .group_by(AuditLog.customer_key)
    ).all()
    return {key: at for key, at in rows if key is not None}


# ---------------------------------------------------------------- credit allocations
#
# Metrifox calls a lot of credits an "allocation"; ours is a credit grant (domain.md, "Credit
# grants"), and the part of one deduction a grant paid for is what Metrifox lists as the
# allocation's "transactions". The SDK's `status` filter takes Metrifox's `active` / `expired`,
# which are our statuses of the same name, and our own `scheduled` / `depleted` / `voided`.

LIVE_STATUSES = ("active", "scheduled")  # the grants that make up a wallet's credits, now or later
RECENT_TRANSACTIONS = 10  # per allocation in a list; one allocation pages through all of them
MAX_WALLET_ALLOCATIONS = 100  # per wallet in a wallet list; the allocations list pages through all


@dataclass(frozen=True)
class TransactionView:
    """One part of a deduction paid by one grant (an allocation row), with its usage event."""

    id: int
    grant_id: int
    amount_micros: int
    entry_type: str  # usage / adjustment
    event_id: str | None  # the usage event's own id (the one its sender gave)
    event_name: str | None
    feature_key: str | None
    quantity_micros: int | None  # the whole event's quantity, even when several grants paid
    timestamp: datetime  # the event's timestamp, or the entry's creation for an adjustment
    created_at: datetime  # when the credits were taken


def _transaction_rows() -> AnySelect:
    return (
        select(
            CreditAllocation.id.label("id"),
            CreditAllocation.grant_id.label("grant_id"),
            CreditAllocation.amount_micros.label("amount_micros"),
            LedgerEntry.type.label("entry_type"),
            UsageEvent.event_id.label("event_id"),
            Feature.event_name.label("event_name"),
            Feature.key.label("feature_key"),
            UsageEvent.amount_micros.label("quantity_micros"),
            func.coalesce(UsageEvent.timestamp, LedgerEntry.created_at).label("timestamp"),
            LedgerEntry.created_at.label("created_at"),
        )
        .join(LedgerEntry, LedgerEntry.id == CreditAllocation.ledger_entry_id)
        .outerjoin(UsageEvent, UsageEvent.id == LedgerEntry.usage_event_id)
        .outerjoin(Feature, Feature.id == UsageEvent.feature_id)
    )


def _transaction(row: Sequence[Any]) -> TransactionView:
    return TransactionView(*row)


def wallet_id_of(value: object) -> int:
    """A wallet id from a path (or a caller's int): a positive integer, else 404."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise NotFound("No wallet with that id.", field="wallet_id")
    text = str(value).strip()
    if not text.isascii() or not text.isdigit() or len(text) > 18 or int(text) == 0:
        raise NotFound("No wallet with that id.", field="wallet_id")
    return int(text)


def _statuses(status: object) -> list[str]:
    """`status`: one status or a comma-separated list; None or "" is every status."""
    if status in (None, ""):
        return []
    wanted = [s.strip() for s in status.split(",")] if isinstance(status, str) else [""]
    for s in wanted:
        if s not in GRANT_STATUSES:
            raise ValidationError(
                f"`status` must be one or more of: {', '.join(GRANT_STATUSES)}.", field="status"
            )
    return wanted


def wallet_allocations_paged(
    actor: Actor,
    wallet_id: object,
    *,
    status: object = None,
    page: object = None,
    per_page: object = None,
    now: datetime | None = None,
) -> NumberedPage[GrantView]:
    """One wallet's grants, newest first, optionally of some statuses (at ``now``)."""
    require(actor, VIEW)
    now = now or utcnow()
    wid = wallet_id_of(wallet_id)
    found = db.session.execute(
        select(Customer.key, CreditSystem.key)
        .join(Wallet, Wallet.customer_id == Customer.id)
        .join(CreditSystem, CreditSystem.id == Wallet.credit_system_id)
        .where(Wallet.id == wid)
    ).first()
    if found is None:
        raise NotFound(f"No wallet with id {wid}.", field="wallet_id")
    customer_key, credit_system = found
    wanted = _statuses(status)
    stmt = select(CreditGrant).where(CreditGrant.wallet_id == wid)
    if wanted:
        stmt = stmt.where(or_(*[status_filter(s, now) for s in wanted]))
    grants = numbered_page(stmt, CreditGrant.id, page=page, per_page=per_page, scalars=True)
    items = [GrantView.of(g, customer_key, credit_system, now) for g in grants.items]
    return NumberedPage(items, grants.page, grants.per_page, grants.total_count)


def live_allocations(
    wallet_ids: Iterable[int],
    now: datetime | None = None,
    *,
    per_wallet: int = MAX_WALLET_ALLOCATIONS,
) -> dict[int, list[GrantView]]:
    """The grants that make up each wallet's credits: the active ones in spending order, then the
    scheduled ones in the order they will be spent (spent, expired and voided grants are left
    out), at most ``per_wallet`` of each wallet. One query, however many grants a wallet has."""
    now = now or utcnow()
    ids = sorted(set(wallet_ids))
    if not ids:
        return {}
    g = CreditGrant
    order = spending_order(now)
    ranked = (
        select(g.id, func.row_number().over(partition_by=g.wallet_id, order_by=order).label("rank"))
        .where(
            g.wallet_id.in_(ids),
            or_(*[status_filter(status, now) for status in LIVE_STATUSES]),
        )
        .subquery()
    )
    rows = db.session.execute(
        select(g, Customer.key, CreditSystem.key)
        .join(ranked, ranked.c.id == g.id)
        .join(Customer, Customer.id == g.customer_id)
        .join(Wallet, Wallet.id == g.wallet_id)
        .join(CreditSystem, CreditSystem.id == Wallet.credit_system_id)
        .where(ranked.c.rank <= per_wallet)
        .order_by(g.wallet_id, ranked.c.rank)
    )
    found: dict[int, list[GrantView]] = {wid: [] for wid in ids}
    for grant, customer_key, credit_system in rows:
        found[grant.wallet_id].append(GrantView.of(grant, customer_key, credit_system, now))
    return found


def allocation_transactions(
    actor: Actor, grant_id: object, *, page: object = None, per_page: object = None
) -> tuple[GrantView, NumberedPage[TransactionView]]:
    """One grant and a numbered page of what it paid for, newest first."""
    grant = credit_reads.get_grant(actor, grant_id)
    stmt = _transaction_rows().where(CreditAllocation.grant_id == grant.id)
    found = numbered_page(stmt, CreditAllocation.id, page=page, per_page=per_page)
    items = [_transaction(row) for row in found.items]
    return grant, NumberedPage(items, found.page, found.per_page, found.total_count)


@dataclass(frozen=True)
class RecentTransactions:
    items: list[TransactionView]  # the newest, at most RECENT_TRANSACTIONS
    total_count: int


def recent_transactions(
    grant_ids: Iterable[int], per_grant: int = RECENT_TRANSACTIONS
) -> dict[int, RecentTransactions]:
    """The newest few transactions of each grant and how many it has: two queries for a page of
    grants, however many transactions each has."""
    ids = sorted(set(grant_ids))
    if not ids:
        return {}
    counts: dict[int, int] = {
        gid: count
        for gid, count in db.session.execute(
            select(CreditAllocation.grant_id, func.count())
            .where(CreditAllocation.grant_id.in_(ids))
            .group_by(CreditAllocation.grant_id)
        )
    }
    rank = (
        func.row_number()
        .over(partition_by=CreditAllocation.grant_id, order_by=CreditAllocation.id.desc())
        .label("rank")
    )
    ranked = (
        _transaction_rows().add_columns(rank).where(CreditAllocation.grant_id.in_(ids)).subquery()
    )
    rows = db.session.execute(
        select(*[c for c in ranked.c if c.name != "rank"])
        .where(ranked.c.rank <= per_grant)
        .order_by(ranked.c.id.desc())
    )
    found = {gid: RecentTransactions([], counts.get(gid, 0)) for gid in ids}
    for row in rows:
        view = _transaction(tuple(row))
        found[view.grant_id].items.append(view)
    return found
