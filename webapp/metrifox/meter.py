"""The meter service of the Metrifox SDK (``meter_service_base_url``): record usage, check access,
list usage events. Each route parses the SDK's fields, calls one service and shapes the answer."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, request

from ..api.schemas import CorrectionRequest, RecordUsageRequest
from ..errors import DomainError, InvalidAmount, ValidationError
from ..jsondoor import json_object
from ..services import corrections, usage
from ..services import metrifox as paged
from ..services.reads import EventView
from .common import actor, from_millis, in_sdk_terms, install, millis, num, respond

bp = Blueprint("metrifox_meter", __name__)
install(bp)


def _metadata(body: dict[str, Any]) -> object:
    """The SDK's ``metadata`` with its ``properties`` kept under a "properties" key."""
    metadata = body.get("metadata")
    properties = body.get("properties")
    if properties is None:
        return metadata
    if not isinstance(properties, dict):
        raise ValidationError("`properties` must be a JSON object.", field="properties")
    if metadata is None:
        metadata = {}
    if not isinstance(metadata, dict):
        return metadata  # the service explains what metadata must be
    if "properties" in metadata:
        raise ValidationError(
            "Send `properties` either as a field or inside `metadata`, not both.",
            field="properties",
        )
    return {**metadata, "properties": properties}


@bp.post("/usage/events")
def record_usage() -> Response:
    body = json_object()
    # The SDK's fields as our RecordUsageRequest: `quantity` is the SDK's name for `amount` (its
    # deprecated alias, and our own API's name); `credit_used` is accepted and ignored: credits
    # follow the feature's credit cost only.
    sent = {
        k: body[k] for k in ("customer_key", "feature_key", "event_name", "event_id") if k in body
    }
    if "quantity" in body or "amount" in body:
        sent["amount"] = body["quantity"] if "quantity" in body else body["amount"]
    sent["timestamp"] = from_millis(body.get("timestamp"))
    sent["metadata"] = _metadata(body)
    try:
        if sent.get("amount", 1) is None:  # our API reads null as 1; this door never did
            raise InvalidAmount("`amount` must be a decimal number.", field="amount")
        result = usage.record_usage(actor(), **RecordUsageRequest.parse(sent))
    except DomainError as exc:
        raise in_sdk_terms(exc, {"amount": "quantity"}) from exc
    answer = {
        "message": "Usage recorded",
        "event_name": result.event_name,
        "customer_key": result.customer_key,
        "amount": num(result.amount_micros),
        "quantity": num(result.amount_micros),
        "feature_key": result.feature_key,
        "event_id": result.event_id,
        "timestamp": millis(result.timestamp),
        "used": num(result.used_micros),
        "allowance": num(result.allowance_micros),
        "available": num(result.available_micros),
        "overage": num(result.overage_micros),
        "credit_used": num(result.credits_micros),
        "wallet_balance": num(result.balance_micros),
        "credit_system": result.credit_system,
        "replayed": result.replayed,
    }
    if result.replayed:
        return respond(answer, 200, {"Idempotent-Replayed": "true"})
    return respond(answer, 201)


# A correction needs a reason; Metrifox's is optional.
ADJUST_REASON = "Adjusted through the Metrifox door"


@bp.post("/usage/events/adjust")
def adjust_usage() -> Response:
    """Metrifox's "Adjust a Usage Event": the actual quantity of an event (not a delta); both
    amounts left out undo it (0). Our usage correction, after renaming the fields. Credits always
    follow the event's own cost: `actual_credit_used` is accepted only when it is null."""
    body = json_object()
    known = {"customer_key", "event_id", "actual_quantity", "actual_credit_used", "reason"}
    for name in body:
        if name not in known:
            raise ValidationError(
                f"Unknown field `{name}`; this request takes: {', '.join(sorted(known))}.",
                field=name,
            )
    if body.get("actual_credit_used") is not None:
        raise ValidationError(
            "Credits follow the event's own credit cost: send `actual_quantity` only.",
            field="actual_credit_used",
        )
    # Our correction's request model, after renaming the fields.
    quantity, reason = body.get("actual_quantity"), body.get("reason")
    sent = {
        "actual_amount": 0 if quantity is None else quantity,
        "reason": ADJUST_REASON if reason is None else reason,
    }
    try:
        result = corrections.correct_usage(
            actor(),
            customer_key=body.get("customer_key"),
            event_id=body.get("event_id"),
            **CorrectionRequest.parse(sent),
        )
    except DomainError as exc:
        raise in_sdk_terms(exc, {"actual_amount": "actual_quantity"}) from exc
    effect = result.effect
    data = {
        "event_id": effect.event_id,
        "adjusted": result.corrected,
        "actual_quantity": num(effect.effective_after_micros),
        "actual_credit_used": num(effect.event_credits_micros or 0),
        "refunded_quantity": num(max(-effect.delta_micros, 0)),
        "refunded_credit": num(effect.refunded_micros),
        "deducted_quantity": num(max(effect.delta_micros, 0)),
        "deducted_credit": num(effect.deducted_micros),
        "message": "Usage adjusted" if result.corrected else "Usage already at this amount",
    }
    return respond({"data": data})


@bp.get("/usage/access")
def check_access() -> Response:
    args = request.args
    quantity = args.get("quantity", args.get("requested_quantity"))
    try:
        check = usage.check_entitlement(
            actor(),
            customer_key=args.get("customer_key"),
            feature_key=args.get("feature_key") or None,
            event_name=None if args.get("feature_key") else args.get("event_name"),
            amount=quantity if quantity not in (None, "") else 1,
        )
    except DomainError as exc:
        raise in_sdk_terms(exc, {"amount": "quantity"}) from exc
    unlimited = check.entitled and check.allowance_micros is None
    if check.allowed:
        message = "Feature found"
    else:
        message = check.message or "Access denied"
    data = {
        "customer_key": check.customer_key,
        "feature_key": check.feature_key,
        "event_name": check.event_name,
        "feature_type": check.feature_type,
        "requested_quantity": num(check.amount_micros),
        "can_access": check.allowed,
        "unlimited": unlimited,
        "balance": num(check.available_micros),
        "used_quantity": num(check.used_micros),
        "allowance": num(check.allowance_micros),
        "entitlement_active": check.entitled,
        "prepaid": check.credit_system is not None,
        "wallet_balance": num(check.balance_micros),
        "credits_required": num(check.credits_required_micros),
        "credit_system": check.credit_system,
        "reset_at": check.reset_at,
        "reason": check.reason,
        "message": message,
    }
    return respond({"data": data})


def event_json(event: EventView) -> dict[str, Any]:
    return {
        "id": str(event.id),
        "event_id": event.event_id,
        "customer_key": event.customer_key,
        "feature_key": event.feature_key,
        "event_name": event.event_name,
        "quantity": num(event.amount_micros),
        # Ours: the quantity after its adjustments (usage/events/adjust), as the event stays.
        "effective_quantity": num(event.effective_amount_micros),
        "timestamp": millis(event.timestamp),
        "credit_used": num(event.credits_micros),
        # Ours: the credits it costs after its adjustments.
        "effective_credit_used": num(event.effective_credits_micros),
        "metadata": event.metadata or {},
        "recorded_at": event.recorded_at,
    }


@bp.get("/usage/events")
def list_events() -> Response:
    args = request.args
    page = paged.list_events_paged(
        actor(),
        customer_key=args.get("customer_key"),
        feature_key=args.get("feature_key"),
        page=args.get("page"),
        per_page=args.get("per_page"),
    )
    return respond(
        {
            "data": [event_json(e) for e in page.items],
            "meta": page.meta(),
        }
    )
