"""Cluster drivers: the only way the control plane touches a cluster.

A driver creates, deletes and lists replicas and reports what it sees. `local` talks
to a cluster agent on a machine (local.py); `ray` runs each replica as a Ray Serve
application on a Ray cluster (ray.py). Another engine is one more module here
implementing `ClusterDriver`; the reconcile loop does not change.
"""

from __future__ import annotations

import json
import time

from deployments.drivers import kubernetes
from deployments.drivers.base import CPU, RUNTIME_BUILTIN, RUNTIME_VLLM, ClusterDriver, DriverError, ObservedReplica, ReplicaRequest
from deployments.drivers.local import LocalAgentDriver
from deployments.internal_tokens import agent_token
from deployments.models import Cluster

_LOCAL_DRIVERS: dict[str, ClusterDriver] = {}
_RAY_DRIVERS: dict[str, ClusterDriver] = {}
_KUBERNETES_DRIVERS: dict[str, tuple[float, ClusterDriver]] = {}
# A Kubernetes client is reused (its connection pool, one kubeconfig read) for this long,
# then built again, so credentials that expire (exec plugins, cloud tokens) are renewed.
KUBERNETES_CLIENT_SECONDS = 600.0


def driver_for(cluster: Cluster) -> ClusterDriver:
    if cluster.driver == Cluster.Driver.LOCAL:
        url = cluster.connection["agent_url"]
        # One pooled HTTP client per agent for the worker's lifetime, not one per call.
        if url not in _LOCAL_DRIVERS:
            _LOCAL_DRIVERS[url] = LocalAgentDriver(url, token=agent_token(cluster.name))
        return _LOCAL_DRIVERS[url]
    if cluster.driver == Cluster.Driver.KUBERNETES:
        key = json.dumps(cluster.connection, sort_keys=True)
        built = _KUBERNETES_DRIVERS.get(key)
        if built is None or time.monotonic() - built[0] > KUBERNETES_CLIENT_SECONDS:
            connection = kubernetes.KubernetesConnection.parse(cluster.connection)
            built = (time.monotonic(), kubernetes.KubernetesDriver(connection, api=kubernetes.api_client(connection)))
            _KUBERNETES_DRIVERS[key] = built
        return built[1]
    if cluster.driver == Cluster.Driver.RAY:
        # Imported on first use, not at startup: Ray and Serve take a second to import, and
        # only processes that drive a Ray cluster (Celery workers, `up --ray`) need them.
        from deployments.drivers.ray import RayConnection, RayServeDriver

        key = json.dumps(cluster.connection, sort_keys=True)
        if key not in _RAY_DRIVERS:  # one per cluster: it remembers what its replicas reported
            _RAY_DRIVERS[key] = RayServeDriver(RayConnection.parse(cluster.connection))
        return _RAY_DRIVERS[key]
    raise DriverError(f"cluster {cluster.name} uses driver {cluster.driver!r}, which this control plane does not have")


__all__ = ["CPU", "RUNTIME_BUILTIN", "RUNTIME_VLLM", "ClusterDriver", "DriverError", "ObservedReplica", "ReplicaRequest", "driver_for"]
