"""The `kubernetes` driver: replicas as KServe InferenceServices, or as a Deployment and a
Service each where KServe is absent, through the official `kubernetes` client.

Three parts, each testable on its own (docs/drivers-kubernetes.md):
- the connection a cluster is registered with (`KubernetesConnection.parse`);
- the manifests, pure functions of a `ReplicaRequest` built from the client's own model
  classes (`replica_secret`, `replica_deployment`, `replica_service`, `inference_service`);
- the state mapping, a pure function from the API objects a list returns to an
  `ObservedReplica` (`observe`), and `KubernetesDriver`, which makes the calls.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

from deployments.drivers.base import CPU, OPTION_FLAGS, RUNTIME_BUILTIN, RUNTIME_VLLM, DriverError, ObservedReplica, ReplicaRequest
from modelserver.auth import API_KEY_VARIABLE

MANAGED_BY = ("app.kubernetes.io/managed-by", "switchboard")
REPLICA_LABEL = "switchboard.io/replica-id"
GPU_TYPE_LABEL = "switchboard.io/gpu-type"
SELECTOR = f"{MANAGED_BY[0]}={MANAGED_BY[1]}"
TOKEN_KEY = "token"  # the key in the replica's Secret
VLLM_API_KEY_VARIABLE = "VLLM_API_KEY"  # vLLM's OpenAI server reads its --api-key from here
PORT = 8080  # the server's port in the pod; Services answer on 80
CACHE_DIR = "/var/cache/switchboard/models"
KSERVE_GROUP, KSERVE_VERSION, KSERVE_PLURAL = "serving.kserve.io", "v1beta1", "inferenceservices"
KSERVE_MODE_ANNOTATION = "serving.kserve.io/deploymentMode"
KSERVE_MODES = ("Standard", "Knative")  # KServe 0.15+ names ("RawDeployment", "Serverless" before)
MEMORY_OVERHEAD_GB = 1  # the server process itself, on top of what the model needs
TIMEOUT_SECONDS = 10.0
# vLLM's flags for the replica options it has; the others (queue, wait, drain) are the
# built-in server's own and are not passed to vLLM.
VLLM_OPTION_FLAGS = {"max_batch_size": "--max-num-seqs"}

# The node labels each GPU type is placed by. NVIDIA GPU feature discovery (part of the GPU
# operator) labels nodes with the product name the driver reports; GKE labels its nodes
# with the accelerator it attached. A cluster may give its own mapping instead.
NODE_LABELS: dict[str, dict[str, dict[str, str]]] = {
    "nvidia-gfd": {
        "T4": {"nvidia.com/gpu.product": "Tesla-T4"},
        "L4": {"nvidia.com/gpu.product": "NVIDIA-L4"},
        "A10G": {"nvidia.com/gpu.product": "NVIDIA-A10G"},
        "A100-80GB": {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"},
        "H100": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"},
        "H200": {"nvidia.com/gpu.product": "NVIDIA-H200"},
    },
    "gke": {
        "T4": {"cloud.google.com/gke-accelerator": "nvidia-tesla-t4"},
        "L4": {"cloud.google.com/gke-accelerator": "nvidia-l4"},
        "A100-80GB": {"cloud.google.com/gke-accelerator": "nvidia-a100-80gb"},
        "H100": {"cloud.google.com/gke-accelerator": "nvidia-h100-80gb"},
        "H200": {"cloud.google.com/gke-accelerator": "nvidia-h200-141gb"},
    },
}
GPU_TOLERATION = client.V1Toleration(key="nvidia.com/gpu", operator="Exists", effect="NoSchedule")
IMAGE_PULL_FAILURES = frozenset({"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull"})
CONFIG_FAILURES = frozenset({"CreateContainerConfigError", "CreateContainerError", "RunContainerError"})
_NAMESPACE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_LABEL_VALUE = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

T = TypeVar("T")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class KubernetesConnection:
    """A Kubernetes cluster's `Cluster.connection`, checked."""

    namespace: str
    image: str = ""  # the platform's image, with `python -m modelserver` (runtime builtin)
    vllm_image: str = ""  # vLLM's OpenAI server image, e.g. vllm/vllm-openai:<tag> (runtime vllm)
    kserve: bool = False
    kserve_mode: str = "Standard"
    # How the control plane and the gateways reach a replica; {name} and {namespace} are
    # filled in. By default the replica's Service inside the cluster.
    endpoint_template: str = ""
    node_labels: dict[str, dict[str, str]] = field(default_factory=lambda: dict(NODE_LABELS["nvidia-gfd"]))
    max_drain_seconds: int = 300  # the pods' termination grace; a delete asks for less
    context: str = ""  # a kubeconfig context; empty: the current one
    in_cluster: bool = False  # the control plane runs in the cluster, with a service account

    @classmethod
    def parse(cls, connection: Mapping[str, Any]) -> KubernetesConnection:
        known = {"namespace", "image", "vllm_image", "kserve", "kserve_mode", "endpoint_template", "node_labels"}
        known |= {"max_drain_seconds", "context", "in_cluster"}
        unknown = sorted(set(connection) - known)
        if unknown:
            raise DriverError(f"unknown connection fields {', '.join(unknown)}; a Kubernetes cluster takes {', '.join(sorted(known))}")
        namespace = connection.get("namespace")
        if not isinstance(namespace, str) or not _NAMESPACE.match(namespace):
            raise DriverError("connection.namespace must be a Kubernetes namespace name (lowercase letters, digits, dashes)")
        for name in ("image", "vllm_image", "endpoint_template", "context"):
            if not isinstance(connection.get(name, ""), str):
                raise DriverError(f"connection.{name} must be a string")
        for name in ("kserve", "in_cluster"):
            if not isinstance(connection.get(name, False), bool):
                raise DriverError(f"connection.{name} must be true or false")
        mode = connection.get("kserve_mode", "Standard")
        if mode not in KSERVE_MODES:
            raise DriverError(f"connection.kserve_mode must be one of {', '.join(KSERVE_MODES)}")
        drain = connection.get("max_drain_seconds", 300)
        if not isinstance(drain, int) or isinstance(drain, bool) or not 0 <= drain <= 3600:
            raise DriverError("connection.max_drain_seconds must be a whole number of seconds from 0 to 3600")
        return cls(
            namespace=namespace,
            image=connection.get("image", ""),
            vllm_image=connection.get("vllm_image", ""),
            kserve=connection.get("kserve", False),
            kserve_mode=mode,
            endpoint_template=connection.get("endpoint_template", ""),
            node_labels=_node_labels(connection.get("node_labels", "nvidia-gfd")),
            max_drain_seconds=drain,
            context=connection.get("context", ""),
            in_cluster=connection.get("in_cluster", False),
        )


