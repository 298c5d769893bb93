"""Plans (domain.md, "Plans"): bundles of entitlements and included credits that customers are
put on, customer overrides on top, plan edits and plan changes under the rule of every
entitlement change, and the issue of included credits.

A customer's effective entitlements stay materialized in `entitlements` (the usage hot path
reads only that table); every write here recomputes them from plan ⊕ overrides (rules.merge)
and checks each change with rules.judge."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import and_, delete, func, insert, select

from ...errors import Conflict, NotFound, PlanChangeBlocked, ValidationError
from ...extensions import db
from ...models import (
    OVERAGE_POLICIES,
    PLAN_CREDIT_PERIODS,
    RESET_PERIODS,
    CreditSystem,
    Customer,
    CustomerOverride,
    Entitlement,
    Feature,
    Plan,
    PlanCredit,
    PlanCreditIssuance,
    PlanEntitlement,
    UsageCounter,
    utcnow,
)
from .. import alerts, audit, credits, outbox, validation
from ..actors import ADMIN, VIEW, Actor, require
from ..money import format_micros, parse_micros
from ..periods import effective_period, next_reset, period_start
from ..tx import transactional
from .rules import (
    FIELDS,
    Blocker,
    Decision,
    Effective,
    Override,
    Spec,
    due_issue,
    judge,
    merge,
)

__all__ = [
    "FIELDS",
    "Blocker",
    "Decision",
    "Effective",
    "Override",
    "Spec",
    "judge",
    "merge",
]

PLANS_ACTOR = Actor(kind="system", id=None, name="plans", role="admin")
DEFAULT_BATCH = 200
WHEN = ("now", "period_end")

# ---------------------------------------------------------------- validation


def entitlement_spec(
    feature: Feature, allowance: object, reset_period: object, overage: object
) -> Spec:
    """An entitlement's values, checked for the feature (the one check of every door: a
    customer's entitlement, an override, a plan entitlement)."""
    period = validation.choice(reset_period or "never", RESET_PERIODS, field="reset_period")
    policy = validation.choice(overage or "block", OVERAGE_POLICIES, field="overage")
    return Spec(_allowance(feature, allowance), _reset(feature, period), policy)


def _allowance(feature: Feature, allowance: object) -> int | None:
    micros = None if allowance is None else parse_micros(allowance, field="allowance")
    if micros is not None and micros < 0:
        raise ValidationError("`allowance` may not be negative.", field="allowance")
    if feature.type == "boolean" and micros is not None:
        raise ValidationError("A boolean feature has no allowance.", field="allowance")
    if feature.type == "persistent" and micros is not None and micros % 1_000_000:
        raise ValidationError(
            "A persistent feature's allowance is a whole number.", field="allowance"
        )
    return micros


def _reset(feature: Feature, period: str) -> str:
    if feature.type != "consumable" and period != "never":
        raise ValidationError(
            f"A {feature.type} feature has no reset period; use `never`.", field="reset_period"
        )
    return period


def spec_json(spec: Spec) -> dict[str, Any]:
    return {
        "allowance": None if spec.allowance is None else format_micros(spec.allowance),
        "reset_period": spec.reset_period,
        "overage": spec.overage,
    }


# ---------------------------------------------------------------- reads


def get_plan(key: object, *, field: str = "plan") -> Plan:
    key = validation.lookup_key(key, field=field)
    plan = db.session.scalar(select(Plan).where(Plan.key == key))
    if plan is None:
        raise NotFound(f"No plan with key {key!r}.", field=field)
    return plan


@dataclass
class PlanView:
    plan: Plan
    entitlements: list[tuple[Feature, PlanEntitlement]]
    credits: list[tuple[CreditSystem, PlanCredit]]
    customers: int

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.plan.key,
            "name": self.plan.name,
            "status": self.plan.status,
            "prorate_included_credits": self.plan.prorate_included_credits,
            "revision": self.plan.revision,
            "customers": self.customers,
            "entitlements": [
                {"feature_key": f.key, **spec_json(_plan_spec(pe))} for f, pe in self.entitlements
            ],
            "included_credits": [
                {
                    "credit_system": s.key,
                    "amount": format_micros(pc.amount_micros),
                    "period": pc.period,
                }
                for s, pc in self.credits
            ],
            "created_at": self.plan.created_at.isoformat(),
            "updated_at": self.plan.updated_at.isoformat(),
        }


def _plan_spec(row: PlanEntitlement) -> Spec:
    return Spec(row.allowance_micros, row.reset_period, row.overage)


def customer_counts() -> dict[int, int]:
    """Customers on each plan (plan id -> count): one grouped query."""
    rows = db.session.execute(
        select(Customer.plan_id, func.count())
        .where(Customer.plan_id.is_not(None))
        .group_by(Customer.plan_id)
    )
    return {plan_id: count for plan_id, count in rows if plan_id is not None}


def list_plans(actor: Actor, *, status: str | None = None) -> list[PlanView]:
    """Every plan with its entitlements, included credits and customer count (4 queries)."""
    require(actor, VIEW)
    stmt = select(Plan).order_by(Plan.key)
    if status is not None:
        stmt = stmt.where(
            Plan.status == validation.choice(status, ("active", "archived"), field="status")
        )
    plans = list(db.session.scalars(stmt))
    return _views(plans)


def _views(plans: Sequence[Plan]) -> list[PlanView]:
    ids = [p.id for p in plans]
    ents: dict[int, list[tuple[Feature, PlanEntitlement]]] = {i: [] for i in ids}
    creds: dict[int, list[tuple[CreditSystem, PlanCredit]]] = {i: [] for i in ids}
    if ids:
        for f, pe in db.session.execute(
            select(Feature, PlanEntitlement)
            .join(PlanEntitlement, PlanEntitlement.feature_id == Feature.id)
            .where(PlanEntitlement.plan_id.in_(ids))
            .order_by(Feature.key)
        ):
            ents[pe.plan_id].append((f, pe))
        for s, pc in db.session.execute(
            select(CreditSystem, PlanCredit)
            .join(PlanCredit, PlanCredit.credit_system_id == CreditSystem.id)
            .where(PlanCredit.plan_id.in_(ids))
            .order_by(CreditSystem.key)
        ):
            creds[pc.plan_id].append((s, pc))
    counts = customer_counts()
    return [PlanView(p, ents[p.id], creds[p.id], counts.get(p.id, 0)) for p in plans]


