"""The webhook pages in Chromium: they fit a desktop and a phone (screenshots in
tests/artifacts/; with UPDATE_SCREENSHOTS=1 also in docs/screenshots/), and rotating a secret
asks first, then shows the new secret once."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.test_browser_dashboard import (  # noqa: F401 (browser is a fixture)
    _console,
    _shot,
    browser,
    serve,
)
from tests.web import PASSWORD, make_user
from webapp.extensions import db
from webapp.services import outbox, webhooks
from webapp.services.actors import SYSTEM
from webapp.services.tx import write_transaction
from webapp.services.webhooks import delivery, sender

pytestmark = pytest.mark.browser
DOCS = Path(__file__).resolve().parent.parent / "docs" / "screenshots"


def _seed() -> None:
    """Two endpoints and deliveries in each state (sent without HTTP: the results are made up
    here, recorded as the worker records them)."""
    make_user("admin")
    webhooks.create_endpoint(
        SYSTEM,
        url="https://billing.example.com/hooks/metering",
        description="Billing system",
        event_types=["wallet.balance_low", "wallet.depleted", "credits.expiring_soon"],
    )
    webhooks.create_endpoint(SYSTEM, url="https://alerts.example.org/in", description="On-call")
    with write_transaction():
        conn = db.session.connection()
        for i, type_ in enumerate(["wallet.balance_low", "wallet.depleted", "usage.blocked"]):
            outbox.emit(conn, type_, {"customer_key": f"cust-{i}"}, customer_key=f"cust-{i}")
    settings = delivery.Settings()
    delivery.fan_out(settings)
    claimed = delivery.claim("browser-seed", settings, limit=3)
    answers = [
        sender.Result(200, '{"ok":true}', None, 41),
        sender.Result(500, "<html><body>Internal Server Error</body></html>", None, 120),
        sender.Result(None, None, "ConnectTimeoutError: timed out", 10000),
    ]
    delivery.record("browser-seed", list(zip(claimed, answers, strict=False)), settings)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    yield from serve(tmp_path, _seed)


@pytest.fixture
def admin_page(browser, server):  # noqa: F811
    contexts, violations = [], []

    def open_(width: int):
        context = browser.new_context(viewport={"width": width, "height": 900})
        contexts.append(context)
        page = context.new_page()
        page.on("console", lambda msg: _console(msg, violations))
        page.goto(f"{server}/login")
        page.fill("#email", "admin@example.com")
        page.fill("#password", PASSWORD)
        page.click("button.primary")
        page.wait_for_url(f"{server}/")
        return page

    yield open_, server
    for context in contexts:
        context.close()
    assert not violations, violations


@pytest.mark.parametrize("width", [1440, 390])
def test_webhook_pages_fit_their_width(admin_page, width):
    open_, server = admin_page
    page = open_(width)
    for path, name in (
        ("/admin/webhooks", "webhooks"),
        ("/admin/webhooks/deliveries", "deliveries"),
    ):
        page.goto(f"{server}{path}")
        overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, f"{path}: {overflow}px wider than the {width}px screen"
        shot = _shot(page, f"webhook-{name}-{width}")
        if os.environ.get("UPDATE_SCREENSHOTS"):  # docs/screenshots/ only when asked
            shutil.copy(shot, DOCS / f"webhook-{name}-{width}.png")


def test_rotating_asks_first_then_shows_the_secret_once(admin_page):
    from playwright.sync_api import expect

    open_, server = admin_page
    page = open_(1440)
    page.goto(f"{server}/admin/webhooks")
    questions = []

    def answer(dialog):
        questions.append(dialog.message)
        dialog.dismiss() if len(questions) == 1 else dialog.accept()

    page.on("dialog", answer)
    rotate = page.get_by_role("button", name="Rotate secret").first
    rotate.click()
    expect(page.get_by_test_id("new-webhook-secret")).to_have_count(0)  # dismissed: nothing
    rotate.click()
    secret = page.get_by_test_id("new-webhook-secret")
    expect(secret).to_contain_text("whsec_")
    assert "24 hours" in questions[0]
    page.reload()
    expect(page.get_by_test_id("new-webhook-secret")).to_have_count(0)
