"""Credit grants through /api/v1 (docs/api.md, docs/domain.md "Credit grants"): topups with terms,
idempotent adjustments with their grant or allocations, voids, one grant with its allocations, a
customer's wallets by grant status, and ledger entries with their grants. On both databases;
time moves through the injected clock."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import pytest
from sqlalchemy import event

from tests.api_support import Api, C, api_as, document, error_code, row_counts
from tests.factories import add_customer
from webapp.extensions import db
from webapp.jsondoor import iso
from webapp.models import set_clock, utcnow
from webapp.services import credits


@dataclass
class Clock:
    now: datetime = field(default_factory=utcnow)

    def advance(self, **delta: float) -> datetime:
        self.now += timedelta(**delta)
        return self.now


@pytest.fixture
def clock(app) -> Iterator[Clock]:
    clock = Clock()
    set_clock(lambda: clock.now)
    yield clock
    set_clock(None)


@pytest.fixture
def api(clock, client, catalog) -> Api:
    """A finance key; the catalog's customer has 10 purchased credits (grant 1, no expiry)."""
    return api_as(client, "finance")


def topup(api: Api, **fields):
    return api.post(
        "/api/v1/wallets/topups",
        {"customer_key": C, "credit_system": "credits", "amount": "50", **fields},
    )


def adjust(api: Api, **fields):
    body = {"customer_key": C, "credit_system": "credits", "amount": "-2.5", "reason": "Refund"}
    return api.post("/api/v1/wallets/adjustments", body | fields)


def void(api: Api, grant_id: object, **fields):
    return api.post(f"/api/v1/wallets/grants/{grant_id}/void", {"reason": "Refunded"} | fields)


def use(api_admin: Api, amount: int, **fields):
    body = {"customer_key": C, "feature_key": "api_calls", "amount": amount} | fields
    response = api_admin.post("/api/v1/usage", body)
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def wallet(api: Api, status: str | None = None) -> dict:
    query = {} if status is None else {"status": status}
    response = api.get(f"/api/v1/customers/{C}/wallets", query_string=query)
    assert response.status_code == 200, response.get_json()
    (only,) = response.get_json()["data"]
    return only


def first_grant(api: Api) -> int:
    return wallet(api, "all")["grants"][0]["id"]


# ---------------------------------------------------------------- topups


def test_topup_shows_the_grant_it_created_with_its_defaults(api, clock):
    body = topup(api, reference="INV-1").get_json()
    grant = body["grant"]
    assert grant["id"] > 0 and body["allocations"] == []
    assert (grant["kind"], grant["status"], grant["priority"]) == ("purchased", "active", 200)
    assert (grant["amount"], grant["remaining"], grant["available"]) == ("50", "50", "50")
    assert grant["effective_at"] == iso(clock.now) and grant["expires_at"] is None
    assert grant["reference"] == "INV-1" and grant["unit_price"] is None
    assert (grant["customer_key"], grant["credit_system"]) == (C, "credits")


def test_topup_with_terms_schedules_a_grant_that_expires(api, clock):
    starts, ends = clock.now + timedelta(days=1), clock.now + timedelta(days=31)
    response = topup(
        api,
        amount="20",
        kind="purchased",
        priority=5,
        effective_at=iso(starts),
        expires_at=iso(ends),
        unit_price="0.015",
        currency="eur",
    )
    assert response.status_code == 201
    grant = response.get_json()["grant"]
    assert (grant["status"], grant["priority"], grant["available"]) == ("scheduled", 5, "0")
    assert (grant["effective_at"], grant["expires_at"]) == (iso(starts), iso(ends))
    assert (grant["unit_price"], grant["currency"]) == ("0.015", "EUR")
    # The ledger balance holds it at once; the balance (available now) once it is effective.
    assert response.get_json()["wallet_balance"] == "30"
    now = wallet(api)
    assert (now["balance"], now["scheduled"], now["ledger_balance"]) == ("10", "20", "30")
    clock.advance(days=2)
    later = wallet(api)
    assert (later["balance"], later["scheduled"]) == ("30", "0")
    assert [g["status"] for g in later["grants"]] == ["active", "active"]
    assert later["grants"][0]["id"] == grant["id"]  # priority 5 is spent before 200


