"""The benchmark: gunicorn on loopback with the production configuration, driven by wrk.

    .venv/bin/python bench/run.py            # full run (a few minutes)
    .venv/bin/python bench/run.py --quick    # under a minute

For each database (SQLite file, PostgreSQL database ``bench_sqlalchemy`` on 127.0.0.1:5432) it
creates a fresh schema, a bench catalog and 100 customers (20 in a quick run) with large wallets,
starts gunicorn with
WEBAPP_BENCH_MODE=true (which adds the /bench floors) and runs, each with 16 connections:

  noop      GET /bench/noop: API-key auth and a JSON answer (HTTP floor)
  raw       POST /bench/raw: RecordUsage's writes through the raw driver (write floor)
  single    POST /api/v1/usage, one event per request, over 100 customers
  crossing  the same, each event for a new customer whose allowance it takes to 80 %: one
            usage.threshold_reached row in the outbox per request (checked afterwards)
  batch     POST /api/v1/usage/batch, 1,000 events per request, over 100 customers
  hot       POST /api/v1/usage, all 16 connections on one customer's wallet
  spread    the same over 100 customers (== single, measured again next to hot)

then `flask ledger verify`, the workers' RSS, and the dashboard at two data sizes (in-process,
server time only, with the number of SQL statements per page). Prints a markdown table and one
summary line with every ratio; writes bench/results/latest.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
RESULTS = BENCH / "results"
LUA = BENCH / "lua"
VENV_BIN = Path(sys.executable).parent
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
PG_DB = "bench_sqlalchemy"
CONNECTIONS = 16
CUSTOMERS = 100  # 20 in a quick run, whose set-up would take longer than its measurements
SECRET = "bench-" + "0" * 40


# ---------------------------------------------------------------- databases


def database_url(kind: str, name: str) -> str:
    if kind == "sqlite":
        return f"sqlite:///{RESULTS / (name + '.sqlite3')}"
    suffix = "" if name == "api" else "_" + name
    return f"postgresql+psycopg://postgres@127.0.0.1:5432/{PG_DB}{suffix}"


def fresh_database(kind: str, name: str) -> str:
    url = database_url(kind, name)
    if kind == "sqlite":
        for suffix in ("", "-wal", "-shm"):
            Path(str(RESULTS / (name + ".sqlite3")) + suffix).unlink(missing_ok=True)
    else:
        import psycopg

        dbname = url.rsplit("/", 1)[1]
        assert dbname.startswith(PG_DB)  # never anything else
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{dbname}"')
    return url  # empty: the process that fills it runs the migrations (one start-up less)


def drop_database(kind: str, url: str) -> None:
    if kind != "postgresql":
        return
    import psycopg

    dbname = url.rsplit("/", 1)[1]
    assert dbname.startswith(PG_DB)
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')


def app_env(url: str, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        DATABASE_URL=url,
        FLASK_APP="webapp",
        WEBAPP_SECRET_KEY=SECRET,
        **extra,
    )
    return env


def flask(url: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(VENV_BIN / "flask"), "--app", "webapp", *args],
        env=app_env(url),
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=check,
    )


SETUP_CODE = r"""
import sys
from flask_migrate import upgrade
from webapp import create_app
from webapp.services import auth, catalog, usage, wallets
from webapp.services.actors import SYSTEM



