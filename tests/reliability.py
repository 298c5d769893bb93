"""Helpers for the reliability tests and `make soak`: real gunicorn servers that can be killed with
SIGKILL, throwaway PostgreSQL databases (``rel_*``, created and dropped here, never the shared
``test`` database), a TCP proxy that plays an unreachable PostgreSQL, and a seeded catalog."""

from __future__ import annotations

import contextlib
import hashlib
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import requests
from sqlalchemy import make_url

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
SECRET = "reliability-secret-key-0123456789abcdef0123456789"
CUSTOMER = "cust-6d11ca90"
DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def pg_base_url() -> str:
    return os.environ.get("TEST_DATABASE_URL", DEFAULT_PG)


def pg_reachable() -> bool:
    url = make_url(pg_base_url())
    try:
        with psycopg.connect(**_conninfo(url), connect_timeout=3):
            return True
    except psycopg.Error:
        return False


def _conninfo(url) -> dict:
    return {
        "host": url.host,
        "port": url.port or 5432,
        "user": url.username,
        "password": url.password,
        "dbname": url.database,
    }


def wait_until(condition, what: str, timeout: float = 30, interval: float = 0.05) -> None:
    """Poll ``condition()`` until it is true; fail naming ``what`` after ``timeout`` seconds.
    Tests wait for the state they need, never for a fixed time: a busy machine only slows them."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {timeout:g} s for {what}")
        time.sleep(interval)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def pg_database(label: str) -> Iterator[str]:
    """A fresh PostgreSQL database ``rel_<checkout>_<label>_<random>``, dropped afterwards."""
    base = make_url(pg_base_url())
    checkout = hashlib.sha1(str(ROOT).encode()).hexdigest()[:6]
    name = f"rel_{checkout}_{label}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(**_conninfo(base), autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield base.set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(**_conninfo(base), autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.contextmanager
def database(backend: str, tmp: Path, label: str) -> Iterator[str]:
    if backend == "sqlite":
        yield f"sqlite:///{tmp / f'{label}.sqlite3'}"
    else:
        with pg_database(label) as url:
            yield url


def prepare(url: str, *, roles: tuple[str, ...] = ("admin",)) -> dict[str, str]:
    """Migrate ``url``, add the seed catalog with room for a long run, and return one API key per
    role in ``roles``."""
    from tests.conftest import TEST_CONFIG, migrate_to_head
    from tests.factories import make_catalog
    from webapp import create_app
    from webapp.extensions import db
    from webapp.services import auth
    from webapp.services.actors import SYSTEM

    migrate_to_head(url)
    app = create_app({**TEST_CONFIG, "SQLALCHEMY_DATABASE_URI": url})
    with app.app_context():
        make_catalog(
            api_allowance=10**9,
            candidates_allowance=10**9,
            seat_allowance=10**6,
            topup="1000000",
        )
        keys = {role: auth.create_api_key(SYSTEM, name=role, role=role).secret for role in roles}
        db.session.remove()
        db.engine.dispose()
    return keys


_CHECK_APPS: dict[str, Any] = {}


def in_app(url: str):
    """An app on ``url`` for checking what is stored (use as ``with in_app(url) as app:``).
    One app per URL, made once: tests poll through this many times a second while their
    receiver threads run, and building an app compiles every route with ``ast.parse``, which
    CPython 3.11 does not make thread-safe ("AST constructor recursion depth mismatch", seen
    once in a full run). Each use still ends its session and closes its connections."""
    from tests.conftest import TEST_CONFIG
    from webapp import create_app
    from webapp.extensions import db

    @contextlib.contextmanager
    def ctx():
        app = _CHECK_APPS.get(url)
        if app is None:
            app = _CHECK_APPS[url] = create_app({**TEST_CONFIG, "SQLALCHEMY_DATABASE_URI": url})
        with app.app_context():
            try:
                yield app
            finally:
                db.session.remove()
                db.engine.dispose()

    return ctx()


class Gunicorn:
    """``gunicorn 'webapp:create_app()'`` in its own process group on a loopback port."""

    def __init__(
        self, url: str, port: int | None = None, workers: int = 2, log: Path | None = None
    ):
        self.url = url
        self.port = port or free_port()
        self.workers = workers
        self.log = log
        self.proc: subprocess.Popen | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("WEBAPP_")}
        env.update(
            DATABASE_URL=self.url,
            WEBAPP_SECRET_KEY=SECRET,
            WEBAPP_RATELIMIT_ENABLED="false",
            PYTHONUNBUFFERED="1",
        )
        return env

    def start(self, timeout: float = 30) -> Gunicorn:
        out = open(self.log, "ab") if self.log else subprocess.DEVNULL  # noqa: SIM115
        self.proc = subprocess.Popen(
            [
                str(BIN / "gunicorn"),
                "webapp:create_app()",
                "-b",
                f"127.0.0.1:{self.port}",
                "-w",
                str(self.workers),
                "--graceful-timeout",
                "2",
                "--no-control-socket",
            ],
            cwd=ROOT,
            env=self.env(),
            stdout=out,
            stderr=out,
            start_new_session=True,
        )
        if out is not subprocess.DEVNULL:
            out.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gunicorn exited with {self.proc.returncode}")
            try:
                if requests.get(f"{self.base}/api/v1/openapi.json", timeout=2).ok:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.1)
        self.kill()
        raise RuntimeError("gunicorn did not answer in time")

    def kill(self) -> None:
        """SIGKILL the master and every worker at once (its whole process group)."""
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)
        # Wait for the workers too: nothing of the old server may write after this returns.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                os.killpg(self.proc.pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)
        self.proc = None

    def __enter__(self) -> Gunicorn:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.kill()


class TcpProxy:
    """Forwards 127.0.0.1:<port> to a target; ``cut()`` closes every connection and refuses new
    ones (the database is "stopped"), ``restore()`` lets connections through again."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        self.up = True
        self.closed = False
        self.lock = threading.Lock()
        self.pairs: list[tuple[socket.socket, socket.socket]] = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while not self.closed:
            try:
                ready, _, _ = select.select([self.listener], [], [], 0.1)
            except (OSError, ValueError):
                return
            if not ready:
                continue
            try:
                client, _ = self.listener.accept()
            except OSError:
                continue
            if not self.up:
                _hard_close(client)
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                _hard_close(client)
                continue
            with self.lock:
                self.pairs.append((client, upstream))
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()

    def _pump(self, a: socket.socket, b: socket.socket) -> None:
        peers = {a: b, b: a}
        try:
            while True:
                ready, _, _ = select.select([a, b], [], [], 0.2)
                for sock in ready:
                    data = sock.recv(65536)
                    if not data:
                        return
                    peers[sock].sendall(data)
        except (OSError, ValueError):
            return
        finally:
            _hard_close(a)
            _hard_close(b)

    def cut(self) -> None:
        self.up = False
        with self.lock:
            pairs, self.pairs = self.pairs, []
        for a, b in pairs:
            _hard_close(a)
            _hard_close(b)

    def restore(self) -> None:
        self.up = True

    def close(self) -> None:
        self.closed = True
        self.cut()
        self.thread.join(timeout=5)
        self.listener.close()


