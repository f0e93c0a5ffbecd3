"""Bad input answers 4xx with messages that say what to fix, never 500."""

from __future__ import annotations

import pytest
from django.test import Client

from tenancy.models import ApiKey
from tests.conftest import Tenants
from tests.helpers import session_api


def _error(response) -> dict:  # type: ignore[no-untyped-def]
    assert response["Content-Type"].startswith("application/json")
    return response.json()["error"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "name"),
        ({"name": "x"}, "scopes"),
        ({"name": 42, "scopes": "read"}, "scopes"),
        ({"name": ["a"], "scopes": ["read"]}, "name"),
        ({"name": "x", "scopes": ["admin"]}, "scopes.0"),
        ({"name": "x", "scopes": []}, "scopes"),
        ({"name": "x" * 101, "scopes": ["read"]}, "name"),
        ({"name": "x", "scopes": ["read"], "expires_at": "tomorrow"}, "expires_at"),
        ({"name": "x", "scopes": ["read"], "expires_at": "2001-01-01T00:00:00Z"}, "expires_at"),
        ({"name": "   ", "scopes": ["read"]}, "name"),
    ],
)
def test_key_creation_field_errors(tenants: Tenants, body: dict, field: str) -> None:
    response = session_api(tenants.owner_a, tenants.org_a).post("/api/v1/keys/", body, format="json")
    assert response.status_code == 400
    error = _error(response)
    assert field in error["fields"], error
    assert error["fields"][field] and all(message for message in error["fields"][field])
    assert ApiKey.objects.for_org(tenants.org_a).count() == 0


@pytest.mark.parametrize("raw", ["{", "not json", '{"name": "x",}', "\x00\x01"])
def test_invalid_json_is_400(tenants: Tenants, raw: str) -> None:
    client = session_api(tenants.owner_a, tenants.org_a)
    response = client.generic("POST", "/api/v1/keys/", raw, content_type="application/json")
    assert response.status_code == 400
    assert _error(response)["code"] == "invalid_json"
    assert "JSON" in _error(response)["message"]


@pytest.mark.parametrize("raw", ["[]", '"a string"', "42", "null"])
def test_json_that_is_not_an_object_is_400(tenants: Tenants, raw: str) -> None:
    response = session_api(tenants.owner_a, tenants.org_a).generic("POST", "/api/v1/keys/", raw, content_type="application/json")
    assert response.status_code == 400
    assert _error(response)["fields"]


def test_wrong_content_type_is_415(tenants: Tenants) -> None:
    response = session_api(tenants.owner_a, tenants.org_a).generic(
        "POST", "/api/v1/keys/", "name=x", content_type="application/x-www-form-urlencoded"
    )
    assert response.status_code == 415
    assert "application/json" in _error(response)["message"]


def test_member_and_invitation_inputs(tenants: Tenants) -> None:
    client = session_api(tenants.owner_a, tenants.org_a)
    member_id = tenants.org_a.memberships.get(user=tenants.member_a).id
    response = client.patch(f"/api/v1/members/{member_id}/", {"role": "emperor"}, format="json")
    assert response.status_code == 400 and "role" in _error(response)["fields"]
    response = client.post("/api/v1/invitations/", {"email": "not-an-email", "role": "member"}, format="json")
    assert response.status_code == 400 and "email" in _error(response)["fields"]
    response = client.patch("/api/v1/organization/", {"name": None}, format="json")
    assert response.status_code == 400 and "name" in _error(response)["fields"]


def test_unknown_api_paths_and_methods_answer_in_the_error_shape(tenants: Tenants) -> None:
    client = session_api(tenants.owner_a, tenants.org_a)
    response = client.get("/api/v1/no-such-thing/")
    assert response.status_code == 404 and _error(response)["type"] == "not_found_error"
    response = client.put("/api/v1/keys/", {}, format="json")
    assert response.status_code == 405 and "PUT" in _error(response)["message"]


def test_pagination_limits_are_validated_and_capped(tenants: Tenants) -> None:
    client = session_api(tenants.owner_a, tenants.org_a)
    assert client.get("/api/v1/members/?limit=abc").status_code == 200
    assert client.get("/api/v1/members/?cursor=garbage").status_code == 404
    assert len(client.get("/api/v1/members/?limit=2").json()["results"]) == 2


def test_console_forms_show_field_errors(tenants: Tenants) -> None:
    client = Client()
    client.force_login(tenants.owner_a)
    response = client.post(f"/o/{tenants.org_a.slug}/keys/", {"name": "", "scopes": "bogus"})
    assert response.status_code == 400
    page = response.content.decode()
    assert "This field is required." in page and "Select a valid choice" in page
    response = client.post("/orgs/new/", {"name": "x" * 200})
    assert response.status_code == 400 and "at most 100 characters" in response.content.decode()
    response = client.post(f"/o/{tenants.org_a.slug}/members/", {"email": "nope", "role": "king"})
    assert response.status_code == 400


def test_signup_form_errors(db: None) -> None:
    response = Client().post("/accounts/signup/", {"email": "bad", "password1": "short", "password2": "other"})
    assert response.status_code == 400
    page = response.content.decode()
    assert "Enter a valid email address." in page
    assert "didn’t match" in page or "didn't match" in page
