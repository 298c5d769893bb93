"""The page-numbered reads behind the Metrifox door (services.metrifox), credit allocations (our
credit grants) among them, on both databases."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from tests.conftest import actor
from webapp.errors import CustomerNotFound, FeatureNotFound, Forbidden, NotFound, ValidationError
from webapp.models import set_clock
from webapp.services import catalog as catalog_service
from webapp.services import metrifox, reads, usage, wallets
from webapp.services.actors import SYSTEM

C = "cust-6d11ca90"


def record(n: int, feature: str = "api_calls", customer: str = C) -> None:
    for i in range(n):
        usage.record_usage(
            SYSTEM, customer_key=customer, feature_key=feature, amount=1, event_id=f"{feature}{i}"
        )


def test_events_page_by_number_newest_first_with_totals(catalog):
    record(7)
    record(2, "seats")
    first = metrifox.list_events_paged(SYSTEM, customer_key=C, feature_key="api_calls", per_page=3)
    assert [e.event_id for e in first.items] == ["api_calls6", "api_calls5", "api_calls4"]
    assert (first.total_count, first.total_pages, first.prev_page, first.next_page) == (
        7,
        3,
        None,
        2,
    )
    last = metrifox.list_events_paged(
        SYSTEM, customer_key=C, feature_key="api_calls", page="3", per_page="3"
    )
    assert [e.event_id for e in last.items] == ["api_calls0"]
    assert (last.prev_page, last.next_page) == (2, None)
    everyone = metrifox.list_events_paged(SYSTEM)
    assert everyone.total_count == 9
    assert everyone.per_page == 25
    assert {e.customer_key for e in everyone.items} == {C}


def test_an_empty_list_has_no_pages(catalog):
    page = metrifox.list_events_paged(SYSTEM, customer_key=C)
    assert (page.items, page.total_count, page.total_pages, page.next_page) == ([], 0, 0, None)


@pytest.mark.parametrize(
    ("page", "per_page", "field"),
    [
        (0, None, "page"),
        ("x", None, "page"),
        (True, None, "page"),
        (1, 201, "per_page"),
        (1, 0, "per_page"),
    ],
)
def test_bad_page_numbers_are_validation_errors(catalog, page, per_page, field):
    with pytest.raises(ValidationError) as err:
        metrifox.list_events_paged(SYSTEM, page=page, per_page=per_page)
    assert err.value.details["field"] == field


def test_unknown_filters_are_not_found(catalog):
    with pytest.raises(CustomerNotFound):
        metrifox.list_events_paged(SYSTEM, customer_key="ghost")
    with pytest.raises(FeatureNotFound):
        metrifox.list_events_paged(SYSTEM, feature_key="ghost")


def test_customers_page_by_number_and_search(catalog):
    for n in range(4):
        catalog_service.create_customer(SYSTEM, key=f"acme-{n}", name=f"Acme {n}", email=None)
    page = metrifox.list_customers_paged(SYSTEM, search="ACME", per_page=3)
    assert [c.key for c in page.items] == ["acme-3", "acme-2", "acme-1"]
    assert (page.total_count, page.total_pages) == (4, 2)
    assert metrifox.list_customers_paged(SYSTEM).total_count == 5


def test_archived_at_comes_from_the_audit_log_and_only_while_archived(catalog):
    catalog_service.set_customer_status(SYSTEM, C, "archived")
    assert set(metrifox.archived_at(SYSTEM, [C, "other"])) == {C}
    catalog_service.set_customer_status(SYSTEM, C, "active")
    assert metrifox.archived_at(SYSTEM, [C]) == {}


def test_reads_need_the_view_permission(catalog):
    nobody = actor("guest")
    with pytest.raises(Forbidden):
        metrifox.list_events_paged(nobody)
    with pytest.raises(Forbidden):
        metrifox.list_customers_paged(nobody)


# ---------------------------------------------------------------- credit allocations


class Clock:
    """The services' clock (models.set_clock), moved by the test."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@pytest.fixture
def clock(catalog) -> Iterator[Clock]:
    moved = Clock()
    set_clock(moved)
    try:
        yield moved
    finally:
        set_clock(None)


def wallet_id(customer: str = C) -> int:
    (wallet,) = reads.customer_summary(SYSTEM, customer).wallets
    return wallet.wallet_id


def topup(amount: str, **terms: object) -> int:
    """A new grant in the customer's credits wallet; its id."""
    result = wallets.topup_wallet(
        SYSTEM, customer_key=C, credit_system="credits", amount=amount, **terms
    )
    assert result.entry.grant_id is not None
    return result.entry.grant_id


def iso_in(clock: Clock, **delta: float) -> str:
    return (clock.now + timedelta(**delta)).isoformat()


def test_a_wallets_allocations_are_its_grants_newest_first_with_totals(catalog):
    first = wallet_id()
    topup("1", kind="granted")
    topup("2")
    page = metrifox.wallet_allocations_paged(SYSTEM, str(first), per_page=2)
    assert [(g.kind, g.amount_micros) for g in page.items] == [
        ("purchased", 2_000_000),
        ("granted", 1_000_000),
    ]
    assert (page.total_count, page.total_pages, page.next_page) == (3, 2, 2)
    (oldest,) = metrifox.wallet_allocations_paged(SYSTEM, first, page=2, per_page=2).items
    assert (oldest.amount_micros, oldest.status) == (10_000_000, "active")


