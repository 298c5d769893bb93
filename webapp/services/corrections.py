"""Usage corrections (domain.md, "Usage corrections"): a support agent or admin gives the actual
amount of a recorded usage event. The event row stays as it was recorded; a `usage_corrections`
row keeps the delta, and the event's effective amount is its amount plus its corrections' deltas.

- The counter of the event's own period and usage_daily (the event's day) move by the delta.
- Credits follow the event's own cost, never today's credit cost: at effective amount E an event
  of amount A that was charged C credits costs ``event_credits(A, C, E)`` = C x E / A rounded half
  up to a micro (so E = A costs exactly C and E = 0 costs 0). Each correction books the difference
  of that figure before and after it, so the event's credit entries always sum to exactly
  ``-event_credits(A, C, effective)``.
- A refund (fewer credits) is one `correction` entry of a positive amount whose allocations are
  negative: it goes back to the grants the event drew from, in reverse spending order, never more
  than the event drew from each. A part that returns to a grant that has expired (expires_at <=
  now) or was voided is booked at once as an `expiry` / `void` entry of that grant.
- An extra charge is judged like new usage at the event's timestamp (entitlement, the allowance
  of the event's period, grants eligible then) and allocated like a deduction.

Every correction's ledger entries are written by ``_write_correction_entries``."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from sqlalchemy import select

from ..errors import (
    DomainError,
    FeatureNotRecordable,
    IdempotencyConflict,
    InsufficientCredits,
    InvalidAmount,
    NotFound,
    ValidationError,
)
from ..extensions import db
from ..models import (
    CreditAllocation,
    CreditGrant,
    CreditSystem,
    Customer,
    Entitlement,
    Feature,
    LedgerEntry,
    UsageCorrection,
    UsageCounter,
    UsageEvent,
    Wallet,
    utcnow,
)
from . import alerts, audit, credits, outbox, validation
from .actors import RECORD_USAGE, VIEW, Actor, require
from .catalog import entitlement_row, get_customer
from .credits import burn, rollup
from .credits.rules import GrantRef, allocate, eligible_balance, spending_key
from .money import MICROS, format_micros, parse_micros
from .tx import transactional
from .usage.rules import CustomerRef, EntitlementRef, FeatureRef, decide
from .usage.store import add_to_daily

MAX_REASON = 2000


def event_credits(amount_micros: int, credits_micros: int | None, effective_micros: int) -> int:
    """The credits an event of ``amount_micros`` charged ``credits_micros`` costs at an effective
    amount: exactly proportional to what it was charged, rounded half up to a micro. Integer
    math only. Events of negative amounts (seats given back) never cost credits."""
    if not credits_micros or amount_micros <= 0 or effective_micros <= 0:
        return 0
    return (2 * credits_micros * effective_micros + amount_micros) // (2 * amount_micros)


@dataclass(frozen=True)
class CreditPart:
    """One grant's part of a correction's credits. ``amount_micros`` is signed as the
    allocation: negative returns credits to the grant, positive takes them. ``fate`` says where
    returned credits end: `returned` (spendable again), `expired` or `voided` (booked at once)."""

    grant_id: int
    amount_micros: int
    fate: str  # returned / expired / voided / charged


@dataclass(frozen=True)
class CorrectionEffect:
    """What a correction does (or, in a preview, would do)."""

    event_id: str
    customer_key: str
    feature_key: str
    feature_type: str
    timestamp: datetime
    original_micros: int
    effective_before_micros: int
    effective_after_micros: int
    delta_micros: int
    # Signed credits the wallet gets back (+) or pays (-); None: the event charges no credits.
    credits_micros: int | None
    credit_system: str | None
    used_after_micros: int  # the counter of the event's period after the correction
    balance_after_micros: int | None  # the wallet's ledger balance after it
    parts: list[CreditPart] = field(default_factory=list)
    # The event's credits at its effective amount after (None: it charges no credits).
    event_credits_micros: int | None = None

    @property
    def refunded_micros(self) -> int:
        return max(self.credits_micros or 0, 0)

    @property
    def deducted_micros(self) -> int:
        return max(-(self.credits_micros or 0), 0)


@dataclass(frozen=True)
class CorrectionResult:
    replayed: bool
    corrected: bool  # False: the event already had this amount; nothing was written
    id: int | None
    effect: CorrectionEffect
    reason: str
    actor: str
    created_at: datetime


@dataclass
class _Target:
    """The event being corrected, with everything the rules look at."""

    customer: Customer
    event: UsageEvent
    feature: Feature
    effective: int
    usage_entry: LedgerEntry | None  # the event's `usage` entry (None: no credits charged)
    credit_system: str | None


def _fingerprint(*parts: object) -> str:
    return hashlib.sha256(validation.canonical_json(list(parts)).encode()).hexdigest()


def _event_id(value: object) -> str:
    return validation.key(value, field="event_id", pattern=validation.EVENT_ID_RE)


def _find(customer: Customer, event_id: str) -> _Target:
    found = db.session.execute(
        select(UsageEvent, Feature)
        .join(Feature, Feature.id == UsageEvent.feature_id)
        .where(UsageEvent.customer_id == customer.id, UsageEvent.event_id == event_id)
    ).first()
    if found is None:
        raise NotFound(
            f"Customer {customer.key!r} has no usage event {event_id!r}.", field="event_id"
        )
    event, feature = found
    deltas = db.session.scalars(
        select(UsageCorrection.delta_micros).where(UsageCorrection.usage_event_id == event.id)
    ).all()
    # The event's wallet is its usage entry's: an event that charged nothing (not credit-based,
    # or a cost that rounded to zero) has none, and no correction of it moves credits.
    entry: LedgerEntry | None = None
    system: str | None = None
    row = db.session.execute(
        select(LedgerEntry, CreditSystem.key)
        .join(Wallet, Wallet.id == LedgerEntry.wallet_id)
        .join(CreditSystem, CreditSystem.id == Wallet.credit_system_id)
        .where(LedgerEntry.usage_event_id == event.id)
    ).first()
    if row is not None:
        entry, system = row
    return _Target(customer, event, feature, event.amount_micros + sum(deltas), entry, system)


def _actual(value: object, target: _Target) -> int:
    """The actual amount: a decimal of the feature's kind; 0 voids the event."""
    feature, event = target.feature, target.event
    if feature.type == "boolean":
        raise FeatureNotRecordable(
            f"Feature {feature.key!r} is boolean: it records no usage to correct.",
            field="feature_key",
        )
    actual = parse_micros(value, field="actual_amount", error=InvalidAmount)
    if feature.type == "persistent" and actual % MICROS:
        raise InvalidAmount(
            f"Feature {feature.key!r} is persistent: amounts are whole numbers.",
            field="actual_amount",
        )
    if feature.type == "consumable" and actual < 0:
        raise InvalidAmount(
            f"Feature {feature.key!r} is consumable: its usage is never negative (0 voids the "
            "event).",
            field="actual_amount",
        )
    if actual != 0 and (actual < 0) != (event.amount_micros < 0):
        raise InvalidAmount(
            "The actual amount keeps the sign of the event's amount "
            f"({format_micros(event.amount_micros)}), or is 0 to void it.",
            field="actual_amount",
        )
    return actual


