"""During a rollout or a rollback the replicas of the revision being replaced keep serving
until they drain: the gateway's snapshot gives each replica its own revision's model."""

from __future__ import annotations

import pytest

from deployments import services
from deployments.models import Cluster, Deployment, Replica
from routing.gateway.snapshot import load_snapshot
from tenancy.models import Organization
from tests.conftest import Tenants
from tests.factories import create_deployment, owner_context

pytestmark = pytest.mark.django_db


def _ready_replica(org: Organization, deployment: Deployment, url: str) -> Replica:
    return Replica.objects.create(
        organization=org,
        deployment=deployment,
        revision=deployment.current_revision,
        cluster=Cluster.objects.get(name="local-us-east"),
        state=Replica.State.READY,
        endpoint=url,
    )


def _models_by_endpoint(org: Organization, name: str) -> dict[str, tuple[str, str]]:
    [target] = load_snapshot(org.pk).routes[name].targets
    return {endpoint.base_url: (endpoint.upstream_model, endpoint.revision_id) for endpoint in target.endpoints}


def test_each_replica_is_sent_its_own_revisions_model_through_a_rollout_and_a_rollback(tenants: Tenants) -> None:
    deployment = create_deployment(tenants.org_a, name="rolling", model="tiny-chat", max_replicas=2)
    first = deployment.current_revision
    _ready_replica(tenants.org_a, deployment, "http://old.test")
    # The second tenant's deployment of the same name and another model stays its own.
    other = create_deployment(tenants.org_b, name="rolling", model="smollm2-135m-instruct")
    _ready_replica(tenants.org_b, other, "http://globex.test")

    services.update_deployment(owner_context(tenants.org_a), deployment, model="smollm2-135m-instruct")
    deployment.refresh_from_db()
    second = deployment.current_revision
    assert second is not None and first is not None and second.pk != first.pk
    # Mid-rollout: the old replica still READY, the new one READY too.
    _ready_replica(tenants.org_a, deployment, "http://new.test")
    assert _models_by_endpoint(tenants.org_a, "rolling") == {
        "http://old.test/v1": ("tiny-chat", first.pk),
        "http://new.test/v1": ("smollm2-135m-instruct", second.pk),
    }

    services.rollback(owner_context(tenants.org_a), deployment)
    deployment.refresh_from_db()
    assert deployment.current_revision_id == first.pk
    # Mid-rollback: the same two replicas, each still sent the model it loaded.
    assert _models_by_endpoint(tenants.org_a, "rolling") == {
        "http://old.test/v1": ("tiny-chat", first.pk),
        "http://new.test/v1": ("smollm2-135m-instruct", second.pk),
    }
    assert _models_by_endpoint(tenants.org_b, "rolling") == {"http://globex.test/v1": ("smollm2-135m-instruct", other.current_revision_id)}