def test_topup_replay_shows_the_same_grant_and_other_terms_conflict(api, clock):
    terms = {"idempotency_key": "inv-7", "expires_at": iso(clock.now + timedelta(days=9))}
    first = topup(api, **terms)
    before = row_counts()
    again = topup(api, **terms)
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.get_json() == first.get_json()
    assert row_counts() == before
    other = terms | {"expires_at": iso(clock.now + timedelta(days=10))}
    clash = topup(api, **other)
    assert (clash.status_code, error_code(clash)) == (409, "idempotency_conflict")
    assert row_counts() == before


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"priority": -1}, "priority"),
        ({"priority": 1_000_001}, "priority"),
        ({"priority": "5"}, "priority"),
        ({"priority": 1.5}, "priority"),
        ({"effective_at": "tomorrow"}, "effective_at"),
        ({"expires_at": "2020-01-01T00:00:00Z"}, "expires_at"),
        ({"expires_at": "2026-01-01T00:00:00"}, "expires_at"),
        (
            {"effective_at": "2999-01-02T00:00:00Z", "expires_at": "2999-01-01T00:00:00Z"},
            "expires_at",
        ),
        ({"unit_price": "0.01"}, "currency"),
        ({"currency": "USD"}, "unit_price"),
        ({"unit_price": "0.01", "currency": "dollars"}, "currency"),
        ({"unit_price": "-1", "currency": "USD"}, "unit_price"),
        ({"unit_price": "0.01", "currency": "USD", "kind": "granted"}, "unit_price"),
    ],
)
def test_topup_with_bad_terms_is_refused_and_writes_nothing(api, fields, named):
    before = row_counts()
    response = topup(api, **fields)
    assert (response.status_code, error_code(response)) == (422, "validation_error")
    assert response.get_json()["error"]["details"]["field"] == named
    assert row_counts() == before


# ---------------------------------------------------------------- adjustments


def test_positive_adjustment_is_a_granted_grant(api):
    response = adjust(api, amount="3", reason="Goodwill for the outage")
    assert response.status_code == 201
    body = response.get_json()
    grant = body["grant"]
    assert (grant["kind"], grant["priority"], grant["amount"]) == ("granted", 100, "3")
    assert grant["note"] == "Goodwill for the outage" and body["allocations"] == []
    assert body["wallet_balance"] == "13"


def test_negative_adjustment_is_spent_in_spending_order_and_shows_its_allocations(api, clock):
    purchased = first_grant(api)
    granted = topup(api, amount="5", kind="granted").get_json()["grant"]["id"]
    body = adjust(api, amount="-7").get_json()
    assert body["grant"] is None
    assert body["allocations"] == [
        {"grant_id": granted, "amount": "5"},
        {"grant_id": purchased, "amount": "2"},
    ]
    grants = {g["id"]: g for g in wallet(api, "all")["grants"]}
    assert (grants[granted]["status"], grants[granted]["consumed"]) == ("depleted", "5")
    assert (grants[purchased]["remaining"], grants[purchased]["consumed"]) == ("8", "2")


def test_adjustment_replay_and_conflict(api):
    first = adjust(api, idempotency_key="fix-1")
    before = row_counts()
    again = adjust(api, idempotency_key="fix-1")
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.get_json() == first.get_json()
    assert row_counts() == before
    for other in ({"amount": "-2"}, {"reason": "Another reason"}, {"reference": "T-1"}):
        clash = adjust(api, idempotency_key="fix-1", **other)
        assert (clash.status_code, error_code(clash)) == (409, "idempotency_conflict")
    # A key is one request of a customer: a topup's key is not an adjustment's.
    topup(api, idempotency_key="pay-9")
    clash = adjust(api, idempotency_key="pay-9")
    assert (clash.status_code, error_code(clash)) == (409, "idempotency_conflict")
    assert row_counts()["ledger_entries"] == before["ledger_entries"] + 1


def test_adjustment_without_key_applies_twice(api):
    assert adjust(api).status_code == 201 and adjust(api).status_code == 201
    assert wallet(api)["balance"] == "5"


def test_insufficient_credits_details_name_eligible_and_wallet_balance(api, clock):
    # A scheduled grant is in the wallet's ledger balance but may not pay yet, nor count as its
    # balance (available now), in every 402 alike.
    topup(api, amount="20", effective_at=iso(clock.now + timedelta(days=1)))
    before = row_counts()
    response = adjust(api, amount="-12")
    assert (response.status_code, error_code(response)) == (402, "insufficient_credits")
    details = response.get_json()["error"]["details"]
    assert details == {
        "field": "amount",
        "credits_required": "12",
        "eligible_balance": "10",
        "wallet_balance": "10",
    }
    assert row_counts() == before


