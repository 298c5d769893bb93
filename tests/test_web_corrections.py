"""The dashboard's **Correct** on an event row (support, admin): the form, its HTMX preview (the
service's plan, nothing written), the confirmation, errors next to the field."""

from __future__ import annotations

from sqlalchemy import func, select

from tests.factories import make_catalog
from tests.web import row_counts, signed_in
from webapp.extensions import db
from webapp.models import UsageCorrection
from webapp.services import usage
from webapp.services.actors import SYSTEM

C = "cust-6d11ca90"
URL = f"/customers/{C}/events/e1/correct"


def corrections() -> int:
    return db.session.scalar(select(func.count()).select_from(UsageCorrection))


def setup_event(amount: int = 50) -> None:
    make_catalog()
    usage.record_usage(
        SYSTEM, customer_key=C, feature_key="api_calls", amount=amount, event_id="e1"
    )


def test_event_rows_link_to_correct_for_support_and_admin_only(app, client):
    setup_event()
    signed_in(client, "support")
    page = client.get(f"/customers/{C}/events").get_data(as_text=True)
    assert f'href="{URL}"' in page
    client.post("/logout")
    other = app.test_client()
    signed_in(other, "finance")
    page = other.get(f"/customers/{C}").get_data(as_text=True)
    assert URL not in page


def test_preview_shows_the_credit_effect_and_writes_nothing(app, client):
    setup_event()
    signed_in(client, "support")
    before = row_counts()
    html = client.get(f"{URL}/preview?actual_amount=5").get_data(as_text=True)
    assert "50 → 5" in html and "Refunds <strong>0.90</strong> credits" in html
    assert "back to grant #1" in html
    more = client.get(f"{URL}/preview?actual_amount=60").get_data(as_text=True)
    assert "Charges <strong>0.20</strong> credits" in more
    bad = client.get(f"{URL}/preview?actual_amount=-1").get_data(as_text=True)
    assert "never negative" in bad
    over = client.get(f"{URL}/preview?actual_amount=2000").get_data(as_text=True)
    assert "would pass the allowance" in over
    assert row_counts() == before and corrections() == 0


def test_correct_asks_to_confirm_the_effect_then_saves(app, client):
    setup_event()
    signed_in(client, "support")
    page = client.get(URL)
    assert page.status_code == 200
    assert 'value="50"' in page.get_data(as_text=True)
    form = {"actual_amount": "5", "reason": "typed 50 for 5", "idempotency_key": "dash-1"}
    first = client.post(URL, data=form)
    assert first.status_code == 422
    html = first.get_data(as_text=True)
    assert "Tick the box to correct the event" in html
    assert 'name="confirm" value="5"' in html
    assert corrections() == 0
    done = client.post(URL, data={**form, "confirm": "5"})
    assert done.status_code == 303
    assert corrections() == 1
    events = client.get(done.headers["Location"]).get_data(as_text=True)
    assert "Corrected event e1: 50 → 5; refunds 0.90 credits" in events
    assert "<s" in events and "corrected" in events
    # The credits column shows what the event costs now, the recorded charge struck through.
    assert '<s class="muted hide-sm" title="recorded">1.00</s> 0.10' in events
    # The same form again (a double click): a replay, nothing written.
    again = client.post(URL, data={**form, "confirm": "5"})
    assert again.status_code == 303 and corrections() == 1


def test_bad_input_is_a_message_next_to_the_field_and_changes_nothing(app, client):
    setup_event()
    signed_in(client, "admin")
    before = row_counts()
    for amount, words in (("-1", "never negative"), ("abc", "Actual amount"), ("", "required")):
        response = client.post(
            URL, data={"actual_amount": amount, "reason": "x", "confirm": amount}
        )
        assert response.status_code == 422
        html = response.get_data(as_text=True)
        assert 'id="actual_amount-error"' in html, html
        assert words.lower() in html.lower()
    missing = client.post(URL, data={"actual_amount": "5", "confirm": "5"})
    assert 'id="reason-error"' in missing.get_data(as_text=True)
    assert row_counts() == before and corrections() == 0
    assert client.get(f"/customers/{C}/events/nope/correct").status_code == 404


def test_a_correction_in_the_ledger_expands_to_its_grants(app, client):
    from webapp.models import LedgerEntry
    from webapp.services.corrections import correct_usage

    setup_event()
    correct_usage(SYSTEM, customer_key=C, event_id="e1", actual_amount=5, reason="typo")
    entry = db.session.scalar(select(LedgerEntry.id).where(LedgerEntry.type == "correction"))
    signed_in(client, "account_manager")
    ledger = client.get(f"/customers/{C}/ledger").get_data(as_text=True)
    assert f'href="/customers/{C}/ledger/{entry}"' in ledger
    parts = client.get(f"/customers/{C}/ledger/{entry}", headers={"HX-Request": "true"})
    html = parts.get_data(as_text=True)
    assert "grant #1" in html and "-0.90" in html


def test_the_events_csv_has_the_effective_amount(app, client):
    from webapp.services.corrections import correct_usage

    setup_event()
    correct_usage(SYSTEM, customer_key=C, event_id="e1", actual_amount="4.5", reason="typo")
    signed_in(client, "support")
    import csv

    text = client.get(f"/customers/{C}/events.csv").get_data(as_text=True)
    header, row = list(csv.reader(text.splitlines()))[:2]
    assert header[-2:] == ["effective_amount", "effective_credits"]
    assert (row[5], row[7]) == ("50", "1")  # as recorded
    assert row[-2:] == ["4.5", "0.09"]  # after the correction
