"""The `local` driver: HTTP to a cluster agent (`manage.py cluster_agent`) on this machine."""

from __future__ import annotations

import httpx

from deployments.drivers.base import DriverError, ObservedReplica, ReplicaRequest


def _observed(row: dict) -> ObservedReplica:  # type: ignore[type-arg]
    return ObservedReplica(
        replica_id=row["replica_id"],
        running=row["running"],
        endpoint=row["endpoint"],
        exit_code=row.get("exit_code"),
        detail=row.get("detail", ""),
        node=row.get("node", ""),
        device=row.get("device", ""),
    )


class LocalAgentDriver:
    def __init__(self, agent_url: str, *, token: str, timeout: float = 10.0) -> None:
        self._client = httpx.Client(base_url=agent_url.rstrip("/"), timeout=timeout, headers={"authorization": f"Bearer {token}"})

    def _call(self, method: str, path: str, **kwargs: object) -> httpx.Response:
        try:
            response = self._client.request(method, path, **kwargs)  # type: ignore[arg-type]
        except httpx.HTTPError as error:
            raise DriverError(f"agent at {self._client.base_url} unreachable: {error}") from error
        if response.status_code >= 400:
            raise DriverError(f"agent answered {response.status_code}: {response.text[:300]}")
        return response

    def create_replica(self, request: ReplicaRequest) -> ObservedReplica:
        body = {
            "replica_id": request.replica_id,
            "model": request.model,
            "options": request.options,
            "token": request.token,
            "gpu_type": request.gpu_type,
            "gpu_count": request.gpu_count,
            "runtime": request.runtime,
            "env": request.env,
        }
        if request.task:  # a registered model: the directory the agent's server loads
            body.update(artifact=request.artifact, task=request.task)
        return _observed(self._call("POST", "/replicas", json=body).json())

    def delete_replica(self, replica_id: str, *, drain_seconds: float) -> None:
        self._call("DELETE", f"/replicas/{replica_id}", params={"drain_seconds": drain_seconds})

    def list_replicas(self) -> list[ObservedReplica]:
        return [_observed(row) for row in self._call("GET", "/replicas").json()["replicas"]]
