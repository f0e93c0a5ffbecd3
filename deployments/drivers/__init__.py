"""Cluster drivers: the only way the control plane touches a cluster.

A driver creates, deletes and lists replicas and reports what it sees. A Kubernetes
(KServe InferenceService per replica) or Ray Serve (a deployment replica per replica)
driver is one more module here implementing `ClusterDriver`; the reconcile loop does
not change.
"""

from __future__ import annotations

from deployments.drivers import kubernetes
from deployments.drivers.base import CPU, RUNTIME_BUILTIN, RUNTIME_VLLM, ClusterDriver, DriverError, ObservedReplica, ReplicaRequest
from deployments.drivers.local import LocalAgentDriver
from deployments.internal_tokens import agent_token
from deployments.models import Cluster

_LOCAL_DRIVERS: dict[str, ClusterDriver] = {}


def driver_for(cluster: Cluster) -> ClusterDriver:
    if cluster.driver == Cluster.Driver.LOCAL:
        url = cluster.connection["agent_url"]
        # One pooled HTTP client per agent for the worker's lifetime, not one per call.
        if url not in _LOCAL_DRIVERS:
            _LOCAL_DRIVERS[url] = LocalAgentDriver(url, token=agent_token(cluster.name))
        return _LOCAL_DRIVERS[url]
    if cluster.driver == Cluster.Driver.KUBERNETES:
        connection = kubernetes.KubernetesConnection.parse(cluster.connection)
        return kubernetes.KubernetesDriver(connection, api=kubernetes.api_client(connection))
    raise DriverError(f"cluster {cluster.name} uses driver {cluster.driver!r}, which this control plane does not have")


__all__ = ["CPU", "RUNTIME_BUILTIN", "RUNTIME_VLLM", "ClusterDriver", "DriverError", "ObservedReplica", "ReplicaRequest", "driver_for"]
