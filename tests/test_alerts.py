"""Alerts (docs/domain.md, "Alerts"): each event type is written to the outbox exactly once per
crossing, in the transaction of the write that crossed, and re-arms when the value goes back.
Read from outbox_events (delivery is tested with the worker)."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import event, select

from webapp.errors import DomainError
from webapp.extensions import db
from webapp.models import OutboxEvent
from webapp.services import alerts, credits, outbox, usage, wallets
from webapp.services import catalog as cat
from webapp.services.actors import SYSTEM

C = "cust-6d11ca90"


def outbox_rows(type: str | None = None) -> list[OutboxEvent]:
    db.session.rollback()
    stmt = select(OutboxEvent).order_by(OutboxEvent.id)
    if type is not None:
        stmt = stmt.where(OutboxEvent.type == type)
    return list(db.session.scalars(stmt))


def data(type: str) -> list[dict[str, Any]]:
    return [row.data for row in outbox_rows(type)]


def record(customer: str = C, feature: str = "api_calls", amount: object = 1, **more: Any):
    return usage.record_usage(
        SYSTEM, customer_key=customer, feature_key=feature, amount=amount, **more
    )


def topup(amount: str, customer: str = C, **terms: Any):
    return wallets.topup_wallet(
        SYSTEM, customer_key=customer, credit_system="credits", amount=amount, **terms
    )


def set_threshold(value: object, customer: str = C) -> None:
    wallets.set_low_balance_threshold(
        SYSTEM, customer_key=customer, credit_system="credits", threshold=value
    )


# ---------------------------------------------------------------- wallets


def test_balance_low_fires_once_per_crossing_and_rearms_above_the_threshold(catalog, clock):
    set_threshold("5")  # 10 credits, 0.02 a call
    record(amount=200)  # 10 -> 6
    assert data("wallet.balance_low") == []
    record(amount=50)  # 6 -> 5: at the threshold is low
    record(amount=1)  # 5 -> 4.98: still low, no second event
    (low,) = data("wallet.balance_low")
    assert low == {
        "customer_key": C,
        "credit_system": "credits",
        "balance": "5",
        "previous_balance": "6",
        "cause": "usage",
        "threshold": "5",
    }
    topup("10")  # 4.98 -> 14.98: re-armed
    assert len(data("credit.purchased")) == 2  # the catalog's topup and this one
    record(amount=500)  # 14.98 -> 4.98
    assert [d["balance"] for d in data("wallet.balance_low")] == ["5", "4.98"]
    assert data("wallet.depleted") == []


def test_a_credit_systems_default_threshold_applies_to_wallets_without_their_own(app, clock):
    cat.create_credit_system(SYSTEM, key="credits", name="Credits", low_balance_threshold="3")
    cat.create_feature(SYSTEM, key="api_calls", name="API", type="consumable")
    cat.set_credit_cost(SYSTEM, "api_calls", credit_system="credits", cost="1")
    cat.create_customer(SYSTEM, key=C, name="C")
    cat.set_entitlement(SYSTEM, C, "api_calls", allowance=None, reset_period="month")
    topup("5")
    record(amount=2)  # 5 -> 3
    assert [d["threshold"] for d in data("wallet.balance_low")] == ["3"]
    set_threshold("1")  # the wallet's own wins
    topup("10")  # 13
    record(amount=11)  # 13 -> 2: under 3 but above 1
    assert len(data("wallet.balance_low")) == 1
    record(amount=1)  # 2 -> 1
    assert [d["threshold"] for d in data("wallet.balance_low")] == ["3", "1"]
    with pytest.raises(DomainError) as refused:
        cat.create_credit_system(SYSTEM, key="t", name="T", low_balance_threshold="-1")
    assert refused.value.details["field"] == "low_balance_threshold"


def test_depleted_by_an_adjustment_and_again_after_a_topup(catalog, clock):
    wallets.adjust_wallet(
        SYSTEM, customer_key=C, credit_system="credits", amount="-10", reason="refund"
    )
    (depleted,) = data("wallet.depleted")
    assert depleted["balance"] == "0" and depleted["cause"] == "adjustment"
    topup("0.04")
    record(amount=1)
    assert data("wallet.depleted") == [depleted]
    record(amount=1)  # 0.02 -> 0
    assert [d["cause"] for d in data("wallet.depleted")] == ["adjustment", "usage"]


def test_voiding_a_grant_writes_grant_voided_once_and_may_cross(catalog, clock):
    set_threshold("1")
    (grant_id,) = [d["grant_id"] for d in data("credit.purchased")]
    wallets.void_grant(SYSTEM, grant_id=grant_id, reason="refund")
    (voided,) = data("grant.voided")
    assert voided["grant_id"] == grant_id and voided["amount"] == "10"
    assert [d["cause"] for d in data("wallet.balance_low")] == ["void"]
    assert [d["cause"] for d in data("wallet.depleted")] == ["void"]
    with pytest.raises(DomainError):
        wallets.void_grant(SYSTEM, grant_id=grant_id, reason="again")
    assert len(data("grant.voided")) == 1


def test_credit_purchased_payload(catalog, clock):
    result = topup("2.5", reference="INV-1", unit_price="0.01", currency="eur")
    event = data("credit.purchased")[-1]
    assert event == {
        "customer_key": C,
        "credit_system": "credits",
        "grant_id": result.entry.grant_id,
        "amount": "2.5",
        "kind": "purchased",
        "reference": "INV-1",
        "priority": 200,
        "effective_at": event["effective_at"],
        "expires_at": None,
        "unit_price": "0.01",
        "currency": "EUR",
        "balance": "12.5",
    }


# ---------------------------------------------------------------- expiry


def test_expiring_soon_once_per_grant_then_expired_once_by_the_first_writer(catalog, clock):
    set_threshold("9")
    soon = topup("5", expires_at=(clock.now + timedelta(days=3)).isoformat())
    topup("1", expires_at=(clock.now + timedelta(days=30)).isoformat())  # not within 7 days
    assert alerts.scan_expiring(clock.now) == 1
    assert alerts.scan_expiring(clock.now) == 0
    (warned,) = data("credits.expiring_soon")
    assert warned["grant_id"] == soon.entry.grant_id and warned["remaining"] == "5"
    assert warned["days"] == 7
    clock.advance(days=3)
    assert alerts.scan_expiring(clock.now) == 0  # past its expiry: not "soon" any more
    record(amount=1)  # books the expiry first: 16 -> 11 (expired) -> 10.98
    (expired,) = data("credits.expired")
    assert expired == {
        "customer_key": C,
        "credit_system": "credits",
        "grant_id": soon.entry.grant_id,
        "amount": "5",
        "expired_at": alerts.iso(clock.now),
    }
    credits.expire_due(now=clock.now)
    record(amount=1)
    assert len(data("credits.expired")) == 1
    assert data("wallet.balance_low") == []  # 10.96 > 9


def test_the_sweep_books_expired_credits_and_their_crossing(catalog, clock):
    grant = topup("5", expires_at=(clock.now + timedelta(hours=1)).isoformat())
    set_threshold("12")
    clock.advance(hours=2)
    credits.expire_due(now=clock.now)
    credits.expire_due(now=clock.now)
    assert [d["grant_id"] for d in data("credits.expired")] == [grant.entry.grant_id]
    (low,) = data("wallet.balance_low")
    assert (low["previous_balance"], low["balance"], low["cause"]) == ("15", "10", "expiry")
    # A topup books it too (the ORM writers): one event per grant whoever books it.
    grant = topup("1", expires_at=(clock.now + timedelta(hours=1)).isoformat())
    clock.advance(hours=2)
    topup("1")
    assert [d["grant_id"] for d in data("credits.expired")][-1] == grant.entry.grant_id
    assert len(data("credits.expired")) == 2


def test_a_correction_sees_the_crossing_of_the_expiries_it_books(catalog, clock):
    """A correction locks the wallet and books its due expiries first, like every wallet write:
    the value before is read before that booking, so the crossing it makes is not lost."""
    from webapp.services import corrections

    topup("20", expires_at=(clock.now + timedelta(hours=1)).isoformat())  # spent first
    record(amount=50, event_id="e-exp")  # 1 credit from the expiring grant: 30 -> 29
    set_threshold("15")
    clock.advance(hours=2)  # 19 credits of it are past their expiry, not booked yet
    corrections.correct_usage(
        SYSTEM, customer_key=C, event_id="e-exp", actual_amount="40", reason="it was 40"
    )  # the 0.2 refunded goes back to the expired grant and out again at once
    (low,) = data("wallet.balance_low")
    assert (low["previous_balance"], low["balance"], low["cause"]) == ("29", "10", "correction")


def test_a_batch_labels_each_wallets_crossing_by_what_moved_that_wallet(catalog, clock):
    """In one call, wallet A pays for usage while wallet B only has an expiry booked (its own
    event is refused): B's crossing says `expiry`, not `usage`."""
    from tests.factories import add_customer

    add_customer("cust-b", topup="1")
    topup("10", customer="cust-b", expires_at=(clock.now + timedelta(hours=1)).isoformat())
    set_threshold("5", customer="cust-b")
    clock.advance(hours=2)  # B: 11 -> 1 once the expiry is booked
    usage.record_usage_batch(
        SYSTEM,
        [
            {"customer_key": C, "feature_key": "api_calls", "amount": 1},
            {"customer_key": "cust-b", "feature_key": "api_calls", "amount": 100},  # 2 > 1
        ],
    )
    (low,) = data("wallet.balance_low")
    assert (low["customer_key"], low["cause"]) == ("cust-b", "expiry")


