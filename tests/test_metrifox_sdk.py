"""The official Metrifox SDK (metrifox-sdk 1.3.1), pointed at a real server over HTTP, on SQLite and
PostgreSQL: the two base URLs change, the calls stay the same."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import requests
from flask import Flask
from metrifox_sdk import (
    AccessCheckRequest,
    APIError,
    CustomerCreateRequest,
    CustomerUpdateRequest,
    MetrifoxClient,
    UsageEventRequest,
)
from werkzeug.serving import make_server

from tests.factories import add_customer
from tests.test_metrifox_services import Clock
from webapp.extensions import db
from webapp.jsondoor import iso
from webapp.models import set_clock
from webapp.services import auth, wallets
from webapp.services import catalog as catalog_service
from webapp.services.actors import SYSTEM

C = "cust-6d11ca90"


@pytest.fixture
def server(app: Flask) -> Iterator[str]:
    """The app served on a free port in a thread, against the test database."""
    srv = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{srv.server_port}"
    finally:
        srv.shutdown()
        thread.join(timeout=10)
        srv.server_close()


def sdk_client(server: str, api_key: str) -> MetrifoxClient:
    return MetrifoxClient(
        api_key=api_key,
        base_url=f"{server}/metrifox/api/v1/",
        meter_service_base_url=f"{server}/metrifox/meter/",
    )


@pytest.fixture
def api_key(app: Flask) -> str:
    return auth.create_api_key(SYSTEM, name="metrifox sdk", role="admin").secret


@pytest.fixture
def client_sdk(server: str, api_key: str) -> MetrifoxClient:
    return sdk_client(server, api_key)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def credits(sdk: MetrifoxClient, customer: str = C) -> float:
    (wallet,) = sdk.wallets.list(customer)["data"]
    return wallet["balance"]


# ---------------------------------------------------------------- usage


def test_seed_example_candidate_sourced_is_recorded_by_event_name(catalog, client_sdk):
    response = client_sdk.usages.record_usage(
        {
            "customer_key": C,
            "event_name": "candidate.sourced",
            "event_id": "evt-seed-1",
            "amount": 2,  # the SDK's deprecated alias, sent as `quantity`
        }
    )
    assert response["message"] == "Usage recorded"
    assert response["event_name"] == "candidate.sourced"
    assert response["customer_key"] == C
    assert response["amount"] == 2
    assert response["feature_key"] == "candidates"
    assert response["used"] == 2
    assert response["credit_used"] == 0.04
    assert response["wallet_balance"] == 9.96
    assert credits(client_sdk) == 9.96


def test_usage_by_feature_key_deducts_credits_from_cost_never_from_credit_used(catalog, client_sdk):
    response = client_sdk.usages.record_usage(
        UsageEventRequest(
            customer_key=C,
            event_id="evt-api-1",
            feature_key="api_calls",
            quantity=4,
            credit_used=500,  # accepted, ignored: credits follow the feature's credit cost
            timestamp=now_ms(),
            metadata={"source": "web_app"},
        )
    )
    assert response["feature_key"] == "api_calls"
    assert response["event_name"] == "api.call"
    assert response["amount"] == 4
    assert response["credit_used"] == 0.08
    assert response["wallet_balance"] == 9.92
    assert credits(client_sdk) == 9.92


def test_timestamp_in_milliseconds_and_properties_are_kept(catalog, client_sdk):
    stamp = now_ms() - 3_600_000
    client_sdk.usages.record_usage(
        {
            "customer_key": C,
            "event_name": "api.call",
            "event_id": "evt-ts",
            "quantity": 1,
            "timestamp": stamp,
            "metadata": {"session_id": "sess_xyz"},
            "properties": {"model": "large"},
        }
    )
    (event,) = client_sdk.usages.list_events(customer_key=C)["data"]
    assert event["timestamp"] == stamp
    assert event["metadata"] == {"session_id": "sess_xyz", "properties": {"model": "large"}}
    assert event["event_id"] == "evt-ts"
    assert event["quantity"] == 1
    assert event["credit_used"] == 0.02


def test_same_event_id_twice_records_once(catalog, client_sdk):
    event = {"customer_key": C, "feature_key": "api_calls", "event_id": "evt-dup", "quantity": 3}
    first = client_sdk.usages.record_usage(event)
    second = client_sdk.usages.record_usage(event)
    assert first["replayed"] is False
    assert second["replayed"] is True
    assert second["event_id"] == first["event_id"]
    assert second["used"] == 3
    listed = client_sdk.usages.list_events(customer_key=C, feature_key="api_calls")
    assert listed["meta"]["total_count"] == 1
    assert credits(client_sdk) == 9.94
    with pytest.raises(APIError) as err:
        client_sdk.usages.record_usage({**event, "quantity": 4})
    assert err.value.status_code == 409
    assert "event_id" in str(err.value)
    assert credits(client_sdk) == 9.94


def test_access_before_and_after_reaching_the_limit(catalog, client_sdk):
    add_customer("small", candidates_allowance=3)
    before = client_sdk.usages.check_access(
        AccessCheckRequest(feature_key="candidates", customer_key="small", quantity=3)
    )["data"]
    assert before["can_access"] is True
    assert before["balance"] == 3
    assert before["used_quantity"] == 0
    assert before["requested_quantity"] == 3
    assert before["entitlement_active"] is True
    assert before["unlimited"] is False
    assert before["prepaid"] is True
    assert before["wallet_balance"] == 10
    assert before["customer_key"] == "small"
    assert before["feature_key"] == "candidates"

    client_sdk.usages.record_usage(
        {"customer_key": "small", "feature_key": "candidates", "event_id": "e1", "quantity": 3}
    )
    after = client_sdk.usages.check_access(
        {"feature_key": "candidates", "customer_key": "small", "requested_quantity": 1}
    )["data"]
    assert after["can_access"] is False
    assert after["balance"] == 0
    assert after["used_quantity"] == 3
    assert after["reason"] == "limit_exceeded"
    assert "allowance" in after["message"]
    with pytest.raises(APIError) as err:
        client_sdk.usages.record_usage(
            {"customer_key": "small", "feature_key": "candidates", "event_id": "e2", "quantity": 1}
        )
    assert err.value.status_code == 403
    assert "allowance" in str(err.value)


def test_boolean_feature_access_and_unlimited(catalog, client_sdk):
    sso = client_sdk.usages.check_access({"feature_key": "sso", "customer_key": C})["data"]
    assert sso["can_access"] is True
    assert sso["unlimited"] is True
    assert sso["balance"] is None
    catalog_service.remove_entitlement(SYSTEM, add_customer("no-sso"), "sso")
    denied = client_sdk.usages.check_access({"feature_key": "sso", "customer_key": "no-sso"})
    assert denied["data"]["can_access"] is False
    assert denied["data"]["entitlement_active"] is False


def test_reclaiming_a_seat_with_negative_quantity(catalog, client_sdk):
    client_sdk.usages.record_usage(
        {"customer_key": C, "feature_key": "seats", "event_id": "seats-8", "quantity": 8}
    )
    reclaimed = client_sdk.usages.record_usage(
        {"customer_key": C, "event_name": "seat.assigned", "event_id": "seat-off", "quantity": -1}
    )
    assert reclaimed["amount"] == -1
    assert reclaimed["used"] == 7
    assert reclaimed["available"] == 3
    access = client_sdk.usages.check_access({"feature_key": "seats", "customer_key": C})["data"]
    assert access["used_quantity"] == 7
    assert access["balance"] == 3
    assert credits(client_sdk) == 10  # reclaiming never adds credits


def test_list_events_pages_by_number(catalog, client_sdk):
    for n in range(5):
        client_sdk.usages.record_usage(
            {"customer_key": C, "feature_key": "api_calls", "event_id": f"p{n}", "quantity": 1}
        )
    client_sdk.usages.record_usage(
        {"customer_key": C, "feature_key": "seats", "event_id": "seat", "quantity": 1}
    )
    seen = []
    page = client_sdk.usages.list_events(customer_key=C, feature_key="api_calls", per_page=2)
    assert page["meta"] == {
        "current_page": 1,
        "prev_page": None,
        "next_page": 2,
        "total_count": 5,
        "total_pages": 3,
        "per_page": 2,
    }
    while True:
        seen += [e["event_id"] for e in page["data"]]
        nxt = page["meta"]["next_page"]
        if nxt is None:
            break
        page = client_sdk.usages.list_events(
            customer_key=C, feature_key="api_calls", page=nxt, per_page=2
        )
    assert seen == ["p4", "p3", "p2", "p1", "p0"]
    assert page["meta"]["current_page"] == 3
    assert page["meta"]["prev_page"] == 2
    everything = client_sdk.usages.list_events(customer_key=C)
    assert everything["meta"]["total_count"] == 6
    assert everything["meta"]["per_page"] == 25
    beyond = client_sdk.usages.list_events(customer_key=C, page=9)
    assert beyond["data"] == []


def test_wallets_after_a_topup(catalog, client_sdk):
    wallets.topup_wallet(SYSTEM, customer_key=C, credit_system="credits", amount="0.3")
    (wallet,) = client_sdk.wallets.list(C)["data"]
    assert wallet["balance"] == 10.3
    assert wallet["credit_key"] == "credits"
    assert wallet["name"] == "Credits"
    assert wallet["credit_unit_singular"] == "credit"
    assert wallet["credit_unit_plural"] == "credits"
    assert wallet["customer_key"] == C
    assert wallet["low_balance_threshold"] is None
    assert wallet["id"] and wallet["credit_system_id"]
    assert [a["amount"] for a in wallet["allocations"]] == [10, 0.3]  # spending order


# ---------------------------------------------------------------- credit allocations


@pytest.fixture
def clock(catalog) -> Iterator[Clock]:
    """The services' clock, moved by the test (the server thread reads it too)."""
    moved = Clock()
    set_clock(moved)
    try:
        yield moved
    finally:
        set_clock(None)


