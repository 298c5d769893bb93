"""`ledger verify`: every invariant of domain.md, checked over the whole database with
set-based SQL (a constant number of queries, whatever the size)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Select,
    String,
    and_,
    case,
    cast,
    func,
    literal,
    literal_column,
    or_,
    select,
    union_all,
)

from ..extensions import db
from ..models import (
    CREDIT_BASE,
    DAILY_BASE,
    DAILY_SHARDS,
    CreditAllocation,
    CreditGrant,
    CreditMonthly,
    Customer,
    Entitlement,
    Feature,
    LedgerEntry,
    OutboxEvent,
    UsageCorrection,
    UsageCounter,
    UsageDaily,
    UsageEvent,
    Wallet,
    WalletBurnDaily,
    WebhookAttempt,
    WebhookDelivery,
    exact_sum,
    utcnow,
)
from .credits import burn
from .money import format_micros
from .periods import effective_period, period_start

MAX_REPORTED = 20
AnySelect = Select[*tuple[Any, ...]]


@dataclass
class Check:
    name: str
    checked: int = 0
    violations: list[str] = field(default_factory=list)


@dataclass
class Report:
    checks: list[Check]

    @property
    def ok(self) -> bool:
        return not any(check.violations for check in self.checks)

    @property
    def violations(self) -> list[str]:
        return [v for check in self.checks for v in check.violations]


def verify_ledger() -> Report:
    checks = [
        _wallet_balances(),
        _wallets_not_negative(),
        _ledger_chain(),
        _counters_match_events(),
        _daily_matches_events(),
        _persistent_not_negative(),
        _within_allowance(),
        _usage_entries_point_at_events(),
        _credit_events_have_entries(),
        _wallets_match_grants(),
        _grants_remaining(),
        _grant_removals_booked_once(),
        _deductions_allocated(),
        _allocations_eligible(),
        _credits_come_from_grants(),
        _burn_matches_ledger(),
        _webhook_attempts_counted(),
        _webhook_delivered_by_an_attempt(),
        _plans_effective_entitlements(),
        _plan_credits_issued_once(),
        _corrections_have_their_entries(),
        _event_credits_follow_effective_amounts(),
        _refunds_within_what_was_drawn(),
        _outbox_rows_in_log_order(),
        _grant_events_match_grants(),
        _rollup_matches_ledger(),
        _roll_forward_identity(),
    ]
    return Report(checks)


def _run(
    name: str, total_stmt: Select[int], bad_stmt: AnySelect, describe: Callable[..., str]
) -> Check:
    check = Check(name)
    check.checked = db.session.scalar(total_stmt) or 0
    for row in db.session.execute(bad_stmt.limit(MAX_REPORTED)):
        check.violations.append(describe(*row))
    return check


def _wallet_balances() -> Check:
    sums = (
        select(LedgerEntry.wallet_id, exact_sum(LedgerEntry.amount_micros).label("total"))
        .group_by(LedgerEntry.wallet_id)
        .subquery()
    )
    return _run(
        "wallet balance = sum of its ledger entries",
        select(func.count()).select_from(Wallet),
        select(Customer.key, Wallet.id, Wallet.balance_micros, func.coalesce(sums.c.total, 0))
        .join(Customer, Customer.id == Wallet.customer_id)
        .outerjoin(sums, sums.c.wallet_id == Wallet.id)
        .where(Wallet.balance_micros != func.coalesce(sums.c.total, 0)),
        lambda key, wid, bal, total: (
            f"wallet {wid} of {key}: balance {format_micros(bal)} but its ledger sums to "
            f"{format_micros(total)}"
        ),
    )


def _wallets_not_negative() -> Check:
    return _run(
        "wallet balance >= 0",
        select(func.count()).select_from(Wallet),
        select(Wallet.id, Wallet.balance_micros).where(Wallet.balance_micros < 0),
        lambda wid, bal: f"wallet {wid} is negative: {format_micros(bal)}",
    )


def _ledger_chain() -> Check:
    """Each entry's balance_after is the running sum of its wallet's entries up to it."""
    running = select(
        LedgerEntry.id,
        LedgerEntry.wallet_id,
        LedgerEntry.balance_after_micros,
        exact_sum(LedgerEntry.amount_micros)
        .over(partition_by=LedgerEntry.wallet_id, order_by=LedgerEntry.id)
        .label("running"),
    ).subquery()
    return _run(
        "ledger balance_after = running sum, never negative",
        select(func.count()).select_from(LedgerEntry),
        select(
            running.c.id, running.c.wallet_id, running.c.balance_after_micros, running.c.running
        ).where(
            or_(
                running.c.balance_after_micros != running.c.running,
                running.c.balance_after_micros < 0,
            )
        ),
        lambda eid, wid, after, run: (
            f"ledger entry {eid} (wallet {wid}): balance_after {format_micros(after)}, "
            f"running sum {format_micros(run)}"
        ),
    )


def _effective_amounts() -> Any:
    """Rows (customer_id, feature_id, period_start, timestamp, amount): every event's amount
    and every correction's delta, at its event's counter and time. Their sum per counter is the
    sum of the events' effective amounts (domain.md, "Usage corrections")."""
    e = UsageEvent
    return union_all(
        select(e.customer_id, e.feature_id, e.period_start, e.timestamp, e.amount_micros),
        select(
            e.customer_id,
            e.feature_id,
            e.period_start,
            e.timestamp,
            UsageCorrection.delta_micros.label("amount_micros"),
        ).join(UsageCorrection, UsageCorrection.usage_event_id == e.id),
    ).subquery()


