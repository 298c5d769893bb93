"""Service results as the JSON of docs/api.md: credits as strings, quantities via quantity_json,
times as RFC 3339 UTC with a `Z`."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from ..models import CreditCost, CreditSystem, Customer, Entitlement, Feature
from ..services.money import format_micros, quantity_json
from ..services.reads import CustomerSummary, EventView, LedgerView, Page
from ..services.usage import CheckResult, UsageResult
from ..services.wallets import LedgerResult


def when(value: datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def credits(micros: int | None) -> str | None:
    return None if micros is None else format_micros(micros)


def quantity(micros: int | None) -> int | str | None:
    return None if micros is None else quantity_json(micros)


def usage_result(result: UsageResult) -> dict[str, Any]:
    return {
        "message": "Usage recorded",
        "event_name": result.event_name,
        "customer_key": result.customer_key,
        "amount": quantity_json(result.amount_micros),
        "feature_key": result.feature_key,
        "event_id": result.event_id,
        "timestamp": when(result.timestamp),
        "used": quantity_json(result.used_micros),
        "allowance": quantity(result.allowance_micros),
        "available": quantity(result.available_micros),
        "overage": quantity_json(result.overage_micros),
        "credits_deducted": credits(result.credits_micros),
        "wallet_balance": credits(result.balance_micros),
        "credit_system": result.credit_system,
    }


def check_result(result: CheckResult) -> dict[str, Any]:
    return {
        "allowed": result.allowed,
        "reason": result.reason,
        "message": result.message,
        "customer_key": result.customer_key,
        "feature_key": result.feature_key,
        "event_name": result.event_name,
        "type": result.feature_type,
        "amount": quantity_json(result.amount_micros),
        "entitled": result.entitled,
        "used": quantity_json(result.used_micros),
        "allowance": quantity(result.allowance_micros),
        "available": quantity(result.available_micros),
        "reset_at": when(result.reset_at),
        "credits_required": credits(result.credits_required_micros),
        "wallet_balance": credits(result.balance_micros),
        "credit_system": result.credit_system,
    }


def ledger_result(result: LedgerResult) -> dict[str, Any]:
    entry = result.entry
    return {
        "message": "Credits added" if entry.type == "topup" else "Wallet adjusted",
        "customer_key": result.customer_key,
        "credit_system": result.credit_system,
        "type": entry.type,
        "kind": entry.kind,
        "amount": format_micros(entry.amount_micros),
        "reference": entry.reference,
        "note": entry.note,
        "wallet_balance": format_micros(result.balance_micros),
        "ledger_entry_id": entry.id,
        "created_at": when(entry.created_at),
    }


def customer(row: Customer) -> dict[str, Any]:
    return {
        "key": row.key,
        "name": row.name,
        "email": row.email,
        "status": row.status,
        "metadata": row.extra or {},
        "created_at": when(row.created_at),
    }


def customer_detail(summary: CustomerSummary) -> dict[str, Any]:
    return {
        **customer(summary.customer),
        "entitlements": [
            {
                "feature_key": ent.feature_key,
                "feature_name": ent.feature_name,
                "event_name": ent.event_name,
                "type": ent.feature_type,
                "used": quantity_json(ent.used_micros),
                "allowance": quantity(ent.allowance_micros),
                "available": quantity(ent.available_micros),
                "reset_period": ent.reset_period,
                "reset_at": when(ent.reset_at),
                "overage": ent.overage,
                "credit_system": ent.credit_system,
                "credit_cost": credits(ent.cost_micros),
            }
            for ent in summary.entitlements
        ],
        "wallets": [
            {
                "credit_system": wallet.credit_system,
                "name": wallet.name,
                "balance": format_micros(wallet.balance_micros),
            }
            for wallet in summary.wallets
        ],
    }


def event(row: EventView) -> dict[str, Any]:
    return {
        "event_id": row.event_id,
        "feature_key": row.feature_key,
        "event_name": row.event_name,
        "amount": quantity_json(row.amount_micros),
        "timestamp": when(row.timestamp),
        "metadata": row.metadata,
        "credits_deducted": credits(row.credits_micros),
        "overage": quantity_json(row.overage_micros),
        "actor": row.actor,
        "recorded_at": when(row.recorded_at),
    }


def ledger_entry(row: LedgerView) -> dict[str, Any]:
    return {
        "id": row.id,
        "credit_system": row.credit_system,
        "type": row.type,
        "kind": row.kind,
        "amount": format_micros(row.amount_micros),
        "balance_after": format_micros(row.balance_after_micros),
        "reference": row.reference,
        "note": row.note,
        "event_id": row.event_id,
        "actor": row.actor,
        "created_at": when(row.created_at),
    }


def page(result: Page[Any], item) -> dict[str, Any]:
    return {"data": [item(row) for row in result.items], "next_cursor": result.next_cursor}


def feature(row: Feature, cost: CreditCost | None, system: CreditSystem | None) -> dict[str, Any]:
    return {
        "key": row.key,
        "name": row.name,
        "type": row.type,
        "event_name": row.event_name,
        "credit_system": None if system is None else system.key,
        "credit_cost": None if cost is None else format_micros(cost.cost_micros),
        "created_at": when(row.created_at),
    }


def credit_system(row: CreditSystem) -> dict[str, Any]:
    return {
        "key": row.key,
        "name": row.name,
        "unit_singular": row.unit_singular,
        "unit_plural": row.unit_plural,
        "created_at": when(row.created_at),
    }


def credit_cost(feature_key: str, system_key: str, row: CreditCost) -> dict[str, Any]:
    return {
        "feature_key": feature_key,
        "credit_system": system_key,
        "cost": format_micros(row.cost_micros),
        "updated_at": when(row.updated_at),
    }


def entitlement(customer_key: str, feature_key: str, row: Entitlement) -> dict[str, Any]:
    return {
        "customer_key": customer_key,
        "feature_key": feature_key,
        "allowance": quantity(row.allowance_micros),
        "reset_period": row.reset_period,
        "overage": row.overage,
        "updated_at": when(row.updated_at),
    }
