"""Benchmark floors, registered only when BENCH_MODE is on (``WEBAPP_BENCH_MODE=true``).

- ``GET /bench/noop``: API-key auth and a small JSON answer, nothing else (the HTTP floor).
- ``POST /bench/raw``: the writes of one RecordUsage covered by one grant (insert event, move
  counter, deduct wallet, insert ledger entry, deduct the grant, insert its allocation, add to
  the daily rollup and the monthly credit rollup) in one transaction straight through the DB
  driver: no ORM, no parsing, no rules, no idempotency, no audit row. The writes stay
  consistent with each other (balance_after and used_after are the values just written; the
  grant loses what the wallet loses and the allocation says so), so ``flask ledger verify``
  still holds afterwards.

Both authenticate with an API key exactly like /api/v1, so that the floors pay what the API pays.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, Flask, Response, current_app, g, request

from .extensions import db
from .models import CREDIT_SHARDS, DAILY_SHARDS

bp = Blueprint("bench", __name__, url_prefix="/bench")

RAW_CUSTOMER = "bench-raw"
RAW_FEATURE = "bench_calls"
RAW_CREDITS = "bench_credits"
RAW_COST_MICROS = 1000  # 0.001 credit per event
_targets: dict[str, Any] = {}


def register(app: Flask) -> None:
    from .extensions import csrf, limiter

    csrf.exempt(bp)
    limiter.exempt(bp)
    app.register_blueprint(bp)


@bp.before_request
def authenticate() -> None:
    from .jsondoor import key_actor

    g.api_actor = key_actor("Send an API key as `Authorization: Bearer <key>`.")


def _json(payload: Any, status: int = 200) -> Response:
    return Response(json.dumps(payload) + "\n", status=status, mimetype="application/json")


@bp.get("/noop")
def noop() -> Response:
    return _json({"ok": True})


def _sqlite() -> bool:
    return db.engine.dialect.name == "sqlite"


def _sql(statement: str) -> str:
    # psycopg's paramstyle needs a literal % doubled; sqlite3's does not.
    return statement.replace("%s", "?").replace("%%", "%") if _sqlite() else statement


def _db_time(value: datetime) -> Any:
    naive = value.astimezone(UTC).replace(tzinfo=None)
    return naive.isoformat(sep=" ", timespec="microseconds") if _sqlite() else naive


def _load_targets(cur: Any) -> dict[str, Any]:
    """The bench customer's ids, looked up once per process (not part of the measured work):
    the grant is the wallet's first with credits left (the seed's one large topup, no expiry)."""
    if not _targets:
        cur.execute(
            _sql(
                "SELECT c.id, f.id, w.id, u.period_start, s.id FROM customers c "
                "JOIN features f ON f.key = %s "
                "JOIN credit_systems s ON s.key = %s "
                "JOIN wallets w ON w.customer_id = c.id AND w.credit_system_id = s.id "
                "JOIN usage_counters u ON u.customer_id = c.id AND u.feature_id = f.id "
                "WHERE c.key = %s ORDER BY u.period_start DESC LIMIT 1"
            ),
            (RAW_FEATURE, RAW_CREDITS, RAW_CUSTOMER),
        )
        row = cur.fetchone()
        if row is None:
            raise RuntimeError("bench data missing: run bench/run.py's setup first")
        cur.execute(
            _sql(
                "SELECT id, kind, coalesce(currency, ''), coalesce(unit_price, '') "
                "FROM credit_grants WHERE wallet_id = %s AND remaining_micros > 0 "
                "AND expires_at IS NULL ORDER BY id LIMIT 1"
            ),
            (row[2],),
        )
        grant = cur.fetchone()
        if grant is None:
            raise RuntimeError("bench data missing: the bench wallet has no grant to spend")
        _targets.update(
            customer=row[0],
            feature=row[1],
            wallet=row[2],
            period=row[3],
            system=row[4],
            grant=grant[0],
            terms=tuple(grant[1:]),
        )
    return _targets


@bp.post("/raw")
def raw() -> Response:
    request.get_data()  # read the body like the API does
    actor = g.api_actor.label
    now = datetime.now(UTC)
    conn = db.engine.raw_connection()
    try:
        cur = conn.cursor()
        t = _load_targets(cur)
        if _sqlite():
            cur.execute("BEGIN IMMEDIATE")
        amount = 1_000_000
        cur.execute(
            _sql(
                "UPDATE usage_counters SET used_micros = used_micros + %s "
                "WHERE customer_id = %s AND feature_id = %s AND period_start = %s "
                "RETURNING used_micros"
            ),
            (amount, t["customer"], t["feature"], t["period"]),
        )
        (used,) = cur.fetchone()
        cur.execute(
            _sql(
                "UPDATE wallets SET balance_micros = balance_micros - %s, updated_at = %s, "
                "version = version + 1 WHERE id = %s RETURNING balance_micros"
            ),
            (RAW_COST_MICROS, _db_time(now), t["wallet"]),
        )
        (balance,) = cur.fetchone()
        event_id = uuid.uuid4().hex
        stamp = _db_time(now)
        fingerprint = hashlib.sha256(f"{t['feature']}:{amount}:".encode()).hexdigest()
        cur.execute(
            _sql(
                "INSERT INTO usage_events (customer_id, feature_id, event_id, amount_micros, "
                "timestamp, period_start, metadata, credits_micros, overage_micros, "
                "used_after_micros, allowance_micros, balance_after_micros, fingerprint, actor, "
                "recorded_at) VALUES (%s, %s, %s, %s, %s, %s, NULL, %s, 0, %s, NULL, %s, %s, %s, "
                "%s) RETURNING id"
            ),
            (
                t["customer"],
                t["feature"],
                event_id,
                amount,
                stamp,
                t["period"],
                RAW_COST_MICROS,
                used,
                balance,
                fingerprint,
                actor,
                stamp,
            ),
        )
        (event_pk,) = cur.fetchone()
        cur.execute(
            _sql(
                "INSERT INTO ledger_entries (wallet_id, customer_id, type, amount_micros, "
                "balance_after_micros, usage_event_id, reference, actor, created_at) "
                "VALUES (%s, %s, 'usage', %s, %s, %s, %s, %s, %s) RETURNING id"
            ),
            (
                t["wallet"],
                t["customer"],
                -RAW_COST_MICROS,
                balance,
                event_pk,
                f"{RAW_FEATURE}:{event_id}",
                actor,
                stamp,
            ),
        )
        (entry_pk,) = cur.fetchone()
        # As RecordUsage when one grant covers the event: one UPDATE of the grant, one INSERT
        # of the allocation.
        cur.execute(
            _sql("UPDATE credit_grants SET remaining_micros = remaining_micros - %s WHERE id = %s"),
            (RAW_COST_MICROS, t["grant"]),
        )
        cur.execute(
            _sql(
                "INSERT INTO credit_allocations (ledger_entry_id, grant_id, amount_micros) "
                "VALUES (%s, %s, %s)"
            ),
            (entry_pk, t["grant"], RAW_COST_MICROS),
        )
        cur.execute(
            _sql(
                # 1099511627776 = 2^40 = models.DAILY_BASE: the low part carries into the high.
                "INSERT INTO usage_daily (feature_id, day, shard, amount_micros, amount_high) "
                "VALUES (%s, %s, %s, %s, 0) ON CONFLICT (feature_id, day, shard) DO UPDATE SET "
                "amount_micros = (usage_daily.amount_micros + excluded.amount_micros) "
                "%% 1099511627776, amount_high = usage_daily.amount_high + "
                "(usage_daily.amount_micros + excluded.amount_micros) / 1099511627776"
            ),
            (t["feature"], now.date().isoformat(), t["customer"] % DAILY_SHARDS, amount),
        )
        cur.execute(
            _sql(
                # As RecordUsage: the wallet's daily burn (credits.burn.add), one upsert.
                "INSERT INTO wallet_burn_daily (wallet_id, day, consumed_micros, consumed_high) "
                "VALUES (%s, %s, %s, 0) ON CONFLICT (wallet_id, day) DO UPDATE SET "
                "consumed_micros = (wallet_burn_daily.consumed_micros + excluded.consumed_micros) "
                "%% 1099511627776, consumed_high = wallet_burn_daily.consumed_high + "
                "(wallet_burn_daily.consumed_micros + excluded.consumed_micros) / 1099511627776"
            ),
            (t["wallet"], now.astimezone(UTC).date().isoformat(), RAW_COST_MICROS),
        )
        cur.execute(
            _sql(
                # The monthly credit rollup (services/credits/rollup.py), the same carry.
                "INSERT INTO credit_monthly (credit_system_id, month, category, kind, currency, "
                "unit_price, shard, amount_micros, amount_high) "
                "VALUES (%s, %s, 'consumed', %s, %s, %s, %s, %s, 0) ON CONFLICT "
                "(credit_system_id, month, category, kind, currency, unit_price, shard) "
                "DO UPDATE SET amount_micros = (credit_monthly.amount_micros + "
                "excluded.amount_micros) %% 1099511627776, amount_high = "
                "credit_monthly.amount_high + (credit_monthly.amount_micros + "
                "excluded.amount_micros) / 1099511627776"
            ),
            (
                t["system"],
                now.date().replace(day=1).isoformat(),
                *t["terms"],
                t["customer"] % CREDIT_SHARDS,
                RAW_COST_MICROS,
            ),
        )
        cur.close()
        conn.commit()
    except BaseException:
        conn.rollback()
        raise
    finally:
        conn.close()
    return _json({"event_id": event_id, "balance_micros": balance, "used_micros": used}, 201)


def enabled(app: Flask | None = None) -> bool:
    return bool((app or current_app).config.get("BENCH_MODE"))
