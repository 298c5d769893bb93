"""Runway as pure rules (domain.md, "Runway"): a wallet's burn rate, how many days its available
balance lasts at that rate, and a simulation of its live grants in spending order against that
constant burn: when the spending first runs out of eligible credits, and which credits expire
before they are spent. Exact arithmetic throughout (integer micros, Fractions of micros and of
days); never a float. No database here: the reads load the numbers, these functions decide."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from typing import Protocol

from ..money import format_micros
from .rules import Spendable, spending_key

WINDOW_DAYS = 30
DAY = timedelta(days=1)
_MICROSECONDS_A_DAY = 86_400_000_000
_LATEST = datetime.max.replace(tzinfo=UTC)


class LiveGrant(Spendable, Protocol):
    """What the simulation looks at: a GrantRef or a GrantView (the spending order's fields and
    what the grant holds)."""

    @property
    def remaining_micros(self) -> int: ...


def burn_rate(consumed_micros: int) -> Fraction:
    """Micros a day: what the wallet consumed over the burn window ÷ 30, exactly. A window whose
    refunds outweigh its charges burns nothing (never a negative rate)."""
    return Fraction(max(consumed_micros, 0), WINDOW_DAYS)


def runway_days(available_micros: int, burn: Fraction) -> Fraction | None:
    """Days the balance available now lasts at ``burn``: available ÷ burn; None when nothing
    burns. It counts every available credit, those that will expire unspent included."""
    if burn <= 0:
        return None
    return Fraction(max(available_micros, 0)) / burn


@dataclass(frozen=True)
class Simulation:
    """The live grants spent at a constant burn from now, in spending order."""

    runs_out_in: Fraction | None  # days from now until no eligible credit is left; None: no burn
    expiring_unused: Fraction  # micros that reach their expiry before they are spent


@dataclass
class _Lot:
    effective: Fraction  # days from now (0 when already effective)
    expires: Fraction | None  # days from now
    left: Fraction


def _days(at: datetime, now: datetime) -> Fraction:
    return Fraction((at - now) // timedelta(microseconds=1), _MICROSECONDS_A_DAY)


def live(grants: Iterable[LiveGrant], now: datetime) -> list[LiveGrant]:
    """The grants that can still pay for something: credits left, expiry still ahead (a grant
    past its expiry pays for nothing, booked or not), effective now or later."""
    return [
        g for g in grants if g.remaining_micros > 0 and (g.expires_at is None or g.expires_at > now)
    ]


def simulate(grants: Iterable[LiveGrant], burn: Fraction, now: datetime) -> Simulation:
    """Spend the live grants at ``burn`` micros a day from ``now``, continuously: at each instant
    the first grant in spending order that is eligible then (effective, not expired, credits
    left) pays; a grant becomes eligible at its effective time and dies at its expiry with what
    is left (that is ``expiring_unused``). The first instant at which no grant is eligible is
    when the wallet runs out (spending then resumes if a scheduled grant becomes effective
    later: what that grant loses to its own expiry still counts). Without burn nothing is spent:
    every live credit with an expiry expires unused."""
    lots = [
        _Lot(
            max(_days(g.effective_at, now), Fraction(0)),
            None if g.expires_at is None else _days(g.expires_at, now),
            Fraction(g.remaining_micros),
        )
        for g in sorted(live(grants, now), key=spending_key)
    ]
    if burn <= 0:
        return Simulation(
            None, sum((lot.left for lot in lots if lot.expires is not None), Fraction(0))
        )
    t = Fraction(0)
    runs_out: Fraction | None = None
    expired = Fraction(0)
    while True:
        for lot in lots:
            if lot.left and lot.expires is not None and lot.expires <= t:
                expired += lot.left
                lot.left = Fraction(0)
        ahead = [
            at
            for lot in lots
            if lot.left
            for at in (lot.effective, lot.expires)
            if at is not None and at > t
        ]
        upcoming = min(ahead, default=None)
        paying = next(
            (lot for lot in lots if lot.left and lot.effective <= t),
            None,  # (expired lots were emptied above)
        )
        if paying is None:
            if runs_out is None:
                runs_out = t
            if upcoming is None:
                return Simulation(runs_out, expired)
            t = upcoming
            continue
        empty_at = t + paying.left / burn
        if upcoming is None or empty_at <= upcoming:
            paying.left = Fraction(0)
            t = empty_at
        else:
            paying.left -= burn * (upcoming - t)
            t = upcoming


def instant(now: datetime, days: Fraction | None) -> datetime | None:
    """``now`` + ``days``, down to the microsecond; None when there is no such day (no burn, or
    later than any date can say)."""
    if days is None:
        return None
    micros = days.numerator * _MICROSECONDS_A_DAY // days.denominator
    if micros > (_LATEST - now) // timedelta(microseconds=1):
        return None
    return now + timedelta(microseconds=micros)


@dataclass(frozen=True)
class Runway:
    """A wallet's runway at one instant, exact; the ``*_text`` properties are what reads show."""

    burn_micros_per_day: Fraction
    runway_days: Fraction | None
    runs_out_at: datetime | None
    expiring_unused_micros: Fraction

    @property
    def burn_text(self) -> str:
        """Credits a day, to 6 places (half up)."""
        return format_micros(_half_up(self.burn_micros_per_day))

    @property
    def runway_text(self) -> str | None:
        """Days, to 2 places, rounded down (the balance lasts at least that long)."""
        if self.runway_days is None:
            return None
        return format_micros(self.runway_micros or 0)

    @property
    def runway_micros(self) -> int | None:
        """runway_text as millionths of a day (for the compact form of a very long runway)."""
        if self.runway_days is None:
            return None
        return self.runway_days.numerator * 100 // self.runway_days.denominator * 10_000

    @property
    def expiring_unused_text(self) -> str:
        """Credits, to 6 places (half up)."""
        return format_micros(_half_up(self.expiring_unused_micros))


def _half_up(micros: Fraction) -> int:
    """A non-negative fraction of micros to a whole micro, half up."""
    whole, rest = divmod(micros.numerator, micros.denominator)
    return whole + (1 if 2 * rest >= micros.denominator else 0)


def runway(
    *,
    available_micros: int,
    consumed_micros: int,
    grants: Iterable[LiveGrant],
    now: datetime,
) -> Runway:
    """Everything a read shows about one wallet's runway: ``available_micros`` is its balance
    available now, ``consumed_micros`` what it consumed over the burn window (the rollup),
    ``grants`` its grants (any statuses: only the live ones count)."""
    burn = burn_rate(consumed_micros)
    simulation = simulate(grants, burn, now)
    return Runway(
        burn_micros_per_day=burn,
        runway_days=runway_days(available_micros, burn),
        runs_out_at=instant(now, simulation.runs_out_in),
        expiring_unused_micros=simulation.expiring_unused,
    )


__all__ = [
    "WINDOW_DAYS",
    "Runway",
    "Simulation",
    "burn_rate",
    "instant",
    "live",
    "runway",
    "runway_days",
    "simulate",
]
