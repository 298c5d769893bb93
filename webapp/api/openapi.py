"""The OpenAPI 3.1 document of the JSON API v1, built as a plain dict.

It is the contract of docs/api.md in machine form. The API layer also reads its request-body
schemas to know which fields each operation accepts (unknown fields are rejected), so the document
and the parser cannot drift apart; the tests check every response against it.
"""

from __future__ import annotations

import copy
from functools import cache
from typing import Any

from ..models import FEATURE_TYPES, OVERAGE_POLICIES, RESET_PERIODS, TOPUP_KINDS
from ..services.usage import MAX_BATCH

JSON = "application/json"
REF = "#/components/schemas/"

# ---------------------------------------------------------------- small schema helpers


def ref(name: str) -> dict[str, Any]:
    return {"$ref": REF + name}


def nullable(schema: dict[str, Any]) -> dict[str, Any]:
    out = dict(schema)
    kind = out.get("type")
    if isinstance(kind, str):
        out["type"] = [kind, "null"]
    elif isinstance(kind, list) and "null" not in kind:
        out["type"] = [*kind, "null"]
    if "enum" in out:
        out["enum"] = [*out["enum"], None]
    return out


STRING = {"type": "string"}
TIME = {"type": "string", "format": "date-time", "description": "RFC 3339, UTC (`...Z`)."}
CREDITS = {
    "type": "string",
    "pattern": r"^-?[0-9]+(\.[0-9]{1,6})?$",
    "description": 'Credits as a decimal string with up to 6 places, e.g. `"0.08"`.',
    "examples": ["0.08"],
}
QUANTITY = {
    "type": ["integer", "string"],
    "description": "Feature units: a JSON number when whole, a decimal string otherwise.",
}
AMOUNT_IN = {
    "type": ["string", "number"],
    "description": "A decimal with at most 6 places, as a JSON string or number (never rounded).",
    "examples": ["2", 2],
}


def obj(
    properties: dict[str, Any], required: list[str] | None = None, *, description: str = ""
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "type": "object",
        "properties": properties,
        "additionalProperties": False,
    }
    if required:
        out["required"] = required
    if description:
        out["description"] = description
    return out


def page_of(item: str) -> dict[str, Any]:
    return obj(
        {
            "data": {"type": "array", "items": ref(item)},
            "next_cursor": {
                "type": ["string", "null"],
                "description": "Pass as `cursor` for the next page; null on the last page.",
            },
        },
        ["data", "next_cursor"],
    )


# ---------------------------------------------------------------- components

USAGE_REQUEST = obj(
    {
        "customer_key": {**STRING, "examples": ["cust-6d11ca90"]},
        "event_name": {
            "type": ["string", "null"],
            "description": "The feature's event name; exactly one of this and `feature_key`.",
            "examples": ["candidate.sourced"],
        },
        "feature_key": {
            "type": ["string", "null"],
            "description": "The feature's key; exactly one of this and `event_name`.",
        },
        "amount": {
            **AMOUNT_IN,
            "default": 1,
            "description": "Feature units (never credits); negative only for persistent features.",
        },
        "event_id": {
            "type": ["string", "null"],
            "description": "Idempotency key (printable ASCII, up to 200); the server makes one.",
        },
        "timestamp": nullable(TIME),
        "metadata": {"type": ["object", "null"], "description": "Free-form JSON object, 4 KiB."},
    },
    ["customer_key"],
    description="One RecordUsage call. Unknown fields are rejected.",
)

USAGE_RESULT = obj(
    {
        "message": {"type": "string", "const": "Usage recorded"},
        "event_name": STRING,
        "customer_key": STRING,
        "amount": QUANTITY,
        "feature_key": STRING,
        "event_id": STRING,
        "timestamp": TIME,
        "used": {**QUANTITY, "description": "Used in the current period after this event."},
        "allowance": nullable(QUANTITY),
        "available": nullable(QUANTITY),
        "overage": QUANTITY,
        "credits_deducted": nullable(CREDITS),
        "wallet_balance": nullable(CREDITS),
        "credit_system": {"type": ["string", "null"]},
    },
    [
        "message",
        "event_name",
        "customer_key",
        "amount",
        "feature_key",
        "event_id",
        "timestamp",
        "used",
        "allowance",
        "available",
        "overage",
        "credits_deducted",
        "wallet_balance",
        "credit_system",
    ],
    description="`allowance`/`available` are null when unlimited; `credits_deducted` and "
    "`wallet_balance` are null for a feature that is not credit-based.",
)

