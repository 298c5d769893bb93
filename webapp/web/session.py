"""Sign-in sessions: Flask-Login stores ``"<user id>:<session_version>"``, so bumping the version
(logout everywhere, password change, role change) ends every other session of that user."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar
from urllib.parse import urlsplit

from flask import Flask, abort, make_response, redirect, request, url_for
from flask_login import AnonymousUserMixin, current_user

from ..extensions import login_manager
from ..models import User
from ..services import auth
from ..services.actors import Actor

F = TypeVar("F", bound=Callable[..., Any])
ANONYMOUS = Actor(kind="anonymous", id=None, name="anonymous", role="")


class SessionUser:
    """What the session knows about the signed-in user: plain values, never a lazy ORM row."""

    is_authenticated = True
    is_active = True
    is_anonymous = False

    def __init__(self, user: User) -> None:
        self.id = user.id
        self.email = user.email
        self.role = user.role
        self.session_version = user.session_version

    def get_id(self) -> str:
        return f"{self.id}:{self.session_version}"


def load_user(login_id: str) -> SessionUser | None:
    user_id, _, version = login_id.partition(":")
    try:
        user = auth.get_user(int(user_id))
    except ValueError:
        return None
    if user is None or not user.active or str(user.session_version) != version:
        return None
    return SessionUser(user)


def unauthorized():
    """Sign in, then back to a page: never to a POST-only URL (that would answer 405 and lose
    what was typed). An HTMX form stays as it is, with a message in place (static/js/app.js)."""
    if request.headers.get("HX-Request"):
        return make_response("Your session ended. Sign in again.", 401)
    page = request.full_path.rstrip("?") if request.method == "GET" else _referring_page()
    return redirect(url_for("auth.login", next=page))


def _referring_page() -> str | None:
    """The page a form was posted from (same host only), or None."""
    referrer = urlsplit(request.referrer or "")
    if referrer.netloc != request.host:
        return None
    return safe_next(referrer.path + (f"?{referrer.query}" if referrer.query else ""))


def init_login(app: Flask) -> None:
    login_manager.user_loader(load_user)
    login_manager.unauthorized_handler(unauthorized)
    login_manager.anonymous_user = AnonymousUserMixin
    login_manager.session_protection = "basic"


def current_actor() -> Actor:
    if not current_user or not current_user.is_authenticated:
        return ANONYMOUS
    return auth.user_actor(current_user)  # type: ignore[arg-type]


def requires(permission: str) -> Callable[[F], F]:
    """Sign-in required (else the login page), then ``permission`` (else 403) before anything."""

    def decorate(view: F) -> F:
        @wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if not current_user.is_authenticated:
                return login_manager.unauthorized()
            if not current_actor().can(permission):
                abort(403, "Your role may not use this page.")
            return view(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate


def safe_next(target: str | None) -> str | None:
    """A same-host relative path, or None: never an absolute or scheme-relative URL."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return None
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or any(ord(ch) < 32 for ch in target):
        return None
    return target