# ---------------------------------------------------------------- usage thresholds


def test_usage_thresholds_fire_once_each_and_rearm_in_a_new_period(app, clock):
    clock.now = datetime(2026, 3, 10, 12, tzinfo=UTC)
    from tests.factories import make_catalog

    make_catalog(api_allowance=10, topup="100")
    record(amount=7)
    assert data("usage.threshold_reached") == []
    record(amount=1)  # 8 of 10: 80 %
    record(amount=1)
    record(amount=1)  # 10: 100 %
    assert [(d["percentage"], d["used"]) for d in data("usage.threshold_reached")] == [
        (80, 8),
        (100, 10),
    ]
    with pytest.raises(DomainError):
        record(amount=1)  # blocked: no more thresholds
    clock.now = datetime(2026, 4, 1, 0, 5, tzinfo=UTC)
    record(amount=9)  # a new period: 80 % again (100 % not yet)
    reached = data("usage.threshold_reached")
    assert [(d["percentage"], d["period_start"]) for d in reached] == [
        (80, "2026-03-01T00:00:00Z"),
        (100, "2026-03-01T00:00:00Z"),
        (80, "2026-04-01T00:00:00Z"),
    ]
    assert reached[0] == {
        "customer_key": C,
        "feature_key": "api_calls",
        "percentage": 80,
        "used": 8,
        "allowance": 10,
        "period_start": "2026-03-01T00:00:00Z",
        "cause": "usage",
    }


