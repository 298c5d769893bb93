"""Write transactions: one commit per service call, BEGIN IMMEDIATE on SQLite, retries for the
races PostgreSQL reports (a unique key taken by a concurrent insert, deadlock, serialization)."""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import ParamSpec, TypeVar

from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.orm import Session

from ..db_setup import immediate_begin, write_gate
from ..errors import Conflict, ServiceUnavailable
from ..extensions import db

P = ParamSpec("P")
R = TypeVar("R")

MAX_ATTEMPTS = 5
_RETRY_SQLSTATES = {"40001", "40P01"}  # serialization failure, deadlock
# SQLite's primary result codes for "locked past the busy timeout" and "cannot open the file".
_SQLITE_UNAVAILABLE = {sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED, sqlite3.SQLITE_CANTOPEN}
# PostgreSQL: connection exception, insufficient resources, operator intervention (shutdown,
# statement timeout); 55P03 lock_not_available; no SQLSTATE at all: the connection failed.
_PG_UNAVAILABLE_CLASSES = {"08", "53", "57"}


@contextmanager
def write_transaction() -> Iterator[None]:
    session = db.session()  # the request's Session behind the scoped proxy
    if session.in_transaction() and not _can_continue(session):
        # End the read transaction the request may have opened (e.g. loading the user), so the
        # write transaction starts fresh with BEGIN IMMEDIATE and sees the latest data. This
        # also gives its connection back to the pool before queueing at the SQLite writers'
        # gate: a queued writer holding a pooled connection could starve the gate's holder.
        session.commit()
    with write_gate(db.engine):
        with _write_transaction(session):
            yield


@contextmanager
def _write_transaction(session: Session) -> Iterator[None]:
    # Objects loaded before this point may be stale: read them afresh inside the transaction.
    session.expire_all()
    token = immediate_begin.set(True)
    try:
        session.connection()
    except BaseException:
        session.rollback()
        raise
    finally:
        immediate_begin.reset(token)
    try:
        yield
        session.commit()
    except BaseException:
        session.rollback()
        raise


def _can_continue(session: Session) -> bool:
    """On PostgreSQL (READ COMMITTED: every statement sees the latest commits) a read-only
    transaction the request already opened, e.g. for the API key, can simply go on as the write
    transaction: its COMMIT and the next BEGIN would be two round trips for nothing. Not with
    pending ORM changes, which must not ride along, nor on SQLite (BEGIN IMMEDIATE)."""
    if session.new or session.dirty or session.deleted:
        return False
    conn = session.connection()  # the transaction's connection: no round trip
    if conn.dialect.name != "postgresql":
        return False
    level = conn.get_execution_options().get("isolation_level")
    return (level or conn.dialect.default_isolation_level) == "READ COMMITTED"


def _sqlstate(exc: DBAPIError) -> str | None:
    return getattr(exc.orig, "sqlstate", None)


def is_unavailable(exc: BaseException) -> bool:
    """A database that is down, unreachable or locked past the busy timeout: worth a 503 and a
    retry. Any other error (a missing table, a malformed statement) is a bug, left to be a 500."""
    if not isinstance(exc, DBAPIError):
        return False
    if exc.connection_invalidated:
        return True
    if not isinstance(exc, OperationalError):
        return False
    code = getattr(exc.orig, "sqlite_errorcode", None)
    if code is not None:  # SQLite says "operational" of nearly everything: only these qualify
        return code & 0xFF in _SQLITE_UNAVAILABLE
    state = _sqlstate(exc)
    return state is None or state == "55P03" or state[:2] in _PG_UNAVAILABLE_CLASSES


def transactional(fn: Callable[P, R]) -> Callable[P, R]:
    """Run ``fn`` in one write transaction, retried from scratch when a concurrent writer won a
    race; its DomainErrors roll everything back."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        for attempt in range(1, MAX_ATTEMPTS + 1):
            try:
                with write_transaction():
                    return fn(*args, **kwargs)
            except IntegrityError as exc:
                if attempt == MAX_ATTEMPTS:
                    raise Conflict("A concurrent change conflicted with this one; retry.") from exc
            except OperationalError as exc:
                if _sqlstate(exc) in _RETRY_SQLSTATES:
                    if attempt < MAX_ATTEMPTS:
                        continue
                elif not is_unavailable(exc):
                    raise
                raise ServiceUnavailable(
                    "The database is unavailable or busy; retry shortly.", retry_after=1
                ) from exc
        raise AssertionError("unreachable")

    return wrapper