def grant(amount: str, **terms: object) -> str:
    """A new grant (a Metrifox credit allocation) in the customer's credits wallet; its id."""
    result = wallets.topup_wallet(
        SYSTEM, customer_key=C, credit_system="credits", amount=amount, **terms
    )
    return str(result.entry.grant_id)


def spend(sdk: MetrifoxClient, event_id: str, **event: object) -> dict:
    return sdk.usages.record_usage({"customer_key": C, "event_id": event_id, **event})


def test_credit_allocations_and_their_transactions_through_the_sdk(catalog, client_sdk):
    expires = datetime.now(UTC) + timedelta(days=30)
    small = grant("0.05", kind="granted", expires_at=expires.isoformat(), reference="promo-7")
    # 0.08: 0.05 from the granted credits (priority 100), 0.03 from the purchased ten (200).
    spend(client_sdk, "evt-a", feature_key="api_calls", quantity=4)
    spend(client_sdk, "evt-b", event_name="candidate.sourced", quantity=1)
    (wallet,) = client_sdk.wallets.list(C)["data"]
    assert wallet["balance"] == 9.95
    (ten,) = wallet["allocations"]  # the spent grant is no longer part of the wallet
    assert (ten["amount"], ten["consumed"], ten["allocation_type"]) == (10, 0.05, "topup")
    assert (ten["valid_until"], ten["status"], ten["balance"]) == (None, "active", 9.95)

    listed = client_sdk.wallets.list_credit_allocations(wallet["id"])
    assert listed["message"] == "Credit allocations fetched successfully"
    assert [a["id"] for a in listed["data"]] == [small, ten["id"]]  # newest first
    assert listed["meta"]["total_count"] == 2
    promo, first = listed["data"]
    assert (promo["amount"], promo["consumed"], promo["allocation_type"]) == (0.05, 0.05, "granted")
    assert promo["valid_until"] == iso(expires)
    assert (promo["status"], promo["reference"], promo["order_id"]) == ("depleted", "promo-7", None)
    assert [
        (t["usage_event_id"], t["amount"], t["quantity"], t["event_name"])
        for t in first["transactions"]
    ] == [("evt-b", 0.02, 1, "candidate.sourced"), ("evt-a", 0.03, 4, "api.call")]
    assert first["transactions_count"] == 2

    active = client_sdk.wallets.list_credit_allocations(wallet["id"], status="active")["data"]
    assert [a["id"] for a in active] == [ten["id"]]
    assert client_sdk.wallets.list_credit_allocations(wallet["id"], status="expired")["data"] == []

    one = client_sdk.wallets.get_credit_allocation(small)
    assert one["data"]["id"] == small
    assert (one["data"]["amount"], one["data"]["consumed"]) == (0.05, 0.05)
    (txn,) = one["data"]["transactions"]
    assert (txn["usage_event_id"], txn["amount"], txn["quantity"]) == ("evt-a", 0.05, 4)
    assert (txn["event_name"], txn["type"], txn["feature_key"]) == (
        "api.call",
        "usage",
        "api_calls",
    )
    assert txn["id"] and txn["created_at"].endswith("Z")
    assert one["meta"]["total_count"] == 1

    details = client_sdk.customers.get_details(C)["data"]
    assert [a["id"] for a in details["wallets"][0]["allocations"]] == [ten["id"]]


