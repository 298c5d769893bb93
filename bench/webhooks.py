"""Webhook delivery throughput: a burst of N outbox events (default 100,000) through real
`flask worker` processes to a live receiver on 127.0.0.1, on PostgreSQL with one worker and
with three (and, with --sqlite, SQLite with its one worker).

    /work/main/.venv/bin/python bench/webhooks.py            # N=100000
    /work/main/.venv/bin/python bench/webhooks.py --n 20000

For each run: a fresh database (PostgreSQL `bench_webhooks_<random>` on 127.0.0.1:5432, created
and dropped here), one endpoint for the receiver, the workers started and idle, then the burst:
N events written through `outbox.emit` (1,000 per transaction, as fast as one writer goes). The
receiver (ThreadingHTTPServer, HTTP/1.1 keep-alive) verifies every signature with
standardwebhooks and notes when each `webhook-id` arrived. Prints a markdown table:
deliveries/s (N over first write to last delivery), and the lag from write (`created_at` in the
envelope) to delivery, p50 and p99; duplicates counts deliveries received more than once.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
import uuid
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import psycopg
from standardwebhooks import Webhook

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
BIN = Path(sys.executable).parent
PG = "postgresql+psycopg://postgres@127.0.0.1:5432/"
SECRET_KEY = "bench-webhooks-secret-key-0123456789abcdef0123456789"


class Receiver:
    def __init__(self) -> None:
        self.secret = ""
        self.lock = threading.Lock()
        self.first: dict[str, float] = {}
        self.lag: dict[str, float] = {}
        self.duplicates = 0
        self.bad = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers["content-length"]))
                now = time.time()
                headers = {k.lower(): v for k, v in self.headers.items()}
                try:
                    payload = Webhook(outer.secret).verify(body.decode(), headers)
                    created = datetime.fromisoformat(payload["created_at"].replace("Z", "+00:00"))
                    ok = True
                except Exception:
                    ok = False
                with outer.lock:
                    if not ok:
                        outer.bad += 1
                    elif payload["id"] in outer.first:
                        outer.duplicates += 1
                    else:
                        outer.first[payload["id"]] = now
                        outer.lag[payload["id"]] = now - created.timestamp()
                self.send_response(200 if ok else 401)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hooks"

    def count(self) -> int:
        with self.lock:
            return len(self.first)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _app(url: str):
    from webapp import create_app

    return create_app(
        {
            "TESTING": True,
            "SECRET_KEY": SECRET_KEY,
            "SQLALCHEMY_DATABASE_URI": url,
            "WEBHOOK_ALLOW_PRIVATE_TARGETS": True,
        }
    )


def prepare(url: str, receiver: Receiver) -> None:
    from flask_migrate import upgrade

    from webapp.extensions import db
    from webapp.services import webhooks
    from webapp.services.actors import SYSTEM

    app = _app(url)
    with app.app_context():
        upgrade()
        receiver.secret = webhooks.create_endpoint(SYSTEM, url=receiver.url).secret
        db.session.remove()
        db.engine.dispose()


def burst(url: str, n: int) -> tuple[float, float]:
    from webapp.extensions import db
    from webapp.services import outbox
    from webapp.services.tx import write_transaction

    app = _app(url)
    with app.app_context():
        start = time.time()
        done = 0
        while done < n:
            with write_transaction():
                conn = db.session.connection()
                for i in range(done, min(n, done + 1000)):
                    outbox.emit(conn, "wallet.balance_low", {"n": i}, customer_key=f"c{i % 100}")
            done = min(n, done + 1000)
        written = time.time()
        db.session.remove()
        db.engine.dispose()
    return start, written


def start_workers(url: str, k: int, log: Path) -> list[subprocess.Popen]:
    env = {key: v for key, v in os.environ.items() if not key.startswith("WEBAPP_")}
    env.update(
        DATABASE_URL=url,
        PYTHONPATH=str(ROOT),
        WEBAPP_SECRET_KEY=SECRET_KEY,
        WEBAPP_WEBHOOK_ALLOW_PRIVATE_TARGETS="true",
        WEBAPP_WORKER_POLL_SECONDS="0.05",
    )
    out = open(log, "ab")  # noqa: SIM115
    procs = [
        subprocess.Popen(
            [str(BIN / "flask"), "--app", "webapp", "worker"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=out,
            start_new_session=True,
        )
        for _ in range(k)
    ]
    out.close()
    return procs


def run(label: str, url: str, workers: int, n: int, log: Path) -> dict[str, Any]:
    receiver = Receiver()
    try:
        prepare(url, receiver)
        procs = start_workers(url, workers, log)
        time.sleep(2)  # the workers start (imports) before the burst
        start, written = burst(url, n)
        deadline = time.time() + 3600
        while receiver.count() < n and time.time() < deadline:
            time.sleep(0.2)
        last = max(receiver.first.values())
        for p in procs:
            p.send_signal(signal.SIGTERM)
        codes = [p.wait(timeout=60) for p in procs]
        lags = sorted(receiver.lag.values())
        return {
            "run": label,
            "workers": workers,
            "events": n,
            "write_s": written - start,
            "elapsed_s": last - start,
            "per_s": n / (last - start),
            "p50_ms": statistics.median(lags) * 1000,
            "p99_ms": lags[int(len(lags) * 0.99) - 1] * 1000,
            "duplicates": receiver.duplicates,
            "bad": receiver.bad,
            "exit": codes,
        }
    finally:
        receiver.close()


def pg_database() -> tuple[str, str]:
    name = f"bench_webhooks_{uuid.uuid4().hex[:8]}"
    with psycopg.connect("host=127.0.0.1 user=postgres dbname=postgres", autocommit=True) as c:
        c.execute(f'CREATE DATABASE "{name}"')
    return name, PG + name


def drop(name: str) -> None:
    with psycopg.connect("host=127.0.0.1 user=postgres dbname=postgres", autocommit=True) as c:
        c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--workers", default="1,3", help="PostgreSQL runs, e.g. 1,3")
    parser.add_argument("--sqlite", action="store_true", help="also SQLite, one worker")
    args = parser.parse_args()
    results_dir = ROOT / "bench" / "results"
    results_dir.mkdir(exist_ok=True)
    log = results_dir / "webhooks-workers.log"
    log.write_bytes(b"")
    rows = []
    if args.sqlite:
        path = results_dir / "webhooks.sqlite3"
        for suffix in ("", "-wal", "-shm", "-writers.lock", "-worker.lock"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        rows.append(run("sqlite", f"sqlite:///{path}", 1, args.n, log))
    for k in (int(w) for w in args.workers.split(",")):
        name, url = pg_database()
        try:
            rows.append(run("postgresql", url, k, args.n, log))
        finally:
            drop(name)
    print(
        "| database | workers | events | burst written in | deliveries/s | lag p50 | lag p99 "
        "| duplicates | bad signatures | exit codes |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['run']} | {r['workers']} | {r['events']:,} | {r['write_s']:.1f} s "
            f"| {r['per_s']:,.0f} | {r['p50_ms'] / 1000:.1f} s | {r['p99_ms'] / 1000:.1f} s "
            f"| {r['duplicates']} | {r['bad']} | {r['exit']} |"
        )
    (results_dir / "webhooks.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
