"""Who may call the API: bearer keys only (no cookies, no CSRF), revocation at once, roles
enforced by the services, and the per-key rate limit."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select, update

from tests.api_support import Api, C, api_as, check_response, error_code, make_key, row_counts
from tests.conftest import TEST_CONFIG
from webapp import create_app
from webapp.errors import Unauthorized, ValidationError
from webapp.extensions import db
from webapp.models import ApiKey, utcnow
from webapp.services import auth
from webapp.services.actors import SYSTEM

USAGE = {"customer_key": C, "feature_key": "api_calls", "amount": 1}


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "Bearer",
        "Bearer ",
        "Basic dXNlcjpwYXNz",
        "Bearer mk_not-a-real-key",
        "Bearer not-even-the-prefix",
        "Bearer mk_" + "x" * 500,
    ],
)
def test_missing_or_wrong_key_is_401(client, catalog, header):
    headers = {} if header is None else {"Authorization": header}
    for method, path in [("GET", "/api/v1/customers"), ("POST", "/api/v1/usage")]:
        response = client.open(path, method=method, headers=headers, json=USAGE)
        assert response.status_code == 401 and error_code(response) == "unauthorized"
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
        check_response(method, path, 401, response.get_json())


def test_revoked_key_fails_at_once(client, catalog):
    new = auth.create_api_key(SYSTEM, name="soon revoked", role="admin")
    api = Api(client, new.secret)
    assert api.get("/api/v1/customers").status_code == 200
    auth.revoke_api_key(SYSTEM, new.key.id)
    before = row_counts()
    response = api.post("/api/v1/usage", USAGE)
    assert response.status_code == 401 and error_code(response) == "unauthorized"
    assert row_counts() == before


def _expire(key_id: int, *, seconds_ago: int) -> None:
    db.session.execute(
        update(ApiKey)
        .where(ApiKey.id == key_id)
        .values(expires_at=utcnow() - timedelta(seconds=seconds_ago))
    )
    db.session.commit()


def test_an_expired_key_is_refused_like_a_revoked_one(client, catalog):
    new = auth.create_api_key(SYSTEM, name="for a month", role="admin", expires_days=30)
    lifetime = new.key.expires_at - new.key.created_at
    assert timedelta(days=30) - timedelta(seconds=5) < lifetime <= timedelta(days=30)
    api = Api(client, new.secret)
    assert api.get("/api/v1/customers").status_code == 200
    _expire(new.key.id, seconds_ago=1)
    before = row_counts()
    assert error_code(api.post("/api/v1/usage", USAGE)) == "unauthorized"
    metrifox = client.post(
        "/metrifox/meter/usage/events", json=USAGE, headers={"x-api-key": new.secret}
    )
    assert metrifox.status_code == 401
    assert error_code(api.get("/api/v1/customers")) == "unauthorized"
    assert row_counts() == before
    with pytest.raises(Unauthorized):
        auth.authenticate_api_key(new.secret)


def test_a_key_without_expiry_never_expires_and_bad_days_are_refused(client, catalog):
    assert auth.create_api_key(SYSTEM, name="forever").key.expires_at is None
    assert auth.create_api_key(SYSTEM, name="form", expires_days="90").key.expires_at
    for bad in (0, -1, 3651, 1.5, "ten", True):
        with pytest.raises(ValidationError) as err:
            auth.create_api_key(SYSTEM, name="bad", expires_days=bad)
        assert err.value.field == "expires_days"
    assert db.session.scalar(select(func.count()).select_from(ApiKey)) == 2


def test_scheme_is_case_insensitive_and_use_is_noted(client, catalog):
    new = auth.create_api_key(SYSTEM, name="k", role="account_manager")
    response = client.get("/api/v1/customers", headers={"Authorization": f"bearer {new.secret}"})
    assert response.status_code == 200
    last_used = db.session.scalar(select(ApiKey.last_used_at).where(ApiKey.id == new.key.id))
    assert last_used is not None


def test_support_key_cannot_top_up(client, catalog):
    response = api_as(client, "support").post(
        "/api/v1/wallets/topups", {"customer_key": C, "credit_system": "credits", "amount": "5"}
    )
    assert response.status_code == 403 and error_code(response) == "forbidden"


def test_account_manager_key_cannot_record_usage(client, catalog):
    api = api_as(client, "account_manager")
    before = row_counts()
    for path, body in [("/api/v1/usage", USAGE), ("/api/v1/usage/batch", {"events": [USAGE]})]:
        response = api.post(path, body)
        assert response.status_code == 403 and error_code(response) == "forbidden"
    assert row_counts() == before
    assert (
        api.get(
            "/api/v1/entitlements/check",
            query_string={"customer_key": C, "feature_key": "api_calls"},
        ).status_code
        == 200
    )


def test_support_key_records_usage(client, catalog):
    response = api_as(client, "support").post("/api/v1/usage", USAGE)
    assert response.status_code == 201


def test_a_dashboard_cookie_never_authenticates(client, catalog):
    client.set_cookie("session", "anything")
    client.set_cookie("remember_token", "1|abc")
    response = client.get("/api/v1/customers")
    assert response.status_code == 401


def test_api_needs_no_csrf_token_even_with_csrf_on(database_url, catalog):
    secret = make_key("admin")
    app = create_app(
        {**TEST_CONFIG, "WTF_CSRF_ENABLED": True, "SQLALCHEMY_DATABASE_URI": database_url}
    )
    with app.app_context():
        response = app.test_client().post(
            "/api/v1/usage", json=USAGE, headers={"Authorization": f"Bearer {secret}"}
        )
        assert response.status_code == 201
        db.session.remove()


def test_rate_limit_is_per_key_with_retry_after(database_url, catalog):
    first, second = make_key("admin"), make_key("admin")
    app = create_app(
        {
            **TEST_CONFIG,
            "RATELIMIT_ENABLED": True,
            "API_RATE_LIMIT": "3 per minute",
            "SQLALCHEMY_DATABASE_URI": database_url,
        }
    )
    try:
        with app.app_context():
            client = app.test_client()
            headers = {"Authorization": f"Bearer {first}"}
            statuses = [
                client.get("/api/v1/features", headers=headers).status_code for _ in range(4)
            ]
            assert statuses == [200, 200, 200, 429]
            limited = client.get("/api/v1/features", headers=headers)
            assert limited.status_code == 429 and error_code(limited) == "rate_limited"
            assert 1 <= int(limited.headers["Retry-After"]) <= 61
            check_response("GET", "/api/v1/features", 429, limited.get_json())
            other = client.get("/api/v1/features", headers={"Authorization": f"Bearer {second}"})
            assert other.status_code == 200
            db.session.remove()
    finally:
        # The limiter is one module-level object: leave it disabled for the next app.
        create_app({**TEST_CONFIG, "SQLALCHEMY_DATABASE_URI": database_url})


def test_one_rate_limit_per_key_across_every_door(database_url, catalog):
    key = make_key("admin")
    app = create_app(
        {
            **TEST_CONFIG,
            "RATELIMIT_ENABLED": True,
            "API_RATE_LIMIT": "4 per minute",
            "SQLALCHEMY_DATABASE_URI": database_url,
        }
    )
    try:
        with app.app_context():
            client = app.test_client()
            bearer = {"Authorization": f"Bearer {key}"}
            calls = [
                client.get("/api/v1/features", headers=bearer),
                client.get(f"/metrifox/api/v1/customers/{C}", headers={"x-api-key": key}),
                client.get("/api/v1/features", headers=bearer),
                client.get("/metrifox/meter/usage/events", headers={"x-api-key": key}),
                client.get(f"/metrifox/api/v1/customers/{C}", headers={"x-api-key": key}),
                client.get("/api/v1/features", headers=bearer),
            ]
            assert [r.status_code for r in calls] == [200, 200, 200, 200, 429, 429]
            limited = calls[4].get_json()
            assert limited["error"]["code"] == "rate_limited" and limited["message"]
            assert 1 <= int(calls[4].headers["Retry-After"]) <= 61
            # Without a key: per address, on the Metrifox door too.
            anonymous = [client.get("/metrifox/meter/usage/events").status_code for _ in range(5)]
            assert anonymous == [401, 401, 401, 401, 429]
            db.session.remove()
    finally:
        create_app({**TEST_CONFIG, "SQLALCHEMY_DATABASE_URI": database_url})


def test_openapi_document_and_docs_page_are_public(client):
    response = client.get("/api/v1/openapi.json")
    assert response.status_code == 200
    doc = response.get_json()
    assert doc["openapi"] == "3.1.0"
    assert doc["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"
    page = client.get("/api/docs")
    assert page.status_code == 200 and page.mimetype == "text/html"
    html = page.get_data(as_text=True)
    assert "POST" in html and "/api/v1/usage" in html and "insufficient_credits" in html
    assert "<script" not in html and "http://" not in html and "https://" not in html
    # The CSP allows no inline style: the page's look comes from a stylesheet file.
    assert "<style" not in html and " style=" not in html
    assert client.get("/static/css/api-docs.css").status_code == 200


def test_unknown_api_path_is_json_404(client, catalog):
    secret = make_key("admin")
    response = client.get("/api/v1/nothing-here", headers={"Authorization": f"Bearer {secret}"})
    assert response.status_code == 404 and error_code(response) == "not_found"