def _hard_close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()


# ---------------------------------------------------------------- traffic and what is stored

COST_MICROS = 20_000  # 0.02 credits per API call or candidate, from the seed catalog
TOPUP_MICROS = 1_000_000_000_000  # the 1000000 credits prepare() tops up


class Traffic:
    """Clients that record usage (single and batch), top up, check and reclaim, and remember for
    every event and topup what they sent and whether it was acknowledged (201, or 200 replayed).

    ``sent`` maps an event id to its amount; ``acked`` holds the ids acknowledged; the same for
    topups (``topups_sent`` / ``topups_acked`` by idempotency key, amounts in micros)."""

    def __init__(self, base: str, key: str, *, prefix: str, mix: bool = False) -> None:
        self.base = base
        self.key = key
        self.prefix = prefix
        self.mix = mix
        self.lock = threading.Lock()
        self.sent: dict[str, int] = {}
        self.bodies: dict[str, dict] = {}
        self.acked: set[str] = set()
        self.topups_sent: dict[str, int] = {}
        self.topup_bodies: dict[str, dict] = {}
        self.topups_acked: set[str] = set()
        self.statuses: dict[int | str, int] = {}
        self.server_errors: list[str] = []
        self.stop = threading.Event()
        self.local = threading.local()

    def _note(self, status: int | str) -> None:
        with self.lock:
            self.statuses[status] = self.statuses.get(status, 0) + 1

    def post(self, session: requests.Session, path: str, body: dict) -> requests.Response | None:
        try:
            response = session.post(
                self.base + path,
                json=body,
                headers={"Authorization": f"Bearer {self.key}"},
                timeout=15,
            )
        except requests.RequestException:
            self._note("connection error")
            self.local.failed = True
            return None
        self._note(response.status_code)
        self.check_status(path, response)
        return response

    def check_status(self, path: str, response: requests.Response) -> None:
        """A 5xx other than a clean JSON 503 service_unavailable with Retry-After is a failure."""
        if response.status_code < 500:
            return
        clean = (
            response.status_code == 503
            and response.headers.get("Content-Type", "").startswith("application/json")
            and response.json().get("error", {}).get("code") == "service_unavailable"
            and response.headers.get("Retry-After", "").isdigit()
        )
        if not clean:
            self.server_errors.append(f"{path}: {response.status_code} {response.text[:300]}")

    def usage_body(self, event_id: str, amount: int, feature: str = "api_calls") -> dict:
        return {
            "customer_key": CUSTOMER,
            "feature_key": feature,
            "amount": amount,
            "event_id": event_id,
        }

    def send_event(
        self, session: requests.Session, event_id: str, amount: int, feature: str = "api_calls"
    ) -> None:
        body = self.usage_body(event_id, amount, feature)
        with self.lock:
            self.sent[event_id] = amount
            self.bodies[event_id] = body
        response = self.post(session, "/api/v1/usage", body)
        if response is not None and response.status_code in (200, 201):
            with self.lock:
                self.acked.add(event_id)

    def send_batch(self, session: requests.Session, ids: list[str], amounts: list[int]) -> None:
        bodies = [self.usage_body(i, a) for i, a in zip(ids, amounts, strict=True)]
        with self.lock:
            for body in bodies:
                self.sent[body["event_id"]] = body["amount"]
                self.bodies[body["event_id"]] = body
        response = self.post(session, "/api/v1/usage/batch", {"events": bodies})
        if response is not None and response.status_code == 200:
            for body, result in zip(bodies, response.json()["results"], strict=True):
                if result["status"] in (200, 201):
                    with self.lock:
                        self.acked.add(body["event_id"])

    def send_topup(self, session: requests.Session, key: str, micros: int) -> None:
        body = {
            "customer_key": CUSTOMER,
            "credit_system": "credits",
            "amount": f"{micros / 1_000_000:.6f}",
            "kind": "purchased",
            "idempotency_key": key,
        }
        with self.lock:
            self.topups_sent[key] = micros
            self.topup_bodies[key] = body
        response = self.post(session, "/api/v1/wallets/topups", body)
        if response is not None and response.status_code in (200, 201):
            with self.lock:
                self.topups_acked.add(key)

    def client(self, n: int) -> None:
        session = requests.Session()
        self.local.failed = False
        i = 0
        # A client stops at its first connection error (the server is gone), as a real one would
        # back off; what it sent last is retried later with the same ids.
        while not self.stop.is_set() and not self.local.failed:
            i += 1
            base = f"{self.prefix}-{n}-{i}"
            step = i % 10 if self.mix else i % 4
            if step == 3:
                ids = [f"{base}-b{j}" for j in range(5)]
                self.send_batch(session, ids, [1 + j % 3 for j in range(5)])
            elif self.mix and step == 5:
                self.send_topup(session, base, 1_000_000 + i)
            elif self.mix and step == 7:
                try:
                    response = session.get(
                        self.base + "/api/v1/entitlements/check",
                        params={"customer_key": CUSTOMER, "feature_key": "api_calls", "amount": 1},
                        headers={"Authorization": f"Bearer {self.key}"},
                        timeout=15,
                    )
                    self._note(response.status_code)
                    self.check_status("/api/v1/entitlements/check", response)
                except requests.RequestException:
                    self._note("connection error")
                    self.local.failed = True
            elif self.mix and step == 1:
                self.send_event(session, base, 1, "seats")
            elif self.mix and step == 2:
                # A reclaim: the seat assigned one step before is given back.
                self.send_event(session, base, -1, "seats")
            elif self.mix and step == 9 and i > 1:
                # A replay of an event this client sent before.
                previous = f"{self.prefix}-{n}-{i - 1}"
                if previous in self.bodies:
                    self.send_event(
                        session, previous, self.sent[previous], self.bodies[previous]["feature_key"]
                    )
            else:
                self.send_event(session, base, 1 + i % 3)
            if self.stop.is_set():
                break
        session.close()

    def run(self, clients: int) -> list[threading.Thread]:
        threads = [threading.Thread(target=self.client, args=(n,)) for n in range(clients)]
        for thread in threads:
            thread.start()
        return threads

    def retry_unacknowledged(self) -> dict[str, int]:
        """Send again, with the same event_id / idempotency key, everything not acknowledged."""
        outcome: dict[str, int] = {}
        session = requests.Session()
        for event_id in sorted(set(self.sent) - self.acked):
            for _ in range(20):
                response = self.post(session, "/api/v1/usage", self.bodies[event_id])
                if response is not None and response.status_code in (200, 201):
                    self.acked.add(event_id)
                if response is not None and response.status_code != 503:
                    outcome[event_id] = response.status_code
                    break
                time.sleep(0.2)
        for key in sorted(set(self.topups_sent) - self.topups_acked):
            for _ in range(20):
                response = self.post(session, "/api/v1/wallets/topups", self.topup_bodies[key])
                if response is not None and response.status_code in (200, 201):
                    self.topups_acked.add(key)
                if response is not None and response.status_code != 503:
                    outcome[key] = response.status_code
                    break
                time.sleep(0.2)
        session.close()
        return outcome


