"""An allowance edit and usage at once keep `used <= allowance` where overage is `block`
(docs/domain.md, "Concurrent edits and usage"): both sides lock the entitlement row before they
judge, so one of them sees the other's commit.

On PostgreSQL a raw connection holds one row's lock to force each interleaving: the usage or
correction that judged against the entitlement it read before an edit committed, and the edit
that judged against the counter it read before a usage write committed. Every door that changes a
customer's effective entitlement goes through both. SQLite serializes writers (BEGIN IMMEDIATE),
so there only the many-writers test runs, as on PostgreSQL."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import psycopg
import pytest
from flask import Flask
from sqlalchemy import event, make_url, select

from tests.reliability import wait_until
from webapp.errors import DomainError
from webapp.extensions import db
from webapp.models import Customer, Entitlement, Feature, UsageCounter
from webapp.services import catalog, corrections, plans, usage
from webapp.services.actors import SYSTEM
from webapp.services.periods import EPOCH

C = "cust-edits"
M = 1_000_000
LOOSE = [{"feature_key": "reports", "allowance": "6", "reset_period": "never", "overage": "allow"}]
STRICT = [{"feature_key": "reports", "allowance": "6", "reset_period": "never", "overage": "block"}]
# What may refuse which side: the edit (reclaim first), or the usage (over the new allowance).
REFUSALS = {"validation_error", "plan_change_blocked", "limit_exceeded"}


def _connect(database_url: str) -> psycopg.Connection:
    url = make_url(database_url)
    return psycopg.connect(
        host=url.host, port=url.port or 5432, user=url.username, dbname=url.database
    )


def _base() -> None:
    catalog.create_feature(SYSTEM, key="reports", name="Reports", type="consumable")
    catalog.create_customer(SYSTEM, key=C, name="Edits", email=None)
    plans.create_plan(SYSTEM, key="loose", name="Loose", entitlements=LOOSE)
    plans.create_plan(SYSTEM, key="strict", name="Strict", entitlements=STRICT)


# Each door: what sets the customer up (6 reports, overage `allow`), and the edit that makes
# the same allowance `block`. 5 are used when the edit runs, and the usage side adds 4.


def _own() -> None:
    catalog.set_entitlement(
        SYSTEM, C, "reports", allowance="6", reset_period="never", overage="allow"
    )


def _on_loose() -> None:
    plans.change_customer_plan(SYSTEM, C, "loose")


def _on_strict_with_override() -> None:
    plans.change_customer_plan(SYSTEM, C, "strict")
    catalog.update_entitlement(SYSTEM, C, "reports", overage="allow")


def _scheduled_to_strict() -> None:
    plans.change_customer_plan(SYSTEM, C, "loose")
    plans.change_customer_plan(SYSTEM, C, "strict", when="period_end")


def _tick_at_the_change() -> None:
    at = db.session.scalar(select(Customer.pending_plan_at).where(Customer.key == C))
    plans.tick(now=at)


DOORS: dict[str, tuple[Callable[[], None], Callable[[], object]]] = {
    "entitlement": (
        _own,
        lambda: catalog.replace_entitlement(
            SYSTEM, C, "reports", allowance="6", reset_period="never", overage="block"
        ),
    ),
    "override": (
        _on_loose,
        lambda: catalog.update_entitlement(SYSTEM, C, "reports", overage="block"),
    ),
    "override_removed": (
        _on_strict_with_override,
        lambda: catalog.remove_entitlement(SYSTEM, C, "reports"),
    ),
    "plan_edit": (
        _on_loose,
        lambda: plans.update_plan(SYSTEM, "loose", entitlements=STRICT),
    ),
    "plan_change": (_on_loose, lambda: plans.change_customer_plan(SYSTEM, C, "strict")),
    "scheduled_plan_change": (_scheduled_to_strict, _tick_at_the_change),
}

# The usage side: new usage (RecordUsage), or a correction of an event of 1 to its actual 5.
WRITERS: dict[str, Callable[[], object]] = {
    "usage": lambda: usage.record_usage(SYSTEM, customer_key=C, feature_key="reports", amount=4),
    "correction": lambda: corrections.correct_usage(
        SYSTEM, customer_key=C, event_id="e1", actual_amount="5", reason="counted twice"
    ),
}


@dataclass
class Outcome:
    codes: dict[str, str] = field(default_factory=dict)  # side -> "ok" or the refusal's code
    errors: list[BaseException] = field(default_factory=list)

    def run(self, app: Flask, side: str, fn: Callable[[], object]) -> threading.Thread:
        def target() -> None:
            with app.app_context():
                try:
                    fn()
                    self.codes[side] = "ok"
                except DomainError as exc:
                    self.codes[side] = exc.code
                except BaseException as exc:  # noqa: BLE001 - reported by the test
                    self.errors.append(exc)
                finally:
                    db.session.remove()

        thread = threading.Thread(target=target)
        thread.start()
        return thread


@pytest.fixture
def deadlocks(app: Flask) -> Iterator[list[str]]:
    """The deadlocks PostgreSQL reported during the test (services/tx.py retries them silently:
    the lock order is meant to leave none)."""
    seen: list[str] = []

    def on_error(context) -> None:
        if getattr(context.original_exception, "sqlstate", None) == "40P01":
            seen.append(str(context.original_exception))

    event.listen(db.engine, "handle_error", on_error)
    yield seen
    event.remove(db.engine, "handle_error", on_error)


def _waiting(watcher: psycopg.Connection) -> int:
    row = watcher.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
        "AND datname = current_database()"
    ).fetchone()
    assert row is not None
    return int(row[0])


def _ids() -> tuple[int, int]:
    customer_id = db.session.scalar(select(Customer.id).where(Customer.key == C))
    feature_id = db.session.scalar(select(Feature.id).where(Feature.key == "reports"))
    assert customer_id is not None and feature_id is not None
    return customer_id, feature_id


def _violations() -> list[tuple[int, str, int]]:
    """Counters of the current period above a `block` allowance, read in one statement."""
    rows = db.session.execute(
        select(Entitlement.allowance_micros, Entitlement.overage, UsageCounter.used_micros)
        .join(
            UsageCounter,
            (UsageCounter.customer_id == Entitlement.customer_id)
            & (UsageCounter.feature_id == Entitlement.feature_id)
            & (UsageCounter.period_start == EPOCH),
        )
        .where(
            Entitlement.overage == "block",
            Entitlement.allowance_micros.is_not(None),
            UsageCounter.used_micros > Entitlement.allowance_micros,
        )
    ).all()
    db.session.commit()
    return [tuple(r) for r in rows]


def _prepare(door: str, writer: str) -> tuple[int, int]:
    _base()
    DOORS[door][0]()
    if writer == "correction":
        usage.record_usage(SYSTEM, customer_key=C, feature_key="reports", amount=4)
        usage.record_usage(SYSTEM, customer_key=C, feature_key="reports", amount=1, event_id="e1")
    else:
        usage.record_usage(SYSTEM, customer_key=C, feature_key="reports", amount=5)
    ids = _ids()
    db.session.remove()
    return ids


CASES = [(door, "usage") for door in DOORS] + [
    ("entitlement", "correction"),
    ("plan_change", "correction"),
]


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
@pytest.mark.parametrize(("door", "writer"), CASES)
def test_an_edit_that_waits_to_commit_is_seen_by_usage(app, database_url, deadlocks, door, writer):
    """The edit judged `used` before the usage side wrote, and commits after it: the usage side
    must wait for the edit and judge against what it committed."""
    customer_id, feature_id = _prepare(door, writer)
    holder = _connect(database_url)
    watcher = _connect(database_url)
    watcher.autocommit = True
    holder.execute(
        "SELECT id FROM entitlements WHERE customer_id = %s AND feature_id = %s FOR UPDATE",
        (customer_id, feature_id),
    )
    outcome = Outcome()
    edit = outcome.run(app, "edit", DOORS[door][1])
    wait_until(lambda: _waiting(watcher) >= 1, "the edit to wait for the entitlement's row")
    write = outcome.run(app, "write", WRITERS[writer])
    wait_until(
        lambda: not write.is_alive() or _waiting(watcher) >= 2,
        "the usage side to finish or to wait",
    )
    _release_and_settle(holder, watcher, outcome, edit, write)
    # The edit was first in the entitlement's queue: the usage side judged its new `block`.
    assert outcome.codes["write"] == "limit_exceeded", outcome.codes
    assert _policy() == "block", outcome.codes
    assert not deadlocks


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
@pytest.mark.parametrize(("door", "writer"), CASES)
def test_usage_that_waits_to_commit_is_seen_by_the_edit(app, database_url, deadlocks, door, writer):
    """The usage side read the entitlement, then waits (here for the counter's lock) while an
    edit makes the allowance `block`: the edit must wait for it and judge what it wrote."""
    customer_id, feature_id = _prepare(door, writer)
    holder = _connect(database_url)
    watcher = _connect(database_url)
    watcher.autocommit = True
    holder.execute(
        "SELECT used_micros FROM usage_counters WHERE customer_id = %s AND feature_id = %s "
        "FOR UPDATE",
        (customer_id, feature_id),
    )
    outcome = Outcome()
    write = outcome.run(app, "write", WRITERS[writer])
    wait_until(lambda: _waiting(watcher) >= 1, "the usage side to wait for the counter's row")
    edit = outcome.run(app, "edit", DOORS[door][1])
    wait_until(
        lambda: not edit.is_alive() or _waiting(watcher) >= 2, "the edit to finish or to wait"
    )
    _release_and_settle(holder, watcher, outcome, edit, write)
    # The usage side went first; the edit saw 9 used and refused (a plan edit keeps the
    # customer's values as an override, a due scheduled change stays scheduled: no error).
    assert outcome.codes["write"] == "ok", outcome.codes
    assert _policy() == "allow", outcome.codes
    assert not deadlocks


def _release_and_settle(
    holder: psycopg.Connection,
    watcher: psycopg.Connection,
    outcome: Outcome,
    *threads: threading.Thread,
) -> None:
    """Let the held row go, wait for both sides, and check what every interleaving must give:
    no error, only the usual refusals, the invariant intact."""
    holder.rollback()
    for thread in threads:
        thread.join(timeout=60)
    holder.close()
    watcher.close()
    assert not any(thread.is_alive() for thread in threads)
    assert not outcome.errors, outcome.errors
    assert set(outcome.codes.values()) <= REFUSALS | {"ok"}, outcome.codes
    assert _violations() == [], outcome.codes


def _policy() -> str | None:
    customer_id, feature_id = _ids()
    policy = db.session.scalar(
        select(Entitlement.overage).where(
            Entitlement.customer_id == customer_id, Entitlement.feature_id == feature_id
        )
    )
    db.session.commit()
    return policy


def test_many_writers_and_allowance_edits_keep_used_within_a_blocked_allowance(app, backend):
    """Seats taken and given back by several threads while others switch the allowance between
    `block` and `allow` (one customer's own entitlement, one plan customer's override); a
    checker reads every counter against its entitlement in one statement throughout."""
    catalog.create_feature(SYSTEM, key="seats", name="Seats", type="persistent")
    plans.create_plan(
        SYSTEM,
        key="team",
        name="Team",
        entitlements=[
            {"feature_key": "seats", "allowance": "3", "reset_period": "never", "overage": "block"}
        ],
    )
    own, planned = "cust-own", "cust-planned"
    for key in (own, planned):
        catalog.create_customer(SYSTEM, key=key, name=key, email=None)
    catalog.set_entitlement(SYSTEM, own, "seats", allowance="3", overage="allow")
    plans.change_customer_plan(SYSTEM, planned, "team")
    db.session.remove()
    rounds = 12 if backend == "sqlite" else 20
    errors: list[BaseException] = []
    seen: list[list[tuple[int, str, int]]] = []
    done = threading.Event()

    def guarded(fn: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            with app.app_context():
                try:
                    fn()
                except BaseException as exc:  # noqa: BLE001 - reported by the test
                    errors.append(exc)
                finally:
                    db.session.remove()

        return run

    def seat_user(customer: str) -> Callable[[], None]:
        def run() -> None:
            for _ in range(rounds):
                try:
                    usage.record_usage(SYSTEM, customer_key=customer, feature_key="seats")
                except DomainError as exc:
                    assert exc.code == "limit_exceeded", exc
                    continue
                usage.reclaim_seats(SYSTEM, customer_key=customer, feature_key="seats", count=1)

        return run

    def editor(set_policy: Callable[[str], object]) -> Callable[[], None]:
        def run() -> None:
            for n in range(rounds):
                try:
                    set_policy("block" if n % 2 else "allow")
                except DomainError as exc:
                    assert exc.code == "validation_error", exc

        return run

    def checker() -> None:
        while not done.is_set():
            found = _violations()
            if found:
                seen.append(found)

    threads = [threading.Thread(target=guarded(seat_user(c))) for c in (own, planned) * 3]
    threads += [
        threading.Thread(
            target=guarded(
                editor(
                    lambda policy: catalog.replace_entitlement(
                        SYSTEM, own, "seats", allowance="3", reset_period="never", overage=policy
                    )
                )
            )
        ),
        threading.Thread(
            target=guarded(
                editor(
                    lambda policy: catalog.update_entitlement(
                        SYSTEM, planned, "seats", overage=policy
                    )
                )
            )
        ),
    ]
    watch = threading.Thread(target=guarded(checker))
    watch.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=240)
    done.set()
    watch.join(timeout=60)
    assert not any(t.is_alive() for t in [*threads, watch])
    assert not errors, errors
    assert not seen, seen[:3]
    assert _violations() == []
