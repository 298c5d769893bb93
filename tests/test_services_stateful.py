"""A hypothesis state machine drives the services with random topups, usage, reclaims, replays
and invalid requests, and checks them against a plain-Python model and every invariant of
domain.md after every step, on SQLite and PostgreSQL."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal

import hypothesis.strategies as st
from hypothesis import HealthCheck, event, settings
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy import delete, select, update

from tests.factories import add_customer
from webapp.errors import DomainError
from webapp.extensions import db
from webapp.models import (
    AuditLog,
    CreditAllocation,
    CreditCost,
    CreditGrant,
    CreditMonthly,
    CreditSystem,
    Customer,
    Entitlement,
    Feature,
    LedgerEntry,
    OutboxEvent,
    UsageCorrection,
    UsageCounter,
    UsageDaily,
    UsageEvent,
    Wallet,
    WalletBurnDaily,
    set_clock,
)
from webapp.services import catalog, corrections, credits, reads, usage, wallets
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
    from webapp.models import (
        CustomerOverride,
        Plan,
        PlanCredit,
        PlanCreditIssuance,
        PlanEntitlement,
    )

    db.session.execute(update(Customer).values(plan_id=None, pending_plan_id=None))
    for model in (
        PlanCreditIssuance,
        CustomerOverride,
        PlanEntitlement,
        PlanCredit,
        UsageCorrection,
        OutboxEvent,
        AuditLog,
        CreditAllocation,
        LedgerEntry,
        CreditGrant,
        UsageEvent,
        UsageCounter,
        UsageDaily,
        WalletBurnDaily,
        Wallet,
        Entitlement,
        CreditCost,
        CreditMonthly,
        CreditSystem,
        Feature,
        Customer,
        Plan,
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


# ---------------------------------------------------------------- credit grants
#
# A second machine for issue 12: topups that make grants (kind, priority, scheduled, expiring),
# usage (backdated too), adjustments with idempotency keys, voids, the expiry sweep, and a clock
# that moves. Its model of every grant is written from the text, not from
# services/credits/rules.py, and is compared with the database's grants after every step.

DEFAULT_PRIORITY = {"granted": 100, "purchased": 200}  # lower is spent first
CREDIT_MICROS_PER_UNIT = 20_000  # 0.02 credits per API call
UNKNOWN_GRANT = 10**12
NO_EXPIRY = datetime.max.replace(tzinfo=UTC)


@dataclass
class ModelGrant:
    id: int
    customer: str
    kind: str
    amount: int
    priority: int
    effective: datetime
    expires: datetime | None
    remaining: int
    expired: int = 0
    voided: int = 0

    def eligible(self, at: datetime) -> bool:
        """May pay for a deduction at ``at``: effective_at <= at < expires_at, credits left."""
        return (
            self.remaining > 0
            and self.effective <= at
            and (self.expires is None or at < self.expires)
        )


def spending_order(grant: ModelGrant) -> tuple[int, datetime, bool, datetime, int]:
    """Issue 12: by priority, then soonest expiry (none last), then granted before purchased,
    then earliest effective_at, then id."""
    return (
        grant.priority,
        grant.expires or NO_EXPIRY,
        grant.kind != "granted",
        grant.effective,
        grant.id,
    )


def micros(value: int) -> str:
    return str(Decimal(value).scaleb(-6))


@dataclass
class ModelEvent:
    """A usage event as the model sees it: its amount and charge as recorded, its effective
    amount, and what its credit entries net drew from each grant."""

    customer: str
    amount: int
    credits: int
    at: datetime
    effective: int
    drawn: dict[int, int]


def model_event_credits(amount: int, credits: int, effective: int) -> int:
    """Issue 14: the event's own cost, exactly proportional, half up to a micro."""
    if amount <= 0 or effective <= 0 or credits == 0:
        return 0
    return int((Decimal(credits) * effective / amount).quantize(Decimal(1), ROUND_HALF_UP))


