"""The routes of /api/v1. Each declares its OpenAPI operation (bodies, the errors it can give),
parses its input with a request model of ``schemas``, calls one service function with the API
key's actor, and answers with a response model; DomainErrors become JSON errors in
webapp.errorhandlers."""

from __future__ import annotations

import json
from typing import Any

from flask import Blueprint, Response, g, request

from .. import errors as e
from .. import jsondoor
from ..errors import DomainError, PayloadTooLarge
from ..jsondoor import json_body, query
from ..models import utcnow
from ..services import (
    catalog,
    corrections,
    events,
    plans,
    reads,
    reports,
    usage,
    wallets,
    webhooks,
)
from ..services.actors import Actor
from ..services.credits import reads as grants
from ..services.usage import MAX_BATCH
from . import schemas
from .openapi import (
    CURSOR,
    CUSTOMER_KEY_PATH,
    DELIVERY_ID_PATH,
    ENDPOINT_ID_PATH,
    EVENT_ID_PATH,
    FEATURE_KEY_PATH,
    GRANT_ID_PATH,
    LIMIT,
    PLAN_KEY_PATH,
    Operations,
    openapi_document,
    param,
)

bp = Blueprint("api", __name__, url_prefix="/api/v1")

api = Operations(bp, "/api/v1")
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
    if isinstance(payload, schemas.Response):
        payload = payload.model_dump()
    text = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
    return Response(text + "\n", status=status, mimetype="application/json")


def created_or_replayed(payload: schemas.Response, replayed: bool) -> Response:
    response = respond(payload, 200 if replayed else 201)
    if replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return response


# ---------------------------------------------------------------- usage


@api.post(
    "/usage",
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
def record_usage():
    result = usage.record_usage(actor(), **schemas.RecordUsageRequest.parse(json_body()))
    return created_or_replayed(schemas.UsageResult.model_validate(result), result.replayed)


@api.post(
    "/usage/batch",
    "recordUsageBatch",
    "Record up to 1000 usage events",
    tag="Usage",
    body="BatchRequest",
    ok={200: ("BatchResult", "One result per event, in order.")},
    errors=(e.Forbidden,),
    description="Each event is judged on its own, in order, as if sent alone; an "
    "invalid event writes nothing and gets its own error.",
)
def record_usage_batch():
    data = json_body()
    if isinstance(data, dict) and isinstance(data.get("events"), list):
        if len(data["events"]) > MAX_BATCH:
            raise PayloadTooLarge(
                f"A batch holds at most {MAX_BATCH} events; split it.",
                field="events",
                max_events=MAX_BATCH,
            )
    fields = schemas.BatchRequest.parse(data)
    events: list[Any] = fields["events"]
    # Each event is judged alone: one of the wrong shape gets its own error and is not sent on.
    shaped: list[dict[str, Any] | DomainError] = []
    for raw in events:
        try:
            shaped.append(schemas.RecordUsageRequest.parse(raw))
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
                {"status": status, "body": schemas.UsageResult.model_validate(outcome).model_dump()}
            )
    return respond({"results": results})


@api.get(
    "/entitlements/check",
    "checkEntitlement",
    "Would this usage be allowed now? (writes nothing)",
    tag="Usage",
    params=[
        param("customer_key", "query", "The customer.", required=True),
        param("feature_key", "query", "The feature (or `event_name`)."),
        param("event_name", "query", "The feature's event name (or `feature_key`)."),
        param("amount", "query", "Units to check, default 1."),
    ],
    ok={200: ("EntitlementCheck", "The verdict, with the numbers behind it.")},
    errors=(e.Forbidden, e.CustomerNotFound, e.FeatureNotFound, e.InvalidAmount),
)
def check_entitlement():
    args = query(("customer_key", "feature_key", "event_name", "amount"))
    result = usage.check_entitlement(
        actor(),
        customer_key=args["customer_key"],
        feature_key=args["feature_key"],
        event_name=args["event_name"],
        amount=args["amount"],
    )
    return respond(schemas.EntitlementCheck.model_validate(result))


# ---------------------------------------------------------------- wallets


def ledger_result(result: wallets.LedgerResult) -> schemas.LedgerResult:
    """A topup or adjustment with its grant (as it is now) or, when negative, its allocations."""
    entry = result.entry
    grant = None if entry.grant_id is None else grants.get_grant(actor(), entry.grant_id)
    parts = grants.allocations_of_entries([entry.id]) if entry.amount_micros < 0 else {}
    return schemas.LedgerResult.of(
        entry, result.customer_key, result.credit_system, grant, parts.get(entry.id, [])
    )


