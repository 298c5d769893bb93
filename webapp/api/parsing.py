"""Turning an HTTP request into plain values: JSON bodies (Decimal, never float), strict field
lists taken from the OpenAPI request schemas, and query arguments. No business rule lives here:
the services judge the values; this only refuses what is not the documented shape."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from flask import request

from ..errors import DomainError, ValidationError
from .openapi import SCHEMAS


class MalformedJson(DomainError):
    code = "malformed_json"
    status = 400


class PayloadTooLarge(DomainError):
    code = "payload_too_large"
    status = 413


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r}")
        out[key] = value
    return out


def loads(body: bytes | str) -> Any:
    """JSON with every non-integer number as Decimal; NaN, Infinity and duplicate keys refused."""
    try:
        return json.loads(
            body,
            parse_float=Decimal,
            parse_constant=_no_constants,
            object_pairs_hook=_no_duplicates,
        )
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError too
        raise MalformedJson(f"The body is not valid JSON: {exc}") from None


def json_body() -> Any:
    if request.mimetype != "application/json":
        raise MalformedJson("Send the body as JSON with `Content-Type: application/json`.")
    charset = request.mimetype_params.get("charset", "utf-8").lower()
    if charset not in ("utf-8", "utf8"):
        raise MalformedJson("JSON bodies are UTF-8.")
    data = request.get_data(cache=True)  # Werkzeug enforces MAX_CONTENT_LENGTH here (413)
    if not data.strip():
        raise MalformedJson("The body is empty; send a JSON object.")
    return loads(data)


_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "number": (int, Decimal),
    "integer": (int,),
    "object": (dict,),
    "array": (list,),
    "boolean": (bool,),
}


def _type_ok(value: Any, types: str | list[str] | None) -> bool:
    if types is None:
        return True
    names = [types] if isinstance(types, str) else types
    if value is None:
        return "null" in names
    if isinstance(value, bool):
        return "boolean" in names
    return any(isinstance(value, _JSON_TYPES[name]) for name in names if name in _JSON_TYPES)


def _type_words(types: str | list[str]) -> str:
    names = [types] if isinstance(types, str) else types
    words = {"number": "a number", "string": "a string", "object": "a JSON object"}
    words |= {"integer": "a whole number", "array": "a list", "null": "null"}
    return " or ".join(words.get(n, n) for n in names)


def check_fields(data: Any, schema_name: str) -> dict[str, Any]:
    """The body as a dict, if it has the shape of ``schema_name``: an object with only known
    fields, each of a documented JSON type. Values are not judged here (the services do)."""
    schema = SCHEMAS[schema_name]
    if not isinstance(data, dict):
        raise ValidationError("The body must be a JSON object.")
    properties: dict[str, Any] = schema["properties"]
    for name, value in data.items():
        if name not in properties:
            known = ", ".join(sorted(properties))
            raise ValidationError(
                f"Unknown field `{name}`; this request takes: {known}.", field=name
            )
        types = properties[name].get("type")
        if not _type_ok(value, types):
            raise ValidationError(f"`{name}` must be {_type_words(types)}.", field=name)
    for name in schema.get("required", []):
        if name not in data:
            raise ValidationError(f"`{name}` is required.", field=name)
    return data


def body(schema_name: str) -> dict[str, Any]:
    return check_fields(json_body(), schema_name)


WHOLE_NUMBER_ARGS = {"limit"}  # documented as integers: an empty or other value is refused


def query(allowed: tuple[str, ...]) -> dict[str, str | None]:
    """Query arguments, each at most once; unknown ones are refused like unknown JSON fields."""
    for name in request.args:
        if name not in allowed:
            takes = f"takes: {', '.join(allowed)}" if allowed else "takes no query parameters"
            raise ValidationError(
                f"Unknown query parameter `{name}`; this request {takes}.", field=name
            )
        values = request.args.getlist(name)
        if len(values) > 1:
            raise ValidationError(f"`{name}` is given more than once.", field=name)
        if "\x00" in values[0]:
            raise ValidationError(f"`{name}` contains a NUL character.", field=name)
        digits = values[0].strip().lstrip("+-")
        if name in WHOLE_NUMBER_ARGS and not (digits.isascii() and digits.isdigit()):
            raise ValidationError(f"`{name}` must be a whole number.", field=name)
    return {name: request.args.get(name) for name in allowed}
