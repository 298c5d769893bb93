"""Forms check presence and shape only; every rule (amounts, choices, limits) is the services'.

Select fields do not validate their choices for the same reason: the service names the error."""

from __future__ import annotations

import re
import uuid

from flask_wtf import FlaskForm
from wtforms import (
    BooleanField,
    EmailField,
    HiddenField,
    PasswordField,
    SelectField,
    StringField,
)
from wtforms.validators import DataRequired, Length, Optional, Regexp

try:
    from wtforms import SelectChoice
except ImportError:  # pragma: no cover - WTForms < 3.3 takes (value, label) tuples
    SelectChoice = None

from ..errors import DomainError, IdempotencyConflict, ServiceUnavailable
from ..models import FEATURE_TYPES, OVERAGE_POLICIES, RESET_PERIODS, ROLES, TOPUP_KINDS, utcnow


def choices(pairs) -> list:
    """(value, label) pairs as the installed WTForms wants them."""
    if SelectChoice is None:  # pragma: no cover
        return [(value, label) for value, label in pairs]
    return [SelectChoice(value, label) for value, label in pairs]


def _select(label: str, options=(), **kwargs) -> SelectField:
    return SelectField(label, choices=choices(options), validate_choice=False, **kwargs)


class PrefixedForm(FlaskForm):
    """Several of these share the customer page: a prefix keeps their field names and ids apart
    (``usage-amount``, ``topup-amount``)."""

    form_prefix = ""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("prefix", self.form_prefix)
        super().__init__(*args, **kwargs)


class ActionForm(FlaskForm):
    """A button that posts: only the CSRF token."""


class LoginForm(FlaskForm):
    email = StringField("Email", validators=[DataRequired(), Length(max=254)])
    password = PasswordField("Password", validators=[DataRequired(), Length(max=1000)])


class PasswordForm(FlaskForm):
    password = PasswordField("New password", validators=[DataRequired()])


class OwnPasswordForm(PasswordForm):
    current_password = PasswordField("Current password", validators=[DataRequired()])


class RecordUsageForm(PrefixedForm):
    form_prefix = "usage"
    feature_key = _select("Feature", validators=[DataRequired()])
    amount = StringField("Amount", default="1", validators=[DataRequired()])
    # Idempotency key made when the form is shown: a double submit records once.
    event_id = HiddenField(default=lambda: f"dash-{uuid.uuid4()}")
    reason = StringField("Reason (optional)")  # the service checks it (500 characters)


class ReclaimSeatsForm(PrefixedForm):
    form_prefix = "reclaim"
    feature_key = _select("Feature", validators=[DataRequired()])
    amount = StringField(
        "Seats to reclaim",
        default="1",
        validators=[
            DataRequired(),
            Regexp(r"^\s*\d+\s*$", message="Enter a whole number of seats, such as 1 or 2."),
        ],
    )
    event_id = HiddenField(default=lambda: f"dash-{uuid.uuid4()}")
    reason = StringField("Reason (optional)")


DATE = Regexp(r"^\s*\d{4}-\d{2}-\d{2}\s*$", message="Enter a date such as 2027-01-31.")
EXPIRY_CHOICES = [
    ("", "never"),
    ("30", "in 30 days"),
    ("90", "in 90 days"),
    ("365", "in 365 days"),
    ("date", "on a date"),
]


class TopupForm(PrefixedForm):
    form_prefix = "topup"
    credit_system = _select("Credit system", validators=[DataRequired()])
    amount = StringField("Amount", validators=[DataRequired()])
    kind = _select("Kind", [(k, k) for k in TOPUP_KINDS], default="purchased")
    expiry = _select("Expires", EXPIRY_CHOICES, default="")
    # The date of "on a date" (and the start of "in N days" when an effective date is given).
    expires_at = StringField("Expiry date", validators=[Optional(), DATE])
    reference = StringField("Reference (invoice)", validators=[Optional(), Length(max=200)])
    note = StringField("Note", validators=[Optional(), Length(max=2000)])
    # Under "more": the grant's terms, each with the service's default when left empty.
    priority = StringField("Priority (lower is spent first)", validators=[Optional()])
    effective_at = StringField("Effective from", validators=[Optional(), DATE])
    unit_price = StringField("Unit price", validators=[Optional(), Length(max=40)])
    currency = StringField("Currency", validators=[Optional(), Length(max=3)])
    idempotency_key = HiddenField(default=lambda: f"dash-{uuid.uuid4()}")
    # The day the form was shown: "in 30 days" counts from it, so that sending the form again
    # tomorrow is the same topup (a replay), not a second one with another expiry.
    opened_on = HiddenField(default=lambda: utcnow().date().isoformat())
    # A checkbox whose value is the amount it confirms (templates/customers/_confirm_large.html).
    confirm = StringField(validators=[Optional()])
    needs_confirm = ""  # set to what is to be confirmed: "1,000,000.00 credits"

    MORE = ("priority", "effective_at", "unit_price", "currency")

    @property
    def more_open(self) -> bool:
        """The "more" disclosure starts open when one of its fields has a value or an error."""
        return any(getattr(self, name).data or getattr(self, name).errors for name in self.MORE)


