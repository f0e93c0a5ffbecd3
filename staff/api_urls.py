"""`/api/v1/admin/`: staff only (staff.api); 404 for everyone else."""

from __future__ import annotations

from django.urls import path

from staff import api as admin

urlpatterns = [
    path("tenants/", admin.TenantListView.as_view(), name="api-admin-tenants"),
    path("tenants/<str:org_id>/", admin.TenantDetailView.as_view(), name="api-admin-tenant"),
    path("tenants/<str:org_id>/quota/", admin.TenantQuotaView.as_view(), name="api-admin-tenant-quota"),
    path("tenants/<str:org_id>/status/", admin.TenantStatusView.as_view(), name="api-admin-tenant-status"),
    path("clusters/", admin.ClusterListView.as_view(), name="api-admin-clusters"),
    *[
        path(f"clusters/<str:cluster_name>/{action}/", view.as_view(), name=f"api-admin-cluster-{action}")
        for action, view in admin.CLUSTER_ACTION_VIEWS.items()
    ],
]