def _node_labels(value: object) -> dict[str, dict[str, str]]:
    if isinstance(value, str) and value in NODE_LABELS:
        return dict(NODE_LABELS[value])
    if isinstance(value, dict) and all(
        isinstance(labels, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in labels.items()) for labels in value.values()
    ):
        return {str(gpu_type): dict(labels) for gpu_type, labels in value.items()}
    raise DriverError(f"connection.node_labels must be {' or '.join(NODE_LABELS)}, or a map from GPU type to node labels")


# --- Manifests -------------------------------------------------------------------------


def object_name(replica_id: str) -> str:
    """A name every object kind accepts (a DNS label short enough for KServe's suffixes).
    Replica ids are mixed case, so the name is a digest; the id itself is a label."""
    return f"sb-{hashlib.sha256(replica_id.encode()).hexdigest()[:16]}"


def replica_labels(request: ReplicaRequest) -> dict[str, str]:
    if not _LABEL_VALUE.match(request.replica_id):
        raise DriverError(f"replica id {request.replica_id!r} cannot be a Kubernetes label value")
    return {MANAGED_BY[0]: MANAGED_BY[1], REPLICA_LABEL: request.replica_id, GPU_TYPE_LABEL: request.gpu_type.replace(" ", "-")}


def _metadata(request: ReplicaRequest, connection: KubernetesConnection, *, name: str) -> client.V1ObjectMeta:
    return client.V1ObjectMeta(
        name=name, namespace=connection.namespace, labels=replica_labels(request), annotations={"switchboard.io/model": request.model}
    )


