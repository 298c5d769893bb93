"""Plans in headless Chromium: the plan edit's HTMX preview (who changes, who blocks), the
customer's plan picker showing the effect before saving, the /customers plan filter; every page
at 1440 and 390 px without horizontal overflow (screenshots in tests/artifacts/, the chosen ones
committed as docs/screenshots/plans-*.png)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.factories import add_customer, make_catalog
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
from webapp.services import catalog, plans, usage
from webapp.services.actors import SYSTEM

pytestmark = pytest.mark.browser


def _seed() -> None:
    make_catalog()
    for key, name, api, seats, amount in (
        ("starter", "Starter", "1000", 3, "10"),
        ("growth", "Growth", "50000", 20, "100"),
    ):
        plans.create_plan(
            SYSTEM,
            key=key,
            name=name,
            entitlements=[
                {
                    "feature_key": "api_calls",
                    "allowance": api,
                    "reset_period": "month",
                    "overage": "block",
                },
                {
                    "feature_key": "seats",
                    "allowance": seats,
                    "reset_period": "never",
                    "overage": "block",
                },
                {
                    "feature_key": "sso",
                    "allowance": None,
                    "reset_period": "never",
                    "overage": "block",
                },
            ],
            included_credits=[{"credit_system": "credits", "amount": amount, "period": "month"}],
        )
    for n in range(6):
        key = f"cust-team-{n}"
        add_customer(key, topup="5")
        plans.change_customer_plan(SYSTEM, key, "starter" if n < 4 else "growth")
        if n % 4:
            usage.record_usage(SYSTEM, customer_key=key, feature_key="seats", amount=n % 4)
    catalog.update_entitlement(SYSTEM, "cust-team-1", "seats", allowance="8")
    make_user("admin")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    yield from serve(tmp_path, _seed)


@pytest.fixture
def open_as(browser, server):  # noqa: F811
    contexts = []
    violations: list[str] = []

    def open_(path: str, *, width: int = 1440, height: int = 900):
        context = browser.new_context(viewport={"width": width, "height": height})
        contexts.append(context)
        page = context.new_page()
        page.on("console", lambda msg: _console(msg, violations))
        page.goto(f"{server}/login")
        page.fill("#email", "admin@example.com")
        page.fill("#password", PASSWORD)
        page.click("button.primary")
        page.wait_for_url(f"{server}/")
        page.goto(f"{server}{path}")
        return page

    yield open_
    for context in contexts:
        context.close()
    assert not violations, violations


def _fits(page, width: int) -> None:
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, f"{overflow}px wider than the {width}px screen"


@pytest.mark.parametrize("width", [1440, 390])
def test_plan_edit_previews_who_changes_and_who_blocks(open_as, width):
    from playwright.sync_api import expect

    page = open_as("/admin/plans", width=width)
    expect(page.locator("table")).to_contain_text("Starter")
    _fits(page, width)
    _shot(page, f"plans-list-{width}")
    page.goto(page.url + "/starter")
    _mark_page(page)
    page.fill('input[name="allowance-seats"]', "2")
    page.get_by_text("Preview who is affected").click()
    preview = page.locator("#plan-preview")
    expect(preview).to_contain_text("4 customers")
    expect(preview).to_contain_text("cust-team-3")  # 3 seats used, blocks
    expect(preview).not_to_contain_text("cust-team-1")  # its override keeps 8
    _not_reloaded(page)
    _fits(page, width)
    _shot(page, f"plans-edit-{width}")


@pytest.mark.parametrize("width", [1440, 390])
def test_the_plan_picker_shows_the_effect_before_saving(open_as, width):
    from playwright.sync_api import expect

    page = open_as(f"/admin/customers/{C}/entitlements", width=width)
    _mark_page(page)
    page.select_option("#plan", "growth")
    page.get_by_text("Show the effect").click()
    preview = page.locator("#plan-preview")
    expect(preview).to_contain_text("Issued at once: 100")
    expect(preview).to_contain_text("(plan)")
    _not_reloaded(page)
    _fits(page, width)
    _shot(page, f"plans-picker-{width}")
    page.get_by_role("button", name="Save plan").click()
    expect(page.locator("body")).to_contain_text("is on plan Growth")


@pytest.mark.parametrize("width", [1440, 390])
def test_customers_page_filters_by_plan(open_as, width):
    from playwright.sync_api import expect

    page = open_as("/customers?plan=starter", width=width)
    expect(page.locator("table")).to_contain_text("cust-team-0")
    expect(page.locator("table")).not_to_contain_text("cust-team-5")
    _fits(page, width)
    _shot(page, f"plans-customers-{width}")
