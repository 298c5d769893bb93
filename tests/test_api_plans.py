"""Plans over the API: create, list, read, edit (with its refusal), a customer's plan now and
scheduled, overrides on the entitlement endpoints, and the customer read's sources. Every
response is checked against the OpenAPI document (tests.api_support)."""

from __future__ import annotations

import pytest

from tests.api_support import Api, C, api_as, error_code, row_counts

GROWTH = {
    "key": "growth",
    "name": "Growth",
    "prorate_included_credits": False,
    "entitlements": [
        {
            "feature_key": "api_calls",
            "allowance": "5000",
            "reset_period": "month",
            "overage": "block",
        },
        {"feature_key": "seats", "allowance": 5, "reset_period": "never", "overage": "block"},
        {"feature_key": "sso", "allowance": None, "reset_period": "never", "overage": "block"},
    ],
    "included_credits": [{"credit_system": "credits", "amount": "25", "period": "month"}],
}


@pytest.fixture
def api(client, catalog) -> Api:
    return api_as(client, "admin")


def test_create_list_read_and_archive_a_plan(api):
    created = api.post("/api/v1/plans", GROWTH)
    assert created.status_code == 201, created.get_json()
    body = created.get_json()
    assert body["entitlements"][0] == {
        "feature_key": "api_calls",
        "allowance": 5000,
        "reset_period": "month",
        "overage": "block",
    }
    assert body["included_credits"] == [
        {"credit_system": "credits", "amount": "25", "period": "month"}
    ]
    assert api.post("/api/v1/plans", GROWTH).status_code == 409
    listed = api.get("/api/v1/plans").get_json()
    assert [p["key"] for p in listed["data"]] == ["growth"]
    assert api.get("/api/v1/plans/growth").get_json()["customers"] == 0
    assert api.get("/api/v1/plans/nope").status_code == 404
    archived = api.patch("/api/v1/plans/growth", {"status": "archived"})
    assert archived.get_json()["status"] == "archived"
    refused = api.put(f"/api/v1/customers/{C}/plan", {"plan": "growth"})
    assert refused.status_code == 422 and error_code(refused) == "validation_error"


def test_bad_plan_bodies_are_validation_errors_and_write_nothing(api):
    before = row_counts()
    for body in (
        {"key": "x", "name": "X", "entitlements": [{"feature_key": "api_calls"}]},
        {"key": "x", "name": "X", "entitlements": "no"},
        {
            "key": "x",
            "name": "X",
            "included_credits": [{"credit_system": "credits", "amount": "0"}],
        },
        {"key": "x", "name": "X", "unknown": 1},
        {
            "key": "x",
            "name": "X",
            "entitlements": [dict(GROWTH["entitlements"][1], reset_period="month")],
        },
    ):
        response = api.post("/api/v1/plans", body)
        assert response.status_code == 422, (body, response.get_json())
    assert row_counts() == before
    assert api.get("/api/v1/plans").get_json()["data"] == []


def test_a_customer_on_a_plan_shows_sources_and_overrides(api):
    api.post("/api/v1/plans", GROWTH)
    put = api.put(f"/api/v1/customers/{C}/plan", {"plan": "growth", "when": "now"})
    assert put.status_code == 200, put.get_json()
    assert put.get_json()["included_credits_issued"] == 1
    patched = api.patch(f"/api/v1/customers/{C}/entitlements/api_calls", {"allowance": 9000})
    assert patched.get_json()["source"] == "override"
    assert patched.get_json()["overridden"] == ["allowance"]
    detail = api.get(f"/api/v1/customers/{C}").get_json()
    assert detail["plan"]["key"] == "growth" and detail["plan"]["scheduled_change"] is None
    sources = {e["feature_key"]: (e["source"], e["overridden"]) for e in detail["entitlements"]}
    assert sources["api_calls"] == ("override", ["allowance"])
    assert sources["seats"] == ("plan", [])
    assert sources["candidates"][0] == "override"  # its own, kept as an extra feature
    removed = api.delete(f"/api/v1/customers/{C}/entitlements/api_calls")
    assert removed.get_json()["removed"] == "override"
    assert removed.get_json()["entitlement"]["allowance"] == 5000
    assert api.delete(f"/api/v1/customers/{C}/entitlements/api_calls").status_code == 404
    wallets = api.get(f"/api/v1/customers/{C}").get_json()["wallets"]
    assert wallets[0]["balance"] == "35"  # 10 topped up + 25 included


def test_a_plan_edit_blocked_by_usage_lists_the_customers(api):
    api.post("/api/v1/plans", GROWTH)
    api.put(f"/api/v1/customers/{C}/plan", {"plan": "growth"})
    api.post("/api/v1/usage", {"customer_key": C, "feature_key": "seats", "amount": 4})
    smaller = [dict(e) for e in GROWTH["entitlements"]]
    smaller[1]["allowance"] = 2
    preview = api.post("/api/v1/plans/growth/preview", {"entitlements": smaller}).get_json()
    assert preview["affected"] == 1 and preview["blocked"][0]["customer_key"] == C
    refused = api.patch("/api/v1/plans/growth", {"entitlements": smaller})
    assert refused.status_code == 409 and error_code(refused) == "plan_change_blocked"
    assert refused.get_json()["error"]["details"]["blocked"][0]["used"] == "4"
    done = api.patch("/api/v1/plans/growth", {"entitlements": smaller, "apply_to_others": True})
    assert done.status_code == 200
    assert done.get_json()["kept"][0]["customer_key"] == C


def test_a_scheduled_plan_change_and_leaving_a_plan(api):
    api.post("/api/v1/plans", GROWTH)
    scheduled = api.put(f"/api/v1/customers/{C}/plan", {"plan": "growth", "when": "period_end"})
    assert scheduled.get_json()["scheduled"] is True
    detail = api.get(f"/api/v1/customers/{C}").get_json()
    assert detail["plan"]["key"] is None
    assert detail["plan"]["scheduled_change"]["plan"] == "growth"
    # `now` with the current plan (none) cancels it
    api.put(f"/api/v1/customers/{C}/plan", {"plan": None})
    assert api.get(f"/api/v1/customers/{C}").get_json()["plan"] is None
    assert api.put(f"/api/v1/customers/{C}/plan", {"when": "now"}).status_code == 422
    assert api.put(f"/api/v1/customers/{C}/plan", {"plan": "nope"}).status_code == 404


@pytest.mark.parametrize("role", ["support", "finance", "account_manager"])
def test_removing_an_entitlement_without_the_role_is_403_whether_or_not_the_customer_exists(
    client, catalog, role
):
    """The role is checked before anything is looked up: a 404 for an unknown customer would
    tell a key without the role which customers exist."""
    other = api_as(client, role)
    before = row_counts()
    for key in (C, "no-such-customer"):
        response = other.delete(f"/api/v1/customers/{key}/entitlements/api_calls")
        assert (response.status_code, error_code(response)) == (403, "forbidden"), key
    assert row_counts() == before