def stored_state(url: str, prefix: str) -> dict:
    """What the database holds for events and topups whose ids start with ``prefix``, and the
    result of `ledger verify`."""
    from sqlalchemy import func, select

    from webapp.extensions import db
    from webapp.models import Feature, LedgerEntry, UsageCounter, UsageEvent, Wallet
    from webapp.services.verify import verify_ledger

    with in_app(url):
        rows = db.session.execute(
            select(UsageEvent.event_id, func.count(), func.sum(UsageEvent.amount_micros))
            .where(UsageEvent.event_id.like(f"{prefix}-%"))
            .group_by(UsageEvent.event_id)
        ).all()
        events = {event_id: (count, total) for event_id, count, total in rows}
        charged = db.session.execute(
            select(UsageEvent.event_id, func.count(LedgerEntry.id))
            .join(LedgerEntry, LedgerEntry.usage_event_id == UsageEvent.id)
            .where(UsageEvent.event_id.like(f"{prefix}-%"))
            .group_by(UsageEvent.event_id)
        ).all()
        topups = dict(
            db.session.execute(
                select(LedgerEntry.idempotency_key, func.count())
                .where(LedgerEntry.type == "topup", LedgerEntry.idempotency_key.like(f"{prefix}-%"))
                .group_by(LedgerEntry.idempotency_key)
            ).all()
        )
        topped_up = (
            db.session.scalar(
                select(func.sum(LedgerEntry.amount_micros)).where(LedgerEntry.type == "topup")
            )
            or 0
        )
        balance = db.session.scalar(select(func.sum(Wallet.balance_micros))) or 0
        all_usage = (
            db.session.scalar(
                select(func.sum(UsageEvent.amount_micros))
                .join(Feature, Feature.id == UsageEvent.feature_id)
                .where(Feature.key.in_(("api_calls", "candidates")))
            )
            or 0
        )
        used = (
            db.session.scalar(
                select(func.sum(UsageCounter.used_micros))
                .join(Feature, Feature.id == UsageCounter.feature_id)
                .where(Feature.key.in_(("api_calls", "candidates")))
            )
            or 0
        )
        report = verify_ledger()
        return {
            "events": events,
            "charged": dict(charged),
            "topups": topups,
            "topped_up_micros": topped_up,
            "used_micros": used,
            "event_micros": all_usage,
            "balance_micros": balance,
            "verify_ok": report.ok,
            "verify": str(report) if not report.ok else "ok",
        }


