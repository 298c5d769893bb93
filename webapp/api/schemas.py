"""Every request and response of /api/v1 as a pydantic model, one per shape. The routes parse
bodies with the request models and answer with the response models; the OpenAPI document
(``openapi.py``) is generated from these same classes, so the contract cannot drift from the code.

Request models check the shape only (known fields, JSON types); the services judge the values.
Bodies arrive already parsed by ``jsondoor.json_body`` (numbers as Decimal, never a float), so
the models validate Python objects in strict mode and never parse JSON themselves."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr
from pydantic import ValidationError as PydanticError
from pydantic.json_schema import WithJsonSchema

from .. import models as db
from ..errors import ValidationError
from ..jsondoor import iso, safe
from ..models import FEATURE_TYPES, OVERAGE_POLICIES, RESET_PERIODS, TOPUP_KINDS
from ..services import reads, usage, wallets
from ..services.money import format_micros, quantity_json
from ..services.usage import MAX_BATCH


def _doc(schema: dict[str, Any]) -> WithJsonSchema:
    return WithJsonSchema(schema)


def _null(schema: dict[str, Any]) -> dict[str, Any]:
    kind = schema["type"]
    out = {**schema, "type": [*([kind] if isinstance(kind, str) else kind), "null"]}
    if "enum" in out:
        out["enum"] = [*out["enum"], None]
    return out


# ---------------------------------------------------------------- value types of the contract

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
AMOUNT = {
    "type": ["string", "number"],
    "description": "A decimal with at most 6 places, as a JSON string or number (never rounded).",
    "examples": ["2", 2],
}

Time = Annotated[str, _doc(TIME)]
OptTime = Annotated[str | None, _doc(_null(TIME))]
Credits = Annotated[str, _doc(CREDITS)]
OptCredits = Annotated[str | None, _doc(_null(CREDITS))]
Quantity = Annotated[int | str, _doc(QUANTITY)]
OptQuantity = Annotated[int | str | None, _doc(_null(QUANTITY))]
OptStr = Annotated[StrictStr | None, _doc({"type": ["string", "null"]})]
Object = Annotated[dict[str, Any], _doc({"type": "object"})]
OptObject = Annotated[dict[str, Any] | None, _doc({"type": ["object", "null"]})]
# An amount in: a JSON string or number (Decimal or int after parsing; a bool is not a number).
Amount = StrictStr | StrictInt | Decimal


def _amount(description: str, **extra: Any) -> Any:
    return Annotated[Amount, _doc({**AMOUNT, "description": description, **extra})]


def _enum(values: tuple[str, ...] | list[str], *, null: bool = False, **extra: Any) -> Any:
    schema = {"type": "string", "enum": list(values), **extra}
    return Annotated[
        StrictStr | None if null else StrictStr, _doc(_null(schema) if null else schema)
    ]


def _default(value: object) -> Any:
    """Unset (the service applies its default), documented as ``value``."""
    return Field(None, json_schema_extra={"default": value})


def credits(micros: int | None) -> str | None:
    return None if micros is None else format_micros(micros)


def quantity(micros: int | None) -> int | str | None:
    return None if micros is None else quantity_json(micros)


# ---------------------------------------------------------------- requests


class Request(BaseModel):
    """A request body: only these fields, each of its JSON type; values are the services' to
    judge. ``parse`` turns pydantic's complaints into our ``validation_error``."""

    model_config = ConfigDict(extra="forbid", strict=True)

    @classmethod
    def parse(cls, data: Any) -> dict[str, Any]:
        """The fields the client sent (unset ones left to the services' defaults)."""
        if not isinstance(data, dict):
            raise ValidationError("The body must be a JSON object.")
        for name in data:
            if name not in cls.model_fields:
                known = ", ".join(sorted(cls.model_fields))
                raise ValidationError(
                    f"Unknown field `{safe(name)}`; this request takes: {known}.", field=safe(name)
                )
        try:
            model = cls.model_validate(data)
        except PydanticError as exc:
            raise cls._complaint(exc.errors()[0]) from None
        return {name: getattr(model, name) for name in model.model_fields_set}

    @classmethod
    def _complaint(cls, error: Any) -> ValidationError:
        name = str(error["loc"][0]) if error["loc"] else ""
        if error["type"] == "missing":
            return ValidationError(f"`{name}` is required.", field=name)
        schema = cls.model_json_schema()["properties"].get(name, {})
        return ValidationError(f"`{name}` must be {_type_words(schema)}.", field=name)