@api.post(
    "/wallets/topups",
    "topupWallet",
    "Add credits to a wallet: one new grant (the only way to add credits)",
    tag="Wallets",
    body="TopupRequest",
    ok={
        201: ("LedgerResult", "Credits added: the `topup` entry and its grant."),
        200: ("LedgerResult", "A replay of an earlier topup (same `idempotency_key`)."),
    },
    errors=(e.Forbidden, e.CustomerNotFound, e.NotFound, e.IdempotencyConflict),
    replay=True,
    description="Finance and admin keys only. Every topup creates exactly one grant of its own, "
    "with its kind, priority, effective and expiry times and, for purchased credits, the price "
    "of one credit.",
)
def topup_wallet():
    result = wallets.topup_wallet(actor(), **schemas.TopupRequest.parse(json_body()))
    return created_or_replayed(ledger_result(result), result.replayed)


@api.post(
    "/wallets/adjustments",
    "adjustWallet",
    "Correct a wallet with a signed adjustment and a reason",
    tag="Wallets",
    body="AdjustmentRequest",
    ok={
        201: ("LedgerResult", "The adjustment entry, with its grant or its allocations."),
        200: ("LedgerResult", "A replay of an earlier adjustment (same `idempotency_key`)."),
    },
    errors=(
        e.Forbidden,
        e.InsufficientCredits,
        e.CustomerNotFound,
        e.NotFound,
        e.IdempotencyConflict,
    ),
    replay=True,
    description="Finance and admin keys only. Positive: a new `granted` grant. Negative: "
    "spent from the grants available now in spending order, never below zero "
    "(`insufficient_credits`, nothing written). Idempotent with `idempotency_key`.",
)
def adjust_wallet():
    result = wallets.adjust_wallet(actor(), **schemas.AdjustmentRequest.parse(json_body()))
    return created_or_replayed(ledger_result(result), result.replayed)


@api.get(
    "/wallets/grants/<grant_id>",
    "getGrant",
    "One credit grant with what it paid for (its allocations, paged)",
    tag="Wallets",
    params=[GRANT_ID_PATH, CURSOR, LIMIT],
    ok={200: ("GrantDetail", "The grant and a page of its allocations, newest first.")},
    errors=(e.Forbidden, e.NotFound),
)
def get_grant(grant_id: str):
    args = query(("cursor", "limit"))
    grant = grants.get_grant(actor(), grant_id)
    page = grants.grant_allocations(actor(), grant.id, **args)
    return respond(schemas.GrantDetail.of(grant, page))


@api.post(
    "/wallets/grants/<grant_id>/void",
    "voidGrant",
    "Void what remains of a grant (finance, admin)",
    tag="Wallets",
    params=[GRANT_ID_PATH],
    body="VoidRequest",
    ok={
        201: ("LedgerResult", "The `void` entry and the grant, now voided."),
        200: ("LedgerResult", "A replay of an earlier void (same `idempotency_key`)."),
    },
    errors=(e.Forbidden, e.NotFound, e.IdempotencyConflict, e.NothingToVoid),
    replay=True,
    description="A refund of unused prepaid credits, or a mistaken topup: one `void` entry takes "
    "the grant's remaining out of the wallet. What it already paid for stays paid. A grant with "
    "nothing left (depleted, expired or voided) is `422 nothing_to_void`.",
)
def void_grant(grant_id: str):
    result = wallets.void_grant(
        actor(), grant_id=grant_id, **schemas.VoidRequest.parse(json_body())
    )
    grant = grants.GrantView.of(result.grant, result.customer_key, result.credit_system, utcnow())
    payload = schemas.LedgerResult.of(
        result.entry, result.customer_key, result.credit_system, grant, []
    )
    return created_or_replayed(payload, result.replayed)


# ---------------------------------------------------------------- customers


@api.get(
    "/customers",
    "listCustomers",
    "List customers, newest first",
    tag="Customers",
    params=[
        CURSOR,
        LIMIT,
        param("search", "query", "Part of the key, name or email."),
    ],
    ok={200: ("CustomerPage", "A page of customers.")},
    errors=(e.Forbidden,),
)
def list_customers():
    args = query(("cursor", "limit", "search"))
    page = reads.list_customers(actor(), **args)
    return respond(schemas.CustomerPage.model_validate(page))


