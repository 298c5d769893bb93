"""Usage metering, entitlements and prepaid credit wallets: the Flask application factory."""

from __future__ import annotations

import os
from typing import Any

from flask import Flask

from .config import DEV_SECRET_KEY, Defaults, env_overrides


def create_app(test_config: dict[str, Any] | None = None) -> Flask:
    app = Flask(
        __name__,
        instance_relative_config=True,
        # instance/ beside the checkout unless WEBAPP_INSTANCE_PATH says where (tests, deployments)
        instance_path=os.environ.get("WEBAPP_INSTANCE_PATH") or None,
        template_folder=os.path.join(os.path.dirname(__file__), "..", "templates"),
        static_folder=os.path.join(os.path.dirname(__file__), "..", "static"),
    )
    app.config.from_object(Defaults)
    app.config.from_pyfile("config.py", silent=True)
    app.config.update(env_overrides())
    if test_config is not None:
        app.config.update(test_config)
    os.makedirs(app.instance_path, exist_ok=True)
    if not app.config.get("SQLALCHEMY_DATABASE_URI"):
        app.config["SQLALCHEMY_DATABASE_URI"] = "sqlite:///" + os.path.join(
            app.instance_path, "webapp.sqlite3"
        )
    _check_secret_key(app)
    _check_alert_settings(app)

    from .db_setup import configure_engine, engine_options, remove_sessions_safely

    uri = app.config["SQLALCHEMY_DATABASE_URI"]
    app.config["SQLALCHEMY_ENGINE_OPTIONS"] = {
        **engine_options(uri, app.config["SQLITE_BUSY_TIMEOUT_MS"]),
        **app.config.get("SQLALCHEMY_ENGINE_OPTIONS", {}),
    }

    from .extensions import csrf, db, limiter, login_manager, migrate

    db.init_app(app)
    migrate.init_app(app, db, directory=os.path.join(os.path.dirname(__file__), "migrations"))
    login_manager.init_app(app)
    csrf.init_app(app)
    limiter.init_app(app)
    with app.app_context():
        configure_engine(
            db.engine, app.config["SQLITE_BUSY_TIMEOUT_MS"], app.config["SQLITE_SYNCHRONOUS"]
        )
    remove_sessions_safely(app, db)

    from . import cli, edge, errorhandlers

    cli.register(app)
    errorhandlers.register(app)
    edge.register(app)
    _register_blueprints(app)
    return app


def _check_alert_settings(app: Flask) -> None:
    """A bad alert setting stops the app at start, not the first RecordUsage that crosses."""
    from .services.alerts import parse_percentages

    raw = app.config.get("USAGE_ALERT_PERCENTAGES")
    try:
        parse_percentages(tuple(raw) if isinstance(raw, list) else raw)
        days = app.config.get("CREDITS_EXPIRING_SOON_DAYS")
        if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= 3650:
            raise ValueError(f"CREDITS_EXPIRING_SOON_DAYS must be 1 to 3650 days: {days!r}")
    except (ValueError, TypeError) as exc:
        raise RuntimeError(str(exc)) from None


def _check_secret_key(app: Flask) -> None:
    key = app.config.get("SECRET_KEY")
    if app.debug or app.testing or app.config.get("ALLOW_DEV_SECRET_KEY"):
        return
    if not key or key == DEV_SECRET_KEY or len(str(key)) < 32:
        raise RuntimeError(
            "SECRET_KEY is missing or the development default: set WEBAPP_SECRET_KEY or "
            "SECRET_KEY in instance/config.py to a random string of at least 32 characters "
            "(python -c 'import secrets; print(secrets.token_hex(32))')."
        )


def _register_blueprints(app: Flask) -> None:
    from .web import register as register_web

    register_web(app)
    from .metrifox import register as register_metrifox

    register_metrifox(app)
    try:
        from .api import register as register_api
    except ImportError:  # pragma: no cover - the API package lands in its own change
        return
    register_api(app)
    if app.config.get("BENCH_MODE"):
        from .bench import register as register_bench

        register_bench(app)