def replica_secret(request: ReplicaRequest, connection: KubernetesConnection) -> client.V1Secret:
    """The replica's bearer token, which its server requires; pods read it through a
    secretKeyRef, so it is in no other manifest."""
    return client.V1Secret(
        api_version="v1",
        kind="Secret",
        metadata=_metadata(request, connection, name=f"{object_name(request.replica_id)}-token"),
        type="Opaque",
        string_data={TOKEN_KEY: request.token},
    )


def _server(request: ReplicaRequest, connection: KubernetesConnection) -> tuple[str, list[str], list[str], str]:
    """The image, command, arguments and API key variable of the replica's server."""
    if request.runtime == RUNTIME_BUILTIN:
        if not connection.image:
            raise DriverError("connection.image is not set: the image with the built-in model server (python -m modelserver)")
        args = ["--model", request.model, "--host", "0.0.0.0", "--port", str(PORT), "--cache-dir", CACHE_DIR]
        if request.artifact and request.task:
            # A registered model reaches a pod only as a Hugging Face repo (hf://...), which
            # the server fetches when it starts; uploaded directories are not offered here.
            args += ["--artifact", request.artifact, "--task", request.task]
        for key, value in sorted(request.options.items()):
            if key not in OPTION_FLAGS:
                raise DriverError(f"unknown replica option {key!r}; the model server takes {', '.join(sorted(OPTION_FLAGS))}")
            args += [OPTION_FLAGS[key], str(value)]
        return connection.image, ["python", "-m", "modelserver"], args, API_KEY_VARIABLE
    if request.runtime == RUNTIME_VLLM:
        if not connection.vllm_image:
            raise DriverError("connection.vllm_image is not set: vLLM's OpenAI server image (vllm/vllm-openai:<tag>)")
        if request.gpu_count < 1:
            raise DriverError("runtime vllm runs on GPUs: the replica asks for none")
        args = [request.artifact or request.model, "--served-model-name", request.model, "--host", "0.0.0.0", "--port", str(PORT)]
        args += ["--tensor-parallel-size", str(request.gpu_count)]
        for key, value in sorted(request.options.items()):
            if key in VLLM_OPTION_FLAGS:
                args += [VLLM_OPTION_FLAGS[key], str(value)]
        return connection.vllm_image, ["vllm", "serve"], args, VLLM_API_KEY_VARIABLE
    raise DriverError(f"unknown runtime {request.runtime!r}")


def _probe(*, period: int, failures: int) -> client.V1Probe:
    return client.V1Probe(
        http_get=client.V1HTTPGetAction(path="/health", port=PORT), period_seconds=period, failure_threshold=failures, timeout_seconds=2
    )


