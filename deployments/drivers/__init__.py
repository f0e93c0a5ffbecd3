"""Cluster drivers: the only way the control plane touches a cluster.

A driver creates, deletes and lists replicas and reports what it sees. A Kubernetes
(KServe InferenceService per replica) or Ray Serve (a deployment replica per replica)
driver is one more module here implementing `ClusterDriver`; the reconcile loop does
not change.
"""

from __future__ import annotations

from deployments.drivers.base import ClusterDriver, DriverError, ObservedReplica, ReplicaRequest
from deployments.models import Cluster


def driver_for(cluster: Cluster) -> ClusterDriver:
    if cluster.driver == Cluster.Driver.LOCAL:
        from deployments.drivers.local import LocalAgentDriver

        return LocalAgentDriver(cluster.connection["agent_url"])
    raise DriverError(f"cluster {cluster.name} uses driver {cluster.driver!r}, which this control plane does not have")


__all__ = ["ClusterDriver", "DriverError", "ObservedReplica", "ReplicaRequest", "driver_for"]