def test_expired_credits_are_never_available_even_before_the_expiry_is_booked(
    catalog, client_sdk, clock
):
    soon = grant("1", kind="granted", expires_at=(clock.now + timedelta(days=1)).isoformat())
    assert credits(client_sdk) == 11
    clock.advance(days=2)  # expired; no write has booked the expiry yet
    (wallet,) = client_sdk.wallets.list(C)["data"]
    assert wallet["balance"] == 10
    assert soon not in [a["id"] for a in wallet["allocations"]]
    assert client_sdk.customers.get_details(C)["data"]["wallets"][0]["balance"] == 10
    access = client_sdk.usages.check_access({"feature_key": "api_calls", "customer_key": C})
    assert access["data"]["wallet_balance"] == 10
    (expired,) = client_sdk.wallets.list_credit_allocations(wallet["id"], status="expired")["data"]
    assert expired["id"] == soon
    assert (expired["status"], expired["balance"], expired["remaining"]) == ("expired", 0, 1)
    active = client_sdk.wallets.list_credit_allocations(wallet["id"], status="active")["data"]
    assert soon not in [a["id"] for a in active]

    assert spend(client_sdk, "after", feature_key="api_calls", quantity=1)["wallet_balance"] == 9.98
    booked = client_sdk.wallets.get_credit_allocation(soon)["data"]
    assert (booked["status"], booked["remaining"], booked["expired"]) == ("expired", 0, 1)
    assert (booked["consumed"], booked["transactions"]) == (0, [])


