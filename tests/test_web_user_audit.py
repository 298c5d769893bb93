"""Every action on a user account is in the audit log with its actor and the user it was done to:
an admin's sign-out-everywhere, role change and password reset, and one's own."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from tests.web import PASSWORD, forget_user_between_requests, login, make_user, signed_in
from webapp.errors import Forbidden
from webapp.extensions import db
from webapp.models import AuditLog
from webapp.services import auth
from webapp.services.actors import SYSTEM


@pytest.fixture(autouse=True)
def _fresh_requests(app):
    forget_user_between_requests(app)


def _audit(action: str) -> list[tuple[str, str | None]]:
    db.session.rollback()
    rows = db.session.scalars(select(AuditLog).where(AuditLog.action == action))
    return [(row.actor, row.target) for row in rows]


@pytest.mark.parametrize(
    ("path", "data", "action"),
    [
        ("logout", {}, "user.logged_out"),
        ("role", {"role": "support"}, "user.role_changed"),
        ("password", {"password": "a brand new password"}, "user.password_changed"),
    ],
)
def test_admin_actions_on_a_user_name_that_user_in_the_audit_log(client, path, data, action):
    bob = make_user("finance", "bob@example.com")
    signed_in(client, "admin")
    response = client.post(f"/admin/users/{bob.id}/{path}", data=data)
    assert response.status_code == 303
    assert _audit(action) == [("user:admin@example.com", "user:bob@example.com")]


def test_signing_oneself_out_everywhere_names_oneself(client):
    make_user("support", "sue@example.com")
    login(client, "sue@example.com", PASSWORD)
    assert client.post("/logout/everywhere").status_code == 303
    assert _audit("user.logged_out") == [("user:sue@example.com", "user:sue@example.com")]


def test_only_an_admin_ends_someone_elses_sessions(app):
    bob = make_user("finance", "bob@example.com")
    sue = make_user("support", "sue@example.com")
    with pytest.raises(Forbidden):
        auth.end_sessions(auth.user_actor(sue), bob.id)
    assert _audit("user.logged_out") == []
    auth.end_sessions(SYSTEM, bob.id)
    assert _audit("user.logged_out") == [(SYSTEM.label, "user:bob@example.com")]
