"""A hypothesis state machine over HTTP, on both databases: usage through the API and the
Metrifox door, replays (same and changed body), topups, seat assignments and reclaims, and
entitlement checks, in any order. A model predicts each answer; after every step the balance and
usage the API reports equal the model's, and `ledger verify` is clean at the end."""

from __future__ import annotations

import itertools
import os
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from tests.api_support import make_key
from tests.factories import add_customer
from webapp.services.verify import verify_ledger

COST = Decimal("0.02")
SEATS = 3
API_ALLOWANCE = 60
_customers = itertools.count()


@pytest.mark.slow
def test_usage_topups_reclaims_and_replays_in_any_order_match_the_model(client, catalog):
    key = make_key("admin")
    headers = {"Authorization": f"Bearer {key}", "x-api-key": key}

    class Ledger(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.customer = add_customer(
                f"sm-{next(_customers)}",
                api_allowance=API_ALLOWANCE,
                seat_allowance=SEATS,
                topup="1",
            )
            self.balance = Decimal("1")
            self.used = 0
            self.seats = 0
            self.events: dict[str, tuple[str, int]] = {}
            self.n = 0

        def _new_id(self) -> str:
            self.n += 1
            return f"{self.customer}-e{self.n}"

        def _record(self, door: str, feature: str, amount: int, event_id: str):
            if door == "api":
                body = {"customer_key": self.customer, "feature_key": feature, "amount": amount}
                return client.post(
                    "/api/v1/usage", json={**body, "event_id": event_id}, headers=headers
                )
            body = {"customer_key": self.customer, "feature_key": feature, "quantity": amount}
            return client.post(
                "/metrifox/meter/usage/events", json={**body, "event_id": event_id}, headers=headers
            )

        @rule(door=st.sampled_from(["api", "metrifox"]), amount=st.integers(1, 12))
        def use_api_calls(self, door: str, amount: int) -> None:
            event_id = self._new_id()
            response = self._record(door, "api_calls", amount, event_id)
            fits = self.used + amount <= API_ALLOWANCE and self.balance >= COST * amount
            assert (response.status_code == 201) == fits, (response.status_code, response.json)
            if fits:
                self.used += amount
                self.balance -= COST * amount
                self.events[event_id] = ("api_calls", amount)
            else:
                assert response.status_code in (402, 403), response.json

        @rule(door=st.sampled_from(["api", "metrifox"]), delta=st.sampled_from([1, -1, 2, -2]))
        def assign_or_reclaim_seats(self, door: str, delta: int) -> None:
            event_id = self._new_id()
            response = self._record(door, "seats", delta, event_id)
            fits = 0 <= self.seats + delta <= SEATS
            assert (response.status_code == 201) == fits, (response.status_code, response.json)
            if fits:
                self.seats += delta
                self.events[event_id] = ("seats", delta)
            else:
                assert 400 <= response.status_code < 500

        @precondition(lambda self: self.events)
        @rule(data=st.data(), door=st.sampled_from(["api", "metrifox"]), change=st.booleans())
        def replay(self, data, door: str, change: bool) -> None:
            event_id = data.draw(st.sampled_from(sorted(self.events)))
            feature, amount = self.events[event_id]
            # A changed replay doubles the amount: never zero, never the same.
            response = self._record(door, feature, amount * 2 if change else amount, event_id)
            assert response.status_code == (409 if change else 200), response.json

        @rule(amount=st.sampled_from(["0.02", "0.1", "1", "0.000001"]))
        def top_up(self, amount: str) -> None:
            response = client.post(
                "/api/v1/wallets/topups",
                json={"customer_key": self.customer, "credit_system": "credits", "amount": amount},
                headers=headers,
            )
            assert response.status_code == 201, response.json
            self.balance += Decimal(amount)

        @rule(amount=st.integers(1, 20))
        def check(self, amount: int) -> None:
            response = client.get(
                "/api/v1/entitlements/check",
                query_string={
                    "customer_key": self.customer,
                    "feature_key": "api_calls",
                    "amount": amount,
                },
                headers=headers,
            )
            fits = self.used + amount <= API_ALLOWANCE and self.balance >= COST * amount
            assert response.json["allowed"] is fits, response.json

        @invariant()
        def reported_state_matches_the_model(self) -> None:
            body = client.get(f"/api/v1/customers/{self.customer}", headers=headers).json
            (wallet,) = body["wallets"]
            assert Decimal(wallet["balance"]) == self.balance
            used = {e["feature_key"]: e["used"] for e in body["entitlements"]}
            assert Decimal(str(used["api_calls"])) == self.used
            assert Decimal(str(used["seats"])) == self.seats

        def teardown(self) -> None:
            assert verify_ledger().ok

    run_state_machine_as_test(
        Ledger,
        settings=settings(
            max_examples=int(os.environ.get("STATEFUL_EXAMPLES", "12")),
            stateful_step_count=25,
            deadline=None,
            database=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
        ),
    )
