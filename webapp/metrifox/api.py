"""The main API of the Metrifox SDK (``base_url``): customers, credit wallets and their credit
allocations (our credit grants); the parts of Metrifox this product does not have (checkout,
subscriptions, invoices) answer 501.

A Metrifox customer has many profile fields; ours has a key, a name and an email. The fields we do
not model are kept, not dropped, in the customer's metadata under the "metrifox" key."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from flask import Blueprint, Response, request

from ..api.schemas import CustomerCreate
from ..errors import DomainError, PayloadTooLarge, ValidationError
from ..jsondoor import json_object
from ..models import Customer
from ..services import catalog, reads
from ..services import metrifox as paged
from ..services.actors import ADMIN, require
from ..services.credits.reads import GrantView
from ..services.reads import EntitlementView, WalletView
from .common import Number, actor, in_sdk_terms, install, millis, not_supported, num, respond

bp = Blueprint("metrifox_api", __name__)
install(bp)

PROFILE_KEY = "metrifox"
MAX_BULK = 1000
NAME_FIELDS = ("display_name", "first_name", "middle_name", "last_name", "legal_name")
SDK_NAMES = {"key": "customer_key", "email": "primary_email", "name": "display_name"}


# ---------------------------------------------------------------- mapping


def _profile(customer: Customer) -> dict[str, Any]:
    profile = (customer.extra or {}).get(PROFILE_KEY)
    return dict(profile) if isinstance(profile, dict) else {}


def _user_metadata(customer: Customer) -> dict[str, Any]:
    return {k: v for k, v in (customer.extra or {}).items() if k != PROFILE_KEY}


def _full_name(profile: dict[str, Any]) -> str | None:
    parts = [profile.get(k) for k in ("first_name", "middle_name", "last_name")]
    text = " ".join(p.strip() for p in parts if isinstance(p, str) and p.strip())
    return text or None


def _name(profile: dict[str, Any], fallback: str) -> str:
    for candidate in (
        profile.get("display_name"),
        _full_name(profile),
        profile.get("legal_name"),
    ):
        if isinstance(candidate, str) and candidate.strip():
            return candidate
    return fallback


def _split(body: dict[str, Any]) -> tuple[dict[str, Any], object]:
    """The SDK body as (profile fields we keep in metadata, the caller's own metadata)."""
    profile = {
        k: v for k, v in body.items() if k not in ("customer_key", "primary_email", "metadata")
    }
    return profile, body.get("metadata")


def _metadata(profile: dict[str, Any], user: object) -> object:
    if user is None:
        user = {}
    if not isinstance(user, dict):
        return user  # the service explains what metadata must be
    if PROFILE_KEY in user:
        raise ValidationError(
            f"`metadata` may not use the key {PROFILE_KEY!r}: it holds the Metrifox profile.",
            field="metadata",
        )
    return {**user, PROFILE_KEY: profile} if profile else dict(user)


def customer_json(customer: Customer, archived: datetime | None = None) -> dict[str, Any]:
    profile = _profile(customer)
    return {
        **profile,
        "id": str(customer.id),
        "customer_key": customer.key,
        "customer_type": profile.get("customer_type", "INDIVIDUAL"),
        "primary_email": customer.email,
        "display_name": profile.get("display_name") or customer.name,
        "full_name": _full_name(profile) or customer.name,
        "name": customer.name,
        "status": customer.status,
        "created_at": customer.created_at,
        "archived_at": archived,
        "metadata": _user_metadata(customer),
    }


def _one(customer: Customer) -> dict[str, Any]:
    archived = paged.archived_at(actor(), [customer.key]).get(customer.key)
    return customer_json(customer, archived)


# Our grant kinds as Metrifox allocation types: a purchased grant is what Metrifox calls a
# "topup"; credits given away have no Metrifox type and keep our word.
ALLOCATION_TYPES = {"purchased": "topup", "granted": "granted"}


def allocation_json(grant: GrantView) -> dict[str, Any]:
    """A credit grant as a Metrifox credit allocation (without its transactions)."""
    return {
        "id": str(grant.id),
        "amount": num(grant.amount_micros),
        "consumed": num(grant.consumed_micros),
        "allocation_type": ALLOCATION_TYPES[grant.kind],
        "invoice_id": None,
        "order_id": None,
        "order_number": None,
        "valid_until": grant.expires_at,
        "created_at": grant.created_at,
        # Ours, beyond Metrifox's shape.
        "status": grant.status,
        "balance": num(grant.available_micros),
        "remaining": num(grant.remaining_micros),
        "expired": num(grant.expired_micros),
        "voided": num(grant.voided_micros),
        "kind": grant.kind,
        "priority": grant.priority,
        "valid_from": grant.effective_at,
        "reference": grant.reference,
    }


def transaction_json(txn: paged.TransactionView) -> dict[str, Any]:
    return {
        "id": str(txn.id),
        "amount": num(txn.amount_micros),
        "quantity": num(txn.quantity_micros),
        "event_name": txn.event_name,
        "usage_event_id": txn.event_id,
        "created_at": txn.created_at,
        # Ours, beyond Metrifox's shape.
        "type": txn.entry_type,
        "feature_key": txn.feature_key,
        "timestamp": millis(txn.timestamp),
    }


def wallet_json(
    wallet: WalletView, customer_key: str, allocations: list[GrantView]
) -> dict[str, Any]:
    """``balance`` is what the wallet can spend now: credits effective and not expired, whether or
    not an expiry has been booked yet; ``allocations`` are its live grants (active ones in
    spending order, then scheduled ones; at most MAX_WALLET_ALLOCATIONS)."""
    return {
        "id": str(wallet.wallet_id),
        "name": wallet.name,
        "credit_key": wallet.credit_system,
        "credit_unit_singular": wallet.unit_singular,
        "credit_unit_plural": wallet.unit_plural,
        "credit_system_id": str(wallet.credit_system_id),
        "balance": num(wallet.balance_micros),
        "customer_key": customer_key,
        "low_balance_threshold": num(wallet.low_balance_threshold_micros),
        "allocations": [allocation_json(g) for g in allocations],
        # Ours, beyond Metrifox's shape.
        "scheduled": num(wallet.scheduled_micros),
        # Runway (docs/domain.md, "Runway"): exact JSON numbers; null when nothing burns.
        "burn_rate_per_day": _number(wallet.burn_rate_per_day),
        "runway_days": _number(wallet.runway_days),
        "runs_out_at": wallet.runs_out_at,
        "expiring_unused": _number(wallet.expiring_unused),
    }


def _number(text: str | None) -> Number | None:
    return None if text is None else Number(text)


def wallets_json(wallets: list[WalletView], customer_key: str) -> list[dict[str, Any]]:
    live = paged.live_allocations([w.wallet_id for w in wallets])
    return [wallet_json(w, customer_key, live.get(w.wallet_id, [])) for w in wallets]


def entitlement_json(ent: EntitlementView) -> dict[str, Any]:
    return {
        "feature_key": ent.feature_key,
        "feature_name": ent.feature_name,
        "event_name": ent.event_name,
        "feature_type": ent.feature_type,
        "included_allowance": num(ent.allowance_micros),
        "used_quantity": num(ent.used_micros),
        "balance": num(ent.available_micros),
        "unlimited": ent.allowance_micros is None,
        "reset_interval": ent.reset_period,
        "overage": ent.overage,
        "next_reset_at": ent.reset_at,
        "prepaid": ent.credit_system is not None,
        "credit_key": ent.credit_system,
        "credit_cost": num(ent.cost_micros),
    }


# ---------------------------------------------------------------- customers


def _create(body: dict[str, Any]) -> Customer:
    profile, user = _split(body)
    key = body.get("customer_key")
    sent = {"name": _name(profile, key if isinstance(key, str) else "")}
    sent |= {ours: body[sdk] for ours, sdk in SDK_NAMES.items() if sdk in body and ours != "name"}
    try:
        command = CustomerCreate.parse({**sent, "metadata": _metadata(profile, user)})
        return catalog.create_customer(actor(), **command)
    except DomainError as exc:
        raise in_sdk_terms(exc, SDK_NAMES) from exc


@bp.post("/customers/new")
def create_customer() -> Response:
    customer = _create(json_object())
    return respond({"message": "Customer created", "data": customer_json(customer)}, 201)


@bp.get("/customers/<key>")
def get_customer(key: str) -> Response:
    customer = reads.customer_summary(actor(), key).customer
    return respond({"data": _one(customer)})


@bp.patch("/customers/<key>")
def update_customer(key: str) -> Response:
    body = json_object()
    if body.get("customer_key") not in (None, key):
        raise ValidationError("`customer_key` cannot change.", field="customer_key")
    changes, user = _split(body)

    def merge(current: Customer) -> dict[str, Any]:
        # Runs inside the service's transaction with the customer's row locked.
        fields: dict[str, Any] = {}
        if changes or user is not None:
            profile = {**_profile(current), **changes}
            kept_user = _user_metadata(current) if user is None else user
            fields["metadata"] = _metadata(profile, kept_user)
            if any(k in changes for k in NAME_FIELDS):
                fields["name"] = _name(profile, current.name)
        if "primary_email" in body:
            fields["email"] = body["primary_email"]
        return fields

    try:
        customer = catalog.update_customer(actor(), key, merge=merge)
    except DomainError as exc:
        raise in_sdk_terms(exc, SDK_NAMES) from exc
    return respond({"message": "Customer updated", "data": _one(customer)})


@bp.get("/customers")
def list_customers() -> Response:
    args = request.args
    for unsupported in ("customer_type", "date_created"):
        if args.get(unsupported):
            return not_supported(f"Filtering customers by `{unsupported}`")
    page = paged.list_customers_paged(
        actor(),
        page=args.get("page"),
        per_page=args.get("per_page"),
        search=args.get("search_term"),
    )
    archived = paged.archived_at(actor(), [c.key for c in page.items])
    return respond(
        {
            "data": [customer_json(c, archived.get(c.key)) for c in page.items],
            "meta": page.meta(),
        }
    )


@bp.delete("/customers/<key>")
def delete_customer(key: str) -> Response:
    catalog.delete_customer(actor(), key)
    return respond({"message": "Customer deleted", "data": {"customer_key": key}})


@bp.post("/customers/<key>/archive")
def archive_customer(key: str) -> Response:
    customer = catalog.set_customer_status(actor(), key, "archived")
    return respond({"message": "Customer archived", "data": _one(customer)})


@bp.post("/customers/<key>/unarchive")
def unarchive_customer(key: str) -> Response:
    customer = catalog.set_customer_status(actor(), key, "active")
    return respond({"message": "Customer unarchived", "data": _one(customer)})


@bp.get("/customers/<key>/details")
def customer_details(key: str) -> Response:
    summary = reads.customer_summary(actor(), key)
    customer = summary.customer
    profile = _profile(customer)
    data = {
        **_one(customer),
        "metrifox_id": str(customer.id),
        "billing_email": profile.get("billing_email"),
        "currency": profile.get("currency"),
        "timezone": profile.get("timezone"),
        "language": profile.get("language"),
        "subscriptions": [],
        "wallets": wallets_json(summary.wallets, customer.key),
        "entitlements": [entitlement_json(e) for e in summary.entitlements],
    }
    return respond({"data": data})


@bp.post("/customers/bulk-create")
def bulk_create() -> Response:
    # A role that may not create customers is refused as a whole (403), not once per customer.
    require(actor(), ADMIN)
    body = json_object()
    items = body.get("customers")
    if not isinstance(items, list):
        raise ValidationError("Send `customers`: a list of customers.", field="customers")
    if len(items) > MAX_BULK:
        raise PayloadTooLarge(
            f"A bulk create holds at most {MAX_BULK} customers.", field="customers"
        )
    created, failed = [], []
    for index, item in enumerate(items):
        try:
            if not isinstance(item, dict):
                raise ValidationError("Each customer must be a JSON object.")
            created.append(customer_json(_create(item)))
        except DomainError as exc:
            key = item.get("customer_key") if isinstance(item, dict) else None
            failed.append(
                {
                    "index": index,
                    "customer_key": key,
                    "error": exc.message,
                    "code": exc.code,
                    "details": exc.details,
                }
            )
    data = {
        "total": len(items),
        "successful_count": len(created),
        "failed_count": len(failed),
        "customers_created": created,
        "customers_failed": failed,
    }
    return respond({"message": "Bulk create finished", "data": data})


# ---------------------------------------------------------------- wallets


@bp.get("/credit_systems/v2/wallets")
def list_wallets() -> Response:
    summary = reads.customer_summary(actor(), request.args.get("customer_key"))
    return respond({"data": wallets_json(summary.wallets, summary.customer.key)})


@bp.get("/credit_systems/v2/wallets/<wallet_id>/credit-allocations")
def wallet_credit_allocations(wallet_id: str) -> Response:
    args = request.args
    page = paged.wallet_allocations_paged(
        actor(),
        wallet_id,
        status=args.get("status"),
        page=args.get("page"),
        per_page=args.get("per_page"),
    )
    recent = paged.recent_transactions([g.id for g in page.items])
    data = [
        {
            **allocation_json(g),
            "transactions": [transaction_json(t) for t in recent[g.id].items],
            "transactions_count": recent[g.id].total_count,
        }
        for g in page.items
    ]
    return respond(
        {"message": "Credit allocations fetched successfully", "data": data, "meta": page.meta()}
    )


@bp.get("/credit_systems/v2/credit-allocations/<allocation_id>")
def credit_allocation(allocation_id: str) -> Response:
    args = request.args
    grant, transactions = paged.allocation_transactions(
        actor(), allocation_id, page=args.get("page"), per_page=args.get("per_page")
    )
    data = {
        **allocation_json(grant),
        "transactions": [transaction_json(t) for t in transactions.items],
        "transactions_count": transactions.total_count,
    }
    return respond(
        {
            "message": "Credit allocation fetched successfully",
            "data": data,
            "meta": transactions.meta(),
        }
    )


# ---------------------------------------------------------------- what we do not do

NOT_PROVIDED = {  # endpoint: (what, its paths)
    "checkout_url": ("Checkout URLs", ["/products/offerings/generate-checkout-url"]),
    "checkout": ("Checkout and card collection", ["/checkout/<path:rest>"]),
    "subscriptions": (
        "Subscriptions, plans, billing history and invoices",
        ["/subscriptions/<path:rest>"],
    ),
    "quantity_price": ("Pricing a quantity (plans and prices)", ["/usage/quantity-price"]),
    "active_subscription": ("Subscriptions", ["/customers/<key>/check-active-subscription"]),
    "csv_upload": ("CSV upload of customers (use bulk-create)", ["/customers/csv-upload"]),
}
for endpoint, (what, rules) in NOT_PROVIDED.items():
    view = lambda what=what, **_: not_supported(what)  # noqa: E731
    for rule in rules:
        bp.add_url_rule(rule, endpoint, view, methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