def _counters_match_events() -> Check:
    amounts = _effective_amounts()
    sums = (
        select(
            amounts.c.customer_id,
            amounts.c.feature_id,
            amounts.c.period_start,
            exact_sum(amounts.c.amount_micros).label("total"),
        )
        .group_by(amounts.c.customer_id, amounts.c.feature_id, amounts.c.period_start)
        .subquery()
    )
    c = UsageCounter
    joined = and_(
        sums.c.customer_id == c.customer_id,
        sums.c.feature_id == c.feature_id,
        sums.c.period_start == c.period_start,
    )
    # Counters whose events sum differently (or have none), and event groups with no counter.
    mismatched = (
        select(
            c.customer_id,
            c.feature_id,
            c.period_start,
            c.used_micros,
            func.coalesce(sums.c.total, 0),
        )
        .outerjoin(sums, joined)
        .where(c.used_micros != func.coalesce(sums.c.total, 0))
    )
    orphaned = (
        select(
            sums.c.customer_id, sums.c.feature_id, sums.c.period_start, literal(None), sums.c.total
        )
        .outerjoin(c, joined)
        .where(c.customer_id.is_(None))
    )
    check = _run(
        "usage counter = sum of its period's effective event amounts",
        select(func.count()).select_from(c),
        mismatched,
        lambda cid, fid, start, used, total: (
            f"counter customer {cid} feature {fid} period {start:%Y-%m-%d}: used "
            f"{format_micros(used)} but events sum to {format_micros(total)}"
        ),
    )
    for cid, fid, start, _, total in db.session.execute(orphaned.limit(MAX_REPORTED)):
        check.violations.append(
            f"events of customer {cid} feature {fid} period {start:%Y-%m-%d} sum to "
            f"{format_micros(total)} but there is no counter"
        )
    return check


def _daily_matches_events() -> Check:
    """usage_daily (the dashboard's chart) holds the events' exact sums per feature/day/shard.

    A row holds high * DAILY_BASE + low, more than SQL can compare without overflowing, so the
    rows (features x days x shards, never events) are compared here."""
    amounts = _effective_amounts()
    day = func.date(amounts.c.timestamp)
    shard = amounts.c.customer_id % DAILY_SHARDS
    sums: dict[tuple[int, str, int], int] = {
        (fid, str(d), sh): total
        for fid, d, sh, total in db.session.execute(
            select(amounts.c.feature_id, day, shard, exact_sum(amounts.c.amount_micros)).group_by(
                amounts.c.feature_id, day, shard
            )
        )
    }
    d = UsageDaily
    check = Check("daily usage rollup = sum of its day's event amounts")
    rows = db.session.execute(select(d.feature_id, d.day, d.shard, d.amount_high, d.amount_micros))
    for fid, when, sh, high, low in rows:
        check.checked += 1
        stored = high * DAILY_BASE + low
        total = sums.pop((fid, str(when), sh), 0)
        if stored != total or not 0 <= low < DAILY_BASE:
            check.violations.append(
                f"usage_daily feature {fid} day {when} shard {sh}: {format_micros(stored)} but "
                f"events sum to {format_micros(total)}"
            )
    for (fid, day_text, sh), total in sorted(sums.items()):
        check.violations.append(
            f"events of feature {fid} day {day_text} shard {sh} sum to {format_micros(total)} but "
            "usage_daily has no row"
        )
    del check.violations[MAX_REPORTED:]
    return check


def _persistent_not_negative() -> Check:
    return _run(
        "usage counters are never negative",
        select(func.count()).select_from(UsageCounter),
        select(UsageCounter.customer_id, UsageCounter.feature_id, UsageCounter.used_micros).where(
            UsageCounter.used_micros < 0
        ),
        lambda cid, fid, used: f"counter customer {cid} feature {fid} is {format_micros(used)}",
    )


def _within_allowance() -> Check:
    """used <= allowance for `block` entitlements, in the current period (past periods were
    judged against the allowance of their time)."""
    now = utcnow()
    check = Check("used <= allowance where overage is blocked (current period)")
    rows = db.session.execute(
        select(Entitlement, Feature.type, Feature.key, Customer.key)
        .join(Feature, Feature.id == Entitlement.feature_id)
        .join(Customer, Customer.id == Entitlement.customer_id)
        .where(Entitlement.overage == "block", Entitlement.allowance_micros.is_not(None))
    ).all()
    by_start: dict[datetime, list[tuple[Entitlement, str, str]]] = {}
    for ent, ftype, fkey, ckey in rows:
        start = period_start(now, effective_period(ftype, ent.reset_period))
        by_start.setdefault(start, []).append((ent, fkey, ckey))
    for start, items in by_start.items():
        lookup = {(e.customer_id, e.feature_id): (e, fk, ck) for e, fk, ck in items}
        counters = db.session.execute(
            select(
                UsageCounter.customer_id, UsageCounter.feature_id, UsageCounter.used_micros
            ).where(UsageCounter.period_start == start)
        )
        for cid, fid, used in counters:
            hit = lookup.get((cid, fid))
            if hit is None:
                continue
            check.checked += 1
            ent, fkey, ckey = hit
            allowance = ent.allowance_micros
            assert allowance is not None  # selected above: limited entitlements only
            if used > allowance and len(check.violations) < MAX_REPORTED:
                check.violations.append(
                    f"{ckey} uses {format_micros(used)} {fkey}, over its blocked allowance of "
                    f"{format_micros(allowance)}"
                )
    return check


