"""Holds: when an organization's deployments stop accruing. A suspended organization
(platform staff) is held at once; one whose month has reached its hard spend limit (set by
billing.caps on the quota) is held too, with a grace before its replicas stop. While held
no new replica starts and no deployment may be created, scaled or promoted; past the grace
every deployment scales to zero. Lifting the hold (staff raise the cap, grant credit, or
reinstate) brings them back to their own scaling on the next reconcile pass."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings

from deployments.models import Quota
from tenancy.errors import OrganizationSuspended, SpendLimitReached
from tenancy.models import Organization, OrgStatus


@dataclass(frozen=True)
class Hold:
    reason: str  # what holds it and who can lift it, said to the tenant
    scale_to_zero_at: datetime
    suspended: bool

    def describe(self, now: datetime) -> str:
        if now >= self.scale_to_zero_at:
            return f"held at zero replicas: {self.reason}"
        return f"held, no new replicas; scales to zero at {self.scale_to_zero_at:%Y-%m-%d %H:%M} UTC: {self.reason}"

    def refusal(self) -> Exception:
        if self.suspended:
            return OrganizationSuspended(f"Your organization is suspended, so deployments cannot change: {self.reason}")
        return SpendLimitReached(f"Deployments cannot start or grow while {self.reason}")


def hold_for(*, organization: Organization, quota: Quota | None, now: datetime) -> Hold | None:
    if organization.status == OrgStatus.SUSPENDED:
        why = organization.status_reason or "suspended by platform staff"
        return Hold(f"{why}; platform staff can reinstate it", scale_to_zero_at=now, suspended=True)
    if quota is not None and quota.spend_limit_reached_at is not None:
        grace = timedelta(seconds=settings.SPEND_LIMIT_GRACE_SECONDS)
        return Hold(quota.spend_limit_reason, scale_to_zero_at=quota.spend_limit_reached_at + grace, suspended=False)
    return None


def current_hold(organization: Organization, *, now: datetime) -> Hold | None:
    return hold_for(organization=organization, quota=Quota.objects.for_org(organization).first(), now=now)


def refuse_if_held(organization: Organization, *, now: datetime) -> None:
    hold = current_hold(organization, now=now)
    if hold is not None:
        raise hold.refusal()
