"""Usage dashboards: what the console's Usage and Overview pages and a deployment's page
chart, as plain data for the page's charts (metering/static/metering/charts.js).

Everything comes from the rollups through `metering.selectors.usage_series`, scoped to one
organization: group labels (key names, deployment names) are looked up in that
organization only, so a payload never holds another tenant's names. Money is left out
entirely when the caller may not see it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from django.utils import timezone

from deployments.models import Deployment
from metering import gpu_time, histogram, selectors
from metering.gpu_charges import gpu_total
from metering.models import Granularity, UsageEvent
from tenancy.decimals import plain
from tenancy.models import ApiKey, Organization


@dataclass(frozen=True)
class DashboardRange:
    key: str
    label: str
    buckets: int
    granularity: str


# The granularity follows the range: about 24 to 168 points per chart. Thirty days are
# local days (the selector builds them from hours when the time zone is not UTC).
RANGES: dict[str, DashboardRange] = {
    r.key: r
    for r in (
        DashboardRange("1h", "Last hour", 60, Granularity.MINUTE),
        DashboardRange("24h", "Last 24 hours", 24, Granularity.HOUR),
        DashboardRange("7d", "Last 7 days", 7 * 24, Granularity.HOUR),
        DashboardRange("30d", "Last 30 days", 30, Granularity.DAY),
    )
}
# Split name -> (label, rollup column).
SPLITS: dict[str, tuple[str, str | None]] = {
    "none": ("No split", None),
    "model": ("Model", "model"),
    "deployment": ("Deployment", "deployment_id"),
    "region": ("Region", "region"),
    "key": ("API key", "key_id"),
}
SPLIT_NOUNS = {"none": "", "model": "model", "deployment": "deployment", "region": "region", "key": "API key"}
DEPLOYMENT_RANGES = ("1h", "24h", "7d")  # uniform steps, as gpu_time.replicas_over_time takes them
TOP_GROUPS = 5  # the largest groups by requests get their own series; the rest are "Other"
OTHER = "Other"
STEP_SECONDS: dict[str, int] = {Granularity.MINUTE: 60, Granularity.HOUR: 3600, Granularity.DAY: 86400}
PER_STEP: dict[str, str] = {Granularity.MINUTE: "per minute", Granularity.HOUR: "per hour", Granularity.DAY: "per day"}


def _zone(name: str | None) -> ZoneInfo:
    try:
        return ZoneInfo(name) if name else ZoneInfo("UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


@dataclass(frozen=True)
class DashboardParams:
    range: str = "24h"
    split: str = "none"
    tz: str = "UTC"
    deployment_id: str = ""

    @classmethod
    def parse(cls, data: Mapping[str, str], *, default_range: str = "24h", fallback_tz: str | None = None) -> DashboardParams:
        """Lenient: an unknown range, split or time zone falls back to the default. With
        a deployment, the ranges are DEPLOYMENT_RANGES and there is no split."""
        deployment_id = (data.get("deployment") or "")[:40]
        allowed = DEPLOYMENT_RANGES if deployment_id else tuple(RANGES)
        range_key = data.get("range") or default_range
        split = data.get("split") or "none"
        return cls(
            range=range_key if range_key in allowed else default_range,
            split=split if split in SPLITS and not deployment_id else "none",
            tz=_zone(data.get("tz") or fallback_tz).key,
            deployment_id=deployment_id,
        )

    @property
    def zone(self) -> ZoneInfo:
        return _zone(self.tz)


def window(range_: DashboardRange, zone: ZoneInfo, now: datetime) -> tuple[list[datetime], datetime]:
    """The bucket starts of the range, oldest first, ending with the current (partial)
    bucket, and the end of the last one."""
    if range_.granularity == Granularity.DAY:
        today = now.astimezone(zone).date()
        days = [today - timedelta(days=range_.buckets - 1 - i) for i in range(range_.buckets)]
        return [datetime.combine(day, time(), tzinfo=zone) for day in days], datetime.combine(
            today + timedelta(days=1), time(), tzinfo=zone
        )
    step = timedelta(seconds=STEP_SECONDS[range_.granularity])
    last = (
        now.replace(second=0, microsecond=0) if range_.granularity == Granularity.MINUTE else now.replace(minute=0, second=0, microsecond=0)
    )
    return [last - step * (range_.buckets - 1 - i) for i in range(range_.buckets)], last + step


@dataclass
class Cell:
    """Usage summed over one bucket (and group), mergeable."""

    requests: int = 0
    errors: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost: Decimal = Decimal(0)
    latency: dict[str, int] = field(default_factory=dict)

    def absorb(self, point: selectors.Point | Cell) -> None:
        if isinstance(point, selectors.Point):
            self.errors += point.client_errors + point.server_errors
        else:
            self.errors += point.errors
        self.requests += point.requests
        self.input_tokens += point.input_tokens
        self.output_tokens += point.output_tokens
        self.cost += point.cost
        histogram.merge_into(self.latency, point.latency)

    def percentile(self, fraction: float) -> float | None:
        value = histogram.percentile(self.latency, fraction)
        return round(value, 2) if value is not None else None

    @property
    def error_rate(self) -> float | None:
        return round(self.errors / self.requests, 6) if self.requests else None

    def summary(self, show_cost: bool) -> dict[str, object]:
        data: dict[str, object] = {
            "requests": self.requests,
            "errors": self.errors,
            "error_rate": self.error_rate,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "tokens": self.input_tokens + self.output_tokens,
            "p50": self.percentile(0.5),
            "p95": self.percentile(0.95),
            "p99": self.percentile(0.99),
        }
        if show_cost:
            data["cost"] = plain(self.cost.normalize()) if self.cost else "0"
        return data


def group_labels(org: Organization, split: str, values: set[str]) -> dict[str, str]:
    """Human names for split values, looked up in this organization only."""
    labels = {value: value for value in values}
    if split == "deployment":
        for deployment in Deployment.objects.for_org(org).filter(pk__in=[v for v in values if v]):
            labels[deployment.pk] = deployment.name + (" (deleted)" if deployment.deleted_at else "")
        labels[""] = "No deployment (providers)"
    elif split == "key":
        keys = list(ApiKey.objects.for_org(org).filter(pk__in=[v for v in values if v]))
        names = [key.name for key in keys]
        for key in keys:
            labels[key.pk] = key.name if names.count(key.name) == 1 else f"{key.name} (sbk_{key.prefix[:6]}…)"
        labels[""] = "Console playground"
    elif split == "region":
        labels[""] = "No region"
    elif split == "model":
        labels[""] = "(none)"
    return {value: labels[value] for value in values}


def _series(name: str, values: list[object], *, other: bool = False) -> dict[str, object]:
    return {"name": name, "values": values, **({"other": True} if other else {})}


def _chart(chart_id: str, title: str, unit: str, kind: str, series: list[dict[str, object]], description: str = "") -> dict[str, object]:
    return {"id": chart_id, "title": title, "unit": unit, "kind": kind, "series": series, "description": description}


def _float(value: Decimal) -> float:
    return float(round(value, 8))


def has_usage(org: Organization) -> bool:
    return UsageEvent.objects.for_org(org).exists()


@dataclass
class Aggregate:
    """Usage over a range: every bucket (oldest first, the one in progress last), overall
    and per group of the split, the largest groups first and the rest merged."""

    buckets: list[datetime]
    end: datetime
    overall: list[Cell]
    total: Cell
    groups: list[tuple[str, list[Cell], Cell, bool]]  # (label, cells, total, is "Other")


def aggregate(org: Organization, params: DashboardParams, now: datetime) -> Aggregate:
    range_ = RANGES[params.range]
    zone = params.zone
    buckets, end = window(range_, zone, now)
    column = SPLITS[params.split][1]
    filters = {"deployment_id": params.deployment_id} if params.deployment_id else {}
    query = selectors.UsageQuery(
        start=buckets[0], end=end, granularity=range_.granularity, timezone=zone, group_by=(column,) if column else (), filters=filters
    )
    points, _ = selectors.usage_series(org, query)

    position = {int(bucket.timestamp()): i for i, bucket in enumerate(buckets)}
    overall = [Cell() for _ in buckets]
    by_group: dict[str, list[Cell]] = {}
    group_totals: dict[str, Cell] = {}
    total = Cell()
    for point in points:
        i = position.get(int(point.bucket.timestamp()))
        if i is None:  # cannot happen for aligned buckets; never chart a stray one
            continue
        overall[i].absorb(point)
        total.absorb(point)
        if column:
            group = point.group[column]
            cells = by_group.setdefault(group, [Cell() for _ in buckets])
            cells[i].absorb(point)
            group_totals.setdefault(group, Cell()).absorb(point)

    # The largest groups, then everything else merged into "Other" (histograms merge too).
    ranked = sorted(group_totals, key=lambda g: (-group_totals[g].requests, g))
    keep = ranked if len(ranked) <= TOP_GROUPS + 1 else ranked[:TOP_GROUPS]
    labels = group_labels(org, params.split, set(ranked)) if column else {}
    groups: list[tuple[str, list[Cell], Cell, bool]] = [(labels[g], by_group[g], group_totals[g], False) for g in keep]
    rest = ranked[len(keep) :]
    if rest:
        cells, other_total = [Cell() for _ in buckets], Cell()
        for g in rest:
            other_total.absorb(group_totals[g])
            for i, cell in enumerate(by_group[g]):
                cells[i].absorb(cell)
        groups.append((f"{OTHER} ({len(rest)})", cells, other_total, True))
    return Aggregate(buckets=buckets, end=end, overall=overall, total=total, groups=groups)


def _gpu_totals(org: Organization, usage: Aggregate, show_cost: bool, now: datetime) -> dict[str, str]:
    """Dedicated deployments' GPU time in the range up to now (a running replica counts
    until now, not to the end of the current bucket), priced as the invoice prices it
    (metering.gpu_charges): they are billed by GPU time, not per token."""
    if not usage.buckets:
        return {}
    hours, amount = gpu_total(org, usage.buckets[0], usage.end, now=min(now, usage.end))
    figures = {"gpu_hours": plain(hours.quantize(Decimal("0.001")))}
    if show_cost:
        figures["gpu_cost"] = plain(amount.quantize(Decimal("0.000001")))
    return figures


def _payload(
    org: Organization, params: DashboardParams, usage: Aggregate, charts: list[dict[str, object]], show_cost: bool, now: datetime
) -> dict[str, object]:
    range_ = RANGES[params.range]
    return {
        "range": range_.key,
        "range_label": range_.label,
        "split": params.split,
        "split_label": SPLITS[params.split][0],
        "split_noun": SPLIT_NOUNS[params.split],
        "granularity": range_.granularity,
        "step_s": STEP_SECONDS[range_.granularity],
        "tz": params.zone.key,
        "buckets": [int(bucket.timestamp() * 1000) for bucket in usage.buckets],
        "end": int(usage.end.timestamp() * 1000),
        "show_cost": show_cost,
        "totals": {**usage.total.summary(show_cost), **_gpu_totals(org, usage, show_cost, now)},
        "groups": [{"name": name, "other": other, **cell.summary(show_cost)} for name, _, cell, other in usage.groups],
        "charts": charts,
        "has_usage": usage.total.requests > 0 or has_usage(org),
    }


def usage_dashboard(org: Organization, params: DashboardParams, *, show_cost: bool, now: datetime | None = None) -> dict[str, object]:
    """The Usage page: totals for the range, a breakdown by the split, and the charts
    (requests, tokens, cost, latency, error rate), every bucket of the range present."""
    now = now or timezone.now()
    usage = aggregate(org, params, now)
    per = PER_STEP[RANGES[params.range].granularity]
    by = f"by {SPLIT_NOUNS[params.split]}"
    charts: list[dict[str, object]] = []
    if params.split != "none":
        groups = usage.groups
        charts.append(
            _chart(
                "requests",
                f"Requests {per}",
                "count",
                "stacked",
                [_series(name, [c.requests for c in cells], other=o) for name, cells, _, o in groups],
                by,
            )
        )
        charts.append(
            _chart(
                "tokens",
                f"Tokens {per}",
                "count",
                "stacked",
                [_series(name, [c.input_tokens + c.output_tokens for c in cells], other=o) for name, cells, _, o in groups],
                f"input and output, {by}",
            )
        )
        if show_cost:
            charts.append(
                _chart(
                    "cost",
                    f"Cost {per}",
                    "usd",
                    "stacked",
                    [_series(name, [_float(c.cost) for c in cells], other=o) for name, cells, _, o in groups],
                    by,
                )
            )
        charts.append(
            _chart(
                "latency",
                "Latency p95",
                "ms",
                "lines",
                [_series(name, [c.percentile(0.95) for c in cells], other=o) for name, cells, _, o in groups],
                by,
            )
        )
        charts.append(
            _chart(
                "errors",
                "Error rate",
                "percent",
                "lines",
                [_series(name, [c.error_rate for c in cells], other=o) for name, cells, _, o in groups],
                f"4xx and 5xx answers, {by}",
            )
        )
    else:
        overall = usage.overall
        charts.append(_chart("requests", f"Requests {per}", "count", "stacked", [_series("Requests", [c.requests for c in overall])]))
        charts.append(
            _chart(
                "tokens",
                f"Tokens {per}",
                "count",
                "stacked",
                [_series("Input", [c.input_tokens for c in overall]), _series("Output", [c.output_tokens for c in overall])],
            )
        )
        if show_cost:
            charts.append(_chart("cost", f"Cost {per}", "usd", "stacked", [_series("Cost", [_float(c.cost) for c in overall])]))
        charts.append(
            _chart(
                "latency",
                "Latency",
                "ms",
                "lines",
                [_series(name, [c.percentile(q) for c in overall]) for name, q in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99))],
            )
        )
        charts.append(
            _chart(
                "errors", "Error rate", "percent", "lines", [_series("Error rate", [c.error_rate for c in overall])], "4xx and 5xx answers"
            )
        )
    return _payload(org, params, usage, charts, show_cost, now)


def deployment_dashboard(
    org: Organization, deployment_id: str, params: DashboardParams, *, now: datetime | None = None
) -> dict[str, object]:
    """A deployment's page: requests per second and latency (p50, p95) from its rollups,
    and its replicas over time from the control plane's replica events. No money."""
    now = now or timezone.now()
    params = DashboardParams(
        range=params.range if params.range in DEPLOYMENT_RANGES else DEPLOYMENT_RANGES[0], tz=params.tz, deployment_id=deployment_id
    )
    usage = aggregate(org, params, now)
    granularity = RANGES[params.range].granularity
    step_s = STEP_SECONDS[granularity]
    replicas = gpu_time.replicas_over_time(org, deployment_id, usage.buckets[0], usage.end, step_s, now=now)
    charts = [
        _chart(
            "rps",
            "Requests per second",
            "rps",
            "lines",
            [_series("Requests/s", [round(c.requests / step_s, 4) for c in usage.overall])],
            f"average {PER_STEP[granularity]}",
        ),
        _chart(
            "latency",
            "Latency",
            "ms",
            "lines",
            [_series(name, [c.percentile(q) for c in usage.overall]) for name, q in (("p50", 0.5), ("p95", 0.95))],
        ),
        _chart(
            "replicas",
            "Replicas",
            "count",
            "step",
            [_series("Holding a GPU", [point.billed for point in replicas]), _series("Ready", [point.ready for point in replicas])],
            f"most at once, {PER_STEP[granularity]}",
        ),
    ]
    return {**_payload(org, params, usage, charts, show_cost=False, now=now), "deployment_id": deployment_id}
