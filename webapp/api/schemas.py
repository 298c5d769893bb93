"""Every request and response of /api/v1 as a pydantic model, one per shape. The routes parse
bodies with the request models and answer with the response models; the OpenAPI document
(``openapi.py``) is generated from these same classes, so the contract cannot drift from the code.

Request models check the shape only (known fields, JSON types); the services judge the values.
Bodies arrive already parsed by ``jsondoor.json_body`` (numbers as Decimal, never a float), so
the models validate Python objects in strict mode and never parse JSON themselves."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import (
    AliasChoices,
    AliasGenerator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    create_model,
)
from pydantic import ValidationError as PydanticError
from pydantic.json_schema import WithJsonSchema

from .. import models as db
from ..errors import ValidationError
from ..jsondoor import iso, safe
from ..models import (
    ATTEMPT_OUTCOMES,
    FEATURE_TYPES,
    GRANT_STATUSES,
    LEDGER_TYPES,
    OVERAGE_POLICIES,
    RESET_PERIODS,
    TOPUP_KINDS,
)
from ..services import reads, reports, wallets
from ..services.credits.reads import AllocationView, GrantView
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

OptStr = Annotated[StrictStr | None, _doc({"type": ["string", "null"]})]
Object = Annotated[dict[str, Any], _doc({"type": "object"})]
OptObject = Annotated[dict[str, Any] | None, _doc({"type": ["object", "null"]})]
# An amount in: a JSON string or number (Decimal or int after parsing; a bool is not a number).
Amount = Annotated[StrictStr | StrictInt | Decimal, _doc(AMOUNT)]


def _enum(values: tuple[str, ...] | list[str], *, null: bool = False, **extra: Any) -> Any:
    schema = {"type": "string", "enum": list(values), **extra}
    return Annotated[
        StrictStr | None if null else StrictStr, _doc(_null(schema) if null else schema)
    ]


def _default(value: object) -> Any:
    """Unset (the service applies its default), documented as ``value``."""
    return Field(None, json_schema_extra={"default": value})


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

    customer_key: StrictStr = Field(examples=["cust-6d11ca90"])
    event_name: OptStr = Field(
        None,
        description="The feature's event name; exactly one of this and `feature_key`.",
        examples=["candidate.sourced"],
    )
    feature_key: OptStr = Field(
        None, description="The feature's key; exactly one of this and `event_name`."
    )
    amount: Annotated[Amount | None, _doc({**AMOUNT, "type": ["string", "number", "null"]})] = (
        Field(
            None,
            description="Feature units (never credits); negative only for persistent features. "
            "Null or left out: 1.",
            json_schema_extra={"default": 1},
        )
    )
    event_id: OptStr = Field(
        None, description="Idempotency key (printable ASCII, up to 200); the server makes one."
    )
    timestamp: Annotated[StrictStr | None, _doc(_null(TIME))] = None
    metadata: OptObject = Field(None, description="Free-form JSON object, 4 KiB.")

    @classmethod
    def parse(cls, data: Any) -> dict[str, Any]:
        fields = super().parse(data)
        if fields.get("amount", 1) is None:
            del fields["amount"]  # null means "not given" (docs/api.md): 1
        return fields


class BatchRequest(Request):
    events: list[Any] = Field(
        max_length=MAX_BATCH,
        json_schema_extra={
            "items": {
                "description": "A RecordUsage body. An event that is not valid gets its own "
                "error in `results`; the others are still recorded."
            }
        },
    )


OptTimeIn = Annotated[StrictStr | None, _doc(_null(TIME))]
PRIORITY = {"type": "integer", "minimum": 0, "maximum": wallets.MAX_PRIORITY}


class TopupRequest(Request):
    """One topup: exactly one new grant (domain.md, "Credit grants")."""

    customer_key: StrictStr
    credit_system: StrictStr = Field(examples=["credits"])
    amount: Amount = Field(description="Credits to add, greater than zero.")
    kind: _enum(TOPUP_KINDS, null=True) = _default("purchased")
    reference: OptStr = Field(None, description="E.g. an invoice number.")
    note: OptStr = None
    idempotency_key: OptStr = None
    priority: Annotated[StrictInt | None, _doc(_null(PRIORITY))] = Field(
        None,
        description="Lower is spent first. Default 100 for `granted`, 200 for `purchased`.",
    )
    effective_at: OptTimeIn = Field(
        None, description="From when the credits may be spent; default now (later: scheduled)."
    )
    expires_at: OptTimeIn = Field(
        None, description="When what is left expires; after `effective_at`; default never."
    )
    unit_price: Annotated[Amount | None, _doc({**AMOUNT, "type": ["string", "number", "null"]})] = (
        Field(
            None,
            description="What one credit cost (purchased only), an exact decimal; with `currency`.",
        )
    )
    currency: OptStr = Field(None, description="ISO 4217, e.g. `USD`; with `unit_price`.")


class AdjustmentRequest(Request):
    customer_key: StrictStr
    credit_system: StrictStr
    amount: Amount = Field(
        description="Signed credits: positive adds (a `granted` grant), negative is spent from "
        "the grants available now (never below zero)."
    )
    reason: StrictStr = Field(description="Why; kept in the ledger entry's note.")
    reference: OptStr = None
    idempotency_key: OptStr = Field(
        None, description="Same key and content: a replay; other content: 409."
    )


class VoidRequest(Request):
    reason: StrictStr = Field(description="Why; kept in the `void` entry's note.")
    reference: OptStr = Field(None, description="E.g. a refund or credit note number.")
    idempotency_key: OptStr = Field(
        None, description="Same key and content: a replay; other content: 409."
    )


class CorrectionRequest(Request):
    """The actual amount of a recorded usage event (docs/domain.md, "Usage corrections")."""

    actual_amount: Amount = Field(
        description="What the event should have been, in feature units; 0 voids it. Keeps the "
        "sign of the event's amount."
    )
    reason: StrictStr = Field(description="Why; kept with the correction (up to 2000).")
    idempotency_key: OptStr = Field(
        None, description="Same key and content: a replay; other content: 409."
    )


class CustomerCreate(Request):
    key: StrictStr = Field(description="Stable key: letters, digits and . _ : @ -")
    name: StrictStr
    email: OptStr = None
    metadata: OptObject = None


class FeatureCreate(Request):
    key: StrictStr = Field(description="Lower case letters, digits and _ . -")
    name: StrictStr
    type: _enum(FEATURE_TYPES)
    event_name: OptStr = Field(None, description="Defaults to the key.")


class CreditSystemCreate(Request):
    key: StrictStr
    name: StrictStr
    unit_singular: OptStr = None
    unit_plural: OptStr = None
    low_balance_threshold: Annotated[
        Amount | None, _doc({**AMOUNT, "type": ["string", "number", "null"]})
    ] = Field(
        None,
        description="The low-balance threshold of its wallets that set none of their own "
        "(wallet.balance_low); null: none.",
    )


class CreditCostPut(Request):
    credit_system: StrictStr
    cost: Amount = Field(description="Credits per feature unit, greater than zero.")


ALLOWANCE_DOC = _doc({**AMOUNT, "type": ["string", "number", "null"]})


class EntitlementPut(Request):
    """The whole entitlement: every field is required, so that nothing changes by default."""

    allowance: Annotated[Amount | None, ALLOWANCE_DOC] = Field(
        description="Units per reset period (consumable) or in total (persistent); "
        "null = unlimited. Required, so that unlimited is never an accident."
    )
    reset_period: _enum(RESET_PERIODS) = Field()
    overage: _enum(OVERAGE_POLICIES) = Field()


class EntitlementPatch(Request):
    """Only the fields sent change; the entitlement must exist."""

    allowance: Annotated[Amount | None, ALLOWANCE_DOC] = Field(
        None, description="Units per reset period or in total; null = unlimited."
    )
    reset_period: _enum(RESET_PERIODS) = Field(None)
    overage: _enum(OVERAGE_POLICIES) = Field(None)


class PlanEntitlementItem(BaseModel):
    """One entitlement of a plan: every field required (``allowance: null`` = unlimited)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    feature_key: StrictStr
    allowance: Annotated[Amount | None, ALLOWANCE_DOC] = Field(
        description="Units per reset period or in total; null = unlimited."
    )
    reset_period: _enum(RESET_PERIODS) = Field()
    overage: _enum(OVERAGE_POLICIES) = Field()


