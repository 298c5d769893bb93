"""The HTMX forms of the customer page: success, service errors next to their field with nothing
written, one URL with two renderings (fragment + out-of-band swaps, or a 303)."""

from __future__ import annotations

import re

import pytest

from tests.factories import make_catalog
from tests.web import row_counts, signed_in
from webapp.services import catalog, reads, usage
from webapp.services.actors import SYSTEM

C = "cust-6d11ca90"
HX = {"HX-Request": "true"}


def used(feature: str) -> int:
    for ent in reads.customer_summary(SYSTEM, C).entitlements:
        if ent.feature_key == feature:
            return ent.used_micros
    raise KeyError(feature)


def balance() -> int:
    (wallet,) = reads.customer_summary(SYSTEM, C).wallets
    return wallet.balance_micros


def error_next_to(html: str, field_id: str) -> str:
    match = re.search(rf'<p class="error" id="{field_id}-error">([^<]*)</p>', html)
    assert match, f"no error next to {field_id}"
    return match.group(1)


@pytest.fixture
def seated(app):
    make_catalog()
    usage.record_usage(SYSTEM, customer_key=C, feature_key="seats", amount=3)


def test_support_reclaims_a_seat_with_htmx_and_gets_the_changed_parts(client, seated):
    signed_in(client, "support")
    response = client.post(
        f"/customers/{C}/seats/reclaim",
        data={"reclaim-feature_key": "seats", "reclaim-amount": "1"},
        headers=HX,
    )
    html = response.get_data(as_text=True)
    assert response.status_code == 200
    assert "HX-Request" in response.headers["Vary"]
    assert not html.lstrip().startswith("<!doctype")
    assert html.lstrip().startswith('<form id="reclaim-form"')
    for part in ("customer-stats", "entitlements", "wallets", "events", "ledger", "flash"):
        assert re.search(rf'id="{part}"[^>]*hx-swap-oob="true"', html), part
    assert 'data-testid="seats-seats">2<' in html
    assert "Reclaimed 1 of Seats: 2 of 10 in use." in html
    assert used("seats") == 2_000_000


def test_a_plain_post_is_answered_with_303_and_a_flash(client, seated):
    signed_in(client, "support")
    response = client.post(
        f"/customers/{C}/usage", data={"usage-feature_key": "api_calls", "usage-amount": "4"}
    )
    assert response.status_code == 303
    assert response.headers["Location"] == f"/customers/{C}"
    page = client.get(f"/customers/{C}").get_data(as_text=True)
    assert "Recorded 4 API calls (0.08 credits)." in page
    assert balance() == 10_000_000 - 80_000
    assert "9.92" in page


def test_reclaiming_more_seats_than_used_shows_the_error_next_to_amount(client, seated):
    signed_in(client, "support")
    before = row_counts()
    for headers in (HX, {}):
        response = client.post(
            f"/customers/{C}/seats/reclaim",
            data={"reclaim-feature_key": "seats", "reclaim-amount": "5"},
            headers=headers,
        )
        assert response.status_code == 422
        html = response.get_data(as_text=True)
        assert "cannot give back 5" in error_next_to(html, "reclaim-amount")
        assert 'value="5"' in html  # what was typed stays
        assert html.lstrip().startswith("<!doctype") == (headers == {})
    assert row_counts() == before
    assert used("seats") == 3_000_000


def test_a_negative_reclaim_is_refused_by_the_form_shape(client, seated):
    signed_in(client, "support")
    before = row_counts()
    response = client.post(
        f"/customers/{C}/seats/reclaim",
        data={"reclaim-feature_key": "seats", "reclaim-amount": "-2"},
        headers=HX,
    )
    assert response.status_code == 422
    html = response.get_data(as_text=True)
    assert "whole number of seats" in error_next_to(html, "reclaim-amount")
    assert row_counts() == before


def test_usage_over_the_allowance_is_refused_with_limit_exceeded(client, seated):
    signed_in(client, "admin")
    before = row_counts()
    response = client.post(
        f"/customers/{C}/usage",
        data={"usage-feature_key": "candidates", "usage-amount": "101"},
        headers=HX,
    )
    assert response.status_code == 422
    assert "would pass the allowance" in error_next_to(
        response.get_data(as_text=True), "usage-amount"
    )
    assert row_counts() == before


def test_usage_for_an_archived_customer_is_a_form_level_error(client, seated):
    catalog.set_customer_status(SYSTEM, C, "archived")
    signed_in(client, "support")
    before = row_counts()
    response = client.post(
        f"/customers/{C}/usage",
        data={"usage-feature_key": "api_calls", "usage-amount": "1"},
        headers=HX,
    )
    assert response.status_code == 422
    assert "is archived" in response.get_data(as_text=True)
    assert row_counts() == before


