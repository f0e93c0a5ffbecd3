"""The Ray driver against a real local Ray cluster: a head (2 CPUs) and a second node that
advertises one T4 (`--num-gpus=1`, `gpu_type:T4`, no real GPU), started once for the
session with `ray start --block` on free ports. Through the control plane (deployments
services, reconcile passes, the gateway) the tiny models deploy as Serve applications,
serve traffic through the official SDK, land where their resources are, survive their
actor being killed, scale to zero and back, and leave nothing in Ray once deleted."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import openai
import pytest
import ray
from ray import serve

from deployments import services
from deployments.drivers import DriverError, ReplicaRequest, driver_for
from deployments.drivers.ray import disconnect
from deployments.local_ray import LocalRay, RayNode, local_ray_cluster, register_ray_cluster
from deployments.models import Cluster, Deployment, Quota, Replica, ReplicaEvent
from deployments.reconcile import reconcile
from tests.conftest import Tenants
from tests.factories import create_deployment, issue_key, owner_context
from tests.servers import ROOT

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]
NAMESPACE = "ray-test"
REGION = "ray-central"
T4 = "gpu_type:T4"


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[LocalRay]:
    with local_ray_cluster(ROOT, RayNode(cpus=2), RayNode(cpus=1, gpus=1, resources={T4: 1})) as cluster:
        try:
            yield cluster
        finally:
            disconnect()


@pytest.fixture
def cluster(ray_cluster: LocalRay, tenants: Tenants) -> Iterator[Cluster]:
    """The Switchboard cluster on the local Ray cluster, and quotas that allow the tests'
    deployments. Half a CPU per replica: four fit on the head, two on the T4 node."""
    registered = register_ray_cluster(
        NAMESPACE, region=REGION, address=ray_cluster.address, inventory={"CPU": 4, "T4": 1}, replica_cpus=0.5
    )
    for org in (tenants.org_a, tenants.org_b):
        Quota.objects.update_or_create(organization=org, defaults={"max_replicas": 8, "gpus": {"CPU": 8, "T4": 1}})
    yield registered
    assert _applications() == [], "a test left Serve applications behind"


def _applications() -> list[str]:
    return sorted(name for name in serve.status().applications if name.startswith(NAMESPACE + "."))


def _node_with(resource: str) -> str:
    [node] = [node["NodeID"] for node in ray.nodes() if node["Alive"] and resource in node["Resources"]]
    return str(node)


def _passes(deployment: Deployment, until: Callable[[], Any], timeout: float = 180.0, **options: Any) -> Any:
    """Reconcile passes (what the Celery beat runs) until `until` holds."""
    deadline = time.monotonic() + timeout
    while True:
        reconcile(deployment.pk, **options)
        value = until()
        if value:
            return value
        if time.monotonic() > deadline:
            states = Replica.objects.for_org(deployment.organization).filter(deployment=deployment).values_list("state", "reason")
            raise AssertionError(f"timed out reconciling {deployment.name}: {list(states)}; Serve: {serve.status().applications}")
        time.sleep(0.5)


def _ready(deployment: Deployment) -> list[Replica]:
    return list(Replica.objects.for_org(deployment.organization).filter(deployment=deployment, state=Replica.State.READY))


def _delete_and_drain(deployment: Deployment) -> None:
    services.delete_deployment(owner_context(deployment.organization), deployment)
    _passes(
        deployment,
        lambda: not Replica.objects.for_org(deployment.organization).filter(deployment=deployment).exclude(state="stopped").exists(),
    )


def test_models_serve_through_the_gateway_where_their_resources_are_and_a_killed_actor_is_replaced(
    tenants: Tenants, cluster: Cluster, live_server_url: str
) -> None:
    chat = create_deployment(tenants.org_a, name="t4-chat", model="tiny-chat", gpu_type="T4", allowed_regions=(REGION,))
    embed = create_deployment(tenants.org_a, name="cpu-embed", model="tiny-embedding", gpu_type="CPU", allowed_regions=(REGION,))
    [chat_replica] = _passes(chat, lambda: _ready(chat))
    [embed_replica] = _passes(embed, lambda: _ready(embed))

    # Placement follows resources: the T4 replica on the node that advertises gpu_type:T4.
    assert chat_replica.cluster_id == NAMESPACE
    assert chat_replica.node.endswith(_node_with(T4))
    assert chat_replica.device == "cpu (simulated T4)"
    assert embed_replica.device == "cpu" and embed_replica.node
    assert sorted(_applications()) == sorted([f"{NAMESPACE}.{chat_replica.id}", f"{NAMESPACE}.{embed_replica.id}"])

    client = openai.OpenAI(base_url=live_server_url + "/v1", api_key=issue_key(tenants.org_a).plaintext, max_retries=0, timeout=60)
    answer = client.chat.completions.create(model="t4-chat", messages=[{"role": "user", "content": "hi"}], max_tokens=3)
    assert answer.choices[0].message.content
    vectors = client.embeddings.create(model="cpu-embed", input=["on a Ray node"])
    assert len(vectors.data[0].embedding) == 32
    # The other tenant's key reaches neither deployment.
    other = openai.OpenAI(base_url=live_server_url + "/v1", api_key=issue_key(tenants.org_b).plaintext, max_retries=0, timeout=60)
    with pytest.raises(openai.NotFoundError):
        other.embeddings.create(model="cpu-embed", input=["not mine"])

    # Kill the replica's actor: Serve starts another (a new port), and the control plane
    # probes the new endpoint before it serves again. Same replica, same application.
    described = serve.get_app_handle(f"{NAMESPACE}.{embed_replica.id}").describe.remote().result(timeout_s=30)
    assert described["endpoint"] == embed_replica.endpoint
    ray.kill(ray.get_actor(described["actor_name"], namespace="serve"), no_restart=True)
    restarted = _passes(
        embed,
        lambda: [r for r in _ready(embed) if r.id == embed_replica.id and r.endpoint != embed_replica.endpoint],
    )
    assert ReplicaEvent.objects.for_org(tenants.org_a).filter(replica=embed_replica, reason__contains="new endpoint").exists()
    assert restarted[0].endpoint.startswith("http://")
    assert len(client.embeddings.create(model="cpu-embed", input=["after the restart"]).data) == 1

    for deployment in (chat, embed):
        _delete_and_drain(deployment)


def test_scales_to_zero_and_back_and_a_deleted_deployment_leaves_nothing_in_ray(tenants: Tenants, cluster: Cluster) -> None:
    deployment = create_deployment(tenants.org_b, name="scaled", model="tiny-chat", max_replicas=2, allowed_regions=(REGION,))
    replicas = Replica.objects.for_org(tenants.org_b).filter(deployment=deployment)

    def wanting(count: int) -> dict[str, Any]:
        return {"desired_replicas": lambda deployment, replicas: count}  # the autoscaler's decision

    _passes(deployment, lambda: len(_ready(deployment)) == 2, **wanting(2))
    _passes(deployment, lambda: not replicas.exclude(state="stopped").exists(), **wanting(0))
    assert _applications() == []
    deployment.refresh_from_db()
    assert deployment.status == Deployment.Status.SCALED_TO_ZERO

    [back] = _passes(deployment, lambda: _ready(deployment), **wanting(1))
    assert _applications() == [f"{NAMESPACE}.{back.id}"]

    _delete_and_drain(deployment)
    assert _applications() == []
    serve_actors = [actor["name"] for actor in ray.util.list_named_actors(all_namespaces=True) if NAMESPACE in actor["name"]]
    assert serve_actors == []


def test_a_vllm_replica_is_refused_where_the_nodes_have_no_vllm(cluster: Cluster) -> None:
    request = ReplicaRequest(
        "rep_vllm", "tiny-chat", token="t" * 40, gpu_type="T4", gpu_count=1, runtime="vllm", artifact="HuggingFaceTB/SmolLM2-135M"
    )
    with pytest.raises(DriverError, match="no `vllm` command"):
        driver_for(cluster).create_replica(request)
    assert _applications() == []