class IncludedCreditItem(BaseModel):
    """Credits issued each period (a `granted` grant expiring at the period's end)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    credit_system: StrictStr
    amount: Amount = Field(description="Credits per period, greater than zero.")
    period: _enum(["month", "year"]) = Field("month")


class PlanCreate(Request):
    key: StrictStr = Field(examples=["growth"])
    name: StrictStr
    entitlements: list[PlanEntitlementItem] = Field(default_factory=list)
    included_credits: list[IncludedCreditItem] = Field(default_factory=list)
    prorate_included_credits: StrictBool = Field(
        False, description="Issue a customer who joins mid-period the part of the period left."
    )


class PlanUpdate(Request):
    """Only the fields sent change; `entitlements` and `included_credits` replace the lists."""

    name: OptStr = None
    status: _enum(["active", "archived"], null=True) = Field(
        None, description="`archived`: no new customers; those on it stay."
    )
    entitlements: list[PlanEntitlementItem] | None = None
    included_credits: list[IncludedCreditItem] | None = None
    prorate_included_credits: StrictBool | None = None
    apply_to_others: StrictBool = Field(
        False,
        description="When some customers block the edit (a `block` allowance under their "
        "usage), apply it to the others; those keep their value as an override.",
    )


class PlanPreviewRequest(Request):
    entitlements: list[PlanEntitlementItem]


class CustomerPlanPut(Request):
    plan: OptStr = Field(description="The plan's key; null: no plan.")
    when: _enum(["now", "period_end"]) = Field(
        "now", description="`period_end`: at the start of the next UTC month (scheduled)."
    )


def items(values: list[BaseModel] | None) -> list[dict[str, Any]] | None:
    return None if values is None else [v.model_dump() for v in values]


# ---------------------------------------------------------------- responses


def _from_micros(convert: Any) -> BeforeValidator:
    """Service results carry integer micros; the contract shows them converted."""
    return BeforeValidator(
        lambda v: v if isinstance(v, bool) or not isinstance(v, int) else convert(v)
    )


_TIME = BeforeValidator(lambda v: iso(v) if isinstance(v, datetime) else v)
Time = Annotated[str, _TIME, _doc(TIME)]
OptTime = Annotated[str | None, _TIME, _doc(_null(TIME))]
Credits = Annotated[str, _from_micros(format_micros), _doc(CREDITS)]
OptCredits = Annotated[str | None, _from_micros(format_micros), _doc(_null(CREDITS))]
Quantity = Annotated[int | str, _from_micros(quantity_json), _doc(QUANTITY)]
OptQuantity = Annotated[int | str | None, _from_micros(quantity_json), _doc(_null(QUANTITY))]
FeatureType = Annotated[str, _doc({"type": "string", "enum": list(FEATURE_TYPES)})]
ResetPeriod = Annotated[str, _doc({"type": "string", "enum": list(RESET_PERIODS)})]
Overage = Annotated[str, _doc({"type": "string", "enum": list(OVERAGE_POLICIES)})]


def _renamed(name: str, **extra: Any) -> Any:
    return Field(validation_alias=name, **extra)


class Response(BaseModel):
    """A response body, its fields in the order the client sees them (docs/api.md), read from a
    service result's attributes of the same name (``used`` from ``used_micros``)."""

    model_config = ConfigDict(
        extra="forbid",
        from_attributes=True,
        json_schema_serialization_defaults_required=True,
        alias_generator=AliasGenerator(validation_alias=lambda n: AliasChoices(f"{n}_micros", n)),
    )