def read_plan(actor: Actor, key: object) -> PlanView:
    require(actor, VIEW)
    return _views([get_plan(key)])[0]


def plan_specs(plan_id: int) -> dict[int, Spec]:
    return {
        row.feature_id: _plan_spec(row)
        for row in db.session.scalars(
            select(PlanEntitlement).where(PlanEntitlement.plan_id == plan_id)
        )
    }


def overrides_of(customer_ids: Iterable[int]) -> dict[int, dict[int, Override]]:
    out: dict[int, dict[int, Override]] = {}
    ids = list(customer_ids)
    if not ids:
        return out
    for row in db.session.scalars(
        select(CustomerOverride).where(CustomerOverride.customer_id.in_(ids))
    ):
        out.setdefault(row.customer_id, {})[row.feature_id] = _override(row)
    return out


def _override(row: CustomerOverride) -> Override:
    return Override(row.allowance_set, row.allowance_micros, row.reset_period, row.overage)


# ---------------------------------------------------------------- plan definitions (input)


@dataclass
class PlanInput:
    entitlements: dict[int, Spec]
    credits: dict[int, tuple[int, str]]  # credit system id -> (amount micros, period)


def _plan_input(entitlements: object, included_credits: object) -> PlanInput:
    if not isinstance(entitlements, list):
        raise ValidationError("`entitlements` must be a list.", field="entitlements")
    if not isinstance(included_credits, list):
        raise ValidationError("`included_credits` must be a list.", field="included_credits")
    specs: dict[int, Spec] = {}
    for item in entitlements:
        if not isinstance(item, dict):
            raise ValidationError("Each entitlement is an object.", field="entitlements")
        from ..catalog import get_feature

        feature = get_feature(feature_key=item.get("feature_key"))
        if feature.id in specs:
            raise ValidationError(f"Feature {feature.key!r} is listed twice.", field="entitlements")
        for name in FIELDS:
            if name not in item:
                raise ValidationError(f"`{name}` is required.", field=name)
        specs[feature.id] = entitlement_spec(
            feature, item["allowance"], item["reset_period"], item["overage"]
        )
    amounts: dict[int, tuple[int, str]] = {}
    for item in included_credits:
        if not isinstance(item, dict):
            raise ValidationError("Each included credit is an object.", field="included_credits")
        from ..catalog import get_credit_system

        system = get_credit_system(item.get("credit_system"))
        if system.id in amounts:
            raise ValidationError(
                f"Credit system {system.key!r} is listed twice.", field="included_credits"
            )
        micros = parse_micros(item.get("amount"), field="amount")
        if micros <= 0:
            raise ValidationError("`amount` must be greater than zero.", field="amount")
        period = validation.choice(
            item.get("period") or "month", PLAN_CREDIT_PERIODS, field="period"
        )
        amounts[system.id] = (micros, period)
    return PlanInput(specs, amounts)


def _write_definition(plan: Plan, data: PlanInput) -> None:
    db.session.execute(delete(PlanEntitlement).where(PlanEntitlement.plan_id == plan.id))
    db.session.execute(delete(PlanCredit).where(PlanCredit.plan_id == plan.id))
    for fid, spec in data.entitlements.items():
        db.session.add(
            PlanEntitlement(
                plan_id=plan.id,
                feature_id=fid,
                allowance_micros=spec.allowance,
                reset_period=spec.reset_period,
                overage=spec.overage,
            )
        )
    for sid, (amount, period) in data.credits.items():
        db.session.add(
            PlanCredit(plan_id=plan.id, credit_system_id=sid, amount_micros=amount, period=period)
        )
    db.session.flush()


@transactional
def create_plan(
    actor: Actor,
    *,
    key: object,
    name: object,
    entitlements: object = (),
    included_credits: object = (),
    prorate_included_credits: object = False,
) -> Plan:
    require(actor, ADMIN)
    key = validation.key(key, field="key", pattern=validation.FEATURE_KEY_RE)
    label = validation.text(name, field="name", max_len=200)
    data = _plan_input(
        list(entitlements) if isinstance(entitlements, tuple) else entitlements,
        list(included_credits) if isinstance(included_credits, tuple) else included_credits,
    )
    if db.session.scalar(select(Plan.id).where(Plan.key == key)) is not None:
        raise Conflict(f"A plan with key {key!r} already exists.", field="key")
    now = utcnow()
    plan = Plan(
        key=key,
        name=label,
        status="active",
        prorate_included_credits=_flag(prorate_included_credits),
        revision=1,
        created_at=now,
        updated_at=now,
    )
    db.session.add(plan)
    db.session.flush()
    _write_definition(plan, data)
    audit.record(actor, "plan.created", target=f"plan:{key}", details={"name": label})
    return plan


def _flag(value: object) -> bool:
    if isinstance(value, bool):
        return value
    if value in ("true", "on", "1", 1):
        return True
    if value in (None, "", "false", "off", "0", 0):
        return False
    raise ValidationError("Must be true or false.", field="prorate_included_credits")


@transactional
def set_plan_status(actor: Actor, key: object, status: object) -> Plan:
    """An archived plan takes no new customers; those on it stay, with their included credits."""
    require(actor, ADMIN)
    plan = get_plan(key, field="key")
    value = validation.choice(status, ("active", "archived"), field="status")
    if plan.status != value:
        plan.status = value
        plan.updated_at = utcnow()
        audit.record(
            actor,
            f"plan.{'archived' if value == 'archived' else 'unarchived'}",
            target=f"plan:{plan.key}",
        )
    return plan


# ---------------------------------------------------------------- materializing


@dataclass(frozen=True)
class Blocked:
    """One entitlement a change cannot apply to now (listed for the person deciding)."""

    customer_key: str
    feature_key: str
    field: str
    used: int
    allowance: int | None

    def to_json(self) -> dict[str, Any]:
        return {
            "customer_key": self.customer_key,
            "feature_key": self.feature_key,
            "field": self.field,
            "used": format_micros(self.used),
            "allowance": None if self.allowance is None else format_micros(self.allowance),
        }


