"""SQLITE_SYNCHRONOUS: FULL by default (an acknowledged commit survives a power cut, as on
PostgreSQL), NORMAL when asked, and a typo refused at start rather than silently weakening it."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from tests.conftest import TEST_CONFIG
from webapp import create_app
from webapp.config import env_overrides
from webapp.extensions import db

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)

LEVELS = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}


def _synchronous(config: dict) -> str:
    app = create_app(config)
    with app.app_context():
        try:
            with db.engine.connect() as conn:
                assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
                return LEVELS[conn.execute(text("PRAGMA synchronous")).scalar()]
        finally:
            db.engine.dispose()


def test_sqlite_commits_are_fully_synchronous_by_default(database_url):
    assert _synchronous({**TEST_CONFIG, "SQLALCHEMY_DATABASE_URI": database_url}) == "FULL"


def test_sqlite_synchronous_normal_is_taken_from_the_environment(database_url):
    config = {**TEST_CONFIG, "SQLALCHEMY_DATABASE_URI": database_url}
    config.update(env_overrides({"WEBAPP_SQLITE_SYNCHRONOUS": "normal"}))
    assert _synchronous(config) == "NORMAL"


def test_an_unknown_sqlite_synchronous_level_stops_the_app(database_url):
    with pytest.raises(RuntimeError, match="SQLITE_SYNCHRONOUS"):
        create_app(
            {**TEST_CONFIG, "SQLALCHEMY_DATABASE_URI": database_url, "SQLITE_SYNCHRONOUS": "FAST"}
        )
