"""Wallet writes: topups (the only way to add credits, each one grant), adjustments (corrections
with a reason), voids of a grant, and the low-balance threshold."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple

from sqlalchemy import select

from ..errors import (
    DomainError,
    IdempotencyConflict,
    InsufficientCredits,
    NotFound,
    NothingToVoid,
    ValidationError,
)
from ..extensions import db
from ..models import (
    DEFAULT_PRIORITY,
    TOPUP_KINDS,
    CreditGrant,
    CreditSystem,
    Customer,
    LedgerEntry,
    Wallet,
    utcnow,
)
from . import alerts, audit, credits, outbox, validation
from .actors import MANAGE_WALLETS, Actor, require
from .catalog import get_credit_system, get_customer
from .credits.reads import grant_id_of
from .money import MICROS, format_micros, parse_micros
from .tx import transactional


@dataclass(frozen=True)
class LedgerResult:
    replayed: bool
    entry: LedgerEntry
    customer_key: str
    credit_system: str

    @property
    def balance_micros(self) -> int:
        return self.entry.balance_after_micros


CURRENCY_RE = re.compile(r"[A-Z]{3}")
MAX_PRIORITY = 1_000_000


def _fingerprint(*parts: object) -> str:
    return hashlib.sha256(validation.canonical_json(list(parts)).encode()).hexdigest()


def _idempotency_key(value: object) -> str | None:
    if value is None:
        return None
    return validation.key(value, field="idempotency_key", pattern=validation.EVENT_ID_RE)


def _replay(customer: Customer, key: str | None, fingerprint: str, what: str) -> LedgerEntry | None:
    """The entry an idempotency key already made for this customer (same content: a replay),
    or None; other content under the key is a 409."""
    if key is None:
        return None
    previous = db.session.scalar(
        select(LedgerEntry).where(
            LedgerEntry.customer_id == customer.id, LedgerEntry.idempotency_key == key
        )
    )
    if previous is None:
        return None
    if previous.fingerprint != fingerprint:
        raise IdempotencyConflict(
            f"idempotency_key {key!r} was already used for a different {what}.",
            field="idempotency_key",
        )
    return previous


def _priority(value: object, kind: str) -> int:
    if value is None or value == "":
        return DEFAULT_PRIORITY[kind]
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ValidationError("`priority` must be a whole number.", field="priority")
    text = str(value).strip()
    if not text.lstrip("-").isdigit() or len(text) > 8:
        raise ValidationError("`priority` must be a whole number.", field="priority")
    number = int(text)
    if not 0 <= number <= MAX_PRIORITY:
        raise ValidationError(
            f"`priority` must be between 0 and {MAX_PRIORITY:,} (lower is spent first).",
            field="priority",
        )
    return number


def _unit_price(value: object, currency: object) -> tuple[str | None, str | None]:
    """An exact decimal price of one credit and its ISO 4217 currency: both or neither."""
    if value in (None, "") and currency in (None, ""):
        return None, None
    if value in (None, "") or currency in (None, ""):
        raise ValidationError(
            "Give `unit_price` and `currency` together.",
            field="unit_price" if value in (None, "") else "currency",
        )
    micros = parse_micros(value, field="unit_price")
    if micros < 0:
        raise ValidationError("`unit_price` may not be negative.", field="unit_price")
    if not isinstance(currency, str) or not CURRENCY_RE.fullmatch(currency.strip().upper()):
        raise ValidationError(
            "`currency` must be a three-letter ISO 4217 code such as USD.", field="currency"
        )
    return format_micros(micros), currency.strip().upper()


def _grant_times(
    effective_at: object, expires_at: object, now: datetime
) -> tuple[datetime, datetime | None]:
    effective = (
        now
        if effective_at in (None, "")
        else validation.parse_time(effective_at, field="effective_at")
    )
    expires = (
        None if expires_at in (None, "") else validation.parse_time(expires_at, field="expires_at")
    )
    if expires is not None and expires <= effective:
        raise ValidationError(
            "`expires_at` must be after `effective_at` (the grant would never be spendable).",
            field="expires_at",
        )
    if expires is not None and expires <= now:
        raise ValidationError("`expires_at` is in the past.", field="expires_at")
    return effective, expires


def _issue_grant(
    actor: Actor,
    wallet: Wallet,
    *,
    kind: str,
    amount_micros: int,
    priority: int,
    effective_at: datetime,
    expires_at: datetime | None,
    reference: str | None,
    note: str | None,
    unit_price: str | None,
    currency: str | None,
    now: datetime,
) -> CreditGrant:
    """A new grant of its own (never merged into another) with its full amount remaining."""
    grant = CreditGrant(
        wallet_id=wallet.id,
        customer_id=wallet.customer_id,
        kind=kind,
        amount_micros=amount_micros,
        remaining_micros=amount_micros,
        priority=priority,
        effective_at=effective_at,
        expires_at=expires_at,
        reference=reference,
        note=note,
        unit_price=unit_price,
        currency=currency,
        actor=actor.label,
        created_at=now,
    )
    db.session.add(grant)
    db.session.flush()
    return grant


@transactional
def topup_wallet(
    actor: Actor,
    *,
    customer_key: object,
    credit_system: object,
    amount: object,
    kind: object = "purchased",
    reference: object = None,
    note: object = None,
    idempotency_key: object = None,
    priority: object = None,
    effective_at: object = None,
    expires_at: object = None,
    unit_price: object = None,
    currency: object = None,
) -> LedgerResult:
    """Add credits: exactly one new grant and its `topup` entry (domain.md, "Credit grants")."""
    require(actor, MANAGE_WALLETS)
    now = utcnow()
    customer = get_customer(customer_key)
    system = get_credit_system(credit_system)
    if system.archived_at is not None:
        raise ValidationError(
            f"Credit system {system.key!r} is archived: it takes no new topups.",
            field="credit_system",
        )
    amount_micros = parse_micros(amount, field="amount")
    if amount_micros <= 0:
        raise ValidationError(
            "A topup adds credits: `amount` must be greater than zero.", field="amount"
        )
    kind_value = validation.choice(kind or "purchased", TOPUP_KINDS, field="kind")
    ref = validation.text(reference, field="reference", max_len=200, required=False)
    note_value = validation.text(note, field="note", max_len=2000, required=False)
    key = _idempotency_key(idempotency_key)
    priority_value = _priority(priority, kind_value)
    price, currency_code = _unit_price(unit_price, currency)
    if price is not None and kind_value != "purchased":
        raise ValidationError("Only purchased credits have a unit price.", field="unit_price")
    effective, expires = _grant_times(effective_at, expires_at, now)
    # The grant's terms are part of the content only when given: a replay an hour later that
    # leaves them out is the same topup (its default effective time would differ).
    terms = (priority, effective_at, expires_at, unit_price, currency)
    fingerprint = _fingerprint(
        system.id,
        amount_micros,
        kind_value,
        ref,
        note_value,
        *(
            []
            if terms == (None,) * 5
            else [
                priority_value,
                None if effective_at in (None, "") else effective.isoformat(),
                None if expires is None else expires.isoformat(),
                price,
                currency_code,
            ]
        ),
    )
    previous = _replay(customer, key, fingerprint, "topup")
    if previous is not None:
        return LedgerResult(True, previous, customer.key, system.key)
    wallet = credits.locked_wallet(customer, system, create=True)
    assert wallet is not None
    grants = credits.live_grants(wallet.id)
    before = alerts.spendable(grants, now)
    credits.book_expiries(wallet, grants, now)
    grant = _issue_grant(
        actor,
        wallet,
        kind=kind_value,
        amount_micros=amount_micros,
        priority=priority_value,
        effective_at=effective,
        expires_at=expires,
        reference=ref,
        note=note_value,
        unit_price=price,
        currency=currency_code,
        now=now,
    )
    entry = credits.post(
        actor.label,
        wallet,
        type="topup",
        amount_micros=amount_micros,
        now=now,
        grant_id=grant.id,
        kind=kind_value,
        reference=ref,
        note=note_value,
        idempotency_key=key,
        fingerprint=fingerprint,
    )
    audit.record(
        actor,
        "wallet.topup",
        customer_key=customer.key,
        target=f"grant:{grant.id}",
        details={
            "credit_system": system.key,
            "amount": format_micros(amount_micros),
            "kind": kind_value,
            "reference": ref,
            "priority": priority_value,
            "expires_at": None if expires is None else expires.isoformat(),
        },
    )
    purchased = outbox.event_row(
        "credit.purchased",
        {
            "customer_key": customer.key,
            "credit_system": system.key,
            "grant_id": grant.id,
            "amount": format_micros(amount_micros),
            "kind": kind_value,
            "reference": ref,
            "priority": priority_value,
            "effective_at": alerts.iso(effective),
            "expires_at": None if expires is None else alerts.iso(expires),
            "unit_price": price,
            "currency": currency_code,
            "balance": format_micros(alerts.spendable([*grants, grant], now)),
        },
        customer_key=customer.key,
        at=now,
    )
    alerts.wallet_written(wallet, before, [*grants, grant], now, cause="topup", extra=[purchased])
    return LedgerResult(False, entry, customer.key, system.key)


@transactional
def adjust_wallet(
    actor: Actor,
    *,
    customer_key: object,
    credit_system: object,
    amount: object,
    reason: object,
    reference: object = None,
    idempotency_key: object = None,
) -> LedgerResult:
    """A correction with a reason: positive, a `granted` grant of its own; negative, spent from
    the grants available now like usage (never below zero)."""
    require(actor, MANAGE_WALLETS)
    now = utcnow()
    customer = get_customer(customer_key)
    system = get_credit_system(credit_system)
    amount_micros = parse_micros(amount, field="amount")
    if amount_micros == 0:
        raise ValidationError("`amount` may not be zero.", field="amount")
    reason_text = validation.text(reason, field="reason", max_len=2000)
    ref = validation.text(reference, field="reference", max_len=200, required=False)
    key = _idempotency_key(idempotency_key)
    fingerprint = _fingerprint("adjustment", system.id, amount_micros, reason_text, ref)
    previous = _replay(customer, key, fingerprint, "adjustment")
    if previous is not None:
        return LedgerResult(True, previous, customer.key, system.key)
    wallet = credits.locked_wallet(customer, system, create=amount_micros > 0)
    if wallet is None:
        raise InsufficientCredits(
            f"The customer has no {system.key} wallet; an adjustment of "
            f"{format_micros(amount_micros)} would take it below zero.",
            field="amount",
            credits_required=format_micros(-amount_micros),
            eligible_balance="0",
            wallet_balance="0",
        )
    grants = credits.live_grants(wallet.id)
    before = alerts.spendable(grants, now)
    credits.book_expiries(wallet, grants, now)

    def entry(grant_id: int | None = None) -> LedgerEntry:
        return credits.post(
            actor.label,
            wallet,
            type="adjustment",
            amount_micros=amount_micros,
            now=now,
            grant_id=grant_id,
            kind="granted" if amount_micros > 0 else None,
            reference=ref,
            note=reason_text,
            idempotency_key=key,
            fingerprint=fingerprint,
        )

    if amount_micros > 0:
        grant = _issue_grant(
            actor,
            wallet,
            kind="granted",
            amount_micros=amount_micros,
            priority=DEFAULT_PRIORITY["granted"],
            effective_at=now,
            expires_at=None,
            reference=ref,
            note=reason_text,
            unit_price=None,
            currency=None,
            now=now,
        )
        grants.append(grant)
        posted = entry(grant.id)
    else:
        posted = credits.deduct(
            wallet,
            grants,
            -amount_micros,
            now,
            entry,
            refusal="The wallet has {available} credits available; an adjustment of -{amount} "
            "would take it below zero.",
        )
        # Spent like usage: it counts toward the wallet's burn (runway).
        credits.burn.add(
            db.session.connection(), [(wallet.id, credits.burn.day_of(now), -amount_micros)]
        )
    audit.record(
        actor,
        "wallet.adjustment",
        customer_key=customer.key,
        target=f"ledger:{posted.id}",
        details={
            "credit_system": system.key,
            "amount": format_micros(amount_micros),
            "reason": reason_text,
        },
    )
    alerts.wallet_written(wallet, before, grants, now, cause="adjustment")
    return LedgerResult(False, posted, customer.key, system.key)


@dataclass(frozen=True)
class VoidResult:
    replayed: bool
    entry: LedgerEntry
    grant: CreditGrant
    customer_key: str
    credit_system: str


@transactional
def void_grant(
    actor: Actor,
    *,
    grant_id: object,
    reason: object,
    reference: object = None,
    idempotency_key: object = None,
) -> VoidResult:
    """Remove what remains of one grant with a `void` entry (a refund of unused prepaid credits,
    or a mistaken topup). What was consumed stays consumed."""
    require(actor, MANAGE_WALLETS)
    now = utcnow()
    gid = grant_id_of(grant_id)  # the same ids as the reads: ASCII digits, else 404
    reason_text = validation.text(reason, field="reason", max_len=2000)
    ref = validation.text(reference, field="reference", max_len=200, required=False)
    key = _idempotency_key(idempotency_key)
    found = db.session.execute(
        select(CreditGrant, Customer, CreditSystem)
        .join(Customer, Customer.id == CreditGrant.customer_id)
        .join(Wallet, Wallet.id == CreditGrant.wallet_id)
        .join(CreditSystem, CreditSystem.id == Wallet.credit_system_id)
        .where(CreditGrant.id == gid)
    ).first()
    if found is None:
        raise NotFound(f"No credit grant with id {gid}.", field="grant_id")
    grant, customer, system = found
    fingerprint = _fingerprint("void", gid, reason_text, ref)
    previous = _replay(customer, key, fingerprint, "void")
    if previous is not None:
        db.session.refresh(grant)
        return VoidResult(True, previous, grant, customer.key, system.key)
    wallet = credits.locked_wallet(customer, system, create=False)
    assert wallet is not None
    grants = credits.live_grants(wallet.id)
    before = alerts.spendable(grants, now)
    credits.book_expiries(wallet, grants, now)
    db.session.refresh(grant)
    if grant.remaining_micros == 0:
        status = grant.status_at(now)
        raise NothingToVoid(
            f"Grant {gid} has nothing left to void (it is {status}).",
            field="grant_id",
            status=status,
        )
    left = grant.remaining_micros
    grant.remaining_micros = 0
    grant.voided_micros = left
    grant.voided_at = now
    entry = credits.post(
        actor.label,
        wallet,
        type="void",
        amount_micros=-left,
        now=now,
        grant_id=grant.id,
        reference=ref,
        note=reason_text,
        idempotency_key=key,
        fingerprint=fingerprint,
    )
    audit.record(
        actor,
        "wallet.void",
        customer_key=customer.key,
        target=f"grant:{grant.id}",
        details={
            "credit_system": system.key,
            "amount": format_micros(left),
            "reason": reason_text,
        },
    )
    voided = outbox.event_row(
        "grant.voided",
        {
            "customer_key": customer.key,
            "credit_system": system.key,
            "grant_id": grant.id,
            "amount": format_micros(left),
            "reason": reason_text,
            "reference": ref,
            "voided_at": alerts.iso(now),
        },
        customer_key=customer.key,
        dedupe_key=f"grant.voided:grant:{grant.id}",
        at=now,
    )
    alerts.wallet_written(wallet, before, grants, now, cause="void", extra=[voided])
    return VoidResult(False, entry, grant, customer.key, system.key)


@transactional
def set_low_balance_threshold(
    actor: Actor, *, customer_key: object, credit_system: object, threshold: object
) -> Wallet:
    """The balance at or under which a wallet counts as low (None: never). Not a ledger entry:
    the balance and the wallet's last change stay as they are."""
    require(actor, MANAGE_WALLETS)
    customer = get_customer(customer_key)
    system = get_credit_system(credit_system)
    micros = None if threshold in (None, "") else parse_micros(threshold, field="threshold")
    if micros is not None and micros < 0:
        raise ValidationError("The threshold may not be negative.", field="threshold")
    wallet = credits.locked_wallet(customer, system, create=False)
    if wallet is None:
        raise ValidationError("This customer has no wallet in this credit system yet.")
    # A threshold raised past the balance makes the wallet low now: that is a crossing too
    # (docs/domain.md, "Alerts"), under the wallet's lock like every other one.
    now = utcnow()
    value = alerts.spendable(credits.live_grants(wallet.id), now)
    default = system.low_balance_threshold_micros
    old = (
        default
        if wallet.low_balance_threshold_micros is None
        else wallet.low_balance_threshold_micros
    )
    new = default if micros is None else micros
    wallet.low_balance_threshold_micros = micros
    if new is not None and value <= new and (old is None or value > old):
        low = alerts.low_event(customer.key, system.key, new, value, value, now, "threshold")
        outbox.emit_many(db.session.connection(), [low])
    audit.record(
        actor,
        "wallet.threshold_set",
        customer_key=customer.key,
        target=f"credit_system:{system.key}",
        details={"threshold": None if micros is None else format_micros(micros)},
    )
    return wallet