class _Context:
    """What a batch of customers needs, read in a constant number of queries: features, current
    entitlement rows, overrides and the counters of every period that can be current now.

    ``lock`` (a change): the entitlement rows are locked first, in (customer, feature) order,
    then the counters: RecordUsage and corrections lock the entitlement rows before they judge
    too, so the usage read here includes every write that judged against the old values, and
    none can follow them (docs/domain.md, "Concurrent edits and usage")."""

    def __init__(self, customers: Sequence[Customer], now: datetime, *, lock: bool) -> None:
        self.now = now
        ids = [c.id for c in customers]
        self.features = {f.id: f for f in db.session.scalars(select(Feature))}
        self.rows: dict[int, dict[int, Entitlement]] = {i: {} for i in ids}
        self.overrides = overrides_of(ids)
        self.used: dict[tuple[int, int, datetime], int] = {}
        if not ids:
            return
        rows = (
            select(Entitlement)
            .where(Entitlement.customer_id.in_(ids))
            .execution_options(populate_existing=True)
        )
        if lock:
            rows = rows.order_by(Entitlement.customer_id, Entitlement.feature_id).with_for_update()
        for row in db.session.scalars(rows):
            self.rows[row.customer_id][row.feature_id] = row
        starts = {period_start(now, p) for p in RESET_PERIODS}
        stmt = select(UsageCounter).where(
            UsageCounter.customer_id.in_(ids), UsageCounter.period_start.in_(starts)
        )
        if lock:
            stmt = stmt.with_for_update()
        for counter in db.session.scalars(stmt):
            self.used[(counter.customer_id, counter.feature_id, counter.period_start)] = (
                counter.used_micros
            )

    def used_now(self, customer_id: int, feature_id: int, reset_period: str) -> int:
        feature = self.features[feature_id]
        if feature.type == "boolean":
            return 0
        start = period_start(self.now, effective_period(feature.type, reset_period))
        return self.used.get((customer_id, feature_id, start), 0)


def _current(row: Entitlement | None) -> Spec | None:
    return None if row is None else Spec(row.allowance_micros, row.reset_period, row.overage)


def _decide(
    customer: Customer, target: dict[int, Effective], ctx: _Context
) -> tuple[dict[int, Decision], list[Blocked]]:
    decisions: dict[int, Decision] = {}
    blocked: list[Blocked] = []
    rows = ctx.rows[customer.id]
    for fid, eff in target.items():
        row = rows.get(fid)
        current = _current(row)
        used = 0 if current is None else ctx.used_now(customer.id, fid, current.reset_period)
        verdict = judge(current, eff.spec, used, ctx.now)
        if isinstance(verdict, Blocker):
            blocked.append(
                Blocked(
                    customer.key,
                    ctx.features[fid].key,
                    verdict.field,
                    verdict.used,
                    verdict.allowance,
                )
            )
        else:
            decisions[fid] = verdict
    return decisions, blocked


def _write(
    customer: Customer,
    target: dict[int, Effective],
    decisions: dict[int, Decision],
    ctx: _Context,
) -> list[str]:
    """Write the decided rows, delete those no longer granted; the feature keys that changed."""
    rows = ctx.rows[customer.id]
    changed: list[str] = []
    crossings: list[dict[str, Any]] = []
    for fid, decision in decisions.items():
        eff = target[fid]
        row = rows.get(fid)
        if row is None:
            row = Entitlement(customer_id=customer.id, feature_id=fid)
            db.session.add(row)
            rows[fid] = row
        feature, new_allowance = ctx.features[fid], decision.spec.allowance
        if feature.type != "boolean" and new_allowance and new_allowance != row.allowance_micros:
            # As a single entitlement edit (catalog): an allowance lowered past what the period
            # used reaches its percentages now (docs/domain.md, "Alerts").
            period = effective_period(feature.type, decision.spec.reset_period)
            crossings += alerts.allowance_events(
                customer_key=customer.key,
                feature_key=feature.key,
                used=ctx.used_now(customer.id, fid, decision.spec.reset_period),
                old_allowance=row.allowance_micros,
                new_allowance=new_allowance,
                period_start=period_start(ctx.now, period),
                at=ctx.now,
                shares=alerts.percentages(),
            )
        values = (
            decision.spec.allowance,
            decision.spec.reset_period,
            decision.spec.overage,
            eff.source,
            ",".join(eff.overridden) or None,
            decision.pending_reset,
            decision.pending_at,
        )
        before = (
            row.allowance_micros,
            row.reset_period,
            row.overage,
            row.source,
            row.overridden,
            row.pending_reset_period,
            row.pending_reset_at,
        )
        if values != before:
            (
                row.allowance_micros,
                row.reset_period,
                row.overage,
                row.source,
                row.overridden,
                row.pending_reset_period,
                row.pending_reset_at,
            ) = values
            row.updated_at = ctx.now
            changed.append(ctx.features[fid].key)
    for fid in [f for f in rows if f not in target]:
        db.session.delete(rows.pop(fid))
        changed.append(ctx.features[fid].key)
    outbox.emit_many(db.session.connection(), crossings)
    return changed


def _target(
    customer: Customer, plan_id: int | None, specs: dict[int, Spec], ctx: _Context
) -> dict[int, Effective]:
    if plan_id is None:
        # No plan: the rows are the customer's own, as they are.
        return {
            fid: Effective(
                Spec(r.allowance_micros, r.pending_reset_period or r.reset_period, r.overage),
                "customer",
                (),
            )
            for fid, r in ctx.rows[customer.id].items()
        }
    return merge(specs, ctx.overrides.get(customer.id, {}))


def _pin(customer: Customer, blocked: Sequence[Blocked], ctx: _Context) -> None:
    """Keep a blocked customer's current values for the blocked fields as an override (a plan
    edit applied to the others: the customer stays where it is until someone decides)."""
    by_key = {f.key: f for f in ctx.features.values()}
    for item in blocked:
        fid = by_key[item.feature_key].id
        row = ctx.rows[customer.id][fid]
        existing = db.session.scalar(
            select(CustomerOverride).where(
                CustomerOverride.customer_id == customer.id, CustomerOverride.feature_id == fid
            )
        )
        if existing is None:
            existing = CustomerOverride(
                customer_id=customer.id, feature_id=fid, allowance_set=False
            )
            db.session.add(existing)
        if item.field == "allowance":
            existing.allowance_set = True
            existing.allowance_micros = row.allowance_micros
            existing.overage = row.overage
        else:
            existing.reset_period = row.reset_period
        existing.updated_at = ctx.now
        ctx.overrides.setdefault(customer.id, {})[fid] = _override(existing)
    db.session.flush()


