"""Sign-in, sessions that end with their version, safe redirects, rate limit, headers, cookies."""

from __future__ import annotations

import pytest

from tests.conftest import TEST_CONFIG
from tests.web import PASSWORD, forget_user_between_requests, login, make_user, signed_in
from webapp import create_app
from webapp.extensions import db
from webapp.services import auth
from webapp.services.actors import SYSTEM


@pytest.fixture(autouse=True)
def _fresh_requests(app):
    forget_user_between_requests(app)


def test_sign_in_and_out(client):
    make_user("support", "sue@example.com")
    assert client.get("/").status_code == 302
    response = login(client, "Sue@Example.com ")
    assert response.status_code == 303
    assert response.headers["Location"] == "/"
    assert b"sue@example.com" in client.get("/").data
    assert client.post("/logout").status_code == 303
    assert client.get("/").status_code == 302


def test_a_wrong_password_is_refused_without_saying_which_part_was_wrong(client):
    make_user("support", "sue@example.com")
    for email, password in (("sue@example.com", "wrong password!"), ("nobody@x.example", PASSWORD)):
        response = login(client, email, password)
        assert response.status_code == 422
        assert b"Wrong email or password." in response.data
    assert client.get("/").status_code == 302


@pytest.mark.parametrize(
    ("next_url", "expected"),
    [
        ("/customers?q=acme", "/customers?q=acme"),
        ("//evil.example/x", "/"),
        ("https://evil.example/", "/"),
        ("/\\evil.example", "/"),
        ("javascript:alert(1)", "/"),
    ],
)
def test_only_same_host_paths_are_followed_after_sign_in(client, next_url, expected):
    make_user("support", "sue@example.com")
    response = client.post(
        "/login",
        query_string={"next": next_url},
        data={"email": "sue@example.com", "password": PASSWORD},
    )
    assert response.headers["Location"] == expected


def test_anonymous_is_sent_to_sign_in_with_next(client):
    response = client.get("/customers?q=a")
    assert response.status_code == 302
    assert response.headers["Location"] == "/login?next=/customers?q%3Da"
    htmx = client.get("/customers", headers={"HX-Request": "true"})
    assert htmx.status_code == 401  # the form stays, with a message in place (static/js/app.js)
    assert "HX-Redirect" not in htmx.headers


def test_a_post_with_an_ended_session_returns_to_the_page_it_came_from(client):
    response = client.post(
        "/admin/users/1/role", headers={"Referer": "http://localhost/admin/users?x=1"}
    )
    assert response.headers["Location"] == "/login?next=/admin/users?x%3D1"
    response = client.post("/customers/c/topup", headers={"Referer": "https://evil.example/"})
    assert response.headers["Location"] == "/login"


def test_a_role_change_ends_the_users_sessions(app):
    make_user("admin", "other-admin@example.com")  # the last admin could not be demoted
    user = make_user("admin", "ann@example.com")
    client = app.test_client()
    login(client, "ann@example.com")
    assert client.get("/admin/users").status_code == 200
    auth.set_user_role(SYSTEM, user.id, "support")
    assert client.get("/").status_code == 302
    login(client, "ann@example.com")
    assert client.get("/admin/users").status_code == 403


def test_logout_everywhere_ends_every_session(app):
    make_user("finance", "fin@example.com")
    laptop, phone = app.test_client(), app.test_client()
    login(laptop, "fin@example.com")
    login(phone, "fin@example.com")
    assert phone.post("/logout/everywhere").status_code == 303
    assert laptop.get("/").status_code == 302
    assert phone.get("/").status_code == 302


def test_a_password_change_keeps_this_session_and_ends_the_others(app):
    make_user("finance", "fin@example.com")
    laptop, phone = app.test_client(), app.test_client()
    login(laptop, "fin@example.com")
    login(phone, "fin@example.com")
    response = phone.post(
        "/account", data={"current_password": PASSWORD, "password": "a brand new password"}
    )
    assert response.status_code == 303
    assert phone.get("/").status_code == 200
    assert laptop.get("/").status_code == 302
    assert login(laptop, "fin@example.com", "a brand new password").status_code == 303


