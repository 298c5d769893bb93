"""The OpenAPI 3.1 document of the JSON API v1, generated from the pydantic models of
``schemas`` (bodies) and the error classes of ``webapp.errors`` (each operation lists only the
errors it can give). It is the contract of docs/api.md in machine form."""

from __future__ import annotations

import copy
from functools import cache
from typing import Any

from pydantic.json_schema import models_json_schema

from .. import errors as e
from . import schemas

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


def _param(name: str, where: str, description: str, *, required: bool = False, schema=None):
    return {
        "name": name,
        "in": where,
        "required": required or where == "path",
        "description": description,
        "schema": schema or {"type": "string"},
    }


CURSOR = _param("cursor", "query", "The `next_cursor` of the previous page.")
LIMIT = _param(
    "limit",
    "query",
    "Page size, 1 to 200 (default 50).",
    schema={"type": "integer", "minimum": 1, "maximum": 200},
)
CUSTOMER_KEY_PATH = _param("key", "path", "The customer's key.")
FEATURE_KEY_PATH = _param("feature_key", "path", "The feature's key.")

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


PATHS: dict[str, dict[str, Any]] = {
    "/api/v1/usage": {
        "post": _op(
            "recordUsage",
            "Record usage of a feature (RecordUsage)",
            tag="Usage",
            body="RecordUsageRequest",
            ok={
                201: ("UsageResult", "A new event was recorded."),
                200: ("UsageResult", "A replay of an earlier event with the same `event_id`."),
            },
            errors=(
                e.Forbidden,
                e.NotEntitled,
                e.LimitExceeded,
                e.InsufficientCredits,
                e.CustomerNotFound,
                e.FeatureNotFound,
                e.IdempotencyConflict,
                e.InvalidAmount,
                e.FeatureNotRecordable,
            ),
            replay=True,
            description="Usage is always in feature units. A credit-based feature deducts "
            "`amount x credit cost` from the customer's wallet in the same transaction. "
            "Entitlement, allowance, persistent counts and the wallet are checked first; on "
            "any error nothing is written.",
        )
    },
    "/api/v1/usage/batch": {
        "post": _op(
            "recordUsageBatch",
            "Record up to 1000 usage events",
            tag="Usage",
            body="BatchRequest",
            ok={200: ("BatchResult", "One result per event, in order.")},
            errors=(e.Forbidden,),
            description="Each event is judged on its own, in order, as if sent alone; an "
            "invalid event writes nothing and gets its own error.",
        )
    },
    "/api/v1/entitlements/check": {
        "get": _op(
            "checkEntitlement",
            "Would this usage be allowed now? (writes nothing)",
            tag="Usage",
            params=[
                _param("customer_key", "query", "The customer.", required=True),
                _param("feature_key", "query", "The feature (or `event_name`)."),
                _param("event_name", "query", "The feature's event name (or `feature_key`)."),
                _param("amount", "query", "Units to check, default 1."),
            ],
            ok={200: ("EntitlementCheck", "The verdict, with the numbers behind it.")},
            errors=(e.Forbidden, e.CustomerNotFound, e.FeatureNotFound, e.InvalidAmount),
        )
    },
    "/api/v1/wallets/topups": {
        "post": _op(
            "topupWallet",
            "Add credits to a wallet (the only way to add credits)",
            tag="Wallets",
            body="TopupRequest",
            ok={
                201: ("LedgerResult", "Credits added."),
                200: ("LedgerResult", "A replay of an earlier topup (same `idempotency_key`)."),
            },
            errors=(e.Forbidden, e.CustomerNotFound, e.NotFound, e.IdempotencyConflict),
            replay=True,
            description="Finance and admin keys only.",
        )
    },
    "/api/v1/wallets/adjustments": {
        "post": _op(
            "adjustWallet",
            "Correct a wallet with a signed adjustment and a reason",
            tag="Wallets",
            body="AdjustmentRequest",
            ok={201: ("LedgerResult", "The adjustment entry.")},
            errors=(e.Forbidden, e.InsufficientCredits, e.CustomerNotFound, e.NotFound),
            description="Finance and admin keys only. Never takes the balance below zero "
            "(`insufficient_credits`). Not idempotent: send it once.",
        )
    },
    "/api/v1/customers": {
        "get": _op(
            "listCustomers",
            "List customers, newest first",
            tag="Customers",
            params=[
                CURSOR,
                LIMIT,
                _param("search", "query", "Part of the key, name or email."),
            ],
            ok={200: ("CustomerPage", "A page of customers.")},
            errors=(e.Forbidden,),
        ),
        "post": _op(
            "createCustomer",
            "Create a customer (admin)",
            tag="Customers",
            body="CustomerCreate",
            ok={201: ("Customer", "The new customer.")},
            errors=(e.Forbidden, e.Conflict),
        ),
    },
    "/api/v1/customers/{key}": {
        "get": _op(
            "getCustomer",
            "A customer with every entitlement and wallet balance",
            tag="Customers",
            params=[CUSTOMER_KEY_PATH],
            ok={200: ("CustomerDetail", "The customer.")},
            errors=(e.Forbidden, e.CustomerNotFound),
        )
    },
    "/api/v1/customers/{key}/events": {
        "get": _op(
            "listEvents",
            "A customer's usage events, newest first",
            tag="Customers",
            params=[
                CUSTOMER_KEY_PATH,
                _param("feature_key", "query", "Only this feature."),
                _param("since", "query", "Usage at or after this time (RFC 3339)."),
                _param("until", "query", "Usage before this time (RFC 3339)."),
                CURSOR,
                LIMIT,
            ],
            ok={200: ("EventPage", "A page of events.")},
            errors=(e.Forbidden, e.CustomerNotFound, e.FeatureNotFound),
        )
    },
    "/api/v1/customers/{key}/ledger": {
        "get": _op(
            "listLedger",
            "A customer's ledger entries, newest first",
            tag="Customers",
            params=[
                CUSTOMER_KEY_PATH,
                _param("credit_system", "query", "Only this credit system."),
                CURSOR,
                LIMIT,
            ],
            ok={200: ("LedgerPage", "A page of ledger entries.")},
            errors=(e.Forbidden, e.CustomerNotFound, e.NotFound),
        )
    },
    "/api/v1/customers/{key}/entitlements/{feature_key}": {
        "put": _op(
            "setEntitlement",
            "Create or change a customer's entitlement to a feature (admin)",
            tag="Configuration",
            params=[CUSTOMER_KEY_PATH, FEATURE_KEY_PATH],
            body="EntitlementPut",
            ok={200: ("Entitlement", "The entitlement as it now is.")},
            errors=(e.Forbidden, e.CustomerNotFound, e.FeatureNotFound),
        )
    },
    "/api/v1/features": {
        "get": _op(
            "listFeatures",
            "Every feature, with its credit cost",
            tag="Configuration",
            ok={200: ("FeaturePage", "All features in one page (`next_cursor` is null).")},
            errors=(e.Forbidden,),
        ),
        "post": _op(
            "createFeature",
            "Create a feature (admin)",
            tag="Configuration",
            body="FeatureCreate",
            ok={201: ("Feature", "The new feature.")},
            errors=(e.Forbidden, e.Conflict),
        ),
    },
    "/api/v1/features/{feature_key}/credit-cost": {
        "put": _op(
            "setCreditCost",
            "Make a feature credit-based, or change its cost (admin)",
            tag="Configuration",
            params=[FEATURE_KEY_PATH],
            body="CreditCostPut",
            ok={200: ("CreditCost", "The credit cost as it now is.")},
            errors=(e.Forbidden, e.FeatureNotFound, e.NotFound, e.FeatureNotRecordable),
        )
    },
    "/api/v1/credit-systems": {
        "post": _op(
            "createCreditSystem",
            "Create a credit system (admin)",
            tag="Configuration",
            body="CreditSystemCreate",
            ok={201: ("CreditSystem", "The new credit system.")},
            errors=(e.Forbidden, e.Conflict),
        )
    },
    "/api/v1/openapi.json": {
        "get": _op(
            "getOpenApi",
            "This document (public)",
            tag="Meta",
            ok={200: ("", "The OpenAPI 3.1 document.")},
            errors=(),
            public=True,
        )
    },
}


@cache
def _document() -> dict[str, Any]:
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
            {"name": "Wallets", "description": "Credit topups and adjustments."},
            {"name": "Customers", "description": "Customers, their usage and their ledger."},
            {"name": "Configuration", "description": "Features, credit systems, entitlements."},
            {"name": "Meta", "description": "This document."},
        ],
        "paths": PATHS,
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
