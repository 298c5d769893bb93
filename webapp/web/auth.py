"""Sign in and out; one's own password; logging out everywhere."""

from __future__ import annotations

from collections.abc import Callable

from flask import (
    Blueprint,
    Response,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    url_for,
)
from flask_limiter.util import get_remote_address
from flask_login import current_user, login_user, logout_user

from ..errors import DomainError
from ..extensions import limiter
from ..services import auth
from ..services.actors import VIEW
from .forms import ActionForm, LoginForm, OwnPasswordForm, show_error
from .session import SessionUser, current_actor, requires, safe_next, start_session

bp = Blueprint("auth", __name__)


def _limit(name: str) -> Callable[[], str]:
    return lambda: current_app.config[name]


def _account() -> str:
    return request.form.get("email", "").strip().lower()[:254]


def _pair_key() -> str:
    """Attempts on one account from one address: a guesser is stopped, the account's owner
    signing in from elsewhere is not."""
    return f"login-pair:{_account()}|{get_remote_address()}"


def _account_key() -> str:
    """Attempts on one account from every address: the ceiling for a spread-out guesser."""
    return "login-account:" + _account()


def _failed(response: Response) -> bool:
    return response.status_code != 303  # a successful sign-in uses up no attempt


@bp.route("/login", methods=["GET", "POST"])
@limiter.limit(_limit("LOGIN_RATE_LIMIT"), methods=["POST"], deduct_when=_failed)
@limiter.limit(
    _limit("LOGIN_PAIR_RATE_LIMIT"), methods=["POST"], key_func=_pair_key, deduct_when=_failed
)
@limiter.limit(
    _limit("LOGIN_ACCOUNT_RATE_LIMIT"),
    methods=["POST"],
    key_func=_account_key,
    deduct_when=_failed,
)
def login():
    form = LoginForm()
    next_url = safe_next(request.args.get("next"))
    if current_user.is_authenticated and request.method == "GET":
        return redirect(next_url or url_for("pages.overview"))
    if form.validate_on_submit():
        user = auth.sign_in(form.email.data, form.password.data, address=get_remote_address())
        if user is not None:
            start_session(user)
            return redirect(next_url or url_for("pages.overview"), 303)
        form.form_errors.append("Wrong email or password.")
    status = 422 if request.method == "POST" else 200
    return render_template("auth/login.html", form=form, next=next_url), status


@bp.post("/logout")
def logout():
    # Only the CSRF token matters here (checked by CSRFProtect); anonymous logout is harmless.
    # The session is a signed cookie: forgetting it here would leave any copy of it (another tab
    # saved, a stolen cookie) valid. Moving the session version on makes every copy invalid, at
    # the price of ending the user's sessions on other devices too.
    if current_user.is_authenticated:
        auth.end_sessions(current_actor(), current_user.id)
    logout_user()
    flash("Signed out.")
    return redirect(url_for("auth.login"), 303)


@bp.post("/logout/everywhere")
@requires(VIEW)
def logout_everywhere():
    auth.end_sessions(current_actor(), current_user.id)
    logout_user()
    flash("Signed out on every device.")
    return redirect(url_for("auth.login"), 303)


@bp.route("/account", methods=["GET", "POST"])
@requires(VIEW)
def account():
    form = OwnPasswordForm()
    status = 200
    if form.validate_on_submit():
        try:
            user = auth.set_password(
                current_actor(),
                current_user.id,
                form.password.data,
                current_password=form.current_password.data,
            )
        except DomainError as exc:
            show_error(form, exc)
        else:
            # The new session version ended every session, this one included: sign in again.
            login_user(SessionUser(user))
            flash("Password changed; your other sessions have ended.")
            return redirect(url_for("auth.account"), 303)
    if request.method == "POST":
        status = 422
    return render_template("auth/account.html", form=form, logout_form=ActionForm()), status
