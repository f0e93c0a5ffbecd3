"""Small things a careful user noticed: the CPU choice says it has no GPU memory, the only
owner is not offered their own removal, the staff Standing form starts at the tenant's
standing, and a long organization name keeps its full name within reach."""

from __future__ import annotations

from django.test import Client

from tenancy.models import Membership, Role
from tests.conftest import Tenants
from tests.factories import UserFactory, ensure_clusters


def _browser(user) -> Client:  # type: ignore[no-untyped-def]
    client = Client()
    client.force_login(user)
    return client


def test_the_cpu_choice_says_it_has_no_gpu_memory(tenants: Tenants) -> None:
    ensure_clusters()
    page = _browser(tenants.member_a).get(f"/o/{tenants.org_a.slug}/deployments/new/").content.decode()
    assert "CPU (no GPU, host memory)" in page and "(0 GB)" not in page
    assert "T4 (16 GB)" in page


def test_the_only_owner_is_not_offered_their_own_removal(tenants: Tenants) -> None:
    owner = Membership.objects.get(organization=tenants.org_a, user=tenants.owner_a)
    member = Membership.objects.get(organization=tenants.org_a, user=tenants.member_a)
    url = f"/o/{tenants.org_a.slug}/members/"
    page = _browser(tenants.owner_a).get(url).content.decode()
    assert f"/members/{owner.pk}/remove/" not in page and "the only owner" in page
    assert f"/members/{member.pk}/remove/" in page
    # With a second owner, either can be removed.
    Membership.objects.create(organization=tenants.org_a, user=UserFactory(), role=Role.OWNER)
    page = _browser(tenants.owner_a).get(url).content.decode()
    assert f"/members/{owner.pk}/remove/" in page and "the only owner" not in page


def test_the_standing_form_starts_at_the_tenants_standing(tenants: Tenants) -> None:
    staff = _browser(UserFactory(is_staff=True))
    page = staff.get(f"/staff/tenants/{tenants.org_a.pk}/").content.decode()
    assert '<option value="active" selected>' in page and '<option value="suspended" selected>' not in page


def test_a_long_organization_name_is_cut_in_the_header_with_its_full_name_kept(tenants: Tenants) -> None:
    tenants.org_a.name = "A" * 40 + " Holdings International Research and Development Division"
    tenants.org_a.save()
    page = _browser(tenants.owner_a).get(f"/o/{tenants.org_a.slug}/").content.decode()
    assert f'<summary aria-label="Switch organization" title="{tenants.org_a.name}">' in page
