"""Admin pages: users and roles, API keys, customers, features, credit systems, credit costs and
entitlements. Plain forms: success is a 303 back to the page, a DomainError a 422 with the
message next to its field."""

from __future__ import annotations

import base64
import secrets
from collections.abc import Callable
from typing import Any

from flask import Blueprint, flash, redirect, render_template, request, session, url_for
from flask_wtf import FlaskForm

from ..errors import DomainError, PlanChangeBlocked
from ..models import ROLES, CreditSystem, Feature
from ..services import auth, catalog, plans, reads, webhooks
from ..services.actors import ADMIN
from ..services.money import format_micros
from ..services.webhooks import delivery
from .forms import (
    ActionForm,
    ApiKeyForm,
    CreditCostForm,
    CreditSystemEditForm,
    CreditSystemForm,
    CustomerEditForm,
    CustomerForm,
    CustomerPlanForm,
    EntitlementForm,
    FeatureEditForm,
    FeatureForm,
    PasswordForm,
    PlanEditForm,
    PlanForm,
    RoleForm,
    UserForm,
    WebhookEndpointForm,
    blank,
    choices,
    show_error,
)
from .htmx import is_htmx
from .session import current_actor, requires

bp = Blueprint("admin", __name__, url_prefix="/admin")


def _submit(form: FlaskForm, call: Callable[[], str], back: str) -> Any | None:
    """Run ``call`` for a valid post: a 303 to ``back`` on success, None (re-render) on error."""
    if not form.validate_on_submit():
        return None
    try:
        message = call()
    except DomainError as exc:
        show_error(form, exc)
        return None
    flash(message)
    return redirect(back, 303)


def _status() -> int:
    return 422 if request.method == "POST" else 200


# ---------------------------------------------------------------- users


def _users_page(form: UserForm | None = None, status: int = 200, errors: dict | None = None):
    users = auth.list_users()
    return render_template(
        "admin/users.html",
        users=users,
        form=form or UserForm(formdata=None),
        roles=ROLES,
        password_form=PasswordForm(formdata=None),
        action_form=ActionForm(formdata=None),
        errors=errors or {},
    ), status


@bp.route("/users", methods=["GET", "POST"])
@requires(ADMIN)
def users():
    form = UserForm()

    def call() -> str:
        user = auth.create_user(
            current_actor(), email=form.email.data, role=form.role.data, password=form.password.data
        )
        return f"Created {user.role} {user.email}."

    return _submit(form, call, url_for("admin.users")) or _users_page(form, _status())


def _user_action(user_id: int, form: FlaskForm, call: Callable[[], str]):
    done = _submit(form, call, url_for("admin.users"))
    if done:
        return done
    messages = [e for f in form for e in f.errors if f.name != "csrf_token"] + form.form_errors
    return _users_page(status=422, errors={user_id: messages or ["Check the form."]})


@bp.post("/users/<int:user_id>/role")
@requires(ADMIN)
def user_role(user_id: int):
    form = RoleForm()

    def call() -> str:
        user = auth.set_user_role(current_actor(), user_id, form.role.data)
        return f"{user.email} is now {user.role}; their sessions have ended."

    return _user_action(user_id, form, call)


@bp.post("/users/<int:user_id>/password")
@requires(ADMIN)
def user_password(user_id: int):
    form = PasswordForm()

    def call() -> str:
        user = auth.set_password(current_actor(), user_id, form.password.data)
        return f"Password of {user.email} changed; their sessions have ended."

    return _user_action(user_id, form, call)


@bp.post("/users/<int:user_id>/logout")
@requires(ADMIN)
def user_logout(user_id: int):
    form = ActionForm()

    def call() -> str:
        auth.end_sessions(current_actor(), user_id)
        return "Their sessions have ended."

    return _user_action(user_id, form, call)


@bp.post("/users/<int:user_id>/active")
@requires(ADMIN)
def user_active(user_id: int):
    form = ActionForm()
    active = request.form.get("active") == "1"

    def call() -> str:
        if active:
            user = auth.reactivate_user(current_actor(), user_id)
            return f"{user.email} can sign in again."
        user = auth.deactivate_user(current_actor(), user_id)
        return f"{user.email} is deactivated and signed out; their history stays."

    return _user_action(user_id, form, call)


# ---------------------------------------------------------------- API keys


