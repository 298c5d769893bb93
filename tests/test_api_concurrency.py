"""Idempotency over real HTTP: a threaded WSGI server on both databases, 50 identical RecordUsage
requests at once with one event_id."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from sqlalchemy import func, select
from werkzeug.serving import make_server

from tests.api_support import C, make_key
from webapp.extensions import db
from webapp.models import LedgerEntry, UsageEvent

N = 50


@pytest.fixture
def server(app, catalog) -> Iterator[str]:
    httpd = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_port}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=10)


def test_fifty_identical_requests_record_one_event_and_one_deduction(server):
    secret = make_key("admin")
    db.session.commit()
    body = {
        "customer_key": C,
        "event_name": "candidate.sourced",
        "amount": 2,
        "event_id": "same-event-everywhere",
    }
    barrier = threading.Barrier(N)

    def send(_: int) -> tuple[int, dict, str | None]:
        with requests.Session() as session:
            barrier.wait(timeout=30)
            response = session.post(
                f"{server}/api/v1/usage",
                json=body,
                headers={"Authorization": f"Bearer {secret}"},
                timeout=60,
            )
            return (
                response.status_code,
                response.json(),
                response.headers.get("Idempotent-Replayed"),
            )

    with ThreadPoolExecutor(max_workers=N) as pool:
        results = list(pool.map(send, range(N)))

    statuses = sorted(status for status, _, _ in results)
    assert statuses == [200] * (N - 1) + [201], statuses
    assert all(replayed == "true" for status, _, replayed in results if status == 200)
    bodies = {repr(sorted(b.items())) for _, b, _ in results}
    assert len(bodies) == 1, bodies
    (first,) = {r[1]["credits_deducted"] for r in results}
    assert first == "0.04"
    assert results[0][1]["wallet_balance"] == "9.96"

    db.session.remove()
    events = db.session.scalar(
        select(func.count()).select_from(UsageEvent).where(UsageEvent.event_id == body["event_id"])
    )
    deductions = db.session.scalar(
        select(func.count()).select_from(LedgerEntry).where(LedgerEntry.type == "usage")
    )
    assert (events, deductions) == (1, 1)
