"""The webhook endpoints of /api/v1 (admin keys), each answer checked against the OpenAPI
document; delivery through the worker to a real receiver verifying the signature."""

from __future__ import annotations

from datetime import datetime

import pytest

from tests.api_support import Api, api_as, error_code
from tests.webhook_receiver import Receiver
from webapp.services.worker import Worker

BASE = "/api/v1/webhooks/endpoints"


@pytest.fixture
def api(client) -> Api:
    return api_as(client, "admin")


def test_register_read_update_rotate_disable(api):
    created = api.post(
        BASE,
        {"url": "https://hooks.example.com/in", "event_types": ["wallet.depleted"]},
    )
    assert created.status_code == 201, created.get_json()
    body = created.get_json()
    assert body["secret"].startswith("whsec_") and body["enabled"] is True
    eid = body["id"]
    read = api.get(f"{BASE}/{eid}").get_json()
    assert "secret" not in read and read["event_types"] == ["wallet.depleted"]
    assert [e["id"] for e in api.get(BASE).get_json()["data"]] == [eid]
    patched = api.patch(f"{BASE}/{eid}", {"event_types": None, "description": "billing"})
    assert patched.status_code == 200
    assert (patched.get_json()["event_types"], patched.get_json()["description"]) == (
        None,
        "billing",
    )
    rotated = api.post(f"{BASE}/{eid}/rotate").get_json()
    assert rotated["secret"] != body["secret"] and rotated["previous_secret_valid_until"]
    disabled = api.post(f"{BASE}/{eid}/disable").get_json()
    assert disabled["enabled"] is False


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"url": "http://hooks.example.com/in"}, "url"),
        ({"url": "https://10.0.0.1/in"}, "url"),
        ({"url": "https://169.254.169.254/latest"}, "url"),
        ({"url": "https://hooks.example.com/in", "event_types": ["nope"]}, "event_types"),
        ({"url": "https://hooks.example.com/in", "event_types": []}, "event_types"),
        ({"url": "https://hooks.example.com/in", "enabled": "yes"}, "enabled"),
        ({"url": "https://hooks.example.com/in", "secret": "x"}, "secret"),
    ],
)
def test_bad_registrations_are_422_with_the_field_and_write_nothing(api, body, field):
    response = api.post(BASE, body)
    assert response.status_code == 422
    assert error_code(response) == "validation_error"
    assert response.get_json()["error"]["details"]["field"] == field
    assert api.get(BASE).get_json()["data"] == []


def test_only_admins(client):
    for role in ("support", "finance", "account_manager"):
        assert api_as(client, role).get(BASE).status_code == 403


def test_unknown_ids_are_404(api):
    assert api.get(f"{BASE}/99").status_code == 404
    assert api.get(f"{BASE}/{2**63}").status_code == 404  # more than the database holds
    assert api.get(f"/api/v1/webhooks/deliveries?endpoint_id={2**64}").get_json()["data"] == []
    assert api.post(f"{BASE}/99/test").status_code == 404
    assert api.post("/api/v1/webhooks/deliveries/99/resend").status_code == 404


def test_test_event_is_delivered_signed_and_listed_then_resent(app, api):
    app.config["WEBHOOK_ALLOW_PRIVATE_TARGETS"] = True
    receiver = Receiver()
    try:
        created = api.post(BASE, {"url": receiver.url}).get_json()
        receiver.secrets.append(created["secret"])
        queued = api.post(f"{BASE}/{created['id']}/test")
        assert queued.status_code == 202 and queued.get_json()["status"] == "pending"
        Worker(app.config).run(until_idle=True)
        [got] = receiver.received
        assert got.verified and got.payload["type"] == "webhook.test"
        [row] = api.get("/api/v1/webhooks/deliveries").get_json()["data"]
        assert (row["status"], row["attempts"], row["last_status_code"]) == ("delivered", 1, 200)
        assert row["event_id"] == got.msg_id and row["last_body"] == '{"n": 1}'
        again = api.post(f"/api/v1/webhooks/deliveries/{row['id']}/resend")
        assert again.status_code == 202 and again.get_json()["status"] == "pending"
        Worker(app.config).run(until_idle=True)
        assert [r.msg_id for r in receiver.received] == [got.msg_id] * 2
        filtered = api.get(f"/api/v1/webhooks/deliveries?status=failed&endpoint_id={created['id']}")
        assert filtered.get_json()["data"] == []
    finally:
        receiver.close()


