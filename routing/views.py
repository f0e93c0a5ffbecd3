"""Routing in the console: routes and providers, a route's traffic over the last hour, and
the playground."""

from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from deployments import model_catalog
from deployments.models import CatalogModel
from routing import region_coverage, selectors, services
from routing.forms import ProviderForm, RouteForm, TargetFormSet, route_spec, target_choices
from routing.gateway import auth
from routing.gateway.health import CLOSED
from routing.gateway.snapshot import load_snapshot
from routing.models import ExternalProvider, ModelRoute
from tenancy.context import OrgContext
from tenancy.decorators import org_page
from tenancy.errors import ServiceError
from tenancy.models import Organization, Role

OUTSIDE_POLICY = "outside this route's regions"


def _route(ctx: OrgContext, route_id: str) -> ModelRoute:
    return get_object_or_404(selectors.routes(ctx.organization), pk=route_id)


def _provider(ctx: OrgContext, provider_id: str) -> ExternalProvider:
    return get_object_or_404(selectors.providers(ctx.organization), pk=provider_id)


@org_page(read=Role.VIEWER)
def routing_index(request: HttpRequest, ctx: OrgContext) -> HttpResponse:
    routes = list(selectors.routes(ctx.organization))
    rows = [(route, selectors.targets(ctx.organization, route)) for route in routes]
    context = {
        "rows": rows,
        "providers": selectors.providers(ctx.organization),
        "can_edit": ctx.role.at_least(Role.MEMBER),
        "can_manage_providers": ctx.role.at_least(Role.ADMIN),
        "active_nav": "routing",
    }
    return render(request, "routing/index.html", context)


def _route_form_page(request: HttpRequest, ctx: OrgContext, route: ModelRoute | None) -> HttpResponse:
    regions = sorted(services.known_regions(ctx))
    choices = target_choices(ctx.organization)
    if route is not None and request.method != "POST":
        initial = {**services.route_snapshot(route), "fallbacks": ", ".join(route.fallbacks)}
        targets_initial = [
            {
                "target": f"deployment:{t.deployment_id}" if t.deployment_id else f"provider:{t.provider_id}",
                "provider_model": t.provider_model,
                "weight": t.weight,
            }
            for t in selectors.targets(ctx.organization, route)
        ]
        form = RouteForm(initial=initial, regions=regions, money=ctx.role.sees_money)
        targets = TargetFormSet(initial=targets_initial, prefix="targets", form_kwargs={"choices": choices})
    else:
        form = RouteForm(request.POST or None, regions=regions, money=ctx.role.sees_money)
        targets = TargetFormSet(request.POST or None, prefix="targets", form_kwargs={"choices": choices})
    if request.method == "POST" and form.is_valid() and targets.is_valid():
        try:
            spec = route_spec(form, targets)
            saved = services.create_route(ctx, spec) if route is None else services.update_route(ctx, route, spec)
        except ServiceError as error:
            form.add_error(error.field if error.field in form.fields else None, error.message)
        else:
            messages.success(request, f"Route {saved.name} saved. Gateways pick it up within a few seconds.")
            reaches = region_coverage.reach_of(ctx.organization, selectors.targets(ctx.organization, saved))
            warning = region_coverage.coverage_warning(allowed=saved.allowed_regions, reaches=reaches)
            if warning:
                messages.warning(request, warning)
            return redirect("route-detail", org_slug=ctx.organization.slug, route_id=saved.pk)
    status = 400 if request.method == "POST" else 200
    return render(
        request,
        "routing/route_form.html",
        {"form": form, "targets": targets, "route": route, "has_targets": bool(choices), "active_nav": "routing"},
        status=status,
    )


@org_page(read=Role.MEMBER, write=Role.MEMBER)
@require_http_methods(["GET", "POST"])
def route_create(request: HttpRequest, ctx: OrgContext) -> HttpResponse:
    return _route_form_page(request, ctx, None)


@org_page(read=Role.MEMBER, write=Role.MEMBER)
@require_http_methods(["GET", "POST"])
def route_edit(request: HttpRequest, ctx: OrgContext, route_id: str) -> HttpResponse:
    return _route_form_page(request, ctx, _route(ctx, route_id))


