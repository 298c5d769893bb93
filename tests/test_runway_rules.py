"""Runway's pure rules (webapp/services/credits/runway.py), without a database: the burn rate,
runway_days, and the simulation of the live grants against a constant burn, checked against a
brute-force day-by-day model."""

from __future__ import annotations

import ast
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from webapp.services.credits import runway as rw
from webapp.services.credits.rules import GrantRef, spending_key

NOW = datetime(2026, 12, 1, 10, 15, 30, 123456, tzinfo=UTC)
M = 1_000_000
DAY = timedelta(days=1)


def grant(
    gid: int,
    credits: int,
    *,
    kind: str = "granted",
    priority: int = 100,
    effective: float = -1,
    expires: float | None = None,
) -> GrantRef:
    return GrantRef(
        gid,
        kind,
        priority,
        NOW + effective * DAY,
        None if expires is None else NOW + expires * DAY,
        credits * M,
    )


def test_the_runway_module_imports_nothing_of_the_database():
    source = Path(rw.__file__).read_text()
    imported = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            imported.add(("." * node.level) + (node.module or ""))
        elif isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
    assert not {m for m in imported if "sqlalchemy" in m or m.endswith(("models", "extensions"))}
    assert "float(" not in source


def test_burn_is_the_window_over_thirty_exactly_and_never_negative():
    assert rw.burn_rate(300 * M) == 10 * M
    assert rw.burn_rate(1) == Fraction(1, 30)
    assert rw.burn_rate(0) == 0
    assert rw.burn_rate(-5 * M) == 0  # refunds outweighing charges burn nothing


def test_no_burn_no_runway_and_every_expiring_credit_expires_unused():
    found = rw.runway(
        available_micros=150 * M,
        consumed_micros=0,
        grants=[grant(1, 100, expires=5), grant(2, 50)],
        now=NOW,
    )
    assert (found.runway_days, found.runs_out_at, found.runway_text) == (None, None, None)
    assert found.expiring_unused_micros == 100 * M
    assert (found.burn_text, found.expiring_unused_text) == ("0", "100")


def test_a_plain_balance_runs_out_after_balance_over_burn():
    found = rw.runway(
        available_micros=300 * M, consumed_micros=300 * M, grants=[grant(1, 300)], now=NOW
    )
    assert found.runway_days == 30
    assert found.runs_out_at == NOW + 30 * DAY
    assert (found.burn_text, found.runway_text, found.expiring_unused_text) == ("10", "30", "0")


def test_credits_that_expire_unspent_shorten_the_run_out_but_not_runway_days():
    # 10 a day: the expiring grant (spent first: soonest expiry) pays 50 in 5 days and loses 50;
    # the other lasts 10 days more.
    found = rw.runway(
        available_micros=200 * M,
        consumed_micros=300 * M,
        grants=[grant(1, 100, expires=5), grant(2, 100)],
        now=NOW,
    )
    assert found.runway_days == 20
    assert found.runs_out_at == NOW + 15 * DAY
    assert found.expiring_unused_micros == 50 * M


def test_a_lower_priority_grant_spent_later_can_expire_while_waiting():
    # priority first: the unexpiring grant of priority 0 pays for 10 days; the other expires at 4.
    found = rw.runway(
        available_micros=200 * M,
        consumed_micros=300 * M,
        grants=[grant(1, 100, priority=0), grant(2, 100, priority=5, expires=4)],
        now=NOW,
    )
    assert found.runs_out_at == NOW + 10 * DAY
    assert found.expiring_unused_micros == 100 * M


def test_nothing_available_runs_out_now_even_with_a_grant_scheduled_later():
    found = rw.runway(
        available_micros=0,
        consumed_micros=30 * M,
        grants=[grant(1, 10, effective=3, expires=5)],
        now=NOW,
    )
    assert found.runway_days == 0
    assert found.runs_out_at == NOW
    # effective at day 3, spent 1 a day until its expiry at day 5: 8 left to expire
    assert found.expiring_unused_micros == 8 * M


def test_grants_already_past_their_expiry_or_empty_count_for_nothing():
    found = rw.runway(
        available_micros=10 * M,
        consumed_micros=30 * M,
        grants=[grant(1, 50, effective=-10, expires=-1), grant(2, 0), grant(3, 10)],
        now=NOW,
    )
    assert found.runs_out_at == NOW + 10 * DAY
    assert found.expiring_unused_micros == 0