def _usage_entries_point_at_events() -> Check:
    return _run(
        "every usage ledger entry points at exactly one matching event",
        select(func.count()).select_from(LedgerEntry).where(LedgerEntry.type == "usage"),
        select(LedgerEntry.id, LedgerEntry.usage_event_id)
        .outerjoin(UsageEvent, UsageEvent.id == LedgerEntry.usage_event_id)
        .where(LedgerEntry.type == "usage")
        .where(
            or_(
                UsageEvent.id.is_(None),
                UsageEvent.credits_micros.is_(None),
                LedgerEntry.amount_micros != -UsageEvent.credits_micros,
                LedgerEntry.customer_id != UsageEvent.customer_id,
            )
        ),
        lambda eid, evid: f"usage ledger entry {eid} does not match an event (event {evid})",
    )


def _credit_events_have_entries() -> Check:
    """Every event of a credit-based feature with a positive amount (and a cost that did not
    round to zero) has exactly one usage entry; other events have none."""
    entries = (
        select(LedgerEntry.usage_event_id, func.count().label("n"))
        .where(LedgerEntry.usage_event_id.is_not(None))
        .group_by(LedgerEntry.usage_event_id)
        .subquery()
    )
    n = func.coalesce(entries.c.n, 0)
    needs_entry = and_(
        UsageEvent.amount_micros > 0, func.coalesce(UsageEvent.credits_micros, 0) > 0
    )
    return _run(
        "every charged usage event has exactly one usage ledger entry",
        select(func.count()).select_from(UsageEvent),
        select(UsageEvent.id, UsageEvent.event_id, n)
        .outerjoin(entries, entries.c.usage_event_id == UsageEvent.id)
        .where(or_(and_(needs_entry, n != 1), and_(~needs_entry, n != 0))),
        lambda eid, event_id, count: (
            f"usage event {eid} ({event_id}) has {count} usage ledger entries"
        ),
    )


# ---------------------------------------------------------------- credit grants


def _wallets_match_grants() -> Check:
    sums = (
        select(CreditGrant.wallet_id, exact_sum(CreditGrant.remaining_micros).label("total"))
        .group_by(CreditGrant.wallet_id)
        .subquery()
    )
    return _run(
        "wallet balance = sum of its grants' remaining",
        select(func.count()).select_from(Wallet),
        select(Wallet.id, Wallet.balance_micros, func.coalesce(sums.c.total, 0))
        .outerjoin(sums, sums.c.wallet_id == Wallet.id)
        .where(Wallet.balance_micros != func.coalesce(sums.c.total, 0)),
        lambda wid, bal, total: (
            f"wallet {wid}: balance {format_micros(bal)} but its grants hold {format_micros(total)}"
        ),
    )


def _grants_remaining() -> Check:
    spent = (
        select(CreditAllocation.grant_id, exact_sum(CreditAllocation.amount_micros).label("n"))
        .group_by(CreditAllocation.grant_id)
        .subquery()
    )
    g = CreditGrant
    expected = g.amount_micros - func.coalesce(spent.c.n, 0) - g.expired_micros - g.voided_micros
    return _run(
        "grant remaining = amount - allocations - expired - voided, and >= 0",
        select(func.count()).select_from(g),
        select(g.id, g.remaining_micros, expected)
        .outerjoin(spent, spent.c.grant_id == g.id)
        .where(or_(g.remaining_micros != expected, g.remaining_micros < 0)),
        lambda gid, left, want: (
            f"grant {gid}: remaining {format_micros(left)}, but amount less what left it is "
            f"{format_micros(int(want))}"
        ),
    )


def _grant_removals_booked_once() -> Check:
    """Every grant comes from exactly one topup or positive adjustment of its amount, and has at
    most one expiry and one void entry of its own (besides those booking what a correction
    returned to it once expired or voided, referenced `correction:<entry id>`); its expiry and
    void entries sum to what the grant records as removed."""
    e = LedgerEntry
    own = or_(e.reference.is_(None), ~e.reference.startswith("correction:"))
    per_grant = (
        select(
            e.grant_id,
            func.sum(case((e.amount_micros > 0, 1), else_=0)).label("issued"),
            func.sum(case((e.amount_micros > 0, e.amount_micros), else_=0)).label("amount"),
            func.sum(case((and_(e.type == "expiry", own), 1), else_=0)).label("expiries"),
            func.sum(case((e.type == "expiry", -e.amount_micros), else_=0)).label("expired"),
            func.sum(case((and_(e.type == "void", own), 1), else_=0)).label("voids"),
            func.sum(case((e.type == "void", -e.amount_micros), else_=0)).label("voided"),
        )
        .where(e.grant_id.is_not(None))
        .group_by(e.grant_id)
        .subquery()
    )
    g = CreditGrant
    p = per_grant.c
    return _run(
        "each grant: one issuing entry of its amount; expiry and void booked at most once",
        select(func.count()).select_from(g),
        select(g.id)
        .outerjoin(per_grant, p.grant_id == g.id)
        .where(
            or_(
                func.coalesce(p.issued, 0) != 1,
                p.amount != g.amount_micros,
                p.expiries > 1,
                p.voids > 1,
                p.expired != g.expired_micros,
                p.voided != g.voided_micros,
                and_(g.expired_micros > 0, g.expired_at.is_(None)),
                and_(g.voided_micros > 0, g.voided_at.is_(None)),
            )
        ),
        lambda gid: f"grant {gid}: its issuing, expiry or void entries do not match it",
    )


