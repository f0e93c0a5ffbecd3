"""`org_page`: the console's single door into an organization's pages."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse

from tenancy import access
from tenancy.context import OrgContext
from tenancy.models import Role

OrgView = Callable[..., HttpResponse]


def org_page(*, read: Role = Role.VIEWER, write: Role = Role.ADMIN) -> Callable[[OrgView], Callable[..., HttpResponse]]:
    """Resolves `org_slug` to an `OrgContext` (404 for non-members) and checks the role:
    `read` for GET, `write` for anything else. The view receives the context."""

    def decorate(view: OrgView) -> Callable[..., HttpResponse]:
        @login_required
        @wraps(view)
        def wrapper(request: HttpRequest, org_slug: str, **kwargs: Any) -> HttpResponse:
            ctx: OrgContext = access.context_for_member(request, request.user, org_slug)  # type: ignore[arg-type]
            needed = read if request.method in ("GET", "HEAD") else write
            if not ctx.role.at_least(needed):
                raise PermissionDenied(f"Your role ({ctx.role.label.lower()}) cannot do this; it needs {needed.label.lower()} or above.")
            access.remember_active_org(request, ctx)
            request.org_ctx = ctx  # type: ignore[attr-defined]
            return view(request, ctx, **kwargs)

        return wrapper

    return decorate