def _type_words(schema: dict[str, Any]) -> str:
    kinds = schema.get("type") or [s.get("type", "") for s in schema.get("anyOf", [])]
    names = [kinds] if isinstance(kinds, str) else kinds
    words = {"number": "a number", "string": "a string", "object": "a JSON object"}
    words |= {"integer": "a whole number", "array": "a list", "null": "null"}
    words |= {"boolean": "true or false"}
    return " or ".join(words.get(n, n) for n in names) or "something else"


class RecordUsageRequest(Request):
    """One RecordUsage call. Unknown fields are rejected."""

    customer_key: Annotated[StrictStr, _doc({"type": "string", "examples": ["cust-6d11ca90"]})]
    event_name: Annotated[
        StrictStr | None,
        _doc(
            {
                "type": ["string", "null"],
                "description": "The feature's event name; exactly one of this and `feature_key`.",
                "examples": ["candidate.sourced"],
            }
        ),
    ] = None
    feature_key: Annotated[
        StrictStr | None,
        _doc(
            {
                "type": ["string", "null"],
                "description": "The feature's key; exactly one of this and `event_name`.",
            }
        ),
    ] = None
    amount: Annotated[
        Amount | None,
        _doc(
            {
                **AMOUNT,
                "type": ["string", "number", "null"],
                "description": "Feature units (never credits); negative only for persistent "
                "features. Null or left out: 1.",
            }
        ),
    ] = _default(1)
    event_id: Annotated[
        StrictStr | None,
        _doc(
            {
                "type": ["string", "null"],
                "description": "Idempotency key (printable ASCII, up to 200); the server makes "
                "one.",
            }
        ),
    ] = None
    timestamp: Annotated[StrictStr | None, _doc(_null(TIME))] = None
    metadata: Annotated[
        dict[str, Any] | None,
        _doc({"type": ["object", "null"], "description": "Free-form JSON object, 4 KiB."}),
    ] = None

    @classmethod
    def parse(cls, data: Any) -> dict[str, Any]:
        fields = super().parse(data)
        if fields.get("amount", 1) is None:
            del fields["amount"]  # null means "not given" (docs/api.md): 1
        return fields


class BatchRequest(Request):
    events: Annotated[
        list[Any],
        _doc(
            {
                "type": "array",
                "maxItems": MAX_BATCH,
                "items": {
                    "description": "A RecordUsage body. An event that is not valid gets its own "
                    "error in `results`; the others are still recorded."
                },
            }
        ),
    ]


class TopupRequest(Request):
    customer_key: StrictStr
    credit_system: Annotated[StrictStr, _doc({"type": "string", "examples": ["credits"]})]
    amount: _amount("Credits to add, greater than zero.")
    kind: _enum(TOPUP_KINDS, null=True) = _default("purchased")
    reference: Annotated[
        StrictStr | None,
        _doc({"type": ["string", "null"], "description": "E.g. an invoice number."}),
    ] = None
    note: OptStr = None
    idempotency_key: OptStr = None


class AdjustmentRequest(Request):
    customer_key: StrictStr
    credit_system: StrictStr
    amount: _amount("Signed credits: positive adds, negative removes (never below zero).")
    reason: Annotated[
        StrictStr, _doc({"type": "string", "description": "Why; kept in the ledger entry's note."})
    ]
    reference: OptStr = None


class CustomerCreate(Request):
    key: Annotated[
        StrictStr,
        _doc({"type": "string", "description": "Stable key: letters, digits and . _ : @ -"}),
    ]
    name: StrictStr
    email: OptStr = None
    metadata: OptObject = None


class FeatureCreate(Request):
    key: Annotated[
        StrictStr,
        _doc({"type": "string", "description": "Lower case letters, digits and _ . -"}),
    ]
    name: StrictStr
    type: _enum(FEATURE_TYPES)
    event_name: Annotated[
        StrictStr | None,
        _doc({"type": ["string", "null"], "description": "Defaults to the key."}),
    ] = None


