"""The pure rules of plans (domain.md, "Plans"): plan ⊕ overrides, the edit rule every change of
an effective entitlement obeys, and included credits' periods and proration. No database here."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import NamedTuple

from ..periods import next_reset, period_start

FIELDS = ("allowance", "reset_period", "overage")
_MICROSECOND = timedelta(microseconds=1)


class Spec(NamedTuple):
    """An entitlement's values: allowance in micros (None = unlimited), reset period, overage."""

    allowance: int | None
    reset_period: str
    overage: str


class Override(NamedTuple):
    """A customer's own values for one feature; a None field is the plan's (``allowance_set``
    says whether the allowance is set, since None there means unlimited)."""

    allowance_set: bool
    allowance: int | None
    reset_period: str | None
    overage: str | None

    @property
    def fields(self) -> tuple[str, ...]:
        present = (self.allowance_set, self.reset_period is not None, self.overage is not None)
        return tuple(name for name, on in zip(FIELDS, present, strict=True) if on)

    @property
    def complete(self) -> bool:
        return len(self.fields) == len(FIELDS)


class Effective(NamedTuple):
    spec: Spec
    source: str  # "plan" or "override"
    overridden: tuple[str, ...]  # the fields the override sets (empty for "plan")


def merge(plan: Mapping[int, Spec], overrides: Mapping[int, Override]) -> dict[int, Effective]:
    """A customer's effective entitlements, by feature id: the plan's, each field an override sets
    replaced by the override's value. A feature the plan lacks is granted by a complete override
    (an extra feature); a partial override of such a feature grants nothing (it waits for a plan
    that has the feature: an override survives plan changes)."""
    merged: dict[int, Effective] = {}
    for feature_id in sorted(set(plan) | set(overrides)):
        base = plan.get(feature_id)
        override = overrides.get(feature_id)
        if override is None:
            assert base is not None
            merged[feature_id] = Effective(base, "plan", ())
            continue
        if base is None:
            if not override.complete:
                continue
            base = Spec(None, "never", "block")  # every field is replaced below
        spec = Spec(
            override.allowance if override.allowance_set else base.allowance,
            override.reset_period if override.reset_period is not None else base.reset_period,
            override.overage if override.overage is not None else base.overage,
        )
        merged[feature_id] = Effective(spec, "override", override.fields)
    return merged


class Blocker(NamedTuple):
    """Why a change cannot apply to one entitlement now."""

    field: str  # "allowance" (reclaim or wait for the period's end) or "reset_period"
    used: int
    allowance: int | None


class Decision(NamedTuple):
    """How one effective entitlement changes: the values to write now, and a reset period that
    waits for the current period's end (it has usage already)."""

    spec: Spec
    pending_reset: str | None
    pending_at: datetime | None


def judge(current: Spec | None, new: Spec, used: int, now: datetime) -> Decision | Blocker:
    """The rule of every change of an effective entitlement, from every door (one entitlement,
    an override, a plan edit, a plan change). ``used`` is what the current period (of the reset
    period in force) has used.

    - a `block` allowance below ``used`` is refused (reclaim first), so used <= allowance holds;
    - a new reset period never begins before it applies: a counter is keyed by its period's
      start, not its kind, so a new period that began earlier would take over an older counter
      of the old kind (a Monday's day counter read as the week's) or miss what the old kind
      counted since. It applies at once while the current period has no usage and the new
      kind's current period starts within it (or the new kind is `never`, whose one counter no
      other kind shares); else it is scheduled for the first boundary of the new kind at or
      after the current period's end (or now, when nothing is used); a `never` period with
      usage has no end, so there the change is refused."""
    if new.overage == "block" and new.allowance is not None and used > new.allowance:
        return Blocker("allowance", used, new.allowance)
    if current is None or current.reset_period == new.reset_period:
        return Decision(new, None, None)
    old, kind = current.reset_period, new.reset_period
    if not used and (kind == "never" or period_start(now, kind) >= period_start(now, old)):
        return Decision(new, None, None)
    earliest = next_reset(now, old) if used else now
    if earliest is None:
        return Blocker("reset_period", used, new.allowance)
    return Decision(new._replace(reset_period=old), kind, _boundary_from(earliest, kind))


def _boundary_from(at: datetime, reset_period: str) -> datetime:
    """The first start of a ``reset_period`` period at or after ``at`` (``at`` itself for
    `never`, which has one period)."""
    start = period_start(at, reset_period)
    if start >= at or reset_period == "never":
        return at
    following = next_reset(at, reset_period)
    assert following is not None
    return following


# ---------------------------------------------------------------- included credits


def credit_period(at: datetime, period: str) -> tuple[datetime, datetime]:
    """The UTC calendar month or year containing ``at``: [start, end)."""
    start = period_start(at, period)
    end = next_reset(at, period)
    assert end is not None
    return start, end


def prorate(amount: int, start: datetime, end: datetime, since: datetime) -> int:
    """The part of ``amount`` (micros) for [since, end) of the period [start, end), in exact
    integer arithmetic on microseconds, rounded down to the micro (never more than the plan
    gives). ``since`` at or before the start: the whole amount."""
    if since <= start:
        return amount
    if since >= end:
        return 0
    total = (end - start) // _MICROSECOND
    left = (end - since) // _MICROSECOND
    return amount * left // total


class Issue(NamedTuple):
    """One issue of included credits due now: the period, the grant's terms and amount."""

    period_start: datetime
    effective_at: datetime
    expires_at: datetime
    amount: int


def due_issue(
    amount: int, period: str, *, on_plan_since: datetime, now: datetime, prorated: bool
) -> Issue | None:
    """The included credits due now for a customer on the plan since ``on_plan_since``: those of
    the period containing ``now`` (a period that has already ended is never issued late: its
    grant would expire on arrival and pay for nothing, since every wallet write books due
    expiries first). The grant is effective from the later of the period's start and the
    assignment, and expires at the period's end; a customer who joined during the period gets
    the whole amount, or the prorated part when the plan says so."""
    start, end = credit_period(now, period)
    since = max(start, on_plan_since)
    value = prorate(amount, start, end, since) if prorated else amount
    if value <= 0:
        return None
    return Issue(start, since, end, value)