# ---------------------------------------------------------------- overrides (the entitlement doors)


def set_override(
    actor: Actor, customer: Customer, feature: Feature, changes: dict[str, object], *, replace: bool
) -> Entitlement:
    """A PUT (``replace``: every field) or PATCH of a customer's entitlement while it is on a plan
    writes an override: only the fields given, the others keep following the plan. Runs inside the
    caller's transaction (catalog)."""
    now = utcnow()
    existing = db.session.scalar(
        select(CustomerOverride).where(
            CustomerOverride.customer_id == customer.id, CustomerOverride.feature_id == feature.id
        )
    )
    before = (
        Override(False, None, None, None) if existing is None or replace else _override(existing)
    )
    allowance_set, allowance = before.allowance_set, before.allowance
    reset, overage = before.reset_period, before.overage
    if "allowance" in changes:
        allowance_set, allowance = True, _allowance(feature, changes["allowance"])
    if "reset_period" in changes:
        reset = _reset(
            feature,
            validation.choice(
                changes["reset_period"] or "never", RESET_PERIODS, field="reset_period"
            ),
        )
    if "overage" in changes:
        overage = validation.choice(
            changes["overage"] or "block", OVERAGE_POLICIES, field="overage"
        )
    new = Override(allowance_set, allowance, reset, overage)
    assert customer.plan_id is not None
    specs = plan_specs(customer.plan_id)
    if feature.id not in specs and not new.complete:
        raise ValidationError(
            f"The customer's plan has no {feature.key!r}: an extra feature needs every field "
            "(PUT).",
            field="allowance"
            if not allowance_set
            else ("reset_period" if reset is None else "overage"),
        )
    if existing is None:
        existing = CustomerOverride(customer_id=customer.id, feature_id=feature.id)
        db.session.add(existing)
    existing.allowance_set, existing.allowance_micros = new.allowance_set, new.allowance
    existing.reset_period, existing.overage = new.reset_period, new.overage
    existing.updated_at = now
    db.session.flush()
    _sync_one_feature(actor, customer, feature, specs, now)
    audit.record(
        actor,
        "entitlement.override_set",
        customer_key=customer.key,
        target=f"feature:{feature.key}",
        details={
            "plan": _plan_key(customer.plan_id),
            "fields": list(new.fields),
            **{
                k: v
                for k, v in spec_json(Spec(allowance, reset or "", overage or "")).items()
                if k in new.fields
            },
        },
    )
    row = db.session.scalar(
        select(Entitlement).where(
            Entitlement.customer_id == customer.id, Entitlement.feature_id == feature.id
        )
    )
    assert row is not None
    return row


def remove_override(actor: Actor, customer: Customer, feature: Feature) -> None:
    """DELETE of a customer's entitlement while on a plan: the override goes, the plan's value
    comes back (or the feature goes, when the plan lacks it)."""
    existing = db.session.scalar(
        select(CustomerOverride).where(
            CustomerOverride.customer_id == customer.id, CustomerOverride.feature_id == feature.id
        )
    )
    if existing is None:
        raise NotFound(
            f"The customer has no override of {feature.key!r}; its plan's entitlement is changed "
            "on the plan (or overridden with PUT).",
            field="feature_key",
        )
    db.session.delete(existing)
    db.session.flush()
    assert customer.plan_id is not None
    _sync_one_feature(actor, customer, feature, plan_specs(customer.plan_id), utcnow())
    audit.record(
        actor,
        "entitlement.override_removed",
        customer_key=customer.key,
        target=f"feature:{feature.key}",
        details={"plan": _plan_key(customer.plan_id)},
    )


def _sync_one_feature(
    actor: Actor, customer: Customer, feature: Feature, specs: dict[int, Spec], now: datetime
) -> None:
    ctx = _Context([customer], now, lock=True)
    target = merge(specs, ctx.overrides.get(customer.id, {}))
    only = {fid: eff for fid, eff in target.items() if fid == feature.id}
    decisions, blocked = _decide(customer, only, ctx)
    if blocked:
        from ..catalog import raise_blocked

        raise_blocked(blocked[0])
    # Keep the other features' rows as they are: only this feature changes.
    ctx.rows[customer.id] = {
        fid: row for fid, row in ctx.rows[customer.id].items() if fid == feature.id
    }
    _write(customer, only, decisions, ctx)
    db.session.flush()


def _refuse(blocked: Sequence[Blocked], what: str) -> None:
    first = blocked[0]
    if first.field == "allowance":
        message = (
            f"{what} would put {first.customer_key}'s {first.feature_key} allowance of "
            f"{format_micros(first.allowance or 0)} under the {format_micros(first.used)} already "
            "used while overage is blocked: reclaim first"
        )
    else:
        message = (
            f"{what} would change {first.customer_key}'s {first.feature_key} reset period, which "
            "has usage and no period end (`never`)"
        )
    if len(blocked) > 1:
        message += f" ({len(blocked)} entitlements blocked, listed in details)"
    raise PlanChangeBlocked(
        message + ".",
        field="allowance" if first.field == "allowance" else "reset_period",
        blocked=[b.to_json() for b in blocked[:1000]],
        blocked_count=len(blocked),
    )


def _plan_key(plan_id: int | None) -> str | None:
    if plan_id is None:
        return None
    return db.session.scalar(select(Plan.key).where(Plan.id == plan_id))


# ---------------------------------------------------------------- a customer's plan


@dataclass
class PlanChange:
    customer: Customer
    plan: Plan | None
    when: str
    at: datetime
    scheduled: bool
    issued: int = 0  # included credit grants issued at once


def period_end(now: datetime) -> datetime:
    """The end of the current period for a scheduled plan change: the next UTC month start."""
    end = next_reset(now, "month")
    assert end is not None
    return end


