"""A NUL character anywhere in a request (path, query, form field, JSON string) is a clean 4xx
on every door and both databases, and writes nothing: PostgreSQL text cannot hold one, so
without a check at the edge it would reach the database and fail there as a 500.

Generated from the URL map: every route of the dashboard, the API and the Metrifox door, with
hypothesis drawing the parameter, the value and where the NUL goes."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.api_support import row_counts
from tests.factories import make_catalog
from tests.test_reliability_security import IDS, _request, token_routes
from tests.test_web_roles import ENDS_SESSION, _url, html_routes
from tests.web import forget_user_between_requests, signed_in
from webapp.services import auth
from webapp.services.actors import SYSTEM

# Every query parameter and form field that some route reads, and a few that none does.
PARAMETERS = [
    "q",
    "sort",
    "dir",
    "page",
    "per_page",
    "feature",
    "cursor",
    "before",
    "system",
    "actor",
    "action",
    "customer",
    "search_term",
    "customer_key",
    "feature_key",
    "event_name",
    "limit",
    "next",
    "email",
    "password",
    "role",
    "name",
    "note",
    "reference",
    "reason",
    "amount",
    "status",
    "usage-feature_key",
    "usage-amount",
    "topup-amount",
    "topup-note",
    "adjust-reason",
    "adjust-amount",
    "reclaim-feature_key",
    "key",
    "unknown",
]
FUZZ = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@st.composite
def with_nul(draw) -> str:
    text = draw(st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=20))
    at = draw(st.integers(0, len(text)))
    return text[:at] + "\x00" + text[at:]


@pytest.fixture
def doors(app, client):
    forget_user_between_requests(app)
    make_catalog()
    victim = auth.create_user(
        SYSTEM, email="victim@example.com", role="support", password="correct horse battery"
    )
    key = auth.create_api_key(SYSTEM, name="nul", role="admin")
    signed_in(client, "admin")
    ids = {**IDS, "user_id": victim.id, "key_id": key.key.id, "filename": "css/app.css"}
    headers = {"Authorization": f"Bearer {key.secret}", "x-api-key": key.secret}
    return client, ids, headers


def _assert_refused(response, url: str) -> None:
    if url.endswith("/usage/batch") and response.status_code == 200:
        # A batch judges each event alone: the poisoned one is refused by itself.
        statuses = [item["status"] for item in response.get_json()["results"]]
        assert statuses and all(400 <= status < 500 for status in statuses), (url, statuses)
        return
    if url.endswith("/customers/bulk-create") and response.status_code == 200:
        data = response.get_json()["data"]  # the same, customer by customer
        assert data["successful_count"] == 0 and data["failed_count"] == 1, (url, data)
        return
    assert 400 <= response.status_code < 500, (url, response.status_code)
    if url.startswith(("/api/", "/metrifox/")):
        assert response.is_json, url


def _routes(app) -> list[tuple[str, str, str]]:
    html = [r for r in html_routes(app) if r[0] not in ENDS_SESSION and r[0] != "static"]
    return html + token_routes(app)


def test_a_nul_in_any_query_parameter_of_any_route_is_refused(app, doors):
    client, ids, headers = doors
    routes = _routes(app)
    before = row_counts()

    @FUZZ
    @given(st.sampled_from(routes), st.sampled_from(PARAMETERS), with_nul(), st.booleans())
    def check(route, name, value, in_name):
        endpoint, method, rule = route
        url = _url(rule, ids)
        query = {name + "\x00": "x"} if in_name else {name: value}
        body = _request(endpoint, "admin")[0] if method != "GET" else None
        response = client.open(url, method=method, query_string=query, json=body, headers=headers)
        _assert_refused(response, url)

    check()
    assert row_counts() == before


def test_a_nul_in_any_form_field_of_any_dashboard_route_is_refused(app, doors):
    client, ids, _ = doors
    posts = [r for r in html_routes(app) if r[1] == "POST" and r[0] not in ENDS_SESSION]
    before = row_counts()

    @FUZZ
    @given(st.sampled_from(posts), st.sampled_from(PARAMETERS), with_nul())
    def check(route, name, value):
        url = _url(route[2], ids)
        _assert_refused(client.post(url, data={name: value}), url)

    check()
    assert row_counts() == before


def test_a_nul_in_a_path_segment_is_refused(app, doors):
    client, ids, headers = doors
    for _, method, rule in _routes(app):
        if "<" not in rule:
            continue
        url = _url(rule, {name: f"a%00{value}" for name, value in ids.items()})
        _assert_refused(client.open(url, method=method, headers=headers), url)


def test_a_nul_in_the_sign_in_email_is_a_clean_refusal(client):
    response = client.post("/login", data={"email": "a\x00@example.com", "password": "x" * 12})
    assert response.status_code == 422
    assert b"NUL" in response.data


def test_a_nul_in_any_json_string_of_a_metrifox_or_api_body_is_refused(app, doors):
    client, ids, headers = doors
    posts = [r for r in token_routes(app) if r[1] in ("POST", "PUT", "PATCH")]
    before = row_counts()

    def poisoned(body, path: list, value: str):
        if not path:
            return value
        head, *rest = path
        if isinstance(body, list):
            return [poisoned(body[0], rest, value), *body[1:]]
        return {**body, head: poisoned(body[head], rest, value)}

    def string_paths(body, prefix=()) -> list[list]:
        if isinstance(body, dict):
            return [p for k, v in body.items() for p in string_paths(v, (*prefix, k))]
        if isinstance(body, list) and body:
            return string_paths(body[0], (*prefix, 0))
        return [list(prefix)] if isinstance(body, str) else []

    cases = []
    for endpoint, method, rule in posts:
        body = _request(endpoint, "admin")[0]
        if body is not None:
            cases += [(method, rule, body, path) for path in string_paths(body)]
    assert len(cases) > 10

    @FUZZ
    @given(st.sampled_from(cases), with_nul())
    def check(case, value):
        method, rule, body, path = case
        url = _url(rule, ids)
        response = client.open(
            url, method=method, json=poisoned(body, path, value), headers=headers
        )
        _assert_refused(response, url)

    check()
    assert row_counts() == before
