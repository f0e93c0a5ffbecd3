"""The audit log: one entry per change, written in the same transaction as the change."""

from __future__ import annotations

from typing import Any

from tenancy.context import OrgContext
from tenancy.models import AuditEntry


def record(
    ctx: OrgContext,
    action: str,
    *,
    target_type: str,
    target_id: str,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
) -> AuditEntry:
    return AuditEntry.objects.create(
        organization=ctx.organization,
        actor_user=ctx.user,
        actor_key=ctx.api_key,
        actor_label=ctx.actor_label,
        action=action,
        target_type=target_type,
        target_id=target_id,
        before=before,
        after=after,
        ip_address=ctx.ip_address,
        request_id=ctx.request_id,
    )
