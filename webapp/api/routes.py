"""The routes of /api/v1. Each parses its input, calls one service function with the API key's
actor, and serializes the result; DomainErrors become JSON errors in webapp.errorhandlers."""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any

from flask import Blueprint, Response, current_app, g, jsonify, request
from flask_limiter.errors import RateLimitExceeded
from flask_limiter.util import get_remote_address

from ..errors import DomainError, Unauthorized
from ..extensions import limiter
from ..services import auth, catalog, reads, usage, wallets
from ..services.actors import Actor
from ..services.usage import MAX_BATCH
from . import serializers as out
from .openapi import openapi_document
from .parsing import PayloadTooLarge, body, check_fields, json_body, query

bp = Blueprint("api", __name__, url_prefix="/api/v1")

PUBLIC_ENDPOINTS = {"api.openapi_json"}


def _bearer() -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def _rate_key() -> str:
    """Per API key (its hash, so the key itself is never kept); per address without one."""
    token = _bearer()
    if token is None:
        return "addr:" + (get_remote_address() or "-")
    return "key:" + hashlib.sha256(token.encode()).hexdigest()


limiter.limit(lambda: current_app.config["API_RATE_LIMIT"], key_func=_rate_key)(bp)


@bp.errorhandler(RateLimitExceeded)
def rate_limited(exc: RateLimitExceeded):
    current = limiter.current_limit
    retry_after = 1
    if current is not None:
        retry_after = max(1, int(current.reset_at - time.time()))
    response = jsonify(
        {
            "error": {
                "code": "rate_limited",
                "message": f"Too many requests for this API key (limit {exc.description}).",
                "details": {"retry_after": retry_after},
            }
        }
    )
    response.status_code = 429
    response.headers["Retry-After"] = str(retry_after)
    return response


@bp.before_request
def authenticate() -> None:
    if request.endpoint in PUBLIC_ENDPOINTS:
        return
    token = _bearer()
    if token is None:
        raise Unauthorized("Send an API key as `Authorization: Bearer <key>`.")
    key = auth.authenticate_api_key(token)
    g.api_actor = auth.key_actor(key)
    auth.touch_api_key(key)


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
    text = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
    return Response(text + "\n", status=status, mimetype="application/json")


def created_or_replayed(payload: dict[str, Any], replayed: bool) -> Response:
    response = respond(payload, 200 if replayed else 201)
    if replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return response


# ---------------------------------------------------------------- usage


@bp.post("/usage")
def record_usage():
    fields = body("RecordUsageRequest")
    result = usage.record_usage(actor(), **fields)
    return created_or_replayed(out.usage_result(result), result.replayed)


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
    fields = check_fields(data, "BatchRequest")
    events: list[Any] = fields["events"]
    # Each event is judged alone: one of the wrong shape gets its own error and is not sent on.
    shaped: list[dict[str, Any] | DomainError] = []
    for raw in events:
        try:
            shaped.append(check_fields(raw, "RecordUsageRequest"))
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
            results.append({"status": status, "body": out.usage_result(outcome)})
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
    return respond(out.check_result(result))


# ---------------------------------------------------------------- wallets


@bp.post("/wallets/topups")
def topup_wallet():
    result = wallets.topup_wallet(actor(), **body("TopupRequest"))
    return created_or_replayed(out.ledger_result(result), result.replayed)


@bp.post("/wallets/adjustments")
def adjust_wallet():
    result = wallets.adjust_wallet(actor(), **body("AdjustmentRequest"))
    return created_or_replayed(out.ledger_result(result), result.replayed)


# ---------------------------------------------------------------- customers


@bp.get("/customers")
def list_customers():
    args = query(("cursor", "limit", "search"))
    page = reads.list_customers(actor(), **args)
    return respond(out.page(page, out.customer))


@bp.post("/customers")
def create_customer():
    customer = catalog.create_customer(actor(), **body("CustomerCreate"))
    return respond(out.customer(customer), 201)


@bp.get("/customers/<key>")
def get_customer(key: str):
    query(())
    return respond(out.customer_detail(reads.customer_summary(actor(), key)))


@bp.get("/customers/<key>/events")
def list_events(key: str):
    args = query(("feature_key", "since", "until", "cursor", "limit"))
    return respond(out.page(reads.list_events(actor(), key, **args), out.event))


@bp.get("/customers/<key>/ledger")
def list_ledger(key: str):
    args = query(("credit_system", "cursor", "limit"))
    return respond(out.page(reads.list_ledger(actor(), key, **args), out.ledger_entry))


@bp.put("/customers/<key>/entitlements/<feature_key>")
def set_entitlement(key: str, feature_key: str):
    fields = body("EntitlementPut")
    entitlement = catalog.set_entitlement(actor(), key, feature_key, **fields)
    return respond(out.entitlement(key, feature_key, entitlement))


# ---------------------------------------------------------------- catalog


@bp.get("/features")
def list_features():
    query(())
    rows = catalog.list_features(actor())
    return respond({"data": [out.feature(*row) for row in rows], "next_cursor": None})


@bp.post("/features")
def create_feature():
    feature = catalog.create_feature(actor(), **body("FeatureCreate"))
    return respond(out.feature(feature, None, None), 201)


@bp.put("/features/<feature_key>/credit-cost")
def set_credit_cost(feature_key: str):
    fields = body("CreditCostPut")
    cost = catalog.set_credit_cost(actor(), feature_key, **fields)
    return respond(out.credit_cost(feature_key, fields["credit_system"], cost))


@bp.post("/credit-systems")
def create_credit_system():
    system = catalog.create_credit_system(actor(), **body("CreditSystemCreate"))
    return respond(out.credit_system(system), 201)


# ---------------------------------------------------------------- the contract itself


@bp.get("/openapi.json")
def openapi_json():
    return respond(openapi_document())
