"""Bench of issue 16: a plan edit that affects 10,000 customers, with its progress.

For each database it builds a fresh schema with the Alembic migrations, a catalog of three
features, one plan and N customers on it (customers and their effective entitlements written in
bulk, as `plans.change_customer_plan` would leave them: source `plan`, at the plan's revision),
some with usage; then times `plans.update_plan` (an allowance up, an overage changed), which
rewrites every customer's entitlements in batches (one transaction each, an audit entry per
customer) while printing its progress, and runs `ledger verify` on the result.

    PYTHONPATH=$PWD .venv/bin/python bench/plans_edit.py [--db sqlite|postgresql|both]
        [--customers 10000] [--batch 200]
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from run import RESULTS, drop_database, fresh_database  # noqa: E402

M = 1_000_000


def build(url: str, customers: int) -> None:
    from sqlalchemy import insert, select

    from webapp.extensions import db
    from webapp.models import Customer, Entitlement, Feature, Plan
    from webapp.services import catalog, plans, usage
    from webapp.services.actors import SYSTEM

    catalog.create_credit_system(SYSTEM, key="credits", name="Credits")
    catalog.create_feature(SYSTEM, key="api_calls", name="API calls", type="consumable")
    catalog.create_feature(SYSTEM, key="seats", name="Seats", type="persistent")
    catalog.create_feature(SYSTEM, key="sso", name="SSO", type="boolean")
    plans.create_plan(
        SYSTEM,
        key="team",
        name="Team",
        entitlements=[
            {
                "feature_key": "api_calls",
                "allowance": "1000",
                "reset_period": "month",
                "overage": "block",
            },
            {
                "feature_key": "seats",
                "allowance": "10",
                "reset_period": "never",
                "overage": "block",
            },
            {"feature_key": "sso", "allowance": None, "reset_period": "never", "overage": "block"},
        ],
    )
    plan = db.session.scalar(select(Plan).where(Plan.key == "team"))
    assert plan is not None
    features = {f.key: f.id for f in db.session.scalars(select(Feature))}
    now = datetime.now(UTC)
    db.session.execute(
        insert(Customer),
        [
            {
                "key": f"cust-{n:06d}",
                "name": f"Customer {n}",
                "status": "active",
                "extra": {},
                "created_at": now,
                "plan_id": plan.id,
                "plan_assigned_at": now,
                "plan_revision": plan.revision,
            }
            for n in range(customers)
        ],
    )
    ids = list(db.session.scalars(select(Customer.id).order_by(Customer.id)))
    rows = []
    for cid in ids:
        rows += [
            {
                "customer_id": cid,
                "feature_id": features["api_calls"],
                "allowance_micros": 1000 * M,
                "reset_period": "month",
                "overage": "block",
                "source": "plan",
                "updated_at": now,
            },
            {
                "customer_id": cid,
                "feature_id": features["seats"],
                "allowance_micros": 10 * M,
                "reset_period": "never",
                "overage": "block",
                "source": "plan",
                "updated_at": now,
            },
            {
                "customer_id": cid,
                "feature_id": features["sso"],
                "allowance_micros": None,
                "reset_period": "never",
                "overage": "block",
                "source": "plan",
                "updated_at": now,
            },
        ]
    db.session.execute(insert(Entitlement), rows)
    db.session.commit()
    # Every tenth customer uses 3 seats (recorded as usage, 1,000 events per batch).
    keys = [f"cust-{n:06d}" for n in range(0, customers, 10)]
    for i in range(0, len(keys), 1000):
        usage.record_usage_batch(
            SYSTEM,
            [{"customer_key": k, "feature_key": "seats", "amount": 3} for k in keys[i : i + 1000]],
        )
    db.session.commit()


def run(kind: str, customers: int, batch: int) -> dict[str, object]:
    from tests.conftest import TEST_CONFIG, migrate_to_head
    from webapp import create_app
    from webapp.extensions import db
    from webapp.services import plans
    from webapp.services.actors import SYSTEM
    from webapp.services.verify import verify_ledger

    RESULTS.mkdir(exist_ok=True)
    url = fresh_database(kind, "plans")
    migrate_to_head(url)
    app = create_app({**TEST_CONFIG, "SQLALCHEMY_DATABASE_URI": url})
    try:
        with app.app_context():
            started = time.perf_counter()
            build(url, customers)
            built = time.perf_counter() - started
            seen: list[tuple[float, int]] = []

            def progress(done: int, total: int) -> None:
                seen.append((time.perf_counter() - started, done))
                if done == total or done % (batch * 10) == 0:
                    print(f"  {kind}: {done:>6} / {total} customers", file=sys.stderr, flush=True)

            started = time.perf_counter()
            result = plans.update_plan(
                SYSTEM,
                "team",
                entitlements=[
                    {
                        "feature_key": "api_calls",
                        "allowance": "5000",
                        "reset_period": "month",
                        "overage": "allow",
                    },
                    {
                        "feature_key": "seats",
                        "allowance": "20",
                        "reset_period": "never",
                        "overage": "block",
                    },
                    {
                        "feature_key": "sso",
                        "allowance": None,
                        "reset_period": "never",
                        "overage": "block",
                    },
                ],
                batch=batch,
                progress=progress,
            )
            edit = time.perf_counter() - started
            started = time.perf_counter()
            report = verify_ledger()
            verify = time.perf_counter() - started
            db.session.remove()
            db.engine.dispose()
    finally:
        drop_database(kind, url)
    assert result.updated == customers, result.updated
    assert report.ok, report.violations
    return {
        "db": kind,
        "customers": customers,
        "batch": batch,
        "setup_s": built,
        "edit_s": edit,
        "per_customer_ms": edit * 1000 / customers,
        "progress_calls": len(seen),
        "verify_s": verify,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument("--customers", type=int, default=10_000)
    parser.add_argument("--batch", type=int, default=200)
    args = parser.parse_args()
    kinds = ["sqlite", "postgresql"] if args.db == "both" else [args.db]
    rows = [run(kind, args.customers, args.batch) for kind in kinds]
    print(
        "| database | customers | batch | plan edit | per customer | progress updates | "
        "ledger verify after |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['db']} | {r['customers']:,} | {r['batch']} | {r['edit_s']:.1f} s | "
            f"{r['per_customer_ms']:.2f} ms | {r['progress_calls']} | clean, "
            f"{r['verify_s']:.1f} s |"
        )


if __name__ == "__main__":
    main()
