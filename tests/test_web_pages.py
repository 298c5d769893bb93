"""The read-only pages: numbers, search, sort, pages, fragments, constant queries, CSV streams."""

from __future__ import annotations

import csv
import io
from datetime import timedelta

import pytest

from tests.factories import add_customer, make_catalog
from tests.web import count_queries, signed_in
from webapp.models import utcnow
from webapp.services import dashboard, usage, wallets
from webapp.services.actors import SYSTEM

C = "cust-6d11ca90"


@pytest.fixture
def shop(app):
    make_catalog()
    add_customer("cust-acme", topup="3")
    add_customer("cust-globex", topup=None)
    usage.record_usage(SYSTEM, customer_key=C, feature_key="seats", amount=3)
    usage.record_usage(SYSTEM, customer_key="cust-acme", feature_key="seats", amount=5)
    usage.record_usage(SYSTEM, customer_key=C, feature_key="api_calls", amount=4)
    # Last month's usage: not in this period's counter.
    usage.record_usage(
        SYSTEM,
        customer_key="cust-acme",
        feature_key="api_calls",
        amount=7,
        timestamp=(utcnow().replace(day=1) - timedelta(days=2)).isoformat(),
    )


def test_overview_counts_seats_credits_and_this_periods_usage(shop):
    stats = dashboard.overview(SYSTEM)
    assert (stats.customers, stats.active_customers) == (3, 3)
    assert stats.seats_used_micros == 8_000_000
    assert stats.seats_allowance_micros == 30_000_000
    (credits,) = stats.credits
    assert credits.balance_micros == 13_000_000 - 80_000 - 140_000
    api = next(u for u in stats.usage if u.key == "api_calls")
    assert api.used_micros == 4_000_000  # last month's 7 are another period


def test_overview_page_shows_the_numbers_and_a_chart(client, shop):
    signed_in(client, "account_manager")
    html = client.get("/").get_data(as_text=True)
    assert ">8<" in html and "of 30 allowed" in html
    assert '<span class="stat-value num">3</span><span class="muted">3 active</span>' in html
    assert "12.78" in html  # credits outstanding, with decimals
    assert "<svg" in html and 'class="bar"' in html


def test_daily_usage_has_thirty_days_and_sums_per_day(shop):
    series = {s.feature_key: s for s in dashboard.daily_usage(SYSTEM)}
    assert len(series["api_calls"].days) == 30
    assert series["api_calls"].days[-1] == (utcnow().date(), 4_000_000)
    mine = {s.feature_key: s for s in dashboard.daily_usage(SYSTEM, customer_key="cust-acme")}
    assert mine["api_calls"].days[-1][1] == 0


def test_customers_search_sort_and_htmx_fragment(client, shop):
    signed_in(client, "account_manager")
    page = client.get("/customers?q=ACME").get_data(as_text=True)
    assert "cust-acme" in page and "cust-globex" not in page and "<!doctype" in page
    fragment = client.get(
        "/customers?q=globex", headers={"HX-Request": "true", "HX-Target": "results"}
    )
    html = fragment.get_data(as_text=True)
    assert "HX-Request" in fragment.headers["Vary"]
    assert html.lstrip().startswith('<section id="results">')
    assert "cust-globex" in html and "cust-acme" not in html
    listing = dashboard.list_customers(SYSTEM, sort="feature:seats", direction="desc")
    assert [r.customer.key for r in listing.rows] == ["cust-acme", C, "cust-globex"]
    assert listing.rows[0].usage["seats"] == (5_000_000, 10_000_000)
    by_credits = dashboard.list_customers(SYSTEM, sort="credits:credits")
    assert [r.customer.key for r in by_credits.rows][0] == "cust-globex"
    one = dashboard.list_customers(SYSTEM, per_page=1, page=2)
    assert (one.total, one.pages, [r.customer.key for r in one.rows]) == (3, 3, ["cust-acme"])