def _deductions_allocated() -> Check:
    """Usage entries, negative adjustments and corrections: allocations sum to minus the amount
    exactly (a correction's refund: negative allocations, credits returned to grants); other
    entries have none."""
    sums = (
        select(
            CreditAllocation.ledger_entry_id, exact_sum(CreditAllocation.amount_micros).label("n")
        )
        .group_by(CreditAllocation.ledger_entry_id)
        .subquery()
    )
    e = LedgerEntry
    is_deduction = or_(
        and_(e.type.in_(("usage", "adjustment")), e.amount_micros < 0), e.type == "correction"
    )
    allocated = func.coalesce(sums.c.n, 0)
    return _run(
        "a deduction's or correction's allocations sum to its amount; nothing else has any",
        select(func.count()).select_from(e),
        select(e.id, e.amount_micros, allocated)
        .outerjoin(sums, sums.c.ledger_entry_id == e.id)
        .where(
            or_(
                and_(is_deduction, allocated != -e.amount_micros),
                and_(~is_deduction, allocated != 0),
            )
        ),
        lambda eid, amount, n: (
            f"ledger entry {eid} of {format_micros(amount)} has allocations of "
            f"{format_micros(int(n))}"
        ),
    )


def _allocations_eligible() -> Check:
    """Each allocation draws on a grant of the entry's own wallet that was effective and not yet
    expired at the deduction's time (a usage event's timestamp, also for a correction's extra
    charge; an adjustment's creation), and comes before the grant's booked expiry or void.
    Negative allocations (a correction's refund) return credits: only the wallet is checked."""
    e, g, a = LedgerEntry, CreditGrant, CreditAllocation
    corrected = (
        select(UsageCorrection.ledger_entry_id, UsageEvent.timestamp)
        .join(UsageEvent, UsageEvent.id == UsageCorrection.usage_event_id)
        .where(UsageCorrection.ledger_entry_id.is_not(None))
        .subquery()
    )
    at = func.coalesce(UsageEvent.timestamp, corrected.c.timestamp, e.created_at)
    removed = (
        select(LedgerEntry.grant_id, func.min(LedgerEntry.id).label("first"))
        .where(LedgerEntry.type.in_(("expiry", "void")))
        .group_by(LedgerEntry.grant_id)
        .subquery()
    )
    return _run(
        "allocations use only grants eligible at the deduction's time, before expiry or void",
        select(func.count()).select_from(a),
        select(a.id, a.ledger_entry_id, a.grant_id)
        .join(e, e.id == a.ledger_entry_id)
        .join(g, g.id == a.grant_id)
        .outerjoin(UsageEvent, UsageEvent.id == e.usage_event_id)
        .outerjoin(corrected, corrected.c.ledger_entry_id == e.id)
        .outerjoin(removed, removed.c.grant_id == g.id)
        .where(
            or_(
                g.wallet_id != e.wallet_id,
                and_(
                    a.amount_micros > 0,
                    or_(
                        g.effective_at > at,
                        and_(g.expires_at.is_not(None), g.expires_at <= at),
                        removed.c.first < e.id,
                    ),
                ),
            )
        ),
        lambda aid, eid, gid: (
            f"allocation {aid} of ledger entry {eid} draws on grant {gid}, which was not "
            "eligible then"
        ),
    )


def _credits_come_from_grants() -> Check:
    """Credits enter a wallet only as grants: every topup and positive adjustment names one. The
    one other positive entry, a correction's refund, returns credits to the grants they came
    from (its negative allocations, checked above and below), never as a new grant."""
    e = LedgerEntry
    return _run(
        "every topup and positive adjustment created a grant",
        select(func.count()).select_from(e).where(e.amount_micros > 0),
        select(e.id).where(
            e.amount_micros > 0,
            or_(
                and_(e.type != "correction", e.grant_id.is_(None)),
                and_(e.type == "correction", e.grant_id.is_not(None)),
            ),
        ),
        lambda eid: f"ledger entry {eid} adds credits without a grant",
    )


def _burn_matches_ledger() -> Check:
    """wallet_burn_daily (runway's burn) holds, per wallet and UTC day of the entry, the credits
    its ledger entries consumed (credits.burn: usage, negative adjustments, corrections)."""
    e = LedgerEntry
    day = func.date(e.created_at)
    consumed = burn.consumed_by_entry()
    sums: dict[tuple[int, str], int] = {
        (wid, str(d)): int(total)
        for wid, d, total in db.session.execute(
            select(e.wallet_id, day, exact_sum(consumed))
            .where(consumed != 0)
            .group_by(e.wallet_id, day)
        )
    }
    b = WalletBurnDaily
    check = Check("wallet burn rollup = credits its ledger entries consumed per wallet and day")
    rows = db.session.execute(select(b.wallet_id, b.day, b.consumed_high, b.consumed_micros))
    for wid, when, high, low in rows:
        check.checked += 1
        stored = high * DAILY_BASE + low
        total = sums.pop((wid, str(when)), 0)
        if stored != total or not 0 <= low < DAILY_BASE:
            check.violations.append(
                f"wallet_burn_daily wallet {wid} day {when}: {format_micros(stored)} but its "
                f"ledger entries consumed {format_micros(total)}"
            )
    for (wid, day_text), total in sorted(sums.items()):
        check.violations.append(
            f"ledger entries of wallet {wid} on {day_text} consumed {format_micros(total)} but "
            "wallet_burn_daily has no row"
        )
    del check.violations[MAX_REPORTED:]
    return check