def _split_secret(secret: str) -> tuple[str, str]:
    """A one-time pad: the session cookie (signed, but readable) gets ``secret XOR pad``, the
    redirect's URL gets ``pad``; neither alone tells anything about the key."""
    data = secret.encode()
    pad = secrets.token_bytes(len(data))
    masked = bytes(a ^ b for a, b in zip(data, pad, strict=True))
    return base64.urlsafe_b64encode(masked).decode(), base64.urlsafe_b64encode(pad).decode()


def _join_secret(masked: str, pad: str) -> str | None:
    try:
        a, b = base64.urlsafe_b64decode(masked), base64.urlsafe_b64decode(pad)
        return bytes(x ^ y for x, y in zip(a, b, strict=True)).decode()
    except (ValueError, UnicodeDecodeError):
        return None


@bp.route("/api-keys", methods=["GET", "POST"])
@requires(ADMIN)
def api_keys():
    """Post/redirect/get: reloading the page never makes a second key. The secret is shown on
    the first GET after the post only (the session's half is popped there)."""
    form = ApiKeyForm()
    if form.validate_on_submit():
        try:
            new = auth.create_api_key(
                current_actor(),
                name=form.name.data,
                role=form.role.data,
                expires_days=form.expires_days.data,
            )
        except DomainError as exc:
            show_error(form, exc)
        else:
            masked, pad = _split_secret(new.secret)
            session["new_api_key"] = {"name": new.key.name, "masked": masked}
            return redirect(url_for("admin.api_keys", reveal=pad), 303)
    new_key = session.pop("new_api_key", None) if request.method == "GET" else None
    if new_key is not None:
        new_key["secret"] = _join_secret(new_key.pop("masked"), request.args.get("reveal", ""))
    return render_template(
        "admin/api_keys.html",
        keys=auth.list_api_keys(),
        form=form,
        new_key=new_key if new_key and new_key["secret"] else None,
        action_form=ActionForm(formdata=None),
    ), _status()


@bp.post("/api-keys/<int:key_id>/revoke")
@requires(ADMIN)
def revoke_api_key(key_id: int):
    form = ActionForm()

    def call() -> str:
        key = auth.revoke_api_key(current_actor(), key_id)
        return f"Revoked {key.prefix}… ({key.name})."

    return _submit(form, call, url_for("admin.api_keys")) or (
        render_template(
            "admin/api_keys.html",
            keys=auth.list_api_keys(),
            form=ApiKeyForm(formdata=None),
            new_key=None,
            action_form=form,
        ),
        422,
    )


# ---------------------------------------------------------------- customers


@bp.route("/customers/new", methods=["GET", "POST"])
@requires(ADMIN)
def new_customer():
    form = CustomerForm()
    key = form.key.data

    def call() -> str:
        customer = catalog.create_customer(
            current_actor(), key=form.key.data, name=form.name.data, email=blank(form.email.data)
        )
        return f"Created customer {customer.key}."

    back = url_for("admin.entitlements", key=key) if key else ""
    return _submit(form, call, back) or (
        render_template("admin/customer_form.html", form=form, customer=None),
        _status(),
    )


@bp.route("/customers/<key>/edit", methods=["GET", "POST"])
@requires(ADMIN)
def edit_customer(key: str):
    customer = catalog.get_customer(key)
    form = CustomerEditForm(obj=customer)

    def call() -> str:
        catalog.update_customer(
            current_actor(), key, name=form.name.data, email=blank(form.email.data)
        )
        return "Customer saved."

    return _submit(form, call, url_for("pages.customer", key=key)) or (
        render_template(
            "admin/customer_form.html",
            form=form,
            customer=customer,
            action_form=ActionForm(formdata=None),
        ),
        _status(),
    )


@bp.post("/customers/<key>/status")
@requires(ADMIN)
def customer_status(key: str):
    form = ActionForm()
    status = request.form.get("status", "")

    def call() -> str:
        customer = catalog.set_customer_status(current_actor(), key, status)
        return f"Customer {customer.key} is {customer.status}."

    customer = catalog.get_customer(key)
    return _submit(form, call, url_for("pages.customer", key=key)) or (
        render_template(
            "admin/customer_form.html",
            form=CustomerEditForm(formdata=None, obj=customer),
            customer=customer,
            action_form=form,
        ),
        422,
    )


# ---------------------------------------------------------------- entitlements


