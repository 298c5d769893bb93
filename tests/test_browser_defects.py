"""Issue 13's defects, each as a person meets it in headless Chromium: every test failed on the
dashboard before its fix. Screenshots go to tests/artifacts/ (git-ignored)."""

from __future__ import annotations

import re
from decimal import Decimal

import pytest

from tests import test_browser_dashboard as base
from tests.web import PASSWORD

# The browser, the seeded server and the signed-in page of test_browser_dashboard.
browser, server, page_for = base.browser, base.server, base.page_for
C, _shot = base.C, base._shot

pytestmark = pytest.mark.browser


def _expect():
    from playwright.sync_api import expect

    return expect


def _origin(page) -> str:
    return re.match(r"https?://[^/]+", page.url).group(0)


def _row(page, text: str):
    return page.locator("tr", has_text=text)


def _sign_in(page, role: str) -> None:
    page.fill("#email", f"{role.replace('_', '-')}@example.com")
    page.fill("#password", PASSWORD)
    page.click("button.primary")


def test_1_the_last_admin_cannot_demote_themselves(page_for):
    expect = _expect()
    page = page_for("admin")
    page.goto(f"{_origin(page)}/admin/users")
    row = _row(page, "admin@example.com")
    row.locator("select").select_option("support")
    row.get_by_role("button", name="Save").click()
    expect(page.locator("main")).to_contain_text("the last active admin")
    page.goto(f"{_origin(page)}/admin/users")
    expect(page.get_by_role("heading", name="Admin")).to_be_visible()  # still an admin
    _shot(page, "defect-1-last-admin")


def test_2_editing_an_allowance_keeps_the_reset_period(page_for):
    expect = _expect()
    page = page_for("admin")
    page.goto(f"{_origin(page)}/admin/customers/{C}/entitlements")
    _row(page, "api_calls").get_by_role("link", name="Edit").click()
    expect(page.locator("#allowance")).to_have_value("1000")
    expect(page.locator("#reset_period")).to_have_value("month")
    page.fill("#allowance", "5000")
    page.get_by_role("button", name="Save entitlement").click()
    row = _row(page, "api_calls")
    expect(row).to_contain_text("5,000")
    expect(row).to_contain_text("month")
    _shot(page, "defect-2-entitlement-edit")


def _end_sessions_of(page_for, email: str) -> None:
    admin = page_for("admin")
    admin.goto(f"{_origin(admin)}/admin/users")
    admin.once("dialog", lambda dialog: dialog.accept())  # "Sign … out on every device?"
    _row(admin, email).get_by_role("button", name="Sign out everywhere").click()
    admin.wait_for_url(re.compile("/admin/users$"))
    _expect()(admin.locator("#flash")).to_contain_text("sessions have ended")


def test_3_an_expired_session_returns_to_the_page_not_to_a_post_url(page_for):
    expect = _expect()
    page = page_for("admin")
    page.goto(f"{_origin(page)}/admin/users")
    # The same admin signs out everywhere in another browser: this page's session has ended.
    other = page_for("admin")
    other.goto(f"{_origin(other)}/account")
    other.once("dialog", lambda dialog: dialog.accept())
    other.get_by_role("button", name="Sign out everywhere").click()
    _row(page, "finance@example.com").get_by_role("button", name="Save").click()
    expect(page).to_have_url(re.compile(r"/login"))
    _sign_in(page, "admin")
    expect(page).to_have_url(re.compile(r"/admin/users$"))
    expect(page.get_by_role("heading", name="Admin")).to_be_visible()


def test_3_an_expired_session_on_an_htmx_form_keeps_what_was_typed(page_for):
    expect = _expect()
    page = page_for("support", statuses=(401,))
    _end_sessions_of(page_for, "support@example.com")
    page.fill("#usage-amount", "7")
    page.click("#usage-form button")
    expect(page.locator("#usage-form [role=alert]")).to_contain_text("session ended")
    expect(page.locator("#usage-amount")).to_have_value("7")
    _shot(page, "defect-3-session-ended", full_page=False)


@pytest.mark.parametrize("status", [403, 409, 429, 500, 503])
def test_4_every_htmx_error_status_shows_a_message_in_place(page_for, status):
    expect = _expect()
    page = page_for("finance", statuses=(status,))
    key = page.locator("#topup-idempotency_key").input_value()
    page.route(
        "**/topup",
        lambda route: route.fulfill(status=status, body="<p>plain</p>", content_type="text/html"),
    )
    page.fill("#topup-amount", "5")
    page.click("#topup-form button")
    alert = page.locator("#topup-form [role=alert]")
    expect(alert).to_contain_text("again" if status != 403 else "role")
    assert page.locator("#topup-idempotency_key").input_value() == key
    if status == 503:
        expect(alert).to_contain_text("cannot apply it twice")
        _shot(page, "defect-4-htmx-503", full_page=False)