def _counter(target: _Target, *, lock: bool) -> UsageCounter:
    stmt = select(UsageCounter).where(
        UsageCounter.customer_id == target.customer.id,
        UsageCounter.feature_id == target.feature.id,
        UsageCounter.period_start == target.event.period_start,
    )
    if lock:
        stmt = stmt.with_for_update().execution_options(populate_existing=True)
    counter = db.session.scalar(stmt)
    assert counter is not None  # recording the event made it
    return counter


def _entitlement(target: _Target, *, lock: bool) -> Entitlement | None:
    return entitlement_row(target.customer, target.feature, lock=lock)


def _judge_amount(target: _Target, used: int, delta: int, now: datetime) -> int:
    """The counter after the delta. More usage is judged like new usage at the event's time
    (entitlement, the allowance of its period); less may not take a count below zero."""
    customer, feature, event = target.customer, target.feature, target.event
    if customer.status != "active":
        raise ValidationError(f"Customer {customer.key!r} is archived.", field="customer_key")
    fref = FeatureRef(feature.id, feature.key, feature.type, feature.event_name)
    cref = CustomerRef(customer.id, customer.key, customer.status)
    if delta > 0 and feature.archived_at is not None:
        raise FeatureNotRecordable(
            f"Feature {feature.key!r} is archived: it records no new usage, so an event of it "
            "may be corrected down, never up.",
            field="actual_amount",
        )
    if delta > 0:
        ent = _entitlement(target, lock=False)  # a write locked it first (correct_usage)
        eref = (
            None
            if ent is None
            else EntitlementRef(ent.allowance_micros, ent.reset_period, ent.overage)
        )
        try:
            return decide(
                fref, cref, eref, used, delta, None, None, event.timestamp, now
            ).used_after
        except DomainError as exc:
            if exc.field == "amount":  # the field this request names
                exc.field = exc.details["field"] = "actual_amount"
            raise
    if used + delta < 0:
        raise InvalidAmount(
            f"Only {format_micros(used)} {feature.key} are in use; this correction would take "
            f"the count to {format_micros(used + delta)}.",
            field="actual_amount",
        )
    return used + delta


