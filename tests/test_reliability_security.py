"""Security, door by door: a role x route matrix of the JSON API and the Metrifox door generated
from the URL map (every role's API key and no key), cookies never authenticating them (so there is
nothing for CSRF to forge), security headers on every response, API keys stored only as hashes and
revoked at once, sessions, redirects and sign-in limits, SECRET_KEY enforcement in real processes,
and no SQL built from strings anywhere in webapp/."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from flask import Flask
from sqlalchemy import select

from tests.api_support import C, row_counts
from tests.conftest import TEST_CONFIG
from tests.factories import make_catalog
from tests.test_web_roles import _url, html_routes
from tests.web import PASSWORD, ROLES, forget_user_between_requests, login, make_user
from webapp import create_app
from webapp.extensions import db
from webapp.models import ApiKey
from webapp.services import auth
from webapp.services.actors import (
    ADMIN,
    MANAGE_WALLETS,
    PERMISSIONS,
    RECORD_USAGE,
    SYSTEM,
    VIEW,
    VIEW_LEDGER,
)

ROOT = Path(__file__).resolve().parent.parent
PUBLIC = "public"
TOKEN_PREFIXES = ("/api/", "/metrifox/")

# Who may use each token-authenticated route. A new route missing here fails the matrix.
EXPECTED: dict[str, str] = {
    "api.openapi_json": PUBLIC,
    "api_docs.api_docs": PUBLIC,
    "api.list_customers": VIEW,
    "api.get_customer": VIEW,
    "api.list_events": VIEW,
    "api.list_ledger": VIEW,
    "api.list_wallets": VIEW,
    "api.get_grant": VIEW,
    "api.list_features": VIEW,
    "api.check_entitlement": VIEW,
    "api.record_usage": RECORD_USAGE,
    "api.record_usage_batch": RECORD_USAGE,
    "api.correct_usage": RECORD_USAGE,
    "api.topup_wallet": MANAGE_WALLETS,
    "api.adjust_wallet": MANAGE_WALLETS,
    "api.void_grant": MANAGE_WALLETS,
    "api.create_customer": ADMIN,
    "api.set_entitlement": ADMIN,
    "api.update_entitlement": ADMIN,
    "api.create_feature": ADMIN,
    "api.set_credit_cost": ADMIN,
    "api.create_credit_system": ADMIN,
    "api.create_webhook_endpoint": ADMIN,
    "api.list_webhook_endpoints": ADMIN,
    "api.get_webhook_endpoint": ADMIN,
    "api.update_webhook_endpoint": ADMIN,
    "api.disable_webhook_endpoint": ADMIN,
    "api.rotate_webhook_secret": ADMIN,
    "api.send_webhook_test_event": ADMIN,
    "api.list_webhook_deliveries": ADMIN,
    "api.get_webhook_delivery": ADMIN,
    "api.resend_webhook_delivery": ADMIN,
    "api.remove_entitlement": ADMIN,
    "api.list_plans": VIEW,
    "api.get_plan": VIEW,
    "api.create_plan": ADMIN,
    "api.update_plan": ADMIN,
    "api.preview_plan": ADMIN,
    "api.set_customer_plan": ADMIN,
    "api.credit_report": VIEW_LEDGER,
    "metrifox_meter.record_usage": RECORD_USAGE,
    "metrifox_meter.adjust_usage": RECORD_USAGE,
    "metrifox_meter.check_access": VIEW,
    "metrifox_meter.list_events": VIEW,
    "metrifox_meter.unknown": VIEW,
    "metrifox_api.list_customers": VIEW,
    "metrifox_api.get_customer": VIEW,
    "metrifox_api.customer_details": VIEW,
    "metrifox_api.list_wallets": VIEW,
    "metrifox_api.wallet_credit_allocations": VIEW,
    "metrifox_api.credit_allocation": VIEW,
    "metrifox_api.create_customer": ADMIN,
    "metrifox_api.update_customer": ADMIN,
    "metrifox_api.delete_customer": ADMIN,
    "metrifox_api.archive_customer": ADMIN,
    "metrifox_api.unarchive_customer": ADMIN,
    "metrifox_api.bulk_create": ADMIN,
    # What the product does not do answers 501 (or 404) to any valid key, 401 to none.
    "metrifox_api.unknown": VIEW,
    "metrifox_api.checkout": VIEW,
    "metrifox_api.checkout_url": VIEW,
    "metrifox_api.subscriptions": VIEW,
    "metrifox_api.quantity_price": VIEW,
    "metrifox_api.active_subscription": VIEW,
    "metrifox_api.csv_upload": VIEW,
    "api.list_outbox_events": ADMIN,
}

IDS = {
    "key": C,
    "feature_key": "api_calls",
    "system_key": "credits",
    "rest": "x",
    "wallet_id": "1",
    "allocation_id": "1",
    "grant_id": "1",  # make_catalog's topup
    "entry_id": "1",  # its ledger entry
    "endpoint_id": "1",
    "delivery_id": "1",
    "plan_key": "starter",
    "event_id": "e-matrix",
}


def _request(endpoint: str, role: str) -> tuple[dict | None, str]:
    """A valid body (or query) for ``endpoint``, so that only the role can make it fail."""
    usage = {"customer_key": C, "feature_key": "api_calls", "amount": 1}
    tag = role.replace("_", "-")
    bodies = {
        "api.record_usage": usage,
        "api.record_usage_batch": {"events": [usage]},
        "api.topup_wallet": {"customer_key": C, "credit_system": "credits", "amount": "1"},
        "api.adjust_wallet": {
            "customer_key": C,
            "credit_system": "credits",
            "amount": "1",
            "reason": "matrix",
        },
        "api.void_grant": {"reason": "matrix"},
        "api.correct_usage": {"actual_amount": 1, "reason": "matrix"},
        "api.create_customer": {"key": f"cust-{tag}", "name": "New"},
        "api.set_entitlement": {"allowance": 1000, "reset_period": "month", "overage": "block"},
        "api.update_entitlement": {"allowance": 1000},
        "api.create_feature": {
            "key": f"f-{tag}",
            "name": "F",
            "type": "consumable",
            "event_name": f"f.{tag}",
        },
        "api.set_credit_cost": {"credit_system": "credits", "cost": "0.02"},
        "api.create_credit_system": {"key": f"cs-{tag}", "name": "Tokens"},
        "api.create_webhook_endpoint": {"url": f"https://hooks.example.com/{tag}"},
        "api.update_webhook_endpoint": {"description": "matrix"},
        "api.create_plan": {"key": f"plan-{tag}", "name": "P"},
        "api.update_plan": {"name": "Renamed"},
        "api.preview_plan": {"entitlements": []},
        "api.set_customer_plan": {"plan": None},
        "metrifox_meter.record_usage": {
            "customer_key": C,
            "feature_key": "api_calls",
            "quantity": 1,
        },
        "metrifox_meter.adjust_usage": {"customer_key": C, "event_id": "e-matrix"},
        "metrifox_api.create_customer": {"customer_key": f"mf-{tag}", "display_name": "M"},
        "metrifox_api.update_customer": {"display_name": "Renamed"},
        "metrifox_api.bulk_create": {"customers": [{"customer_key": f"bulk-{tag}"}]},
    }
    queries = {
        "api.check_entitlement": f"customer_key={C}&feature_key=api_calls",
        "metrifox_meter.check_access": f"customer_key={C}&feature_key=api_calls",
        "metrifox_api.list_wallets": f"customer_key={C}",
    }
    return bodies.get(endpoint), queries.get(endpoint, "")


def token_routes(app: Flask) -> list[tuple[str, str, str]]:
    routes = []
    for rule in app.url_map.iter_rules():
        if rule.rule.startswith(TOKEN_PREFIXES):
            for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
                routes.append((rule.endpoint, method, rule.rule))
    # Deleting the customer last: the other routes need it.
    return sorted(routes, key=lambda r: (r[0] == "metrifox_api.delete_customer", r))


def test_every_api_and_metrifox_route_has_an_expectation(app):
    endpoints = {endpoint for endpoint, _, _ in token_routes(app)}
    assert endpoints - EXPECTED.keys() == set(), "add the new routes to EXPECTED"
    assert EXPECTED.keys() - endpoints == set(), "EXPECTED names routes that no longer exist"


def _is_forbidden(response) -> bool:
    return response.status_code == 403 and response.get_json()["error"]["code"] == "forbidden"


@pytest.mark.parametrize("role", ["no key", *ROLES])
def test_api_and_metrifox_role_route_matrix(client, catalog, role):
    secret = None if role == "no key" else auth.create_api_key(SYSTEM, name=role, role=role).secret
    headers = {} if secret is None else {"Authorization": f"Bearer {secret}", "x-api-key": secret}
    allowed = PERMISSIONS.get(role, frozenset())
    failures = []
    for endpoint, method, rule in token_routes(client.application):
        need = EXPECTED[endpoint]
        body, query = _request(endpoint, role)
        url = _url(rule, IDS) + (f"?{query}" if query else "")
        before = row_counts()
        response = client.open(url, method=method, json=body, headers=headers)
        status = response.status_code
        assert response.mimetype in ("application/json", "text/html"), (url, response.mimetype)
        if need == PUBLIC:
            ok = status == 200
        elif secret is None:
            ok = status == 401 and response.get_json()["error"]["code"] == "unauthorized"
        elif need in allowed:
            ok = (status < 500 or status == 501) and status != 401
            ok = ok and not _is_forbidden(response)
        else:
            ok = _is_forbidden(response) and row_counts() == before
        if status >= 500 and status != 501:
            ok = False
        if not ok:
            failures.append(f"{method} {url} as {role}: {status} (needs {need})")
    assert not failures, "\n".join(failures)


def test_a_signed_in_dashboard_cookie_never_authenticates_the_api_or_metrifox(database_url):
    """The API and the Metrifox door are exempt from CSRF because no cookie authenticates them:
    every route answers 401 to a signed-in admin's browser (CSRF on) and writes nothing."""
    app = create_app(
        {**TEST_CONFIG, "WTF_CSRF_ENABLED": True, "SQLALCHEMY_DATABASE_URI": database_url}
    )
    with app.app_context():
        make_catalog()
        make_user("admin", "admin@example.com")
        client = app.test_client()
        from tests.web import csrf_from

        token = csrf_from(client.get("/login").get_data(as_text=True))
        response = client.post(
            "/login",
            data={"email": "admin@example.com", "password": PASSWORD, "csrf_token": token},
        )
        assert response.status_code == 303
        before = row_counts()
        checked = 0
        for endpoint, method, rule in token_routes(app):
            if EXPECTED[endpoint] == PUBLIC:
                continue
            body, query = _request(endpoint, "admin")
            url = _url(rule, IDS) + (f"?{query}" if query else "")
            response = client.open(url, method=method, json=body, headers={"X-CSRFToken": token})
            assert response.status_code == 401, (method, url, response.status_code)
            checked += 1
        assert checked > 40
        assert row_counts() == before
        db.session.remove()
        db.engine.dispose()