@api.post(
    "/customers",
    "createCustomer",
    "Create a customer (admin)",
    tag="Customers",
    body="CustomerCreate",
    ok={201: ("Customer", "The new customer.")},
    errors=(e.Forbidden, e.Conflict),
)
def create_customer():
    customer = catalog.create_customer(actor(), **schemas.CustomerCreate.parse(json_body()))
    return respond(schemas.Customer.model_validate(customer), 201)


@api.get(
    "/customers/<key>",
    "getCustomer",
    "A customer with every entitlement and wallet balance",
    tag="Customers",
    params=[CUSTOMER_KEY_PATH],
    ok={200: ("CustomerDetail", "The customer.")},
    errors=(e.Forbidden, e.CustomerNotFound),
)
def get_customer(key: str):
    query(())
    summary = reads.customer_summary(actor(), key)
    plan = plans.customer_plan(summary.customer).to_json()
    return respond(schemas.CustomerDetail.of(summary, plan))


@api.get(
    "/customers/<key>/events",
    "listEvents",
    "A customer's usage events, newest first",
    tag="Customers",
    params=[
        CUSTOMER_KEY_PATH,
        param("feature_key", "query", "Only this feature."),
        param("since", "query", "Usage at or after this time (RFC 3339)."),
        param("until", "query", "Usage before this time (RFC 3339)."),
        CURSOR,
        LIMIT,
    ],
    ok={200: ("EventPage", "A page of events.")},
    errors=(e.Forbidden, e.CustomerNotFound, e.FeatureNotFound),
)
def list_events(key: str):
    args = query(("feature_key", "since", "until", "cursor", "limit"))
    page = reads.list_events(actor(), key, **args)
    return respond(schemas.EventPage.model_validate(page))


@api.post(
    "/customers/<key>/events/<event_id>/corrections",
    "correctUsage",
    "Correct a usage event to its actual amount (support, admin)",
    tag="Usage",
    params=[CUSTOMER_KEY_PATH, EVENT_ID_PATH],
    body="CorrectionRequest",
    ok={
        201: ("Correction", "The event was corrected."),
        200: (
            "Correction",
            "A replay of an earlier correction (same `idempotency_key`), or nothing to correct "
            "(`corrected: false`: the event already has this amount).",
        ),
    },
    errors=(
        e.Forbidden,
        e.CustomerNotFound,
        e.NotFound,
        e.InvalidAmount,
        e.NotEntitled,
        e.LimitExceeded,
        e.InsufficientCredits,
        e.FeatureNotRecordable,
        e.IdempotencyConflict,
    ),
    replay=True,
    description="The event row stays as recorded; a correction keeps the delta, the reason, "
    "the actor and the time, and the counter of the event's own period moves by the delta. "
    "Less usage refunds credits at the event's own cost to the grants it drew from (a part "
    "that returns to an expired or voided grant is booked to expiry or void at once); more "
    "usage is judged like new usage at the event's timestamp. On any error nothing is written.",
)
def correct_usage(key: str, event_id: str):
    result = corrections.correct_usage(
        actor(),
        customer_key=key,
        event_id=event_id,
        **schemas.CorrectionRequest.parse(json_body()),
    )
    payload = schemas.Correction.of(result)
    if not result.corrected:
        return respond(payload, 200)
    return created_or_replayed(payload, result.replayed)


@api.get(
    "/customers/<key>/ledger",
    "listLedger",
    "A customer's ledger entries, newest first",
    tag="Customers",
    params=[
        CUSTOMER_KEY_PATH,
        param("credit_system", "query", "Only this credit system."),
        CURSOR,
        LIMIT,
    ],
    ok={200: ("LedgerPage", "A page of ledger entries.")},
    errors=(e.Forbidden, e.CustomerNotFound, e.NotFound),
)
def list_ledger(key: str):
    args = query(("credit_system", "cursor", "limit"))
    page = reads.list_ledger(actor(), key, **args)
    # One query for the whole page: which grants paid for its deductions (and, for a
    # correction, which grants its credits went back to or came from).
    parts = grants.allocations_of_entries(
        v.id for v in page.items if v.amount_micros < 0 or v.type == "correction"
    )
    return respond(
        schemas.LedgerPage(
            data=[schemas.LedgerEntry.of(v, parts.get(v.id, [])) for v in page.items],
            next_cursor=page.next_cursor,
        )
    )