def _drawn(target: _Target) -> dict[int, int]:
    """What the event's credit entries (its usage entry and its corrections') net drew from
    each grant."""
    assert target.usage_entry is not None
    entry_ids = [target.usage_entry.id, *_correction_entry_ids(target.event.id)]
    drawn: dict[int, int] = {}
    for gid, amount in db.session.execute(
        select(CreditAllocation.grant_id, CreditAllocation.amount_micros).where(
            CreditAllocation.ledger_entry_id.in_(entry_ids)
        )
    ):
        drawn[gid] = drawn.get(gid, 0) + amount
    return drawn


def _correction_entry_ids(event_pk: int) -> list[int]:
    return [
        eid
        for eid in db.session.scalars(
            select(UsageCorrection.ledger_entry_id).where(
                UsageCorrection.usage_event_id == event_pk
            )
        )
        if eid is not None
    ]


def _fate(grant: CreditGrant, now: datetime) -> str:
    if grant.voided_at is not None:
        return "voided"
    if grant.expires_at is not None and grant.expires_at <= now:
        return "expired"
    return "returned"


def _refund_parts(
    grants: list[CreditGrant], drawn: dict[int, int], amount: int, now: datetime
) -> list[CreditPart]:
    """``amount`` back to the grants the event drew from, in reverse spending order."""
    parts: list[CreditPart] = []
    left = amount
    for grant in sorted(grants, key=spending_key, reverse=True):
        if left == 0:
            break
        back = min(left, drawn.get(grant.id, 0))
        if back > 0:
            parts.append(CreditPart(grant.id, -back, _fate(grant, now)))
            left -= back
    if left:
        raise AssertionError(f"refund: {left} micros more than the event drew")
    return parts


def _charge_refs(grants: list[CreditGrant], now: datetime) -> list[GrantRef]:
    """The grants as a deduction sees them once due expiries are booked."""
    return [
        GrantRef(g.id, g.kind, g.priority, g.effective_at, g.expires_at, g.remaining_micros)
        for g in grants
        if g.remaining_micros > 0 and (g.expires_at is None or g.expires_at > now)
    ]


def _insufficient(
    target: _Target, need: int, refs: list[GrantRef], now: datetime
) -> InsufficientCredits:
    at = target.event.timestamp
    available = eligible_balance(refs, at)
    return InsufficientCredits(
        f"This correction needs {format_micros(need)} more credits; the wallet has "
        f"{format_micros(available)} available at the event's time.",
        field="actual_amount",
        credits_required=format_micros(need),
        eligible_balance=format_micros(available),
        wallet_balance=format_micros(eligible_balance(refs, now)),
    )


