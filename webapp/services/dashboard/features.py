"""The features page: each feature with its credit cost, entitled customers and usage this
period."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select

from ...extensions import db
from ...models import CreditCost, CreditSystem, Entitlement, Feature, utcnow
from ..actors import VIEW, Actor, require
from .overview import used_by_feature


@dataclass(frozen=True)
class FeatureRow:
    feature: Feature
    credit_system: str | None
    cost_micros: int | None
    customers: int  # entitled customers
    used_micros: int  # this period, all customers


def features(actor: Actor, *, now: datetime | None = None) -> list[FeatureRow]:
    require(actor, VIEW)
    used = used_by_feature(now or utcnow())
    entitled = (
        select(Entitlement.feature_id, func.count().label("n"))
        .group_by(Entitlement.feature_id)
        .subquery()
    )
    return [
        FeatureRow(
            feature,
            system,
            None if cost is None else cost.cost_micros,
            n or 0,
            used.get(feature.key, 0),
        )
        for feature, cost, system, n in db.session.execute(
            select(Feature, CreditCost, CreditSystem.key, entitled.c.n)
            .outerjoin(CreditCost, CreditCost.feature_id == Feature.id)
            .outerjoin(CreditSystem, CreditSystem.id == CreditCost.credit_system_id)
            .outerjoin(entitled, entitled.c.feature_id == Feature.id)
            .order_by(Feature.key)
        )
    ]
