"""Management API views: parse, call one service or selector, serialize. Nothing else."""

from __future__ import annotations

from typing import Any

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.generics import GenericAPIView
from rest_framework.request import Request
from rest_framework.response import Response

from tenancy import selectors, services
from tenancy.api import serializers as s
from tenancy.api.permissions import OrgRolePermission
from tenancy.context import OrgContext
from tenancy.errors import ServiceError
from tenancy.models import Role


class OrgAPIView(GenericAPIView):
    """Every endpoint acts for one organization (`self.ctx`), resolved by the permission."""

    permission_classes = [OrgRolePermission]
    read_role = Role.VIEWER
    write_role = Role.ADMIN
    role_by_method: dict[str, Role] = {}
    ctx: OrgContext

    def required_role(self, method: str) -> Role:
        if method in self.role_by_method:
            return self.role_by_method[method]
        return self.read_role if method in ("GET", "HEAD", "OPTIONS") else self.write_role

    def get_serializer_context(self) -> dict[str, Any]:
        return {**super().get_serializer_context(), "ctx": getattr(self, "ctx", None)}


class OrganizationView(OrgAPIView):
    serializer_class = s.OrganizationSerializer
    role_by_method = {"DELETE": Role.OWNER}

    def get(self, request: Request) -> Response:
        return Response(self.get_serializer(self.ctx.organization).data)

    @extend_schema(request=s.OrganizationUpdateSerializer)
    def patch(self, request: Request) -> Response:
        data = s.validated(s.OrganizationUpdateSerializer, request.data)
        return Response(self.get_serializer(services.rename_organization(self.ctx, data["name"])).data)

    def delete(self, request: Request) -> Response:
        services.delete_organization(self.ctx)
        return Response(status=status.HTTP_204_NO_CONTENT)


class MemberListView(OrgAPIView):
    serializer_class = s.MemberSerializer

    @extend_schema(operation_id="members_list", responses=s.MemberSerializer(many=True))
    def get(self, request: Request) -> Response:
        page = self.paginate_queryset(selectors.members(self.ctx.organization))
        return self.get_paginated_response(self.get_serializer(page, many=True).data)


class MemberDetailView(OrgAPIView):
    serializer_class = s.MemberSerializer

    def get_object(self):  # type: ignore[no-untyped-def]
        return get_object_or_404(selectors.members(self.ctx.organization), pk=self.kwargs["member_id"])

    def get(self, request: Request, member_id: str) -> Response:
        return Response(self.get_serializer(self.get_object()).data)

    @extend_schema(request=s.MemberUpdateSerializer)
    def patch(self, request: Request, member_id: str) -> Response:
        membership = self.get_object()
        data = s.validated(s.MemberUpdateSerializer, request.data)
        return Response(self.get_serializer(services.change_member_role(self.ctx, membership, data["role"])).data)

    def delete(self, request: Request, member_id: str) -> Response:
        services.remove_member(self.ctx, self.get_object())
        return Response(status=status.HTTP_204_NO_CONTENT)


class InvitationListView(OrgAPIView):
    serializer_class = s.InvitationSerializer

    @extend_schema(operation_id="invitations_list", responses=s.InvitationSerializer(many=True))
    def get(self, request: Request) -> Response:
        page = self.paginate_queryset(selectors.invitations(self.ctx.organization))
        return self.get_paginated_response(self.get_serializer(page, many=True).data)

    @extend_schema(request=s.InvitationCreateSerializer, responses={201: s.IssuedInvitationSerializer})
    def post(self, request: Request) -> Response:
        data = s.validated(s.InvitationCreateSerializer, request.data)
        issued = services.create_invitation(self.ctx, role=data["role"], email=data["email"])
        body = s.IssuedInvitationSerializer(issued.invitation, context={"url": issued.url}).data
        return Response(body, status=status.HTTP_201_CREATED)


