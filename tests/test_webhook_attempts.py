"""Every attempt of a webhook delivery, read back (webhooks.delivery_attempts): the attempts are
made by the real worker against real receivers on 127.0.0.1 (or a closed port, or an address
the SSRF guard refuses), time moves by the injected clock."""

from __future__ import annotations

import random
import socket
from datetime import timedelta

import pytest

from tests.conftest import actor
from tests.test_webhooks import emit, endpoint, hooks_app, receiver  # noqa: F401 (fixtures)
from tests.webhook_receiver import Receiver
from webapp.errors import Forbidden, NotFound, ValidationError
from webapp.services import webhooks
from webapp.services.actors import SYSTEM
from webapp.services.webhooks import delivery, sender
from webapp.services.worker import Worker


def _retry_until_done(worker: Worker, clock, delivery_id: int, *, rounds: int = 100) -> None:
    """Run the worker, moving the clock to each next try, until the delivery is not pending."""
    for _ in range(rounds):
        worker.run_once()
        row = webhooks.get_delivery(SYSTEM, delivery_id)
        if row.status != "pending":
            return
        assert row.next_attempt_at is not None
        clock.now = row.next_attempt_at
    raise AssertionError("still pending")


def _only_delivery() -> int:
    delivery.fan_out(delivery.Settings())  # the outbox event becomes its delivery
    [row] = webhooks.list_deliveries(SYSTEM)
    return row.id


def test_every_attempt_is_listed_newest_first_with_its_answer_and_worker(
    hooks_app,  # noqa: F811
    receiver,  # noqa: F811
    clock,
):
    receiver.answer = lambda n, r: 500 if n <= 2 else 204
    endpoint(receiver)
    emit(("wallet.depleted", {"customer": "c1"}))
    worker = Worker(hooks_app.config, name="worker-a:1", rng=random.Random(5))
    started = []
    try:
        for _ in range(3):
            started.append(clock.now)
            worker.run_once()
            row = webhooks.get_delivery(SYSTEM, _only_delivery())
            if row.next_attempt_at:
                clock.now = row.next_attempt_at
    finally:
        worker.close()
    found = webhooks.delivery_attempts(SYSTEM, row.id)
    assert found.delivery == row and (row.status, row.attempts) == ("delivered", 3)
    assert [a.number for a in found.attempts] == [3, 2, 1]
    assert [a.outcome for a in found.attempts] == ["delivered", "failed", "failed"]
    assert [a.status_code for a in found.attempts] == [204, 500, 500]
    assert [a.body for a in found.attempts] == ["", '{"n": 2}', '{"n": 1}']
    assert [a.started_at for a in found.attempts] == started[::-1]
    for a in found.attempts:
        assert a.worker == "worker-a:1" and a.error is None
        assert a.finished_at == a.started_at  # the clock stood still while it sent
        assert a.duration_ms is not None and 0 <= a.duration_ms < 10_000
    assert found.next_cursor is None


def test_errors_without_an_answer_say_why(hooks_app, clock, monkeypatch):  # noqa: F811
    """A closed port, a receiver slower than the timeout, an address the SSRF guard refuses:
    each attempt keeps its own error; the delivery row shows only the last attempt's."""
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()  # nothing listens there now: the connection is refused
    refused_id = webhooks.create_endpoint(
        SYSTEM, url=f"http://127.0.0.1:{port}/in", event_types=["wallet.depleted"]
    ).endpoint.id
    slow = Receiver(delay_s=1.0)
    try:
        slow_id = endpoint(slow, event_types=["wallet.balance_low"])
        emit(("wallet.depleted", {"customer": "c1"}), ("wallet.balance_low", {"customer": "c1"}))
        monkeypatch.setattr(sender, "TIMEOUT_S", 0.3)  # a real timeout, without waiting 10 s
        local = Worker(hooks_app.config, name="local:1")
        try:
            local.run_once()
            slow.delay_s = 0
            clock.now = webhooks.get_delivery(SYSTEM, _of(slow_id)).next_attempt_at
            local.run_once()  # the slow receiver answers in time now
        finally:
            local.close()
    finally:
        slow.close()
    refused = webhooks.delivery_attempts(SYSTEM, _of(refused_id)).attempts
    assert refused  # one or two tries, as the jitter fell
    for connect in refused:
        assert connect.outcome == "failed" and connect.status_code is None
        assert "Connection refused" in connect.error and connect.body is None

    found = webhooks.delivery_attempts(SYSTEM, _of(slow_id))
    answered, timeout = found.attempts
    assert (timeout.outcome, timeout.status_code, timeout.body) == ("failed", None, None)
    assert "timed out" in timeout.error
    assert (answered.outcome, answered.status_code, answered.error) == ("delivered", 200, None)
    assert found.delivery.last_error is None  # the row forgot the timeout; the history did not

    # A worker that may not reach private addresses, where the name resolves to one.
    guarded = webhooks.create_endpoint(
        SYSTEM, url="https://hooks.example.com/in", event_types=["customer.updated"]
    ).endpoint.id
    emit(("customer.updated", {"customer": "c1"}))
    private = {**hooks_app.config, "WEBHOOK_ALLOW_PRIVATE_TARGETS": False}
    guard = Worker(private, name="guard:1", resolver=lambda host, port: ["10.0.0.7"])
    try:
        guard.run_once()
    finally:
        guard.close()
    [ssrf] = webhooks.delivery_attempts(SYSTEM, _of(guarded)).attempts
    assert (ssrf.number, ssrf.worker, ssrf.status_code) == (1, "guard:1", None)
    assert ssrf.error.startswith("refused: hooks.example.com resolves to 10.0.0.7")