@api.get(
    "/customers/<key>/wallets",
    "listWallets",
    "A customer's wallets with their credits and grants",
    tag="Customers",
    params=[
        CUSTOMER_KEY_PATH,
        param(
            "status",
            "query",
            "Grants of these statuses: one of `scheduled`, `active`, `depleted`, `expired`, "
            "`voided`, a comma-separated list, or `all`. Default `scheduled,active`.",
        ),
    ],
    ok={200: ("WalletPage", "Every wallet in one page (`next_cursor` is null).")},
    errors=(e.Forbidden, e.CustomerNotFound),
)
def list_wallets(key: str):
    args = query(("status",))
    found = reads.customer_wallets(actor(), key, **args)
    return respond(
        schemas.WalletPage(data=[schemas.WalletGrants.of(w) for w in found], next_cursor=None)
    )


@api.put(
    "/customers/<key>/entitlements/<feature_key>",
    "setEntitlement",
    "Create or replace a customer's entitlement to a feature (admin)",
    tag="Configuration",
    params=[CUSTOMER_KEY_PATH, FEATURE_KEY_PATH],
    body="EntitlementPut",
    ok={200: ("Entitlement", "The entitlement as it now is.")},
    errors=(e.Forbidden, e.CustomerNotFound, e.FeatureNotFound),
    description="Every field is required (`allowance: null` is unlimited): a missing "
    "`reset_period` is a `validation_error`, never a default. Use PATCH to change some fields.",
)
def set_entitlement(key: str, feature_key: str):
    fields = schemas.EntitlementPut.parse(json_body())
    return _entitlement(
        key, feature_key, catalog.replace_entitlement(actor(), key, feature_key, **fields)
    )


@api.patch(
    "/customers/<key>/entitlements/<feature_key>",
    "updateEntitlement",
    "Change some fields of a customer's entitlement (admin)",
    tag="Configuration",
    params=[CUSTOMER_KEY_PATH, FEATURE_KEY_PATH],
    body="EntitlementPatch",
    ok={200: ("Entitlement", "The entitlement as it now is.")},
    errors=(e.Forbidden, e.CustomerNotFound, e.FeatureNotFound, e.NotFound),
    description="Only the fields sent change; the others keep their value. The customer "
    "must already have an entitlement to the feature (404 `not_found` otherwise).",
)
def update_entitlement(key: str, feature_key: str):
    fields = schemas.EntitlementPatch.parse(json_body())
    entitlement = catalog.update_entitlement(actor(), key, feature_key, **fields)
    return _entitlement(key, feature_key, entitlement)


def _entitlement(key: str, feature_key: str, entitlement: Any) -> Response:
    return respond(_entitlement_body(key, feature_key, entitlement))


def _entitlement_body(key: str, feature_key: str, entitlement: Any) -> schemas.Entitlement:
    fields = (
        "allowance_micros",
        "reset_period",
        "overage",
        "updated_at",
        "source",
        "pending_reset_period",
        "pending_reset_at",
    )
    return schemas.Entitlement.model_validate(
        {"customer_key": key, "feature_key": feature_key}
        | {name: getattr(entitlement, name) for name in fields}
        | {"overridden": entitlement.overridden.split(",") if entitlement.overridden else []}
    )


@api.delete(
    "/customers/<key>/entitlements/<feature_key>",
    "removeEntitlement",
    "Remove a customer's entitlement, or its override when it is on a plan (admin)",
    tag="Configuration",
    params=[CUSTOMER_KEY_PATH, FEATURE_KEY_PATH],
    ok={200: ("EntitlementRemoved", "What was removed and what applies now.")},
    errors=(e.Forbidden, e.CustomerNotFound, e.FeatureNotFound, e.NotFound, e.ValidationError),
    description="A customer on a plan: the override goes and the plan's value applies again "
    "(404 `not_found` when there is no override). Without a plan: the entitlement goes.",
)
def remove_entitlement(key: str, feature_key: str):
    query(())
    removed = catalog.remove_entitlement(actor(), key, feature_key)
    now = catalog.entitlement_of(key, feature_key)
    return respond(
        schemas.EntitlementRemoved(
            customer_key=key,
            feature_key=feature_key,
            removed=removed,
            entitlement=None if now is None else _entitlement_body(key, feature_key, now),
        )
    )


# ---------------------------------------------------------------- plans


def _plan(view: plans.PlanView) -> dict[str, Any]:
    p = view.plan
    return {
        "key": p.key,
        "name": p.name,
        "status": p.status,
        "prorate_included_credits": p.prorate_included_credits,
        "revision": p.revision,
        "customers": view.customers,
        "entitlements": [
            {
                "feature_key": f.key,
                "allowance_micros": pe.allowance_micros,
                "reset_period": pe.reset_period,
                "overage": pe.overage,
            }
            for f, pe in view.entitlements
        ],
        "included_credits": [
            {"credit_system": cs.key, "amount_micros": pc.amount_micros, "period": pc.period}
            for cs, pc in view.credits
        ],
        "created_at": p.created_at,
        "updated_at": p.updated_at,
    }


