"""CSRF: every mutating HTML route, found in the URL map, refuses a post without a valid token,
HTMX included; a valid token in a form field or in the X-CSRFToken header is accepted."""

from __future__ import annotations

import pytest

from tests.conftest import TEST_CONFIG
from tests.factories import make_catalog
from tests.test_web_roles import SKIPPED_PREFIXES, _url
from tests.web import PASSWORD, csrf_from, make_user, row_counts
from webapp import create_app
from webapp.extensions import db
from webapp.services import auth
from webapp.services.actors import SYSTEM

MUTATING = {"POST", "PUT", "PATCH", "DELETE"}


@pytest.fixture
def csrf_app(database_url):
    app = create_app(
        {**TEST_CONFIG, "WTF_CSRF_ENABLED": True, "SQLALCHEMY_DATABASE_URI": database_url}
    )
    with app.app_context():
        yield app
        db.session.remove()
        db.engine.dispose()


def _sign_in(client) -> str:
    token = csrf_from(client.get("/login").get_data(as_text=True))
    response = client.post(
        "/login",
        data={"email": "admin@example.com", "password": PASSWORD, "csrf_token": token},
    )
    assert response.status_code == 303
    return csrf_from(client.get("/customers/cust-6d11ca90").get_data(as_text=True))


def test_login_without_a_token_is_refused(csrf_app):
    make_user("admin", "admin@example.com")
    client = csrf_app.test_client()
    response = client.post("/login", data={"email": "admin@example.com", "password": PASSWORD})
    assert response.status_code == 400


def test_every_mutating_route_refuses_a_missing_or_wrong_token(csrf_app):
    make_catalog()
    make_user("admin", "admin@example.com")
    victim = make_user("support", "victim@example.com")
    key = auth.create_api_key(SYSTEM, name="k").key
    ids = {
        "key": "cust-6d11ca90",
        "feature_key": "api_calls",
        "plan_key": "starter",
        "system_key": "credits",
        "user_id": victim.id,
        "key_id": key.id,
        "filename": "css/app.css",
        "grant_id": 1,
        "entry_id": 1,
        "endpoint_id": 1,
        "delivery_id": 1,
        "event_id": "e-matrix",
    }
    client = csrf_app.test_client()
    _sign_in(client)
    before = row_counts()
    checked = []
    for rule in csrf_app.url_map.iter_rules():
        if rule.rule.startswith(SKIPPED_PREFIXES):
            continue
        for method in sorted((rule.methods or set()) & MUTATING):
            url = _url(rule.rule, ids)
            plain = client.open(url, method=method, data={"amount": "1"})
            htmx = client.open(
                url,
                method=method,
                data={"amount": "1", "csrf_token": "forged"},
                headers={"HX-Request": "true", "X-CSRFToken": "forged"},
            )
            assert plain.status_code == 400, f"{method} {url} without a token: {plain.status_code}"
            assert htmx.status_code == 400, f"{method} {url} forged token: {htmx.status_code}"
            checked.append(url)
    assert len(checked) >= 15
    assert row_counts() == before


def test_a_valid_token_in_the_htmx_header_is_accepted(csrf_app):
    make_catalog()
    make_user("admin", "admin@example.com")
    client = csrf_app.test_client()
    token = _sign_in(client)
    response = client.post(
        "/customers/cust-6d11ca90/usage",
        data={"usage-feature_key": "api_calls", "usage-amount": "2"},
        headers={"HX-Request": "true", "X-CSRFToken": token},
    )
    assert response.status_code == 200
    assert "Recorded 2 API calls" in response.get_data(as_text=True)


def test_pages_carry_the_token_for_htmx(csrf_app):
    make_catalog()
    make_user("admin", "admin@example.com")
    client = csrf_app.test_client()
    _sign_in(client)
    html = client.get("/customers/cust-6d11ca90").get_data(as_text=True)
    assert '<meta name="csrf-token"' in html
    assert 'hx-headers=\'{"X-CSRFToken": "' in html
