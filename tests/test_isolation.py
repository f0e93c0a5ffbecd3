"""The isolation matrix: for every route that takes an object id, a member of org B asking
for org A's object gets 404, through the console and the API, by session or by key.

Routes come from the URL configuration. A route with a parameter this file does not know
fails the suite, so a new endpoint cannot slip past the matrix."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from django.test import Client

from metering import ingest
from tenancy.models import Organization, Role
from tenancy.selectors import audit_entries
from tenancy.services import create_invitation
from tests.conftest import Tenants
from tests.factories import (
    MembershipFactory,
    closed_invoice,
    create_deployment,
    create_provider,
    create_route,
    issue_key,
    owner_context,
    register_model,
    start_model_upload,
)
from tests.helpers import key_api, session_api
from tests.metering.test_usage_pipeline import _record as usage_record
from tests.urlmatrix import Route, all_routes


# How to make an object of each id parameter inside a given organization.
def _usage_event(org: Organization) -> str:
    """A request of the organization's, as the ingester stores it."""
    ingest.write_batch([usage_record(org.pk, "req_victim")])
    return "req_victim"


OBJECT_MAKERS: dict[str, Callable[[Organization], str]] = {
    "key_id": lambda org: issue_key(org, ["read"], name="victim").api_key.id,
    "member_id": lambda org: MembershipFactory(organization=org, role=Role.MEMBER).id,
    "invitation_id": lambda org: create_invitation(owner_context(org), role=Role.MEMBER, email="victim@example.test").invitation.id,
    "deployment_id": lambda org: create_deployment(org, name="victim").id,
    "route_id": lambda org: create_route(org, name="victim-route").id,
    "provider_id": lambda org: create_provider(org, name="victim-provider").id,
    "entry_id": lambda org: (issue_key(org, ["read"], name="audited"), audit_entries(org).first())[1].id,  # type: ignore[union-attr]
    "invoice_id": lambda org: closed_invoice(org).id,
    "upload_id": lambda org: start_model_upload(org, name="victim-upload", send=False).id,
    "model_id": lambda org: register_model(org, name="victim-model").id,
    "request_id": lambda org: _usage_event(org),
}
# Parameters that name no tenant object, and why.
NON_OBJECT_PARAMS = {
    "org_slug": "the organization itself; covered by test_non_members_get_404_for_every_org_page",
    "kind": "a download format (csv, pdf)",
    "action": "a payment-method action (checkout, portal)",
    "token": "an invitation or password-reset secret, not an id",
    "uidb64": "Django's password-reset user reference, paired with its token",
    "org_id": "a tenant, on the staff-only Admin pages and admin API (404 to non-staff: test_admin_console)",
    "cluster_name": "a cluster, a platform object on the staff-only Admin pages and admin API",
    "version_id": "a price-book version, a platform object on the staff-only Admin pages",
    "file_path": "a file's path inside a model upload, which upload_id scopes",
}
STATIC_VALUES = {
    "kind": "pdf",
    "action": "portal",
    "org_id": "org_doesnotexist0000000000",
    "cluster_name": "local-us-east",
    "version_id": "1",
    "file_path": "config.json",
}
UNKNOWN_ID = "zzz_doesnotexist000000000"


def static_values(route: Route) -> dict[str, str]:
    return {param: STATIC_VALUES[param] for param in route.params if param in STATIC_VALUES}


ROUTES = all_routes()
OBJECT_ROUTES = [route for route in ROUTES if any(param in OBJECT_MAKERS for param in route.params)]


def test_every_route_parameter_is_known() -> None:
    unknown = {
        (route.template, param)
        for route in ROUTES
        for param in route.params
        if param not in OBJECT_MAKERS and param not in NON_OBJECT_PARAMS
    }
    assert not unknown, f"Add these URL parameters to the isolation matrix: {sorted(unknown)}"
    assert len(OBJECT_ROUTES) >= 10


def _console_client(user) -> Client:  # type: ignore[no-untyped-def]
    client = Client()
    client.force_login(user)
    return client


def _status(client, method: str, url: str) -> int:  # type: ignore[no-untyped-def]
    kwargs = {"content_type": "application/json", "data": "{}"} if method in ("post", "put", "patch") else {}
    return getattr(client, method)(url, **kwargs).status_code


