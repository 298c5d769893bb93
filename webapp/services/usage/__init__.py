"""RecordUsage and the entitlement check (domain.md, "Rules of RecordUsage").

One engine serves a single event, a batch and the check: inside one transaction it loads
everything the events touch with a constant number of queries (store.load_state, locking counters
and wallets on PostgreSQL when it writes), judges each event in order against that state with the
pure rules (rules.py) exactly as if it were sent alone, and writes the accepted events, counter
moves, ledger entries and audit rows in bulk (store.write). A rejected event writes nothing.
The check runs the same load and the same rules, and writes nothing.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from ...errors import DomainError, IdempotencyConflict, InvalidAmount, ValidationError
from ...models import utcnow
from ..actors import RECORD_USAGE, VIEW, Actor, require
from ..alerts import BLOCKING_CODES
from ..money import format_micros, parse_micros
from ..periods import next_reset
from ..tx import transactional
from .rules import (
    CostRef,
    CustomerRef,
    Parsed,
    WalletRef,
    check_recordable,
    counter_period,
    decide,
    decide_check,
    fingerprint,
    parse,
    refusal_credits,
)
from .store import Pending, State, StoredEvent, add_to_daily, load_state, write

__all__ = [
    "MAX_BATCH",
    "CheckResult",
    "UsageResult",
    "add_to_daily",
    "check_entitlement",
    "fingerprint",
    "reclaim_seats",
    "record_usage",
    "record_usage_batch",
]

MAX_BATCH = 1000


@dataclass(frozen=True)
class UsageResult:
    """The outcome of one RecordUsage (the same on its replays)."""

    replayed: bool
    event_id: str
    customer_key: str
    feature_key: str
    event_name: str
    feature_type: str
    amount_micros: int
    timestamp: datetime
    used_micros: int
    allowance_micros: int | None
    overage_micros: int
    credits_micros: int | None  # None: the feature is not credit-based
    balance_micros: int | None
    credit_system: str | None

    @property
    def available_micros(self) -> int | None:
        return None if self.allowance_micros is None else self.allowance_micros - self.used_micros


@dataclass(frozen=True)
class CheckResult:
    allowed: bool
    reason: str | None
    message: str | None
    customer_key: str
    feature_key: str
    event_name: str
    feature_type: str
    amount_micros: int
    used_micros: int
    allowance_micros: int | None
    reset_at: datetime | None
    credits_required_micros: int | None
    balance_micros: int | None
    credit_system: str | None
    entitled: bool

    @property
    def available_micros(self) -> int | None:
        return None if self.allowance_micros is None else self.allowance_micros - self.used_micros

    @property
    def available_after_micros(self) -> int | None:
        """The allowance left once this amount is recorded (None: no limit)."""
        available = self.available_micros
        return None if available is None else available - self.amount_micros

    @property
    def balance_after_micros(self) -> int | None:
        """The wallet balance once this amount's credits are deducted (None: no charge)."""
        if self.balance_micros is None or self.credits_required_micros is None:
            return None
        return self.balance_micros - self.credits_required_micros


# ---------------------------------------------------------------- RecordUsage


