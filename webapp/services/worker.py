"""`flask worker`: webhook delivery and the periodic jobs (docs/domain.md, "The worker").

Each round: run the periodic jobs that are due, fan new outbox events out to deliveries, then
claim a batch of due deliveries, send them (``concurrency`` at a time, no transaction open) and
record the results. When a round finds nothing to do the worker naps ``poll``.

Periodic jobs are ``JOBS`` below: a name, an interval and a function of ``now``. Whichever worker
claims the job's ``worker_jobs`` row when it is due runs it (FOR UPDATE SKIP LOCKED), so a job
runs once per interval however many workers there are. Add one with one line in ``jobs()``.

On SQLite one worker runs at a time: a second one waits on ``<database>-worker.lock`` (flock)
and takes over when the first stops or dies.
"""

from __future__ import annotations

import fcntl
import logging
import os
import random
import socket
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite

from ..extensions import db
from ..models import WorkerJob, utcnow
from .periods import duration
from .tx import write_transaction
from .webhooks import delivery, sender

log = logging.getLogger("webapp.worker")


@dataclass(frozen=True)
class PeriodicJob:
    name: str
    every: timedelta
    run: Callable[[datetime], object]


def _expire_credits(now: datetime) -> object:
    from . import credits

    done = credits.expire_due(now=now)
    return f"{done.grants} grants expired in {done.wallets} wallets"


def _scan_expiring(now: datetime) -> object:
    from . import alerts

    return f"{alerts.scan_expiring(now)} grants expiring soon"


def _plans_tick(now: datetime) -> object:
    from . import plans

    return plans.tick(now)


def jobs(config: Any) -> list[PeriodicJob]:
    """The periodic jobs. One line each; the function takes ``now`` and may return a summary
    for the log."""
    retention = config.get("OUTBOX_RETENTION_DAYS", 30)  # days, read exactly by prune
    # Another job is one more line, e.g.
    #   PeriodicJob("alerts.scan_expiring", timedelta(hours=1), alerts.scan_expiring),
    # with its module imported here (inside the function: no import cycle).
    return [
        PeriodicJob("credits.expire", timedelta(minutes=1), _expire_credits),
        # Scheduled plan changes and reset periods, unfinished plan edits, included credits.
        PeriodicJob("plans.tick", timedelta(minutes=1), _plans_tick),
        # credits.expiring_soon, once per grant (docs/domain.md, "Alerts").
        PeriodicJob("alerts.scan_expiring", timedelta(minutes=1), _scan_expiring),
        PeriodicJob(
            "outbox.prune",
            timedelta(hours=1),
            lambda now: f"{delivery.prune(now, retention_days=retention)} events pruned",
        ),
    ]


def _claim_job(job: PeriodicJob, now: datetime) -> tuple[bool, datetime]:
    """Whether this worker runs the job now, and when to ask again."""
    with write_transaction():
        dialect = db.session.get_bind().dialect.name
        insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
        db.session.execute(
            insert(WorkerJob)
            .values(name=job.name, next_run_at=now)
            .on_conflict_do_nothing(index_elements=["name"])
        )
        row = db.session.scalars(
            select(WorkerJob).where(WorkerJob.name == job.name).with_for_update(skip_locked=True)
        ).first()
        if row is None:  # another worker is claiming it right now
            return False, now + timedelta(seconds=1)
        if row.next_run_at > now:
            return False, row.next_run_at
        row.next_run_at = now + job.every
        row.last_started_at = now
        return True, row.next_run_at


def _finish_job(name: str, error: str | None) -> None:
    with write_transaction():
        row = db.session.get(WorkerJob, name)
        if row is not None:
            row.last_finished_at = utcnow()
            row.last_error = error[:500] if error else None


def run_due_jobs(
    job_list: list[PeriodicJob],
    now: datetime | None = None,
    not_before: dict[str, datetime] | None = None,
) -> int:
    """Run the jobs that are due. ``not_before`` (a worker's memory of each job's next run)
    spares a transaction per job and round until then."""
    ran = 0
    for job in job_list:
        at = now or utcnow()
        if not_before is not None and at < not_before.get(job.name, at):
            continue
        claimed, again = _claim_job(job, at)
        if not_before is not None:
            not_before[job.name] = again
        if not claimed:
            continue
        ran += 1
        try:
            summary = job.run(at)
        except Exception as exc:  # a failing job is logged and retried at its next interval
            db.session.rollback()
            log.exception("job %s failed", job.name)
            _finish_job(job.name, f"{type(exc).__name__}: {exc}")
        else:
            log.info("job %s: %s", job.name, summary if summary is not None else "done")
            _finish_job(job.name, None)
    return ran