@pytest.mark.parametrize("route", OBJECT_ROUTES, ids=lambda route: route.template)
def test_foreign_object_ids_answer_404(tenants: Tenants, route: Route) -> None:
    org_a, org_b = tenants.org_a, tenants.org_b
    values = {param: OBJECT_MAKERS[param](org_a) for param in route.params if param in OBJECT_MAKERS}

    if route.is_api:
        b_key = issue_key(org_b, ["read", "write"], name="attacker").plaintext
        clients = {"session": session_api(tenants.owner_b, org_b), "key": key_api(b_key)}
        methods = route.api_methods
    else:
        clients = {"session": _console_client(tenants.owner_b)}
        methods = ["get", "post"]

    url_foreign = route.build(org_slug=org_b.slug, **values, **static_values(route))
    url_missing = route.build(org_slug=org_b.slug, **{param: UNKNOWN_ID for param in values}, **static_values(route))
    for client_name, client in clients.items():
        statuses = {}
        for method in methods:
            foreign = _status(client, method, url_foreign)
            missing = _status(client, method, url_missing)
            # Another tenant's id is indistinguishable from an id that does not exist.
            assert foreign == missing, f"{client_name} {method.upper()} {url_foreign}: {foreign} vs missing {missing}"
            assert foreign in (404, 405), f"{client_name} {method.upper()} {url_foreign} answered {foreign}"
            statuses[method] = foreign
        assert 404 in statuses.values(), f"{client_name} {route.template}: no method answered 404: {statuses}"

    # Nothing of org A changed.
    for param, object_id in values.items():
        if param == "key_id":
            assert org_a.api_keys.get(pk=object_id).revoked_at is None
        if param == "member_id":
            assert org_a.memberships.get(pk=object_id).role == Role.MEMBER
        if param == "invitation_id":
            assert org_a.invitations.get(pk=object_id).revoked_at is None


ORG_ROUTES = [route for route in ROUTES if "org_slug" in route.params]


@pytest.mark.parametrize("route", ORG_ROUTES, ids=lambda route: route.template)
def test_non_members_get_404_for_every_org_page(tenants: Tenants, route: Route) -> None:
    values = {param: OBJECT_MAKERS[param](tenants.org_a) for param in route.params if param in OBJECT_MAKERS}
    values.update(static_values(route))
    url = route.build(org_slug=tenants.org_a.slug, **values)
    client = _console_client(tenants.owner_b)
    for method in ("get", "post"):
        status = _status(client, method, url)
        assert status == 404, f"{method.upper()} {url} answered {status} to a non-member"
    nonexistent = route.build(org_slug="no-such-org", **values)
    assert _status(client, "get", nonexistent) == 404


def test_org_header_cannot_reach_a_foreign_organization(tenants: Tenants) -> None:
    client = session_api(tenants.owner_b, tenants.org_a)
    for url in ("/api/v1/organization/", "/api/v1/keys/", "/api/v1/members/", "/api/v1/audit-log/"):
        assert client.get(url).status_code == 404
    assert client.post("/api/v1/keys/", {"name": "x", "scopes": ["read"]}, format="json").status_code == 404
    assert tenants.org_a.api_keys.count() == 0


def test_lists_hold_only_the_callers_organization(tenants: Tenants) -> None:
    issue_key(tenants.org_a, ["read"], name="a-key")
    issue_key(tenants.org_b, ["read"], name="b-key")
    client = session_api(tenants.owner_b, tenants.org_b)
    assert {row["name"] for row in client.get("/api/v1/keys/").json()["results"]} == {"b-key"}
    assert {row["email"] for row in client.get("/api/v1/members/").json()["results"]} == {tenants.owner_b.email, tenants.viewer_b.email}
    assert all(row["target_id"].startswith("key_") for row in client.get("/api/v1/audit-log/").json()["results"])
    assert {row["target_id"] for row in client.get("/api/v1/audit-log/").json()["results"]} <= set(
        tenants.org_b.api_keys.values_list("id", flat=True)
    )
    page = _console_client(tenants.owner_b).get(f"/o/{tenants.org_b.slug}/keys/").content.decode()
    assert "b-key" in page and "a-key" not in page


def test_staff_pages_are_404_for_non_staff(tenants: Tenants) -> None:
    assert _console_client(tenants.owner_a).get("/staff/").status_code == 404
    assert Client().get("/staff/").status_code == 404