def test_seats_going_down_below_a_percentage_and_up_again_fire_again(catalog, clock):
    record(feature="seats", amount=8)  # 80 % of 10
    record(feature="seats", amount=-1)
    record(feature="seats", amount=1)  # 80 % again
    record(feature="seats", amount=2)  # 100 %
    assert [d["percentage"] for d in data("usage.threshold_reached")] == [80, 80, 100]


def test_a_batch_detects_from_its_first_before_to_each_after(catalog, clock, app):
    app.config["USAGE_ALERT_PERCENTAGES"] = "50, 80"
    results = usage.record_usage_batch(
        SYSTEM,
        [
            {"customer_key": C, "feature_key": "seats", "amount": 8},  # 0 -> 8: 50 and 80
            {"customer_key": C, "feature_key": "seats", "amount": -4},  # 4
            {"customer_key": C, "feature_key": "seats", "amount": 1},  # 5: below 8 all along
        ],
    )
    assert not [r for r in results if isinstance(r, DomainError)]
    assert sorted(d["percentage"] for d in data("usage.threshold_reached")) == [50, 80]


def test_an_allowance_lowered_past_the_usage_reaches_its_percentages(catalog, clock):
    record(feature="seats", amount=7)  # 70 % of 10
    cat.set_entitlement(SYSTEM, C, "seats", allowance=8)  # 87.5 %
    cat.set_entitlement(SYSTEM, C, "seats", allowance=8)  # unchanged: nothing
    cat.set_entitlement(SYSTEM, C, "seats", allowance=7)  # 100 %
    cat.set_entitlement(SYSTEM, C, "seats", allowance=20)  # 35 %: re-armed
    cat.set_entitlement(SYSTEM, C, "seats", allowance=8)  # 80 again
    reached = data("usage.threshold_reached")
    assert [(d["percentage"], d["allowance"], d["cause"]) for d in reached] == [
        (80, 8, "allowance"),
        (100, 7, "allowance"),
        (80, 8, "allowance"),
    ]
    record(feature="seats", amount=1)  # 8 of 8: 100 % by usage
    assert [d["cause"] for d in data("usage.threshold_reached")][-1] == "usage"


