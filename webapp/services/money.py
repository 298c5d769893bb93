"""Exact amounts: every credit and quantity is an integer of millionths ("micros").

Input arrives as str, int or Decimal (the API parses JSON numbers with ``parse_float=Decimal``), is
parsed with ``Decimal`` and never through ``float``; more than 6 decimals is rejected, not rounded.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

from ..errors import DomainError, ValidationError

MICROS = 1_000_000
SCALE = 6
# Largest amount accepted in one request (10^12 units) and largest balance or counter kept
# (just under 2^63 micros), so every sum fits a 64-bit column on SQLite and PostgreSQL.
MAX_AMOUNT_MICROS = 10**12 * MICROS
MAX_TOTAL_MICROS = 9 * 10**18


def check_total(micros: int, *, what: str, error: type[DomainError] = ValidationError) -> None:
    """A stored balance or counter stays within MAX_TOTAL_MICROS (domain.md, "Limits")."""
    if micros > MAX_TOTAL_MICROS:
        raise error(
            f"{what} would pass the maximum of {format_micros(MAX_TOTAL_MICROS)}.",
            field="amount",
            max=MAX_TOTAL_MICROS // MICROS,
        )


def parse_micros(
    value: object, *, field: str = "amount", error: type[DomainError] = ValidationError
) -> int:
    """Parse a decimal amount into micros; reject floats, NaN, infinities and > 6 decimals."""
    if isinstance(value, bool) or value is None:
        raise error(f"`{field}` must be a decimal number.", field=field)
    if isinstance(value, int):
        dec = Decimal(value)
    elif isinstance(value, Decimal):
        dec = value
    elif isinstance(value, str):
        text = value.strip()
        if not text or len(text) > 40 or not _looks_decimal(text):
            raise error(f'`{field}` must be a decimal number such as "2" or "0.5".', field=field)
        try:
            dec = Decimal(text)
        except InvalidOperation:
            raise error(f"`{field}` must be a decimal number.", field=field) from None
    else:
        # float included: a binary float cannot say which decimal the client meant.
        raise error(f"`{field}` must be a decimal number (string or JSON number).", field=field)
    if not dec.is_finite():
        raise error(f"`{field}` must be a finite number.", field=field)
    if abs(dec) > MAX_AMOUNT_MICROS // MICROS:
        raise error(f"`{field}` is too large (at most 10^12).", field=field)
    exponent = dec.as_tuple().exponent
    assert isinstance(exponent, int)
    if exponent < -SCALE and dec != dec.quantize(Decimal(1).scaleb(-SCALE), rounding="ROUND_DOWN"):
        raise error(f"`{field}` has more than {SCALE} decimal places.", field=field)
    micros = int(dec.scaleb(SCALE))
    return 0 if micros == 0 else micros  # folds -0


def _looks_decimal(text: str) -> bool:
    # Plain decimal notation only: digits, one point, optional sign; no exponents, no "NaN".
    body = text[1:] if text[:1] in "+-" else text
    if not body or body.count(".") > 1:
        return False
    return all(ch.isascii() and (ch.isdigit() or ch == ".") for ch in body) and body != "."


def format_micros(micros: int) -> str:
    """Micros as a plain decimal string with no trailing zeros: 80000 -> "0.08", 2000000 -> "2"."""
    sign = "-" if micros < 0 else ""
    whole, frac = divmod(abs(micros), MICROS)
    if not frac:
        return f"{sign}{whole}"
    return f"{sign}{whole}.{frac:06d}".rstrip("0")


def quantity_json(micros: int) -> int | str:
    """Quantities are JSON numbers when whole and strings otherwise (api.md)."""
    if micros % MICROS == 0:
        return micros // MICROS
    return format_micros(micros)


def credit_cost_micros(amount_micros: int, cost_micros: int) -> int:
    """amount x cost, both in micros, rounded half-up to 6 places (amount is positive)."""
    whole, rest = divmod(amount_micros * cost_micros, MICROS)
    return whole + (1 if 2 * rest >= MICROS else 0)
