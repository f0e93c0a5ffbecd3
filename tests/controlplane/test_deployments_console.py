from __future__ import annotations

from django.test import Client

from deployments.models import Deployment
from tests.conftest import Tenants
from tests.factories import create_deployment, ensure_clusters

FORM = {
    "name": "support-bot",
    "model": "tiny-chat",
    "gpu_type": "T4",
    "allowed_regions": ["us-east", "eu-west"],
    "min_replicas": "1",
    "max_replicas": "2",
    "target_concurrency": "4",
    "scale_down_delay_s": "60",
    "idle_timeout_s": "300",
    "environment": "production",
}


def _client(user) -> Client:  # type: ignore[no-untyped-def]
    client = Client()
    client.force_login(user)
    return client


def test_the_deploy_form_estimates_cost_then_deploys(tenants: Tenants) -> None:
    ensure_clusters()
    client = _client(tenants.member_a)
    url = f"/o/{tenants.org_a.slug}/deployments/new/"
    estimate = client.post(url, {**FORM, "action": "estimate"})
    assert estimate.status_code == 200
    assert "$0.5260/h</strong> at min replicas" in estimate.content.decode() and "$1.0520/h" in estimate.content.decode()
    assert not Deployment.objects.for_org(tenants.org_a).exists()
    created = client.post(url, {**FORM, "action": "create"})
    deployment = Deployment.objects.for_org(tenants.org_a).get()
    assert created.status_code == 302 and created["Location"].endswith(f"/deployments/{deployment.id}/")
    page = client.get(created["Location"]).content.decode()
    assert "support-bot" in page and "Deploying" in page and "us-east, eu-west" in page


def test_form_errors_name_the_field(tenants: Tenants) -> None:
    ensure_clusters()
    response = _client(tenants.member_a).post(
        f"/o/{tenants.org_a.slug}/deployments/new/", {**FORM, "min_replicas": "5", "max_replicas": "2"}
    )
    assert response.status_code == 400 and "cannot exceed max_replicas" in response.content.decode()
    response = _client(tenants.member_a).post(f"/o/{tenants.org_a.slug}/deployments/new/", {**FORM, "gpu_type": "H100"})
    assert response.status_code == 400 and "H100 quota is 0" in response.content.decode()


def test_viewers_see_but_cannot_change(tenants: Tenants) -> None:
    deployment = create_deployment(tenants.org_a)
    viewer = _client(tenants.viewer_a)
    base = f"/o/{tenants.org_a.slug}/deployments"
    assert viewer.get(f"{base}/").status_code == 200
    page = viewer.get(f"{base}/{deployment.id}/").content.decode()
    assert deployment.name in page and "Delete" not in page
    for action in ("scale", "rollback", "delete", "promote"):
        assert viewer.post(f"{base}/{deployment.id}/{action}/", {"min_replicas": 0, "max_replicas": 1, "revision": 1}).status_code == 403
    assert viewer.get(f"{base}/new/").status_code == 403


def test_scaling_from_the_console_makes_a_revision(tenants: Tenants) -> None:
    deployment = create_deployment(tenants.org_a, max_replicas=1)
    client = _client(tenants.member_a)
    response = client.post(f"/o/{tenants.org_a.slug}/deployments/{deployment.id}/scale/", {"min_replicas": 0, "max_replicas": 2})
    assert response.status_code == 302
    deployment.refresh_from_db()
    assert deployment.current_revision.number == 2 and deployment.current_revision.max_replicas == 2


def test_a_scaling_change_saved_without_going_live_waits_for_its_promotion(tenants: Tenants) -> None:
    deployment = create_deployment(tenants.org_a, max_replicas=1)
    client = _client(tenants.member_a)
    base = f"/o/{tenants.org_a.slug}/deployments/{deployment.id}"
    assert 'id="id_save_only"' in client.get(f"{base}/").content.decode()
    response = client.post(f"{base}/scale/", {"min_replicas": 0, "max_replicas": 3, "save_only": "on"}, follow=True)
    assert "promote it under Revisions" in response.content.decode()
    deployment.refresh_from_db()
    assert deployment.current_revision.number == 1 and deployment.current_revision.max_replicas == 1  # still live
    assert client.post(f"{base}/promote/", {"revision": 2}).status_code == 302
    deployment.refresh_from_db()
    assert deployment.current_revision.number == 2 and deployment.current_revision.max_replicas == 3
