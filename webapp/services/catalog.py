"""Customers, features, credit systems, credit costs and entitlements."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, NoReturn

from sqlalchemy import delete, func, or_, select

from ..errors import (
    Conflict,
    CustomerNotFound,
    FeatureNotFound,
    FeatureNotRecordable,
    NotFound,
    ValidationError,
)
from ..extensions import db
from ..models import (
    FEATURE_TYPES,
    CreditCost,
    CreditSystem,
    Customer,
    CustomerOverride,
    Entitlement,
    Feature,
    LedgerEntry,
    UsageCounter,
    UsageEvent,
    Wallet,
    utcnow,
)
from . import alerts, audit, outbox, validation
from .actors import ADMIN, VIEW, Actor, require
from .money import format_micros, parse_micros
from .periods import period_start
from .tx import transactional

# ---------------------------------------------------------------- lookups (read-only)


def get_customer(key: object, *, lock: bool = False) -> Customer:
    """The customer with this key; ``lock`` (inside a write transaction) holds its row until
    the commit, so a read-modify-write of it cannot lose a concurrent change. The lock is FOR NO
    KEY UPDATE (the key is never changed): rows that merely reference the customer (usage
    events, ledger entries) are still inserted meanwhile, so that a usage write holding its
    entitlement's lock never waits for a plan change that waits for that entitlement."""
    key = validation.lookup_key(key, field="customer_key")
    stmt = select(Customer).where(Customer.key == key)
    if lock:
        stmt = stmt.with_for_update(key_share=True).execution_options(populate_existing=True)
    customer = db.session.scalar(stmt)
    if customer is None:
        raise CustomerNotFound(f"No customer with key {key!r}.", field="customer_key")
    return customer


def get_feature(feature_key: object = None, event_name: object = None) -> Feature:
    """The feature named by exactly one of ``feature_key`` and ``event_name``."""
    if (feature_key is None) == (event_name is None):
        raise ValidationError(
            "Name the feature with exactly one of `feature_key` and `event_name`.",
            field="feature_key",
        )
    if feature_key is not None:
        fkey = validation.lookup_key(feature_key, field="feature_key")
        feature = db.session.scalar(select(Feature).where(Feature.key == fkey))
        if feature is None:
            raise FeatureNotFound(f"No feature with key {fkey!r}.", field="feature_key")
        return feature
    name = validation.lookup_key(event_name, field="event_name")
    feature = db.session.scalar(select(Feature).where(Feature.event_name == name))
    if feature is None:
        raise FeatureNotFound(f"No feature with event name {name!r}.", field="event_name")
    return feature


def get_credit_system(key: object, *, field: str = "credit_system") -> CreditSystem:
    key = validation.lookup_key(key, field=field)
    system = db.session.scalar(select(CreditSystem).where(CreditSystem.key == key))
    if system is None:
        raise NotFound(f"No credit system with key {key!r}.", field=field)
    return system


def list_features(actor: Actor) -> list[tuple[Feature, CreditCost | None, CreditSystem | None]]:
    require(actor, VIEW)
    rows = db.session.execute(
        select(Feature, CreditCost, CreditSystem)
        .outerjoin(CreditCost, CreditCost.feature_id == Feature.id)
        .outerjoin(CreditSystem, CreditSystem.id == CreditCost.credit_system_id)
        .order_by(Feature.key)
    ).all()
    return [(f, c, s) for f, c, s in rows]


def list_credit_systems(actor: Actor) -> list[CreditSystem]:
    require(actor, VIEW)
    return list(db.session.scalars(select(CreditSystem).order_by(CreditSystem.key)))


# ---------------------------------------------------------------- customers


