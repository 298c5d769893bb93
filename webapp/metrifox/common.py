"""What both Metrifox blueprints share: API-key auth, exact JSON in and out, errors with a
top-level ``message`` (the SDK raises ``APIError`` with it)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from flask import Blueprint, Response, g, request
from werkzeug.exceptions import NotFound

from ..errorhandlers import as_domain_error, json_error
from ..errors import DomainError, NotImplementedByServer, ValidationError
from ..jsondoor import iso, key_actor, limit_per_key
from ..services.actors import Actor
from ..services.money import format_micros
from ..services.periods import EPOCH

MILLISECOND = timedelta(milliseconds=1)


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


def millis(value: datetime) -> int:
    """An aware datetime as Unix milliseconds (exact, integer arithmetic)."""
    return (value - EPOCH) // MILLISECOND


def from_millis(value: object, *, field: str = "timestamp") -> object:
    """Unix milliseconds (the SDK's timestamps) as RFC 3339 text; an RFC 3339 string or None
    passes through to the service, which judges it."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, Decimal) and value == value.to_integral_value():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError(
            f"`{field}` must be Unix time in milliseconds (a whole number).", field=field
        )
    try:
        return iso(EPOCH + value * MILLISECOND)
    except OverflowError:
        raise ValidationError(f"`{field}` is out of range.", field=field) from None


# ---------------------------------------------------------------- requests


def actor() -> Actor:
    return g.metrifox_actor


def _authenticate() -> None:
    g.metrifox_actor = key_actor("Send your API key in the `x-api-key` header.")


def install(bp: Blueprint) -> None:
    """Auth before every request of ``bp`` (its errors are Metrifox-style JSON by
    ``errorhandlers.json_error``)."""
    bp.before_request(_authenticate)
    limit_per_key(bp)

    @bp.route("/<path:rest>", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
    def unknown(rest: str) -> Response:
        # Routing errors never reach a blueprint's handlers; this catch-all keeps them Metrifox
        # shaped (with `message`) for every path under the prefix.
        return json_error(
            as_domain_error(NotFound(f"No Metrifox endpoint {request.method} /{rest} here."))
        )


def not_supported(what: str) -> Response:
    return json_error(
        NotImplementedByServer(
            f"{what} is a Metrifox feature this server does not provide: it meters usage, "
            "entitlements and credit wallets only (no checkout, subscriptions or invoices)."
        )
    )