def differences(traffic: Traffic, state: dict) -> list[str]:
    """Every way in which what is stored differs from what the clients were told."""
    problems: list[str] = []
    events = state["events"]
    for event_id in traffic.acked:
        count = events.get(event_id, (0, 0))[0]
        if count != 1:
            problems.append(f"acknowledged event {event_id} stored {count} times")
    for event_id, (count, total) in events.items():
        if event_id not in traffic.sent:
            problems.append(f"stored event {event_id} was never sent")
        elif count != 1 or total != traffic.sent[event_id] * 1_000_000:
            problems.append(f"event {event_id}: {count} rows, {total} micros")
        feature = traffic.bodies.get(event_id, {}).get("feature_key")
        if feature == "api_calls" and state["charged"].get(event_id) != 1:
            problems.append(f"event {event_id} has {state['charged'].get(event_id)} ledger rows")
    for key in traffic.topups_acked:
        if state["topups"].get(key) != 1:
            problems.append(f"acknowledged topup {key} stored {state['topups'].get(key)} times")
    for key in state["topups"]:
        if key not in traffic.topups_sent:
            problems.append(f"stored topup {key} was never sent")
    # Money: every credit in the wallet is a topup minus 0.02 per unit recorded.
    expected_balance = state["topped_up_micros"] - state["event_micros"] * COST_MICROS // 1_000_000
    if state["balance_micros"] != expected_balance:
        problems.append(f"balance {state['balance_micros']} != expected {expected_balance}")
    if state["used_micros"] != state["event_micros"]:
        problems.append(f"counters {state['used_micros']} != events {state['event_micros']}")
    if not state["verify_ok"]:
        problems.append(f"ledger verify: {state['verify']}")
    return problems
