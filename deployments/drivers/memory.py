"""A driver that keeps replicas in memory and does no I/O: for measuring the control
plane itself (`bench controlplane`) and for testing the reconcile loop's logic."""

from __future__ import annotations

import threading

from deployments.drivers.base import CPU, ObservedReplica, ReplicaRequest


class InMemoryDriver:
    def __init__(self, cluster: str) -> None:
        self.cluster = cluster
        self.replicas: dict[str, ObservedReplica] = {}
        self.creates = 0
        self.requests: dict[str, ReplicaRequest] = {}  # what each replica was created with
        self._lock = threading.Lock()

    def create_replica(self, request: ReplicaRequest) -> ObservedReplica:
        with self._lock:
            if request.replica_id not in self.replicas:
                self.creates += 1
                self.requests[request.replica_id] = request
                device = "cpu" if request.gpu_type == CPU else f"cpu (simulated {request.gpu_type})"
                self.replicas[request.replica_id] = ObservedReplica(
                    request.replica_id,
                    running=True,
                    endpoint=f"memory://{self.cluster}/{request.replica_id}",
                    node=f"{self.cluster}-node",
                    device=device,
                )
            return self.replicas[request.replica_id]

    def delete_replica(self, replica_id: str, *, drain_seconds: float) -> None:
        with self._lock:
            self.replicas.pop(replica_id, None)

    def list_replicas(self) -> list[ObservedReplica]:
        with self._lock:
            return list(self.replicas.values())

    def restart_elsewhere(self, replica_id: str) -> None:
        """The cluster replaced the replica's process: same replica, a new endpoint."""
        with self._lock:
            replica = self.replicas[replica_id]
            self.replicas[replica_id] = ObservedReplica(
                replica_id, running=True, endpoint=f"{replica.endpoint}/restarted", node=replica.node, device=replica.device
            )

    def crash(self, replica_id: str, exit_code: int = -9) -> None:
        with self._lock:
            replica = self.replicas[replica_id]
            self.replicas[replica_id] = ObservedReplica(replica_id, running=False, endpoint=replica.endpoint, exit_code=exit_code)
