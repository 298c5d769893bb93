"""Fixtures: every database test runs on SQLite (a fresh file per test) and on PostgreSQL (one
database per xdist worker, emptied between tests). After every test that used the `app` fixture,
`ledger verify` runs on its database and a violation fails the test (mark a test that breaks the
ledger on purpose with `@pytest.mark.breaks_ledger`). Passwords hash with argon2's cheapest
profile here (TEST_CONFIG); production keeps RFC 9106's (tests/test_password_hashing.py).

PostgreSQL comes from TEST_DATABASE_URL (default postgresql+psycopg://postgres@127.0.0.1:5432/test).
Without a server the PostgreSQL half is skipped with the reason shown, except under CI=true, where
that is a failure."""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from flask import Flask
from hypothesis import Phase, settings
from sqlalchemy import make_url

from webapp import create_app
from webapp.extensions import db
from webapp.services.actors import SYSTEM, Actor

# Hypothesis's explain phase replays a failing example many times to tell which of its parts
# matter; against a database that can outlast the 300 s test timeout, and the failure then shows
# as a timeout instead of the minimal example. Every other phase stays.
settings.register_profile("project", phases=[p for p in Phase if p is not Phase.explain])
settings.load_profile("project")

DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
BACKENDS = ["sqlite", "postgresql"]

TEST_CONFIG = {
    "TESTING": True,
    "SECRET_KEY": "test-secret-key-that-is-long-enough-0123456789",
    "RATELIMIT_ENABLED": False,
    "WTF_CSRF_ENABLED": False,
    "PASSWORD_HASH_PROFILE": "CHEAPEST",
}


def pytest_configure(config: pytest.Config) -> None:
    os.environ.setdefault("WEBAPP_TESTING", "true")


def pg_base_url() -> str:
    return os.environ.get("TEST_DATABASE_URL", DEFAULT_PG)


def _pg_available() -> str | None:
    url = make_url(pg_base_url())
    try:
        with psycopg.connect(
            host=url.host,
            port=url.port or 5432,
            user=url.username,
            dbname=url.database,
            password=url.password,
            connect_timeout=3,
        ):
            return None
    except psycopg.Error as exc:
        return f"PostgreSQL not reachable at {url.render_as_string(hide_password=True)}: {exc}"


@pytest.fixture(scope="session")
def pg_unavailable() -> str | None:
    reason = _pg_available()
    if reason and os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true but {reason}")
    return reason


def _worker() -> str:
    """Unique per checkout and xdist worker, so that several checkouts can test at once."""
    checkout = hashlib.sha1(str(Path(__file__).resolve().parent).encode()).hexdigest()[:8]
    return f"{checkout}_{os.environ.get('PYTEST_XDIST_WORKER', 'main')}"


def migrate_to_head(url: str) -> None:
    """Build the schema with the Alembic migrations, as `flask db upgrade` does."""
    from flask_migrate import upgrade

    app = create_app({**TEST_CONFIG, "SQLALCHEMY_DATABASE_URI": url})
    with app.app_context():
        upgrade()
        db.engine.dispose()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "template.sqlite3"
    migrate_to_head(f"sqlite:///{path}")
    return path


@pytest.fixture(scope="session")
def pg_worker_url(pg_unavailable: str | None) -> Iterator[str]:
    if pg_unavailable:
        pytest.skip(pg_unavailable)
    base = make_url(pg_base_url())
    name = f"webapp_test_{_worker()}"
    admin = psycopg.connect(
        host=base.host,
        port=base.port or 5432,
        user=base.username,
        dbname=base.database,
        password=base.password,
        autocommit=True,
    )
    with admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{name}"')
    url = base.set(database=name).render_as_string(hide_password=False)
    migrate_to_head(url)
    yield url


TABLES = [
    "worker_jobs",
    "webhook_attempts",
    "webhook_deliveries",
    "webhook_endpoints",
    "outbox_events",
    "audit_log",
    "ledger_entries",
    "usage_counters",
    "usage_events",
    "usage_daily",
    "credit_monthly",
    "wallets",
    "entitlements",
    "credit_costs",
    "credit_systems",
    "features",
    "customers",
    "api_keys",
    "users",
    "plans",  # CASCADE: plan entitlements, plan credits, overrides, issuances
    "outbox_events",
]


def _empty_pg(url: str) -> None:
    u = make_url(url)
    with psycopg.connect(
        host=u.host,
        port=u.port or 5432,
        user=u.username,
        dbname=u.database,
        password=u.password,
        autocommit=True,
    ) as conn:
        conn.execute(f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY CASCADE")


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A migrated, empty database of each backend."""
    if request.param == "sqlite":
        template = request.getfixturevalue("sqlite_template")
        path = tmp_path / "test.sqlite3"
        shutil.copy(template, path)
        return f"sqlite:///{path}"
    url = request.getfixturevalue("pg_worker_url")
    _empty_pg(url)
    return url


@pytest.fixture
def backend(database_url: str) -> str:
    return "sqlite" if database_url.startswith("sqlite") else "postgresql"


@pytest.fixture
def app(request: pytest.FixtureRequest, database_url: str) -> Iterator[Flask]:
    app = create_app({**TEST_CONFIG, "SQLALCHEMY_DATABASE_URI": database_url})
    with app.app_context():
        yield app
        db.session.remove()
        try:
            if not request.node.get_closest_marker("breaks_ledger"):
                assert_ledger_holds()
        finally:
            db.session.remove()
            db.engine.dispose()


def assert_ledger_holds() -> None:
    """`ledger verify` on the current app's database: every invariant of docs/domain.md."""
    from webapp.services.verify import verify_ledger

    report = verify_ledger()
    if not report.ok:
        pytest.fail("ledger verify after the test:\n" + "\n".join(report.violations), pytrace=False)


@pytest.fixture
def client(app: Flask):
    return app.test_client()


@pytest.fixture
def runner(app: Flask):
    return app.test_cli_runner()


@pytest.fixture
def admin() -> Actor:
    return SYSTEM


def actor(role: str, name: str | None = None) -> Actor:
    return Actor(kind="user", id=None, name=name or f"{role}@example.com", role=role)


@pytest.fixture
def catalog(app: Flask):
    """The seed page's catalog: credits at 0.02 per API call and per candidate, seats, sso."""
    from tests.factories import make_catalog

    return make_catalog()


def empty_database(url: str) -> None:
    """Used by tests that run their own servers: drop every row."""
    if url.startswith("sqlite"):
        raise NotImplementedError
    _empty_pg(url)


class Clock:
    """The services' clock in a test: starts at the real now, moves only when told."""

    def __init__(self) -> None:
        from webapp.models import _system_now

        self.now = _system_now().replace(microsecond=0)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> datetime:
        self.now += timedelta(**delta)
        return self.now


@pytest.fixture
def clock() -> Iterator[Clock]:
    from webapp.models import set_clock

    moving = Clock()
    set_clock(moving)
    try:
        yield moving
    finally:
        set_clock(None)
