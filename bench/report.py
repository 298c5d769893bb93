"""The finance roll-forward's read time at two data sizes (issue 14): it reads the monthly rollup
(credit_monthly), never the events, so its time and its query count stay flat as events grow.

    .venv/bin/python bench/report.py                       # 10,000 and 1,000,000 events
    .venv/bin/python bench/report.py --db sqlite --events 10000,100000

For each database and size: a fresh schema (the migrations), the demo seed (bulk inserts of
customers, grants, events, ledger entries, allocations and both rollups, 60 days of history; what
`flask demo seed` does), then the median server time of ``reports.credit_report`` (the service:
the last 12 months, and 120 months) and of the dashboard page ``/reports/credits`` (in-process
test client), with the number of SQL statements of each. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from run import RESULTS, ROOT, app_env, drop_database, fresh_database  # noqa: E402

CODE = r"""
import json, statistics, sys, time
from flask_migrate import upgrade
from sqlalchemy import event, func, select
from webapp import create_app
from webapp.extensions import db
from webapp.models import CreditMonthly, UsageEvent, utcnow
from webapp.services import auth, demo, reports
from webapp.services.actors import SYSTEM

app = create_app({"WTF_CSRF_ENABLED": False, "RATELIMIT_ENABLED": False})
customers, events, repeats = (int(arg) for arg in sys.argv[1:4])
out = {}
with app.app_context():
    upgrade()
    t0 = time.perf_counter()
    demo.seed(customers, events, rng_seed=42)
    out["seed_s"] = time.perf_counter() - t0
    out["events"] = db.session.scalar(select(func.count()).select_from(UsageEvent))
    out["rollup_rows"] = db.session.scalar(select(func.count()).select_from(CreditMonthly))
    auth.create_user(SYSTEM, email="bench@example.com", role="finance",
                     password="correct horse battery")
    db.session.remove()
    statements = []
    skip = ("BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE")
    event.listen(
        db.engine,
        "before_cursor_execute",
        lambda *a, **k: None if a[2].lstrip().upper().startswith(skip) else statements.append(a[2]),
    )
    now = utcnow()
    to = f"{now:%Y-%m}"
    ten_years = f"{now.year - 10}-{now.month + 1:02d}" if now.month < 12 else f"{now.year - 9}-01"

    def timed(call):
        call()  # warm
        times = []
        for _ in range(repeats):
            db.session.remove()
            statements.clear()
            t0 = time.perf_counter()
            call()
            times.append(time.perf_counter() - t0)
        return {"median_ms": statistics.median(times) * 1000, "queries": len(statements)}

    out["service_12"] = timed(lambda: reports.credit_report(SYSTEM))
    out["service_120"] = timed(
        lambda: reports.credit_report(SYSTEM, month_from=ten_years, month_to=to)
    )
client = app.test_client()
r = client.post("/login", data={"email": "bench@example.com", "password": "correct horse battery"})
assert r.status_code == 303, r.status_code

def page():
    assert client.get("/reports/credits").status_code == 200

with app.app_context():
    out["page_12"] = timed(page)
print(json.dumps(out))
"""


def measure(kind: str, customers: int, events: int, repeats: int) -> dict[str, Any]:
    url = fresh_database(kind, f"report{events}")
    try:
        done = subprocess.run(
            [sys.executable, "-c", CODE, str(customers), str(events), str(repeats)],
            env=app_env(url),
            cwd=ROOT,
            capture_output=True,
            text=True,
        )
        if done.returncode:
            sys.exit(done.stderr[-3000:])
        result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
        return result
    finally:
        drop_database(kind, url)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", default="sqlite,postgresql")
    parser.add_argument("--events", default="10000,1000000")
    parser.add_argument("--customers", type=int, default=10000)
    parser.add_argument("--repeats", type=int, default=25)
    args = parser.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)  # where the SQLite files go
    rows = [
        "| db | events | seed | credit_monthly rows | report, 12 months | report, 120 months "
        "| page /reports/credits |",
        "|---|---|---|---|---|---|---|",
    ]
    for kind in args.db.split(","):
        for events in (int(n) for n in args.events.split(",")):
            r = measure(kind, args.customers, events, args.repeats)
            cells = [
                f"{r[k]['median_ms']:.1f} ms ({r[k]['queries']} queries)"
                for k in ("service_12", "service_120", "page_12")
            ]
            rows.append(
                f"| {kind} | {r['events']:,} | {r['seed_s']:.0f} s | {r['rollup_rows']:,} | "
                + " | ".join(cells)
                + " |"
            )
            print(rows[-1], file=sys.stderr, flush=True)
    print("\n".join(rows))


if __name__ == "__main__":
    main()