@transactional
def create_customer(
    actor: Actor,
    *,
    key: object,
    name: object,
    email: object = None,
    metadata: object = None,
) -> Customer:
    require(actor, ADMIN)
    key = validation.key(key, field="key")
    name = validation.text(name, field="name", max_len=300)
    email_value = validation.email(email)
    extra = validation.metadata(metadata)
    if db.session.scalar(select(Customer.id).where(Customer.key == key)) is not None:
        raise Conflict(f"A customer with key {key!r} already exists.", field="key")
    customer = Customer(key=key, name=name, email=email_value, status="active", extra=extra)
    db.session.add(customer)
    db.session.flush()
    audit.record(actor, "customer.created", customer_key=key, details={"name": name})
    _customer_event("customer.created", customer)
    return customer


def _customer_event(type: str, customer: Customer, **more: Any) -> None:
    """customer.created / updated / deleted in the outbox, in the write's transaction."""
    outbox.emit(
        db.session.connection(),
        type,
        {
            "customer_key": customer.key,
            "name": customer.name,
            "email": customer.email,
            "status": customer.status,
            "metadata": customer.extra or {},
            **more,
        },
        customer_key=customer.key,
    )


_UNSET: Any = object()


@transactional
def update_customer(
    actor: Actor,
    key: object,
    *,
    name: object = _UNSET,
    email: object = _UNSET,
    metadata: object = _UNSET,
    merge: Callable[[Customer], dict[str, Any]] | None = None,
) -> Customer:
    """Change a customer's name, email or metadata. ``merge``, when given, is called with the
    customer as stored, its row locked, and returns more of those fields: a caller that merges
    into what is stored (the Metrifox PATCH) cannot lose a concurrent change."""
    require(actor, ADMIN)
    customer = get_customer(key, lock=merge is not None)
    fields: dict[str, Any] = {"name": name, "email": email, "metadata": metadata}
    if merge is not None:
        fields.update(merge(customer))
    changes: dict[str, Any] = {}
    if fields["name"] is not _UNSET:
        customer.name = changes["name"] = validation.text(fields["name"], field="name", max_len=300)
    if fields["email"] is not _UNSET:
        customer.email = changes["email"] = validation.email(fields["email"])
    if fields["metadata"] is not _UNSET:
        customer.extra = validation.metadata(fields["metadata"])
        changes["metadata"] = True
    audit.record(actor, "customer.updated", customer_key=customer.key, details=changes)
    _customer_event("customer.updated", customer, changed=sorted(changes))
    return customer


@transactional
def set_customer_status(actor: Actor, key: object, status: str) -> Customer:
    require(actor, ADMIN)
    customer = get_customer(key)
    status = validation.choice(status, ("active", "archived"), field="status")
    if customer.status != status:
        customer.status = status
        action = "customer.archived" if status == "archived" else "customer.unarchived"
        audit.record(actor, action, customer_key=customer.key)
        # Metrifox's names: archiving is its customer.deleted (the history stays here);
        # unarchiving is an update of the status.
        if status == "archived":
            _customer_event("customer.deleted", customer, archived=True, deleted=False)
        else:
            _customer_event("customer.updated", customer, changed=["status"])
    return customer


@transactional
def delete_customer(actor: Actor, key: object) -> None:
    """Only a customer with no usage and no ledger history can be deleted; archive the others."""
    require(actor, ADMIN)
    customer = get_customer(key)
    has_history = db.session.scalar(
        select(func.count()).select_from(UsageEvent).where(UsageEvent.customer_id == customer.id)
    ) or db.session.scalar(
        select(func.count()).select_from(LedgerEntry).where(LedgerEntry.customer_id == customer.id)
    )
    if has_history:
        raise Conflict(
            f"Customer {customer.key!r} has usage or ledger history, which is never deleted; "
            "archive the customer instead.",
            field="key",
        )
    for model in (UsageCounter, Entitlement, CustomerOverride, Wallet):
        db.session.execute(delete(model).where(model.customer_id == customer.id))
    _customer_event("customer.deleted", customer, archived=False, deleted=True)
    db.session.delete(customer)
    audit.record(actor, "customer.deleted", customer_key=customer.key)