def _plan(
    target: _Target, actual: int, used: int, now: datetime, *, wallet: Wallet | None
) -> CorrectionEffect:
    """The effect of correcting ``target`` to ``actual``, without writing. ``wallet`` is the
    locked wallet with its due expiries booked (a write), or None (a preview: read as is)."""
    event, feature = target.event, target.feature
    delta = actual - target.effective
    used_after = _judge_amount(target, used, delta, now) if delta else used
    move = None
    parts: list[CreditPart] = []
    balance = None
    if event.credits_micros is not None:
        before = event_credits(event.amount_micros, event.credits_micros, target.effective)
        after = event_credits(event.amount_micros, event.credits_micros, actual)
        move = before - after
    if move and target.usage_entry is not None:
        wallet_id = target.usage_entry.wallet_id
        if wallet is None:
            balance = db.session.scalar(select(Wallet.balance_micros).where(Wallet.id == wallet_id))
        else:
            balance = wallet.balance_micros
        assert balance is not None
        if wallet is None:  # a preview: the write books the due expiries first
            balance -= sum(
                g.remaining_micros
                for g in credits.live_grants(wallet_id)
                if g.expires_at is not None and g.expires_at <= now
            )
        if move > 0:
            drawn = _drawn(target)
            grants = list(
                db.session.scalars(
                    select(CreditGrant)
                    .where(CreditGrant.id.in_(sorted(drawn)))
                    .execution_options(populate_existing=True)
                )
            )
            parts = _refund_parts(grants, drawn, move, now)
            balance += move - sum(-p.amount_micros for p in parts if p.fate != "returned")
        else:
            refs = _charge_refs(credits.live_grants(wallet_id), now)
            if eligible_balance(refs, event.timestamp) < -move:
                raise _insufficient(target, -move, refs, now)
            parts = [
                CreditPart(ref.id, amount, "charged")
                for ref, amount in allocate(refs, -move, event.timestamp)
            ]
            balance += move
    return CorrectionEffect(
        event_id=event.event_id,
        customer_key=target.customer.key,
        feature_key=feature.key,
        feature_type=feature.type,
        timestamp=event.timestamp,
        original_micros=event.amount_micros,
        effective_before_micros=target.effective,
        effective_after_micros=actual,
        delta_micros=delta,
        credits_micros=move,
        credit_system=target.credit_system,
        used_after_micros=used_after,
        balance_after_micros=balance,
        parts=parts,
        event_credits_micros=None
        if event.credits_micros is None
        else event_credits(event.amount_micros, event.credits_micros, actual),
    )


def _parse(customer_key: object, event_id: object, actual_amount: object) -> tuple[_Target, int]:
    customer = get_customer(customer_key)
    target = _find(customer, _event_id(event_id))
    if actual_amount is None or actual_amount == "":
        raise InvalidAmount(
            "`actual_amount` is required (0 voids the event).", field="actual_amount"
        )
    return target, _actual(actual_amount, target)


def preview_correction(
    actor: Actor, *, customer_key: object, event_id: object, actual_amount: object
) -> CorrectionEffect:
    """What correcting the event to ``actual_amount`` would do now, credits included; raises
    the refusal the correction would get. Writes nothing (the dashboard shows it before the
    correction is saved)."""
    require(actor, VIEW)
    now = utcnow()
    target, actual = _parse(customer_key, event_id, actual_amount)
    return _plan(target, actual, _counter(target, lock=False).used_micros, now, wallet=None)


