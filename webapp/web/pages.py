"""Read-only pages: overview, customers, one customer, features, wallets, audit, CSV exports."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

from flask import Blueprint, Response, render_template, request, stream_with_context, url_for

from ..errors import NotFound, ValidationError
from ..models import LEDGER_TYPES
from ..services import catalog, dashboard, reads, reports
from ..services.actors import MANAGE_WALLETS, VIEW, VIEW_LEDGER
from ..services.credits import reads as credit_reads
from ..services.dashboard.customers import NEAR_LIMIT_PERCENT, STATUS_FILTERS
from ..services.money import format_micros
from ..services.paging import MAX_ID, MAX_PAGE, Page, whole_number
from .charts import bar_chart, window
from .csv_cells import QUOTING, safe_row
from .forms import (
    ActionForm,
    AdjustForm,
    ReclaimSeatsForm,
    RecordUsageForm,
    TopupForm,
    VoidForm,
    choices,
)
from .htmx import is_htmx, target
from .session import current_actor, requires

bp = Blueprint("pages", __name__)

RECENT = 15
EXPORT_PAGE = 200  # rows per keyset page while streaming a CSV
PERCENT_COLUMN = "percent"  # the customer list's "% of allowance" column, in ?col=
EXPORT_CUSTOMERS = 100  # customers per page of the customer list's CSV (its largest page)


def _int_arg(name: str, default: int, high: int = MAX_PAGE) -> int:
    """A page number or id from the URL; out of range or not a number: a 422 page."""
    return whole_number(request.args.get(name), field=name, low=1, high=high, default=default)


@bp.get("/")
@requires(VIEW)
def overview():
    actor = current_actor()
    days = window(request.args.get("days"))
    return render_template(
        "overview.html",
        stats=dashboard.overview(actor),
        days=days,
        charts=[bar_chart(s) for s in dashboard.daily_usage(actor, days=days) if s.total_micros],
        wallets=dashboard.lowest_wallets(actor, per_page=5),
        audit=dashboard.audit_log(actor, per_page=8),
        alerts=dashboard.in_app_alerts(actor),
    )


def _customer_listing(page: int, per_page: int = 25) -> tuple[Any, dict[str, Any], list[str]]:
    """The customer list as the URL asks for it: the listing, the arguments to keep in links,
    and the columns shown."""
    asked = request.args.getlist("col")
    listing = dashboard.list_customers(
        current_actor(),
        search=request.args.get("q", ""),
        status=request.args.get("status") or "all",
        near_limit=request.args.get("near") == "1",
        sort=request.args.get("sort", "name"),
        direction=request.args.get("dir", "asc"),
        page=page,
        per_page=per_page,
        compare_months=any(c.startswith("change:") for c in asked),
        plan=request.args.get("plan") or None,
    )
    # The columns shown: chosen in the URL (?col=feature:seats&col=credits:credits), by default
    # the share of the allowance used, the persistent features and the credit systems (a compact
    # table, whatever the catalog). change:<key> is a consumable's month against last month.
    available = [PERCENT_COLUMN, *(f"feature:{c.key}" for c in listing.columns)] + [
        f"credits:{s.key}" for s in listing.credit_systems
    ]
    available += [f"change:{c.key}" for c in listing.columns if c.type == "consumable"]
    chosen = [c for c in asked if c in available] or [
        PERCENT_COLUMN,
        *(f"feature:{c.key}" for c in listing.columns if c.type == "persistent"),
    ] + [f"credits:{s.key}" for s in listing.credit_systems]
    args = {
        "q": request.args.get("q", ""),
        "status": request.args.get("status") or "all",
        **({"near": "1"} if request.args.get("near") == "1" else {}),
        **({"plan": request.args["plan"]} if request.args.get("plan") else {}),
        "sort": listing.sort,
        "dir": listing.direction,
        "col": chosen,
    }
    return listing, args, chosen


@bp.get("/customers")
@requires(VIEW)
def customers():
    listing, args, chosen = _customer_listing(_int_arg("page", 1))
    template = "customers/_results.html" if target() == "results" else "customers/index.html"
    return render_template(
        template,
        listing=listing,
        args=args,
        chosen=set(chosen),
        statuses=STATUS_FILTERS,
        near_limit_percent=NEAR_LIMIT_PERCENT,
    )


@bp.get("/customers.csv")
@requires(VIEW)
def export_customers():
    """The customer list as on screen (search, status, sort, columns), every page."""
    first, args, chosen = _customer_listing(1, EXPORT_CUSTOMERS)
    features = {f"feature:{c.key}": c for c in first.columns}
    systems = {f"credits:{s.key}": s for s in first.credit_systems}
    header = ["key", "name", "email", "status", "created_at"]
    for col in chosen:
        if col == PERCENT_COLUMN:
            header.append("% of allowance")
        elif col in features and features[col].type == "persistent":
            header += [f"{features[col].name} used", f"{features[col].name} allowed"]
        elif col in features:
            header.append(f"{features[col].name} this period")
        elif col.startswith("change:"):
            name = features[f"feature:{col.partition(':')[2]}"].name
            header += [
                f"{name} this month",
                f"{name} last month to the same day",
                f"{name} last month",
                f"{name} change %",
            ]
        else:
            header.append(f"{systems[col].name} balance")

    def cells(row: Any) -> list[Any]:
        c = row.customer
        out = [c.key, c.name, c.email or "", c.status, c.created_at.isoformat()]
        for col in chosen:
            kind, _, key = col.partition(":")
            if col == PERCENT_COLUMN:
                out.append("" if row.percent is None else row.percent)
            elif kind == "feature":
                used, allowed = row.usage.get(key, (None, None))
                out.append("" if used is None else format_micros(used))
                if features[col].type == "persistent":
                    out.append("" if allowed is None else format_micros(allowed))
            elif kind == "change":
                month = row.months.get(key, dashboard.MonthChange())
                out += [
                    format_micros(month.this_month_micros),
                    format_micros(month.last_month_to_date_micros),
                    format_micros(month.last_month_micros),
                    "" if month.change_percent is None else month.change_percent,
                ]
            else:
                balance = row.balances.get(key)
                out.append("" if balance is None else format_micros(balance))
        return out

    def pages() -> Iterator[list[list[Any]]]:
        listing = first
        for number in range(1, first.pages + 1):
            if number > 1:
                listing = _customer_listing(number, EXPORT_CUSTOMERS)[0]
            yield [cells(row) for row in listing.rows]

    return _csv_response(_csv_stream(header, pages()), "customers.csv")


def chart_days() -> int:
    """The chart window of the customer page: ?days= of the URL, or for an HTMX form sent from
    the page, of the page's own URL (HX-Current-URL), so that a form keeps the chosen range."""
    days = request.args.get("days")
    if days is None and request.headers.get("HX-Current-URL"):
        page = urlsplit(request.headers["HX-Current-URL"])
        days = next(iter(parse_qs(page.query).get("days", [])), None)
    return window(days)