# ---------------------------------------------------------------- features and credit systems


@transactional
def create_feature(
    actor: Actor, *, key: object, name: object, type: object, event_name: object = None
) -> Feature:
    require(actor, ADMIN)
    key = validation.key(key, field="key", pattern=validation.FEATURE_KEY_RE)
    name = validation.text(name, field="name", max_len=200)
    ftype = validation.choice(type, FEATURE_TYPES, field="type")
    event = validation.key(
        key if event_name in (None, "") else event_name,
        field="event_name",
        pattern=validation.EVENT_NAME_RE,
    )
    taken = db.session.scalar(
        select(Feature).where(or_(Feature.key == key, Feature.event_name == event))
    )
    if taken is not None:
        field = "key" if taken.key == key else "event_name"
        raise Conflict(f"A feature with this {field} already exists.", field=field)
    feature = Feature(key=key, name=name, type=ftype, event_name=event)
    db.session.add(feature)
    db.session.flush()
    audit.record(
        actor,
        "feature.created",
        target=f"feature:{key}",
        details={"type": ftype, "event_name": event},
    )
    return feature


@transactional
def create_credit_system(
    actor: Actor,
    *,
    key: object,
    name: object,
    unit_singular: object = None,
    unit_plural: object = None,
    low_balance_threshold: object = None,
) -> CreditSystem:
    require(actor, ADMIN)
    key = validation.key(key, field="key", pattern=validation.FEATURE_KEY_RE)
    fields: dict[str, Any] = dict(_credit_system_fields(name, unit_singular, unit_plural))
    fields["low_balance_threshold_micros"] = low_balance_threshold_micros(low_balance_threshold)
    if db.session.scalar(select(CreditSystem.id).where(CreditSystem.key == key)) is not None:
        raise Conflict(f"A credit system with key {key!r} already exists.", field="key")
    system = CreditSystem(key=key, **fields)
    db.session.add(system)
    db.session.flush()
    audit.record(actor, "credit_system.created", target=f"credit_system:{key}")
    return system


def _credit_system_fields(
    name: object, unit_singular: object, unit_plural: object
) -> dict[str, str]:
    """A credit system's editable fields, checked; unnamed units are "credit" / "credits"."""
    label = validation.text(name, field="name", max_len=200)
    singular = validation.text(unit_singular, field="unit_singular", max_len=50, required=False)
    plural = validation.text(unit_plural, field="unit_plural", max_len=50, required=False)
    return {
        "name": label,
        "unit_singular": singular or "credit",
        "unit_plural": plural or "credits",
    }


def low_balance_threshold_micros(value: object) -> int | None:
    """A low-balance threshold: a decimal ≥ 0 with at most 6 places; None or "" for none."""
    if value is None or value == "":
        return None
    micros = parse_micros(value, field="low_balance_threshold")
    if micros < 0:
        raise ValidationError("The threshold may not be negative.", field="low_balance_threshold")
    return micros


@transactional
def update_feature(actor: Actor, key: object, *, name: object) -> Feature:
    """Rename a feature; its key, type and event name stay (events and entitlements name them)."""
    require(actor, ADMIN)
    feature = get_feature(key)
    feature.name = validation.text(name, field="name", max_len=200)
    audit.record(actor, "feature.updated", target=f"feature:{feature.key}")
    return feature


@transactional
def update_credit_system(
    actor: Actor,
    key: object,
    *,
    name: object,
    unit_singular: object = None,
    unit_plural: object = None,
    low_balance_threshold: object = _UNSET,
) -> CreditSystem:
    """Rename a credit system and its units, and set the default low-balance threshold of its
    wallets (left as it is when not given); its key stays (wallets and the ledger name it)."""
    require(actor, ADMIN)
    system = get_credit_system(key, field="key")
    for attr, value in _credit_system_fields(name, unit_singular, unit_plural).items():
        setattr(system, attr, value)
    if low_balance_threshold is not _UNSET:
        system.low_balance_threshold_micros = low_balance_threshold_micros(low_balance_threshold)
    audit.record(actor, "credit_system.updated", target=f"credit_system:{system.key}")
    return system


