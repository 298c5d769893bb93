"""Alerts: which writes raise which events (docs/domain.md, "Alerts"; payloads in docs/api.md,
"Events"). The crossing rules are pure functions of the values a write saw before and after it,
under the lock that serializes the writers of that value (a wallet's row lock, a usage
counter's); the writers call them and put what they return in the outbox in their own
transaction, so a rollback leaves no event and two writes that together cross a threshold
raise one event: the second one's "before" is the first one's "after".

Time-driven events (credits.expiring_soon) come from ``scan_expiring``, which the worker calls
every minute, deduplicated per grant."""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from flask import current_app, has_app_context
from sqlalchemy import String, cast, literal, select

from ..extensions import db
from ..models import CreditGrant, CreditSystem, Customer, OutboxEvent, Wallet, utcnow
from . import outbox
from .money import format_micros, quantity_json
from .tx import transactional

# Every type the outbox carries (the webhook endpoints subscribe to these).
EVENT_TYPES = (
    "wallet.balance_low",
    "wallet.depleted",
    "credits.expiring_soon",
    "credits.expired",
    "grant.voided",
    "credit.purchased",
    "usage.threshold_reached",
    "usage.blocked",
    "usage.corrected",
    "customer.created",
    "customer.updated",
    "customer.deleted",
)
BLOCKING_CODES = frozenset({"limit_exceeded", "insufficient_credits"})
DEFAULT_PERCENTAGES = (80, 100)
DEFAULT_EXPIRING_DAYS = 7


class HasRemaining(Protocol):
    @property
    def effective_at(self) -> datetime: ...
    @property
    def remaining_micros(self) -> int: ...


def iso(at: datetime) -> str:
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")


# ---------------------------------------------------------------- configuration


def percentages() -> tuple[int, ...]:
    """USAGE_ALERT_PERCENTAGES of the current app (checked when the app is created)."""
    raw = (
        current_app.config.get("USAGE_ALERT_PERCENTAGES", DEFAULT_PERCENTAGES)
        if has_app_context()
        else DEFAULT_PERCENTAGES
    )
    return parse_percentages(tuple(raw) if isinstance(raw, list) else raw)


@functools.cache
def parse_percentages(raw: object) -> tuple[int, ...]:
    """Whole percentages from 1 to 1000 (a list, or text such as "80, 100"), ascending, once
    each. Anything else is a ValueError."""
    parts = raw.replace(",", " ").split() if isinstance(raw, str) else raw
    if not isinstance(parts, (list, tuple)) or not parts:
        raise ValueError(f"USAGE_ALERT_PERCENTAGES must list whole percentages: {raw!r}")
    values = set()
    for part in parts:
        if isinstance(part, bool) or not str(part).strip().isdigit():
            raise ValueError(f"USAGE_ALERT_PERCENTAGES must list whole percentages: {raw!r}")
        values.add(int(str(part).strip()))
    if any(not 1 <= p <= 1000 for p in values):
        raise ValueError(f"USAGE_ALERT_PERCENTAGES must be from 1 to 1000: {raw!r}")
    return tuple(sorted(values))


def expiring_days() -> int:
    days = (
        current_app.config.get("CREDITS_EXPIRING_SOON_DAYS", DEFAULT_EXPIRING_DAYS)
        if has_app_context()
        else DEFAULT_EXPIRING_DAYS
    )
    return int(days)


# ---------------------------------------------------------------- the crossing rules (pure)


def spendable(grants: Iterable[HasRemaining], at: datetime) -> int:
    """The value the wallet alerts watch: credits of grants effective at ``at`` that hold any,
    counting a grant whose expiry is due but not booked yet (its booking is a write that moves
    the value, and may cross). Once a write has booked every due expiry, as every wallet write
    does first, this is the wallet's available balance."""
    return sum(
        g.remaining_micros for g in grants if g.remaining_micros > 0 and g.effective_at <= at
    )