def test_expired_credits_pay_for_nothing_and_a_refusal_books_nothing(api, clock):
    topup(api, amount="5", kind="granted", expires_at=iso(clock.now + timedelta(days=1)))
    clock.advance(days=2)
    view = wallet(api, "all")
    assert (view["balance"], view["ledger_balance"]) == ("10", "15")  # expiry not booked yet
    before = row_counts()
    response = adjust(api, amount="-11")
    assert response.get_json()["error"]["details"]["eligible_balance"] == "10"
    assert row_counts() == before  # the expiry the refused write booked is rolled back too
    assert adjust(api, amount="-1").status_code == 201  # a write books it first
    entries = api.get(f"/api/v1/customers/{C}/ledger").get_json()["data"]
    assert [e["type"] for e in entries[:2]] == ["adjustment", "expiry"]
    assert entries[1]["amount"] == "-5" and entries[1]["grant_id"] is not None


def test_negative_adjustment_of_a_customer_without_wallet(api):
    add_customer("cust-empty", topup=None)
    response = adjust(api, customer_key="cust-empty")
    assert (response.status_code, error_code(response)) == (402, "insufficient_credits")
    details = response.get_json()["error"]["details"]
    assert details["credits_required"] == "2.5"
    assert (details["eligible_balance"], details["wallet_balance"]) == ("0", "0")


# ---------------------------------------------------------------- voids


def test_void_removes_what_remains_and_keeps_what_was_consumed(client, api):
    grant_id = first_grant(api)
    use(api_as(client, "admin"), 100)  # 2 credits
    before = row_counts()
    response = void(api, grant_id, reference="CN-3")
    assert response.status_code == 201
    body = response.get_json()
    assert (body["message"], body["type"], body["amount"]) == ("Grant voided", "void", "-8")
    assert (body["note"], body["reference"], body["wallet_balance"]) == ("Refunded", "CN-3", "0")
    grant = body["grant"]
    assert grant["id"] == grant_id and grant["status"] == "voided"
    assert (grant["remaining"], grant["consumed"], grant["voided"]) == ("0", "2", "8")
    assert grant["voided_at"] is not None
    assert row_counts()["ledger_entries"] == before["ledger_entries"] + 1
    entry = api.get(f"/api/v1/customers/{C}/ledger").get_json()["data"][0]
    assert (entry["type"], entry["grant_id"], entry["amount"]) == ("void", grant_id, "-8")


def test_void_replay_conflict_and_nothing_left(api):
    grant_id = first_grant(api)
    first = void(api, grant_id, idempotency_key="cn-1")
    before = row_counts()
    again = void(api, grant_id, idempotency_key="cn-1")
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.get_json() == first.get_json()
    clash = void(api, grant_id, idempotency_key="cn-1", reason="Other")
    assert (clash.status_code, error_code(clash)) == (409, "idempotency_conflict")
    twice = void(api, grant_id)
    assert (twice.status_code, error_code(twice)) == (422, "nothing_to_void")
    assert twice.get_json()["error"]["details"] == {"field": "grant_id", "status": "voided"}
    assert row_counts() == before


def test_a_depleted_or_expired_grant_has_nothing_to_void(client, api, clock):
    depleted = first_grant(api)
    use(api_as(client, "admin"), 500)  # all 10 credits
    response = void(api, depleted)
    assert error_code(response) == "nothing_to_void"
    assert response.get_json()["error"]["details"]["status"] == "depleted"
    expiring = topup(api, amount="4", expires_at=iso(clock.now + timedelta(hours=1)))
    clock.advance(hours=2)
    before = row_counts()
    response = void(api, expiring.get_json()["grant"]["id"])
    assert (response.status_code, error_code(response)) == (422, "nothing_to_void")
    assert response.get_json()["error"]["details"]["status"] == "expired"
    assert row_counts() == before


@pytest.mark.parametrize("grant_id", ["999999", "0", "abc", "-1", "1.0", "١", "9" * 19])
def test_void_of_no_such_grant_is_404(api, grant_id):
    before = row_counts()
    response = void(api, grant_id)
    assert (response.status_code, error_code(response)) == (404, "not_found")
    assert row_counts() == before


@pytest.mark.parametrize(
    "body",
    [{}, {"reason": ""}, {"reason": 5}, {"reason": "x", "amount": "1"}, {"reason": "x", "note": 1}],
)
def test_void_needs_a_reason_and_nothing_else(api, body):
    grant_id = first_grant(api)
    before = row_counts()
    response = api.post(f"/api/v1/wallets/grants/{grant_id}/void", body)
    assert (response.status_code, error_code(response)) == (422, "validation_error")
    assert row_counts() == before


