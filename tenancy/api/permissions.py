"""Resolves the organization and checks scope and role for every management API call."""

from __future__ import annotations

from typing import Any

from rest_framework.exceptions import NotAuthenticated, PermissionDenied
from rest_framework.permissions import SAFE_METHODS, BasePermission
from rest_framework.request import Request

from tenancy import access
from tenancy.models import ApiKey, Role


class OrgRolePermission(BasePermission):
    """Sets `view.ctx`. Keys need `read` for reads and `write` for writes; then the
    actor's role must reach what the view asks for that method."""

    def has_permission(self, request: Request, view: Any) -> bool:
        safe = request.method in SAFE_METHODS
        key = request.auth if isinstance(request.auth, ApiKey) else None
        if key is not None:
            needed_scope = ApiKey.Scope.READ if safe else ApiKey.Scope.WRITE
            if not key.has_scope(needed_scope):
                raise PermissionDenied(f"This API key lacks the `{needed_scope}` scope needed to {'read' if safe else 'change'} this.")
            ctx = access.context_for_api_key(request._request, key)
        elif request.user is not None and request.user.is_authenticated:
            ctx = access.context_for_session_api(request._request, request.user)
        else:
            raise NotAuthenticated("Authenticate with `Authorization: Bearer <API key>` or a console session.")
        needed_role: Role = view.required_role(request.method)
        if not ctx.role.at_least(needed_role):
            raise PermissionDenied(f"Your role ({ctx.role.label.lower()}) cannot do this; it needs {needed_role.label.lower()} or above.")
        view.ctx = ctx
        return True