@api.get(
    "/plans",
    "listPlans",
    "Every plan, with its entitlements, included credits and customer count",
    tag="Plans",
    params=[param("status", "query", "Only plans of this status: `active` or `archived`.")],
    ok={200: ("PlanPage", "All plans in one page (`next_cursor` is null).")},
    errors=(e.Forbidden,),
)
def list_plans():
    args = query(("status",))
    found = plans.list_plans(actor(), **args)
    return respond(
        schemas.PlanPage.model_validate({"data": [_plan(v) for v in found], "next_cursor": None})
    )


@api.post(
    "/plans",
    "createPlan",
    "Create a plan (admin)",
    tag="Plans",
    body="PlanCreate",
    ok={201: ("Plan", "The new plan.")},
    errors=(e.Forbidden, e.Conflict, e.FeatureNotFound, e.NotFound),
)
def create_plan():
    fields = schemas.PlanCreate.parse(json_body())
    for name in ("entitlements", "included_credits"):
        if name in fields:
            fields[name] = schemas.items(fields[name])
    plan = plans.create_plan(actor(), **fields)
    return respond(schemas.Plan.model_validate(_plan(plans.read_plan(actor(), plan.key))), 201)


@api.get(
    "/plans/<plan_key>",
    "getPlan",
    "A plan",
    tag="Plans",
    params=[PLAN_KEY_PATH],
    ok={200: ("Plan", "The plan.")},
    errors=(e.Forbidden, e.NotFound),
)
def get_plan(plan_key: str):
    query(())
    return respond(schemas.Plan.model_validate(_plan(plans.read_plan(actor(), plan_key))))


@api.patch(
    "/plans/<plan_key>",
    "updatePlan",
    "Edit or archive a plan; every customer on it changes (admin)",
    tag="Plans",
    params=[PLAN_KEY_PATH],
    body="PlanUpdate",
    ok={200: ("PlanEditResult", "The plan as it now is, and the customers changed.")},
    errors=(e.Forbidden, e.NotFound, e.FeatureNotFound, e.PlanChangeBlocked),
    description="Every customer on the plan changes, in batches. A `block` allowance under a "
    "customer's usage refuses the edit (409 `plan_change_blocked`, `details.blocked` lists "
    "them) unless `apply_to_others`; a new reset period waits for the end of a period that has "
    "usage. `status: archived` archives the plan (no new customers).",
)
def update_plan(plan_key: str):
    fields = schemas.PlanUpdate.parse(json_body())
    status = fields.pop("status", None)
    for name in ("entitlements", "included_credits"):
        if name in fields:
            fields[name] = schemas.items(fields[name])
    who = actor()
    result = plans.update_plan(who, plan_key, **fields)
    if status is not None:
        plans.set_plan_status(who, plan_key, status)
    body = _plan(plans.read_plan(who, plan_key))
    body["customers_updated"] = result.updated
    body["kept"] = [b.to_json() for b in result.kept]
    return respond(schemas.PlanEditResult.model_validate(body))


@api.post(
    "/plans/<plan_key>/preview",
    "previewPlanEdit",
    "Who an edit of the plan's entitlements would change, and who blocks it (admin)",
    tag="Plans",
    params=[PLAN_KEY_PATH],
    body="PlanPreviewRequest",
    ok={200: ("PlanPreview", "Nothing is written.")},
    errors=(e.Forbidden, e.NotFound, e.FeatureNotFound),
)
def preview_plan(plan_key: str):
    fields = schemas.PlanPreviewRequest.parse(json_body())
    preview = plans.preview_plan_edit(
        actor(), plan_key, entitlements=schemas.items(fields["entitlements"])
    )
    return respond(
        schemas.PlanPreview.model_validate(
            {
                "plan": preview.plan.key,
                "affected": preview.affected,
                "blocked": [b.to_json() for b in preview.blocked],
                "scheduled_resets": preview.scheduled_resets,
            }
        )
    )


