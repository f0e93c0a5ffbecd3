"""Schemathesis against the management API's own OpenAPI schema: every operation, with
generated valid and invalid input, called as an owner and a viewer of one organization
and as the owner of another. No answer may be a 5xx, and every documented answer must
match its schema. Bounded (examples per operation) and derandomized so CI runs the same
cases every time; `FUZZ_EXAMPLES` raises the bound for a longer run."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from tests.conftest import Tenants
from tests.factories import issue_key

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "6"))
schema = schemathesis.openapi.from_wsgi("/api/v1/schema/", get_wsgi_application())


@pytest.fixture
def same_connection() -> Iterator[None]:
    """As Django's test client does: a WSGI request would otherwise close the database
    connection that holds this test's transaction."""
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


@pytest.fixture
def callers(tenants: Tenants, same_connection: None) -> dict[str, str]:
    scopes = ["read", "write", "inference"]
    return {
        "owner of A": issue_key(tenants.org_a, scopes, name="fuzz-owner").plaintext,
        "viewer of A": issue_key(tenants.org_a, ["read"], name="fuzz-viewer").plaintext,
        "owner of B": issue_key(tenants.org_b, scopes, name="fuzz-other").plaintext,
    }


@pytest.mark.django_db
@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
def test_no_operation_answers_5xx_or_breaks_its_schema(case: schemathesis.Case, callers: dict[str, str]) -> None:
    for caller, key in callers.items():
        response = case.call(headers={"Authorization": f"Bearer {key}"})
        assert response.status_code < 500, f"{caller}: {case.method} {case.formatted_path} answered {response.status_code}"
        case.validate_response(response, checks=[not_a_server_error, response_schema_conformance])
