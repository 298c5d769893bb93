"""Webhook endpoints (admin): register, change, disable, rotate the secret, send a test event;
the deliveries log and resend. Delivery itself is ``delivery`` (run by ``flask worker``);
sending is ``sender`` (signing and the SSRF guard). docs/domain.md, "Webhooks"."""

from __future__ import annotations

import base64
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from flask import current_app
from sqlalchemy import func, select

from ...errors import NotFound, ValidationError
from ...extensions import db
from ...models import OutboxEvent, WebhookAttempt, WebhookDelivery, WebhookEndpoint, utcnow
from .. import alerts, audit, outbox, validation
from ..actors import ADMIN, Actor, require
from ..paging import keyset_page
from ..tx import transactional
from . import sender

SECRET_PREFIX = "whsec_"
ROTATION_OVERLAP = timedelta(hours=24)
TEST_EVENT = "webhook.test"
# The types an endpoint may ask for (issue 15's list and Metrifox's names); null asks for all.
KNOWN_EVENT_TYPES = (*alerts.EVENT_TYPES, TEST_EVENT)  # one list: the alerts module's


def allow_private() -> bool:
    return bool(current_app.config.get("WEBHOOK_ALLOW_PRIVATE_TARGETS"))


def give_up_after() -> timedelta:
    """How long a delivery is retried: the worker's own setting (delivery.Settings)."""
    from .delivery import Settings

    return Settings.of(current_app.config).give_up


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(24)).decode()


def signing_secrets(endpoint: WebhookEndpoint, now: datetime) -> list[str]:
    """The current secret, and the previous one while its 24 h of overlap last."""
    out = [endpoint.secret]
    until = endpoint.previous_secret_until
    if endpoint.previous_secret and until is not None and now < until:
        out.append(endpoint.previous_secret)
    return out


@dataclass(frozen=True)
class NewEndpoint:
    endpoint: WebhookEndpoint
    secret: str  # shown once


def _url(value: object) -> str:
    if not isinstance(value, str):
        raise ValidationError("`url` must be a string.", field="url")
    sender.parse_url(value.strip(), allow_private=allow_private())
    return value.strip()


def _event_types(value: object) -> list[str] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not value:
        raise ValidationError(
            "`event_types` is a non-empty list of event types, or null for every type.",
            field="event_types",
        )
    out: list[str] = []
    for item in value:
        if item not in KNOWN_EVENT_TYPES:
            raise ValidationError(
                f"Unknown event type {str(item)[:80]!r}; known: {', '.join(KNOWN_EVENT_TYPES)}.",
                field="event_types",
            )
        if item not in out:
            out.append(item)
    return out


def _enabled(value: object) -> bool:
    if not isinstance(value, bool):
        raise ValidationError("`enabled` must be true or false.", field="enabled")
    return value


def _description(value: object) -> str:
    return validation.text(value, field="description", max_len=500, required=False) or ""


MAX_ID = 2**63 - 1


def _fits(row_id: int) -> bool:
    """An id the database can hold (a URL may carry any whole number)."""
    return 0 < row_id <= MAX_ID


def _get(endpoint_id: int) -> WebhookEndpoint:
    endpoint = db.session.get(WebhookEndpoint, endpoint_id) if _fits(endpoint_id) else None
    if endpoint is None:
        raise NotFound("No such webhook endpoint.", field="endpoint")
    return endpoint


@transactional
def create_endpoint(
    actor: Actor,
    *,
    url: object,
    event_types: object = None,
    description: object = "",
    enabled: object = True,
) -> NewEndpoint:
    require(actor, ADMIN)
    now = utcnow()
    endpoint = WebhookEndpoint(
        url=_url(url),
        event_types=_event_types(event_types),
        description=_description(description),
        enabled=_enabled(enabled),
        secret=new_secret(),
        created_at=now,
        updated_at=now,
    )
    db.session.add(endpoint)
    db.session.flush()
    audit.record(
        actor,
        "webhook_endpoint.created",
        target=f"webhook_endpoint:{endpoint.id}",
        details={"url": endpoint.url, "event_types": endpoint.event_types},
    )
    return NewEndpoint(endpoint, endpoint.secret)


def list_endpoints(actor: Actor) -> list[WebhookEndpoint]:
    require(actor, ADMIN)
    return list(db.session.scalars(select(WebhookEndpoint).order_by(WebhookEndpoint.id)))


def get_endpoint(actor: Actor, endpoint_id: int) -> WebhookEndpoint:
    require(actor, ADMIN)
    return _get(endpoint_id)


