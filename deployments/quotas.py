"""Per-organization quotas, set by platform staff (Admin console and admin API).

Each limit is enforced at its own point, with an error that names it:
- replicas and GPUs per type: on deploy and on every change (deployments.services.check_quota);
- requests, tokens and concurrent requests per minute: in the gateway (routing.gateway.limits), from
  the organization's snapshot, so a change applies within the snapshot cache (about 2 s);
- the monthly spend cap: in the gateway, 402 past it (billing.invoices.spend_limit).
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

from django.db import transaction

from deployments.models import GpuType, Quota
from deployments.services import quota_for
from tenancy.decimals import plain
from tenancy.errors import ServiceError
from tenancy.models import Organization
from tenancy.staff_audit import StaffContext, record

MAX_INT = 2_147_483_647  # PositiveIntegerField's ceiling on every database
MAX_SPEND_CAP = Decimal("999999999999.99")
INT_FIELDS = {
    "max_replicas": ("Replicas", 0),
    "requests_per_minute": ("Requests per minute", 1),
    "tokens_per_minute": ("Tokens per minute", 1),
    "concurrent_requests": ("Concurrent requests", 1),
}
OPTIONAL_INT_FIELDS = {
    "key_requests_per_minute": "Requests per minute per key",
    "key_tokens_per_minute": "Tokens per minute per key",
    "key_concurrent_requests": "Concurrent requests per key",
}
FIELDS = (*INT_FIELDS, "gpus", *OPTIONAL_INT_FIELDS, "monthly_spend_cap")


def quota_snapshot(quota: Quota) -> dict[str, Any]:
    return {
        "max_replicas": quota.max_replicas,
        "gpus": {code: int(count) for code, count in sorted(quota.gpus.items()) if int(count)},
        "requests_per_minute": quota.requests_per_minute,
        "tokens_per_minute": quota.tokens_per_minute,
        "concurrent_requests": quota.concurrent_requests,
        "key_requests_per_minute": quota.key_requests_per_minute,
        "key_tokens_per_minute": quota.key_tokens_per_minute,
        "key_concurrent_requests": quota.key_concurrent_requests,
        "monthly_spend_cap": plain(quota.monthly_spend_cap) if quota.monthly_spend_cap is not None else None,
    }


def _whole(value: object, field: str, label: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ServiceError(f"{label} must be a whole number.", field=field)
    try:
        number = int(value)
    except ValueError:
        raise ServiceError(f"{label} must be a whole number.", field=field) from None
    if number < minimum or number > MAX_INT:
        raise ServiceError(f"{label} must be between {minimum} and {MAX_INT}.", field=field)
    return number


def _gpus(value: object, current: dict[str, Any]) -> dict[str, int]:
    if not isinstance(value, dict):
        raise ServiceError('GPUs per type must be an object of GPU type code to count, e.g. {"T4": 2}.', field="gpus")
    known = set(GpuType.objects.values_list("code", flat=True))
    unknown = sorted(str(code) for code in value if code not in known)
    if unknown:
        raise ServiceError(f"Unknown GPU type(s) {', '.join(unknown)}; choose from {', '.join(sorted(known))}.", field="gpus")
    # Types not named keep their limit, so a PATCH can change one type alone.
    merged = {code: int(count) for code, count in current.items()}
    for code, count in value.items():
        merged[code] = _whole(count, "gpus", f"The {code} GPU quota", 0)
    return {code: count for code, count in sorted(merged.items()) if count}


def _spend_cap(value: object) -> Decimal | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, int | str | Decimal):
        raise ServiceError("The monthly spend cap must be an amount like 250.00, or empty for none.", field="monthly_spend_cap")
    try:
        amount = Decimal(str(value))
    except InvalidOperation:
        raise ServiceError("The monthly spend cap must be an amount like 250.00, or empty for none.", field="monthly_spend_cap") from None
    if not amount.is_finite() or amount < 0 or amount > MAX_SPEND_CAP:
        raise ServiceError(f"The monthly spend cap must be between 0 and {MAX_SPEND_CAP}.", field="monthly_spend_cap")
    if amount != amount.quantize(Decimal("0.01")):
        raise ServiceError("The monthly spend cap is in whole cents: at most two decimals.", field="monthly_spend_cap")
    return amount.quantize(Decimal("0.01"))


@transaction.atomic
def update_quota(staff: StaffContext, org: Organization, **changes: object) -> Quota:
    """Changes any of FIELDS; the others keep their value. One audit entry when something
    changed, none when nothing did."""
    unknown = sorted(set(changes) - set(FIELDS))
    if unknown:
        raise ServiceError(f"Unknown quota field(s) {', '.join(unknown)}; quotas are {', '.join(FIELDS)}.", field=unknown[0])
    # The organization's row lock: the same lock deploys take to check the quota.
    Organization.objects.select_for_update().filter(pk=org.pk).first()
    quota = Quota.objects.for_org(org).first() or quota_for(org)  # unsaved defaults until the first change
    before = quota_snapshot(quota)
    for field, value in changes.items():
        if field in INT_FIELDS:
            label, minimum = INT_FIELDS[field]
            setattr(quota, field, _whole(value, field, label, minimum))
        elif field in OPTIONAL_INT_FIELDS:
            setattr(quota, field, None if value is None or value == "" else _whole(value, field, OPTIONAL_INT_FIELDS[field], 1))
        elif field == "gpus":
            quota.gpus = _gpus(value, quota.gpus)
        else:
            quota.monthly_spend_cap = _spend_cap(value)
    after = quota_snapshot(quota)
    if after == before:
        return quota  # nothing changed: no write, no entry
    quota.save()
    changed = sorted(name for name in after if after[name] != before[name])
    record(
        staff, "quota.changed", target_type="quota", target_id=org.pk, organization=org, before=before, after={**after, "changed": changed}
    )
    return quota
