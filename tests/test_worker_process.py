"""`flask worker` as real processes on real databases, with real receivers on 127.0.0.1 that
verify every signature with standardwebhooks: kill -9 mid-delivery (twice) loses nothing and
records no attempt twice; three workers on PostgreSQL deliver each event once; SIGTERM finishes
the attempt in hand and exits 0; a second SQLite worker waits for the first. Short leases and
backoffs come from the environment (WEBAPP_WEBHOOK_*), so nothing sleeps for long."""

from __future__ import annotations

import os
import signal
import subprocess
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from tests.reliability import BIN, ROOT, SECRET, database, in_app, pg_reachable, wait_until
from tests.webhook_receiver import Receiver
from webapp.extensions import db
from webapp.models import WebhookAttempt, WebhookDelivery

pytestmark = pytest.mark.slow


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path) -> Iterator[str]:
    if request.param == "postgresql" and not pg_reachable():
        pytest.skip("PostgreSQL not reachable")
    with database(request.param, tmp_path, "hooks") as url:
        from tests.conftest import migrate_to_head

        migrate_to_head(url)
        yield url


def worker(url: str, log: Path, **env: str) -> subprocess.Popen:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("WEBAPP_")}
    environ.update(
        DATABASE_URL=url,
        WEBAPP_SECRET_KEY=SECRET,
        WEBAPP_WEBHOOK_ALLOW_PRIVATE_TARGETS="true",
        WEBAPP_WEBHOOK_LEASE_SECONDS="2",
        WEBAPP_WEBHOOK_RETRY_BASE_SECONDS="0.2",
        WEBAPP_WORKER_POLL_SECONDS="0.05",
        WEBAPP_WORKER_BATCH="5",
        WEBAPP_WORKER_CONCURRENCY="2",
        PYTHONUNBUFFERED="1",
        **env,
    )
    with open(log, "ab") as out:
        return subprocess.Popen(
            [str(BIN / "flask"), "--app", "webapp", "worker"],
            cwd=ROOT,
            env=environ,
            stdout=out,
            stderr=out,
            start_new_session=True,
        )


def setup(url: str, receiver: Receiver, events: int) -> list[str]:
    """An endpoint for the receiver and ``events`` outbox events; their ids."""
    from webapp.services import outbox, webhooks
    from webapp.services.actors import SYSTEM
    from webapp.services.tx import write_transaction

    with in_app(url) as app:
        app.config["WEBHOOK_ALLOW_PRIVATE_TARGETS"] = True
        receiver.secrets.append(webhooks.create_endpoint(SYSTEM, url=receiver.url).secret)
        with write_transaction():
            conn = db.session.connection()
            for i in range(events):
                outbox.emit(conn, "wallet.depleted", {"n": i}, customer_key=f"c{i}")
        from webapp.models import OutboxEvent

        return [f"evt_{i}" for i in db.session.scalars(select(OutboxEvent.id))]


def stored(url: str) -> tuple[Counter, list[tuple[int, int, str]]]:
    with in_app(url):
        statuses = Counter(db.session.scalars(select(WebhookDelivery.status)))
        attempts = db.session.execute(
            select(WebhookAttempt.delivery_id, WebhookAttempt.number, WebhookAttempt.outcome)
        ).all()
        counts = dict(
            db.session.execute(select(WebhookDelivery.id, WebhookDelivery.attempts)).all()
        )
        per = Counter(a[0] for a in attempts)
        assert per == Counter({k: v for k, v in counts.items() if v}), "attempt rows != attempts"
        return statuses, [tuple(a) for a in attempts]


def all_delivered(url: str, n: int) -> bool:
    with in_app(url):
        return (
            db.session.scalar(
                select(func.count())
                .select_from(WebhookDelivery)
                .where(WebhookDelivery.status == "delivered")
            )
            == n
        )


def test_kill_9_mid_delivery_twice_loses_nothing(db_url, tmp_path):
    receiver = Receiver(delay_s=0.15)  # slow enough to catch the worker mid-call
    try:
        ids = setup(db_url, receiver, 40)
        log = tmp_path / "worker.log"
        for round_ in (1, 2):
            proc = worker(db_url, log)
            seen = len(receiver.received)
            wait_until(
                lambda seen=seen: len(receiver.received) >= seen + 4, f"deliveries, round {round_}"
            )
            # in the middle of a batch: an attempt is in flight (the receiver takes 0.15 s)
            wait_until(lambda: _in_flight(db_url), f"a batch in flight, round {round_}")
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        last = worker(db_url, log)
        try:
            wait_until(lambda: all_delivered(db_url, len(ids)), "every delivery", timeout=90)
        finally:
            last.terminate()
            assert last.wait(timeout=30) == 0
        assert set(receiver.ids()) == set(ids)  # every event at least once
        assert all(r.verified for r in receiver.received)
        statuses, attempts = stored(db_url)
        assert statuses == Counter({"delivered": len(ids)})
        keys = [(d, n) for d, n, _ in attempts]
        assert len(keys) == len(set(keys))  # no attempt recorded twice
        outcomes = Counter(o for _, _, o in attempts)
        assert outcomes["in_flight"] == 0, outcomes
        assert outcomes["lease_expired"] >= 1, outcomes  # the kills did hit mid-delivery
        # a resend only after the lease of the dead worker: extra copies are of killed claims
        extra = len(receiver.received) - len(ids)
        assert extra <= outcomes["lease_expired"], (extra, outcomes)
    finally:
        receiver.close()


