"""Property tests of the whole API against its own OpenAPI document with schemathesis: every
operation, schema-valid and schema-violating inputs, no 5xx, every status documented, every body
and header as documented, and schema-violating input refused with a 4xx."""

from __future__ import annotations

import os

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.config import SchemathesisConfig
from schemathesis.generation.modes import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.api_support import document, make_key

# Small and derandomized by default so the suite stays fast and repeatable; set
# API_FUZZ_EXAMPLES=500 for a long random exploration.
MAX_EXAMPLES = int(os.environ.get("API_FUZZ_EXAMPLES", "25"))
DERANDOMIZE = "API_FUZZ_EXAMPLES" not in os.environ
# A batch over its documented maxItems is refused with 413 (api.md), which is also a rejection.
CONFIG = SchemathesisConfig.from_dict(
    {
        "checks": {
            "negative_data_rejection": {
                "expected-statuses": [400, 401, 403, 404, 405, 409, 413, 415, 422, 429]
            }
        }
    }
)
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


@pytest.mark.slow
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_every_operation_honours_the_openapi_document(app, catalog, mode):
    headers = {"Authorization": f"Bearer {make_key('admin')}"}
    schema = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", app, config=CONFIG)
    checks = CHECKS + ([negative_data_rejection] if mode is GenerationMode.NEGATIVE else [])
    operations = [result.ok() for result in schema.get_all_operations()]
    # Every operation of the document except the document itself, which schemathesis skips.
    documented = sum(len(item) for item in document()["paths"].values())
    assert len(operations) == documented - 1
    for operation in operations:

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=MAX_EXAMPLES,
            deadline=None,
            database=None,
            derandomize=DERANDOMIZE,
            suppress_health_check=list(HealthCheck),
        )
        def run(case) -> None:
            response = case.call(headers=headers)
            case.validate_response(response, checks=checks, headers=headers)

        run()
