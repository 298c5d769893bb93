"""What one RecordUsage costs in SQL statements, counted where the driver sees them (SQLite's
trace callback: every statement, whichever path sent it). The bench's raw floor (webapp/bench.py)
does the same writes; keep the two in step (bench/README.md)."""

from __future__ import annotations

import re
from collections import Counter

import pytest
from sqlalchemy import event, select

from webapp.extensions import db
from webapp.models import OutboxEvent
from webapp.services import usage
from webapp.services.actors import SYSTEM

C = "cust-6d11ca90"
WRITE = re.compile(r"^\s*(INSERT INTO|UPDATE)\s+\"?(\w+)", re.IGNORECASE)


def traced_statements(record) -> list[str]:
    statements: list[str] = []

    def trace(dbapi_connection, _record) -> None:
        dbapi_connection.set_trace_callback(statements.append)

    db.session.remove()
    db.engine.dispose()
    event.listen(db.engine, "connect", trace)
    try:
        record()
    finally:
        event.remove(db.engine, "connect", trace)
        db.session.remove()
        db.engine.dispose()
    skip = ("PRAGMA", "BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE")
    return [s for s in statements if not s.lstrip().upper().startswith(skip)]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_single_event_covered_by_one_grant_writes_ten_statements(catalog, app):
    """Six writes before credit grants (event, ledger entry, counter, wallet, daily rollup,
    audit), exactly two more with them (the grant's remaining and the allocation), one with
    runway (the wallet's daily burn upsert) and one with the finance roll-forward (the monthly
    credit rollup)."""
    usage.record_usage(SYSTEM, customer_key=C, feature_key="api_calls")  # the counter exists

    statements = traced_statements(
        lambda: usage.record_usage(SYSTEM, customer_key=C, feature_key="api_calls")
    )

    writes = Counter()
    for statement in statements:
        match = WRITE.match(statement)
        if match:
            writes[(match[1].upper(), match[2])] += 1
    assert writes == {
        ("INSERT INTO", "usage_events"): 1,
        ("INSERT INTO", "ledger_entries"): 1,
        ("INSERT INTO", "credit_allocations"): 1,
        ("UPDATE", "credit_grants"): 1,
        ("UPDATE", "usage_counters"): 1,
        ("UPDATE", "wallets"): 1,
        ("INSERT INTO", "usage_daily"): 1,
        ("INSERT INTO", "wallet_burn_daily"): 1,
        ("INSERT INTO", "credit_monthly"): 1,
        ("INSERT INTO", "audit_log"): 1,
    }
    reads = [s for s in statements if s.lstrip().upper().startswith(("SELECT", "WITH"))]
    assert len(reads) + sum(writes.values()) == len(statements), statements
    # customer + entitlements, feature + cost, counter, wallet joined with its live grants
    # (no idempotency read: no event_id)
    assert len(reads) == 4, reads


def _writes(statements: list[str]) -> Counter:
    writes: Counter = Counter()
    for statement in statements:
        match = WRITE.match(statement)
        if match:
            writes[(match[1].upper(), match[2])] += 1
    return writes


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_alerts_add_one_statement_only_to_a_call_that_crosses(app):
    """Detection is in memory (the wallet's threshold comes with the wallet's read): a call
    that crosses nothing writes exactly what it wrote before alerts; one that crosses a wallet
    threshold and a usage threshold at once adds one INSERT into outbox_events, and no read."""
    from tests.factories import make_catalog
    from webapp.services import wallets

    make_catalog(topup="20")  # one grant pays for everything below
    usage.record_usage(SYSTEM, customer_key=C, feature_key="api_calls")  # the counter exists
    wallets.set_low_balance_threshold(
        SYSTEM, customer_key=C, credit_system="credits", threshold="4.5"
    )
    quiet = traced_statements(
        lambda: usage.record_usage(SYSTEM, customer_key=C, feature_key="api_calls")
    )  # 19.98 -> 19.96: above 4.5
    assert ("INSERT INTO", "outbox_events") not in _writes(quiet)
    assert len(quiet) == 14, quiet  # 4 reads, 10 writes (8 + runway's burn + the monthly rollup)

    crossing = traced_statements(  # 19.96 -> 3.96 (low), 802 of 1000 calls: 80 %
        lambda: usage.record_usage(SYSTEM, customer_key=C, feature_key="api_calls", amount=800)
    )
    assert _writes(crossing) - _writes(quiet) == {("INSERT INTO", "outbox_events"): 1}
    assert len(crossing) == len(quiet) + 1
    types = db.session.scalars(select(OutboxEvent.type).order_by(OutboxEvent.id)).all()
    assert types[-2:] == ["wallet.balance_low", "usage.threshold_reached"]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_batch_adds_to_the_monthly_rollup_once_per_rollup_row(catalog, app):
    """A batch whose events draw from several grants of different kinds and prices: one upsert
    of credit_monthly (an executemany; SQLite's trace shows each of its parameter sets), one
    parameter set per rollup row (category, kind, currency, price), not per event."""
    from datetime import timedelta

    from webapp.models import utcnow
    from webapp.services import wallets

    now = utcnow()
    wallets.topup_wallet(
        SYSTEM, customer_key=C, credit_system="credits", amount="0.05", kind="granted"
    )
    wallets.topup_wallet(
        SYSTEM,
        customer_key=C,
        credit_system="credits",
        amount="1",
        unit_price="0.5",
        currency="EUR",
        priority=150,
        effective_at=(now - timedelta(days=1)).isoformat(),
    )
    events = [{"customer_key": C, "feature_key": "api_calls", "amount": "3"} for _ in range(50)]

    statements = traced_statements(lambda: usage.record_usage_batch(SYSTEM, events))

    upserts = [s for s in statements if re.match(r"\s*INSERT INTO credit_monthly", s, re.I)]
    # 3 credits consumed: from the granted grant (priority 100), the EUR grant (150), then the
    # catalog's purchased grant without a price (200)
    assert len(upserts) == 3, upserts


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_on_postgresql_the_first_read_locks_the_entitlement_without_a_statement_more(catalog, app):
    """The write path locks the entitlement rows it judges against (docs/domain.md, "Concurrent
    edits and usage") in its first read, the one that finds the customer: still four reads, then
    the counter and the wallet locked in that order (as SQLAlchemy sends them; the writes after
    them go out pipelined)."""
    usage.record_usage(SYSTEM, customer_key=C, feature_key="api_calls")  # the counter exists
    db.session.remove()
    statements: list[str] = []

    def seen(_conn, _cursor, statement, *_args) -> None:
        statements.append(" ".join(statement.split()))

    event.listen(db.engine, "before_cursor_execute", seen)
    try:
        usage.record_usage(SYSTEM, customer_key=C, feature_key="api_calls")
    finally:
        event.remove(db.engine, "before_cursor_execute", seen)
    reads = [s for s in statements if s.upper().startswith("SELECT")]
    assert len(reads) == 4, reads
    assert [
        s.startswith(("SELECT customers.", "SELECT usage_counters.", "SELECT wallets."))
        for s in reads
    ] == [True, False, True, True], reads
    locks = [s[s.index("FOR UPDATE") :].split(")")[0] for s in reads if "FOR UPDATE" in s]
    assert locks == ["FOR UPDATE OF entitlements", "FOR UPDATE", "FOR UPDATE OF wallets"], locks
    assert len(statements) == 14, statements
