"""Database faults: PostgreSQL cut off mid-load (a TCP proxy between the app and the shared server
closes every connection and refuses new ones; the server itself is never touched) and SQLite held
locked past the busy timeout. The API and the Metrifox door answer a clean JSON 503
`service_unavailable` with Retry-After, the dashboard a readable 503 page, never a 500 or a
traceback; nothing half-written stays behind, and the app recovers by itself."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator

import pytest
import requests
from sqlalchemy import make_url
from werkzeug.serving import make_server

from tests.conftest import TEST_CONFIG
from tests.reliability import (
    CUSTOMER,
    TcpProxy,
    Traffic,
    differences,
    pg_database,
    pg_reachable,
    prepare,
    stored_state,
    wait_until,
)
from tests.web import PASSWORD
from webapp import create_app
from webapp.extensions import db

# Served over plain http on loopback: the session cookie must not be Secure-only.
HTTP_CONFIG = {**TEST_CONFIG, "SESSION_COOKIE_SECURE": False}


def _serve(app) -> tuple[str, callable]:
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)

    return f"http://127.0.0.1:{server.server_port}", stop


def _add_user(url: str, role: str = "admin") -> str:
    from tests.reliability import in_app
    from tests.web import make_user

    with in_app(url):
        return make_user(role).email


def _signed_in(base: str, email: str) -> requests.Session:
    session = requests.Session()
    response = session.post(
        f"{base}/login", data={"email": email, "password": PASSWORD}, allow_redirects=False
    )
    assert response.status_code == 303, response.text[:300]
    return session


def _assert_clean_503_page(response: requests.Response) -> None:
    assert response.status_code == 503, (response.status_code, response.text[:300])
    assert response.headers["Content-Type"].startswith("text/html")
    assert response.headers["Retry-After"].isdigit()
    text = response.text
    assert "unavailable" in text and "Traceback" not in text and "<h1>503</h1>" in text


def _assert_clean_503_json(response: requests.Response) -> None:
    assert response.status_code == 503, (response.status_code, response.text[:300])
    assert response.json()["error"]["code"] == "service_unavailable"
    assert response.headers["Retry-After"].isdigit()


@pytest.fixture
def pg_through_proxy(pg_unavailable) -> Iterator[tuple[str, str, TcpProxy]]:
    """(direct url, url through the proxy, proxy) of a throwaway rel_ database."""
    if pg_unavailable or not pg_reachable():
        pytest.skip(pg_unavailable or "PostgreSQL not reachable")
    with pg_database("fault") as url:
        direct = make_url(url)
        proxy = TcpProxy((direct.host or "127.0.0.1", direct.port or 5432))
        proxied = direct.set(port=proxy.port, query={"connect_timeout": "2"})
        try:
            yield url, proxied.render_as_string(hide_password=False), proxy
        finally:
            proxy.close()


@pytest.mark.slow
def test_postgresql_cut_off_mid_load_is_503_and_recovers_by_itself(pg_through_proxy):
    url, proxied, proxy = pg_through_proxy
    key = prepare(url, roles=("admin",))["admin"]
    email = _add_user(url)
    app = create_app({**HTTP_CONFIG, "SQLALCHEMY_DATABASE_URI": proxied})
    base, stop_server = _serve(app)
    traffic = Traffic(base, key, prefix="fault", mix=True)
    headers = {"Authorization": f"Bearer {key}"}
    try:
        dashboard = _signed_in(base, email)
        threads = traffic.run(3)
        wait_until(lambda: len(traffic.acked) >= 10, "10 requests acknowledged before the cut")
        acked_before_cut = len(traffic.acked)

        proxy.cut()  # PostgreSQL "stops": every connection dies, new ones are refused
        wait_until(lambda: traffic.statuses.get(503, 0) >= 3, "the load to meet 503s")
        _assert_clean_503_json(
            requests.post(
                f"{base}/api/v1/usage",
                json={"customer_key": CUSTOMER, "feature_key": "api_calls", "event_id": "x-1"},
                headers=headers,
                timeout=15,
            )
        )
        _assert_clean_503_json(
            requests.get(
                f"{base}/metrifox/meter/usage/access",
                params={"customer_key": CUSTOMER, "feature_key": "api_calls"},
                headers={"x-api-key": key},
                timeout=15,
            )
        )
        _assert_clean_503_page(dashboard.get(f"{base}/customers/{CUSTOMER}", timeout=15))
        _assert_clean_503_page(
            dashboard.post(
                f"{base}/customers/{CUSTOMER}/usage",
                data={"usage-feature_key": "api_calls", "usage-amount": "1"},
                timeout=15,
                allow_redirects=False,
            )
        )
        during_cut = traffic.statuses.get(503, 0)

        proxy.restore()  # PostgreSQL is back: the next requests succeed without a restart
        wait_until(
            lambda: dashboard.get(f"{base}/customers/{CUSTOMER}", timeout=15).status_code == 200,
            "the dashboard to answer again",
            interval=0.2,
        )
        acked_at_restore = len(traffic.acked)
        wait_until(lambda: len(traffic.acked) > acked_at_restore, "a request acknowledged again")
        traffic.stop.set()
        for thread in threads:
            thread.join(timeout=30)
        assert len(traffic.acked) > acked_at_restore, "no request succeeded after the restore"
        retried = traffic.retry_unacknowledged()
    finally:
        traffic.stop.set()
        proxy.restore()
        stop_server()
        with app.app_context():
            db.engine.dispose()
    assert acked_before_cut > 0 and during_cut > 0, traffic.statuses
    assert not traffic.server_errors, traffic.server_errors[:5]
    state = stored_state(url, "fault")
    assert not differences(traffic, state), differences(traffic, state)
    assert all(status != 503 for status in retried.values())


@pytest.mark.slow
def test_sqlite_locked_past_the_busy_timeout_is_503_and_recovers(tmp_path):
    path = tmp_path / "locked.sqlite3"
    url = f"sqlite:///{path}"
    key = prepare(url)["admin"]
    email = _add_user(url)
    app = create_app({**HTTP_CONFIG, "SQLALCHEMY_DATABASE_URI": url, "SQLITE_BUSY_TIMEOUT_MS": 300})
    base, stop_server = _serve(app)
    headers = {"Authorization": f"Bearer {key}"}
    usage = {"customer_key": CUSTOMER, "feature_key": "api_calls", "amount": 2, "event_id": "l-1"}
    traffic = Traffic(base, key, prefix="lock")
    try:
        dashboard = _signed_in(base, email)
        before = stored_state(url, "l")
        blocker = sqlite3.connect(path, isolation_level=None, timeout=5)
        blocker.execute("BEGIN IMMEDIATE")  # another writer holds the lock, and keeps it
        try:
            _assert_clean_503_json(
                requests.post(f"{base}/api/v1/usage", json=usage, headers=headers, timeout=15)
            )
            _assert_clean_503_json(
                requests.post(
                    f"{base}/api/v1/usage/batch", json={"events": [usage]}, headers=headers
                )
            )
            _assert_clean_503_json(
                requests.post(
                    f"{base}/metrifox/meter/usage/events",
                    json={"customer_key": CUSTOMER, "event_name": "api.call", "quantity": 1},
                    headers={"x-api-key": key},
                    timeout=15,
                )
            )
            _assert_clean_503_page(
                dashboard.post(
                    f"{base}/customers/{CUSTOMER}/usage",
                    data={"usage-feature_key": "api_calls", "usage-amount": "1"},
                    timeout=15,
                    allow_redirects=False,
                )
            )
            # Readers are not blocked by a writer (WAL): the pages still show.
            assert dashboard.get(f"{base}/customers/{CUSTOMER}", timeout=15).status_code == 200
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        assert stored_state(url, "l")["events"] == before["events"] == {}
        # The lock is gone: the same request now records, exactly once.
        first = requests.post(f"{base}/api/v1/usage", json=usage, headers=headers, timeout=15)
        again = requests.post(f"{base}/api/v1/usage", json=usage, headers=headers, timeout=15)
        assert (first.status_code, again.status_code) == (201, 200)
    finally:
        stop_server()
        with app.app_context():
            db.engine.dispose()
    state = stored_state(url, "l")
    assert state["events"] == {"l-1": (1, 2_000_000)} and state["verify_ok"]
    assert not traffic.server_errors


@pytest.mark.slow
def test_connections_dying_again_and_again_never_give_a_500(pg_through_proxy):
    """Reads and writes while the connection is cut again and again (cut once requests have
    succeeded since the last restore, restored once requests have failed since the cut): a
    request that dies at any point (its query, its commit, or the rollback when its session is
    closed after the response was made) answers 503 or its normal status, never a 500 (the app
    runs with TESTING, so an error that escaped every handler would be raised here)."""
    url, proxied, proxy = pg_through_proxy
    key = prepare(url)["admin"]
    app = create_app({**HTTP_CONFIG, "SQLALCHEMY_DATABASE_URI": proxied})
    headers = {"Authorization": f"Bearer {key}"}
    stop = threading.Event()
    failures: list[str] = []
    statuses: dict[int, int] = {}

    def hammer(kind: str) -> None:
        client = app.test_client()
        n = 0
        while not stop.is_set():
            n += 1
            try:
                if kind == "read":
                    response = client.get(
                        "/api/v1/entitlements/check",
                        query_string={"customer_key": CUSTOMER, "feature_key": "api_calls"},
                        headers=headers,
                    )
                else:
                    response = client.post(
                        "/api/v1/usage",
                        json={"customer_key": CUSTOMER, "feature_key": "api_calls"},
                        headers=headers,
                    )
            except Exception as exc:  # an error that escaped the app: the 500 of a real server
                failures.append(f"{kind}: {type(exc).__name__}: {exc}"[:300])
                continue
            statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
            if response.status_code >= 500 and response.status_code != 503:
                failures.append(f"{kind}: {response.status_code}")

    threads = [threading.Thread(target=hammer, args=(k,)) for k in ("read", "read", "write")]
    for thread in threads:
        thread.start()

    def answered(*codes: int) -> int:
        return sum(statuses.get(code, 0) for code in codes)

    try:
        for _ in range(12):
            ok = answered(200, 201)
            wait_until(lambda n=ok: answered(200, 201) > n, "a request to succeed")
            proxy.cut()
            failed = answered(503)
            wait_until(lambda n=failed: answered(503) > n, "a request to meet the cut")
            proxy.restore()
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
        with app.app_context():
            db.engine.dispose()
    assert not failures, failures[:5]
    assert statuses.get(503) and (statuses.get(200) or statuses.get(201)), statuses
    assert stored_state(url, "none")["verify_ok"]
