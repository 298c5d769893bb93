"""Webhook delivery in process: real receivers on 127.0.0.1 verifying signatures with
standardwebhooks, the worker's rounds driven by hand and time by the injected clock. The SSRF
guard's unit tests are at the top (no database)."""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from tests.webhook_receiver import Receiver
from webapp.errors import NotFound, ValidationError
from webapp.extensions import db
from webapp.models import OutboxEvent, WebhookAttempt, WebhookDelivery, WorkerJob
from webapp.services import outbox, webhooks
from webapp.services.actors import SYSTEM
from webapp.services.tx import write_transaction
from webapp.services.webhooks import delivery, sender
from webapp.services.worker import PeriodicJob, Worker, run_due_jobs

# ---------------------------------------------------------------- the SSRF guard


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "127.8.9.10",
        "::1",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",
        "169.254.1.1",
        "fe80::1",
        "fd00:ec2::254",
        "fc00::1",
        "100.64.0.1",
        "100.100.100.200",
        "192.0.0.192",
        "224.0.0.1",
        "ff0e::1",
        "0.0.0.0",
        "::",
        "::ffff:127.0.0.1",
        "::ffff:10.0.0.1",
        "64:ff9b::a00:1",
        "2002:a9fe:a9fe::1",
        "240.0.0.1",
    ],
)
def test_guard_refuses_internal_addresses(address):
    import ipaddress

    assert sender.refusal(ipaddress.ip_address(address)) is not None


@pytest.mark.parametrize("address", ["8.8.8.8", "1.1.1.1", "2001:4860:4860::8888"])
def test_guard_allows_public_addresses(address):
    import ipaddress

    assert sender.refusal(ipaddress.ip_address(address)) is None


@pytest.mark.parametrize(
    "url",
    [
        "http://hooks.example.com/x",  # plain http
        "https://127.0.0.1/x",
        "https://[::1]/x",
        "https://169.254.169.254/latest/meta-data",
        "https://localhost/x",
        "https://user:pw@hooks.example.com/x",
        "ftp://hooks.example.com/x",
        "hooks.example.com/x",
        "",
    ],
)
def test_registration_refuses(url):
    with pytest.raises(ValidationError) as info:
        sender.parse_url(url, allow_private=False)
    assert info.value.field == "url"


def test_a_name_resolving_to_a_private_address_is_refused_without_connecting():
    calls = []

    def resolver(host, port):
        calls.append(host)
        return ["10.0.0.7"]

    s = sender.Sender(allow_private=False, resolver=resolver)
    result = s.post("https://hooks.example.com/x", "{}", {})
    assert not result.delivered and result.status_code is None
    assert "refused" in (result.error or "") and "private" in (result.error or "")
    assert calls == ["hooks.example.com"] and not s._pools


def test_one_private_answer_among_public_ones_is_refused():
    s = sender.Sender(allow_private=False, resolver=lambda h, p: ["8.8.8.8", "169.254.169.254"])
    result = s.post("https://hooks.example.com/x", "{}", {})
    assert "cloud metadata" in (result.error or "") and not s._pools


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def test_rebinding_resolves_once_and_connects_to_the_checked_address(receiver):
    """The second answer (an address the check never saw) is never used: one resolution, and
    the request reaches the first address with the name in its Host header."""
    answers = iter([["127.0.0.1"], ["10.9.9.9"], ["10.9.9.9"]])
    calls = []

    def rebinding(host, port):
        calls.append(host)
        return next(answers)

    secret = webhooks.new_secret()
    receiver.secrets = [secret]
    s = sender.Sender(allow_private=True, resolver=rebinding)
    body = '{"id":"evt_1"}'
    url = f"http://rebind.example:{receiver.port}/hooks"
    result = s.post(url, body, sender.signed_headers([secret], "evt_1", body))
    assert result.delivered, result
    assert calls == ["rebind.example"]
    assert receiver.received[0].headers["host"] == f"rebind.example:{receiver.port}"
    assert [key[1] for key in s._pools] == ["127.0.0.1"]


