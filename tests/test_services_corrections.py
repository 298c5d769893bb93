"""Usage corrections (domain.md, "Usage corrections"): each rule, through the service."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select

from tests.conftest import actor
from tests.factories import add_customer
from webapp.errors import DomainError
from webapp.extensions import db
from webapp.models import (
    CreditAllocation,
    CreditGrant,
    LedgerEntry,
    OutboxEvent,
    UsageCorrection,
    UsageCounter,
    UsageDaily,
    Wallet,
)
from webapp.services import catalog as catalog_service
from webapp.services import usage, wallets
from webapp.services.actors import SYSTEM
from webapp.services.corrections import correct_usage, event_credits, preview_correction

CUSTOMER = "cust-6d11ca90"


def record(amount: object, event_id: str, feature: str = "api_calls", **extra: object):
    return usage.record_usage(
        SYSTEM,
        customer_key=CUSTOMER,
        feature_key=feature,
        amount=amount,
        event_id=event_id,
        **extra,
    )


def correct(event_id: str, actual: object, *, who=SYSTEM, **extra: object):
    return correct_usage(
        who,
        customer_key=CUSTOMER,
        event_id=event_id,
        actual_amount=actual,
        reason=extra.pop("reason", "typo"),
        **extra,
    )


def balance() -> int:
    return db.session.scalar(
        select(Wallet.balance_micros).execution_options(populate_existing=True)
    )


def used(feature: str = "api_calls") -> int:
    return db.session.scalar(
        select(func.sum(UsageCounter.used_micros))
        .where(UsageCounter.feature_id == catalog_service.get_feature(feature_key=feature).id)
        .execution_options(populate_existing=True)
    )


def writes() -> tuple[int, int, int, int]:
    return (
        db.session.scalar(select(func.count()).select_from(LedgerEntry)),
        db.session.scalar(select(func.count()).select_from(UsageCorrection)),
        db.session.scalar(select(func.count()).select_from(OutboxEvent)),
        balance(),
    )


def test_event_credits_rule_is_exact_and_proportional():
    assert event_credits(5_000_000, 100_000, 5_000_000) == 100_000
    assert event_credits(5_000_000, 100_000, 0) == 0
    assert event_credits(5_000_000, 100_000, 4_000_000) == 80_000
    assert event_credits(3_000_000, 100_000, 1_000_000) == 33_333  # 33333.3 half up
    assert event_credits(3_000_000, 100_000, 2_000_000) == 66_667  # 66666.6 half up
    assert event_credits(1, 0, 5) == 0  # charged nothing: corrections never charge
    assert event_credits(-1_000_000, 0, -2_000_000) == 0


def test_a_smaller_amount_refunds_credits_and_moves_the_counter_and_the_rollup(catalog):
    record(50, "e1")
    assert balance() == 10_000_000 - 1_000_000
    result = correct("e1", 5)
    assert result.corrected and not result.replayed
    effect = result.effect
    assert (effect.original_micros, effect.effective_before_micros) == (50_000_000, 50_000_000)
    assert (effect.effective_after_micros, effect.delta_micros) == (5_000_000, -45_000_000)
    assert effect.credits_micros == 900_000 and effect.refunded_micros == 900_000
    assert balance() == 10_000_000 - 100_000 == effect.balance_after_micros
    assert used() == 5_000_000 == effect.used_after_micros
    daily = db.session.scalar(select(func.sum(UsageDaily.amount_micros)))
    assert daily == 5_000_000
    entry = db.session.scalar(select(LedgerEntry).where(LedgerEntry.type == "correction"))
    assert entry.amount_micros == 900_000
    parts = db.session.scalars(
        select(CreditAllocation.amount_micros).where(CreditAllocation.ledger_entry_id == entry.id)
    ).all()
    assert parts == [-900_000]
    outbox = db.session.scalar(  # the newest: PostgreSQL tests do not empty the outbox
        select(OutboxEvent)
        .where(OutboxEvent.type == "usage.corrected")
        .order_by(OutboxEvent.id.desc())
        .limit(1)
    )
    assert outbox.customer_key == CUSTOMER
    assert outbox.data["delta"] == "-45" and outbox.data["credits"] == "0.9"


def test_zero_voids_the_event_and_the_credits_come_back_exactly(catalog):
    record(3, "e1")
    correct("e1", 1)
    correct("e1", 2)
    correct("e1", 0)
    assert balance() == 10_000_000
    assert used() == 0


def test_a_larger_amount_charges_like_new_usage_at_the_events_own_cost(catalog):
    record(5, "e1")
    # Today's cost changed: the correction still charges what the event was charged at.
    catalog_service.set_credit_cost(SYSTEM, "api_calls", credit_system="credits", cost="1")
    result = correct("e1", 8)
    assert result.effect.credits_micros == -60_000 and result.effect.deducted_micros == 60_000
    assert balance() == 10_000_000 - 160_000
    assert used() == 8_000_000


def test_an_extra_charge_is_refused_with_the_usual_codes_and_changes_nothing(catalog):
    record(95, "e1", feature="candidates")  # allowance 100, blocked over it
    before = writes()
    with pytest.raises(DomainError) as refused:
        correct("e1", 101)
    assert refused.value.code == "limit_exceeded"
    assert refused.value.field == "actual_amount"
    assert writes() == before
    # Credits: the allowance is unlimited for another customer with a small wallet.
    add_customer("cust-small", api_allowance=None, topup="0.1")
    usage.record_usage(
        SYSTEM, customer_key="cust-small", feature_key="api_calls", amount=5, event_id="s1"
    )
    before = writes()
    with pytest.raises(DomainError) as poor:
        correct_usage(
            SYSTEM, customer_key="cust-small", event_id="s1", actual_amount=6, reason="more"
        )
    assert poor.value.code == "insufficient_credits"
    assert poor.value.details["credits_required"] == "0.02"
    assert poor.value.details["eligible_balance"] == "0"
    assert writes() == before
    # Not entitled any more: more usage is refused, less is still a refund.
    catalog_service.remove_entitlement(SYSTEM, CUSTOMER, "candidates")
    before = writes()
    with pytest.raises(DomainError) as gone:
        correct("e1", 96)
    assert gone.value.code == "not_entitled"
    assert writes() == before
    assert correct("e1", 90).effect.credits_micros == 100_000


def test_refunds_go_back_in_reverse_spending_order(catalog):
    # A granted grant (priority 100) is spent before the purchased one of the catalog (200).
    wallets.adjust_wallet(
        SYSTEM, customer_key=CUSTOMER, credit_system="credits", amount="0.5", reason="goodwill"
    )
    record(40, "e1")  # 0.8 credits: 0.5 from the granted grant, 0.3 from the purchased one
    result = correct("e1", 30)  # 0.2 back: to the purchased grant, last in spending order
    grants = {
        g.kind: g.remaining_micros
        for g in db.session.scalars(select(CreditGrant).execution_options(populate_existing=True))
    }
    assert grants == {"granted": 0, "purchased": 10_000_000 - 300_000 + 200_000}
    assert [(p.amount_micros, p.fate) for p in result.effect.parts] == [(-200_000, "returned")]
    correct("e1", 5)  # 0.5 more: the rest of the purchased part, then the granted grant
    grants = {
        g.kind: g.remaining_micros
        for g in db.session.scalars(select(CreditGrant).execution_options(populate_existing=True))
    }
    assert grants == {"granted": 400_000, "purchased": 10_000_000}


def test_a_refund_to_an_expired_or_voided_grant_is_booked_to_expiry_or_void(catalog, clock):
    add_customer("cust-x", api_allowance=None, topup=None)
    expiring = wallets.topup_wallet(
        SYSTEM,
        customer_key="cust-x",
        credit_system="credits",
        amount="0.1",
        kind="granted",
        expires_at=(clock.now + timedelta(hours=1)).isoformat(),
    )
    voided = wallets.topup_wallet(
        SYSTEM, customer_key="cust-x", credit_system="credits", amount="0.1", priority=150
    )
    wallets.topup_wallet(SYSTEM, customer_key="cust-x", credit_system="credits", amount="1")
    usage.record_usage(
        SYSTEM, customer_key="cust-x", feature_key="api_calls", amount=8, event_id="x1"
    )  # 0.16: 0.1 expiring grant, 0.06 the priority-150 grant
    wallets.void_grant(SYSTEM, grant_id=voided.entry.grant_id, reason="refund")
    clock.advance(hours=2)
    result = correct_usage(
        SYSTEM, customer_key="cust-x", event_id="x1", actual_amount=0, reason="never happened"
    )
    fates = {(p.grant_id, p.amount_micros, p.fate) for p in result.effect.parts}
    assert fates == {
        (voided.entry.grant_id, -60_000, "voided"),
        (expiring.entry.grant_id, -100_000, "expired"),
    }
    dead = {
        g.id: g
        for g in db.session.scalars(select(CreditGrant).execution_options(populate_existing=True))
    }
    assert dead[expiring.entry.grant_id].remaining_micros == 0
    assert dead[expiring.entry.grant_id].expired_micros == 100_000
    assert dead[voided.entry.grant_id].remaining_micros == 0
    assert dead[voided.entry.grant_id].voided_micros == 40_000 + 60_000
    types = db.session.scalars(
        select(LedgerEntry.type).where(LedgerEntry.reference.startswith("correction:"))
    ).all()
    assert sorted(types) == ["expiry", "void"]
    # Nothing came back to life: the wallet holds only the untouched grant.
    assert result.effect.balance_after_micros == 1_000_000


def test_an_extra_charge_uses_grants_eligible_at_the_events_time(catalog, clock):
    add_customer("cust-t", api_allowance=None, topup=None)
    old = wallets.topup_wallet(SYSTEM, customer_key="cust-t", credit_system="credits", amount="1")
    then = clock.now
    usage.record_usage(
        SYSTEM, customer_key="cust-t", feature_key="api_calls", amount=1, event_id="t1"
    )
    clock.advance(hours=1)
    # A grant effective after the event cannot pay for its correction.
    wallets.topup_wallet(
        SYSTEM, customer_key="cust-t", credit_system="credits", amount="5", priority=0
    )
    result = correct_usage(
        SYSTEM, customer_key="cust-t", event_id="t1", actual_amount=11, reason="undercounted"
    )
    assert result.effect.credits_micros == -200_000
    entry = db.session.scalar(select(LedgerEntry).where(LedgerEntry.type == "correction"))
    first = old.entry.grant_id
    parts = db.session.execute(
        select(CreditAllocation.grant_id, CreditAllocation.amount_micros).where(
            CreditAllocation.ledger_entry_id == entry.id
        )
    ).all()
    assert parts == [(first, 200_000)]
    assert then < clock.now


def test_seats_move_the_standing_count_and_never_below_zero(catalog):
    record(3, "s1", feature="seats")
    record(-1, "s2", feature="seats")
    correct("s1", 1)
    assert used("seats") == 0
    before = writes()
    with pytest.raises(DomainError) as below:
        correct("s2", -2)
    assert (below.value.code, below.value.field) == ("invalid_amount", "actual_amount")
    with pytest.raises(DomainError) as limit:
        correct("s1", 12)
    assert limit.value.code == "limit_exceeded"
    with pytest.raises(DomainError) as sign:
        correct("s1", -1)
    assert sign.value.code == "invalid_amount"
    with pytest.raises(DomainError) as whole:
        correct("s1", "1.5")
    assert whole.value.code == "invalid_amount"
    assert writes() == before
    correct("s2", 0)
    assert used("seats") == 1_000_000


def test_refusals_name_their_field_and_change_nothing(catalog):
    record(5, "e1")
    before = writes()
    cases = [
        (dict(event_id="nope", actual_amount=1, reason="x"), "not_found", "event_id"),
        (dict(event_id="e1", actual_amount=-1, reason="x"), "invalid_amount", "actual_amount"),
        (dict(event_id="e1", actual_amount="abc", reason="x"), "invalid_amount", "actual_amount"),
        (dict(event_id="e1", actual_amount=None, reason="x"), "invalid_amount", "actual_amount"),
        (dict(event_id="e1", actual_amount=1, reason=""), "validation_error", "reason"),
    ]
    for fields, code, field in cases:
        with pytest.raises(DomainError) as refused:
            correct_usage(SYSTEM, customer_key=CUSTOMER, **fields)
        assert (refused.value.code, refused.value.field) == (code, field), fields
    for role in ("account_manager", "finance"):
        with pytest.raises(DomainError) as forbidden:
            correct("e1", 1, who=actor(role))
        assert forbidden.value.code == "forbidden"
    assert writes() == before
    result = correct("e1", 1, who=actor("support"))
    assert result.actor == "user:support@example.com"


def test_the_same_amount_again_writes_nothing(catalog):
    record(5, "e1")
    correct("e1", 4)
    before = writes()
    again = correct("e1", 4)
    assert not again.corrected and again.effect.delta_micros == 0
    assert writes() == before


def test_idempotency_key_replays_and_conflicts(catalog):
    record(5, "e1")
    first = correct("e1", 4, idempotency_key="fix-1")
    before = writes()
    replay = correct("e1", 4, idempotency_key="fix-1")
    assert replay.replayed and replay.id == first.id
    assert replay.effect.credits_micros == first.effect.credits_micros == 20_000
    assert replay.effect.balance_after_micros == first.effect.balance_after_micros
    with pytest.raises(DomainError) as conflict:
        correct("e1", 3, idempotency_key="fix-1")
    assert conflict.value.code == "idempotency_conflict"
    assert writes() == before


def test_boolean_features_are_refused_clearly(catalog):
    """No boolean event can be recorded; the rule still stands in the service."""
    from webapp.services.corrections import _actual, _Target

    fake = _Target(
        None,
        type("E", (), {"amount_micros": 1})(),
        type(  # type: ignore[arg-type]
            "F", (), {"type": "boolean", "key": "sso"}
        )(),
        1,
        None,
        None,
    )
    with pytest.raises(DomainError) as refused:
        _actual(1, fake)
    assert refused.value.code == "feature_not_recordable"


def test_preview_computes_the_effect_without_writing(catalog):
    record(50, "e1")
    before = writes()
    effect = preview_correction(SYSTEM, customer_key=CUSTOMER, event_id="e1", actual_amount=5)
    assert effect.credits_micros == 900_000
    assert effect.balance_after_micros == 9_900_000
    charge = preview_correction(SYSTEM, customer_key=CUSTOMER, event_id="e1", actual_amount=60)
    assert charge.credits_micros == -200_000 and charge.balance_after_micros == 8_800_000
    with pytest.raises(DomainError):
        preview_correction(SYSTEM, customer_key=CUSTOMER, event_id="e1", actual_amount=2000)
    assert writes() == before


@pytest.mark.breaks_ledger
def test_verify_catches_a_tampered_correction(catalog):
    from sqlalchemy import update

    from webapp.services.verify import verify_ledger

    record(5, "e1")
    correct("e1", 2)
    assert verify_ledger().ok
    db.session.execute(update(UsageCorrection).values(delta_micros=-2_000_000))
    db.session.commit()
    names = {c.name for c in verify_ledger().checks if c.violations}
    assert "usage counter = sum of its period's effective event amounts" in names
    assert "an event's credit entries = -(its credits at its effective amount)" in names
    db.session.execute(update(UsageCorrection).values(delta_micros=-3_000_000))
    entry = db.session.scalar(select(LedgerEntry.id).where(LedgerEntry.type == "correction"))
    db.session.execute(
        update(CreditAllocation)
        .where(CreditAllocation.ledger_entry_id == entry)
        .values(amount_micros=-200_000)
    )
    db.session.commit()
    names = {c.name for c in verify_ledger().checks if c.violations}
    assert "corrections return to a grant at most what their event drew from it" in names
    assert "a deduction's or correction's allocations sum to its amount; nothing else has any" in (
        names
    )


def test_an_archived_feature_is_corrected_down_never_up(catalog):
    record(5, "e1")
    catalog_service.set_feature_archived(SYSTEM, "api_calls", True)
    before = writes()
    with pytest.raises(DomainError) as up:
        correct("e1", 6)
    assert (up.value.code, up.value.field) == ("feature_not_recordable", "actual_amount")
    assert writes() == before
    assert correct("e1", 4).effect.credits_micros == 20_000


def test_the_preview_counts_due_expiries_as_the_write_books_them(catalog, clock):
    add_customer("cust-d", api_allowance=None, topup=None)
    wallets.topup_wallet(SYSTEM, customer_key="cust-d", credit_system="credits", amount="1")
    wallets.topup_wallet(
        SYSTEM,
        customer_key="cust-d",
        credit_system="credits",
        amount="0.5",
        priority=300,
        expires_at=(clock.now + timedelta(hours=1)).isoformat(),
    )
    usage.record_usage(
        SYSTEM, customer_key="cust-d", feature_key="api_calls", amount=10, event_id="d1"
    )
    clock.advance(hours=2)  # the 0.5 grant's expiry is due, not booked
    preview = preview_correction(SYSTEM, customer_key="cust-d", event_id="d1", actual_amount=5)
    result = correct_usage(
        SYSTEM, customer_key="cust-d", event_id="d1", actual_amount=5, reason="typo"
    )
    assert preview.balance_after_micros == result.effect.balance_after_micros == 900_000
