"""The Kubernetes driver's state mapping and its API calls.

The pods in k8s_objects/ are written in the shape the API server returns them (a Deployment's
pod on a GKE T4 node: unschedulable, image pull back-off, OOMKilled in a crash loop, loading,
ready, terminating); they are parsed by the official client's own deserializer into V1Pod.
The driver's calls go through the real client, over HTTP, to a fake API server
(tests/controlplane/kube_api.py). No real cluster is involved."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from deployments.drivers import driver_for
from deployments.drivers.base import DriverError, ReplicaRequest
from deployments.drivers.kubernetes import KubernetesConnection, KubernetesDriver, object_name, observe
from deployments.models import Cluster
from tests.controlplane.kube_api import FakeKubernetes, fake_kubernetes, query_one

OBJECTS = Path(__file__).parent / "k8s_objects"
REPLICA = "rep_4FqZ0aB7cD9eF1gH2iJ3"
OTHER = "rep_Zz9yX8wV7uT6sR5qP4oN"  # another tenant's replica in the same namespace
ENDPOINT = f"http://{object_name(REPLICA)}.switchboard.svc.cluster.local"


def recorded(name: str) -> dict[str, Any]:
    return json.loads((OBJECTS / f"{name}.json").read_text())


def pod(name: str) -> client.V1Pod:
    return client.ApiClient().deserialize((OBJECTS / f"{name}.json").read_text(), "V1Pod", "application/json")


def seen(name: str) -> Any:
    return observe(REPLICA, pods=[pod(name)], workload_exists=True, endpoint=ENDPOINT)


def test_a_pod_no_node_can_take_is_pending_and_says_why() -> None:
    replica = seen("pod-pending-unschedulable")
    assert replica.running and replica.exit_code is None and replica.node == ""
    assert replica.detail.startswith("waiting for a node (Unschedulable): 0/4 nodes are available: 1 Insufficient nvidia.com/gpu")


def test_an_image_that_cannot_be_pulled_is_not_running_and_says_so() -> None:
    replica = seen("pod-image-pull-backoff")
    assert not replica.running and replica.exit_code is None
    assert replica.detail.startswith("image pull failed (ImagePullBackOff): Back-off pulling image")
    assert "401 Unauthorized" in replica.detail


def test_an_oomkilled_server_is_not_running_with_exit_code_137() -> None:
    replica = seen("pod-oomkilled")
    assert not replica.running and replica.exit_code == 137
    assert replica.detail == "OOMKilled with code 137: out of memory, killed by the kernel; restarted 3 times"
    assert replica.node == "gke-gpu-pool-t4-7c2f1a9e-q4zt"


def test_a_ready_pod_reports_its_node_and_gpu() -> None:
    replica = seen("pod-ready")
    assert replica.running and replica.detail == "ready" and replica.endpoint == ENDPOINT
    assert (replica.node, replica.device) == ("gke-gpu-pool-t4-7c2f1a9e-q4zt", "cuda (1x T4)")


def test_a_loading_pod_is_running_but_not_ready() -> None:
    replica = seen("pod-loading")
    assert replica.running and replica.detail == "running, not ready"


def test_a_terminating_pod_still_drains_and_a_replacement_pod_is_preferred() -> None:
    draining = seen("pod-terminating")
    assert draining.running and draining.detail == "terminating since 2026-11-30T10:02:31+00:00"
    replacement = observe(REPLICA, pods=[pod("pod-terminating"), pod("pod-loading")], workload_exists=True, endpoint=ENDPOINT)
    assert replacement.detail == "running, not ready"


def test_an_inference_service_without_pods_says_what_kserve_reports() -> None:
    status = recorded("inferenceservice-not-ready")["status"]
    replica = observe(REPLICA, pods=[], workload_exists=True, endpoint=ENDPOINT, kserve_status=status)
    assert (
        replica.running and replica.detail == "no pod yet; InferenceService PredictorReady: Deployment does not have minimum availability."
    )


@pytest.fixture
def kube() -> Iterator[FakeKubernetes]:
    with fake_kubernetes() as fake:
        yield fake


def driver(kube: FakeKubernetes, **fields: Any) -> KubernetesDriver:
    connection = KubernetesConnection.parse({"namespace": "switchboard", "image": "registry.example.com/switchboard:1.4.0", **fields})
    return KubernetesDriver(connection, api=kube.api_client())


def request(replica_id: str = REPLICA) -> ReplicaRequest:
    return ReplicaRequest(replica_id=replica_id, model="smollm2-135m-instruct", token="tok_secret", gpu_type="T4", gpu_count=1)


def test_create_makes_a_secret_service_and_deployment_once(kube: FakeKubernetes) -> None:
    cluster = driver(kube)
    first = cluster.create_replica(request())
    assert first.running and first.endpoint == ENDPOINT and first.device == "cuda (1x T4)"
    again = cluster.create_replica(request())  # 409 AlreadyExists on every object: already created
    assert again.endpoint == first.endpoint
    name = object_name(REPLICA)
    assert (kube.names("secrets"), kube.names("services"), kube.names("deployments")) == ([f"{name}-token"], [name], [name])
    assert [method for method, _, _ in kube.requests].count("POST") == 6  # three objects, each created once and refused once
    assert kube.objects[("secrets", "switchboard", f"{name}-token")]["stringData"] == {"token": "tok_secret"}


def test_list_maps_each_replicas_pods_and_sees_a_deployment_without_pods(kube: FakeKubernetes) -> None:
    cluster = driver(kube)
    cluster.create_replica(request())
    cluster.create_replica(request(OTHER))
    kube.add("pods", recorded("pod-oomkilled"))  # REPLICA's pod, as the kubelet reports it
    listed = {replica.replica_id: replica for replica in cluster.list_replicas()}
    assert set(listed) == {REPLICA, OTHER}
    assert not listed[REPLICA].running and listed[REPLICA].exit_code == 137
    assert listed[OTHER].running and listed[OTHER].detail == "no pod yet"
    (pod_list,) = [query for method, path, query in kube.requests if method == "GET" and path.endswith("/pods")]
    assert query_one(pod_list, "labelSelector") == "app.kubernetes.io/managed-by=switchboard"


def test_delete_drains_the_pods_with_the_grace_period_and_is_idempotent(kube: FakeKubernetes) -> None:
    cluster = driver(kube)
    cluster.create_replica(request())
    cluster.create_replica(request(OTHER))
    kube.add("pods", recorded("pod-ready"))
    cluster.delete_replica(REPLICA, drain_seconds=12.5)
    name = object_name(REPLICA)
    assert name not in kube.names("deployments") and name not in kube.names("services")
    assert f"{name}-token" not in kube.names("secrets")
    (pod_delete,) = [query for method, path, query in kube.requests if method == "DELETE" and path.endswith("/pods")]
    assert query_one(pod_delete, "gracePeriodSeconds") == "13"
    assert query_one(pod_delete, "labelSelector") == f"app.kubernetes.io/managed-by=switchboard,switchboard.io/replica-id={REPLICA}"
    (deployment_delete,) = [query for method, path, query in kube.requests if method == "DELETE" and path.endswith(f"deployments/{name}")]
    assert query_one(deployment_delete, "propagationPolicy") == "Background"
    listed = {replica.replica_id: replica for replica in cluster.list_replicas()}  # the pod drains within its grace period
    assert listed[REPLICA].running and listed[REPLICA].detail.startswith("terminating")
    assert listed[OTHER].detail == "no pod yet"  # the other tenant's replica is untouched
    assert object_name(OTHER) in kube.names("deployments")
    cluster.delete_replica(REPLICA, drain_seconds=0)  # 404 on every object: already gone


def test_kserve_clusters_get_one_inference_service_per_replica(kube: FakeKubernetes) -> None:
    cluster = driver(kube, kserve=True)
    created = cluster.create_replica(request())
    cluster.create_replica(request())
    name = object_name(REPLICA)
    assert created.endpoint == f"http://{name}-predictor.switchboard.svc.cluster.local"
    assert kube.names("inferenceservices") == [name] and kube.names("deployments") == [] and kube.names("services") == []
    isvc = kube.objects[("inferenceservices", "switchboard", name)]
    isvc["status"] = recorded("inferenceservice-not-ready")["status"]
    (listed,) = cluster.list_replicas()
    assert listed.running and "Deployment does not have minimum availability" in listed.detail
    cluster.delete_replica(REPLICA, drain_seconds=30)
    cluster.delete_replica(REPLICA, drain_seconds=30)
    assert kube.names("inferenceservices") == [] and kube.names("secrets") == []


def test_an_api_server_that_refuses_or_is_unreachable_is_a_driver_error(kube: FakeKubernetes) -> None:
    cluster = driver(kube, namespace="elsewhere")
    kube.url = "http://127.0.0.1:9"  # nothing listens on the discard port
    with pytest.raises(DriverError, match="unreachable"):
        KubernetesDriver(cluster.connection, api=kube.api_client()).list_replicas()


def test_driver_for_builds_a_kubernetes_driver_from_a_kubeconfig(
    kube: FakeKubernetes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kubeconfig = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "gpu", "cluster": {"server": kube.url}}],
        "users": [{"name": "switchboard", "user": {"token": "sa-token"}}],
        "contexts": [{"name": "gpu", "context": {"cluster": "gpu", "user": "switchboard"}}],
        "current-context": "gpu",
    }
    (tmp_path / "config").write_text(json.dumps(kubeconfig))
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "config"))
    cluster = Cluster(name="gke-us", region="us-east", driver=Cluster.Driver.KUBERNETES, connection={"namespace": "switchboard"})
    assert driver_for(cluster).list_replicas() == []
    assert kube.requests[0][1] == "/api/v1/namespaces/switchboard/pods"
    assert driver_for(cluster) is driver_for(cluster)  # one client per connection, reused
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing"))
    elsewhere = Cluster(name="gke-eu", region="eu-west", driver=Cluster.Driver.KUBERNETES, connection={"namespace": "other"})
    with pytest.raises(DriverError, match="no Kubernetes credentials"):
        driver_for(elsewhere)
