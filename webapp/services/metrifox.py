"""Reads with page-number pagination (count + offset) for the Metrifox-compatible door.

The Metrifox SDK pages with `page` / `per_page` and expects totals, which the keyset pages of
``reads`` do not give. These queries stay here, in the service layer, like every other query."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

from sqlalchemy import func, or_, select

from ..errors import ValidationError
from ..extensions import db
from ..models import AuditLog, Customer, Feature, UsageEvent
from .actors import VIEW, Actor, require
from .catalog import get_customer, get_feature
from .reads import MAX_LIMIT, EventView

T = TypeVar("T")
DEFAULT_PER_PAGE = 25
MAX_PAGE = 1_000_000


@dataclass(frozen=True)
class NumberedPage(Generic[T]):
    items: list[T]
    page: int
    per_page: int
    total_count: int

    @property
    def total_pages(self) -> int:
        return -(-self.total_count // self.per_page)

    @property
    def prev_page(self) -> int | None:
        return self.page - 1 if self.page > 1 else None

    @property
    def next_page(self) -> int | None:
        return self.page + 1 if self.page < self.total_pages else None


def _whole(value: object, *, field: str, default: int, low: int, high: int) -> int:
    if value in (None, ""):
        return default
    if isinstance(value, bool):
        raise ValidationError(f"`{field}` must be a whole number.", field=field)
    try:
        number = int(str(value).strip())
    except ValueError:
        raise ValidationError(f"`{field}` must be a whole number.", field=field) from None
    if not low <= number <= high:
        raise ValidationError(f"`{field}` must be between {low} and {high}.", field=field)
    return number


def parse_page(page: object, per_page: object) -> tuple[int, int]:
    return (
        _whole(page, field="page", default=1, low=1, high=MAX_PAGE),
        _whole(per_page, field="per_page", default=DEFAULT_PER_PAGE, low=1, high=MAX_LIMIT),
    )


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
    number, size = parse_page(page, per_page)
    conditions = []
    if customer_key not in (None, ""):
        conditions.append(UsageEvent.customer_id == get_customer(customer_key).id)
    if feature_key not in (None, ""):
        conditions.append(UsageEvent.feature_id == get_feature(feature_key=feature_key).id)
    total = db.session.scalar(select(func.count()).select_from(UsageEvent).where(*conditions)) or 0
    rows = db.session.execute(
        select(UsageEvent, Feature, Customer.key)
        .join(Feature, Feature.id == UsageEvent.feature_id)
        .join(Customer, Customer.id == UsageEvent.customer_id)
        .where(*conditions)
        .order_by(UsageEvent.id.desc())
        .offset((number - 1) * size)
        .limit(size)
    ).all()
    items = [EventView.of(e, f, ckey) for e, f, ckey in rows]
    return NumberedPage(items, number, size, total)


def list_customers_paged(
    actor: Actor, *, page: object = None, per_page: object = None, search: object = None
) -> NumberedPage[Customer]:
    """Customers, newest first, optionally matching ``search`` in key, name or email."""
    require(actor, VIEW)
    number, size = parse_page(page, per_page)
    conditions: list[Any] = []
    if search not in (None, ""):
        term = str(search)[:100].lower()  # `%` and `_` are letters here (autoescape)
        conditions.append(
            or_(
                Customer.key.icontains(term, autoescape=True),
                Customer.name.icontains(term, autoescape=True),
                Customer.email.icontains(term, autoescape=True),
            )
        )
    total = db.session.scalar(select(func.count()).select_from(Customer).where(*conditions)) or 0
    customers = list(
        db.session.scalars(
            select(Customer)
            .where(*conditions)
            .order_by(Customer.id.desc())
            .offset((number - 1) * size)
            .limit(size)
        )
    )
    return NumberedPage(customers, number, size, total)


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
