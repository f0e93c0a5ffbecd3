"""The Admin section, for platform staff only. Everyone else gets 404: the section does
not exist for them."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.db.models import Count
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render

from console.models import Organization


def staff_page(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    @wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not (request.user.is_authenticated and request.user.is_staff):
            raise Http404("No such page.")
        return view(request, *args, **kwargs)

    return wrapper


@staff_page
def tenants(request: HttpRequest) -> HttpResponse:
    organizations = Organization.objects.annotate(member_count=Count("memberships", distinct=True)).order_by("-created_at")
    return render(request, "console/staff_tenants.html", {"organizations": organizations, "active_nav": "staff"})