def test_redirects_are_not_followed(receiver):
    receiver.secrets = [secret := webhooks.new_secret()]
    receiver.answer = lambda n, r: 302
    s = sender.Sender(allow_private=True)
    result = s.post(receiver.url, "{}", sender.signed_headers([secret], "evt_9", "{}"))
    assert result.status_code == 302 and not result.delivered
    assert len(receiver.received) == 1


def test_both_secrets_sign_during_a_rotation():
    old, new = webhooks.new_secret(), webhooks.new_secret()
    headers = sender.signed_headers([new, old], "evt_3", '{"a":1}')
    from standardwebhooks import Webhook

    for secret in (old, new):
        assert Webhook(secret).verify('{"a":1}', headers) == {"a": 1}
    assert len(headers["webhook-signature"].split(" ")) == 2


def test_retry_delay_grows_with_jitter_and_is_capped():
    s = delivery.Settings(retry_base=timedelta(seconds=5), retry_max=timedelta(hours=1))
    assert delivery.retry_delay(1, s, 0.0) == timedelta(seconds=2.5)
    assert delivery.retry_delay(1, s, 0.999999) < timedelta(seconds=5)
    assert delivery.retry_delay(4, s, 0.0) == timedelta(seconds=20)
    assert delivery.retry_delay(30, s, 0.0) == timedelta(seconds=1800)
    assert delivery.retry_delay(30, s, 0.99) <= timedelta(seconds=3600)


# ---------------------------------------------------------------- endpoints (service)


def test_create_validates_and_shows_the_secret_once(app):
    with pytest.raises(ValidationError) as info:
        webhooks.create_endpoint(SYSTEM, url="http://hooks.example.com/x")
    assert info.value.field == "url"
    with pytest.raises(ValidationError) as info:
        webhooks.create_endpoint(SYSTEM, url="https://hooks.example.com/x", event_types=["nope"])
    assert info.value.field == "event_types"
    new = webhooks.create_endpoint(
        SYSTEM, url="https://hooks.example.com/x", event_types=["wallet.depleted"]
    )
    assert new.secret.startswith("whsec_")
    assert webhooks.get_endpoint(SYSTEM, new.endpoint.id).event_types == ["wallet.depleted"]
    with pytest.raises(NotFound):
        webhooks.get_endpoint(SYSTEM, 999)


# ---------------------------------------------------------------- delivery (worker rounds)


@pytest.fixture
def hooks_app(app):
    app.config.update(WEBHOOK_ALLOW_PRIVATE_TARGETS=True, WORKER_CONCURRENCY=4)
    return app


def emit(*events: tuple[str, dict]) -> None:
    with write_transaction():
        for type_, data in events:
            outbox.emit(db.session.connection(), type_, data, customer_key=data.get("customer"))


def endpoint(receiver: Receiver, **kw) -> int:
    new = webhooks.create_endpoint(SYSTEM, url=receiver.url, **kw)
    receiver.secrets.append(new.secret)
    return new.endpoint.id


def test_events_reach_the_endpoints_that_want_them_signed(hooks_app, receiver):
    other = Receiver()
    try:
        endpoint(receiver)
        endpoint(other, event_types=["wallet.depleted"])
        emit(("wallet.depleted", {"customer": "c1"}), ("customer.updated", {"customer": "c2"}))
        ids = [f"evt_{i}" for i in db.session.scalars(select(OutboxEvent.id).order_by("id"))]
        Worker(hooks_app.config, rng=random.Random(1)).run(until_idle=True)
        assert sorted(receiver.ids()) == sorted(ids)
        assert other.ids() == [ids[0]]
        for got in receiver.received + other.received:
            assert got.verified
            assert got.payload["id"] == got.msg_id  # webhook-id is the event id
            assert set(got.payload) == {"id", "type", "created_at", "data"}
        statuses = db.session.scalars(select(WebhookDelivery.status)).all()
        assert statuses == ["delivered"] * 3
        assert delivery.queue_status().depth == 0
    finally:
        other.close()