@api.put(
    "/customers/<key>/plan",
    "setCustomerPlan",
    "Put a customer on a plan, now or at the period's end (admin)",
    tag="Plans",
    params=[CUSTOMER_KEY_PATH],
    body="CustomerPlanPut",
    ok={200: ("CustomerPlanResult", "The change, made or scheduled.")},
    errors=(e.Forbidden, e.CustomerNotFound, e.NotFound, e.PlanChangeBlocked),
    description="`plan: null` takes the customer off its plan (its entitlements stay, as its "
    "own). `now`: usage so far stays counted; seats above the new allowance refuse the change "
    "(409 `plan_change_blocked` lists what to reclaim); the new plan's included credits are "
    "issued at once. `period_end`: scheduled for the next UTC month start. The current plan "
    "with `now` cancels a scheduled change.",
)
def set_customer_plan(key: str):
    fields = schemas.CustomerPlanPut.parse(json_body())
    if "plan" not in fields:
        raise e.ValidationError("`plan` is required (null: no plan).", field="plan")
    change = plans.change_customer_plan(
        actor(), key, fields["plan"], when=fields.get("when", "now")
    )
    return respond(
        schemas.CustomerPlanResult.model_validate(
            {
                "customer_key": change.customer.key,
                "plan": None if change.plan is None else change.plan.key,
                "when": change.when,
                "at": change.at,
                "scheduled": change.scheduled,
                "included_credits_issued": change.issued,
            }
        )
    )


# ---------------------------------------------------------------- catalog


@api.get(
    "/features",
    "listFeatures",
    "Every feature, with its credit cost",
    tag="Configuration",
    ok={200: ("FeaturePage", "All features in one page (`next_cursor` is null).")},
    errors=(e.Forbidden,),
)
def list_features():
    query(())
    rows = catalog.list_features(actor())
    return respond(
        schemas.FeaturePage(data=[schemas.Feature.of(*row) for row in rows], next_cursor=None)
    )


@api.post(
    "/features",
    "createFeature",
    "Create a feature (admin)",
    tag="Configuration",
    body="FeatureCreate",
    ok={201: ("Feature", "The new feature.")},
    errors=(e.Forbidden, e.Conflict),
)
def create_feature():
    feature = catalog.create_feature(actor(), **schemas.FeatureCreate.parse(json_body()))
    return respond(schemas.Feature.of(feature), 201)


@api.put(
    "/features/<feature_key>/credit-cost",
    "setCreditCost",
    "Make a feature credit-based, or change its cost (admin)",
    tag="Configuration",
    params=[FEATURE_KEY_PATH],
    body="CreditCostPut",
    ok={200: ("CreditCost", "The credit cost as it now is.")},
    errors=(e.Forbidden, e.FeatureNotFound, e.NotFound, e.FeatureNotRecordable),
)
def set_credit_cost(feature_key: str):
    fields = schemas.CreditCostPut.parse(json_body())
    cost = catalog.set_credit_cost(actor(), feature_key, **fields)
    return respond(
        schemas.CreditCost.model_validate(
            {
                "feature_key": feature_key,
                "credit_system": fields["credit_system"],
                "cost": cost.cost_micros,
                "updated_at": cost.updated_at,
            }
        )
    )


@api.post(
    "/credit-systems",
    "createCreditSystem",
    "Create a credit system (admin)",
    tag="Configuration",
    body="CreditSystemCreate",
    ok={201: ("CreditSystem", "The new credit system.")},
    errors=(e.Forbidden, e.Conflict),
)
def create_credit_system():
    system = catalog.create_credit_system(actor(), **schemas.CreditSystemCreate.parse(json_body()))
    return respond(schemas.CreditSystem.model_validate(system), 201)


# ---------------------------------------------------------------- webhooks


@api.post(
    "/webhooks/endpoints",
    "createWebhookEndpoint",
    "Register a webhook endpoint (admin); its secret is in this answer only",
    tag="Webhooks",
    body="WebhookEndpointCreate",
    ok={201: ("WebhookEndpointCreated", "The endpoint, with its signing secret (shown once).")},
    errors=(e.Forbidden,),
    description="Deliveries are signed per Standard Webhooks (`webhook-id` is the event id, "
    "`webhook-timestamp`, `webhook-signature`) and sent at least once, in no guaranteed order. "
    "A URL that is not https, or names an internal address, is a `validation_error` on `url`.",
)
def create_webhook_endpoint():
    new = webhooks.create_endpoint(actor(), **schemas.WebhookEndpointCreate.parse(json_body()))
    payload = schemas.WebhookEndpoint.model_validate(new.endpoint).model_dump()
    return respond(
        schemas.WebhookEndpointCreated.model_validate(payload | {"secret": new.secret}), 201
    )


