"""Rollups: usage per minute, hour and day (UTC), per organization, route, deployment,
region, key and model, in several breakdowns: every combination of the dimensions, the
organization's total, and each dimension alone (metering.models.Breakdown). A query picks
the smallest breakdown that answers it (`breakdown_for`).

They are incremental and idempotent by construction: the ingester inserts events with
`ON CONFLICT DO NOTHING RETURNING` and adds exactly the returned (new) events to
the rollups in the same transaction. A replayed event is not returned, so it adds nothing;
a late event lands in the bucket of its own timestamp.
"""

from __future__ import annotations

import functools
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import numpy as np
import orjson
from django.db import connection

from broadcast.groups import usage_group
from broadcast.publish import publish_after_commit
from metering import histogram
from metering.models import Breakdown, Granularity, UsageRollup
from metering.records import UsageRecord

DIMENSIONS = ("route", "deployment_id", "region", "key_id", "model", "served_model")
# The dimensions each breakdown keeps. The model served has no breakdown of its own:
# only rating reads it, from the every-dimension rows, so it costs ingest no extra rows.
KEPT: dict[str, tuple[str, ...]] = {
    Breakdown.ALL: DIMENSIONS,
    Breakdown.NONE: (),
    **{name: (name,) for name in DIMENSIONS if name != "served_model"},
}

Key = tuple[str, str, datetime, str, str, str, str, str, str, str]  # organization, granularity, bucket, breakdown, dimensions


@dataclass
class Delta:
    requests: int = 0
    client_errors: int = 0
    server_errors: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost: Decimal = Decimal(0)
    latency: dict[str, int] = field(default_factory=dict)
    charge: Decimal = Decimal(0)


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


# Minutes per bucket of each granularity. Buckets are counted from the epoch (a UTC
# midnight), so whole days are UTC days.
MINUTES = {Granularity.MINUTE: 1, Granularity.HOUR: 60, Granularity.DAY: 1440}
COST_PLACES = 12  # the scale of the cost columns: costs are summed as whole 10^-12 units


@dataclass(frozen=True)
class EventColumns:
    """New events, column by column: what the rollups need of each."""

    # The organization and the dimensions (DIMENSIONS order) as a JSON array: one value to
    # group by, unambiguous whatever the names hold.
    combination: Sequence[str]
    minute: Sequence[int]  # minutes since the epoch
    status: Sequence[int]
    input_tokens: Sequence[int]
    output_tokens: Sequence[int]
    latency_bucket: Sequence[int]  # metering.histogram.bucket_of(latency_ms)
    cost_units: Sequence[int]  # cost x 10^COST_PLACES, exact
    # charge x 10^COST_PLACES; an earlier version's events, which have none, count their cost
    charge_units: Sequence[int]

    def __len__(self) -> int:
        return len(self.combination)

    @classmethod
    def of(cls, records: Iterable[UsageRecord]) -> EventColumns:
        rows = [
            (
                orjson.dumps([r.organization_id, *(getattr(r, name) for name in DIMENSIONS)]).decode(),
                int(r.at.timestamp()) // 60, r.status, r.input_tokens, r.output_tokens, histogram.bucket_of(r.latency_ms),
                int(r.cost.scaleb(COST_PLACES).to_integral_value(ROUND_HALF_UP)),
                int((r.cost if r.charge is None else r.charge).scaleb(COST_PLACES).to_integral_value(ROUND_HALF_UP)),
            )
            for r in records
        ]  # fmt: skip
        return cls(*zip(*rows, strict=True)) if rows else cls((), (), (), (), (), (), (), ())