# ---------------------------------------------------------------- security headers

HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}


def _check_headers(response, where: str, failures: list[str]) -> None:
    for name, value in HEADERS.items():
        if response.headers.get(name) != value:
            failures.append(f"{where}: {name}={response.headers.get(name)!r}")
    if "frame-ancestors 'none'" not in response.headers.get("Content-Security-Policy", ""):
        failures.append(f"{where}: no Content-Security-Policy")


def test_security_headers_on_every_route_and_every_error(app, client, catalog):
    forget_user_between_requests(app)
    secret = auth.create_api_key(SYSTEM, name="h", role="admin").secret
    victim = make_user("support", "victim@example.com")
    key_id = db.session.scalar(select(ApiKey.id).limit(1))
    failures: list[str] = []
    headers = {"Authorization": f"Bearer {secret}", "x-api-key": secret}
    for endpoint, method, rule in token_routes(app):
        body, query = _request(endpoint, "admin")
        url = _url(rule, IDS) + (f"?{query}" if query else "")
        for sent in (headers, {}):
            response = client.open(url, method=method, json=body, headers=sent)
            _check_headers(response, f"{method} {url} {response.status_code}", failures)
    ids = {
        "key": C,
        "feature_key": "api_calls",
        "system_key": "credits",
        "user_id": victim.id,
        "key_id": key_id,
        "filename": "css/app.css",
        "grant_id": IDS["grant_id"],
        "entry_id": IDS["entry_id"],
        "endpoint_id": IDS["endpoint_id"],
        "delivery_id": IDS["delivery_id"],
        "plan_key": IDS["plan_key"],
        "event_id": IDS["event_id"],
    }
    for signed_in in (False, True):
        if signed_in:
            make_user("admin", "admin@example.com")
            assert login(client, "admin@example.com").status_code == 303
        for endpoint, method, rule in html_routes(app):
            if endpoint in ("auth.logout", "auth.logout_everywhere"):
                continue
            response = client.open(_url(rule, ids), method=method, data={})
            _check_headers(response, f"{method} {rule} {response.status_code}", failures)
    for url in ("/nope", "/api/v1/nope", "/metrifox/meter/nope", "/static/nope.css"):
        response = client.get(url, headers=headers)
        _check_headers(response, f"GET {url} {response.status_code}", failures)
    response = client.delete("/api/v1/usage", headers=headers)  # 405
    _check_headers(response, "DELETE /api/v1/usage", failures)
    assert not failures, "\n".join(failures)


