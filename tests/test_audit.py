from __future__ import annotations

import pytest

from tenancy.models import AuditEntry, Organization
from tests.api_calls import MUTATING_CALLS, ApiCall
from tests.conftest import Tenants
from tests.factories import issue_key
from tests.helpers import key_api, session_api

# Deleting the organization takes its audit log with it; the payment links and the credit
# checkout create a Stripe session and change nothing here (tests/billing/test_stripe.py; a
# bought credit is audited when Stripe reports it paid, tests/billing/test_prepaid_credit.py).
# A model file's chunks are bytes on their way: the upload's start and its outcome are audited.
NOT_AUDITED = {"delete organization", "payment method checkout", "payment portal", "prepaid credit checkout", "send model file chunk"}
AUDITABLE = [call for call in MUTATING_CALLS if call.name not in NOT_AUDITED]


def _entries(org: Organization) -> list[AuditEntry]:
    return list(AuditEntry.objects.for_org(org))


@pytest.mark.parametrize("call", AUDITABLE, ids=lambda call: call.name)
def test_each_mutating_call_writes_exactly_one_entry(tenants: Tenants, call: ApiCall) -> None:
    params = call.setup(tenants.org_a)
    before_a = {entry.id for entry in _entries(tenants.org_a)}
    before_b = len(_entries(tenants.org_b))
    response = getattr(session_api(tenants.owner_a, tenants.org_a), call.method)(call.url(params), call.payload(params), format="json")
    assert response.status_code in (200, 201, 204)
    new = [entry for entry in _entries(tenants.org_a) if entry.id not in before_a]
    assert len(new) == 1
    entry = new[0]
    assert entry.actor_user == tenants.owner_a and entry.actor_key is None
    assert entry.request_id == response["X-Request-Id"]
    assert entry.before is not None or entry.after is not None
    assert len(_entries(tenants.org_b)) == before_b


@pytest.mark.parametrize("call", AUDITABLE, ids=lambda call: call.name)
def test_key_driven_changes_name_the_key(tenants: Tenants, call: ApiCall) -> None:
    params = call.setup(tenants.org_a)
    issued = issue_key(tenants.org_a, ["read", "write"], name="automation")
    count = len(_entries(tenants.org_a))
    response = getattr(key_api(issued.plaintext), call.method)(call.url(params), call.payload(params), format="json")
    assert response.status_code in (200, 201, 204)
    entries = _entries(tenants.org_a)
    assert len(entries) == count + 1
    assert entries[0].actor_key_id == issued.api_key.id
    assert "automation" in entries[0].actor_label


def test_failed_changes_write_nothing(tenants: Tenants) -> None:
    client = session_api(tenants.viewer_a, tenants.org_a)
    count = len(_entries(tenants.org_a))
    assert client.post("/api/v1/keys/", {"name": "x", "scopes": ["read"]}, format="json").status_code == 403
    assert session_api(tenants.owner_a, tenants.org_a).post("/api/v1/keys/", {"name": "", "scopes": []}, format="json").status_code == 400
    assert len(_entries(tenants.org_a)) == count


def test_audit_entries_record_before_and_after(tenants: Tenants) -> None:
    client = session_api(tenants.owner_a, tenants.org_a)
    client.patch("/api/v1/organization/", {"name": "Acme Two"}, format="json")
    entry = client.get("/api/v1/audit-log/").json()["results"][0]
    assert entry["action"] == "organization.renamed"
    assert entry["before"]["name"] == "Acme" and entry["after"]["name"] == "Acme Two"
    assert entry["actor"] == tenants.owner_a.email
    detail = client.get(f"/api/v1/audit-log/{entry['id']}/").json()
    assert detail == entry


def test_audit_log_page_shows_entries_to_admins(tenants: Tenants) -> None:
    from django.test import Client

    issue_key(tenants.org_a, ["read"], name="visible-key")
    client = Client()
    client.force_login(tenants.admin_a)
    page = client.get(f"/o/{tenants.org_a.slug}/audit/")
    assert page.status_code == 200 and b"api_key.created" in page.content
    client.force_login(tenants.member_a)
    assert client.get(f"/o/{tenants.org_a.slug}/audit/").status_code == 403
