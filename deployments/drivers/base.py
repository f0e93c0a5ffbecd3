from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

# The runtimes a replica can run (deployments.models.CatalogModel.Runtime): the built-in
# model server (CPU or CUDA), or vLLM's OpenAI-compatible server (chat models on GPUs,
# launched by the Ray or Kubernetes driver).
RUNTIME_BUILTIN = "builtin"
RUNTIME_VLLM = "vllm"
CPU = "CPU"  # the GPU type of replicas that run on CPUs only
# Replica options the control plane may pass, and the model server flag each becomes.
OPTION_FLAGS = {
    "max_batch_size": "--max-batch-size",
    "max_queue": "--max-queue",
    "max_wait_ms": "--max-wait-ms",
    "drain_seconds": "--drain-seconds",
}


class DriverError(Exception):
    """The cluster could not be reached or refused the request."""


@dataclass(frozen=True)
class ReplicaRequest:
    """Everything a cluster needs to place and start one replica."""

    replica_id: str  # the control plane's id; creating the same id twice creates one replica
    model: str
    options: dict[str, str] = field(default_factory=dict)
    token: str = ""  # the bearer token the replica must require (deployments.internal_tokens)
    gpu_type: str = CPU  # a GpuType id ("H100", "T4", ...); CPU for none
    gpu_count: int = 0  # GPUs of that type the replica gets to itself
    memory_gb: int = 1  # memory the model needs (weights and cache), on its GPUs or in RAM
    artifact: str = ""  # where the weights come from: a package, an object-store URI or a path
    runtime: str = RUNTIME_BUILTIN
    # A registered model's task ("chat", "embedding"): its `artifact` is then a directory on
    # the cluster's machines that the built-in server loads. Empty for a catalog model.
    task: str = ""
    env: dict[str, str] = field(default_factory=dict)  # extra environment for the server process


@dataclass(frozen=True)
class ObservedReplica:
    replica_id: str
    running: bool  # the process (pod, actor) exists
    endpoint: str | None
    exit_code: int | None = None
    detail: str = ""
    node: str = ""  # the machine (host, Ray node, Kubernetes node) it runs on, when known
    device: str = ""  # what it computes on: "cuda:0", "cpu", "cpu (simulated H100)"


class ClusterDriver(Protocol):
    def create_replica(self, request: ReplicaRequest) -> ObservedReplica: ...

    def delete_replica(self, replica_id: str, *, drain_seconds: float) -> None: ...

    def list_replicas(self) -> list[ObservedReplica]: ...
