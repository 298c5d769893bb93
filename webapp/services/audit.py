"""The audit log: every mutation, from any door, with its actor."""

from __future__ import annotations

from typing import Any

from ..extensions import db
from ..models import AuditLog, utcnow
from .actors import Actor


def record(
    actor: Actor,
    action: str,
    *,
    customer_key: str | None = None,
    target: str | None = None,
    details: dict[str, Any] | None = None,
) -> None:
    db.session.add(
        AuditLog(
            at=utcnow(),
            actor=actor.label,
            action=action,
            customer_key=customer_key,
            target=target,
            details=details,
        )
    )


def audit_row(
    actor: Actor,
    action: str,
    customer_key: str | None,
    target: str | None,
    details: dict[str, Any] | None,
    at: Any,
) -> dict[str, Any]:
    """The same row as a plain dict, for bulk inserts."""
    return {
        "at": at,
        "actor": actor.label,
        "action": action,
        "customer_key": customer_key,
        "target": target,
        "details": details,
    }