class ErrorBody(Response):
    code: Annotated[str, _doc({"type": "string", "examples": ["insufficient_credits"]})]
    message: str
    details: Object


class Error(Response):
    error: ErrorBody


class UsageResult(Response):
    """`allowance`/`available` are null when unlimited; `credits_deducted` and `wallet_balance`
    are null for a feature that is not credit-based."""

    message: Literal["Usage recorded"] = "Usage recorded"
    event_name: str
    customer_key: str
    amount: Quantity
    feature_key: str
    event_id: str
    timestamp: Time
    used: Quantity = Field(description="Used in the current period after this event.")
    allowance: OptQuantity
    available: OptQuantity
    overage: Quantity
    credits_deducted: OptCredits = _renamed("credits_micros")
    wallet_balance: OptCredits = _renamed("balance_micros")
    credit_system: str | None


class BatchItem(Response):
    status: int = Field(description="What the event alone would get.")
    body: UsageResult | Error


class BatchResult(Response):
    results: list[BatchItem]


class EntitlementCheck(Response):
    allowed: bool
    reason: str | None = Field(
        description="When not allowed: the RecordUsage error code it would get."
    )
    message: str | None
    customer_key: str
    feature_key: str
    event_name: str
    type: FeatureType = _renamed("feature_type")
    amount: Quantity
    entitled: bool
    used: Quantity
    allowance: OptQuantity
    available: OptQuantity
    reset_at: OptTime
    credits_required: OptCredits
    wallet_balance: OptCredits = _renamed("balance_micros")
    credit_system: str | None