def _judge(
    state: State, p: Parsed, actor: Actor, now: datetime
) -> tuple[UsageResult, Pending | None]:
    """One event against the state: its result, and its rows to write unless it is a replay.
    Raises the first rule it breaks (domain.md, "Order of checks")."""
    customer = state.customer(p.customer_key)
    feature = state.feature(p)
    check_recordable(feature, p.amount_micros)
    event_id = p.event_id or uuid.uuid4().hex
    print_ = fingerprint(feature.id, p.amount_micros, p.metadata)
    cost = state.costs.get(feature.id)
    stored = state.events.get((customer.id, event_id))
    if stored is not None:
        if stored.fingerprint != print_ or p.timestamp not in (None, stored.timestamp):
            raise IdempotencyConflict(
                f"event_id {event_id!r} was already used for this customer with different "
                "content; use a new event_id for a new event.",
                field="event_id",
            )
        return _result(stored, event_id, customer, cost, replayed=True), None
    at = p.timestamp or now
    ckey = state.counter_key(customer, feature, at)
    wallet = state.wallet(customer, cost)
    ent = state.entitlements.get((customer.id, feature.id))
    used = state.counters.get(ckey, 0)
    decision = decide(feature, customer, ent, used, p.amount_micros, cost, wallet, at, now)
    assert ent is not None  # decide() refuses an event without an entitlement
    # Accepted: move the in-memory state, so that the next event of a batch sees this one.
    state.move_counter(ckey, decision.used_after)
    ledger = None
    allocations: list[tuple[int, int]] = []
    if decision.credits:
        assert wallet is not None  # decide() refuses a charge without a wallet
        allocations = state.debit(wallet, decision.credits, at)
        ledger = _ledger_row(wallet, customer, -decision.credits, f"{feature.key}:{event_id}")
        ledger.update(actor=actor.label, created_at=now)
    recorded = StoredEvent(
        fingerprint=print_,
        timestamp=at,
        feature_key=feature.key,
        event_name=feature.event_name,
        feature_type=feature.type,
        amount_micros=p.amount_micros,
        used_micros=decision.used_after,
        allowance_micros=ent.allowance_micros,
        overage_micros=decision.overage,
        credits_micros=decision.credits,
        balance_micros=None if cost is None or wallet is None else wallet.available(now),
    )
    state.events[(customer.id, event_id)] = recorded
    row = recorded.row(customer.id, feature.id, event_id, ckey[2], p.metadata)
    row.update(actor=actor.label, recorded_at=now)
    audit = (event_id, feature.key, format_micros(p.amount_micros), p.reason)
    pending = Pending(
        event=row,
        ledger=ledger,
        customer_key=customer.key,
        audit=audit,
        allocations=allocations,
    )
    return _result(recorded, event_id, customer, cost, replayed=False), pending


def _ledger_row(
    wallet: WalletRef, customer: CustomerRef, amount: int, reference: str
) -> dict[str, Any]:
    return {
        "wallet_id": wallet.id,
        "customer_id": customer.id,
        "type": "usage",
        "kind": None,
        "amount_micros": amount,
        "balance_after_micros": wallet.balance_micros,
        "grant_id": None,
        "reference": reference[:200],
        "note": None,
        "idempotency_key": None,
        "fingerprint": None,
    }


def _result(
    event: StoredEvent,
    event_id: str,
    customer: CustomerRef,
    cost: CostRef | None,
    *,
    replayed: bool,
) -> UsageResult:
    fields = event._asdict()
    del fields["fingerprint"]  # the rest are UsageResult's fields, by name
    return UsageResult(
        replayed=replayed,
        event_id=event_id,
        customer_key=customer.key,
        credit_system=None if cost is None else cost.credit_system_key,
        **fields,
    )


def _parse_all(raws: Sequence[object]) -> list[Parsed | DomainError]:
    """Shape checks need no database: done before the write transaction (and its lock)."""
    now = utcnow()
    parsed: list[Parsed | DomainError] = []
    for raw in raws:
        try:
            parsed.append(parse(raw, now))
        except DomainError as exc:
            parsed.append(exc)
    return parsed


@transactional
def _record(actor: Actor, parsed: list[Parsed | DomainError]) -> list[UsageResult | DomainError]:
    now = utcnow()
    state = load_state([p for p in parsed if isinstance(p, Parsed)], now, lock=True)
    state.watch(now)  # the values alerts compare with (domain.md, "Alerts")
    state.book_expiries(now)  # before any decision (domain.md, "Expiry")
    pending: list[Pending] = []
    results: list[UsageResult | DomainError] = []
    for p in parsed:
        if isinstance(p, DomainError):
            results.append(p)
            continue
        try:
            result, rows = _judge(state, p, actor, now)
        except DomainError as exc:
            results.append(exc)
            if exc.code in BLOCKING_CODES:
                # A refusal commits with this transaction (it writes nothing else), so its
                # usage.blocked goes in the outbox here, in the call's one outbox statement.
                state.block(p.customer_key, state.feature(p).key, exc, p.amount_micros, now)
            continue
        results.append(result)
        if rows is not None:
            pending.append(rows)
    write(state, pending, actor, state.alert_rows(now, writes=bool(pending)))
    return results