def _of(endpoint_id: int) -> int:
    """The one delivery of an endpoint."""
    [row] = webhooks.list_deliveries(SYSTEM, endpoint_id=endpoint_id)
    return row.id


def test_an_attempt_in_flight_and_one_whose_worker_died(hooks_app, receiver, clock):  # noqa: F811
    endpoint(receiver)
    emit(("wallet.depleted", {"customer": "c1"}))
    settings = delivery.Settings(lease=timedelta(seconds=60))
    delivery.fan_out(settings)
    delivery.claim("dead-worker:7", settings)
    clock.advance(seconds=61)
    delivery.claim("w2:8", settings)
    found = webhooks.delivery_attempts(SYSTEM, _only_delivery())
    second, first = found.attempts
    assert (second.number, second.outcome, second.worker) == (2, "in_flight", "w2:8")
    assert second.finished_at is None and second.duration_ms is None
    assert (first.outcome, first.worker, first.error) == (
        "lease_expired",
        "dead-worker:7",
        "the worker stopped",
    )


class _Fixed(random.Random):
    """The shortest jitter every time: the most attempts the backoff can make."""

    def random(self) -> float:
        return 0.0


def test_the_backoff_makes_at_most_36_attempts_in_three_days_and_resends_add_more(
    hooks_app,  # noqa: F811
    receiver,  # noqa: F811
    clock,
):
    receiver.answer = lambda n, r: 503
    endpoint(receiver)
    emit(("wallet.depleted", {"customer": "c1"}))
    bound = delivery.max_attempts_per_window(delivery.Settings.of(hooks_app.config))
    assert bound == 36 == delivery.max_attempts_per_window(delivery.Settings())
    worker = Worker(hooks_app.config, rng=_Fixed())
    try:
        delivery_id = _only_delivery()
        _retry_until_done(worker, clock, delivery_id)
        assert webhooks.get_delivery(SYSTEM, delivery_id).attempts == bound
        webhooks.resend(SYSTEM, delivery_id)  # a new 3-day window: attempts count on
        worker.run_once()
    finally:
        worker.close()
    assert len(receiver.received) == bound + 1
    found = webhooks.delivery_attempts(SYSTEM, delivery_id)
    assert [a.number for a in found.attempts] == list(range(bound + 1, 0, -1))
    assert found.next_cursor is None  # 37 fit the default page of 50


def test_attempts_come_a_page_at_a_time(hooks_app, receiver, clock):  # noqa: F811
    receiver.answer = lambda n, r: 500
    endpoint(receiver)
    emit(("wallet.depleted", {"customer": "c1"}))
    worker = Worker(hooks_app.config, rng=random.Random(2))
    try:
        delivery_id = _only_delivery()
        for _ in range(7):
            worker.run_once()
            clock.now = webhooks.get_delivery(SYSTEM, delivery_id).next_attempt_at
    finally:
        worker.close()
    pages, cursor = [], None
    while True:
        found = webhooks.delivery_attempts(SYSTEM, delivery_id, cursor=cursor, limit=3)
        pages.append([a.number for a in found.attempts])
        cursor = found.next_cursor
        if cursor is None:
            break
    assert pages == [[7, 6, 5], [4, 3, 2], [1]]
    with pytest.raises(ValidationError) as bad:
        webhooks.delivery_attempts(SYSTEM, delivery_id, cursor="nope")
    assert bad.value.field == "cursor"
    with pytest.raises(ValidationError):
        webhooks.delivery_attempts(SYSTEM, delivery_id, limit=201)


@pytest.mark.parametrize("delivery_id", [99, 0, -1, 2**63])
def test_an_unknown_delivery_is_not_found(app, delivery_id):
    with pytest.raises(NotFound) as missing:
        webhooks.delivery_attempts(SYSTEM, delivery_id)
    assert (missing.value.code, missing.value.field) == ("not_found", "delivery")


@pytest.mark.parametrize("role", ["support", "finance", "account_manager"])
def test_only_admins_read_attempts(app, role):
    new = webhooks.create_endpoint(SYSTEM, url="https://hooks.example.com/in")
    delivery_id = webhooks.send_test_event(SYSTEM, new.endpoint.id).id
    with pytest.raises(Forbidden):
        webhooks.delivery_attempts(actor(role), delivery_id)
    with pytest.raises(Forbidden):  # an unknown id says nothing more
        webhooks.delivery_attempts(actor(role), 99)
    assert webhooks.delivery_attempts(actor("admin"), delivery_id).attempts == []