def feature_names() -> dict[str, str]:
    """Feature key -> name, for tables of events (one query)."""
    return {f.key: f.name for f, _, _ in catalog.list_features(current_actor())}


def customer_context(key: str, **forms: Any) -> dict[str, Any]:
    """Everything the customer page and its fragments show; a constant number of queries."""
    actor = current_actor()
    summary = reads.customer_summary(actor, key)
    recordable = [
        (e.feature_key, e.feature_name) for e in summary.entitlements if e.feature_type != "boolean"
    ]
    persistent = [
        (e.feature_key, e.feature_name)
        for e in summary.entitlements
        if e.feature_type == "persistent"
    ]
    wallet_systems = [w.credit_system for w in summary.wallets]
    systems = catalog.list_credit_systems(actor)
    open_systems = [(s.key, s.name) for s in systems if s.archived_at is None]
    days = chart_days()
    usage_form = forms.get("usage_form") or RecordUsageForm(formdata=None)
    reclaim_form = forms.get("reclaim_form") or ReclaimSeatsForm(formdata=None)
    topup_form = forms.get("topup_form") or TopupForm(formdata=None)
    adjust_form = forms.get("adjust_form") or AdjustForm(formdata=None)
    usage_form.feature_key.choices = choices(recordable)
    reclaim_form.feature_key.choices = choices(persistent)
    # Archived credit systems take no topups; an adjustment may still correct their wallets.
    topup_form.credit_system.choices = choices(open_systems)
    adjust_form.credit_system.choices = choices(
        (s.key, s.name) for s in systems if s.archived_at is None or s.key in wallet_systems
    )
    for form in (topup_form, adjust_form):
        if not form.credit_system.data and wallet_systems:
            form.credit_system.data = wallet_systems[0]  # the customer's wallet, not the first
    grants = dashboard.wallet_grants(
        actor,
        key,
        [w.wallet_id for w in summary.wallets],
        with_past=request.args.get("grants") == "all",
    )
    void_form = forms.get("void_form")
    void_forms = {}
    if actor.can(MANAGE_WALLETS) and summary.customer.status == "active":
        void_forms = {
            g.id: void_form
            if void_form and void_form.grant_id == g.id
            else VoidForm(g.id, formdata=None)
            for held in grants.values()
            for g in held.current
            if g.remaining_micros > 0
        }
    ledger = reads.list_ledger(actor, key, limit=RECENT)
    return {
        "summary": summary,
        "customer": summary.customer,
        "events": reads.list_events(actor, key, limit=RECENT),
        "feature_names": feature_names(),
        "ledger": ledger,
        "grants": grants,
        "show_past": request.args.get("grants") == "all",
        "void_forms": void_forms,
        "void_form": void_form,
        "days": days,
        "charts": [
            bar_chart(s)
            for s in dashboard.daily_usage(actor, customer_key=key, days=days)
            if s.total_micros
        ],
        "usage_form": usage_form,
        "reclaim_form": reclaim_form,
        "topup_form": topup_form,
        "adjust_form": adjust_form,
        "admin_form": ActionForm(formdata=None),
    }