@transactional
def change_customer_plan(
    actor: Actor, customer_key: object, plan_key: object, *, when: object = "now"
) -> PlanChange:
    """Put a customer on a plan (``plan_key`` None: no plan), now or at the end of the current
    period (scheduled; `flask plans tick` applies it). Now: usage so far stays counted, and an
    allowance the usage already passes (seats above the new allowance) refuses the change with
    the list of what to reclaim; the new plan's included credits are issued at once. The same
    plan as now, `now`, cancels a scheduled change."""
    require(actor, ADMIN)
    from ..catalog import get_customer

    customer = get_customer(customer_key, lock=True)
    mode = validation.choice(when or "now", WHEN, field="when")
    plan = None if plan_key in (None, "") else get_plan(plan_key)
    if plan is not None and plan.status != "active" and plan.id != customer.plan_id:
        raise ValidationError(
            f"Plan {plan.key!r} is archived: it takes no new customers.", field="plan"
        )
    if customer.status != "active":
        raise ValidationError(f"Customer {customer.key!r} is archived.", field="customer_key")
    now = utcnow()
    target_id = None if plan is None else plan.id
    if mode == "period_end":
        at = period_end(now)
        # Seats do not reset at the period's end: those above the new allowance refuse now.
        _check_change(customer, target_id, at, persistent_only=True)
        customer.pending_plan_id = target_id
        customer.pending_plan_at = at
        audit.record(
            actor,
            "plan.change_scheduled",
            customer_key=customer.key,
            target=None if plan is None else f"plan:{plan.key}",
            details={"plan": None if plan is None else plan.key, "at": at.isoformat()},
        )
        return PlanChange(customer, plan, mode, at, True)
    customer.pending_plan_id = None
    customer.pending_plan_at = None
    if target_id == customer.plan_id:
        return PlanChange(customer, plan, mode, now, False)
    issued = _apply_plan(actor, customer, target_id, now, since=now)
    return PlanChange(customer, plan, mode, now, False, issued)


def _check_change(
    customer: Customer, plan_id: int | None, at: datetime, *, persistent_only: bool
) -> None:
    ctx = _Context([customer], utcnow(), lock=True)
    specs = {} if plan_id is None else plan_specs(plan_id)
    target = _target(customer, plan_id, specs, ctx)
    _, blocked = _decide(customer, target, ctx)
    if persistent_only:
        by_key = {f.key: f for f in ctx.features.values()}
        blocked = [b for b in blocked if by_key[b.feature_key].type == "persistent"]
    if blocked:
        _refuse(blocked, "The plan change")


def _apply_plan(
    actor: Actor, customer: Customer, plan_id: int | None, now: datetime, *, since: datetime
) -> int:
    """Move the customer onto ``plan_id`` (checked, written, audited) and issue the new plan's
    included credits of the current period. Inside the caller's transaction."""
    ctx = _Context([customer], now, lock=True)
    old_key = _plan_key(customer.plan_id)
    specs = {} if plan_id is None else plan_specs(plan_id)
    if plan_id is None:
        # Leaving a plan: what the customer has stays, as its own entitlements.
        for override in db.session.scalars(
            select(CustomerOverride).where(CustomerOverride.customer_id == customer.id)
        ):
            db.session.delete(override)
        ctx.overrides.pop(customer.id, None)
        target = {
            fid: Effective(Spec(r.allowance_micros, r.reset_period, r.overage), "customer", ())
            for fid, r in ctx.rows[customer.id].items()
        }
        decisions = {
            fid: Decision(target[fid].spec, r.pending_reset_period, r.pending_reset_at)
            for fid, r in ctx.rows[customer.id].items()
        }
        blocked: list[Blocked] = []
    else:
        if customer.plan_id is None and ctx.rows[customer.id]:
            # Joining a plan: a feature of the customer's own the plan lacks stays, as an
            # override (an extra feature); the plan's features take the plan's values.
            for fid, row in ctx.rows[customer.id].items():
                if fid in specs:
                    continue
                ov = CustomerOverride(
                    customer_id=customer.id,
                    feature_id=fid,
                    allowance_set=True,
                    allowance_micros=row.allowance_micros,
                    reset_period=row.pending_reset_period or row.reset_period,
                    overage=row.overage,
                    updated_at=now,
                )
                db.session.add(ov)
                ctx.overrides.setdefault(customer.id, {})[fid] = _override(ov)
        target = merge(specs, ctx.overrides.get(customer.id, {}))
        decisions, blocked = _decide(customer, target, ctx)
    if blocked:
        _refuse(blocked, "The plan change")
    changed = _write(customer, target, decisions, ctx)
    customer.plan_id = plan_id
    customer.plan_assigned_at = None if plan_id is None else since
    customer.plan_revision = 0 if plan_id is None else _revision(plan_id)
    new_key = _plan_key(plan_id)
    audit.record(
        actor,
        "plan.changed",
        customer_key=customer.key,
        target=None if new_key is None else f"plan:{new_key}",
        details={"from": old_key, "to": new_key, "changed": changed, "at": since.isoformat()},
    )
    db.session.flush()
    if plan_id is None:
        return 0
    return _issue_for_customers([customer.id], now, plan_id=plan_id)


def _revision(plan_id: int) -> int:
    return db.session.scalar(select(Plan.revision).where(Plan.id == plan_id)) or 0


# ---------------------------------------------------------------- editing a plan


@dataclass
class EditPreview:
    plan: Plan
    affected: int  # customers on the plan
    blocked: list[Blocked]
    scheduled_resets: int  # entitlements whose new reset period waits for their period's end

    @property
    def blocked_customers(self) -> list[str]:
        return sorted({b.customer_key for b in self.blocked})


@dataclass
class EditResult:
    plan: Plan
    updated: int
    kept: list[Blocked] = field(default_factory=list)  # pinned as overrides (apply_to_others)


def preview_plan_edit(
    actor: Actor, key: object, *, entitlements: object, included_credits: object = None
) -> EditPreview:
    """Who an edit of the plan's entitlements affects and who blocks it, without writing."""
    require(actor, ADMIN)
    plan = get_plan(key, field="key")
    data = _plan_input(entitlements, [] if included_credits is None else included_credits)
    return _preview(plan, data.entitlements, utcnow())


