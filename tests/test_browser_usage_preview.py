"""Issue 13, support: the record-usage form previews its effect as the amount is typed."""

from __future__ import annotations

import pytest

from tests import test_browser_dashboard as base

browser, server, page_for = base.browser, base.server, base.page_for
_shot = base._shot

pytestmark = pytest.mark.browser


@pytest.mark.parametrize("width", [1440, 390])
def test_typing_an_amount_previews_its_credits_and_allowance(page_for, width):
    from playwright.sync_api import expect

    page = page_for("support", width=width)
    box = page.locator("#usage-preview")
    page.select_option("#usage-feature_key", "api_calls")
    page.fill("#usage-amount", "")
    page.type("#usage-amount", "4")
    expect(box).to_contain_text("Allowed.")
    expect(box).to_contain_text("Costs 0.08 credits")
    expect(box).to_contain_text("Allowance left:")
    page.fill("#usage-amount", "lots")
    expect(box).to_contain_text("Amount must be a decimal number")
    page.fill("#usage-amount", "4")
    expect(box).to_contain_text("Costs 0.08 credits")
    _shot(page, f"support-usage-preview-{width}")