def test_a_plan_edit_that_lowers_an_allowance_past_the_usage_reaches_its_percentages(
    catalog, clock
):
    """A plan edit writes every customer's entitlement like a single edit does: an allowance
    lowered past what the period used is a crossing, in the transaction of that customer's batch."""
    from webapp.services import plans

    def edit(allowance: str) -> None:
        spec = {"feature_key": "api_calls", "reset_period": "month", "overage": "allow"}
        plans.update_plan(SYSTEM, "pro", entitlements=[{**spec, "allowance": allowance}])

    plans.create_plan(SYSTEM, key="pro", name="Pro")
    edit("2000")
    plans.change_customer_plan(SYSTEM, C, "pro")
    topup("100")
    record(amount=900)  # 45 % of 2000
    edit("1000")  # 90 %: 80 % reached
    edit("1000")  # unchanged: nothing
    edit("5000")  # 18 %: re-armed
    edit("900")  # 100 %: both
    reached = data("usage.threshold_reached")
    assert [(d["percentage"], d["allowance"], d["cause"]) for d in reached] == [
        (80, 1000, "allowance"),
        (80, 900, "allowance"),
        (100, 900, "allowance"),
    ]


def test_a_threshold_raised_past_the_balance_is_a_crossing(catalog, clock):
    set_threshold("10")  # 10 <= 10: low now
    set_threshold("12")  # still low: nothing
    set_threshold("2")  # not low: re-armed
    set_threshold(None)
    set_threshold("11")
    lows = data("wallet.balance_low")
    assert [(d["threshold"], d["balance"], d["cause"]) for d in lows] == [
        ("10", "10", "threshold"),
        ("11", "10", "threshold"),
    ]


def test_unlimited_and_zero_allowances_never_fire(catalog, clock):
    cat.set_entitlement(SYSTEM, C, "seats", allowance=None)
    record(feature="seats", amount=50)
    assert data("usage.threshold_reached") == []


# ---------------------------------------------------------------- usage.blocked