def replica_container(request: ReplicaRequest, connection: KubernetesConnection) -> client.V1Container:
    """The server's container: GPUs and memory requested and limited, probes on /health
    (startup while the model loads, then readiness and liveness), the token from the Secret."""
    image, command, args, key_variable = _server(request, connection)
    env = [
        client.V1EnvVar(
            name=key_variable,
            value_from=client.V1EnvVarSource(
                secret_key_ref=client.V1SecretKeySelector(name=f"{object_name(request.replica_id)}-token", key=TOKEN_KEY)
            ),
        )
    ]
    for name, value in sorted(request.env.items()):
        if not _ENV_NAME.match(name) or name in (API_KEY_VARIABLE, VLLM_API_KEY_VARIABLE):
            raise DriverError(f"environment variable {name!r} cannot be set on a replica")
        env.append(client.V1EnvVar(name=name, value=value))
    memory = f"{max(request.memory_gb, 0) + MEMORY_OVERHEAD_GB}Gi"
    requests, limits = {"memory": memory, "cpu": "1"}, {"memory": memory}
    if request.gpu_type != CPU and request.gpu_count > 0:
        requests["nvidia.com/gpu"] = limits["nvidia.com/gpu"] = str(request.gpu_count)
    return client.V1Container(
        name="kserve-container" if connection.kserve else "server",
        image=image,
        command=command,
        args=args,
        env=env,
        ports=[client.V1ContainerPort(container_port=PORT, name="http1" if connection.kserve else "http", protocol="TCP")],
        resources=client.V1ResourceRequirements(requests=requests, limits=limits),
        # /health is 503 while the model loads: up to 15 minutes for it, then a replica
        # that stops answering is restarted and one that is not ready gets no traffic.
        startup_probe=_probe(period=10, failures=90),
        readiness_probe=_probe(period=5, failures=2),
        liveness_probe=_probe(period=10, failures=3),
        volume_mounts=[client.V1VolumeMount(name="model-cache", mount_path=CACHE_DIR)],
    )


def replica_pod_spec(request: ReplicaRequest, connection: KubernetesConnection) -> client.V1PodSpec:
    node_selector, tolerations = None, None
    if request.gpu_type != CPU:
        if request.gpu_type not in connection.node_labels:
            raise DriverError(f"this cluster's node_labels do not say which nodes carry {request.gpu_type} GPUs")
        node_selector, tolerations = dict(connection.node_labels[request.gpu_type]), [GPU_TOLERATION]
    return client.V1PodSpec(
        containers=[replica_container(request, connection)],
        node_selector=node_selector,
        tolerations=tolerations,
        volumes=[client.V1Volume(name="model-cache", empty_dir=client.V1EmptyDirVolumeSource())],
        termination_grace_period_seconds=connection.max_drain_seconds,
        automount_service_account_token=False,
    )


def replica_deployment(request: ReplicaRequest, connection: KubernetesConnection) -> client.V1Deployment:
    labels = replica_labels(request)
    selector = {MANAGED_BY[0]: MANAGED_BY[1], REPLICA_LABEL: request.replica_id}
    return client.V1Deployment(
        api_version="apps/v1",
        kind="Deployment",
        metadata=_metadata(request, connection, name=object_name(request.replica_id)),
        spec=client.V1DeploymentSpec(
            replicas=1,
            selector=client.V1LabelSelector(match_labels=selector),
            # One replica is one pod: never two at once (a GPU each), so replace, not surge.
            strategy=client.V1DeploymentStrategy(type="Recreate"),
            template=client.V1PodTemplateSpec(metadata=client.V1ObjectMeta(labels=labels), spec=replica_pod_spec(request, connection)),
        ),
    )


def replica_service(request: ReplicaRequest, connection: KubernetesConnection) -> client.V1Service:
    return client.V1Service(
        api_version="v1",
        kind="Service",
        metadata=_metadata(request, connection, name=object_name(request.replica_id)),
        spec=client.V1ServiceSpec(
            selector={MANAGED_BY[0]: MANAGED_BY[1], REPLICA_LABEL: request.replica_id},
            ports=[client.V1ServicePort(name="http", port=80, target_port=PORT, protocol="TCP")],
        ),
    )


