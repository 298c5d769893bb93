"""Layout with a wide catalog (8 features, 3 credit systems, 100-character keys, balances of a
trillion credits) at 1440 px and 390 px: nothing leaves the screen, keys truncate with the whole
value on hover, and every page of every role is photographed (tests/artifacts/)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import test_browser_dashboard as base
from tests.factories import add_customer
from webapp.models import utcnow
from webapp.services import catalog, usage, wallets
from webapp.services.actors import SYSTEM
from webapp.services.dashboard.customers import month_bounds

pytestmark = pytest.mark.browser

browser, page_for = base.browser, base.page_for
C = base.C
LONG_KEY = "feature-" + "x" * 92  # 100 characters
LONG_CUSTOMER = "cust-" + "y" * 95
NEAR = "cust-near"


def _seed_wide() -> None:
    base._seed()
    for system in ("tokens", "minutes"):
        catalog.create_credit_system(SYSTEM, key=system, name=system.title())
    for i, key in enumerate(("exports", "reports", "images", LONG_KEY)):
        catalog.create_feature(SYSTEM, key=key, name=f"Feature {i + 5}", type="consumable")
        catalog.set_entitlement(SYSTEM, C, key, allowance=100, reset_period="month")
    add_customer(LONG_CUSTOMER)
    last_month = month_bounds(utcnow())[0]  # acme: 4 API calls early last month, 6 now
    usage.record_usage(
        SYSTEM,
        customer_key="cust-acme",
        feature_key="api_calls",
        amount=4,
        timestamp=last_month.isoformat(),
    )
    usage.record_usage(SYSTEM, customer_key="cust-acme", feature_key="api_calls", amount=6)
    add_customer(NEAR)  # 9 of 10 seats: near its limit
    usage.record_usage(SYSTEM, customer_key=NEAR, feature_key="seats", amount=9)
    wallets.topup_wallet(SYSTEM, customer_key=C, credit_system="credits", amount="999999999999")
    for system in ("tokens", "minutes"):
        wallets.topup_wallet(SYSTEM, customer_key=C, credit_system=system, amount="123456.5")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    yield from base.serve(tmp_path, _seed_wide)


def _origin(page) -> str:
    return re.match(r"https?://[^/]+", page.url).group(0)


def _overflow(page) -> list[str]:
    """What sticks out: the page wider than the window, or a table wider than its card."""
    return page.evaluate(
        """() => {
          const out = [];
          const root = document.documentElement;
          if (root.scrollWidth > window.innerWidth + 1) out.push(`page ${root.scrollWidth}px`);
          for (const wrap of document.querySelectorAll('.table-wrap')) {
            const where = wrap.closest('section');
            const name = where?.id || where?.querySelector('h2')?.textContent || '?';
            if (wrap.scrollWidth > wrap.clientWidth + 1)
              out.push(`table in ${name}: ${wrap.scrollWidth}>${wrap.clientWidth}`);
          }
          for (const stat of document.querySelectorAll('.stat-value')) {
            if (stat.scrollWidth > stat.clientWidth + 1) out.push(`stat ${stat.textContent}`);
          }
          return out;
        }"""
    )


# Every page of the dashboard, for every role that may open it.
EVERYONE = [
    "/",
    "/customers",
    "/customers?col=percent&col=feature:seats&col=feature:exports&col=credits:credits"
    "&col=credits:minutes&col=credits:tokens&col=change:exports&col=change:api_calls",
    f"/customers/{C}",
    f"/customers/{C}/events",
    f"/customers/{C}/ledger",
    "/features",
    "/wallets",
    "/audit",
    "/account",
]
PAGES = {
    "account_manager": [*EVERYONE, "/ledger", "/reports/credits"],
    "support": EVERYONE,
    "finance": [*EVERYONE, "/ledger", "/reports/credits"],
    "admin": [
        *EVERYONE,
        "/ledger",
        "/reports/credits",
        "/admin/users",
        "/admin/api-keys",
        "/admin/features",
        "/admin/credit-systems",
        "/admin/credit-costs",
        "/admin/features/api_calls/edit",
        "/admin/credit-systems/credits/edit",
        "/admin/customers/new",
        f"/admin/customers/{C}/entitlements",
        f"/admin/customers/{C}/edit",
    ],
}
# Every page fits a phone too.
PHONE_SKIPPED: tuple[str, ...] = ()


def _name(path: str) -> str:
    path = path.replace(C, "c").split("?col=", 1)
    name = re.sub(r"[^a-z0-9]+", "-", path[0]).strip("-") or "overview"
    return name + ("-all-columns" if len(path) > 1 else "")


@pytest.mark.parametrize("role", list(PAGES))
def test_every_page_fits_at_1440_and_390(page_for, role):
    problems = {}
    for width, height in ((1440, 900), (390, 844)):
        page = page_for(role, width=width, height=height)
        for path in PAGES[role]:
            page.goto(f"{_origin(page)}{path}")
            base._shot(page, f"layout-{role}-{_name(path)}-{width}")
            for section in page.locator("main section[id]").all() if width < 600 else []:
                # the parts of a long phone page, each readable in its own picture
                name = section.get_attribute("id")
                section.screenshot(
                    path=str(base.ARTIFACTS / f"part-{role}-{_name(path)}-{name}.png")
                )
            found = _overflow(page)
            if width == 1440 or path not in PHONE_SKIPPED:
                if found:
                    problems[f"{path} @ {width}"] = found
    assert not problems, problems


def test_long_keys_truncate_with_the_whole_value_on_hover(page_for):
    page = page_for("admin", width=1440)
    page.goto(f"{_origin(page)}/admin/features")
    key = page.locator(f'[title="{LONG_KEY}"]').first
    box = key.bounding_box()
    assert box and box["width"] < 300, box


def test_the_customer_list_chooses_its_columns(page_for):
    from playwright.sync_api import expect

    page = page_for("account_manager", width=1440)
    page.goto(f"{_origin(page)}/customers")
    head = page.locator("#results thead")
    expect(head).to_contain_text("Credits")
    expect(head).not_to_contain_text("Feature 7")
    page.locator("summary", has_text="Columns").click()
    page.get_by_label("Feature 7", exact=True).check()
    page.get_by_label("Feature 5: this month vs last").check()
    page.get_by_label("API calls: this month vs last").check()
    page.get_by_role("button", name="Show columns").click()
    expect(head).to_contain_text("Feature 7")
    expect(head).to_contain_text("Feature 5, month vs last")
    assert "col=" in page.url and "change%3Aexports" in page.url
    page.reload()
    expect(head).to_contain_text("Feature 7")
    expect(head).to_contain_text("Feature 5, month vs last")
    acme = page.locator("#results tbody tr", has_text="Customer cust-acme")
    expect(acme.get_by_test_id("change-api_calls")).to_have_text("6 ▲ +50 %")
    csv_link = page.get_by_role("link", name="Download CSV").get_attribute("href")
    assert "col=change:exports" in csv_link
    assert _overflow(page) == []
    base._shot(page, "customers-month-vs-last-1440")


def test_on_a_phone_the_customer_page_starts_with_its_actions(page_for):
    page = page_for("support", width=390, height=844)
    form = page.locator("#usage-form").bounding_box()
    entitlements = page.locator("#entitlements").bounding_box()
    assert form["y"] < entitlements["y"]
    header = page.locator("header.top").bounding_box()
    assert header["height"] < 110, header


def test_on_a_phone_the_customer_list_shows_status_balances_and_the_near_limit_mark(page_for):
    """Issue 13, defect 14: at 390 px a row showed only the name and the first credit system."""
    from playwright.sync_api import expect

    page = page_for("account_manager", width=390, height=844)
    page.goto(f"{_origin(page)}/customers")
    summary = page.locator("#results tbody tr", has_text=f"Customer {C}").get_by_test_id(
        "phone-summary"
    )
    expect(summary).to_be_visible()
    expect(summary).to_contain_text("active")
    for balance in ("Credits 1T", "Minutes 123,456.50", "Tokens 123,456.50"):
        expect(summary).to_contain_text(balance)
    near = page.locator("#results tbody tr", has_text=f"Customer {NEAR}")
    expect(near.get_by_test_id("phone-summary")).to_contain_text("near limit · 90 %")
    assert _overflow(page) == []
    base._shot(page, "defect-14-customers-phone")
    wide = page_for("account_manager", width=1440)
    wide.goto(f"{_origin(wide)}/customers")
    expect(wide.get_by_test_id("phone-summary").first).to_be_hidden()
