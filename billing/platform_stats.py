"""Platform-wide figures for the Admin console: each tenant's month so far, usage per day
across tenants, revenue, and GPU utilisation per cluster and GPU type.

Crossing tenants is the point here, so the tenant-scoped tables are read through
`unscoped_across_tenants()`; nothing here is ever shown to a tenant.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from django.db.models import Count, Q, Sum
from django.utils import timezone

from billing import rating
from billing.models import BillingAccount, Invoice, Plan
from deployments.models import Cluster, ClusterGpu, Replica, ReplicaEvent
from metering import gpu_time
from metering.models import Breakdown, Granularity, UsageRollup
from tenancy.models import Organization

HOLDS_GPU = (Replica.State.PENDING, Replica.State.PROVISIONING, Replica.State.LOADING, Replica.State.READY, Replica.State.DRAINING)


def month_to_date_spend(org: Organization, now: datetime) -> Decimal:
    """This month's charges so far, before credits, exact as the invoice will round them:
    billing.rating's figure, the one the Billing page and the spend cap use."""
    return rating.month_to_date(org, now)


@dataclass
class TenantRow:
    organization: Organization
    plan: str
    plan_label: str
    spend: Decimal
    requests: int
    input_tokens: int
    output_tokens: int

    @property
    def tokens(self) -> int:
        return self.input_tokens + self.output_tokens


def _month_usage(org_ids: list[str], start: datetime) -> dict[str, dict[str, Any]]:
    rows = (
        UsageRollup.objects.unscoped_across_tenants()
        .filter(organization_id__in=org_ids, granularity=Granularity.DAY, breakdown=Breakdown.NONE, bucket__gte=start)
        .values("organization_id")
        .annotate(requests=Sum("requests"), input_tokens=Sum("input_tokens"), output_tokens=Sum("output_tokens"), cost=Sum("cost"))
    )
    return {row["organization_id"]: row for row in rows}


def tenant_rows(organizations: list[Organization], now: datetime | None = None) -> list[TenantRow]:
    """Plan, this month's spend and usage for each organization given (one page of them)."""
    now = now or timezone.now()
    start = rating.month_start(now)
    ids = [org.pk for org in organizations]
    usage = _month_usage(ids, start)
    plans = dict(BillingAccount.objects.unscoped_across_tenants().filter(organization_id__in=ids).values_list("organization_id", "plan"))
    labels = dict(Plan.choices)
    rows = []
    for org in organizations:
        used = usage.get(org.pk, {})
        plan = plans.get(org.pk, BillingAccount._meta.get_field("plan").default)
        rows.append(
            TenantRow(
                organization=org,
                plan=plan,
                plan_label=labels.get(plan, plan),
                spend=month_to_date_spend(org, now),
                requests=int(used.get("requests") or 0),
                input_tokens=int(used.get("input_tokens") or 0),
                output_tokens=int(used.get("output_tokens") or 0),
            )
        )
    return rows


@dataclass
class DayUsage:
    day: datetime
    requests: int
    errors: int
    input_tokens: int
    output_tokens: int
    cost: Decimal


def usage_per_day(now: datetime | None = None, days: int = 30) -> list[DayUsage]:
    """Every tenant's usage, per UTC day, for the last `days` days (today included)."""
    now = (now or timezone.now()).astimezone(UTC)
    today = now.replace(hour=0, minute=0, second=0, microsecond=0)
    start = today - timedelta(days=days - 1)
    rows = {
        row["bucket"].astimezone(UTC): row
        for row in UsageRollup.objects.unscoped_across_tenants()
        .filter(granularity=Granularity.DAY, breakdown=Breakdown.NONE, bucket__gte=start)
        .values("bucket")
        .annotate(
            requests=Sum("requests"),
            client_errors=Sum("client_errors"),
            server_errors=Sum("server_errors"),
            input_tokens=Sum("input_tokens"),
            output_tokens=Sum("output_tokens"),
            cost=Sum("cost"),
        )  # fmt: skip
    }
    result = []
    for offset in range(days):
        day = start + timedelta(days=offset)
        row = rows.get(day, {})
        result.append(
            DayUsage(
                day=day,
                requests=int(row.get("requests") or 0),
                errors=int(row.get("client_errors") or 0) + int(row.get("server_errors") or 0),
                input_tokens=int(row.get("input_tokens") or 0),
                output_tokens=int(row.get("output_tokens") or 0),
                cost=Decimal(row.get("cost") or 0),
            )
        )
    return result


def _gpu_org_ids(start: datetime) -> set[str]:
    """Organizations whose replicas held a GPU this month: a transition since `start`, or
    a replica still holding one (started earlier)."""
    moved = (
        ReplicaEvent.objects.unscoped_across_tenants().filter(at__gte=start).order_by().values_list("organization_id", flat=True).distinct()
    )
    holding = (
        Replica.objects.unscoped_across_tenants()
        .filter(state__in=HOLDS_GPU)
        .order_by()
        .values_list("organization_id", flat=True)
        .distinct()
    )
    return {*moved, *holding}


@dataclass
class Revenue:
    month_start: datetime
    month_to_date: Decimal  # charges so far, before credits
    paying_tenants: int  # tenants with charges this month
    closed: list[tuple[datetime, Decimal, int]]  # (month, invoiced total, invoices), latest first