def inference_service(request: ReplicaRequest, connection: KubernetesConnection) -> dict[str, Any]:
    """A KServe v1beta1 InferenceService with one predictor pod (the control plane scales
    by replicas, so KServe's own autoscaling stays at one): a custom container, as
    KServe's predictor takes a pod spec inline."""
    sanitize = client.ApiClient().sanitize_for_serialization
    metadata = sanitize(_metadata(request, connection, name=object_name(request.replica_id)))
    metadata["annotations"][KSERVE_MODE_ANNOTATION] = connection.kserve_mode
    predictor = sanitize(replica_pod_spec(request, connection))
    predictor.update({"minReplicas": 1, "maxReplicas": 1, "labels": replica_labels(request)})
    return {
        "apiVersion": f"{KSERVE_GROUP}/{KSERVE_VERSION}",
        "kind": "InferenceService",
        "metadata": metadata,
        "spec": {"predictor": predictor},
    }


def replica_endpoint(replica_id: str, connection: KubernetesConnection) -> str:
    name = object_name(replica_id)
    if connection.endpoint_template:
        return connection.endpoint_template.format(name=name, namespace=connection.namespace)
    if connection.kserve:  # the predictor's Service, which KServe names after the InferenceService
        return f"http://{name}-predictor.{connection.namespace}.svc.cluster.local"
    return f"http://{name}.{connection.namespace}.svc.cluster.local"


# --- State mapping -----------------------------------------------------------------------


def _meta(obj: client.V1Pod | client.V1Deployment) -> client.V1ObjectMeta:
    return obj.metadata or client.V1ObjectMeta()


def _device(pod: client.V1Pod) -> str:
    labels = _meta(pod).labels or {}
    gpu_type = labels.get(GPU_TYPE_LABEL, "")
    containers = pod.spec.containers if pod.spec else []
    gpus = sum(int((c.resources.limits or {}).get("nvidia.com/gpu", "0")) for c in containers if c.resources)
    return f"cuda ({gpus}x {gpu_type})" if gpus else "cpu"


def _pick(pods: list[client.V1Pod]) -> client.V1Pod:
    """The pod that stands for the replica: a live one over one terminating, then the newest."""
    return max(pods, key=lambda p: (_meta(p).deletion_timestamp is None, _meta(p).creation_timestamp or _EPOCH))


def _unschedulable(pod: client.V1Pod) -> str:
    for condition in (pod.status.conditions if pod.status else None) or []:
        if condition.type == "PodScheduled" and condition.status == "False":
            return f"waiting for a node ({condition.reason}): {condition.message or ''}".strip()
    return ""


def _container_failure(statuses: list[client.V1ContainerStatus]) -> tuple[str, int | None] | None:
    """Why the server's container is not running (and its exit code), if it is not."""
    for status in statuses:
        waiting = status.state.waiting if status.state else None
        terminated = status.state.terminated if status.state else None
        last = status.last_state.terminated if status.last_state else None
        if waiting is not None and waiting.reason in IMAGE_PULL_FAILURES:
            return f"image pull failed ({waiting.reason}): {waiting.message or status.image}", None
        if waiting is not None and waiting.reason in CONFIG_FAILURES:
            return f"{waiting.reason}: {waiting.message or ''}".strip(), None
        ended = terminated or last
        if ended is not None and (terminated is not None or status.restart_count > 0):
            # The process exited: now (terminated) or before the kubelet restarted it.
            why = "out of memory, killed by the kernel" if ended.reason == "OOMKilled" else (ended.message or "")
            detail = f"{ended.reason or 'exited'} with code {ended.exit_code}: {why}".rstrip(": ")
            detail += f"; restarted {status.restart_count} times" if status.restart_count else ""
            return detail, ended.exit_code
    return None


