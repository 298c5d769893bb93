"""Values at their documented maxima (domain.md, "Limits"), and timestamps at the ends of the
calendar: every aggregate stays exact, every door answers, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from tests.api_support import C, api_as, error_code, make_key, row_counts
from tests.web import signed_in
from webapp.errors import InvalidAmount, ValidationError
from webapp.extensions import db
from webapp.models import Customer
from webapp.services import catalog as catalogs
from webapp.services import dashboard, usage, wallets
from webapp.services.actors import SYSTEM
from webapp.services.money import MAX_AMOUNT_MICROS, MAX_TOTAL_MICROS, MICROS
from webapp.services.verify import verify_ledger

MAX_UNITS = MAX_TOTAL_MICROS // MICROS
STEP = MAX_AMOUNT_MICROS // MICROS  # the largest amount one request carries
STEPS = MAX_TOTAL_MICROS // MAX_AMOUNT_MICROS

# Offsets that push a time out of datetime's years 1..9999 once converted to UTC.
OUT_OF_RANGE_TIMES = ["9999-12-31T23:59:59-05:00", "0001-01-01T00:00:00+01:00"]


def fill_wallet(customer: str) -> None:
    for _ in range(STEPS):
        wallets.topup_wallet(SYSTEM, customer_key=customer, credit_system="credits", amount=STEP)


def test_two_wallets_at_the_maximum_sum_exactly_everywhere(app, catalog, client):
    wallets.adjust_wallet(
        SYSTEM, customer_key=C, credit_system="credits", amount="-10", reason="start empty"
    )
    fill_wallet(C)
    catalogs.create_customer(SYSTEM, key="cust-2", name="Two", email=None)
    fill_wallet("cust-2")
    with pytest.raises(ValidationError):
        wallets.topup_wallet(SYSTEM, customer_key="cust-2", credit_system="credits", amount=1)

    (credits,) = dashboard.overview(SYSTEM).credits
    assert credits.balance_micros == 2 * MAX_TOTAL_MICROS  # past 2^63, exact
    assert verify_ledger().ok
    signed_in(client, "admin")
    for url in ("/", "/wallets", "/customers"):
        assert client.get(url).status_code == 200, url


@pytest.fixture
def tokens(app, catalog):
    """An unlimited consumable without a credit cost, for three customers in one usage_daily
    shard."""
    catalogs.create_feature(
        SYSTEM, key="tokens", name="Tokens", type="consumable", event_name="tok"
    )
    first = db.session.scalar(select(Customer.id).where(Customer.key == C))
    for n in range(2 * 64):
        catalogs.create_customer(SYSTEM, key=f"filler-{n}", name="Filler", email=None)
    same_shard = [C] + [
        db.session.scalars(select(Customer.key).where(Customer.id == first + n)).one()
        for n in (64, 128)
    ]
    for key in same_shard:
        catalogs.set_entitlement(SYSTEM, key, "tokens", allowance=None, reset_period="month")
    return same_shard


def test_usage_at_the_maximum_in_one_daily_shard_sums_exactly(tokens, client, api_as_admin):
    *full, third = tokens
    for key in full:
        for _ in range(STEPS):
            usage.record_usage(SYSTEM, customer_key=key, feature_key="tokens", amount=STEP)
    # The counter is full: one more unit is a clear 422, nothing written.
    before = row_counts()
    response = api_as_admin.post(
        "/api/v1/usage", {"customer_key": C, "feature_key": "tokens", "amount": 1}
    )
    assert (response.status_code, error_code(response)) == (422, "invalid_amount")
    assert row_counts() == before

    totals = {t.key: t.used_micros for t in dashboard.overview(SYSTEM).usage}
    assert totals["tokens"] == 2 * MAX_TOTAL_MICROS
    (series,) = [s for s in dashboard.daily_usage(SYSTEM) if s.feature_key == "tokens"]
    assert series.total_micros == 2 * MAX_TOTAL_MICROS
    (row,) = [r for r in dashboard.features(SYSTEM) if r.feature.key == "tokens"]
    assert row.used_micros == 2 * MAX_TOTAL_MICROS
    assert verify_ledger().ok

    # The shard's row, past 2^63 micros, keeps taking usage.
    response = api_as_admin.post(
        "/api/v1/usage", {"customer_key": third, "feature_key": "tokens", "amount": 1}
    )
    assert response.status_code == 201, response.get_json()
    (series,) = [s for s in dashboard.daily_usage(SYSTEM) if s.feature_key == "tokens"]
    assert series.total_micros == 2 * MAX_TOTAL_MICROS + MICROS
    assert verify_ledger().ok
    signed_in(client, "admin")
    for url in ("/", "/features", f"/customers/{C}"):
        assert client.get(url).status_code == 200, url


def test_a_counter_never_passes_the_maximum(tokens):
    usage.record_usage(SYSTEM, customer_key=C, feature_key="tokens", amount=STEP)
    for _ in range(STEPS - 1):
        usage.record_usage(SYSTEM, customer_key=C, feature_key="tokens", amount=STEP)
    with pytest.raises(InvalidAmount) as raised:
        usage.record_usage(SYSTEM, customer_key=C, feature_key="tokens", amount="0.000001")
    assert raised.value.details["max"] == MAX_UNITS


@pytest.fixture
def api_as_admin(client):
    return api_as(client)


# ---------------------------------------------------------------- timestamps at the calendar's ends


@pytest.mark.parametrize("when", OUT_OF_RANGE_TIMES)
def test_out_of_range_timestamp_is_a_validation_error_in_the_service(catalog, when):
    with pytest.raises(ValidationError) as raised:
        usage.record_usage(SYSTEM, customer_key=C, feature_key="api_calls", timestamp=when)
    assert raised.value.field == "timestamp"
    (result,) = usage.record_usage_batch(
        SYSTEM, [{"customer_key": C, "feature_key": "api_calls", "timestamp": when}]
    )
    assert isinstance(result, ValidationError)


@pytest.mark.parametrize("when", OUT_OF_RANGE_TIMES)
def test_out_of_range_timestamp_is_422_on_every_api_door(catalog, client, when):
    api = api_as(client)
    before = row_counts()
    event = {"customer_key": C, "feature_key": "api_calls", "timestamp": when}
    single = api.post("/api/v1/usage", event)
    assert (single.status_code, error_code(single)) == (422, "validation_error")
    batch = api.post(
        "/api/v1/usage/batch",
        {
            "events": [
                event,
                {"customer_key": C, "feature_key": "api_calls", "amount": 2},
            ]
        },
    )
    assert batch.status_code == 200, batch.get_json()
    first, second = batch.get_json()["results"]
    assert (first["status"], first["body"]["error"]["code"]) == (422, "validation_error")
    assert second["status"] == 201
    assert row_counts()["usage_events"] == before["usage_events"] + 1
    for name in ("since", "until"):
        response = api.get(f"/api/v1/customers/{C}/events", query_string={name: when})
        assert (response.status_code, error_code(response)) == (422, "validation_error"), name


@pytest.mark.parametrize("when", OUT_OF_RANGE_TIMES)
def test_out_of_range_timestamp_is_422_on_the_metrifox_door(catalog, client, when):
    key = make_key("admin")
    before = row_counts()
    response = client.post(
        "/metrifox/meter/usage/events",
        json={"customer_key": C, "feature_key": "api_calls", "quantity": 1, "timestamp": when},
        headers={"x-api-key": key},
    )
    assert response.status_code == 422, response.get_data()[:300]
    assert row_counts() == before