def test_a_failing_receiver_is_retried_with_backoff_then_delivered(hooks_app, receiver, clock):
    """500 for the first three tries, then 200: each retry waits its (jittered) backoff on the
    injected clock, and the fourth try delivers."""
    receiver.answer = lambda n, r: 500 if n <= 3 else 200
    endpoint(receiver)
    emit(("wallet.depleted", {"customer": "c1"}))
    worker = Worker(hooks_app.config, rng=random.Random(7))
    start = clock.now
    worker.run_once()
    d = db.session.scalars(select(WebhookDelivery)).one()
    assert (d.status, d.attempts, d.last_status_code) == ("pending", 1, 500)
    for number in (1, 2, 3):
        wait = d.next_attempt_at - clock.now
        step = 5 * 2 ** (number - 1)
        assert timedelta(seconds=step / 2) <= wait < timedelta(seconds=step)
        assert worker.run_once() == 0  # not due yet: nothing sent
        clock.now = db.session.scalars(select(WebhookDelivery)).one().next_attempt_at
        worker.run_once()
        d = db.session.scalars(select(WebhookDelivery)).one()
    assert (d.status, d.attempts, d.last_status_code) == ("delivered", 4, 200)
    assert len(receiver.received) == 4 and clock.now - start < timedelta(seconds=40)
    outcomes = db.session.scalars(select(WebhookAttempt.outcome).order_by("number")).all()
    assert outcomes == ["failed", "failed", "failed", "delivered"]
    worker.close()


def test_a_delivery_fails_after_three_days(hooks_app, receiver, clock):
    receiver.answer = lambda n, r: 503
    endpoint(receiver)
    emit(("wallet.depleted", {"customer": "c1"}))
    worker = Worker(hooks_app.config, rng=random.Random(3))
    start = clock.now
    for _ in range(100):
        worker.run_once()
        d = db.session.scalars(select(WebhookDelivery)).one()
        if d.status != "pending":
            break
        clock.now = d.next_attempt_at
    assert d.status == "failed"
    assert clock.now - start <= timedelta(days=3)
    assert 10 < d.attempts < 40 and d.attempts == len(receiver.received)
    worker.close()


def test_a_claim_whose_worker_died_is_retried_after_the_lease(hooks_app, receiver, clock):
    endpoint(receiver)
    emit(("wallet.depleted", {"customer": "c1"}))
    settings = delivery.Settings(lease=timedelta(seconds=60))
    delivery.fan_out(settings)
    first = delivery.claim("dead-worker", settings)
    assert [c.number for c in first] == [1]
    db.session.remove()
    assert delivery.claim("w2", settings) == []  # leased
    clock.advance(seconds=61)
    second = delivery.claim("w2", settings)
    assert [c.number for c in second] == [2]
    # the dead worker's late failure is recorded on its own attempt and moves nothing
    delivery.record("dead-worker", [(first[0], sender.Result(500, "", None, 5))], settings)
    d = db.session.scalars(select(WebhookDelivery)).one()
    assert (d.status, d.attempts, d.leased_by, d.last_status_code) == ("pending", 2, "w2", None)
    worker = Worker(hooks_app.config)
    assert delivery.record("w2", worker.send(second), settings).delivered == 1
    worker.close()
    rows = db.session.execute(
        select(WebhookAttempt.number, WebhookAttempt.worker, WebhookAttempt.outcome).order_by(
            "number"
        )
    ).all()
    assert rows == [(1, "dead-worker", "failed"), (2, "w2", "delivered")]
    d = db.session.scalars(select(WebhookDelivery)).one()
    assert (d.status, d.leased_by, d.lease_until) == ("delivered", None, None)


def test_rotation_signs_with_both_secrets_for_24_hours(hooks_app, receiver, clock):
    endpoint_id = endpoint(receiver)
    old = receiver.secrets[0]
    new = webhooks.rotate_secret(SYSTEM, endpoint_id).secret
    receiver.secrets = [old]  # a receiver still on the old secret
    emit(("wallet.depleted", {"customer": "c1"}))
    worker = Worker(hooks_app.config)
    worker.run(until_idle=True)
    assert receiver.received[-1].verified
    clock.advance(hours=24, seconds=1)
    receiver.secrets = [new]
    emit(("wallet.depleted", {"customer": "c2"}))
    Worker(hooks_app.config).run(until_idle=True)
    last = receiver.received[-1]
    assert last.verified and len(last.headers["webhook-signature"].split(" ")) == 1


