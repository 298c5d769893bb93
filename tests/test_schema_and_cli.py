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


def _fresh_database(backend: str, database_url: str, tmp_path: Path, name: str) -> str:
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / f'{name}.sqlite3'}"
    url = make_url(database_url).set(database=make_url(database_url).database + f"_{name}")
    admin = psycopg.connect(
        host=url.host, port=url.port or 5432, user=url.username, dbname="postgres", autocommit=True
    )
    with admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{url.database}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{url.database}"')
    return url.render_as_string(hide_password=False)


def _flask(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": url, "FLASK_DEBUG": "1"}
    flask = Path(sys.executable).parent / "flask"
    return subprocess.run(
        [str(flask), "--app", "webapp", *args], env=env, capture_output=True, text=True, timeout=120
    )


# The wallet of one customer as the code before credit grants wrote it: a purchased topup, a
# positive adjustment, a charged event timestamped a day before any of them (the old wallet had
# no rule about that), a negative adjustment and a granted topup.
_LEGACY = [
    "INSERT INTO customers (id, key, name, status, metadata, created_at) "
    "VALUES (1, 'cust-old', 'Old', 'active', '{}', '2026-10-01 00:00:00')",
    "INSERT INTO credit_systems (id, key, name, unit_singular, unit_plural, created_at) "
    "VALUES (1, 'credits', 'Credits', 'credit', 'credits', '2026-10-01 00:00:00')",
    "INSERT INTO features (id, key, name, type, event_name, created_at) "
    "VALUES (1, 'api_calls', 'API calls', 'consumable', 'api.call', '2026-10-01 00:00:00')",
    "INSERT INTO credit_costs (feature_id, credit_system_id, cost_micros, updated_at) "
    "VALUES (1, 1, 1000000, '2026-10-01 00:00:00')",
    "INSERT INTO entitlements (id, customer_id, feature_id, allowance_micros, reset_period, "
    "overage, updated_at) VALUES (1, 1, 1, NULL, 'never', 'block', '2026-10-01 00:00:00')",
    "INSERT INTO wallets (id, customer_id, credit_system_id, balance_micros, created_at, "
    "updated_at) VALUES (1, 1, 1, 10000000, '2026-10-02 00:00:00', '2026-10-06 00:00:00')",
    "INSERT INTO usage_events (id, customer_id, feature_id, event_id, amount_micros, timestamp, "
    "period_start, credits_micros, overage_micros, used_after_micros, balance_after_micros, "
    "fingerprint, actor, recorded_at) VALUES (1, 1, 1, 'e1', 3000000, '2026-10-01 12:00:00', "
    "'1970-01-01 00:00:00', 3000000, 0, 3000000, 12000000, 'x', 'system:cli', "
    "'2026-10-04 00:00:00')",
    "INSERT INTO usage_counters (customer_id, feature_id, period_start, used_micros) "
    "VALUES (1, 1, '1970-01-01 00:00:00', 3000000)",
    "INSERT INTO usage_daily (feature_id, day, shard, amount_micros, amount_high) "
    "VALUES (1, '2026-10-01', 1, 3000000, 0)",
]
_LEGACY_LEDGER = [
    # id, type, kind, amount, balance after, event, created
    (1, "topup", "purchased", 10, 10, None, "2026-10-02"),
    (2, "adjustment", None, 5, 15, None, "2026-10-03"),
    (3, "usage", None, -3, 12, 1, "2026-10-04"),
    (4, "adjustment", None, -4, 8, None, "2026-10-05"),
    (5, "topup", "granted", 2, 10, None, "2026-10-06"),
]


def test_the_migration_turns_legacy_wallets_into_grants(backend, database_url, tmp_path):
    url = _fresh_database(backend, database_url, tmp_path, "legacy")
    old = _flask(url, "db", "upgrade", "e5b3a9d1c7f2")
    assert old.returncode == 0, old.stderr
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            for statement in _LEGACY:
                conn.execute(text(statement))
            for eid, type_, kind, amount, after, event, day in _LEGACY_LEDGER:
                conn.execute(
                    text(
                        "INSERT INTO ledger_entries (id, wallet_id, customer_id, type, kind, "
                        "amount_micros, balance_after_micros, usage_event_id, note, actor, "
                        "created_at) VALUES (:id, 1, 1, :type, :kind, :amount, :after, :event, "
                        ":note, 'user:finance@example.com', :created)"
                    ),
                    {
                        "id": eid,
                        "type": type_,
                        "kind": kind,
                        "amount": amount * 1_000_000,
                        "after": after * 1_000_000,
                        "event": event,
                        "note": "legacy" if type_ == "adjustment" else None,
                        "created": f"{day} 00:00:00",
                    },
                )
        new = _flask(url, "db", "upgrade")
        assert new.returncode == 0, new.stderr
        verified = _flask(url, "ledger", "verify")
        assert verified.returncode == 0, verified.stdout
        with engine.connect() as conn:
            grants = conn.execute(
                text(
                    "SELECT kind, amount_micros, remaining_micros, priority, expires_at "
                    "FROM credit_grants ORDER BY id"
                )
            ).all()
            allocations = conn.execute(
                text(
                    "SELECT ledger_entry_id, grant_id, amount_micros FROM credit_allocations "
                    "ORDER BY id"
                )
            ).all()
    finally:
        engine.dispose()
    m = 1_000_000
    # Granted credits (priority 100) are spent before purchased ones (200).
    assert [tuple(g) for g in grants] == [
        ("purchased", 10 * m, 8 * m, 200, None),
        ("granted", 5 * m, 0, 100, None),
        ("granted", 2 * m, 2 * m, 100, None),
    ]
    assert [tuple(a) for a in allocations] == [(3, 2, 3 * m), (4, 2, 2 * m), (4, 1, 2 * m)]


def test_outbox_rows_written_before_the_event_log_order_pass_verify_after_upgrade(
    backend, database_url, tmp_path
):
    """An outbox row that exists when the alerts revision adds `tx_order` is committed and older
    than every transaction in flight: on PostgreSQL it gets the lowest order (1), not 0, which
    `ledger verify` would take for a row written past outbox.emit."""
    import sqlalchemy as sa

    url = _fresh_database(backend, database_url, tmp_path, "outbox_order")
    up = _flask(url, "db", "upgrade", "c8e2f4a6b0d1")  # the revision before alerts
    assert up.returncode == 0, up.stderr
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO outbox_events (type, created_at, data) "
                "VALUES ('customer.created', '2026-11-30 10:00:00', '{}')"
            )
        )
    engine.dispose()
    up = _flask(url, "db", "upgrade")
    assert up.returncode == 0, up.stderr
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        order = conn.execute(sa.text("SELECT tx_order FROM outbox_events")).scalar_one()
    engine.dispose()
    assert order == (1 if backend == "postgresql" else 0)
    verified = _flask(url, "ledger", "verify")
    assert verified.returncode == 0, verified.stdout
