"""Live usage for the console's dashboards: what the WebSocket consumer
(metering.consumers) re-reads when told of a change, or once a second where it polls.

Each re-read is cheap: the membership (revoked or demoted users stop seeing data at once)
and the organization's newest minute of usage (one index lookup). The dashboard is
recomputed only when that changed, when the range's window slides to a new bucket, or
every REFRESH_S in any case (a late event for an older minute is seen then); and never
more often than its own cost allows.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime

from django.db.models import Max
from django.utils import timezone

from deployments.models import ReplicaEvent
from deployments.selectors import live_deployments
from metering import dashboards
from metering.models import Breakdown, Granularity, UsageRollup
from tenancy.models import Membership, Organization, Role

REFRESH_S = 30.0
GONE = "gone"  # the user is no longer a member, or the deployment was deleted


def usage_mark(org: Organization) -> tuple[object, int]:
    """Changes whenever this organization's usage grows: its newest minute and the
    requests counted in it, one row read through the rollups' unique index. Written in the
    same transaction as the events, and per organization, so it does not depend on the
    order in which parallel ingest writers commit."""
    newest = (
        UsageRollup.objects.for_org(org)
        .filter(granularity=Granularity.MINUTE, breakdown=Breakdown.NONE)
        .order_by("-bucket")
        .values_list("bucket", "requests")
        .first()
    )
    return newest or (None, 0)


def newest_replica_event_id(org: Organization, deployment_id: str) -> int:
    return ReplicaEvent.objects.for_org(org).filter(deployment_id=deployment_id).aggregate(newest=Max("id"))["newest"] or 0


def _membership(user_id: int, org_slug: str) -> Membership | None:
    return Membership.objects.filter(user_id=user_id, organization__slug=org_slug).select_related("organization").first()


def _live_deployment(org: Organization, deployment_id: str) -> bool:
    return live_deployments(org).filter(pk=deployment_id).exists()


class UsageFeed:
    """One open dashboard: its parameters, what it last sent and the change watermarks."""

    def __init__(
        self, user_id: int, org_slug: str, params: dashboards.DashboardParams, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.user_id = user_id
        self.org_slug = org_slug
        self.params = params
        self.clock = clock
        self.usage_mark: tuple[object, int] = (None, 0)
        self.replica_mark = 0
        self.window_start: datetime | None = None
        self.show_cost = False
        self.computed_at = 0.0
        self.not_before = 0.0
        self.dirty = False
        self.last: dict[str, object] | None = None
        self.organization_id = ""

    def first(self) -> dict[str, object] | None:
        """The dashboard to send on connect, or None when the user may not see it."""
        membership = _membership(self.user_id, self.org_slug)
        if membership is None:
            return None
        org = membership.organization
        if self.params.deployment_id and not _live_deployment(org, self.params.deployment_id):
            return None
        self.organization_id = org.pk
        self.usage_mark = usage_mark(org)  # before computing, so nothing falls between
        if self.params.deployment_id:
            self.replica_mark = newest_replica_event_id(org, self.params.deployment_id)
        self.last = self._compute(org, Role(membership.role))
        return self.last

    def poll(self) -> dict[str, object] | str | None:
        """A new dashboard to push, GONE, or None when nothing changed."""
        membership = _membership(self.user_id, self.org_slug)
        if membership is None:
            return GONE
        org = membership.organization
        role = Role(membership.role)
        if self.params.deployment_id and not _live_deployment(org, self.params.deployment_id):
            return GONE
        mark = usage_mark(org)
        if mark != self.usage_mark:
            self.dirty, self.usage_mark = True, mark
        if self.params.deployment_id:
            replica_mark = newest_replica_event_id(org, self.params.deployment_id)
            self.dirty |= replica_mark != self.replica_mark
            self.replica_mark = replica_mark
        self.dirty |= self._window_start() != self.window_start
        self.dirty |= role.sees_money != self.show_cost
        self.dirty |= self.clock() - self.computed_at >= REFRESH_S
        if not self.dirty or self.clock() < self.not_before:
            return None
        payload = self._compute(org, role)
        if payload == self.last:
            return None
        self.last = payload
        return payload

    def due_in(self) -> float:
        """Seconds until this dashboard needs a re-read even if nothing is published: a
        throttled recompute, the range's window sliding on, or the periodic refresh."""
        now = self.clock()
        if self.dirty:
            return self.not_before - now
        return min(self.window_slides_in(), REFRESH_S - (now - self.computed_at))

    def window_slides_in(self) -> float:
        """Seconds to the next whole minute, when any range's window may move on a bucket."""
        return 60.0 - time.time() % 60.0 + 0.05

    def _window_start(self) -> datetime:
        range_ = dashboards.RANGES[self.params.range]
        return dashboards.window(range_, self.params.zone, timezone.now())[0][0]

    def _compute(self, org: Organization, role: Role) -> dict[str, object]:
        started = self.clock()
        now = timezone.now()
        self.show_cost = role.sees_money
        self.window_start = dashboards.window(dashboards.RANGES[self.params.range], self.params.zone, now)[0][0]
        if self.params.deployment_id:
            payload = dashboards.deployment_dashboard(org, self.params.deployment_id, self.params, now=now)
        else:
            payload = dashboards.usage_dashboard(org, self.params, show_cost=self.show_cost, now=now)
        finished = self.clock()
        self.computed_at = finished
        self.dirty = False
        # A dashboard that takes t seconds to build is rebuilt at most every 4t (and the
        # poll itself runs once a second), so a month split by key cannot hog the server.
        self.not_before = finished + 4 * (finished - started)
        return payload