def test_blocked_at_most_once_per_customer_feature_and_hour(app, clock):
    clock.now = datetime(2026, 3, 10, 12, 1, tzinfo=UTC)
    from tests.factories import make_catalog

    make_catalog(api_allowance=2, topup="0.02")
    record(amount=1)
    with pytest.raises(DomainError, match="pass the allowance"):
        record(amount=2)  # limit_exceeded
    with pytest.raises(DomainError):
        record(amount=2)
    (blocked,) = data("usage.blocked")
    assert blocked == {
        "customer_key": C,
        "feature_key": "api_calls",
        "reason": "limit_exceeded",
        "amount": 2,
        "details": {"used": 1, "allowance": 2, "available": 1},
        "hour": "2026-03-10T12:00:00Z",
    }
    with pytest.raises(DomainError) as refused:
        record(amount=1)  # within the allowance, but the wallet is empty
    assert refused.value.code == "insufficient_credits"
    assert len(data("usage.blocked")) == 1  # same customer, feature and hour
    with pytest.raises(DomainError):
        record(feature="candidates", amount=1)  # another feature
    clock.advance(hours=1)
    results = usage.record_usage_batch(
        SYSTEM, [{"customer_key": C, "feature_key": "api_calls", "amount": 1}] * 3
    )
    assert all(isinstance(r, DomainError) for r in results)
    assert [(d["feature_key"], d["reason"], d["hour"]) for d in data("usage.blocked")] == [
        ("api_calls", "limit_exceeded", "2026-03-10T12:00:00Z"),
        ("candidates", "insufficient_credits", "2026-03-10T12:00:00Z"),
        ("api_calls", "insufficient_credits", "2026-03-10T13:00:00Z"),
    ]
    # Other refusals raise nothing.
    with pytest.raises(DomainError):
        record(feature="seats", amount=-1)  # invalid_amount
    assert len(data("usage.blocked")) == 3


# ---------------------------------------------------------------- customers


def test_a_correction_that_charges_more_may_cross_a_wallet_and_a_usage_threshold(catalog, clock):
    """A correction upwards is a wallet write and a counter write like usage: its crossings go to
    the outbox in its transaction (a refund crosses nothing downwards)."""
    from webapp.services import corrections

    topup("100")  # 110 credits
    record(amount=100, event_id="e-fix")  # 110 -> 108; 100 of 1000 calls
    set_threshold("95")
    corrections.correct_usage(
        SYSTEM, customer_key=C, event_id="e-fix", actual_amount="900", reason="typed 100"
    )  # 800 more calls at 0.02: 108 -> 92 (under 95); 900 of 1000: 80 % reached
    (low,) = data("wallet.balance_low")
    assert (low["previous_balance"], low["balance"], low["cause"]) == ("108", "92", "correction")
    reached = data("usage.threshold_reached")
    assert [d["feature_key"] for d in reached] == ["api_calls"]
    corrections.correct_usage(
        SYSTEM, customer_key=C, event_id="e-fix", actual_amount="50", reason="it was 50"
    )  # a refund: 92 -> 109, 50 calls
    corrections.correct_usage(
        SYSTEM, customer_key=C, event_id="e-fix", actual_amount="950", reason="no, 950"
    )  # 109 -> 91 again: a second crossing of each (re-armed by the refund)
    assert len(data("wallet.balance_low")) == 2
    assert len(data("usage.threshold_reached")) == 2
    assert len(data("usage.corrected")) == 3


def test_customer_created_updated_deleted(app, clock):
    cat.create_customer(SYSTEM, key="cust-a", name="A", email="a@example.com")
    cat.update_customer(SYSTEM, "cust-a", name="A2")
    cat.set_customer_status(SYSTEM, "cust-a", "archived")
    cat.set_customer_status(SYSTEM, "cust-a", "active")
    cat.create_customer(SYSTEM, key="cust-b", name="B")
    cat.delete_customer(SYSTEM, "cust-b")
    seen = [(r.type, r.customer_key) for r in outbox_rows()]
    assert seen == [
        ("customer.created", "cust-a"),
        ("customer.updated", "cust-a"),
        ("customer.deleted", "cust-a"),
        ("customer.updated", "cust-a"),
        ("customer.created", "cust-b"),
        ("customer.deleted", "cust-b"),
    ]
    created = outbox_rows("customer.created")[0].data
    assert created == {
        "customer_key": "cust-a",
        "name": "A",
        "email": "a@example.com",
        "status": "active",
        "metadata": {},
    }
    archived, deleted = data("customer.deleted")
    assert (archived["archived"], archived["deleted"]) == (True, False)
    assert (deleted["archived"], deleted["deleted"]) == (False, True)