ERROR = obj(
    {
        "error": obj(
            {
                "code": {"type": "string", "examples": ["insufficient_credits"]},
                "message": STRING,
                "details": {"type": "object"},
            },
            ["code", "message", "details"],
        )
    },
    ["error"],
)

BATCH_REQUEST = obj(
    {
        "events": {
            "type": "array",
            "maxItems": MAX_BATCH,
            "items": {
                "description": "A RecordUsage body. An event that is not valid gets its own "
                "error in `results`; the others are still recorded."
            },
        }
    },
    ["events"],
)

BATCH_RESULT = obj(
    {
        "results": {
            "type": "array",
            "items": obj(
                {
                    "status": {"type": "integer", "description": "What the event alone would get."},
                    "body": {"oneOf": [ref("UsageResult"), ref("Error")]},
                },
                ["status", "body"],
            ),
        }
    },
    ["results"],
)

CHECK_RESULT = obj(
    {
        "allowed": {"type": "boolean"},
        "reason": {
            "type": ["string", "null"],
            "description": "When not allowed: the RecordUsage error code it would get.",
        },
        "message": {"type": ["string", "null"]},
        "customer_key": STRING,
        "feature_key": STRING,
        "event_name": STRING,
        "type": {"type": "string", "enum": list(FEATURE_TYPES)},
        "amount": QUANTITY,
        "entitled": {"type": "boolean"},
        "used": QUANTITY,
        "allowance": nullable(QUANTITY),
        "available": nullable(QUANTITY),
        "reset_at": nullable(TIME),
        "credits_required": nullable(CREDITS),
        "wallet_balance": nullable(CREDITS),
        "credit_system": {"type": ["string", "null"]},
    },
    [
        "allowed",
        "reason",
        "message",
        "customer_key",
        "feature_key",
        "event_name",
        "type",
        "amount",
        "entitled",
        "used",
        "allowance",
        "available",
        "reset_at",
        "credits_required",
        "wallet_balance",
        "credit_system",
    ],
)

TOPUP_REQUEST = obj(
    {
        "customer_key": STRING,
        "credit_system": {**STRING, "examples": ["credits"]},
        "amount": {**AMOUNT_IN, "description": "Credits to add, greater than zero."},
        "kind": {"type": ["string", "null"], "enum": [*TOPUP_KINDS, None], "default": "purchased"},
        "reference": {"type": ["string", "null"], "description": "E.g. an invoice number."},
        "note": {"type": ["string", "null"]},
        "idempotency_key": {"type": ["string", "null"]},
    },
    ["customer_key", "credit_system", "amount"],
)

ADJUSTMENT_REQUEST = obj(
    {
        "customer_key": STRING,
        "credit_system": STRING,
        "amount": {
            **AMOUNT_IN,
            "description": "Signed credits: positive adds, negative removes (never below zero).",
        },
        "reason": {**STRING, "description": "Why; kept in the ledger entry's note."},
        "reference": {"type": ["string", "null"]},
    },
    ["customer_key", "credit_system", "amount", "reason"],
)

LEDGER_RESULT = obj(
    {
        "message": {"type": "string", "enum": ["Credits added", "Wallet adjusted"]},
        "customer_key": STRING,
        "credit_system": STRING,
        "type": {"type": "string", "enum": ["topup", "adjustment"]},
        "kind": {"type": ["string", "null"]},
        "amount": CREDITS,
        "reference": {"type": ["string", "null"]},
        "note": {"type": ["string", "null"]},
        "wallet_balance": {**CREDITS, "description": "The balance right after this entry."},
        "ledger_entry_id": {"type": "integer"},
        "created_at": TIME,
    },
    [
        "message",
        "customer_key",
        "credit_system",
        "type",
        "kind",
        "amount",
        "reference",
        "note",
        "wallet_balance",
        "ledger_entry_id",
        "created_at",
    ],
)

