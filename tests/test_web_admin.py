"""Admin pages: users and roles, API keys, customers, features, credit systems, costs and
entitlements, each through its service; errors next to the field, nothing written."""

from __future__ import annotations

import re
from datetime import timedelta

from sqlalchemy import func, select

from tests.factories import make_catalog
from tests.web import row_counts, signed_in
from webapp.extensions import db
from webapp.models import ApiKey, Customer, User
from webapp.services import auth, catalog, reads
from webapp.services.actors import SYSTEM


def test_admin_creates_a_user_and_changes_the_role(client, app):
    signed_in(client, "admin")
    response = client.post(
        "/admin/users",
        data={"email": "new@example.com", "role": "finance", "password": "long enough pw"},
    )
    assert response.status_code == 303
    user = db.session.scalar(select(User).where(User.email == "new@example.com"))
    assert user.role == "finance"
    assert client.post(f"/admin/users/{user.id}/role", data={"role": "support"}).status_code == 303
    db.session.expire_all()
    assert auth.get_user(user.id).role == "support"
    bad = client.post(f"/admin/users/{user.id}/role", data={"role": "owner"})
    assert bad.status_code == 422 and b"role" in bad.data


def test_a_duplicate_user_is_shown_next_to_email(client):
    signed_in(client, "admin")
    response = client.post(
        "/admin/users",
        data={"email": "admin@example.com", "role": "finance", "password": "long enough pw"},
    )
    assert response.status_code == 422
    assert re.search(rb'id="email-error">A user with email', response.data)


def test_a_new_api_key_is_shown_once_and_can_be_revoked(client):
    signed_in(client, "admin")
    response = client.post("/admin/api-keys", data={"name": "billing", "role": "support"})
    assert response.status_code == 303  # post/redirect/get: a reload makes no second key
    shown = client.get(response.headers["Location"])
    secret = re.search(rb'data-testid="new-api-key">(mk_[^<]+)<', shown.data).group(1)
    assert auth.authenticate_api_key(secret.decode()).name == "billing"
    assert secret not in client.get(response.headers["Location"]).data  # shown once
    assert secret not in client.get("/admin/api-keys").data
    key = db.session.scalar(select(ApiKey))
    assert client.post(f"/admin/api-keys/{key.id}/revoke").status_code == 303
    db.session.expire_all()
    assert db.session.get(ApiKey, key.id).revoked_at is not None


def test_a_new_api_key_can_expire_and_the_list_shows_when(client):
    signed_in(client, "admin")
    response = client.post(
        "/admin/api-keys", data={"name": "ci", "role": "support", "expires_days": "90"}
    )
    assert response.status_code == 303
    key = db.session.scalar(select(ApiKey))
    assert key.expires_at is not None
    assert timedelta(days=89) < key.expires_at - key.created_at <= timedelta(days=90)
    listing = client.get("/admin/api-keys").data.decode()
    assert f'data-testid="key-expiry">{key.expires_at:%Y-%m-%d}' in listing
    bad_days = {"name": "x", "role": "support", "expires_days": "7x"}
    bad = client.post("/admin/api-keys", data=bad_days)
    assert bad.status_code == 422 and b'id="expires_days-error"' in bad.data
    assert db.session.scalar(select(func.count()).select_from(ApiKey)) == 1


def test_admin_creates_edits_and_archives_a_customer(client, app):
    make_catalog()
    signed_in(client, "admin")
    response = client.post(
        "/admin/customers/new", data={"key": "cust-new", "name": "New Co", "email": ""}
    )
    assert response.status_code == 303
    assert response.headers["Location"] == "/admin/customers/cust-new/entitlements"
    response = client.post(
        "/admin/customers/cust-new/entitlements",
        data={
            "feature_key": "seats",
            "allowance": "5",
            "reset_period": "never",
            "overage": "block",
        },
    )
    assert response.status_code == 303
    (ent,) = reads.customer_summary(SYSTEM, "cust-new").entitlements
    assert ent.allowance_micros == 5_000_000
    edit = client.post("/admin/customers/cust-new/edit", data={"name": "New Co Ltd"})
    assert edit.status_code == 303
    archive = client.post("/admin/customers/cust-new/status", data={"status": "archived"})
    assert archive.status_code == 303
    db.session.expire_all()
    customer = db.session.scalar(select(Customer).where(Customer.key == "cust-new"))
    assert (customer.name, customer.status) == ("New Co Ltd", "archived")