@dataclass
class WorkerSettings:
    poll: timedelta = timedelta(seconds=1)
    batch: int = 50
    concurrency: int = 8

    @classmethod
    def of(cls, config: Any) -> WorkerSettings:
        return cls(
            poll=duration(config.get("WORKER_POLL_SECONDS", 1)),
            batch=int(config.get("WORKER_BATCH", 50)),
            concurrency=int(config.get("WORKER_CONCURRENCY", 8)),
        )


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class Worker:
    """One worker. ``stop`` (a threading.Event, set by SIGTERM / SIGINT) ends the loop after the
    batch in hand is sent and recorded."""

    def __init__(
        self,
        config: Any,
        *,
        name: str | None = None,
        stop: threading.Event | None = None,
        resolver: sender.Resolver = sender.system_resolver,
        rng: random.Random | None = None,
    ) -> None:
        self.name = name or worker_name()
        self.stop = stop or threading.Event()
        self.settings = WorkerSettings.of(config)
        self.delivery = delivery.Settings.of(config)
        self.jobs = jobs(config)
        self.sender = sender.Sender(
            allow_private=bool(config.get("WEBHOOK_ALLOW_PRIVATE_TARGETS")), resolver=resolver
        )
        self.rng = rng or random.Random()
        self.not_before: dict[str, datetime] = {}
        self._pool = ThreadPoolExecutor(max(1, self.settings.concurrency), "webhook-send")

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self.sender.close()

    def send(self, claimed: list[delivery.Claimed]) -> list[tuple[delivery.Claimed, sender.Result]]:
        def one(c: delivery.Claimed) -> sender.Result:
            return self.sender.post(
                c.url, c.body, sender.signed_headers(c.secrets, c.msg_id, c.body)
            )

        return list(zip(claimed, self._pool.map(one, claimed), strict=True))

    @property
    def claim_size(self) -> int:
        """At most as many deliveries as can all be sent well within their lease, even if
        every call takes its full 10 s: otherwise a slow endpoint's batch could outlive the
        lease and be claimed (and sent) again by another worker."""
        timeout = timedelta(seconds=sender.TIMEOUT_S)
        rounds = max(1, (self.delivery.lease - timeout) // timeout)
        return max(1, min(self.settings.batch, self.settings.concurrency * rounds))

    def deliver_due(self) -> int:
        claimed = delivery.claim(self.name, self.delivery, limit=self.claim_size)
        if not claimed:
            return 0
        results = self.send(claimed)
        done = delivery.record(self.name, results, self.delivery, rng=self.rng)
        for c, r in results:
            if not r.delivered:
                log.warning(
                    "delivery %s attempt %s to %s: %s",
                    c.delivery_id,
                    c.number,
                    c.url,
                    r.error or f"HTTP {r.status_code}",
                )
        log.info(
            "sent %d: %d delivered, %d to retry, %d failed",
            len(results),
            done.delivered,
            done.retrying,
            done.failed,
        )
        return len(results)

    def run_once(self) -> int:
        """One round; the amount of work done (0: nothing was due)."""
        work = run_due_jobs(self.jobs, not_before=self.not_before)
        dispatched = delivery.fan_out(self.delivery)
        if dispatched:
            log.info("dispatched %d outbox events", dispatched)
        work += dispatched
        if not self.stop.is_set():
            work += self.deliver_due()
        db.session.remove()  # no transaction (nor connection) held between rounds
        return work

    def run(self, *, until_idle: bool = False) -> None:
        log.info("worker %s started", self.name)
        failures = 0
        try:
            while not self.stop.is_set():
                try:
                    work = self.run_once()
                    failures = 0
                except Exception:
                    # The database down or busy, or a bug: log it and try again after a pause
                    # (doubling up to a minute); claims left behind are retried after their lease.
                    db.session.remove()
                    failures += 1
                    pause = min(timedelta(minutes=1), self.settings.poll * 2**failures)
                    log.exception("round failed; trying again in %s", pause)
                    if until_idle:
                        raise
                    self.stop.wait(pause.total_seconds())
                    continue
                if work == 0:
                    if until_idle:
                        break
                    self.stop.wait(self.settings.poll.total_seconds())
        finally:
            self.close()
            log.info("worker %s stopped", self.name)


@contextmanager
def single_sqlite_worker(database: str, stop: threading.Event) -> Iterator[bool]:
    """Yields True holding ``<database>-worker.lock``, after waiting for any other worker to
    stop; False if ``stop`` was set while waiting."""
    path = database + "-worker.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        waited = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not waited:
                    log.info("another worker runs on this SQLite database; waiting for it")
                    waited = True
                if stop.wait(0.5):
                    yield False
                    return
        try:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            yield True
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