@api.get(
    "/webhooks/endpoints",
    "listWebhookEndpoints",
    "Every webhook endpoint (admin)",
    tag="Webhooks",
    ok={200: ("WebhookEndpointPage", "All endpoints in one page (`next_cursor` is null).")},
    errors=(e.Forbidden,),
)
def list_webhook_endpoints():
    query(())
    rows = webhooks.list_endpoints(actor())
    return respond(
        schemas.WebhookEndpointPage(
            data=[schemas.WebhookEndpoint.model_validate(r) for r in rows], next_cursor=None
        )
    )


@api.get(
    "/webhooks/endpoints/<int:endpoint_id>",
    "getWebhookEndpoint",
    "One webhook endpoint (admin)",
    tag="Webhooks",
    params=[ENDPOINT_ID_PATH],
    ok={200: ("WebhookEndpoint", "The endpoint (without its secret).")},
    errors=(e.Forbidden, e.NotFound),
)
def get_webhook_endpoint(endpoint_id: int):
    query(())
    endpoint = webhooks.get_endpoint(actor(), endpoint_id)
    return respond(schemas.WebhookEndpoint.model_validate(endpoint))


@api.patch(
    "/webhooks/endpoints/<int:endpoint_id>",
    "updateWebhookEndpoint",
    "Change a webhook endpoint's URL, event types, description or enabled (admin)",
    tag="Webhooks",
    params=[ENDPOINT_ID_PATH],
    body="WebhookEndpointPatch",
    ok={200: ("WebhookEndpoint", "The endpoint as it now is.")},
    errors=(e.Forbidden, e.NotFound),
)
def update_webhook_endpoint(endpoint_id: int):
    fields = schemas.WebhookEndpointPatch.parse(json_body())
    endpoint = webhooks.update_endpoint(actor(), endpoint_id, **fields)
    return respond(schemas.WebhookEndpoint.model_validate(endpoint))


@api.post(
    "/webhooks/endpoints/<int:endpoint_id>/disable",
    "disableWebhookEndpoint",
    "Disable a webhook endpoint (admin)",
    tag="Webhooks",
    params=[ENDPOINT_ID_PATH],
    ok={200: ("WebhookEndpoint", "The endpoint, disabled.")},
    errors=(e.Forbidden, e.NotFound),
    description="Nothing more is sent to it; its pending deliveries wait (within their 3 days) "
    'until it is enabled again with PATCH `{"enabled": true}`.',
)
def disable_webhook_endpoint(endpoint_id: int):
    query(())
    endpoint = webhooks.disable_endpoint(actor(), endpoint_id)
    return respond(schemas.WebhookEndpoint.model_validate(endpoint))


@api.post(
    "/webhooks/endpoints/<int:endpoint_id>/rotate",
    "rotateWebhookSecret",
    "A new signing secret (admin); the old one keeps signing for 24 h",
    tag="Webhooks",
    params=[ENDPOINT_ID_PATH],
    ok={200: ("WebhookEndpointCreated", "The endpoint with its new secret (shown once).")},
    errors=(e.Forbidden, e.NotFound),
    description="For 24 h every delivery carries two signatures, one per secret, so the "
    "receiver can switch secrets without missing a delivery.",
)
def rotate_webhook_secret(endpoint_id: int):
    query(())
    new = webhooks.rotate_secret(actor(), endpoint_id)
    payload = schemas.WebhookEndpoint.model_validate(new.endpoint).model_dump()
    return respond(schemas.WebhookEndpointCreated.model_validate(payload | {"secret": new.secret}))


@api.post(
    "/webhooks/endpoints/<int:endpoint_id>/test",
    "sendWebhookTestEvent",
    "Send a `webhook.test` event to this endpoint (admin)",
    tag="Webhooks",
    params=[ENDPOINT_ID_PATH],
    ok={202: ("WebhookDelivery", "The delivery, queued for the worker.")},
    errors=(e.Forbidden, e.NotFound),
)
def send_webhook_test_event(endpoint_id: int):
    query(())
    delivery = webhooks.send_test_event(actor(), endpoint_id)
    row = webhooks.get_delivery(actor(), delivery.id)
    return respond(schemas.WebhookDelivery.model_validate(row), 202)


@api.get(
    "/webhooks/deliveries",
    "listWebhookDeliveries",
    "The newest webhook deliveries (admin)",
    tag="Webhooks",
    params=[
        param("endpoint_id", "query", "Only this endpoint's.", schema={"type": "integer"}),
        param("status", "query", "`pending`, `delivered` or `failed`."),
        LIMIT,
    ],
    ok={200: ("WebhookDeliveryPage", "Up to `limit` deliveries, newest first.")},
    errors=(e.Forbidden,),
)
def list_webhook_deliveries():
    args = query(("endpoint_id", "status", "limit"))
    endpoint_id = args.get("endpoint_id")
    if endpoint_id is not None and not endpoint_id.isdecimal():
        raise e.ValidationError("`endpoint_id` must be a whole number.", field="endpoint_id")
    rows = webhooks.list_deliveries(
        actor(),
        endpoint_id=int(endpoint_id) if endpoint_id is not None else None,
        status=args.get("status"),
        limit=args.get("limit") or 50,
    )
    return respond(
        schemas.WebhookDeliveryPage(
            data=[schemas.WebhookDelivery.model_validate(r) for r in rows], next_cursor=None
        )
    )