CUSTOMER_PROPS = {
    "key": STRING,
    "name": STRING,
    "email": {"type": ["string", "null"]},
    "status": {"type": "string", "enum": ["active", "archived"]},
    "metadata": {"type": "object"},
    "created_at": TIME,
}
CUSTOMER = obj(CUSTOMER_PROPS, list(CUSTOMER_PROPS))

ENTITLEMENT_VIEW = obj(
    {
        "feature_key": STRING,
        "feature_name": STRING,
        "event_name": STRING,
        "type": {"type": "string", "enum": list(FEATURE_TYPES)},
        "used": QUANTITY,
        "allowance": nullable(QUANTITY),
        "available": nullable(QUANTITY),
        "reset_period": {"type": "string", "enum": list(RESET_PERIODS)},
        "reset_at": nullable(TIME),
        "overage": {"type": "string", "enum": list(OVERAGE_POLICIES)},
        "credit_system": {"type": ["string", "null"]},
        "credit_cost": nullable(CREDITS),
    },
    [
        "feature_key",
        "feature_name",
        "event_name",
        "type",
        "used",
        "allowance",
        "available",
        "reset_period",
        "reset_at",
        "overage",
        "credit_system",
        "credit_cost",
    ],
)

WALLET_VIEW = obj(
    {"credit_system": STRING, "name": STRING, "balance": CREDITS},
    ["credit_system", "name", "balance"],
)

CUSTOMER_DETAIL = obj(
    {
        **CUSTOMER_PROPS,
        "entitlements": {"type": "array", "items": ref("CustomerEntitlement")},
        "wallets": {"type": "array", "items": ref("Wallet")},
    },
    [*CUSTOMER_PROPS, "entitlements", "wallets"],
)

CUSTOMER_CREATE = obj(
    {
        "key": {**STRING, "description": "Stable key: letters, digits and . _ : @ -"},
        "name": STRING,
        "email": {"type": ["string", "null"]},
        "metadata": {"type": ["object", "null"]},
    },
    ["key", "name"],
)

EVENT = obj(
    {
        "event_id": STRING,
        "feature_key": STRING,
        "event_name": STRING,
        "amount": QUANTITY,
        "timestamp": TIME,
        "metadata": {"type": ["object", "null"]},
        "credits_deducted": nullable(CREDITS),
        "overage": QUANTITY,
        "actor": STRING,
        "recorded_at": TIME,
    },
    [
        "event_id",
        "feature_key",
        "event_name",
        "amount",
        "timestamp",
        "metadata",
        "credits_deducted",
        "overage",
        "actor",
        "recorded_at",
    ],
)

LEDGER_ENTRY = obj(
    {
        "id": {"type": "integer"},
        "credit_system": STRING,
        "type": {"type": "string", "enum": ["topup", "usage", "adjustment"]},
        "kind": {"type": ["string", "null"]},
        "amount": {**CREDITS, "description": "Signed: positive adds, negative deducts."},
        "balance_after": CREDITS,
        "reference": {"type": ["string", "null"]},
        "note": {"type": ["string", "null"]},
        "event_id": {"type": ["string", "null"], "description": "For `usage` entries."},
        "actor": STRING,
        "created_at": TIME,
    },
    [
        "id",
        "credit_system",
        "type",
        "kind",
        "amount",
        "balance_after",
        "reference",
        "note",
        "event_id",
        "actor",
        "created_at",
    ],
)

FEATURE = obj(
    {
        "key": STRING,
        "name": STRING,
        "type": {"type": "string", "enum": list(FEATURE_TYPES)},
        "event_name": STRING,
        "credit_system": {"type": ["string", "null"]},
        "credit_cost": nullable(CREDITS),
        "created_at": TIME,
    },
    ["key", "name", "type", "event_name", "credit_system", "credit_cost", "created_at"],
)

