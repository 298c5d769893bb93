"""The webhook endpoints of /api/v1 (admin keys), each answer checked against the OpenAPI
document; delivery through the worker to a real receiver verifying the signature."""

from __future__ import annotations

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