def test_list_pages_run_a_constant_number_of_queries(client, shop):
    signed_in(client, "account_manager")
    urls = ["/", "/customers", "/customers?near=1", f"/customers/{C}", "/wallets", "/features"]
    urls += ["/customers?col=change:api_calls"]
    urls += ["/audit", "/ledger"]
    urls += ["/reports/credits", "/reports/credits?from=2017-01&to=2026-12"]

    def counts() -> list[int]:
        out = []
        for url in urls:
            with count_queries() as statements:
                assert client.get(url).status_code == 200
            out.append(len(statements))
        return out

    before = counts()
    # The customer page is the heaviest: summary, counters, wallets with their available and
    # scheduled credits, their 30-day burn and live grants (runway), current grants and a count
    # of past ones, charts and their period counters, events and their corrections, ledger.
    assert max(before) <= 22, dict(zip(urls, before, strict=True))
    for i in range(12):
        add_customer(f"cust-more-{i:02d}")
        usage.record_usage(SYSTEM, customer_key=C, feature_key="api_calls", amount=1)
        usage.record_usage(
            SYSTEM, customer_key=f"cust-more-{i:02d}", feature_key="api_calls", amount=2
        )
        wallets.topup_wallet(
            SYSTEM, customer_key=f"cust-more-{i:02d}", credit_system="credits", amount="1"
        )
    assert counts() == before


def test_customer_page_shows_every_entitlement(client, shop):
    signed_in(client, "account_manager")
    html = client.get(f"/customers/{C}").get_data(as_text=True)
    assert 'data-testid="used-seats">3<' in html
    assert 'data-testid="used-api_calls">4<' in html
    assert '<progress max="100" value="30"' in html  # 3 of 10 seats
    assert "-01 00:00 UTC" in html  # the monthly consumables' next reset
    assert 'data-testid="balance-credits">9.92<' in html
    assert "included" in html  # the boolean sso entitlement


def test_wallets_lowest_first(client, shop):
    signed_in(client, "account_manager")
    listing = dashboard.lowest_wallets(SYSTEM)
    balances = [r.balance_micros for r in listing.rows]
    assert balances == sorted(balances)
    html = client.get("/wallets").get_data(as_text=True)
    assert html.index("cust-acme") < html.index(C)


def test_audit_filters(client, shop):
    signed_in(client, "account_manager")
    wallets.topup_wallet(SYSTEM, customer_key="cust-acme", credit_system="credits", amount="1")
    page = dashboard.audit_log(SYSTEM, action="wallet.topup", customer_key="cust-acme")
    assert [r.action for r in page.rows] == ["wallet.topup", "wallet.topup"]
    html = client.get("/audit?action=wallet.topup&customer=cust-acme").get_data(as_text=True)
    assert html.count("<code>wallet.topup</code>") == 2
    assert dashboard.audit_log(SYSTEM, actor_label="user:nobody").rows == []
    first = dashboard.audit_log(SYSTEM, per_page=2)
    second = dashboard.audit_log(SYSTEM, per_page=2, before=first.next_before)
    assert first.rows[-1].id > second.rows[0].id


def test_csv_exports_stream_every_row_in_keyset_pages(client, shop):
    signed_in(client, "account_manager")
    events = [{"customer_key": C, "feature_key": "api_calls", "amount": "0.5"}] * 450
    usage.record_usage_batch(SYSTEM, events[:300])
    usage.record_usage_batch(SYSTEM, events[300:])
    response = client.get(f"/customers/{C}/events.csv")
    assert response.is_streamed
    assert response.mimetype == "text/csv"
    assert 'filename="cust-6d11ca90-events.csv"' in response.headers["Content-Disposition"]
    with count_queries() as statements:
        rows = list(csv.reader(io.StringIO(response.get_data(as_text=True))))
    assert rows[0][:4] == ["id", "event_id", "customer_key", "feature_key"]
    assert len(rows) == 1 + 452
    assert len({r[0] for r in rows[1:]}) == 452
    assert len(statements) >= 3  # pages of 200, read while streaming
    assert rows[1][5] == "0.5" and rows[1][7] == "0.01"
    ledger = client.get(f"/customers/{C}/ledger.csv").get_data(as_text=True)
    lines = list(csv.reader(io.StringIO(ledger)))
    assert len(lines) == 1 + 1 + 1 + 450  # header, topup, 4 api calls, 450 halves


def test_unknown_customer_is_a_404_page(client, shop):
    signed_in(client, "account_manager")
    for url in ("/customers/nope", "/customers/nope/events.csv"):
        response = client.get(url)
        assert response.status_code == 404
        assert b"No customer with key" in response.data


def test_credits_always_show_their_decimals():
    from webapp.web.filters import credits, qty

    assert credits(12_500_000) == "12.50"
    assert credits(80_000) == "0.08"
    assert credits(1) == "0.000001"
    assert credits(1_234_000_000) == "1,234.00"
    assert credits(-1_500_000) == "-1.50"
    assert qty(2_000_000) == "2" and qty(500_000) == "0.5" and qty(None) == "∞"


