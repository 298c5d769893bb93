"""Catalog reads for callers that act as someone (the API): the same lists as
``catalog.list_features`` / ``list_credit_systems``, behind the view permission."""

from __future__ import annotations

from ..models import CreditCost, CreditSystem, Feature
from . import catalog
from .actors import VIEW, Actor, require


def list_features(actor: Actor) -> list[tuple[Feature, CreditCost | None, CreditSystem | None]]:
    require(actor, VIEW)
    return catalog.list_features()


def list_credit_systems(actor: Actor) -> list[CreditSystem]:
    require(actor, VIEW)
    return catalog.list_credit_systems()
