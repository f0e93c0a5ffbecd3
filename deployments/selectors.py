"""Read-side queries of the control plane."""

from __future__ import annotations

from django.db.models import QuerySet

from deployments.models import Canary, Cluster, Deployment, DeploymentRevision, GpuType
from tenancy.models import Organization


def region_names() -> set[str]:
    return set(Cluster.objects.values_list("region", flat=True))


def regions() -> list[dict[str, object]]:
    """Each region with its clusters and their status, for pickers and the admin pages."""
    by_region: dict[str, list[dict[str, object]]] = {}
    for cluster in Cluster.objects.order_by("region", "name"):
        by_region.setdefault(cluster.region, []).append(
            {"name": cluster.name, "provider": cluster.provider, "status": cluster.status, "simulated": cluster.simulated}
        )
    return [{"region": region, "clusters": clusters} for region, clusters in by_region.items()]


def gpu_types() -> QuerySet[GpuType]:
    return GpuType.objects.all()


def live_deployments(org: Organization) -> QuerySet[Deployment]:
    return Deployment.objects.for_org(org).filter(deleted_at=None)


def revisions(org: Organization, deployment: Deployment) -> QuerySet[DeploymentRevision]:
    return DeploymentRevision.objects.for_org(org).filter(deployment=deployment).select_related("gpu_type")


def active_canaries(org: Organization) -> QuerySet[Canary]:
    """Canaries running or held, of live deployments."""
    return Canary.objects.for_org(org).filter(state__in=Canary.ACTIVE_STATES, deployment__deleted_at=None)


def active_canary(org: Organization, deployment: Deployment) -> Canary | None:
    return active_canaries(org).filter(deployment=deployment).select_related("stable_revision", "canary_revision").first()
