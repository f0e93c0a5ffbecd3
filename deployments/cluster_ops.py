"""Cluster operations for platform staff: add a cluster, cordon, drain, mark down, mark up.

What each status means to the control plane (deployments.reconcile) and the gateway
(routing.gateway.snapshot):

| status   | new replicas | its replicas                                              | gateway routes to it |
|----------|--------------|-----------------------------------------------------------|----------------------|
| active   | yes          | run                                                       | yes                  |
| cordoned | no           | keep running                                              | yes                  |
| draining | no           | each replaced elsewhere, drained once the replacement is READY | yes, until drained |
| down     | no           | failed at once and replaced elsewhere                     | no                   |

Replacements stay inside each deployment's allowed regions; where no other cluster there
has capacity, a draining cluster's replicas keep serving and the deployment says it is
waiting for capacity. Every change is audited in the staff log, and a drain or a down is
also recorded in the log of each organization whose replicas it moves. The deployments
concerned are reconciled at once rather than at the next beat.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from django.db import transaction

from deployments.enqueue import reconcile_soon
from deployments.models import Cluster, ClusterGpu, GpuType, Replica
from tenancy.errors import Conflict, ServiceError
from tenancy.models import Organization
from tenancy.staff_audit import StaffContext, record, record_for_tenant

NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9-]{0,39}$")  # 40: it is an audit entry's target id
REGION_PATTERN = re.compile(r"^[a-z0-9][a-z0-9-]{0,39}$")
PROVIDER_PATTERN = re.compile(r"^[a-z0-9][a-z0-9-]{0,39}$")
LIVE = (Replica.State.PENDING, Replica.State.PROVISIONING, Replica.State.LOADING, Replica.State.READY)

ACTIONS = {
    "cordon": (Cluster.Status.CORDONED, "cluster.cordoned"),
    "drain": (Cluster.Status.DRAINING, "cluster.draining"),
    "down": (Cluster.Status.DOWN, "cluster.marked_down"),
    "up": (Cluster.Status.ACTIVE, "cluster.marked_up"),
}


@dataclass(frozen=True)
class InventoryRow:
    gpu_type: str
    count: int


def cluster_snapshot(cluster: Cluster) -> dict[str, Any]:
    return {
        "name": cluster.name,
        "provider": cluster.provider,
        "region": cluster.region,
        "driver": cluster.driver,
        "connection": cluster.connection,
        "status": cluster.status,
        "simulated": cluster.simulated,
        "inventory": {
            row.gpu_type_id: {"count": row.count} for row in ClusterGpu.objects.filter(cluster_id=cluster.pk).order_by("gpu_type_id")
        },
    }


def _valid_inventory(inventory: list[InventoryRow]) -> dict[str, InventoryRow]:
    known = set(GpuType.objects.values_list("code", flat=True))
    rows: dict[str, InventoryRow] = {}
    for row in inventory:
        if row.gpu_type not in known:
            raise ServiceError(f"Unknown GPU type {row.gpu_type!r}; choose from {', '.join(sorted(known))}.", field="inventory")
        if isinstance(row.count, bool) or not isinstance(row.count, int) or row.count < 0 or row.count > 100_000:
            raise ServiceError(f"The {row.gpu_type} count must be a whole number from 0 to 100000.", field="inventory")
        if row.gpu_type in rows:
            raise ServiceError(f"{row.gpu_type} is listed twice.", field="inventory")
        rows[row.gpu_type] = InventoryRow(row.gpu_type, row.count)
    if not any(row.count for row in rows.values()):
        raise ServiceError(
            "Give the cluster at least one GPU (or CPU slot): a cluster with no inventory can hold no replica.", field="inventory"
        )
    return rows


def _connection(driver: str, url: str, *, namespace: str) -> dict[str, str]:
    """The driver's settings from the one address a cluster is registered with: a local
    agent's URL, or a Ray cluster's GCS as ray://host:port (its Serve applications are
    named under the cluster's name, so several clusters may share one Ray cluster)."""
    parts = urlsplit(url)
    if driver == Cluster.Driver.RAY:
        try:
            port = parts.port
        except ValueError:
            port = None
        if parts.scheme != "ray" or not parts.hostname or port is None or parts.path not in ("", "/"):
            raise ServiceError("Give the Ray cluster's GCS address, like ray://10.0.0.5:6379.", field="agent_url")
        return {"address": parts.netloc, "namespace": namespace}
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ServiceError("Give the cluster agent's URL, like http://10.0.0.5:9101.", field="agent_url")
    return {"agent_url": url}


