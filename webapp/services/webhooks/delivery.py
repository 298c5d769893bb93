"""The worker's side of webhooks: fan out, claim, record (docs/domain.md, "Webhooks").

Every step is one short write transaction; the HTTP calls happen between them, with no
transaction open. On PostgreSQL several workers share the work: the outbox rows and the due
deliveries are taken with ``FOR UPDATE SKIP LOCKED``, so two workers never take the same one.
A claim writes the attempt row (``in_flight``) and a lease; a worker killed during the call
leaves both behind, the lease runs out and the next claim marks that attempt ``lease_expired``
and makes a new one with the next number. Attempt rows are unique per (delivery, number).
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import (
    Table,
    and_,
    bindparam,
    case,
    delete,
    exists,
    func,
    or_,
    select,
    tuple_,
    update,
)

from ...extensions import db
from ...models import OutboxEvent, WebhookAttempt, WebhookDelivery, WebhookEndpoint, utcnow
from ..outbox import envelope
from ..periods import duration
from ..tx import write_transaction
from . import signing_secrets
from .sender import Result

_D = cast(Table, WebhookDelivery.__table__)
_A = cast(Table, WebhookAttempt.__table__)


@dataclass(frozen=True)
class Settings:
    retry_base: timedelta = timedelta(seconds=5)
    retry_max: timedelta = timedelta(hours=6)
    give_up: timedelta = timedelta(days=3)
    lease: timedelta = timedelta(seconds=60)

    @classmethod
    def of(cls, config: Any) -> Settings:
        """From the WEBHOOK_*_SECONDS settings (exact: periods.duration)."""
        given = {
            field: config.get(f"WEBHOOK_{name}_SECONDS")
            for field, name in (
                ("retry_base", "RETRY_BASE"),
                ("retry_max", "RETRY_MAX"),
                ("give_up", "GIVE_UP"),
                ("lease", "LEASE"),
            )
        }
        return cls(**{k: duration(v) for k, v in given.items() if v is not None})


def retry_delay(number: int, settings: Settings, rand: float) -> timedelta:
    """After failed attempt ``number`` (1, 2, ...): exponential, capped, with "equal jitter":
    half the step fixed, half random (``rand`` in [0, 1)), so retries of many deliveries that
    failed together spread out."""
    step: timedelta = min(settings.retry_max, settings.retry_base * 2 ** min(number - 1, 40))
    half = step / 2
    return half + half * rand


def max_attempts_per_window(settings: Settings) -> int | None:
    """The most attempts the backoff makes in one give-up window: the first at once, each next
    one at least the fixed half of its wait later (``rand`` 0), none after `give_up_at`. 36
    with the defaults; None (no bound) if a wait can be 0. Resends (a new window) and expired
    leases add to it."""
    attempts, elapsed = 1, timedelta(0)
    while True:
        wait = retry_delay(attempts, settings, 0.0)
        if wait <= timedelta(0):
            return None
        if wait == retry_delay(attempts + 1, settings, 0.0):  # capped: the rest are equal
            return attempts + (settings.give_up - elapsed) // wait
        elapsed += wait
        if elapsed > settings.give_up:
            return attempts
        attempts += 1


# ---------------------------------------------------------------- fan-out


def _wants(event_types: list[str] | None, event_type: str) -> bool:
    return event_types is None or event_type in event_types


def fan_out(settings: Settings, *, limit: int = 500, now: datetime | None = None) -> int:
    """Undispatched outbox events -> one pending delivery per enabled endpoint that wants the
    type; then the events are dispatched. Returns how many events were dispatched."""
    with write_transaction():
        now = now or utcnow()
        events = db.session.execute(
            select(OutboxEvent.id, OutboxEvent.type)
            .where(OutboxEvent.dispatched_at.is_(None))
            .order_by(OutboxEvent.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        ).all()
        if not events:
            return 0
        endpoints = db.session.execute(
            select(WebhookEndpoint.id, WebhookEndpoint.event_types).where(
                WebhookEndpoint.enabled.is_(True)
            )
        ).all()
        give_up = now + settings.give_up
        rows = [
            {
                "endpoint_id": endpoint_id,
                "event_id": event_id,
                "status": "pending",
                "attempts": 0,
                "created_at": now,
                "next_attempt_at": now,
                "give_up_at": give_up,
            }
            for event_id, event_type in events
            for endpoint_id, types in endpoints
            if _wants(types, event_type)
        ]
        if rows:
            db.session.execute(_D.insert(), rows)
        db.session.execute(
            update(OutboxEvent)
            .where(OutboxEvent.id.in_([e.id for e in events]))
            .values(dispatched_at=now)
        )
        return len(events)


# ---------------------------------------------------------------- claim, send, record


@dataclass(frozen=True)
class Claimed:
    delivery_id: int
    number: int
    endpoint_id: int
    url: str
    msg_id: str
    body: str
    secrets: list[str]
    give_up_at: datetime


def claim(
    worker: str, settings: Settings, *, limit: int = 50, now: datetime | None = None
) -> list[Claimed]:
    """Take up to ``limit`` due deliveries of enabled endpoints: each gets a lease and a new
    attempt row. A delivery past its 3 days is marked failed instead. A constant number of
    statements, whatever ``limit``."""
    with write_transaction():
        now = now or utcnow()
        due = db.session.execute(
            select(
                WebhookDelivery.id,
                WebhookDelivery.attempts,
                WebhookDelivery.lease_until,
                WebhookDelivery.give_up_at,
                WebhookDelivery.event_id,
                WebhookDelivery.endpoint_id,
            )
            .join(WebhookEndpoint, WebhookEndpoint.id == WebhookDelivery.endpoint_id)
            .where(
                WebhookDelivery.status == "pending",
                WebhookDelivery.next_attempt_at <= now,
                or_(WebhookDelivery.lease_until.is_(None), WebhookDelivery.lease_until < now),
                WebhookEndpoint.enabled.is_(True),
            )
            .order_by(WebhookDelivery.next_attempt_at, WebhookDelivery.id)
            .limit(limit)
            .with_for_update(skip_locked=True, of=WebhookDelivery)
        ).all()
        if not due:
            return []
        abandoned = [(d.id, d.attempts) for d in due if d.lease_until is not None]
        if abandoned:
            db.session.execute(
                update(WebhookAttempt)
                .where(
                    tuple_(WebhookAttempt.delivery_id, WebhookAttempt.number).in_(abandoned),
                    WebhookAttempt.outcome == "in_flight",
                )
                .values(outcome="lease_expired", finished_at=now, error="the worker stopped")
                .execution_options(synchronize_session=False)
            )
        expired = [d.id for d in due if now >= d.give_up_at]
        if expired:
            db.session.execute(
                update(WebhookDelivery)
                .where(WebhookDelivery.id.in_(expired))
                .values(status="failed", lease_until=None, leased_by=None)
                .execution_options(synchronize_session=False)
            )
        live = [d for d in due if now < d.give_up_at]
        if not live:
            return []
        db.session.execute(
            update(WebhookDelivery)
            .where(WebhookDelivery.id.in_([d.id for d in live]))
            .values(
                attempts=WebhookDelivery.attempts + 1,
                lease_until=now + settings.lease,
                leased_by=worker,
            )
            .execution_options(synchronize_session=False)
        )
        db.session.execute(
            _A.insert(),
            [
                {
                    "delivery_id": d.id,
                    "number": d.attempts + 1,
                    "worker": worker,
                    "started_at": now,
                    "outcome": "in_flight",
                }
                for d in live
            ],
        )
        events = {
            e.id: e
            for e in db.session.scalars(
                select(OutboxEvent).where(OutboxEvent.id.in_({d.event_id for d in live}))
            )
        }
        endpoints = {
            e.id: e
            for e in db.session.scalars(
                select(WebhookEndpoint).where(WebhookEndpoint.id.in_({d.endpoint_id for d in live}))
            )
        }
        out = []
        for d in live:
            event = events[d.event_id]
            endpoint = endpoints[d.endpoint_id]
            out.append(
                Claimed(
                    delivery_id=d.id,
                    number=d.attempts + 1,
                    endpoint_id=endpoint.id,
                    url=endpoint.url,
                    msg_id=f"evt_{event.id}",
                    body=json.dumps(envelope(event), separators=(",", ":"), ensure_ascii=False),
                    secrets=signing_secrets(endpoint, now),
                    give_up_at=d.give_up_at,
                )
            )
        return out


@dataclass
class Recorded:
    """What the answers were (for the log): 2xx, to retry, past their 3 days."""

    delivered: int = 0
    retrying: int = 0
    failed: int = 0


def record(
    worker: str,
    results: Sequence[tuple[Claimed, Result]],
    settings: Settings,
    *,
    rng: random.Random | None = None,
    now: datetime | None = None,
) -> Recorded:
    """Write each attempt's outcome and move its delivery on: delivered on a 2xx (whoever
    holds it now); otherwise, only if this worker still holds the claim (same worker, same
    attempt number), the next try after the backoff, or failed when that would fall after
    `give_up_at`. Three statements (executemany), whatever the batch."""
    rng = rng or random.Random()
    counts = Recorded()
    if not results:
        return counts
    with write_transaction():
        now = now or utcnow()
        db.session.execute(
            _A.update()
            .where(
                _A.c.delivery_id == bindparam("d_id"),
                _A.c.number == bindparam("d_number"),
            )
            .values(
                finished_at=now,
                outcome=bindparam("outcome"),
                status_code=bindparam("code"),
                error=bindparam("error"),
                response_body=bindparam("body"),
                duration_ms=bindparam("ms"),
            ),
            [
                {
                    "d_id": c.delivery_id,
                    "d_number": c.number,
                    "outcome": "delivered" if r.delivered else "failed",
                    "code": r.status_code,
                    "error": r.error[:500] if r.error else None,
                    "body": r.body,
                    "ms": r.duration_ms,
                }
                for c, r in results
            ],
        )
        delivered = [(c, r) for c, r in results if r.delivered]
        if delivered:
            db.session.execute(
                _D.update()
                .where(_D.c.id == bindparam("d_id"), _D.c.status == "pending")
                .values(
                    status="delivered",
                    delivered_at=now,
                    last_status_code=bindparam("code"),
                    last_error=None,
                    lease_until=None,
                    leased_by=None,
                ),
                [{"d_id": c.delivery_id, "code": r.status_code} for c, r in delivered],
            )
            counts.delivered = len(delivered)
        retry = []
        for c, r in results:
            if r.delivered:
                continue
            after = now + retry_delay(c.number, settings, rng.random())
            retry.append(
                {
                    "d_id": c.delivery_id,
                    "d_number": c.number,
                    "after": after,
                    "code": r.status_code,
                    "error": r.error[:500] if r.error else None,
                }
            )
            if after > c.give_up_at:
                counts.failed += 1
            else:
                counts.retrying += 1
        if retry:
            next_at = bindparam("after", type_=_D.c.next_attempt_at.type)
            db.session.execute(
                _D.update()
                .where(
                    _D.c.id == bindparam("d_id"),
                    _D.c.status == "pending",
                    _D.c.leased_by == worker,
                    _D.c.attempts == bindparam("d_number"),
                )
                .values(
                    next_attempt_at=next_at,
                    status=case((_D.c.give_up_at < next_at, "failed"), else_="pending"),
                    last_status_code=bindparam("code"),
                    last_error=bindparam("error"),
                    lease_until=None,
                    leased_by=None,
                ),
                retry,
            )
    return counts


# ---------------------------------------------------------------- status and pruning


@dataclass(frozen=True)
class QueueStatus:
    undispatched_events: int
    pending_deliveries: int  # of enabled endpoints, in flight included
    in_flight: int
    failed_deliveries: int
    oldest_undelivered_at: datetime | None
    now: datetime

    @property
    def depth(self) -> int:
        return self.undispatched_events + self.pending_deliveries

    @property
    def oldest_age_s(self) -> float | None:
        if self.oldest_undelivered_at is None:
            return None
        return max(0.0, (self.now - self.oldest_undelivered_at).total_seconds())


def queue_status(now: datetime | None = None) -> QueueStatus:
    """Queue depth and the age of the oldest event not yet delivered (four queries)."""
    now = now or utcnow()
    undispatched, oldest_new = db.session.execute(
        select(func.count(), func.min(OutboxEvent.created_at)).where(
            OutboxEvent.dispatched_at.is_(None)
        )
    ).one()
    pending_where = and_(
        WebhookDelivery.status == "pending",
        WebhookEndpoint.enabled.is_(True),
    )
    pending, in_flight, oldest_pending = db.session.execute(
        select(
            func.count(),
            func.count(WebhookDelivery.lease_until),
            func.min(OutboxEvent.created_at),
        )
        .select_from(WebhookDelivery)
        .join(WebhookEndpoint, WebhookEndpoint.id == WebhookDelivery.endpoint_id)
        .join(OutboxEvent, OutboxEvent.id == WebhookDelivery.event_id)
        .where(pending_where)
    ).one()
    failed = db.session.scalar(
        select(func.count()).select_from(WebhookDelivery).where(WebhookDelivery.status == "failed")
    )
    oldest = min((t for t in (oldest_new, oldest_pending) if t is not None), default=None)
    return QueueStatus(
        undispatched_events=undispatched,
        pending_deliveries=pending,
        in_flight=in_flight,
        failed_deliveries=failed or 0,
        oldest_undelivered_at=oldest,
        now=now,
    )


def prune(now: datetime | None = None, *, retention_days: object = 30, batch: int = 2000) -> int:
    """Delete outbox events older than the retention that are dispatched and no longer owed
    to anyone (no pending delivery), with their deliveries and attempts. Returns the count."""
    now = now or utcnow()
    cutoff = now - duration(retention_days, unit=timedelta(days=1))
    total = 0
    while True:
        with write_transaction():
            ids = list(
                db.session.scalars(
                    select(OutboxEvent.id)
                    .where(
                        OutboxEvent.dispatched_at.is_not(None),
                        OutboxEvent.created_at < cutoff,
                        ~exists().where(
                            WebhookDelivery.event_id == OutboxEvent.id,
                            WebhookDelivery.status == "pending",
                        ),
                    )
                    .order_by(OutboxEvent.id)
                    .limit(batch)
                    .with_for_update(skip_locked=True)
                )
            )
            if not ids:
                return total
            deliveries = select(WebhookDelivery.id).where(WebhookDelivery.event_id.in_(ids))
            db.session.execute(
                delete(WebhookAttempt).where(WebhookAttempt.delivery_id.in_(deliveries))
            )
            db.session.execute(delete(WebhookDelivery).where(WebhookDelivery.event_id.in_(ids)))
            db.session.execute(delete(OutboxEvent).where(OutboxEvent.id.in_(ids)))
            total += len(ids)
