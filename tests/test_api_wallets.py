"""POST /api/v1/wallets/topups and /wallets/adjustments, on both databases."""

from __future__ import annotations

import pytest

from tests.api_support import Api, C, api_as, error_code, row_counts
from webapp.services import catalog as catalog_service
from webapp.services.actors import SYSTEM


@pytest.fixture
def api(client, catalog) -> Api:
    return api_as(client, "finance")


def topup(api: Api, **fields):
    return api.post(
        "/api/v1/wallets/topups",
        {"customer_key": C, "credit_system": "credits", "amount": "50", **fields},
    )


def test_topup_adds_credits(api):
    response = topup(api, reference="INV-1042", note="Q4 pack")
    assert response.status_code == 201
    body = response.get_json()
    assert body["message"] == "Credits added"
    assert (body["customer_key"], body["credit_system"], body["amount"]) == (C, "credits", "50")
    assert body["wallet_balance"] == "60"
    assert body["kind"] == "purchased" and body["reference"] == "INV-1042"
    assert isinstance(body["ledger_entry_id"], int)


def test_topup_takes_exact_decimals(api):
    body = topup(api, amount=0.000001, kind="granted").get_json()
    assert body["amount"] == "0.000001" and body["wallet_balance"] == "10.000001"
    assert body["kind"] == "granted"


def test_topup_replay_and_conflict(api):
    first = topup(api, idempotency_key="pay-1")
    before = row_counts()
    again = topup(api, idempotency_key="pay-1")
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.get_json() == first.get_json()
    assert row_counts() == before
    clash = topup(api, idempotency_key="pay-1", amount="51")
    assert clash.status_code == 409 and error_code(clash) == "idempotency_conflict"
    assert row_counts() == before


@pytest.mark.parametrize(
    ("fields", "status", "code"),
    [
        ({"customer_key": "nobody"}, 404, "customer_not_found"),
        ({"credit_system": "gold"}, 404, "not_found"),
        ({"amount": "0"}, 422, "validation_error"),
        ({"amount": "-5"}, 422, "validation_error"),
        ({"amount": "1.0000001"}, 422, "validation_error"),
        ({"amount": True}, 422, "validation_error"),
        ({"kind": "stolen"}, 422, "validation_error"),
        ({"reference": 5}, 422, "validation_error"),
        ({"currency": "EUR"}, 422, "validation_error"),
    ],
)
def test_topup_errors_write_nothing(api, fields, status, code):
    before = row_counts()
    response = topup(api, **fields)
    assert (response.status_code, error_code(response)) == (status, code)
    assert row_counts() == before


def test_topup_needs_amount(api):
    response = api.post("/api/v1/wallets/topups", {"customer_key": C, "credit_system": "credits"})
    assert response.status_code == 422 and response.get_json()["error"]["details"] == {
        "field": "amount"
    }


def test_topup_malformed_json(api):
    response = api.post("/api/v1/wallets/topups", data="{'a': 1}", content_type="application/json")
    assert response.status_code == 400 and error_code(response) == "malformed_json"


def test_support_key_cannot_top_up(client, catalog):
    before = row_counts()
    response = topup(api_as(client, "support"))
    assert response.status_code == 403 and error_code(response) == "forbidden"
    assert row_counts()["ledger_entries"] == before["ledger_entries"]


# ---------------------------------------------------------------- adjustments


def adjust(api: Api, **fields):
    return api.post(
        "/api/v1/wallets/adjustments",
        {
            "customer_key": C,
            "credit_system": "credits",
            "amount": "-2.5",
            "reason": "Refund of a duplicate charge",
            **fields,
        },
    )


def test_adjustment_corrects_the_wallet_with_a_reason(api):
    response = adjust(api, reference="TICKET-9")
    assert response.status_code == 201
    body = response.get_json()
    assert body["message"] == "Wallet adjusted" and body["type"] == "adjustment"
    assert (body["amount"], body["wallet_balance"]) == ("-2.5", "7.5")
    assert body["note"] == "Refund of a duplicate charge"
    entries = api.get(f"/api/v1/customers/{C}/ledger").get_json()["data"]
    assert entries[0]["type"] == "adjustment" and entries[0]["amount"] == "-2.5"


@pytest.mark.parametrize(
    ("fields", "status", "code"),
    [
        ({"amount": "-10.01"}, 402, "insufficient_credits"),
        ({"amount": "0"}, 422, "validation_error"),
        ({"reason": ""}, 422, "validation_error"),
        ({"reason": None}, 422, "validation_error"),
        ({"customer_key": "nobody"}, 404, "customer_not_found"),
        ({"credit_system": "gold"}, 404, "not_found"),
        ({"kind": "granted"}, 422, "validation_error"),
    ],
)
def test_adjustment_errors(api, fields, status, code):
    before = row_counts()
    response = adjust(api, **fields)
    assert (response.status_code, error_code(response)) == (status, code)
    assert row_counts() == before


def test_adjustment_needs_finance_or_admin(client, catalog):
    for role in ("support", "account_manager"):
        response = adjust(api_as(client, role))
        assert response.status_code == 403 and error_code(response) == "forbidden"
    assert adjust(api_as(client, "admin")).status_code == 201


def test_topup_of_an_archived_credit_system_is_refused(api):
    catalog_service.set_credit_system_archived(SYSTEM, "credits", True)
    before = row_counts()
    response = topup(api)
    assert response.status_code == 422 and error_code(response) == "validation_error"
    assert row_counts() == before
