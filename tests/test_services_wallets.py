"""Topups and adjustments: the only ways credits move besides usage."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from tests.conftest import actor
from webapp.errors import (
    CustomerNotFound,
    Forbidden,
    IdempotencyConflict,
    InsufficientCredits,
    NotFound,
    ValidationError,
)
from webapp.extensions import db
from webapp.models import AuditLog, LedgerEntry, Wallet
from webapp.services import reads, wallets
from webapp.services.actors import SYSTEM

C = "cust-6d11ca90"


def ledger_count() -> int:
    return db.session.scalar(select(func.count()).select_from(LedgerEntry))


def test_first_topup_creates_the_wallet_and_a_ledger_entry(catalog):
    from webapp.services import catalog as cat

    cat.create_customer(SYSTEM, key="cust-new", name="New")
    result = wallets.topup_wallet(
        actor("finance", "fin@example.com"),
        customer_key="cust-new",
        credit_system="credits",
        amount="50",
        kind="purchased",
        reference="INV-1042",
    )
    assert result.balance_micros == 50_000_000
    entry = result.entry
    assert (entry.type, entry.kind, entry.reference, entry.actor) == (
        "topup",
        "purchased",
        "INV-1042",
        "user:fin@example.com",
    )


def test_topups_add_exactly(catalog):
    for amount in ("0.1", "0.2", "0.000001"):
        wallets.topup_wallet(SYSTEM, customer_key=C, credit_system="credits", amount=amount)
    (wallet,) = reads.customer_summary(SYSTEM, C).wallets
    assert wallet.balance_micros == 10_300_001  # 10 + 0.1 + 0.2 + 0.000001, no float drift


@pytest.mark.parametrize("amount", ["0", "-5", "0.0000001", "abc", 1.5, None, "1e5"])
def test_bad_topup_amounts_change_nothing(catalog, amount):
    before = ledger_count()
    with pytest.raises(ValidationError):
        wallets.topup_wallet(SYSTEM, customer_key=C, credit_system="credits", amount=amount)
    assert ledger_count() == before


def test_topup_errors(catalog):
    with pytest.raises(CustomerNotFound):
        wallets.topup_wallet(SYSTEM, customer_key="nope", credit_system="credits", amount=1)
    with pytest.raises(NotFound):
        wallets.topup_wallet(SYSTEM, customer_key=C, credit_system="gold", amount=1)
    with pytest.raises(ValidationError):
        wallets.topup_wallet(
            SYSTEM, customer_key=C, credit_system="credits", amount=1, kind="stolen"
        )
    with pytest.raises(Forbidden):
        wallets.topup_wallet(actor("support"), customer_key=C, credit_system="credits", amount=1)
    with pytest.raises(Forbidden):
        wallets.topup_wallet(
            actor("account_manager"), customer_key=C, credit_system="credits", amount=1
        )


def test_topup_idempotency(catalog):
    first = wallets.topup_wallet(
        SYSTEM,
        customer_key=C,
        credit_system="credits",
        amount="5",
        idempotency_key="topup-1",
        reference="INV-1",
    )
    before = ledger_count()
    again = wallets.topup_wallet(
        SYSTEM,
        customer_key=C,
        credit_system="credits",
        amount="5.0",
        idempotency_key="topup-1",
        reference="INV-1",
    )
    assert again.replayed and again.entry.id == first.entry.id
    assert ledger_count() == before
    with pytest.raises(IdempotencyConflict):
        wallets.topup_wallet(
            SYSTEM,
            customer_key=C,
            credit_system="credits",
            amount="6",
            idempotency_key="topup-1",
            reference="INV-1",
        )


def test_adjustment_needs_a_reason_and_cannot_go_below_zero(catalog):
    with pytest.raises(ValidationError):
        wallets.adjust_wallet(
            SYSTEM, customer_key=C, credit_system="credits", amount="-1", reason=""
        )
    before = ledger_count()
    with pytest.raises(InsufficientCredits):
        wallets.adjust_wallet(
            SYSTEM, customer_key=C, credit_system="credits", amount="-10.01", reason="refund"
        )
    assert ledger_count() == before
    result = wallets.adjust_wallet(
        SYSTEM, customer_key=C, credit_system="credits", amount="-10", reason="charged twice"
    )
    assert result.balance_micros == 0
    assert result.entry.type == "adjustment" and result.entry.note == "charged twice"


def test_negative_adjustment_of_a_missing_wallet_is_refused(catalog):
    from webapp.services import catalog as cat

    cat.create_customer(SYSTEM, key="cust-empty", name="Empty")
    with pytest.raises(InsufficientCredits):
        wallets.adjust_wallet(
            SYSTEM, customer_key="cust-empty", credit_system="credits", amount="-1", reason="oops"
        )
    assert db.session.scalar(select(func.count()).select_from(Wallet)) == 1


def test_wallet_mutations_are_audited(catalog):
    wallets.topup_wallet(
        actor("finance", "f@x.io"), customer_key=C, credit_system="credits", amount=2
    )
    row = db.session.scalar(select(AuditLog).order_by(AuditLog.id.desc()))
    assert (row.action, row.actor, row.details["amount"]) == ("wallet.topup", "user:f@x.io", "2")


def test_ledger_pages_newest_first(catalog):
    for n in range(5):
        wallets.topup_wallet(SYSTEM, customer_key=C, credit_system="credits", amount=n + 1)
    page = reads.list_ledger(SYSTEM, C, limit=4)
    assert [e.amount_micros for e in page.items] == [5_000_000, 4_000_000, 3_000_000, 2_000_000]
    rest = reads.list_ledger(SYSTEM, C, limit=4, cursor=page.next_cursor)
    assert [e.amount_micros for e in rest.items] == [1_000_000, 10_000_000]
    assert rest.next_cursor is None
    with pytest.raises(ValidationError):
        reads.list_ledger(SYSTEM, C, cursor="garbage!")
    with pytest.raises(ValidationError):
        reads.list_ledger(SYSTEM, C, limit=1000)


@pytest.mark.parametrize(
    ("write", "amount"),
    [("topup", "5"), ("adjustment", "5"), ("adjustment", "-1")],
)
def test_no_wallet_write_for_an_archived_customer(catalog, write, amount):
    from webapp.services import catalog as cat

    cat.set_customer_status(SYSTEM, C, "archived")
    before = ledger_count()
    with pytest.raises(ValidationError, match="archived") as raised:
        if write == "topup":
            wallets.topup_wallet(SYSTEM, customer_key=C, credit_system="credits", amount=amount)
        else:
            wallets.adjust_wallet(
                SYSTEM, customer_key=C, credit_system="credits", amount=amount, reason="fix"
            )
    assert raised.value.field == "customer_key"
    assert ledger_count() == before
