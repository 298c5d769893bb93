"""The rules of RecordUsage and of the entitlement check, as pure functions over small typed
records (domain.md, "Rules of RecordUsage"). No database here: the store loads the records, these
functions judge them, and the tests call them directly."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

from ...errors import (
    DomainError,
    FeatureNotRecordable,
    InsufficientCredits,
    InvalidAmount,
    LimitExceeded,
    NotEntitled,
    ValidationError,
)
from .. import validation
from ..credits.rules import GrantRef, eligible_balance
from ..money import MICROS, check_total, credit_cost_micros, format_micros, parse_micros
from ..periods import effective_period


class CustomerRef(NamedTuple):
    id: int
    key: str
    status: str


class FeatureRef(NamedTuple):
    id: int
    key: str
    type: str
    event_name: str
    archived: bool = False


class EntitlementRef(NamedTuple):
    allowance_micros: int | None  # None: unlimited
    reset_period: str
    overage: str


class CostRef(NamedTuple):
    cost_micros: int
    credit_system_id: int
    credit_system_key: str


@dataclass
class WalletRef:
    """A wallet as judged, with its grants that hold credits: the balance (the sum of its ledger)
    and the grants move as a batch's events are accepted one by one."""

    id: int
    balance_micros: int
    grants: list[GrantRef] = field(default_factory=list)
    # The low-balance threshold alerts compare with: the wallet's own, else its credit system's.
    threshold_micros: int | None = None

    def available(self, at: datetime) -> int:
        """The credits a deduction at ``at`` may use (domain.md, "Spending order")."""
        return eligible_balance(self.grants, at)


@dataclass(frozen=True)
class Parsed:
    """One event (or one check) after the shape checks that need no database."""

    customer_key: str
    feature_key: str | None
    event_name: str | None
    amount_micros: int
    event_id: str | None = None
    timestamp: datetime | None = None
    metadata: dict[str, Any] | None = None
    reason: str | None = None  # why a person recorded it: kept in the audit row only


@dataclass(frozen=True)
class Decision:
    used_after: int
    overage: int
    credits: int | None  # None: not credit-based


MAX_REASON = 500


def parse(raw: object, now: datetime) -> Parsed:
    """Rule 3 and the shapes of api.md. Raises ValidationError / InvalidAmount."""
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
        feature_key = validation.lookup_key(feature_key, field="feature_key")
    if event_name is not None:
        event_name = validation.lookup_key(event_name, field="event_name")
    amount_micros = parse_micros(raw.get("amount", 1), field="amount", error=InvalidAmount)
    if amount_micros == 0:
        raise InvalidAmount("`amount` may not be zero.", field="amount")
    event_id, reason = raw.get("event_id"), raw.get("reason")
    if event_id is not None:
        event_id = validation.key(event_id, field="event_id", pattern=validation.EVENT_ID_RE)
    return Parsed(
        customer_key=customer_key,
        feature_key=feature_key,
        event_name=event_name,
        amount_micros=amount_micros,
        event_id=event_id,
        timestamp=validation.timestamp(raw.get("timestamp"), now=now),
        metadata=validation.metadata(raw.get("metadata")),
        reason=validation.text(reason, field="reason", max_len=MAX_REASON, required=False),
    )


def check_recordable(feature: FeatureRef, amount_micros: int) -> None:
    """Rules 2 and 3 of RecordUsage: an archived feature is never recorded (its history stays
    readable), and the amount must suit the feature's type."""
    if feature.archived:
        raise FeatureNotRecordable(
            f"Feature {feature.key!r} is archived: it records no new usage.", field="feature_key"
        )
    check_amount_for_type(feature, amount_micros)


def check_amount_for_type(feature: FeatureRef, amount_micros: int) -> None:
    """Rules 2 and 3 by feature type: booleans are never recorded, persistent amounts are whole,
    consumables never negative."""
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


def counter_period(feature: FeatureRef, entitlement: EntitlementRef | None) -> str:
    """The reset period of the counter an event of this feature moves."""
    return effective_period(feature.type, entitlement.reset_period if entitlement else "never")


