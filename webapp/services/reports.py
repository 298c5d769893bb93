"""The finance roll-forward (domain.md, "Finance roll-forward"): per credit system and UTC month,
the opening balance, what was issued, consumed, expired, voided, adjusted and corrected, and the
closing balance; for purchased credits with a unit price, the money value per currency.

Read from the monthly rollup (credit_monthly, written with the ledger) in three queries whatever
the number of events or months: the credit systems, the sum of every row before the first month
(the opening), and the rows of the months asked for."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import Any

from sqlalchemy import literal_column, select

from ..errors import ValidationError
from ..extensions import db
from ..models import CREDIT_BASE, CreditMonthly, CreditSystem, exact_sum, utcnow
from .actors import VIEW_LEDGER, Actor, require
from .catalog import get_credit_system
from .money import parse_micros

MAX_MONTHS = 120
DEFAULT_MONTHS = 12
MONTH_RE = re.compile(r"([0-9]{4})-([0-9]{2})")  # ASCII digits only
# How each category moves the balance: opening + issued - consumed - expired - voided + adjusted
# + corrected = closing.
SIGN = {"issued": 1, "consumed": -1, "expired": -1, "voided": -1, "adjusted": 1, "corrected": 1}

Terms = tuple[str, str, str]  # kind, currency ('' none), unit price ('' none)


@dataclass
class Money:
    """The value of one currency's priced purchased credits in one month (or the range), in
    exact decimals: ``micros × unit_price / 10^6``, summed over the prices."""

    currency: str
    opening: Decimal = Decimal(0)  # deferred at the start
    issued: Decimal = Decimal(0)  # sold
    consumed: Decimal = Decimal(0)  # recognised revenue
    expired: Decimal = Decimal(0)  # breakage
    voided: Decimal = Decimal(0)  # refunded
    adjusted: Decimal = Decimal(0)
    corrected: Decimal = Decimal(0)
    closing: Decimal = Decimal(0)  # deferred (unconsumed) at the end


@dataclass
class Period:
    """One month's roll-forward of one credit system (or the whole range's: ``month`` is then
    "from..to"). Amounts in micros; the identity holds exactly:
    opening + issued - consumed - expired - voided + adjusted + corrected = closing."""

    month: str
    opening: int = 0
    issued_purchased: int = 0
    issued_granted: int = 0
    consumed_purchased: int = 0
    consumed_granted: int = 0
    expired_purchased: int = 0
    expired_granted: int = 0
    voided: int = 0
    adjusted: int = 0
    corrected: int = 0
    closing: int = 0
    money: list[Money] = field(default_factory=list)

    @property
    def issued(self) -> int:
        return self.issued_purchased + self.issued_granted

    @property
    def consumed(self) -> int:
        return self.consumed_purchased + self.consumed_granted

    @property
    def expired(self) -> int:
        return self.expired_purchased + self.expired_granted

    @property
    def moved(self) -> bool:
        """Anything happened in the period (else opening = closing)."""
        return any((self.issued, self.consumed, self.expired, self.voided, self.adjusted)) or bool(
            self.corrected
        )


@dataclass
class SystemReport:
    credit_system: str
    name: str
    unit_plural: str
    months: list[Period]
    total: Period


@dataclass
class CreditReport:
    month_from: str
    month_to: str
    systems: list[SystemReport]


def parse_month(value: object, *, field: str) -> date:
    """YYYY-MM (a UTC month) as its first day."""
    text = value.strip() if isinstance(value, str) else None
    match = MONTH_RE.fullmatch(text or "")
    if match is None:
        raise ValidationError(
            f"`{field}` must be a month as YYYY-MM, such as 2026-01.", field=field
        )
    year, month = int(match[1]), int(match[2])
    if not 1 <= month <= 12 or year < 1970:
        raise ValidationError(
            f"`{field}` must be a month as YYYY-MM (months 01 to 12, years from 1970).",
            field=field,
        )
    return date(year, month, 1)


def add_months(first: date, n: int) -> date:
    index = first.year * 12 + first.month - 1 + n
    return date(index // 12, index % 12 + 1, 1)


def month_range(month_from: object, month_to: object) -> tuple[date, date]:
    """The months asked for: both given, or defaults (to: this UTC month; from: 11 months before
    to). At most MAX_MONTHS months, from <= to."""
    now = utcnow()
    to = (
        date(now.year, now.month, 1)
        if month_to in (None, "")
        else parse_month(month_to, field="to")
    )
    start = (
        add_months(to, 1 - DEFAULT_MONTHS)
        if month_from in (None, "")
        else parse_month(month_from, field="from")
    )
    if start > to:
        raise ValidationError("`from` must not be after `to`.", field="from")
    count = (to.year - start.year) * 12 + to.month - start.month + 1
    if count > MAX_MONTHS:
        raise ValidationError(
            f"A report covers at most {MAX_MONTHS} months; this range has {count}.",
            field="from",
            max=MAX_MONTHS,
        )
    return start, to


def money_value(micros: int, unit_price: str) -> Decimal:
    """micros × unit_price / 10^6, exactly (integer arithmetic; a Decimal made from text is
    exact, whatever the context's precision)."""
    price = Decimal(unit_price)
    exponent = price.as_tuple().exponent
    assert isinstance(exponent, int)
    scale = max(0, -exponent)
    price_units = int(price.scaleb(scale))  # price × 10^scale, an integer
    return Decimal(f"{micros * price_units}E-{6 + scale}")


def money_text(value: Decimal) -> str:
    """A money value as plain decimal text, at least two decimals, no trailing zeros past them,
    never an exponent: Decimal("12.5") -> "12.50", Decimal("0.000125") -> "0.000125"."""
    sign, digits, exponent = value.as_tuple()
    assert isinstance(exponent, int)
    number = int("".join(map(str, digits)) or "0")
    places = max(0, -exponent)
    whole, frac = divmod(number * 10 ** max(0, exponent), 10**places)
    frac_text = f"{frac:0{places}d}".rstrip("0") if places else ""
    frac_text = frac_text.ljust(2, "0")
    return f"{'-' if sign and number else ''}{whole}.{frac_text}"


def _ordinals(n: int) -> list[Any]:
    return [literal_column(str(i)) for i in range(1, n + 1)]


def credit_report(
    actor: Actor,
    *,
    month_from: object = None,
    month_to: object = None,
    credit_system: object = None,
) -> CreditReport:
    """The roll-forward of every credit system (or the one named) for the months from..to."""
    require(actor, VIEW_LEDGER)
    start, to = month_range(month_from, month_to)
    if credit_system in (None, ""):
        systems = list(db.session.scalars(select(CreditSystem).order_by(CreditSystem.key)))
    else:
        systems = [get_credit_system(credit_system)]
    m = CreditMonthly
    terms = (m.category, m.kind, m.currency, m.unit_price)
    parts = (exact_sum(m.amount_high), exact_sum(m.amount_micros))
    scope = [] if credit_system in (None, "") else [m.credit_system_id == systems[0].id]
    before = db.session.execute(
        select(m.credit_system_id, *terms, *parts)
        .where(m.month < start, *scope)
        .group_by(*_ordinals(5))
    )
    opening: dict[int, dict[tuple[str, str, str, str], int]] = {}
    for sid, category, kind, currency, price, high, low in before:
        opening.setdefault(sid, {})[(category, kind, currency, price)] = int(
            high
        ) * CREDIT_BASE + int(low)
    during = db.session.execute(
        select(m.credit_system_id, m.month, *terms, *parts)
        .where(m.month >= start, m.month <= to, *scope)
        .group_by(*_ordinals(6))
    )
    flows: dict[tuple[int, str], dict[tuple[str, str, str, str], int]] = {}
    for sid, month, category, kind, currency, price, high, low in during:
        flows.setdefault((sid, f"{month:%Y-%m}"), {})[(category, kind, currency, price)] = int(
            high
        ) * CREDIT_BASE + int(low)
    count = (to.year - start.year) * 12 + to.month - start.month + 1
    labels = [f"{add_months(start, i):%Y-%m}" for i in range(count)]
    return CreditReport(
        f"{start:%Y-%m}",
        f"{to:%Y-%m}",
        [
            _system_report(system, labels, opening.get(system.id, {}), flows, f"{start:%Y-%m}")
            for system in systems
        ],
    )


def _system_report(
    system: CreditSystem,
    labels: list[str],
    before: dict[tuple[str, str, str, str], int],
    flows: dict[tuple[int, str], dict[tuple[str, str, str, str], int]],
    first: str,
) -> SystemReport:
    # The balance per grant terms, rolled forward month by month.
    held: dict[Terms, int] = {}
    for (category, kind, currency, price), amount in before.items():
        held[(kind, currency, price)] = (
            held.get((kind, currency, price), 0) + SIGN[category] * amount
        )
    months = []
    total = Period(f"{first}..{labels[-1]}")
    total_money: Values = {}
    for i, label in enumerate(labels):
        period = Period(label)
        money: Values = {}
        for terms, amount in held.items():
            period.opening += amount
            _value(money, terms, "opening", amount)
            if i == 0:
                _value(total_money, terms, "opening", amount)
        for (category, kind, currency, price), amount in sorted(
            flows.get((system.id, label), {}).items()
        ):
            terms = (kind, currency, price)
            held[terms] = held.get(terms, 0) + SIGN[category] * amount
            _count(period, category, kind, amount)
            _count(total, category, kind, amount)
            _value(money, terms, category, amount)
            _value(total_money, terms, category, amount)
        for terms, amount in held.items():
            period.closing += amount
            _value(money, terms, "closing", amount)
            if i == len(labels) - 1:
                _value(total_money, terms, "closing", amount)
        period.money = _money(money)
        months.append(period)
    total.opening = months[0].opening
    total.closing = months[-1].closing
    total.money = _money(total_money)
    return SystemReport(system.key, system.name, system.unit_plural, months, total)


def _count(period: Period, category: str, kind: str, amount: int) -> None:
    if category in ("issued", "consumed", "expired"):
        name = f"{category}_{kind}"
    else:
        name = category
    setattr(period, name, getattr(period, name) + amount)


Values = dict[str, dict[str, int]]  # currency -> category -> money in 10^-12 units


def _value(values: Values, terms: Terms, category: str, amount: int) -> None:
    """Add the money value of ``amount`` micros of these terms, exactly, as an integer of 10^-12
    (a price has at most 6 decimals: micros × price-in-micros). Values keep the rollup's signs:
    consumed, expired, voided are what the identity subtracts; adjusted and corrected are
    signed; opening and closing are balances."""
    kind, currency, price = terms
    if kind != "purchased" or not price:
        return
    row = values.setdefault(currency, {})
    row[category] = row.get(category, 0) + amount * parse_micros(price, field="unit_price")


def _money(values: Values) -> list[Money]:
    return [
        Money(currency, **{k: Decimal(f"{v}E-12") for k, v in values[currency].items()})
        for currency in sorted(values)
    ]


__all__ = [
    "MAX_MONTHS",
    "CreditReport",
    "Money",
    "Period",
    "SystemReport",
    "credit_report",
    "money_text",
    "money_value",
    "parse_month",
]