def seed_crossing(count):
    # Customers bench-x0 ... bench-x<count-1> for the crossing scenario, with bulk inserts
    # (what the services would write, minus their audit and customer.created rows): an
    # entitlement to bench_calls with an allowance of 1.25 a month, the month's usage counter
    # at 0 (a first event moves it, as for the other bench customers), a wallet with one
    # purchased grant of 1,000 credits, its topup entry and its line in the monthly credit
    # rollup. A first event of 1 reaches 80 % of 1.25, not 100 %: one usage.threshold_reached
    # row each.
    from datetime import timedelta
    from sqlalchemy import func, select, text
    from webapp.extensions import db
    from webapp.models import (CreditGrant, CreditSystem, Customer, Entitlement, Feature,
                               LedgerEntry, UsageCounter, Wallet, utcnow)
    from webapp.services.bulk import bulk_insert
    from webapp.services.credits import rollup
    from webapp.services.periods import period_start

    now = utcnow()
    at = now - timedelta(minutes=1)
    credits = 1000 * 1_000_000
    fid = db.session.scalar(select(Feature.id).where(Feature.key == "bench_calls"))
    sid = db.session.scalar(select(CreditSystem.id).where(CreditSystem.key == "bench_credits"))
    first = {m: (db.session.scalar(select(func.max(m.id))) or 0) + 1
             for m in (Customer, Wallet, CreditGrant, LedgerEntry)}
    conn = db.session.connection()
    chunk = 20_000
    for start in range(0, count, chunk):
        n = range(start, min(start + chunk, count))
        cid = [first[Customer] + i for i in n]
        wid = [first[Wallet] + i for i in n]
        gid = [first[CreditGrant] + i for i in n]
        eid = [first[LedgerEntry] + i for i in n]
        rows = {
            Customer: [{"id": cid[j], "key": f"bench-x{i}", "name": f"bench-x{i}",
                        "email": None, "status": "active", "metadata": {}, "created_at": at}
                       for j, i in enumerate(n)],
            Entitlement: [{"customer_id": c, "feature_id": fid,
                           "allowance_micros": 1_250_000, "reset_period": "month",
                           "overage": "block", "updated_at": at} for c in cid],
            Wallet: [{"id": w, "customer_id": c, "credit_system_id": sid,
                      "balance_micros": credits, "low_balance_threshold_micros": None,
                      "created_at": at, "updated_at": at, "version": 1}
                     for w, c in zip(wid, cid)],
            CreditGrant: [{"id": g, "wallet_id": w, "customer_id": c, "kind": "purchased",
                           "amount_micros": credits, "remaining_micros": credits,
                           "priority": 200, "effective_at": at, "expires_at": None,
                           "reference": None, "note": None, "unit_price": None,
                           "currency": None, "actor": SYSTEM.label, "created_at": at,
                           "expired_at": None, "expired_micros": 0, "voided_at": None,
                           "voided_micros": 0} for g, w, c in zip(gid, wid, cid)],
            LedgerEntry: [{"id": e, "wallet_id": w, "customer_id": c, "type": "topup",
                           "kind": "purchased", "amount_micros": credits,
                           "balance_after_micros": credits, "usage_event_id": None,
                           "grant_id": g, "reference": None, "note": None,
                           "idempotency_key": None, "fingerprint": None,
                           "actor": SYSTEM.label, "created_at": at}
                          for e, g, w, c in zip(eid, gid, wid, cid)],
            UsageCounter: [{"customer_id": c, "feature_id": fid,
                            "period_start": period_start(now, "month"), "used_micros": 0}
                           for c in cid],
        }
        for model, values in rows.items():
            bulk_insert(conn, model.__table__, values)
        rollup.add(conn, [rollup.Row(sid, at, "issued", "purchased", None, None, credits, c)
                          for c in cid])
    if conn.dialect.name == "postgresql":
        for table in ("customers", "wallets", "credit_grants", "ledger_entries"):
            conn.execute(text(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                              f"(SELECT max(id) FROM {table}))"))
    db.session.commit()
    # Fresh statistics, and on PostgreSQL the vacuum that autovacuum would otherwise start on
    # these bulk-loaded tables (insert-triggered) during the measurements.
    with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
        c.execute(text("VACUUM ANALYZE" if c.dialect.name == "postgresql" else "ANALYZE"))


app = create_app()
with app.app_context():
    upgrade()
    catalog.create_credit_system(SYSTEM, key="bench_credits", name="Bench credits")
    catalog.create_feature(SYSTEM, key="bench_calls", name="Bench calls", type="consumable",
                           event_name="bench.call")
    catalog.set_credit_cost(SYSTEM, "bench_calls", credit_system="bench_credits", cost="0.001")
    keys = ["bench-raw", "bench-hot"] + [f"bench-c{i:03d}" for i in range(int(sys.argv[1]))]
    for key in keys:
        catalog.create_customer(SYSTEM, key=key, name=key, email=None)
        catalog.set_entitlement(SYSTEM, key, "bench_calls", allowance=None, reset_period="month")
        wallets.topup_wallet(SYSTEM, customer_key=key, credit_system="bench_credits",
                             amount="1000000000")
        usage.record_usage(SYSTEM, customer_key=key, feature_key="bench_calls", amount=1)
    seed_crossing(int(sys.argv[2]))
    print(auth.create_api_key(SYSTEM, name="bench", role="admin").secret)