def test_5_reloading_after_creating_an_api_key_makes_no_second_key(page_for):
    expect = _expect()
    page = page_for("admin")
    page.goto(f"{_origin(page)}/admin/api-keys")
    page.fill("#name", "ci-deploy")
    page.get_by_role("button", name="Create key").click()
    secret = page.locator("#new-key")
    expect(secret).to_contain_text("mk_")
    expect(page.get_by_role("button", name="Copy")).to_be_visible()
    _shot(page, "defect-5-api-key-once", full_page=False)
    page.reload()
    expect(page.locator("#new-key")).to_have_count(0)
    expect(page.locator("tr", has_text="ci-deploy")).to_have_count(1)


def _archive(page) -> None:
    page.goto(f"{_origin(page)}/admin/customers/{C}/edit")
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Archive").click()
    page.wait_for_url(re.compile(f"/customers/{C}$"))


def test_6_an_archived_customer_shows_a_banner_and_no_action_forms(page_for):
    expect = _expect()
    page = page_for("admin")
    _archive(page)
    expect(page.locator(".banner")).to_contain_text("archived")
    assert page.locator("form.action-form").count() == 0
    page.get_by_role("button", name="Unarchive").click()
    expect(page.locator("form.action-form")).to_have_count(4)
    _shot(page, "defect-6-unarchived")


def test_7_archive_asks_first(page_for):
    expect = _expect()
    page = page_for("admin")
    page.goto(f"{_origin(page)}/admin/customers/{C}/edit")
    questions = []
    page.once("dialog", lambda dialog: (questions.append(dialog.message), dialog.dismiss()))
    page.get_by_role("button", name="Archive").click()
    page.goto(f"{_origin(page)}/customers/{C}")
    assert questions and "Archive" in questions[0]
    expect(page.locator("h1 .badge")).to_have_text("active")


def test_7_a_large_top_up_shows_the_resulting_balance_and_asks_again(page_for):
    expect = _expect()
    page = page_for("finance")
    balance = page.locator('[data-testid="balance-credits"]')
    before = balance.inner_text()
    page.fill("#topup-amount", "1000000000000")
    page.click("#topup-form button")
    form = page.locator("#topup-form")
    after = Decimal(before.replace(",", "")) + 10**12
    expect(form).to_contain_text(f"the balance will be {after:,.2f} credits")  # the page's format
    assert balance.inner_text() == before
    _shot(page, "defect-7-large-topup", full_page=False)
    form.get_by_label(re.compile("Yes, top up")).check()
    page.click("#topup-form button")
    expect(form.locator(".success")).to_contain_text("Added 1,000,000,000,000.00")


def test_10_changing_ones_password_needs_the_current_one(page_for):
    expect = _expect()
    page = page_for("support")
    page.goto(f"{_origin(page)}/account")
    page.fill("#current_password", "not the password")
    page.fill("#password", "a brand new password")
    page.get_by_role("button", name="Change password").click()
    expect(page.locator("#current_password-error")).to_contain_text("not your current password")


def test_10_a_user_email_with_markup_is_refused(page_for):
    expect = _expect()
    page = page_for("admin")
    page.goto(f"{_origin(page)}/admin/users")
    page.fill("#email", "<b>x</b>@example.com")
    page.fill("#password", "long enough password")
    page.get_by_role("button", name="Create user").click()
    expect(page.locator("#email-error")).to_contain_text("not an email address")


@pytest.mark.parametrize("path", ["/customers", "/wallets"])
@pytest.mark.parametrize("term", ["%", "_"])
def test_11_search_takes_percent_and_underscore_literally(page_for, path, term):
    expect = _expect()
    page = page_for("account_manager")
    page.goto(f"{_origin(page)}{path}?q={'%25' if term == '%' else term}")
    expect(page.locator("#results")).to_contain_text("No ")


def test_13_wallets_show_the_low_balance_threshold(page_for):
    expect = _expect()
    page = page_for("finance")
    page.goto(f"{_origin(page)}/wallets")
    expect(page.locator("#results thead")).to_contain_text("Low balance at")