def qty_plain(entitlement) -> str:
    """An allowance as typed into a box: no thousands separators."""
    return format_micros(entitlement.allowance_micros)


def _entitlements_page(
    key: str, form: EntitlementForm, status: int, plan_form: CustomerPlanForm | None = None
):
    summary = reads.customer_summary(current_actor(), key)
    plan = plans.customer_plan(summary.customer)
    if plan_form is None:
        plan_form = CustomerPlanForm(
            formdata=None, data={"plan": "" if plan.plan is None else plan.plan.key}
        )
        plan_form.plan.choices = _customer_plan_choices()
    editing = request.args.get("edit") if request.method == "GET" else form.feature_key.data
    current = next((e for e in summary.entitlements if e.feature_key == editing), None)
    if current is not None and request.method == "GET":
        # Edit one row: every field shows what is there now, so saving changes only what the
        # admin changed (an unfilled form would set "never" and "block").
        form = EntitlementForm(
            formdata=None,
            data={
                "feature_key": current.feature_key,
                "allowance": "" if current.allowance_micros is None else qty_plain(current),
                "reset_period": current.reset_period,
                "overage": current.overage,
            },
        )
    form.feature_key.choices = choices(
        [(f.key, f"{f.name} ({f.type})") for f, _, _ in catalog.list_features(current_actor())]
    )
    return render_template(
        "admin/entitlements.html",
        summary=summary,
        customer=summary.customer,
        form=form,
        editing=current,
        action_form=ActionForm(formdata=None),
        plan=plan,
        plan_form=plan_form,
    ), status


@bp.route("/customers/<key>/entitlements", methods=["GET", "POST"])
@requires(ADMIN)
def entitlements(key: str):
    form = EntitlementForm()

    def call() -> str:
        catalog.replace_entitlement(  # every field is on the form: a PUT
            current_actor(),
            key,
            form.feature_key.data,
            allowance=blank(form.allowance.data),
            reset_period=form.reset_period.data,
            overage=form.overage.data,
        )
        return f"Entitlement to {form.feature_key.data} saved."

    back = url_for("admin.entitlements", key=key)
    return _submit(form, call, back) or _entitlements_page(key, form, _status())


@bp.post("/customers/<key>/entitlements/<feature_key>/remove")
@requires(ADMIN)
def remove_entitlement(key: str, feature_key: str):
    form = ActionForm()

    def call() -> str:
        if catalog.remove_entitlement(current_actor(), key, feature_key) == "override":
            return f"Override of {feature_key} removed: the plan's value applies again."
        return f"Entitlement to {feature_key} removed."

    back = url_for("admin.entitlements", key=key)
    done = _submit(form, call, back)
    if done:
        return done
    page = EntitlementForm(formdata=None)
    page.form_errors.extend(form.form_errors + [e for e in form.csrf_token.errors])
    return _entitlements_page(key, page, 422)


# ---------------------------------------------------------------- features, credit systems, costs


@bp.route("/features", methods=["GET", "POST"])
@requires(ADMIN)
def features():
    form = FeatureForm()

    def call() -> str:
        feature = catalog.create_feature(
            current_actor(),
            key=form.key.data,
            name=form.name.data,
            type=form.type.data,
            event_name=blank(form.event_name.data),
        )
        return f"Created feature {feature.key}."

    return _submit(form, call, url_for("admin.features")) or (
        render_template(
            "admin/features.html", features=catalog.list_features(current_actor()), form=form
        ),
        _status(),
    )


@bp.route("/credit-systems", methods=["GET", "POST"])
@requires(ADMIN)
def credit_systems():
    form = CreditSystemForm()

    def call() -> str:
        system = catalog.create_credit_system(
            current_actor(),
            key=form.key.data,
            name=form.name.data,
            unit_singular=blank(form.unit_singular.data),
            unit_plural=blank(form.unit_plural.data),
            low_balance_threshold=blank(form.low_balance_threshold.data),
        )
        return f"Created credit system {system.key}."

    return _submit(form, call, url_for("admin.credit_systems")) or (
        render_template(
            "admin/credit_systems.html",
            systems=catalog.list_credit_systems(current_actor()),
            form=form,
        ),
        _status(),
    )


