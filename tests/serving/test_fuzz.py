"""Property-based fuzzing of the API from its own OpenAPI schema (schemathesis, in process).

Every operation gets generated requests: valid ones (positive) and ones that break the schema
(negative: wrong types, missing fields, out-of-range numbers). The checks: no 5xx, status codes,
content types and bodies conform to the documented responses, and nothing ever reaches the
catch-all 500 handler (the app counts what does).

schemathesis' ``@schema.parametrize()`` needs the schema at import time and its lazy
``from_fixture`` loader does not work with pytest 9 (it sets ``node._nodeid``), so each
operation's hypothesis strategy is driven here directly - the same generation and checks.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.generation import GenerationMode

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance]
OPERATIONS = ["GET /healthz", "GET /readyz", "GET /api/model", "POST /api/predict",
              "POST /api/predict/batch"]
# Operations without parameters or a body have no invalid requests to generate.
CASES = [(name, GenerationMode.POSITIVE) for name in OPERATIONS] + [
    (name, GenerationMode.NEGATIVE) for name in OPERATIONS if name.startswith("POST")]


@pytest.fixture(scope="module")
def operations(app):
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    ops = {f"{op.method.upper()} {op.path}": op
           for op in (result.ok() for result in schema.get_all_operations())}
    assert sorted(ops) == sorted(OPERATIONS)
    return ops


@pytest.mark.parametrize("name, mode", CASES, ids=[f"{n}-{m.value}" for n, m in CASES])
def test_api_conforms_to_its_schema(operations, app, name, mode):
    operation = operations[name]
    seen = []

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=30, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    def check(case):
        response = case.call_and_validate(checks=CHECKS)
        seen.append((response.status_code, case.media_type))

    before = app.state.internal_errors
    check()
    assert app.state.internal_errors == before
    assert seen  # the strategy produced requests
    if name.startswith("POST"):
        # Both documented body kinds were sent.
        assert {"application/json", "multipart/form-data"} <= {m for _, m in seen}, seen
    if mode is GenerationMode.NEGATIVE:
        assert all(400 <= s < 500 for s, _ in seen), sorted(set(seen))
