"""The customer list in Chromium: the "% of allowance" column highlights a customer near a
limit, and the near-limit filter narrows the list in place and keeps itself in the URL."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import test_browser_dashboard as base
from webapp.services import usage
from webapp.services.actors import SYSTEM

pytestmark = pytest.mark.browser

browser, page_for = base.browser, base.page_for


def _seed() -> None:
    base._seed()  # C: seats 3 of 10; cust-acme: nothing used yet
    usage.record_usage(SYSTEM, customer_key="cust-acme", feature_key="seats", amount=9)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    yield from base.serve(tmp_path, _seed)


@pytest.mark.parametrize("width", [1440, 390])
def test_near_limit_is_highlighted_and_filtered(page_for, server, width):
    from playwright.sync_api import expect

    page = page_for("account_manager", width=width)
    page.goto(f"{server}/customers")
    if width > 600:  # the column, the near one highlighted
        near = page.locator(".percent.near-limit")
        expect(near).to_have_text("90 %")
        plain = page.locator(".percent:not(.near-limit)")
        expect(plain).to_have_text("30 %")
        assert near.evaluate("e => getComputedStyle(e).color") != plain.evaluate(
            "e => getComputedStyle(e).color"
        )
        expect(page.locator(".badge.warn:visible")).to_have_count(0)
    else:  # on a phone, no column but a badge under the name of the customer near a limit
        near = page.locator(".badge.warn:visible")
        expect(page.locator(".percent:visible")).to_have_count(0)
    expect(near).to_have_count(1)
    expect(near).to_be_visible()
    expect(page.locator("tbody tr", has=near)).to_contain_text("cust-acme")
    base._shot(page, f"customers-near-limit-{width}")
    assert page.evaluate("document.documentElement.scrollWidth") <= width + 1
    page.check('input[type="checkbox"][name="near"]')
    expect(page).to_have_url(re.compile(r"/customers\?.*\bnear=1\b"))
    expect(page.locator("#results tbody tr")).to_have_count(1)
    expect(page.locator("#results")).to_contain_text("1 customer near a limit")
    page.reload()  # the filter lives in the URL
    expect(page.locator('input[type="checkbox"][name="near"]')).to_be_checked()
    expect(page.locator("#results tbody tr")).to_have_count(1)