def _edit_page(kind: str, row: Feature | CreditSystem, form: FlaskForm, action_form: FlaskForm):
    """One page for a feature or a credit system: its editable fields, and archive/unarchive."""
    return render_template(
        "admin/catalog_edit.html", kind=kind, row=row, form=form, action_form=action_form
    )


@bp.route("/features/<feature_key>/edit", methods=["GET", "POST"])
@requires(ADMIN)
def edit_feature(feature_key: str):
    key = feature_key
    feature = catalog.get_feature(key)
    form = FeatureEditForm(obj=feature)

    def call() -> str:
        catalog.update_feature(current_actor(), key, name=form.name.data)
        return f"Feature {key} saved."

    return _submit(form, call, url_for("admin.features")) or (
        _edit_page("feature", feature, form, ActionForm(formdata=None)),
        _status(),
    )


@bp.route("/credit-systems/<system_key>/edit", methods=["GET", "POST"])
@requires(ADMIN)
def edit_credit_system(system_key: str):
    key = system_key
    system = catalog.get_credit_system(key, field="key")
    form = CreditSystemEditForm(obj=system)
    if not form.is_submitted():
        form.low_balance_threshold.data = _threshold_text(system)

    def call() -> str:
        catalog.update_credit_system(
            current_actor(),
            key,
            name=form.name.data,
            unit_singular=blank(form.unit_singular.data),
            unit_plural=blank(form.unit_plural.data),
            low_balance_threshold=blank(form.low_balance_threshold.data),
        )
        return f"Credit system {key} saved."

    return _submit(form, call, url_for("admin.credit_systems")) or (
        _edit_page("credit_system", system, form, ActionForm(formdata=None)),
        _status(),
    )


@bp.post("/features/<feature_key>/archived")
@requires(ADMIN)
def feature_archived(feature_key: str):
    key = feature_key
    archived = request.form.get("archived") == "1"
    form = ActionForm()

    def call() -> str:
        catalog.set_feature_archived(current_actor(), key, archived)
        return f"Feature {key} is {'archived' if archived else 'active again'}."

    feature = catalog.get_feature(key)
    return _submit(form, call, url_for("admin.features")) or (
        _edit_page("feature", feature, FeatureEditForm(formdata=None, obj=feature), form),
        422,
    )


@bp.post("/credit-systems/<system_key>/archived")
@requires(ADMIN)
def credit_system_archived(system_key: str):
    key = system_key
    archived = request.form.get("archived") == "1"
    form = ActionForm()

    def call() -> str:
        catalog.set_credit_system_archived(current_actor(), key, archived)
        return f"Credit system {key} is {'archived' if archived else 'active again'}."

    system = catalog.get_credit_system(key, field="key")
    edit = CreditSystemEditForm(formdata=None, obj=system)
    edit.low_balance_threshold.data = _threshold_text(system)
    return _submit(form, call, url_for("admin.credit_systems")) or (
        _edit_page("credit_system", system, edit, form),
        422,
    )


def _costs_page(form: CreditCostForm, status: int):
    features = catalog.list_features(current_actor())
    form.feature_key.choices = choices(
        [(f.key, f.name) for f, _, _ in features if f.type != "boolean"]
    )
    form.credit_system.choices = choices(
        [(s.key, s.name) for s in catalog.list_credit_systems(current_actor())]
    )
    return render_template(
        "admin/credit_costs.html",
        features=features,
        form=form,
        action_form=ActionForm(formdata=None),
    ), status


@bp.route("/credit-costs", methods=["GET", "POST"])
@requires(ADMIN)
def credit_costs():
    form = CreditCostForm()

    def call() -> str:
        catalog.set_credit_cost(
            current_actor(),
            form.feature_key.data,
            credit_system=form.credit_system.data,
            cost=form.cost.data.strip(),
        )
        return f"Credit cost of {form.feature_key.data} saved."

    return _submit(form, call, url_for("admin.credit_costs")) or _costs_page(form, _status())


@bp.post("/credit-costs/<feature_key>/remove")
@requires(ADMIN)
def remove_credit_cost(feature_key: str):
    form = ActionForm()

    def call() -> str:
        catalog.remove_credit_cost(current_actor(), feature_key)
        return f"{feature_key} is no longer credit-based."

    done = _submit(form, call, url_for("admin.credit_costs"))
    if done:
        return done
    page = CreditCostForm(formdata=None)
    page.form_errors.extend(form.form_errors)
    return _costs_page(page, 422)


