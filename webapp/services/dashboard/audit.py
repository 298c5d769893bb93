"""The audit page: newest first, keyset pages, filters by actor, action and customer."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select

from ...extensions import db
from ...models import AuditLog
from ..actors import VIEW, Actor, require
from .current import MAX_PER_PAGE


@dataclass(frozen=True)
class AuditPage:
    rows: list[AuditLog]
    next_before: int | None  # id to pass as ``before`` for the next (older) page
    actions: list[str]


def audit_log(
    actor: Actor,
    *,
    actor_label: str | None = None,
    action: str | None = None,
    customer_key: str | None = None,
    before: int | None = None,
    per_page: int = 50,
) -> AuditPage:
    """Newest first, keyset pages over id (``before``), filtered by exact actor, action prefix
    (``wallet.`` or ``wallet.topup``) and customer key."""
    require(actor, VIEW)
    per_page = min(max(1, per_page), MAX_PER_PAGE)
    stmt = select(AuditLog)
    if actor_label:
        stmt = stmt.where(AuditLog.actor == actor_label.strip())
    if action:
        stmt = stmt.where(AuditLog.action.like(action.strip().replace("%", "") + "%"))
    if customer_key:
        stmt = stmt.where(AuditLog.customer_key == customer_key.strip())
    if before is not None:
        stmt = stmt.where(AuditLog.id < before)
    rows = list(db.session.scalars(stmt.order_by(AuditLog.id.desc()).limit(per_page + 1)))
    more = len(rows) > per_page
    rows = rows[:per_page]
    actions = list(db.session.scalars(select(AuditLog.action).distinct().order_by(AuditLog.action)))
    return AuditPage(rows, rows[-1].id if more and rows else None, actions)