def test_the_same_usage_form_sent_twice_records_once(client, seated):
    signed_in(client, "support")
    data = {"usage-feature_key": "api_calls", "usage-amount": "2", "usage-event_id": "dash-x1"}
    first = client.post(f"/customers/{C}/usage", data=data, headers=HX)
    second = client.post(f"/customers/{C}/usage", data=data, headers=HX)
    assert first.status_code == second.status_code == 200
    assert "Already recorded" in second.get_data(as_text=True)
    assert used("api_calls") == 2_000_000


def test_finance_tops_up_and_sees_the_new_balance(client, seated):
    signed_in(client, "finance")
    response = client.post(
        f"/customers/{C}/topup",
        data={
            "topup-credit_system": "credits",
            "topup-amount": "2.5",
            "topup-kind": "purchased",
            "topup-reference": "INV-7",
        },
        headers=HX,
    )
    html = response.get_data(as_text=True)
    assert response.status_code == 200
    assert "Added 2.50 credits; balance 12.50." in html
    assert 'data-testid="balance-credits">12.50<' in html
    assert "INV-7" in html  # the ledger row, swapped in out of band
    assert balance() == 12_500_000


@pytest.mark.parametrize(
    ("amount", "message"),
    [("1.1234567", "more than 6 decimal places"), ("0", "greater than zero"), ("abc", "decimal")],
)
def test_a_bad_topup_amount_is_shown_next_to_amount_and_writes_nothing(
    client, seated, amount, message
):
    signed_in(client, "finance")
    before = row_counts()
    response = client.post(
        f"/customers/{C}/topup",
        data={"topup-credit_system": "credits", "topup-amount": amount, "topup-kind": "granted"},
        headers=HX,
    )
    assert response.status_code == 422
    assert message in error_next_to(response.get_data(as_text=True), "topup-amount")
    assert row_counts() == before


def test_an_adjustment_below_zero_is_refused(client, seated):
    signed_in(client, "finance")
    before = row_counts()
    response = client.post(
        f"/customers/{C}/adjust",
        data={"adjust-credit_system": "credits", "adjust-amount": "-11", "adjust-reason": "oops"},
        headers=HX,
    )
    assert response.status_code == 422
    assert "below zero" in error_next_to(response.get_data(as_text=True), "adjust-amount")
    assert row_counts() == before


def test_an_adjustment_needs_a_reason(client, seated):
    signed_in(client, "finance")
    response = client.post(
        f"/customers/{C}/adjust",
        data={"adjust-credit_system": "credits", "adjust-amount": "-1"},
        headers=HX,
    )
    assert response.status_code == 422
    assert error_next_to(response.get_data(as_text=True), "adjust-reason")


def test_an_adjustment_with_a_reason_moves_the_balance(client, seated):
    signed_in(client, "admin")
    response = client.post(
        f"/customers/{C}/adjust",
        data={
            "adjust-credit_system": "credits",
            "adjust-amount": "-1.5",
            "adjust-reason": "refund",
        },
    )
    assert response.status_code == 303
    assert balance() == 8_500_000


@pytest.mark.parametrize(
    ("role", "shown", "hidden"),
    [
        ("account_manager", [], ["usage-form", "reclaim-form", "topup-form", "adjust-form"]),
        ("support", ["usage-form", "reclaim-form"], ["topup-form", "adjust-form"]),
        ("finance", ["topup-form", "adjust-form"], ["usage-form", "reclaim-form"]),
        ("admin", ["usage-form", "reclaim-form", "topup-form", "adjust-form"], []),
    ],
)
def test_each_role_sees_only_the_forms_it_may_use(client, seated, role, shown, hidden):
    signed_in(client, role)
    html = client.get(f"/customers/{C}").get_data(as_text=True)
    for form_id in shown:
        assert f'id="{form_id}"' in html
    for form_id in hidden:
        assert f'id="{form_id}"' not in html
    assert ("/admin/" in html) == (role == "admin")


def _last_audit() -> tuple[str, dict]:
    from webapp.services import dashboard

    row = dashboard.audit_log(SYSTEM, per_page=1).rows[0]
    return row.target or "", row.details or {}


def test_a_reason_for_usage_and_reclaimed_seats_is_kept_in_the_audit_log(client, seated):
    signed_in(client, "support")
    response = client.post(
        f"/customers/{C}/usage",
        data={"usage-feature_key": "api_calls", "usage-amount": "2", "usage-reason": " ticket 42 "},
        headers=HX,
    )
    assert response.status_code == 200
    assert _last_audit()[1] == {"feature": "api_calls", "amount": "2", "reason": "ticket 42"}
    client.post(
        f"/customers/{C}/seats/reclaim",
        data={"reclaim-feature_key": "seats", "reclaim-amount": "1", "reclaim-reason": "left"},
        headers=HX,
    )
    assert _last_audit()[1] == {"feature": "seats", "amount": "-1", "reason": "left"}
    # Without a reason the audit row is as before.
    client.post(
        f"/customers/{C}/usage", data={"usage-feature_key": "api_calls", "usage-amount": "1"}
    )
    assert _last_audit()[1] == {"feature": "api_calls", "amount": "1"}
    # The services take it as a keyword; a batch keeps each event's reason.
    usage.reclaim_seats(SYSTEM, customer_key=C, feature_key="seats", count=1, reason="moved")
    assert _last_audit()[1]["reason"] == "moved"
    usage.record_usage_batch(
        SYSTEM,
        [
            {"customer_key": C, "feature_key": "api_calls", "event_id": "b-1", "reason": "r"},
            {"customer_key": C, "feature_key": "api_calls", "event_id": "b-2"},
        ],
    )
    assert _last_audit()[1]["events"] == [["b-1", "api_calls", "1", "r"], ["b-2", "api_calls", "1"]]