def test_allocations_page_by_number_over_http(catalog, server, api_key):
    for _ in range(3):
        grant("1", kind="granted")
    headers = {"x-api-key": api_key}
    base = f"{server}/metrifox/api/v1/credit_systems/v2"
    (wallet,) = requests.get(
        f"{base}/wallets", params={"customer_key": C}, headers=headers, timeout=10
    ).json()["data"]
    page = requests.get(
        f"{base}/wallets/{wallet['id']}/credit-allocations",
        params={"page": 2, "per_page": 3, "status": "active"},
        headers=headers,
        timeout=10,
    )
    assert page.status_code == 200
    (oldest,) = page.json()["data"]
    assert oldest["amount"] == 10
    assert page.json()["meta"] == {
        "current_page": 2,
        "prev_page": 1,
        "next_page": None,
        "total_count": 4,
        "total_pages": 2,
        "per_page": 3,
    }
    for n in range(3):
        requests.post(
            f"{server}/metrifox/meter/usage/events",
            json={
                "customer_key": C,
                "feature_key": "api_calls",
                "quantity": 1,
                "event_id": f"p{n}",
            },
            headers=headers,
            timeout=10,
        ).raise_for_status()
    ten = page.json()["data"][0]["id"]
    untouched = requests.get(f"{base}/credit-allocations/{ten}", headers=headers, timeout=10)
    assert untouched.json()["data"]["transactions"] == []  # granted credits went first
    # The oldest of the three granted (same priority, no expiry): second in newest-first order.
    everything = requests.get(
        f"{base}/wallets/{wallet['id']}/credit-allocations", headers=headers, timeout=10
    ).json()["data"]
    assert [a["transactions_count"] for a in everything] == [0, 0, 3, 0]
    txns = requests.get(
        f"{base}/credit-allocations/{everything[2]['id']}",
        params={"page": 2, "per_page": 2},
        headers=headers,
        timeout=10,
    )
    assert [t["usage_event_id"] for t in txns.json()["data"]["transactions"]] == ["p0"]
    assert txns.json()["meta"]["total_count"] == 3
    assert '"amount":0.02,' in txns.text  # an exact number on the wire


def test_bad_allocation_reads_raise_api_error(catalog, client_sdk):
    (wallet,) = client_sdk.wallets.list(C)["data"]
    cases = [
        (lambda: client_sdk.wallets.list_credit_allocations("999999"), 404, "wallet"),
        (lambda: client_sdk.wallets.list_credit_allocations("nope"), 404, "wallet"),
        (lambda: client_sdk.wallets.list_credit_allocations(wallet["id"], "gone"), 422, "status"),
        (lambda: client_sdk.wallets.get_credit_allocation("999999"), 404, "credit grant"),
        (lambda: client_sdk.wallets.get_credit_allocation("a3f2b8e0-4d11"), 404, "credit grant"),
    ]
    for call, status, words in cases:
        with pytest.raises(APIError) as err:
            call()
        assert err.value.status_code == status, words
        assert words in str(err.value)


def raw_event(event_id: str, quantity: str) -> str:
    """A usage event as JSON text, the quantity written as a bare JSON number."""
    return (
        f'{{"customer_key": "{C}", "feature_key": "api_calls", "event_id": "{event_id}", '
        f'"quantity": {quantity}}}'
    )


