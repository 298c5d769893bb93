"""Reads for the Metrifox-compatible door: the SDK pages with `page` / `per_page` and expects
totals, so its lists are ``paging.numbered_page`` over the same newest-first queries."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select

from ..extensions import db
from ..models import AuditLog, Customer, Feature, UsageEvent
from .actors import VIEW, Actor, require
from .catalog import get_customer, get_feature
from .paging import NumberedPage, numbered_page
from .reads import EventView, customers_matching


def list_events_paged(
    actor: Actor,
    *,
    customer_key: object = None,
    feature_key: object = None,
    page: object = None,
    per_page: object = None,
) -> NumberedPage[EventView]:
    """Usage events, newest first, optionally of one customer and/or one feature."""
    require(actor, VIEW)
    conditions = []
    if customer_key not in (None, ""):
        conditions.append(UsageEvent.customer_id == get_customer(customer_key).id)
    if feature_key not in (None, ""):
        conditions.append(UsageEvent.feature_id == get_feature(feature_key=feature_key).id)
    stmt = (
        select(UsageEvent, Feature, Customer.key)
        .join(Feature, Feature.id == UsageEvent.feature_id)
        .join(Customer, Customer.id == UsageEvent.customer_id)
        .where(*conditions)
    )
    found = numbered_page(stmt, UsageEvent.id, page=page, per_page=per_page)
    items = [EventView.of(e, f, ckey) for e, f, ckey in found.items]
    return NumberedPage(items, found.page, found.per_page, found.total_count)


def list_customers_paged(
    actor: Actor, *, page: object = None, per_page: object = None, search: object = None
) -> NumberedPage[Customer]:
    """Customers, newest first, optionally matching ``search`` in key, name or email."""
    require(actor, VIEW)
    stmt = customers_matching(search)
    return numbered_page(stmt, Customer.id, page=page, per_page=per_page, scalars=True)


def archived_at(actor: Actor, customer_keys: list[str]) -> dict[str, datetime]:
    """When each archived customer among ``customer_keys`` was last archived (from the audit log);
    active customers are left out."""
    require(actor, VIEW)
    if not customer_keys:
        return {}
    rows = db.session.execute(
        select(AuditLog.customer_key, func.max(AuditLog.at))
        .join(Customer, Customer.key == AuditLog.customer_key)
        .where(
            AuditLog.customer_key.in_(customer_keys),
            AuditLog.action == "customer.archived",
            Customer.status == "archived",
        )
        .group_by(AuditLog.customer_key)
    ).all()
    return {key: at for key, at in rows if key is not None}
