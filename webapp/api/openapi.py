"""The OpenAPI 3.1 document of the JSON API v1, generated from the routes (each declares its
operation next to its view), the pydantic models of ``schemas`` (bodies) and the error classes
of ``webapp.errors`` (each operation lists only the errors it can give). It is the contract of
docs/api.md in machine form."""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from functools import cache
from typing import Any, TypeVar

from flask import Blueprint
from pydantic.json_schema import models_json_schema

from .. import errors as e
from . import schemas

F = TypeVar("F", bound=Callable[..., Any])
JSON = "application/json"
REF = "#/components/schemas/"


def ref(name: str) -> dict[str, Any]:
    return {"$ref": REF + name}


@cache
def components() -> dict[str, Any]:
    models = [(m, "validation") for m in schemas.REQUESTS]
    models += [(m, "serialization") for m in schemas.RESPONSES]
    _, top = models_json_schema(models, ref_template=REF + "{model}")
    return top["$defs"]


# ---------------------------------------------------------------- errors

# Every operation with a key can meet these; a body adds the body's own.
KEYED = (e.Unauthorized, e.RateLimited, e.ServiceUnavailable)
BODY = (e.MalformedJson, e.PayloadTooLarge, e.ValidationError)
QUERY = (e.ValidationError,)  # an unknown or repeated query parameter


def _error_responses(kinds: tuple[type[e.DomainError], ...]) -> dict[str, Any]:
    """One response per status, naming (and allowing) only the codes of ``kinds``."""
    by_status: dict[int, list[str]] = {}
    for kind in e.ERRORS:  # the table's order
        if kind in kinds:
            by_status.setdefault(kind.status, []).append(kind.code)
    out: dict[str, Any] = {}
    for status, codes in sorted(by_status.items()):
        schema = {
            "allOf": [ref("Error")],
            "properties": {"error": {"properties": {"code": {"enum": codes}}}},
        }
        response: dict[str, Any] = {
            "description": "Codes: " + ", ".join(f"`{c}`" for c in codes) + ".",
            "content": {JSON: {"schema": schema}},
        }
        if status in (429, 503):
            response["headers"] = {
                "Retry-After": {"description": "Seconds to wait.", "schema": {"type": "string"}}
            }
        out[str(status)] = response
    return out


def param(name: str, where: str, description: str, *, required: bool = False, schema=None):
    return {
        "name": name,
        "in": where,
        "required": required or where == "path",
        "description": description,
        "schema": schema or {"type": "string"},
    }


CURSOR = param("cursor", "query", "The `next_cursor` of the previous page.")
LIMIT = param(
    "limit",
    "query",
    "Page size, 1 to 200 (default 50).",
    schema={"type": "integer", "minimum": 1, "maximum": 200},
)
CUSTOMER_KEY_PATH = param("key", "path", "The customer's key.")
FEATURE_KEY_PATH = param("feature_key", "path", "The feature's key.")
PLAN_KEY_PATH = param("plan_key", "path", "The plan's key.")
EVENT_ID_PATH = param("event_id", "path", "The usage event's `event_id` (of this customer).")
GRANT_ID_PATH = param(
    "grant_id", "path", "The grant's id.", schema={"type": "integer", "minimum": 1}
)
ENDPOINT_ID_PATH = param(
    "endpoint_id", "path", "The webhook endpoint's id.", schema={"type": "integer", "minimum": 1}
)
DELIVERY_ID_PATH = param(
    "delivery_id", "path", "The delivery's id.", schema={"type": "integer", "minimum": 1}
)

REPLAYED = {
    "Idempotent-Replayed": {
        "description": "`true` on a replay of an earlier request.",
        "schema": {"type": "string", "enum": ["true"]},
    }
}