@bp.get("/customers/<key>")
@requires(VIEW)
def customer(key: str):
    # The wallet panel's "past grants" toggle asks for the panel alone.
    template = "customers/_wallets.html" if target() == "wallets" else "customers/detail.html"
    return render_template(template, **customer_context(key))


@bp.get("/customers/<key>/grants/<grant_id>")
@requires(VIEW)
def customer_grant(key: str, grant_id: str):
    """One grant: its terms and what it paid for, newest first (keyset pages)."""
    actor = current_actor()
    summary = reads.customer_summary(actor, key)
    grant = dashboard.customer_grant(actor, key, grant_id)
    page = credit_reads.grant_allocations(
        actor, grant.id, cursor=request.args.get("cursor"), limit=50
    )
    return render_template(
        "customers/grant.html",
        customer=summary.customer,
        grant=grant,
        allocations=page,
        feature_names=feature_names(),
        next_url=url_for(
            "pages.customer_grant", key=key, grant_id=grant.id, cursor=page.next_cursor
        )
        if page.next_cursor
        else None,
    )


@bp.get("/customers/<key>/ledger/<entry_id>")
@requires(VIEW)
def ledger_entry(key: str, entry_id: str):
    """Which grants paid for one ledger entry: the expanded row for HTMX, a page without JS."""
    actor = current_actor()
    paid = dashboard.entry_paid_by(actor, key, entry_id)
    if is_htmx():
        return render_template("customers/_paid_by.html", paid=paid)
    summary = reads.customer_summary(actor, key)
    return render_template(
        "customers/ledger_entry.html",
        customer=summary.customer,
        paid=paid,
        ledger=Page([paid.entry], None),
    )


@bp.get("/customers/<key>/events")
@requires(VIEW)
def customer_events(key: str):
    actor = current_actor()
    summary = reads.customer_summary(actor, key)
    args = {name: request.args.get(name, "") for name in ("feature", "since", "until", "event")}
    page = reads.list_events(
        actor,
        key,
        feature_key=args["feature"] or None,
        since=_day("since"),
        until=_day("until", end=True),
        event_id=args["event"].strip() or None,
        cursor=request.args.get("cursor"),
        limit=50,
    )
    names = feature_names()
    recordable = [e for e in summary.entitlements if e.feature_type != "boolean"]
    return render_template(
        "customers/events.html",
        customer=summary.customer,
        events=page,
        feature_names=names,
        features=recordable,
        args=args,
        filtered=any(args.values()),
        next_url=url_for("pages.customer_events", key=key, **args, cursor=page.next_cursor)
        if page.next_cursor
        else None,
    )


@bp.get("/customers/<key>/ledger")
@requires(VIEW)
def customer_ledger(key: str):
    actor = current_actor()
    summary = reads.customer_summary(actor, key)
    page = reads.list_ledger(actor, key, cursor=request.args.get("cursor"), limit=50)
    return render_template(
        "customers/ledger.html",
        customer=summary.customer,
        ledger=page,
    )


def _csv_stream(header: list[str], pages: Iterator[list[list[Any]]]) -> Iterator[str]:
    buffer = io.StringIO()
    writer = csv.writer(buffer, quoting=QUOTING)
    writer.writerow(safe_row(header))  # a header can hold a feature's name
    yield buffer.getvalue()
    for rows in pages:
        buffer.seek(0)
        buffer.truncate()
        writer.writerows(safe_row(row) for row in rows)
        yield buffer.getvalue()


def _all_pages(fetch: Callable[[str | None], Page[Any]]) -> Iterator[list[Any]]:
    """Every item of a keyset-paged list, a page of EXPORT_PAGE rows at a time."""
    cursor: str | None = None
    while True:
        page = fetch(cursor)
        yield page.items
        if page.next_cursor is None:
            return
        cursor = page.next_cursor