def record_usage(actor: Actor, **fields: Any) -> UsageResult:
    """Record one usage event (fields as in api.md: customer_key, feature_key or event_name,
    amount, event_id, timestamp, metadata; and ``reason``, up to 500 characters, kept in the
    audit row). Raises the DomainError of the first rule it breaks."""
    require(actor, RECORD_USAGE)
    (result,) = _record(actor, _parse_all([fields]))
    if isinstance(result, DomainError):
        raise result
    return result


def reclaim_seats(
    actor: Actor,
    *,
    customer_key: object,
    feature_key: object,
    count: object,
    event_id: object = None,
    reason: object = None,
) -> UsageResult:
    """Give ``count`` units of a persistent feature back: usage of −count (domain.md, rule 6).
    Never adds credits."""
    count_micros = parse_micros(count, field="amount", error=InvalidAmount)
    if count_micros <= 0:
        raise InvalidAmount("Reclaim a positive number of seats.", field="amount")
    return record_usage(
        actor,
        customer_key=customer_key,
        feature_key=feature_key,
        amount=-Decimal(count_micros).scaleb(-6),
        event_id=event_id,
        reason=reason,
    )


def record_usage_batch(
    actor: Actor, events: Iterable[Mapping[str, Any]]
) -> list[UsageResult | DomainError]:
    """Judge each event in order as if sent alone; one transaction for all accepted ones."""
    require(actor, RECORD_USAGE)
    events = list(events)
    if len(events) > MAX_BATCH:
        raise ValidationError(f"A batch holds at most {MAX_BATCH} events.", field="events")
    if not events:
        return []
    return _record(actor, _parse_all(events))


# ---------------------------------------------------------------- the entitlement check


def check_entitlement(
    actor: Actor,
    *,
    customer_key: object,
    feature_key: object = None,
    event_name: object = None,
    amount: object = 1,
    recording: bool = False,
) -> CheckResult:
    """Would recording ``amount`` succeed now? The same parse, load and rules as RecordUsage
    (without locks), so the two never disagree. Writes nothing. A boolean feature is checked
    for access, unless ``recording`` (the dashboard's preview of RecordUsage) refuses it as
    RecordUsage does."""
    require(actor, VIEW)
    now = utcnow()
    p = parse(
        {
            "customer_key": customer_key,
            "feature_key": feature_key,
            "event_name": event_name,
            "amount": 1 if amount is None else amount,
        },
        now,
    )
    state = load_state([p], now, lock=False)
    customer = state.customer(p.customer_key)
    feature = state.feature(p)
    ent = state.entitlements.get((customer.id, feature.id))
    cost = state.costs.get(feature.id)
    wallet = state.wallet(customer, cost)
    balance = None if wallet is None else wallet.available(now)
    used = state.counters.get(state.counter_key(customer, feature, now), 0)
    reason = message = None
    try:
        if recording:
            check_recordable(feature, p.amount_micros)
        credits = decide_check(feature, customer, ent, used, p.amount_micros, cost, wallet, now)
    except DomainError as exc:
        reason, message = exc.code, exc.message
        credits = refusal_credits(p.amount_micros, cost)
    return CheckResult(
        allowed=reason is None,
        reason=reason,
        message=message,
        customer_key=customer.key,
        feature_key=feature.key,
        event_name=feature.event_name,
        feature_type=feature.type,
        amount_micros=p.amount_micros,
        used_micros=used,
        allowance_micros=None if ent is None else ent.allowance_micros,
        reset_at=None if ent is None else next_reset(now, counter_period(feature, ent)),
        credits_required_micros=credits,
        balance_micros=balance,
        credit_system=None if cost is None else cost.credit_system_key,
        entitled=ent is not None and customer.status == "active",
    )
