"""Usage corrections through /api/v1 (docs/api.md, docs/domain.md "Usage corrections"): every
answer is checked against the OpenAPI document; refusals have their status and code and change
nothing. On both databases."""

from __future__ import annotations

from sqlalchemy import func, select

from tests.api_support import C, api_as, error_code, row_counts
from webapp.extensions import db
from webapp.models import UsageCorrection

URL = f"/api/v1/customers/{C}/events/e1/corrections"


def counts() -> dict[str, int]:
    return {
        **row_counts(),
        "usage_corrections": db.session.scalar(select(func.count()).select_from(UsageCorrection)),
    }


def test_correct_an_event_then_read_it_back(client, catalog):
    api = api_as(client, "support")
    body = {"customer_key": C, "feature_key": "api_calls", "amount": 50, "event_id": "e1"}
    assert api.post("/api/v1/usage", body).status_code == 201
    response = api.post(URL, {"actual_amount": 5, "reason": "typed 50 for 5"})
    assert response.status_code == 201, response.get_json()
    got = response.get_json()
    assert got["message"] == "Usage corrected" and got["corrected"] is True
    assert (got["original_amount"], got["effective_before"], got["effective_amount"]) == (50, 50, 5)
    assert got["delta"] == -45
    assert (got["credits_refunded"], got["credits_deducted"]) == ("0.9", "0")
    assert got["wallet_balance"] == "9.9" and got["used"] == 5
    assert got["actor"].startswith("api_key:")
    events = api.get(f"/api/v1/customers/{C}/events").get_json()["data"]
    assert events[0]["amount"] == 50 and events[0]["effective_amount"] == 5
    assert events[0]["credits_deducted"] == "1"
    assert events[0]["effective_credits"] == "0.1"  # 1 recorded - 0.9 returned
    [fix] = events[0]["corrections"]
    assert (fix["delta"], fix["effective_amount"], fix["credits"]) == (-45, 5, "0.9")
    assert fix["reason"] == "typed 50 for 5"
    # More again: a deduction at the event's own cost.
    more = api.post(URL, {"actual_amount": "7.5", "reason": "recount"}).get_json()
    assert (more["delta"], more["credits_deducted"], more["credits_refunded"]) == (
        "2.5",
        "0.05",
        "0",
    )
    ledger = api.get(f"/api/v1/customers/{C}/ledger").get_json()["data"]
    assert [e["type"] for e in ledger[:2]] == ["correction", "correction"]
    assert ledger[0]["amount"] == "-0.05" and ledger[1]["amount"] == "0.9"
    assert ledger[1]["allocations"][0]["amount"] == "-0.9"
    [read] = api.get(f"/api/v1/customers/{C}/events").get_json()["data"]
    assert (read["effective_amount"], read["effective_credits"]) == ("7.5", "0.15")


def test_replays_conflicts_and_nothing_to_correct(client, catalog):
    api = api_as(client, "admin")
    api.post(
        "/api/v1/usage",
        {"customer_key": C, "feature_key": "api_calls", "amount": 5, "event_id": "e1"},
    )
    body = {"actual_amount": 4, "reason": "fix", "idempotency_key": "k-1"}
    first = api.post(URL, body)
    assert first.status_code == 201
    before = counts()
    again = api.post(URL, body)
    assert again.status_code == 200 and again.headers["Idempotent-Replayed"] == "true"
    assert again.get_json()["id"] == first.get_json()["id"]
    conflict = api.post(URL, {**body, "actual_amount": 3})
    assert (conflict.status_code, error_code(conflict)) == (409, "idempotency_conflict")
    same = api.post(URL, {"actual_amount": 4, "reason": "again"})
    assert same.status_code == 200
    assert same.get_json()["corrected"] is False and same.get_json()["id"] is None
    assert same.get_json()["message"] == "Nothing to correct"
    assert counts() == before


def test_refusals_have_their_status_and_code_and_change_nothing(client, catalog):
    api = api_as(client, "admin")
    api.post(
        "/api/v1/usage",
        {"customer_key": C, "feature_key": "candidates", "amount": 95, "event_id": "e1"},
    )
    api.post(
        "/api/v1/usage", {"customer_key": C, "feature_key": "seats", "amount": 1, "event_id": "s1"}
    )
    others = {role: api_as(client, role) for role in ("finance", "account_manager")}
    before = counts()
    cases = [
        (URL, {"actual_amount": 101, "reason": "x"}, 403, "limit_exceeded"),
        (URL, {"actual_amount": -1, "reason": "x"}, 422, "invalid_amount"),
        (URL, {"actual_amount": "1.0000001", "reason": "x"}, 422, "invalid_amount"),
        (URL, {"actual_amount": "1", "reason": ""}, 422, "validation_error"),
        (URL, {"actual_amount": "1"}, 422, "validation_error"),
        (URL, {"actual_amount": "1", "reason": "x", "amount": 2}, 422, "validation_error"),
        (URL, {"actual_amount": True, "reason": "x"}, 422, "validation_error"),
        (URL.replace("/e1/", "/nope/"), {"actual_amount": 1, "reason": "x"}, 404, "not_found"),
        (URL.replace(C, "nobody"), {"actual_amount": 1, "reason": "x"}, 404, "customer_not_found"),
        (URL.replace("/e1/", "/s1/"), {"actual_amount": 12, "reason": "x"}, 403, "limit_exceeded"),
        (
            URL.replace("/e1/", "/s1/"),
            {"actual_amount": "0.5", "reason": "x"},
            422,
            "invalid_amount",
        ),
    ]
    for url, body, status, code in cases:
        response = api.post(url, body)
        assert (response.status_code, error_code(response)) == (status, code), (
            body,
            response.get_json(),
        )
    for other in others.values():
        forbidden = other.post(URL, {"actual_amount": 1, "reason": "x"})
        assert (forbidden.status_code, error_code(forbidden)) == (403, "forbidden")
    assert counts() == before


def test_insufficient_credits_for_an_extra_charge(client, catalog):
    api = api_as(client, "admin")
    api.post(
        "/api/v1/usage",
        {"customer_key": C, "feature_key": "api_calls", "amount": 400, "event_id": "e1"},
    )
    before = counts()
    poor = api.post(URL, {"actual_amount": 1000, "reason": "x"})
    assert (poor.status_code, error_code(poor)) == (402, "insufficient_credits")
    details = poor.get_json()["error"]["details"]
    assert details["credits_required"] == "12" and details["eligible_balance"] == "2"
    assert counts() == before
