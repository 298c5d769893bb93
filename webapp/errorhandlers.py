"""Errors answered as JSON for API clients and as pages for people. Every error, whether a
service raised it or the HTTP layer did (404, 405, 413, 429, ...), is answered from its
DomainError kind in ``webapp.errors``: one table for every door."""

from __future__ import annotations

import time

from flask import Flask, Response, g, jsonify, render_template, request
from flask_limiter.errors import RateLimitExceeded
from sqlalchemy.exc import DBAPIError
from werkzeug.exceptions import HTTPException

from .errors import DomainError, RateLimited, ServiceUnavailable, from_http
from .services.tx import is_unavailable

API_PREFIXES = ("/api/", "/metrifox/")
METRIFOX_PREFIX = "/metrifox/"


def wants_json() -> bool:
    return request.path.startswith(API_PREFIXES)


def as_domain_error(exc: HTTPException) -> DomainError:
    """An HTTP-layer error as the DomainError of its status (429 with the seconds to wait)."""
    if isinstance(exc, RateLimitExceeded):
        from .extensions import limiter

        current = limiter.current_limit
        retry_after = 1 if current is None else max(1, int(current.reset_at - time.time()))
        return RateLimited(
            f"Too many requests for this API key (limit {exc.description}).",
            retry_after=retry_after,
        )
    return from_http(exc.code or 500, exc.description or exc.name)


def json_error(exc: DomainError) -> Response:
    body = exc.to_dict()
    if request.path.startswith(METRIFOX_PREFIX):
        body = {"message": exc.message, **body}  # the Metrifox SDK raises APIError with it
    response = jsonify(body)
    response.status_code = exc.status
    if isinstance(exc, ServiceUnavailable | RateLimited):
        response.headers["Retry-After"] = str(exc.details.get("retry_after", 1))
    return response


def register(app: Flask) -> None:
    @app.errorhandler(DomainError)
    def domain_error(exc: DomainError):
        if wants_json():
            return json_error(exc)
        if isinstance(exc, ServiceUnavailable):
            # The page must not need the database that just failed: the templates' context
            # processor would load the signed-in user again (and fail again, giving a 500).
            from .extensions import login_manager

            g._login_user = login_manager.anonymous_user()
        response = app.make_response(
            (render_template("error.html", status=exc.status, message=exc.message), exc.status)
        )
        if isinstance(exc, ServiceUnavailable):
            response.headers["Retry-After"] = str(exc.details.get("retry_after", 1))
        return response

    @app.errorhandler(DBAPIError)
    def database_error(exc: DBAPIError):
        if not is_unavailable(exc):
            raise exc
        return domain_error(
            ServiceUnavailable("The database is unavailable or busy; retry shortly.", retry_after=1)
        )

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        if wants_json():
            return json_error(as_domain_error(exc))
        if exc.code and exc.code >= 400:
            return render_template("error.html", status=exc.code, message=exc.description), exc.code
        return exc
