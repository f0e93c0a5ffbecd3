from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol


class DriverError(Exception):
    """The cluster could not be reached or refused the request."""


@dataclass(frozen=True)
class ReplicaRequest:
    replica_id: str  # the control plane's id; creating the same id twice creates one replica
    model: str
    options: dict[str, str] = field(default_factory=dict)
    token: str = ""  # the bearer token the replica must require (deployments.internal_tokens)


@dataclass(frozen=True)
class ObservedReplica:
    replica_id: str
    running: bool  # the process (pod, actor) exists
    endpoint: str | None
    exit_code: int | None = None
    detail: str = ""


class ClusterDriver(Protocol):
    def create_replica(self, request: ReplicaRequest) -> ObservedReplica: ...

    def delete_replica(self, replica_id: str, *, drain_seconds: float) -> None: ...

    def list_replicas(self) -> list[ObservedReplica]: ...
