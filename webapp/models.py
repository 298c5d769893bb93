"""Typed models. No queries, no commits, no url_for: the services do that.

Credits and quantities are ``*_micros`` integers (millionths). Times are stored as naive UTC and
returned as aware UTC datetimes.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Mapped, mapped_column
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import GenericFunction

from .extensions import db

if TYPE_CHECKING:
    # What db.Model is at run time, typed: the declarative base (plus Flask-SQLAlchemy's helpers,
    # which the services do not use).
    from .extensions import Base as Model
else:
    Model = db.Model

# BIGINT primary keys on PostgreSQL; SQLite only autoincrements an INTEGER PRIMARY KEY.
BigId = BigInteger().with_variant(Integer, "sqlite")

ROLES = ("account_manager", "support", "finance", "admin")
FEATURE_TYPES = ("consumable", "persistent", "boolean")
RESET_PERIODS = ("never", "day", "week", "month", "year")
OVERAGE_POLICIES = ("block", "allow")
LEDGER_TYPES = ("topup", "usage", "adjustment", "expiry", "void", "correction")
TOPUP_KINDS = ("purchased", "granted")
GRANT_STATUSES = ("scheduled", "active", "depleted", "expired", "voided")
# Lower is spent first (domain.md, "Credit grants").
DEFAULT_PRIORITY = {"granted": 100, "purchased": 200}
CUSTOMER_STATUSES = ("active", "archived")
PLAN_STATUSES = ("active", "archived")
PLAN_CREDIT_PERIODS = ("month", "year")
# Where an effective entitlement's values come from (domain.md, "Plans"): set on the customer
# directly (no plan), the customer's plan, or the plan with a customer override on top.
ENTITLEMENT_SOURCES = ("customer", "plan", "override")


class ExactInt(TypeDecorator[int]):
    """An exact integer of any size as read back from an aggregate: NUMERIC on PostgreSQL
    (a Decimal), and on SQLite an integer or, past 64 bits, the decimal text of ExactSum."""

    impl = BigInteger
    cache_ok = True

    def process_result_value(self, value: Any, dialect: Any) -> int | None:
        if value is None:
            return None
        if isinstance(value, float):  # never: a float here would mean a lost digit
            raise TypeError("an exact sum came back as a float")
        return int(value)


class exact_sum(GenericFunction[int]):
    """SUM that never overflows and never rounds: PostgreSQL's sum(bigint) is NUMERIC already;
    SQLite's sum() raises "integer overflow" past 2^63, so there it is ExactSum (below), an
    aggregate and window function registered on every SQLite connection (db_setup)."""

    type = ExactInt()
    name = "exact_sum"
    inherit_cache = True


@compiles(exact_sum, "postgresql")
def _exact_sum_postgresql(element: exact_sum, compiler: SQLCompiler, **kw: Any) -> str:
    return f"sum({compiler.process(element.clauses, **kw)})"


class ExactSum:
    """SQLite aggregate / window function: the exact sum of integers (Python ints), returned as
    an integer while it fits 64 bits and as decimal text beyond (ExactInt reads both)."""

    def __init__(self) -> None:
        self.total = 0
        self.seen = False

    def step(self, value: int | None) -> None:
        if value is not None:
            self.total += int(value)
            self.seen = True

    def inverse(self, value: int | None) -> None:
        if value is not None:
            self.total -= int(value)

    def value(self) -> int | str | None:
        if not self.seen:
            return None
        return self.total if -(2**63) <= self.total < 2**63 else str(self.total)

    finalize = value


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC in Python, naive UTC in the database (the same on SQLite and PG)."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC)


def _system_now() -> datetime:
    return datetime.now(UTC)


_clock: Callable[[], datetime] = _system_now


def utcnow() -> datetime:
    """Now, in UTC: every service reads time here, so that tests can move it (set_clock)."""
    return _clock()


def set_clock(clock: Callable[[], datetime] | None) -> None:
    """Replace the clock (tests); None restores the system clock."""
    global _clock
    _clock = clock or _system_now


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class User(Model):
    __tablename__ = "users"
    __table_args__ = (CheckConstraint(_in("role", ROLES), name="role"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    email: Mapped[str] = mapped_column(String(254), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(32))
    active: Mapped[bool] = mapped_column(default=True)
    # Bumped on logout-everywhere, password change and role change: old sessions stop working.
    session_version: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ApiKey(Model):
    __tablename__ = "api_keys"
    __table_args__ = (CheckConstraint(_in("role", ROLES), name="role"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    prefix: Mapped[str] = mapped_column(String(16), index=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(32), default="admin")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    created_by: Mapped[str] = mapped_column(String(300))
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class Customer(Model):
    __tablename__ = "customers"
    __table_args__ = (CheckConstraint(_in("status", CUSTOMER_STATUSES), name="status"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    key: Mapped[str] = mapped_column(String(200), unique=True)
    name: Mapped[str] = mapped_column(String(300))
    email: Mapped[str | None] = mapped_column(String(254), index=True)
    status: Mapped[str] = mapped_column(String(16), default="active")
    extra: Mapped[dict[str, Any]] = mapped_column("metadata", JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Plans (domain.md, "Plans"): the current plan, since when, the plan revision its effective
    # entitlements were computed from, and a scheduled change (pending_plan_at set; a None
    # pending_plan_id then means "no plan").
    plan_id: Mapped[int | None] = mapped_column(ForeignKey("plans.id"), index=True)
    plan_assigned_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    plan_revision: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    pending_plan_id: Mapped[int | None] = mapped_column(ForeignKey("plans.id"))
    pending_plan_at: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)


class Feature(Model):
    __tablename__ = "features"
    __table_args__ = (CheckConstraint(_in("type", FEATURE_TYPES), name="type"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    key: Mapped[str] = mapped_column(String(100), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    type: Mapped[str] = mapped_column(String(16))
    event_name: Mapped[str] = mapped_column(String(200), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    archived_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class CreditSystem(Model):
    __tablename__ = "credit_systems"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    key: Mapped[str] = mapped_column(String(100), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    unit_singular: Mapped[str] = mapped_column(String(50), default="credit")
    unit_plural: Mapped[str] = mapped_column(String(50), default="credits")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    archived_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # The low-balance threshold of its wallets that set none of their own (None: no default).
    low_balance_threshold_micros: Mapped[int | None] = mapped_column(BigInteger)


class CreditCost(Model):
    """A feature is credit-based when it has one: 1 unit of the feature costs ``cost_micros``."""

    __tablename__ = "credit_costs"
    __table_args__ = (CheckConstraint("cost_micros > 0", name="cost_positive"),)

    feature_id: Mapped[int] = mapped_column(ForeignKey("features.id"), primary_key=True)
    credit_system_id: Mapped[int] = mapped_column(ForeignKey("credit_systems.id"), index=True)
    cost_micros: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Entitlement(Model):
    __tablename__ = "entitlements"
    __table_args__ = (
        UniqueConstraint("customer_id", "feature_id"),
        CheckConstraint(_in("reset_period", RESET_PERIODS), name="reset_period"),
        CheckConstraint(_in("overage", OVERAGE_POLICIES), name="overage"),
        CheckConstraint("allowance_micros IS NULL OR allowance_micros >= 0", name="allowance"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"))
    feature_id: Mapped[int] = mapped_column(ForeignKey("features.id"), index=True)
    allowance_micros: Mapped[int | None] = mapped_column(BigInteger)  # None = unlimited
    reset_period: Mapped[str] = mapped_column(String(8), default="never")
    overage: Mapped[str] = mapped_column(String(8), default="block")
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Plans: where the values come from (ENTITLEMENT_SOURCES) and, for `override`, which fields
    # the override sets (comma-separated, e.g. "allowance,overage"). The usage hot path reads
    # none of these.
    source: Mapped[str] = mapped_column(String(8), default="customer", server_default="customer")
    overridden: Mapped[str | None] = mapped_column(String(40))
    # A reset period change waiting for the current period's end (it had usage already).
    pending_reset_period: Mapped[str | None] = mapped_column(String(8))
    pending_reset_at: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)


class Wallet(Model):
    __tablename__ = "wallets"
    __table_args__ = (
        UniqueConstraint("customer_id", "credit_system_id"),
        CheckConstraint("balance_micros >= 0", name="balance_not_negative"),
        Index("ix_wallets_balance", "balance_micros"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"))
    credit_system_id: Mapped[int] = mapped_column(ForeignKey("credit_systems.id"), index=True)
    balance_micros: Mapped[int] = mapped_column(BigInteger, default=0)
    low_balance_threshold_micros: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Moves with every change of the balance or the grants: RecordUsage compares the version it
    # locked with the one its statement's snapshot saw, to know its grants are current.
    version: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")


class UsageEvent(Model):
    """One immutable RecordUsage. The ``*_after`` columns keep the first result for replays."""

    __tablename__ = "usage_events"
    __table_args__ = (
        UniqueConstraint("customer_id", "event_id"),
        CheckConstraint("amount_micros <> 0", name="amount_not_zero"),
        Index("ix_usage_events_customer_ts", "customer_id", "timestamp"),
        Index("ix_usage_events_counter", "customer_id", "feature_id", "period_start"),
        Index("ix_usage_events_timestamp", "timestamp"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"))
    feature_id: Mapped[int] = mapped_column(ForeignKey("features.id"))
    event_id: Mapped[str] = mapped_column(String(200))
    amount_micros: Mapped[int] = mapped_column(BigInteger)
    timestamp: Mapped[datetime] = mapped_column(UTCDateTime)
    period_start: Mapped[datetime] = mapped_column(UTCDateTime)
    extra: Mapped[dict[str, Any] | None] = mapped_column("metadata", JSON(none_as_null=True))
    credits_micros: Mapped[int | None] = mapped_column(BigInteger)
    overage_micros: Mapped[int] = mapped_column(BigInteger, default=0)
    used_after_micros: Mapped[int] = mapped_column(BigInteger)
    allowance_micros: Mapped[int | None] = mapped_column(BigInteger)
    balance_after_micros: Mapped[int | None] = mapped_column(BigInteger)
    fingerprint: Mapped[str] = mapped_column(String(64))
    actor: Mapped[str] = mapped_column(String(300))
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


# Rows per feature and day in usage_daily: concurrent writers for different customers rarely wait
# on the same row, and the dashboard still reads a constant number of rows.
DAILY_SHARDS = 64
# A usage_daily row sums the usage of any number of customers, more than 64 bits can hold: it keeps
# amount_high * DAILY_BASE + amount_micros, with 0 <= amount_micros < DAILY_BASE (domain.md).
DAILY_BASE = 2**40


class UsageDaily(Model):
    """Usage per feature per UTC day, summed over all customers and split by customer_id %
    DAILY_SHARDS. Written with the events (same transaction), so that the dashboard's chart
    reads a number of rows that grows with features and days, never with events."""

    __tablename__ = "usage_daily"

    feature_id: Mapped[int] = mapped_column(ForeignKey("features.id"), primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    shard: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    amount_micros: Mapped[int] = mapped_column(BigInteger, default=0)  # the low part
    amount_high: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")

    @property
    def total_micros(self) -> int:
        return self.amount_high * DAILY_BASE + self.amount_micros


class UsageCounter(Model):
    """Used units of one feature by one customer in one reset period (period_start of the
    entitlement's reset period; 1970-01-01 for ``never`` and for persistent features)."""

    __tablename__ = "usage_counters"

    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"), primary_key=True)
    feature_id: Mapped[int] = mapped_column(ForeignKey("features.id"), primary_key=True)
    period_start: Mapped[datetime] = mapped_column(UTCDateTime, primary_key=True)
    used_micros: Mapped[int] = mapped_column(BigInteger, default=0)


class LedgerEntry(Model):
    """An immutable wallet transaction; the wallet balance is the sum of these."""

    __tablename__ = "ledger_entries"
    __table_args__ = (
        CheckConstraint(_in("type", LEDGER_TYPES), name="type"),
        CheckConstraint("balance_after_micros >= 0", name="balance_after_not_negative"),
        CheckConstraint("amount_micros <> 0", name="amount_not_zero"),
        UniqueConstraint("usage_event_id"),
        UniqueConstraint("customer_id", "idempotency_key"),
        Index("ix_ledger_entries_wallet", "wallet_id", "id"),
        Index("ix_ledger_entries_customer", "customer_id", "id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    wallet_id: Mapped[int] = mapped_column(ForeignKey("wallets.id"))
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"))
    type: Mapped[str] = mapped_column(String(16))
    kind: Mapped[str | None] = mapped_column(String(16))  # topups: purchased / granted
    amount_micros: Mapped[int] = mapped_column(BigInteger)
    balance_after_micros: Mapped[int] = mapped_column(BigInteger)
    usage_event_id: Mapped[int | None] = mapped_column(ForeignKey("usage_events.id"))
    # topup, positive adjustment, expiry, void: the one grant the entry created or emptied.
    grant_id: Mapped[int | None] = mapped_column(ForeignKey("credit_grants.id"), index=True)
    reference: Mapped[str | None] = mapped_column(String(200))
    note: Mapped[str | None] = mapped_column(Text)
    idempotency_key: Mapped[str | None] = mapped_column(String(200))
    fingerprint: Mapped[str | None] = mapped_column(String(64))
    actor: Mapped[str] = mapped_column(String(300))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class CreditGrant(Model):
    """One lot of credits in a wallet (domain.md, "Credit grants"): created by a topup or a
    positive adjustment, spent by allocations in spending order, emptied by expiry or void.
    ``remaining_micros`` = amount - allocations - expired - voided; the wallet balance is the sum
    of its grants' remaining. Status is derived (status_at)."""

    __tablename__ = "credit_grants"
    __table_args__ = (
        CheckConstraint(_in("kind", TOPUP_KINDS), name="kind"),
        CheckConstraint("amount_micros > 0", name="amount_positive"),
        CheckConstraint(
            "remaining_micros >= 0 AND remaining_micros <= amount_micros", name="remaining"
        ),
        CheckConstraint("expires_at IS NULL OR expires_at > effective_at", name="expiry_after"),
        CheckConstraint("expired_micros >= 0 AND voided_micros >= 0", name="removed"),
        Index("ix_credit_grants_wallet", "wallet_id", "id"),
        Index("ix_credit_grants_customer", "customer_id", "id"),
        Index("ix_credit_grants_expiry", "expires_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    wallet_id: Mapped[int] = mapped_column(ForeignKey("wallets.id"))
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"))
    kind: Mapped[str] = mapped_column(String(16))
    amount_micros: Mapped[int] = mapped_column(BigInteger)
    remaining_micros: Mapped[int] = mapped_column(BigInteger)
    priority: Mapped[int] = mapped_column(Integer)
    effective_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    reference: Mapped[str | None] = mapped_column(String(200))
    note: Mapped[str | None] = mapped_column(Text)
    # What one credit of a purchased grant cost: exact decimal text (never a float), ISO 4217.
    unit_price: Mapped[str | None] = mapped_column(String(40))
    currency: Mapped[str | None] = mapped_column(String(3))
    actor: Mapped[str] = mapped_column(String(300))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Booked removals: the time and the amount taken out by its expiry entry / its void entry.
    expired_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    expired_micros: Mapped[int] = mapped_column(BigInteger, default=0)
    voided_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    voided_micros: Mapped[int] = mapped_column(BigInteger, default=0)

    def status_at(self, now: datetime) -> str:
        return grant_status(
            now,
            remaining=self.remaining_micros,
            effective_at=self.effective_at,
            expires_at=self.expires_at,
            voided=self.voided_at is not None,
            expired_micros=self.expired_micros,
        )


def grant_status(
    now: datetime,
    *,
    remaining: int,
    effective_at: datetime,
    expires_at: datetime | None,
    voided: bool,
    expired_micros: int,
) -> str:
    """scheduled / active / depleted / expired / voided (domain.md). Expired from the instant of
    expiry, booked or not; depleted when spent to zero before then."""
    if voided:
        return "voided"
    if expired_micros > 0 or (remaining > 0 and expires_at is not None and expires_at <= now):
        return "expired"
    if remaining == 0:
        return "depleted"
    if effective_at > now:
        return "scheduled"
    return "active"


class CreditAllocation(Model):
    """The part of one deduction (a usage or negative adjustment ledger entry) paid by one grant.
    The allocations of an entry sum to minus its amount exactly. A `correction` refund returns
    credits to the grants the event drew from: its allocations are negative."""

    __tablename__ = "credit_allocations"
    __table_args__ = (
        CheckConstraint("amount_micros <> 0", name="amount_not_zero"),
        Index("ix_credit_allocations_grant", "grant_id", "id"),
        Index("ix_credit_allocations_entry", "ledger_entry_id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    ledger_entry_id: Mapped[int] = mapped_column(ForeignKey("ledger_entries.id"))
    grant_id: Mapped[int] = mapped_column(ForeignKey("credit_grants.id"))
    amount_micros: Mapped[int] = mapped_column(BigInteger)


# The monthly credit rollup (domain.md, "Finance roll-forward"): what the ledger moved per credit
# system, UTC month, category and grant terms. Categories as they enter the identity
#   opening + issued - consumed - expired - voided + adjusted + corrected = closing
# (issued, consumed, expired, voided are >= 0; adjusted and corrected are signed).
ROLLUP_CATEGORIES = ("issued", "consumed", "expired", "voided", "adjusted", "corrected")
# Rows per key and month: customer_id % CREDIT_SHARDS, so that writers for different customers
# rarely wait on the same row (as usage_daily).
CREDIT_SHARDS = 16
# Like usage_daily, a row holds amount_high * CREDIT_BASE + amount_micros, 0 <= amount_micros <
# CREDIT_BASE: any sum of any number of customers' entries, exactly.
CREDIT_BASE = 2**40


class CreditMonthly(Model):
    """The ledger summed per credit system, UTC month (of the entry's booking), category, grant
    kind, currency and unit price, split by shard. Written in the transaction of every ledger
    write (services/credits/rollup.py), so that the roll-forward reads a number of rows that grows
    with months, never with events. ``currency`` and ``unit_price`` are '' when the grant has none
    (a NULL would never match in the upsert's unique key); reads give None."""

    __tablename__ = "credit_monthly"
    __table_args__ = (
        CheckConstraint(_in("category", ROLLUP_CATEGORIES), name="category"),
        CheckConstraint(_in("kind", TOPUP_KINDS), name="kind"),
    )

    credit_system_id: Mapped[int] = mapped_column(ForeignKey("credit_systems.id"), primary_key=True)
    month: Mapped[date] = mapped_column(Date, primary_key=True)  # its first day
    category: Mapped[str] = mapped_column(String(16), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16), primary_key=True)
    currency: Mapped[str] = mapped_column(String(3), primary_key=True)
    unit_price: Mapped[str] = mapped_column(String(40), primary_key=True)
    shard: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    amount_micros: Mapped[int] = mapped_column(BigInteger, default=0)  # the low part
    amount_high: Mapped[int] = mapped_column(BigInteger, default=0)

    @property
    def total_micros(self) -> int:
        return self.amount_high * CREDIT_BASE + self.amount_micros


class AuditLog(Model):
    __tablename__ = "audit_log"
    __table_args__ = (
        Index("ix_audit_log_customer", "customer_key", "id"),
        Index("ix_audit_log_actor", "actor", "id"),
        Index("ix_audit_log_action", "action", "id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    actor: Mapped[str] = mapped_column(String(300))
    action: Mapped[str] = mapped_column(String(64))
    customer_key: Mapped[str | None] = mapped_column(String(200))
    target: Mapped[str | None] = mapped_column(String(300))
    details: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True))


class OutboxEvent(Model):
    """An event (an alert, a change) written in the same transaction as the write that caused it:
    a rollback leaves none. The worker fans each one out to the webhook endpoints that want it;
    `GET /api/v1/events` lists them as a log. `dedupe_key`, when set, is unique: the second
    writer of the same crossing (or of the same hourly `usage.blocked`) writes nothing."""

    __tablename__ = "outbox_events"
    __table_args__ = (
        UniqueConstraint("dedupe_key", name="uq_outbox_events_dedupe_key"),
        Index("ix_outbox_events_type", "type", "id"),
        Index("ix_outbox_events_customer", "customer_key", "id"),
        Index("ix_outbox_events_dispatched", "dispatched_at", "id"),
        Index("ix_outbox_events_log", "tx_order", "id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    type: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    customer_key: Mapped[str | None] = mapped_column(String(200))
    data: Mapped[dict[str, Any]] = mapped_column(JSON)
    dedupe_key: Mapped[str | None] = mapped_column(String(300))
    # Set by the worker once deliveries for every endpoint that wants the event exist.
    dispatched_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # The order of the event log (`GET /api/v1/events`): on PostgreSQL the id of the transaction
    # that wrote the row (pg_current_xact_id), so that a poller can wait for transactions still
    # in flight (docs/api.md, "Events"); on SQLite, whose writers are serialized, 0 (id order).
    tx_order: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")


class WalletBurnDaily(Model):
    """Credits a wallet consumed per UTC day (the day of the deduction's ledger entry): usage
    charges and negative adjustments add, a `correction` entry subtracts its amount (a refund
    gives back, an extra charge adds). Written in the same transaction as the ledger entries
    (``credits.burn.add``), so that a wallet's burn rate reads at most 30 rows, never events."""

    __tablename__ = "wallet_burn_daily"

    wallet_id: Mapped[int] = mapped_column(ForeignKey("wallets.id"), primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    # consumed_high · DAILY_BASE + consumed_micros, the low part in [0, DAILY_BASE), as in
    # usage_daily: no day's consumption overflows 64 bits (a refund makes the high part negative).
    consumed_micros: Mapped[int] = mapped_column(BigInteger, default=0)  # the low part
    consumed_high: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")

    @property
    def total_micros(self) -> int:
        return self.consumed_high * DAILY_BASE + self.consumed_micros


DELIVERY_STATUSES = ("pending", "delivered", "failed")
ATTEMPT_OUTCOMES = ("in_flight", "delivered", "failed", "lease_expired")


class WebhookEndpoint(Model):
    """Where the worker sends events. `secret` (``whsec_...``) is stored as is: signing needs
    it (a hash could only verify). During a rotation the old one stays in `previous_secret`
    and signs too until `previous_secret_until` (24 h), so receivers can switch without a gap.
    `event_types` null: every type."""

    __tablename__ = "webhook_endpoints"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    url: Mapped[str] = mapped_column(String(2000))
    description: Mapped[str] = mapped_column(String(500), default="")
    event_types: Mapped[list[str] | None] = mapped_column(JSON)
    enabled: Mapped[bool] = mapped_column(default=True)
    secret: Mapped[str] = mapped_column(String(100))
    previous_secret: Mapped[str | None] = mapped_column(String(100))
    previous_secret_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class WebhookDelivery(Model):
    """One event owed to one endpoint. `pending` until a 2xx (`delivered`) or until
    `give_up_at` passes (`failed`). A worker claims it by setting `lease_until` (and taking
    attempt number `attempts`); a worker killed mid-delivery leaves the lease to expire and the
    delivery to be claimed again."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        CheckConstraint(_in("status", DELIVERY_STATUSES), name="status"),
        UniqueConstraint("endpoint_id", "event_id", name="uq_webhook_deliveries_endpoint_id"),
        Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),
        Index("ix_webhook_deliveries_event", "event_id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    endpoint_id: Mapped[int] = mapped_column(ForeignKey("webhook_endpoints.id"))
    event_id: Mapped[int] = mapped_column(ForeignKey("outbox_events.id"))
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime)
    give_up_at: Mapped[datetime] = mapped_column(UTCDateTime)
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    leased_by: Mapped[str | None] = mapped_column(String(100))
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_status_code: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(String(500))


class WebhookAttempt(Model):
    """One try of a delivery, written when the worker claims it (outcome `in_flight`) and
    completed after the HTTP call; `lease_expired` when its worker died before finishing.
    Unique per (delivery, number): no attempt is recorded twice."""

    __tablename__ = "webhook_attempts"
    __table_args__ = (
        UniqueConstraint("delivery_id", "number", name="uq_webhook_attempts_delivery_id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    delivery_id: Mapped[int] = mapped_column(ForeignKey("webhook_deliveries.id"))
    number: Mapped[int] = mapped_column(Integer)
    worker: Mapped[str] = mapped_column(String(100))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    outcome: Mapped[str] = mapped_column(String(16), default="in_flight")
    status_code: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(String(500))
    response_body: Mapped[str | None] = mapped_column(Text)  # the first KiB
    duration_ms: Mapped[int | None] = mapped_column(Integer)


class WorkerJob(Model):
    """A periodic job of `flask worker` (webapp/services/worker.py JOBS): whichever worker
    claims the row when it is due runs it, so it runs once per interval however many workers."""

    __tablename__ = "worker_jobs"

    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    next_run_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(String(500))


class Plan(Model):
    """A bundle of entitlements and included credits that customers are put on (domain.md,
    "Plans"). ``revision`` moves with every edit; a customer whose ``plan_revision`` is behind
    is still to be brought up to date by the edit in progress (or `flask plans tick`)."""

    __tablename__ = "plans"
    __table_args__ = (CheckConstraint(_in("status", PLAN_STATUSES), name="status"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    key: Mapped[str] = mapped_column(String(100), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16), default="active")
    prorate_included_credits: Mapped[bool] = mapped_column(default=False)
    revision: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class PlanEntitlement(Model):
    __tablename__ = "plan_entitlements"
    __table_args__ = (
        UniqueConstraint("plan_id", "feature_id"),
        CheckConstraint(_in("reset_period", RESET_PERIODS), name="reset_period"),
        CheckConstraint(_in("overage", OVERAGE_POLICIES), name="overage"),
        CheckConstraint("allowance_micros IS NULL OR allowance_micros >= 0", name="allowance"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    plan_id: Mapped[int] = mapped_column(ForeignKey("plans.id"))
    feature_id: Mapped[int] = mapped_column(ForeignKey("features.id"), index=True)
    allowance_micros: Mapped[int | None] = mapped_column(BigInteger)  # None = unlimited
    reset_period: Mapped[str] = mapped_column(String(8), default="never")
    overage: Mapped[str] = mapped_column(String(8), default="block")


class PlanCredit(Model):
    """Included credits: ``amount_micros`` of a credit system each period (month or year),
    issued as a `granted` grant expiring at the period's end."""

    __tablename__ = "plan_credits"
    __table_args__ = (
        UniqueConstraint("plan_id", "credit_system_id"),
        CheckConstraint(_in("period", PLAN_CREDIT_PERIODS), name="period"),
        CheckConstraint("amount_micros > 0", name="amount_positive"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    plan_id: Mapped[int] = mapped_column(ForeignKey("plans.id"))
    credit_system_id: Mapped[int] = mapped_column(ForeignKey("credit_systems.id"), index=True)
    amount_micros: Mapped[int] = mapped_column(BigInteger)
    period: Mapped[str] = mapped_column(String(8), default="month")


class CustomerOverride(Model):
    """A customer's own values on top of its plan for one feature: each field None = the plan's
    (``allowance_set`` says whether the allowance is overridden, since None there = unlimited).
    A feature the plan lacks needs all three (an extra feature)."""

    __tablename__ = "customer_overrides"
    __table_args__ = (
        UniqueConstraint("customer_id", "feature_id"),
        CheckConstraint(
            "reset_period IS NULL OR " + _in("reset_period", RESET_PERIODS), name="reset_period"
        ),
        CheckConstraint("overage IS NULL OR " + _in("overage", OVERAGE_POLICIES), name="overage"),
        CheckConstraint("allowance_micros IS NULL OR allowance_micros >= 0", name="allowance"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"))
    feature_id: Mapped[int] = mapped_column(ForeignKey("features.id"), index=True)
    allowance_set: Mapped[bool] = mapped_column(default=False)
    allowance_micros: Mapped[int | None] = mapped_column(BigInteger)
    reset_period: Mapped[str | None] = mapped_column(String(8))
    overage: Mapped[str | None] = mapped_column(String(8))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class PlanCreditIssuance(Model):
    """One issue of a plan's included credits: at most one per (customer, plan, credit system,
    period start), whatever the number of workers or runs (the unique key decides)."""

    __tablename__ = "plan_credit_issuances"
    __table_args__ = (
        UniqueConstraint(
            "customer_id",
            "plan_id",
            "credit_system_id",
            "period_start",
            name="uq_plan_credit_issuances_key",
        ),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"))
    plan_id: Mapped[int] = mapped_column(ForeignKey("plans.id"), index=True)
    credit_system_id: Mapped[int] = mapped_column(ForeignKey("credit_systems.id"))
    period_start: Mapped[datetime] = mapped_column(UTCDateTime)
    grant_id: Mapped[int] = mapped_column(ForeignKey("credit_grants.id"), index=True)
    amount_micros: Mapped[int] = mapped_column(BigInteger)
    issued_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class UsageCorrection(Model):
    """One correction of a usage event (domain.md, "Usage corrections"): the event row stays as
    recorded; its effective amount is its amount plus the deltas of its corrections. The credits
    it moved are in its `correction` ledger entry (none when no credits moved)."""

    __tablename__ = "usage_corrections"
    __table_args__ = (
        CheckConstraint("delta_micros <> 0", name="delta_not_zero"),
        UniqueConstraint("customer_id", "idempotency_key"),
        Index("ix_usage_corrections_event", "usage_event_id", "id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    usage_event_id: Mapped[int] = mapped_column(ForeignKey("usage_events.id"))
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"))
    delta_micros: Mapped[int] = mapped_column(BigInteger)
    effective_after_micros: Mapped[int] = mapped_column(BigInteger)
    # Signed credits the wallet got back (+) or paid (-); None: the event charges no credits.
    credits_micros: Mapped[int | None] = mapped_column(BigInteger)
    ledger_entry_id: Mapped[int | None] = mapped_column(ForeignKey("ledger_entries.id"))
    used_after_micros: Mapped[int] = mapped_column(BigInteger)  # the period's counter after it
    reason: Mapped[str] = mapped_column(Text)
    idempotency_key: Mapped[str | None] = mapped_column(String(200))
    fingerprint: Mapped[str] = mapped_column(String(64))
    actor: Mapped[str] = mapped_column(String(300))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