GrantStatus = Annotated[str, _doc({"type": "string", "enum": list(GRANT_STATUSES)})]
TopupKind = Annotated[str, _doc({"type": "string", "enum": list(TOPUP_KINDS)})]
DECIMAL = {**CREDITS, "description": "An exact decimal as a string.", "examples": ["0.5"]}
OptDecimal = Annotated[str | None, _doc(_null(DECIMAL))]


class Grant(Response):
    """One lot of credits in a wallet (docs/domain.md, "Credit grants"), as it is now."""

    id: int
    customer_key: str
    credit_system: str
    kind: TopupKind
    status: GrantStatus = Field(
        description="Derived now: `scheduled` (effective later), `active`, `depleted` (spent), "
        "`expired` (from the instant of its expiry, booked or not), `voided`."
    )
    amount: Credits = Field(description="What it was issued with.")
    remaining: Credits = Field(
        description="Not yet spent, expired (booked) or voided: amount - consumed - expired - "
        "voided."
    )
    available: Credits = Field(description="What it can pay for now: `remaining` while active.")
    consumed: Credits = Field(description="The sum of its allocations.")
    expired: Credits = Field(description="Taken out by its `expiry` entry.")
    voided: Credits = Field(description="Taken out by its `void` entry.")
    priority: int = Field(description="Lower is spent first.")
    effective_at: Time
    expires_at: OptTime
    reference: str | None
    note: str | None
    unit_price: OptDecimal = Field(description="What one credit cost (purchased grants).")
    currency: str | None
    actor: str
    created_at: Time
    expired_at: OptTime = Field(description="When its expiry entry was booked.")
    voided_at: OptTime


class EntryAllocation(Response):
    """The part of a deduction one grant paid."""

    grant_id: int
    amount: Credits


class GrantAllocation(Response):
    """What a grant paid for: one part of a `usage` entry or of a negative adjustment."""

    ledger_entry_id: int
    entry_type: Annotated[
        str, _doc({"type": "string", "enum": ["usage", "adjustment", "correction"]})
    ]
    amount: Credits
    event_id: str | None = Field(description="The usage event's id (usage entries).")
    feature_key: str | None
    timestamp: Time = Field(
        description="When the deduction counts: the usage event's timestamp, else the entry's "
        "creation."
    )
    created_at: Time


class GrantDetail(Grant):
    allocations: list[GrantAllocation] = Field(description="A page of them, newest first.")
    next_cursor: str | None = Field(
        description="Pass as `cursor` for the next page of allocations; null on the last page."
    )

    @classmethod
    def of(cls, grant: GrantView, page: Any) -> GrantDetail:
        fields = Grant.model_validate(grant).model_dump()
        return cls.model_validate(
            {**fields, "allocations": page.items, "next_cursor": page.next_cursor}
        )


class LedgerResult(Response):
    message: Literal["Credits added", "Wallet adjusted", "Grant voided"]
    customer_key: str
    credit_system: str
    type: Literal["topup", "adjustment", "void"]
    kind: str | None
    amount: Credits
    reference: str | None
    note: str | None
    wallet_balance: Credits = Field(
        description="The ledger balance right after this entry (scheduled grants included)."
    )
    ledger_entry_id: int
    created_at: Time
    grant: Grant | None = Field(
        description="The grant the entry created (topup, positive adjustment) or voided, as it "
        "is now; null for a negative adjustment."
    )
    allocations: list[EntryAllocation] = Field(
        description="A negative adjustment: the grants it was spent from. Otherwise empty."
    )

    @classmethod
    def of(
        cls,
        e: db.LedgerEntry,
        customer_key: str,
        credit_system: str,
        grant: GrantView | None,
        allocations: list[AllocationView],
    ) -> LedgerResult:
        message = {"topup": "Credits added", "void": "Grant voided"}.get(e.type, "Wallet adjusted")
        return cls.model_validate(
            {
                **{name: getattr(e, name) for name in ("type", "kind", "reference", "note")},
                "message": message,
                "customer_key": customer_key,
                "credit_system": credit_system,
                "amount": e.amount_micros,
                "wallet_balance": e.balance_after_micros,
                "ledger_entry_id": e.id,
                "created_at": e.created_at,
                "grant": grant,
                "allocations": allocations,
            }
        )


class Customer(Response):
    key: str
    name: str
    email: str | None
    status: Literal["active", "archived"]
    metadata: Annotated[Object, BeforeValidator(lambda v: v or {})] = _renamed(
        AliasChoices("extra", "metadata")
    )
    created_at: Time


