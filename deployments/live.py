"""What the deployment page shows live: its replicas by region, its event timeline and its
canary, read the same way for the page's first render (console.views.deployments) and for
every push over its socket (deployments.consumers), so the two never disagree."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.template.loader import render_to_string
from django.utils import timezone

from deployments import canaries
from deployments.canaries import CanarySummary
from deployments.models import Deployment, Replica
from deployments.timeline import TimelineEntry, timeline
from tenancy.models import Organization

# Each live part: the key its HTML travels under on the socket, the element it fills on the
# page (live-status.js), and its partial template.
PARTIALS = {
    "replicas_html": "deployments/_replicas.html",
    "events_html": "deployments/_events.html",
    "canary_html": "deployments/_canary.html",
}


@dataclass(frozen=True)
class LiveParts:
    replicas_by_region: list[tuple[str, list[Replica]]]
    timeline: list[TimelineEntry]
    canary: CanarySummary | None

    def context(self, deployment: Deployment) -> dict[str, object]:
        """The partials' template context."""
        return {
            "deployment": deployment,
            "replicas_by_region": self.replicas_by_region,
            "timeline": self.timeline,
            "canary": self.canary,
        }


def live_parts(org: Organization, deployment: Deployment, *, now: datetime | None = None) -> LiveParts:
    replicas = (
        Replica.objects.for_org(org)
        .filter(deployment=deployment)
        .exclude(state__in=(Replica.State.STOPPED, Replica.State.FAILED))
        .select_related("cluster", "revision")
        .order_by("cluster__region", "created_at")
    )
    by_region: dict[str, list[Replica]] = {}
    for replica in replicas:
        by_region.setdefault(replica.cluster.region, []).append(replica)
    return LiveParts(
        replicas_by_region=sorted(by_region.items()),
        timeline=timeline(org, deployment),
        canary=canaries.summary(org, deployment, now=now or timezone.now()),
    )


def rendered(deployment: Deployment, parts: LiveParts) -> dict[str, str]:
    """Each live part's HTML, by its socket key."""
    context = parts.context(deployment)
    return {key: render_to_string(template, context) for key, template in PARTIALS.items()}
