from __future__ import annotations

import pytest

from tenancy.models import ApiKey, AuditEntry, Membership
from tenancy.scoping import UnscopedQueryError
from tests.conftest import Tenants
from tests.factories import issue_key


def test_unscoped_queries_raise(tenants: Tenants) -> None:
    issue_key(tenants.org_a)
    with pytest.raises(UnscopedQueryError):
        list(ApiKey.objects.all())
    with pytest.raises(UnscopedQueryError):
        ApiKey.objects.count()
    with pytest.raises(UnscopedQueryError):
        ApiKey.objects.filter(name="test key").exists()
    with pytest.raises(UnscopedQueryError):
        ApiKey.objects.filter(name="test key").update(name="x")
    with pytest.raises(UnscopedQueryError):
        ApiKey.objects.all().delete()
    with pytest.raises(UnscopedQueryError):
        Membership.objects.get(user=tenants.owner_a)
    with pytest.raises(UnscopedQueryError):
        Membership.objects.filter(organization__in=[tenants.org_a, tenants.org_b]).count()


def test_none_organization_is_refused(tenants: Tenants) -> None:
    with pytest.raises(UnscopedQueryError):
        ApiKey.objects.filter(organization=None)
    with pytest.raises(UnscopedQueryError):
        ApiKey.objects.for_org(None)  # type: ignore[arg-type]


def test_scoped_queries_see_only_their_organization(tenants: Tenants) -> None:
    key_a = issue_key(tenants.org_a).api_key
    key_b = issue_key(tenants.org_b).api_key
    assert list(ApiKey.objects.for_org(tenants.org_a)) == [key_a]
    assert list(tenants.org_b.api_keys.all()) == [key_b]
    assert ApiKey.objects.filter(organization_id=tenants.org_b.id).get() == key_b
    assert set(AuditEntry.objects.for_org(tenants.org_a).values_list("target_id", flat=True)) == {key_a.id}


def test_loud_bypass_crosses_tenants(tenants: Tenants) -> None:
    issue_key(tenants.org_a)
    issue_key(tenants.org_b)
    assert ApiKey.objects.unscoped_across_tenants().count() == 2


def test_deleting_an_organization_cascades_without_tripping_the_guard(tenants: Tenants) -> None:
    issue_key(tenants.org_a)
    tenants.org_a.delete()
    assert ApiKey.objects.unscoped_across_tenants().count() == 0
    assert Membership.objects.for_org(tenants.org_b).count() == 2