def test_texts_round_burn_half_up_and_runway_down():
    found = rw.runway(available_micros=M, consumed_micros=7 * M, grants=[grant(1, 1)], now=NOW)
    # 7/30 = 0.2333333.. credits a day; 1 / (7/30) = 4.2857.. days
    assert found.burn_text == "0.233333"
    assert found.runway_text == "4.28"
    assert (
        rw.runway(available_micros=M, consumed_micros=20, grants=[grant(1, 1)], now=NOW).burn_text
        == "0.000001"
    )  # 20/30 of a micro, half up


def test_a_runway_beyond_any_date_has_no_run_out_date():
    found = rw.runway(
        available_micros=9 * 10**18, consumed_micros=1, grants=[grant(1, 9 * 10**12)], now=NOW
    )
    assert found.runway_days == 9 * 10**18 * 30
    assert found.runs_out_at is None


# ---------------------------------------------------------------- against a brute-force model


def day_by_day(grants: list[GrantRef], burn: Fraction) -> tuple[Fraction, Fraction]:
    """The simulation the slow way, for grants whose times are whole days from NOW: each day
    the eligible set is fixed, so spending `burn` in spending order within the day is exact.
    Returns (runs out in days, expiring unused micros)."""
    lots = [
        [
            max((g.effective_at - NOW) // DAY, 0),
            None if g.expires_at is None else (g.expires_at - NOW) // DAY,
            Fraction(g.remaining_micros),
            g,
        ]
        for g in sorted(grants, key=spending_key)
        if g.remaining_micros > 0 and (g.expires_at is None or g.expires_at > NOW)
    ]
    runs_out = None
    expired = Fraction(0)
    day = 0
    while any(lot[2] for lot in lots):
        need = burn
        for lot in lots:
            effective, expires, left, _ = lot
            if left and effective <= day and (expires is None or day < expires):
                take = min(need, left)
                lot[2] -= take
                need -= take
        if need and runs_out is None:
            runs_out = day + (burn - need) / burn
        for lot in lots:
            if lot[2] and lot[1] is not None and lot[1] == day + 1:
                expired += lot[2]
                lot[2] = Fraction(0)
        day += 1
    return (day if runs_out is None else runs_out), expired


grants_strategy = st.lists(
    st.builds(
        lambda i, credits, kind, priority, effective, span: GrantRef(
            i,
            kind,
            priority,
            NOW + effective * DAY,
            None if span is None else NOW + (max(effective, 0) + span) * DAY,
            credits,
        ),
        st.integers(1, 10_000),
        st.integers(0, 5_000),
        st.sampled_from(["granted", "purchased"]),
        st.sampled_from([0, 100, 200]),
        st.integers(-3, 20),
        st.none() | st.integers(1, 30),
    ),
    max_size=6,
    unique_by=lambda g: g.id,
)


@settings(max_examples=300, deadline=None)
@given(grants_strategy, st.integers(300, 60_000))
def test_the_simulation_matches_a_day_by_day_model(grants, consumed):
    burn = rw.burn_rate(consumed)
    found = rw.simulate(grants, burn, NOW)
    runs_out, expired = day_by_day(grants, burn)
    assert found.expiring_unused == expired
    assert found.runs_out_in == runs_out


@settings(max_examples=200, deadline=None)
@given(grants_strategy, st.integers(1, 10**9))
def test_spent_and_expired_add_up_and_the_run_out_comes_no_later_than_runway_days(grants, consumed):
    burn = rw.burn_rate(consumed)
    live = rw.live(grants, NOW)
    total = sum(g.remaining_micros for g in live)
    available = sum(g.remaining_micros for g in live if g.effective_at <= NOW)
    found = rw.simulate(grants, burn, NOW)
    assert 0 <= found.expiring_unused <= total
    assert found.runs_out_in is not None
    # until the run-out every moment is paid for
    assert found.runs_out_in * burn + found.expiring_unused <= total
    if all(g.effective_at <= NOW for g in live):
        days = rw.runway_days(available, burn)
        assert days is not None and found.runs_out_in <= days
        # nothing scheduled: the run-out spends everything that does not expire
        assert found.runs_out_in * burn + found.expiring_unused == total