FEATURE_CREATE = obj(
    {
        "key": {**STRING, "description": "Lower case letters, digits and _ . -"},
        "name": STRING,
        "type": {"type": "string", "enum": list(FEATURE_TYPES)},
        "event_name": {"type": ["string", "null"], "description": "Defaults to the key."},
    },
    ["key", "name", "type"],
)

CREDIT_SYSTEM = obj(
    {
        "key": STRING,
        "name": STRING,
        "unit_singular": STRING,
        "unit_plural": STRING,
        "created_at": TIME,
    },
    ["key", "name", "unit_singular", "unit_plural", "created_at"],
)

CREDIT_SYSTEM_CREATE = obj(
    {
        "key": STRING,
        "name": STRING,
        "unit_singular": {"type": ["string", "null"]},
        "unit_plural": {"type": ["string", "null"]},
    },
    ["key", "name"],
)

CREDIT_COST_PUT = obj(
    {
        "credit_system": STRING,
        "cost": {**AMOUNT_IN, "description": "Credits per feature unit, greater than zero."},
    },
    ["credit_system", "cost"],
)

CREDIT_COST = obj(
    {"feature_key": STRING, "credit_system": STRING, "cost": CREDITS, "updated_at": TIME},
    ["feature_key", "credit_system", "cost", "updated_at"],
)

ENTITLEMENT_PUT = obj(
    {
        "allowance": {
            "type": ["string", "number", "null"],
            "description": "Units per reset period (consumable) or in total (persistent); "
            "null = unlimited. Required, so that unlimited is never an accident.",
        },
        "reset_period": {
            "type": ["string", "null"],
            "enum": [*RESET_PERIODS, None],
            "default": "never",
        },
        "overage": {
            "type": ["string", "null"],
            "enum": [*OVERAGE_POLICIES, None],
            "default": "block",
        },
    },
    ["allowance"],
)

ENTITLEMENT = obj(
    {
        "customer_key": STRING,
        "feature_key": STRING,
        "allowance": nullable(QUANTITY),
        "reset_period": {"type": "string", "enum": list(RESET_PERIODS)},
        "overage": {"type": "string", "enum": list(OVERAGE_POLICIES)},
        "updated_at": TIME,
    },
    ["customer_key", "feature_key", "allowance", "reset_period", "overage", "updated_at"],
)

SCHEMAS: dict[str, dict[str, Any]] = {
    "Error": ERROR,
    "RecordUsageRequest": USAGE_REQUEST,
    "UsageResult": USAGE_RESULT,
    "BatchRequest": BATCH_REQUEST,
    "BatchResult": BATCH_RESULT,
    "EntitlementCheck": CHECK_RESULT,
    "TopupRequest": TOPUP_REQUEST,
    "AdjustmentRequest": ADJUSTMENT_REQUEST,
    "LedgerResult": LEDGER_RESULT,
    "Customer": CUSTOMER,
    "CustomerCreate": CUSTOMER_CREATE,
    "CustomerDetail": CUSTOMER_DETAIL,
    "CustomerEntitlement": ENTITLEMENT_VIEW,
    "Wallet": WALLET_VIEW,
    "CustomerPage": page_of("Customer"),
    "Event": EVENT,
    "EventPage": page_of("Event"),
    "LedgerEntry": LEDGER_ENTRY,
    "LedgerPage": page_of("LedgerEntry"),
    "Feature": FEATURE,
    "FeaturePage": page_of("Feature"),
    "FeatureCreate": FEATURE_CREATE,
    "CreditSystem": CREDIT_SYSTEM,
    "CreditSystemCreate": CREDIT_SYSTEM_CREATE,
    "CreditCostPut": CREDIT_COST_PUT,
    "CreditCost": CREDIT_COST,
    "EntitlementPut": ENTITLEMENT_PUT,
    "Entitlement": ENTITLEMENT,
}

