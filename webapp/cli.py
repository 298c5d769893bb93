"""Flask commands: demo seed, user create, api-key create, ledger verify (db comes from
Flask-Migrate: ``flask --app webapp db upgrade``)."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from typing import NoReturn, ParamSpec

import click
from flask import Flask

from .errors import DomainError
from .models import ROLES
from .services import auth
from .services.actors import SYSTEM

P = ParamSpec("P")


def register(app: Flask) -> None:
    app.cli.add_command(demo)
    app.cli.add_command(user)
    app.cli.add_command(api_key)
    app.cli.add_command(ledger)
    app.cli.add_command(credits_group)
    app.cli.add_command(worker_group)
    app.cli.add_command(plans_group)


def _fail(exc: DomainError) -> NoReturn:
    click.echo(f"error ({exc.code}): {exc.message}", err=True)
    sys.exit(1)


def _or_fail(command: Callable[P, None]) -> Callable[P, None]:
    """The command, a DomainError printed as ``error (code): message`` with exit status 1."""

    @functools.wraps(command)
    def run(*args: P.args, **kwargs: P.kwargs) -> None:
        try:
            command(*args, **kwargs)
        except DomainError as exc:
            _fail(exc)

    return run


@click.group(help="Demo data.")
def demo() -> None:
    pass


@demo.command("seed", help="Add demo customers, wallets and usage history over the last 60 days.")
@click.option("--customers", default=50, show_default=True, type=click.IntRange(1, 1_000_000))
@click.option("--events", default=5000, show_default=True, type=click.IntRange(0, 100_000_000))
@click.option("--seed", "rng_seed", default=42, show_default=True, help="Random seed.")
@click.option("--if-empty", is_flag=True, help="Do nothing when customers already exist.")
def demo_seed(customers: int, events: int, rng_seed: int, if_empty: bool) -> None:
    from sqlalchemy import func, select

    from .extensions import db
    from .models import Customer
    from .services import demo as demo_service

    if if_empty and db.session.scalar(select(func.count()).select_from(Customer)):
        click.echo("Customers already exist; demo seed skipped.")
        return
    with click.progressbar(length=customers, label="Seeding customers", file=sys.stderr) as bar:
        stats = demo_service.seed(customers, events, rng_seed=rng_seed, progress=bar.update)
    click.echo(
        f"Seeded {stats.customers} customers, {stats.events} usage events, "
        f"{stats.ledger_entries} ledger entries ({stats.skipped} events over a limit skipped)."
    )


@demo.command("users", help="Create one demo user per role (once) and print their passwords.")
def demo_users() -> None:
    import secrets

    saved = _read_demo_users()
    for role in ROLES:
        email = f"{role.replace('_', '-')}@demo.example"
        if email in saved:
            continue
        password = secrets.token_urlsafe(12)
        try:
            auth.create_user(SYSTEM, email=email, role=role, password=password)
        except DomainError as exc:
            if exc.code != "conflict":
                _fail(exc)
            continue
        saved[email] = password
    _write_demo_users(saved)
    click.echo("Demo users (also in instance/demo-users.txt):")
    for email, password in saved.items():
        click.echo(f"  {email:32} {password}")


@click.group(help="Dashboard users.")
def user() -> None:
    pass


@user.command("create", help="Create a dashboard user (password from WEBAPP_PASSWORD or a prompt).")
@click.argument("email")
@click.option("--role", type=click.Choice(ROLES), required=True)
@_or_fail
def user_create(email: str, role: str) -> None:
    password = os.environ.get("WEBAPP_PASSWORD") or click.prompt(
        "Password", hide_input=True, confirmation_prompt=True
    )
    created = auth.create_user(SYSTEM, email=email, role=role, password=password)
    click.echo(f"Created {created.role} {created.email}.")


@user.command("set-role", help="Change a user's role (the last active admin keeps theirs).")
@click.argument("email")
@click.option("--role", type=click.Choice(ROLES), required=True)
@_or_fail
def user_set_role(email: str, role: str) -> None:
    changed = auth.set_user_role(SYSTEM, auth.find_user(email).id, role)
    click.echo(f"{changed.email} is now {changed.role}; their sessions have ended.")


@user.command("reset-password", help="Set a user's password (from WEBAPP_PASSWORD or a prompt).")
@click.argument("email")
@_or_fail
def user_reset_password(email: str) -> None:
    password = os.environ.get("WEBAPP_PASSWORD") or click.prompt(
        "New password", hide_input=True, confirmation_prompt=True
    )
    changed = auth.set_password(SYSTEM, auth.find_user(email).id, password)
    _forget_demo_password(changed.email)
    click.echo(f"Password of {changed.email} changed; their sessions have ended.")


@user.command("deactivate", help="Stop a user from signing in (the last active admin stays).")
@click.argument("email")
@_or_fail
def user_deactivate(email: str) -> None:
    changed = auth.deactivate_user(SYSTEM, auth.find_user(email).id)
    _forget_demo_password(changed.email)
    click.echo(f"{changed.email} is deactivated and signed out; their history stays.")


def _demo_users_path() -> str:
    from flask import current_app

    return os.path.join(current_app.instance_path, "demo-users.txt")


def _read_demo_users() -> dict[str, str]:
    path = _demo_users_path()
    if not os.path.exists(path):
        return {}
    with open(path) as fh:
        return dict(line.split(maxsplit=1) for line in fh.read().split("\n") if line.strip())


def _write_demo_users(saved: dict[str, str]) -> None:
    path = _demo_users_path()
    with open(path, "w") as fh:
        fh.write("".join(f"{email} {pw}\n" for email, pw in saved.items()))
    os.chmod(path, 0o600)


def _forget_demo_password(email: str) -> None:
    """instance/demo-users.txt lists only passwords that still sign in."""
    saved = _read_demo_users()
    if saved.pop(email, None) is not None:
        _write_demo_users(saved)


@click.group("api-key", help="API keys.")
def api_key() -> None:
    pass


@api_key.command("create", help="Create an API key; the key is printed once, on the last line.")
@click.argument("name")
@click.option(
    "--role",
    type=click.Choice(ROLES),
    default="admin",
    show_default=True,
    help="What the key may do (admin keys may also configure the catalog).",
)
@click.option(
    "--expires-days",
    type=int,
    default=None,
    help="The key stops working this many days from now (default: never).",
)
@_or_fail
def api_key_create(name: str, role: str, expires_days: int | None) -> None:
    new = auth.create_api_key(SYSTEM, name=name, role=role, expires_days=expires_days)
    expiry = f", expires {new.key.expires_at:%Y-%m-%d %H:%M} UTC" if new.key.expires_at else ""
    click.echo(
        f"Created {role} API key {new.key.name!r} ({new.key.prefix}…{expiry}). "
        "Store it now: it is not shown again."
    )
    click.echo(new.secret)


@api_key.command("revoke", help="Revoke an API key by its id.")
@click.argument("key_id", type=int)
@_or_fail
def api_key_revoke(key_id: int) -> None:
    key = auth.revoke_api_key(SYSTEM, key_id)
    click.echo(f"Revoked {key.prefix}….")


@click.group(help="The credit ledger.")
def ledger() -> None:
    pass


@ledger.command("verify", help="Check every invariant of the domain over the whole database.")
def ledger_verify() -> None:
    from .services.verify import verify_ledger

    report = verify_ledger()
    for check in report.checks:
        status = "ok" if not check.violations else f"{len(check.violations)} VIOLATION(S)"
        click.echo(f"[{status:>14}] {check.name} ({check.checked} checked)")
        for violation in check.violations:
            click.echo(f"    - {violation}")
    if not report.ok:
        click.echo("Ledger verification FAILED.", err=True)
        sys.exit(1)
    click.echo("Ledger verified: every invariant holds.")


@click.group("credits", help="Credit grants.")
def credits_group() -> None:
    pass


@credits_group.command(
    "expire",
    help="Book every due credit expiry (idempotent; safe beside traffic and another run).",
)
@click.option("--batch", default=200, show_default=True, help="Wallets per transaction.")
def credits_expire(batch: int) -> None:
    from .services import credits

    def progress(p: credits.SweepProgress) -> None:
        click.echo(f"  {p.wallets} wallets, {p.grants} grants expired so far", err=True)

    done = credits.expire_due(batch=max(1, batch), progress=progress)
    click.echo(f"Expired {done.grants} grants in {done.wallets} wallets.")


@click.group(
    "worker",
    invoke_without_command=True,
    help="Deliver webhooks and run the periodic jobs (credit expiry every minute, outbox "
    "pruning) until SIGTERM or Ctrl-C; `flask worker status` shows the queue.",
)
@click.option("--until-idle", is_flag=True, help="Stop when nothing is left to do (scripts).")
@click.pass_context
def worker_group(ctx: click.Context, until_idle: bool) -> None:
    if ctx.invoked_subcommand is not None:
        return
    import logging
    import signal
    import threading

    from flask import current_app
    from sqlalchemy import make_url

    from .extensions import db
    from .services import worker

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s worker[%(process)d] %(message)s"
    )
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        logging.getLogger("webapp.worker").info(
            "%s: stopping after the attempts in hand", signal.Signals(signum).name
        )
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    url = make_url(db.engine.url)
    if url.get_backend_name() == "sqlite" and url.database:
        with worker.single_sqlite_worker(url.database, stop) as holding:
            if holding:
                worker.Worker(current_app.config, stop=stop).run(until_idle=until_idle)
    else:
        worker.Worker(current_app.config, stop=stop).run(until_idle=until_idle)


@worker_group.command("status", help="Queue depth and the age of the oldest undelivered event.")
def worker_status() -> None:
    from .services.webhooks.delivery import queue_status

    s = queue_status()
    age = "none" if s.oldest_age_s is None else f"{s.oldest_age_s:.0f} s"
    click.echo(f"queue depth: {s.depth}")
    click.echo(f"  outbox events not yet dispatched: {s.undispatched_events}")
    click.echo(f"  deliveries pending: {s.pending_deliveries} ({s.in_flight} in flight)")
    click.echo(f"  deliveries failed: {s.failed_deliveries}")
    click.echo(f"oldest undelivered event: {age}")
    from sqlalchemy import select

    from .extensions import db
    from .models import WorkerJob

    for job in db.session.scalars(select(WorkerJob).order_by(WorkerJob.name)):
        last = f"{job.last_finished_at:%Y-%m-%d %H:%M:%S}" if job.last_finished_at else "never"
        error = f", last error: {job.last_error}" if job.last_error else ""
        click.echo(f"job {job.name}: last finished {last}, next {job.next_run_at:%H:%M:%S}{error}")


@click.group("plans", help="Plans: edits, scheduled changes and included credits.")
def plans_group() -> None:
    pass


class _Bar:
    """A progress bar on stderr for a plan edit or an issue run: (done, total) callbacks."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.bar: object | None = None
        self.done = 0

    def __call__(self, done: int, total: int) -> None:
        if self.bar is None:
            self.bar = click.progressbar(length=max(total, 1), label=self.label, file=sys.stderr)
            self.bar.__enter__()  # type: ignore[attr-defined]
        self.bar.update(done - self.done)  # type: ignore[attr-defined]
        self.done = done

    def close(self) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)  # type: ignore[attr-defined]


