"""Input rules shared by every service: keys, names, metadata, timestamps."""

from __future__ import annotations

import json
import math
import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Literal, overload

from ..errors import ValidationError

KEY_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@-]{0,199}")
FEATURE_KEY_RE = re.compile(r"[a-z0-9][a-z0-9_.-]{0,99}")
EVENT_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:/-]{0,199}")
EVENT_ID_RE = re.compile(r"[\x21-\x7e]{1,200}")  # printable ASCII, no spaces
# The dot-atom form of RFC 5322 (no quoted local parts, no markup): `<b>x</b>@example.com` is no
# address a person would read and type.
EMAIL_RE = re.compile(
    r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+){0,63}"
    r"@(?=.{1,190}\.[A-Za-z]{2,63}$)[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,63}"
)

METADATA_MAX_BYTES = 4096
FUTURE_TOLERANCE = timedelta(minutes=5)
MAX_BACKDATE = timedelta(days=400)


def key(value: object, *, field: str = "key", pattern: re.Pattern[str] = KEY_RE) -> str:
    if not isinstance(value, str) or not value:
        raise ValidationError(f"`{field}` is required and must be a string.", field=field)
    if not pattern.fullmatch(value):
        raise ValidationError(
            f"`{field}` may hold only letters, digits and {_punct(pattern)} "
            f"(at most {_max_len(pattern)} characters), starting with a letter or digit.",
            field=field,
        )
    return value


def _punct(pattern: re.Pattern[str]) -> str:
    return {
        KEY_RE: ". _ : @ -",
        FEATURE_KEY_RE: ". _ - (lower case)",
        EVENT_NAME_RE: ". _ : / -",
        EVENT_ID_RE: "other printable ASCII characters (no spaces)",
    }[pattern]


def _max_len(pattern: re.Pattern[str]) -> int:
    return 100 if pattern is FEATURE_KEY_RE else 200


def lookup_key(value: object, *, field: str) -> str:
    """A key used to look something up: any non-empty string of sane length."""
    if not isinstance(value, str) or not value or len(value) > 200:
        raise ValidationError(f"`{field}` is required and must be a string.", field=field)
    if "\x00" in value:  # PostgreSQL text cannot hold NUL; no key has one
        raise ValidationError(f"`{field}` contains a NUL character.", field=field)
    _utf8(value, field)
    return value


def _utf8(value: str, field: str) -> None:
    """JSON may carry lone surrogates ("\\ud800") that no database can store: refuse them."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValidationError(f"`{field}` is not valid Unicode text.", field=field) from None


@overload
def text(value: object, *, field: str, max_len: int, required: Literal[True] = True) -> str: ...
@overload
def text(value: object, *, field: str, max_len: int, required: bool) -> str | None: ...
def text(value: object, *, field: str, max_len: int, required: bool = True) -> str | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            raise ValidationError(f"`{field}` is required.", field=field)
        return None
    if not isinstance(value, str):
        raise ValidationError(f"`{field}` must be a string.", field=field)
    value = value.strip()
    _utf8(value, field)
    if len(value) > max_len:
        raise ValidationError(f"`{field}` is longer than {max_len} characters.", field=field)
    if any(ord(ch) < 32 and ch not in "\n\t" for ch in value):
        raise ValidationError(f"`{field}` contains control characters.", field=field)
    return value


def email(value: object, *, field: str = "email", required: bool = False) -> str | None:
    result = text(value, field=field, max_len=254, required=required)
    if result is not None and not EMAIL_RE.fullmatch(result):
        raise ValidationError(f"`{field}` is not an email address.", field=field)
    return result.lower() if result else None


def choice(value: object, options: tuple[str, ...], *, field: str) -> str:
    if value not in options:
        raise ValidationError(f"`{field}` must be one of: {', '.join(options)}.", field=field)
    assert isinstance(value, str)
    return value


def _json_default(value: object) -> Any:
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise ValueError("not finite")
        # Free-form metadata only (never an amount): stored as a JSON number.
        return int(value) if value == value.to_integral_value() else float(value)  # ok: metadata
    raise TypeError(type(value).__name__)


def metadata(value: object, *, field: str = "metadata") -> dict[str, Any]:
    """A JSON object of at most 4 KiB, with finite numbers only; returned in canonical form."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValidationError(f"`{field}` must be a JSON object.", field=field)
    try:
        encoded = json.dumps(
            value, default=_json_default, allow_nan=False, sort_keys=True, separators=(",", ":")
        )
    except (TypeError, ValueError, RecursionError):
        raise ValidationError(
            f"`{field}` must hold only JSON values (finite numbers, strings, lists, objects).",
            field=field,
        ) from None
    if len(encoded.encode()) > METADATA_MAX_BYTES:
        raise ValidationError(f"`{field}` is larger than {METADATA_MAX_BYTES} bytes.", field=field)
    # PostgreSQL's JSON types hold neither NUL nor lone surrogates (they would fail as a 500).
    if "\\u0000" in encoded:
        raise ValidationError(f"`{field}` contains a NUL character.", field=field)
    _utf8(json.dumps(value, default=_json_default, ensure_ascii=False), field)
    decoded: dict[str, Any] = json.loads(encoded)
    if any(isinstance(v, float) and not math.isfinite(v) for v in decoded.values()):
        raise ValidationError(f"`{field}` must hold finite numbers.", field=field)
    return decoded


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def parse_time(value: object, *, field: str) -> datetime:
    """An RFC 3339 string (or aware datetime) as a UTC datetime."""
    if isinstance(value, str):
        if len(value) > 40:
            raise ValidationError(f"`{field}` is not an RFC 3339 time.", field=field)
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            raise ValidationError(
                f"`{field}` must be an RFC 3339 time such as 2026-11-26T10:00:00Z.", field=field
            ) from None
    elif isinstance(value, datetime):
        parsed = value
    else:
        raise ValidationError(f"`{field}` must be an RFC 3339 time string.", field=field)
    if parsed.tzinfo is None:
        raise ValidationError(f"`{field}` needs a time zone (end it with Z for UTC).", field=field)
    try:
        return parsed.astimezone(UTC)
    except OverflowError:  # e.g. 0001-01-01T00:00+01:00 is before year 1 in UTC
        raise ValidationError(
            f"`{field}` is outside the years 1 to 9999 once converted to UTC.", field=field
        ) from None


def timestamp(value: object, *, now: datetime, field: str = "timestamp") -> datetime | None:
    """A usage time; None when not given. Not more than 5 minutes ahead of ``now`` and not more
    than 400 days behind."""
    if value is None:
        return None
    parsed = parse_time(value, field=field)
    if parsed > now + FUTURE_TOLERANCE:
        raise ValidationError(f"`{field}` is more than 5 minutes in the future.", field=field)
    if parsed < now - MAX_BACKDATE:
        raise ValidationError(f"`{field}` is more than 400 days in the past.", field=field)
    return parsed
