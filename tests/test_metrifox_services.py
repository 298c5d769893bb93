"""The page-numbered reads behind the Metrifox door (services.metrifox), on both databases."""

from __future__ import annotations

import pytest

from tests.conftest import actor
from webapp.errors import CustomerNotFound, FeatureNotFound, Forbidden, ValidationError
from webapp.services import catalog as catalog_service
from webapp.services import metrifox, usage
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
