"""Booking due expiries inside a write: however many there are, the write goes through."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select

from tests.factories import add_customer
from webapp.extensions import db
from webapp.models import LedgerEntry, set_clock
from webapp.services import usage, wallets
from webapp.services.actors import SYSTEM
from webapp.services.bulk import COPY_FROM


def test_one_event_books_more_due_expiries_than_the_copy_threshold(catalog):
    """Found by the concurrency test: on PostgreSQL, a single event whose wallet had COPY_FROM
    due expiries sent its ledger rows with COPY inside the pipelined writes, which psycopg
    refuses ("COPY cannot be used in pipeline mode"): every event of that wallet failed."""
    now = datetime.now(UTC)
    add_customer("cust-many-due", api_allowance=None, topup=None)
    wallets.topup_wallet(SYSTEM, customer_key="cust-many-due", credit_system="credits", amount=1)
    then = now - timedelta(hours=2)
    set_clock(lambda: then)
    try:
        for i in range(COPY_FROM):
            wallets.topup_wallet(
                SYSTEM,
                customer_key="cust-many-due",
                credit_system="credits",
                amount="0.01",
                expires_at=(then + timedelta(minutes=i + 1)).isoformat(),
            )
    finally:
        set_clock(None)
    result = usage.record_usage(SYSTEM, customer_key="cust-many-due", feature_key="api_calls")
    assert result.balance_micros == 1_000_000 - 20_000
    booked = db.session.scalar(select(func.count()).where(LedgerEntry.type == "expiry"))
    assert booked == COPY_FROM
