"""Environments through the management API: a production deployment's staging environment
is a deployment of its own with its own gateway name, made as a copy of production; one
action promotes staging's current revision to production with the same model artifact and
settings, at once or by canary, audited once; another tenant gets 404, a viewer 403."""

from __future__ import annotations

import pytest
from django.test import Client

from deployments import services
from deployments.models import Canary, Deployment, DeploymentRevision
from routing.gateway.snapshot import load_snapshot
from tenancy.models import AuditEntry
from tests.conftest import Tenants
from tests.factories import create_deployment, ensure_clusters, owner_context
from tests.helpers import session_api

pytestmark = pytest.mark.django_db


@pytest.fixture
def member(tenants: Tenants):  # type: ignore[no-untyped-def]
    ensure_clusters()
    return session_api(tenants.member_a, tenants.org_a)


def _production(tenants: Tenants, **spec: object) -> Deployment:
    return create_deployment(tenants.org_a, name="chat", environment="production", **spec)


def _spec(revision: DeploymentRevision) -> tuple[object, ...]:
    return (
        revision.model,
        revision.gpu_type_id,
        revision.allowed_regions,
        revision.min_replicas,
        revision.max_replicas,
        revision.target_concurrency,
        revision.scale_down_delay_s,
        revision.idle_timeout_s,
    )


def test_staging_starts_as_a_copy_of_production_under_its_own_gateway_name(tenants: Tenants, member) -> None:  # type: ignore[no-untyped-def]
    production = _production(tenants)
    url = f"/api/v1/deployments/{production.pk}/staging/"
    assert member.get(url).status_code == 404  # none yet
    created = member.post(url, {"changes": {"min_replicas": 0}}, format="json")
    assert created.status_code == 201, created.content
    staging = created.json()
    assert (staging["name"], staging["environment"], staging["production"]) == ("chat-staging", "staging", production.pk)
    assert (staging["revision"]["model"], staging["revision"]["max_replicas"], staging["revision"]["min_replicas"]) == ("tiny-chat", 1, 0)
    assert member.get(url).json()["id"] == staging["id"]
    assert member.get(f"/api/v1/deployments/{production.pk}/").json()["staging"] == staging["id"]
    # Each environment answers on its own name.
    routes = load_snapshot(tenants.org_a.pk).routes
    assert routes["chat"].targets[0].deployment_id == production.pk
    assert routes["chat-staging"].targets[0].deployment_id == staging["id"]
    # One staging per production; none of a staging or of a development deployment.
    again = member.post(url, {"name": "chat-qa"}, format="json")
    assert again.status_code == 409 and "chat-staging" in again.json()["error"]["message"]
    assert member.post(f"/api/v1/deployments/{staging['id']}/staging/", {}, format="json").status_code == 400
    dev = create_deployment(tenants.org_a, name="scratch")
    refused = member.post(f"/api/v1/deployments/{dev.pk}/staging/", {}, format="json")
    assert refused.status_code == 400 and "environment=production" in refused.json()["error"]["message"]
    # Staging is a link, not a label: it cannot be set, unset or made by hand.
    for target, environment in ((dev.pk, "staging"), (staging["id"], "production")):
        answer = member.patch(f"/api/v1/deployments/{target}/", {"environment": environment}, format="json")
        assert answer.status_code == 400, answer.content
    made = member.post(
        "/api/v1/deployments/",
        {"name": "x", "model": "tiny-chat", "gpu_type": "CPU", "allowed_regions": ["us-east"], "environment": "staging"},
        format="json",
    )
    assert made.status_code == 400 and "staging/" in made.content.decode()
    # Production stays production while staging promotes to it, and outlives it only once it is gone.
    assert member.patch(f"/api/v1/deployments/{production.pk}/", {"environment": "development"}, format="json").status_code == 409
    blocked = member.delete(f"/api/v1/deployments/{production.pk}/")
    assert blocked.status_code == 409 and "chat-staging" in blocked.json()["error"]["message"]
    assert member.delete(f"/api/v1/deployments/{staging['id']}/").status_code == 204
    assert member.get(url).status_code == 404
    assert member.delete(f"/api/v1/deployments/{production.pk}/").status_code == 204


def test_an_environment_label_alone_rolls_nothing_out(tenants: Tenants, member) -> None:  # type: ignore[no-untyped-def]
    deployment = create_deployment(tenants.org_a, name="chat")
    answer = member.patch(f"/api/v1/deployments/{deployment.pk}/", {"environment": "production"}, format="json")
    assert answer.status_code == 200, answer.content
    assert (answer.json()["environment"], answer.json()["revision"]["number"]) == ("production", 1)
    assert DeploymentRevision.objects.for_org(tenants.org_a).filter(deployment=deployment).count() == 1
    same = member.patch(f"/api/v1/deployments/{deployment.pk}/", {"max_replicas": 1}, format="json")  # already so
    assert same.status_code == 200 and same.json()["revision"]["number"] == 1


