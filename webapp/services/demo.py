"""Demo data: a realistic catalog, customers, wallets and 60 days of usage history.

Written with bulk inserts (not one service call per event) but by the same rules: every event is
judged against its entitlement, counter and wallet in time order, so that `ledger verify` is clean
afterwards."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Table, func, insert, select, text

from ..extensions import db
from ..models import (
    DEFAULT_PRIORITY,
    AuditLog,
    CreditAllocation,
    CreditGrant,
    Customer,
    Entitlement,
    Feature,
    LedgerEntry,
    UsageCounter,
    UsageEvent,
    Wallet,
    utcnow,
)
from . import catalog
from .actors import SYSTEM, Actor
from .credits import EXPIRY_ACTOR, burn, rollup
from .credits.rules import GrantRef, allocate, due, eligible_balance
from .money import MICROS, credit_cost_micros, parse_micros
from .periods import effective_period, period_start
from .usage import add_to_daily, fingerprint

FEATURES = [
    # key, name, type, event_name, credit cost (credits per unit) or None
    ("api_calls", "API calls", "consumable", "api.call", "0.02"),
    ("candidates", "Candidates sourced", "consumable", "candidate.sourced", "0.02"),
    ("image_generations", "Image generations", "consumable", "image.generated", "0.5"),
    ("seats", "Seats", "persistent", "seat.assigned", None),
    ("sso", "Single sign-on", "boolean", "sso", None),
]
FIRST = [
    "Acme",
    "Globex",
    "Initech",
    "Umbrella",
    "Hooli",
    "Vandelay",
    "Stark",
    "Wayne",
    "Tyrell",
    "Cyberdyne",
    "Soylent",
    "Wonka",
    "Gringotts",
    "Oscorp",
    "Aperture",
    "Massive",
    "Pied",
    "Dunder",
    "Prestige",
    "Monarch",
    "Nakatomi",
    "Zorg",
    "Virtucon",
    "Bluth",
    "Sirius",
]
SECOND = [
    "Labs",
    "Corp",
    "Systems",
    "Analytics",
    "Health",
    "Robotics",
    "Media",
    "Logistics",
    "Foods",
    "Bank",
    "Studios",
    "Energy",
    "Cloud",
    "Piper",
    "Industries",
    "Paper",
    "Works",
]
ENDPOINTS = ["/v1/search", "/v1/profiles", "/v1/enrich", "/v1/export"]
CHUNK = 20_000


@dataclass
class SeedStats:
    customers: int = 0
    events: int = 0
    ledger_entries: int = 0
    skipped: int = 0


def ensure_catalog(actor: Actor = SYSTEM) -> dict[str, Feature]:
    if not catalog.list_credit_systems(actor):
        catalog.create_credit_system(actor, key="credits", name="Credits")
    existing = {f.key: f for f, _, _ in catalog.list_features(actor)}
    for key, name, ftype, event_name, cost in FEATURES:
        if key not in existing:
            existing[key] = catalog.create_feature(
                actor, key=key, name=name, type=ftype, event_name=event_name
            )
            if cost is not None:
                catalog.set_credit_cost(actor, key, credit_system="credits", cost=cost)
    return existing


def seed(
    customers: int = 50,
    events: int = 5000,
    *,
    rng_seed: int = 42,
    progress: Callable[[int], None] | None = None,
    actor: Actor = SYSTEM,
) -> SeedStats:
    """Add ``customers`` customers and about ``events`` usage events over the last 60 days."""
    rng = random.Random(rng_seed)
    features = ensure_catalog(actor)
    cs_id = db.session.scalar(text("SELECT id FROM credit_systems WHERE key = 'credits'"))
    costs = {key: None if cost is None else parse_micros(cost) for key, *_, cost in FEATURES}
    now = utcnow().replace(microsecond=0)
    start = now - timedelta(days=60)
    stats = SeedStats()
    ids = _next_ids()
    existing_keys = set(db.session.scalars(select(Customer.key)))
    buf = _Buffers()
    per_customer = max(events // max(customers, 1), 0)
    remainder = events - per_customer * customers
    for n in range(customers):
        key = "cust-6d11ca90" if n == 0 else f"cust-{rng.getrandbits(32):08x}"
        while key in existing_keys:
            key = f"cust-{rng.getrandbits(32):08x}"
        existing_keys.add(key)
        cid = ids["customers"]
        ids["customers"] += 1
        name = f"{rng.choice(FIRST)} {rng.choice(SECOND)}"
        domain = name.lower().replace(" ", "") + ".example"
        buf.customers.append(
            {
                "id": cid,
                "key": key,
                "name": name,
                "email": f"billing@{domain}",
                "status": "active",
                "metadata": {},
                "created_at": start - timedelta(days=30),
            }
        )
        stats.customers += 1
        count = per_customer + (1 if n < remainder else 0)
        _seed_customer(
            rng, cid, key, count, features, costs, cs_id, ids, buf, stats, start, now, actor
        )
        if buf.size() >= CHUNK:
            buf.flush()
        if progress is not None:
            progress(1)
    buf.flush()
    db.session.add(
        AuditLog(
            at=utcnow(),
            actor=actor.label,
            action="demo.seeded",
            details={"customers": stats.customers, "events": stats.events},
        )
    )
    _reset_sequences()
    db.session.commit()
    # A bulk load leaves the planner's statistics behind (autovacuum gets there later): refresh
    # them now, so that the first page views after a seed get the plans they will have later.
    db.session.execute(text("ANALYZE"))
    db.session.commit()
    seed_plans(rng, actor)
    return stats


PLAN_CUSTOMERS = 50  # customers put on a plan by the seed (one service call each)
DEMO_PLANS: list[tuple[str, str, bool, str, dict[str, tuple[str | None, str, str]]]] = [
    # key, name, prorate, included credits / month, {feature: (allowance, reset, overage)}
    (
        "starter",
        "Starter",
        False,
        "10",
        {
            "api_calls": ("50000", "month", "block"),
            "candidates": ("500", "month", "block"),
            "image_generations": ("200", "month", "block"),
            "seats": ("10", "never", "block"),
        },
    ),
    (
        "growth",
        "Growth",
        True,
        "100",
        {
            "api_calls": ("200000", "month", "allow"),
            "candidates": ("2000", "month", "block"),
            "image_generations": ("1000", "month", "block"),
            "seats": ("50", "never", "block"),
            "sso": (None, "never", "block"),
        },
    ),
    (
        "enterprise",
        "Enterprise",
        False,
        "1000",
        {
            "api_calls": (None, "month", "allow"),
            "candidates": (None, "month", "block"),
            "image_generations": (None, "month", "block"),
            "seats": (None, "never", "block"),
            "sso": (None, "never", "block"),
        },
    ),
]


def seed_plans(rng: random.Random, actor: Actor = SYSTEM) -> int:
    """Three plans (once), the first PLAN_CUSTOMERS customers without a plan put on one (the big
    ones on Growth or Enterprise), a few with an override; the others stay on their own
    entitlements. A customer whose usage a plan would block stays off it. Returns how many were
    put on a plan."""
    from ..errors import PlanChangeBlocked
    from . import plans

    existing = {v.plan.key for v in plans.list_plans(actor)}
    for key, name, prorate, amount, ents in DEMO_PLANS:
        if key in existing:
            continue
        plans.create_plan(
            actor,
            key=key,
            name=name,
            prorate_included_credits=prorate,
            entitlements=[
                {"feature_key": f, "allowance": a, "reset_period": r, "overage": o}
                for f, (a, r, o) in ents.items()
            ],
            included_credits=[{"credit_system": "credits", "amount": amount, "period": "month"}],
        )
    rows = db.session.execute(
        select(Customer.key, Entitlement.allowance_micros)
        .join(Entitlement, Entitlement.customer_id == Customer.id)
        .join(Feature, Feature.id == Entitlement.feature_id)
        .where(Customer.plan_id.is_(None), Feature.key == "api_calls")
        .order_by(Customer.id)
        .limit(PLAN_CUSTOMERS)
    ).all()
    db.session.commit()
    placed = 0
    for n, (key, api_allowance) in enumerate(rows):
        if n % 7 == 6:
            continue  # some customers keep their own entitlements
        big = api_allowance is None or api_allowance > 50_000 * MICROS
        plan = ("enterprise" if rng.random() < 0.3 else "growth") if big else "starter"
        try:
            plans.change_customer_plan(actor, key, plan)
        except PlanChangeBlocked:
            continue
        placed += 1
        if n % 5 == 1:  # a few overrides on top of the plan
            catalog.update_entitlement(actor, key, "seats", allowance="25")
        if n % 9 == 2:
            catalog.update_entitlement(actor, key, "api_calls", overage="allow")
    return placed


class _Buffers:
    def __init__(self) -> None:
        self.customers: list[dict[str, Any]] = []
        self.entitlements: list[dict[str, Any]] = []
        self.wallets: list[dict[str, Any]] = []
        self.events: list[dict[str, Any]] = []
        self.ledger: list[dict[str, Any]] = []
        self.counters: list[dict[str, Any]] = []
        self.grants: list[dict[str, Any]] = []
        self.allocations: list[dict[str, Any]] = []
        self.rollup: list[rollup.Row] = []

    def size(self) -> int:
        return len(self.events) + len(self.ledger)

    def flush(self) -> None:
        session = db.session
        for model, rows in (
            (Customer, self.customers),
            (Entitlement, self.entitlements),
            (Wallet, self.wallets),
            (UsageEvent, self.events),
            (CreditGrant, self.grants),
            (LedgerEntry, self.ledger),
            (CreditAllocation, self.allocations),
            (UsageCounter, self.counters),
        ):
            if rows:
                session.execute(insert(cast(Table, model.__table__)), rows)
                if model is UsageEvent:
                    add_to_daily(session.connection(), rows)
                if model is LedgerEntry:
                    burn.add(
                        session.connection(),
                        (
                            (r["wallet_id"], burn.day_of(r["created_at"]), -r["amount_micros"])
                            for r in rows
                            if r["type"] == "usage"
                            or (r["type"] == "adjustment" and r["amount_micros"] < 0)
                        ),
                    )
                rows.clear()
        rollup.add(session.connection(), self.rollup)
        self.rollup.clear()
        session.commit()


def _seed_customer(
    rng: random.Random,
    cid: int,
    key: str,
    count: int,
    features: dict[str, Feature],
    costs: dict[str, int | None],
    cs_id: int,
    ids: dict[str, int],
    buf: _Buffers,
    stats: SeedStats,
    start: datetime,
    now: datetime,
    actor: Actor,
) -> None:
    label = actor.label
    plan = rng.random()
    big = plan > 0.7
    ents: dict[str, tuple[tuple[str, int | None], str]] = {
        "api_calls": (("month", 200_000 if big else 50_000), "allow" if big else "block"),
        "candidates": (("month", 2_000 if big else 500), "block"),
        "image_generations": (("month", 1_000 if big else 200), "block"),
        "seats": (("never", rng.choice([10, 20, 50] if big else [3, 5, 10])), "block"),
    }
    if big or rng.random() < 0.3:
        ents["sso"] = (("never", None), "block")
    for fkey, ((period, allowance), policy) in ents.items():
        buf.entitlements.append(
            {
                "customer_id": cid,
                "feature_id": features[fkey].id,
                "allowance_micros": None if allowance is None else allowance * MICROS,
                "reset_period": period,
                "overage": policy,
                "updated_at": start,
            }
        )
    wallet_id = ids["wallets"]
    ids["wallets"] += 1
    balance = 0
    ledger_rows: list[dict[str, Any]] = []
    grant_rows: dict[int, dict[str, Any]] = {}
    grants: list[GrantRef] = []

    def post(kind_type: str, amount: int, at: datetime, **extra: Any) -> int:
        nonlocal balance
        balance += amount
        entry_id = ids["ledger_entries"]
        ids["ledger_entries"] += 1
        ledger_rows.append(
            {
                "id": entry_id,
                "wallet_id": wallet_id,
                "customer_id": cid,
                "type": kind_type,
                "kind": extra.get("kind"),
                "amount_micros": amount,
                "balance_after_micros": balance,
                "usage_event_id": extra.get("event"),
                "grant_id": extra.get("grant"),
                "reference": extra.get("reference"),
                "note": extra.get("note"),
                "idempotency_key": None,
                "fingerprint": None,
                "actor": extra.get("actor", label),
                "created_at": at,
            }
        )
        return entry_id

    def grant(kind: str, amount: int, at: datetime, expires: datetime | None, **extra: Any) -> None:
        """A topup: one grant and its entry, as wallets.topup_wallet writes them."""
        gid = ids["credit_grants"]
        ids["credit_grants"] += 1
        grants.append(GrantRef(gid, kind, DEFAULT_PRIORITY[kind], at, expires, amount))
        grant_rows[gid] = {
            "id": gid,
            "wallet_id": wallet_id,
            "customer_id": cid,
            "kind": kind,
            "amount_micros": amount,
            "remaining_micros": amount,
            "priority": DEFAULT_PRIORITY[kind],
            "effective_at": at,
            "expires_at": expires,
            "reference": extra.get("reference"),
            "note": extra.get("note"),
            "unit_price": extra.get("unit_price"),
            "currency": "USD" if extra.get("unit_price") else None,
            "actor": label,
            "created_at": at,
            "expired_at": None,
            "expired_micros": 0,
            "voided_at": None,
            "voided_micros": 0,
        }
        post("topup", amount, at, kind=kind, grant=gid, **extra)
        add_rollup(at, "issued", gid, amount)

    def add_rollup(at: datetime, category: str, gid: int, amount: int) -> None:
        row = grant_rows[gid]
        buf.rollup.append(
            rollup.Row(
                cs_id, at, category, row["kind"], row["currency"], row["unit_price"], amount, cid
            )
        )

    def book_expiries(at: datetime) -> None:
        for due_grant in due(grants, at):
            left = due_grant.remaining_micros
            due_grant.remaining_micros = 0
            row = grant_rows[due_grant.id]
            row.update(expired_at=at, expired_micros=left)
            post(
                "expiry",
                -left,
                at,
                grant=due_grant.id,
                actor=EXPIRY_ACTOR,
                reference=f"grant:{due_grant.id}",
            )
            add_rollup(at, "expired", due_grant.id, left)

    opening = (3000 if big else 800) * MICROS
    grant("granted", opening, start, None, reference="DEMO-OPENING", note="Opening grant")
    # A promotional grant that expires during the history, usually with credits left.
    promo_end = start + timedelta(days=rng.uniform(20, 40))
    grant("granted", 100 * MICROS, start, promo_end, reference="PROMO", note="Launch promotion")
    times = sorted(
        start + timedelta(seconds=rng.uniform(60, 60 * 86400 - 600)) for _ in range(count)
    )
    counters: dict[tuple[int, datetime], int] = {}
    seat_cap = (ents["seats"][0][1] or 0) * MICROS
    next_invoice = start + timedelta(days=rng.uniform(15, 30))
    invoice_no = rng.randint(1000, 9000)
    for at in times:
        if at >= next_invoice:
            invoice_no += 1
            grant(
                "purchased",
                (1000 if big else 300) * MICROS,
                at,
                at + timedelta(days=365),
                reference=f"INV-{invoice_no}",
                unit_price="0.01",
            )
            next_invoice = at + timedelta(days=rng.uniform(15, 30))
        roll = rng.random()
        if roll < 0.6:
            fkey, amount = "api_calls", rng.randint(1, 40) * MICROS
        elif roll < 0.8:
            fkey, amount = "candidates", rng.randint(1, 3) * MICROS
        elif roll < 0.92:
            fkey, amount = "image_generations", rng.randint(1, 4) * MICROS
        else:
            fkey, amount = "seats", MICROS
        feature = features[fkey]
        (period, units), overage_policy = ents[fkey]
        assert units is not None  # only sso is unlimited, and it is never recorded
        allowance = units * MICROS
        pstart = period_start(at, effective_period(feature.type, period))
        used = counters.get((feature.id, pstart), 0)
        if fkey == "seats" and used >= seat_cap:
            amount = -MICROS  # reclaim a seat
        elif fkey == "seats" and used > MICROS and rng.random() < 0.25:
            amount = -MICROS
        used_after = used + amount
        overage = 0
        if amount > 0 and used_after > allowance:
            if overage_policy == "block":
                stats.skipped += 1
                continue
            overage = min(amount, used_after - allowance)
        cost = costs[fkey]
        credits = None
        if cost is not None:
            book_expiries(at)
            credits = credit_cost_micros(amount, cost) if amount > 0 else 0
            if credits > eligible_balance(grants, at):
                stats.skipped += 1
                continue
        event_pk = ids["usage_events"]
        ids["usage_events"] += 1
        counters[(feature.id, pstart)] = used_after
        metadata = {"endpoint": rng.choice(ENDPOINTS)} if fkey == "api_calls" else {}
        event_id = f"demo-{event_pk}"
        if credits:
            entry_id = post("usage", -credits, at, event=event_pk, reference=f"{fkey}:{event_id}")
            for paid_by, part in allocate(grants, credits, at):
                buf.allocations.append(
                    {"ledger_entry_id": entry_id, "grant_id": paid_by.id, "amount_micros": part}
                )
                add_rollup(at, "consumed", paid_by.id, part)
        buf.events.append(
            {
                "id": event_pk,
                "customer_id": cid,
                "feature_id": feature.id,
                "event_id": event_id,
                "amount_micros": amount,
                "timestamp": at,
                "period_start": pstart,
                "metadata": metadata or None,
                "credits_micros": credits,
                "overage_micros": overage,
                "used_after_micros": used_after,
                "allowance_micros": allowance,
                "balance_after_micros": eligible_balance(grants, at) if cost is not None else None,
                "fingerprint": fingerprint(feature.id, amount, metadata),
                "actor": label,
                "recorded_at": at,
            }
        )
        stats.events += 1
    buf.wallets.append(
        {
            "id": wallet_id,
            "customer_id": cid,
            "credit_system_id": cs_id,
            "balance_micros": balance,
            "low_balance_threshold_micros": 50 * MICROS,
            "created_at": start,
            # The wallet last changed with its last ledger entry, not when the seed ran.
            "updated_at": max((row["created_at"] for row in ledger_rows), default=start),
        }
    )
    for g in grants:
        grant_rows[g.id]["remaining_micros"] = g.remaining_micros
    buf.grants.extend(grant_rows.values())
    buf.ledger.extend(ledger_rows)
    stats.ledger_entries += len(ledger_rows)
    for (fid, pstart), used in counters.items():
        buf.counters.append(
            {"customer_id": cid, "feature_id": fid, "period_start": pstart, "used_micros": used}
        )


_TABLES = ("customers", "wallets", "usage_events", "ledger_entries", "credit_grants")


def _next_ids() -> dict[str, int]:
    ids = {
        "customers": Customer.id,
        "wallets": Wallet.id,
        "usage_events": UsageEvent.id,
        "ledger_entries": LedgerEntry.id,
        "credit_grants": CreditGrant.id,
    }
    return {
        name: (db.session.scalar(select(func.max(column))) or 0) + 1 for name, column in ids.items()
    }


def _reset_sequences() -> None:
    """Explicit ids were inserted: move PostgreSQL's sequences past them."""
    if db.engine.dialect.name != "postgresql":
        return
    for table in _TABLES:
        db.session.execute(
            text(
                f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                f"COALESCE((SELECT MAX(id) FROM {table}), 1))"
            )
        )