class FakeClock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def make_grants_catalog() -> None:
    catalog.create_credit_system(SYSTEM, key="credits", name="Credits")
    catalog.create_feature(SYSTEM, key="api_calls", name="API", type="consumable")
    catalog.create_feature(SYSTEM, key="candidates", name="Cand", type="consumable")
    catalog.create_feature(SYSTEM, key="seats", name="Seats", type="persistent")
    catalog.create_feature(SYSTEM, key="sso", name="SSO", type="boolean")
    catalog.set_credit_cost(SYSTEM, "api_calls", credit_system="credits", cost="0.02")
    for key in CUSTOMERS:
        add_customer(key, api_allowance=None, candidates_allowance=None, topup=None)


SEAT_LIMIT = 10  # add_customer's seat allowance (blocked over it)
hours = st.integers(0, 120).map(lambda h: timedelta(hours=h))
seconds = st.integers(0, 5 * 86_400).map(lambda s: timedelta(seconds=s))
keys = st.one_of(st.none(), st.sampled_from(["k1", "k2", "k3"]))


class Grants(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        wipe()
        # Whole seconds on an hour grid, so that steps often land exactly on an expiry.
        self.clock = FakeClock(datetime.now(UTC).replace(minute=0, second=0, microsecond=0))
        set_clock(self.clock)
        make_grants_catalog()
        self.grants: dict[int, ModelGrant] = {}
        self.has_wallet = dict.fromkeys(CUSTOMERS, False)
        # (customer, idempotency key) -> what it was used for, as compared on a replay
        self.keys: dict[tuple[str, str], tuple[object, ...]] = {}
        self.events: dict[str, tuple[str, int, str | None, usage.UsageResult]] = {}
        self.counter = 0
        # Usage corrections (issue 14): each api_calls event as the model knows it, seat counts
        # and seat events, and the corrections' idempotency keys (their own, per customer).
        self.usage_model: dict[str, ModelEvent] = {}
        self.seats = dict.fromkeys(CUSTOMERS, 0)
        self.seat_events: dict[str, ModelEvent] = {}
        self.correction_keys: dict[tuple[str, str], tuple[object, ...]] = {}

    def teardown(self) -> None:
        set_clock(None)

    # ---- the model

    @property
    def now(self) -> datetime:
        return self.clock.now

    def _of(self, customer: str) -> list[ModelGrant]:
        return [g for g in self.grants.values() if g.customer == customer]

    def _book(self, customer: str) -> None:
        """Every write that touches the wallet books its due expiries first."""
        for g in self._of(customer):
            if g.remaining > 0 and g.expires is not None and g.expires <= self.now:
                g.expired, g.remaining = g.remaining, 0

    def _spendable(self, customer: str, at: datetime) -> list[ModelGrant]:
        """Grants a deduction at ``at`` may use once the due expiries are booked."""
        return [
            g
            for g in self._of(customer)
            if g.eligible(at) and (g.expires is None or self.now < g.expires)
        ]

    def _deduct(self, customer: str, amount: int, at: datetime) -> list[tuple[int, int]]:
        grants = sorted(self._spendable(customer, at), key=spending_order)
        self._book(customer)
        parts = []
        left = amount
        for g in grants:
            if left == 0:
                break
            take = min(left, g.remaining)
            g.remaining -= take
            left -= take
            parts.append((g.id, take))
        assert left == 0
        return parts

    def _balance(self, customer: str) -> int:
        return sum(g.remaining for g in self._of(customer))

    def _available(self, customer: str) -> int:
        return sum(g.remaining for g in self._of(customer) if g.eligible(self.now))

    def _add(
        self,
        gid: int,
        customer: str,
        kind: str,
        amount: int,
        priority: int | None,
        effective: datetime,
        expires: datetime | None,
    ) -> None:
        self.grants[gid] = ModelGrant(
            gid,
            customer,
            kind,
            amount,
            DEFAULT_PRIORITY[kind] if priority is None else priority,
            effective,
            expires,
            amount,
        )
        self.has_wallet[customer] = True

    def _key_outcome(self, customer: str, key: str | None, content: tuple[object, ...]) -> str:
        if key is None or (customer, key) not in self.keys:
            return "new"
        return "replay" if self.keys[(customer, key)] == content else "idempotency_conflict"

    @staticmethod
    def _allocations(entry_id: int) -> list[tuple[int, int]]:
        return sorted(
            db.session.execute(
                select(CreditAllocation.grant_id, CreditAllocation.amount_micros).where(
                    CreditAllocation.ledger_entry_id == entry_id
                )
            )
        )

    # ---- the rules

    @initialize(
        grants=st.lists(
            st.tuples(
                st.sampled_from(CUSTOMERS),
                st.integers(1, 3_000_000),
                st.sampled_from(["purchased", "granted"]),
                st.sampled_from([None, 0, 100, 200]),
                st.one_of(st.none(), st.integers(-48, 0)),
                st.one_of(st.none(), st.integers(1, 96)),
            ),
            min_size=2,
            max_size=8,
        )
    )
    def some_grants(
        self, grants: list[tuple[str, int, str, int | None, int | None, int | None]]
    ) -> None:
        """Start from wallets of several grants with staggered expiries."""
        for args in grants:
            self.topup(*args)

    @rule(
        customer=st.sampled_from(CUSTOMERS),
        amount=st.one_of(st.integers(1, 300_000), st.integers(1, 5_000_000)),
        kind=st.sampled_from(["purchased", "granted"]),
        priority=st.sampled_from([None, 0, 100, 200]),
        effective=st.one_of(st.none(), st.integers(-48, 48)),
        expires=st.one_of(st.none(), st.integers(-6, 96)),
    )
    def topup(
        self,
        customer: str,
        amount: int,
        kind: str,
        priority: int | None,
        effective: int | None,
        expires: int | None,
    ) -> None:
        effective_at = self.now + timedelta(hours=effective or 0)
        expires_at = None if expires is None else self.now + timedelta(hours=expires)
        refused = expires_at is not None and (expires_at <= effective_at or expires_at <= self.now)
        try:
            result = wallets.topup_wallet(
                SYSTEM,
                customer_key=customer,
                credit_system="credits",
                amount=micros(amount),
                kind=kind,
                priority=priority,
                effective_at=None if effective is None else effective_at.isoformat(),
                expires_at=None if expires_at is None else expires_at.isoformat(),
            )
        except DomainError as exc:
            assert refused and (exc.code, exc.field) == ("validation_error", "expires_at"), exc
            event("topup refused")
            return
        assert not refused
        event(f"topup: {'scheduled' if effective_at > self.now else 'effective'}")
        self._book(customer)
        assert result.entry.grant_id is not None
        self._add(result.entry.grant_id, customer, kind, amount, priority, effective_at, expires_at)
        assert result.balance_micros == self._balance(customer)

    @rule(
        customer=st.sampled_from(CUSTOMERS),
        units=st.one_of(st.integers(1, 60), st.integers(1, 50_000_000)),
        backdate=st.one_of(st.none(), hours, seconds),
    )
    def record(self, customer: str, units: int, backdate: timedelta | None) -> None:
        self.counter += 1
        event_id = f"g{self.counter}"
        at = self.now if backdate is None else self.now - backdate
        timestamp = None if backdate is None else at.isoformat()
        cost = (units * CREDIT_MICROS_PER_UNIT + 500_000) // 1_000_000  # half up
        spendable = sum(g.remaining for g in self._spendable(customer, at))
        expected = "insufficient_credits" if cost > spendable else None
        try:
            result = usage.record_usage(
                SYSTEM,
                customer_key=customer,
                feature_key="api_calls",
                amount=micros(units),
                event_id=event_id,
                timestamp=timestamp,
            )
        except DomainError as exc:
            assert exc.code == expected, (exc.code, expected)
            assert Decimal(exc.details["eligible_balance"]) == Decimal(spendable).scaleb(-6)
            event("usage refused")
            return
        assert expected is None, (expected, cost, spendable)
        # An accepted event books its wallet's due expiries, whether or not it costs credits.
        parts = self._deduct(customer, cost, at) if cost else []
        event(f"usage paid by {min(len(parts), 3)} grants" + (", backdated" if backdate else ""))
        self._book(customer)
        assert result.credits_micros == cost
        assert result.balance_micros == (
            self._available(customer) if self.has_wallet[customer] else None
        )
        entry = db.session.scalar(
            select(LedgerEntry.id)
            .join(UsageEvent, UsageEvent.id == LedgerEntry.usage_event_id)
            .where(UsageEvent.event_id == event_id)
        )
        assert (entry is None) == (cost == 0)
        if entry is not None:
            assert self._allocations(entry) == sorted(parts)
        self.events[event_id] = (customer, units, timestamp, result)
        self.usage_model[event_id] = ModelEvent(customer, units, cost, at, units, dict(parts))

    @precondition(lambda self: self.events)
    @rule(data=st.data())
    def replay_usage(self, data: st.DataObject) -> None:
        event_id = data.draw(st.sampled_from(sorted(self.events)))
        customer, units, timestamp, first = self.events[event_id]
        result = usage.record_usage(
            SYSTEM,
            customer_key=customer,
            feature_key="api_calls",
            amount=micros(units),
            event_id=event_id,
            timestamp=timestamp,
        )
        assert result.replayed
        assert (result.credits_micros, result.balance_micros) == (
            first.credits_micros,
            first.balance_micros,
        )

    @rule(
        customer=st.sampled_from(CUSTOMERS),
        amount=st.integers(-3_000_000, 3_000_000).filter(bool),
        reason=st.sampled_from(["fix", "goodwill"]),
        key=keys,
    )
    def adjust(self, customer: str, amount: int, reason: str, key: str | None) -> None:
        content = ("adjustment", amount, reason)
        outcome = self._key_outcome(customer, key, content)
        expected = outcome if outcome == "idempotency_conflict" else None
        if outcome == "new" and amount < 0:
            if sum(g.remaining for g in self._spendable(customer, self.now)) < -amount:
                expected = "insufficient_credits"
        event(f"adjustment: {'credit' if amount > 0 else 'debit'}, {expected or outcome}")
        try:
            result = wallets.adjust_wallet(
                SYSTEM,
                customer_key=customer,
                credit_system="credits",
                amount=micros(amount),
                reason=reason,
                idempotency_key=key,
            )
        except DomainError as exc:
            assert exc.code == expected, (exc.code, expected)
            return
        assert expected is None, expected
        assert result.replayed == (outcome == "replay")
        if result.replayed:
            return
        if key is not None:
            self.keys[(customer, key)] = content
        if amount > 0:
            self._book(customer)
            assert result.entry.grant_id is not None
            self._add(result.entry.grant_id, customer, "granted", amount, None, self.now, None)
        else:
            parts = self._deduct(customer, -amount, self.now)
            assert self._allocations(result.entry.id) == sorted(parts)
        assert result.balance_micros == self._balance(customer)

    @precondition(lambda self: any(c[0] == "adjustment" for c in self.keys.values()))
    @rule(data=st.data())
    def replay_adjustment(self, data: st.DataObject) -> None:
        """The same adjustment posted again under its key (a retry, a double click) is applied
        once, whatever happened in between."""
        used = sorted(k for k, c in self.keys.items() if c[0] == "adjustment")
        customer, key = data.draw(st.sampled_from(used))
        _, amount, reason = self.keys[(customer, key)]
        assert isinstance(amount, int)
        result = wallets.adjust_wallet(
            SYSTEM,
            customer_key=customer,
            credit_system="credits",
            amount=micros(amount),
            reason=reason,
            idempotency_key=key,
        )
        assert result.replayed
        assert result.entry.amount_micros == amount

    @rule(data=st.data(), reason=st.sampled_from(["refund", "mistake"]), key=keys)
    def void(self, data: st.DataObject, reason: str, key: str | None) -> None:
        gid = data.draw(st.sampled_from([*sorted(self.grants), UNKNOWN_GRANT]))
        grant = self.grants.get(gid)
        outcome = "new"
        if grant is None:
            expected: str | None = "not_found"
        else:
            outcome = self._key_outcome(grant.customer, key, ("void", gid, reason))
            expected = outcome if outcome == "idempotency_conflict" else None
            booked_now = grant.expires is not None and grant.expires <= self.now
            if outcome == "new" and (grant.remaining == 0 or booked_now):
                expected = "nothing_to_void"
        event(f"void: {expected or outcome}")
        try:
            result = wallets.void_grant(SYSTEM, grant_id=gid, reason=reason, idempotency_key=key)
        except DomainError as exc:
            assert exc.code == expected, (exc.code, expected)
            return
        assert expected is None and grant is not None, expected
        assert result.replayed == (outcome == "replay")
        if result.replayed:
            return
        if key is not None:
            self.keys[(grant.customer, key)] = ("void", gid, reason)
        self._book(grant.customer)
        left, grant.remaining = grant.remaining, 0
        grant.voided = left
        assert result.entry.amount_micros == -left
        assert result.entry.balance_after_micros == self._balance(grant.customer)

    # ---- usage corrections (issue 14)

    def _correction_outcome(
        self, customer: str, key: str | None, content: tuple[object, ...]
    ) -> str:
        if key is None or (customer, key) not in self.correction_keys:
            return "new"
        return "replay" if self.correction_keys[(customer, key)] == content else "conflict"

    def _refund(self, m: ModelEvent, amount: int) -> list[tuple[int, int, str]]:
        """Back to the grants the event drew from, last in spending order first; a part that
        returns to a voided or expired grant leaves it again at once."""
        parts = []
        left = amount
        drawn = [self.grants[gid] for gid, n in m.drawn.items() if n > 0]
        for g in sorted(drawn, key=spending_order, reverse=True):
            if left == 0:
                break
            back = min(left, m.drawn[g.id])
            left -= back
            m.drawn[g.id] -= back
            if g.voided > 0:
                g.voided += back
                fate = "voided"
            elif g.expires is not None and g.expires <= self.now:
                g.expired += back
                fate = "expired"
            else:
                g.remaining += back
                fate = "returned"
            parts.append((g.id, -back, fate))
        assert left == 0
        return parts

    def _dead(self, m: ModelEvent) -> bool:
        """The event drew from a grant that has since been voided or has expired."""
        return any(
            n > 0
            and (
                self.grants[gid].voided > 0
                or (self.grants[gid].expires is not None and self.grants[gid].expires <= self.now)
            )
            for gid, n in m.drawn.items()
        )

    @precondition(lambda self: self.usage_model)
    @rule(
        data=st.data(),
        reason=st.sampled_from(["typo", "recount"]),
        key=st.one_of(st.none(), st.none(), st.sampled_from(["c1", "c2"])),
        charged=st.booleans(),
    )
    def correct(self, data: st.DataObject, reason: str, key: str | None, charged: bool) -> None:
        """Any event, to less or more (most often one that was charged credits)."""
        paid = sorted(k for k, m in self.usage_model.items() if m.credits)
        event_id = data.draw(
            st.sampled_from(paid if charged and paid else sorted(self.usage_model))
        )
        m = self.usage_model[event_id]
        actual = data.draw(
            st.one_of(
                st.just(0), st.integers(0, m.amount), st.integers(m.amount, 3 * m.amount + 60)
            )
        )
        self._correct(event_id, actual, reason, key)

    def _half_spent(self) -> list[int]:
        """Grants with credits left that an event drew from: voiding one makes a dead grant
        that a correction may return credits to."""
        drawn = {gid for m in self.usage_model.values() for gid, n in m.drawn.items() if n > 0}
        return sorted(gid for gid in drawn if self.grants[gid].remaining > 0)

    @precondition(lambda self: self._half_spent())
    @rule(data=st.data())
    def void_a_grant_an_event_drew_from(self, data: st.DataObject) -> None:
        gid = data.draw(st.sampled_from(self._half_spent()))
        grant = self.grants[gid]
        booked_now = grant.expires is not None and grant.expires <= self.now
        try:
            wallets.void_grant(SYSTEM, grant_id=gid, reason="refund")
        except DomainError as exc:
            # The refusal rolls back the expiries the call booked on its way: nothing changes.
            assert booked_now and exc.code == "nothing_to_void", exc
            return
        assert not booked_now
        self._book(grant.customer)
        grant.voided, grant.remaining = grant.remaining, 0

    @precondition(lambda self: any(self._dead(m) for m in self.usage_model.values()))
    @rule(data=st.data(), part=st.sampled_from([0, 1, 2]))
    def correct_on_a_dead_grant(self, data: st.DataObject, part: int) -> None:
        """An event paid (partly) by a grant since voided or expired: less usage, whose credits
        return to that grant must leave it again at once."""
        event_id = data.draw(
            st.sampled_from(sorted(k for k, m in self.usage_model.items() if self._dead(m)))
        )
        m = self.usage_model[event_id]
        self._correct(event_id, m.effective * part // 3, "after the grant died", None)

    def _correct(self, event_id: str, actual: int, reason: str, key: str | None) -> None:
        m = self.usage_model[event_id]
        content = ("correction", event_id, actual, reason)
        outcome = self._correction_outcome(m.customer, key, content)
        before = model_event_credits(m.amount, m.credits, m.effective)
        after = model_event_credits(m.amount, m.credits, actual)
        move = before - after
        expected = "idempotency_conflict" if outcome == "conflict" else None
        if outcome == "new" and move < 0:
            if sum(g.remaining for g in self._spendable(m.customer, m.at)) < -move:
                expected = "insufficient_credits"
        try:
            result = corrections.correct_usage(
                SYSTEM,
                customer_key=m.customer,
                event_id=event_id,
                actual_amount=micros(actual),
                reason=reason,
                idempotency_key=key,
            )
        except DomainError as exc:
            assert exc.code == expected, (exc.code, expected, exc.message)
            event(f"correction refused: {exc.code}")
            return
        assert expected is None, expected
        assert result.replayed == (outcome == "replay")
        if result.replayed:
            event("correction replayed")
            return
        if actual == m.effective:
            assert not result.corrected
            event("correction: nothing to correct")
            return
        if key is not None:
            self.correction_keys[(m.customer, key)] = content
        if m.credits:
            self._book(m.customer)  # under the wallet's lock, before the decision
        parts: list[tuple[int, int, str]] = []
        if move > 0:
            parts = self._refund(m, move)
        elif move < 0:
            for gid, take in self._deduct(m.customer, -move, m.at):
                m.drawn[gid] = m.drawn.get(gid, 0) + take
                parts.append((gid, take, "charged"))
        fates = sorted({fate for _, _, fate in parts})
        event(f"correction: {'refund' if move > 0 else 'charge' if move else 'no credits'} {fates}")
        m.effective = actual
        effect = result.effect
        assert effect.credits_micros == move
        assert sorted((p.grant_id, p.amount_micros, p.fate) for p in effect.parts) == sorted(parts)
        if move:
            entry = db.session.scalar(
                select(UsageCorrection.ledger_entry_id).where(UsageCorrection.id == result.id)
            )
            assert entry is not None
            assert self._allocations(entry) == sorted((g, n) for g, n, _ in parts)
            assert effect.balance_after_micros == self._balance(m.customer)

    @rule(customer=st.sampled_from(CUSTOMERS), delta=st.sampled_from([1, 2, 3, -1, -2]))
    def seats_change(self, customer: str, delta: int) -> None:
        self.counter += 1
        event_id = f"s{self.counter}"
        count = self.seats[customer]
        expected = None
        if delta > 0 and count + delta > SEAT_LIMIT:
            expected = "limit_exceeded"
        elif count + delta < 0:
            expected = "invalid_amount"
        try:
            usage.record_usage(
                SYSTEM, customer_key=customer, feature_key="seats", amount=delta, event_id=event_id
            )
        except DomainError as exc:
            assert exc.code == expected, (exc.code, expected)
            return
        assert expected is None, expected
        self.seats[customer] += delta
        amount = delta * 1_000_000
        self.seat_events[event_id] = ModelEvent(customer, amount, 0, self.now, amount, {})

    @precondition(lambda self: self.seat_events)
    @rule(data=st.data(), actual=st.integers(-3, 4))
    def correct_seats(self, data: st.DataObject, actual: int) -> None:
        event_id = data.draw(st.sampled_from(sorted(self.seat_events)))
        m = self.seat_events[event_id]
        customer = m.customer
        delta = actual * 1_000_000 - m.effective
        count = self.seats[customer] * 1_000_000
        expected = None
        if actual != 0 and (actual < 0) != (m.amount < 0):
            expected = "invalid_amount"
        elif delta > 0 and count + delta > SEAT_LIMIT * 1_000_000:
            expected = "limit_exceeded"
        elif count + delta < 0:
            expected = "invalid_amount"
        try:
            result = corrections.correct_usage(
                SYSTEM,
                customer_key=customer,
                event_id=event_id,
                actual_amount=actual,
                reason="seat count",
            )
        except DomainError as exc:
            assert exc.code == expected, (exc.code, expected, exc.message)
            event(f"seat correction refused: {exc.code}")
            return
        assert expected is None, (expected, actual, m)
        assert result.corrected == (delta != 0)
        event("seat correction" + (" to zero" if actual == 0 else ""))
        m.effective = actual * 1_000_000
        self.seats[customer] += delta // 1_000_000
        assert result.effect.used_after_micros == self.seats[customer] * 1_000_000
        assert result.effect.credits_micros is None

    @rule(delta=hours)
    def time_passes(self, delta: timedelta) -> None:
        self.clock.now += delta

    @precondition(lambda self: any(g.expires for g in self.grants.values()))
    @rule(data=st.data())
    def time_reaches_a_grants_boundary(self, data: st.DataObject) -> None:
        """Exactly an expiry or an effective time: at expires_at a grant is no longer spendable;
        at effective_at it is."""
        times = {g.expires for g in self.grants.values() if g.expires and g.expires > self.now}
        times |= {g.effective for g in self.grants.values() if g.effective > self.now}
        if times:
            self.clock.now = data.draw(st.sampled_from(sorted(times)))

    @precondition(
        lambda self: any(
            g.remaining > 0 and g.expires is not None and g.expires <= self.now
            for g in self.grants.values()
        )
    )
    @rule()
    def sweep(self) -> None:
        due = [
            g
            for g in self.grants.values()
            if g.remaining > 0 and g.expires is not None and g.expires <= self.now
        ]
        progress = credits.expire_due(batch=1)
        event(f"sweep booked {min(progress.grants, 2)}")
        assert progress.grants == len(due)
        for customer in CUSTOMERS:
            self._book(customer)
        assert credits.expire_due().grants == 0  # idempotent

    @invariant()
    def grants_and_wallets_match_the_model(self) -> None:
        keys = dict(db.session.execute(select(Customer.id, Customer.key)).all())
        got = {
            g.id: (
                keys[g.customer_id],
                g.kind,
                g.amount_micros,
                g.priority,
                g.effective_at,
                g.expires_at,
                g.remaining_micros,
                g.expired_micros,
                g.voided_micros,
                g.expired_at is not None,
                g.voided_at is not None,
            )
            for g in db.session.scalars(
                select(CreditGrant).execution_options(populate_existing=True)
            )
        }
        want = {
            g.id: (
                g.customer,
                g.kind,
                g.amount,
                g.priority,
                g.effective,
                g.expires,
                g.remaining,
                g.expired,
                g.voided,
                g.expired > 0,
                g.voided > 0,
            )
            for g in self.grants.values()
        }
        assert got == want
        wallet_rows = db.session.execute(
            select(Wallet.customer_id, Wallet.balance_micros, credits.available_balance(self.now))
        ).all()
        with_wallet = [c for c in CUSTOMERS if self.has_wallet[c]]
        assert {keys[cid]: balance for cid, balance, _ in wallet_rows} == {
            c: self._balance(c) for c in with_wallet
        }
        assert {keys[cid]: available for cid, _, available in wallet_rows} == {
            c: self._available(c) for c in with_wallet
        }
        # Usage corrections: each event's effective amount, and the seat counts.
        ids = {k: c for c, k in keys.items()}
        deltas: dict[str, int] = {}
        for event_id, delta in db.session.execute(
            select(UsageEvent.event_id, UsageCorrection.delta_micros).join(
                UsageCorrection, UsageCorrection.usage_event_id == UsageEvent.id
            )
        ):
            deltas[event_id] = deltas.get(event_id, 0) + delta
        for event_id, m in {**self.usage_model, **self.seat_events}.items():
            assert m.amount + deltas.get(event_id, 0) == m.effective, event_id
        seat_counts = dict(
            db.session.execute(
                select(UsageCounter.customer_id, UsageCounter.used_micros)
                .join(Feature, Feature.id == UsageCounter.feature_id)
                .where(Feature.key == "seats")
                .execution_options(populate_existing=True)
            ).all()
        )
        for customer, count in self.seats.items():
            assert seat_counts.get(ids[customer], 0) == count * 1_000_000
        report = verify_ledger()
        assert report.ok, report.violations


def test_grants_match_a_plain_model(app):
    try:
        run_state_machine_as_test(
            Grants,
            settings=settings(
                max_examples=15,
                stateful_step_count=30,
                deadline=None,
                suppress_health_check=list(HealthCheck),
            ),
        )
    finally:
        set_clock(None)


def test_granted_is_spent_before_an_older_purchased_grant_when_neither_expires(app):
    """Found by the machine above: with equal priority and no expiry on either grant, the kind
    decides before the effective time (issue 12's spending order)."""
    make_grants_catalog()
    start = datetime.now(UTC)
    purchased = wallets.topup_wallet(
        SYSTEM,
        customer_key="cust-a",
        credit_system="credits",
        amount="1",
        kind="purchased",
        priority=100,
        effective_at=(start - timedelta(hours=17)).isoformat(),
    )
    granted = wallets.topup_wallet(
        SYSTEM, customer_key="cust-a", credit_system="credits", amount="1", kind="granted"
    )
    usage.record_usage(SYSTEM, customer_key="cust-a", feature_key="api_calls", amount=10)
    wallets.adjust_wallet(
        SYSTEM, customer_key="cust-a", credit_system="credits", amount="-0.1", reason="fix"
    )
    left = dict(db.session.execute(select(CreditGrant.id, CreditGrant.remaining_micros)).all())
    assert left == {purchased.entry.grant_id: 1_000_000, granted.entry.grant_id: 700_000}


class _Pick:
    """Stands in for hypothesis's ``data`` when a found sequence of rules is replayed by hand:
    each draw returns the next chosen value."""

    def __init__(self, *values: object) -> None:
        self.values = list(values)

    def draw(self, strategy: object) -> object:
        return self.values.pop(0)


def test_a_refused_void_of_a_grant_past_its_expiry_books_nothing(app, monkeypatch):
    """Found by the machine above (on PostgreSQL): a void of a grant that reached its expiry
    with no write since is refused with ``nothing_to_void``, and the refusal rolls back the
    expiry booking it did on the way (a DomainError rolls the whole call back). The rule that
    voids a grant an event drew from booked the expiry in the model anyway, so the next check
    saw the grant unbooked in the database and booked in the model. The sweep books it later."""
    monkeypatch.setattr(sys.modules[__name__], "event", lambda _: None)  # outside hypothesis
    machine = Grants()
    try:
        machine.some_grants([("cust-a", 3_000_000, "purchased", None, 0, 2)])
        (gid,) = machine.grants
        machine.record("cust-a", 50_000_000, None)  # 50 calls: 1 credit from the grant
        machine.grants_and_wallets_match_the_model()
        machine.time_passes(timedelta(hours=3))
        machine.void_a_grant_an_event_drew_from(_Pick(gid))
        machine.grants_and_wallets_match_the_model()
        grant = db.session.get(CreditGrant, gid, populate_existing=True)
        assert (grant.remaining_micros, grant.expired_micros) == (2_000_000, 0)
        machine.sweep()
        machine.grants_and_wallets_match_the_model()
        assert machine.grants[gid].expired == 2_000_000
    finally:
        machine.teardown()
