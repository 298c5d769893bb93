"""Reset periods: UTC calendar periods. A counter is keyed by the start of its period."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)  # the one period of `never` and of persistent features


def period_start(at: datetime, reset_period: str) -> datetime:
    at = at.astimezone(UTC)
    if reset_period == "never":
        return EPOCH
    day = at.replace(hour=0, minute=0, second=0, microsecond=0)
    if reset_period == "day":
        return day
    if reset_period == "week":  # ISO weeks start on Monday
        return day - timedelta(days=day.weekday())
    if reset_period == "month":
        return day.replace(day=1)
    if reset_period == "year":
        return day.replace(month=1, day=1)
    raise ValueError(f"unknown reset period {reset_period!r}")


def next_reset(at: datetime, reset_period: str) -> datetime | None:
    """When the period containing ``at`` ends; None for `never`."""
    start = period_start(at, reset_period)
    if reset_period == "never":
        return None
    if reset_period == "day":
        return start + timedelta(days=1)
    if reset_period == "week":
        return start + timedelta(days=7)
    if reset_period == "month":
        return start.replace(year=start.year + start.month // 12, month=start.month % 12 + 1)
    return start.replace(year=start.year + 1)


def effective_period(feature_type: str, reset_period: str) -> str:
    return reset_period if feature_type == "consumable" else "never"


def duration(value: object, *, unit: timedelta = timedelta(seconds=1)) -> timedelta:
    """A setting counted in ``unit`` (seconds by default), such as 5, "0.2" or 1.5, as an exact
    timedelta: read as a decimal to the microsecond, never through a float."""
    return timedelta(microseconds=int(Decimal(str(value)) * (unit // timedelta(microseconds=1))))
