"""Admin configuration over the API: features, credit systems, credit costs, entitlements."""

from __future__ import annotations

import pytest

from tests.api_support import Api, C, api_as, error_code


@pytest.fixture
def api(client, catalog) -> Api:
    return api_as(client, "admin")


def test_admin_builds_a_credit_based_feature_end_to_end(api):
    system = api.post("/api/v1/credit-systems", {"key": "ai_tokens", "name": "AI tokens"})
    assert system.status_code == 201
    assert system.get_json()["unit_plural"] == "credits"
    feature = api.post(
        "/api/v1/features",
        {"key": "images", "name": "Images", "type": "consumable", "event_name": "image.made"},
    )
    assert feature.status_code == 201
    assert feature.get_json()["event_name"] == "image.made"
    assert feature.get_json()["credit_cost"] is None
    cost = api.put(
        "/api/v1/features/images/credit-cost", {"credit_system": "ai_tokens", "cost": "0.5"}
    )
    assert cost.status_code == 200
    assert cost.get_json()["cost"] == "0.5"
    ent = api.put(
        f"/api/v1/customers/{C}/entitlements/images",
        {"allowance": 10, "reset_period": "day", "overage": "allow"},
    )
    assert ent.status_code == 200
    assert (ent.get_json()["allowance"], ent.get_json()["reset_period"]) == (10, "day")
    api.post(
        "/api/v1/wallets/topups", {"customer_key": C, "credit_system": "ai_tokens", "amount": 5}
    )
    used = api.post("/api/v1/usage", {"customer_key": C, "event_name": "image.made", "amount": 3})
    assert used.status_code == 201
    assert (used.get_json()["credits_deducted"], used.get_json()["wallet_balance"]) == (
        "1.5",
        "3.5",
    )


def test_feature_event_name_defaults_to_key(api):
    body = api.post("/api/v1/features", {"key": "exports", "name": "Exports", "type": "boolean"})
    assert body.get_json()["event_name"] == "exports"


def test_creating_what_exists_is_409_conflict(api):
    for path, body in [
        ("/api/v1/features", {"key": "api_calls", "name": "x", "type": "consumable"}),
        (
            "/api/v1/features",
            {"key": "new", "name": "x", "type": "consumable", "event_name": "sso"},
        ),
        ("/api/v1/credit-systems", {"key": "credits", "name": "again"}),
        ("/api/v1/customers", {"key": C, "name": "again"}),
    ]:
        response = api.post(path, body)
        assert response.status_code == 409 and error_code(response) == "conflict", path


FULL = {"allowance": 1, "reset_period": "never", "overage": "block"}


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/v1/features", {"key": "Bad Key", "name": "x", "type": "consumable"}),
        ("/api/v1/features", {"key": "k", "name": "x", "type": "metered"}),
        ("/api/v1/features", {"key": "k", "name": "x"}),
        ("/api/v1/features", {"key": "k", "name": "x", "type": "boolean", "price": 1}),
        ("/api/v1/credit-systems", {"key": "k"}),
        ("/api/v1/credit-systems", {"key": "k", "name": 3}),
    ],
)
def test_admin_create_validation(api, path, body):
    response = api.post(path, body)
    assert response.status_code == 422 and error_code(response) == "validation_error"


def test_put_of_an_entitlement_requires_every_field(api):
    """A PUT missing `reset_period` (or `overage`) is refused, never defaulted (issue 13, 2)."""
    monthly = {"allowance": 10, "reset_period": "month", "overage": "block"}
    assert api.put(f"/api/v1/customers/{C}/entitlements/api_calls", monthly).status_code == 200
    for missing in ("reset_period", "overage", "allowance"):
        body = {k: v for k, v in monthly.items() if k != missing}
        response = api.put(f"/api/v1/customers/{C}/entitlements/api_calls", body)
        assert (response.status_code, error_code(response)) == (422, "validation_error")
        assert response.get_json()["error"]["details"]["field"] == missing
    read = api.get(f"/api/v1/customers/{C}").get_json()
    [ent] = [e for e in read["entitlements"] if e["feature_key"] == "api_calls"]
    assert (ent["allowance"], ent["reset_period"], ent["overage"]) == (10, "month", "block")


