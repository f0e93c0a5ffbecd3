"""Overview and the pages whose features arrive with later issues."""

from __future__ import annotations

from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render

from billing import dashboards
from console import selectors
from console.context import OrgContext
from console.models import Role
from console.views.decorators import org_page

# Pages that exist in the navigation but whose capability is not built yet. Each says
# so plainly rather than showing invented numbers.
UPCOMING_PAGES = {
    "billing": ("Billing", "Your plan, the running invoice, credits, budgets and payment method."),
}


@org_page()
def overview(request: HttpRequest, ctx: OrgContext) -> HttpResponse:
    org = ctx.organization
    context = {
        "member_count": selectors.members(org).count(),
        "active_key_count": sum(1 for key in selectors.api_keys(org) if key.status == "active"),
        "recent_entries": list(selectors.audit_entries(org)[:5]) if ctx.role.at_least("admin") else [],
        # The last 24 hours of usage, live through the same WebSocket as the Usage page.
        "dashboard": dashboards.usage_dashboard(org, dashboards.DashboardParams.parse({}, fallback_tz=request.COOKIES.get("sb_tz")), show_cost=ctx.role.at_least(Role.ADMIN)),
    }
    return render(request, "console/overview.html", context)


@org_page()
def upcoming(request: HttpRequest, ctx: OrgContext, page: str) -> HttpResponse:
    if page not in UPCOMING_PAGES:
        raise Http404("No such page.")
    title, promise = UPCOMING_PAGES[page]
    return render(request, "console/upcoming.html", {"title": title, "promise": promise, "active_nav": page})