"""


def setup_data(url: str, customers: int, crossing: int) -> str:
    out = subprocess.run(
        [sys.executable, "-c", SETUP_CODE, str(customers), str(crossing)],
        env=app_env(url),
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip().splitlines()[-1]


def count_events(url: str) -> int:
    return scalar(url, "SELECT count(*) FROM usage_events")


def scalar(url: str, sql: str) -> int:
    if url.startswith("sqlite"):
        import sqlite3

        with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
            return conn.execute(sql).fetchone()[0]
    import psycopg

    with psycopg.connect(url.replace("+psycopg", "")) as conn:
        return conn.execute(sql).fetchone()[0]  # type: ignore[index]


def crossing_check(url: str, accepted: int) -> dict[str, Any]:
    """After the crossing runs: the events of the bench-x customers, the usage alerts in the
    outbox, and customers with more than one event (a reused customer crosses nothing)."""
    events = scalar(
        url,
        "SELECT count(*) FROM usage_events e JOIN customers c ON c.id = e.customer_id "
        "WHERE c.key LIKE 'bench-x%'",
    )
    outbox = scalar(
        url, "SELECT count(*) FROM outbox_events WHERE type = 'usage.threshold_reached'"
    )
    reused = scalar(
        url,
        "SELECT count(*) FROM (SELECT e.customer_id FROM usage_events e JOIN customers c "
        "ON c.id = e.customer_id WHERE c.key LIKE 'bench-x%' GROUP BY e.customer_id "
        "HAVING count(*) > 1) AS r",
    )
    # wrk counts the answers it read; requests in flight when it stops are still recorded.
    ok = outbox == events and reused == 0 and events >= accepted
    return {"events": events, "outbox": outbox, "reused": reused, "accepted": accepted, "ok": ok}


# ---------------------------------------------------------------- server and load


class Server:
    def __init__(self, url: str, port: int, workers: int, threads: int) -> None:
        self.url, self.port, self.workers, self.threads = url, port, workers, threads
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Server:
        args = [
            str(VENV_BIN / "gunicorn"),
            "--bind",
            f"127.0.0.1:{self.port}",
            "--workers",
            str(self.workers),
            "--backlog",
            "256",
            "--log-level",
            "warning",
        ]
        if self.threads > 1:
            args += ["--worker-class", "gthread", "--threads", str(self.threads)]
        args.append("webapp:create_app()")
        env = app_env(
            self.url,
            WEBAPP_BENCH_MODE="true",
            # Production settings, except the per-key rate limit (6000/min), which a load test
            # from one key would hit at once. The limiter itself still runs on every call.
            WEBAPP_API_RATE_LIMIT="100000000 per minute",
        )
        self.log = open(RESULTS / f"gunicorn-{self.port}.log", "w")  # noqa: SIM115
        self.proc = subprocess.Popen(
            args, env=env, cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT
        )
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.port}/api/v1/openapi.json")
                return self
            except OSError:
                time.sleep(0.1)
        self.__exit__()
        raise RuntimeError("gunicorn did not start; see " + self.log.name)

    def worker_pids(self) -> list[int]:
        assert self.proc is not None
        out = subprocess.run(
            ["ps", "-o", "pid=", "--ppid", str(self.proc.pid)], capture_output=True, text=True
        )
        return [int(p) for p in out.stdout.split()]

    def cpu_seconds(self) -> float:
        """CPU time used so far by the workers (utime + stime from /proc)."""
        ticks = 0
        for pid in self.worker_pids():
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:  # a worker that just exited
                continue
            ticks += int(fields[11]) + int(fields[12])
        return ticks / os.sysconf("SC_CLK_TCK")

    def wait_idle(self, timeout: float = 60.0, window: float = 0.2) -> None:
        """wrk stops mid-request and leaves requests queued (16 batches of 1,000 events take
        seconds): wait until the workers use no CPU and no event is written for ``window``
        seconds, so that the next run starts on an idle server."""
        deadline = time.monotonic() + timeout
        before = (self.cpu_seconds(), count_events(self.url))
        while time.monotonic() < deadline:
            time.sleep(window)
            now = (self.cpu_seconds(), count_events(self.url))
            if now[1] == before[1] and now[0] - before[0] < 0.05:
                return
            before = now

    def worker_rss_mb(self) -> float:
        rss = []
        for pid in self.worker_pids():
            status = Path(f"/proc/{pid}/status").read_text()
            rss.append(int(re.search(r"VmRSS:\s+(\d+)", status).group(1)) / 1024)
        return max(rss) if rss else 0.0

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # quick shutdown: the server is idle by now
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def wrk(
    server: Server,
    path: str,
    script: str,
    seconds: float,
    key: str,
    connections: int = CONNECTIONS,
    **env: str,
) -> dict[str, Any]:
    full_env = dict(os.environ)
    full_env.update(
        BENCH_API_KEY=key,
        BENCH_LUA_DIR=str(LUA),
        BENCH_RUN=secrets.token_hex(4),
        **env,
    )
    out = subprocess.run(
        [
            "wrk",
            "-t2",
            f"-c{connections}",
            f"-d{max(1, round(seconds))}s",
            "--timeout",
            "10s",
            "-s",
            str(LUA / script),
            f"http://127.0.0.1:{server.port}{path}",
        ],
        env=full_env,
        capture_output=True,
        text=True,
        check=True,
    )
    line = next(x for x in out.stdout.splitlines() if x.startswith("BENCH_JSON "))
    result = json.loads(line.removeprefix("BENCH_JSON "))
    server.wait_idle()
    result["seconds"] = result["duration_us"] / 1e6
    result["rps"] = result["requests"] / result["seconds"] if result["seconds"] else 0.0
    return result


def interleaved(rounds: int, seconds: float, **runs: Any) -> dict[str, dict[str, Any]]:
    """Each run ``rounds`` times for seconds/rounds, in turn; summed: requests / total time,
    the median of the rounds' p50 and the worst round's p99."""
    parts: dict[str, list[dict[str, Any]]] = {name: [] for name in runs}
    for _ in range(rounds):
        for name, run in runs.items():
            parts[name].append(run(seconds / rounds))
    out = {}
    for name, results in parts.items():
        total = {
            "requests": sum(r["requests"] for r in results),
            "seconds": sum(r["seconds"] for r in results),
            "non2xx": sum(r["non2xx"] for r in results),
            "socket_errors": sum(r["socket_errors"] for r in results),
            "p50_us": statistics.median(r["p50_us"] for r in results),
            "p90_us": statistics.median(r["p90_us"] for r in results),
            "p99_us": max(r["p99_us"] for r in results),
            "rounds": [round(r["rps"]) for r in results],
        }
        total["rps"] = total["requests"] / total["seconds"] if total["seconds"] else 0.0
        out[name] = total
    return out


# ---------------------------------------------------------------- scenarios


def run_api(kind: str, args: argparse.Namespace, port: int) -> dict[str, Any]:
    url = fresh_database(kind, "api")
    secs = args.seconds
    res: dict[str, Any] = {"db": kind}
    with ThreadPoolExecutor(1) as pool:
        # while gunicorn starts
        data = pool.submit(setup_data, url, args.customers, args.crossing)
        with Server(url, port, args.workers, args.threads) as server:
            key = data.result()

            def run(path: str, script: str, **env: Any) -> Callable[[float], dict[str, Any]]:
                env.setdefault("BENCH_CUSTOMERS", str(args.customers))
                return lambda s: wrk(server, path, script, s, key, **env)

            # Each crossing run (round) gets its own range of never-used bench-x customers,
            # split between wrk's two threads.
            crossing_runs = 0
            per_run = args.crossing // args.rounds

            def crossing(s: float) -> dict[str, Any]:
                nonlocal crossing_runs
                first = crossing_runs * per_run
                crossing_runs += 1
                return wrk(
                    server,
                    "/api/v1/usage",
                    "crossing.lua",
                    s,
                    key,
                    BENCH_CROSS_FIRST=str(first),
                    BENCH_CROSS_SPAN=str(per_run // 2),
                )

            if not args.quick:  # a smoke test needs no warm-up
                run("/bench/noop", "noop.lua")(1)  # warm-up: workers, pools, caches
            # The machine is shared and its load drifts: runs whose ratio is a target are
            # interleaved in short rounds (A B A B ...) and summed, so that drift hits both alike.
            res.update(
                interleaved(
                    args.rounds,
                    noop=run("/bench/noop", "noop.lua"),
                    raw=run("/bench/raw", "raw.lua"),
                    single=run("/api/v1/usage", "single.lua"),
                    crossing=crossing,
                    seconds=secs,
                )
            )
            c = res["crossing"]
            res["crossing_check"] = crossing_check(url, c["requests"] - c["non2xx"])
            print(f"# {kind}: crossing outbox check: {res['crossing_check']}", file=sys.stderr)
            before = count_events(url)
            # A quick run sends one batch per worker at a time (16 queued batches of 1,000 events
            # would keep the workers busy for seconds after the run), for two seconds: on a busy
            # machine one batch can take longer than one.
            batch = run(
                "/api/v1/usage/batch",
                "batch.lua",
                connections=args.workers if args.quick else CONNECTIONS,
            )
            res["batch"] = batch(max(secs, 2) if args.quick else secs)
            recorded = count_events(url) - before
            b = res["batch"]
            b["events"] = min(recorded, b["requests"] * 1000)
            b["events_per_s"] = b["events"] / b["seconds"] if b["seconds"] else 0.0
            b["all_recorded"] = recorded >= b["requests"] * 1000
            res["rss_mb"] = server.worker_rss_mb()
            res.update(
                interleaved(
                    args.rounds,
                    hot=run("/api/v1/usage", "single.lua", BENCH_CUSTOMERS="1"),
                    spread=run("/api/v1/usage", "single.lua"),
                    seconds=secs,
                )
            )
            # The server is idle: verify while it stops.
            verifying = pool.submit(flask, url, "ledger", "verify", check=False)
        verify = verifying.result()
    res["verify_ok"] = verify.returncode == 0
    res["verify_output"] = (verify.stdout + verify.stderr)[-2000:]
    res["events_total"] = count_events(url)
    drop_database(kind, url)
    return res


DASHBOARD_CODE = r"""
import json, statistics, sys, time
from flask_migrate import upgrade
from sqlalchemy import event, func, select
from webapp import create_app
from webapp.extensions import db
from webapp.models import UsageEvent, Customer
from webapp.services import auth, demo
from webapp.services.actors import SYSTEM

