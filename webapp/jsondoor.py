"""What both JSON doors (/api/v1 and the Metrifox door) share, written once: the API key of a
request and its rate-limit key, the JSON body (strict UTF-8, exact numbers, duplicate keys refused,
at most ``MAX_CONTENT_LENGTH`` bytes whatever the framing), query arguments, and times as text."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from flask import Blueprint, current_app, request
from flask_limiter.util import get_remote_address

from .errors import MalformedJson, PayloadTooLarge, Unauthorized, ValidationError
from .services import auth
from .services.actors import Actor

# ---------------------------------------------------------------- who is calling


def api_key() -> str | None:
    """The API key of the request: ``Authorization: Bearer <key>`` or ``x-api-key: <key>``."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return request.headers.get("x-api-key", "").strip() or None


def key_actor(hint: str) -> Actor:
    """The actor of the request's API key; ``Unauthorized`` (saying ``hint``) without a good one."""
    secret = api_key()
    if secret is None:
        raise Unauthorized(hint)
    key = auth.authenticate_api_key(secret)
    auth.touch_api_key(key)
    return auth.key_actor(key)


def rate_key() -> str:
    """One rate limit per API key across every door (its hash: the key itself is never kept);
    per address for calls without one."""
    secret = api_key()
    if secret is None:
        return "addr:" + (get_remote_address() or "-")
    return "key:" + hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


def limit_per_key(*blueprints: Blueprint) -> None:
    """``API_RATE_LIMIT`` per API key, one budget shared by every blueprint given."""
    from .extensions import limiter

    shared = limiter.shared_limit(
        lambda: current_app.config["API_RATE_LIMIT"], scope="api-key", key_func=rate_key
    )
    for bp in blueprints:
        shared(bp)


# ---------------------------------------------------------------- bodies


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r}")
        out[key] = value
    return out


def loads(text: str) -> Any:
    """JSON with every non-integer number as Decimal; NaN, Infinity and duplicate keys refused."""
    try:
        return json.loads(
            text,
            parse_float=Decimal,
            parse_constant=_no_constants,
            object_pairs_hook=_no_duplicates,
        )
    except (ValueError, RecursionError) as exc:
        raise MalformedJson(f"The body is not valid JSON: {safe(str(exc))}") from None


def _raw_body(limit: int) -> bytes:
    """At most ``limit`` bytes of body, whatever the framing: a chunked body (no Content-Length)
    is read up to ``limit + 1`` bytes, so a longer one is refused instead of cut short."""
    too_large = PayloadTooLarge(f"The body is larger than {limit} bytes.", max_bytes=limit)
    length = request.content_length
    if length is not None:
        if length > limit:
            raise too_large
        return request.get_data(cache=True)
    if not request.environ.get("wsgi.input_terminated"):
        return b""  # no length and no framing: there is no body to read (WSGI's rule)
    stream = request.environ["wsgi.input"]
    chunks: list[bytes] = []
    size = 0
    while size <= limit:
        chunk = stream.read(limit + 1 - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    if size > limit:
        raise too_large
    return b"".join(chunks)


def json_body() -> Any:
    """The request's JSON body as Python values (numbers with a point or exponent as Decimal)."""
    if request.mimetype != "application/json":
        raise MalformedJson("Send the body as JSON with `Content-Type: application/json`.")
    charset = request.mimetype_params.get("charset", "utf-8").lower()
    if charset not in ("utf-8", "utf8"):
        raise MalformedJson("JSON bodies are UTF-8.")
    data = _raw_body(current_app.config["MAX_CONTENT_LENGTH"])
    try:
        text = data.decode("utf-8")  # strict: UTF-16 or UTF-32 is never guessed
    except UnicodeDecodeError:
        raise MalformedJson("The body is not UTF-8.") from None
    if not text.strip():
        raise MalformedJson("The body is empty; send a JSON object.")
    return loads(text)


def json_object() -> dict[str, Any]:
    body = json_body()
    if not isinstance(body, dict):
        raise ValidationError("The body must be a JSON object.")
    return body


def safe(text: str) -> str:
    """``text`` that always encodes: a lone surrogate (JSON allows "\\ud800") becomes U+FFFD."""
    return text.encode("utf-8", "replace").decode("utf-8")


# ---------------------------------------------------------------- query arguments


INTEGER_ARGS = {"limit"}


def query(allowed: tuple[str, ...]) -> dict[str, str | None]:
    """Query arguments, each at most once; unknown ones are refused like unknown JSON fields."""
    for name in request.args:
        if name not in allowed:
            takes = f"takes: {', '.join(allowed)}" if allowed else "takes no query parameters"
            raise ValidationError(
                f"Unknown query parameter `{safe(name)}`; this request {takes}.", field=safe(name)
            )
        values = request.args.getlist(name)
        if len(values) > 1:
            raise ValidationError(f"`{name}` is given more than once.", field=name)
        if name in INTEGER_ARGS and not values[0].strip():  # documented as an integer
            raise ValidationError(f"`{name}` must be a whole number.", field=name)
    return {name: request.args.get(name) for name in allowed}


# ---------------------------------------------------------------- times


def iso(value: datetime | None) -> str | None:
    """RFC 3339 in UTC with a `Z` (a naive value is taken as UTC, as the databases store it)."""
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