# ---------------------------------------------------------------- webhooks


def _webhooks_page(
    form: WebhookEndpointForm,
    status: int,
    new_secret: dict | None = None,
    action_form: FlaskForm | None = None,
):
    return render_template(
        "admin/webhooks.html",
        endpoints=webhooks.list_endpoints(current_actor()),
        queue=delivery.queue_status(),
        form=form,
        new_secret=new_secret,
        action_form=action_form or ActionForm(formdata=None),
        known_types=webhooks.KNOWN_EVENT_TYPES,
    ), status


def _reveal(endpoint_id: int, secret: str, verb: str):
    masked, pad = _split_secret(secret)
    session["new_webhook_secret"] = {"id": endpoint_id, "masked": masked, "verb": verb}
    return redirect(url_for("admin.webhooks_page", reveal=pad), 303)


@bp.route("/webhooks", methods=["GET", "POST"])
@requires(ADMIN)
def webhooks_page():
    """Endpoints, the worker's queue, and a form for a new endpoint. Its secret is shown on the
    first GET after the post only (post/redirect/get, as API keys)."""
    form = WebhookEndpointForm()
    if form.validate_on_submit():
        raw = (form.event_types.data or "").strip()
        try:
            new = webhooks.create_endpoint(
                current_actor(),
                url=form.url.data,
                event_types=[t.strip() for t in raw.split(",") if t.strip()] if raw else None,
                description=form.description.data or "",
            )
        except DomainError as exc:
            show_error(form, exc)
        else:
            return _reveal(new.endpoint.id, new.secret, "created")
    shown = session.pop("new_webhook_secret", None) if request.method == "GET" else None
    if shown is not None:
        shown["secret"] = _join_secret(shown.pop("masked"), request.args.get("reveal", ""))
    return _webhooks_page(form, _status(), shown if shown and shown["secret"] else None)


@bp.post("/webhooks/<int:endpoint_id>/test")
@requires(ADMIN)
def webhook_test(endpoint_id: int):
    def call() -> str:
        webhooks.send_test_event(current_actor(), endpoint_id)
        return "A test event is queued; the worker sends it within seconds."

    return _webhook_action(call)


@bp.post("/webhooks/<int:endpoint_id>/enabled")
@requires(ADMIN)
def webhook_enabled(endpoint_id: int):
    enable = request.form.get("enabled") == "true"

    def call() -> str:
        e = webhooks.update_endpoint(current_actor(), endpoint_id, enabled=enable)
        return f"{e.url} is {'enabled' if e.enabled else 'disabled'}."

    return _webhook_action(call)


@bp.post("/webhooks/<int:endpoint_id>/rotate")
@requires(ADMIN)
def webhook_rotate(endpoint_id: int):
    form = ActionForm()
    if form.validate_on_submit():
        try:
            new = webhooks.rotate_secret(current_actor(), endpoint_id)
        except DomainError as exc:
            show_error(form, exc)
        else:
            return _reveal(endpoint_id, new.secret, "rotated")
    return _webhook_action_page(form)


def _webhook_action(call: Callable[[], str]):
    form = ActionForm()
    return _submit(form, call, url_for("admin.webhooks_page")) or _webhook_action_page(form)


def _webhook_action_page(form: FlaskForm):
    """An endpoint action (test, enable, rotate) refused: the page again with its error."""
    return _webhooks_page(WebhookEndpointForm(formdata=None), 422, action_form=form)


def _deliveries_page(action_form: FlaskForm, status: int):
    endpoint_id = request.args.get("endpoint_id", "")
    wanted = request.args.get("status", "")
    rows = webhooks.list_deliveries(
        current_actor(),
        endpoint_id=int(endpoint_id) if endpoint_id.isdecimal() else None,
        status=wanted if wanted in ("pending", "delivered", "failed") else None,
        limit=100,
    )
    return render_template(
        "admin/webhook_deliveries.html",
        rows=rows,
        queue=delivery.queue_status(),
        wanted=wanted,
        endpoint_id=endpoint_id,
        action_form=action_form,
    ), status


@bp.get("/webhooks/deliveries")
@requires(ADMIN)
def webhook_deliveries():
    return _deliveries_page(ActionForm(formdata=None), 200)