def _preview(
    plan: Plan, specs: dict[int, Spec], now: datetime, *, batch: int = 1000
) -> EditPreview:
    blocked: list[Blocked] = []
    scheduled = affected = 0
    after = 0
    while True:
        customers = list(
            db.session.scalars(
                select(Customer)
                .where(Customer.plan_id == plan.id, Customer.id > after)
                .order_by(Customer.id)
                .limit(batch)
            )
        )
        if not customers:
            break
        after = customers[-1].id
        ctx = _Context(customers, now, lock=False)
        for customer in customers:
            affected += 1
            target = merge(specs, ctx.overrides.get(customer.id, {}))
            decisions, stuck = _decide(customer, target, ctx)
            blocked.extend(stuck)
            scheduled += sum(
                1
                for fid, d in decisions.items()
                if d.pending_reset is not None
                and (
                    ctx.rows[customer.id].get(fid) is None
                    or ctx.rows[customer.id][fid].pending_reset_period != d.pending_reset
                )
            )
    return EditPreview(plan, affected, blocked, scheduled)


Progress = Callable[[int, int], None]  # (customers done, customers in all)


def update_plan(
    actor: Actor,
    key: object,
    *,
    name: object = None,
    entitlements: object = None,
    included_credits: object = None,
    prorate_included_credits: object = None,
    apply_to_others: bool = False,
    batch: int = DEFAULT_BATCH,
    progress: Progress | None = None,
) -> EditResult:
    """Edit a plan; every customer on it changes, ``batch`` customers per transaction, an audit
    entry each. A `block` allowance under a customer's usage refuses the whole edit
    (`plan_change_blocked`, the customers listed) unless ``apply_to_others``: then those
    customers keep their current value as an override and the others change. A reset period a
    customer's current period has used waits for that period's end (scheduled, not refused).
    Fields left None keep their value."""
    require(actor, ADMIN)
    plan = _update_definition(
        actor, key, name, entitlements, included_credits, prorate_included_credits, apply_to_others
    )
    result = EditResult(plan, 0)
    catch_up(plan_id=plan.id, batch=batch, progress=progress, result=result, actor=actor)
    return result


@transactional
def _update_definition(
    actor: Actor,
    key: object,
    name: object,
    entitlements: object,
    included_credits: object,
    prorate: object,
    apply_to_others: bool,
) -> Plan:
    plan = get_plan(key, field="key")
    db.session.refresh(plan, with_for_update=True)
    now = utcnow()
    old_specs = plan_specs(plan.id)
    old_credits = {
        pc.credit_system_id: (pc.amount_micros, pc.period)
        for pc in db.session.scalars(select(PlanCredit).where(PlanCredit.plan_id == plan.id))
    }
    data = _plan_input(
        [] if entitlements is None else entitlements,
        [] if included_credits is None else included_credits,
    )
    if entitlements is None:
        data.entitlements = old_specs
    if included_credits is None:
        data.credits = old_credits
    if name is not None:
        plan.name = validation.text(name, field="name", max_len=200)
    if prorate is not None:
        plan.prorate_included_credits = _flag(prorate)
    if data.entitlements != old_specs:
        preview = _preview(plan, data.entitlements, now)
        if preview.blocked and not apply_to_others:
            _refuse(preview.blocked, "The plan edit")
        plan.revision += 1
    _write_definition(plan, data)
    plan.updated_at = now
    audit.record(
        actor,
        "plan.updated",
        target=f"plan:{plan.key}",
        details={"revision": plan.revision, "entitlements_changed": data.entitlements != old_specs},
    )
    return plan


def catch_up(
    *,
    plan_id: int | None = None,
    batch: int = DEFAULT_BATCH,
    progress: Progress | None = None,
    result: EditResult | None = None,
    actor: Actor = PLANS_ACTOR,
) -> int:
    """Bring every customer behind its plan's revision up to date, ``batch`` per transaction
    (a plan edit's work; also what `flask plans tick` resumes after a crash). Blocked customers
    keep their current value as an override (the edit was refused up front unless asked)."""
    behind = and_(Customer.plan_id == Plan.id, Customer.plan_revision < Plan.revision)
    base = select(func.count()).select_from(Customer).join(Plan, behind)
    if plan_id is not None:
        base = base.where(Plan.id == plan_id)
    total = db.session.scalar(base) or 0
    db.session.commit()
    done = 0
    after = 0
    if progress is not None:
        progress(0, total)
    while done < total or total == 0:
        n, after = _catch_up_batch(plan_id, after, batch, result, actor)
        if n == 0:
            break
        done += n
        if progress is not None:
            progress(min(done, total), total)
    return done


@transactional
def _catch_up_batch(
    plan_id: int | None, after: int, batch: int, result: EditResult | None, actor: Actor
) -> tuple[int, int]:
    now = utcnow()
    stmt = (
        select(Customer)
        .join(Plan, and_(Customer.plan_id == Plan.id, Customer.plan_revision < Plan.revision))
        .where(Customer.id > after)
        .order_by(Customer.id)
        .limit(batch)
        .with_for_update(of=Customer, key_share=True)  # as catalog.get_customer(lock=True)
        .execution_options(populate_existing=True)
    )
    if plan_id is not None:
        stmt = stmt.where(Plan.id == plan_id)
    customers = list(db.session.scalars(stmt))
    if not customers:
        return 0, after
    plans = {
        p.id: p
        for p in db.session.scalars(select(Plan).where(Plan.id.in_({c.plan_id for c in customers})))
    }
    specs = {pid: plan_specs(pid) for pid in plans}
    ctx = _Context(customers, now, lock=True)
    audits = []
    for customer in customers:
        assert customer.plan_id is not None
        plan = plans[customer.plan_id]
        target = merge(specs[plan.id], ctx.overrides.get(customer.id, {}))
        decisions, blocked = _decide(customer, target, ctx)
        if blocked:
            _pin(customer, blocked, ctx)
            if result is not None:
                result.kept.extend(blocked)
            target = merge(specs[plan.id], ctx.overrides.get(customer.id, {}))
            decisions, blocked = _decide(customer, target, ctx)
            assert not blocked
        changed = _write(customer, target, decisions, ctx)
        customer.plan_revision = plan.revision
        audits.append(
            audit.audit_row(
                actor,
                "plan.entitlements_updated",
                customer.key,
                f"plan:{plan.key}",
                {"revision": plan.revision, "changed": changed},
                now,
            )
        )
    from ...models import AuditLog

    db.session.flush()
    db.session.execute(insert(AuditLog), audits)
    if result is not None:
        result.updated += len(customers)
    return len(customers), customers[-1].id