def test_status_filters_by_the_grant_status_at_this_instant_booked_or_not(catalog, clock):
    wid = wallet_id()
    soon = topup("1", kind="granted", expires_at=iso_in(clock, days=1))
    later = topup("2", effective_at=iso_in(clock, days=3))
    clock.advance(days=2)  # `soon` has expired; nothing has booked its expiry yet

    def ids(status: str) -> list[int]:
        return [g.id for g in metrifox.wallet_allocations_paged(SYSTEM, wid, status=status).items]

    assert ids("expired") == [soon]
    assert soon not in ids("active") and later not in ids("active")
    assert ids("scheduled") == [later]
    assert ids("expired,scheduled") == [later, soon]
    (expired,) = metrifox.wallet_allocations_paged(SYSTEM, wid, status="expired").items
    assert (expired.remaining_micros, expired.available_micros) == (1_000_000, 0)
    live = metrifox.live_allocations([wid])[wid]
    assert [g.status for g in live] == ["active", "scheduled"]
    assert soon not in [g.id for g in live]


@pytest.mark.parametrize("status", ["ACTIVE", "gone", "active,", 3])
def test_an_unknown_status_is_a_validation_error(catalog, status):
    with pytest.raises(ValidationError) as err:
        metrifox.wallet_allocations_paged(SYSTEM, wallet_id(), status=status)
    assert err.value.details["field"] == "status"


@pytest.mark.parametrize("wallet", ["0", "999999", "x", "-1", "١", "1" * 19, None])
def test_an_unknown_wallet_is_not_found(catalog, wallet):
    with pytest.raises(NotFound):
        metrifox.wallet_allocations_paged(SYSTEM, wallet)


def test_transactions_are_the_allocations_with_their_usage_events(catalog):
    small = topup("0.05", kind="granted")  # priority 100: spent before the first topup's 200
    usage.record_usage(SYSTEM, customer_key=C, feature_key="api_calls", amount=4, event_id="e1")
    usage.record_usage(
        SYSTEM, customer_key=C, event_name="candidate.sourced", amount=1, event_id="e2"
    )
    wallets.adjust_wallet(
        SYSTEM, customer_key=C, credit_system="credits", amount="-0.5", reason="goodwill back"
    )
    grant, txns = metrifox.allocation_transactions(SYSTEM, small)
    assert (grant.amount_micros, grant.consumed_micros, grant.status) == (
        50_000,
        50_000,
        "depleted",
    )
    (part,) = txns.items  # 0.08 for e1: 0.05 from this grant, 0.03 from the first topup
    assert (part.event_id, part.event_name, part.feature_key) == ("e1", "api.call", "api_calls")
    assert (part.amount_micros, part.quantity_micros, part.entry_type) == (
        50_000,
        4_000_000,
        "usage",
    )
    first = metrifox.wallet_allocations_paged(SYSTEM, wallet_id(), per_page=1, page=2).items[0]
    _, rest = metrifox.allocation_transactions(SYSTEM, str(first.id))
    assert [(t.entry_type, t.event_id, t.amount_micros) for t in rest.items] == [
        ("adjustment", None, 500_000),
        ("usage", "e2", 20_000),
        ("usage", "e1", 30_000),
    ]
    assert rest.items[0].quantity_micros is None and rest.items[0].event_name is None
    _, paged = metrifox.allocation_transactions(SYSTEM, first.id, page=2, per_page=2)
    assert [t.event_id for t in paged.items] == ["e1"]
    assert (paged.total_count, paged.prev_page, paged.next_page) == (3, 1, None)


def test_recent_transactions_are_the_newest_few_of_each_grant_and_their_count(catalog):
    other = topup("1", kind="granted")
    for n in range(5):
        usage.record_usage(
            SYSTEM, customer_key=C, feature_key="api_calls", amount=1, event_id=f"r{n}"
        )
    first = metrifox.wallet_allocations_paged(SYSTEM, wallet_id(), page=2, per_page=1).items[0]
    recent = metrifox.recent_transactions([other, first.id, other], per_grant=3)
    assert [t.event_id for t in recent[other].items] == ["r4", "r3", "r2"]
    assert recent[other].total_count == 5
    assert (recent[first.id].items, recent[first.id].total_count) == ([], 0)
    assert metrifox.recent_transactions([]) == {}


def test_an_unknown_allocation_is_not_found(catalog):
    for unknown in ("999999", "0", "abc", None):
        with pytest.raises(NotFound):
            metrifox.allocation_transactions(SYSTEM, unknown)


def test_allocation_reads_need_the_view_permission(catalog):
    nobody = actor("guest")
    with pytest.raises(Forbidden):
        metrifox.wallet_allocations_paged(nobody, wallet_id())
    with pytest.raises(Forbidden):
        metrifox.allocation_transactions(nobody, topup("1"))


def test_live_allocations_are_active_in_spending_order_then_scheduled_and_capped(catalog, clock):
    wid = wallet_id()
    later = topup("5", kind="granted", priority=1, effective_at=iso_in(clock, days=1))
    expiring = topup("1", expires_at=iso_in(clock, days=5))  # purchased, priority 200
    gift = topup("2", kind="granted")  # priority 100: spent first
    topup("0.5", kind="granted", expires_at=iso_in(clock, hours=1))
    clock.advance(hours=2)  # the last one has expired, unbooked
    first = metrifox.wallet_allocations_paged(SYSTEM, wid, page=5, per_page=1).items[0]
    live = metrifox.live_allocations([wid, wid])[wid]
    # Same priority 200: the one that expires goes before the one that never does.
    assert [g.id for g in live] == [gift, expiring, first.id, later]
    assert [g.status for g in live] == ["active", "active", "active", "scheduled"]
    capped = metrifox.live_allocations([wid], per_wallet=2)
    assert [g.id for g in capped[wid]] == [gift, expiring]
    assert metrifox.live_allocations([]) == {}
