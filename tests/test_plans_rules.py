"""The pure rules of plans: plan ⊕ overrides, the change rule, included credits' proration."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from webapp.services.plans.rules import (
    Blocker,
    Decision,
    Override,
    Spec,
    credit_period,
    due_issue,
    judge,
    merge,
    prorate,
)

M = 1_000_000
PLAN = {1: Spec(1000 * M, "month", "block"), 2: Spec(10 * M, "never", "block")}


def test_no_override_is_the_plan():
    merged = merge(PLAN, {})
    assert {fid: (e.spec, e.source, e.overridden) for fid, e in merged.items()} == {
        1: (PLAN[1], "plan", ()),
        2: (PLAN[2], "plan", ()),
    }


def test_a_partial_override_keeps_the_plans_other_fields():
    merged = merge(PLAN, {1: Override(True, 5000 * M, None, None)})
    assert merged[1].spec == Spec(5000 * M, "month", "block")
    assert (merged[1].source, merged[1].overridden) == ("override", ("allowance",))


def test_an_override_to_unlimited_is_not_the_plans_value():
    merged = merge(PLAN, {1: Override(True, None, None, "allow")})
    assert merged[1].spec == Spec(None, "month", "allow")
    assert merged[1].overridden == ("allowance", "overage")


def test_an_extra_feature_needs_a_complete_override():
    full = Override(True, 3 * M, "day", "allow")
    assert merge(PLAN, {9: full})[9].spec == Spec(3 * M, "day", "allow")
    assert 9 not in merge(PLAN, {9: Override(True, 3 * M, None, None)})


def test_a_block_allowance_under_usage_is_a_blocker():
    now = datetime(2026, 3, 10, tzinfo=UTC)
    assert judge(PLAN[1], Spec(10 * M, "month", "block"), 11 * M, now) == Blocker(
        "allowance", 11 * M, 10 * M
    )
    assert isinstance(judge(PLAN[1], Spec(10 * M, "month", "allow"), 11 * M, now), Decision)


def test_a_reset_period_with_usage_waits_for_the_period_end():
    now = datetime(2026, 3, 10, tzinfo=UTC)
    decision = judge(PLAN[1], Spec(1000 * M, "day", "block"), 5 * M, now)
    assert decision == Decision(
        Spec(1000 * M, "month", "block"), "day", datetime(2026, 4, 1, tzinfo=UTC)
    )
    assert judge(PLAN[1], Spec(1000 * M, "day", "block"), 0, now) == Decision(
        Spec(1000 * M, "day", "block"), None, None
    )
    never = Spec(None, "never", "block")
    assert isinstance(judge(never, Spec(None, "month", "block"), 1, now), Blocker)


def test_proration_is_exact_and_rounds_down():
    start, end = credit_period(datetime(2026, 2, 14, 12, tzinfo=UTC), "month")
    assert (start, end) == (datetime(2026, 2, 1, tzinfo=UTC), datetime(2026, 3, 1, tzinfo=UTC))
    # Half of February left: exactly half.
    assert prorate(100 * M, start, end, datetime(2026, 2, 15, tzinfo=UTC)) == 50 * M
    # A part smaller than a micro is rounded down: never more than the plan gives.
    assert prorate(1, start, end, datetime(2026, 2, 1, 0, 0, 1, tzinfo=UTC)) == 0
    assert prorate(100 * M, start, end, start) == 100 * M


@given(
    st.integers(1, 10**18),
    st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1)),
)
def test_prorated_parts_never_exceed_the_amount(amount, at):
    at = at.replace(tzinfo=UTC)
    start, end = credit_period(at, "year")
    part = prorate(amount, start, end, at)
    assert 0 <= part <= amount
    total = (end - start) // timedelta(microseconds=1)
    left = (end - at) // timedelta(microseconds=1)
    assert part * total <= amount * left < (part + 1) * total


def test_due_issue_is_the_current_period_only():
    now = datetime(2026, 5, 20, tzinfo=UTC)
    # On the plan since long ago (a worker down for months): this month's only, whole.
    since = datetime(2025, 1, 1, tzinfo=UTC)
    issue = due_issue(30 * M, "month", on_plan_since=since, now=now, prorated=True)
    assert issue is not None
    assert (issue.period_start, issue.effective_at, issue.expires_at, issue.amount) == (
        datetime(2026, 5, 1, tzinfo=UTC),
        datetime(2026, 5, 1, tzinfo=UTC),
        datetime(2026, 6, 1, tzinfo=UTC),
        30 * M,
    )
    joined = datetime(2026, 5, 17, tzinfo=UTC)  # 15 of 31 days left
    part = due_issue(31 * M, "month", on_plan_since=joined, now=now, prorated=True)
    assert part is not None and part.amount == 15 * M and part.effective_at == joined
    whole = due_issue(31 * M, "month", on_plan_since=joined, now=now, prorated=False)
    assert whole is not None and whole.amount == 31 * M


def test_a_new_reset_period_starts_at_one_of_its_own_boundaries():
    """A counter's key is its period's start, not its kind: a new reset period whose current
    period began before the change would take over an older counter of the old kind (a Monday's
    day counter read as the week's) or miss the usage the old kind counted since. So the change
    waits for the first boundary of the new period at or after the time it could apply."""
    wednesday = datetime(2026, 3, 11, 15, tzinfo=UTC)
    daily = Spec(100 * M, "day", "block")
    weekly = Spec(50 * M, "week", "block")
    # Nothing used today, but the week began on Monday: from next Monday, new allowance now.
    assert judge(daily, weekly, 0, wednesday) == Decision(
        Spec(50 * M, "day", "block"), "week", datetime(2026, 3, 16, tzinfo=UTC)
    )
    # Used today: after today, at the first Monday.
    assert judge(daily, weekly, 5 * M, wednesday).pending_at == datetime(2026, 3, 16, tzinfo=UTC)
    # A month with usage to weeks: April 1 is a Wednesday, so the first Monday after it.
    monthly = Spec(1000 * M, "month", "block")
    later = judge(
        monthly, Spec(1000 * M, "week", "block"), 5 * M, datetime(2026, 3, 16, tzinfo=UTC)
    )
    assert later.pending_at == datetime(2026, 4, 6, tzinfo=UTC)
    # A finer period that begins inside the current, unused one applies at once.
    assert judge(weekly, daily, 0, wednesday) == Decision(daily, None, None)
    # `never` has one period, whose counter no other kind shares: at once when nothing is used.
    assert judge(daily, Spec(None, "never", "block"), 0, wednesday).pending_at is None


KINDS = ["day", "week", "month", "year", "never"]


@given(
    old=st.sampled_from(KINDS),
    new=st.sampled_from(KINDS),
    used=st.sampled_from([0, 1]),
    now=st.datetimes(
        min_value=datetime(2025, 1, 1), max_value=datetime(2030, 12, 31), timezones=st.just(UTC)
    ),
)
def test_a_new_reset_period_never_begins_before_it_applies(old, new, used, now):
    from webapp.services.periods import next_reset, period_start

    decision = judge(Spec(None, old, "allow"), Spec(None, new, "allow"), used, now)
    if isinstance(decision, Blocker):
        assert old == "never" and used and new != old
        return
    if old == new:
        assert decision.pending_at is None
        return
    at = decision.pending_at or now
    if decision.pending_at is None:
        assert not used
    else:
        assert at >= (next_reset(now, old) if used else now)
    if new != "never":
        # The new kind's period in force when it applies started no earlier than the old
        # kind's unused period (at once) or exactly then (scheduled): no older counter is its.
        start = period_start(at, new)
        assert start == at if decision.pending_at else start >= period_start(now, old)
