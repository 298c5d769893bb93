"""Passwords: production hashes with RFC 9106's low-memory argon2id profile; the tests hash with
argon2's cheapest profile (TEST_CONFIG), which only a TESTING app may use."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from tests.conftest import TEST_CONFIG
from webapp import create_app
from webapp.extensions import db
from webapp.models import User
from webapp.services import auth
from webapp.services.actors import SYSTEM

PRODUCTION_PREFIX = "$argon2id$v=19$m=65536,t=3,p=4$"  # RFC 9106, second recommended option


def _app(database_url: str, **config: object):
    production = {k: v for k, v in TEST_CONFIG.items() if k != "PASSWORD_HASH_PROFILE"}
    return create_app({**production, "SQLALCHEMY_DATABASE_URI": database_url, **config})


def test_production_hashes_passwords_with_rfc_9106_low_memory(database_url):
    app = _app(database_url, TESTING=False)
    assert app.config["PASSWORD_HASH_PROFILE"] == "RFC_9106_LOW_MEMORY"
    with app.app_context():
        try:
            auth.create_user(SYSTEM, email="ann@example.com", role="admin", password="x" * 12)
            stored = db.session.scalar(select(User.password_hash))
            assert stored.startswith(PRODUCTION_PREFIX), stored
            assert auth.authenticate("ann@example.com", "x" * 12) is not None
        finally:
            db.session.remove()
            db.engine.dispose()


def test_the_tests_hash_cheaply_and_still_check_production_hashes(app):
    auth.create_user(SYSTEM, email="ann@example.com", role="admin", password="x" * 12)
    assert db.session.scalar(select(User.password_hash)).startswith("$argon2id$v=19$m=8,t=1,p=1$")
    production = auth._hashers("RFC_9106_LOW_MEMORY")[0].hash("y" * 12)
    db.session.execute(db.update(User).values(password_hash=production))
    db.session.commit()
    assert auth.authenticate("ann@example.com", "y" * 12) is not None
    assert auth.authenticate("ann@example.com", "x" * 12) is None


def test_only_a_testing_app_may_hash_cheaply(database_url):
    app = _app(database_url, TESTING=False, PASSWORD_HASH_PROFILE="CHEAPEST")
    with app.app_context():
        try:
            with pytest.raises(RuntimeError, match="tests only"):
                auth.create_user(SYSTEM, email="ann@example.com", role="admin", password="x" * 12)
        finally:
            db.session.remove()
            db.engine.dispose()