def test_credits_and_quantities_are_exact_decimals_on_the_wire(catalog, server, api_key):
    headers = {"x-api-key": api_key, "Content-Type": "application/json"}
    raw = requests.post(
        f"{server}/metrifox/meter/usage/events",
        data=raw_event("x", "4"),
        headers=headers,
        timeout=10,
    )
    assert raw.status_code == 201
    assert '"credit_used":0.08,' in raw.text
    assert '"wallet_balance":9.92,' in raw.text
    assert "0.0800000" not in raw.text
    # 0.1 + 0.2 in floats is 0.30000000000000004; here it is 0.3.
    for n, q in enumerate(["0.1", "0.2"]):
        requests.post(
            f"{server}/metrifox/meter/usage/events",
            data=raw_event(f"q{n}", q),
            headers=headers,
            timeout=10,
        ).raise_for_status()
    access = requests.get(
        f"{server}/metrifox/meter/usage/access",
        params={"customer_key": C, "feature_key": "api_calls"},
        headers=headers,
        timeout=10,
    )
    assert '"used_quantity":4.3,' in access.text
    assert '"balance":995.7,' in access.text
    assert access.json()["data"]["wallet_balance"] == 9.914  # 0.08 + 0.002 + 0.004


# ---------------------------------------------------------------- customers


def test_customer_lifecycle_through_the_sdk(catalog, client_sdk):
    created = client_sdk.customers.create(
        CustomerCreateRequest(
            customer_key="acme",
            customer_type="BUSINESS",
            primary_email="Ops@Acme.example",
            legal_name="Acme Inc",
            website_url="https://acme.example",
            timezone="Europe/Berlin",
        )
    )["data"]
    assert created["customer_key"] == "acme"
    assert created["customer_type"] == "BUSINESS"
    assert created["primary_email"] == "ops@acme.example"
    assert created["name"] == "Acme Inc"
    assert created["website_url"] == "https://acme.example"
    assert created["archived_at"] is None

    updated = client_sdk.customers.update(
        "acme", CustomerUpdateRequest(display_name="ACME", language="de")
    )["data"]
    assert updated["display_name"] == "ACME"
    assert updated["name"] == "ACME"
    assert updated["language"] == "de"
    assert updated["website_url"] == "https://acme.example"  # kept

    fetched = client_sdk.customers.get("acme")["data"]
    assert fetched["timezone"] == "Europe/Berlin"
    assert fetched["legal_name"] == "Acme Inc"

    listed = client_sdk.customers.list({"search_term": "acme", "per_page": 10})
    assert [c["customer_key"] for c in listed["data"]] == ["acme"]
    assert listed["meta"]["total_count"] == 1

    archived = client_sdk.customers.archive("acme")["data"]
    assert archived["status"] == "archived"
    assert archived["archived_at"]
    with pytest.raises(APIError) as err:
        client_sdk.usages.record_usage(
            {"customer_key": "acme", "feature_key": "api_calls", "event_id": "a", "quantity": 1}
        )
    assert err.value.status_code == 403
    assert "archived" in str(err.value)
    unarchived = client_sdk.customers.unarchive("acme")["data"]
    assert unarchived["status"] == "active"
    assert unarchived["archived_at"] is None

    client_sdk.customers.delete("acme")
    with pytest.raises(APIError) as err:
        client_sdk.customers.get("acme")
    assert err.value.status_code == 404
    assert "acme" in str(err.value)


def test_customer_details_carry_wallets_and_entitlements(catalog, client_sdk):
    details = client_sdk.customers.get_details(C)["data"]
    assert details["customer_key"] == C
    assert details["subscriptions"] == []
    (wallet,) = details["wallets"]
    assert wallet["balance"] == 10
    features = {e["feature_key"]: e for e in details["entitlements"]}
    assert features["api_calls"]["included_allowance"] == 1000
    assert features["api_calls"]["credit_cost"] == 0.02


def test_customer_with_history_cannot_be_deleted(catalog, client_sdk):
    client_sdk.usages.record_usage(
        {"customer_key": C, "feature_key": "api_calls", "event_id": "h", "quantity": 1}
    )
    with pytest.raises(APIError) as err:
        client_sdk.customers.delete(C)
    assert err.value.status_code == 409
    assert "archive" in str(err.value)