def test_patch_of_an_entitlement_changes_only_what_is_sent(api):
    monthly = {"allowance": 10, "reset_period": "month", "overage": "allow"}
    api.put(f"/api/v1/customers/{C}/entitlements/api_calls", monthly)
    response = api.patch(f"/api/v1/customers/{C}/entitlements/api_calls", {"allowance": 25})
    assert response.status_code == 200
    body = response.get_json()
    assert (body["allowance"], body["reset_period"], body["overage"]) == (25, "month", "allow")
    unknown = api.patch(f"/api/v1/customers/{C}/entitlements/api_calls", {"limit": 3})
    assert (unknown.status_code, error_code(unknown)) == (422, "validation_error")


def test_patch_of_a_missing_entitlement_is_404(api):
    api.post("/api/v1/features", {"key": "extra", "name": "Extra", "type": "consumable"})
    response = api.patch(f"/api/v1/customers/{C}/entitlements/extra", {"allowance": 1})
    assert (response.status_code, error_code(response)) == (404, "not_found")


@pytest.mark.parametrize(
    ("path", "body", "status", "code"),
    [
        (
            "/features/nothing/credit-cost",
            {"credit_system": "credits", "cost": 1},
            404,
            "feature_not_found",
        ),
        ("/features/api_calls/credit-cost", {"credit_system": "gold", "cost": 1}, 404, "not_found"),
        (
            "/features/sso/credit-cost",
            {"credit_system": "credits", "cost": 1},
            422,
            "feature_not_recordable",
        ),
        (
            "/features/api_calls/credit-cost",
            {"credit_system": "credits", "cost": "0"},
            422,
            "validation_error",
        ),
        ("/features/api_calls/credit-cost", {"credit_system": "credits"}, 422, "validation_error"),
        (f"/customers/{C}/entitlements/nothing", FULL, 404, "feature_not_found"),
        ("/customers/nobody/entitlements/api_calls", FULL, 404, "customer_not_found"),
        (f"/customers/{C}/entitlements/api_calls", {}, 422, "validation_error"),
        (
            f"/customers/{C}/entitlements/api_calls",
            {"allowance": 1, "reset_period": "hour", "overage": "block"},
            422,
            "validation_error",
        ),
        (
            f"/customers/{C}/entitlements/seats",
            {**FULL, "allowance": "1.5"},
            422,
            "validation_error",
        ),
        (
            f"/customers/{C}/entitlements/api_calls",
            {**FULL, "allowance": -1},
            422,
            "validation_error",
        ),
        (
            f"/customers/{C}/entitlements/api_calls",
            {"allowance": None, "limit": 3},
            422,
            "validation_error",
        ),
    ],
)
def test_admin_put_errors(api, path, body, status, code):
    response = api.put("/api/v1" + path, body)
    assert (response.status_code, error_code(response)) == (status, code)


def test_entitlement_null_allowance_is_unlimited(api):
    body = api.put(f"/api/v1/customers/{C}/entitlements/api_calls", {**FULL, "allowance": None})
    assert body.status_code == 200 and body.get_json()["allowance"] is None


def test_allowance_below_usage_is_refused_while_blocking(api):
    for _ in range(3):
        api.post("/api/v1/usage", {"customer_key": C, "feature_key": "seats"})
    response = api.put(f"/api/v1/customers/{C}/entitlements/seats", {**FULL, "allowance": 2})
    assert response.status_code == 422 and error_code(response) == "validation_error"


@pytest.mark.parametrize("role", ["account_manager", "support", "finance"])
def test_configuration_is_admin_only(client, catalog, role):
    api = api_as(client, role)
    calls = [
        api.post("/api/v1/features", {"key": "x", "name": "X", "type": "boolean"}),
        api.post("/api/v1/credit-systems", {"key": "x", "name": "X"}),
        api.put("/api/v1/features/api_calls/credit-cost", {"credit_system": "credits", "cost": 1}),
        api.put(f"/api/v1/customers/{C}/entitlements/api_calls", {**FULL, "allowance": 5}),
        api.patch(f"/api/v1/customers/{C}/entitlements/api_calls", {"allowance": 5}),
    ]
    for response in calls:
        assert response.status_code == 403 and error_code(response) == "forbidden"
