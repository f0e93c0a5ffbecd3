"""Platform staff acting in the Admin console: who is acting, the staff audit log, and the
tenant changes that belong to tenancy (suspending and reactivating an organization).

Every staff change writes one `StaffAuditEntry` (the platform's log, at /staff/audit/) in
the same transaction; a change to one tenant also writes one `AuditEntry` in that tenant's
own log, with the staff user as actor, so the tenant sees who changed what.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.db import transaction
from django.http import HttpRequest

from tenancy.access import client_ip, request_id
from tenancy.errors import Conflict, NotAllowed, ServiceError
from tenancy.models import AuditEntry, Organization, OrgStatus, StaffAuditEntry, User

STATUS_REASON_MAX = 300


@dataclass(frozen=True)
class StaffContext:
    user: User
    ip_address: str | None = None
    request_id: str = ""

    def __post_init__(self) -> None:
        # Services check it again: a view that forgot its decorator still cannot act.
        if not (self.user.is_authenticated and self.user.is_staff and self.user.is_active):
            raise NotAllowed("Only platform staff can do this.")

    @classmethod
    def of(cls, request: HttpRequest) -> StaffContext:
        return cls(user=request.user, ip_address=client_ip(request), request_id=request_id(request))  # type: ignore[arg-type]

    @property
    def actor_label(self) -> str:
        return f"{self.user.email} (platform staff)"


def record(
    staff: StaffContext,
    action: str,
    *,
    target_type: str,
    target_id: str,
    organization: Organization | None = None,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
) -> StaffAuditEntry:
    """One entry in the staff log, and, for a change to one tenant, one in its own log."""
    entry = StaffAuditEntry.objects.create(
        organization=organization,
        organization_name=organization.name if organization is not None else "",
        actor_user=staff.user,
        actor_label=staff.actor_label,
        action=action,
        target_type=target_type,
        target_id=target_id,
        before=before,
        after=after,
        ip_address=staff.ip_address,
        request_id=staff.request_id,
    )
    if organization is not None:
        record_for_tenant(staff, organization, action, target_type=target_type, target_id=target_id, before=before, after=after)
    return entry


def record_for_tenant(
    staff: StaffContext,
    organization: Organization,
    action: str,
    *,
    target_type: str,
    target_id: str,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
) -> AuditEntry:
    """Only the tenant's log: for a platform change that touched this tenant's objects
    (its replicas on a cluster marked down), already recorded once in the staff log."""
    return AuditEntry.objects.create(
        organization=organization,
        actor_user=staff.user,
        actor_label=staff.actor_label,
        action=action,
        target_type=target_type,
        target_id=target_id[:40],
        before=before,
        after=after,
        ip_address=staff.ip_address,
        request_id=staff.request_id,
    )


def standing_snapshot(org: Organization) -> dict[str, Any]:
    return {"status": org.status, "status_reason": org.status_reason}


@transaction.atomic
def set_organization_status(staff: StaffContext, org: Organization, status: str, reason: str) -> Organization:
    """Suspend (the gateway answers 403 with the reason) or reactivate an organization.
    Past due is billing's state (Stripe webhooks), not one staff set by hand."""
    reason = (reason or "").strip()
    if status not in (OrgStatus.ACTIVE, OrgStatus.SUSPENDED):
        raise ServiceError("Choose active or suspended; past due is set by billing when a payment fails.", field="status")
    if not reason:
        raise ServiceError("Give a reason: it is shown to the tenant and kept in both audit logs.", field="reason")
    if len(reason) > STATUS_REASON_MAX:
        raise ServiceError(f"Keep the reason under {STATUS_REASON_MAX} characters.", field="reason")
    org = Organization.objects.select_for_update().get(pk=org.pk)
    if org.status == status:
        raise Conflict(f"{org.name} is already {OrgStatus(status).label.lower()}.", field="status")
    before = standing_snapshot(org)
    org.status = status
    # The gateway shows a suspended organization this reason; an active one needs none.
    org.status_reason = reason if status == OrgStatus.SUSPENDED else ""
    org.save(update_fields=["status", "status_reason"])
    action = "organization.suspended" if status == OrgStatus.SUSPENDED else "organization.reactivated"
    record(
        staff,
        action,
        target_type="organization",
        target_id=org.pk,
        organization=org,
        before=before,
        after={**standing_snapshot(org), "reason": reason},
    )
    return org