# ---------------------------------------------------------------- the tick: scheduled changes


@dataclass
class TickResult:
    resets_applied: int = 0
    plan_changes: int = 0
    plan_changes_blocked: list[str] = field(default_factory=list)
    caught_up: int = 0
    credits_issued: int = 0


def tick(
    now: datetime | None = None, *, batch: int = DEFAULT_BATCH, progress: Progress | None = None
) -> TickResult:
    """The worker's job, in order: scheduled reset periods and plan changes that are due, then
    customers behind their plan's revision, then included credits of the current periods."""
    result = TickResult()
    result.resets_applied = apply_scheduled_resets(now)
    changed, blocked = apply_scheduled_changes(now)
    result.plan_changes, result.plan_changes_blocked = changed, blocked
    result.caught_up = catch_up(batch=batch)
    result.credits_issued = issue_included_credits(now, batch=batch, progress=progress)
    return result


@transactional
def apply_scheduled_resets(now: datetime | None = None) -> int:
    """Reset period changes whose period has ended take effect (their new period starts with
    no usage under the old one)."""
    at = now or utcnow()
    rows = list(
        db.session.scalars(
            select(Entitlement)
            .where(Entitlement.pending_reset_at.is_not(None), Entitlement.pending_reset_at <= at)
            .order_by(Entitlement.customer_id, Entitlement.feature_id)  # RecordUsage's lock order
            .with_for_update()
        )
    )
    for row in rows:
        assert row.pending_reset_period is not None
        row.reset_period = row.pending_reset_period
        row.pending_reset_period = None
        row.pending_reset_at = None
        row.updated_at = at
    if rows:
        audit.record(PLANS_ACTOR, "entitlement.reset_period_applied", details={"count": len(rows)})
    return len(rows)


def apply_scheduled_changes(now: datetime | None = None) -> tuple[int, list[str]]:
    """Plan changes whose time has come, one transaction each, as of their scheduled time (the
    new plan's credits are those of the period that starts then). A change blocked by seats
    above the new allowance stays scheduled and is listed."""
    at = now or utcnow()
    ids = list(
        db.session.scalars(
            select(Customer.id)
            .where(Customer.pending_plan_at.is_not(None), Customer.pending_plan_at <= at)
            .order_by(Customer.id)
        )
    )
    db.session.commit()
    done = 0
    blocked: list[str] = []
    for cid in ids:
        try:
            if _apply_scheduled_one(cid, at):
                done += 1
        except PlanChangeBlocked:
            key = db.session.scalar(select(Customer.key).where(Customer.id == cid))
            blocked.append(str(key))
    return done, blocked


@transactional
def _apply_scheduled_one(customer_id: int, now: datetime) -> bool:
    customer = db.session.scalar(
        select(Customer)
        .where(Customer.id == customer_id)
        .with_for_update(key_share=True)  # as catalog.get_customer(lock=True)
        .execution_options(populate_existing=True)
    )
    if customer is None or customer.pending_plan_at is None or customer.pending_plan_at > now:
        return False
    target, since = customer.pending_plan_id, customer.pending_plan_at
    customer.pending_plan_id = None
    customer.pending_plan_at = None
    if target != customer.plan_id and customer.status == "active":
        _apply_plan(PLANS_ACTOR, customer, target, now, since=since)
    return True


# ---------------------------------------------------------------- included credits


def issue_included_credits(
    now: datetime | None = None, *, batch: int = DEFAULT_BATCH, progress: Progress | None = None
) -> int:
    """Issue every included credit due now (rules.due_issue) that has not been issued:
    at most once per (customer, plan, credit system, period start), whatever the number of runs
    or workers (the issuance's unique key, checked again under the wallet's lock). Active
    customers and credit systems only. ``batch`` customers per transaction."""
    at = now or utcnow()
    plan_ids = list(db.session.scalars(select(PlanCredit.plan_id).distinct()))
    db.session.commit()
    issued = 0
    for plan_id in sorted(plan_ids):
        after = 0
        while True:
            ids = list(
                db.session.scalars(
                    select(Customer.id)
                    .where(
                        Customer.plan_id == plan_id,
                        Customer.status == "active",
                        Customer.id > after,
                    )
                    .order_by(Customer.id)
                    .limit(batch)
                )
            )
            db.session.commit()
            if not ids:
                break
            after = ids[-1]
            issued += _issue_batch(ids, at, plan_id)
            if progress is not None:
                progress(issued, issued)
    return issued


@transactional
def _issue_batch(customer_ids: list[int], now: datetime, plan_id: int) -> int:
    return _issue_for_customers(customer_ids, now, plan_id=plan_id)