@plans_group.command(
    "tick",
    help="The worker's plan job: apply due scheduled reset periods and "
    "plan changes, finish plan edits in progress, issue included credits "
    "(idempotent; safe beside another run).",
)
@click.option("--batch", default=200, show_default=True, help="Customers per transaction.")
@_or_fail
def plans_tick(batch: int) -> None:
    from .services import plans

    done = plans.tick(batch=max(1, batch))
    click.echo(
        f"Applied {done.resets_applied} reset period changes and {done.plan_changes} plan "
        f"changes, brought {done.caught_up} customers up to their plan, issued "
        f"{done.credits_issued} included credit grants."
    )
    for key in done.plan_changes_blocked:
        click.echo(f"  {key}: scheduled plan change blocked (seats above the new allowance)")


@plans_group.command("issue-credits", help="Issue the included credits due now (idempotent).")
@click.option("--batch", default=200, show_default=True, help="Customers per transaction.")
@_or_fail
def plans_issue_credits(batch: int) -> None:
    from .services import plans

    click.echo(
        f"Issued {plans.issue_included_credits(batch=max(1, batch))} included credit grants."
    )


@plans_group.command("apply-scheduled", help="Apply due scheduled plan and reset period changes.")
@_or_fail
def plans_apply_scheduled() -> None:
    from .services import plans

    resets = plans.apply_scheduled_resets()
    changed, blocked = plans.apply_scheduled_changes()
    click.echo(f"Applied {resets} reset period changes and {changed} plan changes.")
    for key in blocked:
        click.echo(f"  {key}: scheduled plan change blocked (seats above the new allowance)")


@plans_group.command(
    "edit",
    help="Edit a plan from a JSON file ({name?, entitlements?, included_credits?, "
    "prorate_included_credits?}); every customer on it changes, with a progress bar.",
)
@click.argument("key")
@click.argument("path", type=click.File("r"))
@click.option("--apply-to-others", is_flag=True, help="Customers who block keep their value.")
@click.option("--batch", default=200, show_default=True, help="Customers per transaction.")
@_or_fail
def plans_edit(key: str, path: click.utils.LazyFile, apply_to_others: bool, batch: int) -> None:
    import json

    from .services import plans

    body = json.load(path)
    bar = _Bar(f"plan {key}")
    try:
        result = plans.update_plan(
            SYSTEM,
            key,
            name=body.get("name"),
            entitlements=body.get("entitlements"),
            included_credits=body.get("included_credits"),
            prorate_included_credits=body.get("prorate_included_credits"),
            apply_to_others=apply_to_others,
            batch=max(1, batch),
            progress=bar,
        )
    finally:
        bar.close()
    click.echo(f"Plan {key}: {result.updated} customers updated.")
    for item in result.kept:
        click.echo(f"  {item.customer_key} keeps its {item.feature_key} {item.field} (override)")