def observe(
    replica_id: str, *, pods: list[client.V1Pod], workload_exists: bool, endpoint: str, kserve_status: Mapping[str, Any] | None = None
) -> ObservedReplica:
    """What the control plane should believe about one replica, from its pods and its
    workload (Deployment or InferenceService). A process that died (OOMKilled, crashed,
    its image unpullable) is reported as not running, as the local agent reports an
    exited process: the control plane replaces it rather than wait on the kubelet's
    restarts, and its exit code says why."""
    if not pods:
        detail = "no pod yet" if workload_exists else "gone"
        for condition in (kserve_status or {}).get("conditions") or []:
            if condition.get("status") == "False" and condition.get("message"):
                detail = f"{detail}; InferenceService {condition.get('type')}: {condition['message']}"
                break
        return ObservedReplica(
            replica_id=replica_id, running=workload_exists, endpoint=endpoint if workload_exists else None, detail=detail
        )
    pod = _pick(pods)
    node = (pod.spec.node_name if pod.spec else None) or ""

    def seen(running: bool, detail: str, exit_code: int | None = None) -> ObservedReplica:
        return ObservedReplica(
            replica_id=replica_id, running=running, endpoint=endpoint, exit_code=exit_code, detail=detail, node=node, device=_device(pod)
        )

    deleted_at = _meta(pod).deletion_timestamp
    if deleted_at is not None:  # draining: it serves until its grace period ends
        return seen(True, f"terminating since {deleted_at.isoformat()}")
    statuses = (pod.status.container_statuses if pod.status else None) or []
    failure = _container_failure(statuses)
    if failure is not None:
        return seen(False, failure[0], failure[1])
    if pod.status is not None and pod.status.phase in ("Failed", "Succeeded"):
        return seen(False, f"pod {pod.status.phase.lower()}: {pod.status.reason or ''} {pod.status.message or ''}".strip())
    unschedulable = _unschedulable(pod)
    if unschedulable:  # still pending: a node may yet free up or be added
        return seen(True, unschedulable)
    if any(status.ready for status in statuses):
        return seen(True, "ready")
    return seen(True, f"{(pod.status.phase if pod.status else None) or 'Unknown'}, not ready".lower())


# --- The driver --------------------------------------------------------------------------


def api_client(connection: KubernetesConnection) -> client.ApiClient:
    """A client for the cluster: the pod's service account in the cluster, else a kubeconfig."""
    configuration = client.Configuration()
    try:
        if connection.in_cluster:
            config.load_incluster_config(client_configuration=configuration)
        else:
            # KUBECONFIG as it is now (the client reads it once, when imported), else ~/.kube/config.
            kubeconfig = os.environ.get("KUBECONFIG") or None
            config.load_kube_config(config_file=kubeconfig, context=connection.context or None, client_configuration=configuration)
    except (ConfigException, OSError) as error:
        raise DriverError(f"no Kubernetes credentials: {error}") from error
    return client.ApiClient(configuration)


