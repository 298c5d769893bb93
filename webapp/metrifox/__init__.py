"""A Metrifox-compatible door: the official Metrifox SDK, pointed at this server with two base
URLs, keeps working. An HTTP adapter over the service layer; no rule lives here.

- ``base_url``               -> ``/metrifox/api/v1/`` (customers, wallets, credit allocations;
  501 for the rest)
- ``meter_service_base_url`` -> ``/metrifox/meter/`` (usage events, access checks)
"""

from __future__ import annotations

from flask import Flask

API_PREFIX = "/metrifox/api/v1"
METER_PREFIX = "/metrifox/meter"


def register(app: Flask) -> None:
    from ..extensions import csrf
    from .api import bp as api_bp
    from .meter import bp as meter_bp

    for bp, prefix in ((api_bp, API_PREFIX), (meter_bp, METER_PREFIX)):
        csrf.exempt(bp)
        app.register_blueprint(bp, url_prefix=prefix)