def _issue_for_customers(customer_ids: list[int], now: datetime, *, plan_id: int) -> int:
    """Inside a write transaction: the included credits of ``plan_id`` due now for these
    customers (still on the plan), each a `granted` grant + `topup` entry + issuance row."""
    plan = db.session.get(Plan, plan_id)
    assert plan is not None
    rows = db.session.execute(
        select(PlanCredit, CreditSystem)
        .join(CreditSystem, CreditSystem.id == PlanCredit.credit_system_id)
        .where(PlanCredit.plan_id == plan_id, CreditSystem.archived_at.is_(None))
    ).all()
    if not rows:
        return 0
    customers = list(
        db.session.scalars(
            select(Customer)
            .where(
                Customer.id.in_(customer_ids),
                Customer.plan_id == plan_id,
                Customer.status == "active",
            )
            .order_by(Customer.id)
        )
    )
    issued = 0
    for customer in customers:
        since = customer.plan_assigned_at or now
        for pc, system in rows:
            due = due_issue(
                pc.amount_micros,
                pc.period,
                on_plan_since=since,
                now=now,
                prorated=plan.prorate_included_credits,
            )
            if due is None:
                continue
            wallet = credits.locked_wallet(customer, system, create=True)
            assert wallet is not None
            # Checked under the wallet's lock: a concurrent run that issued it first is seen.
            taken = db.session.scalar(
                select(PlanCreditIssuance.id).where(
                    PlanCreditIssuance.customer_id == customer.id,
                    PlanCreditIssuance.plan_id == plan_id,
                    PlanCreditIssuance.credit_system_id == system.id,
                    PlanCreditIssuance.period_start == due.period_start,
                )
            )
            if taken is not None:
                continue
            credits.book_expiries(wallet, credits.live_grants(wallet.id), now)
            from ..wallets import issue_grant

            reference = f"plan:{plan.key}:{due.period_start.date().isoformat()}"
            grant = issue_grant(
                PLANS_ACTOR,
                wallet,
                kind="granted",
                amount_micros=due.amount,
                priority=100,
                effective_at=due.effective_at,
                expires_at=due.expires_at,
                reference=reference,
                note=f"Included credits of plan {plan.key}",
                unit_price=None,
                currency=None,
                now=now,
            )
            credits.post(
                PLANS_ACTOR.label,
                wallet,
                type="topup",
                amount_micros=due.amount,
                now=now,
                grant_id=grant.id,
                kind="granted",
                reference=reference,
                note=f"Included credits of plan {plan.key}",
            )
            db.session.add(
                PlanCreditIssuance(
                    customer_id=customer.id,
                    plan_id=plan_id,
                    credit_system_id=system.id,
                    period_start=due.period_start,
                    grant_id=grant.id,
                    amount_micros=due.amount,
                    issued_at=now,
                )
            )
            db.session.flush()
            audit.record(
                PLANS_ACTOR,
                "plan.credits_issued",
                customer_key=customer.key,
                target=f"grant:{grant.id}",
                details={
                    "plan": plan.key,
                    "credit_system": system.key,
                    "amount": format_micros(due.amount),
                    "period_start": due.period_start.isoformat(),
                    "expires_at": due.expires_at.isoformat(),
                },
            )
            issued += 1
    return issued


# ---------------------------------------------------------------- customer reads


@dataclass
class CustomerPlan:
    plan: Plan | None
    pending_plan: Plan | None
    pending_at: datetime | None
    assigned_at: datetime | None

    def to_json(self) -> dict[str, Any] | None:
        if self.plan is None and self.pending_at is None:
            return None
        return {
            "key": None if self.plan is None else self.plan.key,
            "name": None if self.plan is None else self.plan.name,
            "since": self.assigned_at,
            "scheduled_change": None
            if self.pending_at is None
            else {
                "plan": None if self.pending_plan is None else self.pending_plan.key,
                "at": self.pending_at,
            },
        }


def customer_plan(customer: Customer) -> CustomerPlan:
    plan = None if customer.plan_id is None else db.session.get(Plan, customer.plan_id)
    pending = (
        None if customer.pending_plan_id is None else db.session.get(Plan, customer.pending_plan_id)
    )
    return CustomerPlan(plan, pending, customer.pending_plan_at, customer.plan_assigned_at)


def expected_rows() -> Iterable[tuple[Customer, dict[int, Effective]]]:
    """For `ledger verify`: every customer on a plan at its plan's revision, with plan ⊕
    overrides (customers behind are an edit in progress, finished by the edit or the tick)."""
    customers = list(
        db.session.scalars(
            select(Customer)
            .join(Plan, Plan.id == Customer.plan_id)
            .where(Customer.plan_revision == Plan.revision)
            .order_by(Customer.id)
        )
    )
    specs: dict[int, dict[int, Spec]] = {}
    overrides = overrides_of(c.id for c in customers)
    for customer in customers:
        assert customer.plan_id is not None
        if customer.plan_id not in specs:
            specs[customer.plan_id] = plan_specs(customer.plan_id)
        yield customer, merge(specs[customer.plan_id], overrides.get(customer.id, {}))


@dataclass
class CustomerPlanPreview:
    """What putting a customer on a plan now would do, without writing: each feature's values
    before and after (None: no entitlement), what blocks it, the included credits issued."""

    customer: Customer
    plan: Plan | None
    changes: list[
        tuple[str, Spec | None, Spec | None, str | None]
    ]  # feature, before, after, source
    blocked: list[Blocked]
    credits: list[tuple[str, int]]  # credit system key, amount issued at once


def preview_customer_plan(
    actor: Actor, customer_key: object, plan_key: object
) -> CustomerPlanPreview:
    require(actor, ADMIN)
    from ..catalog import get_customer

    customer = get_customer(customer_key)
    plan = None if plan_key in (None, "") else get_plan(plan_key)
    now = utcnow()
    ctx = _Context([customer], now, lock=False)
    rows = ctx.rows[customer.id]
    if plan is None:
        target = _target(customer, None, {}, ctx)
        target = {f: Effective(e.spec, "customer", ()) for f, e in target.items()}
    else:
        specs = plan_specs(plan.id)
        overrides = dict(ctx.overrides.get(customer.id, {}))
        if customer.plan_id is None:
            for fid, row in rows.items():
                if fid not in specs:
                    overrides[fid] = Override(
                        True, row.allowance_micros, row.reset_period, row.overage
                    )
        target = merge(specs, overrides)
    _, blocked = _decide(customer, target, ctx)
    changes = []
    for fid in sorted(set(rows) | set(target), key=lambda f: ctx.features[f].key):
        before = _current(rows.get(fid))
        after = target[fid].spec if fid in target else None
        source = target[fid].source if fid in target else None
        changes.append((ctx.features[fid].key, before, after, source))
    issued: list[tuple[str, int]] = []
    if plan is not None and plan.id != customer.plan_id:
        for pc, system in db.session.execute(
            select(PlanCredit, CreditSystem)
            .join(CreditSystem, CreditSystem.id == PlanCredit.credit_system_id)
            .where(PlanCredit.plan_id == plan.id)
        ).all():
            taken = db.session.scalar(
                select(PlanCreditIssuance.id).where(
                    PlanCreditIssuance.customer_id == customer.id,
                    PlanCreditIssuance.plan_id == plan.id,
                    PlanCreditIssuance.credit_system_id == system.id,
                    PlanCreditIssuance.period_start == period_start(now, pc.period),
                )
            )
            due = due_issue(
                pc.amount_micros,
                pc.period,
                on_plan_since=now,
                now=now,
                prorated=plan.prorate_included_credits,
            )
            if taken is None and due is not None:
                issued.append((system.key, due.amount))
    return CustomerPlanPreview(customer, plan, changes, blocked, issued)
