"""Runway in the browser: /wallets sorted by who runs out first and the customer page's wallet
panel, at 1440 and 390 px; nothing leaves the screen. The pictures go to tests/artifacts/
(docs/screenshots/wallets-runway-*.png are copies of them)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal
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
C = base.C


def _seed() -> None:
    base._seed()  # C: 10 credits, 60 events; acme: 3 credits
    now = utcnow()
    usage.record_usage(SYSTEM, customer_key="cust-acme", feature_key="api_calls", amount=100)
    add_customer("cust-initech", api_allowance=None, topup="30")
    wallets.topup_wallet(
        SYSTEM,
        customer_key="cust-initech",
        credit_system="credits",
        amount="20",
        kind="granted",
        priority=300,  # spent after the 30: most of it expires unused
        expires_at=(now + timedelta(days=40)).isoformat(),
    )
    usage.record_usage(SYSTEM, customer_key="cust-initech", feature_key="api_calls", amount=600)
    add_customer("cust-hooli", api_allowance=None, topup="80")
    usage.record_usage(SYSTEM, customer_key="cust-hooli", feature_key="api_calls", amount=1000)
    add_customer("cust-globex", api_allowance=None, topup="5000")
    usage.record_usage(SYSTEM, customer_key="cust-globex", feature_key="api_calls", amount=2000)
    add_customer("cust-umbrella", topup="10")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    yield from base.serve(tmp_path, _seed)


def _origin(page) -> str:
    return re.match(r"https?://[^/]+", page.url).group(0)


@pytest.mark.parametrize(("width", "height"), [(1440, 900), (390, 844)])
def test_wallets_by_runway_and_the_wallet_panel_fit(page_for, width, height):
    page = page_for("account_manager", width=width, height=height)
    page.goto(f"{_origin(page)}/wallets")
    keys = page.locator("#results tbody code.key").all_inner_texts()
    # the runway column, or on a phone the line under the balance
    runways = page.locator("[data-testid=runway]" if width > 600 else "[data-testid=runway-sm]")
    runways = [r.strip() for r in runways.all_inner_texts()]
    days = [Decimal(r.split(" d")[0].replace(",", "")) for r in runways if "no burn" not in r]
    assert days == sorted(days) and len(days) == 5
    assert keys[-1] == "cust-umbrella" and "no burn" in runways[-1]  # nothing burned: last
    assert keys.index("cust-acme") < keys.index("cust-hooli") < keys.index("cust-initech")
    base._shot(page, f"wallets-runway-{width}")
    assert layout._overflow(page) == []
    page.goto(f"{_origin(page)}/customers/cust-initech")
    panel = page.locator("#wallets")
    assert "expiring unused" in panel.inner_text().lower()
    panel.screenshot(path=str(base.ARTIFACTS / f"customer-runway-{width}.png"))
    assert layout._overflow(page) == []