class CustomerEntitlement(Response):
    feature_key: str
    feature_name: str
    event_name: str
    type: FeatureType = _renamed("feature_type")
    used: Quantity
    allowance: OptQuantity
    available: OptQuantity
    reset_period: ResetPeriod
    reset_at: OptTime
    overage: Overage
    credit_system: str | None
    credit_cost: OptCredits = _renamed("cost_micros")
    source: Literal["customer", "plan", "override"] = Field(
        description="Where the values come from: the customer's own (no plan), its plan, or its "
        "plan with an override (`overridden` lists the fields the override sets)."
    )
    overridden: list[str]
    pending_reset_period: Annotated[str | None, _doc(_null({"type": "string"}))] = Field(
        description="A reset period change waiting for the current period's end."
    )
    pending_reset_at: OptTime


class Wallet(Response):
    credit_system: str
    name: str
    balance: Credits = Field(
        description="Available now: the remaining of its grants effective and not expired."
    )
    scheduled: Credits = Field(description="The remaining of its grants effective later.")
    ledger_balance: Credits = Field(
        description="The sum of its ledger entries (= the remaining of all its grants; credits "
        "past their expiry count here until the expiry is booked)."
    )
    low_balance_threshold: OptCredits = Field(
        description="The wallet counts as low at or under this; null: never."
    )
    burn_rate_per_day: Credits = Field(
        description="Credits a day: what the wallet consumed over the last 30 UTC days (today "
        "included) ÷ 30, to 6 places (half up); `0` when it consumed nothing (docs/domain.md, "
        '"Runway").'
    )
    runway_days: OptDecimal = Field(
        description="`balance` ÷ `burn_rate_per_day`, in days to 2 places (rounded down); "
        "null when nothing burns. Counts credits that will expire before they are spent: "
        "`runs_out_at` does not."
    )
    runs_out_at: OptTime = Field(
        description="When spending at the burn rate from now first finds no eligible credit, "
        "its grants simulated in spending order (scheduled grants join at their effective "
        "time, expiring ones leave at their expiry); null when nothing burns."
    )
    expiring_unused: Credits = Field(
        description="Credits that will reach their expiry before they are spent at the burn "
        "rate (with no burn: every live credit that has an expiry), to 6 places (half up)."
    )


class WalletGrants(Wallet):
    grants: list[Grant] = Field(description="Those of the `status` asked for, in spending order.")

    @classmethod
    def of(cls, w: reads.WalletGrants) -> WalletGrants:
        return cls.model_validate(
            {**Wallet.model_validate(w.wallet).model_dump(), "grants": w.grants}
        )


class ScheduledPlanChange(Response):
    plan: str | None = Field(description="The plan's key; null: no plan.")
    at: Time


class CustomerPlan(Response):
    key: str | None
    name: str | None
    since: OptTime
    scheduled_change: ScheduledPlanChange | None


class CustomerDetail(Customer):
    plan: CustomerPlan | None = Field(description="Its plan, and a scheduled change; null: none.")
    entitlements: list[CustomerEntitlement]
    wallets: list[Wallet]

    @classmethod
    def of(cls, s: reads.CustomerSummary, plan: dict[str, Any] | None = None) -> CustomerDetail:
        customer = Customer.model_validate(s.customer).model_dump()
        return cls.model_validate(
            {**customer, "plan": plan, "entitlements": s.entitlements, "wallets": s.wallets}
        )


class EventCorrection(Response):
    """One correction of an event, oldest first."""

    id: int
    delta: Quantity = Field(description="Signed: what the correction added to the amount.")
    effective_amount: Quantity = _renamed(
        "effective_after_micros", description="The event's amount after this correction."
    )
    credits: OptCredits = Field(
        description="Signed: credits returned to the wallet (+) or charged (-); null when the "
        "event charges no credits."
    )
    reason: str
    actor: str
    created_at: Time


class Event(Response):
    event_id: str
    feature_key: str
    event_name: str
    amount: Quantity = Field(description="As recorded (events are never changed).")
    effective_amount: Quantity = Field(
        description="The amount after its corrections (= `amount` when none)."
    )
    timestamp: Time
    metadata: OptObject
    credits_deducted: OptCredits = _renamed(
        "credits_micros", description="As recorded; corrections move credits of their own."
    )
    effective_credits: OptCredits = _renamed(
        "effective_credits_micros",
        description="What the event costs after its corrections (= `credits_deducted` when "
        "none): recorded, minus credits returned, plus credits charged.",
    )
    overage: Quantity
    actor: str
    recorded_at: Time
    corrections: list[EventCorrection]