def test_test_event_and_resend(hooks_app, receiver):
    endpoint_id = endpoint(receiver)
    webhooks.send_test_event(SYSTEM, endpoint_id)
    Worker(hooks_app.config).run(until_idle=True)
    assert [r.payload["type"] for r in receiver.received] == ["webhook.test"]
    [row] = webhooks.list_deliveries(SYSTEM)
    assert (row.status, row.attempts, row.last_status_code) == ("delivered", 1, 200)
    assert row.last_body == '{"n": 1}'
    webhooks.resend(SYSTEM, row.id)
    Worker(hooks_app.config).run(until_idle=True)
    assert len(receiver.received) == 2
    assert receiver.received[0].msg_id == receiver.received[1].msg_id == f"evt_{row.event_id}"
    [row] = webhooks.list_deliveries(SYSTEM)
    assert (row.status, row.attempts) == ("delivered", 2)


def test_disabled_endpoints_get_nothing(hooks_app, receiver):
    endpoint_id = endpoint(receiver)
    webhooks.disable_endpoint(SYSTEM, endpoint_id)
    emit(("wallet.depleted", {"customer": "c1"}))
    Worker(hooks_app.config).run(until_idle=True)
    assert receiver.received == []
    assert db.session.scalar(select(func.count()).select_from(WebhookDelivery)) == 0


def test_queue_status_and_prune(hooks_app, receiver, clock):
    endpoint(receiver)
    emit(("wallet.depleted", {"customer": "c1"}), ("wallet.depleted", {"customer": "c2"}))
    clock.advance(seconds=30)
    status = delivery.queue_status()
    assert (status.depth, status.oldest_age_s) == (2, 30)
    Worker(hooks_app.config).run(until_idle=True)
    assert delivery.queue_status().depth == 0
    assert delivery.prune(retention_days=30) == 0
    clock.advance(days=31)
    assert delivery.prune(retention_days=30) == 2
    assert db.session.scalar(select(func.count()).select_from(OutboxEvent)) == 0
    assert db.session.scalar(select(func.count()).select_from(WebhookAttempt)) == 0


def test_periodic_jobs_run_once_per_interval(app, clock):
    runs = []
    job = PeriodicJob("test.job", timedelta(minutes=1), runs.append)
    assert run_due_jobs([job]) == 1
    assert run_due_jobs([job]) == 0
    clock.advance(seconds=59)
    assert run_due_jobs([job]) == 0
    clock.advance(seconds=1)
    assert run_due_jobs([job]) == 1
    assert len(runs) == 2
    row = db.session.get(WorkerJob, "test.job")
    assert row.last_error is None and row.last_finished_at is not None


def test_a_failing_job_is_logged_and_the_worker_goes_on(app, clock):
    def boom(now):
        raise RuntimeError("nope")

    assert run_due_jobs([PeriodicJob("test.boom", timedelta(minutes=1), boom)]) == 1
    assert "nope" in db.session.get(WorkerJob, "test.boom").last_error


def test_worker_status_command(hooks_app, runner, receiver):
    endpoint(receiver)
    emit(("wallet.depleted", {"customer": "c1"}))
    result = runner.invoke(args=["worker", "status"])
    assert result.exit_code == 0, result.output
    assert "queue depth: 1" in result.output
    assert "oldest undelivered event:" in result.output
    Worker(hooks_app.config).run(until_idle=True)
    result = runner.invoke(args=["worker", "status"])
    assert "queue depth: 0" in result.output and "oldest undelivered event: none" in result.output
    assert "job credits.expire: last finished" in result.output