def aggregate(events: EventColumns) -> dict[Key, Delta]:
    """The change each rollup row gets from these events, in every breakdown and
    granularity. Vectorised: the events are grouped by integer codes (numpy), once per
    breakdown and granularity, so the cost per event stays small at any batch size."""
    count = len(events)
    if not count:
        return {}
    # Each distinct combination of organization and dimensions, once.
    codes: dict[str, int] = {}
    combination_of = np.fromiter((codes.setdefault(c, len(codes)) for c in events.combination), np.int64, count)
    combinations: list[list[str]] = [orjson.loads(c) for c in codes]
    status = np.asarray(events.status, np.int64)
    ones = np.ones(count, np.int64)
    # Integer sums, exact: requests, 4xx, 5xx, input and output tokens.
    counters = np.column_stack(
        [
            ones,
            (status >= 400) & (status < 500),
            status >= 500,
            np.asarray(events.input_tokens, np.int64),
            np.asarray(events.output_tokens, np.int64),
        ]
    ).astype(np.int64)
    costs = _exact_array(events.cost_units)
    charges = _exact_array(events.charge_units)
    minute = np.asarray(events.minute, np.int64)
    latency = np.asarray(events.latency_bucket, np.int64)
    lowest_latency = int(latency.min())
    latency_span = int(latency.max()) - lowest_latency + 1

    found: dict[Key, Delta] = {}
    for breakdown, kept in KEPT.items():
        positions = [1 + DIMENSIONS.index(name) for name in kept]
        labels: dict[tuple[str, ...], int] = {}
        label_of_combination = np.fromiter(
            (labels.setdefault((c[0], *(c[p] for p in positions)), len(labels)) for c in combinations), np.int64, len(combinations)
        )
        label_names = [(label[0], *_dimensions(kept, label[1:])) for label in labels]
        label_of = label_of_combination[combination_of]
        for granularity, minutes in MINUTES.items():
            period = minute // minutes
            first_period = int(period.min())
            groups, group_of = np.unique((period - first_period) * len(labels) + label_of, return_inverse=True)
            order = np.argsort(group_of, kind="stable")
            starts = np.searchsorted(group_of[order], np.arange(len(groups)))
            sums = np.add.reduceat(counters[order], starts, axis=0).tolist()
            cost_sums = np.add.reduceat(costs[order], starts).tolist()
            charge_sums = np.add.reduceat(charges[order], starts).tolist()
            pairs, pair_counts = np.unique(group_of * latency_span + (latency - lowest_latency), return_counts=True)
            # Each group's (bucket, count) pairs, sorted by group: slice plain lists (numpy
            # views per group would cost more than the rest).
            edges = [0, *np.searchsorted(pairs // latency_span, np.arange(1, len(groups))).tolist(), len(pairs)]
            latency_buckets = [str(value) for value in (pairs % latency_span + lowest_latency).tolist()]
            latency_counts = pair_counts.tolist()
            label_count = len(labels)
            for index, group in enumerate(groups.tolist()):
                period_offset, label = divmod(group, label_count)
                organization, *dimensions = label_names[label]
                requests, client_errors, server_errors, input_tokens, output_tokens = sums[index]
                first, last = edges[index], edges[index + 1]
                found[(organization, granularity, _bucket((first_period + period_offset) * minutes), breakdown, *dimensions)] = Delta(  # type: ignore[index]
                    requests, client_errors, server_errors, input_tokens, output_tokens, Decimal(cost_sums[index]).scaleb(-COST_PLACES),
                    dict(zip(latency_buckets[first:last], latency_counts[first:last], strict=True)),
                    Decimal(charge_sums[index]).scaleb(-COST_PLACES),
                )  # fmt: skip
    return found


def deltas(records: Iterable[UsageRecord]) -> dict[Key, Delta]:
    return aggregate(EventColumns.of(records))


def _dimensions(kept: tuple[str, ...], values: tuple[str, ...]) -> list[str]:
    by_name = dict(zip(kept, values, strict=True))
    return [by_name.get(name, "") for name in DIMENSIONS]


def _exact_array(units: Sequence[int]) -> np.ndarray[Any, Any]:
    """int64 when no sum can overflow it, else Python integers (exact at any size)."""
    largest = max(map(abs, units))
    return np.asarray(units, np.int64 if largest * len(units) < 2**62 else object)


@functools.lru_cache(maxsize=4096)
def _bucket(minutes_since_epoch: int) -> datetime:
    return datetime.fromtimestamp(minutes_since_epoch * 60, UTC)


def lock_organizations(organization_ids: Iterable[str]) -> None:
    """Takes, until the transaction ends, the lock on writing these organizations' rollups
    (PostgreSQL; SQLite has one writer at a time). Every rollup writer takes it, in one
    order, so a read-merge-write of a histogram never interleaves with another's."""
    if connection.vendor != "postgresql":
        return
    with connection.cursor() as cursor:
        for lock in sorted({zlib.crc32(org.encode()) - 2**31 for org in organization_ids}):
            cursor.execute("SELECT pg_advisory_xact_lock(%s, %s)", [_ROLLUP_LOCKS, lock])


_ROLLUP_LOCKS = 0x726F6C6C  # the advisory lock namespace of rollup writers


def apply(records: list[UsageRecord]) -> None:
    """Adds newly written events to the rollups. Call inside the transaction that wrote
    them."""
    if not records:
        return
    changes = deltas(records)
    organizations = {key[0] for key in changes}
    lock_organizations(organizations)
    publish_after_commit(groups=[usage_group(org) for org in organizations])  # their dashboards re-read
    rows = (
        UsageRollup.objects.unscoped_across_tenants()
        .select_for_update()
        .filter(organization_id__in={key[0] for key in changes}, bucket__in={key[2] for key in changes})
    )
    existing = {
        (r.organization_id, r.granularity, r.bucket, r.breakdown, r.route, r.deployment_id, r.region, r.key_id, r.model, r.served_model): r
        for r in rows
    }
    updated, created = [], []
    for key, delta in changes.items():
        row = existing.get(key)
        if row is None:
            org, granularity, bucket, breakdown, route, deployment, region, api_key, model, served_model = key
            row = UsageRollup(
                organization_id=org,
                granularity=granularity,
                bucket=bucket,
                breakdown=breakdown,
                route=route,
                deployment_id=deployment,
                region=region,
                key_id=api_key,
                model=model,
                served_model=served_model,
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
        row.charge += delta.charge
        histogram.merge_into(row.latency_histogram, delta.latency)
    UsageRollup.objects.unscoped_across_tenants().bulk_create(created)
    UsageRollup.objects.unscoped_across_tenants().bulk_update(
        updated, ["requests", "client_errors", "server_errors", "input_tokens", "output_tokens", "cost", "charge", "latency_histogram"]
    )
