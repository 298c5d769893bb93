"""Credit grants through the services (domain.md, "Credit grants"): one grant per topup, the
spending order, allocations, expiry booked before any decision, voids, idempotent adjustments.
Time moves through the injected clock."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from tests.conftest import actor
from tests.factories import add_customer
from webapp.errors import (
    IdempotencyConflict,
    InsufficientCredits,
    NotFound,
    NothingToVoid,
    ValidationError,
)
from webapp.extensions import db
from webapp.models import CreditAllocation, CreditGrant, LedgerEntry, Wallet
from webapp.services import credits, usage, wallets
from webapp.services.actors import SYSTEM
from webapp.services.credits import reads as grant_reads

M = 1_000_000
C = "cust-grants"


@pytest.fixture
def customer(clock, catalog):
    return add_customer(C, topup=None, api_allowance=None)


def top_up(amount, **terms):
    return wallets.topup_wallet(
        SYSTEM, customer_key=C, credit_system="credits", amount=amount, **terms
    )


def grant_of(result) -> CreditGrant:
    return db.session.get(CreditGrant, result.entry.grant_id)


def spend(calls, **fields):
    """API calls cost 0.02 credits each."""
    return usage.record_usage(
        SYSTEM, customer_key=C, feature_key="api_calls", amount=calls, **fields
    )


def customer_id() -> int:
    from webapp.models import Customer

    return db.session.scalar(select(Customer.id).where(Customer.key == C))


def remaining() -> dict[int, int]:
    db.session.expire_all()
    return {
        g.id: g.remaining_micros
        for g in db.session.scalars(
            select(CreditGrant).where(CreditGrant.customer_id == customer_id())
        )
    }


def test_every_topup_is_one_grant_of_its_own(customer):
    first = top_up("10", kind="purchased")
    second = top_up("10", kind="purchased")  # never merged into the first
    assert first.entry.grant_id != second.entry.grant_id
    g = grant_of(first)
    assert (g.kind, g.amount_micros, g.remaining_micros, g.priority) == (
        "purchased",
        10 * M,
        10 * M,
        200,
    )
    assert grant_of(top_up("1", kind="granted")).priority == 100


def test_spending_order_priority_then_expiry_then_granted_then_effective(customer, clock):
    now = clock.now
    late = top_up("1", kind="purchased")  # priority 200, no expiry
    soon = top_up("1", kind="purchased", expires_at=(now + timedelta(days=3)).isoformat())
    sooner = top_up("1", kind="purchased", expires_at=(now + timedelta(days=2)).isoformat())
    granted = top_up("1", kind="granted", priority=200)
    first = top_up("1", kind="purchased", priority=5)
    order = [first, sooner, soon, granted, late]
    ids = [r.entry.grant_id for r in order]
    # 0.02 per call: 50 calls empty one grant
    for n, gid in enumerate(ids):
        spend(50)
        left = remaining()
        assert left[gid] == 0, f"step {n}: grant {gid} should be spent"
        assert all(left[later] == M for later in ids[n + 1 :])


def test_one_deduction_spans_grants_exactly(customer):
    a = top_up("0.03")
    b = top_up("1")
    result = spend(3)  # 0.06 credits: 0.03 from a, 0.03 from b
    entry = db.session.scalar(select(LedgerEntry).where(LedgerEntry.type == "usage"))
    parts = db.session.execute(
        select(CreditAllocation.grant_id, CreditAllocation.amount_micros)
        .where(CreditAllocation.ledger_entry_id == entry.id)
        .order_by(CreditAllocation.id)
    ).all()
    assert [tuple(p) for p in parts] == [
        (a.entry.grant_id, 30_000),
        (b.entry.grant_id, 30_000),
    ]
    assert result.balance_micros == 970_000


def test_expired_credits_are_never_available_booked_or_not(customer, clock):
    now = clock.now
    expiring = top_up("5", expires_at=(now + timedelta(days=1)).isoformat())
    top_up("1")
    clock.advance(days=1)  # the expiry instant: not booked yet
    check = usage.check_entitlement(SYSTEM, customer_key=C, feature_key="api_calls", amount=1)
    assert check.balance_micros == M
    view = grant_reads.get_grant(SYSTEM, expiring.entry.grant_id)
    assert (view.status, view.available_micros) == ("expired", 0)
    with pytest.raises(InsufficientCredits) as refused:
        spend(51)  # 1.02 credits: only 1 is available
    assert refused.value.details["eligible_balance"] == "1"
    # the refusal wrote nothing, the expiry included
    assert db.session.scalar(select(LedgerEntry).where(LedgerEntry.type == "expiry")) is None
    spend(1)  # a write: books the expiry in its own transaction, before deciding
    booked = db.session.scalars(select(LedgerEntry).where(LedgerEntry.type == "expiry")).all()
    assert [(e.grant_id, e.amount_micros) for e in booked] == [(expiring.entry.grant_id, -5 * M)]
    g = grant_of(expiring)
    db.session.refresh(g)
    assert (g.remaining_micros, g.expired_micros, g.status_at(clock.now)) == (0, 5 * M, "expired")


def test_a_backdated_event_uses_only_grants_effective_at_its_time(customer, clock):
    now = clock.now
    top_up("1")  # effective now
    with pytest.raises(InsufficientCredits) as refused:
        spend(1, timestamp=(now - timedelta(hours=1)).isoformat())
    assert refused.value.details["eligible_balance"] == "0"
    assert refused.value.details["wallet_balance"] == "1"
    old = top_up("1", effective_at=(now - timedelta(days=2)).isoformat())
    spend(1, timestamp=(now - timedelta(hours=1)).isoformat())
    assert remaining()[old.entry.grant_id] == M - 20_000


def test_a_scheduled_grant_is_not_spendable_until_effective(customer, clock):
    later = top_up("1", effective_at=(clock.now + timedelta(days=1)).isoformat())
    assert grant_of(later).status_at(clock.now) == "scheduled"
    with pytest.raises(InsufficientCredits):
        spend(1)
    summary_wallet = grant_reads.wallet_credits([grant_of(later).wallet_id])
    assert summary_wallet[grant_of(later).wallet_id].scheduled_micros == M
    clock.advance(days=1)
    spend(1)


def test_grant_terms_are_validated_and_write_nothing(customer, clock):
    now = clock.now
    bad = [
        {"expires_at": (now - timedelta(seconds=1)).isoformat()},
        {
            "effective_at": (now + timedelta(days=2)).isoformat(),
            "expires_at": (now + timedelta(days=1)).isoformat(),
        },
        {"priority": -1},
        {"priority": "1.5"},
        {"unit_price": "0.01"},
        {"currency": "USD"},
        {"unit_price": "0.01", "currency": "dollars"},
        {"unit_price": "0.01", "currency": "USD", "kind": "granted"},
        {"expires_at": "tomorrow"},
    ]
    before = remaining()
    for terms in bad:
        with pytest.raises(ValidationError):
            top_up("1", **terms)
    assert remaining() == before
    assert db.session.scalar(select(Wallet).where(Wallet.customer_id == customer_id())) is None
    priced = grant_of(top_up("1000", unit_price="0.0125", currency="eur"))
    assert (priced.unit_price, priced.currency) == ("0.0125", "EUR")


def test_void_removes_what_remains_and_only_once(customer):
    result = top_up("10", kind="purchased")
    spend(100)  # 2 credits consumed
    voided = wallets.void_grant(
        actor("finance"), grant_id=result.entry.grant_id, reason="refund", idempotency_key="v1"
    )
    assert (voided.entry.type, voided.entry.amount_micros) == ("void", -8 * M)
    assert voided.grant.status_at(voided.entry.created_at) == "voided"
    again = wallets.void_grant(
        actor("finance"), grant_id=result.entry.grant_id, reason="refund", idempotency_key="v1"
    )
    assert again.replayed and again.entry.id == voided.entry.id
    with pytest.raises(IdempotencyConflict):
        wallets.void_grant(
            actor("finance"), grant_id=result.entry.grant_id, reason="other", idempotency_key="v1"
        )
    with pytest.raises(NothingToVoid):
        wallets.void_grant(actor("finance"), grant_id=result.entry.grant_id, reason="again")
    with pytest.raises(NotFound):
        wallets.void_grant(actor("finance"), grant_id=999999, reason="x")
    from webapp.errors import Forbidden

    with pytest.raises(Forbidden):
        wallets.void_grant(actor("support"), grant_id=result.entry.grant_id, reason="x")
    view = grant_reads.get_grant(SYSTEM, result.entry.grant_id)
    assert (view.consumed_micros, view.voided_micros, view.remaining_micros) == (2 * M, 8 * M, 0)


def test_adjustments_are_idempotent_and_shaped_like_grants_and_deductions(customer):
    plus = wallets.adjust_wallet(
        actor("finance"),
        customer_key=C,
        credit_system="credits",
        amount="3",
        reason="goodwill",
        idempotency_key="adj-1",
    )
    again = wallets.adjust_wallet(
        actor("finance"),
        customer_key=C,
        credit_system="credits",
        amount="3",
        reason="goodwill",
        idempotency_key="adj-1",
    )
    assert again.replayed and again.entry.id == plus.entry.id
    g = grant_of(plus)
    assert (g.kind, g.priority, g.note) == ("granted", 100, "goodwill")
    with pytest.raises(IdempotencyConflict):
        wallets.adjust_wallet(
            actor("finance"),
            customer_key=C,
            credit_system="credits",
            amount="4",
            reason="goodwill",
            idempotency_key="adj-1",
        )
    minus = wallets.adjust_wallet(
        actor("finance"), customer_key=C, credit_system="credits", amount="-1", reason="oops"
    )
    parts = db.session.scalars(
        select(CreditAllocation).where(CreditAllocation.ledger_entry_id == minus.entry.id)
    ).all()
    assert [(p.grant_id, p.amount_micros) for p in parts] == [(g.id, M)]
    with pytest.raises(InsufficientCredits):
        wallets.adjust_wallet(
            actor("finance"), customer_key=C, credit_system="credits", amount="-2.5", reason="x"
        )


def test_the_expiry_sweep_books_each_grant_once(customer, clock, runner):
    for days in (1, 2, 3):
        top_up("1", expires_at=(clock.now + timedelta(days=days)).isoformat())
    keep = top_up("1")
    clock.advance(days=2, seconds=1)
    done = credits.expire_due(batch=1)
    assert (done.wallets, done.grants) == (1, 2)
    assert credits.expire_due().grants == 0  # idempotent
    result = runner.invoke(args=["credits", "expire"])
    assert result.exit_code == 0 and "Expired 0 grants" in result.output
    clock.advance(days=1)
    result = runner.invoke(args=["credits", "expire"])
    assert "Expired 1 grants in 1 wallets." in result.output
    expiries = db.session.scalars(select(LedgerEntry).where(LedgerEntry.type == "expiry")).all()
    assert len(expiries) == 3 and len({e.grant_id for e in expiries}) == 3
    assert remaining()[keep.entry.grant_id] == M


def test_dashboard_reads_show_available_credits_not_expired_ones(customer, clock):
    from webapp.services import dashboard, reads

    top_up("5", expires_at=(clock.now + timedelta(days=1)).isoformat())
    top_up("2")
    top_up("7", effective_at=(clock.now + timedelta(days=3)).isoformat())  # scheduled
    clock.advance(days=1)  # the 5 expire; nothing booked them yet
    overview = dashboard.overview(SYSTEM)
    mine = [c for c in overview.credits if c.key == "credits"][0]
    others = 10 * M  # the catalog's own customer: a 10-credit topup
    assert mine.balance_micros == 2 * M + others
    rows = {r.customer_key: r for r in dashboard.lowest_wallets(SYSTEM).rows}
    assert rows[C].balance_micros == 2 * M
    listed = {r.customer.key: r for r in dashboard.list_customers(SYSTEM, search=C).rows}
    assert listed[C].balances["credits"] == 2 * M
    (wallet,) = reads.customer_summary(SYSTEM, C).wallets
    assert (wallet.balance_micros, wallet.scheduled_micros, wallet.ledger_balance_micros) == (
        2 * M,
        7 * M,
        14 * M,
    )


def test_reads_list_grants_in_the_spending_order_itself(customer, clock):
    # Same priority, no expiry: granted before purchased, whatever their effective times.
    older = top_up("1", kind="purchased", effective_at=(clock.now - timedelta(days=2)).isoformat())
    newer = top_up("1", kind="granted", priority=200)
    wallet_id = grant_of(older).wallet_id
    listed = grant_reads.grants_of_wallets([wallet_id])[wallet_id]
    assert [g.id for g in listed] == [newer.entry.grant_id, older.entry.grant_id]
    spend(50)  # and the spending agrees with the listing
    assert remaining()[newer.entry.grant_id] == 0
