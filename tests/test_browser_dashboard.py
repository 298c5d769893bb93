"""The dashboard in headless Chromium: HTMX swaps without a page load, errors next to their
field, buttons hidden from roles that cannot use them, and no CSP violation anywhere.

Each test saves a screenshot to tests/artifacts/ (git-ignored); one customer page also goes to
docs/screenshots/customer.png for the README."""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from werkzeug.serving import make_server

from tests.conftest import TEST_CONFIG, migrate_to_head
from tests.factories import add_customer, make_catalog
from tests.web import PASSWORD, make_user
from webapp import create_app
from webapp.extensions import db
from webapp.models import utcnow
from webapp.services import usage
from webapp.services.actors import SYSTEM

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "tests" / "artifacts"
C = "cust-6d11ca90"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def _require_chromium() -> None:
    if os.path.exists(CHROMIUM):
        return
    reason = f"{CHROMIUM} is absent (Debian package `chromium`; make test installs it)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true but {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    _require_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield chromium
        chromium.close()


def _seed() -> None:
    make_catalog()
    add_customer("cust-acme", topup="3")
    usage.record_usage(SYSTEM, customer_key=C, feature_key="seats", amount=3)
    now = utcnow()
    history = [
        {
            "customer_key": C,
            "feature_key": "api_calls" if i % 3 else "candidates",
            "amount": str(1 + (i * 7) % 11),
            "timestamp": (now - timedelta(days=i % 24, hours=i % 5)).isoformat(),
        }
        for i in range(60)
    ]
    usage.record_usage_batch(SYSTEM, history)
    for role in ("account_manager", "support", "finance", "admin"):
        make_user(role)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    yield from serve(tmp_path, _seed)


def serve(tmp_path: Path, seed) -> Iterator[str]:
    """The app on a free port over a fresh SQLite file that ``seed`` filled."""
    url = f"sqlite:///{tmp_path / 'browser.sqlite3'}"
    migrate_to_head(url)
    app = create_app(
        {
            **TEST_CONFIG,
            "SQLALCHEMY_DATABASE_URI": url,
            "WTF_CSRF_ENABLED": True,  # the real thing: the browser must send its tokens
            "SESSION_COOKIE_SECURE": False,  # plain http on 127.0.0.1
        }
    )
    with app.app_context():
        seed()
        db.session.remove()
    httpd = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_port}"
    finally:
        httpd.shutdown()
        thread.join(5)
        with app.app_context():
            db.engine.dispose()


@pytest.fixture
def page_for(browser, server):
    contexts = []
    violations: list[str] = []

    def open_as(role: str, *, width: int = 1366, height: int = 900, statuses: tuple = ()):
        """A signed-in page on the customer page; ``statuses``: HTTP errors the test provokes."""
        context = browser.new_context(viewport={"width": width, "height": height})
        contexts.append(context)
        page = context.new_page()
        page.on("console", lambda msg: _console(msg, violations, statuses))
        page.goto(f"{server}/login")
        page.fill("#email", f"{role.replace('_', '-')}@example.com")
        page.fill("#password", PASSWORD)
        page.click("button.primary")
        page.wait_for_url(f"{server}/")
        page.goto(f"{server}/customers/{C}")
        return page

    yield open_as
    for context in contexts:
        context.close()
    assert not violations, violations


def _console(msg, violations: list[str], statuses: tuple = ()) -> None:
    """CSP violations and script errors fail the test; the 422 of a refused form is expected."""
    expected = (422, *statuses)  # the browser's log line, then htmx's
    if any(f"status of {s}" in msg.text or f"Error Code {s} " in msg.text for s in expected):
        return
    if "Content Security Policy" in msg.text or msg.type == "error":
        violations.append(msg.text)


def _shot(page, name: str, *, full_page: bool = True) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=full_page)
    return path


def _mark_page(page) -> None:
    """A marker that survives HTMX swaps but not a page load."""
    page.evaluate("window.__noReload = 'still here'")


def _not_reloaded(page) -> bool:
    return page.evaluate("window.__noReload") == "still here"


def test_support_reclaims_a_seat_and_the_count_changes_in_place(page_for):
    from playwright.sync_api import expect

    page = page_for("support")
    seats = page.locator('[data-testid="seats-seats"]')
    expect(seats).to_have_text("3")
    _mark_page(page)
    page.fill("#reclaim-amount", "1")
    page.click("#reclaim-form button")
    expect(seats).to_have_text("2")
    expect(page.locator('[data-testid="used-seats"]')).to_have_text("2")
    expect(page.locator("#reclaim-form .success")).to_contain_text("Reclaimed 1 of Seats")
    expect(page.locator("#reclaim-form .success")).to_contain_text("2 of 10 in use")
    expect(page.get_by_text("2 of 10 in use")).to_have_count(1)  # one message in one place
    assert _not_reloaded(page)
    _shot(page, "support-reclaimed-seat")


def test_finance_tops_up_and_the_balance_changes_in_place(page_for):
    from playwright.sync_api import expect

    page = page_for("finance")
    balance = page.locator('[data-testid="balance-credits"]')
    before = balance.inner_text()
    _mark_page(page)
    page.fill("#topup-amount", "25")
    page.fill("#topup-reference", "INV-2041")
    page.click("#topup-form button")
    expect(page.locator("#topup-form .success")).to_contain_text("Added 25.00 credits")
    expect(balance).not_to_have_text(before)
    expect(page.locator("#ledger")).to_contain_text("INV-2041")
    assert _not_reloaded(page)
    path = _shot(page, "finance-topped-up")
    if os.environ.get("UPDATE_DOCS_SCREENSHOT"):  # the README's picture, on request only
        shutil.copy(path, ROOT / "docs" / "screenshots" / "customer.png")


def test_a_validation_error_is_shown_next_to_its_field(page_for):
    from playwright.sync_api import expect

    page = page_for("finance")
    balance = page.locator('[data-testid="balance-credits"]').inner_text()
    page.fill("#topup-amount", "1.1234567")
    page.click("#topup-form button")
    error = page.locator("#topup-amount-error")
    expect(error).to_contain_text("more than 6 decimal places")
    expect(page.locator("#topup-amount")).to_have_attribute("aria-invalid", "true")
    assert page.locator('[data-testid="balance-credits"]').inner_text() == balance
    page.locator("#topup-form").scroll_into_view_if_needed()
    _shot(page, "finance-validation-error", full_page=False)


def test_account_manager_sees_no_action_buttons(page_for):
    from playwright.sync_api import expect

    page = page_for("account_manager")
    expect(page.locator("#entitlements")).to_be_visible()
    assert page.locator("form.action-form").count() == 0
    assert page.get_by_role("link", name="Admin").count() == 0
    assert page.get_by_role("link", name="Edit").count() == 0
    _shot(page, "account-manager-customer")
    phone = page_for("account_manager", width=390, height=844)
    expect(phone.locator("#entitlements")).to_be_visible()
    _shot(phone, "account-manager-phone")
