"""Helpers for the API tests: API keys per role, and a client that checks every response it gets
against the OpenAPI document (documented status, documented body schema)."""

from __future__ import annotations

import json
import re
from functools import cache
from typing import Any

import jsonschema_rs
from flask.testing import FlaskClient
from sqlalchemy import func, select

from webapp.api.openapi import openapi_document
from webapp.extensions import db
from webapp.models import (
    AuditLog,
    CreditAllocation,
    CreditGrant,
    LedgerEntry,
    UsageCounter,
    UsageEvent,
    Wallet,
)
from webapp.services import auth
from webapp.services.actors import SYSTEM

C = "cust-6d11ca90"
DIALECT = "https://json-schema.org/draft/2020-12/schema"


@cache
def document() -> dict[str, Any]:
    return openapi_document()


@cache
def _routes() -> list[tuple[re.Pattern[str], str]]:
    routes = []
    for path in document()["paths"]:
        pattern = re.sub(r"\{[^}]+\}", "[^/]+", path)
        routes.append((re.compile(f"^{pattern}$"), path))
    return routes


def template_of(path: str) -> str | None:
    for pattern, template in _routes():
        if pattern.match(path):
            return template
    return None


@cache
def validator(schema_json: str):
    schema = json.loads(schema_json)
    return jsonschema_rs.validator_for(
        {"$schema": DIALECT, **schema, "components": document()["components"]}
    )


def check_response(method: str, path: str, status: int, body: Any, headers: Any = None) -> None:
    """Fail unless ``status`` is documented for the operation and ``body`` fits its schema."""
    path = path.split("?", 1)[0]
    template = template_of(path)
    assert template is not None, f"{path} is not in the OpenAPI document"
    operation = document()["paths"][template].get(method.lower())
    if operation is None:
        assert status == 405, f"{method} {path} answered {status} but is not documented"
        return
    responses = operation["responses"]
    assert str(status) in responses, f"{method} {template}: status {status} is not documented"
    schema = responses[str(status)]["content"]["application/json"]["schema"]
    errors = list(validator(json.dumps(schema, sort_keys=True)).iter_errors(body))
    assert not errors, f"{method} {template} {status}: {[e.message for e in errors]} in {body}"


class Api:
    """A test client that sends an API key and validates every response against the document."""

    def __init__(self, client: FlaskClient, secret: str | None) -> None:
        self.client = client
        self.secret = secret

    def headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        out = {} if self.secret is None else {"Authorization": f"Bearer {self.secret}"}
        return out | (extra or {})

    def request(self, method: str, path: str, *, json_body: Any = None, **kwargs: Any):
        headers = self.headers(kwargs.pop("headers", None))
        if json_body is not None:
            kwargs["data"] = json.dumps(json_body)
            kwargs.setdefault("content_type", "application/json")
        response = self.client.open(path, method=method, headers=headers, **kwargs)
        if response.mimetype == "application/json":
            check_response(method, path, response.status_code, response.get_json())
        return response

    def get(self, path: str, **kwargs: Any):
        return self.request("GET", path, **kwargs)

    def post(self, path: str, body: Any = None, **kwargs: Any):
        return self.request("POST", path, json_body=body, **kwargs)

    def put(self, path: str, body: Any = None, **kwargs: Any):
        return self.request("PUT", path, json_body=body, **kwargs)

    def patch(self, path: str, body: Any = None, **kwargs: Any):
        return self.request("PATCH", path, json_body=body, **kwargs)

    def delete(self, path: str, **kwargs: Any):
        return self.request("DELETE", path, **kwargs)


def make_key(role: str = "admin", name: str | None = None) -> str:
    return auth.create_api_key(SYSTEM, name=name or f"{role} key", role=role).secret


def api_as(client: FlaskClient, role: str = "admin") -> Api:
    return Api(client, make_key(role))


def row_counts() -> dict[str, int]:
    return {
        model.__tablename__: db.session.scalar(select(func.count()).select_from(model))
        for model in (
            UsageEvent,
            LedgerEntry,
            UsageCounter,
            Wallet,
            AuditLog,
            CreditGrant,
            CreditAllocation,
        )
    }


def error_code(response) -> str:
    return response.get_json()["error"]["code"]