def wallet_events(
    *,
    customer_key: str,
    credit_system: str,
    threshold: int | None,
    before: int,
    after: int,
    at: datetime,
    cause: str,
) -> list[dict[str, Any]]:
    """wallet.balance_low when the value goes from above the threshold to at or under it;
    wallet.depleted when it goes from above 0 to 0."""
    rows: list[dict[str, Any]] = []
    if threshold is not None and before > threshold >= after:
        rows.append(low_event(customer_key, credit_system, threshold, before, after, at, cause))
    if before > 0 and after <= 0:
        rows.append(
            outbox.event_row(
                "wallet.depleted",
                _wallet_data(customer_key, credit_system, before, after, cause),
                customer_key=customer_key,
                at=at,
            )
        )
    return rows


def low_event(
    customer_key: str,
    credit_system: str,
    threshold: int,
    before: int,
    after: int,
    at: datetime,
    cause: str,
) -> dict[str, Any]:
    return outbox.event_row(
        "wallet.balance_low",
        {
            **_wallet_data(customer_key, credit_system, before, after, cause),
            "threshold": format_micros(threshold),
        },
        customer_key=customer_key,
        at=at,
    )


def _wallet_data(
    customer_key: str, credit_system: str, before: int, after: int, cause: str
) -> dict[str, Any]:
    return {
        "customer_key": customer_key,
        "credit_system": credit_system,
        "balance": format_micros(after),
        "previous_balance": format_micros(before),
        "cause": cause,
    }


def usage_events(
    *,
    customer_key: str,
    feature_key: str,
    allowance: int | None,
    before: int,
    after: int,
    period_start: datetime,
    at: datetime,
    shares: Sequence[int],
) -> list[dict[str, Any]]:
    """usage.threshold_reached for each percentage p with before < p % of the allowance ≤ after
    (a finite allowance above zero only)."""
    if allowance is None or allowance <= 0 or after <= before:
        return []
    return [
        _reached(customer_key, feature_key, p, after, allowance, period_start, at, "usage")
        for p in shares
        if before * 100 < p * allowance <= after * 100
    ]


def allowance_events(
    *,
    customer_key: str,
    feature_key: str,
    used: int,
    old_allowance: int | None,
    new_allowance: int | None,
    period_start: datetime,
    at: datetime,
    shares: Sequence[int],
) -> list[dict[str, Any]]:
    """usage.threshold_reached for each percentage the period's usage reaches under the new
    allowance and did not under the old one (an allowance lowered past it)."""

    def reached(p: int, allowance: int | None) -> bool:
        return allowance is not None and allowance > 0 and used * 100 >= p * allowance

    return [
        _reached(customer_key, feature_key, p, used, new_allowance, period_start, at, "allowance")
        for p in shares
        if new_allowance is not None and reached(p, new_allowance) and not reached(p, old_allowance)
    ]


def _reached(
    customer_key: str,
    feature_key: str,
    p: int,
    used: int,
    allowance: int,
    start: datetime,
    at: datetime,
    cause: str,
) -> dict[str, Any]:
    return outbox.event_row(
        "usage.threshold_reached",
        {
            "customer_key": customer_key,
            "feature_key": feature_key,
            "percentage": p,
            "used": quantity_json(used),
            "allowance": quantity_json(allowance),
            "period_start": iso(start),
            "cause": cause,
        },
        customer_key=customer_key,
        at=at,
    )


def blocked_event(
    *,
    customer_key: str,
    feature_key: str,
    reason: str,
    amount: int,
    details: dict[str, Any],
    at: datetime,
) -> dict[str, Any]:
    """usage.blocked, at most one per customer, feature and UTC hour (its dedupe key)."""
    hour = at.astimezone(UTC).strftime("%Y-%m-%dT%H")
    return outbox.event_row(
        "usage.blocked",
        {
            "customer_key": customer_key,
            "feature_key": feature_key,
            "reason": reason,
            "amount": quantity_json(amount),
            "details": details,
            "hour": f"{hour}:00:00Z",
        },
        customer_key=customer_key,
        dedupe_key=_dedupe("usage.blocked", customer_key, feature_key, hour),
        at=at,
    )


def expired_event(
    *, customer_key: str, credit_system: str, grant_id: int, amount: int, at: datetime
) -> dict[str, Any]:
    return outbox.event_row(
        "credits.expired",
        {
            "customer_key": customer_key,
            "credit_system": credit_system,
            "grant_id": grant_id,
            "amount": format_micros(amount),
            "expired_at": iso(at),
        },
        customer_key=customer_key,
        dedupe_key=f"credits.expired:grant:{grant_id}",
        at=at,
    )


