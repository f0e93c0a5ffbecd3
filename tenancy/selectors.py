"""Read-side queries of tenancy, each scoped to one organization or to one user's own rows."""

from __future__ import annotations

from django.db.models import QuerySet
from django.utils import timezone

from tenancy.models import ApiKey, AuditEntry, Invitation, Membership, Organization, User


def memberships_of(user: User) -> QuerySet[Membership]:
    # Crossing tenants is the point here, but only ever for the user's own rows.
    return Membership.objects.unscoped_across_tenants().filter(user=user).select_related("organization").order_by("organization__name")


def membership_in(user: User, org_slug: str) -> Membership | None:
    return Membership.objects.filter(organization__slug=org_slug, user=user).select_related("organization").first()


def members(org: Organization) -> QuerySet[Membership]:
    return Membership.objects.for_org(org).select_related("user")


def pending_invitations(org: Organization) -> QuerySet[Invitation]:
    return Invitation.objects.for_org(org).filter(accepted_at=None, revoked_at=None, expires_at__gt=timezone.now())


def invitations(org: Organization) -> QuerySet[Invitation]:
    return Invitation.objects.for_org(org)


def api_keys(org: Organization) -> QuerySet[ApiKey]:
    return ApiKey.objects.for_org(org)


def audit_entries(org: Organization) -> QuerySet[AuditEntry]:
    return AuditEntry.objects.for_org(org)