# ---------------------------------------------------------------- transactions


def test_a_rolled_back_write_leaves_no_event(catalog, clock):
    """The crossing and its event are in one transaction: a failure at commit undoes both."""
    set_threshold("9.99")
    before = len(outbox_rows())

    def fail(_session) -> None:
        raise RuntimeError("the commit fails")

    event.listen(db.session, "before_commit", fail)
    try:
        with pytest.raises(RuntimeError):
            record(amount=1)  # 10 -> 9.98 would be low
        with pytest.raises(RuntimeError):
            wallets.adjust_wallet(
                SYSTEM, customer_key=C, credit_system="credits", amount="-10", reason="x"
            )
    finally:
        event.remove(db.session, "before_commit", fail)
    assert len(outbox_rows()) == before
    record(amount=1)  # the same crossing, committed this time
    assert len(data("wallet.balance_low")) == 1


def test_the_envelope(catalog):
    row = outbox_rows("customer.created")[0]
    env = outbox.envelope(row)
    assert env["id"] == f"evt_{row.id}" and env["type"] == "customer.created"
    assert env["created_at"].endswith("Z") and env["data"]["customer_key"] == C


# ---------------------------------------------------------------- concurrency


THREADS = 16


def _race(app, work) -> list[BaseException]:
    errors: list[BaseException] = []
    barrier = threading.Barrier(THREADS)

    def run(i: int) -> None:
        with app.app_context():
            barrier.wait()
            try:
                work(i)
            except BaseException as exc:  # noqa: BLE001
                errors.append(exc)
            finally:
                db.session.remove()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads)
    return errors


@pytest.mark.slow
def test_sixteen_writers_around_one_wallet_and_one_usage_threshold_raise_one_event_each(app):
    """1 credit, low at 0.75, 0.02 a call: the 13th call crosses. An allowance of 20: the 16th
    reaches 80 %. Sixteen threads record one call each at once."""
    from tests.factories import make_catalog

    make_catalog(api_allowance=20, topup="1")
    set_threshold("0.75")
    db.session.remove()
    errors = _race(app, lambda i: record(event_id=f"race-{i}"))
    assert not errors, errors
    (low,) = data("wallet.balance_low")
    assert (low["previous_balance"], low["balance"]) == ("0.76", "0.74")
    (reached,) = data("usage.threshold_reached")
    assert (reached["percentage"], reached["used"]) == (80, 16)


@pytest.mark.slow
def test_sixteen_adjustments_around_one_wallet_threshold_raise_one_event(catalog, app):
    """The ORM writers: 10 credits, low at 6.5, sixteen adjustments of -0.5 at once."""
    set_threshold("6.5")
    db.session.remove()
    errors = _race(
        app,
        lambda i: wallets.adjust_wallet(
            SYSTEM, customer_key=C, credit_system="credits", amount="-0.5", reason=f"r{i}"
        ),
    )
    assert not errors, errors
    (low,) = data("wallet.balance_low")
    assert (low["previous_balance"], low["balance"]) == ("7", "6.5")
    assert data("wallet.depleted") == []


# ---------------------------------------------------------------- the overview's in-app alerts