def _dedupe(*parts: str) -> str:
    key = ":".join(parts)
    if len(key) <= outbox.MAX_DEDUPE_KEY:
        return key
    return f"{parts[0]}:sha256:{hashlib.sha256(key.encode()).hexdigest()}"


# ---------------------------------------------------------------- the ORM writers' side


def wallet_context(wallet: Wallet) -> tuple[str, str, int | None]:
    """(customer key, credit system key, threshold: the wallet's own, else its system's)."""
    customer_key, system_key, default = db.session.execute(
        select(Customer.key, CreditSystem.key, CreditSystem.low_balance_threshold_micros)
        .join(Wallet, Wallet.customer_id == Customer.id)
        .join(CreditSystem, CreditSystem.id == Wallet.credit_system_id)
        .where(Wallet.id == wallet.id)
    ).one()
    threshold = wallet.low_balance_threshold_micros
    return customer_key, system_key, default if threshold is None else threshold


def wallet_written(
    wallet: Wallet,
    before: int,
    grants: Iterable[HasRemaining],
    now: datetime,
    *,
    cause: str,
    extra: Sequence[dict[str, Any]] = (),
) -> None:
    """After a wallet write (under its lock): put its crossings, and ``extra`` events of the
    same write, in the outbox. Reads the wallet's keys only when there is something to write."""
    after = spendable(grants, now)
    threshold_default = wallet.low_balance_threshold_micros
    may_cross = before > after and (
        after <= 0 or threshold_default is None or before > threshold_default >= after
    )
    rows = list(extra)
    if may_cross:
        customer_key, system_key, threshold = wallet_context(wallet)
        rows += wallet_events(
            customer_key=customer_key,
            credit_system=system_key,
            threshold=threshold,
            before=before,
            after=after,
            at=now,
            cause=cause,
        )
    outbox.emit_many(db.session.connection(), rows)


# ---------------------------------------------------------------- time-driven: expiring soon


_EXPIRING_KEY = "credits.expiring_soon:grant:"


@transactional
def scan_expiring(now: datetime | None = None, *, limit: int = 1000) -> int:
    """credits.expiring_soon for every grant with credits left, not voided, whose expiry falls
    within the next CREDITS_EXPIRING_SOON_DAYS days, once per grant (dedupe key
    ``credits.expiring_soon:grant:<id>``: a concurrent scan writes nothing twice). The worker
    calls it every minute; one query finds the grants not warned yet (the expiry index and the
    dedupe key's unique index), at most ``limit`` per call; returns how many it found (a
    concurrent scan may have written some of them first)."""
    now = now or utcnow()
    days = expiring_days()
    key = literal(_EXPIRING_KEY) + cast(CreditGrant.id, String)
    warned = select(OutboxEvent.id).where(OutboxEvent.dedupe_key == key).exists()
    candidates = db.session.execute(
        select(
            CreditGrant.id,
            CreditGrant.remaining_micros,
            CreditGrant.expires_at,
            Customer.key,
            CreditSystem.key,
        )
        .join(Wallet, Wallet.id == CreditGrant.wallet_id)
        .join(Customer, Customer.id == Wallet.customer_id)
        .join(CreditSystem, CreditSystem.id == Wallet.credit_system_id)
        .where(
            CreditGrant.expires_at > now,
            CreditGrant.expires_at <= now + timedelta(days=days),
            CreditGrant.remaining_micros > 0,
            CreditGrant.voided_at.is_(None),
            ~warned,
        )
        .order_by(CreditGrant.expires_at, CreditGrant.id)
        .limit(limit)
    ).all()
    rows = [
        outbox.event_row(
            "credits.expiring_soon",
            {
                "customer_key": customer_key,
                "credit_system": system_key,
                "grant_id": gid,
                "remaining": format_micros(remaining),
                "expires_at": iso(expires_at or now),
                "days": days,
            },
            customer_key=customer_key,
            dedupe_key=f"{_EXPIRING_KEY}{gid}",
            at=now,
        )
        for gid, remaining, expires_at, customer_key, system_key in candidates
    ]
    outbox.emit_many(db.session.connection(), rows)
    return len(rows)