def test_void_is_for_finance_and_admin(client, api):
    grant_id = first_grant(api)
    others = [api_as(client, role) for role in ("support", "account_manager")]
    before = row_counts()
    for other in others:
        response = void(other, grant_id)
        assert (response.status_code, error_code(response)) == (403, "forbidden")
    assert row_counts() == before
    assert void(api_as(client, "admin"), grant_id).status_code == 201


# ---------------------------------------------------------------- reading a grant


def test_a_grant_shows_what_it_paid_for_paged(client, api, clock):
    grant_id = first_grant(api)
    admin = api_as(client, "admin")
    at = clock.now - timedelta(hours=3)
    use(admin, 50, event_id="ev-1", timestamp=iso(at))
    use(admin, 25, event_id="ev-2")
    adjust(api, amount="-1")
    reader = api_as(client, "support")
    first = reader.get(f"/api/v1/wallets/grants/{grant_id}", query_string={"limit": 2})
    assert first.status_code == 200
    body = first.get_json()
    assert (body["id"], body["status"], body["remaining"], body["consumed"]) == (
        grant_id,
        "active",
        "7.5",
        "2.5",
    )
    assert [(a["entry_type"], a["amount"], a["event_id"]) for a in body["allocations"]] == [
        ("adjustment", "1", None),
        ("usage", "0.5", "ev-2"),
    ]
    assert body["allocations"][1]["feature_key"] == "api_calls"
    rest = reader.get(
        f"/api/v1/wallets/grants/{grant_id}",
        query_string={"limit": 2, "cursor": body["next_cursor"]},
    ).get_json()
    (oldest,) = rest["allocations"]
    assert (oldest["event_id"], oldest["amount"], oldest["timestamp"]) == ("ev-1", "1", iso(at))
    assert rest["next_cursor"] is None and rest["id"] == grant_id


@pytest.mark.parametrize("grant_id", ["424242", "0", "x1"])
def test_no_such_grant_is_404(api, grant_id):
    response = api.get(f"/api/v1/wallets/grants/{grant_id}")
    assert (response.status_code, error_code(response)) == (404, "not_found")


def test_grant_read_refuses_a_bad_cursor_or_limit(api):
    grant_id = first_grant(api)
    for query in ({"limit": "0"}, {"cursor": "nope"}, {"status": "active"}):
        response = api.get(f"/api/v1/wallets/grants/{grant_id}", query_string=query)
        assert (response.status_code, error_code(response)) == (422, "validation_error")


# ---------------------------------------------------------------- a customer's wallets


def test_wallets_list_live_grants_by_default_and_others_on_request(client, api, clock):
    first = first_grant(api)
    spent = topup(api, amount="1", kind="granted").get_json()["grant"]["id"]
    use(api_as(client, "admin"), 50)  # 1 credit: the granted grant first
    gone = topup(api, amount="2", expires_at=iso(clock.now + timedelta(hours=1)))
    later = topup(api, amount="3", effective_at=iso(clock.now + timedelta(days=2)))
    voided = topup(api, amount="4").get_json()["grant"]["id"]
    void(api, voided)
    clock.advance(hours=2)
    gone_id, later_id = gone.get_json()["grant"]["id"], later.get_json()["grant"]["id"]

    def ids(status: str | None) -> list[int]:
        return [g["id"] for g in wallet(api, status)["grants"]]

    assert ids(None) == [first, later_id]  # spending order: priority 200, then by effective
    assert ids("scheduled,active") == ids(None)
    assert sorted(ids("all")) == sorted([first, spent, gone_id, later_id, voided])
    assert ids("expired") == [gone_id]
    assert ids("depleted") == [spent]
    assert sorted(ids(" voided , depleted ")) == sorted([voided, spent])
    view = wallet(api)
    assert (view["balance"], view["scheduled"], view["ledger_balance"]) == ("10", "3", "15")
    assert view["low_balance_threshold"] is None


@pytest.mark.parametrize("status", ["gone", "active,gone", ",", "ALL"])
def test_wallets_refuse_an_unknown_status(api, status):
    response = api.get(f"/api/v1/customers/{C}/wallets", query_string={"status": status})
    assert (response.status_code, error_code(response)) == (422, "validation_error")
    assert response.get_json()["error"]["details"]["field"] == "status"


def test_wallets_of_unknown_customer_and_of_one_without_wallet(api):
    response = api.get("/api/v1/customers/nobody/wallets")
    assert (response.status_code, error_code(response)) == (404, "customer_not_found")
    add_customer("cust-empty", topup=None)
    body = api.get("/api/v1/customers/cust-empty/wallets").get_json()
    assert body == {"data": [], "next_cursor": None}