@transaction.atomic
def add_cluster(
    staff: StaffContext,
    *,
    name: str,
    provider: str,
    region: str,
    driver: str,
    agent_url: str,
    inventory: list[InventoryRow],
    simulated: bool = False,
    status: str = Cluster.Status.ACTIVE,
) -> Cluster:
    name, provider, region, agent_url = name.strip(), provider.strip().lower(), region.strip().lower(), agent_url.strip()
    if not NAME_PATTERN.match(name):
        raise ServiceError("Name the cluster with 1-40 lowercase letters, digits and dashes.", field="name")
    if not PROVIDER_PATTERN.match(provider):
        raise ServiceError("Give the provider as lowercase letters, digits and dashes (aws, gcp, azure, local ...).", field="provider")
    if not REGION_PATTERN.match(region):
        raise ServiceError("Give the region as lowercase letters, digits and dashes (us-east, eu-west ...).", field="region")
    if driver not in Cluster.Driver.values:
        raise ServiceError(f"Unknown driver {driver!r}; this control plane has {', '.join(Cluster.Driver.values)}.", field="driver")
    if driver == Cluster.Driver.KUBERNETES:
        # Its connection settings (namespace, images, GPU labels) are not one URL: a cluster
        # registered here with one would never be reachable.
        raise ServiceError(
            "This form registers local-agent and Ray clusters. Register a Kubernetes cluster with its connection "
            "settings in the Django admin, as docs/drivers-kubernetes.md describes.",
            field="driver",
        )
    if status not in (Cluster.Status.ACTIVE, Cluster.Status.CORDONED):
        raise ServiceError("A new cluster starts active or cordoned.", field="status")
    connection = _connection(driver, agent_url, namespace=name)
    rows = _valid_inventory(inventory)
    if Cluster.objects.select_for_update().filter(pk=name).exists():
        raise Conflict(f"A cluster named {name} already exists.", field="name")
    cluster = Cluster.objects.create(
        name=name, provider=provider, region=region, driver=driver, connection=connection, simulated=simulated, status=status
    )
    ClusterGpu.objects.bulk_create(
        [ClusterGpu(cluster=cluster, gpu_type_id=row.gpu_type, count=row.count) for row in rows.values() if row.count]
    )
    record(staff, "cluster.added", target_type="cluster", target_id=cluster.pk, after=cluster_snapshot(cluster))
    return cluster


@dataclass(frozen=True)
class StatusChange:
    cluster: Cluster
    replicas_affected: int
    organizations_affected: int


@transaction.atomic
def change_status(staff: StaffContext, cluster: Cluster, action: str, reason: str = "") -> StatusChange:
    """`action` is cordon, drain, down or up."""
    if action not in ACTIONS:
        raise ServiceError(f"Unknown cluster action {action!r}; use {', '.join(ACTIONS)}.", field="action")
    reason = (reason or "").strip()
    if len(reason) > 300:
        raise ServiceError("Keep the reason under 300 characters.", field="reason")
    status, audit_action = ACTIONS[action]
    cluster = Cluster.objects.select_for_update().get(pk=cluster.pk)
    if cluster.status == status:
        raise Conflict(f"{cluster.name} is already {Cluster.Status(status).label.split(' (')[0].lower()}.")
    if action == "drain" and cluster.status == Cluster.Status.DOWN:
        raise Conflict(f"{cluster.name} is down: its replicas were already moved. Mark it up, or leave it down.")
    before = {"status": cluster.status}
    cluster.status = status
    cluster.save(update_fields=["status"])

    # Replicas this change moves: only a drain or a down moves any.
    moving = list(
        Replica.objects.unscoped_across_tenants()
        .filter(cluster=cluster, state__in=LIVE)
        .values_list("organization_id", "deployment_id", "id")
        if status in (Cluster.Status.DRAINING, Cluster.Status.DOWN)
        else []
    )
    by_org: dict[str, dict[str, list[str]]] = {}
    for org_id, deployment_id, replica_id in moving:
        by_org.setdefault(org_id, {}).setdefault(deployment_id, []).append(replica_id)
    after = {"status": status, "reason": reason, "replicas_moved": len(moving), "organizations": sorted(by_org)}
    record(staff, audit_action, target_type="cluster", target_id=cluster.pk, before=before, after=after)
    for org in Organization.objects.filter(pk__in=list(by_org)):
        deployments = by_org[org.pk]
        record_for_tenant(
            staff,
            org,
            audit_action,
            target_type="cluster",
            target_id=cluster.pk,
            before=before,
            after={
                "status": status,
                "reason": reason,
                "deployments": sorted(deployments),
                "replicas_moved": sum(len(replicas) for replicas in deployments.values()),
            },
        )
    deployment_ids = sorted({deployment_id for _, deployment_id, _ in moving})
    if deployment_ids:
        reconcile_soon(deployment_ids=deployment_ids)
    return StatusChange(cluster=cluster, replicas_affected=len(moving), organizations_affected=len(by_org))
