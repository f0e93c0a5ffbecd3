from __future__ import annotations

from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render

from tenancy import selectors
from tenancy.context import OrgContext
from tenancy.decorators import org_page
from tenancy.models import Role


@org_page(read=Role.ADMIN)
def audit_log(request: HttpRequest, ctx: OrgContext) -> HttpResponse:
    entries = selectors.audit_entries(ctx.organization).select_related("actor_user")
    page = Paginator(entries, 50).get_page(request.GET.get("page"))
    return render(request, "console/audit_log.html", {"page": page, "active_nav": "audit"})


@org_page(read=Role.ADMIN)
def audit_entry(request: HttpRequest, ctx: OrgContext, entry_id: str) -> HttpResponse:
    entry = get_object_or_404(selectors.audit_entries(ctx.organization), pk=entry_id)
    return render(request, "console/audit_entry.html", {"entry": entry, "active_nav": "audit"})