def test_a_wallets_last_change_is_its_last_ledger_entry_even_after_the_demo_seed(client):
    from sqlalchemy import func, select

    from webapp.extensions import db
    from webapp.models import LedgerEntry, Wallet
    from webapp.services import demo

    demo.seed(4, 400, rng_seed=7)
    last = dict(
        db.session.execute(
            select(LedgerEntry.wallet_id, func.max(LedgerEntry.created_at)).group_by(
                LedgerEntry.wallet_id
            )
        ).all()
    )
    wallets_ = db.session.scalars(select(Wallet)).all()
    assert wallets_ and all(w.updated_at == last[w.id] for w in wallets_ if w.id in last)


def test_the_ledger_across_customers_filters_pages_and_exports(client, shop):
    signed_in(client, "finance")
    wallets.topup_wallet(
        SYSTEM, customer_key="cust-acme", credit_system="credits", amount="2", note="=HYPERLINK(1)"
    )
    html = client.get("/ledger").get_data(as_text=True)
    assert "cust-acme" in html and C in html and 'aria-current="page">Ledger<' in html
    topups = client.get("/ledger?type=topup").get_data(as_text=True)
    assert topups.count('data-type="topup"') == 3  # C, acme twice; no usage rows
    assert 'data-type="usage"' not in topups
    today = utcnow().date().isoformat()
    assert "cust-acme" in client.get(f"/ledger?since={today}&until={today}").get_data(as_text=True)
    tomorrow = (utcnow().date() + timedelta(days=1)).isoformat()
    empty = client.get(f"/ledger?since={tomorrow}").get_data(as_text=True)
    assert "No ledger entries match these filters." in empty
    assert "cust-acme" not in client.get("/ledger?actor=user:nobody").get_data(as_text=True)
    assert "cust-acme" in client.get("/ledger?actor=system:cli").get_data(as_text=True)
    bad = client.get("/ledger?since=26/11/2026")
    assert bad.status_code == 422 and b"must be a date such as 2026-11-26" in bad.data
    assert client.get("/ledger?type=refund").status_code == 422
    # Keyset pages: 60 entries, 50 on the first page, the rest behind "Older".
    for _ in range(55):
        wallets.topup_wallet(
            SYSTEM, customer_key="cust-globex", credit_system="credits", amount="1"
        )
    first = client.get("/ledger?type=topup").get_data(as_text=True)
    assert first.count('data-type="topup"') == 50
    older = first.split('class="pager"><a href="')[1].split('"')[0].replace("&amp;", "&")
    assert "type=topup" in older
    second = client.get(older).get_data(as_text=True)
    assert second.count('data-type="topup"') == 58 - 50
    # The CSV: every row that matches (in pages while streaming), formulas neutralised.
    response = client.get("/ledger.csv?type=topup")
    assert response.is_streamed and response.mimetype == "text/csv"
    rows = list(csv.reader(io.StringIO(response.get_data(as_text=True))))
    assert rows[0][:3] == ["id", "credit_system", "type"] and rows[0][-1] == "customer_key"
    assert len(rows) == 1 + 58 and {r[2] for r in rows[1:]} == {"topup"}
    assert {r[-1] for r in rows[1:]} == {C, "cust-acme", "cust-globex"}
    assert "'=HYPERLINK(1)" in [r[7] for r in rows[1:]]


def test_the_ledger_across_customers_is_not_for_support(client, shop):
    signed_in(client, "support")
    assert client.get("/ledger").status_code == 403
    assert client.get("/ledger.csv").status_code == 403
    assert b">Ledger<" not in client.get("/").data


def test_customers_filter_by_status(client, shop):
    from webapp.services import catalog

    catalog.set_customer_status(SYSTEM, "cust-globex", "archived")
    signed_in(client, "account_manager")
    active = client.get("/customers?status=active").get_data(as_text=True)
    assert "cust-acme" in active and "cust-globex" not in active and "2 active customers" in active
    archived = client.get("/customers?status=archived").get_data(as_text=True)
    assert "cust-globex" in archived and "cust-acme" not in archived
    assert "1 archived customer<" in archived
    every = client.get("/customers").get_data(as_text=True)
    assert "cust-globex" in every and "cust-acme" in every and "3 customers" in every
    # Sorting and pages keep the filter.
    assert "status=archived" in archived.split("<thead>")[1].split("</thead>")[0]
    assert client.get("/customers?status=gone").status_code == 422


