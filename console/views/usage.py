"""The console's Usage page: one call into metering.dashboards; the charts draw from the
same data the WebSocket (metering.consumers) pushes when usage arrives."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_safe

from deployments.selectors import live_deployments
from metering import dashboards
from routing import selectors as routing_selectors
from tenancy.context import OrgContext
from tenancy.decorators import org_page
from tenancy.models import Role

# The browser's time zone, remembered by charts.js so the page renders in it.
TZ_COOKIE = "sb_tz"


def _example_model(ctx: OrgContext) -> str:
    """A name the organization can call, for the first-request snippet: a route, else a
    deployment."""
    routes = routing_selectors.routes(ctx.organization)
    return (
        routes.values_list("name", flat=True).first()
        or live_deployments(ctx.organization).order_by("name").values_list("name", flat=True).first()
        or "chat-default"
    )


@org_page()
@require_safe
def usage(request: HttpRequest, ctx: OrgContext) -> HttpResponse:
    params = dashboards.DashboardParams.parse(request.GET, fallback_tz=request.COOKIES.get(TZ_COOKIE))
    data = dashboards.usage_dashboard(ctx.organization, params, show_cost=ctx.role.sees_money)
    context = {
        "dashboard": data,
        "params": params,
        "ranges": [(r.key, r.label) for r in dashboards.RANGES.values()],
        "splits": [(key, label) for key, (label, _) in dashboards.SPLITS.items()],
        "api_base": request.build_absolute_uri("/v1"),
        "example_model": _example_model(ctx) if not data["has_usage"] else "",
        "can_create_keys": ctx.role.at_least(Role.ADMIN),
        "active_nav": "usage",
    }
    return render(request, "metering/usage.html", context)
