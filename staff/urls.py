"""The Admin section's pages, under /staff/: staff only, 404 for everyone else
(staff.views.staff_page)."""

from __future__ import annotations

from django.urls import path

from staff import views as staff

urlpatterns = [
    path("", staff.tenants, name="staff-tenants"),
    path("tenants/<str:org_id>/", staff.tenant_detail, name="staff-tenant"),
    path("tenants/<str:org_id>/quota/", staff.tenant_quota, name="staff-tenant-quota"),
    path("tenants/<str:org_id>/status/", staff.tenant_status, name="staff-tenant-status"),
    path("tenants/<str:org_id>/plan/", staff.tenant_plan, name="staff-tenant-plan"),
    path("tenants/<str:org_id>/credits/", staff.tenant_credit, name="staff-tenant-credit"),
    *[
        path(f"tenants/<str:org_id>/prices/{kind}/", staff.tenant_price, {"kind": kind}, name=f"staff-tenant-price-{kind}")
        for kind in ("model", "gpu", "markup")
    ],
    path("clusters/", staff.clusters, name="staff-clusters"),
    *[
        path(f"clusters/<str:cluster_name>/{action}/", staff.cluster_action, {"action": action}, name=f"staff-cluster-{action}")
        for action in ("cordon", "drain", "down", "up")
    ],
    path("usage/", staff.usage, name="staff-usage"),
    path("prices/", staff.prices, name="staff-prices"),
    *[path(f"prices/{kind}/", staff.price_add, {"kind": kind}, name=f"staff-price-{kind}") for kind in ("model", "gpu", "markup")],
    *[
        path(f"prices/{kind}/<int:version_id>/cancel/", staff.price_cancel, {"kind": kind}, name=f"staff-price-{kind}-cancel")
        for kind in ("model", "gpu", "markup")
    ],
    path("audit/", staff.audit_log, name="staff-audit"),
]
