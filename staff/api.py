"""The admin API (`/api/v1/admin/...`): what the Admin console does, for platform staff.

Staff sign in as people: these endpoints take a console session (with its CSRF token for
changes) and ignore API keys, which belong to organizations and never carry platform
powers. Anyone else, signed in or not, with any key, gets the same 404 as an endpoint
that does not exist. The endpoints are left out of the public OpenAPI schema for the same
reason; docs/admin.md documents them.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.authentication import SessionAuthentication
from rest_framework.exceptions import NotFound
from rest_framework.permissions import BasePermission
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from billing import platform_stats
from deployments import cluster_ops, quotas
from deployments.models import Cluster
from deployments.quotas import quota_snapshot
from deployments.services import quota_for
from tenancy.api.serializers import validated
from tenancy.models import Organization, OrgStatus
from tenancy.staff_audit import StaffContext, set_organization_status

MAX_PAGE = 200


class StaffSessionAuthentication(SessionAuthentication):
    """The session of an active staff user, CSRF-checked; any other caller is anonymous
    here (so a non-staff user's missing CSRF token cannot answer 403 instead of 404)."""

    def authenticate(self, request: Request) -> tuple[Any, None] | None:
        user = getattr(request._request, "user", None)
        if user is None or not (user.is_authenticated and user.is_active and user.is_staff):
            return None
        self.enforce_csrf(request)
        return (user, None)


class IsStaff(BasePermission):
    def has_permission(self, request: Request, view: Any) -> bool:
        user = request.user
        if user is None or not (user.is_authenticated and user.is_staff and user.is_active):
            raise NotFound(f"No endpoint at {request.path}. See /api/v1/docs/ for the API reference.")
        view.staff = StaffContext(
            user=user, ip_address=request.META.get("REMOTE_ADDR") or None, request_id=getattr(request._request, "request_id", "")
        )
        return True


@extend_schema(exclude=True)
class StaffAPIView(APIView):
    authentication_classes = [StaffSessionAuthentication]
    permission_classes = [IsStaff]
    staff: StaffContext


def _money(value: Decimal | None) -> str | None:
    return None if value is None else str(value)


# ---------------------------------------------------------------------------------------
# Tenants


def _tenant_body(row: Any) -> dict[str, Any]:
    org = row.organization
    return {
        "id": org.pk,
        "name": org.name,
        "slug": org.slug,
        "status": org.status,
        "status_reason": org.status_reason,
        "created_at": org.created_at.isoformat(),
        "plan": row.plan,
        "spend_month_to_date": _money(row.spend),
        "requests_month_to_date": row.requests,
        "input_tokens_month_to_date": row.input_tokens,
        "output_tokens_month_to_date": row.output_tokens,
    }


class TenantListView(StaffAPIView):
    """Newest first; `?limit=` (up to 200) and `?offset=`."""

    def get(self, request: Request) -> Response:
        try:
            limit = min(MAX_PAGE, max(1, int(request.query_params.get("limit", 50))))
            offset = max(0, int(request.query_params.get("offset", 0)))
        except ValueError:
            return Response(
                {"error": {"type": "invalid_request_error", "code": "invalid_input", "message": "limit and offset are whole numbers."}},
                status=400,
            )
        organizations = list(Organization.objects.order_by("-created_at", "id")[offset : offset + limit])
        total = Organization.objects.count()
        body = {
            "count": total,
            "offset": offset,
            "limit": limit,
            "results": [_tenant_body(row) for row in platform_stats.tenant_rows(organizations)],
        }
        return Response(body)


class TenantDetailView(StaffAPIView):
    def get(self, request: Request, org_id: str) -> Response:
        org = get_object_or_404(Organization, pk=org_id)
        return Response(_tenant_body(platform_stats.tenant_rows([org])[0]))


class StatusSerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=[OrgStatus.ACTIVE, OrgStatus.SUSPENDED])
    reason = serializers.CharField(max_length=300)


class TenantStatusView(StaffAPIView):
    def post(self, request: Request, org_id: str) -> Response:
        org = get_object_or_404(Organization, pk=org_id)
        data = validated(StatusSerializer, request.data)
        org = set_organization_status(self.staff, org, data["status"], data["reason"])
        return Response(_tenant_body(platform_stats.tenant_rows([org])[0]))


