"""Credit grants on the dashboard: the wallet panel's grants and its past-grants toggle, voiding
a grant after a confirmation, the top-up form's expiry and "more" terms, an idempotent adjust
form, ledger rows that say which grants paid, and the grant page."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from tests.factories import make_catalog
from tests.web import row_counts, signed_in
from webapp.extensions import db
from webapp.models import CreditGrant, LedgerEntry, set_clock, utcnow
from webapp.services import catalog, credits, reads, usage, wallets
from webapp.services.actors import SYSTEM

C = "cust-6d11ca90"
HX = {"HX-Request": "true"}


def error_next_to(html: str, field_id: str) -> str:
    match = re.search(rf'<p class="error" id="{field_id}-error">([^<]*)</p>', html)
    assert match, f"no error next to {field_id}"
    return match.group(1)


def grant(gid: int) -> CreditGrant:
    db.session.rollback()  # see what the requests committed
    found = db.session.get(CreditGrant, gid)
    assert found is not None
    return found


def entries(type_: str) -> int:
    db.session.rollback()
    return db.session.scalar(
        select(func.count()).select_from(LedgerEntry).where(LedgerEntry.type == type_)
    )


def last_grant() -> CreditGrant:
    db.session.rollback()
    found = db.session.scalar(select(CreditGrant).order_by(CreditGrant.id.desc()).limit(1))
    assert found is not None
    return found


@pytest.fixture
def clock():
    """Time that tests move by hand (models.set_clock); the system clock again afterwards."""
    now = [datetime.now(UTC).replace(microsecond=0)]
    set_clock(lambda: now[0])
    yield now
    set_clock(None)


@pytest.fixture
def shop(app, clock):
    """Grant 1 (10 purchased, make_catalog's), a granted 5 expiring in 30 days, a scheduled 4."""
    make_catalog()
    now = clock[0]
    wallets.topup_wallet(
        SYSTEM,
        customer_key=C,
        credit_system="credits",
        amount="5",
        kind="granted",
        expires_at=(now + timedelta(days=30)).isoformat(),
    )
    wallets.topup_wallet(
        SYSTEM,
        customer_key=C,
        credit_system="credits",
        amount="4",
        effective_at=(now + timedelta(days=3)).isoformat(),
    )


# ---------------------------------------------------------------- the wallet panel


def test_the_wallet_panel_lists_grants_with_terms_and_the_available_balance(client, shop):
    signed_in(client, "account_manager")
    html = client.get(f"/customers/{C}").get_data(as_text=True)
    panel = html[html.index('id="wallets"') : html.index("</section>", html.index('id="wallets"'))]
    assert 'data-testid="available-credits">15.00<' in panel  # 10 + 5; the 4 is not yet
    assert "+ 4.00 credits scheduled" in panel
    # Spending order: the granted 5 (priority 100) first, then purchased (200).
    assert panel.index('id="grant-2"') < panel.index('id="grant-1"') < panel.index('id="grant-3"')
    grant_2 = panel[panel.index('id="grant-2"') : panel.index("</li>", panel.index('id="grant-2"'))]
    assert "granted</span> · priority 100" in grant_2
    assert "5.00</strong>" in grant_2 and "/ 5.00" in grant_2
    assert "expires in 30 days" in grant_2 and 'grant-status active">active<' in grant_2
    assert 'grant-status scheduled">scheduled<' in panel and "no expiry" in panel
    assert "Void" not in panel  # account managers read only


def test_past_grants_are_behind_a_toggle_that_works_with_and_without_htmx(client, shop, clock):
    usage.record_usage(SYSTEM, customer_key=C, feature_key="api_calls", amount=250)  # 5 credits
    clock[0] += timedelta(days=31)  # nothing left of grant 2 anyway; grant 1 pays the rest
    signed_in(client, "finance")
    html = client.get(f"/customers/{C}").get_data(as_text=True)
    assert 'id="grant-2"' not in html
    assert "Show 1 past grant (depleted, expired, voided)" in html
    page = client.get(f"/customers/{C}?grants=all").get_data(as_text=True)
    assert 'id="grant-2"' in page and 'grant-status depleted">depleted<' in page
    assert "Hide past grants" in page
    fragment = client.get(
        f"/customers/{C}?grants=all", headers={**HX, "HX-Target": "wallets"}
    ).get_data(as_text=True)
    assert fragment.lstrip().startswith('<section id="wallets"') and 'id="grant-2"' in fragment


def test_finance_and_admin_see_void_for_grants_with_credits_left(client, shop):
    for role in ("finance", "admin"):
        signed_in(client, role)
        html = client.get(f"/customers/{C}").get_data(as_text=True)
        assert f'action="/customers/{C}/grants/1/void"' in html
        assert f'action="/customers/{C}/grants/3/void"' in html  # scheduled: may be voided
    signed_in(client, "support")
    assert "/void" not in client.get(f"/customers/{C}").get_data(as_text=True)
    catalog.set_customer_status(SYSTEM, C, "archived")  # no wallet writes: no void offered
    signed_in(client, "finance")
    assert "/void" not in client.get(f"/customers/{C}").get_data(as_text=True)


# ---------------------------------------------------------------- void


def test_a_void_asks_to_confirm_the_amount_then_removes_it_once(client, shop):
    signed_in(client, "finance")
    data = {"void-1-reason": "refund of unused credits", "void-1-idempotency_key": "dash-v1"}
    before = row_counts()
    first = client.post(f"/customers/{C}/grants/1/void", data=data, headers=HX)
    html = first.get_data(as_text=True)
    assert first.status_code == 422
    assert html.lstrip().startswith('<section id="wallets"')
    assert "This takes 10.00 credits out of the wallet" in error_next_to(html, "void-1-confirm")
    assert "its available balance will be 5.00" in html
    assert 'name="void-1-confirm" value="10"' in html
    assert row_counts() == before and grant(1).remaining_micros == 10_000_000

    confirmed = {**data, "void-1-confirm": "10"}
    done = client.post(f"/customers/{C}/grants/1/void", data=confirmed, headers=HX)
    html = done.get_data(as_text=True)
    assert done.status_code == 200
    assert "Voided grant #1: 10.00 credits left the wallet." in html
    assert re.search(r'id="ledger"[^>]*hx-swap-oob="true"', html)
    assert 'Voided:</span> <span class="void-reason">refund of unused credits' in html
    assert 'data-testid="available-credits">5.00<' in html
    assert grant(1).remaining_micros == 0 and grant(1).voided_micros == 10_000_000

    again = client.post(f"/customers/{C}/grants/1/void", data=confirmed, headers=HX)
    assert "Already voided" in again.get_data(as_text=True)
    assert entries("void") == 1


def test_a_void_without_js_confirms_on_the_page_and_redirects(client, shop):
    signed_in(client, "admin")
    data = {"void-3-reason": "mistaken topup"}
    first = client.post(f"/customers/{C}/grants/3/void", data=data)
    html = first.get_data(as_text=True)
    assert first.status_code == 422 and "<!doctype" in html
    assert re.search(r'<details class="void" open>', html)
    assert "This takes 4.00 credits out of the wallet" in html
    # A scheduled grant is not available yet: the available balance stays 15.
    assert "its available balance will be 15.00" in html
    done = client.post(f"/customers/{C}/grants/3/void", data={**data, "void-3-confirm": "4"})
    assert done.status_code == 303 and done.headers["Location"] == f"/customers/{C}"
    assert "Voided grant #3" in client.get(f"/customers/{C}").get_data(as_text=True)
    assert grant(3).voided_micros == 4_000_000


def test_a_confirmation_for_an_amount_that_changed_asks_again(client, shop):
    signed_in(client, "finance")
    usage.record_usage(SYSTEM, customer_key=C, feature_key="api_calls", amount=300)  # 6 credits
    # Grant 2 paid 5, grant 1 paid 1: it has 9 left, not the 10 the page said.
    response = client.post(
        f"/customers/{C}/grants/1/void",
        data={"void-1-reason": "refund", "void-1-confirm": "10"},
        headers=HX,
    )
    assert response.status_code == 422
    assert "This takes 9.00 credits" in response.get_data(as_text=True)
    assert grant(1).remaining_micros == 9_000_000


def test_a_void_needs_a_reason(client, shop):
    signed_in(client, "finance")
    before = row_counts()
    response = client.post(
        f"/customers/{C}/grants/1/void", data={"void-1-confirm": "10"}, headers=HX
    )
    assert response.status_code == 422
    assert error_next_to(response.get_data(as_text=True), "void-1-reason")
    assert row_counts() == before


def test_voiding_an_empty_grant_says_there_is_nothing_left(client, shop):
    wallets.void_grant(SYSTEM, grant_id=2, reason="first")
    signed_in(client, "finance")
    response = client.post(
        f"/customers/{C}/grants/2/void", data={"void-2-reason": "again"}, headers=HX
    )
    assert response.status_code == 422
    assert "nothing left to void" in response.get_data(as_text=True)
    assert entries("void") == 1


def test_void_is_for_finance_and_admin_and_for_the_customer_s_own_grants(client, shop):
    catalog.create_customer(SYSTEM, key="cust-other", name="Other", email=None)
    wallets.topup_wallet(SYSTEM, customer_key="cust-other", credit_system="credits", amount="1")
    data = {"void-1-reason": "x", "void-1-confirm": "10"}
    for role in ("account_manager", "support"):
        signed_in(client, role)
        assert client.post(f"/customers/{C}/grants/1/void", data=data).status_code == 403
    signed_in(client, "finance")
    other = client.post("/customers/cust-other/grants/1/void", data=data)
    assert other.status_code == 404
    assert client.post(f"/customers/{C}/grants/999/void", data=data).status_code == 404
    assert client.post(f"/customers/{C}/grants/abc/void", data=data).status_code == 404
    assert grant(1).remaining_micros == 10_000_000


# ---------------------------------------------------------------- top-up form


def topup(client, **fields: str):
    data = {"topup-credit_system": "credits", "topup-amount": "2", "topup-kind": "purchased"}
    data.update({f"topup-{k}": v for k, v in fields.items()})
    return client.post(f"/customers/{C}/topup", data=data, headers=HX)


def test_a_topup_expiring_in_30_days_counts_from_the_day_the_form_was_shown(client, shop, clock):
    signed_in(client, "finance")
    shown = clock[0].date()
    data = {"expiry": "30", "opened_on": shown.isoformat(), "idempotency_key": "dash-t30"}
    assert topup(client, **data).status_code == 200
    made = last_grant()
    assert made.expires_at == datetime.combine(shown + timedelta(days=30), datetime.min.time(), UTC)
    clock[0] += timedelta(days=1)  # sent again the next day: the same topup
    again = topup(client, **data)
    assert "Already topped up" in again.get_data(as_text=True)
    assert last_grant().id == made.id


def test_a_topup_on_a_date_and_its_more_terms(client, shop, clock):
    signed_in(client, "finance")
    today = clock[0].date()
    response = topup(
        client,
        amount="7",
        expiry="date",
        expires_at=(today + timedelta(days=100)).isoformat(),
        priority="50",
        effective_at=(today + timedelta(days=2)).isoformat(),
        unit_price="0.012",
        currency="eur",
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    made = last_grant()
    midnight = datetime.combine(today, datetime.min.time(), UTC)
    assert made.expires_at == midnight + timedelta(days=100)
    assert made.effective_at == midnight + timedelta(days=2)
    assert (made.priority, made.unit_price, made.currency) == (50, "0.012", "EUR")
    assert made.status_at(utcnow()) == "scheduled"
    html = response.get_data(as_text=True)
    assert "+ 11.00 credits scheduled" in html  # the wallet panel, swapped out of band


@pytest.mark.parametrize(
    ("fields", "field_id", "message"),
    [
        ({"priority": "soon"}, "topup-priority", "whole number"),
        ({"priority": "-1"}, "topup-priority", "between 0 and"),
        ({"unit_price": "0.01"}, "topup-currency", "together"),
        ({"unit_price": "0.01", "currency": "EURO"}, "topup-currency", ""),
        (
            {"unit_price": "1", "currency": "USD", "kind": "granted"},
            "topup-unit_price",
            "purchased",
        ),
        ({"expiry": "date"}, "topup-expires_at", "Choose the day"),
        ({"expiry": "date", "expires_at": "2027-02-30"}, "topup-expires_at", "real date"),
        ({"expiry": "date", "expires_at": "31/01/2027"}, "topup-expires_at", "such as"),
        (
            {"expiry": "date", "expires_at": "2020-01-01"},
            "topup-expires_at",
            "after “Effective from”",
        ),
        ({"expiry": "7"}, "topup-expiry", "Choose when"),
        ({"effective_at": "tomorrow"}, "topup-effective_at", "such as"),
    ],
)
def test_bad_topup_terms_are_shown_next_to_their_field_and_write_nothing(
    client, shop, fields, field_id, message
):
    signed_in(client, "finance")
    before = row_counts()
    response = topup(client, **fields)
    html = response.get_data(as_text=True)
    assert response.status_code == 422
    assert message in error_next_to(html, field_id)
    if field_id in {"topup-priority", "topup-effective_at", "topup-unit_price", "topup-currency"}:
        assert '<details class="more" open>' in html  # the error is not hidden
    assert row_counts() == before


def test_the_topup_form_defaults_to_the_customer_s_wallet_and_hides_archived_systems(client, shop):
    catalog.create_credit_system(SYSTEM, key="aaa", name="AAA")  # first alphabetically
    catalog.create_credit_system(SYSTEM, key="old", name="Old")
    catalog.set_credit_system_archived(SYSTEM, "old", True)
    signed_in(client, "finance")
    html = client.get(f"/customers/{C}").get_data(as_text=True)
    form = html[
        html.index('id="topup-form"') : html.index("</form>", html.index('id="topup-form"'))
    ]
    assert re.search(r'<option selected value="credits">|<option value="credits" selected', form)
    assert 'value="aaa"' in form and 'value="old"' not in form
    assert '<details class="more">' in form and 'name="topup-priority"' in form


def test_a_topup_to_an_archived_credit_system_is_refused(client, shop):
    catalog.create_credit_system(SYSTEM, key="old", name="Old")
    catalog.set_credit_system_archived(SYSTEM, "old", True)
    signed_in(client, "finance")
    response = topup(client, credit_system="old")
    assert response.status_code == 422
    assert "archived" in error_next_to(response.get_data(as_text=True), "topup-credit_system")


# ---------------------------------------------------------------- adjust form


def test_the_same_adjust_form_sent_twice_adjusts_once(client, shop):
    signed_in(client, "finance")
    page = client.get(f"/customers/{C}").get_data(as_text=True)
    key = re.search(r'name="adjust-idempotency_key" type="hidden" value="([^"]+)"', page)
    assert key, "the adjust form carries an idempotency key"
    data = {
        "adjust-credit_system": "credits",
        "adjust-amount": "-1.5",
        "adjust-reason": "goodwill correction",
        "adjust-idempotency_key": key.group(1),
    }
    first = client.post(f"/customers/{C}/adjust", data=data)  # without JS: a 303
    second = client.post(f"/customers/{C}/adjust", data=data, headers=HX)  # a reload / retry
    assert first.status_code == 303 and second.status_code == 200
    assert "Already adjusted" in second.get_data(as_text=True)
    assert entries("adjustment") == 1
    (wallet,) = reads.customer_summary(SYSTEM, C).wallets
    assert wallet.balance_micros == 13_500_000


def test_an_adjust_key_reused_for_other_content_is_refused(client, shop):
    signed_in(client, "finance")
    data = {
        "adjust-credit_system": "credits",
        "adjust-amount": "1",
        "adjust-reason": "a",
        "adjust-idempotency_key": "dash-a1",
    }
    assert client.post(f"/customers/{C}/adjust", data=data, headers=HX).status_code == 200
    other = client.post(f"/customers/{C}/adjust", data={**data, "adjust-amount": "2"}, headers=HX)
    assert other.status_code == 422
    assert "already sent with other values" in other.get_data(as_text=True)
    assert entries("adjustment") == 1


# ---------------------------------------------------------------- ledger rows and grant page


def test_a_usage_row_expands_to_the_grants_that_paid(client, shop):
    result = usage.record_usage(SYSTEM, customer_key=C, feature_key="api_calls", amount=300)
    entry_id = db.session.scalar(
        select(LedgerEntry.id).where(LedgerEntry.type == "usage").order_by(LedgerEntry.id.desc())
    )
    assert result.credits_micros == 6_000_000
    signed_in(client, "account_manager")
    url = f"/customers/{C}/ledger/{entry_id}"
    for page in (f"/customers/{C}", f"/customers/{C}/ledger"):
        assert f'href="{url}" hx-get="{url}"' in client.get(page).get_data(as_text=True)
    fragment = client.get(url, headers=HX).get_data(as_text=True)  # hx-target="this": no id
    assert fragment.lstrip().startswith(
        '<span class="nowrap">usage</span>\n<ul class="paid-by-list'
    )
    assert re.search(r"grant #2</a> <span class=\"num\">5.00<", fragment)
    assert re.search(r"grant #1</a> <span class=\"num\">1.00<", fragment)
    plain = client.get(url).get_data(as_text=True)
    assert "<!doctype" in plain and "Paid by" in plain and f"/customers/{C}/grants/2" in plain
    assert client.get(f"/customers/{C}/ledger/999999").status_code == 404


def test_the_all_customers_ledger_expands_usage_rows_too(client, shop):
    usage.record_usage(SYSTEM, customer_key=C, feature_key="api_calls", amount=10)
    signed_in(client, "finance")
    html = client.get("/ledger?type=usage").get_data(as_text=True)
    assert f'hx-get="/customers/{C}/ledger/' in html and 'title="Which grants paid for it"' in html


def test_expiry_and_void_entries_read_as_people_say_them(client, shop, clock):
    wallets.void_grant(SYSTEM, grant_id=1, reason="refund of unused credits")
    clock[0] += timedelta(days=31)
    credits.expire_due()
    signed_in(client, "finance")
    html = client.get(f"/customers/{C}/ledger").get_data(as_text=True)
    assert (
        f'Expired:</span> <span class="nowrap"><a href="/customers/{C}/grants/2">grant #2</a>'
        in html
    )
    assert 'Voided:</span> <span class="void-reason">refund of unused credits</span>' in html


def test_the_grant_page_lists_what_it_paid_for_in_pages(client, shop):
    for i in range(55):
        usage.record_usage(
            SYSTEM, customer_key=C, feature_key="api_calls", amount=1, event_id=f"e-{i:02d}"
        )
    signed_in(client, "account_manager")
    first = client.get(f"/customers/{C}/grants/2")
    html = first.get_data(as_text=True)
    assert first.status_code == 200 and "Grant #2" in html and "granted" in html
    assert html.count('<td class="num">0.02</td>') == 50 and "e-54" in html
    older = re.search(r'href="([^"]+cursor=[^"]+)" rel="next"', html)
    assert older
    rest = client.get(older.group(1).replace("&amp;", "&")).get_data(as_text=True)
    assert rest.count('<td class="num">0.02</td>') == 5 and "e-00" in rest
    assert client.get("/customers/cust-6d11ca90/grants/0").status_code == 404
