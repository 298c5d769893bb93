"""The dashboard's webhook pages (admin): endpoints (create with the secret shown once, test
event, rotate, disable) and deliveries (status, attempts, answer, resend), with the queue."""

from __future__ import annotations

import re

from sqlalchemy import func, select

from tests.web import count_queries, signed_in
from tests.webhook_receiver import Receiver
from webapp.extensions import db
from webapp.models import WebhookDelivery, WebhookEndpoint
from webapp.services.worker import Worker


def _secret(client, response) -> str:
    assert response.status_code == 303
    page = client.get(response.headers["Location"]).data
    found = re.search(rb'data-testid="new-webhook-secret">(whsec_[^<]+)<', page)
    assert found, page
    assert found.group(1) not in client.get(response.headers["Location"]).data  # shown once
    return found.group(1).decode()


def test_bad_url_is_shown_next_to_the_field_and_writes_nothing(client):
    signed_in(client, "admin")
    bad = client.post("/admin/webhooks", data={"url": "http://hooks.example.com/x"})
    assert bad.status_code == 422 and b'id="url-error"' in bad.data
    assert b"Plain http is refused" in bad.data
    bad = client.post(
        "/admin/webhooks", data={"url": "https://hooks.example.com/x", "event_types": "nope"}
    )
    assert bad.status_code == 422 and b'id="event_types-error"' in bad.data
    assert db.session.scalar(select(func.count()).select_from(WebhookEndpoint)) == 0


def test_create_test_rotate_disable_and_resend(app, client):
    app.config["WEBHOOK_ALLOW_PRIVATE_TARGETS"] = True
    signed_in(client, "admin")
    receiver = Receiver(answer=lambda n, r: 500 if n == 1 else 200)
    try:
        response = client.post(
            "/admin/webhooks", data={"url": receiver.url, "event_types": "", "description": "ops"}
        )
        receiver.secrets.append(_secret(client, response))
        endpoint_id = db.session.scalar(select(WebhookEndpoint.id))
        assert client.post(f"/admin/webhooks/{endpoint_id}/test").status_code == 303
        page = client.get("/admin/webhooks").data.decode()
        assert "queue: <strong>1</strong>" in page and "ops" in page
        Worker(app.config).run(until_idle=True)
        deliveries = client.get("/admin/webhooks/deliveries").data.decode()
        assert "HTTP 500" in deliveries and ">pending<" in deliveries
        delivery_id = db.session.scalar(select(WebhookDelivery.id))
        assert client.post(f"/admin/webhooks/deliveries/{delivery_id}/resend").status_code == 303
        Worker(app.config).run(until_idle=True)
        deliveries = client.get(f"/admin/webhooks/deliveries?endpoint_id={endpoint_id}")
        text = deliveries.data.decode()
        assert ">delivered<" in text and "HTTP 200" in text and "{&#34;n&#34;: 2}" in text
        assert [r.verified for r in receiver.received] == [True, True]
        rotated = client.post(f"/admin/webhooks/{endpoint_id}/rotate")
        new = _secret(client, rotated)
        assert new not in receiver.secrets
        off = client.post(f"/admin/webhooks/{endpoint_id}/enabled", data={"enabled": "false"})
        assert off.status_code == 303
        db.session.expire_all()
        assert db.session.get(WebhookEndpoint, endpoint_id).enabled is False
        assert ">disabled<" in client.get("/admin/webhooks").data.decode()
        missing = client.post("/admin/webhooks/99/test")
        assert missing.status_code == 422 and b"No such webhook endpoint" in missing.data
    finally:
        receiver.close()


def test_pages_read_a_constant_number_of_queries(app, client):
    signed_in(client, "admin")
    counts = []
    for n in (1, 6):
        while db.session.scalar(select(func.count()).select_from(WebhookEndpoint)) < n:
            client.post("/admin/webhooks", data={"url": "https://hooks.example.com/x"})
            endpoint = db.session.scalar(select(func.max(WebhookEndpoint.id)))
            client.post(f"/admin/webhooks/{endpoint}/test")
        row = []
        for url in ("/admin/webhooks", "/admin/webhooks/deliveries"):
            with count_queries() as statements:
                assert client.get(url).status_code == 200
            row.append(len(statements))
        counts.append(row)
    assert counts[0] == counts[1] and max(counts[0]) <= 20, counts
