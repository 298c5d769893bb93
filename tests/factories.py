"""Small helpers that build a catalog through the services (never behind their back)."""

from __future__ import annotations

from dataclasses import dataclass

from webapp.models import utcnow
from webapp.services import catalog, wallets
from webapp.services.actors import SYSTEM
from webapp.services.validation import MAX_BACKDATE


@dataclass
class Catalog:
    customer: str = "cust-6d11ca90"


def make_catalog(
    *,
    customer: str = "cust-6d11ca90",
    api_allowance: object = 1000,
    seat_allowance: object = 10,
    candidates_allowance: object = 100,
    topup: object | None = "10",
) -> Catalog:
    catalog.create_credit_system(SYSTEM, key="credits", name="Credits")
    catalog.create_feature(
        SYSTEM, key="api_calls", name="API calls", type="consumable", event_name="api.call"
    )
    catalog.create_feature(
        SYSTEM,
        key="candidates",
        name="Candidates",
        type="consumable",
        event_name="candidate.sourced",
    )
    catalog.create_feature(
        SYSTEM, key="seats", name="Seats", type="persistent", event_name="seat.assigned"
    )
    catalog.create_feature(SYSTEM, key="sso", name="SSO", type="boolean", event_name="sso")
    catalog.set_credit_cost(SYSTEM, "api_calls", credit_system="credits", cost="0.02")
    catalog.set_credit_cost(SYSTEM, "candidates", credit_system="credits", cost="0.02")
    add_customer(
        customer,
        api_allowance=api_allowance,
        seat_allowance=seat_allowance,
        candidates_allowance=candidates_allowance,
        topup=topup,
    )
    return Catalog(customer=customer)


def add_customer(
    key: str,
    *,
    api_allowance: object = 1000,
    seat_allowance: object = 10,
    candidates_allowance: object = 100,
    topup: object | None = "10",
    reset_period: str = "month",
) -> str:
    catalog.create_customer(SYSTEM, key=key, name=f"Customer {key}", email=None)
    catalog.set_entitlement(
        SYSTEM, key, "api_calls", allowance=api_allowance, reset_period=reset_period
    )
    catalog.set_entitlement(
        SYSTEM, key, "candidates", allowance=candidates_allowance, reset_period=reset_period
    )
    catalog.set_entitlement(SYSTEM, key, "seats", allowance=seat_allowance)
    catalog.set_entitlement(SYSTEM, key, "sso")
    if topup is not None:
        # Effective from the earliest time an event may carry, so that backdated test events
        # may spend it (a grant pays only for events at or after its effective time).
        wallets.topup_wallet(
            SYSTEM,
            customer_key=key,
            credit_system="credits",
            amount=topup,
            effective_at=utcnow() - MAX_BACKDATE,
        )
    return key
