"""Helpers for the dashboard tests: users per role, signing in, counting rows and queries."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

from flask.testing import FlaskClient
from sqlalchemy import event, func, select

from webapp.extensions import db
from webapp.models import AuditLog, LedgerEntry, UsageCounter, UsageEvent, User, Wallet
from webapp.services import auth
from webapp.services.actors import SYSTEM

ROLES = ("account_manager", "support", "finance", "admin")
PASSWORD = "correct horse battery"


def make_user(role: str, email: str | None = None) -> User:
    return auth.create_user(
        SYSTEM, email=email or f"{role.replace('_', '-')}@example.com", role=role, password=PASSWORD
    )


def login(client: FlaskClient, email: str, password: str = PASSWORD, **data: str):
    return client.post("/login", data={"email": email, "password": password, **data})


def signed_in(client: FlaskClient, role: str) -> FlaskClient:
    email = f"{role.replace('_', '-')}@example.com"
    if db.session.scalar(select(User.id).where(User.email == email)) is None:
        make_user(role, email)
    response = login(client, email)
    assert response.status_code == 303, response.data
    return client


def row_counts() -> dict[str, int]:
    db.session.rollback()  # see what other requests committed
    return {
        model.__tablename__: db.session.scalar(select(func.count()).select_from(model))
        for model in (UsageEvent, LedgerEntry, UsageCounter, Wallet, AuditLog)
    }


CSRF_RE = re.compile(r'name="(?:[a-z]+-)?csrf_token"[^>]*value="([^"]+)"')


def csrf_from(html: str) -> str:
    match = CSRF_RE.search(html)
    assert match, "no CSRF token in the page"
    return match.group(1)


@contextmanager
def count_queries() -> Iterator[list[str]]:
    statements: list[str] = []

    def before(conn, cursor, statement, parameters, context, executemany):
        if statement.split(None, 1)[0].upper() not in {"BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT"}:
            statements.append(statement)

    engine = db.engine
    event.listen(engine, "before_cursor_execute", before)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", before)


def forget_user_between_requests(app) -> None:
    """The ``app`` fixture holds one app context for the whole test, which every test-client
    request reuses, so Flask-Login's per-request cache (``g._login_user``) would outlive the
    request. Drop it at the start of each request, as a real server's fresh context does."""
    from flask import g

    @app.before_request
    def forget() -> None:
        g.pop("_login_user", None)
