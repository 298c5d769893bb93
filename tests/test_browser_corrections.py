"""Issue 14: support corrects a usage event from its row: the credit effect shows while the
actual amount is typed, the correction asks to confirm that effect, bad input is a message next
to the field. Screenshots at 1440 and 390 px (docs/screenshots/correction-*.png with
UPDATE_DOCS_SCREENSHOT=1)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import test_browser_dashboard as base
from webapp.services import usage
from webapp.services.actors import SYSTEM

browser, page_for = base.browser, base.page_for
_shot = base._shot
DOCS = Path(__file__).resolve().parent.parent / "docs" / "screenshots"

pytestmark = pytest.mark.browser


def _seed() -> None:
    base._seed()
    usage.record_usage(
        SYSTEM, customer_key=base.C, feature_key="api_calls", amount=50, event_id="evt-50"
    )


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    yield from base.serve(tmp_path, _seed)


@pytest.mark.parametrize("width", [1440, 390])
def test_support_corrects_an_event_after_seeing_its_credit_effect(page_for, width):
    from playwright.sync_api import expect

    page = page_for("support", width=width)
    page.get_by_label("Correct event evt-50").click()
    expect(page.locator("h1")).to_have_text("Correct a usage event")
    # htmx binds the preview's trigger when the document is loaded: typing before that (a
    # navigation only committed) sends no preview request, and the box stays empty.
    page.wait_for_load_state("load")
    box = page.locator("#correction-preview")
    amount = page.locator("#actual_amount")
    expect(amount).to_have_value("50")
    amount.fill("-1")
    expect(box).to_contain_text("never negative")
    amount.fill("5")
    expect(box).to_contain_text("50 → 5")
    expect(box).to_contain_text("Refunds 0.90 credits")
    page.fill("#reason", "Typed 50 for 5")
    shot = _shot(page, f"correction-{width}")
    page.get_by_role("button", name="Correct").click()
    expect(page.locator("#confirm-error")).to_contain_text("Tick the box to correct the event")
    expect(box).to_contain_text("Refunds 0.90 credits")  # the effect, shown again
    page.get_by_label("Yes, correct it").check()
    page.get_by_role("button", name="Correct").click()
    expect(page.locator("body")).to_contain_text("Corrected event evt-50: 50 → 5")
    expect(page.locator("table")).to_contain_text("corrected")
    if os.environ.get("UPDATE_DOCS_SCREENSHOT"):
        shutil.copy(shot, DOCS / f"correction-{width}.png")


def test_bad_input_is_shown_next_to_the_field(page_for):
    from playwright.sync_api import expect

    page = page_for("admin", width=1440)
    page.get_by_label("Correct event evt-50").click()
    page.fill("#actual_amount", "lots")
    page.fill("#reason", "x")
    page.get_by_role("button", name="Correct").click()
    expect(page.locator("#actual_amount-error")).to_contain_text("Actual amount")
    expect(page.locator("#actual_amount")).to_have_attribute("aria-invalid", "true")