@org_page(read=Role.VIEWER)
def route_detail(request: HttpRequest, ctx: OrgContext, route_id: str) -> HttpResponse:
    route = _route(ctx, route_id)
    targets = selectors.targets(ctx.organization, route)

    snapshot_route = load_snapshot(ctx.organization.pk).routes.get(route.name)
    endpoints = [(target.label, endpoint) for target in (snapshot_route.targets if snapshot_route else ()) for endpoint in target.endpoints]
    states = selectors.breaker_states([endpoint.key for _, endpoint in endpoints])
    allowed = set(route.allowed_regions)
    context = {
        "route": route,
        "targets": targets,
        # An endpoint outside the route's regions is never sent this route's requests, whatever its breaker says.
        "endpoints": [
            (label, endpoint, states[endpoint.key] if not allowed or endpoint.region in allowed else OUTSIDE_POLICY)
            for label, endpoint in endpoints
        ],
        "coverage_warning": region_coverage.coverage_warning(
            allowed=route.allowed_regions, reaches=region_coverage.reach_of(ctx.organization, targets)
        ),
        "closed": CLOSED,
        "outside_policy": OUTSIDE_POLICY,
        "traffic": selectors.traffic(ctx.organization, route.name),
        "can_edit": ctx.role.at_least(Role.MEMBER),
        "sees_money": ctx.role.sees_money,
        "active_nav": "routing",
    }
    return render(request, "routing/route_detail.html", context)


@org_page(read=Role.MEMBER, write=Role.MEMBER)
@require_POST
def route_delete(request: HttpRequest, ctx: OrgContext, route_id: str) -> HttpResponse:
    route = _route(ctx, route_id)
    try:
        services.delete_route(ctx, route)
    except ServiceError as error:
        messages.error(request, error.message)
        return redirect("route-detail", org_slug=ctx.organization.slug, route_id=route.pk)
    messages.success(request, f"Route {route.name} deleted.")
    return redirect("routing", org_slug=ctx.organization.slug)


def _provider_form_page(request: HttpRequest, ctx: OrgContext, provider: ExternalProvider | None) -> HttpResponse:
    if provider is not None and request.method != "POST":
        initial = {f: getattr(provider, f) for f in ("name", "base_url", "region", "input_price_per_mtok", "output_price_per_mtok")}
        form = ProviderForm(initial=initial, editing=True)
    else:
        form = ProviderForm(request.POST or None, editing=provider is not None)
    if request.method == "POST" and form.is_valid():
        try:
            if provider is None:
                saved = services.create_provider(ctx, **form.cleaned_data)
            else:
                saved = services.update_provider(ctx, provider, **form.cleaned_data)
        except ServiceError as error:
            form.add_error(error.field if error.field in form.fields else None, error.message)
        else:
            messages.success(request, f"Provider {saved.name} saved.")
            return redirect("routing", org_slug=ctx.organization.slug)
    status = 400 if request.method == "POST" else 200
    return render(request, "routing/provider_form.html", {"form": form, "provider": provider, "active_nav": "routing"}, status=status)


@org_page(read=Role.ADMIN, write=Role.ADMIN)
@require_http_methods(["GET", "POST"])
def provider_create(request: HttpRequest, ctx: OrgContext) -> HttpResponse:
    return _provider_form_page(request, ctx, None)


@org_page(read=Role.ADMIN, write=Role.ADMIN)
@require_http_methods(["GET", "POST"])
def provider_edit(request: HttpRequest, ctx: OrgContext, provider_id: str) -> HttpResponse:
    return _provider_form_page(request, ctx, _provider(ctx, provider_id))


@org_page(read=Role.ADMIN, write=Role.ADMIN)
@require_POST
def provider_delete(request: HttpRequest, ctx: OrgContext, provider_id: str) -> HttpResponse:
    provider = _provider(ctx, provider_id)
    try:
        services.delete_provider(ctx, provider)
    except ServiceError as error:
        messages.error(request, error.message)
    else:
        messages.success(request, f"Provider {provider.name} deleted.")
    return redirect("routing", org_slug=ctx.organization.slug)


@org_page(read=Role.MEMBER)
def playground(request: HttpRequest, ctx: OrgContext) -> HttpResponse:
    """Chat with a route or deployment from the browser. The page calls /v1 itself with a
    short-lived token bound to this organization (routing.gateway.auth), so what it shows is what
    an API caller gets: the stream, the served-by headers and the cost."""
    routes = [route.name for route in selectors.routes(ctx.organization)]
    chat_deployments = [
        d.name
        for d in selectors.live_deployments(ctx.organization).select_related("current_revision")
        if _is_chat(ctx.organization, d.revision.model)
    ]
    assert ctx.user is not None
    context = {
        "routes": routes,
        "deployments": [name for name in chat_deployments if name not in routes],
        "models": routes + chat_deployments,
        "scaled_to_zero": selectors.scaled_to_zero(ctx.organization),
        "cold_start_s": settings.GATEWAY_COLD_START_TIMEOUT_SECONDS,
        "token": auth.playground_token(ctx.organization.pk, ctx.user.pk),
        "token_minutes": auth.PLAYGROUND_TOKEN_SECONDS // 60,
        "active_nav": "playground",
    }
    return render(request, "routing/playground.html", context)


def _is_chat(org: Organization, model: str) -> bool:
    """A deployment the Playground can chat with: its catalog entry (built-in or the
    organization's registered model) is not an embedding model."""
    entry = model_catalog.entry(org, model)
    return entry is None or entry.task != CatalogModel.Task.EMBEDDING
