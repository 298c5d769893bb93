"""Only a database that is down, unreachable or locked is "unavailable" (503 with Retry-After);
any other database error is a bug and surfaces as one (a 500), never hidden behind "retry"."""

from __future__ import annotations

import sqlite3

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, OperationalError

from tests.api_support import api_as
from webapp.extensions import db
from webapp.services import wallets
from webapp.services.actors import SYSTEM
from webapp.services.tx import is_unavailable

C = "cust-6d11ca90"


def _error_of(statement: str) -> DBAPIError:
    with pytest.raises(DBAPIError) as raised:
        db.session.execute(text(statement))
    db.session.rollback()
    return raised.value


def test_an_operational_error_that_is_not_about_reaching_the_database_is_a_bug(app, backend):
    statement = {
        "sqlite": "SELECT * FROM no_such_table",  # SQLite: OperationalError "no such table"
        "postgresql": "SELECT repeat('x', 1100000000)",  # 54000 program_limit_exceeded
    }[backend]
    error = _error_of(statement)
    assert isinstance(error, OperationalError)
    assert not is_unavailable(error)


def test_a_lock_held_past_the_timeout_is_unavailable(app, backend, database_url, catalog):
    if backend == "sqlite":
        path = database_url.removeprefix("sqlite:///")
        blocker = sqlite3.connect(path, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")
        try:
            db.session.execute(text("PRAGMA busy_timeout=50"))
            error = _error_of("BEGIN IMMEDIATE")
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
    else:
        other = db.engine.connect()
        other.execute(text("SELECT * FROM customers FOR UPDATE"))
        try:
            db.session.execute(text("SET lock_timeout = '50ms'"))
            error = _error_of("SELECT * FROM customers FOR UPDATE")
        finally:
            other.rollback()
            other.close()
    assert is_unavailable(error)


# SQLite calls a missing table an OperationalError; PostgreSQL a ProgrammingError, never "busy".
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_missing_table_is_a_500_not_a_503(app, client, catalog):
    api = api_as(client, "finance")
    db.session.execute(text("DROP TABLE audit_log"))
    db.session.commit()
    with pytest.raises(OperationalError, match="no such table"):
        wallets.topup_wallet(SYSTEM, customer_key=C, credit_system="credits", amount=1)
    with pytest.raises(OperationalError, match="no such table"):
        # TESTING propagates an unhandled error: the error handler did not turn it into a 503.
        api.post(
            "/api/v1/wallets/topups", {"customer_key": C, "credit_system": "credits", "amount": 1}
        )
