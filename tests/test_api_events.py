"""GET /api/v1/events: the outbox as a log, polled with a cursor (docs/api.md, "Events")."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import select

from tests.api_support import api_as, error_code
from webapp.extensions import db
from webapp.models import OutboxEvent
from webapp.services import outbox

C = "cust-6d11ca90"


@pytest.fixture
def api(client):
    return api_as(client, "admin")


def poll(api, after: str = "", **args: str):
    query = "&".join(f"{k}={v}" for k, v in {"after": after, **args}.items())
    response = api.get(f"/api/v1/events?{query}")
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def poll_until(api, cursor: str, want: int, seconds: float = 30.0, **args: str) -> list[dict]:
    """Poll until ``want`` events are out. The log waits for every transaction of the
    PostgreSQL cluster older than an event's (transaction ids are cluster-wide), and this test
    server is shared: another database's transaction may hold an event back for a moment."""
    deadline = time.monotonic() + seconds
    while True:
        found = poll(api, cursor, **args)["data"]
        if len(found) >= want or time.monotonic() > deadline:
            return found
        time.sleep(0.02)  # a foreign transaction, not this test's clock


def test_the_log_in_order_paged_and_polled(api, catalog):
    poll_until(api, "", 2)
    everything = poll(api)
    types = [e["type"] for e in everything["data"]]
    assert types == ["customer.created", "credit.purchased"]
    assert everything["has_more"] is False
    first = everything["data"][0]
    assert first["id"].startswith("evt_") and first["created_at"].endswith("Z")
    assert first["data"]["customer_key"] == C

    page = poll(api, limit="1")
    assert [e["type"] for e in page["data"]] == ["customer.created"] and page["has_more"]
    page = poll(api, page["next_cursor"], limit="1")
    assert [e["type"] for e in page["data"]] == ["credit.purchased"] and not page["has_more"]
    cursor = page["next_cursor"]
    empty = poll(api, cursor)
    assert empty["data"] == [] and empty["next_cursor"] == cursor  # keep polling from here

    api.post("/api/v1/customers", {"key": "cust-new", "name": "New"})
    later = poll_until(api, cursor, 1)
    assert [(e["type"], e["data"]["customer_key"]) for e in later] == [
        ("customer.created", "cust-new")
    ]


def test_filters_by_type_and_customer(api, catalog):
    api.post("/api/v1/customers", {"key": "cust-new", "name": "New"})
    poll_until(api, "", 3)
    created = poll(api, type="customer.created")["data"]
    assert [e["data"]["customer_key"] for e in created] == [C, "cust-new"]
    mine = poll(api, customer="cust-new")["data"]
    assert [e["type"] for e in mine] == ["customer.created"]


@pytest.mark.parametrize(
    "query", ["after=nonsense", "after=djE6MTI", "type=wallet.nothing", "limit=0", "limit=x"]
)
def test_bad_arguments_are_validation_errors(api, catalog, query):
    response = api.get(f"/api/v1/events?{query}")
    assert response.status_code == 422 and error_code(response) == "validation_error"


@pytest.mark.parametrize("role", ["support", "finance", "account_manager"])
def test_only_admins_read_the_log(client, catalog, role):
    response = api_as(client, role).get("/api/v1/events")
    assert response.status_code == 403 and error_code(response) == "forbidden"


def test_a_credit_systems_default_threshold_through_the_api(api):
    response = api.post(
        "/api/v1/credit-systems",
        {"key": "tokens", "name": "Tokens", "low_balance_threshold": "2.5"},
    )
    assert response.status_code == 201
    assert response.get_json()["low_balance_threshold"] == "2.5"
    response = api.post("/api/v1/credit-systems", {"key": "t2", "name": "T2"})
    assert response.get_json()["low_balance_threshold"] is None
    response = api.post(
        "/api/v1/credit-systems", {"key": "t3", "name": "T3", "low_balance_threshold": "-1"}
    )
    assert response.status_code == 422


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_an_event_committed_late_with_a_smaller_id_is_never_skipped(api, catalog):
    """Two real connections: A inserts an event (id n) and stays open; B inserts one (id n+1)
    and commits. A poller reading `id > cursor` would take n+1 and move past n for good. The
    log holds B's event back until A has finished, then gives A's and B's, in that order."""
    poll_until(api, "", 2)  # the catalog's events are out
    cursor = poll(api)["next_cursor"]
    a = db.engine.connect()
    try:
        tx_a = a.begin()
        outbox.emit(a, "customer.updated", {"customer_key": "a"}, customer_key="a")
        with db.engine.begin() as b:
            outbox.emit(b, "customer.updated", {"customer_key": "b"}, customer_key="b")
        with db.engine.connect() as reader:
            naive = reader.scalars(select(OutboxEvent.customer_key).order_by(OutboxEvent.id))
            assert list(naive)[-1] == "b"  # committed, visible, its id after A's
        held = poll(api, cursor)
        assert held["data"] == [] and held["next_cursor"] == cursor
        tx_a.commit()
    finally:
        a.close()
    both = poll_until(api, cursor, 2)
    assert [e["data"]["customer_key"] for e in both] == ["a", "b"]
    ids = [int(e["id"].removeprefix("evt_")) for e in both]
    assert ids == sorted(ids)


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_an_older_transaction_in_flight_holds_back_only_what_comes_after_it(api, catalog):
    """B took its transaction id first (it wrote something), A inserted its event first: B's
    event goes before A's in the log, and is given out even while A is still open."""
    poll_until(api, "", 2)  # the catalog's events are out
    cursor = poll(api)["next_cursor"]
    a = db.engine.connect()
    b = db.engine.connect()
    try:
        tx_b = b.begin()
        b.exec_driver_sql("SELECT pg_current_xact_id()")  # B's transaction id is older
        tx_a = a.begin()
        outbox.emit(a, "customer.updated", {"customer_key": "a"}, customer_key="a")
        outbox.emit(b, "customer.updated", {"customer_key": "b"}, customer_key="b")
        tx_b.commit()
        page = poll_until(api, cursor, 1)
        assert [e["data"]["customer_key"] for e in page] == ["b"]  # A is still open
        after_b = poll(api, cursor, limit="1")["next_cursor"]
        tx_a.commit()
    finally:
        a.close()
        b.close()
    rest = poll_until(api, after_b, 1)
    assert [e["data"]["customer_key"] for e in rest] == ["a"]
