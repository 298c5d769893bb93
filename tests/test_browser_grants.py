"""Credit grants in headless Chromium: voiding a grant through its confirmation (HTMX, and
without JavaScript), the top-up form's "more" terms, and the customer page at desktop and
phone widths (screenshots in tests/artifacts/)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from tests.factories import make_catalog
from tests.test_browser_dashboard import (  # noqa: F401 (browser is a fixture)
    C,
    _console,
    _mark_page,
    _not_reloaded,
    _shot,
    browser,
    serve,
)
from tests.web import PASSWORD, make_user
from webapp.models import utcnow
from webapp.services import usage, wallets
from webapp.services.actors import SYSTEM

pytestmark = pytest.mark.browser


def _seed() -> None:
    """Grant 1: 10 purchased (make_catalog); grant 2: 5 granted, expiring in 30 days, half
    spent; grant 3: 4 purchased from in 3 days; grant 4: 1 granted, voided (a past grant)."""
    make_catalog()
    now = utcnow()
    wallets.topup_wallet(
        SYSTEM,
        customer_key=C,
        credit_system="credits",
        amount="5",
        kind="granted",
        reference="PROMO-30",
        expires_at=(now + timedelta(days=30)).isoformat(),
    )
    wallets.topup_wallet(
        SYSTEM,
        customer_key=C,
        credit_system="credits",
        amount="4",
        reference="INV-2042",
        effective_at=(now + timedelta(days=3)).isoformat(),
    )
    wallets.topup_wallet(SYSTEM, customer_key=C, credit_system="credits", amount="1")
    wallets.void_grant(SYSTEM, grant_id=4, reason="sent twice by mistake")
    usage.record_usage(SYSTEM, customer_key=C, feature_key="api_calls", amount=125)
    usage.record_usage(SYSTEM, customer_key=C, feature_key="seats", amount=3)
    for role in ("account_manager", "support", "finance", "admin"):
        make_user(role)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    yield from serve(tmp_path, _seed)


@pytest.fixture
def open_as(browser, server):  # noqa: F811
    contexts = []
    violations: list[str] = []

    def open_(role: str, *, width: int = 1440, height: int = 900, js: bool = True):
        context = browser.new_context(
            viewport={"width": width, "height": height}, java_script_enabled=js
        )
        contexts.append(context)
        page = context.new_page()
        page.on("console", lambda msg: _console(msg, violations))
        page.goto(f"{server}/login")
        page.fill("#email", f"{role.replace('_', '-')}@example.com")
        page.fill("#password", PASSWORD)
        page.click("button.primary")
        page.wait_for_url(f"{server}/")
        page.goto(f"{server}/customers/{C}")
        return page

    yield open_
    for context in contexts:
        context.close()
    assert not violations, violations


def test_finance_voids_a_grant_after_confirming_the_amount(open_as):
    from playwright.sync_api import expect

    page = open_as("finance")
    available = page.locator('[data-testid="available-credits"]')
    expect(available).to_have_text("12.50")  # 10 + 5 - 2.5 spent
    _mark_page(page)
    grant = page.locator("#grant-1")
    grant.locator("summary").click()
    grant.locator('input[name="void-1-reason"]').fill("refund of unused credits")
    grant.locator("button.danger").click()
    confirm = page.locator("#grant-1 .confirm-large")
    expect(confirm).to_contain_text("This takes 10.00 credits out of the wallet")
    expect(confirm).to_contain_text("available balance will be 2.50")
    expect(available).to_have_text("12.50")  # nothing yet
    folder = _shot(page, "finance-void-confirm", full_page=False).parent
    page.locator("#grant-1").screenshot(path=str(folder / "void-confirm-grant.png"))
    page.locator("#grant-1 .confirm-large input[type=checkbox]").check()
    page.locator("#grant-1 button.danger").click()
    expect(page.locator("#wallets .success")).to_contain_text("Voided grant #1: 10.00 credits")
    expect(available).to_have_text("2.50")
    expect(page.locator("#ledger")).to_contain_text("Voided: refund of unused credits")
    expect(page.locator("#grant-1")).to_have_count(0)  # a past grant now, behind the toggle
    assert _not_reloaded(page)


def test_a_void_works_without_javascript(open_as):
    from playwright.sync_api import expect

    page = open_as("admin", js=False)
    grant = page.locator("#grant-3")
    grant.locator("summary").click()
    grant.locator('input[name="void-3-reason"]').fill("order cancelled")
    grant.locator("button.danger").click()
    expect(page.locator("#grant-3 .confirm-large")).to_contain_text("This takes 4.00 credits")
    page.locator("#grant-3 .confirm-large input[type=checkbox]").check()
    page.locator("#grant-3 button.danger").click()
    expect(page.locator(".flash-area")).to_contain_text("Voided grant #3")
    expect(page.locator("#wallets")).not_to_contain_text("scheduled")


def test_the_topup_form_s_more_terms_make_a_scheduled_priced_grant(open_as):
    from playwright.sync_api import expect

    page = open_as("finance")
    form = page.locator("#topup-form")
    expect(form.locator("#topup-priority")).not_to_be_visible()  # folded under "more"
    form.locator("#topup-amount").fill("8")
    form.locator("#topup-expiry").select_option("90")
    form.locator("details.more summary").click()
    start = (utcnow() + timedelta(days=5)).date().isoformat()
    form.locator("#topup-priority").fill("7")
    form.locator("#topup-effective_at").fill(start)
    form.locator("#topup-unit_price").fill("0.015")
    form.locator("#topup-currency").fill("usd")
    form.locator("button.primary").click()
    expect(page.locator("#topup-form .success")).to_contain_text("Added 8.00 credits")
    expect(page.locator('[data-testid="scheduled-credits"]')).to_contain_text("12.00")
    new = page.locator("#wallets li.grant", has_text="priority 7")
    expect(new).to_contain_text("scheduled")
    expect(new).to_contain_text(f"from {start}")
    expect(new).to_contain_text("expires in 95 days")
    # A bad term opens "more" again with the error next to its field.
    form = page.locator("#topup-form")
    form.locator("#topup-amount").fill("1")
    form.locator("details.more summary").click()
    form.locator("#topup-currency").fill("")
    form.locator("#topup-unit_price").fill("0.01")
    form.locator("button.primary").click()
    expect(page.locator("#topup-currency-error")).to_contain_text("together")
    expect(page.locator("#topup-form details.more")).to_have_attribute("open", "")


@pytest.mark.parametrize("width", [1440, 390])
def test_the_customer_page_with_grants_fits_its_width(open_as, width):
    page = open_as("finance", width=width, height=900)
    page.locator("#wallets a.toggle").click()  # past grants too
    page.wait_for_selector("#grant-4")
    page.locator("#grant-2 summary").click()  # one void form open
    page.locator("#topup-form details.more summary").click()
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, f"{overflow}px wider than the {width}px screen"
    _shot(page, f"customer-grants-{width}")
    folder = _shot(page, f"customer-grants-{width}").parent
    for part in ("wallets", "topup-form", "ledger"):
        page.locator(f"#{part}").screenshot(path=str(folder / f"{part}-{width}.png"))


def test_a_usage_row_expands_in_place_to_the_grants_that_paid(open_as):
    from playwright.sync_api import expect

    page = open_as("account_manager")
    _mark_page(page)
    page.locator("#ledger a.paid-by").first.click()
    paid = page.locator("#ledger ul.paid-by-list").first
    expect(paid).to_contain_text("grant #2")
    expect(paid).to_contain_text("2.50")
    assert _not_reloaded(page)
    paid.locator("a").first.click()  # the grant's own page
    expect(page.locator("h1")).to_contain_text("Grant #2")
    expect(page.locator("main")).to_contain_text("PROMO-30")