def test_bulk_create_reports_each_success_and_failure(catalog, client_sdk):
    result = client_sdk.customers.bulk_create(
        [
            {
                "customer_key": "cust_001",
                "customer_type": "BUSINESS",
                "primary_email": "contact@acme.example",
                "legal_name": "Acme Inc",
            },
            {
                "customer_key": "cust_002",
                "customer_type": "INDIVIDUAL",
                "primary_email": "jane@example.com",
                "first_name": "Jane",
                "last_name": "Doe",
            },
            {"customer_key": C, "customer_type": "INDIVIDUAL", "primary_email": "a@b.example"},
            {"customer_key": "cust_004", "primary_email": "not-an-email"},
        ]
    )["data"]
    assert result["total"] == 4
    assert result["successful_count"] == 2
    assert result["failed_count"] == 2
    assert [c["customer_key"] for c in result["customers_created"]] == ["cust_001", "cust_002"]
    assert result["customers_created"][1]["full_name"] == "Jane Doe"
    failures = {f["customer_key"]: f for f in result["customers_failed"]}
    assert failures[C]["code"] == "conflict"
    assert failures["cust_004"]["code"] == "validation_error"
    assert "`primary_email` is not an email address" in failures["cust_004"]["error"]
    assert failures["cust_004"]["details"]["field"] == "primary_email"


def test_bulk_create_of_too_many_customers_is_refused(catalog, client_sdk):
    with pytest.raises(APIError) as err:
        client_sdk.customers.bulk_create([{"customer_key": f"c{n}"} for n in range(1001)])
    assert err.value.status_code == 413
    assert "at most 1000" in str(err.value)


# ---------------------------------------------------------------- errors


def test_a_wrong_api_key_is_refused(catalog, server):
    sdk = sdk_client(server, "mk_not-a-real-key")
    with pytest.raises(APIError) as err:
        sdk.usages.check_access({"feature_key": "api_calls", "customer_key": C})
    assert err.value.status_code == 401
    assert "API key" in str(err.value)


def test_customer_changes_need_an_admin_key(catalog, server):
    support = auth.create_api_key(SYSTEM, name="support", role="support").secret
    sdk = sdk_client(server, support)
    with pytest.raises(APIError) as err:
        sdk.customers.create({"customer_key": "x", "customer_type": "INDIVIDUAL"})
    assert err.value.status_code == 403
    assert "support role" in str(err.value)
    # ... but a support key records usage.
    sdk.usages.record_usage({"customer_key": C, "feature_key": "api_calls", "event_id": "s"})


BAD_USAGE = [
    ({"customer_key": "nobody", "feature_key": "api_calls"}, 404, "nobody"),
    ({"customer_key": C, "feature_key": "nope"}, 404, "nope"),
    ({"customer_key": C, "event_name": "no.such.event"}, 404, "no.such.event"),
    ({"customer_key": C}, 422, "feature_key"),
    (
        {"customer_key": C, "feature_key": "api_calls", "quantity": 0},
        422,
        "`quantity` may not be zero",
    ),
    (
        {"customer_key": C, "feature_key": "api_calls", "quantity": "0.0000001"},
        422,
        "`quantity` has more than 6",
    ),
    ({"customer_key": C, "feature_key": "api_calls", "quantity": -1}, 422, "negative"),
    ({"customer_key": C, "feature_key": "seats", "quantity": 0.5}, 422, "whole"),
    ({"customer_key": C, "feature_key": "sso", "quantity": 1}, 422, "boolean"),
    ({"customer_key": C, "feature_key": "api_calls", "quantity": 600}, 402, "credits"),
    ({"customer_key": C, "feature_key": "api_calls", "timestamp": "soon"}, 422, "timestamp"),
    ({"customer_key": C, "feature_key": "api_calls", "timestamp": 1.5}, 422, "milliseconds"),
    ({"customer_key": C, "feature_key": "api_calls", "metadata": [1]}, 422, "metadata"),
    ({"customer_key": C, "feature_key": "api_calls", "properties": "x"}, 422, "properties"),
]


@pytest.mark.parametrize(("fields", "status", "words"), BAD_USAGE)
def test_bad_usage_raises_api_error_with_a_useful_message(
    catalog, client_sdk, fields, status, words
):
    with pytest.raises(APIError) as err:
        client_sdk.usages.record_usage({"event_id": "bad", **fields})
    assert err.value.status_code == status
    assert words in str(err.value)
    assert credits(client_sdk) == 10


