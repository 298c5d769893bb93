"""Credit topups (the only way to add credits) and adjustments (corrections with a reason)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import NamedTuple

from sqlalchemy import select

from ..errors import DomainError, IdempotencyConflict, InsufficientCredits, ValidationError
from ..extensions import db
from ..models import TOPUP_KINDS, CreditSystem, Customer, LedgerEntry, Wallet, utcnow
from . import audit, validation
from .actors import MANAGE_WALLETS, Actor, require
from .catalog import get_credit_system, get_customer
from .money import MICROS, check_total, format_micros, parse_micros
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


def _locked_wallet(customer: Customer, system: CreditSystem, *, create: bool) -> Wallet | None:
    """The wallet to write to, locked. Every wallet write comes here first, so an archived
    customer's wallets are refused in one place, whatever the write (topup, adjustment)."""
    if customer.status != "active":
        raise ValidationError(f"Customer {customer.key!r} is archived.", field="customer_key")
    stmt = (
        select(Wallet)
        .where(Wallet.customer_id == customer.id, Wallet.credit_system_id == system.id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    wallet = db.session.scalar(stmt)
    if wallet is None and create:
        # Created on first topup. Two first topups at once: one insert fails on the unique key
        # and its transaction is retried, finding this wallet.
        wallet = Wallet(customer_id=customer.id, credit_system_id=system.id, balance_micros=0)
        db.session.add(wallet)
        db.session.flush()
    return wallet


def _post(
    actor: Actor,
    wallet: Wallet,
    customer: Customer,
    *,
    type: str,
    amount_micros: int,
    kind: str | None = None,
    reference: str | None = None,
    note: str | None = None,
    idempotency_key: str | None = None,
    fingerprint: str | None = None,
) -> LedgerEntry:
    now = utcnow()
    balance = wallet.balance_micros + amount_micros
    check_total(balance, what="The wallet balance")
    wallet.balance_micros = balance
    wallet.updated_at = now
    entry = LedgerEntry(
        wallet_id=wallet.id,
        customer_id=customer.id,
        type=type,
        kind=kind,
        amount_micros=amount_micros,
        balance_after_micros=balance,
        reference=reference,
        note=note,
        idempotency_key=idempotency_key,
        fingerprint=fingerprint,
        actor=actor.label,
        created_at=now,
    )
    db.session.add(entry)
    db.session.flush()
    return entry


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
) -> LedgerResult:
    require(actor, MANAGE_WALLETS)
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
    key = None
    if idempotency_key is not None:
        key = validation.key(
            idempotency_key, field="idempotency_key", pattern=validation.EVENT_ID_RE
        )
    fingerprint = hashlib.sha256(
        validation.canonical_json([system.id, amount_micros, kind_value, ref, note_value]).encode()
    ).hexdigest()
    if key is not None:
        previous = db.session.scalar(
            select(LedgerEntry).where(
                LedgerEntry.customer_id == customer.id, LedgerEntry.idempotency_key == key
            )
        )
        if previous is not None:
            if previous.fingerprint != fingerprint:
                raise IdempotencyConflict(
                    f"idempotency_key {key!r} was already used for a different topup.",
                    field="idempotency_key",
                )
            return LedgerResult(True, previous, customer.key, system.key)
    wallet = _locked_wallet(customer, system, create=True)
    assert wallet is not None
    entry = _post(
        actor,
        wallet,
        customer,
        type="topup",
        amount_micros=amount_micros,
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
        target=f"ledger:{entry.id}",
        details={
            "credit_system": system.key,
            "amount": format_micros(amount_micros),
            "kind": kind_value,
            "reference": ref,
        },
    )
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
) -> LedgerResult:
    """A correction, positive or negative, with a reason; never below zero."""
    require(actor, MANAGE_WALLETS)
    customer = get_customer(customer_key)
    system = get_credit_system(credit_system)
    amount_micros = parse_micros(amount, field="amount")
    if amount_micros == 0:
        raise ValidationError("`amount` may not be zero.", field="amount")
    reason_text = validation.text(reason, field="reason", max_len=2000)
    ref = validation.text(reference, field="reference", max_len=200, required=False)
    wallet = _locked_wallet(customer, system, create=amount_micros > 0)
    balance = 0 if wallet is None else wallet.balance_micros
    if balance + amount_micros < 0:
        raise InsufficientCredits(
            f"The wallet holds {format_micros(balance)}; an adjustment of "
            f"{format_micros(amount_micros)} would take it below zero.",
            field="amount",
            wallet_balance=format_micros(balance),
        )
    assert wallet is not None
    entry = _post(
        actor,
        wallet,
        customer,
        type="adjustment",
        amount_micros=amount_micros,
        reference=ref,
        note=reason_text,
    )
    audit.record(
        actor,
        "wallet.adjustment",
        customer_key=customer.key,
        target=f"ledger:{entry.id}",
        details={
            "credit_system": system.key,
            "amount": format_micros(amount_micros),
            "reason": reason_text,
        },
    )
    return LedgerResult(False, entry, customer.key, system.key)


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
    wallet = _locked_wallet(customer, system, create=False)
    if wallet is None:
        raise ValidationError("This customer has no wallet in this credit system yet.")
    wallet.low_balance_threshold_micros = micros
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