def _op(
    op_id: str,
    summary: str,
    *,
    tag: str,
    ok: dict[int, tuple[str, str]],
    errors: tuple[type[e.DomainError], ...],
    body: str | None = None,
    params: list[dict[str, Any]] | None = None,
    description: str = "",
    replay: bool = False,
    public: bool = False,
) -> dict[str, Any]:
    responses: dict[str, Any] = {}
    for status, (schema_name, text) in ok.items():
        response: dict[str, Any] = {
            "description": text,
            "content": {JSON: {"schema": ref(schema_name) if schema_name else {"type": "object"}}},
        }
        if replay and status == 200:
            response["headers"] = REPLAYED
        responses[str(status)] = response
    if public:
        kinds: tuple[type[e.DomainError], ...] = (e.RateLimited,)
    else:
        kinds = KEYED + errors + (BODY if body else QUERY)
    responses |= _error_responses(kinds)
    op: dict[str, Any] = {
        "operationId": op_id,
        "summary": summary,
        "tags": [tag],
        "responses": responses,
    }
    if description:
        op["description"] = description
    if params:
        op["parameters"] = params
    if body:
        op["requestBody"] = {"required": True, "content": {JSON: {"schema": ref(body)}}}
    if public:
        op["security"] = []
    return op


class Operations:
    """The routes of a blueprint and their OpenAPI operations, declared in one place:
    ``@api.post(rule, operation_id, summary, ...)`` registers the view and documents it."""

    def __init__(self, bp: Blueprint, prefix: str) -> None:
        self.bp, self.prefix = bp, prefix
        self.paths: dict[str, dict[str, Any]] = {}

    def route(self, method: str, rule: str, *args: Any, **kwargs: Any) -> Callable[[F], F]:
        def register(view: F) -> F:
            self.bp.add_url_rule(rule, view_func=view, methods=[method.upper()])
            path = self.prefix + re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule)
            self.paths.setdefault(path, {})[method] = _op(*args, **kwargs)
            return view

        return register

    def get(self, rule: str, *args: Any, **kwargs: Any) -> Callable[[F], F]:
        return self.route("get", rule, *args, **kwargs)

    def post(self, rule: str, *args: Any, **kwargs: Any) -> Callable[[F], F]:
        return self.route("post", rule, *args, **kwargs)

    def put(self, rule: str, *args: Any, **kwargs: Any) -> Callable[[F], F]:
        return self.route("put", rule, *args, **kwargs)

    def patch(self, rule: str, *args: Any, **kwargs: Any) -> Callable[[F], F]:
        return self.route("patch", rule, *args, **kwargs)

    def delete(self, rule: str, *args: Any, **kwargs: Any) -> Callable[[F], F]:
        return self.route("delete", rule, *args, **kwargs)


@cache
def _document() -> dict[str, Any]:
    from .routes import api

    return {
        "openapi": "3.1.0",
        "jsonSchemaDialect": "https://json-schema.org/draft/2020-12/schema",
        "info": {
            "title": "Metering API",
            "version": "1.0.0",
            "summary": "Usage metering, entitlements and prepaid credit wallets.",
            "description": "Record usage in feature units, check entitlements, top up credit "
            "wallets and read customers, events and ledgers. Errors are always "
            '`{"error": {"code", "message", "details"}}` with a stable `code`. Request bodies '
            "are JSON (`Content-Type: application/json`); unknown fields are rejected with "
            "`validation_error`. Credits are returned as decimal strings.",
        },
        "servers": [{"url": "/"}],
        "security": [{"bearerAuth": []}],
        "tags": [
            {"name": "Usage", "description": "RecordUsage, batches and entitlement checks."},
            {
                "name": "Wallets",
                "description": "Credit topups, adjustments, grants and voids.",
            },
            {"name": "Customers", "description": "Customers, their usage and their ledger."},
            {"name": "Configuration", "description": "Features, credit systems, entitlements."},
            {"name": "Plans", "description": "Plans, customers' plans and overrides."},
            {"name": "Reports", "description": "The finance roll-forward of credits."},
            {"name": "Meta", "description": "This document."},
            {"name": "Webhooks", "description": "Webhook endpoints and their deliveries."},
        ],
        "paths": api.paths,
        "components": {
            "schemas": components(),
            "securitySchemes": {
                "bearerAuth": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "`Authorization: Bearer mk_...`: an API key made by an admin "
                    "(`flask api-key create NAME --role ROLE`). Its role decides what it may do.",
                }
            },
        },
    }


def openapi_document() -> dict[str, Any]:
    """A fresh copy of the document (callers may change it)."""
    return copy.deepcopy(_document())