class AdjustForm(PrefixedForm):
    form_prefix = "adjust"
    credit_system = _select("Credit system", validators=[DataRequired()])
    amount = StringField("Amount (+ or −)", validators=[DataRequired()])
    reason = StringField("Reason", validators=[DataRequired(), Length(max=2000)])
    reference = StringField("Reference", validators=[Optional(), Length(max=200)])
    # Made when the form is shown, like the others: a double submit or a reload adjusts once.
    idempotency_key = HiddenField(default=lambda: f"dash-{uuid.uuid4()}")
    confirm = StringField(validators=[Optional()])
    needs_confirm = ""


class VoidForm(FlaskForm):
    """Void one grant: one per grant on the customer page, so the prefix names the grant
    (``void-12-reason``)."""

    reason = StringField("Reason", validators=[DataRequired(), Length(max=2000)])
    reference = StringField("Reference", validators=[Optional(), Length(max=200)])
    idempotency_key = HiddenField(default=lambda: f"dash-{uuid.uuid4()}")
    # A checkbox whose value is the amount it confirms, as for large topups.
    confirm = StringField(validators=[Optional()])
    needs_confirm = ""  # what the checkbox says: "12.50 credits"
    confirm_value = ""  # what ticking it confirms: the amount as typed, "12.5"

    def __init__(self, grant_id: int, *args, **kwargs) -> None:
        kwargs.setdefault("prefix", f"void-{grant_id}")
        super().__init__(*args, **kwargs)
        self.grant_id = grant_id


class CorrectionForm(FlaskForm):
    """Correct one usage event: its actual amount and why, confirmed after its effect is shown
    (the checkbox's value is the amount it confirms)."""

    actual_amount = StringField("Actual amount", validators=[DataRequired(), Length(max=40)])
    reason = StringField("Reason", validators=[DataRequired(), Length(max=2000)])
    idempotency_key = HiddenField(default=lambda: f"dash-{uuid.uuid4()}")
    confirm = StringField(validators=[Optional()])
    needs_confirm = ""  # the effect the checkbox confirms, in words


class ThresholdForm(FlaskForm):
    credit_system = HiddenField()
    threshold = StringField("Low balance at", validators=[Optional(), Length(max=40)])


class UserForm(FlaskForm):
    email = EmailField("Email", validators=[DataRequired(), Length(max=254)])
    role = _select("Role", [(r, r) for r in ROLES], default="account_manager")
    password = PasswordField("Password", validators=[DataRequired()])


class RoleForm(FlaskForm):
    role = _select("Role", [(r, r) for r in ROLES])


class ApiKeyForm(FlaskForm):
    name = StringField("Name", validators=[DataRequired(), Length(max=100)])
    role = _select("Role", [(r, r) for r in ROLES], default="admin")
    expires_days = _select(
        "Expires",
        [("", "never"), ("30", "in 30 days"), ("90", "in 90 days"), ("365", "in 365 days")],
        default="",
    )


class CustomerForm(FlaskForm):
    key = StringField("Key", validators=[DataRequired(), Length(max=200)])
    name = StringField("Name", validators=[DataRequired(), Length(max=300)])
    email = StringField("Email", validators=[Optional(), Length(max=254)])


class CustomerEditForm(FlaskForm):
    name = StringField("Name", validators=[DataRequired(), Length(max=300)])
    email = StringField("Email", validators=[Optional(), Length(max=254)])


class FeatureForm(FlaskForm):
    key = StringField("Key", validators=[DataRequired(), Length(max=100)])
    name = StringField("Name", validators=[DataRequired(), Length(max=200)])
    type = _select("Type", [(t, t) for t in FEATURE_TYPES])
    event_name = StringField("Event name (default: the key)", validators=[Optional()])


class CreditSystemForm(FlaskForm):
    key = StringField("Key", validators=[DataRequired(), Length(max=100)])
    name = StringField("Name", validators=[DataRequired(), Length(max=200)])
    unit_singular = StringField("Unit (singular)", validators=[Optional()])
    unit_plural = StringField("Unit (plural)", validators=[Optional()])
    low_balance_threshold = StringField(
        "Default low-balance threshold (empty: none)", validators=[Optional()]
    )


