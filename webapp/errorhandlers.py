"""Errors answered as JSON for API clients and as pages for people."""

from __future__ import annotations

from flask import Flask, g, jsonify, render_template, request
from sqlalchemy.exc import DBAPIError
from werkzeug.exceptions import HTTPException

from .errors import HTTP_ERROR_CODES, DomainError, ServiceUnavailable
from .services.tx import is_unavailable

API_PREFIXES = ("/api/", "/metrifox/")


def wants_json() -> bool:
    return request.path.startswith(API_PREFIXES)


def register(app: Flask) -> None:
    @app.errorhandler(DomainError)
    def domain_error(exc: DomainError):
        if wants_json():
            response = jsonify(exc.to_dict())
        else:
            if isinstance(exc, ServiceUnavailable):
                # The page must not need the database that just failed: the templates' context
                # processor would load the signed-in user again (and fail again, giving a 500).
                from .extensions import login_manager

                g._login_user = login_manager.anonymous_user()
            response = app.make_response(
                (render_template("error.html", status=exc.status, message=exc.message), exc.status)
            )
        response.status_code = exc.status
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
        if not wants_json():
            if exc.code and exc.code >= 400:
                return render_template(
                    "error.html", status=exc.code, message=exc.description
                ), exc.code
            return exc
        code = HTTP_ERROR_CODES.get(exc.code or 500, "http_error")
        response = jsonify({"error": {"code": code, "message": exc.description, "details": {}}})
        response.status_code = exc.code or 500
        if exc.code == 429:
            response.headers["Retry-After"] = str(getattr(exc, "retry_after", None) or 60)
        return response
