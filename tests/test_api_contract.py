"""The contract is written once: the error table of ``webapp.errors`` is what docs/api.md shows
and what the OpenAPI document lists, and each operation documents only the errors it can give."""

from __future__ import annotations

import json
import re
from pathlib import Path

from schemathesis.specs.openapi.definitions import OPENAPI_31_VALIDATOR

from tests.api_support import document
from webapp.errors import ERRORS

API_MD = Path(__file__).parent.parent / "docs" / "api.md"


def _table_from_errors() -> list[str]:
    rows: dict[int, list[str]] = {}
    for kind in ERRORS:
        text = f"`{kind.code}`" + (f" ({kind.meaning})" if kind.meaning else "")
        rows.setdefault(kind.status, []).append(text)
    return [f"| {status} | {', '.join(codes)} |" for status, codes in sorted(rows.items())]


def test_docs_error_table_is_the_error_table_of_the_code():
    text = API_MD.read_text()
    documented = re.findall(r"^\| \d{3} \| .*\|$", text, flags=re.MULTILINE)
    assert documented == _table_from_errors()


def test_the_openapi_document_is_valid_openapi_3_1():
    errors = [e.message for e in OPENAPI_31_VALIDATOR.iter_errors(document())]
    assert not errors


def test_every_reference_of_the_openapi_document_resolves():
    text = json.dumps(document())
    schemas = document()["components"]["schemas"]
    refs = set(re.findall(r'"#/components/schemas/([^"]+)"', text))
    assert refs and refs <= set(schemas), sorted(refs - set(schemas))


def _codes(operation: dict) -> dict[str, list[str]]:
    out = {}
    for status, response in operation["responses"].items():
        schema = response["content"]["application/json"]["schema"]
        if "allOf" in schema:
            out[status] = schema["properties"]["error"]["properties"]["code"]["enum"]
    return out


def test_each_operation_documents_only_the_errors_it_can_give():
    known = {kind.code for kind in ERRORS}
    for path, item in document()["paths"].items():
        for method, operation in item.items():
            codes = _codes(operation)
            for status, listed in codes.items():
                assert set(listed) <= known
                assert {k.status for k in ERRORS if k.code in listed} == {int(status)}
            if "requestBody" not in operation:
                assert "413" not in codes and "400" not in codes, (method, path)
                flat = {code for listed in codes.values() for code in listed}
                assert "feature_not_recordable" not in flat, (method, path)
            if operation.get("security") == []:
                assert set(codes) == {"429"}
    usage = _codes(document()["paths"]["/api/v1/usage"]["post"])
    assert "feature_not_recordable" in usage["422"] and "payload_too_large" in usage["413"]