def test_a_reason_over_500_characters_is_refused_next_to_its_field(client, seated):
    signed_in(client, "support")
    before = row_counts()
    for url, prefix in (
        (f"/customers/{C}/usage", "usage"),
        (f"/customers/{C}/seats/reclaim", "reclaim"),
    ):
        response = client.post(
            url,
            data={
                f"{prefix}-feature_key": "seats",
                f"{prefix}-amount": "1",
                f"{prefix}-reason": "x" * 501,
            },
            headers=HX,
        )
        assert response.status_code == 422
        assert "longer than 500 characters" in error_next_to(
            response.get_data(as_text=True), f"{prefix}-reason"
        )
    assert row_counts() == before
    usage.record_usage(SYSTEM, customer_key=C, feature_key="seats", amount=1, reason="y" * 500)


def test_the_events_list_filters_by_feature_dates_and_event_id(client, seated):
    from datetime import timedelta

    from webapp.models import utcnow

    usage.record_usage(SYSTEM, customer_key=C, feature_key="api_calls", amount=2, event_id="evt-77")
    old = (utcnow() - timedelta(days=3)).replace(microsecond=0)
    usage.record_usage(
        SYSTEM,
        customer_key=C,
        feature_key="api_calls",
        amount=5,
        event_id="evt-old",
        timestamp=old.isoformat(),
    )
    signed_in(client, "support")
    url = f"/customers/{C}/events"
    every = client.get(url).get_data(as_text=True)
    assert "evt-77" in every and "evt-old" in every
    seats = client.get(f"{url}?feature=seats").get_data(as_text=True)
    assert "evt-77" not in seats and 'value="seats" selected' in seats
    day = old.date().isoformat()
    on_the_day = client.get(f"{url}?since={day}&until={day}").get_data(as_text=True)
    assert "evt-old" in on_the_day and "evt-77" not in on_the_day
    found = client.get(f"{url}?event=evt-77").get_data(as_text=True)
    assert "evt-77" in found and "evt-old" not in found
    assert "No events match these filters." in client.get(f"{url}?event=nope").get_data(
        as_text=True
    )
    assert client.get(f"{url}?since=yesterday").status_code == 422
    # The customer page's events card finds an event by its id on this page.
    page = client.get(f"/customers/{C}").get_data(as_text=True)
    assert f'action="{url}"' in page and 'name="event"' in page


def preview(client, feature: str, amount: str) -> str:
    response = client.get(
        f"/customers/{C}/usage/preview",
        query_string={"usage-feature_key": feature, "usage-amount": amount},
        headers=HX,
    )
    assert response.status_code == 200
    return " ".join(response.get_data(as_text=True).split())


def test_the_usage_preview_shows_the_credits_and_what_is_left(client, seated):
    signed_in(client, "support")
    before = row_counts()
    html = preview(client, "api_calls", "4")
    assert "Allowed." in html
    assert "Costs <strong>0.08</strong> credits; balance 10.00 → <strong>9.92</strong>" in html
    assert "Allowance left: 1,000 → <strong>996</strong> of 1,000" in html
    seats = preview(client, "seats", "2")
    assert "Seats left: 7 → <strong>5</strong> of 10" in seats
    assert "Costs" not in seats
    assert row_counts() == before  # a preview writes nothing


@pytest.mark.parametrize(
    ("feature", "amount", "said"),
    [
        ("api_calls", "501", "Would be refused:</strong> Recording this needs 10.02 credits"),
        ("candidates", "101", "Would be refused:</strong> 101 more candidates"),
        ("api_calls", "", "Choose a feature and enter an amount"),
        ("", "3", "Choose a feature and enter an amount"),
        (
            "api_calls",
            "lots",
            "Amount must be a decimal number such as &#34;2&#34; or &#34;0.5&#34;.",
        ),
        ("sso", "1", "Would be refused:</strong> Feature &#39;sso&#39; is boolean"),
        ("nope", "1", "nope"),
    ],
)
def test_the_usage_preview_explains_a_refusal_or_bad_input_in_words(
    client, seated, feature, amount, said
):
    signed_in(client, "admin")
    html = preview(client, feature, amount)
    assert said in html
    assert "→" not in html


def test_the_usage_form_asks_for_its_preview(client, seated):
    signed_in(client, "support")
    html = client.get(f"/customers/{C}").get_data(as_text=True)
    assert f'hx-get="/customers/{C}/usage/preview"' in html
    assert 'hx-include="#usage-feature_key, #usage-amount"' in html
