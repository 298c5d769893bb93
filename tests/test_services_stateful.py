"""A hypothesis state machine drives the services with random topups, usage, reclaims, replays
and invalid requests, and checks them against a plain-Python model and every invariant of
domain.md after every step, on SQLite and PostgreSQL."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

import hypothesis.strategies as st
from hypothesis import HealthCheck, settings
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy import delete

from tests.factories import add_customer
from webapp.errors import DomainError
from webapp.extensions import db
from webapp.models import (
    AuditLog,
    CreditCost,
    CreditSystem,
    Customer,
    Entitlement,
    Feature,
    LedgerEntry,
    UsageCounter,
    UsageDaily,
    UsageEvent,
    Wallet,
)
from webapp.services import catalog, reads, usage, wallets
from webapp.services.actors import SYSTEM
from webapp.services.verify import verify_ledger

CUSTOMERS = ["cust-a", "cust-b"]
COST = Decimal("0.02")
API_ALLOWANCE = Decimal(40)
SEAT_ALLOWANCE = 5
# Uniform over micros, so that amounts whose cost needs rounding (e.g. 0.000025 x 0.02) are common.
amounts = st.integers(1, 12_000_000).map(lambda micros: Decimal(micros).scaleb(-6))
topups = st.integers(1, 30_000_000).map(lambda micros: Decimal(micros).scaleb(-6))


def wipe() -> None:
    for model in (
        AuditLog,
        LedgerEntry,
        UsageEvent,
        UsageCounter,
        UsageDaily,
        Wallet,
        Entitlement,
        CreditCost,
        CreditSystem,
        Feature,
        Customer,
    ):
        db.session.execute(delete(model))
    db.session.commit()


class Ledger(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        wipe()
        catalog.create_credit_system(SYSTEM, key="credits", name="Credits")
        catalog.create_feature(SYSTEM, key="api_calls", name="API", type="consumable")
        catalog.create_feature(SYSTEM, key="candidates", name="Cand", type="consumable")
        catalog.create_feature(SYSTEM, key="seats", name="Seats", type="persistent")
        catalog.create_feature(SYSTEM, key="sso", name="SSO", type="boolean")
        catalog.set_credit_cost(SYSTEM, "api_calls", credit_system="credits", cost=str(COST))
        for key in CUSTOMERS:
            add_customer(
                key,
                api_allowance=API_ALLOWANCE,
                seat_allowance=SEAT_ALLOWANCE,
                candidates_allowance=None,
                topup=None,
            )
        self.balance = dict.fromkeys(CUSTOMERS, Decimal(0))
        self.used = {
            (c, f): Decimal(0) for c in CUSTOMERS for f in ("api_calls", "candidates", "seats")
        }
        self.events: dict[tuple[str, str], tuple[str, Decimal, object]] = {}
        self.counter = 0

    def _expect(self, customer: str, feature: str, amount: Decimal) -> str | None:
        used = self.used[(customer, feature)]
        if feature == "seats":
            if amount != amount.to_integral_value():
                return "invalid_amount"
            if amount > 0 and used + amount > SEAT_ALLOWANCE:
                return "limit_exceeded"
            if used + amount < 0:
                return "invalid_amount"
            return None
        if amount < 0:
            return "invalid_amount"
        if feature == "api_calls":
            if used + amount > API_ALLOWANCE:
                return "limit_exceeded"
            cost = (amount * COST).quantize(Decimal("0.000001"), rounding=ROUND_HALF_UP)
            if cost > self.balance[customer]:
                return "insufficient_credits"
        return None

    def _apply(self, customer: str, feature: str, amount: Decimal) -> None:
        self.used[(customer, feature)] += amount
        if feature == "api_calls":
            self.balance[customer] -= (amount * COST).quantize(
                Decimal("0.000001"), rounding=ROUND_HALF_UP
            )

    @rule(customer=st.sampled_from(CUSTOMERS), amount=topups)
    def topup(self, customer: str, amount: Decimal) -> None:
        result = wallets.topup_wallet(
            SYSTEM, customer_key=customer, credit_system="credits", amount=str(amount)
        )
        self.balance[customer] += amount
        assert Decimal(result.balance_micros) / 1_000_000 == self.balance[customer]

    @rule(
        customer=st.sampled_from(CUSTOMERS),
        feature=st.sampled_from(["api_calls", "candidates", "seats"]),
        amount=st.one_of(amounts, st.integers(-3, 4).filter(bool).map(Decimal)),
        with_id=st.booleans(),
    )
    def record(self, customer: str, feature: str, amount: Decimal, with_id: bool) -> None:
        self.counter += 1
        event_id = f"e{self.counter}" if with_id else None
        expected = self._expect(customer, feature, amount)
        try:
            result = usage.record_usage(
                SYSTEM,
                customer_key=customer,
                feature_key=feature,
                amount=str(amount),
                event_id=event_id,
            )
        except DomainError as exc:
            assert exc.code == expected, (exc.code, expected)
            return
        assert expected is None, expected
        self._apply(customer, feature, amount)
        assert Decimal(result.used_micros) / 1_000_000 == self.used[(customer, feature)]
        if event_id:
            self.events[(customer, event_id)] = (feature, amount, result)

    @precondition(lambda self: self.events)
    @rule(data=st.data(), same=st.booleans())
    def replay(self, data: st.DataObject, same: bool) -> None:
        (customer, event_id) = data.draw(st.sampled_from(sorted(self.events)))
        feature, amount, first = self.events[(customer, event_id)]
        sent = amount if same else amount + 1
        try:
            result = usage.record_usage(
                SYSTEM,
                customer_key=customer,
                feature_key=feature,
                amount=str(sent),
                event_id=event_id,
            )
        except DomainError as exc:
            # A changed amount of zero (-1 + 1) is refused as such before idempotency is looked at.
            expected = "invalid_amount" if sent == 0 else "idempotency_conflict"
            assert not same and exc.code == expected
            return
        assert same and result.replayed
        assert (result.used_micros, result.balance_micros) == (
            first.used_micros,
            first.balance_micros,
        )

    @rule(
        customer=st.sampled_from(CUSTOMERS),
        bad=st.sampled_from(["0", "-0", "0.0000001", "NaN", "1e3", "", "abc", None, 0.5]),
    )
    def invalid(self, customer: str, bad: object) -> None:
        try:
            usage.record_usage(SYSTEM, customer_key=customer, feature_key="api_calls", amount=bad)
        except DomainError as exc:
            assert exc.code in {"invalid_amount", "validation_error"}
        else:
            raise AssertionError(f"{bad!r} was accepted")

    @rule(customer=st.sampled_from(CUSTOMERS))
    def boolean_is_not_recordable(self, customer: str) -> None:
        try:
            usage.record_usage(SYSTEM, customer_key=customer, feature_key="sso")
        except DomainError as exc:
            assert exc.code == "feature_not_recordable"

    @invariant()
    def matches_the_model_and_every_invariant_holds(self) -> None:
        for customer in CUSTOMERS:
            summary = reads.customer_summary(SYSTEM, customer)
            balance = sum((w.balance_micros for w in summary.wallets), 0)
            assert Decimal(balance) / 1_000_000 == self.balance[customer]
            for ent in summary.entitlements:
                if ent.feature_key != "sso":
                    assert (
                        Decimal(ent.used_micros) / 1_000_000
                        == self.used[(customer, ent.feature_key)]
                    )
        report = verify_ledger()
        assert report.ok, report.violations


def test_services_match_a_plain_model(app):
    run_state_machine_as_test(
        Ledger,
        settings=settings(
            max_examples=15,
            stateful_step_count=30,
            deadline=None,
            suppress_health_check=list(HealthCheck),
        ),
    )
