"""The customer list's "this month vs last month" column: each consumable feature's usage this
UTC month so far against last month up to the same point, one grouped query per page, on screen
when chosen in the column picker (kept in the URL) and in the CSV export."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta

import pytest

from tests.factories import add_customer, make_catalog
from tests.web import count_queries, signed_in
from webapp.models import utcnow
from webapp.services import catalog, dashboard, usage
from webapp.services.actors import SYSTEM
from webapp.services.dashboard.customers import MonthChange, month_bounds
from webapp.services.periods import period_start

C = "cust-6d11ca90"


def _record(customer: str, feature: str, amount: object, at: datetime) -> None:
    usage.record_usage(
        SYSTEM, customer_key=customer, feature_key=feature, amount=amount, timestamp=at.isoformat()
    )


def test_month_bounds_compare_with_the_same_point_of_last_month():
    now = datetime(2026, 3, 31, 12, 0, tzinfo=UTC)
    last, cut, this, following = month_bounds(now)
    assert (last, this, following) == (
        datetime(2026, 2, 1, tzinfo=UTC),
        datetime(2026, 3, 1, tzinfo=UTC),
        datetime(2026, 4, 1, tzinfo=UTC),
    )
    assert cut == this  # February is shorter: all of it
    assert month_bounds(datetime(2026, 1, 15, 6, tzinfo=UTC))[:2] == (
        datetime(2025, 12, 1, tzinfo=UTC),
        datetime(2025, 12, 15, 6, tzinfo=UTC),
    )


@pytest.mark.parametrize(
    ("this", "before", "percent", "trend"),
    [
        (6, 4, 50, "up"),
        (2, 3, -33, "down"),
        (1, 3, -67, "down"),  # -66.67 % rounds away from zero
        (5, 5, 0, "flat"),
        (3, 0, None, "new"),
        (0, 0, None, "none"),
        (0, 7, -100, "down"),
    ],
)
def test_the_change_is_a_whole_percent_of_last_month_to_date(this, before, percent, trend):
    change = MonthChange(this * 10**6, before * 10**6, before * 10**6)
    assert (change.change_percent, change.trend) == (percent, trend)


@pytest.fixture
def months(app):
    """``now`` in the middle of last (real) month, so that every event is in the past: this
    month (in the listing's eyes) has 5 + 1 API calls, the month before 4 by the same point
    and 6 after it."""
    make_catalog()
    add_customer("cust-acme")
    add_customer("cust-quiet")
    real_month = period_start(utcnow(), "month")
    now = (real_month - timedelta(days=1)).replace(day=15, hour=12)
    this = period_start(now, "month")
    before = period_start(this - timedelta(days=1), "month")
    _record(C, "api_calls", 4, before + timedelta(days=2))
    _record(C, "api_calls", 6, before + timedelta(days=20))
    _record(C, "api_calls", 5, this + timedelta(days=1))
    _record(C, "api_calls", 1, this + timedelta(days=14, hours=10))
    _record(C, "seats", 2, this + timedelta(days=1))  # persistent: not a month's usage
    _record("cust-acme", "candidates", 3, this + timedelta(days=3))
    return now


def test_each_row_has_its_consumables_this_month_against_last(months):
    listing = dashboard.list_customers(SYSTEM, compare_months=True, now=months)
    rows = {r.customer.key: r for r in listing.rows}
    assert rows[C].months == {"api_calls": MonthChange(6_000_000, 4_000_000, 10_000_000)}
    assert rows[C].months["api_calls"].change_percent == 50
    assert rows["cust-acme"].months["candidates"].trend == "new"
    assert rows["cust-quiet"].months == {}
    assert dashboard.list_customers(SYSTEM, now=months).rows[0].months == {}  # not asked


def test_the_month_column_is_one_grouped_query_whatever_the_page(months):
    def queries() -> int:
        with count_queries() as statements:
            dashboard.list_customers(SYSTEM, compare_months=True, now=months)
        return len(statements)

    before = queries()
    for i in range(6):
        add_customer(f"cust-more-{i}")
        _record(f"cust-more-{i}", "api_calls", 1, months - timedelta(days=3))
    assert queries() == before
    with count_queries() as statements:
        dashboard.list_customers(SYSTEM, now=months)
    assert len(statements) == before - 1


@pytest.fixture
def this_month(app):
    """Real time: 4 API calls at the start of last month, 6 now (+50 %)."""
    make_catalog()
    last, _, _, _ = month_bounds(utcnow())
    _record(C, "api_calls", 4, last)
    _record(C, "api_calls", 6, utcnow())


def test_the_column_is_chosen_in_the_picker_and_shows_the_change(client, this_month):
    signed_in(client, "account_manager")
    plain = client.get("/customers").get_data(as_text=True)
    assert "month vs last" in plain  # offered in the picker
    assert 'data-testid="change-api_calls"' not in plain  # not shown by default
    html = client.get("/customers?col=change:api_calls&col=credits:credits").get_data(as_text=True)
    assert "API calls, month vs last</th>" in html
    cell = html.split('data-testid="change-api_calls">', 1)[1].split("</td>", 1)[0]
    assert ">6 <" in cell and "+50 %" in cell and 'class="change up"' in cell
    assert 'name="col" value="change:api_calls" checked' in html  # the picker keeps it


def test_the_csv_export_has_the_month_columns_when_chosen(client, this_month):
    signed_in(client, "account_manager")
    text = client.get("/customers.csv?col=change:api_calls").get_data(as_text=True)
    header, row = list(csv.reader(io.StringIO(text)))[:2]
    assert header[5:] == [
        "API calls this month",
        "API calls last month to the same day",
        "API calls last month",
        "API calls change %",
    ]
    assert row[5:] == ["6", "4", "4", "50"]
    plain = client.get("/customers.csv").get_data(as_text=True)
    assert "this month" not in plain.splitlines()[0]


def test_the_customer_list_with_the_month_column_runs_a_constant_number_of_queries(
    client, this_month
):
    signed_in(client, "account_manager")
    url = "/customers?col=change:api_calls&col=change:candidates"

    def queries() -> int:
        with count_queries() as statements:
            assert client.get(url).status_code == 200
        return len(statements)

    before = queries()
    for i in range(8):
        add_customer(f"cust-more-{i}")
        _record(f"cust-more-{i}", "candidates", 2, utcnow())
    assert queries() == before


def test_a_customers_chart_compares_a_monthly_allowance_with_the_month_so_far(app):
    """Issue 13, defect 9: a monthly allowance is compared with what the month used so far
    (the period's counter, so also usage before the window), starting again on the 1st."""
    make_catalog()
    catalog.set_entitlement(SYSTEM, C, "candidates", allowance=40, reset_period="day")
    real_month = period_start(utcnow(), "month")
    now = (real_month - timedelta(days=1)).replace(day=15, hour=12)
    this = period_start(now, "month")
    before = period_start(this - timedelta(days=1), "month")
    _record(C, "api_calls", 3, before + timedelta(days=9))  # before the 30-day window
    _record(C, "api_calls", 2, before + timedelta(days=19))
    _record(C, "api_calls", 5, this + timedelta(days=1))
    _record(C, "api_calls", 1, this + timedelta(days=9))
    _record(C, "candidates", 4, this + timedelta(days=9))
    series = {s.feature_key: s for s in dashboard.daily_usage(SYSTEM, customer_key=C, now=now)}
    api = series["api_calls"]
    assert (api.allowance_micros, api.reset_period) == (1000 * 10**6, "month")
    running = dict(zip([d for d, _ in api.days], api.in_period, strict=True))
    day = before.date()
    assert running[(before + timedelta(days=18)).date()] == 3_000_000
    assert running[(before + timedelta(days=19)).date()] == 5_000_000
    assert running[this.date()] == 0
    assert running[(this + timedelta(days=1)).date()] == 5_000_000
    assert running[now.date()] == 6_000_000
    assert day not in running  # the window starts after it
    daily = series["candidates"]
    assert (daily.allowance_micros, daily.reset_period, daily.in_period) == (
        40 * 10**6,
        "day",
        None,
    )
    assert dashboard.daily_usage(SYSTEM, now=now)[0].in_period is None  # everyone: no allowance


def test_the_chart_draws_the_allowance_and_the_month_so_far(client, this_month):
    signed_in(client, "account_manager")
    html = client.get(f"/customers/{C}").get_data(as_text=True)
    chart = html.split("<strong>API calls</strong>", 1)[1].split("</figure>", 1)[0]
    assert "allowance 1,000 a month" in chart
    assert 'class="allowance"' in chart and 'class="in-period"' in chart
    assert "Used this month so far" in chart  # the table for screen readers


def test_an_htmx_form_keeps_the_charts_range(client, this_month):
    from tests.web import csrf_from

    signed_in(client, "support")
    page = client.get(f"/customers/{C}?days=7").get_data(as_text=True)
    response = client.post(
        f"/customers/{C}/usage",
        data={"csrf_token": csrf_from(page), "usage-feature_key": "api_calls", "usage-amount": "1"},
        headers={
            "HX-Request": "true",
            "X-CSRFToken": csrf_from(page),
            "HX-Current-URL": f"http://localhost/customers/{C}?days=7",
        },
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    assert "Usage per day, last 7 days" in response.get_data(as_text=True)
