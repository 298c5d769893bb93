"""Dashboard users: the last active admin stays, whichever door asks (service, dashboard, CLI)."""

from __future__ import annotations

import pytest

from tests.web import PASSWORD, make_user
from webapp.errors import Conflict, ValidationError
from webapp.services import auth
from webapp.services.actors import SYSTEM


def test_the_last_active_admin_cannot_be_demoted_or_deactivated(app):
    ann = make_user("admin", "ann@example.com")
    with pytest.raises(Conflict, match="last active admin"):
        auth.set_user_role(SYSTEM, ann.id, "support")
    with pytest.raises(Conflict, match="last active admin"):
        auth.deactivate_user(SYSTEM, ann.id)
    bob = make_user("admin", "bob@example.com")
    auth.deactivate_user(SYSTEM, bob.id)  # two admins: one may go
    with pytest.raises(Conflict):  # an inactive admin does not count
        auth.set_user_role(SYSTEM, ann.id, "finance")
    auth.reactivate_user(SYSTEM, bob.id)
    assert auth.set_user_role(SYSTEM, ann.id, "finance").role == "finance"
    assert auth.authenticate("bob@example.com", PASSWORD) is not None


def test_a_deactivated_user_cannot_sign_in(app):
    make_user("admin")
    sue = make_user("support", "sue@example.com")
    auth.deactivate_user(SYSTEM, sue.id)
    assert auth.authenticate("sue@example.com", PASSWORD) is None


def test_ones_own_password_needs_the_current_one(app):
    sue = make_user("support", "sue@example.com")
    me = auth.user_actor(sue)
    with pytest.raises(ValidationError) as exc:
        auth.set_password(me, sue.id, "a new long password", current_password="wrong one")
    assert exc.value.field == "current_password"
    auth.set_password(me, sue.id, "a new long password", current_password=PASSWORD)
    assert auth.authenticate("sue@example.com", "a new long password") is not None


@pytest.mark.parametrize("email", ["<b>x</b>@example.com", "a b@example.com", "x@example"])
def test_a_user_email_must_be_an_address(app, email):
    with pytest.raises(ValidationError):
        auth.create_user(SYSTEM, email=email, role="support", password=PASSWORD)


def test_cli_set_role_reset_password_and_deactivate(runner, app, monkeypatch):
    make_user("admin", "ann@example.com")
    make_user("support", "sue@example.com")
    result = runner.invoke(args=["user", "set-role", "ann@example.com", "--role", "support"])
    assert result.exit_code == 1 and "last active admin" in result.output
    result = runner.invoke(args=["user", "set-role", "SUE@example.com", "--role", "finance"])
    assert result.exit_code == 0, result.output
    monkeypatch.setenv("WEBAPP_PASSWORD", "another long password")
    assert runner.invoke(args=["user", "reset-password", "sue@example.com"]).exit_code == 0
    assert auth.authenticate("sue@example.com", "another long password").role == "finance"
    assert runner.invoke(args=["user", "deactivate", "sue@example.com"]).exit_code == 0
    assert auth.authenticate("sue@example.com", "another long password") is None
    result = runner.invoke(args=["user", "deactivate", "nobody@example.com"])
    assert result.exit_code == 1 and "No user has the email" in result.output
