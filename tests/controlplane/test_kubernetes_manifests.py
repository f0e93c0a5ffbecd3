"""The Kubernetes driver's manifests, checked against the published models: the official
`kubernetes` client's model classes (pydantic models that refuse unknown fields) for
Secrets, Deployments and Services, and KServe's InferenceService CRD schema (v0.20.0, as
published in its repository) for InferenceServices. The `kserve` SDK cannot be installed
beside this project's pins (every release needs psutil<6 and protobuf<7), so its schema
stands in for its model classes. No API server is involved."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from kubernetes import client

from deployments.drivers.base import DriverError, ReplicaRequest
from deployments.drivers.kubernetes import (
    KubernetesConnection,
    inference_service,
    object_name,
    replica_deployment,
    replica_endpoint,
    replica_secret,
    replica_service,
)
from modelserver.auth import API_KEY_VARIABLE

OBJECTS = Path(__file__).parent / "k8s_objects"
TOKEN = "tok_9sQ2mV7xL4pR8wZ1kN6b"
sanitize = client.ApiClient().sanitize_for_serialization
deserialize = client.ApiClient().deserialize


def connection(**fields: Any) -> KubernetesConnection:
    return KubernetesConnection.parse({"namespace": "switchboard", "image": "registry.example.com/switchboard:1.4.0", **fields})


def request(**fields: Any) -> ReplicaRequest:
    defaults: dict[str, Any] = dict(replica_id="rep_4FqZ0aB7cD9eF1gH2iJ3", model="smollm2-135m-instruct", token=TOKEN)
    return ReplicaRequest(**{**defaults, **fields})


def round_trip(obj: Any, kind: str) -> dict[str, Any]:
    """Serializes as the client sends it, parses it back into the published model, and
    checks nothing was lost on the way."""
    data = sanitize(obj)
    again = deserialize(json.dumps(data), kind, "application/json")
    assert sanitize(again) == data
    return data


def isvc_schema() -> dict[str, Any]:
    return json.loads((OBJECTS / "kserve-v0.20.0-inferenceservice-schema.json").read_text())["openAPIV3Schema"]


def unknown_fields(value: Any, schema: dict[str, Any], path: str = "") -> list[str]:
    """Fields the CRD's structural schema does not declare: the API server would prune
    them (or refuse them under strict field validation)."""
    if schema.get("x-kubernetes-preserve-unknown-fields") or not isinstance(value, dict | list):
        return []
    if isinstance(value, list):
        return [bad for i, item in enumerate(value) for bad in unknown_fields(item, schema.get("items", {}), f"{path}[{i}]")]
    if "properties" not in schema:
        extra = schema.get("additionalProperties")
        return [bad for k, v in value.items() for bad in unknown_fields(v, extra, f"{path}.{k}")] if isinstance(extra, dict) else []
    found = [f"{path}.{key}" for key in value if key not in schema["properties"]]
    return found + [
        bad for k, v in value.items() if k in schema["properties"] for bad in unknown_fields(v, schema["properties"][k], f"{path}.{k}")
    ]


def test_a_deployment_for_a_gpu_replica_requests_and_limits_its_gpus_and_lands_on_its_gpu_type() -> None:
    data = round_trip(replica_deployment(request(gpu_type="T4", gpu_count=2, memory_gb=6), connection()), "V1Deployment")
    assert data["spec"]["replicas"] == 1 and data["spec"]["strategy"] == {"type": "Recreate"}
    pod = data["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["resources"]["limits"] == {"memory": "7Gi", "nvidia.com/gpu": "2"}
    assert container["resources"]["requests"] == {"cpu": "1", "memory": "7Gi", "nvidia.com/gpu": "2"}
    assert pod["nodeSelector"] == {"nvidia.com/gpu.product": "Tesla-T4"}  # NVIDIA GPU feature discovery's label
    assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert container["command"] == ["python", "-m", "modelserver"]
    assert container["args"][:2] == ["--model", "smollm2-135m-instruct"]


@pytest.mark.parametrize(
    ("labels", "gpu_type", "expected"),
    [
        ("nvidia-gfd", "H100", {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}),
        ("nvidia-gfd", "A10G", {"nvidia.com/gpu.product": "NVIDIA-A10G"}),
        ("gke", "L4", {"cloud.google.com/gke-accelerator": "nvidia-l4"}),
        ("gke", "T4", {"cloud.google.com/gke-accelerator": "nvidia-tesla-t4"}),
        ({"H100": {"node.example.com/pool": "h100-spot"}}, "H100", {"node.example.com/pool": "h100-spot"}),
    ],
)
def test_each_gpu_type_selects_the_nodes_its_cluster_labels_it_with(labels: Any, gpu_type: str, expected: dict[str, str]) -> None:
    pod = round_trip(replica_deployment(request(gpu_type=gpu_type, gpu_count=1), connection(node_labels=labels)), "V1Deployment")
    assert pod["spec"]["template"]["spec"]["nodeSelector"] == expected


def test_a_cpu_replica_asks_for_no_gpu_and_no_gpu_node() -> None:
    pod = round_trip(replica_deployment(request(memory_gb=2), connection()), "V1Deployment")["spec"]["template"]["spec"]
    assert "nodeSelector" not in pod and "tolerations" not in pod
    assert pod["containers"][0]["resources"] == {"limits": {"memory": "3Gi"}, "requests": {"cpu": "1", "memory": "3Gi"}}


def test_a_model_registered_by_hugging_face_repo_is_fetched_by_its_pod() -> None:
    hub = request(model="acme-chat", artifact="hf://acme/tiny-chat@main", task="chat")
    args = round_trip(replica_deployment(hub, connection()), "V1Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[:2] == ["--model", "acme-chat"] and args[-4:] == ["--artifact", "hf://acme/tiny-chat@main", "--task", "chat"]


def test_a_gpu_type_the_cluster_cannot_place_is_refused_with_what_to_set() -> None:
    with pytest.raises(DriverError, match="node_labels do not say which nodes carry A10G"):
        replica_deployment(request(gpu_type="A10G", gpu_count=1), connection(node_labels="gke"))  # GKE has no A10G


def test_probes_watch_health_on_the_server_port_and_allow_for_loading() -> None:
    container = round_trip(replica_deployment(request(), connection()), "V1Deployment")["spec"]["template"]["spec"]["containers"][0]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"path": "/health", "port": 8080}
    assert container["startupProbe"]["failureThreshold"] * container["startupProbe"]["periodSeconds"] == 900  # 15 minutes to load
    assert container["ports"] == [{"containerPort": 8080, "name": "http", "protocol": "TCP"}]


def test_the_token_is_only_in_the_secret_and_the_server_reads_it_by_reference() -> None:
    replica, where = request(env={"HF_HUB_OFFLINE": "1"}), connection()
    secret = round_trip(replica_secret(replica, where), "V1Secret")
    assert secret["stringData"] == {"token": TOKEN} and secret["metadata"]["name"] == f"{object_name(replica.replica_id)}-token"
    deployment = round_trip(replica_deployment(replica, where), "V1Deployment")
    assert TOKEN not in json.dumps(deployment) and TOKEN not in json.dumps(inference_service(replica, connection(kserve=True)))
    env = deployment["spec"]["template"]["spec"]["containers"][0]["env"]
    assert env[0] == {"name": API_KEY_VARIABLE, "valueFrom": {"secretKeyRef": {"key": "token", "name": secret["metadata"]["name"]}}}
    assert env[1] == {"name": "HF_HUB_OFFLINE", "value": "1"}
    with pytest.raises(DriverError, match="cannot be set"):
        replica_deployment(request(env={API_KEY_VARIABLE: "plain"}), where)


def test_every_object_carries_the_replica_id_and_switchboard_labels() -> None:
    replica, where = request(), connection()
    expected = {
        "app.kubernetes.io/managed-by": "switchboard",
        "switchboard.io/replica-id": replica.replica_id,
        "switchboard.io/gpu-type": "CPU",
    }
    deployment = round_trip(replica_deployment(replica, where), "V1Deployment")
    service = round_trip(replica_service(replica, where), "V1Service")
    for obj in (deployment, service, round_trip(replica_secret(replica, where), "V1Secret")):
        assert obj["metadata"]["labels"] == expected and obj["metadata"]["namespace"] == "switchboard"
    assert deployment["spec"]["template"]["metadata"]["labels"] == expected
    selector = {"app.kubernetes.io/managed-by": "switchboard", "switchboard.io/replica-id": replica.replica_id}
    assert deployment["spec"]["selector"] == {"matchLabels": selector} and service["spec"]["selector"] == selector
    assert service["spec"]["ports"] == [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080}]
    assert replica_endpoint(replica.replica_id, where) == f"http://{object_name(replica.replica_id)}.switchboard.svc.cluster.local"


def test_object_names_are_dns_labels_distinct_for_ids_differing_only_in_case() -> None:
    first, second = object_name("rep_AAAAbbbbCCCCddddEEEE"), object_name("rep_aaaabbbbccccddddeeee")
    assert first != second
    assert all(len(name) <= 53 and name.islower() and name.replace("-", "").isalnum() for name in (first, second))


def test_an_inference_service_matches_kserves_published_crd_schema() -> None:
    replica = request(gpu_type="L4", gpu_count=1, memory_gb=4, options={"max_batch_size": "8"})
    isvc = inference_service(replica, connection(kserve=True))
    schema = isvc_schema()
    jsonschema.validate(isvc, schema)
    assert unknown_fields(isvc, schema) == []
    predictor = isvc["spec"]["predictor"]
    assert isvc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "Standard"
    assert (predictor["minReplicas"], predictor["maxReplicas"]) == (1, 1)
    assert predictor["labels"]["switchboard.io/replica-id"] == replica.replica_id
    (container,) = predictor["containers"]
    assert container["name"] == "kserve-container" and container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert container["args"][-2:] == ["--max-batch-size", "8"]
    assert predictor["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-L4"}
    assert container["readinessProbe"]["httpGet"]["path"] == "/health"


def test_the_schema_check_catches_a_misplaced_field() -> None:
    """The check above has teeth: a field KServe does not declare is found."""
    isvc = inference_service(request(), connection(kserve=True))
    isvc["spec"]["predictor"]["replicas"] = 1  # a Deployment's field, not a predictor's
    assert unknown_fields(isvc, isvc_schema()) == [".spec.predictor.replicas"]
    isvc["spec"]["predictor"]["minReplicas"] = "one"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(isvc, isvc_schema())


def test_a_vllm_replica_runs_vllms_openai_server_on_its_gpus_with_the_key_from_the_secret() -> None:
    replica = request(runtime="vllm", gpu_type="H100", gpu_count=2, artifact="HuggingFaceTB/SmolLM2-135M-Instruct", memory_gb=20)
    where = connection(kserve=True, vllm_image="vllm/vllm-openai:v0.10.2")
    isvc = inference_service(replica, where)
    jsonschema.validate(isvc, isvc_schema())
    assert unknown_fields(isvc, isvc_schema()) == []
    (container,) = isvc["spec"]["predictor"]["containers"]
    assert container["image"] == "vllm/vllm-openai:v0.10.2" and container["command"] == ["vllm", "serve"]
    assert container["args"][:3] == ["HuggingFaceTB/SmolLM2-135M-Instruct", "--served-model-name", "smollm2-135m-instruct"]
    assert container["args"][-2:] == ["--tensor-parallel-size", "2"]
    assert container["env"][0]["name"] == "VLLM_API_KEY" and "secretKeyRef" in container["env"][0]["valueFrom"]
    with pytest.raises(DriverError, match="runs on GPUs"):
        inference_service(request(runtime="vllm"), where)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"namespace": "Switchboard"}, "namespace must be"),
        ({"namespace": "switchboard", "kserve": "yes"}, "kserve must be true or false"),
        ({"namespace": "switchboard", "agent_url": "http://x"}, "unknown connection fields agent_url"),
        ({"namespace": "switchboard", "node_labels": "aks"}, "node_labels must be"),
        ({"namespace": "switchboard", "kserve_mode": "Serverless"}, "kserve_mode must be one of Standard, Knative"),
    ],
)
def test_a_bad_connection_says_what_to_fix(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(DriverError, match=message):
        KubernetesConnection.parse(fields)


def test_a_replica_without_the_servers_image_is_refused() -> None:
    with pytest.raises(DriverError, match="connection.image is not set"):
        replica_deployment(request(), KubernetesConnection.parse({"namespace": "switchboard"}))
