"""Reads and customer creation: /customers (cursor pages), /customers/{key}, its events and
ledger, /features. On both databases."""

from __future__ import annotations

import pytest

from tests.api_support import Api, C, api_as, error_code
from tests.factories import add_customer


@pytest.fixture
def api(client, catalog) -> Api:
    return api_as(client, "account_manager")


def test_customer_detail_has_every_entitlement_and_wallet(client, catalog):
    api_as(client).post(
        "/api/v1/usage", {"customer_key": C, "feature_key": "api_calls", "amount": 4}
    )
    response = api_as(client, "account_manager").get(f"/api/v1/customers/{C}")
    assert response.status_code == 200
    body = response.get_json()
    assert body["key"] == C and body["status"] == "active"
    by_key = {e["feature_key"]: e for e in body["entitlements"]}
    assert set(by_key) == {"api_calls", "candidates", "seats", "sso"}
    calls = by_key["api_calls"]
    assert (calls["used"], calls["allowance"], calls["available"]) == (4, 1000, 996)
    assert calls["credit_cost"] == "0.02" and calls["reset_at"].endswith("Z")
    assert by_key["seats"]["reset_at"] is None
    assert body["wallets"] == [
        {
            "credit_system": "credits",
            "name": "Credits",
            "balance": "9.92",
            "scheduled": "0",
            "ledger_balance": "9.92",
            "low_balance_threshold": None,
            # runway: 0.08 consumed today, ÷ 30 a day; 9.92 ÷ that = 3720 days
            "burn_rate_per_day": "0.002667",
            "runway_days": "3720",
            "runs_out_at": body["wallets"][0]["runs_out_at"],
            "expiring_unused": "0",
        }
    ]


def test_unknown_customer_is_404(api):
    for path in ("", "/events", "/ledger"):
        response = api.get(f"/api/v1/customers/nobody{path}")
        assert response.status_code == 404 and error_code(response) == "customer_not_found"


def test_customers_are_paged_with_a_cursor(api):
    for n in range(4):
        add_customer(f"cust-{n}", topup=None)
    first = api.get("/api/v1/customers", query_string={"limit": 2}).get_json()
    assert [c["key"] for c in first["data"]] == ["cust-3", "cust-2"]
    second = api.get(
        "/api/v1/customers", query_string={"limit": 2, "cursor": first["next_cursor"]}
    ).get_json()
    third = api.get(
        "/api/v1/customers", query_string={"limit": 2, "cursor": second["next_cursor"]}
    ).get_json()
    assert [c["key"] for c in second["data"] + third["data"]] == ["cust-1", "cust-0", C]
    assert third["next_cursor"] is None


def test_customer_search(api):
    add_customer("acme-1", topup=None)
    body = api.get("/api/v1/customers", query_string={"search": "acme"}).get_json()
    assert [c["key"] for c in body["data"]] == ["acme-1"]


@pytest.mark.parametrize(
    "args",
    [
        {"limit": "0"},
        {"limit": "201"},
        {"limit": "x"},
        {"limit": ""},
        {"limit": "١"},
        {"cursor": "garbage!"},
        {"sort": "name"},
    ],
)
def test_bad_list_arguments_are_validation_errors(api, args):
    response = api.get("/api/v1/customers", query_string=args)
    assert response.status_code == 422 and error_code(response) == "validation_error"


def test_events_filter_and_page(client, catalog):
    admin = api_as(client)
    for n in range(3):
        admin.post(
            "/api/v1/usage",
            {"customer_key": C, "feature_key": "api_calls", "amount": n + 1, "event_id": f"e{n}"},
        )
    admin.post("/api/v1/usage", {"customer_key": C, "feature_key": "seats", "event_id": "s"})
    api = api_as(client, "account_manager")
    page = api.get(
        f"/api/v1/customers/{C}/events", query_string={"feature_key": "api_calls", "limit": 2}
    ).get_json()
    assert [e["event_id"] for e in page["data"]] == ["e2", "e1"]
    assert page["data"][0]["credits_deducted"] == "0.06"
    assert page["data"][0]["actor"].startswith("api_key:mk_")
    rest = api.get(
        f"/api/v1/customers/{C}/events",
        query_string={"feature_key": "api_calls", "cursor": page["next_cursor"]},
    ).get_json()
    assert [e["event_id"] for e in rest["data"]] == ["e0"] and rest["next_cursor"] is None
    since = api.get(
        f"/api/v1/customers/{C}/events", query_string={"since": "2100-01-01T00:00:00Z"}
    ).get_json()
    assert since["data"] == []


