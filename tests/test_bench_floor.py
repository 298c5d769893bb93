"""The bench's raw-driver floor (`POST /bench/raw`) does the writes of one RecordUsage covered
by one grant, and keeps the ledger exact: `ledger verify` is clean after it."""

from __future__ import annotations

import pytest
from flask import Flask
from sqlalchemy import func, select

from tests.conftest import TEST_CONFIG
from webapp import create_app
from webapp.bench import RAW_COST_MICROS, RAW_CREDITS, RAW_CUSTOMER, RAW_FEATURE, _targets
from webapp.extensions import db
from webapp.models import CreditAllocation, CreditGrant, LedgerEntry, Wallet
from webapp.services import auth, catalog, usage, wallets
from webapp.services.actors import SYSTEM
from webapp.services.verify import verify_ledger


@pytest.fixture
def bench_app(database_url: str):
    app = create_app({**TEST_CONFIG, "SQLALCHEMY_DATABASE_URI": database_url, "BENCH_MODE": True})
    _targets.clear()  # looked up once per process: this test's database is a new one
    with app.app_context():
        yield app
        db.session.remove()
        db.engine.dispose()
    _targets.clear()


def seed_like_the_bench() -> str:
    """What bench/run.py's setup does for the raw customer: through the services."""
    catalog.create_credit_system(SYSTEM, key=RAW_CREDITS, name="Bench credits")
    catalog.create_feature(SYSTEM, key=RAW_FEATURE, name="Bench calls", type="consumable")
    catalog.set_credit_cost(SYSTEM, RAW_FEATURE, credit_system=RAW_CREDITS, cost="0.001")
    catalog.create_customer(SYSTEM, key=RAW_CUSTOMER, name=RAW_CUSTOMER, email=None)
    catalog.set_entitlement(SYSTEM, RAW_CUSTOMER, RAW_FEATURE, allowance=None, reset_period="month")
    wallets.topup_wallet(
        SYSTEM, customer_key=RAW_CUSTOMER, credit_system=RAW_CREDITS, amount="1000000000"
    )
    usage.record_usage(SYSTEM, customer_key=RAW_CUSTOMER, feature_key=RAW_FEATURE, amount=1)
    return auth.create_api_key(SYSTEM, name="bench", role="admin").secret


def test_the_raw_floor_spends_the_grant_like_record_usage(bench_app: Flask):
    secret = seed_like_the_bench()
    db.session.remove()
    client = bench_app.test_client()
    for _ in range(3):
        response = client.post("/bench/raw", headers={"Authorization": f"Bearer {secret}"})
        assert response.status_code == 201, response.get_data(as_text=True)
    db.session.remove()  # the requests' API key lookups shared this context's session
    (grant,) = db.session.scalars(select(CreditGrant))
    (wallet,) = db.session.scalars(select(Wallet))
    assert grant.remaining_micros == wallet.balance_micros == 1_000_000_000_000_000 - 4 * 1000
    usage_entries = db.session.scalar(select(func.count()).where(LedgerEntry.type == "usage"))
    allocations = db.session.execute(
        select(func.count(), func.sum(CreditAllocation.amount_micros))
    ).one()
    assert usage_entries == 4
    assert tuple(allocations) == (4, 4 * RAW_COST_MICROS)
    report = verify_ledger()
    assert report.ok, report.violations
