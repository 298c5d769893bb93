"""Engine set-up: SQLite done right (WAL, busy timeout, BEGIN IMMEDIATE for writes) and
PostgreSQL pool settings. Called from create_app(); nothing happens at import time."""

from __future__ import annotations

import contextvars
import sqlite3
from typing import Any

from flask import Flask
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError

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


def configure_engine(engine: Engine, busy_timeout_ms: int) -> None:
    if engine.dialect.name != "sqlite":
        return

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: sqlite3.Connection, _record: Any) -> None:
        # Let SQLAlchemy (below) emit BEGIN itself instead of pysqlite's implicit one.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

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
