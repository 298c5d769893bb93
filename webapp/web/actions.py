"""HTMX forms of the customer page: record usage, reclaim seats (support, admin), top up and
adjust wallets (finance, admin).

One URL, two renderings: an HTMX post gets its form back plus out-of-band swaps of the rows,
counters and balances that changed; a plain post gets a 303 to the customer page. A DomainError
comes back next to its field with status 422, nothing written."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, timedelta
from typing import Any

from flask import Blueprint, current_app, flash, redirect, render_template, request, url_for
from flask_wtf import FlaskForm

from ..api.schemas import RecordUsageRequest
from ..errors import DomainError, NotFound, ServiceUnavailable, ValidationError
from ..models import utcnow
from ..services import corrections, dashboard, reads, usage, wallets
from ..services.actors import MANAGE_WALLETS, RECORD_USAGE
from .filters import credits, qty
from .forms import (
    AdjustForm,
    CorrectionForm,
    ReclaimSeatsForm,
    RecordUsageForm,
    ThresholdForm,
    TopupForm,
    VoidForm,
    blank,
    humane,
    show_error,
)
from .htmx import is_htmx
from .pages import customer_context, feature_names
from .session import current_actor, requires

bp = Blueprint("actions", __name__)


def _handle(key: str, name: str, form: FlaskForm, call: Callable[[], str]) -> Any:
    if form.validate_on_submit():
        try:
            message = call()
        except DomainError as exc:
            show_error(form, exc)
        else:
            if not is_htmx():
                flash(message)
                return redirect(url_for("pages.customer", key=key), 303)
            return render_template(
                "customers/_changed.html", form_name=name, message=message, **customer_context(key)
            )
    context = customer_context(key, **{name: form})
    if is_htmx():
        return render_template(f"customers/_{name}.html", **context), 422
    return render_template("customers/detail.html", **context), 422


@bp.post("/customers/<key>/usage")
@requires(RECORD_USAGE)
def record_usage(key: str):
    form = RecordUsageForm()

    def call() -> str:
        command = RecordUsageRequest.parse(
            {
                "customer_key": key,
                "feature_key": form.feature_key.data,
                "amount": form.amount.data.strip(),
                "event_id": blank(form.event_id.data),
            }
        )
        result = usage.record_usage(current_actor(), **command, reason=blank(form.reason.data))
        if result.replayed:
            return "Already recorded: this form was sent before, nothing changed."
        name = feature_names().get(result.feature_key, result.feature_key)
        text = f"Recorded {qty(result.amount_micros)} {name}"
        if result.credits_micros:
            text += f" ({credits(result.credits_micros)} {result.credit_system})"
        return text + "."

    return _handle(key, "usage_form", form, call)


LABELS = {"amount": "Amount", "feature_key": "Feature"}  # the record form's labels


@bp.get("/customers/<key>/usage/preview")
@requires(RECORD_USAGE)
def usage_preview(key: str):
    """The record form's preview: what recording would cost and leave, by the same service
    check as recording (usage.check_entitlement). Bad input is a sentence in the box (200)."""
    feature_key = request.args.get("usage-feature_key", "").strip()
    amount = request.args.get("usage-amount", "").strip()
    check = problem = None
    if not feature_key or not amount:
        problem = "Choose a feature and enter an amount to see what recording will do."
    else:
        try:
            check = usage.check_entitlement(
                current_actor(),
                customer_key=key,
                feature_key=feature_key,
                amount=amount,
                recording=True,
            )
        except ServiceUnavailable:
            raise  # the 503 page, as for the form itself
        except DomainError as exc:
            problem = humane(exc.message, LABELS.get(exc.field or ""))
    refusal = humane(check.message) if check and check.message else None
    name = feature_names().get(feature_key, feature_key)
    return render_template(
        "customers/_usage_preview.html",
        check=check,
        problem=problem,
        refusal=refusal,
        feature_name=name,
    )


@bp.post("/customers/<key>/seats/reclaim")
@requires(RECORD_USAGE)
def reclaim_seats(key: str):
    form = ReclaimSeatsForm()

    def call() -> str:
        result = usage.reclaim_seats(
            current_actor(),
            customer_key=key,
            feature_key=form.feature_key.data,
            count=form.amount.data.strip(),
            event_id=blank(form.event_id.data),
            reason=blank(form.reason.data),
        )
        if result.replayed:
            return "Already reclaimed: this form was sent before, nothing changed."
        in_use = qty(result.used_micros)
        of = "" if result.allowance_micros is None else f" of {qty(result.allowance_micros)}"
        name = feature_names().get(result.feature_key, result.feature_key)
        return f"Reclaimed {qty(-result.amount_micros)} of {name}: {in_use}{of} in use."

    return _handle(key, "reclaim_form", form, call)


def _confirm_large(key: str, form: TopupForm | AdjustForm, verb: str) -> None:
    """Ask again before a large amount (the rule is the wallet service's): the message shows the
    balance it leads to, the form a checkbox whose value is the amount confirmed."""
    amount = form.amount.data.strip()
    large = wallets.unconfirmed_large_amount(
        key,
        form.credit_system.data,
        amount,
        confirmed=form.confirm.data,
        limit=current_app.config["LARGE_AMOUNT_CONFIRM"],
    )
    if large is None:
        return
    what = f"{credits(large.amount_micros)} {large.unit_plural}"
    form.needs_confirm = what  # what the checkbox says
    raise ValidationError(
        f"That is a large amount: after it the balance will be "
        f"{credits(large.balance_after_micros)} {large.unit_plural}. "
        f"Tick the box to {verb} {what}, then send again.",
        field="confirm",
    )


def _date(value: str | None, field: str) -> date | None:
    """A date box (the form checked its shape) as a date; a day that does not exist is an
    error next to it."""
    text = blank(value)
    if text is None:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise ValidationError("Enter a real date such as 2027-01-31.", field=field) from None


def _midnight(day: date) -> str:
    return f"{day.isoformat()}T00:00:00Z"


def _topup_terms(form: TopupForm) -> dict[str, str | None]:
    """The grant's times as the service takes them: a date starts at midnight UTC; "in N days"
    counts from the effective date, else from the day the form was shown (so that sending it
    again later is the same topup)."""
    effective = _date(form.effective_at.data, "effective_at")
    on_date = _date(form.expires_at.data, "expires_at")
    choice = form.expiry.data or ""
    expires: date | None
    if choice == "date" or (choice == "" and on_date is not None):
        if on_date is None:
            raise ValidationError("Choose the day the credits expire.", field="expires_at")
        expires = on_date
    elif choice == "":
        expires = None
    elif choice in {"30", "90", "365"}:
        today = utcnow().date()
        try:
            opened = date.fromisoformat(form.opened_on.data or "")
        except ValueError:
            opened = today
        if not today - timedelta(days=2) <= opened <= today:
            opened = today
        expires = (effective or opened) + timedelta(days=int(choice))
    else:
        raise ValidationError("Choose when the credits expire.", field="expiry")
    return {
        "effective_at": None if effective is None else _midnight(effective),
        "expires_at": None if expires is None else _midnight(expires),
    }


@bp.post("/customers/<key>/topup")
@requires(MANAGE_WALLETS)
def topup(key: str):
    form = TopupForm()

    def call() -> str:
        _confirm_large(key, form, "top up")
        result = wallets.topup_wallet(
            current_actor(),
            customer_key=key,
            credit_system=form.credit_system.data,
            amount=form.amount.data.strip(),
            kind=form.kind.data or "purchased",
            reference=blank(form.reference.data),
            note=blank(form.note.data),
            idempotency_key=blank(form.idempotency_key.data),
            priority=blank(form.priority.data),
            unit_price=blank(form.unit_price.data),
            currency=blank(form.currency.data),
            **_topup_terms(form),
        )
        if result.replayed:
            return "Already topped up: this form was sent before, nothing changed."
        return (
            f"Added {credits(result.entry.amount_micros)} {result.credit_system}; "
            f"balance {credits(result.balance_micros)}."
        )

    return _handle(key, "topup_form", form, call)


@bp.post("/customers/<key>/adjust")
@requires(MANAGE_WALLETS)
def adjust(key: str):
    form = AdjustForm()

    def call() -> str:
        _confirm_large(key, form, "adjust by")
        result = wallets.adjust_wallet(
            current_actor(),
            customer_key=key,
            credit_system=form.credit_system.data,
            amount=form.amount.data.strip(),
            reason=form.reason.data,
            reference=blank(form.reference.data),
            idempotency_key=blank(form.idempotency_key.data),
        )
        if result.replayed:
            return "Already adjusted: this form was sent before, nothing changed."
        return (
            f"Adjusted {result.credit_system} by {credits(result.entry.amount_micros)}; "
            f"balance {credits(result.balance_micros)}."
        )

    return _handle(key, "adjust_form", form, call)


@bp.post("/customers/<key>/grants/<grant_id>/void")
@requires(MANAGE_WALLETS)
def void_grant(key: str, grant_id: str):
    """Void what remains of one grant, after a confirmation that names the amount (the rule is
    dashboard.unconfirmed_void). HTMX gets the wallet panel back (the form lives in it) plus
    the parts that changed; a plain post a 303, or the page with the error."""
    actor = current_actor()
    grant = dashboard.customer_grant(actor, key, grant_id)  # 404 for another customer's grant
    form = VoidForm(grant.id)
    message = None
    if form.validate_on_submit():
        try:
            preview = dashboard.unconfirmed_void(
                actor, key, grant.id, confirmed=blank(form.confirm.data)
            )
            if preview is not None:
                what = f"{credits(preview.amount_micros)} {preview.unit_plural}"
                form.needs_confirm = what
                form.confirm_value = preview.amount_text
                raise ValidationError(
                    f"This takes {what} out of the wallet: its available balance will be "
                    f"{credits(preview.available_after_micros)}. Tick the box to void "
                    f"grant #{grant.id}, then send again.",
                    field="confirm",
                )
            result = wallets.void_grant(
                actor,
                grant_id=grant.id,
                reason=form.reason.data,
                reference=blank(form.reference.data),
                idempotency_key=blank(form.idempotency_key.data),
            )
        except DomainError as exc:
            show_error(form, exc)
        else:
            message = (
                "Already voided: this form was sent before, nothing changed."
                if result.replayed
                else f"Voided grant #{grant.id}: {credits(-result.entry.amount_micros)} "
                f"{result.credit_system} left the wallet."
            )
            if not is_htmx():
                flash(message)
                return redirect(url_for("pages.customer", key=key), 303)
            return render_template(
                "customers/_voided.html", message=message, **customer_context(key)
            )
    context = customer_context(key, void_form=form)
    if is_htmx():
        return render_template("customers/_wallets.html", **context), 422
    return render_template("customers/detail.html", **context), 422


@bp.post("/wallets/<key>/threshold")
@requires(MANAGE_WALLETS)
def wallet_threshold(key: str):
    """From the wallets list: a plain form, a 303 back to the list with one message."""
    form = ThresholdForm()
    system = form.credit_system.data
    back = request.form.get("back") or url_for("pages.wallets")
    if not back.startswith("/wallets"):
        back = url_for("pages.wallets")
    if form.validate_on_submit():
        try:
            wallet = wallets.set_low_balance_threshold(
                current_actor(),
                customer_key=key,
                credit_system=system,
                threshold=blank(form.threshold.data),
            )
        except DomainError as exc:
            show_error(form, exc)
        else:
            at = wallet.low_balance_threshold_micros
            flash(
                f"The {system} wallet of {key} now counts as low at {credits(at)}."
                if at is not None
                else f"The {system} wallet of {key} no longer has a low-balance threshold."
            )
            return redirect(back, 303)
    errors = [e for f in form for e in f.errors] + form.form_errors
    flash(" ".join(errors) or "Check the threshold.")
    return redirect(back, 303)


# ---------------------------------------------------------------- usage corrections


def correction_effect_words(effect: corrections.CorrectionEffect) -> str:
    """The effect of a correction in one sentence, for its confirmation and its message."""
    amounts = f"{qty(effect.effective_before_micros)} → {qty(effect.effective_after_micros)}"
    system = effect.credit_system or "credits"
    if effect.refunded_micros:
        return f"{amounts}; refunds {credits(effect.refunded_micros)} {system}"
    if effect.deducted_micros:
        return f"{amounts}; charges {credits(effect.deducted_micros)} {system}"
    return f"{amounts}; no credits move"


def _event_of(key: str, event_id: str) -> reads.EventView:
    page = reads.list_events(current_actor(), key, event_id=event_id, limit=1)
    if not page.items:
        raise NotFound(f"Customer {key!r} has no usage event {event_id!r}.", field="event_id")
    return page.items[0]


@bp.route("/customers/<key>/events/<event_id>/correct", methods=["GET", "POST"])
@requires(RECORD_USAGE)
def correct_event(key: str, event_id: str):
    """Correct a usage event: the actual amount and a reason; the effect is shown (HTMX preview
    while typing, and again as the confirmation) before anything is saved."""
    actor = current_actor()
    event = _event_of(key, event_id)
    form = CorrectionForm()
    effect = None
    if request.method == "GET":
        form.actual_amount.data = qty(event.effective_amount_micros).replace(",", "")
    elif form.validate_on_submit():
        amount = form.actual_amount.data.strip()
        try:
            effect = corrections.preview_correction(
                actor, customer_key=key, event_id=event_id, actual_amount=amount
            )
            if form.confirm.data != amount and effect.delta_micros:
                form.needs_confirm = correction_effect_words(effect)
                raise ValidationError(
                    f"Check the effect: {form.needs_confirm}. Tick the box to correct the "
                    "event, then send again.",
                    field="confirm",
                )
            result = corrections.correct_usage(
                actor,
                customer_key=key,
                event_id=event_id,
                actual_amount=amount,
                reason=form.reason.data,
                idempotency_key=blank(form.idempotency_key.data),
            )
        except DomainError as exc:
            show_error(form, exc)
        else:
            if result.replayed:
                flash("Already corrected: this form was sent before, nothing changed.")
            elif not result.corrected:
                flash(f"Event {event_id} already has that amount: nothing changed.")
            else:
                flash(f"Corrected event {event_id}: {correction_effect_words(result.effect)}.")
            return redirect(url_for("pages.customer_events", key=key, event=event_id), 303)
    summary = reads.customer_summary(actor, key)
    status = 422 if form.errors or form.form_errors else 200
    return render_template(
        "customers/correct.html",
        customer=summary.customer,
        event=event,
        form=form,
        effect=effect,
        feature_names=feature_names(),
    ), status


@bp.get("/customers/<key>/events/<event_id>/correct/preview")
@requires(RECORD_USAGE)
def correction_preview(key: str, event_id: str):
    """The correction form's preview (corrections.preview_correction: the same rules, no
    writes). Bad input is a sentence in the box (200)."""
    amount = request.args.get("actual_amount", "").strip()
    effect = problem = None
    if not amount:
        problem = "Enter the actual amount to see what the correction will do."
    else:
        try:
            effect = corrections.preview_correction(
                current_actor(), customer_key=key, event_id=event_id, actual_amount=amount
            )
        except ServiceUnavailable:
            raise
        except DomainError as exc:
            problem = humane(exc.message, "Actual amount" if exc.field == "actual_amount" else None)
    return render_template("customers/_correction_preview.html", effect=effect, problem=problem)