def test_bad_reads_raise_api_error_with_a_useful_message(catalog, client_sdk):
    cases = [
        (lambda: client_sdk.usages.list_events(page=0), 422, "page"),
        (lambda: client_sdk.usages.list_events(per_page=1000), 422, "per_page"),
        (lambda: client_sdk.usages.list_events(customer_key="ghost"), 404, "ghost"),
        (lambda: client_sdk.wallets.list("ghost"), 404, "ghost"),
        (
            lambda: client_sdk.usages.check_access({"feature_key": "nope", "customer_key": C}),
            404,
            "nope",
        ),
        (
            lambda: client_sdk.usages.check_access(
                {"feature_key": "api_calls", "customer_key": C, "quantity": "abc"}
            ),
            422,
            "decimal",
        ),
    ]
    for call, status, words in cases:
        with pytest.raises(APIError) as err:
            call()
        assert err.value.status_code == status, words
        assert words in str(err.value)


def test_what_the_product_does_not_do_answers_501(catalog, client_sdk):
    calls = [
        lambda: client_sdk.checkout.url({"offering_key": "premium_plan"}),
        lambda: client_sdk.checkout.card_collection_url(subscription_id="s"),
        lambda: client_sdk.subscriptions.get_billing_history("sub_1"),
        lambda: client_sdk.subscriptions.get_entitlements_summary("sub_1"),
        lambda: client_sdk.subscriptions.bulk_assign_plan(customer_keys=[C], plan_key="pro"),
        lambda: client_sdk.usages.quantity_price(C, "api_calls", 5),
        lambda: client_sdk.customers.has_active_subscription(C),
        lambda: client_sdk.customers.list({"customer_type": "BUSINESS"}),
    ]
    for call in calls:
        with pytest.raises(APIError) as err:
            call()
        assert err.value.status_code == 501
        assert "does not provide" in str(err.value)


def test_errors_carry_message_and_our_error_object(catalog, server, api_key):
    headers = {"x-api-key": api_key, "Content-Type": "application/json"}
    bad_json = requests.post(
        f"{server}/metrifox/meter/usage/events", data="{nope", headers=headers, timeout=10
    )
    assert bad_json.status_code == 400
    body = bad_json.json()
    assert body["message"] == body["error"]["message"]
    assert body["error"]["code"] == "malformed_json"
    unknown = requests.get(f"{server}/metrifox/meter/nowhere", headers=headers, timeout=10)
    assert unknown.status_code == 404
    assert "nowhere" in unknown.json()["message"]
    missing = requests.get(f"{server}/metrifox/api/v1/customers/ghost", timeout=10)
    assert missing.status_code == 401
    assert missing.json()["error"]["code"] == "unauthorized"
    assert "x-api-key" in missing.json()["message"]
    limit = requests.post(
        f"{server}/metrifox/meter/usage/events",
        json={"customer_key": C, "feature_key": "api_calls", "quantity": 2000, "event_id": "l"},
        headers=headers,
        timeout=10,
    )
    assert limit.status_code == 403
    assert limit.json()["error"]["code"] == "limit_exceeded"
    assert limit.json()["error"]["details"]["allowance"] == 1000


def test_key_use_is_recorded(catalog, client_sdk, api_key):
    client_sdk.usages.check_access({"feature_key": "api_calls", "customer_key": C})
    db.session.expire_all()
    (key,) = [k for k in auth.list_api_keys() if api_key.startswith(k.prefix)]
    assert key.last_used_at is not None


def test_concurrent_patches_of_one_customer_lose_no_field(catalog, server, api_key):
    """Each PATCH merges into the stored profile with compare-and-set, so eight clients that each
    change another field at once all keep their change."""
    fields = [
        "display_name",
        "legal_name",
        "website_url",
        "timezone",
        "language",
        "currency",
        "tax_id",
        "phone_number",
    ]
    barrier = threading.Barrier(len(fields))
    statuses: list[int] = []

    def patch(field: str) -> None:
        barrier.wait()
        response = requests.patch(
            f"{server}/metrifox/api/v1/customers/{C}",
            json={field: f"value-{field}"},
            headers={"x-api-key": api_key},
            timeout=30,
        )
        statuses.append(response.status_code)

    threads = [threading.Thread(target=patch, args=(f,)) for f in fields]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert statuses == [200] * len(fields)
    data = requests.get(
        f"{server}/metrifox/api/v1/customers/{C}", headers={"x-api-key": api_key}, timeout=30
    ).json()["data"]
    assert {f: data.get(f) for f in fields} == {f: f"value-{f}" for f in fields}