class Correction(Response):
    """A usage correction (docs/domain.md, "Usage corrections")."""

    message: Literal["Usage corrected", "Nothing to correct"]
    corrected: bool = Field(
        description="False: the event already had this amount and nothing was written."
    )
    id: int | None = Field(description="The correction's id (null when nothing was written).")
    customer_key: str
    event_id: str
    feature_key: str
    original_amount: Quantity = Field(description="The event's amount as recorded.")
    effective_before: Quantity
    effective_amount: Quantity = Field(description="The event's amount now.")
    delta: Quantity
    credits_refunded: Credits = Field(description="Returned to the wallet (0 when none).")
    credits_deducted: Credits = Field(description="Charged from the wallet (0 when none).")
    credit_system: str | None
    used: Quantity = Field(description="The counter of the event's own period, after.")
    wallet_balance: OptCredits = Field(
        description="The wallet's ledger balance right after (null when no credits moved)."
    )
    reason: str
    actor: str
    created_at: Time

    @classmethod
    def of(cls, result: Any) -> Correction:
        effect = result.effect
        # Micros in: the fields' validators show them as the contract does.
        return cls.model_validate(
            {
                "message": "Usage corrected" if result.corrected else "Nothing to correct",
                "corrected": result.corrected,
                "id": result.id,
                "customer_key": effect.customer_key,
                "event_id": effect.event_id,
                "feature_key": effect.feature_key,
                "original_amount": effect.original_micros,
                "effective_before": effect.effective_before_micros,
                "effective_amount": effect.effective_after_micros,
                "delta": effect.delta_micros,
                "credits_refunded": effect.refunded_micros,
                "credits_deducted": effect.deducted_micros,
                "credit_system": effect.credit_system,
                "used": effect.used_after_micros,
                "wallet_balance": effect.balance_after_micros if effect.credits_micros else None,
                "reason": result.reason,
                "actor": result.actor,
                "created_at": result.created_at,
            }
        )


class LedgerEntry(Response):
    id: int
    credit_system: str
    type: Annotated[str, _doc({"type": "string", "enum": list(LEDGER_TYPES)})]
    kind: str | None
    amount: Credits = Field(description="Signed: positive adds, negative deducts.")
    balance_after: Credits
    reference: str | None
    note: str | None
    event_id: str | None = Field(description="For `usage` entries.")
    actor: str
    created_at: Time
    grant_id: int | None = Field(
        description="The grant a `topup` or positive `adjustment` created, or an `expiry` or "
        "`void` emptied."
    )
    allocations: list[EntryAllocation] = Field(
        [],
        description="A `usage` entry or negative adjustment: the grants that paid for it. A "
        "`correction`: negative parts went back to their grants, positive ones were paid.",
    )

    @classmethod
    def of(cls, view: reads.LedgerView, allocations: list[AllocationView]) -> LedgerEntry:
        entry = cls.model_validate(view)
        entry.allocations = [EntryAllocation.model_validate(a) for a in allocations]
        return entry


class Feature(Response):
    key: str
    name: str
    type: FeatureType
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
        return cls.model_validate(
            {
                **{name: getattr(row, name) for name in ("key", "name", "type", "event_name")},
                "credit_system": None if system is None else system.key,
                "credit_cost": None if cost is None else cost.cost_micros,
                "created_at": row.created_at,
            }
        )


class CreditSystem(Response):
    key: str
    name: str
    unit_singular: str
    unit_plural: str
    created_at: Time
    low_balance_threshold: OptCredits


class CreditCost(Response):
    feature_key: str
    credit_system: str
    cost: Credits
    updated_at: Time


class Entitlement(Response):
    customer_key: str
    feature_key: str
    allowance: OptQuantity
    reset_period: ResetPeriod
    overage: Overage
    updated_at: Time
    source: Literal["customer", "plan", "override"]
    overridden: list[str]
    pending_reset_period: Annotated[str | None, _doc(_null({"type": "string"}))]
    pending_reset_at: OptTime


class EntitlementRemoved(Response):
    customer_key: str
    feature_key: str
    removed: Literal["entitlement", "override"] = Field(
        description="`override`: the customer is on a plan; its plan's value applies again."
    )
    entitlement: Entitlement | None = Field(description="What applies now; null: none.")


class PlanEntitlement(Response):
    feature_key: str
    allowance: OptQuantity
    reset_period: ResetPeriod
    overage: Overage


class IncludedCredit(Response):
    credit_system: str
    amount: Credits
    period: Literal["month", "year"]