def test_a_too_short_password_is_shown_next_to_the_field(client):
    signed_in(client, "support")
    response = client.post("/account", data={"current_password": PASSWORD, "password": "short"})
    assert response.status_code == 422
    assert b'id="password-error">The password needs at least 10 characters.' in response.data


def test_ones_own_password_changes_only_with_the_current_one(client):
    signed_in(client, "support")
    response = client.post(
        "/account", data={"current_password": "wrong guess!", "password": "a brand new password"}
    )
    assert response.status_code == 422
    assert b'id="current_password-error">That is not your current password.' in response.data
    assert login(client.application.test_client(), "support@example.com").status_code == 303


def test_sign_in_is_rate_limited_per_address(database_url):
    app = create_app(
        {
            **TEST_CONFIG,
            "SQLALCHEMY_DATABASE_URI": database_url,
            "RATELIMIT_ENABLED": True,
            "LOGIN_RATE_LIMIT": "3 per minute",
        }
    )
    with app.app_context():
        client = app.test_client()
        responses = [login(client, "x@example.com", "wrong password") for _ in range(4)]
        assert [r.status_code for r in responses] == [422, 422, 422, 429]
        page = responses[-1].get_data(as_text=True)
        assert "Wait a minute, then try again." in page and "per 1 minute" not in page
        other = client.post(
            "/login",
            data={"email": "x@example.com", "password": "x"},
            environ_base={"REMOTE_ADDR": "10.0.0.9"},
        )
        assert other.status_code == 422
        assert client.get("/login").status_code == 200  # only posts count
        db.session.remove()
        db.engine.dispose()


def test_security_headers_on_pages_and_static(client):
    for url in ("/login", "/static/css/app.css", "/customers"):
        response = client.get(url)
        csp = response.headers["Content-Security-Policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp
        assert "frame-ancestors 'none'" in csp
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["X-Frame-Options"] == "DENY"
        assert response.headers["Referrer-Policy"] == "same-origin"
    assert "HX-Request" in client.get("/login").headers["Vary"]


def test_the_session_cookie_is_httponly_lax_and_secure_by_default(database_url):
    # None = not configured (instance/config.py of `make run` may say False on this machine).
    app = create_app(
        {**TEST_CONFIG, "SQLALCHEMY_DATABASE_URI": database_url, "SESSION_COOKIE_SECURE": None}
    )
    with app.app_context():
        make_user("support", "sue@example.com")
        cookie = login(app.test_client(), "sue@example.com").headers["Set-Cookie"]
        assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Secure" in cookie
        db.session.remove()
        db.engine.dispose()


def test_the_cookie_is_not_secure_when_configured_off(database_url):
    app = create_app(
        {**TEST_CONFIG, "SQLALCHEMY_DATABASE_URI": database_url, "SESSION_COOKIE_SECURE": False}
    )
    with app.app_context():
        make_user("support", "sue@example.com")
        cookie = login(app.test_client(), "sue@example.com").headers["Set-Cookie"]
        assert "Secure" not in cookie and "HttpOnly" in cookie
        db.session.remove()
        db.engine.dispose()


def test_demo_users_can_sign_in(app, runner, tmp_path, monkeypatch):
    monkeypatch.setattr(app, "instance_path", str(tmp_path))  # demo-users.txt goes there
    result = runner.invoke(args=["demo", "users"])
    assert result.exit_code == 0, result.output
    line = next(x for x in result.output.splitlines() if "admin@demo.example" in x)
    email, password = line.split()
    client = app.test_client()
    assert login(client, email, password).status_code == 303
    assert client.get("/admin/users").status_code == 200