# ---------------------------------------------------------------- usage corrections


def _corrections_have_their_entries() -> Check:
    """Each `correction` ledger entry belongs to exactly one correction, of its customer and of
    its credits; a correction that moved credits has its entry. Expiry and void entries that
    name a correction entry book a refund to that entry's grant (an expired or voided one)."""
    e, c = LedgerEntry, UsageCorrection
    owners = (
        select(c.ledger_entry_id, func.count().label("n"))
        .where(c.ledger_entry_id.is_not(None))
        .group_by(c.ledger_entry_id)
        .subquery()
    )
    check = _run(
        "every correction entry belongs to one correction of its amount",
        select(func.count()).select_from(e).where(e.type == "correction"),
        select(e.id)
        .outerjoin(owners, owners.c.ledger_entry_id == e.id)
        .outerjoin(c, c.ledger_entry_id == e.id)
        .where(
            e.type == "correction",
            or_(
                func.coalesce(owners.c.n, 0) != 1,
                c.credits_micros != e.amount_micros,
                c.customer_id != e.customer_id,
            ),
        ),
        lambda eid: f"correction entry {eid} does not match one correction",
    )
    bad = db.session.execute(
        select(c.id)
        .outerjoin(e, e.id == c.ledger_entry_id)
        .where(
            or_(
                and_(func.coalesce(c.credits_micros, 0) != 0, e.id.is_(None)),
                and_(func.coalesce(c.credits_micros, 0) == 0, c.ledger_entry_id.is_not(None)),
                and_(e.id.is_not(None), e.type != "correction"),
            )
        )
        .limit(MAX_REPORTED)
    ).scalars()
    check.violations.extend(f"correction {cid} and its ledger entry disagree" for cid in bad)
    return check


def _event_credits_follow_effective_amounts() -> Check:
    """Every corrected event: its last correction's effective amount = amount + Σ deltas, and
    its credit entries (usage and corrections) sum to exactly minus its credits at that amount,
    at the cost it was charged (services.corrections.event_credits). One query; the arithmetic
    of the rounding rule is done here, on the corrected events only."""
    from .corrections import event_credits  # the rule itself, pure

    c, e = UsageCorrection, UsageEvent
    usage = (
        select(LedgerEntry.usage_event_id, LedgerEntry.amount_micros)
        .where(LedgerEntry.usage_event_id.is_not(None))
        .subquery()
    )
    per_event = (
        select(
            c.usage_event_id,
            exact_sum(c.delta_micros).label("deltas"),
            exact_sum(func.coalesce(c.credits_micros, 0)).label("moved"),
            func.max(c.id).label("last"),
        )
        .group_by(c.usage_event_id)
        .subquery()
    )
    last = UsageCorrection.__table__.alias("last_correction")
    entries = (
        select(c.usage_event_id, exact_sum(LedgerEntry.amount_micros).label("booked"))
        .join(LedgerEntry, LedgerEntry.id == c.ledger_entry_id)
        .group_by(c.usage_event_id)
        .subquery()
    )
    check = Check("an event's credit entries = -(its credits at its effective amount)")
    rows = db.session.execute(
        select(
            e.id,
            e.event_id,
            e.amount_micros,
            e.credits_micros,
            per_event.c.deltas,
            last.c.effective_after_micros,
            func.coalesce(usage.c.amount_micros, 0),
            func.coalesce(entries.c.booked, 0),
        )
        .join(per_event, per_event.c.usage_event_id == e.id)
        .join(last, last.c.id == per_event.c.last)
        .outerjoin(usage, usage.c.usage_event_id == e.id)
        .outerjoin(entries, entries.c.usage_event_id == e.id)
    )
    for pk, event_id, amount, charged, deltas, effective_after, used, booked in rows:
        check.checked += 1
        effective = amount + deltas
        want = -event_credits(amount, charged, effective)
        if effective != effective_after or used + booked != want:
            check.violations.append(
                f"usage event {pk} ({event_id}): effective {format_micros(effective)} "
                f"(last correction says {format_micros(effective_after)}); credit entries "
                f"{format_micros(used + booked)}, expected {format_micros(want)}"
            )
    del check.violations[MAX_REPORTED:]
    return check


def _webhook_attempts_counted() -> Check:
    """Each delivery has one attempt row per attempt it counts (numbers unique by constraint):
    none lost by a killed worker, none written twice."""
    rows = (
        select(WebhookAttempt.delivery_id, func.count().label("n"))
        .group_by(WebhookAttempt.delivery_id)
        .subquery()
    )
    d = WebhookDelivery
    return _run(
        "webhook delivery attempts = its attempt rows",
        select(func.count()).select_from(d),
        select(d.id, d.attempts, func.coalesce(rows.c.n, 0))
        .outerjoin(rows, rows.c.delivery_id == d.id)
        .where(d.attempts != func.coalesce(rows.c.n, 0)),
        lambda did, n, rows_n: f"webhook delivery {did} counts {n} attempts but has {rows_n} rows",
    )


