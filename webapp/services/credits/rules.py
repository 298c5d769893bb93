"""The rules of credit grants as pure functions (domain.md, "Credit grants"): which grants may
pay for a deduction at a time, in which order, and how a deduction splits into allocations. No
database here: the usage store and the wallet service load GrantRefs, these functions decide."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol, TypeVar

NEVER = datetime.max.replace(tzinfo=UTC)


@dataclass
class GrantRef:
    """A grant as judged; ``remaining_micros`` moves as deductions are allocated."""

    id: int
    kind: str
    priority: int
    effective_at: datetime
    expires_at: datetime | None
    remaining_micros: int


def eligible(grant: GrantRef, at: datetime) -> bool:
    """May pay for a deduction at ``at``: effective by then, not yet expired then, not empty."""
    return (
        grant.remaining_micros > 0
        and grant.effective_at <= at
        and (grant.expires_at is None or at < grant.expires_at)
    )


class Spendable(Protocol):
    """What the spending order looks at: a GrantRef, or a grant as read (GrantView)."""

    @property
    def id(self) -> int: ...
    @property
    def kind(self) -> str: ...
    @property
    def priority(self) -> int: ...
    @property
    def effective_at(self) -> datetime: ...
    @property
    def expires_at(self) -> datetime | None: ...


def spending_key(grant: Spendable) -> tuple[int, bool, datetime, int, datetime, int]:
    """Priority, then soonest expiry (none last), then granted before purchased, then earliest
    effective, then id."""
    return (
        grant.priority,
        grant.expires_at is None,
        # A constant when there is no expiry: two such grants go on to the kind, never to their
        # effective times (which would put an older purchased grant before a granted one).
        grant.expires_at or NEVER,
        0 if grant.kind == "granted" else 1,
        grant.effective_at,
        grant.id,
    )


def eligible_balance(grants: Iterable[GrantRef], at: datetime) -> int:
    return sum(g.remaining_micros for g in grants if eligible(g, at))


class Expiring(Protocol):
    @property
    def remaining_micros(self) -> int: ...
    @property
    def expires_at(self) -> datetime | None: ...


E = TypeVar("E", bound=Expiring)


def due(grants: Iterable[E], now: datetime) -> list[E]:
    """Grants whose expiry has come with credits left: to book before any other decision."""
    return [
        g
        for g in grants
        if g.remaining_micros > 0 and g.expires_at is not None and g.expires_at <= now
    ]


def allocate(grants: Sequence[GrantRef], amount: int, at: datetime) -> list[tuple[GrantRef, int]]:
    """Split a deduction of ``amount`` micros over the grants eligible at ``at``, in spending
    order, taking it out of their remaining. The parts sum to ``amount`` exactly. The caller
    checked eligible_balance first: not enough is a bug, not a refusal."""
    parts: list[tuple[GrantRef, int]] = []
    left = amount
    for grant in sorted((g for g in grants if eligible(g, at)), key=spending_key):
        if left == 0:
            break
        take = min(left, grant.remaining_micros)
        grant.remaining_micros -= take
        left -= take
        parts.append((grant, take))
    if left:
        raise AssertionError(f"allocate: {left} micros left without an eligible grant")
    return parts