@pytest.mark.parametrize(
    ("args", "status", "code"),
    [
        ({"feature_key": "nothing"}, 404, "feature_not_found"),
        ({"since": "last week"}, 422, "validation_error"),
        ({"until": "2026-01-01"}, 422, "validation_error"),
        ({"limit": "-1"}, 422, "validation_error"),
    ],
)
def test_event_list_errors(api, args, status, code):
    response = api.get(f"/api/v1/customers/{C}/events", query_string=args)
    assert (response.status_code, error_code(response)) == (status, code)


def test_ledger_lists_topups_and_usage_with_signed_amounts(client, catalog):
    api_as(client).post(
        "/api/v1/usage",
        {"customer_key": C, "feature_key": "api_calls", "amount": 4, "event_id": "u1"},
    )
    api = api_as(client, "account_manager")
    body = api.get(f"/api/v1/customers/{C}/ledger", query_string={"credit_system": "credits"})
    usage_entry, topup_entry = body.get_json()["data"]
    assert (usage_entry["type"], usage_entry["amount"], usage_entry["balance_after"]) == (
        "usage",
        "-0.08",
        "9.92",
    )
    assert usage_entry["event_id"] == "u1"
    assert (topup_entry["type"], topup_entry["amount"], topup_entry["event_id"]) == (
        "topup",
        "10",
        None,
    )
    missing = api.get(f"/api/v1/customers/{C}/ledger", query_string={"credit_system": "gold"})
    assert missing.status_code == 404 and error_code(missing) == "not_found"


def test_features_list_with_credit_costs(api):
    body = api.get("/api/v1/features").get_json()
    assert body["next_cursor"] is None
    by_key = {f["key"]: f for f in body["data"]}
    assert by_key["api_calls"]["credit_cost"] == "0.02"
    assert by_key["api_calls"]["credit_system"] == "credits"
    assert by_key["seats"]["type"] == "persistent" and by_key["seats"]["credit_cost"] is None
    response = api.get("/api/v1/features", query_string={"page": "2"})
    assert response.status_code == 422


# ---------------------------------------------------------------- creating customers


def test_admin_creates_a_customer(client, catalog):
    response = api_as(client).post(
        "/api/v1/customers",
        {"key": "cust-new", "name": "New Co", "email": "Billing@New.example", "metadata": {"a": 1}},
    )
    assert response.status_code == 201
    body = response.get_json()
    assert (body["key"], body["email"], body["metadata"]) == (
        "cust-new",
        "billing@new.example",
        {"a": 1},
    )
    again = api_as(client).post("/api/v1/customers", {"key": "cust-new", "name": "Other"})
    assert again.status_code == 409 and error_code(again) == "conflict"


@pytest.mark.parametrize(
    "body",
    [
        {"name": "No key"},
        {"key": "has space", "name": "x"},
        {"key": "k", "name": ""},
        {"key": "k", "name": "x", "email": "not-an-email"},
        {"key": "k", "name": "x", "plan": "gold"},
        {"key": 5, "name": "x"},
    ],
)
def test_create_customer_validation(client, catalog, body):
    response = api_as(client).post("/api/v1/customers", body)
    assert response.status_code == 422 and error_code(response) == "validation_error"


def test_only_admins_create_customers(api):
    response = api.post("/api/v1/customers", {"key": "cust-x", "name": "X"})
    assert response.status_code == 403 and error_code(response) == "forbidden"