def _webhook_delivered_by_an_attempt() -> Check:
    d, a = WebhookDelivery, WebhookAttempt
    ok = (
        select(a.id)
        .where(a.delivery_id == d.id, a.outcome == "delivered", a.status_code.between(200, 299))
        .exists()
    )
    return _run(
        "a delivered webhook delivery has a 2xx attempt",
        select(func.count()).select_from(d).where(d.status == "delivered"),
        select(d.id).where(d.status == "delivered", ~ok),
        lambda did: f"webhook delivery {did} is delivered without a 2xx attempt",
    )


def _plans_effective_entitlements() -> Check:
    """Every customer on a plan (at its plan's revision) has exactly plan ⊕ overrides as its
    entitlements, each with its source; a customer without a plan has no override and only
    entitlements of its own (domain.md, "Plans")."""
    from . import plans

    check = Check("effective entitlements = plan ⊕ overrides; sources match")
    rows: dict[int, dict[int, Entitlement]] = {}
    for ent in db.session.scalars(select(Entitlement)):
        rows.setdefault(ent.customer_id, {})[ent.feature_id] = ent

    def report(text: str) -> None:
        if len(check.violations) < MAX_REPORTED:
            check.violations.append(text)

    for customer, expected in plans.expected_rows():
        check.checked += 1
        have = rows.get(customer.id, {})
        if set(have) != set(expected):
            report(
                f"{customer.key}: entitlements to features {sorted(have)} but its plan and "
                f"overrides give {sorted(expected)}"
            )
            continue
        for fid, eff in expected.items():
            ent = have[fid]
            got = (
                ent.allowance_micros,
                ent.pending_reset_period or ent.reset_period,
                ent.overage,
                ent.source,
                ent.overridden or "",
            )
            want = (*eff.spec, eff.source, ",".join(eff.overridden))
            if got != want:
                report(f"{customer.key} feature {fid}: entitlement {got}, plan ⊕ overrides {want}")
    planless = db.session.execute(
        select(Customer.key, Entitlement.source)
        .join(Entitlement, Entitlement.customer_id == Customer.id)
        .where(Customer.plan_id.is_(None), Entitlement.source != "customer")
    ).all()
    for key, source in planless:
        report(f"{key} has no plan but an entitlement whose source is {source!r}")
    from ..models import CustomerOverride

    orphans = db.session.execute(
        select(Customer.key)
        .join(CustomerOverride, CustomerOverride.customer_id == Customer.id)
        .where(Customer.plan_id.is_(None))
    ).all()
    for (key,) in orphans:
        report(f"{key} has no plan but an override")
    return check


def _plan_credits_issued_once() -> Check:
    """At most one issue of included credits per (customer, plan, credit system, period), each a
    `granted` grant of that customer's wallet in that system, of the issued amount, expiring at
    the end of its period."""
    from ..models import PlanCredit, PlanCreditIssuance
    from .plans.rules import credit_period

    check = Check("included credits: one issue per key, each its own granted grant")
    dupes = db.session.execute(
        select(
            PlanCreditIssuance.customer_id,
            PlanCreditIssuance.plan_id,
            PlanCreditIssuance.credit_system_id,
            PlanCreditIssuance.period_start,
            func.count(),
        )
        .group_by(
            PlanCreditIssuance.customer_id,
            PlanCreditIssuance.plan_id,
            PlanCreditIssuance.credit_system_id,
            PlanCreditIssuance.period_start,
        )
        .having(func.count() > 1)
    ).all()
    for cid, pid, sid, start, n in dupes[:MAX_REPORTED]:
        check.violations.append(
            f"customer {cid} plan {pid} system {sid} period {start:%Y-%m-%d}: issued {n} times"
        )
    rows = db.session.execute(
        select(PlanCreditIssuance, CreditGrant, Wallet, PlanCredit.period)
        .join(CreditGrant, CreditGrant.id == PlanCreditIssuance.grant_id)
        .join(Wallet, Wallet.id == CreditGrant.wallet_id)
        .outerjoin(
            PlanCredit,
            and_(
                PlanCredit.plan_id == PlanCreditIssuance.plan_id,
                PlanCredit.credit_system_id == PlanCreditIssuance.credit_system_id,
            ),
        )
    ).all()
    grants_seen: set[int] = set()
    for issue, grant, wallet, period in rows:
        check.checked += 1
        problems = []
        if grant.id in grants_seen:
            problems.append("shares its grant with another issue")
        grants_seen.add(grant.id)
        if wallet.customer_id != issue.customer_id:
            problems.append("grant of another customer")
        if wallet.credit_system_id != issue.credit_system_id:
            problems.append("grant of another credit system")
        if grant.kind != "granted" or grant.amount_micros != issue.amount_micros:
            problems.append("grant is not a granted grant of the issued amount")
        if period is not None and grant.expires_at != credit_period(issue.period_start, period)[1]:
            problems.append("grant does not expire at its period's end")
        if problems and len(check.violations) < MAX_REPORTED:
            check.violations.append(f"issue {issue.id}: " + "; ".join(problems))
    return check


