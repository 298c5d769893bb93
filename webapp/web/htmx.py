"""One URL, two renderings: an HTMX request gets the fragment, others the full page."""

from __future__ import annotations

from flask import request


def is_htmx() -> bool:
    return request.headers.get("HX-Request") == "true" and not request.headers.get(
        "HX-History-Restore-Request"
    )


def target() -> str | None:
    return request.headers.get("HX-Target") if is_htmx() else None
