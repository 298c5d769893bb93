"""The migrations build the same schema as the models; the CLI commands do what they say."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect, make_url, select, text, update

from webapp.extensions import db
from webapp.models import (
    ApiKey,
    CreditAllocation,
    CreditGrant,
    LedgerEntry,
    UsageCounter,
    User,
    Wallet,
)
from webapp.services.verify import verify_ledger


def test_migrations_and_models_agree(app):
    # The `app` database was built by `flask db upgrade` (the Alembic migrations).
    with db.engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        diff = compare_metadata(context, db.metadata)
    assert diff == []


def test_flask_db_upgrade_builds_the_schema_from_empty(backend, database_url, tmp_path):
    """The real command, in its own process, on an empty database of each backend."""
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'fresh.sqlite3'}"
    else:
        url = make_url(database_url).set(database=make_url(database_url).database + "_fresh")
        admin = psycopg.connect(
            host=url.host,
            port=url.port or 5432,
            user=url.username,
            dbname="postgres",
            autocommit=True,
        )
        with admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{url.database}" WITH (FORCE)')
            admin.execute(f'CREATE DATABASE "{url.database}"')
        url = url.render_as_string(hide_password=False)
    env = {**os.environ, "DATABASE_URL": url, "FLASK_DEBUG": "1"}
    flask = Path(sys.executable).parent / "flask"
    result = subprocess.run(
        [str(flask), "--app", "webapp", "db", "upgrade"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    engine = create_engine(url)
    try:
        tables = set(inspect(engine).get_table_names())
    finally:
        engine.dispose()
    assert {
        "usage_events",
        "ledger_entries",
        "wallets",
        "usage_counters",
        "audit_log",
        "alembic_version",
    } <= tables


def test_demo_seed_keeps_every_invariant(runner):
    result = runner.invoke(args=["demo", "seed", "--customers", "30", "--events", "3000"])
    assert result.exit_code == 0, result.output
    assert "Seeded 30 customers" in result.output
    verify = runner.invoke(args=["ledger", "verify"])
    assert verify.exit_code == 0, verify.output
    assert "every invariant holds" in verify.output
    # --if-empty seeds once
    again = runner.invoke(args=["demo", "seed", "--if-empty"])
    assert "skipped" in again.output


@pytest.mark.breaks_ledger
def test_ledger_verify_names_each_violation(runner):
    assert (
        runner.invoke(args=["demo", "seed", "--customers", "5", "--events", "300"]).exit_code == 0
    )
    wallet_id = db.session.scalar(select(Wallet.id).order_by(Wallet.id))
    db.session.execute(
        update(Wallet)
        .where(Wallet.id == wallet_id)
        .values(balance_micros=Wallet.balance_micros + 1)
    )
    counter = db.session.scalars(select(UsageCounter)).first()
    db.session.execute(
        update(UsageCounter)
        .where(
            UsageCounter.customer_id == counter.customer_id,
            UsageCounter.feature_id == counter.feature_id,
            UsageCounter.period_start == counter.period_start,
        )
        .values(used_micros=UsageCounter.used_micros + 5)
    )
    usage_entry = db.session.scalar(select(LedgerEntry.id).where(LedgerEntry.type == "usage"))
    db.session.execute(
        text("DELETE FROM credit_allocations WHERE ledger_entry_id = :id"), {"id": usage_entry}
    )
    db.session.execute(text("DELETE FROM ledger_entries WHERE id = :id"), {"id": usage_entry})
    # A grant that says it holds one micro more than what left it allows, and a grant that
    # paid for usage before it was effective.
    spent = db.session.scalars(
        select(CreditAllocation.grant_id)
        .join(CreditGrant, CreditGrant.id == CreditAllocation.grant_id)
        .where(CreditGrant.wallet_id != wallet_id)
        .order_by(CreditAllocation.id)
    ).all()
    first, last = spent[0], spent[-1]
    db.session.execute(
        update(CreditGrant)
        .where(CreditGrant.id == first)
        .values(remaining_micros=CreditGrant.remaining_micros + 1)
    )
    db.session.execute(
        update(CreditGrant)
        .where(CreditGrant.id == last)
        .values(effective_at=datetime(2999, 1, 1, tzinfo=UTC), expires_at=None)
    )
    db.session.commit()
    result = runner.invoke(args=["ledger", "verify"])
    assert result.exit_code == 1
    assert f"wallet {wallet_id} of" in result.output
    assert "but events sum to" in result.output
    assert "usage ledger entries" in result.output
    assert f"grant {first}: remaining" in result.output
    assert "but its grants hold" in result.output
    assert f"draws on grant {last}, which was not eligible then" in result.output
    report = verify_ledger()
    assert not report.ok and len(report.violations) >= 6


def test_user_create(runner, monkeypatch):
    monkeypatch.setenv("WEBAPP_PASSWORD", "correct horse battery")
    result = runner.invoke(args=["user", "create", "Ann@Example.com", "--role", "finance"])
    assert result.exit_code == 0, result.output
    user = db.session.scalar(select(User))
    assert (user.email, user.role) == ("ann@example.com", "finance")
    assert "correct horse" not in user.password_hash
    dup = runner.invoke(args=["user", "create", "ann@example.com", "--role", "admin"])
    assert dup.exit_code == 1 and "already exists" in dup.output
    short = runner.invoke(
        args=["user", "create", "b@example.com", "--role", "admin"],
        env={"WEBAPP_PASSWORD": "short"},
    )
    assert short.exit_code == 1
    bad_role = runner.invoke(args=["user", "create", "c@example.com", "--role", "king"])
    assert bad_role.exit_code == 2


def test_api_key_create_prints_the_key_alone_on_the_last_line(runner):
    result = runner.invoke(args=["api-key", "create", "billing server"])
    assert result.exit_code == 0, result.output
    secret = result.output.strip().splitlines()[-1]
    assert secret.startswith("mk_") and " " not in secret
    key = db.session.scalar(select(ApiKey))
    assert key.role == "admin" and key.prefix == secret[:11]
    assert secret not in (key.key_hash, key.prefix)  # stored only as a hash
    from webapp.services.auth import authenticate_api_key

    assert authenticate_api_key(secret).id == key.id
    revoke = runner.invoke(args=["api-key", "revoke", str(key.id)])
    assert revoke.exit_code == 0


def test_api_key_create_with_an_expiry(runner):
    result = runner.invoke(args=["api-key", "create", "ci", "--expires-days", "30"])
    assert result.exit_code == 0, result.output
    key = db.session.scalar(select(ApiKey))
    assert f"expires {key.expires_at:%Y-%m-%d}" in result.output
    bad = runner.invoke(args=["api-key", "create", "ci", "--expires-days", "0"])
    assert bad.exit_code != 0 and "1 to 3650" in bad.output


def test_every_command_has_help(runner):
    for args in (
        ["db", "upgrade"],
        ["demo", "seed"],
        ["user", "create"],
        ["api-key", "create"],
        ["ledger", "verify"],
        ["demo", "users"],
    ):
        result = runner.invoke(args=[*args, "--help"])
        assert result.exit_code == 0 and "Usage:" in result.output, args
