"""Issue 12: 32 threads spend one wallet made of many small grants with staggered expiries while
`flask credits expire` runs in a loop in another process, on a real SQLite file and a real
PostgreSQL. Some grants expired before the test started without their expiry being booked: the
first writer or the sweep books each exactly once, and nobody spends them."""

from __future__ import annotations

import re
import subprocess
import sys
import threading
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from tests.factories import add_customer
from webapp.errors import DomainError
from webapp.extensions import db
from webapp.models import (
    CreditAllocation,
    CreditGrant,
    LedgerEntry,
    UsageEvent,
    set_clock,
)
from webapp.services import usage, wallets
from webapp.services.actors import SYSTEM
from webapp.services.verify import verify_ledger

pytestmark = pytest.mark.slow

CUSTOMER = "cust-grants-race"
THREADS = 32
ATTEMPTS = 5
GRANT = "0.05"  # 2.5 calls at 0.02: most calls are paid by two grants
LIVE = 40  # 40 x 0.05 = 2 credits = 100 calls
CALLS_AFFORDABLE = 100
PAST_DUE = 20
SIDES = 8  # other wallets with past-due grants, each spent by some of the threads too


def topup(customer: str, amount: str, **terms: object) -> int:
    result = wallets.topup_wallet(
        SYSTEM, customer_key=customer, credit_system="credits", amount=amount, **terms
    )
    assert result.entry.grant_id is not None
    return result.entry.grant_id


def grant_wallets(now: datetime) -> tuple[set[int], set[int], int]:
    """The wallet, and SIDES small ones: live grants with staggered expiries (some none) and
    priorities, one scheduled for tomorrow, and grants that expired before ``now`` but whose
    expiry is not booked (issued last, with the clock set back: a topup books due expiries).
    Returns (past-due ids, live ids, scheduled id)."""
    sides = [f"cust-side-{i}" for i in range(SIDES)]
    live = set()
    add_customer(CUSTOMER, api_allowance=None, topup=None)
    for i in range(LIVE):
        live.add(
            topup(
                CUSTOMER,
                GRANT,
                kind="granted" if i % 3 else "purchased",
                priority=(50, 100, 200)[i % 3],
                effective_at=(now - timedelta(hours=3)).isoformat(),
                expires_at=None if i % 4 == 0 else (now + timedelta(hours=i + 1)).isoformat(),
            )
        )
    scheduled = topup(CUSTOMER, "5", effective_at=(now + timedelta(days=1)).isoformat())
    for side in sides:
        add_customer(side, api_allowance=None, topup=None)
        # 0.1: the 32 / SIDES = 4 calls each side wallet gets, and a little more
        live.add(topup(side, "0.1", effective_at=(now - timedelta(hours=3)).isoformat()))
    past_due = set()
    then = now - timedelta(hours=4)
    set_clock(lambda: then)
    try:
        for i in range(PAST_DUE):
            past_due.add(
                topup(
                    CUSTOMER,
                    GRANT,
                    kind="granted" if i % 2 else "purchased",
                    priority=0,  # first in line, were they still spendable
                    expires_at=(then + timedelta(minutes=10 * (i + 1))).isoformat(),
                )
            )
        for side in sides:
            for m in range(3):
                expires = now - timedelta(minutes=30 + m)
                past_due.add(topup(side, GRANT, priority=0, expires_at=expires.isoformat()))
    finally:
        set_clock(None)
    booked = db.session.scalar(select(func.count()).where(LedgerEntry.type == "expiry"))
    assert booked == 0
    db.session.remove()
    return past_due, live, scheduled


def start_sweeper(database_url: str, stop: Path) -> subprocess.Popen[str]:
    code = (
        "import sys; from tests.concurrency_worker import expire_loop; expire_loop(*sys.argv[1:])"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, database_url, str(stop)],
        cwd=Path(__file__).parent.parent,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready", proc.stderr.read() if proc.stderr else ""
    return proc


