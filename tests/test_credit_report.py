"""The finance roll-forward (domain.md, "Finance roll-forward"): the monthly credit rollup, the
report read from it (service, API), checked by hand and against a plain-Python model of random
histories, on SQLite and PostgreSQL. `ledger verify` (run after every test) checks the rollup
against the ledger and the identity of every month."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, localcontext

import hypothesis.strategies as st
import pytest
from hypothesis import HealthCheck, given, settings
from sqlalchemy import func, select

from tests.api_support import api_as, error_code
from tests.web import count_queries
from webapp.errors import DomainError, Forbidden, NotFound, ValidationError
from webapp.extensions import db
from webapp.models import CREDIT_BASE, CreditMonthly, CreditSystem, Wallet, utcnow
from webapp.services import catalog, credits, reports, usage, wallets
from webapp.services.actors import SYSTEM, Actor
from webapp.services.credits import rollup
from webapp.services.credits.rules import GrantRef, allocate, due, eligible_balance
from webapp.services.money import MICROS, format_micros

FINANCE = Actor(kind="user", id=None, name="finance@example.com", role="finance")


def month(at: datetime) -> str:
    return f"{at:%Y-%m}"


# ---------------------------------------------------------------- months and money


@pytest.mark.parametrize(
    ("month_from", "month_to", "field"),
    [
        ("2026-13", "2026-12", "from"),
        ("2026-1", "2026-12", "from"),
        ("26-01", "2026-12", "from"),
        ("2026-01", "2026-00", "to"),
        ("2026-01-01", "2026-02", "from"),
        ("1969-12", "2026-02", "from"),
        ("2026-03", "2026-02", "from"),  # after `to`
        ("2016-01", "2026-01", "from"),  # 121 months
        (7, "2026-01", "from"),
        ("\u0662\u0660\u0662\u0666-01", "2026-02", "from"),  # Arabic-Indic digits
        ("2026-01", "2026-02\x00", "to"),
    ],
)
def test_a_bad_month_range_is_refused_naming_the_field(app, month_from, month_to, field):
    with pytest.raises(ValidationError) as refused:
        reports.credit_report(FINANCE, month_from=month_from, month_to=month_to)
    assert refused.value.field == field


def test_the_range_defaults_to_the_last_twelve_months_and_allows_120(app, clock):
    clock.now = datetime(2026, 3, 15, tzinfo=UTC)
    report = reports.credit_report(FINANCE)
    assert (report.month_from, report.month_to) == ("2025-04", "2026-03")
    report = reports.credit_report(FINANCE, month_from="2016-02", month_to="2026-01")
    assert (report.month_from, report.month_to) == ("2016-02", "2026-01")


def test_who_may_read_the_report(app):
    for role in ("finance", "admin", "account_manager"):
        reports.credit_report(Actor("user", None, f"{role}@x", role))
    with pytest.raises(Forbidden):
        reports.credit_report(Actor("user", None, "support@x", "support"))
    with pytest.raises(NotFound):
        reports.credit_report(FINANCE, credit_system="gold")


def test_money_is_exact_decimal_text():
    assert reports.money_value(1_234_567, "0.5") == Decimal("0.6172835")
    assert reports.money_text(reports.money_value(10**24, "999999.999999")) == (
        "999999999999000000000000.00"
    )
    assert reports.money_text(reports.money_value(1, "0.000001")) == "0.000000000001"
    assert reports.money_text(Decimal("12.5")) == "12.50"
    assert reports.money_text(Decimal("-3")) == "-3.00"
    assert reports.money_text(Decimal("0E-12")) == "0.00"


# ---------------------------------------------------------------- by hand


def test_a_month_by_hand(catalog, clock):
    """Purchased at 0.5 EUR, granted, usage across both, an expiry, a void, adjustments."""
    clock.now = datetime(2030, 1, 10, tzinfo=UTC)
    c = catalog.customer
    wallets.topup_wallet(
        SYSTEM,
        customer_key=c,
        credit_system="credits",
        amount="100",
        unit_price="0.5",
        currency="eur",
        priority=50,
    )
    wallets.topup_wallet(
        SYSTEM,
        customer_key=c,
        credit_system="credits",
        amount="4",
        kind="granted",
        priority=10,
        expires_at="2030-02-01T00:00:00Z",
    )
    # 250 calls at 0.02 = 5 credits: 4 from the granted grant, 1 from the EUR grant
    usage.record_usage(SYSTEM, customer_key=c, feature_key="api_calls", amount=250)
    clock.now = datetime(2030, 2, 5, tzinfo=UTC)
    wallets.topup_wallet(
        SYSTEM,
        customer_key=c,
        credit_system="credits",
        amount="3",
        kind="granted",
        priority=10,
        expires_at="2030-02-20T00:00:00Z",
    )
    clock.now = datetime(2030, 2, 25, tzinfo=UTC)
    credits.expire_due()  # the 3 granted credits expire, booked in February
    wallets.adjust_wallet(SYSTEM, customer_key=c, credit_system="credits", amount="-9", reason="x")
    wallets.adjust_wallet(SYSTEM, customer_key=c, credit_system="credits", amount="2", reason="y")
    eur = next(
        g
        for g in reports_grants(c)
        if g.currency == "EUR"  # the EUR grant: 100 - 1 - 9 = 90 left
    )
    wallets.void_grant(SYSTEM, grant_id=eur.id, reason="refund")

    report = reports.credit_report(FINANCE, month_from="2029-12", month_to="2030-02")
    (system,) = report.systems
    dec, jan, feb = system.months
    # the catalog's own 10 credits (purchased, no price) were issued before, at the real now
    assert (dec.opening, dec.closing) == (10 * MICROS, 10 * MICROS)
    assert dec.money == []
    assert jan.opening == 10 * MICROS and jan.month == "2030-01"
    assert (jan.issued_purchased, jan.issued_granted) == (100 * MICROS, 4 * MICROS)
    assert (jan.consumed_purchased, jan.consumed_granted) == (1 * MICROS, 4 * MICROS)
    assert jan.closing == 109 * MICROS
    (eur_jan,) = jan.money
    assert (eur_jan.currency, eur_jan.issued, eur_jan.consumed, eur_jan.closing) == (
        "EUR",
        Decimal("50"),
        Decimal("0.5"),
        Decimal("49.5"),
    )
    assert feb.opening == 109 * MICROS
    assert (feb.issued_granted, feb.expired_granted) == (3 * MICROS, 3 * MICROS)
    assert feb.adjusted == -7 * MICROS  # -9 from the EUR grant, +2 granted
    assert feb.voided == 90 * MICROS
    assert feb.closing == 12 * MICROS  # the catalog's 10 and the adjustment's 2
    (eur_feb,) = feb.money
    assert eur_feb.opening == Decimal("49.5")
    assert eur_feb.adjusted == Decimal("-4.5")
    assert eur_feb.voided == Decimal("45")
    assert eur_feb.closing == Decimal(0)
    total = system.total
    assert total.month == "2029-12..2030-02"
    assert (total.opening, total.closing) == (10 * MICROS, 12 * MICROS)
    assert total.issued == 107 * MICROS and total.consumed == 5 * MICROS
    assert_identity(system)

    # A range starting in February opens with January's closing (read from the rows before it).
    later = reports.credit_report(FINANCE, month_from="2030-02", month_to="2030-02").systems[0]
    assert later.months[0] == feb


def reports_grants(customer_key: str):
    from webapp.models import CreditGrant, Customer

    return db.session.scalars(
        select(CreditGrant)
        .join(Customer, Customer.id == CreditGrant.customer_id)
        .where(Customer.key == customer_key)
        .order_by(CreditGrant.id)
    ).all()


def assert_identity(system: reports.SystemReport) -> None:
    previous = None
    for p in [*system.months, system.total]:
        assert (
            p.opening + p.issued - p.consumed - p.expired - p.voided + p.adjusted + p.corrected
            == p.closing
        ), p
        for m in p.money:
            assert (
                m.opening + m.issued - m.consumed - m.expired - m.voided + m.adjusted + m.corrected
                == m.closing
            ), m
        if previous is not None and p is not system.total:
            assert p.opening == previous.closing
        previous = p


def test_the_report_reads_a_constant_number_of_queries(catalog, clock, app):
    c = catalog.customer

    def report_queries() -> int:
        db.session.expunge_all()
        with count_queries() as statements:
            reports.credit_report(FINANCE, month_from="2020-01", month_to="2029-12")
        return len(statements)

    first = report_queries()
    for i in range(6):
        clock.advance(days=40)
        wallets.topup_wallet(
            SYSTEM,
            customer_key=c,
            credit_system="credits",
            amount="5",
            unit_price=f"0.{i + 1}",
            currency=("EUR", "USD")[i % 2],
        )
        usage.record_usage_batch(
            SYSTEM, [{"customer_key": c, "feature_key": "api_calls", "amount": 10}] * 20
        )
    catalog_service_system("gold")
    assert report_queries() == first == 3


def catalog_service_system(key: str) -> None:
    catalog.create_credit_system(SYSTEM, key=key, name=key.title())


@pytest.mark.breaks_ledger  # rows added behind the ledger's back, to reach the sizes
def test_rollup_rows_hold_sums_past_64_bits(catalog, app):
    """20 × 10^18 micros into one row and one more key: exact, low part within [0, 2^40)."""
    system_id = db.session.scalar(select(func.min(CreditMonthly.credit_system_id)))
    at = datetime(2031, 5, 3, tzinfo=UTC)
    conn = db.session.connection()
    for _ in range(20):
        rollup.add(conn, [rollup.Row(system_id, at, "issued", "purchased", "USD", "2", 10**18)])
    rollup.add(conn, [rollup.Row(system_id, at, "consumed", "purchased", "USD", "2", 7)])
    db.session.commit()
    row = db.session.scalar(
        select(CreditMonthly).where(
            CreditMonthly.month == date(2031, 5, 1), CreditMonthly.category == "issued"
        )
    )
    assert row.total_micros == 20 * 10**18 and 0 <= row.amount_micros < CREDIT_BASE
    (may,) = (
        reports.credit_report(FINANCE, month_from="2031-05", month_to="2031-05").systems[0].months
    )
    assert may.issued_purchased == 20 * 10**18
    assert may.closing - may.opening == 20 * 10**18 - 7
    assert reports.money_text(may.money[0].issued) == "40000000000000.00"


# ---------------------------------------------------------------- the API


def test_the_api_report(client, catalog):
    api = api_as(client, "account_manager")
    response = api.get("/api/v1/reports/credits?from=2020-01&to=2020-02&credit_system=credits")
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert (body["month_from"], body["month_to"]) == ("2020-01", "2020-02")
    (system,) = body["systems"]
    assert system["credit_system"] == "credits"
    assert [m["month"] for m in system["months"]] == ["2020-01", "2020-02"]
    assert system["total"]["month"] == "2020-01..2020-02"
    this = month(utcnow())
    body = api.get(f"/api/v1/reports/credits?from={this}&to={this}").get_json()
    (now,) = body["systems"][0]["months"]
    assert (now["opening"], now["issued_purchased"], now["closing"]) == ("0", "10", "10")
    assert now["money"] == []


@pytest.mark.parametrize(
    ("query", "status", "code"),
    [
        ("from=2026-13", 422, "validation_error"),
        ("from=2026-05&to=2026-04", 422, "validation_error"),
        ("from=2010-01&to=2026-01", 422, "validation_error"),
        ("credit_system=gold", 404, "not_found"),
        ("month=2026-01", 422, "validation_error"),
    ],
)
def test_the_api_report_refuses_bad_queries(client, catalog, query, status, code):
    response = api_as(client, "finance").get(f"/api/v1/reports/credits?{query}")
    assert (response.status_code, error_code(response)) == (status, code)


def test_support_may_not_read_the_report(client, catalog):
    response = api_as(client, "support").get("/api/v1/reports/credits")
    assert (response.status_code, error_code(response)) == (403, "forbidden")


# ---------------------------------------------------------------- against a model


@dataclass
class Lot:
    ref: GrantRef
    currency: str
    price: str


@dataclass
class Model:
    """Credits per month, category and grant terms, as the history implies them."""

    lots: dict[str, dict[int, Lot]] = field(default_factory=dict)  # customer -> grant id -> lot
    moves: dict[tuple[str, str, str, str, str], int] = field(default_factory=dict)

    def move(self, at: datetime, category: str, lot: Lot, amount: int) -> None:
        key = (month(at), category, lot.ref.kind, lot.currency, lot.price)
        self.moves[key] = self.moves.get(key, 0) + amount

    def refs(self, customer: str) -> list[GrantRef]:
        return [lot.ref for lot in self.lots.setdefault(customer, {}).values()]

    def book(self, customer: str, now: datetime) -> None:
        lots = self.lots.setdefault(customer, {})
        for ref in due(self.refs(customer), now):
            self.move(now, "expired", lots[ref.id], ref.remaining_micros)
            ref.remaining_micros = 0

    def spend(self, customer: str, amount: int, at: datetime, category: str, sign: int) -> None:
        lots = self.lots[customer]
        for ref, part in allocate(self.refs(customer), amount, at):
            self.move(at, category, lots[ref.id], sign * part)


SIGN = {"issued": 1, "consumed": -1, "expired": -1, "voided": -1, "adjusted": 1, "corrected": 1}


def expected_months(model: Model, labels: list[str]) -> list[dict[str, object]]:
    """Each month's columns and money per currency, from the model's moves alone."""
    out = []
    held: dict[tuple[str, str, str], int] = {}
    first = labels[0]
    for (m, category, kind, cur, price), amount in model.moves.items():
        if m < first:
            key = (kind, cur, price)
            held[key] = held.get(key, 0) + SIGN[category] * amount
    with localcontext() as ctx:
        ctx.prec = 80
        for label in labels:
            row: dict[str, object] = {"month": label, "opening": sum(held.values())}
            money: dict[str, dict[str, Decimal]] = {}

            def value(
                kind: str,
                cur: str,
                price: str,
                name: str,
                amount: int,
                money: dict[str, dict[str, Decimal]] = money,
            ) -> None:
                if kind == "purchased" and price:
                    by = money.setdefault(cur, {})
                    by[name] = by.get(name, Decimal(0)) + Decimal(amount) / MICROS * Decimal(price)

            for (kind, cur, price), amount in held.items():
                value(kind, cur, price, "opening", amount)
            cols = {
                f"{c}_{k}": 0
                for c in ("issued", "consumed", "expired")
                for k in ("purchased", "granted")
            }
            cols |= {"voided": 0, "adjusted": 0, "corrected": 0}
            for (m, category, kind, cur, price), amount in model.moves.items():
                if m != label:
                    continue
                name = f"{category}_{kind}" if f"{category}_{kind}" in cols else category
                cols[name] += amount
                key = (kind, cur, price)
                held[key] = held.get(key, 0) + SIGN[category] * amount
                value(kind, cur, price, category, amount)
            for (kind, cur, price), amount in held.items():
                value(kind, cur, price, "closing", amount)
            row |= cols
            row["closing"] = sum(held.values())
            row["money"] = {
                cur: {k: v for k, v in values.items() if v} for cur, values in money.items()
            }
            out.append(row)
    return out


def actual_months(system: reports.SystemReport) -> list[dict[str, object]]:
    out = []
    for p in system.months:
        row = {
            name: getattr(p, name)
            for name in (
                "month",
                "opening",
                "issued_purchased",
                "issued_granted",
                "consumed_purchased",
                "consumed_granted",
                "expired_purchased",
                "expired_granted",
                "voided",
                "adjusted",
                "corrected",
                "closing",
            )
        }
        row["money"] = {
            m.currency: {
                k: getattr(m, k)
                for k in (
                    "opening",
                    "issued",
                    "consumed",
                    "expired",
                    "voided",
                    "adjusted",
                    "corrected",
                    "closing",
                )
                if getattr(m, k)
            }
            for m in p.money
        }
        out.append(row)
    return out


customers = st.sampled_from(["a", "b"])
# Mostly whole credits (hypothesis favours tiny integers), sometimes any number of micros.
credit_amounts = st.one_of(
    st.integers(1, 60).map(lambda n: n * MICROS), st.integers(1, 60 * MICROS)
)
prices = st.sampled_from([None, ("0.5", "EUR"), ("0.013", "EUR"), ("2", "USD"), ("0", "USD")])
topup_steps = st.tuples(
    st.just("topup"),
    customers,
    st.sampled_from(["purchased", "granted"]),
    credit_amounts,
    prices,
    st.one_of(st.none(), st.integers(1, 70)),
)
use_steps = st.tuples(st.just("use"), customers, st.integers(1, 10))
# Each history opens with topups (usage has something to spend), then anything, usage the most.
steps = st.tuples(
    st.lists(topup_steps, min_size=2, max_size=4),
    st.lists(
        st.one_of(
            topup_steps,
            use_steps,
            use_steps,
            use_steps,
            st.tuples(st.just("advance"), st.integers(1, 40), st.integers(0, 23)),
            st.tuples(st.just("void"), customers, st.integers(0, 20)),
            st.tuples(st.just("adjust"), customers, st.integers(-20 * MICROS, 20 * MICROS)),
            st.tuples(st.just("sweep")),
        ),
        min_size=1,
        max_size=40,
    ),
).map(lambda parts: parts[0] + parts[1])
_examples = itertools.count()
COST = Decimal("1.5")  # credits per unit of the model's feature


def _set_up(n: int) -> tuple[str, str, dict[str, str]]:
    system, feature = f"cs{n}", f"calls{n}"
    catalog.create_credit_system(SYSTEM, key=system, name=f"Credits {n}")
    catalog.create_feature(
        SYSTEM, key=feature, name="Calls", type="consumable", event_name=f"calls.{n}"
    )
    catalog.set_credit_cost(SYSTEM, feature, credit_system=system, cost=str(COST))
    keys = {}
    for c in ("a", "b"):
        keys[c] = f"r{n}-{c}"
        catalog.create_customer(SYSTEM, key=keys[c], name=keys[c], email=None)
        catalog.set_entitlement(SYSTEM, keys[c], feature)  # unlimited
    return system, feature, keys


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(history=steps)
def test_the_report_matches_a_model_of_a_random_history(app, clock, history):
    n = next(_examples)
    system, feature, keys = _set_up(n)
    model = Model()
    start = clock.now
    for step in history:
        now = clock.now
        kind_of_step = step[0]
        if kind_of_step == "advance":
            clock.advance(days=step[1], hours=step[2])
        elif kind_of_step == "sweep":
            credits.expire_due(now=now)
            for c in keys:
                model.book(c, now)
        elif kind_of_step == "topup":
            _, c, kind, amount, priced, days = step
            price, currency = priced if priced and kind == "purchased" else (None, None)
            result = wallets.topup_wallet(
                SYSTEM,
                customer_key=keys[c],
                credit_system=system,
                amount=format_micros(amount),
                kind=kind,
                unit_price=price,
                currency=currency,
                expires_at=None if days is None else (now + timedelta(days=days)).isoformat(),
            )
            model.book(c, now)
            gid = result.entry.grant_id
            priority = 100 if kind == "granted" else 200
            expires = None if days is None else now + timedelta(days=days)
            lot = Lot(
                GrantRef(gid, kind, priority, now, expires, amount), currency or "", price or ""
            )
            model.lots.setdefault(c, {})[gid] = lot
            model.move(now, "issued", lot, amount)
        elif kind_of_step == "use":
            _, c, units = step
            cost = int(units * COST * MICROS)
            fits = cost <= eligible_balance(model.refs(c), now)
            try:
                usage.record_usage(SYSTEM, customer_key=keys[c], feature_key=feature, amount=units)
            except DomainError as refused:
                assert not fits and refused.code == "insufficient_credits", refused
                continue
            assert fits
            model.book(c, now)
            model.spend(c, cost, now, "consumed", 1)
        elif kind_of_step == "adjust":
            _, c, amount = step
            if amount == 0:
                continue
            fits = amount > 0 or -amount <= eligible_balance(model.refs(c), now)
            try:
                result = wallets.adjust_wallet(
                    SYSTEM,
                    customer_key=keys[c],
                    credit_system=system,
                    amount=format_micros(amount),
                    reason="model",
                )
            except DomainError as refused:
                assert not fits and refused.code == "insufficient_credits", refused
                continue
            assert fits
            model.book(c, now)
            if amount > 0:
                gid = result.entry.grant_id
                lot = Lot(GrantRef(gid, "granted", 100, now, None, amount), "", "")
                model.lots[c][gid] = lot
                model.move(now, "adjusted", lot, amount)
            else:
                model.spend(c, -amount, now, "adjusted", -1)
        elif kind_of_step == "void":
            _, c, index = step
            lots = list(model.lots.get(c, {}).values())
            if not lots:
                continue
            lot = lots[index % len(lots)]
            # What the void will find once the wallet's due expiries are booked; refused, it
            # books nothing (its transaction, expiries included, is rolled back).
            left = 0 if due([lot.ref], now) else lot.ref.remaining_micros
            try:
                wallets.void_grant(SYSTEM, grant_id=lot.ref.id, reason="model")
            except DomainError as refused:
                assert left == 0 and refused.code == "nothing_to_void", refused
                continue
            assert left > 0
            model.book(c, now)
            model.move(now, "voided", lot, left)
            lot.ref.remaining_micros = 0

    first, last = month(start), month(clock.now)
    report = reports.credit_report(FINANCE, month_from=first, month_to=last, credit_system=system)
    (got,) = report.systems
    labels = [p.month for p in got.months]
    assert (labels[0], labels[-1]) == (first, last)
    assert actual_months(got) == expected_months(model, labels)
    assert_identity(got)
    balances = db.session.scalar(
        select(func.coalesce(func.sum(Wallet.balance_micros), 0))
        .join(CreditSystem, Wallet.credit_system_id == CreditSystem.id)
        .where(CreditSystem.key == system)
    )
    assert got.months[-1].closing == balances
    # A range that starts later opens with what the months before it closed with.
    if len(labels) > 1:
        middle = labels[len(labels) // 2]
        later = reports.credit_report(
            FINANCE, month_from=middle, month_to=last, credit_system=system
        ).systems[0]
        assert actual_months(later) == expected_months(model, labels[len(labels) // 2 :])


# ---------------------------------------------------------------- the migration's backfill


def test_the_migration_backfills_the_rollup_from_the_ledger(backend, database_url, tmp_path):
    """A history written at head (usage over two months, an expiry, a void, adjustments both
    ways, two currencies); the table dropped (downgrade) and made again (upgrade): the backfill
    gives the rows the writes gave, and `ledger verify` holds."""
    from tests.conftest import TEST_CONFIG, migrate_to_head
    from tests.factories import add_customer, make_catalog
    from tests.test_schema_and_cli import _flask, _fresh_database
    from webapp import create_app
    from webapp.models import set_clock

    url = _fresh_database(backend, database_url, tmp_path, "backfill")
    migrate_to_head(url)
    app = create_app({**TEST_CONFIG, "SQLALCHEMY_DATABASE_URI": url})
    start = datetime(2031, 1, 5, tzinfo=UTC)
    moments = iter(start + timedelta(days=d) for d in (0, 1, 20, 33, 34, 35, 36))
    with app.app_context():
        try:
            set_clock(lambda: now)
            now = next(moments)
            make_catalog(api_allowance=None)
            add_customer("cust-two", topup=None, api_allowance=None)
            for key, price, currency in ((C_MAIN, "0.5", "EUR"), ("cust-two", "0.25", "USD")):
                wallets.topup_wallet(
                    SYSTEM,
                    customer_key=key,
                    credit_system="credits",
                    amount="20",
                    unit_price=price,
                    currency=currency,
                    priority=10,
                    expires_at=(start + timedelta(days=30)).isoformat(),
                )
            now = next(moments)
            usage.record_usage(SYSTEM, customer_key=C_MAIN, feature_key="api_calls", amount=700)
            now = next(moments)
            wallets.adjust_wallet(
                SYSTEM, customer_key="cust-two", credit_system="credits", amount="5", reason="+"
            )
            now = next(moments)  # February: the EUR grant's expiry is due
            credits.expire_due()
            now = next(moments)
            wallets.adjust_wallet(
                SYSTEM, customer_key=C_MAIN, credit_system="credits", amount="-3", reason="-"
            )
            now = next(moments)
            usage.record_usage(SYSTEM, customer_key="cust-two", feature_key="api_calls", amount=9)
            now = next(moments)
            two = reports_grants("cust-two")[-1]  # the positive adjustment's grant
            wallets.void_grant(SYSTEM, grant_id=two.id, reason="void")
            written = _rollup_rows()
            assert {row[2] for row in written} == {
                "issued",
                "consumed",
                "expired",
                "voided",
                "adjusted",
            }
        finally:
            set_clock(None)
            db.session.remove()
            db.engine.dispose()
    down = _flask(url, "db", "downgrade", "c4e6a8b0d2f3")  # the revision before the rollup
    assert down.returncode == 0, down.stderr
    up = _flask(url, "db", "upgrade")
    assert up.returncode == 0, up.stderr
    verified = _flask(url, "ledger", "verify")
    assert verified.returncode == 0, verified.stdout
    with app.app_context():
        try:
            assert _rollup_rows() == written
        finally:
            db.session.remove()
            db.engine.dispose()


C_MAIN = "cust-6d11ca90"


def _rollup_rows() -> list[tuple]:
    m = CreditMonthly
    return [
        tuple(row)
        for row in db.session.execute(
            select(
                m.credit_system_id,
                m.month,
                m.category,
                m.kind,
                m.currency,
                m.unit_price,
                m.shard,
                m.amount_high,
                m.amount_micros,
            ).order_by(*m.__table__.primary_key.columns)
        )
    ]


def test_a_refused_write_adds_nothing_to_the_rollup(catalog, clock):
    """A negative adjustment refused after booking a due expiry rolls both back: no `expired`
    row is left behind by the rows kept for the commit."""
    wallets.topup_wallet(
        SYSTEM,
        customer_key=catalog.customer,
        credit_system="credits",
        amount="5",
        kind="granted",
        expires_at=(clock.now + timedelta(days=1)).isoformat(),
    )
    before = _rollup_rows()
    clock.advance(days=2)
    with pytest.raises(DomainError):
        wallets.adjust_wallet(
            SYSTEM,
            customer_key=catalog.customer,
            credit_system="credits",
            amount="-50",
            reason="too much",
        )
    assert _rollup_rows() == before
    wallets.adjust_wallet(
        SYSTEM, customer_key=catalog.customer, credit_system="credits", amount="-1", reason="ok"
    )
    assert {row[2] for row in _rollup_rows()} == {"issued", "expired", "adjusted"}
