"""The dashboard's plans: the list with customer counts, an edit with its preview (who changes,
who blocks), the refusal shown on the page, the plan picker of a customer with its effect before
saving, and the plan filter and column of /customers (query budget unchanged)."""

from __future__ import annotations

from tests.factories import add_customer, make_catalog
from tests.web import count_queries, signed_in
from webapp.extensions import db
from webapp.services import plans, usage
from webapp.services.actors import SYSTEM

C = "cust-6d11ca90"
ROW = {
    "on-api_calls": "1",
    "allowance-api_calls": "500",
    "reset-api_calls": "month",
    "overage-api_calls": "block",
    "on-seats": "1",
    "allowance-seats": "4",
    "reset-seats": "never",
    "overage-seats": "block",
    "credits-credits": "12",
    "period-credits": "month",
}


def _plan_with_customer(client):
    make_catalog()
    signed_in(client, "admin")
    created = client.post("/admin/plans", data={"key": "team", "name": "Team"})
    assert created.status_code == 303 and created.headers["Location"].endswith("/admin/plans/team")
    saved = client.post("/admin/plans/team", data={"name": "Team", **ROW})
    assert saved.status_code == 303, saved.get_data(as_text=True)
    view = plans.read_plan(SYSTEM, "team")
    assert [f.key for f, _ in view.entitlements] == ["api_calls", "seats"]
    assert [pc.amount_micros for _, pc in view.credits] == [12_000_000]


def test_admin_creates_and_edits_a_plan_and_sees_who_blocks(client, app):
    _plan_with_customer(client)
    plans.change_customer_plan(SYSTEM, C, "team")
    usage.record_usage(SYSTEM, customer_key=C, feature_key="seats", amount=3)
    db.session.remove()
    page = client.get("/admin/plans").get_data(as_text=True)
    assert "Team" in page and ">1</a>" in page  # one customer
    smaller = {**ROW, "allowance-seats": "2"}
    preview = client.post(
        "/admin/plans/team/preview",
        data={"name": "Team", **smaller},
        headers={"HX-Request": "true"},
    )
    text = preview.get_data(as_text=True)
    assert preview.status_code == 200 and C in text and "block the change" in text
    refused = client.post("/admin/plans/team", data={"name": "Team", **smaller})
    assert refused.status_code == 422
    assert C in refused.get_data(as_text=True)
    assert plans.read_plan(SYSTEM, "team").entitlements[1][1].allowance_micros == 4_000_000
    done = client.post(
        "/admin/plans/team", data={"name": "Team", "apply_to_others": "y", **smaller}
    )
    assert done.status_code == 303


def test_the_plan_picker_shows_the_effect_before_saving(client, app):
    _plan_with_customer(client)
    preview = client.post(
        f"/admin/customers/{C}/plan/preview",
        data={"plan": "team", "when": "now"},
        headers={"HX-Request": "true"},
    )
    text = preview.get_data(as_text=True)
    assert preview.status_code == 200
    assert "api_calls" in text and "Issued at once: 12" in text
    saved = client.post(f"/admin/customers/{C}/plan", data={"plan": "team", "when": "now"})
    assert saved.status_code == 303
    page = client.get(f"/admin/customers/{C}/entitlements").get_data(as_text=True)
    assert "On <a" in page and "Team" in page and "override" in page  # candidates kept


def test_customers_page_filters_by_plan_within_its_query_budget(client, app):
    _plan_with_customer(client)
    for n in range(5):
        add_customer(f"cust-more-{n}", topup="1")
        if n % 2:
            plans.change_customer_plan(SYSTEM, f"cust-more-{n}", "team")
    db.session.remove()
    with count_queries() as queries:
        page = client.get("/customers?plan=team")
    assert page.status_code == 200
    text = page.get_data(as_text=True)
    assert "cust-more-1" in text and "cust-more-3" in text and "cust-more-0" not in text
    assert len(queries) <= 20
    none = client.get("/customers?plan=none").get_data(as_text=True)
    assert "cust-more-0" in none and "cust-more-1" not in none


def test_removing_says_whether_an_override_or_an_entitlement_went(client, app):
    from webapp.services import catalog

    _plan_with_customer(client)
    plans.change_customer_plan(SYSTEM, C, "team")
    other = add_customer("no-plan")
    catalog.set_entitlement(SYSTEM, C, "api_calls", allowance=900)  # an override on the plan
    db.session.remove()
    url = f"/admin/customers/{C}/entitlements/api_calls/remove"
    gone = client.post(url, follow_redirects=True).get_data(as_text=True)
    assert "Override of api_calls removed: the plan&#39;s value applies again." in gone
    url = f"/admin/customers/{other}/entitlements/api_calls/remove"
    gone = client.post(url, follow_redirects=True).get_data(as_text=True)
    assert "Entitlement to api_calls removed." in gone
