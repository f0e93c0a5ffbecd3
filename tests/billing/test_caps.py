"""Caps that bind: at the hard spend limit, or suspended, an organization's deployments
stop accruing. No new replicas at once, zero after the grace, refusals that say who can
lift it, the owners told, and everything back once it is lifted. The other tenant is never
touched. Against the reconcile loop with the in-memory driver."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.conf import settings
from django.core import mail
from django.utils import timezone

from billing import caps
from billing.models import BillingAccount, Plan
from billing.rating import month_start
from deployments import services
from deployments.models import Quota, Replica
from metering import ingest
from tenancy.errors import OrganizationSuspended, SpendLimitReached
from tenancy.models import AuditEntry, OrgStatus
from tests.conftest import Tenants
from tests.controlplane.test_reconcile import Fleet, replicas
from tests.factories import create_deployment, ensure_clusters, owner_context
from tests.metering.test_usage_pipeline import _record

LIVE = (Replica.State.PENDING, Replica.State.PROVISIONING, Replica.State.LOADING, Replica.State.READY)


@pytest.fixture
def fleet(tenants: Tenants) -> Fleet:
    ensure_clusters()
    return Fleet()


def _spend(org_id: str, amount: str) -> None:
    """This month's usage: an external provider's cost, charged as it is (no markup)."""
    ingest.write_batch(
        [
            _record(
                org_id,
                f"spent-{org_id}-{amount}",
                at=max(timezone.now() - timedelta(minutes=5), month_start(timezone.now())),
                cost=Decimal(amount),
            )
        ]
    )


def test_at_the_cap_deployments_stop_growing_then_scale_to_zero_and_come_back_when_lifted(tenants: Tenants, fleet: Fleet) -> None:
    mine = create_deployment(tenants.org_a, name="mine", min_replicas=2, max_replicas=3, allowed_regions=("us-east", "eu-west"))
    theirs = create_deployment(tenants.org_b, name="theirs", min_replicas=1, max_replicas=1)
    fleet.run(mine, passes=2)
    fleet.run(theirs, passes=2)
    Quota.objects.create(organization=tenants.org_a, monthly_spend_cap=Decimal("10.00"), gpus={"CPU": 8})
    _spend(tenants.org_a.pk, "10.50")
    _spend(tenants.org_b.pk, "99")  # no cap: nothing happens to B

    assert caps.enforce(tenants.org_a, now=timezone.now()) == "held"
    assert caps.enforce(tenants.org_b, now=timezone.now()) is None
    quota = Quota.objects.get(organization=tenants.org_a)
    assert "monthly spend cap of $10.00" in quota.spend_limit_reason and "platform staff can raise the cap" in quota.spend_limit_reason
    [told] = mail.outbox
    assert told.to == [tenants.owner_a.email] and "scales to zero in" in told.body
    assert AuditEntry.objects.for_org(tenants.org_a).filter(action="billing.spend_limit_reached").exists()

    # In the grace: the running replicas stay, nothing new starts, nothing may grow.
    fleet.run(mine, passes=2)
    assert len(replicas(tenants.org_a, mine, Replica.State.READY)) == 2
    mine.refresh_from_db()
    assert mine.status_reason.startswith("held, no new replicas; scales to zero at")
    with pytest.raises(SpendLimitReached, match="platform staff can raise the cap"):
        services.update_deployment(owner_context(tenants.org_a), mine, min_replicas=3)
    with pytest.raises(SpendLimitReached):
        create_deployment(tenants.org_a, name="another")
    services.update_deployment(owner_context(tenants.org_a), mine, min_replicas=1)  # spending less is always allowed

    # Past the grace: zero replicas; the other tenant's deployment is untouched.
    Quota.objects.filter(organization=tenants.org_a).update(
        spend_limit_reached_at=timezone.now() - timedelta(seconds=settings.SPEND_LIMIT_GRACE_SECONDS + 1)
    )
    fleet.run(mine, passes=3)
    assert replicas(tenants.org_a, mine, *LIVE) == []
    mine.refresh_from_db()
    assert mine.status_reason.startswith("held at zero replicas")
    fleet.run(theirs)
    assert len(replicas(tenants.org_b, theirs, Replica.State.READY)) == 1

    # Staff raise the cap: released, told, and the deployment scales back by itself.
    Quota.objects.filter(organization=tenants.org_a).update(monthly_spend_cap=Decimal("50.00"))
    assert caps.enforce(tenants.org_a, now=timezone.now()) == "released"
    assert "no longer held" in mail.outbox[-1].body
    fleet.run(mine, passes=2)
    assert len(replicas(tenants.org_a, mine, Replica.State.READY)) == 1  # its min_replicas, now 1
    mine.refresh_from_db()
    assert not mine.status_reason.startswith("held")


def test_a_suspended_organization_stops_at_once_and_may_not_deploy(tenants: Tenants, fleet: Fleet) -> None:
    mine = create_deployment(tenants.org_a, name="mine", min_replicas=1, max_replicas=1)
    fleet.run(mine, passes=2)
    tenants.org_a.status, tenants.org_a.status_reason = OrgStatus.SUSPENDED, "payment overdue"
    tenants.org_a.save()
    fleet.run(mine, passes=2)
    assert replicas(tenants.org_a, mine, *LIVE) == []
    with pytest.raises(OrganizationSuspended, match="platform staff can reinstate it"):
        create_deployment(tenants.org_a, name="another")
    tenants.org_a.status = OrgStatus.ACTIVE
    tenants.org_a.save()
    fleet.run(mine, passes=2)
    assert len(replicas(tenants.org_a, mine, Replica.State.READY)) == 1


def test_the_free_plan_holds_at_its_credit_and_the_402_says_who_can_lift_it(tenants: Tenants) -> None:
    BillingAccount.objects.create(organization=tenants.org_a, plan=Plan.FREE)
    _spend(tenants.org_a.pk, "6")  # past the $5 monthly credit
    assert caps.enforce(tenants.org_a, now=timezone.now()) == "held"
    reason = Quota.objects.get(organization=tenants.org_a).spend_limit_reason
    assert "free plan credit" in reason and "platform staff can grant credit" in reason