def test_15_error_pages_have_navigation_and_human_words(page_for):
    expect = _expect()
    page = page_for("support", statuses=(404, 405))
    page.goto(f"{_origin(page)}/customers/nobody-here")
    expect(page.get_by_role("navigation", name="Main")).to_be_visible()
    page.goto(f"{_origin(page)}/customers/{C}/usage")  # a POST-only address
    expect(page.locator("main")).not_to_contain_text("method is not allowed")
    expect(page.get_by_role("link", name="Back to the dashboard")).to_be_visible()
    _shot(page, "defect-15-405")
    page.goto(f"{_origin(page)}/api/docs")
    expect(page.get_by_role("link", name="Dashboard")).to_be_visible()
    assert page.locator("link[rel=icon]").count() == 1


def test_12_errors_and_numbers_read_as_sentences_in_the_pages_format(page_for):
    expect = _expect()
    page = page_for("support")
    for amount in ("-1", "1.5"):
        page.fill("#reclaim-amount", amount)
        page.click("#reclaim-form button")
        expect(page.locator("#reclaim-amount-error")).to_have_text(
            "Enter a whole number of seats, such as 1 or 2."
        )
    page.fill("#usage-amount", "0")
    page.click("#usage-form button")
    expect(page.locator("#usage-amount-error")).to_have_text("Amount may not be zero.")
    page.fill("#usage-amount", "10000000000000")
    page.click("#usage-form button")
    expect(page.locator("#usage-amount-error")).to_contain_text("1,000,000,000,000")
    page.fill("#usage-amount", "2")
    page.click("#usage-form button")
    expect(page.locator("#usage-form .success")).to_contain_text("Recorded 2 API calls")
    expect(page.get_by_text("Recorded 2 API calls")).to_have_count(1)  # once, in one place
    events = page.locator("#events tbody")
    expect(events).to_contain_text("API calls")
    expect(events).not_to_contain_text("api_calls")
    expect(page.locator("#entitlements")).not_to_contain_text("month, block")
    expect(page.locator("#entitlements")).not_to_contain_text("access")
    page.goto(f"{_origin(page)}/")
    usage_rows = page.locator("section", has_text="Usage in the current period")
    expect(_row(usage_rows, "API calls").locator("td").last).not_to_have_text("")
    recent = page.locator("section", has_text="Recent changes")
    expect(recent).not_to_contain_text("system:cli")
    expect(recent).not_to_contain_text("user.created")
    _shot(page, "defect-12-overview")


def test_9_charts_have_readable_axes_a_window_switch_and_a_table(page_for):
    expect = _expect()
    page = page_for("account_manager")
    chart = page.locator("#charts figure.chart").first
    for label in ("y-max", "x-first"):
        size = chart.locator(f".{label}").evaluate(
            "e => parseFloat(getComputedStyle(e).fontSize) * e.getBoundingClientRect().height"
            " / e.offsetHeight"
        )
        assert size >= 11, (label, size)
    page.get_by_role("link", name="7 days").click()
    expect(page.locator("#charts h2")).to_have_text("Usage per day, last 7 days")
    table = page.locator("#charts figure.chart").first.locator("table")
    expect(table.locator("tbody tr")).to_have_count(7)
    expect(table.locator("caption")).to_contain_text("last 7 days")
    phone = page_for("account_manager", width=390, height=844)
    size = phone.locator("#charts .y-max").first.evaluate(
        "e => parseFloat(getComputedStyle(e).fontSize)"
    )
    assert size >= 11
    phone.locator("#charts").scroll_into_view_if_needed()
    _shot(phone, "defect-9-charts-phone", full_page=False)


def test_9_a_monthly_allowance_is_drawn_against_the_month_so_far(page_for):
    expect = _expect()
    page = page_for("account_manager")
    chart = page.locator("#charts figure.chart", has_text="API calls")
    expect(chart.locator("line.allowance")).to_have_count(1)
    expect(chart.locator("polyline.in-period")).to_have_count(1)
    expect(chart.locator("figcaption")).to_contain_text("allowance 1,000 a month")
    expect(chart.locator("figcaption")).to_contain_text("used this month so far")
    _shot(page, "defect-9-monthly-allowance")


