"""A deployment's event timeline: its replicas' state transitions (ReplicaEvent) and what
happened to it as a whole (DeploymentEvent: canary steps), newest first, in one list. The
deployment page renders it, and its socket pushes it again on every change."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from deployments.models import Deployment, DeploymentEvent, ReplicaEvent
from tenancy.models import Organization

LIMIT = 50


@dataclass(frozen=True, slots=True)
class TimelineEntry:
    """One line of the timeline: a replica's transition (replica_id set) or a deployment
    event (kind set)."""

    at: datetime
    replica_id: str = ""
    region: str = ""
    from_state: str = ""
    to_state: str = ""
    reason: str = ""
    kind: str = ""
    message: str = ""


def timeline(org: Organization, deployment: Deployment, *, limit: int = LIMIT) -> list[TimelineEntry]:
    """The newest `limit` events of the deployment, of either kind, newest first."""
    replica_events = (
        ReplicaEvent.objects.for_org(org).filter(deployment=deployment).select_related("replica__cluster").order_by("-at", "-id")[:limit]
    )
    deployment_events = DeploymentEvent.objects.for_org(org).filter(deployment=deployment).order_by("-at", "-id")[:limit]
    entries = [
        TimelineEntry(
            at=event.at,
            replica_id=event.replica_id,
            region=event.replica.cluster.region,
            from_state=event.from_state,
            to_state=event.to_state,
            reason=event.reason,
        )
        for event in replica_events
    ] + [TimelineEntry(at=event.at, kind=event.kind, message=event.message) for event in deployment_events]
    entries.sort(key=lambda entry: entry.at, reverse=True)  # stable: each list is already newest first
    return entries[:limit]
