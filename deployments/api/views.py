"""Deployments in the management API: thin views over deployments.services."""

from __future__ import annotations

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.exceptions import NotFound
from rest_framework.request import Request
from rest_framework.response import Response

from deployments import canaries, environments, selectors, services
from deployments.api import serializers as s
from deployments.model_catalog import ensure_builtin_models, offered_to
from deployments.models import Canary
from tenancy.api.serializers import validated
from tenancy.api.views import OrgAPIView
from tenancy.models import Role


class DeploymentAPIView(OrgAPIView):
    serializer_class = s.DeploymentSerializer
    write_role = Role.MEMBER

    def get_deployment(self):  # type: ignore[no-untyped-def]
        queryset = selectors.live_deployments(self.ctx.organization).select_related("current_revision")
        return get_object_or_404(queryset, pk=self.kwargs["deployment_id"])


class DeploymentListView(DeploymentAPIView):
    @extend_schema(operation_id="deployments_list", responses=s.DeploymentSerializer(many=True))
    def get(self, request: Request) -> Response:
        page = self.paginate_queryset(selectors.live_deployments(self.ctx.organization).select_related("current_revision"))
        return self.get_paginated_response(self.get_serializer(page, many=True).data)

    @extend_schema(request=s.DeploymentCreateSerializer, responses={201: s.DeploymentSerializer})
    def post(self, request: Request) -> Response:
        data = validated(s.DeploymentCreateSerializer, request.data)
        name, environment = data.pop("name"), data.pop("environment")
        data["allowed_regions"] = tuple(data["allowed_regions"])
        deployment = services.create_deployment(self.ctx, name=name, environment=environment, spec=services.DeploymentSpec(**data))
        return Response(self.get_serializer(deployment).data, status=status.HTTP_201_CREATED)


class DeploymentDetailView(DeploymentAPIView):
    def get(self, request: Request, deployment_id: str) -> Response:
        return Response(self.get_serializer(self.get_deployment()).data)

    @extend_schema(
        request=s.DeploymentUpdateSerializer,
        description="Every change is a new revision, promoted and rolled out at once; with live=false saved without going live.",
    )
    def patch(self, request: Request, deployment_id: str) -> Response:
        deployment = self.get_deployment()
        changes = validated(s.DeploymentUpdateSerializer, request.data)
        return Response(self.get_serializer(services.update_deployment(self.ctx, deployment, **changes)).data)

    def delete(self, request: Request, deployment_id: str) -> Response:
        services.delete_deployment(self.ctx, self.get_deployment())
        return Response(status=status.HTTP_204_NO_CONTENT)


class RevisionListView(DeploymentAPIView):
    serializer_class = s.RevisionSerializer

    @extend_schema(operation_id="deployment_revisions_list", responses=s.RevisionSerializer(many=True))
    def get(self, request: Request, deployment_id: str) -> Response:
        revisions = selectors.revisions(self.ctx.organization, self.get_deployment())
        return Response(self.get_serializer(revisions, many=True).data)


class PromoteView(DeploymentAPIView):
    @extend_schema(request=s.PromoteSerializer, responses=s.DeploymentSerializer)
    def post(self, request: Request, deployment_id: str) -> Response:
        deployment = self.get_deployment()  # a foreign id is 404 before the body is judged
        data = validated(s.PromoteSerializer, request.data)
        return Response(self.get_serializer(services.promote_revision(self.ctx, deployment, data["revision"])).data)


class RollbackView(DeploymentAPIView):
    @extend_schema(request=None, responses=s.DeploymentSerializer, description="Promotes the revision before the current one.")
    def post(self, request: Request, deployment_id: str) -> Response:
        return Response(self.get_serializer(services.rollback(self.ctx, self.get_deployment())).data)


def _plan(data: dict) -> canaries.CanaryPlan:  # type: ignore[type-arg]
    return canaries.CanaryPlan(
        traffic_percent=data["traffic_percent"],
        window_s=data["window_s"],
        min_requests=data["min_requests"],
        max_error_rate_increase=data["max_error_rate_increase"],
        max_latency_ratio=data["max_latency_ratio"],
    )


