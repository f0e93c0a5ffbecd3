"""Hard spend limits that bind beyond the gateway: while an organization's month stands at
its limit (the staff's cap, or on the free plan what its credit covers), its quota says so
and the control plane holds its deployments (deployments.holds): no new replicas at once,
zero replicas after the grace. The owners are told when the hold starts and when it ends;
both are in the audit log. Checked every minute (billing.tasks.enforce_spend_limits)."""

from __future__ import annotations

from datetime import datetime

from django.conf import settings
from django.core.mail import send_mail
from django.db import transaction

from billing import invoices, rating
from billing.models import BillingAccount, Plan
from deployments.models import Quota
from deployments.services import DEFAULT_GPU_QUOTA, DEFAULT_MAX_REPLICAS
from tenancy import audit
from tenancy.context import OrgContext
from tenancy.models import Membership, Organization, Role


def organizations_to_check() -> list[Organization]:
    """Those with a hard limit, and those held now (whose limit may have been lifted)."""
    capped = Quota.objects.unscoped_across_tenants().exclude(monthly_spend_cap=None).values("organization_id")
    held = Quota.objects.unscoped_across_tenants().exclude(spend_limit_reached_at=None).values("organization_id")
    free = BillingAccount.objects.unscoped_across_tenants().filter(plan=Plan.FREE).values("organization_id")
    return list(Organization.objects.filter(pk__in=capped.union(held, free)))


@transaction.atomic
def enforce(org: Organization, *, now: datetime) -> str | None:
    """Starts or ends the organization's hold; returns "held", "released" or None."""
    limit = invoices.spend_limit(org, now=now)
    reached = limit is not None and rating.month_to_date(org, now, exact=True) >= limit.amount
    quota = Quota.objects.select_for_update().filter(organization=org).first()
    held = quota is not None and quota.spend_limit_reached_at is not None
    if reached and not held:
        assert limit is not None
        if quota is None:  # the defaults an organization without a row has (deployments.services.quota_for)
            quota = Quota(organization=org, max_replicas=DEFAULT_MAX_REPLICAS, gpus=dict(DEFAULT_GPU_QUOTA))
        quota.spend_limit_reached_at = now
        quota.spend_limit_reason = f"its {limit.reason} is reached this month; {limit.lifted_by}"
        quota.save()
        _tell(org, "billing.spend_limit_reached", quota.spend_limit_reason, held=True)
        return "held"
    if held and not reached:
        assert quota is not None
        reason = quota.spend_limit_reason
        quota.spend_limit_reached_at, quota.spend_limit_reason = None, ""
        quota.save(update_fields=["spend_limit_reached_at", "spend_limit_reason", "updated_at"])
        _tell(org, "billing.spend_limit_lifted", reason, held=False)
        return "released"
    return None


def _tell(org: Organization, action: str, reason: str, *, held: bool) -> None:
    system = OrgContext(organization=org, role=Role.OWNER)
    audit.record(system, action, target_type="organization", target_id=org.pk, after={"reason": reason})
    grace_min = settings.SPEND_LIMIT_GRACE_SECONDS // 60
    if held:
        subject = f"Switchboard: {org.name} reached its spend limit"
        body = (
            f"{org.name}: {reason}.\n\nNew API requests are refused, no deployment starts new replicas, and every "
            f"deployment scales to zero in {grace_min} minutes unless the limit is lifted."
        )
    else:
        subject = f"Switchboard: {org.name} is below its spend limit again"
        body = f"{org.name} is no longer held ({reason}). Requests are served and deployments scale as configured again."
    owners = list(Membership.objects.filter(organization=org, role=Role.OWNER).values_list("user__email", flat=True))
    if owners:
        send_mail(subject, body, None, owners, fail_silently=True)
