"""Billing accounts: how an organization starts paying. A new organization starts on the
free plan: its monthly free credit is also a hard limit (billing.caps), so nothing is
charged to anyone before a payment method exists. Saving a payment method (Stripe
Checkout) moves it to pay as you go. One person may own at most
SWITCHBOARD_MAX_FREE_ORGANIZATIONS organizations on free credit, so free credit cannot be
multiplied by creating organizations."""

from __future__ import annotations

from django.conf import settings
from django.db import transaction

from billing.models import BillingAccount, Plan
from tenancy import audit, services
from tenancy.context import OrgContext
from tenancy.errors import ServiceError
from tenancy.models import Membership, Organization, Role, User


def free_organizations_owned(user: User) -> int:
    owned = Membership.objects.filter(user=user, role=Role.OWNER).values("organization_id")
    return BillingAccount.objects.unscoped_across_tenants().filter(organization_id__in=owned, plan=Plan.FREE).count()


@transaction.atomic
def create_organization(user: User, name: str, *, ip_address: str | None = None, request_id: str = "") -> Organization:
    """A new organization, on the free plan."""
    limit = settings.MAX_FREE_ORGANIZATIONS
    if free_organizations_owned(user) >= limit:
        raise ServiceError(
            f"You already own {limit} organizations on free credit. Add a payment method to one of them (its Billing page), "
            "or ask platform staff for more.",
            field="name",
        )
    org = services.create_organization(user, name, ip_address=ip_address, request_id=request_id)
    BillingAccount.objects.create(organization=org, plan=Plan.FREE)
    return org


@transaction.atomic
def payment_method_added(org: Organization) -> bool:
    """A free organization that saved a payment method pays as it goes from now on."""
    account, _ = BillingAccount.objects.get_or_create(organization=org, defaults={"plan": Plan.FREE})
    if account.plan != Plan.FREE:
        return False
    account.plan = Plan.PAY_AS_YOU_GO
    account.save(update_fields=["plan", "updated_at"])
    system = OrgContext(organization=org, role=Role.OWNER)
    audit.record(
        system, "billing.plan_changed", target_type="organization", target_id=org.pk, before={"plan": "free"}, after={"plan": "payg"}
    )
    return True
