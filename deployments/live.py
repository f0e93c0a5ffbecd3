"""What the deployment page shows live: its start-up stage, its replicas by region, its event
timeline and its canary, read the same way for the page's first render
(console.views.deployments) and for every push over its socket (deployments.consumers), so
the two never disagree."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from django.template.loader import render_to_string
from django.utils import timezone

from deployments import canaries
from deployments.canaries import CanarySummary
from deployments.models import Deployment, Replica
from deployments.startup import Startup, startup_of
from deployments.timeline import TimelineEntry, timeline
from tenancy.models import Organization

# Each live part: the key its HTML travels under on the socket, the element it fills on the
# page (live-status.js), and its partial template.
PARTIALS = {
    "startup_html": "deployments/_startup.html",
    "replicas_html": "deployments/_replicas.html",
    "events_html": "deployments/_events.html",
    "canary_html": "deployments/_canary.html",
}
# Parts whose HTML changes with the clock alone (a start's ticking seconds): a change in
# them alone is not pushed; the page's script ticks the seconds between pushes.
CLOCK_PARTS = ("startup_html",)


@dataclass(frozen=True)
class LiveParts:
    startup: Startup | None
    replicas_by_region: list[tuple[str, list[Replica]]]
    timeline: list[TimelineEntry]
    canary: CanarySummary | None

    def context(self, deployment: Deployment) -> dict[str, object]:
        """The partials' template context."""
        return {
            "deployment": deployment,
            "startup": self.startup,
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
    now = now or timezone.now()
    return LiveParts(
        startup=startup_of(org, deployment, now=now),
        replicas_by_region=sorted(by_region.items()),
        timeline=timeline(org, deployment),
        canary=canaries.summary(org, deployment, now=now),
    )


def rendered(deployment: Deployment, parts: LiveParts) -> dict[str, str]:
    """Each live part's HTML, by its socket key, and under "startup" what says when the
    start-up bar must be redrawn (its HTML alone changes every second of a start)."""
    context = parts.context(deployment)
    html = {key: render_to_string(template, context) for key, template in PARTIALS.items()}
    return {**html, "startup": "|".join(str(value) for value in parts.startup.key) if parts.startup else ""}


def same_page(first: Mapping[str, object], second: Mapping[str, object]) -> bool:
    """Whether two snapshots show the same page but for the clock's ticking (CLOCK_PARTS)."""
    return {k: v for k, v in first.items() if k not in CLOCK_PARTS} == {k: v for k, v in second.items() if k not in CLOCK_PARTS}
