"""Engine set-up: SQLite done right (WAL, busy timeout, BEGIN IMMEDIATE for writes) and
PostgreSQL pool settings. Called from create_app(); nothing happens at import time."""

from __future__ import annotations

import contextvars
import fcntl
import os
import sqlite3
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from flask import Flask
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError

from .models import ExactSum

# Set by services.tx.write_transaction() just before the session begins: the SQLite transaction
# then starts with BEGIN IMMEDIATE, taking the write lock up front so that a read-then-write
# transaction never fails half-way with "database is locked" (it waits busy_timeout instead).
immediate_begin: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "immediate_begin", default=False
)


def engine_options(uri: str, busy_timeout_ms: int) -> dict[str, Any]:
    if uri.startswith("sqlite"):
        return {"connect_args": {"timeout": busy_timeout_ms / 1000, "check_same_thread": False}}
    return {"pool_pre_ping": True, "pool_size": 10, "max_overflow": 20, "pool_recycle": 1800}


class SQLiteWriteGate:
    """Queues this machine's writers to one SQLite file before BEGIN IMMEDIATE.

    SQLite's own busy handler waits by sleeping in steps of up to 100 ms, so under contention a
    writer often sleeps long after the lock is free (that is the p99). Here writers block on a
    lock that wakes the next one the moment it is released: a thread lock within a process and
    an flock on ``<database>-writers.lock`` across processes (gunicorn workers, CLI). A crashed
    holder's flock is released by the kernel. BEGIN IMMEDIATE and the busy timeout still guard
    against writers that do not use the gate (another program, the sqlite3 shell)."""

    def __init__(self, database: str, timeout_s: float) -> None:
        self.path = database + "-writers.lock"
        self.timeout_s = timeout_s
        self._threads = threading.Lock()
        self._fd: int | None = None
        self._pid = 0

    def _descriptor(self) -> int:
        if self._fd is None or self._pid != os.getpid():  # opened anew in each forked process
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            self._pid = os.getpid()
        return self._fd

    @contextmanager
    def hold(self) -> Iterator[None]:
        if not self._threads.acquire(timeout=self.timeout_s):
            from .errors import ServiceUnavailable

            raise ServiceUnavailable(
                "The database is busy (too many writers queued); retry shortly.", retry_after=1
            )
        try:
            fd = self._descriptor()
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            self._threads.release()


_gates: weakref.WeakKeyDictionary[Engine, SQLiteWriteGate] = weakref.WeakKeyDictionary()


@contextmanager
def write_gate(engine: Engine) -> Iterator[None]:
    """Hold the engine's writers queue (SQLite file databases); nothing elsewhere."""
    gate = _gates.get(engine)
    if gate is None:
        yield
        return
    with gate.hold():
        yield


SQLITE_SYNCHRONOUS_LEVELS = ("OFF", "NORMAL", "FULL", "EXTRA")


def sqlite_synchronous(value: object) -> str:
    """The ``SQLITE_SYNCHRONOUS`` setting, checked: a typo must not silently weaken durability."""
    level = str(value).upper()
    if level not in SQLITE_SYNCHRONOUS_LEVELS:
        raise RuntimeError(
            f"SQLITE_SYNCHRONOUS is {value!r}: use one of {', '.join(SQLITE_SYNCHRONOUS_LEVELS)}."
        )
    return level


def configure_engine(engine: Engine, busy_timeout_ms: int, synchronous: str = "FULL") -> None:
    if engine.dialect.name != "sqlite":
        return
    synchronous = sqlite_synchronous(synchronous)
    database = engine.url.database
    if database and database != ":memory:" and not database.startswith("file:"):
        _gates[engine] = SQLiteWriteGate(os.path.abspath(database), busy_timeout_ms / 1000)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: sqlite3.Connection, _record: Any) -> None:
        # Let SQLAlchemy (below) emit BEGIN itself instead of pysqlite's implicit one.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        cursor.execute("PRAGMA foreign_keys=ON")
        # FULL: a commit is on disk before it is acknowledged (power cut included); NORMAL in
        # WAL mode: it survives the process being killed, not the machine losing power.
        cursor.execute(f"PRAGMA synchronous={synchronous}")
        cursor.close()
        # Exact sums past 64 bits (models.exact_sum): SQLite's own sum() overflows.
        dbapi_connection.create_window_function("exact_sum", 1, ExactSum)

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate_begin.get() else "BEGIN")


def remove_sessions_safely(app: Flask, db: Any) -> None:
    """End each request's session without letting a dead connection turn the request into a 500.

    When the database goes away after a request has done its work (PostgreSQL stopped, a proxy
    cut), the ROLLBACK that closing the session sends fails; raised from the app context's
    teardown, that error would escape every error handler. The connection is invalidated instead
    (the pool opens a new one next time). Registered after Flask-SQLAlchemy, so it runs first."""

    @app.teardown_appcontext
    def _remove_session(_exc: BaseException | None) -> None:
        session = db.session()
        try:
            db.session.remove()
        except DBAPIError:
            try:
                session.invalidate()
            except DBAPIError:
                pass
            db.session.registry.clear()
