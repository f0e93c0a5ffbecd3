"""Usage queries over the rollups: filters, grouping, granularity and time zones."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import orjson
from django.db.models import QuerySet, TextField
from django.db.models.functions import Cast

from metering import histogram, rollups
from metering.models import Granularity, UsageEvent, UsageRollup
from tenancy.decimals import plain
from tenancy.models import Organization

MAX_SPAN = {Granularity.MINUTE: timedelta(days=7), Granularity.HOUR: timedelta(days=92), Granularity.DAY: timedelta(days=3 * 366)}


@dataclass(frozen=True)
class UsageQuery:
    start: datetime
    end: datetime
    granularity: str
    timezone: ZoneInfo
    group_by: tuple[str, ...] = ()
    filters: dict[str, str] = field(default_factory=dict)


@dataclass
class Point:
    bucket: datetime
    group: dict[str, str]
    requests: int = 0
    client_errors: int = 0
    server_errors: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost: Decimal = Decimal(0)  # charged per token, as the invoice rates it (the rollups' charge)
    latency: dict[str, int] = field(default_factory=dict)

    def add(
        self,
        requests: int,
        client_errors: int,
        server_errors: int,
        input_tokens: int,
        output_tokens: int,
        cost: Decimal,
        latency: dict[str, int],
    ) -> None:
        self.requests += requests
        self.client_errors += client_errors
        self.server_errors += server_errors
        self.input_tokens += input_tokens
        self.output_tokens += output_tokens
        self.cost += cost
        histogram.merge_into(self.latency, latency)

    def as_dict(self) -> dict[str, object]:
        return {
            "bucket": self.bucket.isoformat(),
            **self.group,
            "requests": self.requests,
            "client_errors": self.client_errors,
            "server_errors": self.server_errors,
            "error_rate": round((self.client_errors + self.server_errors) / self.requests, 6) if self.requests else 0.0,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cost": plain(self.cost),
            "latency_ms": {
                name: _rounded(histogram.percentile(self.latency, q)) for name, q in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99))
            },
        }


def _rounded(value: float | None) -> float | None:
    return round(value, 3) if value is not None else None


def _rows(org: Organization, query: UsageQuery, granularity: str) -> QuerySet[UsageRollup]:
    breakdown = rollups.breakdown_for([*query.filters, *query.group_by])
    rows = UsageRollup.objects.for_org(org).filter(
        granularity=granularity, breakdown=breakdown, bucket__gte=query.start, bucket__lt=query.end
    )
    for name, value in query.filters.items():
        rows = rows.filter(**{name: value})
    return rows


def usage_series(org: Organization, query: UsageQuery) -> tuple[list[Point], Point]:
    """Points per bucket (in the query's time zone) and group, and the total."""
    # Days in a time zone other than UTC are built from hours, so they start at local midnight.
    local_days = query.granularity == Granularity.DAY and query.timezone.key != "UTC"
    source = Granularity.HOUR if local_days else query.granularity
    points: dict[tuple[datetime, tuple[str, ...]], Point] = {}
    total = Point(bucket=query.start.astimezone(query.timezone), group={})
    # Plain tuples, not model instances: a month split by key is thousands of rows.
    # Histograms come as text and are parsed by orjson, several times faster than json.
    columns = (
        "bucket",
        *query.group_by,
        "requests",
        "client_errors",
        "server_errors",
        "input_tokens",
        "output_tokens",
        "charge",  # what was charged per token; rating prices the provider's cost ("cost") itself
        "histogram_text",
    )
    width = len(query.group_by)
    rows = _rows(org, query, source).annotate(histogram_text=Cast("latency_histogram", TextField()))
    for row in rows.order_by("bucket").values_list(*columns).iterator(chunk_size=2000):
        bucket = row[0].astimezone(query.timezone)
        if local_days:
            bucket = bucket.replace(hour=0, minute=0, second=0, microsecond=0)
        group = row[1 : 1 + width]
        point = points.get((bucket, group))
        if point is None:
            point = points[(bucket, group)] = Point(bucket=bucket, group=dict(zip(query.group_by, group, strict=True)))
        requests, client_errors, server_errors, input_tokens, output_tokens, cost = row[1 + width : -1]
        point.add(requests, client_errors, server_errors, input_tokens, output_tokens, cost, orjson.loads(row[-1]))
    for point in points.values():
        total.add(
            point.requests, point.client_errors, point.server_errors, point.input_tokens, point.output_tokens, point.cost, point.latency
        )
    return sorted(points.values(), key=lambda p: (p.bucket, tuple(p.group.values()))), total


def raw_events(org: Organization, start: datetime, end: datetime, filters: dict[str, str]) -> Iterator[UsageEvent]:
    events = UsageEvent.objects.for_org(org).filter(at__gte=start, at__lt=end)
    for name, value in filters.items():
        events = events.filter(**{name: value})
    return events.order_by("at", "id").iterator(chunk_size=5000)
