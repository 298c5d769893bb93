"""/api/docs: the OpenAPI document rendered as a plain HTML page (no scripts, no CDN)."""

from __future__ import annotations

import json
import re
from typing import Any

from flask import Blueprint, current_app
from markupsafe import Markup, escape

from .openapi import openapi_document

bp = Blueprint("api_docs", __name__)

METHODS = ("get", "post", "put", "patch", "delete")


def inline(text: str) -> Markup:
    """The documents' `backticks` as <code>, everything else escaped."""
    return Markup(re.sub(r"`([^`]+)`", r"<code>\1</code>", str(escape(text))))


def _schema_name(schema: dict[str, Any] | None) -> str | None:
    if not schema:
        return None
    if "allOf" in schema:  # an error response: the Error schema with the operation's codes
        return _schema_name(schema["allOf"][0])
    target = schema.get("$ref", "")
    return target.rsplit("/", 1)[-1] if target else None


def _type_text(schema: dict[str, Any]) -> str:
    if "$ref" in schema:
        return _schema_name(schema) or ""
    kind = schema.get("type", "any")
    text = " | ".join(kind) if isinstance(kind, list) else str(kind)
    if kind == "array" and isinstance(schema.get("items"), dict):
        text = f"array of {_type_text(schema['items']) or 'any'}"
    if "anyOf" in schema:
        text = " | ".join(_type_text(s) for s in schema["anyOf"])
    if "enum" in schema:
        text += " (" + ", ".join("null" if v is None else str(v) for v in schema["enum"]) + ")"
    return text


def _operations(doc: dict[str, Any]) -> list[dict[str, Any]]:
    ops = []
    for path, item in doc["paths"].items():
        for method in METHODS:
            op = item.get(method)
            if op is None:
                continue
            body = op.get("requestBody", {}).get("content", {}).get("application/json", {})
            responses = []
            for status, response in op["responses"].items():
                schema = response.get("content", {}).get("application/json", {}).get("schema")
                responses.append(
                    {
                        "status": status,
                        "description": response["description"],
                        "schema": _schema_name(schema),
                        "headers": sorted(response.get("headers", {})),
                    }
                )
            ops.append(
                {
                    "id": op["operationId"],
                    "method": method.upper(),
                    "path": path,
                    "summary": op["summary"],
                    "description": op.get("description", ""),
                    "tag": op["tags"][0],
                    "public": op.get("security") == [],
                    "parameters": op.get("parameters", []),
                    "body": _schema_name(body.get("schema")),
                    "responses": responses,
                }
            )
    return ops


def _schemas(doc: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for name, schema in doc["components"]["schemas"].items():
        required = set(schema.get("required", []))
        fields = [
            {
                "name": field,
                "type": _type_text(spec),
                "required": field in required,
                "description": spec.get("description", ""),
            }
            for field, spec in schema.get("properties", {}).items()
        ]
        out.append({"name": name, "description": schema.get("description", ""), "fields": fields})
    return out


@bp.get("/api/docs")
def api_docs() -> str:
    doc = openapi_document()
    # Rendered without the app's context processors: this public page needs no user or session.
    template = current_app.jinja_env.get_template("api/docs.html")
    return template.render(
        inline=inline,
        info=doc["info"],
        tags=doc["tags"],
        operations=_operations(doc),
        schemas=_schemas(doc),
        security=doc["components"]["securitySchemes"]["bearerAuth"],
        example=json.dumps(
            {"error": {"code": "insufficient_credits", "message": "...", "details": {}}}
        ),
    )