def test_customers_csv_is_the_list_on_screen_every_page_streamed(client, shop):
    from webapp.services import catalog

    for i in range(230):
        add_customer(f"cust-bulk-{i:03d}", topup=None)
    catalog.set_customer_status(SYSTEM, "cust-bulk-007", "archived")
    catalog.update_customer(SYSTEM, "cust-acme", name="=cmd|' /C calc'!A0")
    signed_in(client, "account_manager")
    response = client.get(
        "/customers.csv?status=active&sort=credits:credits&dir=desc&col=feature:seats&col=credits:credits"
    )
    assert response.is_streamed and response.mimetype == "text/csv"
    assert 'filename="customers.csv"' in response.headers["Content-Disposition"]
    with count_queries() as statements:
        rows = list(csv.reader(io.StringIO(response.get_data(as_text=True))))
    assert rows[0] == [
        "key",
        "name",
        "email",
        "status",
        "created_at",
        "Seats used",
        "Seats allowed",
        "Credits balance",
    ]
    keys = [r[0] for r in rows[1:]]
    assert len(keys) == 3 + 230 - 1 == len(set(keys))  # every page, no archived customer
    assert "cust-bulk-007" not in keys
    assert keys[0] == C  # the largest balance first, as sorted on screen
    assert rows[1][5:] == ["3", "10", "9.92"]
    acme = next(r for r in rows if r[0] == "cust-acme")
    assert acme[1].startswith("'=")  # a formula in a name is text in a spreadsheet
    assert len(statements) >= 3 * 2  # pages of 100, read while streaming
    search = client.get("/customers.csv?q=acme").get_data(as_text=True)
    assert [r[0] for r in csv.reader(io.StringIO(search))][1:] == ["cust-acme"]
    page = client.get("/customers?status=active&q=acme").get_data(as_text=True)
    assert "/customers.csv?q=acme&amp;status=active" in page


def test_customers_show_the_share_of_allowance_used_and_filter_near_a_limit(client, shop):
    # C: seats 3 of 10, API calls 4 of 1000 -> 30 %; acme: seats 8 of 10 -> 80 % (near);
    # globex: API calls 799 of 1000 -> 79 % (not near); an unlimited allowance counts for none.
    usage.record_usage(SYSTEM, customer_key="cust-acme", feature_key="seats", amount=3)
    wallets.topup_wallet(SYSTEM, customer_key="cust-globex", credit_system="credits", amount="20")
    usage.record_usage(SYSTEM, customer_key="cust-globex", feature_key="api_calls", amount=799)
    add_customer("cust-unlimited", api_allowance=None, seat_allowance=None, topup="1")
    usage.record_usage(SYSTEM, customer_key="cust-unlimited", feature_key="api_calls", amount=9)
    percents = {
        r.customer.key: r.percent for r in dashboard.list_customers(SYSTEM, per_page=100).rows
    }
    assert percents == {C: 30, "cust-acme": 80, "cust-globex": 79, "cust-unlimited": 0}
    near = dashboard.list_customers(SYSTEM, near_limit=True)
    assert [r.customer.key for r in near.rows] == ["cust-acme"] and near.total == 1

    signed_in(client, "account_manager")
    html = client.get("/customers").get_data(as_text=True)
    assert "% of allowance</th>" in html  # a default column
    assert '<span class="percent near-limit">80 %</span>' in html
    assert '<span class="percent">79 %</span>' in html
    filtered = client.get("/customers?near=1&sort=name").get_data(as_text=True)
    assert "cust-acme" in filtered and "cust-globex" not in filtered and C not in filtered
    assert "1 customer near a limit" in filtered
    # Sorting, pages, columns and the CSV keep the filter.
    assert "near=1" in filtered.split("<thead>")[1].split("</thead>")[0]
    assert 'name="near" value="1"' in filtered.split('class="columns"')[1]
    rows = list(csv.reader(io.StringIO(client.get("/customers.csv?near=1").get_data(as_text=True))))
    assert rows[0][5] == "% of allowance" and [r[0] for r in rows[1:]] == ["cust-acme"]
    assert rows[1][5] == "80"
    # The column can be left out with the picker.
    without = client.get("/customers?col=credits:credits").get_data(as_text=True)
    assert "% of allowance</th>" not in without and "near-limit" not in without
