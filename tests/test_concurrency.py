"""Concurrent writers on one wallet and one seat allowance, with real threads and real processes,
on a real SQLite file and a real PostgreSQL: exactly as many successes as the balance and the
allowance allow, nothing negative, and `ledger verify` clean afterwards."""

from __future__ import annotations

import multiprocessing
import threading
from collections import Counter

import pytest

from tests.concurrency_worker import hammer
from tests.factories import add_customer
from webapp.errors import DomainError
from webapp.extensions import db
from webapp.services import reads, usage, wallets
from webapp.services.actors import SYSTEM
from webapp.services.verify import verify_ledger

C = "cust-6d11ca90"
CALLS_AFFORDABLE = 25  # 0.50 credits at 0.02 per call
SEATS = 7


def prepare(catalog_customer: str = "cust-race") -> str:
    add_customer(catalog_customer, api_allowance=10_000, seat_allowance=SEATS, topup="0.5")
    db.session.remove()
    return catalog_customer


def assert_outcome(customer: str, outcomes: Counter[str]) -> None:
    assert outcomes["api_calls:ok"] == CALLS_AFFORDABLE, outcomes
    assert outcomes["seats:ok"] == SEATS, outcomes
    assert set(outcomes) <= {
        "api_calls:ok",
        "api_calls:insufficient_credits",
        "seats:ok",
        "seats:limit_exceeded",
    }, outcomes
    summary = reads.customer_summary(SYSTEM, customer)
    assert [w.balance_micros for w in summary.wallets] == [0]
    seats = next(e for e in summary.entitlements if e.feature_key == "seats")
    assert seats.used_micros == SEATS * 1_000_000
    report = verify_ledger()
    assert report.ok, report.violations


def test_sixteen_threads_cannot_overspend_or_overbook(catalog, app):
    customer = prepare()
    outcomes: Counter[str] = Counter()
    lock = threading.Lock()
    barrier = threading.Barrier(16)

    def worker(worker_id: int) -> None:
        with app.app_context():
            barrier.wait()
            for n in range(8):
                feature = "api_calls" if n % 2 == 0 else "seats"
                try:
                    usage.record_usage(SYSTEM, customer_key=customer, feature_key=feature)
                    key = f"{feature}:ok"
                except DomainError as exc:
                    key = f"{feature}:{exc.code}"
                with lock:
                    outcomes[key] += 1
            db.session.remove()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads)
    assert sum(outcomes.values()) == 16 * 8
    assert_outcome(customer, outcomes)


def test_four_processes_cannot_overspend_or_overbook(catalog, database_url):
    customer = prepare()
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(4) as pool:
        results = pool.starmap(hammer, [(database_url, customer, 30, w) for w in range(4)])
    outcomes: Counter[str] = Counter()
    for result in results:
        outcomes.update(result)
    assert sum(outcomes.values()) == 4 * 30
    assert_outcome(customer, outcomes)


def test_concurrent_replays_of_one_event_record_it_once(catalog, app):
    results: list[object] = []
    lock = threading.Lock()
    barrier = threading.Barrier(16)

    def worker() -> None:
        with app.app_context():
            barrier.wait()
            result = usage.record_usage(
                SYSTEM, customer_key=C, feature_key="api_calls", amount=3, event_id="the-one"
            )
            with lock:
                results.append(result)
            db.session.remove()

    threads = [threading.Thread(target=worker) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(results) == 16
    assert sum(not r.replayed for r in results) == 1
    assert len({(r.used_micros, r.balance_micros) for r in results}) == 1
    assert len(reads.list_events(SYSTEM, C).items) == 1
    assert verify_ledger().ok


def test_concurrent_topups_and_spending_keep_the_ledger_exact(catalog, app):
    customer = add_customer("cust-mixed", api_allowance=None, topup="1")
    db.session.remove()
    barrier = threading.Barrier(8)
    errors: list[BaseException] = []

    def spender() -> None:
        with app.app_context():
            barrier.wait()
            for _ in range(20):
                try:
                    usage.record_usage(SYSTEM, customer_key=customer, feature_key="api_calls")
                except DomainError as exc:
                    assert exc.code == "insufficient_credits"
            db.session.remove()

    def topper() -> None:
        with app.app_context():
            barrier.wait()
            try:
                for _ in range(10):
                    wallets.topup_wallet(
                        SYSTEM, customer_key=customer, credit_system="credits", amount="0.1"
                    )
            except BaseException as exc:  # noqa: BLE001
                errors.append(exc)
            db.session.remove()

    threads = [threading.Thread(target=spender) for _ in range(6)]
    threads += [threading.Thread(target=topper) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors
    report = verify_ledger()
    assert report.ok, report.violations
    (wallet,) = reads.customer_summary(SYSTEM, customer).wallets
    spent = sum(e.credits_micros or 0 for e in reads.list_events(SYSTEM, customer, limit=200).items)
    assert wallet.balance_micros == 1_000_000 + 2_000_000 - spent


pytestmark = pytest.mark.slow


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # the gate is SQLite's
def test_sqlite_writers_queue_gives_503_when_it_does_not_move(catalog, app):
    """A writer that waits at the SQLite writers' gate longer than the busy timeout gets
    ServiceUnavailable (503), and the gate serves the next writer once it is free."""
    from webapp.db_setup import _gates, write_gate
    from webapp.errors import ServiceUnavailable

    _gates[db.engine].timeout_s = 0.2
    outcome: list[object] = []

    def writer() -> None:
        with app.app_context():
            try:
                usage.record_usage(SYSTEM, customer_key=C, feature_key="api_calls")
                outcome.append("ok")
            except ServiceUnavailable as exc:
                outcome.append(exc.code)
            db.session.remove()

    with write_gate(db.engine):
        t = threading.Thread(target=writer)
        t.start()
        t.join(timeout=10)
    assert outcome == ["service_unavailable"]
    writer()
    assert outcome == ["service_unavailable", "ok"]
