"""Every route of the dashboard for every role, generated from the URL map: a new route that is
not in EXPECTED fails here until someone decides who may use it."""

from __future__ import annotations

import pytest
from flask import Flask

from tests.factories import make_catalog
from tests.web import ROLES, make_user, signed_in
from webapp.services import auth, plans, usage, webhooks
from webapp.services.actors import (
    ADMIN,
    MANAGE_WALLETS,
    PERMISSIONS,
    RECORD_USAGE,
    SYSTEM,
    VIEW,
    VIEW_LEDGER,
)

PUBLIC = "public"
SKIPPED_PREFIXES = ("/api/", "/metrifox/")  # token-authenticated; their owners test them

EXPECTED: dict[str, str] = {
    "static": PUBLIC,
    "auth.login": PUBLIC,
    "auth.logout": PUBLIC,
    "auth.logout_everywhere": VIEW,
    "auth.account": VIEW,
    "pages.overview": VIEW,
    "pages.customers": VIEW,
    "pages.export_customers": VIEW,
    "pages.customer": VIEW,
    "pages.customer_events": VIEW,
    "pages.customer_ledger": VIEW,
    "pages.customer_grant": VIEW,
    "pages.ledger_entry": VIEW,
    "pages.export_events": VIEW,
    "pages.export_ledger": VIEW,
    "pages.features": VIEW,
    "pages.wallets": VIEW,
    "pages.audit": VIEW,
    "pages.ledger": VIEW_LEDGER,
    "pages.export_all_ledger": VIEW_LEDGER,
    "actions.record_usage": RECORD_USAGE,
    "actions.usage_preview": RECORD_USAGE,
    "actions.reclaim_seats": RECORD_USAGE,
    "actions.correct_event": RECORD_USAGE,
    "actions.correction_preview": RECORD_USAGE,
    "actions.topup": MANAGE_WALLETS,
    "actions.adjust": MANAGE_WALLETS,
    "actions.void_grant": MANAGE_WALLETS,
    "actions.wallet_threshold": MANAGE_WALLETS,
    "admin.users": ADMIN,
    "admin.user_role": ADMIN,
    "admin.user_password": ADMIN,
    "admin.user_logout": ADMIN,
    "admin.user_active": ADMIN,
    "admin.api_keys": ADMIN,
    "admin.revoke_api_key": ADMIN,
    "admin.new_customer": ADMIN,
    "admin.edit_customer": ADMIN,
    "admin.customer_status": ADMIN,
    "admin.entitlements": ADMIN,
    "admin.remove_entitlement": ADMIN,
    "admin.features": ADMIN,
    "admin.credit_systems": ADMIN,
    "admin.credit_costs": ADMIN,
    "admin.remove_credit_cost": ADMIN,
    "admin.edit_feature": ADMIN,
    "admin.feature_archived": ADMIN,
    "admin.edit_credit_system": ADMIN,
    "admin.credit_system_archived": ADMIN,
    "admin.webhooks_page": ADMIN,
    "admin.webhook_test": ADMIN,
    "admin.webhook_enabled": ADMIN,
    "admin.webhook_rotate": ADMIN,
    "admin.webhook_deliveries": ADMIN,
    "admin.webhook_delivery": ADMIN,
    "admin.webhook_resend": ADMIN,
    "admin.plans_index": ADMIN,
    "admin.plan_edit": ADMIN,
    "admin.plan_preview": ADMIN,
    "admin.plan_status": ADMIN,
    "admin.customer_plan": ADMIN,
    "admin.customer_plan_preview": ADMIN,
    "pages.credit_report": VIEW_LEDGER,
    "pages.export_credit_report": VIEW_LEDGER,
}
# Routes that end the session they are called with: called last.
ENDS_SESSION = ("auth.logout_everywhere", "auth.logout")


def html_routes(app: Flask) -> list[tuple[str, str, str]]:
    """(endpoint, method, rule) of every route outside the token-authenticated APIs."""
    routes = []
    for rule in app.url_map.iter_rules():
        if rule.rule.startswith(SKIPPED_PREFIXES):
            continue
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            routes.append((rule.endpoint, method, rule.rule))
    return sorted(
        routes,
        key=lambda r: (
            r[0] in ENDS_SESSION,
            ENDS_SESSION.index(r[0]) if r[0] in ENDS_SESSION else 0,
            r,
        ),
    )


def test_every_route_has_an_expectation(app):
    endpoints = {endpoint for endpoint, _, _ in html_routes(app)}
    missing = endpoints - EXPECTED.keys()
    assert not missing, f"routes without a role expectation (add them to EXPECTED): {missing}"
    stale = EXPECTED.keys() - endpoints
    assert not stale, f"EXPECTED names routes that no longer exist: {stale}"


def _url(rule: str, ids: dict[str, object]) -> str:
    url = rule
    for name, value in ids.items():
        for converter in ("", "int:", "path:"):
            url = url.replace(f"<{converter}{name}>", str(value))
    assert "<" not in url, f"no sample value for {rule}"
    return url


@pytest.mark.parametrize("role", ["anonymous", *ROLES])
def test_role_route_matrix(app, client, role):
    make_catalog()
    plans.create_plan(SYSTEM, key="starter", name="Starter")
    usage.record_usage(
        SYSTEM, customer_key="cust-6d11ca90", feature_key="api_calls", event_id="e-matrix"
    )
    victim = make_user("account_manager", "victim@example.com")
    key = auth.create_api_key(SYSTEM, name="matrix").key
    hook = webhooks.create_endpoint(SYSTEM, url="https://hooks.example.com/matrix").endpoint
    delivery = webhooks.send_test_event(SYSTEM, hook.id)  # a delivery whose page exists
    ids = {
        "plan_key": "starter",
        "key": "cust-6d11ca90",
        "feature_key": "api_calls",
        "system_key": "credits",
        "user_id": victim.id,
        "key_id": key.id,
        "filename": "css/app.css",
        "grant_id": 1,  # make_catalog's topup
        "entry_id": 1,  # its ledger entry
        "endpoint_id": hook.id,
        "delivery_id": delivery.id,
        "event_id": "e-matrix",
    }
    if role != "anonymous":
        signed_in(client, role)
    allowed = set() if role == "anonymous" else PERMISSIONS[role]
    failures = []
    for endpoint, method, rule in html_routes(app):
        need = EXPECTED[endpoint]
        url = _url(rule, ids)
        response = client.open(url, method=method, data={})
        status = response.status_code
        if need == PUBLIC:
            ok = status < 400 or (endpoint == "auth.login" and status == 422)
        elif role == "anonymous":
            ok = status == 302 and "/login" in response.headers.get("Location", "")
        elif need in allowed:
            ok = status in (200, 201, 303, 422) if method == "POST" else status == 200
        else:
            ok = status == 403
        if not ok:
            failures.append(f"{method} {url} as {role}: {status} (needs {need})")
    assert not failures, "\n".join(failures)
