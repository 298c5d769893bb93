"""The dashboard's webhook pages (admin): endpoints (create with the secret shown once, test
event, rotate, disable) and deliveries (status, attempts, answer, resend, every attempt in
place), with the queue."""

from __future__ import annotations

import re
from datetime import timedelta

from flask import current_app
from sqlalchemy import func, select

from tests.web import count_queries, signed_in
from tests.webhook_receiver import Receiver
from webapp.extensions import db
from webapp.models import WebhookDelivery, WebhookEndpoint, utcnow
from webapp.services import webhooks
from webapp.services.actors import SYSTEM
from webapp.services.webhooks import delivery, sender
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


def _failing_deliveries(endpoints: int, attempts: int) -> list[int]:
    """``endpoints`` test deliveries with ``attempts`` failed attempts each, recorded by the
    worker's own claim and record (the answers made up: no HTTP), time moved by ``now``. More
    than one 3-day window holds: retried for a year here."""
    current_app.config["WEBHOOK_GIVE_UP_SECONDS"] = 365 * 86400
    settings = delivery.Settings.of(current_app.config)
    ids = []
    for _ in range(endpoints):
        new = webhooks.create_endpoint(SYSTEM, url="https://hooks.example.com/x")
        ids.append(webhooks.send_test_event(SYSTEM, new.endpoint.id).id)
    now = utcnow()
    for _ in range(attempts):
        claimed = delivery.claim("budget:1", settings, now=now)
        answers = [sender.Result(500, "no", None, 15) for _ in claimed]
        delivery.record("budget:1", list(zip(claimed, answers, strict=True)), settings, now=now)
        now += timedelta(hours=7)  # past every retry's wait
    return ids


def test_attempts_expand_in_place_and_open_as_a_page_without_js(app, client, clock):
    """The deliveries page links each row's attempts; HTMX swaps the row's <tbody> for the same
    row with the attempts beneath; without JS the link is a page. Real attempts: the worker
    against a real receiver (500, then 200)."""
    app.config["WEBHOOK_ALLOW_PRIVATE_TARGETS"] = True
    signed_in(client, "admin")
    receiver = Receiver(answer=lambda n, r: 500 if n == 1 else 200)
    try:
        client.post("/admin/webhooks", data={"url": receiver.url})
        endpoint_id = db.session.scalar(select(WebhookEndpoint.id))
        receiver.secrets.append(db.session.get(WebhookEndpoint, endpoint_id).secret)
        client.post(f"/admin/webhooks/{endpoint_id}/test")
        worker = Worker(app.config, name="web-test:1")
        try:
            worker.run_once()
            clock.now = db.session.scalar(select(WebhookDelivery.next_attempt_at))
            worker.run_once()
        finally:
            worker.close()
    finally:
        receiver.close()
    delivery_id = db.session.scalar(select(WebhookDelivery.id))
    url = f"/admin/webhooks/deliveries/{delivery_id}"
    page = client.get("/admin/webhooks/deliveries").data.decode()
    assert f'href="{url}" hx-get="{url}" hx-target="closest tbody" hx-swap="outerHTML"' in page
    assert f'<tbody class="delivery" id="delivery-{delivery_id}">' in page

    fragment = client.get(url, headers={"HX-Request": "true"})
    assert fragment.status_code == 200 and "HX-Request" in fragment.headers["Vary"]
    text = fragment.data.decode()
    assert text.lstrip().startswith(
        f'<tbody class="delivery expanded" id="delivery-{delivery_id}">'
    )
    assert "<html" not in text and text.count("<tbody") == 2  # the row's and its attempts'
    assert text.index("#2") < text.index("#1")  # newest first
    for part in ("HTTP 500", "HTTP 200", "{&#34;n&#34;: 1}", "{&#34;n&#34;: 2}", "web-test:1"):
        assert part in text, part
    assert 'hx-get="' not in text  # expanded: no second expansion
    assert "Resend" in text and 'name="csrf_token"' in text  # the row's POST keeps its token

    plain = client.get(url)
    assert plain.status_code == 200 and "<html" in plain.data.decode()
    assert "HTTP 500" in plain.data.decode() and "Older attempts" not in plain.data.decode()


def test_older_attempts_are_a_page_further(app, client):
    signed_in(client, "admin")
    [delivery_id] = _failing_deliveries(1, 53)
    url = f"/admin/webhooks/deliveries/{delivery_id}"
    newest = client.get(url).data.decode()
    assert "#53" in newest and "#4<" in newest and "#3<" not in newest
    older = re.search(r'href="([^"]+cursor=[^"]+)">Older attempts', newest)
    assert older, newest
    rest = client.get(older.group(1).replace("&amp;", "&")).data.decode()
    assert "#3<" in rest and "#1<" in rest and "#4<" not in rest and "Newest attempts" in rest
    bad = client.get(f"{url}?cursor=nope")
    assert bad.status_code == 422 and "not a cursor this server gave out" in bad.data.decode()


def test_attempts_are_for_admins_only_and_an_unknown_delivery_is_404(app, client):
    [delivery_id] = _failing_deliveries(1, 1)
    for role in ("support", "finance", "account_manager"):
        client.get("/logout")
        signed_in(client, role)
        for headers in ({}, {"HX-Request": "true"}):
            for some in (delivery_id, 99):
                response = client.get(f"/admin/webhooks/deliveries/{some}", headers=headers)
                assert response.status_code == 403, (role, some, response.status_code)
    client.get("/logout")
    signed_in(client, "admin")
    for missing in (99, 2**63):
        response = client.get(f"/admin/webhooks/deliveries/{missing}")
        assert response.status_code == 404 and "No such delivery" in response.data.decode()
    fresh = _failing_deliveries(1, 0)[0]  # not tried yet: nothing to expand, a page all the same
    assert (
        f'hx-get="/admin/webhooks/deliveries/{fresh}"'
        not in client.get("/admin/webhooks/deliveries").data.decode()
    )
    assert "Not tried yet" in client.get(f"/admin/webhooks/deliveries/{fresh}").data.decode()


def test_deliveries_and_attempts_read_a_constant_number_of_queries(app, client):
    """The deliveries page reads no attempt per row (they load on demand), and one delivery's
    page reads the same whether it has 1 attempt or 40."""
    signed_in(client, "admin")
    counts = {}
    for endpoints, attempts in ((1, 1), (6, 4)):
        ids = _failing_deliveries(endpoints, attempts)
        with count_queries() as listing:
            assert client.get("/admin/webhooks/deliveries").status_code == 200
        with count_queries() as one:
            assert client.get(f"/admin/webhooks/deliveries/{ids[-1]}").status_code == 200
        with count_queries() as fragment:
            response = client.get(
                f"/admin/webhooks/deliveries/{ids[-1]}", headers={"HX-Request": "true"}
            )
            assert response.status_code == 200
        counts[endpoints] = (len(listing), len(one), len(fragment))
    [long] = _failing_deliveries(1, 40)
    with count_queries() as many:
        assert client.get(f"/admin/webhooks/deliveries/{long}").status_code == 200
    assert counts[1] == counts[6] and len(many) == counts[1][1], (counts, len(many))
    assert max(counts[1]) <= 20, counts