def revenue(now: datetime | None = None, months: int = 6) -> Revenue:
    now = now or timezone.now()
    start = rating.month_start(now)
    used = set(
        UsageRollup.objects.unscoped_across_tenants()
        .filter(granularity=Granularity.DAY, breakdown=Breakdown.NONE, bucket__gte=start)
        .values_list("organization_id", flat=True)
        .distinct()
    )
    total, paying = Decimal(0), 0
    for org in Organization.objects.filter(pk__in=used | _gpu_org_ids(start)):
        spend = month_to_date_spend(org, now)
        total += spend
        paying += 1 if spend else 0
    closed = [
        (row["period_start"], row["total"] or Decimal(0), row["count"])
        for row in Invoice.objects.unscoped_across_tenants()
        .values("period_start")
        .annotate(total=Sum("total"), count=Count("id"))
        .order_by("-period_start")[:months]
    ]
    return Revenue(month_start=start, month_to_date=total, paying_tenants=paying, closed=closed)


@dataclass
class GpuUtilisation:
    cluster: Cluster
    gpu_type: str
    inventory: int
    held: int  # replicas holding one now (placed, starting, ready or draining)
    ready: int
    gpu_seconds: Decimal  # held this month
    capacity_seconds: Decimal  # inventory x seconds elapsed this month

    @property
    def held_percent(self) -> float:
        return 100.0 * self.held / self.inventory if self.inventory else 0.0

    @property
    def month_percent(self) -> float:
        return float(100 * self.gpu_seconds / self.capacity_seconds) if self.capacity_seconds else 0.0


def gpu_utilisation(now: datetime | None = None) -> list[GpuUtilisation]:
    """Per cluster and GPU type: the inventory, what replicas hold now, and the share of
    this month's GPU-seconds that were held (metering.gpu_time, as tenants are billed)."""
    now = now or timezone.now()
    start = rating.month_start(now)
    elapsed = Decimal((now - start).total_seconds()).quantize(Decimal("0.000001"))
    counts: dict[tuple[str, str], dict[str, int]] = {}
    for row in (
        Replica.objects.unscoped_across_tenants()
        .filter(state__in=HOLDS_GPU)
        .values("cluster_id", "revision__gpu_type_id")
        .annotate(held=Count("id"), ready=Count("id", filter=Q(state=Replica.State.READY)))
    ):
        counts[(row["cluster_id"], row["revision__gpu_type_id"])] = {"held": row["held"], "ready": row["ready"]}
    seconds: dict[tuple[str, str], Decimal] = {}
    for org in Organization.objects.filter(pk__in=_gpu_org_ids(start)):
        for used in gpu_time.gpu_seconds(org, start, now, ("cluster", "gpu_type"), now=now):
            key = (used.cluster or "", used.gpu_type or "")
            seconds[key] = seconds.get(key, Decimal(0)) + used.gpu_seconds
    inventory = {(row.cluster_id, row.gpu_type_id): row for row in ClusterGpu.objects.select_related("cluster")}
    clusters = Cluster.objects.in_bulk()
    keys = sorted({*inventory, *counts, *seconds}, key=lambda key: (clusters[key[0]].region if key[0] in clusters else "", key[0], key[1]))
    result = []
    for cluster_name, gpu in keys:
        if cluster_name not in clusters:
            continue
        count = inventory[(cluster_name, gpu)].count if (cluster_name, gpu) in inventory else 0
        now_counts = counts.get((cluster_name, gpu), {"held": 0, "ready": 0})
        result.append(
            GpuUtilisation(
                cluster=clusters[cluster_name],
                gpu_type=gpu,
                inventory=count,
                held=now_counts["held"],
                ready=now_counts["ready"],
                gpu_seconds=seconds.get((cluster_name, gpu), Decimal(0)),
                capacity_seconds=count * elapsed,
            )
        )
    return result


@dataclass
class ClusterRow:
    cluster: Cluster
    inventory: list[ClusterGpu]
    held: int
    ready: int
    gpus: int

    @property
    def held_percent(self) -> float:
        return 100.0 * self.held / self.gpus if self.gpus else 0.0


def cluster_rows() -> list[ClusterRow]:
    """Each cluster with its inventory and the replicas on it now."""
    inventory: dict[str, list[ClusterGpu]] = {}
    for row in ClusterGpu.objects.select_related("gpu_type").order_by("gpu_type__default_price_per_hour"):
        inventory.setdefault(row.cluster_id, []).append(row)
    counts = {
        row["cluster_id"]: row
        for row in Replica.objects.unscoped_across_tenants()
        .filter(state__in=HOLDS_GPU)
        .values("cluster_id")
        .annotate(held=Count("id"), ready=Count("id", filter=Q(state=Replica.State.READY)))
    }
    return [
        ClusterRow(
            cluster=cluster,
            inventory=inventory.get(cluster.pk, []),
            held=counts.get(cluster.pk, {}).get("held", 0),
            ready=counts.get(cluster.pk, {}).get("ready", 0),
            gpus=sum(row.count for row in inventory.get(cluster.pk, [])),
        )
        for cluster in Cluster.objects.all()
    ]