def test_promotion_copies_staging_exactly_and_is_audited_once(tenants: Tenants, member) -> None:  # type: ignore[no-untyped-def]
    production = _production(tenants)
    staging_id = member.post(f"/api/v1/deployments/{production.pk}/staging/", {}, format="json").json()["id"]
    promote = f"/api/v1/deployments/{staging_id}/promote-to-production/"
    nothing = member.post(promote, {}, format="json")
    assert nothing.status_code == 409 and "already runs" in nothing.json()["error"]["message"]
    # Try a new model and more replicas on staging, then promote it.
    changed = member.patch(
        f"/api/v1/deployments/{staging_id}/", {"model": "tiny-embedding", "max_replicas": 2, "allowed_regions": ["eu-west"]}, format="json"
    )
    assert changed.status_code == 200 and changed.json()["revision"]["number"] == 2
    earlier = set(AuditEntry.objects.for_org(tenants.org_a).values_list("pk", flat=True))
    promoted = member.post(promote, {}, format="json")
    assert promoted.status_code == 200, promoted.content
    body = promoted.json()
    assert (body["id"], body["status"], body["revision"]["number"]) == (production.pk, "updating", 2)
    assert body["revision"]["promoted_from"] == {"deployment": "chat-staging", "revision": 2}
    staging_revision = DeploymentRevision.objects.for_org(tenants.org_a).get(deployment_id=staging_id, number=2)
    production.refresh_from_db()
    assert _spec(production.revision) == _spec(staging_revision)
    assert production.revision.promoted_from_id == staging_revision.pk
    entries = list(AuditEntry.objects.for_org(tenants.org_a).exclude(pk__in=earlier).values_list("action", "target_id", "after"))
    assert [(action, target) for action, target, _ in entries] == [("deployment.promoted_from_staging", production.pk)]
    assert entries[0][2]["promoted_from"] == {"deployment": "chat-staging", "revision": 2}
    # Promoting the same revision again would change nothing.
    assert member.post(promote, {}, format="json").status_code == 409


def test_promotion_can_keep_productions_scaling_or_go_by_canary(tenants: Tenants, member) -> None:  # type: ignore[no-untyped-def]
    production = _production(tenants, min_replicas=1)
    staging_id = member.post(f"/api/v1/deployments/{production.pk}/staging/", {"changes": {"min_replicas": 0}}, format="json").json()["id"]
    member.patch(f"/api/v1/deployments/{staging_id}/", {"model": "tiny-embedding"}, format="json")
    promote = f"/api/v1/deployments/{staging_id}/promote-to-production/"
    answer = member.post(promote, {"keep_production_scaling": True, "canary": {"traffic_percent": 20, "window_s": 60}}, format="json")
    assert answer.status_code == 200, answer.content
    canary = Canary.objects.for_org(tenants.org_a).get(deployment=production)
    assert (canary.state, canary.traffic_percent, canary.stable_revision.number, canary.canary_revision.number) == ("running", 20, 1, 2)
    candidate = canary.canary_revision
    assert (candidate.model, candidate.min_replicas, candidate.max_replicas) == ("tiny-embedding", 1, 1)  # production's scaling kept
    production.refresh_from_db()
    assert production.revision.number == 1  # the canary decides
    audit = AuditEntry.objects.for_org(tenants.org_a).filter(action="deployment.canary_started").get()
    assert audit.after["promoted_from"] == {"deployment": "chat-staging", "revision": 2}
    # While it runs, another promotion waits.
    member.patch(f"/api/v1/deployments/{staging_id}/", {"max_replicas": 2}, format="json")
    busy = member.post(promote, {}, format="json")
    assert busy.status_code == 409 and "canary" in busy.json()["error"]["message"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"canary": {"traffic_percent": 100}}, "traffic_percent"),
        ({"keep_production_scaling": "sometimes"}, "keep_production_scaling"),
    ],
)
def test_bad_promotions_say_what_to_fix(tenants: Tenants, member, body: dict[str, object], field: str) -> None:  # type: ignore[no-untyped-def]
    production = _production(tenants)
    staging_id = member.post(f"/api/v1/deployments/{production.pk}/staging/", {"changes": {"max_replicas": 1}}, format="json").json()["id"]
    answer = member.post(f"/api/v1/deployments/{staging_id}/promote-to-production/", body, format="json")
    assert answer.status_code == 400 and field in answer.content.decode()
    # Production itself is no staging environment.
    refused = member.post(f"/api/v1/deployments/{production.pk}/promote-to-production/", {}, format="json")
    assert refused.status_code == 400 and "not a staging environment" in refused.json()["error"]["message"]


