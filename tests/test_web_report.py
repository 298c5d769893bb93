"""The dashboard's finance roll-forward (/reports/credits): who sees it, the month range and
credit system filter, errors next to their box, the CSV (exact, formula-safe)."""

from __future__ import annotations

import csv
import io

import pytest

from tests.factories import make_catalog
from tests.web import signed_in
from webapp.models import utcnow
from webapp.services import usage, wallets
from webapp.services.actors import SYSTEM

C = "cust-6d11ca90"


@pytest.fixture
def history(app):
    make_catalog()
    wallets.topup_wallet(
        SYSTEM,
        customer_key=C,
        credit_system="credits",
        amount="100",
        unit_price="0.25",
        currency="USD",
        priority=10,
        reference='=HYPERLINK("http://evil.example","x")',
    )
    usage.record_usage(SYSTEM, customer_key=C, feature_key="api_calls", amount=500)  # 10 credits
    wallets.adjust_wallet(
        SYSTEM, customer_key=C, credit_system="credits", amount="-4", reason="@SUM(1+1)"
    )


@pytest.mark.parametrize("role", ["finance", "admin", "account_manager"])
def test_the_report_page_for_the_roles_that_may_see_it(client, history, role):
    signed_in(client, role)
    this = f"{utcnow():%Y-%m}"
    page = client.get("/reports/credits").get_data(as_text=True)
    assert "Credit roll-forward" in page and 'href="/reports/credits"' in page  # the nav link
    assert f'value="{this}"' in page  # the range shown: the last 12 months
    assert "110.00" in page and "96.00" in page  # issued (the catalog's 10 + 100), closing
    assert "Recognised" in page and "2.50" in page  # 10 credits at 0.25 USD
    assert "-1.00" in page  # the adjustment's -4 credits at 0.25 USD


def test_support_does_not_see_the_report(client, history):
    signed_in(client, "support")
    assert client.get("/reports/credits").status_code == 403
    assert client.get("/reports/credits.csv").status_code == 403
    assert 'href="/reports/credits"' not in client.get("/").get_data(as_text=True)


@pytest.mark.parametrize(
    ("query", "box", "message"),
    [
        ("from=2026-13", "from", "YYYY-MM"),
        ("from=2026-05&to=2026-04", "from", "must not be after"),
        ("to=2026-1", "to", "YYYY-MM"),
        ("from=2001-01&to=2026-01", "from", "at most 120 months"),
        ("system=gold", "system", "No credit system"),
    ],
)
def test_a_bad_filter_is_named_next_to_its_box(client, history, query, box, message):
    signed_in(client, "finance")
    response = client.get(f"/reports/credits?{query}")
    assert response.status_code == 422
    page = response.get_data(as_text=True)
    assert f'<p class="error" id="{box}-error">' in page and message in page
    assert "Download CSV" not in page


def test_the_csv_is_exact_and_cannot_run_a_formula(client, history):
    signed_in(client, "finance")
    this = f"{utcnow():%Y-%m}"
    response = client.get(f"/reports/credits.csv?from={this}&to={this}&system=credits")
    assert response.status_code == 200
    assert response.headers["Content-Disposition"] == (
        f'attachment; filename="credits-{this}-{this}.csv"'
    )
    rows = list(csv.reader(io.StringIO(response.get_data(as_text=True))))
    header = rows[0]
    assert header[:4] == ["credit_system", "month", "unit", "opening"]
    by = {(r[1], r[2]): dict(zip(header, r, strict=True)) for r in rows[1:]}
    credits = by[(this, "credits")]
    assert (credits["issued_purchased"], credits["consumed"], credits["adjusted"]) == (
        "110",
        "10",
        "-4",
    )
    assert credits["closing"] == "96"
    usd = by[(this, "USD")]
    assert (usd["issued"], usd["consumed"], usd["adjusted"], usd["closing"]) == (
        "25.00",
        "2.50",
        "-1.00",
        "21.50",
    )
    assert usd["issued_purchased"] == ""  # the split is for credits only
    assert (f"{this}..{this}", "credits") in by  # the range's total
    assert not any(cell.startswith(("=", "+", "@")) for row in rows for cell in row)