@transactional
def correct_usage(
    actor: Actor,
    *,
    customer_key: object,
    event_id: object,
    actual_amount: object,
    reason: object,
    idempotency_key: object = None,
) -> CorrectionResult:
    """Correct a usage event to its actual amount (support, admin). Same idempotency key and
    content: the first correction again, marked as a replay; other content: 409. An actual
    amount equal to the effective one writes nothing (``corrected`` is False)."""
    require(actor, RECORD_USAGE)
    now = utcnow()
    target, actual = _parse(customer_key, event_id, actual_amount)
    reason_text = validation.text(reason, field="reason", max_len=MAX_REASON)
    key = (
        None
        if idempotency_key is None
        else validation.key(
            idempotency_key, field="idempotency_key", pattern=validation.EVENT_ID_RE
        )
    )
    fingerprint = _fingerprint("correction", target.event.id, actual, reason_text)
    # Lock order as RecordUsage: the entitlement (more usage is judged against it: an edit of it
    # waits for this correction, or this correction for the edit; docs/domain.md, "Concurrent
    # edits and usage"), the counter, then the wallet. The key is looked up under the counter's
    # lock: a concurrent correction of the same event under the same key is seen.
    _entitlement(target, lock=True)
    counter = _counter(target, lock=True)
    if key is not None:
        previous = db.session.scalar(
            select(UsageCorrection).where(
                UsageCorrection.customer_id == target.customer.id,
                UsageCorrection.idempotency_key == key,
            )
        )
        if previous is not None:
            if previous.fingerprint != fingerprint:
                raise IdempotencyConflict(
                    f"idempotency_key {key!r} was already used for a different correction.",
                    field="idempotency_key",
                )
            return _replayed(previous, target)
    target = _find(target.customer, target.event.event_id)  # its corrections, read under lock
    if actual == target.effective:
        effect = _plan(target, actual, counter.used_micros, now, wallet=None)
        return CorrectionResult(False, False, None, effect, reason_text, actor.label, now)
    wallet, before = None, 0
    if target.usage_entry is not None:
        wallet = credits.lock_wallet(target.usage_entry.wallet_id)
        grants = credits.live_grants(wallet.id)
        # Like every wallet write: the value the alerts watch is read before the due expiries
        # are booked, so that a crossing by the booking itself is seen (docs/domain.md, "Alerts").
        before = alerts.spendable(grants, now)
        credits.book_expiries(wallet, grants, now)
    effect = _plan(target, actual, counter.used_micros, now, wallet=wallet)
    entry = None
    if effect.credits_micros and wallet is not None:
        entry = _write_correction_entries(actor, wallet, target, effect, reason_text, now)
        effect = replace(effect, balance_after_micros=wallet.balance_micros)
    if wallet is not None:
        # An extra charge, or the expiries booked above, may cross the low-balance threshold.
        alerts.wallet_written(
            wallet, before, credits.live_grants(wallet.id), now, cause="correction"
        )
    used_before = counter.used_micros
    counter.used_micros = effect.used_after_micros
    if effect.used_after_micros > used_before:
        # More usage may reach the entitlement's percentages of the event's own period.
        allowance = db.session.scalar(
            select(Entitlement.allowance_micros).where(
                Entitlement.customer_id == target.customer.id,
                Entitlement.feature_id == target.feature.id,
            )
        )
        outbox.emit_many(
            db.session.connection(),
            alerts.usage_events(
                customer_key=target.customer.key,
                feature_key=target.feature.key,
                allowance=allowance,
                before=used_before,
                after=effect.used_after_micros,
                period_start=target.event.period_start,
                at=now,
                shares=alerts.percentages(),
            ),
        )
    correction = UsageCorrection(
        usage_event_id=target.event.id,
        customer_id=target.customer.id,
        delta_micros=effect.delta_micros,
        effective_after_micros=actual,
        credits_micros=effect.credits_micros,
        ledger_entry_id=None if entry is None else entry.id,
        used_after_micros=effect.used_after_micros,
        reason=reason_text,
        idempotency_key=key,
        fingerprint=fingerprint,
        actor=actor.label,
        created_at=now,
    )
    db.session.add(correction)
    db.session.flush()
    conn = db.session.connection()
    add_to_daily(
        conn,
        [
            {
                "customer_id": target.customer.id,
                "feature_id": target.feature.id,
                "timestamp": target.event.timestamp,
                "amount_micros": effect.delta_micros,
            }
        ],
    )
    details = _details(effect)
    audit.record(
        actor,
        "usage.corrected",
        customer_key=target.customer.key,
        target=f"event:{target.event.event_id}",
        details={**details, "reason": reason_text},
    )
    outbox.emit(
        conn,
        "usage.corrected",
        {"correction_id": correction.id, **details, "reason": reason_text},
        customer_key=target.customer.key,
        at=now,
    )
    return CorrectionResult(False, True, correction.id, effect, reason_text, actor.label, now)


def _details(effect: CorrectionEffect) -> dict[str, Any]:
    return {
        "event_id": effect.event_id,
        "customer_key": effect.customer_key,
        "feature_key": effect.feature_key,
        "original": format_micros(effect.original_micros),
        "effective_before": format_micros(effect.effective_before_micros),
        "effective_after": format_micros(effect.effective_after_micros),
        "delta": format_micros(effect.delta_micros),
        "credits": None if effect.credits_micros is None else format_micros(effect.credits_micros),
        "credit_system": effect.credit_system,
    }


