"""The Overview's getting-started checklist: each step is done once the organization has
what it asks for, the list goes when all five are done, and only those who can take every
step (admins and owners) see it."""

from __future__ import annotations

from decimal import Decimal

from django.test import Client

from billing.models import BillingAccount
from metering import ingest
from tests.conftest import Tenants
from tests.factories import create_deployment, create_route, issue_key
from tests.metering.test_usage_pipeline import _record


def _page(user, slug: str) -> str:  # type: ignore[no-untyped-def]
    client = Client()
    client.force_login(user)
    return client.get(f"/o/{slug}/").content.decode()


def _done(html: str) -> list[str]:
    return [part.split('"')[0] for part in html.split('checklist-step checklist-step--done" data-step="')[1:]]


def test_the_checklist_follows_what_the_organization_has(tenants: Tenants) -> None:
    slug = tenants.org_a.slug
    html = _page(tenants.owner_a, slug)
    assert "Getting started: 0 of 5 done" in html and _done(html) == []
    assert f'href="/o/{slug}/deployments/new/"' in html
    deployment = create_deployment(tenants.org_a, name="chat")
    create_route(tenants.org_a, "chat-default", targets=[(deployment, 100)])
    key = issue_key(tenants.org_a, ["inference"], name="backend")
    assert _done(_page(tenants.owner_a, slug)) == ["deploy", "route", "key"]
    ingest.write_batch([_record(tenants.org_a.pk, "req_first", key_id=key.api_key.id)])
    assert "Getting started: 4 of 5 done" in _page(tenants.owner_a, slug)
    # Another organization's progress is its own.
    assert "Getting started: 0 of 5 done" in _page(tenants.owner_b, tenants.org_b.slug)
    # Members and viewers cannot take every step: they are not shown the list.
    assert 'data-testid="getting-started"' not in _page(tenants.member_a, slug)
    BillingAccount.objects.create(organization=tenants.org_a, monthly_budget=Decimal("50"))
    assert 'data-testid="getting-started"' not in _page(tenants.owner_a, slug)  # all done: gone