def test_threads_spend_many_grants_while_the_sweep_runs_in_another_process(
    catalog, app, database_url, tmp_path
):
    now = datetime.now(UTC)
    past_due, live, scheduled = grant_wallets(now)
    stop = tmp_path / "stop"
    sweeper = start_sweeper(database_url, stop)
    outcomes: Counter[str] = Counter()
    accepted: dict[str, int] = {}  # event id -> credits
    errors: list[BaseException] = []
    lock = threading.Lock()
    barrier = threading.Barrier(THREADS + 1)  # and this thread, which starts the sweeper

    def spender(worker: int) -> None:
        with app.app_context():
            barrier.wait()
            for n in range(ATTEMPTS + 1):
                event_id = f"w{worker}-{n}"
                customer = CUSTOMER
                if n == worker % (ATTEMPTS + 1):  # one call on a side wallet, at varied times
                    customer = f"cust-side-{worker % SIDES}"
                    event_id = f"side-{event_id}"
                # Half of them backdated into the window where the past-due grants were live.
                stamp = None if worker % 2 else (now - timedelta(minutes=5 + worker)).isoformat()
                try:
                    result = usage.record_usage(
                        SYSTEM,
                        customer_key=customer,
                        feature_key="api_calls",
                        event_id=event_id,
                        timestamp=stamp,
                    )
                except DomainError as exc:
                    key = exc.code
                except BaseException as exc:  # noqa: BLE001
                    errors.append(exc)
                    key = "error"
                else:
                    key = "ok"
                    with lock:
                        accepted[event_id] = result.credits_micros or 0
                with lock:
                    outcomes[f"{'side' if customer != CUSTOMER else 'main'}:{key}"] += 1
            db.session.remove()

    threads = [threading.Thread(target=spender, args=(i,)) for i in range(THREADS)]
    try:
        for t in threads:
            t.start()
        assert sweeper.stdin is not None
        sweeper.stdin.write("go\n")
        sweeper.stdin.flush()
        barrier.wait()
        for t in threads:
            t.join(timeout=180)
    finally:
        stop.touch()
        out, err = sweeper.communicate(timeout=120)
    assert not any(t.is_alive() for t in threads)
    assert not errors, errors
    assert sweeper.returncode == 0, err
    runs = [
        re.search(r"^(\d+) .*Expired (\d+) grants in \d+ wallets\.$", line)
        for line in out.splitlines()
    ]
    assert len(runs) >= 2 and all(run and run[1] == "0" for run in runs), (out, err)
    by_sweep = sum(int(run[2]) for run in runs if run)

    assert outcomes == {
        "main:ok": CALLS_AFFORDABLE,
        "main:insufficient_credits": THREADS * ATTEMPTS - CALLS_AFFORDABLE,
        "side:ok": THREADS,
    }
    assert set(accepted.values()) == {20_000}

    report = verify_ledger()
    assert report.ok, report.violations

    # Nothing spent twice: the allocations add up to the credits of the accepted events, and
    # each accepted event has exactly its own allocations.
    per_event = dict(
        db.session.execute(
            select(UsageEvent.event_id, func.sum(CreditAllocation.amount_micros))
            .join(LedgerEntry, LedgerEntry.usage_event_id == UsageEvent.id)
            .join(CreditAllocation, CreditAllocation.ledger_entry_id == LedgerEntry.id)
            .group_by(UsageEvent.event_id)
        ).all()
    )
    assert per_event == accepted
    total = db.session.scalar(select(func.sum(CreditAllocation.amount_micros)))
    assert total == sum(accepted.values()) == (CALLS_AFFORDABLE + THREADS) * 20_000

    grants = {g.id: g for g in db.session.scalars(select(CreditGrant))}
    assert all(g.remaining_micros >= 0 for g in grants.values())
    # The main wallet's live grants were spent to the last micro, the side wallets' down to
    # 0.1 - 4 x 0.02; the scheduled grant not at all.
    assert sorted(grants[gid].remaining_micros for gid in live) == [0] * LIVE + [20_000] * SIDES
    assert grants[scheduled].remaining_micros == grants[scheduled].amount_micros

    # The past-due grants: each expiry booked exactly once (by the sweep or the first writer),
    # whole, and none of them ever paid for anything.
    expiries = Counter(
        db.session.scalars(select(LedgerEntry.grant_id).where(LedgerEntry.type == "expiry"))
    )
    assert expiries == dict.fromkeys(past_due, 1)
    assert 0 <= by_sweep <= len(past_due)  # the rest by the writers
    for gid in past_due:
        assert grants[gid].expired_micros == grants[gid].amount_micros
    spent_from = set(db.session.scalars(select(CreditAllocation.grant_id).distinct()))
    assert spent_from == live

    # No allocation at or after its grant's expiry, by the event's own time.
    late = db.session.execute(
        select(CreditAllocation.id)
        .join(CreditGrant, CreditGrant.id == CreditAllocation.grant_id)
        .join(LedgerEntry, LedgerEntry.id == CreditAllocation.ledger_entry_id)
        .join(UsageEvent, UsageEvent.id == LedgerEntry.usage_event_id)
        .where(CreditGrant.expires_at.is_not(None), UsageEvent.timestamp >= CreditGrant.expires_at)
    ).all()
    assert late == []
