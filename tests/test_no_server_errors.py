"""Never a 500: every route, every method, as every kind of caller, with odd bodies."""

from __future__ import annotations

import pytest
from django.test import Client

from tests.conftest import Tenants
from tests.factories import invitation_token, issue_invitation, issue_key
from tests.test_isolation import OBJECT_MAKERS, static_values
from tests.urlmatrix import Route, all_routes

BODIES = [None, "{", '{"name": ' + '"x", ' * 3 + "}", "[1, 2]", '{"name": {"nested": true}, "scopes": "read", "role": 7, "email": []}']


@pytest.mark.parametrize("route", all_routes(), ids=lambda route: route.template)
def test_no_route_answers_500(tenants: Tenants, route: Route) -> None:
    values = {param: OBJECT_MAKERS[param](tenants.org_a) for param in route.params if param in OBJECT_MAKERS}
    values.update(static_values(route))
    values.update(org_slug=tenants.org_a.slug, uidb64="MQ", token=invitation_token(issue_invitation(tenants.org_a)))
    url = route.build(**values)
    key = issue_key(tenants.org_a, ["read", "write"]).plaintext
    callers: dict[str, Client] = {"anonymous": Client(), "key": Client(HTTP_AUTHORIZATION=f"Bearer {key}")}
    for role in ("viewer_a", "member_a", "owner_b"):
        client = Client()
        client.force_login(getattr(tenants, role))
        callers[role] = client
    for name, client in callers.items():
        for method in ("get", "post", "put", "patch", "delete"):
            for body in BODIES if method in ("post", "put", "patch") else [None]:
                kwargs = {"data": body, "content_type": "application/json"} if body is not None else {}
                response = getattr(client, method)(url, **kwargs)
                assert response.status_code < 500, f"{name} {method.upper()} {url} {body!r}: {response.status_code}"
