from __future__ import annotations

import pytest
from django.test import Client

from tenancy.models import Membership, Organization, Role
from tests.api_calls import MUTATING_CALLS, STAFF_CALLS, ApiCall
from tests.conftest import Tenants
from tests.factories import issue_key, register_model
from tests.helpers import session_api
from tests.urlmatrix import all_routes

ROLES = [Role.VIEWER, Role.MEMBER, Role.ADMIN, Role.OWNER]


def test_the_table_covers_every_mutating_endpoint() -> None:
    endpoints = {(method, route.template) for route in all_routes() if route.is_api for method in route.api_methods if method != "get"}
    # Admin endpoints need platform staff, not a role: STAFF_CALLS, covered by test_admin_console.
    assert endpoints == {(call.method, call.route) for call in MUTATING_CALLS} | {(call.method, call.route) for call in STAFF_CALLS}


@pytest.mark.parametrize("role", ROLES, ids=str)
@pytest.mark.parametrize("call", MUTATING_CALLS, ids=lambda call: call.name)
def test_each_mutation_needs_its_role(tenants: Tenants, call: ApiCall, role: Role) -> None:
    params = call.setup(tenants.org_a)
    client = session_api(tenants.user(str(role)), tenants.org_a)
    response = getattr(client, call.method)(call.url(params), call.payload(params), format="json")
    if role.at_least(call.needs):
        assert response.status_code in call.allowed, response.content
    else:
        assert response.status_code == 403, response.content
        assert call.needs.label.lower() in response.json()["error"]["message"]


def test_viewer_can_read(tenants: Tenants) -> None:
    client = session_api(tenants.viewer_a, tenants.org_a)
    for url in ("/api/v1/organization/", "/api/v1/members/", "/api/v1/keys/", "/api/v1/invitations/"):
        assert client.get(url).status_code == 200
    assert client.get("/api/v1/audit-log/").status_code == 403  # the audit log is for admins and owners


def _console(user) -> Client:  # type: ignore[no-untyped-def]
    client = Client()
    client.force_login(user)
    return client


def _console_mutations(org: Organization) -> list[tuple[str, dict[str, str], Role]]:
    key_id = issue_key(org, ["read"], name="target").api_key.id
    member_id = Membership.objects.for_org(org).filter(role=Role.MEMBER).first().id  # type: ignore[union-attr]
    model_id = register_model(org, "target-model").id
    base = f"/o/{org.slug}"
    return [
        (f"{base}/models/{model_id}/delete/", {}, Role.MEMBER),
        (f"{base}/models/", {"hub-name": "m", "hub-repo_id": "acme/m", "hub-revision": "main", "hub-task": "chat"}, Role.MEMBER),
        (f"{base}/keys/", {"name": "k", "scopes": "inference"}, Role.ADMIN),
        (f"{base}/keys/{key_id}/rotate/", {}, Role.ADMIN),
        (f"{base}/keys/{key_id}/revoke/", {}, Role.ADMIN),
        (f"{base}/members/", {"email": "x@example.test", "role": "member"}, Role.ADMIN),
        (f"{base}/members/{member_id}/role/", {"role": "viewer"}, Role.ADMIN),
        (f"{base}/members/{member_id}/remove/", {}, Role.ADMIN),
        (f"{base}/settings/", {"name": "Renamed"}, Role.ADMIN),
        (f"{base}/settings/delete/", {"confirm": org.name}, Role.OWNER),
    ]


@pytest.mark.parametrize("role", [Role.VIEWER, Role.MEMBER, Role.ADMIN])
def test_console_refuses_mutations_below_the_needed_role(tenants: Tenants, role: Role) -> None:
    client = _console(tenants.user(str(role)))
    for url, data, needs in _console_mutations(tenants.org_a):
        if not role.at_least(needs):
            assert client.post(url, data).status_code == 403, url
    assert Organization.objects.filter(pk=tenants.org_a.pk).exists()


def test_admin_cannot_delete_but_owner_can(tenants: Tenants) -> None:
    url = f"/o/{tenants.org_a.slug}/settings/delete/"
    assert _console(tenants.admin_a).post(url, {"confirm": "Acme"}).status_code == 403
    assert session_api(tenants.admin_a, tenants.org_a).delete("/api/v1/organization/").status_code == 403
    response = _console(tenants.owner_a).post(url, {"confirm": "Acme"})
    assert response.status_code == 302
    assert not Organization.objects.filter(pk=tenants.org_a.pk).exists()
    assert Organization.objects.filter(pk=tenants.org_b.pk).exists()


def test_a_write_key_acts_as_admin_and_cannot_delete_the_organization(tenants: Tenants) -> None:
    from tests.helpers import key_api

    plaintext = issue_key(tenants.org_a, ["read", "write"]).plaintext
    response = key_api(plaintext).delete("/api/v1/organization/")
    assert response.status_code == 403
    assert key_api(plaintext).patch("/api/v1/organization/", {"name": "Via key"}, format="json").status_code == 200


def test_only_owners_touch_the_owner_role(tenants: Tenants) -> None:
    admin = session_api(tenants.admin_a, tenants.org_a)
    owner_membership = Membership.objects.for_org(tenants.org_a).get(user=tenants.owner_a)
    member_membership = Membership.objects.for_org(tenants.org_a).get(user=tenants.member_a)
    assert admin.patch(f"/api/v1/members/{member_membership.id}/", {"role": "owner"}, format="json").status_code == 403
    assert admin.delete(f"/api/v1/members/{owner_membership.id}/").status_code == 403
    assert admin.post("/api/v1/invitations/", {"role": "owner"}, format="json").status_code == 403


def test_the_last_owner_cannot_leave_or_be_demoted(tenants: Tenants) -> None:
    owner = session_api(tenants.owner_a, tenants.org_a)
    owner_membership = Membership.objects.for_org(tenants.org_a).get(user=tenants.owner_a)
    response = owner.patch(f"/api/v1/members/{owner_membership.id}/", {"role": "admin"}, format="json")
    assert response.status_code == 409
    assert "last owner" in response.json()["error"]["message"]
    assert owner.delete(f"/api/v1/members/{owner_membership.id}/").status_code == 409