class KubernetesDriver:
    def __init__(self, connection: KubernetesConnection, *, api: client.ApiClient) -> None:
        self.connection = connection
        self.core = client.CoreV1Api(api)
        self.apps = client.AppsV1Api(api)
        self.custom = client.CustomObjectsApi(api)

    def _call(self, call: Callable[..., T], *args: Any, absent_ok: int | None = None, **kwargs: Any) -> T | None:
        """One API call; `absent_ok` is the status that means it is already done (409 on
        create: it exists; 404 on delete: it is gone)."""
        try:
            return call(*args, _request_timeout=TIMEOUT_SECONDS, **kwargs)
        except ApiException as error:
            if error.status == absent_ok:
                return None
            raise DriverError(f"Kubernetes answered {error.status} {error.reason}: {str(error.body or '')[:300]}") from error
        except urllib3.exceptions.HTTPError as error:
            raise DriverError(f"Kubernetes API unreachable: {error}") from error

    def _delete(self, call: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        """A delete whose answer is not read: the API server answers some kinds' deletes
        with a Status, others with the object or the list deleted."""
        response = self._call(call, *args, absent_ok=404, _preload_content=False, **kwargs)
        if response is not None:
            response.release_conn()

    def create_replica(self, request: ReplicaRequest) -> ObservedReplica:
        ns = self.connection.namespace
        secret = replica_secret(request, self.connection)
        if self.connection.kserve:
            isvc = inference_service(request, self.connection)
            self._call(self.core.create_namespaced_secret, ns, secret, absent_ok=409)
            self._call(self.custom.create_namespaced_custom_object, KSERVE_GROUP, KSERVE_VERSION, ns, KSERVE_PLURAL, isvc, absent_ok=409)
        else:
            deployment, service = replica_deployment(request, self.connection), replica_service(request, self.connection)
            self._call(self.core.create_namespaced_secret, ns, secret, absent_ok=409)
            self._call(self.core.create_namespaced_service, ns, service, absent_ok=409)
            self._call(self.apps.create_namespaced_deployment, ns, deployment, absent_ok=409)
        device = f"cuda ({request.gpu_count}x {request.gpu_type})" if request.gpu_type != CPU and request.gpu_count else "cpu"
        endpoint = replica_endpoint(request.replica_id, self.connection)
        return ObservedReplica(replica_id=request.replica_id, running=True, endpoint=endpoint, detail="created", device=device)

    def delete_replica(self, replica_id: str, *, drain_seconds: float) -> None:
        """Deletes the workload, then its pods with the drain as their grace period (the
        server stops taking requests on SIGTERM and finishes those in flight), then the
        Service and Secret. Deleting what is already gone is not an error."""
        ns, name = self.connection.namespace, object_name(replica_id)
        grace = min(math.ceil(max(drain_seconds, 0)), self.connection.max_drain_seconds)
        if self.connection.kserve:
            self._delete(self.custom.delete_namespaced_custom_object, KSERVE_GROUP, KSERVE_VERSION, ns, KSERVE_PLURAL, name)
        else:
            self._delete(self.apps.delete_namespaced_deployment, name, ns, propagation_policy="Background")
        selector = f"{SELECTOR},{REPLICA_LABEL}={replica_id}"
        self._delete(self.core.delete_collection_namespaced_pod, ns, label_selector=selector, grace_period_seconds=grace)
        if not self.connection.kserve:
            self._delete(self.core.delete_namespaced_service, name, ns)
        self._delete(self.core.delete_namespaced_secret, f"{name}-token", ns)

    def list_replicas(self) -> list[ObservedReplica]:
        ns = self.connection.namespace
        pods_by_replica: dict[str, list[client.V1Pod]] = {}
        pod_list = self._call(self.core.list_namespaced_pod, ns, label_selector=SELECTOR)
        for pod in pod_list.items if pod_list else []:
            replica_id = (_meta(pod).labels or {}).get(REPLICA_LABEL)
            if replica_id:
                pods_by_replica.setdefault(replica_id, []).append(pod)
        workloads: dict[str, Mapping[str, Any] | None] = {}
        if self.connection.kserve:
            listed = self._call(
                self.custom.list_namespaced_custom_object, KSERVE_GROUP, KSERVE_VERSION, ns, KSERVE_PLURAL, label_selector=SELECTOR
            )
            for item in (listed or {}).get("items", []):  # type: ignore[attr-defined]
                replica_id = (item.get("metadata", {}).get("labels") or {}).get(REPLICA_LABEL)
                if replica_id:
                    workloads[replica_id] = item.get("status") or {}
        else:
            deployments = self._call(self.apps.list_namespaced_deployment, ns, label_selector=SELECTOR)
            for deployment in deployments.items if deployments else []:
                replica_id = (_meta(deployment).labels or {}).get(REPLICA_LABEL)
                if replica_id:
                    workloads[replica_id] = None
        return [
            observe(
                replica_id,
                pods=pods_by_replica.get(replica_id, []),
                workload_exists=replica_id in workloads,
                endpoint=replica_endpoint(replica_id, self.connection),
                kserve_status=workloads.get(replica_id),
            )
            for replica_id in sorted(set(pods_by_replica) | set(workloads))
        ]