def test_another_tenant_gets_404_and_a_viewer_is_refused(tenants: Tenants, member) -> None:  # type: ignore[no-untyped-def]
    production = _production(tenants)
    staging_url = f"/api/v1/deployments/{production.pk}/staging/"
    staging_id = member.post(staging_url, {"changes": {"max_replicas": 1}}, format="json").json()["id"]
    promote = f"/api/v1/deployments/{staging_id}/promote-to-production/"
    stranger = session_api(tenants.owner_b, tenants.org_b)
    assert stranger.get(staging_url).status_code == 404
    assert stranger.post(staging_url, {}, format="json").status_code == 404
    assert stranger.post(promote, {}, format="json").status_code == 404
    # The other tenant's own production cannot get this staging's name taken from it, nor see it.
    theirs = create_deployment(tenants.org_b, name="chat", environment="production")
    assert (
        session_api(tenants.owner_b, tenants.org_b).post(f"/api/v1/deployments/{theirs.pk}/staging/", {}, format="json").status_code == 201
    )
    viewer = session_api(tenants.viewer_a, tenants.org_a)
    assert viewer.get(staging_url).status_code == 200
    assert viewer.post(promote, {}, format="json").status_code == 403
    production.refresh_from_db()
    assert production.revision.number == 1


def _browser(user) -> Client:  # type: ignore[no-untyped-def]
    client = Client()
    client.force_login(user)
    return client


def test_the_console_creates_staging_shows_what_promotion_changes_and_promotes(tenants: Tenants) -> None:
    production = _production(tenants, min_replicas=1)
    page_url = f"/o/{tenants.org_a.slug}/deployments/{production.pk}/"
    member = _browser(tenants.member_a)
    page = member.get(page_url).content.decode()
    assert 'data-testid="staging-create"' in page and 'value="chat-staging"' in page
    viewer = _browser(tenants.viewer_a)
    assert 'data-testid="staging-create"' not in viewer.get(page_url).content.decode()
    assert viewer.post(page_url + "staging/", {"scale_to_zero": "on"}).status_code == 403
    assert _browser(tenants.owner_b).post(page_url + "staging/", {"scale_to_zero": "on"}).status_code == 404

    made = member.post(page_url + "staging/", {"name": "chat-staging", "scale_to_zero": "on"})
    staging = Deployment.objects.for_org(tenants.org_a).get(name="chat-staging")
    assert made.status_code == 302 and made["Location"].endswith(f"/deployments/{staging.pk}/")
    assert (staging.environment, staging.production_id, staging.revision.min_replicas) == ("staging", production.pk, 0)
    staging_url = f"/o/{tenants.org_a.slug}/deployments/{staging.pk}/"
    assert "chat-staging</a>, revision 1" in member.get(page_url).content.decode()
    # Only the scaling differs yet: promotion keeps production's by default, so nothing would change.
    staging_page = member.get(staging_url).content.decode()
    assert '<th scope="row">min replicas</th><td>1</td><td>0 <span class="muted">(unless production\'s scaling is kept)' in staging_page
    kept = member.post(staging_url + "promote-to-production/", {"keep_production_scaling": "on"}, follow=True)
    assert "already runs" in kept.content.decode()

    member.post(staging_url + "scale/", {"min_replicas": 0, "max_replicas": 1})  # unchanged: no new revision
    services.update_deployment(owner_context(tenants.org_a), staging, model="tiny-embedding")
    staging_page = member.get(staging_url).content.decode()
    assert '<th scope="row">model</th><td>tiny-chat</td><td>tiny-embedding</td>' in staging_page
    assert 'data-testid="promote-to-production"' in staging_page
    assert viewer.post(staging_url + "promote-to-production/", {"keep_production_scaling": "on"}).status_code == 403
    promoted = member.post(staging_url + "promote-to-production/", {"keep_production_scaling": "on"})
    assert promoted.status_code == 302 and promoted["Location"].endswith(f"/deployments/{production.pk}/")
    production.refresh_from_db()
    assert (production.revision.number, production.revision.model, production.revision.min_replicas) == (2, "tiny-embedding", 1)
    after = member.get(staging_url).content.decode()
    assert '<th scope="row">model</th>' not in after and '<th scope="row">min replicas</th>' in after  # only the scaling differs now
    # Production cannot be deleted from under its staging environment; the page says why.
    refused = member.post(page_url + "delete/", follow=True).content.decode()
    assert "chat-staging is this deployment&#x27;s staging environment; delete it first." in refused
    assert Deployment.objects.for_org(tenants.org_a).get(pk=production.pk).deleted_at is None
