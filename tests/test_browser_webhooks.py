"""The webhook pages in Chromium: they fit a desktop and a phone (screenshots in
tests/artifacts/; with UPDATE_SCREENSHOTS=1 also in docs/screenshots/), rotating a secret asks
first, then shows the new secret once, and a delivery's attempts expand in place."""

from __future__ import annotations

import os
import random
import shutil
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from tests.test_browser_dashboard import (  # noqa: F401 (browser is a fixture)
    _console,
    _mark_page,
    _not_reloaded,
    _shot,
    browser,
    serve,
)
from tests.web import PASSWORD, make_user
from webapp.extensions import db
from webapp.models import set_clock, utcnow
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
    _history()


ERP = "https://erp.example.net/webhooks/metering"


def _history() -> None:
    """A test event to a struggling endpoint, two hours ago: refused by the SSRF guard (its
    name pointed at a private address), then no connection, a timeout, a 502 and a 500 from
    its proxy and its app, then delivered; by two workers. Recorded as the worker records them,
    the answers made up, the clock moved to each retry."""
    at = [utcnow() - timedelta(hours=2)]
    set_clock(lambda: at[0])
    try:
        erp = webhooks.create_endpoint(SYSTEM, url=ERP, description="ERP")
        delivery_id = webhooks.send_test_event(SYSTEM, erp.endpoint.id).id
        settings = delivery.Settings()
        answers = [
            sender.Result(
                None, None, "refused: erp.example.net resolves to 10.20.0.4, a private address", 2
            ),
            sender.Result(
                None,
                None,
                "NewConnectionError: HTTPSConnection(host='203.0.113.40', port=443): Failed to "
                "establish a new connection: [Errno 111] Connection refused",
                3,
            ),
            sender.Result(
                None,
                None,
                "ReadTimeoutError: HTTPSConnectionPool(host='203.0.113.40', port=443): Read "
                "timed out. (read timeout=10)",
                10_004,
            ),
            sender.Result(
                502,
                "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n<center>"
                "<h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n</body>"
                "\r\n</html>\r\n",
                None,
                31,
            ),
            sender.Result(500, '{"error":"could not reach the ledger service"}', None, 812),
            sender.Result(200, '{"received":true}', None, 64),
        ]
        rng = random.Random(4)
        for n, answer in enumerate(answers):
            worker = ("worker-a.internal:4182", "worker-b.internal:977")[n % 2]
            [claimed] = delivery.claim(worker, settings)
            assert claimed.delivery_id == delivery_id
            at[0] += timedelta(milliseconds=answer.duration_ms)
            delivery.record(worker, [(claimed, answer)], settings, rng=rng, now=at[0])
            row = webhooks.get_delivery(SYSTEM, delivery_id)
            if row.next_attempt_at is not None:
                at[0] = row.next_attempt_at
    finally:
        set_clock(None)


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


@pytest.mark.parametrize("width", [1440, 390])
def test_a_delivery_s_attempts_expand_in_place(admin_page, width):
    from playwright.sync_api import expect

    open_, server = admin_page
    page = open_(width)
    page.goto(f"{server}/admin/webhooks/deliveries")
    _mark_page(page)
    toggle = page.locator(f'a.attempts-toggle[aria-label$=" to {ERP}"]')
    toggle.click()
    attempts = page.locator("table.attempts tbody tr")
    expect(attempts).to_have_count(6)
    expect(attempts.first).to_contain_text("HTTP 200")
    expect(attempts.last).to_contain_text("refused: erp.example.net resolves to 10.20.0.4")
    expect(page.locator(f'a.attempts-toggle[aria-label$=" to {ERP}"]')).to_have_count(0)
    assert _not_reloaded(page)  # swapped in place, not a page load
    page.locator("table.attempts tbody tr").nth(2).locator("details summary").click()
    expect(page.locator("table.attempts pre.body").nth(2)).to_contain_text("502 Bad Gateway")
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, f"{overflow}px wider than the {width}px screen"
    phone = width < 600  # the page is long there: the expanded row at the top of the screen
    if phone:
        page.locator("tbody.delivery.expanded").evaluate("e => e.scrollIntoView()")
    shot = _shot(page, f"webhook-attempts-{width}", full_page=not phone)
    if os.environ.get("UPDATE_SCREENSHOTS"):
        shutil.copy(shot, DOCS / f"webhook-attempts-{width}.png")


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
