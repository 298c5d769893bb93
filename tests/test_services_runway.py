"""Runway (docs/domain.md, "Runway") on both databases: the daily burn rollup written with every
consumption, the burn window, the wallet reads (service, API, Metrifox door, customer page) and
the /wallets page sorted by runway, in a constant number of queries."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from tests.api_support import api_as
from tests.factories import add_customer
from tests.web import count_queries, signed_in
from webapp.extensions import db
from webapp.models import Wallet, WalletBurnDaily
from webapp.services import dashboard, reads, usage, wallets
from webapp.services.actors import SYSTEM
from webapp.services.credits import burn
from webapp.services.verify import verify_ledger

C = "cust-6d11ca90"
M = 1_000_000


def burned() -> dict[tuple[str, str], int]:
    """(customer key, day) -> consumed micros, from the rollup."""
    from webapp.models import Customer

    rows = db.session.execute(
        select(Customer.key, WalletBurnDaily.day, WalletBurnDaily.consumed_micros)
        .join(Wallet, Wallet.id == WalletBurnDaily.wallet_id)
        .join(Customer, Customer.id == Wallet.customer_id)
    )
    return {(key, str(day)): micros for key, day, micros in rows}


def wallet_of(key: str) -> reads.WalletView:
    (view,) = reads.customer_summary(SYSTEM, key).wallets
    return view


def test_usage_and_negative_adjustments_burn_on_their_day_and_nothing_else_does(catalog, clock):
    today = str(clock.now.date())
    usage.record_usage(SYSTEM, customer_key=C, feature_key="api_calls", amount=4)  # 0.08
    wallets.adjust_wallet(
        SYSTEM, customer_key=C, credit_system="credits", amount="-1", reason="mistake"
    )
    wallets.adjust_wallet(SYSTEM, customer_key=C, credit_system="credits", amount="2", reason="x")
    short = wallets.topup_wallet(
        SYSTEM,
        customer_key=C,
        credit_system="credits",
        amount="5",
        expires_at=(clock.now + timedelta(hours=1)).isoformat(),
        priority=1000,  # spent last: it expires whole
    )
    assert burned() == {(C, today): 1_080_000}
    clock.advance(days=1)
    usage.record_usage(SYSTEM, customer_key=C, feature_key="api_calls")  # books the expiry
    grant = wallets.topup_wallet(SYSTEM, customer_key=C, credit_system="credits", amount="3")
    wallets.void_grant(SYSTEM, grant_id=grant.entry.grant_id, reason="refund")
    assert short.entry.grant_id is not None
    assert burned() == {(C, today): 1_080_000, (C, str(clock.now.date())): 20_000}


def test_a_batch_writes_one_upsert_summed_per_wallet_and_day(catalog, clock):
    add_customer("cust-b")
    with count_queries() as statements:
        results = usage.record_usage_batch(
            SYSTEM,
            [
                {"customer_key": key, "feature_key": "api_calls", "amount": n}
                for key in (C, "cust-b")
                for n in (1, 2, 3)
            ],
        )
    assert all(not isinstance(r, Exception) for r in results)
    assert sum("wallet_burn_daily" in s for s in statements) == 1
    day = str(clock.now.date())
    assert burned() == {(C, day): 120_000, ("cust-b", day): 120_000}


def test_the_burn_rate_is_the_last_thirty_days_over_thirty(catalog, clock):
    start = clock.now
    usage.record_usage(SYSTEM, customer_key=C, feature_key="api_calls", amount=15)  # 0.3
    clock.advance(days=10)
    usage.record_usage(SYSTEM, customer_key=C, feature_key="api_calls", amount=30)  # 0.6
    view = wallet_of(C)
    assert view.burn_rate_per_day == "0.03"  # 0.9 / 30
    # 10 - 0.9 = 9.1 available: 9.1 / 0.03 = 303.33.. days
    assert view.runway_days == "303.33"
    assert view.runs_out_at == clock.now + timedelta(days=303, seconds=28_800)
    assert view.expiring_unused == "0"
    # The first day leaves the window 30 days after it: the window is today and 29 days before.
    clock.now = start + timedelta(days=29)
    assert wallet_of(C).burn_rate_per_day == "0.03"
    clock.now = start + timedelta(days=30)
    assert wallet_of(C).burn_rate_per_day == "0.02"
    clock.now = start + timedelta(days=40)
    view = wallet_of(C)
    assert (view.burn_rate_per_day, view.runway_days, view.runs_out_at) == ("0", None, None)


def test_credits_expiring_before_they_are_spent_show_and_shorten_the_run_out(catalog, clock):
    add_customer("cust-x", api_allowance=None, topup="40")
    usage.record_usage(SYSTEM, customer_key="cust-x", feature_key="api_calls", amount=1500)
    # 30 consumed in the window: 1 a day; 10 left that never expire. 6 more, spent first
    # (priority 0), expire in 4 days: 4 of them are spent by then, 2 expire unused.
    wallets.topup_wallet(
        SYSTEM,
        customer_key="cust-x",
        credit_system="credits",
        amount="6",
        kind="granted",
        priority=0,
        expires_at=(clock.now + timedelta(days=4)).isoformat(),
    )
    view = wallet_of("cust-x")
    assert view.balance_micros == 16 * M
    assert (view.burn_rate_per_day, view.runway_days, view.expiring_unused) == ("1", "16", "2")
    # runway_days counts the 2 that expire unspent; the run-out does not: 4 + 10 days
    assert view.runs_out_at == clock.now + timedelta(days=14)


def test_a_wallet_read_with_nothing_burned_has_no_runway(catalog, clock):
    wallets.topup_wallet(
        SYSTEM,
        customer_key=C,
        credit_system="credits",
        amount="4",
        expires_at=(clock.now + timedelta(days=3)).isoformat(),
    )
    view = wallet_of(C)
    assert (view.burn_rate_per_day, view.runway_days, view.runs_out_at) == ("0", None, None)
    assert view.expiring_unused == "4"  # nothing spends it before it expires


def test_the_api_and_the_metrifox_door_read_the_runway(client, catalog, clock):
    usage.record_usage(SYSTEM, customer_key=C, feature_key="api_calls", amount=150)  # 3
    api = api_as(client, "account_manager")
    response = api.get(f"/api/v1/customers/{C}/wallets")
    assert response.status_code == 200
    (body,) = response.get_json()["data"]
    assert body["burn_rate_per_day"] == "0.1"
    assert body["runway_days"] == "70"  # 7 / 0.1
    assert body["runs_out_at"] == (clock.now + timedelta(days=70)).isoformat().replace(
        "+00:00", "Z"
    )
    assert body["expiring_unused"] == "0"
    detail = api.get(f"/api/v1/customers/{C}").get_json()
    assert detail["wallets"][0]["runway_days"] == "70"
    door = client.get(
        f"/metrifox/api/v1/credit_systems/v2/wallets?customer_key={C}",
        headers={"x-api-key": api.secret},
    )
    assert door.status_code == 200
    text = door.get_data(as_text=True)  # exact JSON numbers, as the door writes every amount
    assert '"burn_rate_per_day": 0.1' in text or '"burn_rate_per_day":0.1' in text
    (wallet,) = door.get_json()["data"]
    assert (wallet["runway_days"], wallet["expiring_unused"]) == (70, 0)


def test_ledger_verify_names_a_rollup_that_disagrees_with_the_ledger(catalog, clock):
    usage.record_usage(SYSTEM, customer_key=C, feature_key="api_calls")
    wallet_id = db.session.scalar(select(Wallet.id))
    # What a correction would write (a refund of 0.01 today) without its ledger entry.
    burn.add(db.session.connection(), [(wallet_id, clock.now.date(), -10_000)])
    db.session.commit()
    report = verify_ledger()
    assert any("wallet_burn_daily" in v and "0.01" in v for v in report.violations)
    burn.add(db.session.connection(), [(wallet_id, clock.now.date(), 10_000)])
    db.session.commit()
    assert verify_ledger().ok


# ---------------------------------------------------------------- /wallets


@pytest.fixture
def fleet(catalog, clock):
    """Wallets with known runways: C 10 credits, no burn; the others 10 credits each."""
    for key, calls in (
        ("cust-fast", 250),
        ("cust-slow", 25),
        ("cust-tie-a", 50),
        ("cust-tie-b", 50),
    ):
        add_customer(key, api_allowance=None)
        usage.record_usage(SYSTEM, customer_key=key, feature_key="api_calls", amount=calls)
    add_customer("cust-idle-low", topup="1")
    # burns 5, 0.5, 1, 1 credits over the window: runways 5/(5/30)=30, 9.5/(0.5/30)=570,
    # 9/(1/30)=270, 270; C and cust-idle-low burn nothing
    return ["cust-fast", "cust-tie-a", "cust-tie-b", "cust-slow", "cust-idle-low", C]


def test_wallets_sort_by_runway_by_default_nothing_burned_last(client, fleet):
    listing = dashboard.lowest_wallets(SYSTEM, sort="runway")
    assert [r.customer_key for r in listing.rows] == fleet
    assert [r.runway.runway_text for r in listing.rows] == ["30", "270", "270", "570", None, None]
    signed_in(client, "account_manager")
    html = client.get("/wallets").get_data(as_text=True)
    positions = [html.index(f">{key}<") for key in fleet]
    assert positions == sorted(positions)
    assert "who runs out first" in html


def test_wallets_sort_by_balance_too(client, fleet):
    listing = dashboard.lowest_wallets(SYSTEM, sort="balance")
    balances = [r.balance_micros for r in listing.rows]
    assert balances == sorted(balances) and listing.rows[0].customer_key == "cust-idle-low"
    signed_in(client, "account_manager")
    html = client.get("/wallets?sort=balance").get_data(as_text=True)
    assert html.index(">cust-idle-low<") < html.index(">cust-fast<") < html.index(f">{C}<")


def test_wallet_pages_are_stable_across_equal_runways(fleet):
    seen = []
    for page in (1, 2, 3):
        listing = dashboard.lowest_wallets(SYSTEM, sort="runway", per_page=2, page=page)
        seen += [r.customer_key for r in listing.rows]
    assert seen == fleet
    again = dashboard.lowest_wallets(SYSTEM, sort="runway", per_page=2, page=2)
    assert [r.customer_key for r in again.rows] == ["cust-tie-b", "cust-slow"]


def test_the_wallets_page_reads_a_constant_number_of_queries(client, fleet, clock):
    signed_in(client, "account_manager")

    def count() -> int:
        with count_queries() as statements:
            assert client.get("/wallets").status_code == 200
        return len(statements)

    before = count()
    # the signed-in user, the count, the page (burn from one grouped subquery), the page's exact
    # burn, its live grants, the credit systems of the filter
    assert before <= 6, before
    for i in range(8):
        key = f"cust-more-{i}"
        add_customer(key)
        usage.record_usage(SYSTEM, customer_key=key, feature_key="api_calls", amount=i + 1)
        wallets.topup_wallet(
            SYSTEM,
            customer_key=key,
            credit_system="credits",
            amount="2",
            expires_at=(clock.now + timedelta(days=i + 1)).isoformat(),
        )
        clock.advance(days=1)
    assert count() == before


def test_the_customer_page_shows_the_wallets_runway(client, catalog, clock):
    usage.record_usage(SYSTEM, customer_key=C, feature_key="api_calls", amount=150)  # 3
    signed_in(client, "support")
    html = client.get(f"/customers/{C}").get_data(as_text=True)
    assert 'data-testid="runway-credits"' in html
    assert "0.1 / day" in html and ">70</span> days" in html
    assert (clock.now + timedelta(days=70)).strftime("%Y-%m-%d %H:%M UTC") in html  # its title


def test_a_days_consumption_past_64_bits_stays_exact_and_a_refund_may_go_below_zero(catalog, clock):
    """The rollup's row keeps high · 2^40 + low like usage_daily: 1.2·10^19 micros in one day
    (more than a BIGINT holds) adds up exactly, and a refund larger than the day's consumption
    leaves it negative (the high part below zero, the low part in [0, 2^40))."""
    from webapp.services.credits.reads import consumed_in_window

    wallet_id = db.session.scalar(select(Wallet.id))
    day = clock.now.date()
    conn = db.session.connection()
    burn.add(conn, [(wallet_id, day, 6 * 10**18), (wallet_id, day, 6 * 10**18)])
    burn.add(conn, [(wallet_id, day, 6 * 10**18)])
    assert consumed_in_window([wallet_id], clock.now) == {wallet_id: 18 * 10**18}
    burn.add(conn, [(wallet_id, day, -18 * 10**18 - 7)])
    assert consumed_in_window([wallet_id], clock.now) == {wallet_id: -7}
    row = db.session.scalar(select(WalletBurnDaily))
    assert (row.consumed_high, row.consumed_micros) == (-1, 2**40 - 7)
    assert wallet_of(C).burn_rate_per_day == "0"  # a net refund burns nothing
    burn.add(conn, [(wallet_id, day, 7)])
    db.session.commit()
    assert consumed_in_window([wallet_id], clock.now) == {wallet_id: 0}
