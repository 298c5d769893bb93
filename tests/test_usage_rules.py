"""The pure rules of RecordUsage (webapp/services/usage/rules.py), without a database."""

from __future__ import annotations

import ast
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from webapp.errors import (
    FeatureNotRecordable,
    InsufficientCredits,
    InvalidAmount,
    LimitExceeded,
    NotEntitled,
    ValidationError,
)
from webapp.services.credits.rules import GrantRef
from webapp.services.money import MAX_TOTAL_MICROS, MICROS
from webapp.services.usage import rules
from webapp.services.usage.rules import CostRef, CustomerRef, EntitlementRef, FeatureRef

NOW = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)
ACTIVE = CustomerRef(1, "cust-1", "active")
ARCHIVED = CustomerRef(2, "cust-2", "archived")
CALLS = FeatureRef(10, "api_calls", "consumable", "api.call")
SEATS = FeatureRef(11, "seats", "persistent", "seat.assigned")
SSO = FeatureRef(12, "sso", "boolean", "sso")
BLOCK_10 = EntitlementRef(10 * MICROS, "month", "block")
ALLOW_10 = EntitlementRef(10 * MICROS, "month", "allow")
UNLIMITED = EntitlementRef(None, "never", "block")
COST = CostRef(20_000, 5, "credits")  # 0.02 credits a unit


def test_the_rules_module_imports_nothing_of_the_database():
    source = Path(rules.__file__).read_text()
    imported = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            imported.add(("." * node.level) + (node.module or ""))
        elif isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
    assert not {m for m in imported if "sqlalchemy" in m or m.endswith(("models", "extensions"))}
    assert not {m for m in imported if m.endswith(("store", "tx", "bulk"))}


# ---------------------------------------------------------------- parse


def test_parse_defaults_the_amount_to_one_and_keeps_no_timestamp():
    parsed = rules.parse({"customer_key": "c", "feature_key": "api_calls"}, NOW)
    assert (parsed.amount_micros, parsed.timestamp, parsed.event_id) == (MICROS, None, None)


@pytest.mark.parametrize(
    "raw, error",
    [
        ([], ValidationError),
        ({"customer_key": "c"}, ValidationError),
        ({"customer_key": "c", "feature_key": "a", "event_name": "b"}, ValidationError),
        ({"customer_key": "c", "feature_key": "a", "amount": 0}, InvalidAmount),
        ({"customer_key": "c", "feature_key": "a", "amount": 0.5}, InvalidAmount),
        ({"customer_key": "c", "feature_key": "a", "amount": "0.0000001"}, InvalidAmount),
        ({"customer_key": "c", "feature_key": "a", "event_id": "has space"}, ValidationError),
        ({"customer_key": "c", "feature_key": "a", "metadata": []}, ValidationError),
    ],
)
def test_parse_refuses_bad_shapes(raw, error):
    with pytest.raises(error):
        rules.parse(raw, NOW)


@pytest.mark.parametrize(
    "when",
    [
        "9999-12-31T23:59:59-05:00",
        "0001-01-01T00:00:00+01:00",
        "2026-11-26T10:06:00Z",  # more than 5 minutes ahead
        (NOW - timedelta(days=401)).isoformat(),
        "2026-11-26T10:00:00",  # no zone
    ],
)
def test_parse_refuses_timestamps_out_of_range(when):
    with pytest.raises(ValidationError) as raised:
        rules.parse({"customer_key": "c", "feature_key": "a", "timestamp": when}, NOW)
    assert raised.value.field == "timestamp"


def test_parse_converts_offsets_to_utc():
    parsed = rules.parse(
        {"customer_key": "c", "feature_key": "a", "timestamp": "2026-11-26T11:00:00+02:00"}, NOW
    )
    assert parsed.timestamp == datetime(2026, 11, 26, 9, 0, tzinfo=UTC)


# ---------------------------------------------------------------- amount for type


def test_boolean_features_are_never_recorded():
    with pytest.raises(FeatureNotRecordable):
        rules.check_amount_for_type(SSO, MICROS)