class Plan(Response):
    key: str
    name: str
    status: Literal["active", "archived"]
    prorate_included_credits: bool
    revision: int = Field(description="Moves with every edit of the plan's entitlements.")
    customers: int = Field(description="Customers on the plan.")
    entitlements: list[PlanEntitlement]
    included_credits: list[IncludedCredit]
    created_at: Time
    updated_at: Time


class BlockedEntitlement(Response):
    customer_key: str
    feature_key: str
    field: Literal["allowance", "reset_period"]
    used: Credits
    allowance: OptCredits


class PlanEditResult(Plan):
    customers_updated: int
    kept: list[BlockedEntitlement] = Field(
        description="Customers who blocked the edit and keep their value as an override "
        "(`apply_to_others`)."
    )


class PlanPreview(Response):
    plan: str
    affected: int = Field(description="Customers on the plan.")
    blocked: list[BlockedEntitlement]
    scheduled_resets: int = Field(
        description="Entitlements whose new reset period waits for their period's end."
    )


class CustomerPlanResult(Response):
    customer_key: str
    plan: str | None
    when: Literal["now", "period_end"]
    at: Time
    scheduled: bool
    included_credits_issued: int


# ---------------------------------------------------------------- the finance roll-forward

MONEY = {
    "type": "string",
    "pattern": r"^-?[0-9]+\.[0-9]{2,}$",
    "description": "Money as an exact decimal string (credits × unit price), at least two places, "
    'never rounded, e.g. `"12.50"`.',
    "examples": ["12.50"],
}
MoneyText = Annotated[
    str,
    BeforeValidator(lambda v: reports.money_text(v) if isinstance(v, Decimal) else v),
    _doc(MONEY),
]


class ReportMoney(Response):
    """The money value of one currency's purchased credits with a unit price."""

    currency: str
    opening: MoneyText = Field(description="Deferred (unconsumed) value at the start.")
    issued: MoneyText = Field(description="Value of the credits sold.")
    consumed: MoneyText = Field(description="Recognised revenue: value of the credits consumed.")
    expired: MoneyText = Field(description="Breakage: value of the credits that expired.")
    voided: MoneyText = Field(description="Refunded: value of the credits voided.")
    adjusted: MoneyText = Field(description="Signed: value moved by adjustments.")
    corrected: MoneyText = Field(description="Signed: value moved by usage corrections.")
    closing: MoneyText = Field(description="Deferred (unconsumed) value at the end.")


class ReportPeriod(Response):
    """One month (or the whole range) of one credit system:
    opening + issued − consumed − expired − voided + adjusted + corrected = closing."""

    month: str = Field(description="`YYYY-MM`, or `YYYY-MM..YYYY-MM` for the range's total.")
    opening: Credits
    issued: Credits
    issued_purchased: Credits
    issued_granted: Credits
    consumed: Credits
    consumed_purchased: Credits
    consumed_granted: Credits
    expired: Credits
    expired_purchased: Credits
    expired_granted: Credits
    voided: Credits
    adjusted: Credits = Field(description="Signed.")
    corrected: Credits = Field(description="Signed.")
    closing: Credits
    money: list[ReportMoney]


class ReportSystem(Response):
    credit_system: str
    name: str
    unit_plural: str
    months: list[ReportPeriod]
    total: ReportPeriod


class CreditReport(Response):
    month_from: str = Field(description="The first month, `YYYY-MM` (UTC).")
    month_to: str = Field(description="The last month, `YYYY-MM` (UTC).")
    systems: list[ReportSystem]


def _page_of(name: str, item: type[Response]) -> type[Response]:
    """``{"data": [item, ...], "next_cursor": ...}``, read from a ``paging.Page``."""
    return create_model(
        name,
        __base__=Response,
        data=(list[item], _renamed(AliasChoices("items", "data"))),  # type: ignore[valid-type]
        next_cursor=(
            str | None,
            Field(description="Pass as `cursor` for the next page; null on the last page."),
        ),
    )


CustomerPage = _page_of("CustomerPage", Customer)
EventPage = _page_of("EventPage", Event)
LedgerPage = _page_of("LedgerPage", LedgerEntry)
FeaturePage = _page_of("FeaturePage", Feature)
WalletPage = _page_of("WalletPage", WalletGrants)
PlanPage = _page_of("PlanPage", Plan)


# ---------------------------------------------------------------- webhooks

EventTypes = Annotated[
    list[StrictStr] | None,
    _doc(
        {
            "type": ["array", "null"],
            "items": {"type": "string"},
            "description": "Event types to receive; null (the default) for every type.",
        }
    ),
]