def test_the_customer_read_shows_available_and_scheduled(client, api, clock):
    topup(api, amount="5", effective_at=iso(clock.now + timedelta(days=1)))
    (view,) = api_as(client, "support").get(f"/api/v1/customers/{C}").get_json()["wallets"]
    assert (view["balance"], view["scheduled"], view["ledger_balance"]) == ("10", "5", "15")
    assert "grants" not in view


# ---------------------------------------------------------------- the ledger


def test_ledger_entries_show_their_grant_or_their_allocations(client, api):
    purchased = first_grant(api)
    granted = adjust(api, amount="1", reason="Goodwill").get_json()["grant"]["id"]
    event = use(api_as(client, "admin"), 100)  # 2 credits: 1 granted, then 1 purchased
    entries = api.get(f"/api/v1/customers/{C}/ledger").get_json()["data"]
    usage, plus, topped = entries
    assert (usage["type"], usage["event_id"], usage["grant_id"]) == (
        "usage",
        event["event_id"],
        None,
    )
    assert usage["allocations"] == [
        {"grant_id": granted, "amount": "1"},
        {"grant_id": purchased, "amount": "1"},
    ]
    assert (plus["type"], plus["grant_id"], plus["allocations"]) == ("adjustment", granted, [])
    assert (topped["type"], topped["grant_id"], topped["allocations"]) == ("topup", purchased, [])


def test_a_ledger_page_reads_allocations_in_one_query_whatever_its_size(client, api):
    admin = api_as(client, "admin")

    def statements(limit: int) -> tuple[int, int]:
        seen: list[str] = []

        def count(conn, cursor, statement, *args) -> None:
            seen.append(statement)

        event.listen(db.engine, "before_cursor_execute", count)
        try:
            page = api.get(f"/api/v1/customers/{C}/ledger", query_string={"limit": limit})
        finally:
            event.remove(db.engine, "before_cursor_execute", count)
        assert len(page.get_json()["data"]) == limit
        assert all(e["allocations"] for e in page.get_json()["data"])
        return len([s for s in seen if "credit_allocations" in s]), len(seen)

    for n in range(12):
        use(admin, 1, event_id=f"page-{n}")
    statements(1)  # the key's first use writes its own rows
    small, large = statements(2), statements(12)
    assert small == large and small[0] == 1


def test_expiry_entries_from_the_sweep_name_their_grant(api, clock):
    gone = topup(api, amount="2", expires_at=iso(clock.now + timedelta(minutes=5)))
    clock.advance(minutes=10)
    credits.expire_due(now=clock.now)
    entry = api.get(f"/api/v1/customers/{C}/ledger").get_json()["data"][0]
    assert (entry["type"], entry["amount"]) == ("expiry", "-2")
    assert entry["grant_id"] == gone.get_json()["grant"]["id"] and entry["actor"] == "system:expiry"
    grant = api.get(f"/api/v1/wallets/grants/{entry['grant_id']}").get_json()
    assert (grant["status"], grant["expired"], grant["remaining"]) == ("expired", "2", "0")
    assert grant["expired_at"] == iso(clock.now)


def test_the_contract_lists_the_errors_of_the_grant_operations():
    paths = document()["paths"]

    def codes(path: str, method: str) -> dict[str, list[str]]:
        out = {}
        for status, response in paths[path][method]["responses"].items():
            schema = response["content"]["application/json"]["schema"]
            if "allOf" in schema:
                out[status] = schema["properties"]["error"]["properties"]["code"]["enum"]
        return out

    void_codes = codes("/api/v1/wallets/grants/{grant_id}/void", "post")
    assert "nothing_to_void" in void_codes["422"] and void_codes["409"] == ["idempotency_conflict"]
    assert void_codes["404"] == ["not_found"] and void_codes["403"] == ["forbidden"]
    adjust_codes = codes("/api/v1/wallets/adjustments", "post")
    assert adjust_codes["409"] == ["idempotency_conflict"] and "402" in adjust_codes
    assert "nothing_to_void" not in codes("/api/v1/wallets/topups", "post")["422"]
    assert codes("/api/v1/wallets/grants/{grant_id}", "get")["404"] == ["not_found"]
    assert codes("/api/v1/customers/{key}/wallets", "get")["404"] == ["customer_not_found"]
    for path in ("/api/v1/wallets/adjustments", "/api/v1/wallets/grants/{grant_id}/void"):
        assert set(paths[path]["post"]["responses"]) >= {"200", "201"}
        assert "Idempotent-Replayed" in paths[path]["post"]["responses"]["200"]["headers"]
