"""Catalog rules and bad input: every wrong argument gives a DomainError with the right code."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from tests.conftest import actor
from tests.factories import make_catalog
from webapp.errors import (
    Conflict,
    CustomerNotFound,
    FeatureNotFound,
    FeatureNotRecordable,
    Forbidden,
    NotFound,
    ValidationError,
)
from webapp.models import utcnow
from webapp.services import catalog as cat
from webapp.services import reads, usage, wallets
from webapp.services.actors import SYSTEM
from webapp.services.periods import EPOCH, next_reset, period_start

C = "cust-6d11ca90"


def test_customers_are_unique_and_validated(app):
    cat.create_customer(SYSTEM, key="cust-1", name="One", email="a@b.co")
    with pytest.raises(Conflict):
        cat.create_customer(SYSTEM, key="cust-1", name="Again")
    for bad in ["", "has space", "ünïcode", "x" * 201, "a\x00b", None, 5]:
        with pytest.raises(ValidationError):
            cat.create_customer(SYSTEM, key=bad, name="Bad")
    with pytest.raises(ValidationError):
        cat.create_customer(SYSTEM, key="cust-2", name="")
    with pytest.raises(ValidationError):
        cat.create_customer(SYSTEM, key="cust-2", name="Two", email="not-an-email")
    with pytest.raises(ValidationError):
        cat.create_customer(SYSTEM, key="cust-2", name="Bell\x07")
    with pytest.raises(Forbidden):
        cat.create_customer(actor("finance"), key="cust-2", name="Two")


def test_features_are_unique_by_key_and_event_name(app):
    cat.create_feature(
        SYSTEM, key="api_calls", name="API", type="consumable", event_name="api.call"
    )
    with pytest.raises(Conflict):
        cat.create_feature(SYSTEM, key="api_calls", name="x", type="consumable")
    with pytest.raises(Conflict):
        cat.create_feature(SYSTEM, key="other", name="x", type="consumable", event_name="api.call")
    with pytest.raises(ValidationError):
        cat.create_feature(SYSTEM, key="x", name="x", type="metered")
    with pytest.raises(ValidationError):
        cat.create_feature(SYSTEM, key="Bad Key", name="x", type="consumable")
    feature = cat.create_feature(SYSTEM, key="seats", name="Seats", type="persistent")
    assert feature.event_name == "seats"  # defaults to the key


def test_credit_costs(catalog):
    with pytest.raises(FeatureNotRecordable):
        cat.set_credit_cost(SYSTEM, "sso", credit_system="credits", cost="1")
    with pytest.raises(ValidationError):
        cat.set_credit_cost(SYSTEM, "api_calls", credit_system="credits", cost="0")
    with pytest.raises(ValidationError):
        cat.set_credit_cost(SYSTEM, "api_calls", credit_system="credits", cost="0.0000001")
    with pytest.raises(NotFound):
        cat.set_credit_cost(SYSTEM, "api_calls", credit_system="gold", cost="1")
    with pytest.raises(FeatureNotFound):
        cat.set_credit_cost(SYSTEM, "nothing", credit_system="credits", cost="1")
    cat.set_credit_cost(SYSTEM, "api_calls", credit_system="credits", cost="0.05")
    result = usage.record_usage(SYSTEM, customer_key=C, feature_key="api_calls", amount=2)
    assert result.credits_micros == 100_000


def test_entitlement_rules(catalog):
    with pytest.raises(ValidationError):
        cat.set_entitlement(SYSTEM, C, "seats", allowance=5, reset_period="month")
    with pytest.raises(ValidationError):
        cat.set_entitlement(SYSTEM, C, "seats", allowance="2.5")
    with pytest.raises(ValidationError):
        cat.set_entitlement(SYSTEM, C, "sso", allowance=3)
    with pytest.raises(ValidationError):
        cat.set_entitlement(SYSTEM, C, "api_calls", allowance=-1, reset_period="month")
    with pytest.raises(ValidationError):
        cat.set_entitlement(SYSTEM, C, "api_calls", allowance=1, reset_period="hourly")
    with pytest.raises(ValidationError):
        cat.set_entitlement(SYSTEM, C, "api_calls", allowance=1, overage="maybe")
    with pytest.raises(CustomerNotFound):
        cat.set_entitlement(SYSTEM, "nobody", "api_calls", allowance=1)
    # Lowering a blocked allowance under what is used would break used <= allowance.
    for _ in range(4):
        usage.record_usage(SYSTEM, customer_key=C, feature_key="seats")
    with pytest.raises(ValidationError):
        cat.set_entitlement(SYSTEM, C, "seats", allowance=3)
    cat.set_entitlement(SYSTEM, C, "seats", allowance=4)
    cat.set_entitlement(SYSTEM, C, "seats", allowance=3, overage="allow")
    usage.record_usage(SYSTEM, customer_key=C, feature_key="api_calls")
    # A period change while the period has usage waits for the period's end (scheduled).
    changed = cat.set_entitlement(SYSTEM, C, "api_calls", allowance=1000, reset_period="day")
    assert (changed.reset_period, changed.pending_reset_period) == ("month", "day")
    assert changed.pending_reset_at == next_reset(utcnow(), "month")
    # `never` has no end: there it is still refused.
    cat.set_entitlement(SYSTEM, C, "candidates", allowance=100, reset_period="never")
    usage.record_usage(SYSTEM, customer_key=C, feature_key="candidates")
    with pytest.raises(ValidationError):
        cat.set_entitlement(SYSTEM, C, "candidates", allowance=100, reset_period="day")


def test_unlimited_allowance(catalog):
    cat.set_entitlement(SYSTEM, C, "api_calls", allowance=None, reset_period="month")
    result = usage.record_usage(SYSTEM, customer_key=C, feature_key="api_calls", amount=400)
    assert result.allowance_micros is None and result.available_micros is None


def test_customer_summary_shows_every_entitlement_and_wallet(catalog):
    usage.record_usage(SYSTEM, customer_key=C, feature_key="api_calls", amount=3)
    usage.record_usage(SYSTEM, customer_key=C, feature_key="seats", amount=2)
    summary = reads.customer_summary(SYSTEM, C)
    rows = {e.feature_key: e for e in summary.entitlements}
    assert set(rows) == {"api_calls", "candidates", "seats", "sso"}
    assert (rows["api_calls"].used_micros, rows["api_calls"].available_micros) == (
        3_000_000,
        997_000_000,
    )
    assert rows["api_calls"].reset_at is not None and rows["seats"].reset_at is None
    assert rows["seats"].available_micros == 8_000_000
    assert [w.balance_micros for w in summary.wallets] == [10_000_000 - 60_000]


def test_check_entitlement_writes_nothing_and_explains(catalog):
    check = usage.check_entitlement(SYSTEM, customer_key=C, feature_key="api_calls", amount=2)
    assert check.allowed and check.credits_required_micros == 40_000
    check = usage.check_entitlement(SYSTEM, customer_key=C, feature_key="api_calls", amount=1001)
    assert (check.allowed, check.reason) == (False, "limit_exceeded")
    check = usage.check_entitlement(SYSTEM, customer_key=C, feature_key="api_calls", amount=501)
    assert (check.allowed, check.reason) == (False, "insufficient_credits")
    check = usage.check_entitlement(SYSTEM, customer_key=C, event_name="sso")
    assert check.allowed
    check = usage.check_entitlement(SYSTEM, customer_key=C, feature_key="seats", amount=-1)
    assert (check.allowed, check.reason) == (False, "invalid_amount")
    catalog_key = "cust-x"
    cat.create_customer(SYSTEM, key=catalog_key, name="X")
    check = usage.check_entitlement(SYSTEM, customer_key=catalog_key, event_name="sso")
    assert (check.allowed, check.reason) == (False, "not_entitled")
    with pytest.raises(CustomerNotFound):
        usage.check_entitlement(SYSTEM, customer_key="nobody", feature_key="api_calls")
    with pytest.raises(FeatureNotFound):
        usage.check_entitlement(SYSTEM, customer_key=C, feature_key="nothing")
    assert reads.list_events(SYSTEM, C).items == []


def test_delete_only_customers_without_history(catalog):
    cat.create_customer(SYSTEM, key="cust-tmp", name="Tmp")
    cat.delete_customer(SYSTEM, "cust-tmp")
    with pytest.raises(CustomerNotFound):
        cat.get_customer("cust-tmp")
    with pytest.raises(Conflict):
        cat.delete_customer(SYSTEM, C)  # has a topup


def test_archived_customers_cannot_be_topped_up(catalog):
    cat.set_customer_status(SYSTEM, C, "archived")
    with pytest.raises(ValidationError):
        wallets.topup_wallet(SYSTEM, customer_key=C, credit_system="credits", amount=1)


@pytest.mark.parametrize(
    ("period", "at", "start", "reset"),
    [
        ("day", "2026-11-26T23:59:59", "2026-11-26T00:00:00", "2026-11-27T00:00:00"),
        ("week", "2026-11-26T10:00:00", "2026-11-23T00:00:00", "2026-11-30T00:00:00"),
        ("month", "2026-12-31T23:59:59", "2026-12-01T00:00:00", "2027-01-01T00:00:00"),
        ("month", "2026-02-01T00:00:00", "2026-02-01T00:00:00", "2026-03-01T00:00:00"),
        ("year", "2026-07-04T12:00:00", "2026-01-01T00:00:00", "2027-01-01T00:00:00"),
    ],
)
def test_reset_periods_roll_over_at_utc_boundaries(period, at, start, reset):
    moment = datetime.fromisoformat(at).replace(tzinfo=UTC)
    assert period_start(moment, period) == datetime.fromisoformat(start).replace(tzinfo=UTC)
    assert next_reset(moment, period) == datetime.fromisoformat(reset).replace(tzinfo=UTC)


def test_never_has_one_period():
    assert period_start(datetime.now(UTC), "never") == EPOCH
    assert next_reset(datetime.now(UTC), "never") is None


def test_update_customer_merges_into_the_stored_customer(catalog):
    cat.update_customer(SYSTEM, C, metadata={"plan": "pro"})
    seen = []

    def merge(customer):
        seen.append(dict(customer.extra))
        return {"metadata": {**customer.extra, "seats": 5}, "name": "Merged"}

    updated = cat.update_customer(SYSTEM, C, merge=merge)
    assert seen == [{"plan": "pro"}]
    assert (updated.extra, updated.name) == ({"plan": "pro", "seats": 5}, "Merged")
    with pytest.raises(ValidationError):
        cat.update_customer(SYSTEM, C, merge=lambda customer: {"metadata": [1]})
    assert cat.get_customer(C).extra == {"plan": "pro", "seats": 5}


def test_a_put_of_an_entitlement_requires_every_field(app):
    make_catalog()
    for missing in ("allowance", "reset_period", "overage"):
        fields = {"allowance": 5, "reset_period": "month", "overage": "block"}
        del fields[missing]
        with pytest.raises(ValidationError) as exc:
            cat.replace_entitlement(SYSTEM, C, "api_calls", **fields)
        assert exc.value.field == missing
    assert reads.customer_summary(SYSTEM, C).entitlements[0].allowance_micros == 1000 * 10**6
    cat.replace_entitlement(
        SYSTEM, C, "api_calls", allowance=None, reset_period="month", overage="allow"
    )
    api = next(
        e for e in reads.customer_summary(SYSTEM, C).entitlements if e.feature_key == "api_calls"
    )
    assert (api.allowance_micros, api.reset_period, api.overage) == (None, "month", "allow")


def test_a_patch_of_an_entitlement_changes_only_the_fields_sent(app):
    make_catalog()
    usage.record_usage(SYSTEM, customer_key=C, feature_key="api_calls", amount=3)
    cat.update_entitlement(SYSTEM, C, "api_calls", allowance=5000)  # usage this period: fine
    api = next(
        e for e in reads.customer_summary(SYSTEM, C).entitlements if e.feature_key == "api_calls"
    )
    assert (api.allowance_micros, api.reset_period, api.overage) == (5000 * 10**6, "month", "block")
    cat.update_entitlement(SYSTEM, C, "api_calls", allowance=None)
    with pytest.raises(ValidationError):
        cat.update_entitlement(SYSTEM, C, "api_calls", colour="red")
    with pytest.raises(CustomerNotFound):
        cat.update_entitlement(SYSTEM, "cust-nope", "api_calls", allowance=1)
    cat.remove_entitlement(SYSTEM, C, "candidates")
    with pytest.raises(NotFound):  # a PATCH changes an entitlement, it never makes one
        cat.update_entitlement(SYSTEM, C, "candidates", allowance=1)


def test_features_and_credit_systems_are_renamed_but_keep_their_keys(catalog):
    feature = cat.update_feature(SYSTEM, "api_calls", name="Calls to the API")
    assert (feature.key, feature.name, feature.event_name) == (
        "api_calls",
        "Calls to the API",
        "api.call",
    )
    system = cat.update_credit_system(
        SYSTEM, "credits", name="Tokens", unit_singular="token", unit_plural="tokens"
    )
    assert (system.key, system.name, system.unit_singular, system.unit_plural) == (
        "credits",
        "Tokens",
        "token",
        "tokens",
    )
    with pytest.raises(ValidationError):
        cat.update_feature(SYSTEM, "api_calls", name="")
    with pytest.raises(ValidationError):
        cat.update_credit_system(SYSTEM, "credits", name="x", unit_plural="u" * 51)
    with pytest.raises(Forbidden):
        cat.update_feature(actor("finance"), "api_calls", name="Nope")
    with pytest.raises(FeatureNotFound):
        cat.set_feature_archived(SYSTEM, "nope", True)


def test_an_archived_feature_records_nothing_and_its_history_stays(catalog):
    usage.record_usage(SYSTEM, customer_key=C, feature_key="api_calls", amount=2)
    cat.set_feature_archived(SYSTEM, "api_calls", True)
    for fields in ({"feature_key": "api_calls"}, {"event_name": "api.call"}):
        with pytest.raises(FeatureNotRecordable, match="archived"):
            usage.record_usage(SYSTEM, customer_key=C, amount=1, **fields)
    batch = usage.record_usage_batch(
        SYSTEM, [{"customer_key": C, "feature_key": "api_calls", "amount": 1}]
    )
    assert isinstance(batch[0], FeatureNotRecordable)
    assert [e.amount_micros for e in reads.list_events(SYSTEM, C).items] == [2_000_000]
    cat.set_feature_archived(SYSTEM, "api_calls", False)
    usage.record_usage(SYSTEM, customer_key=C, feature_key="api_calls", amount=1)


def test_an_archived_credit_system_takes_no_topup_and_its_ledger_stays(catalog):
    before = reads.list_ledger(SYSTEM, C).items
    cat.set_credit_system_archived(SYSTEM, "credits", True)
    with pytest.raises(ValidationError, match="archived") as err:
        wallets.topup_wallet(SYSTEM, customer_key=C, credit_system="credits", amount=1)
    assert err.value.field == "credit_system"
    assert len(reads.list_ledger(SYSTEM, C).items) == len(before)
    cat.set_credit_system_archived(SYSTEM, "credits", False)
    wallets.topup_wallet(SYSTEM, customer_key=C, credit_system="credits", amount=1)
