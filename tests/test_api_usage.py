"""POST /api/v1/usage, /usage/batch and GET /entitlements/check over HTTP, on both databases.
Every response is also checked against the OpenAPI document (tests.api_support.Api)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from tests.api_support import Api, C, api_as, error_code, row_counts
from tests.factories import add_customer
from webapp.services import catalog as catalog_service
from webapp.services.actors import SYSTEM


@pytest.fixture
def api(client, catalog) -> Api:
    return api_as(client, "admin")


def record(api: Api, **fields):
    return api.post("/api/v1/usage", {"customer_key": C, **fields})


# ---------------------------------------------------------------- RecordUsage: success


def test_seed_example_records_two_candidates_and_deducts_four_hundredths(api):
    response = record(api, event_name="candidate.sourced", amount=2)
    assert response.status_code == 201
    body = response.get_json()
    assert body["message"] == "Usage recorded"
    assert (body["event_name"], body["customer_key"], body["amount"]) == (
        "candidate.sourced",
        C,
        2,
    )
    assert body["feature_key"] == "candidates"
    assert (body["used"], body["allowance"], body["available"], body["overage"]) == (
        2,
        100,
        98,
        0,
    )
    assert body["credits_deducted"] == "0.04"
    assert body["wallet_balance"] == "9.96"
    assert body["event_id"] and body["timestamp"].endswith("Z")
    assert "Idempotent-Replayed" not in response.headers


def test_four_api_calls_cost_exactly_eight_hundredths(api):
    body = record(api, feature_key="api_calls", amount="4").get_json()
    assert body["credits_deducted"] == "0.08"
    assert body["wallet_balance"] == "9.92"


def test_decimal_amounts_never_pass_through_float(api):
    # 0.1 + 0.2 as floats is 0.30000000000000004; as decimals it is 0.3.
    record(api, feature_key="api_calls", amount=0.1)
    body = record(api, feature_key="api_calls", amount=0.2).get_json()
    assert body["used"] == "0.3"
    assert body["amount"] == "0.2"
    assert body["credits_deducted"] == "0.004"


def test_persistent_feature_is_not_credit_based_and_gives_seats_back(api):
    for _ in range(8):
        record(api, feature_key="seats", amount=1)
    body = record(api, event_name="seat.assigned", amount=-1).get_json()
    assert (body["used"], body["available"], body["allowance"]) == (7, 3, 10)
    assert body["credits_deducted"] is None and body["wallet_balance"] is None
    assert body["credit_system"] is None


def test_unlimited_allowance_answers_null(client):
    from tests.factories import make_catalog

    make_catalog(api_allowance=None)
    body = record(api_as(client), feature_key="api_calls", amount=3).get_json()
    assert body["allowance"] is None and body["available"] is None


def test_overage_allowed_is_flagged(client):
    from tests.factories import make_catalog
    from webapp.services import catalog

    make_catalog(api_allowance=2)
    catalog.set_entitlement(
        SYSTEM, C, "api_calls", allowance=2, reset_period="month", overage="allow"
    )
    body = record(api_as(client), feature_key="api_calls", amount=3).get_json()
    assert (body["used"], body["available"], body["overage"]) == (3, -1, 1)


def test_metadata_and_timestamp_are_kept(api):
    at = (datetime.now(UTC) - timedelta(minutes=1)).replace(microsecond=0)
    stamp = at.isoformat().replace("+00:00", "Z")
    body = record(
        api, feature_key="api_calls", event_id="evt-1", timestamp=stamp, metadata={"job": 7}
    ).get_json()
    assert body["timestamp"] == stamp and body["event_id"] == "evt-1"
    (event,) = api.get(f"/api/v1/customers/{C}/events").get_json()["data"]
    assert event["metadata"] == {"job": 7} and event["timestamp"] == stamp


# ---------------------------------------------------------------- idempotency


def test_replay_answers_200_with_the_same_body_and_writes_nothing(api):
    first = record(api, feature_key="api_calls", amount=4, event_id="order-17")
    before = row_counts()
    again = record(api, feature_key="api_calls", amount=4, event_id="order-17")
    assert first.status_code == 201 and again.status_code == 200
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.get_json() == first.get_json()
    assert row_counts() == before


def test_same_event_id_with_other_content_is_idempotency_conflict(api):
    record(api, feature_key="api_calls", amount=4, event_id="order-17")
    before = row_counts()
    response = record(api, feature_key="api_calls", amount=5, event_id="order-17")
    assert response.status_code == 409 and error_code(response) == "idempotency_conflict"
    assert response.get_json()["error"]["details"]["field"] == "event_id"
    assert row_counts() == before


# ---------------------------------------------------------------- RecordUsage: every error


@pytest.mark.parametrize(
    ("fields", "status", "code"),
    [
        ({"customer_key": "nobody", "feature_key": "api_calls"}, 404, "customer_not_found"),
        ({"feature_key": "nothing"}, 404, "feature_not_found"),
        ({"event_name": "no.such.event"}, 404, "feature_not_found"),
        ({"feature_key": "sso"}, 422, "feature_not_recordable"),
        ({"feature_key": "api_calls", "amount": 0}, 422, "invalid_amount"),
        ({"feature_key": "api_calls", "amount": -1}, 422, "invalid_amount"),
        ({"feature_key": "api_calls", "amount": "1.0000001"}, 422, "invalid_amount"),
        ({"feature_key": "api_calls", "amount": "lots"}, 422, "invalid_amount"),
        ({"feature_key": "seats", "amount": "1.5"}, 422, "invalid_amount"),
        ({"feature_key": "seats", "amount": -1}, 422, "invalid_amount"),
        ({"feature_key": "api_calls", "amount": 1001}, 403, "limit_exceeded"),
        ({"feature_key": "api_calls", "amount": 501}, 402, "insufficient_credits"),
        ({"feature_key": "api_calls", "event_name": "api.call"}, 422, "validation_error"),
        ({}, 422, "validation_error"),
        ({"customer_key": None, "feature_key": "api_calls"}, 422, "validation_error"),
        ({"feature_key": "api_calls", "colour": "red"}, 422, "validation_error"),
        ({"feature_key": "api_calls", "amount": True}, 422, "validation_error"),
        ({"feature_key": "api_calls", "amount": [1]}, 422, "validation_error"),
        ({"feature_key": 7}, 422, "validation_error"),
        ({"feature_key": "api_calls", "metadata": "x"}, 422, "validation_error"),
        ({"feature_key": "api_calls", "timestamp": "yesterday"}, 422, "validation_error"),
        ({"feature_key": "api_calls", "timestamp": "2026-01-01T00:00:00"}, 422, "validation_error"),
        ({"feature_key": "api_calls", "event_id": "has space"}, 422, "validation_error"),
    ],
)
def test_record_usage_errors_write_nothing(api, fields, status, code):
    before = row_counts()
    response = record(api, **fields)
    assert (response.status_code, error_code(response)) == (status, code), response.get_json()
    assert row_counts() == before


def test_unknown_field_is_named(api):
    response = record(api, feature_key="api_calls", quantity=3)
    error = response.get_json()["error"]
    assert error["details"]["field"] == "quantity" and "quantity" in error["message"]


def test_timestamp_far_in_the_future_is_rejected(api):
    later = (datetime.now(UTC) + timedelta(minutes=10)).isoformat()
    response = record(api, feature_key="api_calls", timestamp=later)
    assert response.status_code == 422 and error_code(response) == "validation_error"


def test_not_entitled(client, catalog):
    add_customer("cust-2")
    from webapp.services import catalog as cat
    from webapp.services.actors import SYSTEM

    cat.remove_entitlement(SYSTEM, "cust-2", "api_calls")
    response = api_as(client).post(
        "/api/v1/usage", {"customer_key": "cust-2", "feature_key": "api_calls"}
    )
    assert response.status_code == 403 and error_code(response) == "not_entitled"


@pytest.mark.parametrize(
    ("data", "content_type"),
    [
        ("{", "application/json"),
        ("", "application/json"),
        ('{"customer_key": "a", "amount": NaN}', "application/json"),
        ('{"customer_key": "a", "amount": Infinity}', "application/json"),
        ('{"customer_key": "a", "customer_key": "b"}', "application/json"),
        (b'{"customer_key": "\xff"}', "application/json"),
        ('{"customer_key": "a"}', "text/plain"),
        ('{"customer_key": "a"}', "application/x-www-form-urlencoded"),
        ('{"customer_key": "a"}', "application/json; charset=latin-1"),
    ],
)
def test_malformed_json_is_400(api, data, content_type):
    response = api.post("/api/v1/usage", data=data, content_type=content_type)
    assert response.status_code == 400 and error_code(response) == "malformed_json"


def test_body_that_is_not_an_object_is_validation_error(api):
    response = api.post("/api/v1/usage", [1, 2])
    assert response.status_code == 422 and error_code(response) == "validation_error"


def test_body_over_one_mebibyte_is_413(api):
    big = json.dumps({"customer_key": C, "metadata": {"x": "y" * (1024 * 1024)}})
    response = api.post("/api/v1/usage", data=big, content_type="application/json")
    assert response.status_code == 413 and error_code(response) == "payload_too_large"


def test_wrong_method_is_405_json(api):
    response = api.get("/api/v1/usage")
    assert response.status_code == 405
    assert response.get_json()["error"]["code"] == "method_not_allowed"


# ---------------------------------------------------------------- batch


def test_batch_records_valid_events_and_rejects_invalid_ones_with_their_own_code(api):
    before = row_counts()
    events = [
        {"customer_key": C, "event_name": "candidate.sourced", "amount": 2, "event_id": "b-1"},
        {"customer_key": C, "feature_key": "api_calls", "amount": 600},  # 12 credits > 9.96
        {"customer_key": C, "feature_key": "sso"},
        {"customer_key": "nobody", "feature_key": "api_calls"},
        {"customer_key": C, "feature_key": "api_calls", "bogus": 1},
        "not an object",
        {"customer_key": C, "feature_key": "seats", "amount": -1},
        {"customer_key": C, "feature_key": "api_calls", "amount": 4, "event_id": "b-2"},
        {"customer_key": C, "event_name": "candidate.sourced", "amount": 2, "event_id": "b-1"},
    ]
    response = api.post("/api/v1/usage/batch", {"events": events})
    assert response.status_code == 200
    results = response.get_json()["results"]
    assert [r["status"] for r in results] == [201, 402, 422, 404, 422, 422, 422, 201, 200]
    codes = [r["body"]["error"]["code"] for r in results if r["status"] >= 400]
    assert codes == [
        "insufficient_credits",
        "feature_not_recordable",
        "customer_not_found",
        "validation_error",
        "validation_error",
        "invalid_amount",
    ]
    assert results[0]["body"]["wallet_balance"] == "9.96"
    assert results[7]["body"]["wallet_balance"] == "9.88"
    assert results[8]["body"] == results[0]["body"]
    after = row_counts()
    assert after["usage_events"] == before["usage_events"] + 2
    assert after["ledger_entries"] == before["ledger_entries"] + 2
    events_page = api.get(f"/api/v1/customers/{C}/events").get_json()["data"]
    assert sorted(e["event_id"] for e in events_page) == ["b-1", "b-2"]


def test_batch_is_judged_in_order_as_if_sent_alone(client):
    from tests.factories import make_catalog

    make_catalog(api_allowance=5)
    events = [{"customer_key": C, "feature_key": "api_calls", "amount": 3}] * 2
    results = api_as(client).post("/api/v1/usage/batch", {"events": events}).get_json()["results"]
    assert [r["status"] for r in results] == [201, 403]
    assert results[1]["body"]["error"]["code"] == "limit_exceeded"


def test_empty_batch_is_fine(api):
    response = api.post("/api/v1/usage/batch", {"events": []})
    assert response.status_code == 200 and response.get_json() == {"results": []}


def test_batch_of_more_than_1000_events_is_413(api):
    events = [{"customer_key": C, "feature_key": "api_calls"}] * 1001
    before = row_counts()
    response = api.post("/api/v1/usage/batch", {"events": events})
    assert response.status_code == 413 and error_code(response) == "payload_too_large"
    assert row_counts() == before


def test_batch_of_exactly_1000_events_is_accepted(client):
    from tests.factories import make_catalog

    make_catalog(api_allowance=None, topup="100")
    events = [{"customer_key": C, "feature_key": "api_calls"} for _ in range(1000)]
    response = api_as(client).post("/api/v1/usage/batch", {"events": events})
    results = response.get_json()["results"]
    assert {r["status"] for r in results} == {201}
    assert results[-1]["body"]["used"] == 1000
    assert results[-1]["body"]["wallet_balance"] == "80"


@pytest.mark.parametrize(
    "body",
    [{}, {"events": "x"}, {"events": [], "extra": 1}, {"events": None}],
)
def test_batch_of_the_wrong_shape_is_validation_error(api, body):
    response = api.post("/api/v1/usage/batch", body)
    assert response.status_code == 422 and error_code(response) == "validation_error"


def test_batch_malformed_json_is_400(api):
    response = api.post("/api/v1/usage/batch", data="[", content_type="application/json")
    assert response.status_code == 400 and error_code(response) == "malformed_json"


# ---------------------------------------------------------------- entitlement check


def check(api: Api, **args):
    return api.get("/api/v1/entitlements/check", query_string={"customer_key": C, **args})


def test_check_allows_and_writes_nothing(api):
    record(api, feature_key="api_calls", amount=10)
    before = row_counts()
    response = check(api, feature_key="api_calls")
    assert response.status_code == 200
    body = response.get_json()
    assert body["allowed"] is True and body["reason"] is None
    assert (body["used"], body["allowance"], body["available"]) == (10, 1000, 990)
    assert body["credits_required"] == "0.02" and body["wallet_balance"] == "9.8"
    assert body["type"] == "consumable" and body["reset_at"].endswith("Z")
    assert row_counts() == before


def test_check_by_event_name_with_amount(api):
    body = check(api, event_name="candidate.sourced", amount="3").get_json()
    assert body["feature_key"] == "candidates" and body["credits_required"] == "0.06"


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        ({"feature_key": "api_calls", "amount": "1001"}, "limit_exceeded"),
        ({"feature_key": "api_calls", "amount": "600"}, "insufficient_credits"),
        ({"feature_key": "seats", "amount": "-1"}, "invalid_amount"),
    ],
)
def test_check_says_why_not(api, args, reason):
    body = check(api, **args).get_json()
    assert body["allowed"] is False and body["reason"] == reason


def test_check_boolean_feature(api):
    body = check(api, feature_key="sso").get_json()
    assert body["allowed"] is True and body["type"] == "boolean"


@pytest.mark.parametrize(
    ("args", "status", "code"),
    [
        ({"customer_key": "nobody", "feature_key": "api_calls"}, 404, "customer_not_found"),
        ({"feature_key": "nothing"}, 404, "feature_not_found"),
        ({}, 422, "validation_error"),
        ({"feature_key": "api_calls", "event_name": "api.call"}, 422, "validation_error"),
        ({"feature_key": "api_calls", "amount": "0"}, 422, "invalid_amount"),
        ({"feature_key": "api_calls", "amount": "x"}, 422, "invalid_amount"),
        ({"feature_key": "api_calls", "colour": "red"}, 422, "validation_error"),
    ],
)
def test_check_errors(api, args, status, code):
    response = check(api, **args)
    assert (response.status_code, error_code(response)) == (status, code)


def test_usage_of_an_archived_feature_is_refused_on_every_door(api, client):
    catalog_service.set_feature_archived(SYSTEM, "api_calls", True)
    before = row_counts()
    response = record(api, feature_key="api_calls", amount=1)
    assert response.status_code == 422 and error_code(response) == "feature_not_recordable"
    batch = api.post(
        "/api/v1/usage/batch",
        {"events": [{"customer_key": C, "event_name": "api.call", "amount": 1}]},
    )
    assert "feature_not_recordable" in json.dumps(batch.get_json())
    metrifox = client.post(
        "/metrifox/meter/usage/events",
        json={"customer_key": C, "event_name": "api.call", "quantity": 1},
        headers={"x-api-key": api.secret},
    )
    assert metrifox.status_code == 422
    assert row_counts() == before
