"""The overview's in-app alerts in a real browser at 1440 px and 390 px: they fit, every role
sees them (photographed into docs/screenshots/ when SCREENSHOTS=1)."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from tests import test_browser_dashboard as base
from tests import test_browser_layout as layout
from tests.factories import add_customer
from webapp.models import utcnow
from webapp.services import usage, wallets
from webapp.services.actors import SYSTEM

pytestmark = pytest.mark.browser

browser, page_for = base.browser, base.page_for
ROOT = Path(__file__).resolve().parent.parent


def _seed() -> None:
    base._seed()
    for i in range(7):  # seven near their limit: five shown, and a link to all
        key = add_customer(f"cust-near-{i}", topup="1")
        usage.record_usage(SYSTEM, customer_key=key, feature_key="seats", amount=8 + i % 3)
        wallets.set_low_balance_threshold(
            SYSTEM, customer_key=key, credit_system="credits", threshold="2"
        )
    wallets.topup_wallet(
        SYSTEM,
        customer_key="cust-acme",
        credit_system="credits",
        amount="250",
        expires_at=(utcnow() + timedelta(days=3)).isoformat(),
    )


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    yield from base.serve(tmp_path, _seed)


@pytest.mark.parametrize("role", ["account_manager", "support", "finance", "admin"])
def test_the_overview_shows_the_alerts_and_fits(page_for, role):
    for width, height in ((1440, 900), (390, 844)):
        page = page_for(role, width=width, height=height)
        page.goto(re.match(r"https?://[^/]+", page.url).group(0) + "/")
        alerts = page.locator("section.alerts")
        text = alerts.inner_text()
        assert "Near a limit" in text and "Low wallets" in text and "Expiring in 7 days" in text
        assert alerts.locator("h3 .badge").all_inner_texts() == ["7", "7", "1"]
        assert text.count("low at 2.00") == 5
        assert not layout._overflow(page)
        shot = base._shot(page, f"alerts-{role}-overview-{width}")
        if role == "support":
            part = base.ARTIFACTS / f"alerts-section-{width}.png"
            alerts.screenshot(path=str(part))
            if os.environ.get("SCREENSHOTS") == "1":
                target = ROOT / "docs" / "screenshots"
                shutil.copy(shot, target / f"overview-alerts-{width}.png")
