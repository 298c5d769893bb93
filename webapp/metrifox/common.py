"""What both Metrifox blueprints share: API-key auth, exact JSON in and out, errors with a
top-level ``message`` (the SDK raises ``APIError`` with it)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from flask import Blueprint, Response, g, request
from sqlalchemy.exc import DBAPIError
from werkzeug.exceptions import HTTPException, NotFound

from ..errors import (
    HTTP_ERROR_CODES,
    DomainError,
    ServiceUnavailable,
    Unauthorized,
    ValidationError,
)
from ..services import auth
from ..services.actors import Actor
from ..services.money import format_micros
from ..services.periods import EPOCH
from ..services.tx import is_unavailable

MILLISECOND = timedelta(milliseconds=1)


class MalformedJson(DomainError):
    code = "malformed_json"
    status = 400


class NotImplementedByServer(DomainError):
    code = "not_implemented"
    status = 501


class PayloadTooLarge(DomainError):
    code = "payload_too_large"
    status = 413


def in_sdk_terms(exc: DomainError, names: dict[str, str]) -> DomainError:
    """The same error, naming the SDK's fields (``quantity``) instead of ours (``amount``)."""
    field = exc.details.get("field")
    if field not in names:
        return exc
    message = exc.message.replace(f"`{field}`", f"`{names[field]}`")
    renamed = type(exc)(message, **{**exc.details, "field": names[field]})
    renamed.__cause__ = exc
    return renamed


# ---------------------------------------------------------------- numbers


class Number(str):
    """A JSON number written verbatim: the exact decimal text of an amount of micros."""


def num(micros: int | None) -> Number | None:
    """Micros as an exact JSON number (80000 -> 0.08), never through float."""
    return None if micros is None else Number(format_micros(micros))


def dumps(value: Any) -> str:
    """JSON text in which every ``Number`` appears as written (a raw JSON number)."""
    if isinstance(value, Number):
        return str.__str__(value)
    if isinstance(value, dict):
        return "{" + ",".join(f"{json.dumps(str(k))}:{dumps(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(dumps(v) for v in value) + "]"
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, datetime):
        return json.dumps(iso(value))
    return json.dumps(value, allow_nan=False)


def respond(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(dumps(body), status=status, mimetype="application/json", headers=headers)


def iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def millis(value: datetime) -> int:
    """An aware datetime as Unix milliseconds (exact, integer arithmetic)."""
    return (value - EPOCH) // MILLISECOND


def from_millis(value: object, *, field: str = "timestamp") -> object:
    """Unix milliseconds (the SDK's timestamps) as an aware UTC datetime; an RFC 3339 string or
    None passes through to the service, which judges it."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, Decimal) and value == value.to_integral_value():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError(
            f"`{field}` must be Unix time in milliseconds (a whole number).", field=field
        )
    try:
        return EPOCH + value * MILLISECOND
    except OverflowError:
        raise ValidationError(f"`{field}` is out of range.", field=field) from None


# ---------------------------------------------------------------- requests


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def json_body() -> dict[str, Any]:
    """The request's JSON object; numbers with a point or exponent become Decimal, never float."""
    raw = request.get_data(cache=True)
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw, parse_float=Decimal, parse_constant=_no_constants)
    except (ValueError, RecursionError):
        raise MalformedJson("The request body is not valid JSON.") from None
    if not isinstance(body, dict):
        raise MalformedJson("The request body must be a JSON object.")
    return body


def actor() -> Actor:
    return g.metrifox_actor


def _authenticate() -> None:
    secret = request.headers.get("x-api-key")
    if not secret:
        header = request.headers.get("Authorization", "")
        if header.lower().startswith("bearer "):
            secret = header[7:].strip()
    if not secret:
        raise Unauthorized("Send your API key in the `x-api-key` header.")
    key = auth.authenticate_api_key(secret)
    auth.touch_api_key(key)
    g.metrifox_actor = auth.key_actor(key)


# ---------------------------------------------------------------- errors


def error_response(exc: DomainError) -> Response:
    body = {"message": exc.message, **exc.to_dict()}
    headers = {}
    if isinstance(exc, ServiceUnavailable):
        headers["Retry-After"] = str(exc.details.get("retry_after", 1))
    return respond(body, exc.status, headers)


def _http_error(exc: HTTPException) -> Response:
    status = exc.code or 500
    message = exc.description or exc.name
    body = {
        "message": message,
        "error": {
            "code": HTTP_ERROR_CODES.get(status, "http_error"),
            "message": message,
            "details": {},
        },
    }
    headers = {"Retry-After": "60"} if status == 429 else {}
    return respond(body, status, headers)


def _database_error(exc: DBAPIError) -> Response:
    if not is_unavailable(exc):
        raise exc
    return error_response(
        ServiceUnavailable("The database is unavailable or busy; retry shortly.", retry_after=1)
    )


def install(bp: Blueprint) -> None:
    """Auth before every request of ``bp``; its errors as Metrifox-style JSON."""
    bp.before_request(_authenticate)
    bp.register_error_handler(DomainError, error_response)
    bp.register_error_handler(HTTPException, _http_error)
    bp.register_error_handler(DBAPIError, _database_error)

    @bp.route("/<path:rest>", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
    def unknown(rest: str) -> Response:
        # Routing errors never reach a blueprint's handlers; this catch-all keeps them Metrifox
        # shaped (with `message`) for every path under the prefix.
        return _http_error(NotFound(f"No Metrifox endpoint {request.method} /{rest} here."))


def not_supported(what: str) -> Response:
    return error_response(
        NotImplementedByServer(
            f"{what} is a Metrifox feature this server does not provide: it meters usage, "
            "entitlements and credit wallets only (no checkout, subscriptions or invoices)."
        )
    )