@transactional
def set_feature_archived(actor: Actor, key: object, archived: bool) -> Feature:
    """An archived feature records no new usage (``feature_not_recordable``); its history stays."""
    require(actor, ADMIN)
    feature = get_feature(key)
    _set_archived(actor, feature, "feature", feature.key, archived)
    return feature


@transactional
def set_credit_system_archived(actor: Actor, key: object, archived: bool) -> CreditSystem:
    """An archived credit system takes no new topups; its wallets and ledger stay readable."""
    require(actor, ADMIN)
    system = get_credit_system(key, field="key")
    _set_archived(actor, system, "credit_system", system.key, archived)
    return system


def _set_archived(
    actor: Actor, row: Feature | CreditSystem, kind: str, key: str, archived: bool
) -> None:
    if (row.archived_at is not None) != archived:
        row.archived_at = utcnow() if archived else None
        action = "archived" if archived else "unarchived"
        audit.record(actor, f"{kind}.{action}", target=f"{kind}:{key}")


@transactional
def set_credit_cost(
    actor: Actor, feature_key: object, *, credit_system: object, cost: object
) -> CreditCost:
    """Make a feature credit-based: each unit costs ``cost`` credits of ``credit_system``."""
    require(actor, ADMIN)
    feature = get_feature(feature_key=feature_key)
    if feature.type == "boolean":
        raise FeatureNotRecordable(
            f"Feature {feature.key!r} is boolean: it is never recorded, so it has no credit cost.",
            field="feature_key",
        )
    system = get_credit_system(credit_system)
    cost_micros = parse_micros(cost, field="cost")
    if cost_micros <= 0:
        raise ValidationError("`cost` must be greater than zero.", field="cost")
    row = db.session.get(CreditCost, feature.id)
    if row is None:
        row = CreditCost(feature_id=feature.id)
        db.session.add(row)
    row.credit_system_id = system.id
    row.cost_micros = cost_micros
    row.updated_at = utcnow()
    audit.record(
        actor,
        "credit_cost.set",
        target=f"feature:{feature.key}",
        details={"credit_system": system.key, "cost": format_micros(cost_micros)},
    )
    return row


@transactional
def remove_credit_cost(actor: Actor, feature_key: object) -> None:
    require(actor, ADMIN)
    feature = get_feature(feature_key=feature_key)
    row = db.session.get(CreditCost, feature.id)
    if row is None:
        raise NotFound(f"Feature {feature.key!r} has no credit cost.", field="feature_key")
    db.session.delete(row)
    audit.record(actor, "credit_cost.removed", target=f"feature:{feature.key}")


# ---------------------------------------------------------------- entitlements


class _Unset:
    def __repr__(self) -> str:
        return "UNSET"


UNSET: Any = _Unset()  # a field not sent (PATCH), unlike None (an unlimited allowance)
ENTITLEMENT_FIELDS = ("allowance", "reset_period", "overage")


@transactional
def replace_entitlement(
    actor: Actor,
    customer_key: object,
    feature_key: object,
    *,
    allowance: object = UNSET,
    reset_period: object = UNSET,
    overage: object = UNSET,
) -> Entitlement:
    """PUT: the whole entitlement. Every field is required (``allowance`` None = unlimited): a
    missing one is an error, never a default that silently changes what was there."""
    require(actor, ADMIN)
    values = {"allowance": allowance, "reset_period": reset_period, "overage": overage}
    for name, value in values.items():
        if value is UNSET:
            raise ValidationError(f"`{name}` is required.", field=name)
    return _set_entitlement(actor, customer_key, feature_key, **values)


