"""The Overview page."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from console import onboarding
from metering import dashboards
from tenancy import selectors
from tenancy.context import OrgContext
from tenancy.decorators import org_page
from tenancy.models import Role


@org_page()
def overview(request: HttpRequest, ctx: OrgContext) -> HttpResponse:
    org = ctx.organization
    # Admins and owners can take every step; the list goes once every step is done.
    steps = onboarding.checklist(org) if ctx.role.at_least(Role.ADMIN) else []
    done = sum(step.done for step in steps)
    context = {
        "checklist": steps if done < len(steps) else [],
        "steps_done": done,
        "member_count": selectors.members(org).count(),
        "active_key_count": sum(1 for key in selectors.api_keys(org) if key.status == "active"),
        "recent_entries": list(selectors.audit_entries(org)[:5]) if ctx.role.at_least(Role.ADMIN) else [],
        # The last 24 hours of usage, live through the same WebSocket as the Usage page.
        "dashboard": dashboards.usage_dashboard(
            org, dashboards.DashboardParams.parse({}, fallback_tz=request.COOKIES.get("sb_tz")), show_cost=ctx.role.sees_money
        ),
    }
    return render(request, "console/overview.html", context)