app = create_app({"WTF_CSRF_ENABLED": False, "RATELIMIT_ENABLED": False})
customers, events, repeats = (int(arg) for arg in sys.argv[1:4])
with app.app_context():
    upgrade()
    t0 = time.perf_counter()
    demo.seed(customers, events, rng_seed=42)  # what `flask demo seed` does
    out = {"seed_s": time.perf_counter() - t0, "pages": {}}
    auth.create_user(SYSTEM, email="bench@example.com", role="admin",
                     password="correct horse battery")
    top = db.session.execute(
        select(Customer.key).join(UsageEvent, UsageEvent.customer_id == Customer.id)
        .group_by(Customer.key).order_by(func.count().desc()).limit(1)
    ).scalar()
    db.session.remove()
    statements = []
    event.listen(db.engine, "before_cursor_execute",
                 lambda *a, **k: statements.append(a[2]))
client = app.test_client()
r = client.post("/login", data={"email": "bench@example.com", "password": "correct horse battery"})
assert r.status_code == 303, r.status_code
for url in ("/", "/customers", f"/customers/{top}"):
    assert client.get(url).status_code == 200  # warm
    times = []
    for _ in range(repeats):
        statements.clear()
        t0 = time.perf_counter()
        assert client.get(url).status_code == 200
        times.append(time.perf_counter() - t0)
    name = "/customers/<key>" if url.startswith("/customers/") else url
    out["pages"][name] = {"median_ms": statistics.median(times) * 1000, "queries": len(statements)}