class CreditSystemCreate(Request):
    key: StrictStr
    name: StrictStr
    unit_singular: OptStr = None
    unit_plural: OptStr = None


class CreditCostPut(Request):
    credit_system: StrictStr
    cost: _amount("Credits per feature unit, greater than zero.")


class EntitlementPut(Request):
    allowance: Annotated[
        Amount | None,
        _doc(
            {
                "type": ["string", "number", "null"],
                "description": "Units per reset period (consumable) or in total (persistent); "
                "null = unlimited. Required, so that unlimited is never an accident.",
            }
        ),
    ]
    reset_period: _enum(RESET_PERIODS, null=True) = _default("never")
    overage: _enum(OVERAGE_POLICIES, null=True) = _default("block")


# ---------------------------------------------------------------- responses


class Response(BaseModel):
    """A response body; its fields in the order the client sees them (docs/api.md)."""

    model_config = ConfigDict(extra="forbid")


class ErrorBody(Response):
    code: Annotated[str, _doc({"type": "string", "examples": ["insufficient_credits"]})]
    message: str
    details: Object


class Error(Response):
    error: ErrorBody


class UsageResult(Response):
    """`allowance`/`available` are null when unlimited; `credits_deducted` and `wallet_balance`
    are null for a feature that is not credit-based."""

    message: Annotated[str, _doc({"type": "string", "const": "Usage recorded"})]
    event_name: str
    customer_key: str
    amount: Quantity
    feature_key: str
    event_id: str
    timestamp: Time
    used: Annotated[
        int | str, _doc({**QUANTITY, "description": "Used in the current period after this event."})
    ]
    allowance: OptQuantity
    available: OptQuantity
    overage: Quantity
    credits_deducted: OptCredits
    wallet_balance: OptCredits
    credit_system: str | None

    @classmethod
    def of(cls, r: usage.UsageResult) -> UsageResult:
        return cls(
            message="Usage recorded",
            event_name=r.event_name,
            customer_key=r.customer_key,
            amount=quantity_json(r.amount_micros),
            feature_key=r.feature_key,
            event_id=r.event_id,
            timestamp=iso(r.timestamp),
            used=quantity_json(r.used_micros),
            allowance=quantity(r.allowance_micros),
            available=quantity(r.available_micros),
            overage=quantity_json(r.overage_micros),
            credits_deducted=credits(r.credits_micros),
            wallet_balance=credits(r.balance_micros),
            credit_system=r.credit_system,
        )


class BatchItem(Response):
    status: Annotated[
        int, _doc({"type": "integer", "description": "What the event alone would get."})
    ]
    body: UsageResult | Error


class BatchResult(Response):
    results: list[BatchItem]


class EntitlementCheck(Response):
    allowed: bool
    reason: Annotated[
        str | None,
        _doc(
            {
                "type": ["string", "null"],
                "description": "When not allowed: the RecordUsage error code it would get.",
            }
        ),
    ]
    message: str | None
    customer_key: str
    feature_key: str
    event_name: str
    type: Annotated[str, _doc({"type": "string", "enum": list(FEATURE_TYPES)})]
    amount: Quantity
    entitled: bool
    used: Quantity
    allowance: OptQuantity
    available: OptQuantity
    reset_at: OptTime
    credits_required: OptCredits
    wallet_balance: OptCredits
    credit_system: str | None

    @classmethod
    def of(cls, r: usage.CheckResult) -> EntitlementCheck:
        return cls(
            allowed=r.allowed,
            reason=r.reason,
            message=r.message,
            customer_key=r.customer_key,
            feature_key=r.feature_key,
            event_name=r.event_name,
            type=r.feature_type,
            amount=quantity_json(r.amount_micros),
            entitled=r.entitled,
            used=quantity_json(r.used_micros),
            allowance=quantity(r.allowance_micros),
            available=quantity(r.available_micros),
            reset_at=iso(r.reset_at),
            credits_required=credits(r.credits_required_micros),
            wallet_balance=credits(r.balance_micros),
            credit_system=r.credit_system,
        )


