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
from typing import Any

from sqlalchemy import and_, delete, exists, func, or_, select, tuple_, update

from ...extensions import db
from ...models import OutboxEvent, WebhookAttempt, WebhookDelivery, WebhookEndpoint, utcnow
from ..outbox import envelope
from ..tx import write_transaction
from . import signing_secrets
from .sender import Result


@dataclass(frozen=True)
class Settings:
    retry_base_s: float = 5.0
    retry_max_s: float = 6 * 3600.0
    give_up_s: float = 3 * 86400.0
    lease_s: float = 60.0

    @classmethod
    def of(cls, config: Any) -> Settings:
        return cls(
            retry_base_s=float(config.get("WEBHOOK_RETRY_BASE_SECONDS", cls.retry_base_s)),
            retry_max_s=float(config.get("WEBHOOK_RETRY_MAX_SECONDS", cls.retry_max_s)),
            give_up_s=float(config.get("WEBHOOK_GIVE_UP_SECONDS", cls.give_up_s)),
            lease_s=float(config.get("WEBHOOK_LEASE_SECONDS", cls.lease_s)),
        )


def retry_delay(number: int, settings: Settings, rand: float) -> timedelta:
    """After failed attempt ``number`` (1, 2, ...): exponential, capped, with "equal jitter":
    half the step fixed, half random (``rand`` in [0, 1)), so retries of many deliveries that
    failed together spread out."""
    step = min(settings.retry_max_s, settings.retry_base_s * 2 ** min(number - 1, 40))
    return timedelta(seconds=step / 2 + step / 2 * rand)


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
        give_up = now + timedelta(seconds=settings.give_up_s)
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
            db.session.execute(WebhookDelivery.__table__.insert(), rows)  # type: ignore[attr-defined]
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


def claim(
    worker: str, settings: Settings, *, limit: int = 50, now: datetime | None = None
) -> list[Claimed]:
    """Take up to ``limit`` due deliveries of enabled endpoints: each gets a lease and a new
    attempt row. A delivery past its 3 days is marked failed instead."""
    with write_transaction():
        now = now or utcnow()
        due = list(
            db.session.scalars(
                select(WebhookDelivery)
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
            )
        )
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
        live: list[WebhookDelivery] = []
        for d in due:
            d.lease_until = None
            d.leased_by = None
            if now >= d.give_up_at:
                d.status = "failed"
                continue
            d.attempts += 1
            d.lease_until = now + timedelta(seconds=settings.lease_s)
            d.leased_by = worker
            live.append(d)
        if not live:
            return []
        db.session.execute(
            WebhookAttempt.__table__.insert(),  # type: ignore[attr-defined]
            [
                {
                    "delivery_id": d.id,
                    "number": d.attempts,
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
            body = json.dumps(envelope(event), separators=(",", ":"), ensure_ascii=False)
            endpoint = endpoints[d.endpoint_id]
            out.append(
                Claimed(
                    delivery_id=d.id,
                    number=d.attempts,
                    endpoint_id=endpoint.id,
                    url=endpoint.url,
                    msg_id=f"evt_{event.id}",
                    body=body,
                    secrets=signing_secrets(endpoint, now),
                )
            )
        return out


@dataclass
class Recorded:
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
    """Write each attempt's outcome and move its delivery on: delivered on a 2xx; otherwise,
    if this worker still holds the claim, the next try after the backoff, or failed when that
    would fall after `give_up_at`."""
    rng = rng or random.Random()
    counts = Recorded()
    if not results:
        return counts
    with write_transaction():
        now = now or utcnow()
        keys = [(c.delivery_id, c.number) for c, _ in results]
        attempts = {
            (a.delivery_id, a.number): a
            for a in db.session.scalars(
                select(WebhookAttempt).where(
                    tuple_(WebhookAttempt.delivery_id, WebhookAttempt.number).in_(keys)
                )
            )
        }
        deliveries = {
            d.id: d
            for d in db.session.scalars(
                select(WebhookDelivery)
                .where(WebhookDelivery.id.in_([k[0] for k in keys]))
                .with_for_update()
            )
        }
        for claimed, result in results:
            attempt = attempts.get((claimed.delivery_id, claimed.number))
            if attempt is not None:
                attempt.finished_at = now
                attempt.outcome = "delivered" if result.delivered else "failed"
                attempt.status_code = result.status_code
                attempt.error = result.error[:500] if result.error else None
                attempt.response_body = result.body
                attempt.duration_ms = result.duration_ms
            d = deliveries.get(claimed.delivery_id)
            if d is None:
                continue
            ours = d.leased_by == worker and d.attempts == claimed.number
            if ours:
                d.lease_until = None
                d.leased_by = None
            if d.status != "pending":
                continue
            if result.delivered:
                d.status = "delivered"
                d.delivered_at = now
                d.last_status_code = result.status_code
                d.last_error = None
                counts.delivered += 1
                continue
            if not ours:
                continue  # a later claim owns the delivery now
            d.last_status_code = result.status_code
            d.last_error = result.error[:500] if result.error else None
            after = now + retry_delay(claimed.number, settings, rng.random())
            if after > d.give_up_at:
                d.status = "failed"
                counts.failed += 1
            else:
                d.next_attempt_at = after
                counts.retrying += 1
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


def prune(now: datetime | None = None, *, retention_days: float = 30, batch: int = 2000) -> int:
    """Delete outbox events older than the retention that are dispatched and no longer owed
    to anyone (no pending delivery), with their deliveries and attempts. Returns the count."""
    now = now or utcnow()
    cutoff = now - timedelta(days=retention_days)
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