# ---------------------------------------------------------------- API keys


def test_api_keys_are_stored_only_as_hashes_and_compared_in_constant_time(client, catalog):
    new = auth.create_api_key(SYSTEM, name="stored", role="support")
    db.session.commit()
    row = db.session.get(ApiKey, new.key.id)
    columns = {attr.key: getattr(row, attr.key) for attr in ApiKey.__mapper__.column_attrs}
    for name, value in columns.items():
        assert new.secret not in str(value), f"the secret is readable in api_keys.{name}"
    assert any(len(str(v)) == 64 for v in columns.values())  # its SHA-256
    source = Path(auth.__file__).read_text()
    fn = source[source.index("def authenticate_api_key") :]
    fn = fn[: fn.index("\ndef ")]
    assert "hmac.compare_digest(" in fn and "==" not in fn.replace("ApiKey.key_hash ==", "")
    headers = {"Authorization": f"Bearer {new.secret}"}
    assert client.get("/api/v1/features", headers=headers).status_code == 200


def test_revocation_takes_effect_at_the_next_request_on_every_door(client, catalog):
    new = auth.create_api_key(SYSTEM, name="soon revoked", role="admin")
    headers = {"Authorization": f"Bearer {new.secret}", "x-api-key": new.secret}
    assert client.get("/api/v1/features", headers=headers).status_code == 200
    assert client.get(f"/metrifox/api/v1/customers/{C}", headers=headers).status_code == 200
    auth.revoke_api_key(SYSTEM, new.key.id)
    for url in (
        "/api/v1/features",
        f"/metrifox/api/v1/customers/{C}",
        "/metrifox/meter/usage/events",
    ):
        response = client.get(url, headers=headers)
        assert response.status_code == 401, url


