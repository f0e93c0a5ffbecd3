"""Rollups: usage per minute, hour and day (UTC), per organization, route, deployment,
region, key and model, in several breakdowns: every combination of the dimensions, the
organization's total, and each dimension alone (billing.models.Breakdown). A query picks
the smallest breakdown that answers it (`breakdown_for`).

They are incremental and idempotent by construction: the ingester inserts events with
`ON CONFLICT DO NOTHING RETURNING request_id` and adds exactly the returned (new) events to
the rollups in the same transaction. A replayed event is not returned, so it adds nothing;
a late event lands in the bucket of its own timestamp.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import cast

from billing import histogram
from billing.models import Breakdown, Granularity, UsageRollup
from billing.records import UsageRecord

DIMENSIONS = ("route", "deployment_id", "region", "key_id", "model")
# The dimensions each breakdown keeps.
KEPT: dict[str, tuple[str, ...]] = {Breakdown.ALL: DIMENSIONS, Breakdown.NONE: (), **{name: (name,) for name in DIMENSIONS}}

Key = tuple[str, str, datetime, str, str, str, str, str, str]  # organization, granularity, bucket, breakdown, dimensions


@dataclass
class Delta:
    requests: int = 0
    client_errors: int = 0
    server_errors: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost: Decimal = Decimal(0)
    latency: dict[str, int] = field(default_factory=dict)


def bucket_start(at: datetime, granularity: str) -> datetime:
    if granularity == Granularity.MINUTE:
        return at.replace(second=0, microsecond=0)
    if granularity == Granularity.HOUR:
        return at.replace(minute=0, second=0, microsecond=0)
    return at.replace(hour=0, minute=0, second=0, microsecond=0)


def breakdown_for(dimensions: Iterable[str]) -> str:
    """The smallest breakdown holding every dimension a query filters or groups by."""
    used = set(dimensions)
    if not used:
        return Breakdown.NONE
    if len(used) == 1:
        return next(iter(used))
    return Breakdown.ALL


def deltas(records: Iterable[UsageRecord]) -> dict[Key, Delta]:
    found: dict[Key, Delta] = {}
    for record in records:
        values = {name: getattr(record, name) for name in DIMENSIONS}
        for granularity, breakdown in ((g, b) for g in Granularity.values for b in KEPT):
            kept = KEPT[breakdown]
            key = cast(Key, (record.organization_id, granularity, bucket_start(record.at, granularity), breakdown, *(values[name] if name in kept else "" for name in DIMENSIONS)))
            delta = found.get(key)
            if delta is None:
                delta = found[key] = Delta()
            delta.requests += 1
            delta.client_errors += 400 <= record.status < 500
            delta.server_errors += record.status >= 500
            delta.input_tokens += record.input_tokens
            delta.output_tokens += record.output_tokens
            delta.cost += record.cost
            histogram.add(delta.latency, record.latency_ms)
    return found


def apply(records: list[UsageRecord]) -> None:
    """Adds newly written events to the rollups. Call inside the transaction that wrote
    them; rows are locked on PostgreSQL, so two ingesters cannot lose each other's sums."""
    if not records:
        return
    changes = deltas(records)
    rows = UsageRollup.objects.unscoped_across_tenants().select_for_update().filter(
        organization_id__in={key[0] for key in changes}, bucket__in={key[2] for key in changes}
    )
    existing = {(r.organization_id, r.granularity, r.bucket, r.breakdown, r.route, r.deployment_id, r.region, r.key_id, r.model): r for r in rows}
    updated, created = [], []
    for key, delta in changes.items():
        row = existing.get(key)
        if row is None:
            org, granularity, bucket, breakdown, route, deployment, region, api_key, model = key
            row = UsageRollup(
                organization_id=org, granularity=granularity, bucket=bucket, breakdown=breakdown, route=route, deployment_id=deployment, region=region, key_id=api_key, model=model
            )
            created.append(row)
        else:
            updated.append(row)
        row.requests += delta.requests
        row.client_errors += delta.client_errors
        row.server_errors += delta.server_errors
        row.input_tokens += delta.input_tokens
        row.output_tokens += delta.output_tokens
        row.cost += delta.cost
        histogram.merge_into(row.latency_histogram, delta.latency)
    UsageRollup.objects.unscoped_across_tenants().bulk_create(created)
    UsageRollup.objects.unscoped_across_tenants().bulk_update(
        updated, ["requests", "client_errors", "server_errors", "input_tokens", "output_tokens", "cost", "latency_histogram"]
    )