class WebhookEndpointCreate(Request):
    url: StrictStr = Field(
        description="https only (http and internal addresses only with "
        "`WEBHOOK_ALLOW_PRIVATE_TARGETS`)."
    )
    event_types: EventTypes = None
    description: OptStr = None
    enabled: bool = True


class WebhookEndpointPatch(Request):
    url: StrictStr | None = None
    event_types: EventTypes = None
    description: OptStr = None
    enabled: bool | None = None


class WebhookEndpoint(Response):
    id: int
    url: str
    description: str
    event_types: list[str] | None
    enabled: bool
    created_at: Time
    updated_at: Time
    previous_secret_valid_until: OptTime = _renamed(
        AliasChoices("previous_secret_until", "previous_secret_valid_until"),
        description="While a rotation lasts, the old secret also signs until this time.",
    )


class WebhookEndpointCreated(WebhookEndpoint):
    secret: str = Field(
        description="The signing secret (`whsec_...`): shown here once, never again."
    )


class WebhookDelivery(Response):
    id: int
    endpoint_id: int
    event_id: Annotated[str, BeforeValidator(lambda v: f"evt_{v}" if isinstance(v, int) else v)]
    event_type: str
    status: Literal["pending", "delivered", "failed"]
    attempts: int
    created_at: Time
    next_attempt_at: OptTime
    delivered_at: OptTime
    last_status_code: int | None
    last_error: str | None
    last_body: str | None = Field(description="The first KiB of the last answer's body.")


class WebhookAttempt(Response):
    """One try of a delivery, as the worker recorded it."""

    number: int = Field(description="1 for the first try; retries and resends count on.")
    outcome: _enum(ATTEMPT_OUTCOMES) = Field(
        description="`in_flight` while the worker waits for the answer; `lease_expired` when "
        "that worker stopped before recording it (the next try is another attempt)."
    )
    started_at: Time
    finished_at: OptTime
    duration_ms: int | None
    status_code: int | None = Field(description="The answer's HTTP status; null without one.")
    error: str | None = Field(
        description="Why there was no usable answer: a timeout, a refused connection, an "
        "address refused by the SSRF guard (`refused: ...`), a late answer; null otherwise."
    )
    body: str | None = Field(description="The first KiB of the answer's body.")
    worker: str = Field(description="The worker that made the attempt (`host:pid`).")


class WebhookDeliveryDetail(WebhookDelivery):
    attempt_history: list[WebhookAttempt] = Field(
        description="A page of the delivery's attempts, newest first."
    )
    next_cursor: str | None = Field(
        description="Pass as `cursor` for the next page of (older) attempts; null on the last page."
    )

    @classmethod
    def of(cls, found: Any) -> WebhookDeliveryDetail:
        fields = WebhookDelivery.model_validate(found.delivery).model_dump()
        return cls.model_validate(
            {**fields, "attempt_history": found.attempts, "next_cursor": found.next_cursor}
        )


WebhookEndpointPage = _page_of("WebhookEndpointPage", WebhookEndpoint)
WebhookDeliveryPage = _page_of("WebhookDeliveryPage", WebhookDelivery)


class EventEnvelope(Response):
    """One event as Metrifox sends it (docs/api.md, "Events"): the same body as its webhook."""

    id: Annotated[str, _doc({"type": "string", "examples": ["evt_42"]})]
    type: str
    created_at: str
    data: Object


class EventLogPage(Response):
    data: list[EventEnvelope]
    next_cursor: str = Field(
        description="Pass as `after` to poll for what comes next (given even when `data` is "
        "empty; empty only while the log is)."
    )
    has_more: bool


REQUESTS: tuple[type[Request], ...] = tuple(Request.__subclasses__())  # every body, none forgotten
RESPONSES: tuple[type[Response], ...] = (
    Error,
    UsageResult,
    BatchResult,
    EntitlementCheck,
    LedgerResult,
    Grant,
    GrantDetail,
    WalletPage,
    Customer,
    CustomerDetail,
    CustomerPage,
    EventPage,
    LedgerPage,
    Feature,
    FeaturePage,
    Correction,
    CreditSystem,
    CreditCost,
    Entitlement,
    WebhookEndpoint,
    WebhookEndpointCreated,
    WebhookEndpointPage,
    WebhookDelivery,
    WebhookDeliveryPage,
    WebhookDeliveryDetail,
    EntitlementRemoved,
    Plan,
    PlanPage,
    PlanEditResult,
    PlanPreview,
    CustomerPlanResult,
    EventLogPage,
    CreditReport,
)