@transactional
def update_entitlement(
    actor: Actor, customer_key: object, feature_key: object, **changes: object
) -> Entitlement:
    """PATCH: only the fields given change; the others keep their value. The entitlement must
    exist (a new one is made with `replace_entitlement`)."""
    require(actor, ADMIN)
    unknown = sorted(set(changes) - set(ENTITLEMENT_FIELDS))
    if unknown:
        raise ValidationError(f"`{unknown[0]}` is not a field of an entitlement.", field=unknown[0])
    customer = get_customer(customer_key)
    feature = get_feature(feature_key=feature_key)
    # Locked: the fields not sent are kept as they are now, not as a concurrent edit left them.
    current = _existing_entitlement(customer, feature, lock=customer.plan_id is None)
    if customer.plan_id is not None:  # on a plan: the fields sent become an override
        from . import plans

        sent = {k: v for k, v in changes.items() if v is not UNSET}
        return plans.set_override(actor, customer, feature, sent, replace=False)
    values: dict[str, object] = {
        "allowance": None
        if current.allowance_micros is None
        else format_micros(current.allowance_micros),
        "reset_period": current.reset_period,
        "overage": current.overage,
    }
    values.update({k: v for k, v in changes.items() if v is not UNSET})
    return _set_entitlement(actor, customer.key, feature.key, **values)


@transactional
def set_entitlement(
    actor: Actor,
    customer_key: object,
    feature_key: object,
    *,
    allowance: object = None,
    reset_period: object = "never",
    overage: object = "block",
) -> Entitlement:
    """Create or change what a customer may use of a feature (allowance None = unlimited), with
    defaults for what is not given (the catalog's own setup; the doors use replace/update)."""
    return _set_entitlement(
        actor,
        customer_key,
        feature_key,
        allowance=allowance,
        reset_period=reset_period,
        overage=overage,
    )


def _set_entitlement(
    actor: Actor,
    customer_key: object,
    feature_key: object,
    *,
    allowance: object,
    reset_period: object,
    overage: object,
) -> Entitlement:
    """An allowance under what is already used in the current period, with the `block` policy, is
    refused (reclaim first), so that `used <= allowance` stays true; a new reset period while the
    current period already has usage waits for that period's end (scheduled: the counter never
    mixes two kinds of period), and is refused only for `never`, which has no end (plans.judge,
    the rule of every door). A customer on a plan gets an override instead (plans.set_override).

    The entitlement's row is locked before `used` is read: RecordUsage and corrections lock it
    before they judge, so usage that has not committed yet is waited for, never missed."""
    from . import plans

    require(actor, ADMIN)
    customer = get_customer(customer_key)
    feature = get_feature(feature_key=feature_key)
    spec = plans.entitlement_spec(feature, allowance, reset_period, overage)
    if customer.plan_id is not None:
        return plans.set_override(
            actor,
            customer,
            feature,
            {"allowance": allowance, "reset_period": reset_period, "overage": overage},
            replace=True,
        )
    entitlement = entitlement_row(customer, feature, lock=True)
    now = utcnow()
    decision = plans.judge(None, spec, 0, now)
    if entitlement is not None:
        current = plans.Spec(
            entitlement.allowance_micros, entitlement.reset_period, entitlement.overage
        )
        used = (
            0
            if feature.type == "boolean"
            else _used(customer.id, feature.id, period_start(now, entitlement.reset_period))
        )
        decision = plans.judge(current, spec, used, now)
    if isinstance(decision, plans.Blocker):
        raise_blocked(decision)
        raise AssertionError("unreachable")
    old_allowance = None if entitlement is None else entitlement.allowance_micros
    new_allowance = decision.spec.allowance
    if feature.type != "boolean" and new_allowance and new_allowance != old_allowance:
        # An allowance lowered past what the period used reaches its percentages now
        # (docs/domain.md, "Alerts"); the entitlement's lock orders this with usage writes
        # (a new entitlement has none: no usage is recorded without one).
        start = period_start(now, decision.spec.reset_period)
        outbox.emit_many(
            db.session.connection(),
            alerts.allowance_events(
                customer_key=customer.key,
                feature_key=feature.key,
                used=_used(customer.id, feature.id, start, lock=True),
                old_allowance=old_allowance,
                new_allowance=new_allowance,
                period_start=start,
                at=now,
                shares=alerts.percentages(),
            ),
        )
    if entitlement is None:
        entitlement = Entitlement(customer_id=customer.id, feature_id=feature.id)
        db.session.add(entitlement)
    entitlement.allowance_micros = decision.spec.allowance
    entitlement.reset_period = decision.spec.reset_period
    entitlement.overage = decision.spec.overage
    entitlement.pending_reset_period = decision.pending_reset
    entitlement.pending_reset_at = decision.pending_at
    entitlement.source = "customer"
    entitlement.overridden = None
    entitlement.updated_at = now
    details: dict[str, object] = plans.spec_json(spec)
    if decision.pending_at is not None:
        details["reset_period_from"] = decision.pending_at.isoformat()
    audit.record(
        actor,
        "entitlement.set",
        customer_key=customer.key,
        target=f"feature:{feature.key}",
        details=details,
    )
    return entitlement