def check_entitled(
    customer: CustomerRef, feature: FeatureRef, entitlement: EntitlementRef | None
) -> EntitlementRef:
    if customer.status != "active":
        raise NotEntitled(f"Customer {customer.key!r} is archived.", field="customer_key")
    if entitlement is None:
        raise NotEntitled(
            f"Customer {customer.key!r} is not entitled to {feature.key!r}.", field="feature_key"
        )
    return entitlement


def decide(
    feature: FeatureRef,
    customer: CustomerRef,
    entitlement: EntitlementRef | None,
    used: int,
    amount: int,
    cost: CostRef | None,
    wallet: WalletRef | None,
    at: datetime,
    now: datetime,
) -> Decision:
    """Rule 4 of RecordUsage, in its order. Raises the first DomainError that applies. Credits
    come from the wallet's grants eligible at ``at``, the event's own time."""
    allowance = check_entitled(customer, feature, entitlement).allowance_micros
    used_after = used + amount
    overage = 0
    if amount > 0 and allowance is not None and used_after > allowance:
        if entitlement is not None and entitlement.overage == "block":
            raise _limit_exceeded(feature, used, amount, allowance)
        overage = min(amount, used_after - allowance)
    if used_after < 0:
        raise InvalidAmount(
            f"Only {format_micros(used)} {feature.key} are in use; cannot give back "
            f"{format_micros(-amount)}.",
            field="amount",
            used=_num(used),
        )
    check_total(used_after, what="The usage counter", error=InvalidAmount)
    credits = None if cost is None else charge(amount, cost)
    if credits:
        eligible = 0 if wallet is None else wallet.available(at)
        if eligible < credits:
            balance = 0 if wallet is None else wallet.available(now)
            raise InsufficientCredits(
                f"Recording this needs {format_micros(credits)} credits; the wallet has "
                f"{format_micros(eligible)} available"
                + ("." if at == now or eligible == balance else " at the event's time."),
                field="amount",
                credits_required=format_micros(credits),
                eligible_balance=format_micros(eligible),
                wallet_balance=format_micros(balance),
            )
    return Decision(used_after=used_after, overage=overage, credits=credits)


def charge(amount: int, cost: CostRef) -> int:
    """Rule 5: credits for ``amount``; negative usage never adds credits."""
    return credit_cost_micros(amount, cost.cost_micros) if amount > 0 else 0


def decide_check(
    feature: FeatureRef,
    customer: CustomerRef,
    entitlement: EntitlementRef | None,
    used: int,
    amount: int,
    cost: CostRef | None,
    wallet: WalletRef | None,
    now: datetime,
) -> int | None:
    """The entitlement check: what RecordUsage would decide, except that a boolean feature is
    checked for access instead of refused. Returns the credits required; raises the refusal."""
    if feature.type == "boolean":
        check_entitled(customer, feature, entitlement)
        return None
    check_amount_for_type(feature, amount)
    return decide(feature, customer, entitlement, used, amount, cost, wallet, now, now).credits


def refusal_credits(amount: int, cost: CostRef | None) -> int | None:
    """The credits a refused check reports: what the amount would cost, where it costs any."""
    return charge(amount, cost) if cost is not None and amount > 0 else None


def _limit_exceeded(feature: FeatureRef, used: int, amount: int, allowance: int) -> DomainError:
    return LimitExceeded(
        f"{format_micros(amount)} more {feature.key} would pass the allowance of "
        f"{format_micros(allowance)} ({format_micros(used)} used).",
        field="amount",
        used=_num(used),
        allowance=_num(allowance),
        available=_num(max(allowance - used, 0)),
    )


def _num(micros: int) -> int | str:
    return micros // MICROS if micros % MICROS == 0 else format_micros(micros)


def fingerprint(feature_id: int, amount_micros: int, metadata: dict[str, Any] | None) -> str:
    """What makes two RecordUsage the same (the timestamp is compared on its own)."""
    text = f"{feature_id}:{amount_micros}:{validation.canonical_json(metadata) if metadata else ''}"
    return hashlib.sha256(text.encode()).hexdigest()