def test_persistent_amounts_are_whole_and_consumables_never_negative():
    rules.check_amount_for_type(SEATS, -2 * MICROS)
    with pytest.raises(InvalidAmount):
        rules.check_amount_for_type(SEATS, MICROS // 2)
    with pytest.raises(InvalidAmount):
        rules.check_amount_for_type(CALLS, -MICROS)


# ---------------------------------------------------------------- decide

T = datetime(2026, 11, 1, tzinfo=UTC)


def _w(balance: int | None) -> rules.WalletRef | None:
    """A wallet holding ``balance`` in one active grant (None: no wallet)."""
    if balance is None:
        return None
    grants = [GrantRef(1, "purchased", 200, T, None, balance)] if balance else []
    return rules.WalletRef(1, balance, grants)


def test_four_calls_at_two_cents_cost_eight_hundredths():
    decision = rules.decide(CALLS, ACTIVE, BLOCK_10, 0, 4 * MICROS, COST, _w(10 * MICROS), T, T)
    assert decision == rules.Decision(used_after=4 * MICROS, overage=0, credits=80_000)


def test_archived_or_unentitled_customers_are_not_entitled():
    with pytest.raises(NotEntitled):
        rules.decide(CALLS, ARCHIVED, BLOCK_10, 0, MICROS, None, _w(None), T, T)
    with pytest.raises(NotEntitled):
        rules.decide(CALLS, ACTIVE, None, 0, MICROS, None, _w(None), T, T)


def test_block_refuses_past_the_allowance_and_allow_flags_overage():
    with pytest.raises(LimitExceeded) as raised:
        rules.decide(CALLS, ACTIVE, BLOCK_10, 9 * MICROS, 2 * MICROS, None, _w(None), T, T)
    assert raised.value.details == {"field": "amount", "used": 9, "allowance": 10, "available": 1}
    decision = rules.decide(CALLS, ACTIVE, ALLOW_10, 9 * MICROS, 3 * MICROS, None, _w(None), T, T)
    assert (decision.used_after, decision.overage) == (12 * MICROS, 2 * MICROS)


def test_seats_cannot_be_given_back_below_zero():
    with pytest.raises(InvalidAmount):
        rules.decide(SEATS, ACTIVE, UNLIMITED, MICROS, -2 * MICROS, None, _w(None), T, T)
    assert rules.decide(SEATS, ACTIVE, UNLIMITED, MICROS, -MICROS, COST, _w(0), T, T).credits == 0


def test_a_counter_stops_at_the_maximum():
    with pytest.raises(InvalidAmount) as raised:
        rules.decide(CALLS, ACTIVE, UNLIMITED, MAX_TOTAL_MICROS, 1, None, _w(None), T, T)
    assert raised.value.details["max"] == MAX_TOTAL_MICROS // MICROS


def test_credits_beyond_the_balance_are_insufficient():
    with pytest.raises(InsufficientCredits):
        rules.decide(CALLS, ACTIVE, BLOCK_10, 0, 4 * MICROS, COST, _w(79_999), T, T)
    with pytest.raises(InsufficientCredits):
        rules.decide(CALLS, ACTIVE, BLOCK_10, 0, 4 * MICROS, COST, _w(None), T, T)  # no wallet yet


def test_a_charge_that_rounds_to_zero_needs_no_wallet():
    decision = rules.decide(CALLS, ACTIVE, UNLIMITED, 0, 24, COST, _w(None), T, T)
    assert decision.credits == 0


@given(
    used=st.integers(0, 20 * MICROS),
    amount=st.integers(1, 20 * MICROS),
    balance=st.integers(0, MICROS),
)
def test_decide_either_refuses_or_keeps_every_invariant(used, amount, balance):
    try:
        decision = rules.decide(CALLS, ACTIVE, BLOCK_10, used, amount, COST, _w(balance), T, T)
    except (LimitExceeded, InsufficientCredits):
        assert used + amount > 10 * MICROS or rules.charge(amount, COST) > balance
        return
    assert decision.used_after == used + amount <= 10 * MICROS
    assert decision.credits == rules.charge(amount, COST) <= balance
    assert Decimal(decision.credits) == (Decimal(amount) * Decimal("0.02")).quantize(
        Decimal(1), rounding="ROUND_HALF_UP"
    )


def test_the_check_accepts_an_entitled_boolean_and_refuses_others():
    assert rules.decide_check(SSO, ACTIVE, UNLIMITED, 0, MICROS, None, _w(None), T) is None
    with pytest.raises(NotEntitled):
        rules.decide_check(SSO, ACTIVE, None, 0, MICROS, None, _w(None), T)
    with pytest.raises(InvalidAmount):
        rules.decide_check(CALLS, ACTIVE, UNLIMITED, 0, -MICROS, None, _w(None), T)


# ---------------------------------------------------------------- fingerprint


def test_fingerprint_depends_on_feature_amount_and_metadata_not_key_order():
    base = rules.fingerprint(10, MICROS, {"a": 1, "b": 2})
    assert base == rules.fingerprint(10, MICROS, {"b": 2, "a": 1})
    assert base != rules.fingerprint(11, MICROS, {"a": 1, "b": 2})
    assert base != rules.fingerprint(10, 2 * MICROS, {"a": 1, "b": 2})
    assert rules.fingerprint(10, MICROS, {}) == rules.fingerprint(10, MICROS, None)
