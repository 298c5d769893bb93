"""The routes of /api/v1. Each parses its input, calls one service function with the API key's
actor, and serializes the result; DomainErrors become JSON errors in webapp.errorhandlers."""

from __future__ import annotations

import json
from typing import Any

from flask import Blueprint, Response, g, request

from .. import jsondoor
from ..errors import DomainError, PayloadTooLarge
from ..jsondoor import json_body, query
from ..services import catalog, reads, usage, wallets
from ..services.actors import Actor
from ..services.usage import MAX_BATCH
from . import schemas as out
from .openapi import openapi_document
from .schemas import (
    AdjustmentRequest,
    BatchRequest,
    CreditCostPut,
    CreditSystemCreate,
    CustomerCreate,
    EntitlementPut,
    FeatureCreate,
    RecordUsageRequest,
    TopupRequest,
)

bp = Blueprint("api", __name__, url_prefix="/api/v1")

PUBLIC_ENDPOINTS = {"api.openapi_json"}

jsondoor.limit_per_key(bp)


@bp.before_request
def authenticate() -> None:
    if request.endpoint in PUBLIC_ENDPOINTS:
        return
    g.api_actor = jsondoor.key_actor("Send an API key as `Authorization: Bearer <key>`.")


@bp.after_request
def headers(response: Response) -> Response:
    if response.status_code == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="api"'
    response.headers.setdefault("Cache-Control", "no-store")
    return response


def actor() -> Actor:
    return g.api_actor


def respond(payload: Any, status: int = 200) -> Response:
    """JSON in the field order of api.md (jsonify would sort the keys)."""
    if isinstance(payload, out.Response):
        payload = payload.model_dump()
    text = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
    return Response(text + "\n", status=status, mimetype="application/json")


def created_or_replayed(payload: out.Response, replayed: bool) -> Response:
    response = respond(payload, 200 if replayed else 201)
    if replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return response


# ---------------------------------------------------------------- usage


@bp.post("/usage")
def record_usage():
    result = usage.record_usage(actor(), **RecordUsageRequest.parse(json_body()))
    return created_or_replayed(out.UsageResult.model_validate(result), result.replayed)


@bp.post("/usage/batch")
def record_usage_batch():
    data = json_body()
    if isinstance(data, dict) and isinstance(data.get("events"), list):
        if len(data["events"]) > MAX_BATCH:
            raise PayloadTooLarge(
                f"A batch holds at most {MAX_BATCH} events; split it.",
                field="events",
                max_events=MAX_BATCH,
            )
    fields = BatchRequest.parse(data)
    events: list[Any] = fields["events"]
    # Each event is judged alone: one of the wrong shape gets its own error and is not sent on.
    shaped: list[dict[str, Any] | DomainError] = []
    for raw in events:
        try:
            shaped.append(RecordUsageRequest.parse(raw))
        except DomainError as exc:
            shaped.append(exc)
    valid = [e for e in shaped if not isinstance(e, DomainError)]
    recorded = iter(usage.record_usage_batch(actor(), valid))
    results = []
    for item in shaped:
        outcome = item if isinstance(item, DomainError) else next(recorded)
        if isinstance(outcome, DomainError):
            results.append({"status": outcome.status, "body": outcome.to_dict()})
        else:
            status = 200 if outcome.replayed else 201
            results.append(
                {"status": status, "body": out.UsageResult.model_validate(outcome).model_dump()}
            )
    return respond({"results": results})


@bp.get("/entitlements/check")
def check_entitlement():
    args = query(("customer_key", "feature_key", "event_name", "amount"))
    result = usage.check_entitlement(
        actor(),
        customer_key=args["customer_key"],
        feature_key=args["feature_key"],
        event_name=args["event_name"],
        amount=args["amount"],
    )
    return respond(out.EntitlementCheck.model_validate(result))


# ---------------------------------------------------------------- wallets


@bp.post("/wallets/topups")
def topup_wallet():
    result = wallets.topup_wallet(actor(), **TopupRequest.parse(json_body()))
    return created_or_replayed(out.LedgerResult.of(result), result.replayed)


@bp.post("/wallets/adjustments")
def adjust_wallet():
    result = wallets.adjust_wallet(actor(), **AdjustmentRequest.parse(json_body()))
    return created_or_replayed(out.LedgerResult.of(result), result.replayed)


# ---------------------------------------------------------------- customers


@bp.get("/customers")
def list_customers():
    args = query(("cursor", "limit", "search"))
    page = reads.list_customers(actor(), **args)
    return respond(out.CustomerPage.model_validate(page))


@bp.post("/customers")
def create_customer():
    customer = catalog.create_customer(actor(), **CustomerCreate.parse(json_body()))
    return respond(out.Customer.model_validate(customer), 201)


@bp.get("/customers/<key>")
def get_customer(key: str):
    query(())
    return respond(out.CustomerDetail.of(reads.customer_summary(actor(), key)))


@bp.get("/customers/<key>/events")
def list_events(key: str):
    args = query(("feature_key", "since", "until", "cursor", "limit"))
    page = reads.list_events(actor(), key, **args)
    return respond(out.EventPage.model_validate(page))


@bp.get("/customers/<key>/ledger")
def list_ledger(key: str):
    args = query(("credit_system", "cursor", "limit"))
    page = reads.list_ledger(actor(), key, **args)
    return respond(out.LedgerPage.model_validate(page))


@bp.put("/customers/<key>/entitlements/<feature_key>")
def set_entitlement(key: str, feature_key: str):
    fields = EntitlementPut.parse(json_body())
    entitlement = catalog.set_entitlement(actor(), key, feature_key, **fields)
    return respond(
        out.Entitlement.model_validate(
            {
                "customer_key": key,
                "feature_key": feature_key,
                "allowance": entitlement.allowance_micros,
                "reset_period": entitlement.reset_period,
                "overage": entitlement.overage,
                "updated_at": entitlement.updated_at,
            }
        )
    )


# ---------------------------------------------------------------- catalog


@bp.get("/features")
def list_features():
    query(())
    rows = catalog.list_features(actor())
    return respond(out.FeaturePage(data=[out.Feature.of(*row) for row in rows], next_cursor=None))


@bp.post("/features")
def create_feature():
    feature = catalog.create_feature(actor(), **FeatureCreate.parse(json_body()))
    return respond(out.Feature.of(feature), 201)


@bp.put("/features/<feature_key>/credit-cost")
def set_credit_cost(feature_key: str):
    fields = CreditCostPut.parse(json_body())
    cost = catalog.set_credit_cost(actor(), feature_key, **fields)
    return respond(
        out.CreditCost.model_validate(
            {
                "feature_key": feature_key,
                "credit_system": fields["credit_system"],
                "cost": cost.cost_micros,
                "updated_at": cost.updated_at,
            }
        )
    )


@bp.post("/credit-systems")
def create_credit_system():
    system = catalog.create_credit_system(actor(), **CreditSystemCreate.parse(json_body()))
    return respond(out.CreditSystem.model_validate(system), 201)


# ---------------------------------------------------------------- the contract itself


@bp.get("/openapi.json")
def openapi_json():
    return respond(openapi_document())