# ---------------------------------------------------------------- errors and operations

ERROR_CODES: dict[int, tuple[str, list[str]]] = {
    400: ("Wrong content type or broken JSON.", ["malformed_json"]),
    401: ("No API key, or a wrong or revoked one.", ["unauthorized"]),
    402: ("The wallet cannot pay for this usage.", ["insufficient_credits"]),
    403: ("Not allowed.", ["not_entitled", "limit_exceeded", "forbidden"]),
    404: (
        "Something named does not exist.",
        ["customer_not_found", "feature_not_found", "not_found"],
    ),
    409: ("Conflicts with what exists.", ["idempotency_conflict", "conflict"]),
    413: ("Body over 1 MiB or a batch over 1000 events.", ["payload_too_large"]),
    422: (
        "The request is well-formed JSON but not valid.",
        ["validation_error", "invalid_amount", "feature_not_recordable"],
    ),
    429: ("Too many requests for this API key; see Retry-After.", ["rate_limited"]),
    503: ("The database is unavailable or busy; retry shortly.", ["service_unavailable"]),
}
# Every operation may answer these (422: an unknown query parameter or body field).
COMMON = [400, 401, 413, 422, 429, 503]


def _error_response(status: int) -> dict[str, Any]:
    description, codes = ERROR_CODES[status]
    response: dict[str, Any] = {
        "description": f"{description} Codes: {', '.join(f'`{c}`' for c in codes)}.",
        "content": {JSON: {"schema": ref("Error")}},
    }
    if status in (429, 503):
        response["headers"] = {
            "Retry-After": {"description": "Seconds to wait.", "schema": {"type": "string"}}
        }
    return response


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
    errors: list[int],
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
    for status in sorted(set(errors) | (set() if public else set(COMMON))):
        if public and status != 429:
            continue
        responses[str(status)] = _error_response(status)
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
            errors=[402, 403, 404, 409, 422],
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
            errors=[403, 422],
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
            errors=[403, 404, 422],
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
            errors=[403, 404, 409, 422],
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
            errors=[402, 403, 404, 409, 422],
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
            errors=[403, 422],
        ),
        "post": _op(
            "createCustomer",
            "Create a customer (admin)",
            tag="Customers",
            body="CustomerCreate",
            ok={201: ("Customer", "The new customer.")},
            errors=[403, 409, 422],
        ),
    },
    "/api/v1/customers/{key}": {
        "get": _op(
            "getCustomer",
            "A customer with every entitlement and wallet balance",
            tag="Customers",
            params=[CUSTOMER_KEY_PATH],
            ok={200: ("CustomerDetail", "The customer.")},
            errors=[403, 404, 422],
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
            errors=[403, 404, 422],
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
            errors=[403, 404, 422],
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
            errors=[403, 404, 422],
        )
    },
    "/api/v1/features": {
        "get": _op(
            "listFeatures",
            "Every feature, with its credit cost",
            tag="Configuration",
            ok={200: ("FeaturePage", "All features in one page (`next_cursor` is null).")},
            errors=[403],
        ),
        "post": _op(
            "createFeature",
            "Create a feature (admin)",
            tag="Configuration",
            body="FeatureCreate",
            ok={201: ("Feature", "The new feature.")},
            errors=[403, 409, 422],
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
            errors=[403, 404, 422],
        )
    },
    "/api/v1/credit-systems": {
        "post": _op(
            "createCreditSystem",
            "Create a credit system (admin)",
            tag="Configuration",
            body="CreditSystemCreate",
            ok={201: ("CreditSystem", "The new credit system.")},
            errors=[403, 409, 422],
        )
    },
    "/api/v1/openapi.json": {
        "get": _op(
            "getOpenApi",
            "This document (public)",
            tag="Meta",
            ok={200: ("", "The OpenAPI 3.1 document.")},
            errors=[],
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
            "schemas": SCHEMAS,
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


def request_schema(name: str) -> dict[str, Any]:
    return SCHEMAS[name]