_FIELDS = {
    "url": _url,
    "event_types": _event_types,
    "description": _description,
    "enabled": _enabled,
}


@transactional
def update_endpoint(actor: Actor, endpoint_id: int, **fields: Any) -> WebhookEndpoint:
    """Change the fields given (url, event_types, description, enabled)."""
    require(actor, ADMIN)
    endpoint = _get(endpoint_id)
    changed: dict[str, Any] = {}
    for name, value in fields.items():
        if name not in _FIELDS:
            raise ValidationError(f"Unknown field `{name}`.", field=name)
        new = _FIELDS[name](value)
        if getattr(endpoint, name) != new:
            setattr(endpoint, name, new)
            changed[name] = new
    if changed:
        endpoint.updated_at = utcnow()
        audit.record(
            actor,
            "webhook_endpoint.updated",
            target=f"webhook_endpoint:{endpoint.id}",
            details=changed,
        )
    return endpoint


def disable_endpoint(actor: Actor, endpoint_id: int) -> WebhookEndpoint:
    """No new deliveries and none sent; pending ones wait (until their 3 days) for re-enabling."""
    return update_endpoint(actor, endpoint_id, enabled=False)


@transactional
def rotate_secret(actor: Actor, endpoint_id: int) -> NewEndpoint:
    """A new secret, shown once; the old one keeps signing (beside the new) for 24 h."""
    require(actor, ADMIN)
    endpoint = _get(endpoint_id)
    now = utcnow()
    endpoint.previous_secret = endpoint.secret
    endpoint.previous_secret_until = now + ROTATION_OVERLAP
    endpoint.secret = new_secret()
    endpoint.updated_at = now
    audit.record(actor, "webhook_endpoint.rotated", target=f"webhook_endpoint:{endpoint.id}")
    return NewEndpoint(endpoint, endpoint.secret)


@transactional
def send_test_event(actor: Actor, endpoint_id: int) -> WebhookDelivery:
    """A `webhook.test` event owed to this endpoint alone (the worker sends it like any other;
    it is written already dispatched, so no other endpoint receives it)."""
    require(actor, ADMIN)
    endpoint = _get(endpoint_id)
    now = utcnow()
    event = OutboxEvent(
        type=TEST_EVENT,
        data={"endpoint_id": endpoint.id, "message": "A test event from the dashboard or API."},
        created_at=now,
        dispatched_at=now,
    )
    if db.session.get_bind().dialect.name == "postgresql":
        # Like every outbox row (outbox.emit_many): the writing transaction's id orders the log.
        event.tx_order = outbox.TX_ORDER
    db.session.add(event)
    db.session.flush()
    delivery = WebhookDelivery(
        endpoint_id=endpoint.id,
        event_id=event.id,
        status="pending",
        attempts=0,
        created_at=now,
        next_attempt_at=now,
        give_up_at=now + give_up_after(),
    )
    db.session.add(delivery)
    db.session.flush()
    audit.record(actor, "webhook_endpoint.tested", target=f"webhook_endpoint:{endpoint.id}")
    return delivery


@transactional
def resend(actor: Actor, delivery_id: int) -> WebhookDelivery:
    """Send again now, whatever its status, with a new 3-day window; attempts keep counting."""
    require(actor, ADMIN)
    delivery = db.session.get(WebhookDelivery, delivery_id) if _fits(delivery_id) else None
    if delivery is None:
        raise NotFound("No such delivery.", field="delivery")
    now = utcnow()
    delivery.status = "pending"
    delivery.next_attempt_at = now
    delivery.give_up_at = now + give_up_after()
    delivery.delivered_at = None
    audit.record(actor, "webhook_delivery.resent", target=f"webhook_delivery:{delivery.id}")
    return delivery


# ---------------------------------------------------------------- reads


def _whole(value: object, field: str, low: int, high: int) -> int:
    if isinstance(value, str) and value.strip().isdecimal():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValidationError(
            f"`{field}` must be a whole number from {low} to {high}.", field=field
        )
    return value


def get_delivery(actor: Actor, delivery_id: int) -> DeliveryRow:
    rows = list_deliveries(actor, delivery_id=delivery_id, limit=1)
    if not rows:
        raise NotFound("No such delivery.", field="delivery")
    return rows[0]


@dataclass(frozen=True)
class DeliveryRow:
    id: int
    endpoint_id: int
    endpoint_url: str
    event_id: int
    event_type: str
    status: str
    attempts: int
    created_at: datetime
    next_attempt_at: datetime | None
    delivered_at: datetime | None
    last_status_code: int | None
    last_error: str | None
    last_body: str | None


