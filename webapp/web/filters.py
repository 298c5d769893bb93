"""Template filters: credits always with their decimals, quantities exact, times in UTC."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from flask import Flask

from ..models import utcnow
from ..services.money import MICROS, format_micros
from ..services.reports import money_text


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


def when_s(value: datetime | None) -> str:
    """To the second (a retry may follow its attempt by 2.5 s)."""
    return "—" if value is None else value.strftime("%Y-%m-%d %H:%M:%S UTC")


def took(ms: int | None) -> str:
    """A duration in milliseconds: "120 ms" under a second, "1.2 s" (tenths, cut) above."""
    if ms is None:
        return "—"
    if ms < 1000:
        return f"{ms} ms"
    return f"{ms // 1000}.{ms % 1000 // 100} s"


def expires_in(value: datetime | None) -> str:
    """A grant's expiry from now, in the largest whole unit rounded up: "expires in 30 days",
    "expires in 3 hours", "expired 2 days ago"; "no expiry" without one."""
    if value is None:
        return "no expiry"
    seconds = int((value - utcnow()).total_seconds())
    ahead = seconds > 0
    seconds = abs(seconds)
    if seconds >= 86_400:
        count, unit = -(-seconds // 86_400) if ahead else seconds // 86_400, "day"
    elif seconds >= 3_600:
        count, unit = -(-seconds // 3_600) if ahead else seconds // 3_600, "hour"
    else:
        count, unit = max(1, -(-seconds // 60) if ahead else seconds // 60), "minute"
    span = f"{count} {unit}{'' if count == 1 else 's'}"
    return f"expires in {span}" if ahead else f"expired {span} ago"


def day(value: datetime | None) -> str:
    """The date alone, where space is short (the full time goes in a title next to it)."""
    return "—" if value is None else value.strftime("%Y-%m-%d")


def percent(used: int, allowance: int | None) -> int:
    if not allowance:
        return 0
    return max(0, min(100, used * 100 // allowance))


PERIODS = {
    "never": "never resets",
    "day": "resets daily",
    "week": "resets weekly",
    "month": "resets monthly",
    "year": "resets yearly",
}
OVERAGE = {"block": "stops at the allowance", "allow": "may go over the allowance"}
ACTIONS = {
    "api_key.created": "created an API key",
    "api_key.revoked": "revoked an API key",
    "credit_cost.removed": "stopped charging credits for",
    "credit_cost.set": "set the credit cost of",
    "credit_system.created": "created a credit system",
    "customer.archived": "archived",
    "customer.created": "created",
    "customer.deleted": "deleted",
    "customer.unarchived": "unarchived",
    "customer.updated": "edited",
    "demo.seeded": "added demo data",
    "entitlement.removed": "removed an entitlement of",
    "entitlement.set": "changed an entitlement of",
    "feature.created": "created a feature",
    "feature.updated": "edited a feature",
    "usage.recorded": "recorded usage for",
    "user.created": "created a user",
    "user.deactivated": "deactivated a user",
    "user.logged_out": "signed a user out everywhere",
    "user.password_changed": "changed a password",
    "user.reactivated": "reactivated a user",
    "user.role_changed": "changed the role of a user",
    "wallet.adjustment": "adjusted the wallet of",
    "wallet.topup": "topped up",
}


def period(value: str) -> str:
    return PERIODS.get(value, value)


def overage(value: str) -> str:
    return OVERAGE.get(value, value)


def action(code: str) -> str:
    """``wallet.topup`` -> "topped up": the audit log's codes in words (the code stays in the
    filter of the audit page)."""
    return ACTIONS.get(code, code.replace(".", " ").replace("_", " "))


def who(label: str) -> str:
    """An actor label in words: ``system:cli`` -> "the command line", ``user:ann@x`` -> ann@x."""
    kind, _, name = label.partition(":")
    if kind == "system":
        return "the command line" if name == "cli" else f"the system ({name})"
    if kind == "api_key":
        return f"API key {name}…"
    return name or label


def compact(micros: int | None) -> str:
    """Big numbers where space is short: 1234567890000000 -> "1.23B" (the exact value goes in a
    title next to it)."""
    if micros is None:
        return "—"
    whole = abs(micros) // MICROS
    sign = "-" if micros < 0 else ""
    sizes = ((10**6, "M"), (10**9, "B"), (10**12, "T"))
    for i, (size, suffix) in reversed(list(enumerate(sizes))):
        if whole < size:
            continue
        digits = f"{Decimal(whole) / size:.3g}"
        if "e" in digits:  # 999.9995B rounds to 1000B: say 1T
            if i + 1 < len(sizes):
                digits, suffix = "1", sizes[i + 1][1]
            else:
                digits = f"{Decimal(whole) / size:,.0f}"
        if "." in digits:
            digits = digits.rstrip("0").rstrip(".")
        return f"{sign}{digits}{suffix}"
    return credits(micros)


def register(app: Flask) -> None:
    for fn in (
        credits,
        signed_credits,
        qty,
        signed_qty,
        when,
        when_s,
        took,
        expires_in,
        day,
        percent,
        period,
        overage,
        action,
        who,
        compact,
    ):
        app.add_template_filter(fn)
    app.add_template_filter(format_micros, "plain")  # as typed into a box: 1234.5
    app.add_template_filter(money_text, "money")  # an exact Decimal: 12.50