def _csv_response(rows: Iterator[str], filename: str) -> Response:
    response = Response(stream_with_context(rows), mimetype="text/csv")
    response.headers["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


@bp.get("/customers/<key>/events.csv")
@requires(VIEW)
def export_events(key: str):
    actor = current_actor()
    customer = catalog.get_customer(key)  # a 404 before the stream starts

    def pages() -> Iterator[list[list[Any]]]:
        cursor: str | None = None
        while True:
            page = reads.list_events(actor, customer.key, cursor=cursor, limit=EXPORT_PAGE)
            yield [
                [
                    e.id,
                    e.event_id,
                    e.customer_key,
                    e.feature_key,
                    e.event_name,
                    format_micros(e.amount_micros),
                    e.timestamp.isoformat(),
                    "" if e.credits_micros is None else format_micros(e.credits_micros),
                    format_micros(e.overage_micros),
                    e.actor,
                    e.recorded_at.isoformat(),
                    json.dumps(e.metadata, sort_keys=True) if e.metadata else "",
                    format_micros(e.effective_amount_micros),  # after its corrections
                    ""
                    if e.effective_credits_micros is None
                    else format_micros(e.effective_credits_micros),
                ]
                for e in page.items
            ]
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    header = [
        "id",
        "event_id",
        "customer_key",
        "feature_key",
        "event_name",
        "amount",
        "timestamp",
        "credits",
        "overage",
        "actor",
        "recorded_at",
        "metadata",
        "effective_amount",
        "effective_credits",
    ]
    return _csv_response(_csv_stream(header, pages()), f"{customer.key}-events.csv")


LEDGER_HEADER = [
    "id",
    "credit_system",
    "type",
    "kind",
    "amount",
    "balance_after",
    "reference",
    "note",
    "event_id",
    "actor",
    "created_at",
    "customer_key",  # last: the columns before it are those of the first export (no customer)
]


def _ledger_csv_row(e: reads.LedgerView) -> list[Any]:
    return [
        e.id,
        e.credit_system,
        e.type,
        e.kind or "",
        format_micros(e.amount_micros),
        format_micros(e.balance_after_micros),
        e.reference or "",
        e.note or "",
        e.event_id or "",
        e.actor,
        e.created_at.isoformat(),
        e.customer_key,
    ]


def _ledger_csv(fetch: Callable[[str | None], Page[Any]], filename: str) -> Response:
    pages = ([_ledger_csv_row(e) for e in items] for items in _all_pages(fetch))
    return _csv_response(_csv_stream(LEDGER_HEADER, pages), filename)


@bp.get("/customers/<key>/ledger.csv")
@requires(VIEW)
def export_ledger(key: str):
    actor = current_actor()
    customer = catalog.get_customer(key)
    return _ledger_csv(
        lambda cursor: reads.list_ledger(actor, customer.key, cursor=cursor, limit=EXPORT_PAGE),
        f"{customer.key}-ledger.csv",
    )


def _day(name: str, *, end: bool = False) -> datetime | None:
    """A date box of a filter as a UTC time: the start of the day, or for the end of a range
    the start of the next day (the range takes the whole last day)."""
    text = request.args.get(name, "")
    if not text:
        return None
    try:
        day = date.fromisoformat(text[:10]) if len(text) == 10 else None
    except ValueError:
        day = None
    if day is None:
        raise ValidationError(f"`{name}` must be a date such as 2026-11-26.", field=name)
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    return start + timedelta(days=1) if end and day < date.max else start


def _ledger_filters() -> tuple[dict[str, str], dict[str, Any]]:
    """The /ledger filters from the URL: as typed (for the form and links) and for the service."""
    args = {
        name: request.args.get(name, "") for name in ("type", "system", "since", "until", "actor")
    }
    return args, {
        "entry_type": args["type"] or None,
        "credit_system": args["system"] or None,
        "since": _day("since"),
        "until": _day("until", end=True),
        "actor_label": args["actor"] or None,
    }


@bp.get("/ledger")
@requires(VIEW_LEDGER)
def ledger():
    args, filters = _ledger_filters()
    page = reads.list_all_ledger(
        current_actor(), **filters, cursor=request.args.get("cursor"), limit=50
    )
    next_url = (
        url_for("pages.ledger", **args, cursor=page.next_cursor) if page.next_cursor else None
    )
    return render_template(
        "ledger.html",
        ledger=page,
        args=args,
        types=LEDGER_TYPES,
        systems=catalog.list_credit_systems(current_actor()),
        next_url=next_url,
        csv_url=url_for("pages.export_all_ledger", **args),
    )


@bp.get("/ledger.csv")
@requires(VIEW_LEDGER)
def export_all_ledger():
    actor = current_actor()
    _, filters = _ledger_filters()
    return _ledger_csv(
        lambda cursor: reads.list_all_ledger(actor, **filters, cursor=cursor, limit=EXPORT_PAGE),
        "ledger.csv",
    )


@bp.get("/features")
@requires(VIEW)
def features():
    return render_template("features.html", features=dashboard.features(current_actor()))


@bp.get("/wallets")
@requires(VIEW)
def wallets():
    listing = dashboard.lowest_wallets(
        current_actor(),
        search=request.args.get("q", ""),
        credit_system=request.args.get("system") or None,
        page=_int_arg("page", 1),
        sort=request.args.get("sort") or "runway",
    )
    args = {
        "q": request.args.get("q", ""),
        "system": request.args.get("system", ""),
        "sort": listing.sort,
    }
    systems = catalog.list_credit_systems(current_actor())
    template = "wallets/_results.html" if target() == "results" else "wallets/index.html"
    return render_template(template, listing=listing, args=args, systems=systems)


@bp.get("/audit")
@requires(VIEW)
def audit():
    args = {
        "actor": request.args.get("actor", ""),
        "action": request.args.get("action", ""),
        "customer": request.args.get("customer", ""),
    }
    page = dashboard.audit_log(
        current_actor(),
        actor_label=args["actor"] or None,
        action=args["action"] or None,
        customer_key=args["customer"] or None,
        before=_int_arg("before", 0, high=MAX_ID) or None,
    )
    next_url = url_for("pages.audit", **args, before=page.next_before) if page.next_before else None
    return render_template("audit.html", page=page, args=args, next_url=next_url)


# ---------------------------------------------------------------- the finance roll-forward

REPORT_COLUMNS = (
    "opening",
    "issued",
    "issued_purchased",
    "issued_granted",
    "consumed",
    "consumed_purchased",
    "consumed_granted",
    "expired",
    "expired_purchased",
    "expired_granted",
    "voided",
    "adjusted",
    "corrected",
    "closing",
)
MONEY_COLUMNS = (
    "opening",
    "issued",
    "consumed",
    "expired",
    "voided",
    "adjusted",
    "corrected",
    "closing",
)


def _report_args() -> dict[str, str]:
    return {name: request.args.get(name, "").strip() for name in ("from", "to", "system")}


def _credit_report(args: dict[str, str]) -> reports.CreditReport:
    return reports.credit_report(
        current_actor(),
        month_from=args["from"] or None,
        month_to=args["to"] or None,
        credit_system=args["system"] or None,
    )


@bp.get("/reports/credits")
@requires(VIEW_LEDGER)
def credit_report():
    """The roll-forward per credit system and month; a bad month or system is named next to its
    box (422), with nothing else read."""
    args = _report_args()
    systems = catalog.list_credit_systems(current_actor())
    errors: dict[str, str] = {}
    report = None
    try:
        report = _credit_report(args)
    except (ValidationError, NotFound) as exc:
        field = {"credit_system": "system"}.get(exc.field or "", exc.field or "from")
        errors[field] = exc.message
    if report is not None and not args["from"]:
        args = {**args, "from": report.month_from, "to": report.month_to}
    return (
        render_template(
            "reports/credits.html",
            report=report,
            args=args,
            errors=errors,
            systems=systems,
            csv_url=url_for("pages.export_credit_report", **args),
        ),
        422 if errors else 200,
    )


@bp.get("/reports/credits.csv")
@requires(VIEW_LEDGER)
def export_credit_report():
    """One row per credit system, month (and the range's total) and unit: `credits`, then one
    per currency for the money value of priced purchased credits (whose split columns stay
    empty)."""
    args = _report_args()
    report = _credit_report(args)
    header = ["credit_system", "month", "unit", *REPORT_COLUMNS]
    rows: list[list[Any]] = []
    for system in report.systems:
        for period in [*system.months, system.total]:
            rows.append(
                [
                    system.credit_system,
                    period.month,
                    "credits",
                    *(format_micros(getattr(period, c)) for c in REPORT_COLUMNS),
                ]
            )
            for money in period.money:
                values = {c: reports.money_text(getattr(money, c)) for c in MONEY_COLUMNS}
                rows.append(
                    [
                        system.credit_system,
                        period.month,
                        money.currency,
                        *(values.get(c, "") for c in REPORT_COLUMNS),
                    ]
                )
    name = f"credits-{report.month_from}-{report.month_to}.csv"
    return _csv_response(_csv_stream(header, iter([rows])), name)
