"""The finance roll-forward page in headless Chromium: a history over five months (purchased
credits in two currencies, promotions that expire, usage, a void, adjustments), at 1440 and
390 px: nothing leaves the screen, the filters work, the CSV link follows them. Screenshots to
tests/artifacts/ and, with UPDATE_DOCS_SCREENSHOT=1, docs/screenshots/report-credits-*.png."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests import test_browser_dashboard as base
from tests.factories import add_customer, make_catalog
from tests.test_browser_layout import _origin, _overflow
from tests.web import make_user
from webapp.models import set_clock, utcnow
from webapp.services import catalog, credits, usage, wallets
from webapp.services.actors import SYSTEM
from webapp.services.reports import add_months

pytestmark = pytest.mark.browser

browser, page_for = base.browser, base.page_for
C = base.C


def _seed() -> None:
    real = utcnow()
    first = datetime(real.year, real.month, 1, tzinfo=UTC)
    months = [add_months(first.date(), back - 4) for back in range(5)]
    months = [datetime(m.year, m.month, 1, tzinfo=UTC) for m in months]
    set_clock(lambda: months[0].replace(day=2))
    try:
        make_catalog(api_allowance=1_000_000)
        add_customer("cust-acme", topup=None, api_allowance=1_000_000)
        catalog.create_credit_system(SYSTEM, key="tokens", name="Tokens")
        for i, start in enumerate(months):
            day = start.replace(day=3, hour=9)
            set_clock(lambda day=day: day)
            for customer, currency, price in ((C, "EUR", "0.05"), ("cust-acme", "USD", "0.04")):
                wallets.topup_wallet(
                    SYSTEM,
                    customer_key=customer,
                    credit_system="credits",
                    amount=str(400 + 100 * i),
                    unit_price=price,
                    currency=currency,
                    reference=f"INV-{2040 + i}",
                )
                wallets.topup_wallet(
                    SYSTEM,
                    customer_key=customer,
                    credit_system="credits",
                    amount="50",
                    kind="granted",
                    expires_at=(day + timedelta(days=20)).isoformat(),
                    note="Monthly promotion",
                    # acme's is spent after its purchased credits: it expires unused
                    priority=300 if customer == "cust-acme" else None,
                )
            later = day + timedelta(days=10)
            set_clock(lambda later=later: later)
            for customer in (C, "cust-acme"):
                usage.record_usage_batch(
                    SYSTEM,
                    [
                        {"customer_key": customer, "feature_key": "api_calls", "amount": 90 + j}
                        for j in range(100)
                    ],
                )
            end = day + timedelta(days=24)
            set_clock(lambda end=end: end)
            credits.expire_due()
            if i == 2:
                wallets.adjust_wallet(
                    SYSTEM, customer_key=C, credit_system="credits", amount="-25", reason="Goodwill"
                )
                wallets.adjust_wallet(
                    SYSTEM,
                    customer_key="cust-acme",
                    credit_system="credits",
                    amount="15",
                    reason="Outage credit",
                )
            if i == 3:
                grant = wallets.topup_wallet(
                    SYSTEM,
                    customer_key="cust-acme",
                    credit_system="credits",
                    amount="200",
                    unit_price="0.04",
                    currency="USD",
                    reference="INV-MISTAKE",
                ).entry.grant_id
                wallets.void_grant(SYSTEM, grant_id=grant, reason="Invoice cancelled")
        wallets.topup_wallet(SYSTEM, customer_key=C, credit_system="tokens", amount="1000")
    finally:
        set_clock(None)
    for role in ("account_manager", "support", "finance", "admin"):
        make_user(role)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    yield from base.serve(tmp_path, _seed)


def test_the_report_page_fits_filters_and_exports(page_for):
    from playwright.sync_api import expect

    for width, height in ((1440, 900), (390, 844)):
        page = page_for("finance", width=width, height=height)
        page.goto(f"{_origin(page)}/reports/credits")
        expect(page.locator("h1")).to_contain_text("Credit roll-forward")
        expect(page.locator("section.report h2").first).to_contain_text("Credits")
        path = base._shot(page, f"report-credits-{width}")
        assert _overflow(page) == [], width
        if os.environ.get("UPDATE_DOCS_SCREENSHOT"):  # the phone's: its first screens
            docs = base.ROOT / "docs" / "screenshots" / f"report-credits-{width}.png"
            if width < 600:
                page.screenshot(
                    path=str(docs),
                    full_page=True,
                    clip={"x": 0, "y": 0, "width": width, "height": 2400},
                )
            else:
                shutil.copy(path, docs)
    this = f"{utcnow():%Y-%m}"
    page.select_option("#system", "tokens")
    page.fill("#from", this)
    page.get_by_role("button", name="Show").click()
    expect(page.locator("section.report")).to_have_count(1)
    expect(page.locator("section.report h2")).to_contain_text("Tokens")
    href = page.get_by_role("link", name="Download CSV").get_attribute("href")
    assert "system=tokens" in href and f"from={this}" in href
    assert _overflow(page) == []


def test_a_bad_month_is_named_next_to_its_box(page_for):
    from playwright.sync_api import expect

    page = page_for("admin", width=1440, statuses=(422,))
    page.goto(f"{_origin(page)}/reports/credits?from=2026-05&to=2026-04")
    expect(page.locator("#from-error")).to_contain_text("must not be after")
    expect(page.locator("#from")).to_have_attribute("aria-invalid", "true")
