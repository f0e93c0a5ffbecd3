"""A route whose region policy its targets cannot serve is not accepted silently: saving
it warns, and its page says so and shows endpoints outside the policy as such, not as a
healthy green "closed" breaker."""

from __future__ import annotations

import pytest
from django.test import Client

from deployments.models import Replica
from routing.models import ModelRoute
from routing.region_coverage import TargetReach, coverage_warning
from tests.conftest import Tenants
from tests.factories import create_deployment, create_provider, create_route

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    ("allowed", "reaches", "says"),
    [
        ([], [TargetReach("deployment:chat", ("eu-west",), ())], None),  # any region
        (["us-east"], [TargetReach("deployment:chat", ("us-east", "eu-west"), ("us-east",))], None),
        (["us-east"], [TargetReach("provider:p/m", ("eu-west",), ("eu-west",))], "No target of this route can serve in us-east"),
        (
            ["us-east"],
            [TargetReach("deployment:chat", ("us-east", "eu-west"), ("eu-west",))],
            "Nothing serves in us-east right now (deployment:chat runs in eu-west)",
        ),
        (["us-east"], [TargetReach("deployment:chat", ("us-east",), (), scales_to_zero=True)], None),  # a request wakes it there
        (
            ["us-east"],
            [TargetReach("deployment:chat", ("us-east", "eu-west"), (), scales_to_zero=True)],
            "Nothing serves in us-east right now",  # woken, it may land in eu-west
        ),
        (
            ["us-east"],
            [TargetReach("deployment:chat", ("us-east",), ("us-east",)), TargetReach("provider:p/m", ("eu-west",), ("eu-west",))],
            "provider:p/m cannot serve in us-east and will be skipped.",
        ),
    ],
)
def test_the_warning_says_what_cannot_be_served(allowed: list[str], reaches: list[TargetReach], says: str | None) -> None:
    warning = coverage_warning(allowed=allowed, reaches=reaches)
    assert warning == says if says is None else says in (warning or "")


def test_the_route_page_and_form_warn_about_a_policy_no_target_can_serve(tenants: Tenants) -> None:
    # The tester's case: a route allowing only us-east, before a deployment whose only replica landed in eu-west.
    deployment = create_deployment(tenants.org_a, name="chat", allowed_regions=("us-east", "eu-west"))
    Replica.objects.create(
        organization=tenants.org_a,
        deployment=deployment,
        revision=deployment.current_revision,
        cluster_id="local-eu-west",
        state="ready",
        endpoint="http://127.0.0.1:9/",
    )
    route = create_route(tenants.org_a, "chat-default", targets=[(deployment, 100)], allowed_regions=["us-east"])
    page = Client()
    page.force_login(tenants.member_a)
    detail = page.get(f"/o/{tenants.org_a.slug}/routing/{route.pk}/").content.decode()
    assert "Nothing serves in us-east right now (deployment:chat runs in eu-west)" in detail
    assert "eu-west: outside this route&#x27;s regions" in detail and "eu-west: closed" not in detail

    # Saving a route to a provider in another region warns, and the route is still saved.
    provider = create_provider(tenants.org_a, "far", region="eu-west")
    form = {
        "name": "far-only",
        "strategy": "ordered",
        "allowed_regions": ["us-east"],
        "fallbacks": "",
        "max_attempts": 3,
        "attempt_timeout_s": 30,
        "deadline_s": 120,
        "breaker_failures": 5,
        "breaker_cooldown_s": 10,
        "targets-TOTAL_FORMS": 1,
        "targets-INITIAL_FORMS": 0,
        "targets-MIN_NUM_FORMS": 0,
        "targets-MAX_NUM_FORMS": 20,
        "targets-0-target": f"provider:{provider.pk}",
        "targets-0-provider_model": "m",
        "targets-0-weight": 100,
    }
    saved = page.post(f"/o/{tenants.org_a.slug}/routing/new/", form, follow=True).content.decode()
    assert "No target of this route can serve in us-east (provider:far/m only in eu-west)" in saved
    assert ModelRoute.objects.for_org(tenants.org_a).filter(name="far-only").exists()
    # Allowing any region clears it.
    unrestricted = page.post(f"/o/{tenants.org_a.slug}/routing/new/", {**form, "name": "anywhere", "allowed_regions": []}, follow=True)
    assert "cannot serve" not in unrestricted.content.decode() and "No target" not in unrestricted.content.decode()