class QuotaSerializer(serializers.Serializer):
    """Every field optional (PATCH). `gpus` merges: types not named keep their limit."""

    max_replicas = serializers.IntegerField(required=False)
    gpus = serializers.DictField(child=serializers.IntegerField(), required=False)
    requests_per_minute = serializers.IntegerField(required=False)
    tokens_per_minute = serializers.IntegerField(required=False)
    concurrent_requests = serializers.IntegerField(required=False)
    key_requests_per_minute = serializers.IntegerField(required=False, allow_null=True)
    key_tokens_per_minute = serializers.IntegerField(required=False, allow_null=True)
    key_concurrent_requests = serializers.IntegerField(required=False, allow_null=True)
    monthly_spend_cap = serializers.DecimalField(max_digits=14, decimal_places=2, required=False, allow_null=True)


class TenantQuotaView(StaffAPIView):
    def get(self, request: Request, org_id: str) -> Response:
        org = get_object_or_404(Organization, pk=org_id)
        return Response({"organization": org.pk, **quota_snapshot(quota_for(org))})

    def patch(self, request: Request, org_id: str) -> Response:
        org = get_object_or_404(Organization, pk=org_id)
        if not isinstance(request.data, dict):
            return Response(
                {
                    "error": {
                        "type": "invalid_request_error",
                        "code": "invalid_input",
                        "message": "Send a JSON object of the quotas to change.",
                    }
                },
                status=400,
            )
        unknown = sorted(set(request.data) - set(quotas.FIELDS))
        if unknown:
            message = f"Unknown quota field(s) {', '.join(unknown)}; quotas are {', '.join(quotas.FIELDS)}."
            return Response(
                {
                    "error": {
                        "type": "invalid_request_error",
                        "code": "invalid_input",
                        "message": message,
                        "fields": {name: ["Unknown field."] for name in unknown},
                    }
                },
                status=400,
            )
        changes = validated(QuotaSerializer, request.data)
        quota = quotas.update_quota(self.staff, org, **changes)
        return Response({"organization": org.pk, **quotas.quota_snapshot(quota)})


# ---------------------------------------------------------------------------------------
# Clusters


def _cluster_body(row: Any) -> dict[str, Any]:
    cluster = row.cluster
    return {
        "name": cluster.name,
        "provider": cluster.provider,
        "region": cluster.region,
        "driver": cluster.driver,
        "status": cluster.status,
        "simulated": cluster.simulated,
        "inventory": [{"gpu_type": gpu.gpu_type_id, "count": gpu.count} for gpu in row.inventory],
        "replicas": row.held,
        "replicas_ready": row.ready,
    }


class InventorySerializer(serializers.Serializer):
    gpu_type = serializers.CharField(max_length=20)
    count = serializers.IntegerField(min_value=0, max_value=100_000)


class ClusterCreateSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=40)
    provider = serializers.CharField(max_length=40)
    region = serializers.CharField(max_length=40)
    driver = serializers.CharField(max_length=20, default="local")
    agent_url = serializers.CharField(max_length=300)
    simulated = serializers.BooleanField(default=False)
    status = serializers.CharField(max_length=10, default="active")
    inventory = InventorySerializer(many=True)


class ClusterListView(StaffAPIView):
    def get(self, request: Request) -> Response:
        return Response({"results": [_cluster_body(row) for row in platform_stats.cluster_rows()]})

    def post(self, request: Request) -> Response:
        data = validated(ClusterCreateSerializer, request.data)
        inventory = [cluster_ops.InventoryRow(row["gpu_type"], row["count"]) for row in data.pop("inventory")]
        cluster = cluster_ops.add_cluster(self.staff, inventory=inventory, **data)
        row = next(row for row in platform_stats.cluster_rows() if row.cluster.pk == cluster.pk)
        return Response(_cluster_body(row), status=status.HTTP_201_CREATED)


class ReasonSerializer(serializers.Serializer):
    reason = serializers.CharField(max_length=300, required=False, allow_blank=True, default="")


class ClusterActionView(StaffAPIView):
    action_name = ""

    def post(self, request: Request, cluster_name: str) -> Response:
        cluster = get_object_or_404(Cluster, pk=cluster_name)
        data = validated(ReasonSerializer, request.data if isinstance(request.data, dict) else {})
        change = cluster_ops.change_status(self.staff, cluster, self.action_name, data["reason"])
        row = next(row for row in platform_stats.cluster_rows() if row.cluster.pk == cluster.pk)
        return Response(
            {**_cluster_body(row), "replicas_moved": change.replicas_affected, "organizations_affected": change.organizations_affected}
        )


CLUSTER_ACTION_VIEWS: dict[str, type[ClusterActionView]] = {
    action: type(f"Cluster{action.capitalize()}View", (ClusterActionView,), {"action_name": action})
    for action in ("cordon", "drain", "down", "up")
}
