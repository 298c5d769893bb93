"""The customer page's credit grants (domain.md, "Credit grants"): each wallet's current grants
in spending order and its past ones on request, one grant of one customer, what a ledger entry
was paid by, and the confirmation a void asks for. Reads only; writes are wallets.void_grant."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import func, or_, select

from ...errors import NotFound
from ...extensions import db
from ...models import CreditGrant, LedgerEntry, utcnow
from ..actors import VIEW, Actor, require
from ..catalog import get_customer
from ..credits import status_filter
from ..credits.reads import (
    AllocationView,
    GrantView,
    allocations_of_entries,
    get_grant,
    grant_id_of,
    grants_of_wallets,
    list_grants,
)
from ..money import format_micros
from ..reads import LedgerView, ledger_rows, wallets_of

CURRENT = ("scheduled", "active")  # shown by default
PAST = ("depleted", "expired", "voided")  # behind the toggle
PAST_SHOWN = 50  # past grants listed at most (newest first) when the toggle is on


@dataclass
class WalletGrants:
    current: list[GrantView] = field(default_factory=list)  # spending order
    past: list[GrantView] = field(default_factory=list)  # newest first; empty unless asked
    past_count: int = 0


def wallet_grants(
    actor: Actor,
    customer_key: str,
    wallet_ids: Iterable[int],
    *,
    with_past: bool = False,
    now: datetime | None = None,
) -> dict[int, WalletGrants]:
    """Per wallet: its scheduled and active grants, how many past ones it has, and (with_past)
    the newest PAST_SHOWN of those. Three queries whatever the number of wallets."""
    require(actor, VIEW)
    now = now or utcnow()
    ids = sorted(set(wallet_ids))
    found = {wid: WalletGrants() for wid in ids}
    if not ids:
        return found
    for wid, views in grants_of_wallets(ids, statuses=CURRENT, now=now).items():
        found[wid].current = views
    past = or_(*[status_filter(s, now) for s in PAST])
    for wid, count in db.session.execute(
        select(CreditGrant.wallet_id, func.count())
        .where(CreditGrant.wallet_id.in_(ids), past)
        .group_by(CreditGrant.wallet_id)
    ):
        found[wid].past_count = count
    if with_past and any(w.past_count for w in found.values()):
        page = list_grants(actor, customer_key, status=",".join(PAST), limit=PAST_SHOWN, now=now)
        for view in page.items:
            if view.wallet_id in found:
                found[view.wallet_id].past.append(view)
    return found


def customer_grant(
    actor: Actor, customer_key: object, grant_id: object, *, now: datetime | None = None
) -> GrantView:
    """One grant, if it belongs to this customer (else 404: a URL names both)."""
    customer = get_customer(customer_key)
    view = get_grant(actor, grant_id, now=now)
    if view.customer_key != customer.key:
        raise NotFound(f"No credit grant with id {view.id} for this customer.", field="grant_id")
    return view


@dataclass(frozen=True)
class PaidBy:
    """A ledger entry with the grants that paid for it (usage, negative adjustments)."""

    entry: LedgerView
    allocations: list[AllocationView]


def entry_paid_by(actor: Actor, customer_key: object, entry_id: object) -> PaidBy:
    require(actor, VIEW)
    customer = get_customer(customer_key)
    eid = grant_id_of(entry_id)  # the same shape: a positive id, else 404
    row = db.session.execute(
        ledger_rows(None).where(LedgerEntry.id == eid, LedgerEntry.customer_id == customer.id)
    ).first()
    if row is None:
        raise NotFound(f"No ledger entry with id {eid} for this customer.", field="entry_id")
    entry = LedgerView.of(*row)
    return PaidBy(entry, allocations_of_entries([eid]).get(eid, []))


@dataclass(frozen=True)
class VoidPreview:
    """What a void would take out of the wallet, to be confirmed first."""

    grant_id: int
    amount_micros: int
    amount_text: str  # what the confirmation repeats: the amount as typed, "12.5"
    available_after_micros: int  # the wallet's available credits after it
    unit_plural: str


def unconfirmed_void(
    actor: Actor,
    customer_key: object,
    grant_id: object,
    *,
    confirmed: object,
    now: datetime | None = None,
) -> VoidPreview | None:
    """The dashboard's rule for voids: one goes ahead only when ``confirmed`` repeats the amount
    it removes now (if the grant was spent from in between, the amount changed and it asks
    again). None when confirmed, or when nothing remains (the void itself says why)."""
    now = now or utcnow()
    grant = customer_grant(actor, customer_key, grant_id, now=now)
    text = format_micros(grant.remaining_micros)
    if grant.remaining_micros == 0 or confirmed == text:
        return None
    customer = get_customer(customer_key)
    wallet = next(w for w in wallets_of(customer.id, now) if w.wallet_id == grant.wallet_id)
    after = wallet.balance_micros - grant.available_micros
    return VoidPreview(grant.id, grant.remaining_micros, text, after, wallet.unit_plural)


__all__ = [
    "CURRENT",
    "PAST",
    "PAST_SHOWN",
    "PaidBy",
    "VoidPreview",
    "WalletGrants",
    "customer_grant",
    "entry_paid_by",
    "unconfirmed_void",
    "wallet_grants",
]