@api.get(
    "/webhooks/deliveries/<int:delivery_id>",
    "getWebhookDelivery",
    "One webhook delivery with its attempts, newest first (admin)",
    tag="Webhooks",
    params=[DELIVERY_ID_PATH, CURSOR, LIMIT],
    ok={200: ("WebhookDeliveryDetail", "The delivery and a page of its attempts.")},
    errors=(e.Forbidden, e.NotFound),
    description="Each attempt: when it started and finished, how long it took, the answer's "
    "status code or the error (timeout, refused connection, an address refused by the SSRF "
    "guard, ...), the first KiB of the answer and the worker that made it. The backoff makes at "
    "most 36 attempts in a delivery's 3 days with the default settings; resends and stopped "
    "workers add more, so the attempts come a page at a time.",
)
def get_webhook_delivery(delivery_id: int):
    args = query(("cursor", "limit"))
    found = webhooks.delivery_attempts(actor(), delivery_id, **args)
    return respond(schemas.WebhookDeliveryDetail.of(found))


@api.post(
    "/webhooks/deliveries/<int:delivery_id>/resend",
    "resendWebhookDelivery",
    "Send a delivery again now (admin)",
    tag="Webhooks",
    params=[DELIVERY_ID_PATH],
    ok={202: ("WebhookDelivery", "The delivery, pending again with a new 3-day window.")},
    errors=(e.Forbidden, e.NotFound),
)
def resend_webhook_delivery(delivery_id: int):
    query(())
    webhooks.resend(actor(), delivery_id)
    row = webhooks.get_delivery(actor(), delivery_id)
    return respond(schemas.WebhookDelivery.model_validate(row), 202)


# ---------------------------------------------------------------- the event log


@api.get(
    "/events",
    "listOutboxEvents",
    "The event log (alerts and changes), oldest first, after a cursor (admin)",
    tag="Events",
    params=[
        param("after", "query", "The `next_cursor` of the previous answer; none: from the start."),
        param("type", "query", "Only events of this type."),
        param("customer", "query", "Only events of this customer (key)."),
        LIMIT,
    ],
    ok={200: ("EventLogPage", "The events after the cursor, in the log's order.")},
    errors=(e.Forbidden,),
    description="The outbox as a log for consumers that poll instead of receiving webhooks. "
    "Poll with `after` set to the last `next_cursor`; an event never appears behind a "
    'cursor already given out (docs/api.md, "Events").',
)
def list_outbox_events():
    args = query(("after", "type", "customer", "limit"))
    page = events.list_events(actor(), **args)
    return respond(
        schemas.EventLogPage(
            data=[schemas.EventEnvelope(**item) for item in page.items],
            next_cursor=page.next_cursor,
            has_more=page.has_more,
        )
    )


# ---------------------------------------------------------------- reports


@api.get(
    "/reports/credits",
    "getCreditReport",
    "The finance roll-forward of credits, per credit system and month (finance, admin, "
    "account managers)",
    tag="Reports",
    params=[
        param("from", "query", "First UTC month, `YYYY-MM` (default: 11 months before `to`)."),
        param("to", "query", "Last UTC month, `YYYY-MM` (default: this month); at most 120."),
        param("credit_system", "query", "One credit system's key (default: all)."),
    ],
    ok={200: ("CreditReport", "Each credit system's months and their total.")},
    errors=(e.Forbidden, e.NotFound),
)
def credit_report():
    args = query(("from", "to", "credit_system"))
    report = reports.credit_report(
        actor(),
        month_from=args["from"],
        month_to=args["to"],
        credit_system=args["credit_system"],
    )
    return respond(schemas.CreditReport.model_validate(report))


# ---------------------------------------------------------------- the contract itself


@api.get(
    "/openapi.json",
    "getOpenApi",
    "This document (public)",
    tag="Meta",
    ok={200: ("", "The OpenAPI 3.1 document.")},
    errors=(),
    public=True,
)
def openapi_json():
    return respond(openapi_document())
