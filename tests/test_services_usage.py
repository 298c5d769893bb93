"""RecordUsage rules of domain.md, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal as D

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from tests.conftest import actor
from tests.factories import add_customer, make_catalog
from webapp.errors import (
    CustomerNotFound,
    DomainError,
    FeatureNotFound,
    FeatureNotRecordable,
    Forbidden,
    IdempotencyConflict,
    InsufficientCredits,
    InvalidAmount,
    LimitExceeded,
    NotEntitled,
    ValidationError,
)
from webapp.extensions import db
from webapp.models import AuditLog, Customer, LedgerEntry, UsageCounter, UsageEvent, Wallet
from webapp.services import catalog as catalogs
from webapp.services import reads, usage, wallets
from webapp.services.actors import SYSTEM

C = "cust-6d11ca90"


def row_counts() -> dict[str, int]:
    return {
        model.__tablename__: db.session.scalar(select(func.count()).select_from(model))
        for model in (UsageEvent, LedgerEntry, UsageCounter, Wallet, AuditLog)
    }


def balance(customer: str = C) -> int:
    (wallet,) = reads.customer_summary(SYSTEM, customer).wallets
    return wallet.balance_micros


def used(feature: str, customer: str = C) -> int:
    for ent in reads.customer_summary(SYSTEM, customer).entitlements:
        if ent.feature_key == feature:
            return ent.used_micros
    raise KeyError(feature)


def test_four_api_calls_at_two_cents_deduct_exactly_eight_hundredths(catalog):
    before = balance()
    result = usage.record_usage(SYSTEM, customer_key=C, feature_key="api_calls", amount=4)
    assert result.credits_micros == 80_000
    assert balance() == before - 80_000
    assert result.balance_micros == before - 80_000
    assert used("api_calls") == 4_000_000


def test_seed_example_records_in_feature_units(catalog):
    result = usage.record_usage(SYSTEM, customer_key=C, event_name="candidate.sourced", amount=2)
    assert (result.event_name, result.customer_key, result.amount_micros) == (
        "candidate.sourced",
        C,
        2_000_000,
    )
    assert result.feature_key == "candidates"
    assert result.credits_micros == 40_000


def test_reclaiming_a_seat_frees_allowance(catalog):
    for _ in range(8):
        usage.record_usage(SYSTEM, customer_key=C, feature_key="seats", amount=1)
    assert used("seats") == 8_000_000
    result = usage.record_usage(SYSTEM, customer_key=C, feature_key="seats", amount=-1)
    assert result.used_micros == 7_000_000
    assert result.available_micros == 3_000_000  # allowance 10


def test_negative_usage_on_consumable_is_rejected_and_writes_nothing(catalog):
    before = row_counts()
    with pytest.raises(InvalidAmount):
        usage.record_usage(SYSTEM, customer_key=C, feature_key="api_calls", amount=-1)
    assert row_counts() == before


def test_negative_usage_never_adds_credits(catalog):
    catalog_cost = "1"
    from webapp.services import catalog as cat

    cat.set_credit_cost(SYSTEM, "seats", credit_system="credits", cost=catalog_cost)
    usage.record_usage(SYSTEM, customer_key=C, feature_key="seats", amount=2)
    after_add = balance()
    result = usage.record_usage(SYSTEM, customer_key=C, feature_key="seats", amount=-1)
    assert balance() == after_add
    assert result.credits_micros == 0


def test_cannot_reclaim_seats_that_are_not_used(catalog):
    usage.record_usage(SYSTEM, customer_key=C, feature_key="seats", amount=1)
    before = row_counts()
    with pytest.raises(InvalidAmount):
        usage.record_usage(SYSTEM, customer_key=C, feature_key="seats", amount=-2)
    assert row_counts() == before


def test_persistent_amounts_are_whole(catalog):
    with pytest.raises(InvalidAmount):
        usage.record_usage(SYSTEM, customer_key=C, feature_key="seats", amount="1.5")


@pytest.mark.parametrize("amount", [0, "0", "0.000000", "-0"])
def test_zero_is_an_error(catalog, amount):
    with pytest.raises(InvalidAmount):
        usage.record_usage(SYSTEM, customer_key=C, feature_key="api_calls", amount=amount)


@pytest.mark.parametrize(
    "amount",
    [
        "0.0000001",
        "1.1234567",
        0.5,
        "NaN",
        "Infinity",
        "1e3",
        True,
        None,
        [],
        "abc",
        "10000000000000",
    ],
)
def test_bad_amounts_are_rejected(catalog, amount):
    before = row_counts()
    with pytest.raises(InvalidAmount):
        usage.record_usage(SYSTEM, customer_key=C, feature_key="api_calls", amount=amount)
    assert row_counts() == before


def test_six_decimals_are_exact(catalog):
    result = usage.record_usage(SYSTEM, customer_key=C, feature_key="api_calls", amount="0.000025")
    # 0.000025 x 0.02 = 0.0000005, rounded half-up to 6 places = 0.000001
    assert result.credits_micros == 1
    result = usage.record_usage(SYSTEM, customer_key=C, feature_key="api_calls", amount="0.000024")
    assert result.credits_micros == 0  # 0.00000048 rounds down: nothing to deduct


def test_insufficient_credits_leaves_no_trace(catalog):
    before_rows, before_balance = row_counts(), balance()
    with pytest.raises(InsufficientCredits) as info:
        usage.record_usage(SYSTEM, customer_key=C, feature_key="api_calls", amount=501)  # 10.02
    assert info.value.details["credits_required"] == "10.02"
    assert row_counts() == before_rows
    assert balance() == before_balance
    # the last cent can be spent exactly
    usage.record_usage(SYSTEM, customer_key=C, feature_key="api_calls", amount=500)
    assert balance() == 0


def test_limit_exceeded_leaves_no_trace(catalog):
    catalog_customer = add_customer("cust-small", api_allowance=5, topup="100")
    usage.record_usage(SYSTEM, customer_key=catalog_customer, feature_key="api_calls", amount=5)
    before = row_counts()
    with pytest.raises(LimitExceeded) as info:
        usage.record_usage(SYSTEM, customer_key=catalog_customer, feature_key="api_calls")
    assert info.value.details["available"] == 0
    assert row_counts() == before


def test_overage_allowed_is_recorded_and_flagged(catalog):
    catalog.customer  # noqa: B018
    key = add_customer("cust-over", api_allowance=5, topup="100")
    from webapp.services import catalog as cat

    cat.set_entitlement(
        SYSTEM, key, "api_calls", allowance=5, reset_period="month", overage="allow"
    )
    usage.record_usage(SYSTEM, customer_key=key, feature_key="api_calls", amount=4)
    result = usage.record_usage(SYSTEM, customer_key=key, feature_key="api_calls", amount=3)
    assert result.overage_micros == 2_000_000
    assert result.available_micros == -2_000_000


def test_not_entitled_leaves_no_trace(catalog):
    catalog_key = "cust-none"
    from webapp.services import catalog as cat

    cat.create_customer(SYSTEM, key=catalog_key, name="No plan")
    wallets.topup_wallet(SYSTEM, customer_key=catalog_key, credit_system="credits", amount=5)
    before = row_counts()
    with pytest.raises(NotEntitled):
        usage.record_usage(SYSTEM, customer_key=catalog_key, feature_key="api_calls")
    assert row_counts() == before


def test_boolean_features_cannot_be_recorded(catalog):
    with pytest.raises(FeatureNotRecordable):
        usage.record_usage(SYSTEM, customer_key=C, feature_key="sso")


def test_unknown_customer_and_feature(catalog):
    with pytest.raises(CustomerNotFound):
        usage.record_usage(SYSTEM, customer_key="nobody", feature_key="api_calls")
    with pytest.raises(FeatureNotFound):
        usage.record_usage(SYSTEM, customer_key=C, feature_key="nothing")
    with pytest.raises(FeatureNotFound):
        usage.record_usage(SYSTEM, customer_key=C, event_name="no.such.event")
    with pytest.raises(ValidationError):
        usage.record_usage(SYSTEM, customer_key=C, feature_key="api_calls", event_name="api.call")
    with pytest.raises(ValidationError):
        usage.record_usage(SYSTEM, customer_key=C)


def test_idempotent_replay_returns_the_first_result(catalog):
    first = usage.record_usage(
        SYSTEM,
        customer_key=C,
        feature_key="api_calls",
        amount=3,
        event_id="evt-1",
        metadata={"a": 1},
    )
    usage.record_usage(SYSTEM, customer_key=C, feature_key="api_calls", amount=1)
    before = row_counts()
    again = usage.record_usage(
        SYSTEM,
        customer_key=C,
        event_name="api.call",
        amount="3.0",
        event_id="evt-1",
        metadata={"a": 1},
    )
    assert again.replayed and not first.replayed
    assert (again.used_micros, again.balance_micros, again.credits_micros) == (
        first.used_micros,
        first.balance_micros,
        first.credits_micros,
    )
    assert row_counts() == before


def test_same_event_id_with_other_content_is_a_conflict(catalog):
    usage.record_usage(SYSTEM, customer_key=C, feature_key="api_calls", amount=3, event_id="e")
    before = row_counts()
    for change in ({"amount": 4}, {"metadata": {"x": 1}}, {"feature_key": "candidates"}):
        fields = {"customer_key": C, "feature_key": "api_calls", "amount": 3, "event_id": "e"}
        fields.update(change)
        with pytest.raises(IdempotencyConflict):
            usage.record_usage(SYSTEM, **fields)
    assert row_counts() == before


def test_event_ids_are_per_customer(catalog):
    add_customer("cust-b")
    usage.record_usage(SYSTEM, customer_key=C, feature_key="api_calls", event_id="shared")
    result = usage.record_usage(
        SYSTEM, customer_key="cust-b", feature_key="api_calls", event_id="shared"
    )
    assert not result.replayed


def test_server_makes_an_event_id(catalog):
    a = usage.record_usage(SYSTEM, customer_key=C, feature_key="api_calls")
    b = usage.record_usage(SYSTEM, customer_key=C, feature_key="api_calls")
    assert a.event_id and b.event_id and a.event_id != b.event_id


def test_timestamps_more_than_five_minutes_ahead_are_rejected(catalog):
    now = datetime.now(UTC)
    ok = (now + timedelta(minutes=4)).isoformat()
    usage.record_usage(SYSTEM, customer_key=C, feature_key="api_calls", timestamp=ok)
    before = row_counts()
    for bad in [
        (now + timedelta(minutes=6)).isoformat(),
        "2020-01-01T00:00:00Z",
        "2026-11-26T10:00:00",
        "yesterday",
        12345,
    ]:
        with pytest.raises(ValidationError):
            usage.record_usage(SYSTEM, customer_key=C, feature_key="api_calls", timestamp=bad)
    assert row_counts() == before


def test_usage_counts_toward_the_period_containing_its_timestamp(catalog):
    key = add_customer("cust-daily", api_allowance=2, topup="10", reset_period="day")
    now = datetime.now(UTC)
    yesterday = (now - timedelta(days=1)).isoformat()
    usage.record_usage(
        SYSTEM, customer_key=key, feature_key="api_calls", amount=2, timestamp=yesterday
    )
    # today is a new period: the allowance is whole again
    result = usage.record_usage(SYSTEM, customer_key=key, feature_key="api_calls", amount=2)
    assert result.used_micros == 2_000_000
    with pytest.raises(LimitExceeded):
        usage.record_usage(SYSTEM, customer_key=key, feature_key="api_calls", timestamp=yesterday)


def test_metadata_rules(catalog):
    with pytest.raises(ValidationError):
        usage.record_usage(SYSTEM, customer_key=C, feature_key="api_calls", metadata=[1])
    with pytest.raises(ValidationError):
        usage.record_usage(
            SYSTEM, customer_key=C, feature_key="api_calls", metadata={"big": "x" * 5000}
        )
    result = usage.record_usage(
        SYSTEM, customer_key=C, feature_key="api_calls", metadata={"ünï": "cødé", "n": [1, 2]}
    )
    page = reads.list_events(SYSTEM, C, limit=1)
    assert page.items[0].metadata == {"ünï": "cødé", "n": [1, 2]}
    assert page.items[0].event_id == result.event_id


def test_archived_customers_cannot_record(catalog):
    catalog_key = C
    from webapp.services import catalog as cat

    cat.set_customer_status(SYSTEM, catalog_key, "archived")
    with pytest.raises(NotEntitled):
        usage.record_usage(SYSTEM, customer_key=C, feature_key="api_calls")


def test_roles_limit_who_records_usage(catalog):
    with pytest.raises(Forbidden):
        usage.record_usage(actor("finance"), customer_key=C, feature_key="api_calls")
    with pytest.raises(Forbidden):
        usage.record_usage(actor("account_manager"), customer_key=C, feature_key="api_calls")
    usage.record_usage(actor("support"), customer_key=C, feature_key="api_calls")


def test_every_mutation_is_audited_with_its_actor(catalog):
    support = actor("support", "sam@example.com")
    result = usage.record_usage(support, customer_key=C, feature_key="api_calls")
    row = db.session.scalar(select(AuditLog).order_by(AuditLog.id.desc()))
    assert (row.actor, row.action, row.customer_key) == (
        "user:sam@example.com",
        "usage.recorded",
        C,
    )
    assert row.target == f"event:{result.event_id}"


def test_batch_judges_each_event_as_if_sent_alone(catalog):
    key = add_customer("cust-batch", api_allowance=3, topup="1")
    results = usage.record_usage_batch(
        SYSTEM,
        [
            {"customer_key": key, "feature_key": "api_calls", "amount": 2, "event_id": "b1"},
            {"customer_key": key, "feature_key": "api_calls", "amount": 2},  # over allowance 3
            {"customer_key": key, "feature_key": "api_calls", "amount": 1, "event_id": "b3"},
            {
                "customer_key": key,
                "feature_key": "api_calls",
                "amount": 1,
                "event_id": "b1",
            },  # conflict
            {
                "customer_key": key,
                "feature_key": "api_calls",
                "amount": 2,
                "event_id": "b1",
            },  # replay
            {"customer_key": "missing", "feature_key": "api_calls"},
            {"customer_key": key, "feature_key": "sso"},
        ],
    )
    kinds = [
        r.code if isinstance(r, Exception) else ("replay" if r.replayed else "ok") for r in results
    ]
    assert kinds == [
        "ok",
        "limit_exceeded",
        "ok",
        "idempotency_conflict",
        "replay",
        "customer_not_found",
        "feature_not_recordable",
    ]
    assert used("api_calls", key) == 3_000_000
    assert balance(key) == 1_000_000 - 60_000  # 3 calls at 0.02; the replay charged nothing


def test_insufficient_credits_in_a_batch_stops_only_that_event(catalog):
    key = add_customer("cust-poor", api_allowance=100, topup="0.05")
    results = usage.record_usage_batch(
        SYSTEM,
        [
            {"customer_key": key, "feature_key": "api_calls", "amount": 2},  # 0.04
            {"customer_key": key, "feature_key": "api_calls", "amount": 1},  # 0.02 > 0.01
            {"customer_key": key, "feature_key": "seats", "amount": 1},  # not credit-based
        ],
    )
    assert [getattr(r, "code", "ok") for r in results] == ["ok", "insufficient_credits", "ok"]
    assert balance(key) == 10_000


def test_a_large_batch_takes_the_bulk_path_and_keeps_every_invariant(catalog):
    """Over COPY_FROM events: PostgreSQL writes them with COPY and sequence-assigned ids."""
    key = add_customer("cust-bulk", api_allowance=2000, topup="100")
    events = [
        {
            "customer_key": key,
            "feature_key": "api_calls",
            "amount": n % 7 + 1,
            "event_id": f"bulk-{n}",
            "metadata": {"n": n} if n % 3 else None,
        }
        for n in range(300)
    ]
    events[10]["amount"] = -1  # invalid on a consumable
    events.append(dict(events[5]))  # a replay inside the batch
    results = usage.record_usage_batch(SYSTEM, events)
    accepted = [r for r in results if not isinstance(r, Exception) and not r.replayed]
    assert len(accepted) == 299
    assert getattr(results[10], "code", None) == "invalid_amount"
    assert results[-1].replayed and results[-1].event_id == "bulk-5"
    charged = sum(r.credits_micros for r in accepted)
    assert balance(key) == 100_000_000 - charged
    assert used("api_calls", key) == sum(r.amount_micros for r in accepted)
    page = reads.list_events(SYSTEM, key, limit=200)
    assert page.items[0].event_id == accepted[-1].event_id  # newest first, in batch order
    assert {e.event_id: e.metadata for e in page.items}["bulk-299"] == {"n": 299}


def test_reclaim_seats_is_negative_usage_of_a_persistent_feature(catalog):
    for _ in range(3):
        usage.record_usage(SYSTEM, customer_key=C, feature_key="seats")
    result = usage.reclaim_seats(SYSTEM, customer_key=C, feature_key="seats", count="2")
    assert (result.amount_micros, result.used_micros) == (-2_000_000, 1_000_000)
    for bad in ("0", "-1", "x", "1.5"):
        with pytest.raises(InvalidAmount):
            usage.reclaim_seats(SYSTEM, customer_key=C, feature_key="seats", count=bad)
    with pytest.raises(InvalidAmount):  # consumables have nothing to give back
        usage.reclaim_seats(SYSTEM, customer_key=C, feature_key="api_calls", count="1")
    with pytest.raises(Forbidden):
        usage.reclaim_seats(actor("finance"), customer_key=C, feature_key="seats", count="1")


# ---------------------------------------------------------------- the check agrees with RecordUsage

check_then_record_ops = st.lists(
    st.one_of(
        st.tuples(
            st.just("use"),
            st.sampled_from([C, "cust-archived"]),
            st.sampled_from(
                [
                    ("feature_key", "api_calls"),
                    ("event_name", "candidate.sourced"),
                    ("feature_key", "seats"),
                    ("feature_key", "sso"),
                ]
            ),
            st.one_of(
                st.integers(-3, 8), st.integers(-3_000_000, 9_000_000).map(lambda m: m / D(10**6))
            ),
        ),
        st.tuples(st.just("topup"), st.integers(1, 300_000).map(lambda m: m / D(10**6))),
    ),
    min_size=1,
    max_size=12,
)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(ops=check_then_record_ops)
def test_check_entitlement_predicts_what_record_usage_does(app, ops):
    if db.session.scalar(select(func.count()).select_from(Customer)) == 0:
        make_catalog(api_allowance=12, seat_allowance=3, candidates_allowance=5, topup="0.1")
        add_customer("cust-archived", topup=None)
        catalogs.set_customer_status(SYSTEM, "cust-archived", "archived")
    for op in ops:
        if op[0] == "topup":
            wallets.topup_wallet(SYSTEM, customer_key=C, credit_system="credits", amount=op[1])
            continue
        _, customer, (name_field, name), amount = op
        fields = {"customer_key": customer, name_field: name, "amount": amount}
        try:
            check = usage.check_entitlement(SYSTEM, **fields)
        except DomainError as refused:
            with pytest.raises(type(refused)):
                usage.record_usage(SYSTEM, **fields)
            continue
        try:
            result = usage.record_usage(SYSTEM, **fields)
        except DomainError as exc:
            if check.feature_type == "boolean":
                assert isinstance(exc, FeatureNotRecordable)
            else:
                assert (check.allowed, check.reason) == (False, exc.code), exc.message
            continue
        assert check.allowed, check.message
        assert result.used_micros == check.used_micros + check.amount_micros
        assert result.credits_micros == check.credits_required_micros
        if check.balance_micros is not None and result.credits_micros:
            assert result.balance_micros == check.balance_micros - result.credits_micros