def _refunds_within_what_was_drawn() -> Check:
    """A correction returns to a grant at most what the event's entries drew from it: per event
    and grant, the allocations of its usage and correction entries sum to >= 0."""
    c, a = UsageCorrection, CreditAllocation
    # Only corrected events can have got anything back: their usage entries and corrections.
    corrected = select(c.usage_event_id).distinct()
    event_entries = union_all(
        select(LedgerEntry.usage_event_id.label("event"), LedgerEntry.id.label("entry")).where(
            LedgerEntry.usage_event_id.in_(corrected)
        ),
        select(c.usage_event_id, c.ledger_entry_id).where(c.ledger_entry_id.is_not(None)),
    ).subquery()
    net = (
        select(
            event_entries.c.event,
            a.grant_id,
            exact_sum(a.amount_micros).label("n"),
        )
        .join(a, a.ledger_entry_id == event_entries.c.entry)
        .group_by(event_entries.c.event, a.grant_id)
        .subquery()
    )
    return _run(
        "corrections return to a grant at most what their event drew from it",
        select(func.count()).select_from(c),
        select(net.c.event, net.c.grant_id, net.c.n).where(net.c.n < 0),
        lambda event, gid, n: (
            f"usage event {event}: grant {gid} got back {format_micros(-int(n))} more than the "
            "event drew from it"
        ),
    )


def _outbox_rows_in_log_order() -> Check:
    """On PostgreSQL every outbox row carries the id of the transaction that wrote it (what the
    event log orders and holds back by): rows are written through outbox.emit / emit_many only.
    On SQLite (writers serialized, ids in commit order) it is 0."""
    o = OutboxEvent
    bad = (
        o.tx_order <= 0 if db.session.connection().dialect.name == "postgresql" else o.tx_order != 0
    )
    return _run(
        "outbox rows carry their transaction's order (written through outbox.emit)",
        select(func.count()).select_from(o),
        select(o.id, o.type).where(bad),
        lambda oid, type: f"outbox event {oid} ({type}) was not written through outbox.emit",
    )


def _grant_events_match_grants() -> Check:
    """Each credits.expired / grant.voided event names a grant whose expiry / void is booked,
    of the amount the event says (the dedupe key names the grant: one event per grant)."""
    o, g = OutboxEvent, CreditGrant
    types = ("credits.expired", "grant.voided")
    expired = o.type == "credits.expired"
    key = o.type + literal(":grant:") + cast(g.id, String)
    booked = case((expired, g.expired_micros), else_=g.voided_micros)
    return _run(
        "every credits.expired and grant.voided event names a grant with that booking",
        select(func.count()).select_from(o).where(o.type.in_(types)),
        select(o.id, o.type)
        .outerjoin(g, key == o.dedupe_key)
        .where(o.type.in_(types), or_(g.id.is_(None), booked <= 0)),
        lambda oid, type: f"outbox event {oid} ({type}) names no grant with that booking",
    )


# ---------------------------------------------------------------- the finance roll-forward

RollupKey = tuple[int, str, str, str, str, str]  # system, month (YYYY-MM), category, terms


def _ordinals(n: int) -> list[Any]:
    """GROUP BY 1, ..., n: the first n columns of the select (both databases)."""
    return [literal_column(str(i)) for i in range(1, n + 1)]


def _month(column: Any) -> Any:
    """SQL: the UTC month of a (naive UTC) time, as YYYY-MM text."""
    # The format is a literal, not a parameter: PostgreSQL matches GROUP BY expressions as text.
    if db.engine.dialect.name == "sqlite":
        return func.strftime(literal_column("'%Y-%m'"), column)
    return func.to_char(column, literal_column("'YYYY-MM'"))


def _rollup_stored() -> dict[RollupKey, int]:
    """credit_monthly summed over its shards (rows grow with months, never with events)."""
    m = CreditMonthly
    stored: dict[RollupKey, int] = {}
    rows = db.session.execute(
        select(
            m.credit_system_id,
            m.month,
            m.category,
            m.kind,
            m.currency,
            m.unit_price,
            m.amount_high,
            m.amount_micros,
        )
    )
    for sid, month, category, kind, currency, price, high, low in rows:
        key = (sid, f"{month:%Y-%m}", category, kind, currency, price)
        stored[key] = stored.get(key, 0) + high * CREDIT_BASE + low
    return stored


def _rollup_implied() -> dict[RollupKey, int]:
    """What the ledger implies for credit_monthly (services/credits/rollup.py): entries naming
    their grant with their own amount, the others through their allocations."""
    e, g, a, w = LedgerEntry, CreditGrant, CreditAllocation, Wallet
    terms = (g.kind, func.coalesce(g.currency, ""), func.coalesce(g.unit_price, ""))
    own = (
        select(
            w.credit_system_id,
            _month(e.created_at),
            case(
                (e.type == "topup", "issued"),
                (e.type == "expiry", "expired"),
                (e.type == "void", "voided"),
                else_="adjusted",
            ),
            *terms,
            exact_sum(
                case((e.type.in_(("expiry", "void")), -e.amount_micros), else_=e.amount_micros)
            ),
        )
        .join(w, w.id == e.wallet_id)
        .join(g, g.id == e.grant_id)
        .where(
            or_(
                e.type.in_(("topup", "expiry", "void")),
                and_(e.type == "adjustment", e.amount_micros > 0),
            )
        )
        .group_by(*_ordinals(6))
    )
    allocated = (
        select(
            w.credit_system_id,
            _month(e.created_at),
            case(
                (e.type == "usage", "consumed"),
                (e.type == "adjustment", "adjusted"),
                else_="corrected",
            ),
            *terms,
            exact_sum(case((e.type == "usage", a.amount_micros), else_=-a.amount_micros)),
        )
        .join(e, e.id == a.ledger_entry_id)
        .join(w, w.id == e.wallet_id)
        .join(g, g.id == a.grant_id)
        .group_by(*_ordinals(6))
    )
    implied: dict[RollupKey, int] = {}
    for stmt in (own, allocated):
        for sid, month, category, kind, currency, price, total in db.session.execute(stmt):
            key = (sid, month, category, kind, currency, price)
            implied[key] = implied.get(key, 0) + int(total)
    return {k: v for k, v in implied.items() if v}


