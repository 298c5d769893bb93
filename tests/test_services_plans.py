"""Plans through the services: assignment, overrides, plan edits, plan changes and included
credits, on both databases (ledger verify runs after each test, with the plans checks)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from tests.factories import make_catalog
from webapp.errors import NotFound, PlanChangeBlocked, ValidationError
from webapp.extensions import db
from webapp.models import CreditGrant, Entitlement, Feature, PlanCreditIssuance
from webapp.services import catalog as cat
from webapp.services import plans, usage
from webapp.services.actors import SYSTEM
from webapp.services.verify import verify_ledger

C = "cust-6d11ca90"
STARTER = [
    {"feature_key": "api_calls", "allowance": "1000", "reset_period": "month", "overage": "block"},
    {"feature_key": "seats", "allowance": "3", "reset_period": "never", "overage": "block"},
    {"feature_key": "sso", "allowance": None, "reset_period": "never", "overage": "block"},
]
CREDITS = [{"credit_system": "credits", "amount": "30", "period": "month"}]


def _rows(customer: str) -> dict[str, tuple[object, ...]]:
    found = db.session.execute(
        db.select(Feature.key, Entitlement)
        .join(Entitlement, Entitlement.feature_id == Feature.id)
        .join(cat.Customer, cat.Customer.id == Entitlement.customer_id)
        .where(cat.Customer.key == customer)
    ).all()
    db.session.commit()
    return {
        key: (e.allowance_micros, e.reset_period, e.overage, e.source, e.overridden)
        for key, e in found
    }


@pytest.fixture
def starter(app, clock):
    clock.now = datetime(2026, 3, 16, 12, tzinfo=UTC)
    make_catalog(topup=None)
    plans.create_plan(
        SYSTEM, key="starter", name="Starter", entitlements=STARTER, included_credits=CREDITS
    )
    return clock


def test_putting_a_customer_on_a_plan_materializes_it_and_issues_credits(starter):
    change = plans.change_customer_plan(SYSTEM, C, "starter")
    assert change.issued == 1
    rows = _rows(C)
    assert rows["api_calls"] == (1000 * 10**6, "month", "block", "plan", None)
    # candidates (the customer's own, the plan lacks it) stays, as an override
    assert rows["candidates"][3:] == ("override", "allowance,reset_period,overage")
    grant = db.session.scalars(db.select(CreditGrant)).one()
    assert (grant.kind, grant.amount_micros) == ("granted", 30 * 10**6)
    assert grant.expires_at == datetime(2026, 4, 1, tzinfo=UTC)
    # The same period again issues nothing, however often.
    assert plans.issue_included_credits() == 0
    assert plans.issue_included_credits() == 0
    assert verify_ledger().ok


def test_overrides_through_the_entitlement_doors(starter):
    plans.change_customer_plan(SYSTEM, C, "starter")
    cat.update_entitlement(SYSTEM, C, "api_calls", allowance="5000")
    assert _rows(C)["api_calls"] == (5000 * 10**6, "month", "block", "override", "allowance")
    # a plan edit of another field still reaches the overridden feature
    edited = [dict(e) for e in STARTER]
    edited[0]["overage"] = "allow"
    plans.update_plan(SYSTEM, "starter", entitlements=edited)
    assert _rows(C)["api_calls"] == (5000 * 10**6, "month", "allow", "override", "allowance")
    cat.remove_entitlement(SYSTEM, C, "api_calls")
    assert _rows(C)["api_calls"] == (1000 * 10**6, "month", "allow", "plan", None)
    with pytest.raises(NotFound):
        cat.remove_entitlement(SYSTEM, C, "api_calls")


def test_a_plan_edit_under_usage_is_refused_or_applied_to_the_others(starter):
    plans.change_customer_plan(SYSTEM, C, "starter")
    cat.create_customer(SYSTEM, key="cust-2", name="Two")
    plans.change_customer_plan(SYSTEM, "cust-2", "starter")
    usage.record_usage(SYSTEM, customer_key=C, feature_key="seats", amount=3)
    edited = [dict(e) for e in STARTER]
    edited[1]["allowance"] = "2"
    with pytest.raises(PlanChangeBlocked) as refused:
        plans.update_plan(SYSTEM, "starter", entitlements=edited)
    assert [b["customer_key"] for b in refused.value.details["blocked"]] == [C]
    assert _rows("cust-2")["seats"][0] == 3 * 10**6  # nothing changed
    done = plans.update_plan(SYSTEM, "starter", entitlements=edited, apply_to_others=True)
    assert done.updated == 2 and [k.customer_key for k in done.kept] == [C]
    assert _rows("cust-2")["seats"][0] == 2 * 10**6
    assert _rows(C)["seats"][:1] + _rows(C)["seats"][3:] == (
        3 * 10**6,
        "override",
        "allowance,overage",
    )


def test_a_plan_change_with_seats_above_the_new_allowance_lists_what_to_reclaim(starter):
    plans.change_customer_plan(SYSTEM, C, "starter")
    plans.create_plan(
        SYSTEM,
        key="tiny",
        name="Tiny",
        entitlements=[dict(STARTER[1], allowance="1")],
    )
    usage.record_usage(SYSTEM, customer_key=C, feature_key="seats", amount=2)
    for when in ("now", "period_end"):
        with pytest.raises(PlanChangeBlocked) as refused:
            plans.change_customer_plan(SYSTEM, C, "tiny", when=when)
        assert refused.value.details["blocked"][0]["feature_key"] == "seats"
    usage.reclaim_seats(SYSTEM, customer_key=C, feature_key="seats", count=1)
    change = plans.change_customer_plan(SYSTEM, C, "tiny", when="period_end")
    assert change.scheduled and change.at == datetime(2026, 4, 1, tzinfo=UTC)
    assert _rows(C)["seats"][0] == 3 * 10**6  # not yet
    starter.now = datetime(2026, 4, 1, 0, 5, tzinfo=UTC)
    result = plans.tick()
    assert result.plan_changes == 1
    assert _rows(C)["seats"][0] == 1 * 10**6


def test_a_reset_period_change_with_usage_waits_for_the_period_end(starter):
    plans.change_customer_plan(SYSTEM, C, "starter")
    usage.record_usage(SYSTEM, customer_key=C, feature_key="api_calls", amount=5)
    edited = [dict(e) for e in STARTER]
    edited[0]["reset_period"] = "day"
    plans.update_plan(SYSTEM, "starter", entitlements=edited)
    row = db.session.execute(
        db.select(Entitlement).join(Feature).where(Feature.key == "api_calls")
    ).scalar_one()
    assert (row.reset_period, row.pending_reset_period) == ("month", "day")
    assert verify_ledger().ok
    starter.now = datetime(2026, 4, 1, 0, 1, tzinfo=UTC)
    assert plans.apply_scheduled_resets() == 1
    assert _rows(C)["api_calls"][1] == "day"


def test_the_single_entitlement_edit_schedules_a_reset_change_too(app, clock):
    clock.now = datetime(2026, 3, 16, 12, tzinfo=UTC)
    make_catalog()
    usage.record_usage(SYSTEM, customer_key=C, feature_key="api_calls", amount=5)
    cat.update_entitlement(SYSTEM, C, "api_calls", reset_period="week")
    row = db.session.execute(
        db.select(Entitlement).join(Feature).where(Feature.key == "api_calls")
    ).scalar_one()
    assert (row.reset_period, row.pending_reset_period) == ("month", "week")
    # The month ends on Wednesday April 1; weeks start on Mondays: the first one after it.
    assert row.pending_reset_at == datetime(2026, 4, 6, tzinfo=UTC)
    cat.set_entitlement(SYSTEM, C, "seats", allowance=10)
    with pytest.raises(ValidationError):
        cat.update_entitlement(SYSTEM, C, "api_calls", allowance="1")


def test_prorated_included_credits_and_no_second_issue_after_a_plan_round_trip(starter):
    plans.update_plan(SYSTEM, "starter", prorate_included_credits=True)
    plans.create_plan(SYSTEM, key="other", name="Other", entitlements=STARTER)
    starter.now = datetime(2026, 3, 17, tzinfo=UTC)  # 15 of 31 days left
    change = plans.change_customer_plan(SYSTEM, C, "starter")
    assert change.issued == 1
    grant = db.session.scalars(db.select(CreditGrant)).one()
    assert grant.amount_micros == 30 * 10**6 * 15 // 31
    plans.change_customer_plan(SYSTEM, C, "other")
    plans.change_customer_plan(SYSTEM, C, "starter")
    assert db.session.scalar(db.select(db.func.count()).select_from(PlanCreditIssuance)) == 1
    # Next month: the whole amount, once.
    starter.now = datetime(2026, 4, 1, 0, 0, 1, tzinfo=UTC)
    assert plans.issue_included_credits() == 1
    assert plans.issue_included_credits() == 0


def test_leaving_a_plan_keeps_the_entitlements_as_the_customers_own(starter):
    plans.change_customer_plan(SYSTEM, C, "starter")
    cat.update_entitlement(SYSTEM, C, "api_calls", allowance="7")
    plans.change_customer_plan(SYSTEM, C, None)
    rows = _rows(C)
    assert rows["api_calls"] == (7 * 10**6, "month", "block", "customer", None)
    assert {r[3] for r in rows.values()} == {"customer"}


def test_the_plans_commands(starter, runner, tmp_path):
    plans.change_customer_plan(SYSTEM, C, "starter")
    usage.record_usage(SYSTEM, customer_key=C, feature_key="seats", amount=3)
    body = tmp_path / "plan.json"
    smaller = [dict(e) for e in STARTER]
    smaller[1]["allowance"] = "2"
    body.write_text(__import__("json").dumps({"entitlements": smaller}))
    refused = runner.invoke(args=["plans", "edit", "starter", str(body)])
    assert refused.exit_code == 1 and "plan_change_blocked" in refused.output
    done = runner.invoke(args=["plans", "edit", "starter", str(body), "--apply-to-others"])
    assert done.exit_code == 0, done.output
    assert "1 customers updated" in done.output and f"{C} keeps its seats" in done.output
    starter.now = datetime(2026, 4, 1, 0, 1, tzinfo=UTC)
    issued = runner.invoke(args=["plans", "issue-credits"])
    assert issued.exit_code == 0 and "Issued 1 included credit grants." in issued.output
    tick = runner.invoke(args=["plans", "tick"])
    assert tick.exit_code == 0 and "issued 0 included credit grants" in tick.output
    scheduled = runner.invoke(args=["plans", "apply-scheduled"])
    assert scheduled.exit_code == 0 and "0 plan changes" in scheduled.output


def test_a_coarser_reset_period_does_not_take_over_an_older_counter(app, clock):
    """Found while fixing concurrent edits: a daily allowance with 90 used on Monday, changed on
    Wednesday (nothing used yet that day) to 50 a week, applied at once; the week's counter is
    keyed by Monday, so Monday's day counter became the week's (90 > 50: `ledger verify` failed)
    and Tuesday's usage was not in it. The week now starts next Monday."""
    clock.now = datetime(2026, 3, 9, 10, tzinfo=UTC)  # a Monday
    make_catalog()
    cat.update_entitlement(SYSTEM, C, "api_calls", allowance="100", reset_period="day")
    usage.record_usage(SYSTEM, customer_key=C, feature_key="api_calls", amount=90)
    clock.now = datetime(2026, 3, 10, 10, tzinfo=UTC)
    usage.record_usage(SYSTEM, customer_key=C, feature_key="api_calls", amount=30)
    clock.now = datetime(2026, 3, 11, 10, tzinfo=UTC)
    cat.update_entitlement(SYSTEM, C, "api_calls", allowance="50", reset_period="week")
    row = db.session.execute(
        db.select(Entitlement).join(Feature).where(Feature.key == "api_calls")
    ).scalar_one()
    assert (row.allowance_micros, row.reset_period) == (50 * 10**6, "day")
    assert (row.pending_reset_period, row.pending_reset_at) == (
        "week",
        datetime(2026, 3, 16, tzinfo=UTC),
    )
    report = verify_ledger()
    assert report.ok, report.violations
    usage.record_usage(SYSTEM, customer_key=C, feature_key="api_calls", amount=50)  # today's
    clock.now = datetime(2026, 3, 16, 0, 1, tzinfo=UTC)
    assert plans.apply_scheduled_resets() == 1
    assert _rows(C)["api_calls"][1] == "week"
    usage.record_usage(SYSTEM, customer_key=C, feature_key="api_calls", amount=50)  # a new week
    report = verify_ledger()
    assert report.ok, report.violations
