"""Template filters: credits always with their decimals, quantities exact, times in UTC."""

from __future__ import annotations

from datetime import datetime

from flask import Flask

from ..services.money import MICROS


def credits(micros: int | None, places: int = 2) -> str:
    """12500000 -> "12.50", 80000 -> "0.08", 1 -> "0.000001": at least two decimals, all that
    matter up to six, thousands separated."""
    if micros is None:
        return "—"
    sign = "-" if micros < 0 else ""
    whole, frac = divmod(abs(micros), MICROS)
    digits = f"{frac:06d}".rstrip("0").ljust(places, "0")
    return f"{sign}{whole:,}.{digits}"


def signed_credits(micros: int) -> str:
    return ("+" if micros > 0 else "") + credits(micros)


def qty(micros: int | None) -> str:
    """Feature units: whole numbers plain (1,234), fractions with their decimals (0.5)."""
    if micros is None:
        return "∞"
    sign = "-" if micros < 0 else ""
    whole, frac = divmod(abs(micros), MICROS)
    if not frac:
        return f"{sign}{whole:,}"
    return f"{sign}{whole:,}.{frac:06d}".rstrip("0")


def signed_qty(micros: int) -> str:
    return ("+" if micros > 0 else "") + qty(micros)


def when(value: datetime | None) -> str:
    return "—" if value is None else value.strftime("%Y-%m-%d %H:%M UTC")


def percent(used: int, allowance: int | None) -> int:
    if not allowance:
        return 0
    return max(0, min(100, used * 100 // allowance))


def register(app: Flask) -> None:
    for fn in (credits, signed_credits, qty, signed_qty, when, percent):
        app.add_template_filter(fn)
