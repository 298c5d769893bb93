"""HTML blueprints of the dashboard: sign-in, pages, HTMX actions and admin.

Views parse input, call one service with the signed-in user as actor, and map a DomainError to a
message next to its field. Permissions are checked by the services and, before anything else, by
the ``requires`` decorator of each view (403)."""

from __future__ import annotations

from flask import Flask, request

from ..models import OVERAGE_POLICIES, PLAN_CREDIT_PERIODS, RESET_PERIODS
from . import filters
from .session import current_actor, init_login

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'self'; "
    "object-src 'none'"
)


def register(app: Flask) -> None:
    from .actions import bp as actions_bp
    from .admin import bp as admin_bp
    from .auth import bp as auth_bp
    from .pages import bp as pages_bp

    # Secure session cookies unless debugging or explicitly turned off (instance/config.py of
    # `make run`, which serves plain http on 127.0.0.1).
    for name in ("SESSION_COOKIE_SECURE", "REMEMBER_COOKIE_SECURE"):
        if app.config.get(name) is None:
            app.config[name] = not app.debug
    init_login(app)
    filters.register(app)
    app.register_blueprint(auth_bp)
    app.register_blueprint(pages_bp)
    app.register_blueprint(actions_bp)
    app.register_blueprint(admin_bp)
    app.context_processor(lambda: {"actor": current_actor()})
    # The domain's choices, for forms that list them (one source: the models).
    app.jinja_env.globals.update(
        RESET_PERIODS=RESET_PERIODS,
        OVERAGE_POLICIES=OVERAGE_POLICIES,
        PLAN_CREDIT_PERIODS=PLAN_CREDIT_PERIODS,
    )
    app.after_request(security_headers)


def security_headers(response):
    headers = response.headers
    headers.setdefault("Content-Security-Policy", CSP)
    headers.setdefault("X-Content-Type-Options", "nosniff")
    headers.setdefault("Referrer-Policy", "same-origin")
    headers.setdefault("X-Frame-Options", "DENY")
    if not request.path.startswith(("/api/", "/metrifox/", "/static/")):
        # One URL, two renderings: caches must keep the fragment and the page apart.
        response.vary.add("HX-Request")
        headers.setdefault("Cache-Control", "no-store")
    return response
