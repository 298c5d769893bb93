"""Where RecordUsage meets the database: the prebuilt statements of the hot path, the state one
call loads (locked on PostgreSQL when it will write), and the bulk writes of what was accepted,
the daily rollup included."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any, NamedTuple, cast

from sqlalchemy import (
    BigInteger,
    Connection,
    Table,
    and_,
    bindparam,
    func,
    insert,
    or_,
    select,
    text,
    tuple_,
    update,
)
from sqlalchemy.orm import aliased

from ...errors import CustomerNotFound, DomainError, FeatureNotFound
from ...extensions import db
from ...models import (
    DAILY_BASE,
    DAILY_SHARDS,
    AuditLog,
    CreditAllocation,
    CreditCost,
    CreditGrant,
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
from .. import alerts, outbox
from ..actors import Actor
from ..audit import audit_row
from ..bulk import bulk_insert, pipelined, use_copy
from ..carry import carry_upserts
from ..credits import EXPIRY_ACTOR, burn, rollup
from ..credits.rules import GrantRef, allocate, due
from ..periods import period_start
from .rules import (
    CostRef,
    CustomerRef,
    EntitlementRef,
    FeatureRef,
    Parsed,
    WalletRef,
    counter_period,
)

CounterKey = tuple[int, int, datetime]  # customer id, feature id, period start
WalletKey = tuple[int, int]  # customer id, credit system id


class StoredEvent(NamedTuple):
    """An event already recorded for (customer, event_id): what a replay answers."""

    fingerprint: str
    timestamp: datetime
    feature_key: str
    event_name: str
    feature_type: str
    amount_micros: int
    used_micros: int
    allowance_micros: int | None
    overage_micros: int
    credits_micros: int | None
    balance_micros: int | None

    def row(
        self,
        customer_id: int,
        feature_id: int,
        event_id: str,
        period: datetime,
        metadata: dict[str, Any] | None,
    ) -> dict[str, Any]:
        """Its usage_events row (without the actor and the time it was recorded)."""
        return {
            "customer_id": customer_id,
            "feature_id": feature_id,
            "event_id": event_id,
            "amount_micros": self.amount_micros,
            "timestamp": self.timestamp,
            "period_start": period,
            "metadata": metadata or None,
            "credits_micros": self.credits_micros,
            "overage_micros": self.overage_micros,
            "used_after_micros": self.used_micros,
            "allowance_micros": self.allowance_micros,
            "balance_after_micros": self.balance_micros,
            "fingerprint": self.fingerprint,
        }


@dataclass
class State:
    """Everything a call's events touch, as typed records; moved in memory as events are
    accepted, then written in bulk."""

    customers: dict[str, CustomerRef] = field(default_factory=dict)
    features: dict[tuple[str, str], FeatureRef] = field(default_factory=dict)
    entitlements: dict[tuple[int, int], EntitlementRef] = field(default_factory=dict)
    costs: dict[int, CostRef] = field(default_factory=dict)
    counters: dict[CounterKey, int] = field(default_factory=dict)
    new_counters: set[CounterKey] = field(default_factory=set)
    dirty_counters: set[CounterKey] = field(default_factory=set)
    wallets: dict[WalletKey, WalletRef] = field(default_factory=dict)
    dirty_wallets: dict[int, WalletRef] = field(default_factory=dict)  # by wallet id
    dirty_grants: dict[int, GrantRef] = field(default_factory=dict)  # by grant id
    expiries: list[dict[str, Any]] = field(default_factory=list)  # ledger rows booked
    expired_grants: list[dict[str, Any]] = field(default_factory=list)  # their grant updates
    events: dict[tuple[int, str], StoredEvent] = field(default_factory=dict)
    # Alerts (docs/domain.md, "Alerts"): the values before the call, the highest each counter
    # reached during it, and the refusals that raise usage.blocked.
    wallet_before: dict[int, int] = field(default_factory=dict)  # by wallet id
    counter_before: dict[CounterKey, int] = field(default_factory=dict)
    counter_peak: dict[CounterKey, int] = field(default_factory=dict)
    blocked: list[dict[str, Any]] = field(default_factory=list)
    # The terms the monthly rollup keys a loaded grant by: kind, currency, unit price.
    terms: dict[int, tuple[str, str | None, str | None]] = field(default_factory=dict)
    systems: dict[int, int] = field(default_factory=dict)  # wallet id -> credit system id

    def customer(self, key: str) -> CustomerRef:
        found = self.customers.get(key)
        if found is None:
            raise CustomerNotFound(f"No customer with key {key!r}.", field="customer_key")
        return found

    def feature(self, parsed: Parsed) -> FeatureRef:
        if parsed.feature_key is not None:
            found = self.features.get(("key", parsed.feature_key))
            if found is None:
                raise FeatureNotFound(
                    f"No feature with key {parsed.feature_key!r}.", field="feature_key"
                )
            return found
        found = self.features.get(("event", parsed.event_name or ""))
        if found is None:
            raise FeatureNotFound(
                f"No feature with event name {parsed.event_name!r}.", field="event_name"
            )
        return found

    def counter_key(self, customer: CustomerRef, feature: FeatureRef, at: datetime) -> CounterKey:
        ent = self.entitlements.get((customer.id, feature.id))
        return (customer.id, feature.id, period_start(at, counter_period(feature, ent)))

    def wallet(self, customer: CustomerRef, cost: CostRef | None) -> WalletRef | None:
        return None if cost is None else self.wallets.get((customer.id, cost.credit_system_id))

    def move_counter(self, key: CounterKey, used: int) -> None:
        if key not in self.counters:
            self.new_counters.add(key)
        self.counters[key] = used
        self.dirty_counters.add(key)
        if used > self.counter_peak.get(key, used - 1):
            self.counter_peak[key] = used

    def watch(self, now: datetime) -> None:
        """Note the values the alerts compare with, as loaded under the locks (before any
        expiry is booked): each wallet's spendable credits, each counter's used."""
        self.wallet_before = {w.id: alerts.spendable(w.grants, now) for w in self.wallets.values()}
        self.counter_before = dict(self.counters)

    def block(
        self, customer_key: str, feature_key: str, exc: DomainError, amount: int, at: datetime
    ) -> None:
        """A refusal that raises usage.blocked (limit_exceeded, insufficient_credits)."""
        self.blocked.append(
            alerts.blocked_event(
                customer_key=customer_key,
                feature_key=feature_key,
                reason=exc.code,
                amount=amount,
                details={k: v for k, v in exc.details.items() if k != "field"},
                at=at,
            )
        )

    def alert_rows(self, now: datetime, *, writes: bool) -> list[dict[str, Any]]:
        """The outbox rows of this call: the credits it expired, the thresholds its writes
        crossed (each counter and wallet from its value before the call to each value after),
        its usage.blocked. In memory: nothing to write, no statement. A call that writes
        nothing (every event refused) books no expiry either: only its usage.blocked."""
        blocked = list({row["dedupe_key"]: row for row in self.blocked}.values())
        rows: list[dict[str, Any]] = []
        if not writes or not (self.expiries or self.dirty_wallets or self.dirty_counters):
            return blocked
        customer_keys = {c.id: c.key for c in self.customers.values()}
        system_keys = {c.credit_system_id: c.credit_system_key for c in self.costs.values()}
        wallets = {w.id: (cid, sid, w) for (cid, sid), w in self.wallets.items()}
        for e in self.expiries:
            cid, sid, _ = wallets[e["wallet_id"]]
            rows.append(
                alerts.expired_event(
                    customer_key=customer_keys[cid],
                    credit_system=system_keys[sid],
                    grant_id=e["grant_id"],
                    amount=-e["amount_micros"],
                    at=now,
                )
            )
        for wid in sorted(self.dirty_wallets):
            cid, sid, wallet = wallets[wid]
            before = self.wallet_before.get(wid, 0)
            after = alerts.spendable(wallet.grants, now)
            if after < before:
                rows += alerts.wallet_events(
                    customer_key=customer_keys[cid],
                    credit_system=system_keys[sid],
                    threshold=wallet.threshold_micros,
                    before=before,
                    after=after,
                    at=now,
                    # this wallet's grants paid for usage in this call, or only expiries moved it
                    cause="usage"
                    if any(g.id in self.dirty_grants for g in wallet.grants)
                    else "expiry",
                )
        shares: tuple[int, ...] | None = None
        for key in sorted(self.dirty_counters):
            before, peak = self.counter_before.get(key, 0), self.counter_peak.get(key, 0)
            if peak <= before:
                continue
            cid, fid, start = key
            ent = self.entitlements.get((cid, fid))
            if ent is None or ent.allowance_micros is None:
                continue
            if shares is None:
                shares = alerts.percentages()
                feature_keys = {f.id: f.key for f in self.features.values()}
            rows += alerts.usage_events(
                customer_key=customer_keys[cid],
                feature_key=feature_keys[fid],
                allowance=ent.allowance_micros,
                before=before,
                after=peak,
                period_start=start,
                at=now,
                shares=shares,
            )
        return rows + blocked

    def add_grant(self, wallet: WalletRef, row: Sequence[Any]) -> None:
        """A loaded grant row: _GRANT_FIELDS, then _GRANT_TERMS."""
        grant = GrantRef(*row[: len(_GRANT_FIELDS)])
        wallet.grants.append(grant)
        currency, price = row[len(_GRANT_FIELDS) :]
        self.terms[grant.id] = (grant.kind, currency, price)

    def rollup_rows(self, pending: Iterable[Pending]) -> list[rollup.Row]:
        """What the booked expiries and the accepted events' allocations add to the monthly
        rollup (each at its ledger entry's time)."""
        rows = []
        for e in self.expiries:
            kind, currency, price = self.terms[e["grant_id"]]
            rows.append(
                rollup.Row(
                    self.systems[e["wallet_id"]],
                    e["created_at"],
                    "expired",
                    kind,
                    currency,
                    price,
                    -e["amount_micros"],
                    e["customer_id"],
                )
            )
        for p in pending:
            if p.ledger is None:
                continue
            sid = self.systems[p.ledger["wallet_id"]]
            for gid, amount in p.allocations:
                kind, currency, price = self.terms[gid]
                rows.append(
                    rollup.Row(
                        sid,
                        p.ledger["created_at"],
                        "consumed",
                        kind,
                        currency,
                        price,
                        amount,
                        p.ledger["customer_id"],
                    )
                )
        return rows

    def debit(self, wallet: WalletRef, credits: int, at: datetime) -> list[tuple[int, int]]:
        """Take ``credits`` from the grants eligible at ``at`` in spending order: the parts
        (grant id, amount) to write as allocations."""
        parts = allocate(wallet.grants, credits, at)
        for grant, _ in parts:
            self.dirty_grants[grant.id] = grant
        wallet.balance_micros -= credits
        self.dirty_wallets[wallet.id] = wallet
        return [(grant.id, amount) for grant, amount in parts]

    def book_expiries(self, now: datetime) -> None:
        """Book every due expiry of the loaded wallets (locked), before any decision: an
        `expiry` ledger entry per grant, taking its remaining out (domain.md, "Expiry")."""
        for (customer_id, _), wallet in sorted(self.wallets.items(), key=lambda kv: kv[1].id):
            for grant in sorted(due(wallet.grants, now), key=lambda g: g.id):
                left = grant.remaining_micros
                grant.remaining_micros = 0
                wallet.balance_micros -= left
                self.dirty_wallets[wallet.id] = wallet
                self.expired_grants.append({"gid": grant.id, "left": left, "now": now})
                self.expiries.append(
                    {
                        "wallet_id": wallet.id,
                        "customer_id": customer_id,
                        "type": "expiry",
                        "kind": None,
                        "amount_micros": -left,
                        "balance_after_micros": wallet.balance_micros,
                        "grant_id": grant.id,
                        "reference": f"grant:{grant.id}",
                        "note": None,
                        "idempotency_key": None,
                        "fingerprint": None,
                        "actor": EXPIRY_ACTOR,
                        "created_at": now,
                        "usage_event_id": None,
                    }
                )


# Statements of the hot path, built once: per call only their parameters change, so SQLAlchemy
# neither rebuilds nor recompiles them.
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
# A write on PostgreSQL locks the entitlement rows it judges against before anything else, so that
# an edit of an allowance and usage are ordered (docs/domain.md, "Concurrent edits and usage"):
# every edit locks the same rows before it reads the usage it judges. Only the call's customers'
# entitlements to the call's features (exactly the call's pairs for one event, or a batch of one
# customer or one feature; a tuple IN over exact pairs made PostgreSQL plan and test a long OR per
# row), in (customer, feature) order; the locking subquery returns each row as its last writer
# committed it, even after waiting for that writer (READ COMMITTED re-reads the rows a statement
# locks; a plain join would give the statement's snapshot, see _WALLETS). FOR UPDATE cannot lock
# the nullable side of an outer join, hence the subquery, which the outer join then hangs on the
# customers (a customer without the entitlement is still found, and refused as not entitled). Same
# round trip as the unlocked statement.
_held_customer = aliased(Customer)
_held = (
    select(
        Entitlement.customer_id,
        Entitlement.feature_id,
        Entitlement.allowance_micros,
        Entitlement.reset_period,
        Entitlement.overage,
    )
    .join(_held_customer, _held_customer.id == Entitlement.customer_id)
    .join(Feature, Feature.id == Entitlement.feature_id)
    .where(
        _held_customer.key.in_(bindparam("keys", expanding=True)),
        or_(
            Feature.key.in_(bindparam("fkeys", expanding=True)),
            Feature.event_name.in_(bindparam("enames", expanding=True)),
        ),
    )
    .order_by(Entitlement.customer_id, Entitlement.feature_id)
    .with_for_update(of=Entitlement)
    .subquery("held")
)
_CUSTOMERS_LOCKED = (
    select(
        Customer.id,
        Customer.key,
        Customer.status,
        _held.c.feature_id,
        _held.c.allowance_micros,
        _held.c.reset_period,
        _held.c.overage,
    )
    .outerjoin(_held, _held.c.customer_id == Customer.id)
    .where(Customer.key.in_(bindparam("keys", expanding=True)))
)
_FEATURES = (
    select(
        Feature.id,
        Feature.key,
        Feature.type,
        Feature.event_name,
        Feature.archived_at,
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
_EVENTS = (
    select(
        UsageEvent.customer_id,
        UsageEvent.event_id,
        UsageEvent.fingerprint,
        UsageEvent.timestamp,
        Feature.key,
        Feature.event_name,
        Feature.type,
        UsageEvent.amount_micros,
        UsageEvent.used_after_micros,
        UsageEvent.allowance_micros,
        UsageEvent.overage_micros,
        UsageEvent.credits_micros,
        UsageEvent.balance_after_micros,
    )
    .join(Feature, Feature.id == UsageEvent.feature_id)
    .where(
        tuple_(UsageEvent.customer_id, UsageEvent.event_id).in_(bindparam("pairs", expanding=True))
    )
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
)
# Each wallet with its grants that hold credits, in one query (one row per grant; one row with
# no grant for a wallet without any).
#
# On PostgreSQL a statement that waited for a wallet's lock returns the wallet row as its holder
# committed it, but the joined grant rows as the statement's snapshot saw them, from before that
# commit (READ COMMITTED re-reads only the rows it locks). So the statement also reads the
# wallet's version from its snapshot: when it differs from the locked row's, the wallet changed
# while we waited and its grants are read again (one more query, only then).
_wallet_then = aliased(Wallet)
# A grant as RecordUsage judges it: GrantRef's fields, in order.
_GRANT_FIELDS = (
    CreditGrant.id,
    CreditGrant.kind,
    CreditGrant.priority,
    CreditGrant.effective_at,
    CreditGrant.expires_at,
    CreditGrant.remaining_micros,
)
# And what the monthly rollup keys it by (besides its kind): currency, unit price.
_GRANT_TERMS = (CreditGrant.currency, CreditGrant.unit_price)
_SNAPSHOT_VERSION = (
    select(_wallet_then.version).where(_wallet_then.id == Wallet.id).scalar_subquery()
)
# The low-balance threshold: the wallet's own, else its credit system's default.
_THRESHOLD = func.coalesce(
    Wallet.low_balance_threshold_micros,
    select(CreditSystem.low_balance_threshold_micros)
    .where(CreditSystem.id == Wallet.credit_system_id)
    .scalar_subquery(),
)
_WALLETS = (
    select(
        Wallet.customer_id,
        Wallet.credit_system_id,
        Wallet.id,
        Wallet.balance_micros,
        Wallet.version,
        _SNAPSHOT_VERSION,
        _THRESHOLD,
        *_GRANT_FIELDS,
        *_GRANT_TERMS,
    )
    .outerjoin(
        CreditGrant,
        and_(CreditGrant.wallet_id == Wallet.id, CreditGrant.remaining_micros > 0),
    )
    .where(
        tuple_(Wallet.customer_id, Wallet.credit_system_id).in_(bindparam("wkeys", expanding=True))
    )
    .order_by(Wallet.id, CreditGrant.id)
)
_LIVE_GRANTS = (
    select(
        CreditGrant.wallet_id,
        *_GRANT_FIELDS,
        *_GRANT_TERMS,
    )
    .where(
        CreditGrant.wallet_id.in_(bindparam("wids", expanding=True)),
        CreditGrant.remaining_micros > 0,
    )
    .order_by(CreditGrant.wallet_id, CreditGrant.id)
)
# A write locks the counters and wallets it moves, in key order, after the entitlements
# (_CUSTOMERS_LOCKED; PostgreSQL: on SQLite, BEGIN IMMEDIATE already holds the write lock). The
# order everywhere: entitlements, counters, wallets. A wallet's grants change only under its
# wallet's lock, so locking the wallet row locks them too. The entitlement check reads without
# a lock.
_LOCKED = {
    False: (_COUNTERS, _WALLETS),
    True: (_COUNTERS.with_for_update(), _WALLETS.with_for_update(of=Wallet)),
}


def load_state(parsed: Sequence[Parsed], now: datetime, *, lock: bool) -> State:
    """Everything the events touch, in at most five queries."""
    conn = db.session.connection()
    state = State()
    fkeys = sorted({p.feature_key for p in parsed if p.feature_key is not None})
    enames = sorted({p.event_name for p in parsed if p.event_name is not None})
    keys = sorted({p.customer_key for p in parsed})
    locked = lock and conn.dialect.name == "postgresql"
    customers = _CUSTOMERS_LOCKED if locked else _CUSTOMERS  # statements, not strings
    params = {"keys": keys, "fkeys": fkeys, "enames": enames} if locked else {"keys": keys}
    for row in conn.execute(customers, params):
        state.customers[row.key] = CustomerRef(row.id, row.key, row.status)
        if row.feature_id is not None:
            state.entitlements[(row.id, row.feature_id)] = EntitlementRef(
                row.allowance_micros, row.reset_period, row.overage
            )
    for f in conn.execute(_FEATURES, {"fkeys": fkeys, "enames": enames}):
        state.features[("key", f.key)] = state.features[("event", f.event_name)] = FeatureRef(
            f.id, f.key, f.type, f.event_name, f.archived_at is not None
        )
        if f.cost_micros is not None:
            state.costs[f.id] = CostRef(f.cost_micros, f.credit_system_id, f.credit_system_key)
    if not state.customers or not state.features:
        return state

    pairs: set[tuple[int, str]] = set()
    counter_keys: set[CounterKey] = set()
    wallet_keys: set[WalletKey] = set()
    for p in parsed:
        customer = state.customers.get(p.customer_key)
        found = state.features.get(
            ("key", p.feature_key) if p.feature_key is not None else ("event", p.event_name or "")
        )
        if customer is None or found is None:
            continue
        if p.event_id is not None:
            pairs.add((customer.id, p.event_id))
        counter_keys.add(state.counter_key(customer, found, p.timestamp or now))
        cost = state.costs.get(found.id)
        if cost is not None:
            wallet_keys.add((customer.id, cost.credit_system_id))
    counters, wallets = _LOCKED[lock]
    if pairs:
        for event in conn.execute(_EVENTS, {"pairs": sorted(pairs)}):
            state.events[(event[0], event[1])] = StoredEvent._make(event[2:])
    if counter_keys:
        for cid, fid, start, used in conn.execute(counters, {"ckeys": sorted(counter_keys)}):
            state.counters[(cid, fid, start)] = used
    if wallet_keys:
        changed: dict[int, WalletRef] = {}
        for cid, sid, wid, balance, version, seen, threshold, *grant in conn.execute(
            wallets, {"wkeys": sorted(wallet_keys)}
        ):
            wallet = state.wallets.get((cid, sid))
            if wallet is None:
                wallet = state.wallets[(cid, sid)] = WalletRef(wid, balance, [], threshold)
                state.systems[wid] = sid
                if version != seen:
                    changed[wid] = wallet
            if grant[0] is not None:
                state.add_grant(wallet, grant)
        if changed:
            for wallet in changed.values():
                wallet.grants.clear()
            for wid, *grant in conn.execute(_LIVE_GRANTS, {"wids": sorted(changed)}):
                state.add_grant(changed[wid], grant)
    return state


# ---------------------------------------------------------------- writes


@dataclass
class Pending:
    """One accepted event, its rows ready to insert."""

    event: dict[str, Any]
    ledger: dict[str, Any] | None
    customer_key: str
    audit: tuple[str, str, str, str | None]  # event_id, feature_key, amount, reason
    allocations: list[tuple[int, int]] = field(default_factory=list)  # (grant id, amount)


_event_table = cast(Table, UsageEvent.__table__)
_counter_table = cast(Table, UsageCounter.__table__)
_wallet_table = cast(Table, Wallet.__table__)
_daily_table = cast(Table, UsageDaily.__table__)
_ledger_table = cast(Table, LedgerEntry.__table__)
_audit_table = cast(Table, AuditLog.__table__)
_grant_table = cast(Table, CreditGrant.__table__)
_allocation_table = cast(Table, CreditAllocation.__table__)
_INSERT_EVENTS_RETURNING = insert(_event_table).returning(
    _event_table.c.id, sort_by_parameter_order=True
)
# PostgreSQL: take the ids from the sequence first, so that the rows go in with a plain pipelined
# executemany (one short cached statement) rather than one huge INSERT ... VALUES ... RETURNING.
_NEXT_EVENT_IDS = text(
    "SELECT nextval(pg_get_serial_sequence('usage_events', 'id')) FROM generate_series(1, :n)"
)
_LAST_EVENT_ID = text("SELECT coalesce(max(id), 0) FROM usage_events")
_INSERT_COUNTERS = insert(_counter_table)
_UPDATE_COUNTER = (
    update(_counter_table)
    .where(
        _counter_table.c.customer_id == bindparam("c"),
        _counter_table.c.feature_id == bindparam("f"),
        _counter_table.c.period_start == bindparam("s", type_=_counter_table.c.period_start.type),
    )
    .values(used_micros=bindparam("u"))
)
_UPDATE_GRANT = (
    update(_grant_table)
    .where(_grant_table.c.id == bindparam("gid"))
    .values(remaining_micros=bindparam("left"))
)
_EXPIRE_GRANT = (
    update(_grant_table)
    .where(_grant_table.c.id == bindparam("gid"))
    .values(
        remaining_micros=0,
        expired_micros=bindparam("left"),
        expired_at=bindparam("now", type_=_grant_table.c.expired_at.type),
    )
)
# An allocation names its ledger entry, whose id the bulk insert does not return: the entry is
# found by its (unique) usage event, in the same statement.
_INSERT_ALLOCATIONS = insert(_allocation_table).from_select(
    ["ledger_entry_id", "grant_id", "amount_micros"],
    select(
        _ledger_table.c.id,
        bindparam("gid", type_=BigInteger),
        bindparam("amount", type_=BigInteger),
    ).where(_ledger_table.c.usage_event_id == bindparam("event", type_=BigInteger)),
)
_UPDATE_WALLET = (
    update(_wallet_table)
    .where(_wallet_table.c.id == bindparam("wid"))
    .values(
        balance_micros=bindparam("bal"),
        updated_at=bindparam("now", type_=_wallet_table.c.updated_at.type),
        version=_wallet_table.c.version + 1,
    )
)


_UPSERT_DAILY = carry_upserts(
    _daily_table, ["feature_id", "day", "shard"], "amount_micros", "amount_high", DAILY_BASE
)


def add_to_daily(conn: Connection, events: Iterable[Mapping[str, Any]]) -> None:
    """Add events (rows of usage_events: customer_id, feature_id, timestamp, amount_micros) to
    usage_daily, one upsert per (feature, day, shard), in key order."""
    sums: dict[tuple[int, date, int], int] = {}
    for e in events:
        day = e["timestamp"].astimezone(UTC).date()
        k = (e["feature_id"], day, e["customer_id"] % DAILY_SHARDS)
        sums[k] = sums.get(k, 0) + e["amount_micros"]
    if sums:
        conn.execute(
            _UPSERT_DAILY[conn.dialect.name],
            [
                {"feature_id": f, "day": d, "shard": sh, "amount_high": high, "amount_micros": low}
                for (f, d, sh), amount in sorted(sums.items())
                for high, low in (divmod(amount, DAILY_BASE),)
            ],
        )


def write(
    state: State, pending: list[Pending], actor: Actor, events: Sequence[dict[str, Any]] = ()
) -> None:
    """Insert the accepted events, then (in one round trip where the driver allows) their
    ledger entries, the counters and wallets they moved, the daily rollups (usage, wallet burn),
    the audit rows and, last and only when there are any, the call's outbox rows in one
    statement."""
    conn = db.session.connection()
    if not pending:
        outbox.emit_many(conn, events)
        return
    rows = [p.event for p in pending]
    copy = use_copy(conn, len(rows))
    if copy or (len(rows) > 1 and conn.dialect.name == "sqlite"):
        for row, event_pk in zip(rows, _take_event_ids(conn, len(rows), copy), strict=True):
            row["id"] = event_pk
        bulk_insert(conn, _event_table, rows)
    else:
        for row, event_pk in zip(
            rows, conn.execute(_INSERT_EVENTS_RETURNING, rows).scalars(), strict=True
        ):
            row["id"] = event_pk
    # Expiries booked before the decisions come first: the ledger's running balance follows ids.
    ledger_rows = list(state.expiries)
    allocations: list[dict[str, int]] = []
    for p in pending:
        if p.ledger is not None:
            p.ledger["usage_event_id"] = p.event["id"]
            ledger_rows.append(p.ledger)
            allocations.extend(
                {"event": p.event["id"], "gid": gid, "amount": amount}
                for gid, amount in p.allocations
            )
    # The writes below return nothing: on PostgreSQL without COPY (which pipeline mode cannot
    # carry) they go out in one round trip instead of one each. The ledger rows may reach COPY's
    # size with fewer events: the expiries booked before the decisions come with them.
    with pipelined(conn, enabled=not copy and not use_copy(conn, len(ledger_rows))):
        bulk_insert(conn, _ledger_table, ledger_rows)
        if allocations:
            conn.execute(_INSERT_ALLOCATIONS, allocations)
        _write_grants(conn, state)
        _write_counters(conn, state)
        _write_wallets(conn, state)
        add_to_daily(conn, rows)
        # The wallets' daily burn (runway), summed per (wallet, day): one statement per call.
        burn.add(
            conn,
            (
                (
                    p.ledger["wallet_id"],
                    burn.day_of(p.ledger["created_at"]),
                    -p.ledger["amount_micros"],
                )
                for p in pending
                if p.ledger is not None
            ),
        )
        rollup.add(conn, state.rollup_rows(pending))
        bulk_insert(conn, _audit_table, _audit_rows(actor, pending))
        outbox.emit_many(conn, events)


def _take_event_ids(conn: Connection, n: int, copy: bool) -> list[int]:
    if copy:
        return sorted(conn.execute(_NEXT_EVENT_IDS, {"n": n}).scalars())
    # SQLite cannot return the ids of a multi-row insert in order, so SQLAlchemy would insert
    # row by row. The transaction holds the write lock (BEGIN IMMEDIATE), so the next ids are
    # ours to take: one plain executemany instead of one statement per event.
    last: int = conn.execute(_LAST_EVENT_ID).scalar_one()
    return list(range(last + 1, last + 1 + n))


def _write_counters(conn: Connection, state: State) -> None:
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


def _write_grants(conn: Connection, state: State) -> None:
    if state.expired_grants:
        conn.execute(_EXPIRE_GRANT, state.expired_grants)
    booked = {row["gid"] for row in state.expired_grants}
    moved = sorted(gid for gid in state.dirty_grants if gid not in booked)
    if moved:
        conn.execute(
            _UPDATE_GRANT,
            [{"gid": gid, "left": state.dirty_grants[gid].remaining_micros} for gid in moved],
        )


def _write_wallets(conn: Connection, state: State) -> None:
    if state.dirty_wallets:
        now = utcnow()
        conn.execute(
            _UPDATE_WALLET,
            [
                {"wid": wid, "bal": state.dirty_wallets[wid].balance_micros, "now": now}
                for wid in sorted(state.dirty_wallets)
            ],
        )


def _audit_rows(actor: Actor, pending: list[Pending]) -> list[dict[str, Any]]:
    """One audit row per customer per call: the event itself, or the list of a batch's events
    (each event row also keeps its actor and time)."""
    by_customer: dict[str, list[tuple[str, str, str, str | None]]] = {}
    for p in pending:
        by_customer.setdefault(p.customer_key, []).append(p.audit)
    now = utcnow()
    rows = []
    for customer_key, events in by_customer.items():
        if len(events) == 1:
            ((event_id, feature_key, amount, reason),) = events
            target = f"event:{event_id}"
            details: dict[str, Any] = {"feature": feature_key, "amount": amount}
            if reason:
                details["reason"] = reason
        else:
            target = f"events:{len(events)}"
            # [event_id, feature, amount], and the reason when one was given
            details = {"events": [list(e if e[3] else e[:3]) for e in events]}
        rows.append(audit_row(actor, "usage.recorded", customer_key, target, details, now))
    return rows