def list_deliveries(
    actor: Actor,
    *,
    endpoint_id: int | None = None,
    delivery_id: int | None = None,
    status: str | None = None,
    limit: object = 50,
) -> list[DeliveryRow]:
    """The newest deliveries, with the last attempt's response (first KiB); two queries."""
    require(actor, ADMIN)
    if status is not None:
        validation.choice(status, ("pending", "delivered", "failed"), field="status")
    limit = _whole(limit, "limit", 1, 200)
    if any(i is not None and not _fits(i) for i in (endpoint_id, delivery_id)):
        return []
    stmt = (
        select(WebhookDelivery, WebhookEndpoint.url, OutboxEvent.type)
        .join(WebhookEndpoint, WebhookEndpoint.id == WebhookDelivery.endpoint_id)
        .join(OutboxEvent, OutboxEvent.id == WebhookDelivery.event_id)
        .order_by(WebhookDelivery.id.desc())
        .limit(limit)
    )
    if endpoint_id is not None:
        stmt = stmt.where(WebhookDelivery.endpoint_id == endpoint_id)
    if delivery_id is not None:
        stmt = stmt.where(WebhookDelivery.id == delivery_id)
    if status is not None:
        stmt = stmt.where(WebhookDelivery.status == status)
    rows = db.session.execute(stmt).all()
    bodies: dict[int, str | None] = {}
    if rows:
        latest = (
            select(WebhookAttempt.delivery_id, func.max(WebhookAttempt.number).label("n"))
            .where(WebhookAttempt.delivery_id.in_([d.id for d, _, _ in rows]))
            .group_by(WebhookAttempt.delivery_id)
            .subquery()
        )
        for delivery_id, body in db.session.execute(
            select(WebhookAttempt.delivery_id, WebhookAttempt.response_body).join(
                latest,
                (latest.c.delivery_id == WebhookAttempt.delivery_id)
                & (latest.c.n == WebhookAttempt.number),
            )
        ):
            bodies[delivery_id] = body
    return [
        DeliveryRow(
            id=d.id,
            endpoint_id=d.endpoint_id,
            endpoint_url=url,
            event_id=d.event_id,
            event_type=etype,
            status=d.status,
            attempts=d.attempts,
            created_at=d.created_at,
            next_attempt_at=d.next_attempt_at if d.status == "pending" else None,
            delivered_at=d.delivered_at,
            last_status_code=d.last_status_code,
            last_error=d.last_error,
            last_body=bodies.get(d.id),
        )
        for d, url, etype in rows
    ]


@dataclass(frozen=True)
class AttemptRow:
    """One try of a delivery as the worker recorded it (``WebhookAttempt``)."""

    number: int
    outcome: str  # in_flight | delivered | failed | lease_expired
    started_at: datetime
    finished_at: datetime | None
    duration_ms: int | None
    status_code: int | None
    error: str | None  # no answer (timeout, connection, refused by the SSRF guard, ...)
    body: str | None  # the first KiB of the answer
    worker: str  # the worker that made it: host:pid


@dataclass(frozen=True)
class DeliveryAttempts:
    delivery: DeliveryRow
    attempts: list[AttemptRow]  # newest first
    next_cursor: str | None  # older attempts follow


def delivery_attempts(
    actor: Actor, delivery_id: int, *, cursor: object = None, limit: object = None
) -> DeliveryAttempts:
    """One delivery and a page of its attempts (``limit``, 50 by default, at most 200), newest
    first, keyset on the attempt number (the unique (delivery, number) index serves it);
    `not_found` for an unknown delivery. Paged because the count has no fixed bound: the
    default backoff makes at most 36 attempts in a delivery's 3 days (delivery.
    max_attempts_per_window), but each resend opens another 3 days, a worker that dies leaves
    one more per lease, and shorter WEBHOOK_RETRY_* settings make more. Three queries."""
    row = get_delivery(actor, delivery_id)
    stmt = select(
        WebhookAttempt.number,
        WebhookAttempt.outcome,
        WebhookAttempt.started_at,
        WebhookAttempt.finished_at,
        WebhookAttempt.duration_ms,
        WebhookAttempt.status_code,
        WebhookAttempt.error,
        WebhookAttempt.response_body,
        WebhookAttempt.worker,
    ).where(WebhookAttempt.delivery_id == row.id)
    page = keyset_page(
        stmt,
        WebhookAttempt.number,
        lambda attempt: attempt.number,
        cursor=cursor,
        limit=limit,
    )
    return DeliveryAttempts(row, [AttemptRow(*a) for a in page.items], page.next_cursor)