def test_9_a_form_sent_on_the_customer_page_keeps_the_charts_range(page_for):
    expect = _expect()
    page = page_for("support")
    page.get_by_role("link", name="7 days").click()
    expect(page.locator("#charts h2")).to_have_text("Usage per day, last 7 days")
    page.select_option("#usage-feature_key", "api_calls")
    page.fill("#usage-amount", "2")
    page.click("#usage-form button.primary")
    expect(page.locator("#usage-form .success")).to_contain_text("Recorded 2")
    expect(page.locator("#charts h2")).to_have_text("Usage per day, last 7 days")
    expect(page.locator("#charts figure.chart").first.locator("tbody tr")).to_have_count(7)


def test_13_finance_sets_a_wallets_low_balance_threshold(page_for):
    expect = _expect()
    page = page_for("finance")
    page.goto(f"{_origin(page)}/wallets")
    row = _row(page, C)
    row.get_by_label(re.compile("Low balance threshold")).fill("1234.5")
    row.get_by_role("button", name="Save").click()
    expect(page.locator("#flash")).to_contain_text("now counts as low at 1,234.50")
    expect(_row(page, C).get_by_label(re.compile("Low balance threshold"))).to_have_value("1234.5")
    expect(_row(page, C)).to_contain_text("low")  # its balance is under the threshold
    _shot(page, "defect-13-wallets")


def _asks_first(page, button, question: str, *, changed) -> None:
    """Defect 7: ``button`` asks ``question`` first; No leaves everything as it was (checked
    after a reload), Yes does it (``changed`` waits for the result)."""
    expect = _expect()
    asked: list[str] = []
    page.once("dialog", lambda dialog: (asked.append(dialog.message), dialog.dismiss()))
    url = page.url
    button().click()
    assert asked == [question]
    page.reload()
    assert page.url == url
    expect(button()).to_be_visible()  # still there: nothing happened
    page.once("dialog", lambda dialog: (asked.append(dialog.message), dialog.accept()))
    button().click()
    assert asked == [question, question]
    changed()


def test_7_remove_entitlement_asks_first(page_for):
    expect = _expect()
    page = page_for("admin")
    page.goto(f"{_origin(page)}/admin/customers/{C}/entitlements")
    row = lambda: _row(page, "Candidates")  # noqa: E731
    _asks_first(
        page,
        lambda: row().get_by_role("button", name="Remove"),
        f"Remove the entitlement to Candidates? Customer {C} can no longer use it.",
        changed=lambda: expect(row()).to_have_count(0),
    )
    _shot(page, "defect-7-entitlement-removed")


def test_7_revoke_api_key_asks_first(page_for):
    expect = _expect()
    page = page_for("admin")
    page.goto(f"{_origin(page)}/admin/api-keys")
    page.fill("#name", "nightly-sync")
    page.get_by_role("button", name="Create key").click()
    page.goto(f"{_origin(page)}/admin/api-keys")  # the key's secret is shown once only
    row = lambda: _row(page, "nightly-sync")  # noqa: E731
    _asks_first(
        page,
        lambda: row().get_by_role("button", name="Revoke"),
        "Revoke nightly-sync? Programs using it stop working at once.",
        changed=lambda: expect(row().locator(".badge")).to_contain_text("revoked"),
    )


def test_7_deactivate_user_asks_first(page_for):
    expect = _expect()
    page = page_for("admin")
    page.goto(f"{_origin(page)}/admin/users")
    row = lambda: _row(page, "support@example.com")  # noqa: E731
    _asks_first(
        page,
        lambda: row().get_by_role("button", name="Deactivate"),
        "Deactivate support@example.com? They can no longer sign in.",
        changed=lambda: expect(row().locator(".badge")).to_have_text("inactive"),
    )
    expect(row().get_by_role("button", name="Reactivate")).to_be_visible()


def test_7_sign_out_everywhere_asks_first(page_for):
    expect = _expect()
    page = page_for("admin")
    # Another user's sessions, from the Users page.
    page.goto(f"{_origin(page)}/admin/users")
    asked: list[str] = []
    page.once("dialog", lambda dialog: (asked.append(dialog.message), dialog.dismiss()))
    _row(page, "finance@example.com").get_by_role("button", name="Sign out everywhere").click()
    assert asked == ["Sign finance@example.com out on every device?"]
    # One's own, from the account page: No keeps this session, Yes ends it too.
    page.goto(f"{_origin(page)}/account")
    _asks_first(
        page,
        lambda: page.locator("main").get_by_role("button", name="Sign out everywhere"),
        "Sign out on every device, this one included?",
        changed=lambda: page.wait_for_url(re.compile("/login")),
    )
    page.goto(f"{_origin(page)}/account")
    expect(page).to_have_url(re.compile("/login"))
