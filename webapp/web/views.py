"""A first, read-only page; the dashboard issue builds the real pages."""

from __future__ import annotations

from flask import Blueprint, render_template_string

from ..services import reads
from ..services.actors import SYSTEM

bp = Blueprint("web", __name__)


@bp.get("/")
def index() -> str:
    page = reads.list_customers(SYSTEM, limit=50)
    return render_template_string(
        "<!doctype html><title>Metering</title><h1>Customers</h1><ul>"
        "{% for c in customers %}<li>{{ c.key }} · {{ c.name }}</li>{% endfor %}</ul>",
        customers=page.items,
    )