# ---------------------------------------------------------------- sessions and sign-in


@pytest.fixture
def fresh(app):
    forget_user_between_requests(app)
    return app


def test_sign_out_ends_this_session_and_every_copy_of_its_cookie(fresh):
    make_user("admin", "ann@example.com")
    browser = fresh.test_client()
    login(browser, "ann@example.com")
    assert browser.get("/admin/users").status_code == 200
    stolen = fresh.test_client()
    stolen.set_cookie("session", browser.get_cookie("session").value)
    assert stolen.get("/admin/users").status_code == 200  # a copy of the cookie works...
    assert browser.post("/logout").status_code == 303
    assert browser.get("/admin/users").status_code == 302
    assert stolen.get("/admin/users").status_code == 302  # ...until the user signs out


def test_a_role_change_from_the_admin_page_ends_every_copy_of_the_users_session(fresh):
    user = make_user("admin", "ann@example.com")
    laptop, phone = fresh.test_client(), fresh.test_client()
    login(laptop, "ann@example.com")
    login(phone, "ann@example.com")
    boss = fresh.test_client()
    make_user("admin", "boss@example.com")
    login(boss, "boss@example.com")
    response = boss.post(f"/admin/users/{user.id}/role", data={"role": "support"})
    assert response.status_code in (200, 303), response.status_code
    for browser in (laptop, phone):
        assert browser.get("/admin/users").status_code == 302  # signed out, not just demoted


