"""Sign-in sessions: Flask-Login stores ``"<user id>:<session_version>"``, so bumping the version
(logout everywhere, password change, role change) ends every other session of that user.

Sessions also end by themselves, checked by the server on every request: after
``SESSION_IDLE_MINUTES`` without a request and ``SESSION_MAX_HOURS`` after signing in, whatever
the browser does with the cookie (the times are inside the signed session, out of reach of the
client). The clock is ``app.config["CLOCK"]`` (seconds, ``time.time``), so tests can move time."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar
from urllib.parse import urlsplit

from flask import (
    Flask,
    abort,
    current_app,
    flash,
    g,
    make_response,
    redirect,
    request,
    session,
    url_for,
)
from flask_login import AnonymousUserMixin, current_user, login_user, logout_user

from ..extensions import login_manager
from ..models import User
from ..services import auth
from ..services.actors import ANONYMOUS, Actor

F = TypeVar("F", bound=Callable[..., Any])
SIGNED_IN_AT = "signed_in_at"
SEEN_AT = "seen_at"
SEEN_GRANULARITY_S = 60  # the cookie is rewritten at most once a minute to keep the idle time


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
    app.before_request(end_expired_session)


def _now() -> float:
    return current_app.config["CLOCK"]()


def start_session(user: User) -> None:
    """A new session for a user who just proved who they are: nothing of the session before
    sign-in survives (the CSRF secret included: a token seen before sign-in is no good after)."""
    session.clear()
    g.pop("csrf_token", None)  # Flask-WTF's per-request copy of the secret
    login_user(SessionUser(user))
    session[SIGNED_IN_AT] = session[SEEN_AT] = _now()


def end_expired_session() -> None:
    """Sign out a session idle for ``SESSION_IDLE_MINUTES`` or older than ``SESSION_MAX_HOURS``
    (one without these times predates them: it ends too)."""
    if "_user_id" not in session:
        return
    now = _now()
    signed_in_at, seen_at = session.get(SIGNED_IN_AT), session.get(SEEN_AT)
    config = current_app.config
    if (
        not isinstance(signed_in_at, int | float)
        or not isinstance(seen_at, int | float)
        or now - seen_at > config["SESSION_IDLE_MINUTES"] * 60
        or now - signed_in_at > config["SESSION_MAX_HOURS"] * 3600
    ):
        logout_user()
        session.clear()
        flash("Your session has ended; sign in again.")
    elif now - seen_at >= SEEN_GRANULARITY_S:
        session[SEEN_AT] = now


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