class LargeAmount(NamedTuple):
    """A wallet change that must be confirmed first: its amount and the balance it leads to."""

    amount_micros: int
    balance_after_micros: int
    unit_plural: str


def unconfirmed_large_amount(
    customer_key: object, credit_system: object, amount: object, *, confirmed: object, limit: int
) -> LargeAmount | None:
    """The dashboard's rule for large amounts (domain.md): a topup or adjustment of more than
    ``limit`` credits is applied only when ``confirmed`` repeats the amount (a changed amount asks
    again). None when it may go ahead, or when the amount is not valid (the write names why)."""
    try:
        micros = parse_micros(amount)
    except DomainError:
        return None
    if abs(micros) <= limit * MICROS or confirmed == amount:
        return None
    wallet = db.session.execute(
        select(Wallet.balance_micros, CreditSystem.unit_plural)
        .join(CreditSystem, CreditSystem.id == Wallet.credit_system_id)
        .join(Customer, Customer.id == Wallet.customer_id)
        .where(Customer.key == customer_key, CreditSystem.key == credit_system)
    ).first()
    balance, units = wallet if wallet else (0, "credits")
    return LargeAmount(micros, balance + micros, units)


# Included credits of plans (services/plans) are grants written by the same function as topups.
issue_grant = _issue_grant
