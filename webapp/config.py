"""Configuration: these defaults, then ``instance/config.py``, then ``WEBAPP_*`` environment
variables (``WEBAPP_SECRET_KEY=...`` sets ``SECRET_KEY``); ``DATABASE_URL`` picks the database."""

from __future__ import annotations

import json
import os
import time
from typing import Any

DEV_SECRET_KEY = "dev-only-insecure-secret-key"


class Defaults:
    SECRET_KEY = DEV_SECRET_KEY
    SQLALCHEMY_DATABASE_URI: str | None = None  # set from DATABASE_URL or instance/ in create_app
    SQLALCHEMY_ENGINE_OPTIONS: dict[str, Any] = {}
    SQLITE_BUSY_TIMEOUT_MS = 5000
    SQLITE_SYNCHRONOUS = "FULL"  # or NORMAL: faster commits, may lose the last ones on power loss
    MAX_CONTENT_LENGTH = 1024 * 1024
    WTF_CSRF_TIME_LIMIT = None  # token lives as long as the session
    SESSION_COOKIE_HTTPONLY = True
    # None: Secure unless debugging (decided in create_app); set False to serve plain http.
    SESSION_COOKIE_SECURE: bool | None = None
    REMEMBER_COOKIE_SECURE: bool | None = None
    SESSION_COOKIE_SAMESITE = "Lax"
    REMEMBER_COOKIE_HTTPONLY = True
    REMEMBER_COOKIE_SAMESITE = "Lax"
    RATELIMIT_ENABLED = True
    RATELIMIT_STORAGE_URI = "memory://"
    API_RATE_LIMIT = "6000 per minute"
    LOGIN_RATE_LIMIT = "10 per minute"  # per address, whatever the accounts
    LOGIN_PAIR_RATE_LIMIT = "20 per hour"  # per account (the submitted email) and address
    # Per account from every address: far above the pair limit, so that locking someone out
    # takes many addresses, not one persistent guesser.
    LOGIN_ACCOUNT_RATE_LIMIT = "500 per hour"
    SESSION_IDLE_MINUTES = 60  # a dashboard session ends after this long without a request
    SESSION_MAX_HOURS = 12  # and this long after signing in, whatever happens
    CLOCK = time.time  # seconds since the epoch; tests inject their own
    # Dashboard top-ups and adjustments above this many credits ask again, showing the balance
    # they lead to (checked on the server: a page that skips the question is refused).
    LARGE_AMOUNT_CONFIRM = 10_000
    BENCH_MODE = False
    PASSWORD_HASH_PROFILE = "RFC_9106_LOW_MEMORY"  # a name in argon2.profiles; tests: CHEAPEST
    PAGE_SIZE = 50
    # Webhooks and `flask worker` (docs/domain.md, "Webhooks").
    WEBHOOK_ALLOW_PRIVATE_TARGETS = False  # True: http and internal addresses (tests, local use)
    WEBHOOK_RETRY_BASE_SECONDS = 5  # first retry after 2.5-5 s, doubling, with jitter
    WEBHOOK_RETRY_MAX_SECONDS = 6 * 3600  # the longest wait between two attempts
    WEBHOOK_GIVE_UP_SECONDS = 3 * 86400  # then the delivery is failed
    WEBHOOK_LEASE_SECONDS = 60  # a claimed delivery is retried this long after its worker died
    WORKER_POLL_SECONDS = 1.0  # the worker's nap when nothing is due
    WORKER_BATCH = 50  # deliveries claimed per transaction
    WORKER_CONCURRENCY = 8  # HTTP calls in flight per worker
    OUTBOX_RETENTION_DAYS = 30  # delivered outbox events (and their deliveries) kept this long
    # Alerts (docs/domain.md, "Alerts"): the shares of a finite allowance that raise
    # usage.threshold_reached, and how many days ahead credits.expiring_soon warns.
    USAGE_ALERT_PERCENTAGES = (80, 100)
    CREDITS_EXPIRING_SOON_DAYS = 7


def env_overrides(environ: dict[str, str] | None = None) -> dict[str, Any]:
    """``WEBAPP_FOO=value`` -> ``{"FOO": value}``; JSON values (numbers, true/false) are decoded."""
    environ = dict(os.environ if environ is None else environ)
    out: dict[str, Any] = {}
    for name, raw in environ.items():
        if not name.startswith("WEBAPP_") or name == "WEBAPP_PASSWORD":
            continue
        try:
            value: Any = json.loads(raw)
        except ValueError:
            value = raw
        out[name.removeprefix("WEBAPP_")] = value
    if environ.get("DATABASE_URL"):
        out["SQLALCHEMY_DATABASE_URI"] = normalise_database_url(environ["DATABASE_URL"])
    return out


def normalise_database_url(url: str) -> str:
    """Accept the usual ``postgres://`` / ``postgresql://`` spellings and use psycopg 3."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url
