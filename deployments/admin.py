"""Django admin for platform staff: GPU types and prices, clusters and their inventory,
per-organization quotas. Tenant-owned rows are listed across tenants, on purpose."""

from __future__ import annotations

from django.contrib import admin

from deployments.models import CatalogModel, Cluster, ClusterGpu, Deployment, GpuType, Quota, Replica
from tenancy.admin import CrossTenantAdmin


@admin.register(GpuType)
class GpuTypeAdmin(admin.ModelAdmin):
    list_display = ["code", "memory_gb", "default_price_per_hour", "price_source"]


class ClusterGpuInline(admin.TabularInline):
    model = ClusterGpu
    extra = 1


@admin.register(Cluster)
class ClusterAdmin(admin.ModelAdmin):
    """Status changes go through the Admin console (/staff/clusters/), which audits them and
    reconciles the deployments they move; here the status is shown, not edited."""

    list_display = ["name", "provider", "region", "driver", "status", "simulated"]
    list_filter = ["status", "region", "provider"]
    readonly_fields = ["status"]
    inlines = [ClusterGpuInline]


@admin.register(Quota)
class QuotaAdmin(CrossTenantAdmin):
    """Read-only: quotas change in the Admin console (/staff/tenants/<id>/quota/), where
    every change is audited in the staff log and the tenant's own log."""

    list_display = [
        "organization",
        "max_replicas",
        "gpus",
        "requests_per_minute",
        "tokens_per_minute",
        "concurrent_requests",
        "monthly_spend_cap",
        "updated_at",
    ]

    def has_add_permission(self, request):  # type: ignore[no-untyped-def]
        return False

    def has_change_permission(self, request, obj=None):  # type: ignore[no-untyped-def]
        return False


@admin.register(Deployment)
class DeploymentAdmin(CrossTenantAdmin):
    list_display = ["name", "organization", "status", "current_revision", "created_at", "deleted_at"]
    list_filter = ["status"]
    readonly_fields = ["organization", "current_revision"]


@admin.register(Replica)
class ReplicaAdmin(CrossTenantAdmin):
    """Replicas belong to the control plane: staff look, the reconcile loop writes."""

    list_display = ["id", "deployment", "cluster", "state", "restarts", "created_at"]
    list_filter = ["state"]
    readonly_fields = [
        "organization",
        "deployment",
        "revision",
        "cluster",
        "state",
        "endpoint",
        "reason",
        "restarts",
        "created_at",
        "ready_at",
        "stopped_at",
    ]


@admin.register(CatalogModel)
class CatalogModelAdmin(admin.ModelAdmin):
    list_display = ["name", "organization", "task", "runtime", "memory_gb", "source_kind", "source", "weights_format", "context_length"]
    list_filter = ["task", "runtime", "source_kind"]