class LedgerResult(Response):
    message: Literal["Credits added", "Wallet adjusted"]
    customer_key: str
    credit_system: str
    type: Literal["topup", "adjustment"]
    kind: str | None
    amount: Credits
    reference: str | None
    note: str | None
    wallet_balance: Annotated[
        str, _doc({**CREDITS, "description": "The balance right after this entry."})
    ]
    ledger_entry_id: int
    created_at: Time

    @classmethod
    def of(cls, r: wallets.LedgerResult) -> LedgerResult:
        entry = r.entry
        return cls(
            message="Credits added" if entry.type == "topup" else "Wallet adjusted",
            customer_key=r.customer_key,
            credit_system=r.credit_system,
            type=entry.type,
            kind=entry.kind,
            amount=format_micros(entry.amount_micros),
            reference=entry.reference,
            note=entry.note,
            wallet_balance=format_micros(r.balance_micros),
            ledger_entry_id=entry.id,
            created_at=iso(entry.created_at),
        )


class Customer(Response):
    key: str
    name: str
    email: str | None
    status: Literal["active", "archived"]
    metadata: Object
    created_at: Time

    @classmethod
    def fields_of(cls, row: db.Customer) -> dict[str, Any]:
        return {
            "key": row.key,
            "name": row.name,
            "email": row.email,
            "status": row.status,
            "metadata": row.extra or {},
            "created_at": iso(row.created_at),
        }

    @classmethod
    def of(cls, row: db.Customer) -> Customer:
        return cls(**cls.fields_of(row))


class CustomerEntitlement(Response):
    feature_key: str
    feature_name: str
    event_name: str
    type: Annotated[str, _doc({"type": "string", "enum": list(FEATURE_TYPES)})]
    used: Quantity
    allowance: OptQuantity
    available: OptQuantity
    reset_period: Annotated[str, _doc({"type": "string", "enum": list(RESET_PERIODS)})]
    reset_at: OptTime
    overage: Annotated[str, _doc({"type": "string", "enum": list(OVERAGE_POLICIES)})]
    credit_system: str | None
    credit_cost: OptCredits

    @classmethod
    def of(cls, e: reads.EntitlementView) -> CustomerEntitlement:
        return cls(
            feature_key=e.feature_key,
            feature_name=e.feature_name,
            event_name=e.event_name,
            type=e.feature_type,
            used=quantity_json(e.used_micros),
            allowance=quantity(e.allowance_micros),
            available=quantity(e.available_micros),
            reset_period=e.reset_period,
            reset_at=iso(e.reset_at),
            overage=e.overage,
            credit_system=e.credit_system,
            credit_cost=credits(e.cost_micros),
        )


class Wallet(Response):
    credit_system: str
    name: str
    balance: Credits

    @classmethod
    def of(cls, w: reads.WalletView) -> Wallet:
        return cls(
            credit_system=w.credit_system, name=w.name, balance=format_micros(w.balance_micros)
        )


class CustomerDetail(Customer):
    entitlements: list[CustomerEntitlement]
    wallets: list[Wallet]

    @classmethod
    def of_summary(cls, s: reads.CustomerSummary) -> CustomerDetail:
        return cls(
            **Customer.fields_of(s.customer),
            entitlements=[CustomerEntitlement.of(e) for e in s.entitlements],
            wallets=[Wallet.of(w) for w in s.wallets],
        )


class Event(Response):
    event_id: str
    feature_key: str
    event_name: str
    amount: Quantity
    timestamp: Time
    metadata: OptObject
    credits_deducted: OptCredits
    overage: Quantity
    actor: str
    recorded_at: Time

    @classmethod
    def of(cls, e: reads.EventView) -> Event:
        return cls(
            event_id=e.event_id,
            feature_key=e.feature_key,
            event_name=e.event_name,
            amount=quantity_json(e.amount_micros),
            timestamp=iso(e.timestamp),
            metadata=e.metadata,
            credits_deducted=credits(e.credits_micros),
            overage=quantity_json(e.overage_micros),
            actor=e.actor,
            recorded_at=iso(e.recorded_at),
        )