def test_a_receiver_down_for_a_while_gets_everything_after(db_url, tmp_path):
    """500 for the first 12 requests (backoff 0.2 s doubling), then 200."""
    receiver = Receiver(answer=lambda n, r: 500 if n <= 12 else 200)
    try:
        ids = setup(db_url, receiver, 6)
        proc = worker(db_url, tmp_path / "worker.log")
        try:
            wait_until(lambda: all_delivered(db_url, len(ids)), "delivery after the outage")
        finally:
            proc.terminate()
            assert proc.wait(timeout=30) == 0
        statuses, attempts = stored(db_url)
        assert statuses == Counter({"delivered": 6})
        assert Counter(o for _, _, o in attempts) == Counter({"failed": 12, "delivered": 6})
    finally:
        receiver.close()


def test_sigterm_finishes_the_attempt_in_hand_and_exits_0(db_url, tmp_path):
    receiver = Receiver(delay_s=1.0)
    try:
        setup(db_url, receiver, 1)
        proc = worker(db_url, tmp_path / "worker.log")
        wait_until(lambda: len(receiver.received) == 0 and _in_flight(db_url), "a claim")
        if db_url.startswith("postgresql"):  # during the HTTP call no transaction is open
            assert _open_transactions(db_url) == [], _open_transactions(db_url)
        proc.terminate()
        assert proc.wait(timeout=30) == 0
        statuses, attempts = stored(db_url)
        assert statuses == Counter({"delivered": 1}) and attempts[0][2] == "delivered"
        assert "stopping after the attempts in hand" in (tmp_path / "worker.log").read_text()
    finally:
        receiver.close()


def _open_transactions(url: str) -> list[tuple[str, str]]:
    import psycopg
    from sqlalchemy import make_url

    from tests.reliability import _conninfo

    with psycopg.connect(**_conninfo(make_url(url))) as conn:
        return conn.execute(
            "SELECT state, query FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid() AND xact_start IS NOT NULL"
        ).fetchall()


def _in_flight(url: str) -> bool:
    with in_app(url):
        return bool(
            db.session.scalar(
                select(func.count())
                .select_from(WebhookAttempt)
                .where(WebhookAttempt.outcome == "in_flight")
            )
        )


def test_three_workers_on_postgresql_deliver_each_event_once(tmp_path):
    if not pg_reachable():
        pytest.skip("PostgreSQL not reachable")
    receiver = Receiver(delay_s=0.01)
    with database("postgresql", tmp_path, "hooks3") as url:
        from tests.conftest import migrate_to_head

        migrate_to_head(url)
        try:
            ids = setup(url, receiver, 300)
            procs = [worker(url, tmp_path / f"w{i}.log") for i in range(3)]
            try:
                wait_until(lambda: all_delivered(url, len(ids)), "300 deliveries", timeout=120)
            finally:
                for p in procs:
                    p.terminate()
                assert [p.wait(timeout=30) for p in procs] == [0, 0, 0]
            assert Counter(receiver.ids()) == Counter(ids)  # each exactly once
            _, attempts = stored(url)
            assert {n for _, n, _ in attempts} == {1}
            workers = {w.split(":")[-1] for w in _attempt_workers(url)}
            assert len(workers) == 3, "the three workers shared the work"
        finally:
            receiver.close()


def _attempt_workers(url: str) -> set[str]:
    with in_app(url):
        return set(db.session.scalars(select(WebhookAttempt.worker)))


def test_a_second_sqlite_worker_waits_then_takes_over(tmp_path):
    receiver = Receiver()
    with database("sqlite", tmp_path, "hooks2") as url:
        from tests.conftest import migrate_to_head

        migrate_to_head(url)
        try:
            ids = setup(url, receiver, 3)
            first = worker(url, tmp_path / "first.log")
            wait_until(lambda: all_delivered(url, 3), "the first worker's deliveries")
            second = worker(url, tmp_path / "second.log")
            wait_until(
                lambda: "waiting" in (tmp_path / "second.log").read_text(), "the second to wait"
            )
            first.terminate()
            assert first.wait(timeout=30) == 0
            more = setup(url, receiver, 2)  # a second endpoint: 5 more deliveries
            wait_until(lambda: all_delivered(url, 3 + 2 + 2), "the second worker's work")
            second.terminate()
            assert second.wait(timeout=30) == 0
            assert set(ids + more) <= set(receiver.ids())
        finally:
            receiver.close()