def test_in_app_alerts_list_near_limits_low_wallets_and_expiring_credits(catalog, clock, client):
    from tests.web import signed_in
    from webapp.services import dashboard

    assert not dashboard.in_app_alerts(SYSTEM).any
    record(feature="seats", amount=9)  # 90 % of 10
    record(amount=100)  # 10 % of 1000; 10 -> 8 credits
    set_threshold("8")
    topup("1", expires_at=(clock.now + timedelta(days=2)).isoformat(), priority=999)  # 9
    found = dashboard.in_app_alerts(SYSTEM)
    assert [(n.feature_key, n.percent) for n in found.near_limit] == [("seats", 90)]
    assert found.low_wallets == []  # 9 > 8
    assert [(g.remaining_micros, g.customer_key) for g in found.expiring] == [(1_000_000, C)]
    record(amount=50)  # 9 -> 8: low
    found = dashboard.in_app_alerts(SYSTEM)
    assert [(w.balance_micros, w.threshold_micros) for w in found.low_wallets] == [
        (8_000_000, 8_000_000)
    ]
    assert (found.near_limit_total, found.low_wallets_total, found.expiring_total) == (1, 1, 1)

    page = signed_in(client, "support").get("/").get_data(as_text=True)
    assert "Near a limit" in page and "90&nbsp;%" in page and "low at 8" in page


def test_the_wallets_page_shows_the_credit_systems_default_threshold(catalog, client):
    from tests.web import signed_in

    cat.update_credit_system(SYSTEM, "credits", name="Credits", low_balance_threshold="20")
    page = signed_in(client, "support").get("/wallets").get_data(as_text=True)
    assert "20.00 (default)" in page and '<span class="badge warn">low</span>' in page
    admin_page = signed_in(client, "admin").get("/admin/credit-systems/credits/edit")
    assert 'value="20"' in admin_page.get_data(as_text=True)


def test_expiring_soon_skips_voided_and_spent_grants_and_two_scans_at_once_warn_once(
    catalog, clock, app
):
    grants = [
        topup(
            "1", expires_at=(clock.now + timedelta(days=d)).isoformat(), priority=0
        ).entry.grant_id
        for d in (1, 2, 3)
    ]
    wallets.void_grant(SYSTEM, grant_id=grants[0], reason="refund")
    record(amount=50)  # 1 credit: empties the soonest live grant first (priority 0)
    db.session.remove()
    if db.engine.dialect.name == "sqlite":
        counts = [alerts.scan_expiring(clock.now) for _ in range(2)]
    else:
        counts = []
        barrier = threading.Barrier(2)

        def scan() -> None:
            with app.app_context():
                barrier.wait()
                counts.append(alerts.scan_expiring(clock.now))
                db.session.remove()

        threads = [threading.Thread(target=scan) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    assert sum(counts) >= 1
    assert [d["grant_id"] for d in data("credits.expiring_soon")] == [grants[2]]


def test_a_refused_call_books_no_expiry_and_raises_no_credits_expired(app, clock):
    """A refusal writes nothing, not even the expiry it found due (domain.md, "Expiry"): its
    event neither; its usage.blocked is written."""
    from tests.factories import make_catalog

    make_catalog(topup=None)
    topup("0.01", expires_at=(clock.now + timedelta(hours=1)).isoformat())
    clock.advance(hours=2)
    with pytest.raises(DomainError) as refused:
        record(amount=1)  # 0.02 needed, nothing left
    assert refused.value.code == "insufficient_credits"
    assert data("credits.expired") == [] and len(data("usage.blocked")) == 1
    credits.expire_due(now=clock.now)
    assert len(data("credits.expired")) == 1


@pytest.mark.parametrize(
    "setting",
    [
        {"USAGE_ALERT_PERCENTAGES": "80, x"},
        {"USAGE_ALERT_PERCENTAGES": [0, 80]},
        {"USAGE_ALERT_PERCENTAGES": []},
        {"USAGE_ALERT_PERCENTAGES": 80},
        {"CREDITS_EXPIRING_SOON_DAYS": 0},
        {"CREDITS_EXPIRING_SOON_DAYS": "7"},
    ],
)
def test_bad_alert_settings_stop_the_app_at_start(setting):
    from tests.conftest import TEST_CONFIG
    from webapp import create_app

    with pytest.raises(RuntimeError):
        create_app({**TEST_CONFIG, "SQLALCHEMY_DATABASE_URI": "sqlite://", **setting})
    assert alerts.parse_percentages("100, 80,80") == (80, 100)