@bp.get("/webhooks/deliveries/<int:delivery_id>")
@requires(ADMIN)
def webhook_delivery(delivery_id: int):
    """One delivery with its attempts, newest first: for HTMX its row of the deliveries table
    expanded in place, without JS a page (older attempts a page at a time)."""
    cursor = request.args.get("cursor") or None
    found = webhooks.delivery_attempts(current_actor(), delivery_id, cursor=cursor, limit=50)
    fields = {"d": found.delivery, "found": found, "cursor": cursor}
    if is_htmx():
        return render_template("admin/_webhook_delivery.html", **fields)
    return render_template("admin/webhook_delivery.html", **fields)


@bp.post("/webhooks/deliveries/<int:delivery_id>/resend")
@requires(ADMIN)
def webhook_resend(delivery_id: int):
    form = ActionForm()

    def call() -> str:
        webhooks.resend(current_actor(), delivery_id)
        return f"Delivery {delivery_id} will be sent again within seconds."

    return _submit(form, call, url_for("admin.webhook_deliveries")) or _deliveries_page(form, 422)


# ---------------------------------------------------------------- plans


def _plan_fields(features: list, systems: list) -> dict[str, Any]:
    """A plan's entitlements and included credits from the edit form: one row per feature (a
    checkbox puts it in the plan), one amount per credit system (blank: none)."""
    form = request.form
    entitlements = []
    for feature, _, _ in features:
        if not form.get(f"on-{feature.key}"):
            continue
        entitlements.append(
            {
                "feature_key": feature.key,
                "allowance": blank(form.get(f"allowance-{feature.key}")),
                "reset_period": form.get(f"reset-{feature.key}") or "never",
                "overage": form.get(f"overage-{feature.key}") or "block",
            }
        )
    included = []
    for system in systems:
        amount = blank(form.get(f"credits-{system.key}"))
        if amount is not None:
            included.append(
                {
                    "credit_system": system.key,
                    "amount": amount,
                    "period": form.get(f"period-{system.key}") or "month",
                }
            )
    return {"entitlements": entitlements, "included_credits": included}


@bp.route("/plans", methods=["GET", "POST"])
@requires(ADMIN)
def plans_index():
    form = PlanForm()

    def call() -> str:
        plan = plans.create_plan(current_actor(), key=form.key.data, name=form.name.data)
        return f"Created plan {plan.key}: add its entitlements."

    if form.validate_on_submit():
        try:
            message = call()
        except DomainError as exc:
            show_error(form, exc)
        else:
            flash(message)
            return redirect(url_for("admin.plan_edit", plan_key=form.key.data.strip()), 303)
    return render_template(
        "admin/plans.html", plans=plans.list_plans(current_actor()), form=form
    ), _status()


def _plan_page(
    plan_key: str, form: FlaskForm, status: int, preview: Any = None, blocked: Any = None
):
    actor = current_actor()
    view = plans.read_plan(actor, plan_key)
    features = [row for row in catalog.list_features(actor) if row[0].archived_at is None]
    systems = [s for s in catalog.list_credit_systems(actor) if s.archived_at is None]
    rows = {
        f.key: {
            "allowance": "" if pe.allowance_micros is None else format_micros(pe.allowance_micros),
            "reset": pe.reset_period,
            "overage": pe.overage,
        }
        for f, pe in view.entitlements
    }
    amounts = {
        s.key: {"amount": format_micros(pc.amount_micros), "period": pc.period}
        for s, pc in view.credits
    }
    if request.method == "POST":  # show what was typed, not what is stored
        typed = _plan_fields(features, systems)
        rows = {
            e["feature_key"]: {
                "allowance": e["allowance"] or "",
                "reset": e["reset_period"],
                "overage": e["overage"],
            }
            for e in typed["entitlements"]
        }
        amounts = {
            c["credit_system"]: {"amount": c["amount"], "period": c["period"]}
            for c in typed["included_credits"]
        }
    return render_template(
        "admin/plan_edit.html",
        view=view,
        form=form,
        features=features,
        systems=systems,
        rows=rows,
        amounts=amounts,
        preview=preview,
        blocked=blocked,
        action_form=ActionForm(formdata=None),
    ), status