def test_a_null_quantity_is_refused_and_records_nothing(catalog, server, api_key):
    # Our API reads `amount: null` as 1; the Metrifox door never did for `quantity`.
    headers = {"x-api-key": api_key}
    for field in ("quantity", "amount"):
        answer = requests.post(
            f"{server}/metrifox/meter/usage/events",
            json={"customer_key": C, "feature_key": "api_calls", field: None},
            headers=headers,
            timeout=10,
        )
        assert answer.status_code == 422
        assert answer.json()["error"] == {
            "code": "invalid_amount",
            "message": "`quantity` must be a decimal number.",
            "details": {"field": "quantity"},
        }
    listed = requests.get(
        f"{server}/metrifox/meter/usage/events", params={"customer_key": C}, headers=headers
    )
    assert listed.json()["data"] == []


# ---------------------------------------------------------------- usage adjustments
#
# metrifox-sdk 1.3.1 has no method for `POST usage/events/adjust`: the SDK records the events and
# reads the wallet; the adjustment goes over HTTP with the SDK's own header (x-api-key), as in
# Metrifox's docs ("Adjust a Usage Event").


def adjust(server: str, api_key: str, body: str) -> requests.Response:
    return requests.post(
        f"{server}/metrifox/meter/usage/events/adjust",
        data=body,
        headers={"x-api-key": api_key, "Content-Type": "application/json"},
        timeout=10,
    )


def test_adjusting_an_event_refunds_or_deducts_the_difference(catalog, client_sdk, server, api_key):
    client_sdk.usages.record_usage(
        UsageEventRequest(customer_key=C, feature_key="api_calls", quantity=5, event_id="adj-1")
    )
    assert credits(client_sdk) == 9.9
    fewer = adjust(
        server, api_key, f'{{"customer_key": "{C}", "event_id": "adj-1", "actual_quantity": 4}}'
    )
    assert fewer.status_code == 200, fewer.text
    assert fewer.json() == {
        "data": {
            "event_id": "adj-1",
            "adjusted": True,
            "actual_quantity": 4,
            "actual_credit_used": 0.08,
            "refunded_quantity": 1,
            "refunded_credit": 0.02,
            "deducted_quantity": 0,
            "deducted_credit": 0,
            "message": "Usage adjusted",
        }
    }
    assert '"refunded_credit":0.02,' in fewer.text  # an exact JSON number
    assert credits(client_sdk) == 9.92
    more = adjust(
        server,
        api_key,
        f'{{"customer_key": "{C}", "event_id": "adj-1", "actual_quantity": 7.5, "reason": "x"}}',
    ).json()["data"]
    assert (more["deducted_quantity"], more["deducted_credit"]) == (3.5, 0.07)
    assert more["actual_credit_used"] == 0.15
    # The same value again does nothing; both amounts left out undo the event.
    same = adjust(
        server, api_key, f'{{"customer_key": "{C}", "event_id": "adj-1", "actual_quantity": 7.5}}'
    ).json()["data"]
    assert same["adjusted"] is False and same["deducted_credit"] == 0
    undo = adjust(server, api_key, f'{{"customer_key": "{C}", "event_id": "adj-1"}}').json()
    assert undo["data"]["actual_quantity"] == 0 and undo["data"]["refunded_credit"] == 0.15
    assert credits(client_sdk) == 10
    events = client_sdk.usages.list_events(customer_key=C)["data"]
    assert events[0]["quantity"] == 5  # the event as recorded
    assert events[0]["effective_quantity"] == 0
    assert events[0]["credit_used"] == 0.1 and events[0]["effective_credit_used"] == 0


def test_adjustment_refusals_name_the_sdk_fields(catalog, client_sdk, server, api_key):
    client_sdk.usages.record_usage(
        UsageEventRequest(customer_key=C, feature_key="candidates", quantity=95, event_id="a2")
    )
    over = adjust(
        server, api_key, f'{{"customer_key": "{C}", "event_id": "a2", "actual_quantity": 101}}'
    )
    assert over.status_code == 403 and over.json()["error"]["code"] == "limit_exceeded"
    assert over.json()["error"]["details"]["field"] == "actual_quantity"
    negative = adjust(
        server, api_key, f'{{"customer_key": "{C}", "event_id": "a2", "actual_quantity": -1}}'
    )
    assert negative.status_code == 422
    assert negative.json()["error"]["details"]["field"] == "actual_quantity"
    credit = adjust(
        server,
        api_key,
        f'{{"customer_key": "{C}", "event_id": "a2", "actual_credit_used": 1}}',
    )
    assert credit.status_code == 422
    assert credit.json()["error"]["details"]["field"] == "actual_credit_used"
    missing = adjust(server, api_key, f'{{"customer_key": "{C}", "event_id": "zz"}}')
    assert missing.status_code == 404
    events = client_sdk.usages.list_events(customer_key=C)["data"]
    assert [e["quantity"] for e in events] == [95]