class StagingView(DeploymentAPIView):
    @extend_schema(operation_id="deployment_staging_retrieve", description="The production deployment's staging environment.")
    def get(self, request: Request, deployment_id: str) -> Response:
        staging = environments.staging_of(self.get_deployment())
        if staging is None:
            raise NotFound("This deployment has no staging environment; create one with POST to this URL.")
        return Response(self.get_serializer(staging).data)

    @extend_schema(
        operation_id="deployment_staging_create",
        request=s.StagingCreateSerializer,
        responses={201: s.DeploymentSerializer},
        description="A staging environment for a production deployment: a deployment of its own, with its own name on the gateway, "
        "starting as a copy of production's current revision with `changes` applied. Promote it with "
        "POST /api/v1/deployments/{staging id}/promote-to-production/.",
    )
    def post(self, request: Request, deployment_id: str) -> Response:
        production = self.get_deployment()
        data = validated(s.StagingCreateSerializer, request.data)
        staging = environments.create_staging(self.ctx, production=production, name=data.get("name"), changes=data.get("changes") or None)
        return Response(self.get_serializer(staging).data, status=status.HTTP_201_CREATED)


class PromoteToProductionView(DeploymentAPIView):
    @extend_schema(
        request=s.PromoteToProductionSerializer,
        responses=s.DeploymentSerializer,
        description="Copies this staging environment's current revision (the same model artifact and settings) to its production "
        "deployment as a new revision, live at once or, with `canary`, by a canary on production. Answers the production deployment.",
    )
    def post(self, request: Request, deployment_id: str) -> Response:
        staging = self.get_deployment()
        data = validated(s.PromoteToProductionSerializer, request.data)
        plan = _plan(data["canary"]) if data.get("canary") else None
        production, _ = environments.promote_to_production(
            self.ctx, staging=staging, keep_production_scaling=data["keep_production_scaling"], canary=plan
        )
        return Response(self.get_serializer(production).data)


class CanaryView(DeploymentAPIView):
    serializer_class = s.CanarySerializer

    @extend_schema(operation_id="deployment_canary_retrieve", description="The deployment's canary: the active one, else the latest.")
    def get(self, request: Request, deployment_id: str) -> Response:
        deployment = self.get_deployment()
        canary = (
            Canary.objects.for_org(self.ctx.organization)
            .filter(deployment=deployment)
            .select_related("stable_revision", "canary_revision")
            .order_by("-started_at")
            .first()
        )
        if canary is None:
            raise NotFound("This deployment has had no canary; start one with POST to this URL.")
        return Response(self.get_serializer(canary).data)

    @extend_schema(
        operation_id="deployment_canary_start",
        request=s.CanaryStartSerializer,
        responses={201: s.CanarySerializer},
        description="Sends traffic_percent of the deployment's requests to a revision (an existing one, or one made of `changes`), "
        "judged against the current one and promoted or rolled back automatically.",
    )
    def post(self, request: Request, deployment_id: str) -> Response:
        deployment = self.get_deployment()
        data = validated(s.CanaryStartSerializer, request.data)
        plan = _plan(data)
        changes = data.get("changes") or None
        if changes and "allowed_regions" in changes:
            changes["allowed_regions"] = tuple(changes["allowed_regions"])
        canary = canaries.start_canary(self.ctx, deployment, plan=plan, revision=data.get("revision"), changes=changes)
        return Response(self.get_serializer(canary).data, status=status.HTTP_201_CREATED)


class CanaryActionView(DeploymentAPIView):
    """promote, hold, resume or rollback, by the URL's last part."""

    serializer_class = s.CanarySerializer
    actions = {
        "promote": canaries.promote_canary,
        "hold": canaries.hold_canary,
        "resume": canaries.resume_canary,
        "rollback": canaries.roll_back_canary,
    }
    action_name = ""

    @extend_schema(request=None, responses=s.CanarySerializer)
    def post(self, request: Request, deployment_id: str) -> Response:
        canary = self.actions[self.action_name](self.ctx, self.get_deployment())
        return Response(self.get_serializer(canary).data)


class GpuTypeListView(OrgAPIView):
    serializer_class = s.GpuTypeSerializer
    pagination_class = None

    @extend_schema(operation_id="gpu_types_list", responses=s.GpuTypeSerializer(many=True))
    def get(self, request: Request) -> Response:
        return Response(self.get_serializer(selectors.gpu_types(), many=True).data)


class RegionListView(OrgAPIView):
    pagination_class = None  # a handful of regions, answered whole

    @extend_schema(operation_id="regions_list", responses={200: s.RegionSerializer(many=True)})
    def get(self, request: Request) -> Response:
        return Response(selectors.regions())


class CatalogModelListView(OrgAPIView):
    serializer_class = s.CatalogModelSerializer
    pagination_class = None

    @extend_schema(operation_id="catalog_models_list", responses=s.CatalogModelSerializer(many=True))
    def get(self, request: Request) -> Response:
        ensure_builtin_models()
        return Response(self.get_serializer(offered_to(self.ctx.organization, staff=request.user.is_staff), many=True).data)