def raise_blocked(blocker: Any) -> NoReturn:
    """The single-entitlement doors' refusal (plans.Blocker), as before plans: a validation
    error on the field."""
    if blocker.field == "reset_period":
        raise ValidationError(
            "The reset period `never` has no end: it can change only while it has no usage.",
            field="reset_period",
        )
    raise ValidationError(
        f"{format_micros(blocker.used)} already used this period: the allowance cannot be lower "
        "while overage is blocked.",
        field="allowance",
    )


@transactional
def remove_entitlement(
    actor: Actor, customer_key: object, feature_key: object
) -> Literal["override", "entitlement"]:
    """What was removed: a customer on a plan loses its override (the plan's value is back),
    one without a plan its entitlement. Decided in the same transaction as the removal."""
    require(actor, ADMIN)
    customer = get_customer(customer_key)
    feature = get_feature(feature_key=feature_key)
    if customer.plan_id is not None:
        from . import plans

        plans.remove_override(actor, customer, feature)
        return "override"
    db.session.delete(_existing_entitlement(customer, feature))
    audit.record(
        actor, "entitlement.removed", customer_key=customer.key, target=f"feature:{feature.key}"
    )
    return "entitlement"


def entitlement_of(customer_key: object, feature_key: object) -> Entitlement | None:
    """The customer's effective entitlement to the feature, or None (a read)."""
    return entitlement_row(get_customer(customer_key), get_feature(feature_key=feature_key))


def entitlement_row(
    customer: Customer, feature: Feature, *, lock: bool = False
) -> Entitlement | None:
    """The entitlement row; ``lock`` (a write) holds it until the commit, as read after any
    concurrent writer of it committed (domain.md, "Concurrent edits and usage")."""
    stmt = select(Entitlement).where(
        Entitlement.customer_id == customer.id, Entitlement.feature_id == feature.id
    )
    if lock:
        stmt = stmt.with_for_update().execution_options(populate_existing=True)
    return db.session.scalar(stmt)


def _existing_entitlement(
    customer: Customer, feature: Feature, *, lock: bool = False
) -> Entitlement:
    entitlement = entitlement_row(customer, feature, lock=lock)
    if entitlement is None:
        raise NotFound("The customer has no entitlement to this feature.", field="feature_key")
    return entitlement


def _used(customer_id: int, feature_id: int, start: Any, *, lock: bool = False) -> int:
    stmt = select(UsageCounter.used_micros).where(
        UsageCounter.customer_id == customer_id,
        UsageCounter.feature_id == feature_id,
        UsageCounter.period_start == start,
    )
    return db.session.scalar(stmt.with_for_update() if lock else stmt) or 0