@bp.route("/plans/<plan_key>", methods=["GET", "POST"])
@requires(ADMIN)
def plan_edit(plan_key: str):
    form = PlanEditForm()
    if request.method == "GET":
        view = plans.read_plan(current_actor(), plan_key)
        form = PlanEditForm(
            formdata=None,
            data={"name": view.plan.name, "prorate": view.plan.prorate_included_credits},
        )
        return _plan_page(plan_key, form, 200)
    blocked = None
    if form.validate_on_submit():
        actor = current_actor()
        features = [row for row in catalog.list_features(actor) if row[0].archived_at is None]
        systems = [s for s in catalog.list_credit_systems(actor) if s.archived_at is None]
        try:
            result = plans.update_plan(
                actor,
                plan_key,
                name=form.name.data,
                prorate_included_credits=bool(form.prorate.data),
                apply_to_others=bool(form.apply_to_others.data),
                **_plan_fields(features, systems),
            )
        except PlanChangeBlocked as exc:
            blocked = exc.details.get("blocked", [])
            form.form_errors.append(exc.message)
        except DomainError as exc:
            show_error(form, exc)
        else:
            kept = f"; {len(result.kept)} kept their value (override)" if result.kept else ""
            flash(f"Plan {plan_key} saved: {result.updated} customers updated{kept}.")
            return redirect(url_for("admin.plan_edit", plan_key=plan_key), 303)
    return _plan_page(plan_key, form, 422, blocked=blocked)


@bp.post("/plans/<plan_key>/preview")
@requires(ADMIN)
def plan_preview(plan_key: str):
    """HTMX: who the typed edit affects and who blocks it; nothing is written."""
    form = ActionForm()
    actor = current_actor()
    features = [row for row in catalog.list_features(actor) if row[0].archived_at is None]
    systems = [s for s in catalog.list_credit_systems(actor) if s.archived_at is None]
    error = None
    preview = None
    if not form.validate_on_submit():
        error = "The form expired: reload the page."
    else:
        try:
            preview = plans.preview_plan_edit(actor, plan_key, **_plan_fields(features, systems))
        except DomainError as exc:
            error = exc.message
    return render_template("admin/_plan_preview.html", preview=preview, error=error), (
        200 if error is None else 422
    )


@bp.post("/plans/<plan_key>/status")
@requires(ADMIN)
def plan_status(plan_key: str):
    form = ActionForm()

    def call() -> str:
        status = "archived" if request.form.get("status") == "archived" else "active"
        plans.set_plan_status(current_actor(), plan_key, status)
        return f"Plan {plan_key} is {status}."

    back = url_for("admin.plan_edit", plan_key=plan_key)
    return _submit(form, call, back) or _plan_page(plan_key, PlanEditForm(formdata=None), 422)


def _customer_plan_choices() -> list:
    return choices(
        [("", "No plan")]
        + [(v.plan.key, v.plan.name) for v in plans.list_plans(current_actor(), status="active")]
    )


@bp.post("/customers/<key>/plan/preview")
@requires(ADMIN)
def customer_plan_preview(key: str):
    """HTMX: the effect of putting the customer on the chosen plan now, before saving."""
    form = CustomerPlanForm()
    form.plan.choices = _customer_plan_choices()
    error = None
    preview = None
    if not form.validate_on_submit():
        error = "The form expired: reload the page."
    else:
        try:
            preview = plans.preview_customer_plan(current_actor(), key, blank(form.plan.data))
        except DomainError as exc:
            error = exc.message
    return render_template(
        "admin/_customer_plan_preview.html", preview=preview, error=error, when=form.when.data
    ), (200 if error is None else 422)


@bp.post("/customers/<key>/plan")
@requires(ADMIN)
def customer_plan(key: str):
    form = CustomerPlanForm()
    form.plan.choices = _customer_plan_choices()

    def call() -> str:
        change = plans.change_customer_plan(
            current_actor(), key, blank(form.plan.data), when=form.when.data
        )
        name = "no plan" if change.plan is None else f"plan {change.plan.name}"
        if change.scheduled:
            return f"{key} moves to {name} on {change.at:%Y-%m-%d %H:%M} UTC."
        issued = f"; {change.issued} included credit grants issued" if change.issued else ""
        return f"{key} is on {name}{issued}."

    back = url_for("admin.entitlements", key=key)
    done = _submit(form, call, back)
    if done:
        return done
    page = EntitlementForm(formdata=None)
    return _entitlements_page(key, page, 422, plan_form=form)


def _threshold_text(system: CreditSystem) -> str:
    micros = system.low_balance_threshold_micros
    return "" if micros is None else format_micros(micros)
