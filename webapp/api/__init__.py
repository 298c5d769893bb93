"""The JSON API v1 (docs/api.md): a token-authenticated door into the service layer, its
OpenAPI document at /api/v1/openapi.json and a readable page of it at /api/docs."""

from __future__ import annotations

from flask import Flask


def register(app: Flask) -> None:
    from ..extensions import csrf
    from .docs import bp as docs_bp
    from .routes import bp

    # A bearer token authenticates the API, never a cookie, so there is nothing to forge.
    csrf.exempt(bp)
    app.register_blueprint(bp)
    app.register_blueprint(docs_bp)
