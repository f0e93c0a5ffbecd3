"""Line breaks and other control characters are refused in every name that reaches a page,
a log, a CSV or an HTTP header (tenancy/text.py), through the API as in the console, with
a 400 that names the field."""

from __future__ import annotations

import pytest
from django.test import Client

from tests.conftest import Tenants
from tests.factories import issue_key
from tests.gateway.test_routing_api import _provider_body
from tests.helpers import session_api

BAD = ["acme\r\nX-Injected: 1", "tab\there", "nul\x00", "line\u2028break", "bell\x07"]


@pytest.mark.parametrize("bad", BAD)
def test_names_with_control_characters_are_refused(tenants: Tenants, bad: str) -> None:
    api = session_api(tenants.owner_a, tenants.org_a)
    checks = [
        ("key name", api.post("/api/v1/keys/", {"name": bad, "scopes": ["inference"]}, format="json"), "name"),
        ("provider region", api.post("/api/v1/providers/", _provider_body(name="p-region", region=bad), format="json"), "region"),
        (
            "provider url",
            api.post("/api/v1/providers/", _provider_body(name="p-url", base_url=f"https://api.test/{bad}"), format="json"),
            "base_url",
        ),
    ]
    provider = api.post("/api/v1/providers/", _provider_body(name="good"), format="json").json()["id"]
    route = api.post("/api/v1/routes/", {"name": "r", "targets": [{"provider": provider, "provider_model": bad}]}, format="json")
    checks.append(("provider model", route, "targets"))
    key = issue_key(tenants.org_a, ["inference"]).api_key
    checks.append(("key rename", api.patch(f"/api/v1/keys/{key.pk}/", {"name": bad}, format="json"), "name"))
    for what, response, field in checks:
        assert response.status_code == 400, (what, response.content)
        error = response.json()["error"]
        assert any(name.startswith(field) for name in error.get("fields", {})), (what, error)


def test_an_organization_name_with_a_line_break_is_refused_in_the_console(tenants: Tenants) -> None:
    client = Client()
    client.force_login(tenants.owner_a)
    response = client.post(f"/o/{tenants.org_a.slug}/settings/", {"name": "Acme\nLtd"})
    assert response.status_code == 400 and "control characters" in response.content.decode()