def test_catalog_errors_are_shown_next_to_their_field_and_write_nothing(client):
    make_catalog()
    signed_in(client, "admin")
    before = row_counts()
    cases = [
        ("/admin/customers/new", {"key": "cust-6d11ca90", "name": "Dup"}, "key"),
        ("/admin/features", {"key": "Bad Key", "name": "x", "type": "consumable"}, "key"),
        ("/admin/credit-systems", {"key": "credits", "name": "Again"}, "key"),
        (
            "/admin/credit-costs",
            {"feature_key": "api_calls", "credit_system": "credits", "cost": "0"},
            "cost",
        ),
        (
            "/admin/customers/cust-6d11ca90/entitlements",
            {
                "feature_key": "seats",
                "allowance": "1.5",
                "reset_period": "never",
                "overage": "block",
            },
            "allowance",
        ),
    ]
    for url, data, field in cases:
        response = client.post(url, data=data)
        assert response.status_code == 422, url
        assert re.search(rf'<p class="error" id="{field}-error">'.encode(), response.data), url
    assert row_counts() == before


def test_admin_sets_and_removes_a_credit_cost(client):
    make_catalog()
    signed_in(client, "admin")
    data = {"feature_key": "seats", "credit_system": "credits", "cost": "1.25"}
    assert client.post("/admin/credit-costs", data=data).status_code == 303
    assert b"1.25" in client.get("/admin/credit-costs").data
    assert client.post("/admin/credit-costs/seats/remove").status_code == 303
    assert client.post("/admin/credit-costs/seats/remove").status_code == 422


def test_admin_creates_a_feature_and_a_credit_system(client):
    signed_in(client, "admin")
    assert (
        client.post(
            "/admin/credit-systems", data={"key": "ai_tokens", "name": "AI tokens"}
        ).status_code
        == 303
    )
    response = client.post(
        "/admin/features",
        data={"key": "exports", "name": "Exports", "type": "consumable", "event_name": ""},
    )
    assert response.status_code == 303
    assert [f.key for f, _, _ in catalog.list_features(SYSTEM)] == ["exports"]
    assert b"exports" in client.get("/features").data


def test_admin_edits_and_archives_features_and_credit_systems(client):
    make_catalog()
    signed_in(client, "admin")
    page = client.get("/admin/features/api_calls/edit")
    assert page.status_code == 200 and b'value="API calls"' in page.data
    assert b"data-confirm=" in page.data  # archiving asks first
    saved = client.post("/admin/features/api_calls/edit", data={"name": "Calls"})
    assert saved.status_code == 303
    assert client.post("/admin/features/api_calls/edit", data={"name": ""}).status_code == 422
    assert (
        client.post("/admin/features/api_calls/archived", data={"archived": "1"}).status_code == 303
    )
    listing = client.get("/admin/features").data
    assert b"Calls" in listing and b"archived" in listing
    edited = client.post(
        "/admin/credit-systems/credits/edit",
        data={"name": "Tokens", "unit_singular": "token", "unit_plural": "tokens"},
    )
    assert edited.status_code == 303
    done = client.post("/admin/credit-systems/credits/archived", data={"archived": "1"})
    assert done.status_code == 303
    db.session.expire_all()
    feature = catalog.get_feature("api_calls")
    system = catalog.get_credit_system("credits")
    assert feature.name == "Calls" and feature.archived_at is not None
    assert (system.name, system.unit_plural) == ("Tokens", "tokens")
    assert system.archived_at is not None
    page = client.get("/admin/credit-systems/credits/edit").data
    assert b"Unarchive" in page
    client.post("/admin/credit-systems/credits/archived", data={"archived": "0"})
    db.session.expire_all()
    assert catalog.get_credit_system("credits").archived_at is None


def test_only_admins_edit_features(client):
    make_catalog()
    signed_in(client, "finance")
    response = client.post("/admin/features/api_calls/edit", data={"name": "Nope"})
    assert response.status_code == 403
    db.session.expire_all()
    assert catalog.get_feature("api_calls").name == "API calls"
