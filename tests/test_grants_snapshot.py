"""RecordUsage that waited for a wallet's lock on PostgreSQL must judge the grants as the lock's
holder left them, not as its own statement's snapshot saw them (READ COMMITTED re-reads only the
locked wallet row, not the joined grant rows)."""

from __future__ import annotations

import threading

import psycopg
import pytest
from sqlalchemy import make_url, select

from tests.factories import add_customer
from tests.reliability import wait_until
from webapp.extensions import db
from webapp.models import CreditGrant, Customer, Wallet
from webapp.services import usage, wallets
from webapp.services.actors import SYSTEM

C = "cust-waits"
M = 1_000_000


def _connect(database_url: str) -> psycopg.Connection:
    url = make_url(database_url)
    return psycopg.connect(
        host=url.host, port=url.port or 5432, user=url.username, dbname=url.database
    )


# PostgreSQL only: SQLite takes its write lock (BEGIN IMMEDIATE) before it reads anything.
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_waiting_writer_sees_the_grants_its_lock_holder_left(catalog, database_url):
    add_customer(C, topup=None, api_allowance=None)
    first = wallets.topup_wallet(
        SYSTEM, customer_key=C, credit_system="credits", amount="1", priority=1
    )
    wallets.topup_wallet(SYSTEM, customer_key=C, credit_system="credits", amount="1")
    first_id = first.entry.grant_id
    wallet_id = db.session.scalar(
        select(Wallet.id).join(Customer, Customer.id == Wallet.customer_id).where(Customer.key == C)
    )
    db.session.remove()

    holder = _connect(database_url)
    # Another writer holds the wallet's lock and voids the first grant, as void_grant would.
    holder.execute("SELECT id FROM wallets WHERE id = %s FOR UPDATE", (wallet_id,))
    outcome: dict[str, object] = {}

    from flask import current_app

    app = current_app._get_current_object()  # type: ignore[attr-defined]

    def in_app() -> None:
        with app.app_context():
            try:
                outcome["result"] = usage.record_usage(
                    SYSTEM, customer_key=C, feature_key="api_calls", amount=1
                )
            except Exception as exc:  # reported below
                outcome["error"] = exc
            finally:
                db.session.remove()

    writer = threading.Thread(target=in_app)
    writer.start()
    watcher = _connect(database_url)
    watcher.autocommit = True
    wait_until(
        lambda: (
            watcher.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                "AND datname = current_database()"
            ).fetchone()[0]
            > 0
        ),
        "RecordUsage to wait for the wallet's lock",
    )
    holder.execute(
        "UPDATE credit_grants SET remaining_micros = 0, voided_micros = %s, voided_at = now() "
        "WHERE id = %s",
        (M, first_id),
    )
    holder.execute(
        "INSERT INTO ledger_entries (wallet_id, customer_id, type, amount_micros, "
        "balance_after_micros, grant_id, note, actor, created_at) SELECT id, customer_id, "
        "'void', %s, balance_micros - %s, %s, 'test', 'user:finance@example.com', now() "
        "FROM wallets WHERE id = %s",
        (-M, M, first_id, wallet_id),
    )
    holder.execute(
        "UPDATE wallets SET balance_micros = balance_micros - %s, version = version + 1 "
        "WHERE id = %s",
        (M, wallet_id),
    )
    holder.execute(  # and the monthly credit rollup (services/credits/rollup.py), as it would
        "INSERT INTO credit_monthly (credit_system_id, month, category, kind, currency, "
        "unit_price, shard, amount_micros, amount_high) SELECT w.credit_system_id, "
        "date_trunc('month', now()::timestamp)::date, 'voided', g.kind, "
        "coalesce(g.currency, ''), coalesce(g.unit_price, ''), w.customer_id %% 16, %s, 0 "
        "FROM wallets w JOIN credit_grants g ON g.id = %s WHERE w.id = %s "
        "ON CONFLICT (credit_system_id, month, category, kind, currency, unit_price, shard) "
        "DO UPDATE SET amount_micros = credit_monthly.amount_micros + excluded.amount_micros",
        (M, first_id, wallet_id),
    )
    holder.commit()
    writer.join(timeout=60)
    holder.close()
    watcher.close()
    assert "error" not in outcome, outcome
    left = dict(
        db.session.execute(
            select(CreditGrant.id, CreditGrant.remaining_micros).where(
                CreditGrant.wallet_id == wallet_id
            )
        ).all()
    )
    # The voided grant stays empty; the call was paid by the other one.
    assert left[first_id] == 0
    assert sorted(left.values()) == [0, M - 20_000]