class InvitationDetailView(OrgAPIView):
    serializer_class = s.InvitationSerializer

    def get_object(self):  # type: ignore[no-untyped-def]
        return get_object_or_404(selectors.invitations(self.ctx.organization), pk=self.kwargs["invitation_id"])

    def get(self, request: Request, invitation_id: str) -> Response:
        return Response(self.get_serializer(self.get_object()).data)

    def delete(self, request: Request, invitation_id: str) -> Response:
        return Response(self.get_serializer(services.revoke_invitation(self.ctx, self.get_object())).data)


class ApiKeyListView(OrgAPIView):
    serializer_class = s.ApiKeySerializer

    @extend_schema(operation_id="keys_list", responses=s.ApiKeySerializer(many=True))
    def get(self, request: Request) -> Response:
        page = self.paginate_queryset(selectors.api_keys(self.ctx.organization))
        return self.get_paginated_response(self.get_serializer(page, many=True).data)

    @extend_schema(request=s.ApiKeyCreateSerializer, responses={201: s.IssuedApiKeySerializer})
    def post(self, request: Request) -> Response:
        data = s.validated(s.ApiKeyCreateSerializer, request.data)
        issued = services.create_api_key(
            self.ctx,
            name=data["name"],
            scopes=data["scopes"],
            expires_at=data["expires_at"],
            allowed_models=data["allowed_models"],
            monthly_budget=data["monthly_budget"],
        )
        body = s.IssuedApiKeySerializer(issued.api_key, context={"plaintext": issued.plaintext, "ctx": self.ctx}).data
        return Response(body, status=status.HTTP_201_CREATED)


class ApiKeyObjectView(OrgAPIView):
    serializer_class = s.ApiKeySerializer

    def get_object(self):  # type: ignore[no-untyped-def]
        return get_object_or_404(selectors.api_keys(self.ctx.organization), pk=self.kwargs["key_id"])


class ApiKeyDetailView(ApiKeyObjectView):
    def get(self, request: Request, key_id: str) -> Response:
        return Response(self.get_serializer(self.get_object()).data)

    @extend_schema(request=s.ApiKeyUpdateSerializer)
    def patch(self, request: Request, key_id: str) -> Response:
        key = self.get_object()
        data = s.validated(s.ApiKeyUpdateSerializer, request.data)
        if not data:
            raise ServiceError("Send name, allowed_models or monthly_budget.", field="name")
        if "name" in data:
            key = services.rename_api_key(self.ctx, key, data["name"])
        if "allowed_models" in data:
            key = services.set_allowed_models(self.ctx, key, data["allowed_models"])
        if "monthly_budget" in data:
            key = services.set_key_budget(self.ctx, key, data["monthly_budget"])
        return Response(self.get_serializer(key).data)

    @extend_schema(description="Revokes the key at once. The row stays, for the audit log.")
    def delete(self, request: Request, key_id: str) -> Response:
        return Response(self.get_serializer(services.revoke_api_key(self.ctx, self.get_object())).data)


class ApiKeyRotateView(ApiKeyObjectView):
    @extend_schema(
        request=None,
        responses={201: s.IssuedApiKeySerializer},
        description="Issues a replacement key; the old one keeps working for the grace period.",
    )
    def post(self, request: Request, key_id: str) -> Response:
        issued = services.rotate_api_key(self.ctx, self.get_object())
        body = s.IssuedApiKeySerializer(issued.api_key, context={"plaintext": issued.plaintext, "ctx": self.ctx}).data
        return Response(body, status=status.HTTP_201_CREATED)


class AuditListView(OrgAPIView):
    serializer_class = s.AuditEntrySerializer
    read_role = Role.ADMIN

    @extend_schema(operation_id="audit_log_list", responses=s.AuditEntrySerializer(many=True))
    def get(self, request: Request) -> Response:
        page = self.paginate_queryset(selectors.audit_entries(self.ctx.organization).select_related("actor_user"))
        return self.get_paginated_response(self.get_serializer(page, many=True).data)


class AuditDetailView(OrgAPIView):
    serializer_class = s.AuditEntrySerializer
    read_role = Role.ADMIN

    def get(self, request: Request, entry_id: str) -> Response:
        entry = get_object_or_404(selectors.audit_entries(self.ctx.organization), pk=entry_id)
        return Response(self.get_serializer(entry).data)