def _rollup_matches_ledger() -> Check:
    """credit_monthly = what the ledger implies, for every credit system, month, category, kind,
    currency and unit price (compared here: the rows grow with months, not events)."""
    check = Check("monthly credit rollup = what the ledger implies")
    stored = {k: v for k, v in _rollup_stored().items() if v}
    implied = _rollup_implied()
    for key in sorted(stored.keys() | implied.keys()):
        check.checked += 1
        have, want = stored.get(key, 0), implied.get(key, 0)
        if have != want:
            sid, month, category, kind, currency, price = key
            check.violations.append(
                f"credit_monthly system {sid} {month} {category} {kind} {currency or '-'} "
                f"{price or '-'}: {format_micros(have)} but the ledger implies "
                f"{format_micros(want)}"
            )
    del check.violations[MAX_REPORTED:]
    return check


_SIGN = {"issued": 1, "consumed": -1, "expired": -1, "voided": -1, "adjusted": 1, "corrected": 1}


def _roll_forward_identity() -> Check:
    """Every month of every credit system: opening + issued - consumed - expired - voided +
    adjusted + corrected = closing, where the closing is what the ledger held at the month's end
    (the system's entries booked until then); the last closing is the Σ of its wallets' balances,
    and for each grant kind, currency and price it is what those grants hold (never negative)."""
    check = Check("roll-forward: opening + movements = closing = ledger balance, every month")
    flows: dict[tuple[int, str], int] = {}  # (system, month) -> net movement
    by_terms: dict[tuple[int, str, str, str], int] = {}
    low_point: dict[tuple[int, str, str, str], tuple[str, int]] = {}
    stored = sorted(_rollup_stored().items(), key=lambda kv: (kv[0][1], kv[0]))
    for i, ((sid, month, category, kind, currency, price), amount) in enumerate(stored):
        flows[(sid, month)] = flows.get((sid, month), 0) + _SIGN[category] * amount
        terms = (sid, kind, currency, price)
        by_terms[terms] = by_terms.get(terms, 0) + _SIGN[category] * amount
        month_ends = i + 1 == len(stored) or stored[i + 1][0][1] != month
        if month_ends:
            for seen, total in by_terms.items():
                if total < 0 and seen not in low_point:
                    low_point[seen] = (month, total)
    ledger = {
        (sid, month): int(total)
        for sid, month, total in db.session.execute(
            select(
                Wallet.credit_system_id,
                _month(LedgerEntry.created_at),
                exact_sum(LedgerEntry.amount_micros),
            )
            .join(Wallet, Wallet.id == LedgerEntry.wallet_id)
            .group_by(*_ordinals(2))
        )
    }
    closing: dict[int, int] = {}
    ledger_closing: dict[int, int] = {}
    for sid, month in sorted(flows.keys() | ledger.keys(), key=lambda k: (k[1], k[0])):
        check.checked += 1
        opening = closing.get(sid, 0)
        closing[sid] = opening + flows.get((sid, month), 0)
        ledger_closing[sid] = ledger_closing.get(sid, 0) + ledger.get((sid, month), 0)
        if closing[sid] != ledger_closing[sid]:
            check.violations.append(
                f"credit system {sid} {month}: opening {format_micros(opening)} plus the month's "
                f"movements is {format_micros(closing[sid])}, but the ledger held "
                f"{format_micros(ledger_closing[sid])} at its end"
            )
    wallets = {
        sid: int(total)
        for sid, total in db.session.execute(
            select(Wallet.credit_system_id, exact_sum(Wallet.balance_micros)).group_by(
                Wallet.credit_system_id
            )
        )
    }
    for sid in sorted(wallets.keys() | closing.keys()):
        if closing.get(sid, 0) != wallets.get(sid, 0):
            check.violations.append(
                f"credit system {sid}: the last closing is {format_micros(closing.get(sid, 0))} "
                f"but its wallets hold {format_micros(wallets.get(sid, 0))}"
            )
    g = CreditGrant
    held = {
        (sid, kind, currency, price): int(total)
        for sid, kind, currency, price, total in db.session.execute(
            select(
                Wallet.credit_system_id,
                g.kind,
                func.coalesce(g.currency, ""),
                func.coalesce(g.unit_price, ""),
                exact_sum(g.remaining_micros),
            )
            .join(Wallet, Wallet.id == g.wallet_id)
            .group_by(*_ordinals(4))
        )
    }
    for terms in sorted(held.keys() | by_terms.keys()):
        if held.get(terms, 0) != by_terms.get(terms, 0):
            sid, kind, currency, price = terms
            check.violations.append(
                f"credit system {sid} {kind} {currency or '-'} {price or '-'}: the rollup closes "
                f"at {format_micros(by_terms.get(terms, 0))} but those grants hold "
                f"{format_micros(held.get(terms, 0))}"
            )
    for (sid, kind, currency, price), (month, amount) in sorted(low_point.items()):
        check.violations.append(
            f"credit system {sid} {kind} {currency or '-'} {price or '-'}: the rollup closes "
            f"{month} at {format_micros(amount)}, below zero"
        )
    del check.violations[MAX_REPORTED:]
    return check
