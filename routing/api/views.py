"""Model routes and external providers in the management API: thin views over routing.services."""

from __future__ import annotations

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response

from routing import selectors, services
from routing.api import serializers as s
from tenancy.api.serializers import validated
from tenancy.api.views import OrgAPIView
from tenancy.models import Role


class RouteAPIView(OrgAPIView):
    serializer_class = s.RouteSerializer
    write_role = Role.MEMBER

    def get_route(self):  # type: ignore[no-untyped-def]
        return get_object_or_404(selectors.routes(self.ctx.organization), pk=self.kwargs["route_id"])


class RouteListView(RouteAPIView):
    @extend_schema(operation_id="routes_list", responses=s.RouteSerializer(many=True))
    def get(self, request: Request) -> Response:
        page = self.paginate_queryset(selectors.routes(self.ctx.organization))
        return self.get_paginated_response(self.get_serializer(page, many=True).data)

    @extend_schema(request=s.RouteWriteSerializer, responses={201: s.RouteSerializer})
    def post(self, request: Request) -> Response:
        route = services.create_route(self.ctx, s.route_spec(validated(s.RouteWriteSerializer, request.data)))
        return Response(self.get_serializer(route).data, status=status.HTTP_201_CREATED)


class RouteDetailView(RouteAPIView):
    def get(self, request: Request, route_id: str) -> Response:
        return Response(self.get_serializer(self.get_route()).data)

    @extend_schema(
        request=s.RouteWriteSerializer,
        description="Replaces the route's settings and targets; a monthly_budget left out stays as it is.",
    )
    def put(self, request: Request, route_id: str) -> Response:
        route = self.get_route()  # a foreign id is 404 before the body is judged
        route = services.update_route(self.ctx, route, s.route_spec(validated(s.RouteWriteSerializer, request.data)))
        return Response(self.get_serializer(route).data)

    def delete(self, request: Request, route_id: str) -> Response:
        services.delete_route(self.ctx, self.get_route())
        return Response(status=status.HTTP_204_NO_CONTENT)


class ProviderAPIView(OrgAPIView):
    serializer_class = s.ProviderSerializer
    write_role = Role.ADMIN

    def get_provider(self):  # type: ignore[no-untyped-def]
        return get_object_or_404(selectors.providers(self.ctx.organization), pk=self.kwargs["provider_id"])


class ProviderListView(ProviderAPIView):
    @extend_schema(operation_id="providers_list", responses=s.ProviderSerializer(many=True))
    def get(self, request: Request) -> Response:
        page = self.paginate_queryset(selectors.providers(self.ctx.organization))
        return self.get_paginated_response(self.get_serializer(page, many=True).data)

    @extend_schema(request=s.ProviderWriteSerializer, responses={201: s.ProviderSerializer})
    def post(self, request: Request) -> Response:
        provider = services.create_provider(self.ctx, **validated(s.ProviderWriteSerializer, request.data))
        return Response(self.get_serializer(provider).data, status=status.HTTP_201_CREATED)


class ProviderDetailView(ProviderAPIView):
    def get(self, request: Request, provider_id: str) -> Response:
        return Response(self.get_serializer(self.get_provider()).data)

    @extend_schema(
        request=s.ProviderUpdateSerializer, description="Changes the given fields; an empty or missing api_key keeps the stored one."
    )
    def patch(self, request: Request, provider_id: str) -> Response:
        provider = self.get_provider()
        changes = validated(s.ProviderUpdateSerializer, request.data)
        return Response(self.get_serializer(services.update_provider(self.ctx, provider, **changes)).data)

    def delete(self, request: Request, provider_id: str) -> Response:
        services.delete_provider(self.ctx, self.get_provider())
        return Response(status=status.HTTP_204_NO_CONTENT)