def test_an_admin_password_reset_ends_every_session_of_the_user(fresh):
    user = make_user("finance", "fin@example.com")
    laptop = fresh.test_client()
    login(laptop, "fin@example.com")
    assert laptop.get("/").status_code == 200
    auth.set_password(SYSTEM, user.id, "another long password")
    assert laptop.get("/").status_code == 302


@pytest.mark.parametrize(
    "next_url",
    [
        "//evil.example",
        "///evil.example",
        "/\\evil.example",
        "\\\\evil.example",
        "https:evil.example",
        "http://evil.example",
        " //evil.example",
        "\t//evil.example",
        "/\t/evil.example",
        "%2F%2Fevil.example",
        "javascript://%0aalert(1)",
        "data:text/html,x",
        "/%0d%0aSet-Cookie:x=1",
    ],
)
def test_no_open_redirect_through_next(fresh, next_url):
    make_user("support", "sue@example.com")
    client = fresh.test_client()
    response = client.post(
        "/login",
        query_string={"next": next_url},
        data={"email": "sue@example.com", "password": PASSWORD},
    )
    location = response.headers["Location"]
    assert location.startswith("/") and not location.startswith(("//", "/\\")), location
    assert "evil" not in location.split("?")[0].lstrip("/").split("/")[0] or location == "/"
    assert "\r" not in location and "\n" not in location
    # Signed in, the login page redirects at once: the same rule applies.
    again = client.get("/login", query_string={"next": next_url})
    assert not again.headers["Location"].startswith(("//", "/\\", "http", "javascript", "data"))


def test_sign_in_is_rate_limited_per_account_from_any_address(database_url):
    app = create_app(
        {
            **TEST_CONFIG,
            "SQLALCHEMY_DATABASE_URI": database_url,
            "RATELIMIT_ENABLED": True,
            "LOGIN_RATE_LIMIT": "100 per minute",
            "LOGIN_ACCOUNT_RATE_LIMIT": "3 per hour",
        }
    )
    with app.app_context():
        make_user("admin", "target@example.com")
        client = app.test_client()

        def attempt(n: int, email: str = "target@example.com", password: str = "guess"):
            return client.post(
                "/login",
                data={"email": email, "password": password},
                environ_base={"REMOTE_ADDR": f"10.0.{n // 250}.{n % 250 + 1}"},
            ).status_code

        assert [attempt(n) for n in range(3)] == [422, 422, 422]
        # A fourth address, even with the right password: the account is resting.
        assert attempt(3, password=PASSWORD) == 429
        assert attempt(4, email=" TARGET@example.com ") == 429  # same account, other spelling
        assert attempt(5, email="someone-else@example.com") == 422  # other accounts are not
        db.session.remove()
        db.engine.dispose()


# ---------------------------------------------------------------- SECRET_KEY in real processes
# (marked slow: each starts flask or gunicorn, about a second of CPU apiece)


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WEBAPP_", "FLASK_"))}
    env.update(extra)
    return env