print(json.dumps(out))
"""


def dashboard_at(kind: str, customers: int, events: int, repeats: int) -> dict[str, Any]:
    url = fresh_database(kind, f"dash{events}")
    out = subprocess.run(
        [sys.executable, "-c", DASHBOARD_CODE, str(customers), str(events), str(repeats)],
        env=app_env(url),
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    drop_database(kind, url)
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_dashboard(kind: str, args: argparse.Namespace) -> dict[str, Any]:
    with ThreadPoolExecutor(2 if args.quick else 1) as pool:
        small, large = pool.map(
            lambda events: dashboard_at(kind, args.dash_customers, events, args.dash_repeats),
            (args.dash_small, args.dash_large),
        )
    pages = {}
    for page, s in small["pages"].items():
        big = large["pages"][page]
        pages[page] = {
            "small_ms": s["median_ms"],
            "large_ms": big["median_ms"],
            "growth": big["median_ms"] / s["median_ms"] if s["median_ms"] else 0.0,
            "queries_small": s["queries"],
            "queries_large": big["queries"],
        }
    return {"pages": pages, "seed_s": large["seed_s"]}


def sqlite_commit_cost(commits: int = 300) -> dict[str, float]:
    """Microseconds per one-row write transaction on a WAL file in bench/results, for each
    SQLITE_SYNCHRONOUS level: what FULL's fsync at every commit costs on this disk, apart from
    the load on the CPUs (the HTTP runs above share them)."""
    import sqlite3

    path = RESULTS / "synchronous.sqlite3"
    out = {}
    for level in ("FULL", "NORMAL"):
        for suffix in ("", "-wal", "-shm"):
            Path(str(path) + suffix).unlink(missing_ok=True)
        conn = sqlite3.connect(path, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={level}")
        conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
        started = time.perf_counter()
        for _ in range(commits):
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("INSERT INTO t (v) VALUES (?)", ("x" * 200,))
            conn.execute("COMMIT")
        out[level] = (time.perf_counter() - started) / commits * 1e6
        conn.close()
    for suffix in ("", "-wal", "-shm"):
        Path(str(path) + suffix).unlink(missing_ok=True)
    return out


# ---------------------------------------------------------------- report


def machine() -> dict[str, str]:
    cpu = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem = subprocess.run(["free", "-h"], capture_output=True, text=True).stdout.split("\n")[1]
    return {
        "nproc": str(os.cpu_count()),
        "cpu": cpu,
        "memory": " ".join(mem.split()[:2]),
        "python": platform.python_version(),
        "os": platform.platform(),
    }


def ms(us: float) -> str:
    return f"{us / 1000:.1f} ms"


def ratio(top: dict[str, Any], bottom: dict[str, Any]) -> str:
    """top/bottom throughput; n/a when either served no requests (a one-second round on a busy
    machine can), which the table reports as such."""
    if not top["requests"] or not bottom["requests"]:
        return "n/a"
    return f"{top['rps'] / bottom['rps']:.2f}"


def served(x: dict[str, Any]) -> str:
    """Throughput, p50 and p99 cells of a wrk run."""
    if not x["requests"]:
        return "n/a: no requests served | | "
    return f"{x['rps']:,.0f} req/s | {ms(x['p50_us'])} | {ms(x['p99_us'])}"


def batches(b: dict[str, Any]) -> str:
    """Throughput, p50 and p99 cells of the batch run."""
    if not b["requests"]:
        return "n/a: no batch served | | "
    return f"{b['events_per_s']:,.0f} events/s | {ms(b['p50_us'])} | {ms(b['p99_us'])}"


def report(results: list[dict[str, Any]], args: argparse.Namespace) -> tuple[str, str]:
    rows = ["| database | scenario | throughput | p50 | p99 | notes |", "|---|---|---|---|---|---|"]
    ratios: list[str] = []
    for r in results:
        d = r["db"]
        a = r.get("api")
        if a:
            for name, label in (
                ("noop", "floor: no-op JSON (`GET /bench/noop`)"),
                ("raw", "floor: raw-driver writes (`POST /bench/raw`)"),
                ("single", "1. single event `POST /api/v1/usage`"),
                ("crossing", "1b. single event that crosses a threshold (+1 outbox row)"),
            ):
                x = a.get(name)
                if x is None:
                    continue
                note = ""
                if name == "crossing":
                    k = a["crossing_check"]
                    note = (
                        f"; {k['events']:,} events recorded, {k['outbox']:,} outbox rows "
                        f"(usage.threshold_reached), {k['reused']} customers reused: "
                        f"{'one row per event' if k['ok'] else 'MISMATCH'}"
                    )
                rows.append(
                    f"| {d} | {label} | {served(x)} | "
                    f"{x['requests']:,} requests, {x['non2xx']} non-2xx{note} |"
                )
            b = a["batch"]
            rows.append(
                f"| {d} | 2. batch of 1,000 `POST /api/v1/usage/batch` | {batches(b)} | "
                f"{b['requests']:,} batches, all recorded: {b['all_recorded']}; "
                f"worker RSS after: {a['rss_mb']:.0f} MB |"
            )
            for name, label in (("hot", "3. contention: 1 wallet"), ("spread", "3. 100 wallets")):
                x = a[name]
                rows.append(f"| {d} | {label} | {served(x)} | {x['non2xx']} non-2xx |")
            rows.append(
                f"| {d} | ledger verify after all of the above | "
                f"{'clean' if a['verify_ok'] else 'FAILED'} | | | "
                f"{a['events_total']:,} events in the database |"
            )
            non2xx = sum(x["non2xx"] for x in a.values() if isinstance(x, dict) and "non2xx" in x)
            target2 = 30000 if d == "sqlite" else 10000
            ratios += [
                f"{d}: single/raw = {ratio(a['single'], a['raw'])} (≥ 0.75), "
                f"single p99 = {a['single']['p99_us'] / 1000:.1f} ms (≤ 15), "
                f"single/noop = {ratio(a['single'], a['noop'])}, "
                f"crossing/raw = {ratio(a['crossing'], a['raw'])}, crossing/single = "
                f"{ratio(a['crossing'], a['single'])}, outbox rows = events: "
                f"{a['crossing_check']['ok']}",
                f"{d}: batch = {batches(b).split(' |')[0]} (≥ {target2:,} events/s)",
                f"{d}: hot/spread = {ratio(a['hot'], a['spread'])} (≥ 0.5), "
                f"verify {'clean' if a['verify_ok'] else 'FAILED'}, {non2xx} non-2xx (0)",
                f"{d}: worker RSS = {a['rss_mb']:.0f} MB (< 150)",
            ]
        dash = r.get("dashboard")
        if dash:
            worst = 0.0
            maxq = 0
            for page, p in dash["pages"].items():
                worst = max(worst, p["growth"])
                maxq = max(maxq, p["queries_small"], p["queries_large"])
                rows.append(
                    f"| {d} | 4. dashboard `{page}` | {p['small_ms']:.1f} → {p['large_ms']:.1f} ms "
                    f"(×{p['growth']:.2f}) | | | {p['queries_small']} → {p['queries_large']} "
                    f"queries; {args.dash_small:,} → {args.dash_large:,} events |"
                )
            const = all(p["queries_small"] == p["queries_large"] for p in dash["pages"].values())
            ratios.append(
                f"{d}: dashboard growth = ×{worst:.2f} (≤ 1.3), queries max {maxq} "
                f"{'constant' if const else 'NOT constant'} (≤ 15)"
            )
    summary = "SUMMARY: " + "; ".join(ratios)
    return "\n".join(rows), summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short runs, small dashboard data")
    parser.add_argument("--db", default="sqlite,postgresql")
    parser.add_argument("--workers", type=int, default=os.environ.get("BENCH_WORKERS"))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--port", type=int, default=5831)
    parser.add_argument("--seconds", type=float)
    parser.add_argument("--skip-dashboard", action="store_true")
    parser.add_argument("--only-dashboard", action="store_true")
    parser.add_argument(
        "--sqlite-synchronous",
        choices=["FULL", "NORMAL"],
        help="SQLITE_SYNCHRONOUS for every process of the run (default: the app's, FULL)",
    )
    args = parser.parse_args()
    if args.sqlite_synchronous:
        os.environ["WEBAPP_SQLITE_SYNCHRONOUS"] = args.sqlite_synchronous  # app_env passes it on
    if args.seconds is None:
        args.seconds = 1 if args.quick else 15
    args.customers = 20 if args.quick else CUSTOMERS
    args.rounds = 1 if args.quick else 3
    # Never-used customers for the crossing scenario: one per request, with room to spare
    # (6,000 a second is more than twice the no-op floor's throughput here).
    args.crossing = max(6000, round(args.seconds * 6000))
    if args.workers is None:
        args.workers = 2 if args.quick else 4  # each worker imports the app: seconds of CPU
    args.dash_customers = 200 if args.quick else 10000
    args.dash_small = 1_000 if args.quick else 10_000
    args.dash_large = 5_000 if args.quick else 1_000_000
    args.dash_repeats = 5 if args.quick else 25
    if shutil.which("wrk") is None:
        sys.exit("wrk is missing: `apt-get install -y wrk` (make bench does it when root).")
    RESULTS.mkdir(parents=True, exist_ok=True)
    started = time.time()

    def run_database(kind: str, port: int) -> dict[str, Any]:
        r: dict[str, Any] = {"db": kind}
        with ThreadPoolExecutor(2 if args.quick else 1) as pool:  # a full run: one at a time
            api = None if args.only_dashboard else pool.submit(run_api, kind, args, port)
            dash = None if args.skip_dashboard else pool.submit(run_dashboard, kind, args)
            for name, future in (("api", api), ("dashboard", dash)):
                if future is not None:
                    r[name] = future.result()
                    print(f"# {kind}: {name} done at {time.time() - started:.0f}s", file=sys.stderr)
        return r

    kinds = args.db.split(",")
    # A quick run is a smoke test, not a measurement: its databases, and for each its API
    # scenarios and its two dashboard sizes, run side by side.
    with ThreadPoolExecutor(len(kinds) if args.quick else 1) as pool:
        results = list(pool.map(run_database, kinds, range(args.port, args.port + len(kinds))))
    table, summary = report(results, args)
    m = machine()
    head = (
        f"{'Quick' if args.quick else 'Full'} run, "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {time.time() - started:.0f} s. "
        f"Machine: {m['nproc']} CPUs ({m['cpu']}), {m['memory']} RAM, "
        f"Python {m['python']}. gunicorn {args.workers} sync workers"
        f"{f' x {args.threads} threads' if args.threads > 1 else ''}, wrk 2 threads, "
        f"{CONNECTIONS} connections, {args.seconds:g} s per scenario (noop/raw/single/crossing "
        f"and hot/spread interleaved in {args.rounds} rounds each; batch in one run). "
        f"SQLite synchronous={os.environ.get('WEBAPP_SQLITE_SYNCHRONOUS', 'FULL')}."
    )
    if "sqlite" in args.db.split(","):
        cost = sqlite_commit_cost()
        head += (
            f"\n\nSQLite commit alone (one-row write transaction, WAL): synchronous=FULL "
            f"{cost['FULL']:.0f} µs, NORMAL {cost['NORMAL']:.0f} µs."
        )
    text = f"{head}\n\n{table}\n\n{summary}\n"
    (RESULTS / ("quick.md" if args.quick else "latest.md")).write_text(text)
    (RESULTS / ("quick.json" if args.quick else "latest.json")).write_text(
        json.dumps({"machine": m, "results": results}, indent=2, default=str)
    )
    print(text, end="", flush=True)  # the summary line is the last thing printed
    # A smoke test fails on what is wrong whatever the machine's load: a ledger violation or an
    # answer other than 2xx. Slow numbers are reported, never a failure.
    apis = [r["api"] for r in results if "api" in r]
    broken = any(not (a["verify_ok"] and a["crossing_check"]["ok"]) for a in apis) or any(
        x.get("non2xx") for a in apis for x in a.values() if isinstance(x, dict)
    )
    sys.exit(1 if broken else 0)


if __name__ == "__main__":
    main()