def test_a_claim_fits_in_its_lease_even_if_every_call_takes_10_s(app):
    app.config.update(WORKER_BATCH=50, WORKER_CONCURRENCY=8, WEBHOOK_LEASE_SECONDS=60)
    worker = Worker(app.config)
    assert worker.claim_size == 40  # 5 rounds of 8 calls of at most 10 s < 60 s
    app.config.update(WEBHOOK_LEASE_SECONDS=2, WORKER_CONCURRENCY=2)
    small = Worker(app.config)
    assert small.claim_size == 2
    worker.close()
    small.close()


def test_a_failing_round_is_logged_and_the_worker_goes_on(hooks_app, receiver, monkeypatch, caplog):
    """E.g. the database away for a moment: the round is logged, the worker pauses and goes on."""
    endpoint(receiver)
    emit(("wallet.depleted", {"customer": "c1"}))
    hooks_app.config["WORKER_POLL_SECONDS"] = 0.001
    worker = Worker(hooks_app.config)
    real, calls = delivery.fan_out, []

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("the database went away")
        if len(calls) == 3:
            worker.stop.set()
        return real(*args, **kwargs)

    monkeypatch.setattr(delivery, "fan_out", flaky)
    worker.run()
    assert [r.verified for r in receiver.received] == [True]
    assert "round failed" in caplog.text and "the database went away" in caplog.text


def test_https_connects_to_the_checked_address_with_the_name_for_sni_and_certificate(tmp_path):
    """A real TLS receiver whose certificate names hooks.test only: the sender connects to the
    resolved 127.0.0.1 yet presents and verifies the name (SNI, certificate); a name the
    certificate does not carry fails."""
    import ssl
    import subprocess
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"]
        + ["-keyout", str(key), "-out", str(cert), "-subj", "/CN=hooks.test"]
        + ["-addext", "subjectAltName=DNS:hooks.test"],
        check=True,
        capture_output=True,
    )
    seen = {}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            seen["host"] = self.headers["host"]
            seen["sni"] = getattr(self.connection, "sni", None)
            self.rfile.read(int(self.headers["content-length"]))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)

    def remember_sni(sock, name, ctx):
        sock.sni = name

    context.sni_callback = remember_sni
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    port = server.server_address[1]
    try:
        names = {"hooks.test": ["127.0.0.1"], "other.test": ["127.0.0.1"]}
        s = sender.Sender(allow_private=True, resolver=lambda h, p: names[h], ca_certs=str(cert))
        result = s.post(f"https://hooks.test:{port}/in", "{}", {})
        assert result.status_code == 204 and result.delivered, result
        assert seen == {"host": f"hooks.test:{port}", "sni": "hooks.test"}
        wrong = s.post(f"https://other.test:{port}/in", "{}", {})
        assert not wrong.delivered and "other.test" in (wrong.error or ""), wrong
        s.close()
    finally:
        server.shutdown()
        server.server_close()


def test_a_receiver_failing_for_30_seconds_then_answering_gets_everything(
    hooks_app, receiver, clock
):
    """500 until 30 s (on the injected clock) after the events, then 200: every event is
    delivered, on the first try after the outage, with the backoff's own schedule."""
    start = clock.now
    receiver.answer = lambda n, r: 500 if clock.now < start + timedelta(seconds=30) else 200
    endpoint(receiver)
    emit(*[("wallet.depleted", {"customer": f"c{i}"}) for i in range(5)])
    worker = Worker(hooks_app.config, rng=random.Random(11))
    for _ in range(50):
        worker.run_once()
        due = db.session.scalar(
            select(func.min(WebhookDelivery.next_attempt_at)).where(
                WebhookDelivery.status == "pending"
            )
        )
        if due is None:
            break
        clock.now = max(clock.now, due)
    worker.close()
    assert db.session.scalars(select(WebhookDelivery.status)).all() == ["delivered"] * 5
    ok = [r for r in receiver.received if r.verified]
    assert len({r.msg_id for r in ok}) == 5
    assert clock.now - start < timedelta(seconds=30 + 40)  # the next try after 30 s came soon
    failed = db.session.scalar(
        select(func.count()).select_from(WebhookAttempt).where(WebhookAttempt.outcome == "failed")
    )
    assert failed == len(receiver.received) - 5 >= 5 * 3  # 2.5-5, 5-10, 10-20 s: 3+ tries each