class FeatureEditForm(FlaskForm):
    name = StringField("Name", validators=[DataRequired(), Length(max=200)])


class CreditSystemEditForm(FeatureEditForm):
    unit_singular = StringField("Unit (singular)", validators=[Optional()])
    unit_plural = StringField("Unit (plural)", validators=[Optional()])
    low_balance_threshold = StringField(
        "Default low-balance threshold (empty: none)", validators=[Optional()]
    )


class CreditCostForm(FlaskForm):
    feature_key = _select("Feature", validators=[DataRequired()])
    credit_system = _select("Credit system", validators=[DataRequired()])
    cost = StringField("Credits per unit", validators=[DataRequired()])


class EntitlementForm(FlaskForm):
    feature_key = _select("Feature", validators=[DataRequired()])
    allowance = StringField("Allowance (empty: unlimited)", validators=[Optional()])
    reset_period = _select("Reset period", [(p, p) for p in RESET_PERIODS], default="never")
    overage = _select("Overage", [(p, p) for p in OVERAGE_POLICIES], default="block")


def show_error(form: FlaskForm, exc: DomainError) -> None:
    """Put a service's error next to the field it names, or above the form. A database that is
    unavailable is no fault of the form: it goes on to the 503 page (errorhandlers)."""
    if isinstance(exc, ServiceUnavailable):
        raise exc
    if isinstance(exc, IdempotencyConflict):  # the form's hidden key, sent again with changes
        form.form_errors.append(
            "This form was already sent with other values, and that one counted. Reload the "
            "page to see the result, then start again."
        )
        return
    field = getattr(form, exc.field, None) if exc.field else None
    message = humane(exc.message, getattr(getattr(field, "label", None), "text", None))
    message = _LATER_FIELD.sub(lambda m: _label_of(form, m.group(1)), message)
    if (
        field is not None
        and hasattr(field, "errors")
        and exc.field != "csrf_token"
        and not isinstance(field, HiddenField)
    ):
        field.errors = [*field.errors, message]
    else:
        form.form_errors.append(message)


_LATER_FIELD = re.compile(r"(?<=\s)([a-z]+(?:_[a-z]+)+)(?=[\s.,)])")


def _label_of(form: FlaskForm, name: str) -> str:
    """A field's API name left inside a message (`after effective_at`) as the form's label."""
    field = getattr(form, name, None)
    label = getattr(getattr(field, "label", None), "text", None)
    return f"“{label}”" if label else name


_BIG_NUMBER = re.compile(r"(?<![\w.,:-])(\d{4,})(\.\d+)?(?![\w-])")


def humane(message: str, label: str | None = None) -> str:
    """A service's message as a sentence on the page: no API-style `field` quotes (the field's
    label instead), numbers in the page's format (1,371.22, never 1371.22 or 10^12)."""
    if label and message.startswith("`"):
        message = re.sub(r"^`[^`]+`", label, message)
    message = message.replace("`", "").replace("10^12", "1,000,000,000,000")
    message = _BIG_NUMBER.sub(lambda m: f"{int(m.group(1)):,}{m.group(2) or ''}", message)
    return message[:1].upper() + message[1:]


def blank(value: str | None) -> str | None:
    """An empty text box means "not given"."""
    if value is None:
        return None
    value = value.strip()
    return value or None


class WebhookEndpointForm(FlaskForm):
    url = StringField("URL", validators=[DataRequired(), Length(max=2000)])
    event_types = StringField(
        "Event types",
        validators=[Optional(), Length(max=2000)],
        description="Comma-separated, e.g. wallet.depleted, credits.expired; empty for every type.",
    )
    description = StringField("Description", validators=[Optional(), Length(max=500)])


class PlanForm(FlaskForm):
    key = StringField("Key", validators=[DataRequired(), Length(max=100)])
    name = StringField("Name", validators=[DataRequired(), Length(max=200)])


class PlanEditForm(FlaskForm):
    """A plan's name and settings; its entitlements and credits are rows of the page (admin)."""

    name = StringField("Name", validators=[DataRequired(), Length(max=200)])
    prorate = BooleanField("Prorate included credits for customers who join mid-period")
    apply_to_others = BooleanField(
        "If some customers block the change, apply it to the others (those keep their value)"
    )


class CustomerPlanForm(FlaskForm):
    plan = _select("Plan")
    when = _select(
        "When",
        [("now", "Now"), ("period_end", "At the end of the month (scheduled)")],
        default="now",
    )
