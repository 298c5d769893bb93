"""Sign-in hardening: a fresh CSRF secret with every sign-in, every attempt in the audit log, a
rate limit per (account, address) pair under a much higher account-wide ceiling, and sessions
that the server ends when idle too long or simply too old (time from an injected clock)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from flask import Flask
from sqlalchemy import select

from tests.conftest import TEST_CONFIG
from tests.web import PASSWORD, csrf_from, forget_user_between_requests, login, make_user
from webapp import create_app
from webapp.extensions import db
from webapp.models import AuditLog


class Clock:
    """Seconds since the epoch, moved by the test."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, *, minutes: float = 0, hours: float = 0) -> None:
        self.now += minutes * 60 + hours * 3600


@pytest.fixture
def clock() -> Clock:
    return Clock()


def _app(database_url: str, **config: object) -> Iterator[Flask]:
    app = create_app({**TEST_CONFIG, "SQLALCHEMY_DATABASE_URI": database_url, **config})
    with app.app_context():
        forget_user_between_requests(app)
        yield app
        db.session.remove()
        db.engine.dispose()


@pytest.fixture
def clocked_app(database_url: str, clock: Clock) -> Iterator[Flask]:
    yield from _app(database_url, CLOCK=clock)


def _audit() -> list[tuple[str, str, str | None, dict | None]]:
    db.session.rollback()
    rows = db.session.scalars(
        select(AuditLog).where(AuditLog.action.like("user.sign%")).order_by(AuditLog.id)
    )
    return [(row.action, row.actor, row.target, row.details) for row in rows]


# ---------------------------------------------------------------- CSRF secret


def test_a_csrf_token_from_before_sign_in_is_refused_after_it(database_url):
    for app in _app(database_url, WTF_CSRF_ENABLED=True):
        make_user("support", "sue@example.com")
        client = app.test_client()
        before = csrf_from(client.get("/login").get_data(as_text=True))
        assert login(client, "sue@example.com", csrf_token=before).status_code == 303
        # A token planted or seen before sign-in (a shared computer, a fixed session) is dead.
        assert client.post("/logout/everywhere", data={"csrf_token": before}).status_code == 400
        after = csrf_from(client.get("/account").get_data(as_text=True))
        assert after != before
        assert client.post("/logout/everywhere", data={"csrf_token": after}).status_code == 303


# ---------------------------------------------------------------- audit


def test_sign_in_successes_and_failures_are_in_the_audit_log(client):
    make_user("support", "sue@example.com")
    address = {"REMOTE_ADDR": "10.1.2.3"}
    client.post(
        "/login", data={"email": "Sue@Example.com", "password": "wrong"}, environ_base=address
    )
    client.post("/login", data={"email": "correct horse battery", "password": PASSWORD})
    response = client.post(
        "/login", data={"email": "sue@example.com ", "password": PASSWORD}, environ_base=address
    )
    assert response.status_code == 303
    assert _audit() == [
        (
            "user.sign_in_failed",
            "anonymous:anonymous",
            "user:sue@example.com",
            {"address": "10.1.2.3"},
        ),
        # An unknown account is not named: what was typed may be a password in the wrong field.
        ("user.sign_in_failed", "anonymous:anonymous", None, {"address": "127.0.0.1"}),
        ("user.signed_in", "user:sue@example.com", "user:sue@example.com", {"address": "10.1.2.3"}),
    ]


# ---------------------------------------------------------------- rate limits


def _attempt(client, address: str, email: str = "target@example.com", password: str = "guess"):
    return client.post(
        "/login",
        data={"email": email, "password": password},
        environ_base={"REMOTE_ADDR": address},
    ).status_code


def test_a_guesser_cannot_lock_the_owner_out_from_another_address(database_url):
    limits = {"RATELIMIT_ENABLED": True, "LOGIN_PAIR_RATE_LIMIT": "3 per hour"}
    for app in _app(database_url, **limits):
        make_user("admin", "target@example.com")
        client = app.test_client()
        guesser, owner = "10.0.0.66", "10.0.0.1"
        assert [_attempt(client, guesser) for _ in range(4)] == [422, 422, 422, 429]
        assert _attempt(client, guesser, password=PASSWORD) == 429  # the pair is resting
        assert _attempt(client, guesser, email="other@example.com") == 422  # other accounts not
        assert _attempt(client, owner, password=PASSWORD) == 303


def test_successful_sign_ins_use_up_no_attempt(database_url):
    limits = {"RATELIMIT_ENABLED": True, "LOGIN_PAIR_RATE_LIMIT": "2 per hour"}
    for app in _app(database_url, **limits):
        make_user("admin", "target@example.com")
        client = app.test_client()
        for _ in range(4):
            assert _attempt(client, "10.0.0.1", password=PASSWORD) == 303
            client.post("/logout")
        assert [_attempt(client, "10.0.0.1") for _ in range(3)] == [422, 422, 429]


def test_the_account_wide_ceiling_is_far_above_the_pair_limit():
    from webapp.config import Defaults

    def per_hour(limit: str) -> float:
        count, _, period = limit.split(" ", 2)
        return int(count) * {"minute": 60, "hour": 1}[period]

    pair = per_hour(Defaults.LOGIN_PAIR_RATE_LIMIT)
    assert per_hour(Defaults.LOGIN_ACCOUNT_RATE_LIMIT) >= 10 * pair


# ---------------------------------------------------------------- expiry


def test_an_idle_session_ends_on_the_server(clocked_app, clock):
    make_user("support", "sue@example.com")
    client = clocked_app.test_client()
    assert login(client, "sue@example.com").status_code == 303
    clock.advance(minutes=59)
    assert client.get("/").status_code == 200  # still in time, and now seen again
    clock.advance(minutes=59)
    assert client.get("/").status_code == 200
    saved = client.get_cookie("session").value
    clock.advance(minutes=61)
    response = client.get("/")
    assert response.status_code == 302 and response.headers["Location"].startswith("/login")
    # A saved copy of the cookie is no better: the times are checked by the server.
    client.set_cookie("session", saved)
    assert client.get("/").status_code == 302
    assert login(client, "sue@example.com").status_code == 303
    assert client.get("/").status_code == 200


def test_a_session_ends_at_its_maximum_age_however_busy(clocked_app, clock):
    make_user("support", "sue@example.com")
    client = clocked_app.test_client()
    assert login(client, "sue@example.com").status_code == 303
    for _ in range(12 * 2 - 1):  # a request every 30 minutes for 11.5 hours
        clock.advance(minutes=30)
        assert client.get("/").status_code == 200
    clock.advance(minutes=31)
    assert client.get("/").status_code == 302


def test_the_timeouts_are_settings(database_url, clock):
    for app in _app(database_url, CLOCK=clock, SESSION_IDLE_MINUTES=5, SESSION_MAX_HOURS=1):
        make_user("support", "sue@example.com")
        client = app.test_client()
        login(client, "sue@example.com")
        clock.advance(minutes=4)
        assert client.get("/").status_code == 200
        clock.advance(minutes=6)
        assert client.get("/").status_code == 302
        login(client, "sue@example.com")
        for _ in range(15):
            clock.advance(minutes=4)
            assert client.get("/").status_code == 200
        clock.advance(minutes=4)  # 64 minutes after sign-in
        assert client.get("/").status_code == 302