def test_a_delivery_reads_with_every_attempt_newest_first_a_page_at_a_time(app, api, clock):
    """Real attempts by the worker against a real receiver (500, 500, then 200); each answer
    checked against the OpenAPI document."""
    app.config["WEBHOOK_ALLOW_PRIVATE_TARGETS"] = True
    receiver = Receiver(answer=lambda n, r: 500 if n <= 2 else 200)
    try:
        created = api.post(BASE, {"url": receiver.url}).get_json()
        receiver.secrets.append(created["secret"])
        delivery_id = api.post(f"{BASE}/{created['id']}/test").get_json()["id"]
        url = f"/api/v1/webhooks/deliveries/{delivery_id}"
        assert api.get(url).get_json()["attempt_history"] == []
        worker = Worker(app.config, name="api-test:1")
        try:
            for _ in range(3):
                worker.run_once()
                next_at = api.get(url).get_json()["next_attempt_at"]
                if next_at:
                    clock.now = datetime.fromisoformat(next_at)
        finally:
            worker.close()
    finally:
        receiver.close()
    body = api.get(url).get_json()
    [listed] = api.get("/api/v1/webhooks/deliveries").get_json()["data"]
    assert {k: body[k] for k in listed} == listed  # the list's fields, and the attempts
    history = body["attempt_history"]
    assert [(a["number"], a["outcome"], a["status_code"]) for a in history] == [
        (3, "delivered", 200),
        (2, "failed", 500),
        (1, "failed", 500),
    ]
    assert [a["body"] for a in history] == ['{"n": 3}', '{"n": 2}', '{"n": 1}']
    assert {a["worker"] for a in history} == {"api-test:1"}
    assert all(a["error"] is None and a["duration_ms"] >= 0 for a in history)
    assert history[0]["started_at"].endswith("Z") and body["next_cursor"] is None

    first = api.get(f"{url}?limit=2").get_json()
    assert [a["number"] for a in first["attempt_history"]] == [3, 2]
    rest = api.get(f"{url}?limit=2&cursor={first['next_cursor']}").get_json()
    assert [a["number"] for a in rest["attempt_history"]] == [1] and rest["next_cursor"] is None

    bad = api.get(f"{url}?cursor=nope")
    assert bad.status_code == 422 and bad.get_json()["error"]["details"]["field"] == "cursor"
    assert api.get(f"{url}?limit=0").status_code == 422
    assert api.get(f"{url}?page=2").status_code == 422


def test_a_delivery_s_attempts_are_for_admins_and_unknown_ids_are_404(client):
    admin = api_as(client, "admin")
    endpoint_id = admin.post(BASE, {"url": "https://hooks.example.com/in"}).get_json()["id"]
    delivery_id = admin.post(f"{BASE}/{endpoint_id}/test").get_json()["id"]
    for role in ("support", "finance", "account_manager"):
        other = api_as(client, role)
        for some in (delivery_id, 99):
            response = other.get(f"/api/v1/webhooks/deliveries/{some}")
            assert response.status_code == 403 and error_code(response) == "forbidden"
    for missing in (99, 2**63, 2**64):
        response = admin.get(f"/api/v1/webhooks/deliveries/{missing}")
        assert response.status_code == 404 and error_code(response) == "not_found"
    assert admin.get(f"/api/v1/webhooks/deliveries/{delivery_id}").status_code == 200
