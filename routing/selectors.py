"""Reads for the routing pages and API."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from django.core.cache import cache
from django.db.models import Avg, Count, Q, QuerySet
from django.utils import timezone

from deployments.models import Deployment, Replica
from metering.models import UsageEvent
from routing.models import ExternalProvider, ModelRoute, RouteTarget
from tenancy.models import Organization


def routes(org: Organization) -> QuerySet[ModelRoute]:
    return ModelRoute.objects.for_org(org).order_by("name")


def providers(org: Organization) -> QuerySet[ExternalProvider]:
    return ExternalProvider.objects.for_org(org).order_by("name")


def targets(org: Organization, route: ModelRoute) -> list[RouteTarget]:
    return list(RouteTarget.objects.for_org(org).filter(route=route).select_related("deployment", "provider").order_by("position"))


def live_deployments(org: Organization) -> QuerySet[Deployment]:
    return Deployment.objects.for_org(org).filter(deleted_at=None).order_by("name")


def scaled_to_zero(org: Organization) -> set[str]:
    """The names a call would have to start a replica for (routing.gateway.cold_start):
    deployments that may scale to zero and have no READY replica now, and routes whose every
    target is such a deployment (a provider target or a ready replica answers without one)."""
    ready = set(Replica.objects.for_org(org).filter(state=Replica.State.READY).values_list("deployment_id", flat=True))
    cold = {
        d.pk: d.name
        for d in live_deployments(org).select_related("current_revision")
        if d.current_revision is not None and d.current_revision.min_replicas == 0 and d.pk not in ready
    }
    targets_cold: dict[str, list[bool]] = {}
    for target in RouteTarget.objects.for_org(org).select_related("route"):
        targets_cold.setdefault(target.route.name, []).append(target.deployment_id in cold)
    return set(cold.values()) | {name for name, flags in targets_cold.items() if flags and all(flags)}


@dataclass
class TrafficRow:
    target: str
    region: str
    requests: int
    share: float  # of the route's requests in the window
    errors: int
    avg_latency_ms: float | None
    avg_ttft_ms: float | None


def traffic(org: Organization, route_name: str, window: timedelta = timedelta(hours=1)) -> list[TrafficRow]:
    """Where a route's requests went over the window, by target and region."""
    since = timezone.now() - window
    rows = (
        UsageEvent.objects.for_org(org)
        .filter(route=route_name, at__gte=since)
        .values("target", "region")
        .annotate(requests=Count("id"), errors=Count("id", filter=Q(status__gte=400)), latency=Avg("latency_ms"), ttft=Avg("ttft_ms"))
        .order_by("-requests")
    )
    total = sum(row["requests"] for row in rows) or 1
    return [
        TrafficRow(
            target=row["target"] or "(none: refused before routing)",
            region=row["region"] or "-",
            requests=row["requests"],
            share=row["requests"] / total,
            errors=row["errors"],
            avg_latency_ms=row["latency"],
            avg_ttft_ms=row["ttft"],
        )
        for row in rows
    ]


def breaker_states(endpoint_keys: list[str]) -> dict[str, str]:
    """Circuit-breaker states the gateway processes last published (closed when unknown)."""
    found = cache.get_many([f"breaker:{key}" for key in endpoint_keys])
    return {key: found.get(f"breaker:{key}", {}).get("state", "closed") for key in endpoint_keys}