class LedgerEntry(Response):
    id: int
    credit_system: str
    type: Literal["topup", "usage", "adjustment"]
    kind: str | None
    amount: Annotated[
        str, _doc({**CREDITS, "description": "Signed: positive adds, negative deducts."})
    ]
    balance_after: Credits
    reference: str | None
    note: str | None
    event_id: Annotated[
        str | None, _doc({"type": ["string", "null"], "description": "For `usage` entries."})
    ]
    actor: str
    created_at: Time

    @classmethod
    def of(cls, e: reads.LedgerView) -> LedgerEntry:
        return cls(
            id=e.id,
            credit_system=e.credit_system,
            type=e.type,
            kind=e.kind,
            amount=format_micros(e.amount_micros),
            balance_after=format_micros(e.balance_after_micros),
            reference=e.reference,
            note=e.note,
            event_id=e.event_id,
            actor=e.actor,
            created_at=iso(e.created_at),
        )


class Feature(Response):
    key: str
    name: str
    type: Annotated[str, _doc({"type": "string", "enum": list(FEATURE_TYPES)})]
    event_name: str
    credit_system: str | None
    credit_cost: OptCredits
    created_at: Time

    @classmethod
    def of(
        cls,
        row: db.Feature,
        cost: db.CreditCost | None = None,
        system: db.CreditSystem | None = None,
    ) -> Feature:
        return cls(
            key=row.key,
            name=row.name,
            type=row.type,
            event_name=row.event_name,
            credit_system=None if system is None else system.key,
            credit_cost=None if cost is None else format_micros(cost.cost_micros),
            created_at=iso(row.created_at),
        )


class CreditSystem(Response):
    key: str
    name: str
    unit_singular: str
    unit_plural: str
    created_at: Time

    @classmethod
    def of(cls, row: db.CreditSystem) -> CreditSystem:
        return cls(
            key=row.key,
            name=row.name,
            unit_singular=row.unit_singular,
            unit_plural=row.unit_plural,
            created_at=iso(row.created_at),
        )


class CreditCost(Response):
    feature_key: str
    credit_system: str
    cost: Credits
    updated_at: Time

    @classmethod
    def of(cls, feature_key: str, system_key: str, row: db.CreditCost) -> CreditCost:
        return cls(
            feature_key=feature_key,
            credit_system=system_key,
            cost=format_micros(row.cost_micros),
            updated_at=iso(row.updated_at),
        )


class Entitlement(Response):
    customer_key: str
    feature_key: str
    allowance: OptQuantity
    reset_period: Annotated[str, _doc({"type": "string", "enum": list(RESET_PERIODS)})]
    overage: Annotated[str, _doc({"type": "string", "enum": list(OVERAGE_POLICIES)})]
    updated_at: Time

    @classmethod
    def of(cls, customer_key: str, feature_key: str, row: db.Entitlement) -> Entitlement:
        return cls(
            customer_key=customer_key,
            feature_key=feature_key,
            allowance=quantity(row.allowance_micros),
            reset_period=row.reset_period,
            overage=row.overage,
            updated_at=iso(row.updated_at),
        )


NEXT_CURSOR = _doc(
    {
        "type": ["string", "null"],
        "description": "Pass as `cursor` for the next page; null on the last page.",
    }
)


class CustomerPage(Response):
    data: list[Customer]
    next_cursor: Annotated[str | None, NEXT_CURSOR]


class EventPage(Response):
    data: list[Event]
    next_cursor: Annotated[str | None, NEXT_CURSOR]


class LedgerPage(Response):
    data: list[LedgerEntry]
    next_cursor: Annotated[str | None, NEXT_CURSOR]


class FeaturePage(Response):
    data: list[Feature]
    next_cursor: Annotated[str | None, NEXT_CURSOR]


REQUESTS: tuple[type[Request], ...] = (
    RecordUsageRequest,
    BatchRequest,
    TopupRequest,
    AdjustmentRequest,
    CustomerCreate,
    FeatureCreate,
    CreditSystemCreate,
    CreditCostPut,
    EntitlementPut,
)
RESPONSES: tuple[type[Response], ...] = (
    Error,
    UsageResult,
    BatchResult,
    EntitlementCheck,
    LedgerResult,
    Customer,
    CustomerDetail,
    CustomerPage,
    EventPage,
    LedgerPage,
    Feature,
    FeaturePage,
    CreditSystem,
    CreditCost,
    Entitlement,
)