def _write_correction_entries(
    actor: Actor,
    wallet: Wallet,
    target: _Target,
    effect: CorrectionEffect,
    reason: str,
    now: datetime,
) -> LedgerEntry:
    """The one place a correction's credits reach the ledger (the locked wallet, its due
    expiries booked): one `correction` entry of ``effect.credits_micros`` with its allocations
    (negative: returned to a grant; positive: paid by it), then an `expiry` / `void` entry for
    each part returned to a grant that has expired or was voided."""
    amount = effect.credits_micros
    assert amount
    reference = f"{target.feature.key}:{target.event.event_id}"[:200]

    def entry_for() -> LedgerEntry:
        return credits.post(
            actor.label,
            wallet,
            type="correction",
            amount_micros=amount,
            now=now,
            reference=reference,
            note=reason,
        )

    # Runway's burn: a refund gives back that day's consumption, an extra charge adds to it.
    burn.add(db.session.connection(), [(wallet.id, burn.day_of(now), -amount)])
    if amount < 0:
        grants = credits.live_grants(wallet.id)
        return credits.deduct(wallet, grants, -amount, target.event.timestamp, entry_for)
    entry = entry_for()
    by_id = {
        g.id: g
        for g in db.session.scalars(
            select(CreditGrant)
            .where(CreditGrant.id.in_([p.grant_id for p in effect.parts]))
            .execution_options(populate_existing=True)
        )
    }
    for part in effect.parts:
        grant = by_id[part.grant_id]
        back = -part.amount_micros
        grant.remaining_micros += back
        db.session.add(
            CreditAllocation(ledger_entry_id=entry.id, grant_id=grant.id, amount_micros=-back)
        )
        # The finance roll-forward: a refund is `corrected` (+) by the grant's terms; a part
        # booked straight out again is rolled up as expired / voided by credits.post below.
        rollup.defer(
            db.session(),
            [
                rollup.grant_row(
                    wallet.credit_system_id,
                    wallet.customer_id,
                    entry.created_at,
                    "corrected",
                    grant,
                    back,
                )
            ],
        )
        if part.fate == "returned":
            continue
        # Never resurrect dead credits: what returns to an expired or voided grant leaves again.
        grant.remaining_micros -= back
        if part.fate == "voided":
            grant.voided_micros += back
        else:
            grant.expired_micros += back
            grant.expired_at = grant.expired_at or now
        db.session.flush()
        credits.post(
            actor.label if part.fate == "voided" else credits.EXPIRY_ACTOR,
            wallet,
            type="void" if part.fate == "voided" else "expiry",
            amount_micros=-back,
            now=now,
            grant_id=grant.id,
            reference=f"correction:{entry.id}",
            note=f"Returned by a correction of event {target.event.event_id} to a "
            f"{part.fate} grant.",
        )
    db.session.flush()
    return entry


def _replayed(previous: UsageCorrection, target: _Target) -> CorrectionResult:
    entry = (
        None
        if previous.ledger_entry_id is None
        else db.session.get(LedgerEntry, previous.ledger_entry_id)
    )
    parts = []
    balance = None
    if entry is not None:
        balance = db.session.scalar(
            select(LedgerEntry.balance_after_micros)
            .where(
                LedgerEntry.wallet_id == entry.wallet_id,
                (LedgerEntry.id == entry.id) | (LedgerEntry.reference == f"correction:{entry.id}"),
            )
            .order_by(LedgerEntry.id.desc())
            .limit(1)
        )
        parts = [
            CreditPart(gid, amount, "charged" if amount > 0 else "returned")
            for gid, amount in db.session.execute(
                select(CreditAllocation.grant_id, CreditAllocation.amount_micros)
                .where(CreditAllocation.ledger_entry_id == entry.id)
                .order_by(CreditAllocation.id)
            )
        ]
    event = target.event
    effect = CorrectionEffect(
        event_id=event.event_id,
        customer_key=target.customer.key,
        feature_key=target.feature.key,
        feature_type=target.feature.type,
        timestamp=event.timestamp,
        original_micros=event.amount_micros,
        effective_before_micros=previous.effective_after_micros - previous.delta_micros,
        effective_after_micros=previous.effective_after_micros,
        delta_micros=previous.delta_micros,
        credits_micros=previous.credits_micros,
        credit_system=target.credit_system,
        used_after_micros=previous.used_after_micros,
        balance_after_micros=balance,
        parts=parts,
        event_credits_micros=None
        if event.credits_micros is None
        else event_credits(
            event.amount_micros, event.credits_micros, previous.effective_after_micros
        ),
    )
    return CorrectionResult(
        True, True, previous.id, effect, previous.reason, previous.actor, previous.created_at
    )