@pytest.mark.slow
@pytest.mark.parametrize(
    "secret",
    [None, "dev-only-insecure-secret-key", "too-short"],
    ids=["missing", "default", "short"],
)
def test_flask_and_gunicorn_refuse_to_start_without_a_real_secret_key(tmp_path, secret):
    url = f"sqlite:///{tmp_path / 'x.sqlite3'}"
    # Not the checkout's instance/, where `make run` keeps a real key in config.py.
    extra = {"DATABASE_URL": url, "WEBAPP_INSTANCE_PATH": str(tmp_path / "instance")}
    if secret is not None:
        extra["WEBAPP_SECRET_KEY"] = secret
    bin_dir = Path(sys.executable).parent
    flask = subprocess.run(
        [str(bin_dir / "flask"), "--app", "webapp", "db", "upgrade"],
        cwd=tmp_path,
        env=_env(**extra),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert flask.returncode != 0
    assert "SECRET_KEY is missing or the development default" in flask.stderr + flask.stdout
    gunicorn = subprocess.run(
        [
            str(bin_dir / "gunicorn"),
            "webapp:create_app()",
            "-b",
            "127.0.0.1:0",
            "--no-control-socket",
            "-w",
            "1",
        ],
        cwd=ROOT,
        env=_env(**extra),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert gunicorn.returncode != 0
    assert "SECRET_KEY is missing or the development default" in gunicorn.stderr


def test_the_instance_folder_can_be_moved(tmp_path, monkeypatch):
    """WEBAPP_INSTANCE_PATH moves instance/ (its config.py and the default SQLite file), so that
    `make test` after `make run` in one checkout never reads the demo's config (a real key)."""
    (tmp_path / "config.py").write_text("LARGE_AMOUNT_CONFIRM = 7\n")
    monkeypatch.setenv("WEBAPP_INSTANCE_PATH", str(tmp_path))
    app = create_app({"SECRET_KEY": "k" * 40})
    assert app.instance_path == str(tmp_path)
    assert app.config["LARGE_AMOUNT_CONFIRM"] == 7
    assert app.config["SQLALCHEMY_DATABASE_URI"] == f"sqlite:///{tmp_path / 'webapp.sqlite3'}"


@pytest.mark.slow
def test_a_real_secret_key_or_debug_mode_lets_the_app_start(tmp_path):
    url = f"sqlite:///{tmp_path / 'x.sqlite3'}"
    bin_dir = Path(sys.executable).parent
    for extra in (
        {"WEBAPP_SECRET_KEY": "k" * 40},
        {"FLASK_DEBUG": "1"},
    ):
        done = subprocess.run(
            [str(bin_dir / "flask"), "--app", "webapp", "db", "upgrade"],
            cwd=tmp_path,
            env=_env(DATABASE_URL=url, WEBAPP_INSTANCE_PATH=str(tmp_path / "instance"), **extra),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr


@pytest.mark.slow
@pytest.mark.parametrize(
    ("line", "starts"),
    [(f"SECRET_KEY = {'i' * 40!r}", True), ("SECRET_KEY = 'dev-only-insecure-secret-key'", False)],
    ids=["real", "default"],
)
def test_a_key_in_instance_config_is_read_and_checked(tmp_path, line, starts):
    """The key may live in instance/config.py (as `make run` writes it); it is checked too."""
    instance = tmp_path / "instance"
    instance.mkdir()
    (instance / "config.py").write_text(line + "\n")
    code = (
        "import flask; "
        f"flask.Flask.auto_find_instance_path = lambda self: {str(instance)!r}; "
        "from webapp import create_app; create_app(); print('started')"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=_env(DATABASE_URL=f"sqlite:///{tmp_path / 'x.sqlite3'}"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ("started" in done.stdout) is starts, done.stderr[-500:]
    if not starts:
        assert "SECRET_KEY is missing or the development default" in done.stderr


# ---------------------------------------------------------------- no SQL from strings

# Every SQL statement written as text in webapp/, reviewed: constants only, no value pasted in.
REVIEWED_SQL = {
    ("webapp/db_setup.py", "PRAGMA journal_mode=WAL"),
    ("webapp/db_setup.py", "PRAGMA foreign_keys=ON"),
    # SQLITE_SYNCHRONOUS configuration, checked against a closed list of levels first.
    ("webapp/db_setup.py", "f-string: PRAGMA synchronous={synchronous}"),
    ("webapp/db_setup.py", "BEGIN IMMEDIATE"),
    ("webapp/db_setup.py", "BEGIN"),
    # The busy timeout is int()-converted configuration, never request input.
    ("webapp/db_setup.py", "f-string: PRAGMA busy_timeout={int(busy_timeout_ms)}"),
    ("webapp/services/demo.py", "SELECT id FROM credit_systems WHERE key = 'credits'"),
    # Table names from the constant _TABLES of demo.py, never input.
    (
        "webapp/services/demo.py",
        "f-string: SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
        "COALESCE((SELECT MAX(id) FROM {table}), 1))",
    ),
    # Table and column names from the SQLAlchemy Table (the model), rows go through COPY.
    ("webapp/services/bulk.py", 'f-string: COPY "{table.name}" ({quoted}) FROM STDIN'),
    # Table and column names from the SQLAlchemy Table, values as driver placeholders.
    (
        "webapp/services/bulk.py",
        "f-string: ''INSERT INTO \"{table.name}\" ({quoted}) VALUES "
        "({', '.join((placeholder for _ in names))})''",
    ),
    # Constant statements, no input at all.
    ("webapp/bench.py", "BEGIN IMMEDIATE"),
    ("webapp/services/demo.py", "ANALYZE"),
    ("webapp/services/usage/store.py", "SELECT coalesce(max(id), 0) FROM usage_events"),
    # A bound parameter, no formatting.
    (
        "webapp/services/usage/store.py",
        "SELECT nextval(pg_get_serial_sequence('usage_events', 'id')) FROM generate_series(1, :n)",
    ),
}
SQL_WORDS = re.compile(
    r"^\s*(SELECT|INSERT|UPDATE|DELETE|PRAGMA|BEGIN|CREATE|DROP|ALTER|TRUNCATE|COPY|WITH|SET|"
    r"LOCK|VACUUM|ANALYZE)\b",
    re.I,
)
SQL_CALLS = {"text", "exec_driver_sql", "execute", "executescript", "executemany", "literal_column"}


def _sql_literals(path: Path) -> list[str]:
    """Every string handed to a SQL-running call, and every string that reads like SQL."""
    tree = ast.parse(path.read_text())
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            name = getattr(node.func, "attr", None) or getattr(node.func, "id", None)
            if name in SQL_CALLS and node.args:
                arg = node.args[0]
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                    found.append(arg.value)
                elif isinstance(arg, ast.JoinedStr):
                    found.append("f-string: " + ast.unparse(arg)[2:-1])
                elif isinstance(arg, ast.BinOp | ast.Call) and name in ("text", "exec_driver_sql"):
                    found.append("built: " + ast.unparse(arg))
                elif isinstance(arg, ast.IfExp):
                    for branch in (arg.body, arg.orelse):
                        if isinstance(branch, ast.Constant):
                            found.append(branch.value)
                        else:
                            found.append("built: " + ast.unparse(branch))
        elif isinstance(node, ast.JoinedStr):
            text = "".join(v.value for v in node.values if isinstance(v, ast.Constant))
            if SQL_WORDS.match(text) and " " in text.strip():
                found.append("f-string: " + ast.unparse(node)[2:-1])
    return found


def test_no_sql_is_built_from_strings_in_webapp():
    seen = set()
    for path in sorted((ROOT / "webapp").rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        if rel.startswith("webapp/migrations/"):
            continue  # Alembic's generated DDL, run by `flask db upgrade` only
        for statement in _sql_literals(path):
            if not SQL_WORDS.match(statement.removeprefix("f-string: ").removeprefix("built: ")):
                if not statement.startswith(("f-string: ", "built: ")):
                    continue  # a string that is not SQL handed to e.g. dict.execute-alikes
            seen.add((rel, statement))
    unreviewed = seen - REVIEWED_SQL
    assert not unreviewed, f"SQL written as text, not reviewed: {sorted(unreviewed)}"
    assert REVIEWED_SQL - seen == set(), "REVIEWED_SQL lists statements that are gone"


def test_the_sql_scan_finds_what_it_must():
    """The scanner itself: it catches f-strings and concatenation into text()/exec_driver_sql."""
    sample = ROOT / "tests" / "artifacts" / "sql_scan_sample.py"
    sample.parent.mkdir(exist_ok=True)
    sample.write_text(
        "from sqlalchemy import text\n"
        "def bad(conn, name):\n"
        "    conn.execute(text(f\"SELECT * FROM users WHERE email = '{name}'\"))\n"
        "    conn.exec_driver_sql('DELETE FROM t WHERE id = ' + name)\n"
        "    q = f'UPDATE wallets SET balance = {name}'\n"
    )
    found = _sql_literals(sample)
    assert any("SELECT * FROM users" in s for s in found)
    assert any(s.startswith("built: 'DELETE FROM t") for s in found)
    assert any("UPDATE wallets" in s for s in found)
