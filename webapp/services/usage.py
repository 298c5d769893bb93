"""RecordUsage and the entitlement check (domain.md, "Rules of RecordUsage").

One engine serves a single event and a batch: inside one write transaction it loads everything the
events touch with a constant number of queries (locking counters and wallets on PostgreSQL), judges
each event in order against that state exactly as if it were sent alone, and writes the accepted
events, counter moves, ledger entries and audit rows in bulk. A rejected event writes nothing.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import bindparam, insert, or_, select, text, tuple_, update
from sqlalchemy.dialects import postgresql, sqlite

from ..errors import (
    CustomerNotFound,
    DomainError,
    FeatureNotFound,
    FeatureNotRecordable,
    IdempotencyConflict,
    InsufficientCredits,
    InvalidAmount,
    LimitExceeded,
    NotEntitled,
    ValidationError,
)
from ..extensions import db
from ..models import (
    DAILY_SHARDS,
    AuditLog,
    CreditCost,
    CreditSystem,
    Customer,
    Entitlement,
    Feature,
    LedgerEntry,
    UsageCounter,
    UsageDaily,
    UsageEvent,
    Wallet,
    utcnow,
)
from . import validation
from .actors import RECORD_USAGE, VIEW, Actor, require
from .audit import audit_row
from .bulk import bulk_insert, pipelined, use_copy
from .catalog import get_customer, get_feature
from .money import MAX_TOTAL_MICROS, MICROS, credit_cost_micros, format_micros, parse_micros
from .periods import effective_period, next_reset, period_start
from .tx import transactional

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


# ---------------------------------------------------------------- the rules, as pure functions


@dataclass(frozen=True)
class _Parsed:
    customer_key: str
    feature_key: str | None
    event_name: str | None
    amount_micros: int
    event_id: str | None
    timestamp: datetime | None
    metadata: dict[str, Any]


def _parse(raw: Mapping[str, Any], now: datetime) -> _Parsed:
    if not isinstance(raw, Mapping):
        raise ValidationError("Each event must be a JSON object.")
    customer_key = validation.lookup_key(raw.get("customer_key"), field="customer_key")
    feature_key, event_name = raw.get("feature_key"), raw.get("event_name")
    if (feature_key is None) == (event_name is None):
        raise ValidationError(
            "Name the feature with exactly one of `feature_key` and `event_name`.",
            field="feature_key",
        )
    if feature_key is not None:
        validation.lookup_key(feature_key, field="feature_key")
    if event_name is not None:
        validation.lookup_key(event_name, field="event_name")
    amount = raw.get("amount", 1)
    amount_micros = parse_micros(amount, field="amount", error=InvalidAmount)
    if amount_micros == 0:
        raise InvalidAmount("`amount` may not be zero.", field="amount")
    event_id = raw.get("event_id")
    if event_id is not None:
        event_id = validation.key(event_id, field="event_id", pattern=validation.EVENT_ID_RE)
    return _Parsed(
        customer_key=customer_key,
        feature_key=feature_key,
        event_name=event_name,
        amount_micros=amount_micros,
        event_id=event_id,
        timestamp=validation.timestamp(raw.get("timestamp"), now=now),
        metadata=validation.metadata(raw.get("metadata")),
    )


def _check_amount_for_type(feature: Feature, amount_micros: int) -> None:
    if feature.type == "boolean":
        raise FeatureNotRecordable(
            f"Feature {feature.key!r} is boolean: check it, never record it.", field="feature_key"
        )
    if feature.type == "persistent" and amount_micros % MICROS:
        raise InvalidAmount(
            f"Feature {feature.key!r} is persistent: amounts are whole numbers.", field="amount"
        )
    if feature.type == "consumable" and amount_micros < 0:
        raise InvalidAmount(
            f"Feature {feature.key!r} is consumable: negative usage is only for persistent "
            "features such as seats.",
            field="amount",
        )


@dataclass(frozen=True)
class _Decision:
    used_after: int
    overage: int
    credits: int | None  # None: not credit-based


def _decide(
    feature: Feature,
    customer: Customer,
    entitlement: Entitlement | None,
    used: int,
    amount: int,
    cost: CreditCost | None,
    balance: int | None,
) -> _Decision:
    """Rule 4 of RecordUsage, in its order. Raises the first DomainError that applies."""
    if customer.status != "active":
        raise NotEntitled(f"Customer {customer.key!r} is archived.", field="customer_key")
    if entitlement is None:
        raise NotEntitled(
            f"Customer {customer.key!r} is not entitled to {feature.key!r}.", field="feature_key"
        )
    used_after = used + amount
    allowance = entitlement.allowance_micros
    overage = 0
    if amount > 0 and allowance is not None and used_after > allowance:
        if entitlement.overage == "block":
            raise LimitExceeded(
                f"{format_micros(amount)} more {feature.key} would pass the allowance of "
                f"{format_micros(allowance)} ({format_micros(used)} used).",
                field="amount",
                used=_num(used),
                allowance=_num(allowance),
                available=_num(max(allowance - used, 0)),
            )
        overage = min(amount, used_after - allowance)
    if used_after < 0:
        raise InvalidAmount(
            f"Only {format_micros(used)} {feature.key} are in use; cannot give back "
            f"{format_micros(-amount)}.",
            field="amount",
            used=_num(used),
        )
    if used_after > MAX_TOTAL_MICROS:
        raise InvalidAmount("The usage counter would overflow.", field="amount")
    credits = None
    if cost is not None:
        credits = credit_cost_micros(amount, cost.cost_micros) if amount > 0 else 0
        if credits and (balance is None or balance < credits):
            raise InsufficientCredits(
                f"Recording this needs {format_micros(credits)} credits; the wallet holds "
                f"{format_micros(balance or 0)}.",
                field="amount",
                credits_required=format_micros(credits),
                wallet_balance=format_micros(balance or 0),
            )
    return _Decision(used_after=used_after, overage=overage, credits=credits)


def _num(micros: int) -> int | str:
    return micros // MICROS if micros % MICROS == 0 else format_micros(micros)


def _fingerprint(feature_id: int, amount_micros: int, metadata: dict[str, Any]) -> str:
    """What makes two RecordUsage the same (the timestamp is compared on its own)."""
    text = f"{feature_id}:{amount_micros}:{validation.canonical_json(metadata) if metadata else ''}"
    return hashlib.sha256(text.encode()).hexdigest()


# ---------------------------------------------------------------- the engine


@dataclass
class _State:
    # Core rows of _CUSTOMERS / _FEATURES: the attributes the rules read, by name.
    customers: dict[str, Any] = field(default_factory=dict)
    features: dict[tuple[str, str], Any] = field(default_factory=dict)
    entitlements: dict[tuple[int, int], Any] = field(default_factory=dict)
    costs: dict[int, Any] = field(default_factory=dict)
    systems: dict[int, str] = field(default_factory=dict)
    counters: dict[tuple[int, int, datetime], int] = field(default_factory=dict)
    new_counters: set[tuple[int, int, datetime]] = field(default_factory=set)
    dirty_counters: set[tuple[int, int, datetime]] = field(default_factory=set)
    wallets: dict[tuple[int, int], list[int]] = field(default_factory=dict)  # -> [id, balance]
    dirty_wallets: set[tuple[int, int]] = field(default_factory=set)
    events: dict[tuple[int, str], dict[str, Any]] = field(default_factory=dict)

    def feature(self, parsed: _Parsed) -> Any:
        if parsed.feature_key is not None:
            found = self.features.get(("key", parsed.feature_key))
            if found is None:
                raise FeatureNotFound(
                    f"No feature with key {parsed.feature_key!r}.", field="feature_key"
                )
            return found
        assert parsed.event_name is not None
        found = self.features.get(("event", parsed.event_name))
        if found is None:
            raise FeatureNotFound(
                f"No feature with event name {parsed.event_name!r}.", field="event_name"
            )
        return found

    def customer(self, key: str) -> Any:
        found = self.customers.get(key)
        if found is None:
            raise CustomerNotFound(f"No customer with key {key!r}.", field="customer_key")
        return found


# Statements of the hot path, built once: per call only their parameters change, so SQLAlchemy
# neither rebuilds nor recompiles them. Rows are plain Core rows (attribute access by name).
_CUSTOMERS = (
    select(
        Customer.id,
        Customer.key,
        Customer.status,
        Entitlement.feature_id,
        Entitlement.allowance_micros,
        Entitlement.reset_period,
        Entitlement.overage,
    )
    .outerjoin(Entitlement, Entitlement.customer_id == Customer.id)
    .where(Customer.key.in_(bindparam("keys", expanding=True)))
)
_FEATURES = (
    select(
        Feature.id,
        Feature.key,
        Feature.type,
        Feature.event_name,
        CreditCost.cost_micros,
        CreditCost.credit_system_id,
        CreditSystem.key.label("credit_system_key"),
    )
    .outerjoin(CreditCost, CreditCost.feature_id == Feature.id)
    .outerjoin(CreditSystem, CreditSystem.id == CreditCost.credit_system_id)
    .where(
        or_(
            Feature.key.in_(bindparam("fkeys", expanding=True)),
            Feature.event_name.in_(bindparam("enames", expanding=True)),
        )
    )
)
_EVENTS = select(
    UsageEvent.id,
    UsageEvent.customer_id,
    UsageEvent.event_id,
    UsageEvent.amount_micros,
    UsageEvent.timestamp,
    UsageEvent.credits_micros,
    UsageEvent.overage_micros,
    UsageEvent.used_after_micros,
    UsageEvent.allowance_micros,
    UsageEvent.balance_after_micros,
    UsageEvent.fingerprint,
    Feature.key.label("feature_key"),
    Feature.event_name,
    Feature.type.label("feature_type"),
).join(Feature, Feature.id == UsageEvent.feature_id)
_EVENTS_BY_PAIR = _EVENTS.where(
    tuple_(UsageEvent.customer_id, UsageEvent.event_id).in_(bindparam("pairs", expanding=True))
)
_COUNTER_KEY = tuple_(UsageCounter.customer_id, UsageCounter.feature_id, UsageCounter.period_start)
_COUNTERS = (
    select(
        UsageCounter.customer_id,
        UsageCounter.feature_id,
        UsageCounter.period_start,
        UsageCounter.used_micros,
    )
    .where(_COUNTER_KEY.in_(bindparam("ckeys", expanding=True)))
    .order_by(UsageCounter.customer_id, UsageCounter.feature_id, UsageCounter.period_start)
    .with_for_update()
)
_WALLETS = (
    select(Wallet.customer_id, Wallet.credit_system_id, Wallet.id, Wallet.balance_micros)
    .where(
        tuple_(Wallet.customer_id, Wallet.credit_system_id).in_(bindparam("wkeys", expanding=True))
    )
    .order_by(Wallet.id)
    .with_for_update()
)


def _load_state(parsed: Sequence[_Parsed], now: datetime) -> _State:
    """Everything the events touch, in at most five queries; counters and wallets locked in key
    order (PostgreSQL; on SQLite, BEGIN IMMEDIATE already holds the write lock)."""
    conn = db.session.connection()
    state = _State()
    for row in conn.execute(_CUSTOMERS, {"keys": sorted({p.customer_key for p in parsed})}):
        state.customers[row.key] = row
        if row.feature_id is not None:
            state.entitlements[(row.id, row.feature_id)] = row
    fkeys = sorted({p.feature_key for p in parsed if p.feature_key is not None})
    enames = sorted({p.event_name for p in parsed if p.event_name is not None})
    for row in conn.execute(_FEATURES, {"fkeys": fkeys, "enames": enames}):
        state.features[("key", row.key)] = row
        state.features[("event", row.event_name)] = row
        if row.cost_micros is not None:
            state.costs[row.id] = row
            state.systems[row.credit_system_id] = row.credit_system_key
    if not state.customers or not state.features:
        return state

    pairs = set()
    counter_keys: set[tuple[int, int, datetime]] = set()
    wallet_keys: set[tuple[int, int]] = set()
    for p in parsed:
        customer = state.customers.get(p.customer_key)
        if customer is None:
            continue
        if p.event_id is not None:
            pairs.add((customer.id, p.event_id))
        feature = state.features.get(
            ("key", p.feature_key) if p.feature_key is not None else ("event", p.event_name)
        )
        ent = None if feature is None else state.entitlements.get((customer.id, feature.id))
        if feature is None or ent is None:
            continue
        start = period_start(p.timestamp or now, effective_period(feature.type, ent.reset_period))
        counter_keys.add((customer.id, feature.id, start))
        cost = state.costs.get(feature.id)
        if cost is not None:
            wallet_keys.add((customer.id, cost.credit_system_id))
    if pairs:
        for row in conn.execute(_EVENTS_BY_PAIR, {"pairs": sorted(pairs)}):
            state.events[(row.customer_id, row.event_id)] = _stored_event(row)
    if counter_keys:
        for cid, fid, start, used in conn.execute(_COUNTERS, {"ckeys": sorted(counter_keys)}):
            state.counters[(cid, fid, start)] = used
    if wallet_keys:
        for cid, sid, wid, balance in conn.execute(_WALLETS, {"wkeys": sorted(wallet_keys)}):
            state.wallets[(cid, sid)] = [wid, balance]
    return state


def _stored_event(row: Any) -> dict[str, Any]:
    return {
        "row_id": row.id,
        "fingerprint": row.fingerprint,
        "timestamp": row.timestamp,
        "result": dict(
            event_id=row.event_id,
            feature_key=row.feature_key,
            event_name=row.event_name,
            feature_type=row.feature_type,
            amount_micros=row.amount_micros,
            timestamp=row.timestamp,
            used_micros=row.used_after_micros,
            allowance_micros=row.allowance_micros,
            overage_micros=row.overage_micros,
            credits_micros=row.credits_micros,
            balance_micros=row.balance_after_micros,
        ),
    }


@dataclass
class _Pending:
    index: int
    event: dict[str, Any]
    ledger: dict[str, Any] | None
    customer_key: str
    audit: tuple[str, str, str]  # event_id, feature_key, amount


def _judge(
    state: _State, p: _Parsed, actor: Actor, now: datetime, pending: list[_Pending], index: int
) -> UsageResult:
    customer = state.customer(p.customer_key)
    feature = state.feature(p)
    _check_amount_for_type(feature, p.amount_micros)
    fingerprint = _fingerprint(feature.id, p.amount_micros, p.metadata)
    event_id = p.event_id or uuid.uuid4().hex
    existing = state.events.get((customer.id, event_id))
    if existing is not None:
        if existing["fingerprint"] != fingerprint or (
            p.timestamp is not None and p.timestamp != existing["timestamp"]
        ):
            raise IdempotencyConflict(
                f"event_id {event_id!r} was already used for this customer with different "
                "content; use a new event_id for a new event.",
                field="event_id",
            )
        cost = state.costs.get(feature.id)
        return UsageResult(
            replayed=True,
            customer_key=customer.key,
            credit_system=None if cost is None else state.systems[cost.credit_system_id],
            **existing["result"],
        )
    ent = state.entitlements.get((customer.id, feature.id))
    at = p.timestamp or now
    start = period_start(at, effective_period(feature.type, ent.reset_period if ent else "never"))
    ckey = (customer.id, feature.id, start)
    used = state.counters.get(ckey, 0)
    cost = state.costs.get(feature.id)
    wallet = None if cost is None else state.wallets.get((customer.id, cost.credit_system_id))
    decision = _decide(
        feature, customer, ent, used, p.amount_micros, cost, None if wallet is None else wallet[1]
    )
    assert ent is not None
    # Accepted: move the in-memory state, queue the writes.
    if ckey not in state.counters:
        state.new_counters.add(ckey)
    state.counters[ckey] = decision.used_after
    state.dirty_counters.add(ckey)
    balance_after = None
    ledger = None
    if cost is not None:
        if decision.credits:
            assert wallet is not None
            wallet[1] -= decision.credits
            state.dirty_wallets.add((customer.id, cost.credit_system_id))
            ledger = {
                "wallet_id": wallet[0],
                "customer_id": customer.id,
                "type": "usage",
                "kind": None,
                "amount_micros": -decision.credits,
                "balance_after_micros": wallet[1],
                "reference": f"{feature.key}:{event_id}"[:200],
                "note": None,
                "idempotency_key": None,
                "fingerprint": None,
                "actor": actor.label,
                "created_at": now,
            }
        balance_after = None if wallet is None else wallet[1]
    result = UsageResult(
        replayed=False,
        event_id=event_id,
        customer_key=customer.key,
        feature_key=feature.key,
        event_name=feature.event_name,
        feature_type=feature.type,
        amount_micros=p.amount_micros,
        timestamp=at,
        used_micros=decision.used_after,
        allowance_micros=ent.allowance_micros,
        overage_micros=decision.overage,
        credits_micros=decision.credits,
        balance_micros=balance_after,
        credit_system=None if cost is None else state.systems[cost.credit_system_id],
    )
    event_row = {
        "customer_id": customer.id,
        "feature_id": feature.id,
        "event_id": event_id,
        "amount_micros": p.amount_micros,
        "timestamp": at,
        "period_start": start,
        "metadata": p.metadata or None,
        "credits_micros": decision.credits,
        "overage_micros": decision.overage,
        "used_after_micros": decision.used_after,
        "allowance_micros": ent.allowance_micros,
        "balance_after_micros": balance_after,
        "fingerprint": fingerprint,
        "actor": actor.label,
        "recorded_at": now,
    }
    state.events[(customer.id, event_id)] = {
        "row_id": None,
        "fingerprint": fingerprint,
        "timestamp": at,
        "result": {
            k: v
            for k, v in result.__dict__.items()
            if k not in ("replayed", "customer_key", "credit_system")
        },
    }
    pending.append(
        _Pending(
            index=index,
            event=event_row,
            ledger=ledger,
            customer_key=customer.key,
            audit=(event_id, feature.key, format_micros(p.amount_micros)),
        )
    )
    return result


_event_table = UsageEvent.__table__
_counter_table = UsageCounter.__table__
_wallet_table = Wallet.__table__
_INSERT_EVENTS = insert(_event_table)
_INSERT_EVENTS_RETURNING = _INSERT_EVENTS.returning(_event_table.c.id, sort_by_parameter_order=True)
# PostgreSQL: take the ids from the sequence first, so that the rows go in with a plain pipelined
# executemany (one short cached statement) rather than one huge INSERT ... VALUES ... RETURNING.
_NEXT_EVENT_IDS = text(
    "SELECT nextval(pg_get_serial_sequence('usage_events', 'id')) FROM generate_series(1, :n)"
)
_LAST_EVENT_ID = text("SELECT coalesce(max(id), 0) FROM usage_events")
_INSERT_LEDGER = insert(LedgerEntry.__table__)
_INSERT_COUNTERS = insert(_counter_table)
_INSERT_AUDIT = insert(AuditLog.__table__)
_UPDATE_COUNTER = (
    update(_counter_table)
    .where(
        _counter_table.c.customer_id == bindparam("c"),
        _counter_table.c.feature_id == bindparam("f"),
        _counter_table.c.period_start == bindparam("s", type_=_counter_table.c.period_start.type),
    )
    .values(used_micros=bindparam("u"))
)
_UPDATE_WALLET = (
    update(_wallet_table)
    .where(_wallet_table.c.id == bindparam("wid"))
    .values(
        balance_micros=bindparam("bal"),
        updated_at=bindparam("now", type_=_wallet_table.c.updated_at.type),
    )
)


_daily_table = UsageDaily.__table__


def _daily_upsert(dialect: Any) -> Any:
    stmt = dialect.insert(_daily_table)
    return stmt.on_conflict_do_update(
        index_elements=["feature_id", "day", "shard"],
        set_={"amount_micros": _daily_table.c.amount_micros + stmt.excluded.amount_micros},
    )


_UPSERT_DAILY = {"sqlite": _daily_upsert(sqlite), "postgresql": _daily_upsert(postgresql)}


def add_to_daily(conn: Any, events: Iterable[Mapping[str, Any]]) -> None:
    """Add events (rows of usage_events: customer_id, feature_id, timestamp, amount_micros) to
    usage_daily, one upsert per (feature, day, shard), in key order."""
    sums: dict[tuple[int, Any, int], int] = {}
    for e in events:
        day = e["timestamp"].astimezone(UTC).date()
        k = (e["feature_id"], day, e["customer_id"] % DAILY_SHARDS)
        sums[k] = sums.get(k, 0) + e["amount_micros"]
    if sums:
        conn.execute(
            _UPSERT_DAILY[conn.dialect.name],
            [
                {"feature_id": f, "day": d, "shard": sh, "amount_micros": amount}
                for (f, d, sh), amount in sorted(sums.items())
            ],
        )


def _write(state: _State, pending: list[_Pending], actor: Actor) -> None:
    if not pending:
        return
    conn = db.session.connection()
    rows = [p.event for p in pending]
    if use_copy(conn, len(rows)):
        ids = sorted(conn.execute(_NEXT_EVENT_IDS, {"n": len(rows)}).scalars())
        for row, event_pk in zip(rows, ids, strict=True):
            row["id"] = event_pk
        bulk_insert(conn, _event_table, rows)
    elif len(rows) > 1 and conn.dialect.name == "sqlite":
        # SQLite cannot return the ids of a multi-row insert in order, so SQLAlchemy would insert
        # row by row. The transaction holds the write lock (BEGIN IMMEDIATE), so the next ids are
        # ours to take: one plain executemany instead of one statement per event.
        last = conn.execute(_LAST_EVENT_ID).scalar_one()
        ids = list(range(last + 1, last + 1 + len(rows)))
        for row, event_pk in zip(rows, ids, strict=True):
            row["id"] = event_pk
        bulk_insert(conn, _event_table, rows)
    else:
        ids = conn.execute(_INSERT_EVENTS_RETURNING, rows).scalars().all()
    ledger_rows = []
    for p, event_pk in zip(pending, ids, strict=True):
        if p.ledger is not None:
            p.ledger["usage_event_id"] = event_pk
            ledger_rows.append(p.ledger)
    # The writes below return nothing: on PostgreSQL without COPY (which pipeline mode cannot
    # carry) they go out in one round trip instead of one each.
    with pipelined(conn, enabled=not use_copy(conn, len(rows))):
        _write_rest(conn, state, pending, actor, rows, ledger_rows)


def _write_rest(
    conn: Any,
    state: _State,
    pending: list[_Pending],
    actor: Actor,
    rows: list[dict[str, Any]],
    ledger_rows: list[dict[str, Any]],
) -> None:
    bulk_insert(conn, LedgerEntry.__table__, ledger_rows)
    if state.new_counters:
        # A concurrent first use of the same counter makes this fail on the unique key;
        # the transaction is then retried from the start and sees the other one's row.
        conn.execute(
            _INSERT_COUNTERS,
            [
                {"customer_id": c, "feature_id": f, "period_start": s, "used_micros": used}
                for (c, f, s) in sorted(state.new_counters)
                for used in (state.counters[(c, f, s)],)
            ],
        )
    moved = sorted(state.dirty_counters - state.new_counters)
    if moved:
        conn.execute(
            _UPDATE_COUNTER,
            [{"c": c, "f": f, "s": s, "u": state.counters[(c, f, s)]} for (c, f, s) in moved],
        )
    if state.dirty_wallets:
        now = utcnow()
        conn.execute(
            _UPDATE_WALLET,
            [
                {"wid": state.wallets[k][0], "bal": state.wallets[k][1], "now": now}
                for k in sorted(state.dirty_wallets)
            ],
        )
    add_to_daily(conn, rows)
    bulk_insert(conn, AuditLog.__table__, _audit_rows(actor, pending))


def _audit_rows(actor: Actor, pending: list[_Pending]) -> list[dict[str, Any]]:
    """One audit row per customer per call: the event itself, or the list of a batch's events
    (each event row also keeps its actor and time)."""
    by_customer: dict[str, list[tuple[str, str, str]]] = {}
    for p in pending:
        by_customer.setdefault(p.customer_key, []).append(p.audit)
    now = utcnow()
    rows = []
    for customer_key, events in by_customer.items():
        if len(events) == 1:
            ((event_id, feature_key, amount),) = events
            target = f"event:{event_id}"
            details: dict[str, Any] = {"feature": feature_key, "amount": amount}
        else:
            target = f"events:{len(events)}"
            details = {"events": [list(e) for e in events]}
        rows.append(audit_row(actor, "usage.recorded", customer_key, target, details, now))
    return rows


def _parse_all(raws: Sequence[Mapping[str, Any]]) -> list[_Parsed | DomainError]:
    """Shape checks need no database: done before the write transaction (and its lock)."""
    now = utcnow()
    parsed: list[_Parsed | DomainError] = []
    for raw in raws:
        try:
            parsed.append(_parse(raw, now))
        except DomainError as exc:
            parsed.append(exc)
    return parsed


@transactional
def _record(actor: Actor, parsed: list[_Parsed | DomainError]) -> list[UsageResult | DomainError]:
    now = utcnow()
    valid = [p for p in parsed if isinstance(p, _Parsed)]
    state = _load_state(valid, now)
    pending: list[_Pending] = []
    results: list[UsageResult | DomainError] = []
    for index, p in enumerate(parsed):
        if isinstance(p, DomainError):
            results.append(p)
            continue
        try:
            results.append(_judge(state, p, actor, now, pending, index))
        except DomainError as exc:
            results.append(exc)
    _write(state, pending, actor)
    return results


def record_usage(actor: Actor, **fields: Any) -> UsageResult:
    """Record one usage event (fields as in api.md: customer_key, feature_key or event_name,
    amount, event_id, timestamp, metadata). Raises the DomainError of the first rule it breaks."""
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


def check_entitlement(
    actor: Actor,
    *,
    customer_key: object,
    feature_key: object = None,
    event_name: object = None,
    amount: object = 1,
) -> CheckResult:
    """Would recording ``amount`` succeed now? Writes nothing."""
    require(actor, VIEW)
    customer = get_customer(customer_key)
    feature = get_feature(feature_key=feature_key, event_name=event_name)
    amount_micros = parse_micros(
        1 if amount is None else amount, field="amount", error=InvalidAmount
    )
    if amount_micros == 0:
        raise InvalidAmount("`amount` may not be zero.", field="amount")
    now = utcnow()
    session = db.session
    ent = session.scalar(
        select(Entitlement).where(
            Entitlement.customer_id == customer.id, Entitlement.feature_id == feature.id
        )
    )
    period = effective_period(feature.type, ent.reset_period if ent else "never")
    start = period_start(now, period)
    used = (
        session.scalar(
            select(UsageCounter.used_micros).where(
                UsageCounter.customer_id == customer.id,
                UsageCounter.feature_id == feature.id,
                UsageCounter.period_start == start,
            )
        )
        or 0
    )
    cost = session.get(CreditCost, feature.id)
    balance = None
    system_key = None
    if cost is not None:
        system_key = session.scalar(
            select(CreditSystem.key).where(CreditSystem.id == cost.credit_system_id)
        )
        balance = session.scalar(
            select(Wallet.balance_micros).where(
                Wallet.customer_id == customer.id, Wallet.credit_system_id == cost.credit_system_id
            )
        )
    reason = message = None
    credits = None
    try:
        if feature.type == "boolean":
            if customer.status != "active" or ent is None:
                raise NotEntitled(
                    f"Customer {customer.key!r} is not entitled to {feature.key!r}.",
                    field="feature_key",
                )
        else:
            _check_amount_for_type(feature, amount_micros)
            credits = _decide(feature, customer, ent, used, amount_micros, cost, balance).credits
    except DomainError as exc:
        reason, message = exc.code, exc.message
        if cost is not None and amount_micros > 0:
            credits = credit_cost_micros(amount_micros, cost.cost_micros)
    return CheckResult(
        allowed=reason is None,
        reason=reason,
        message=message,
        customer_key=customer.key,
        feature_key=feature.key,
        event_name=feature.event_name,
        feature_type=feature.type,
        amount_micros=amount_micros,
        used_micros=used,
        allowance_micros=None if ent is None else ent.allowance_micros,
        reset_at=next_reset(now, period) if ent is not None else None,
        credits_required_micros=credits,
        balance_micros=balance,
        credit_system=system_key,
        entitled=ent is not None and customer.status == "active",
    )
