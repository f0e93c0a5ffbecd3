"""Deployments in the console: list, deploy form with its cost, detail with replicas per
region, the event timeline and revisions; scale, promote, roll back, delete."""

from __future__ import annotations

from decimal import Decimal

from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from console import snippets
from deployments import canaries, environments, live, selectors, services
from deployments.forms import CanaryStartForm, DeploymentForm, PromoteToProductionForm, ScaleForm, StagingCreateForm
from deployments.models import Deployment
from metering import dashboards
from tenancy.context import OrgContext
from tenancy.decorators import org_page
from tenancy.errors import ServiceError
from tenancy.models import Role


def _deployment(ctx: OrgContext, deployment_id: str):  # type: ignore[no-untyped-def]
    return get_object_or_404(selectors.live_deployments(ctx.organization).select_related("current_revision"), pk=deployment_id)


def _estimate(deployment: Deployment) -> tuple[Decimal, Decimal]:
    return services.estimated_cost_per_hour(services.DeploymentSpec.of(deployment.revision), organization_id=deployment.organization_id)


@org_page(read=Role.VIEWER, write=Role.MEMBER)
def deployment_list(request: HttpRequest, ctx: OrgContext) -> HttpResponse:
    deployments = list(selectors.live_deployments(ctx.organization).select_related("current_revision"))
    rows = [
        (
            deployment,
            services.estimated_cost_per_hour(services.DeploymentSpec.of(deployment.revision), organization_id=deployment.organization_id),
        )
        for deployment in deployments
    ]
    return render(
        request, "deployments/list.html", {"rows": rows, "can_deploy": ctx.role.at_least(Role.MEMBER), "active_nav": "deployments"}
    )


@org_page(read=Role.MEMBER, write=Role.MEMBER)
@require_http_methods(["GET", "POST"])
def deployment_create(request: HttpRequest, ctx: OrgContext) -> HttpResponse:
    form = DeploymentForm(request.POST or None, organization=ctx.organization, staff=request.user.is_staff)
    estimate = None
    if request.method == "POST" and form.is_valid():
        data = dict(form.cleaned_data)
        name, environment = data.pop("name"), data.pop("environment")
        spec = services.DeploymentSpec(**{**data, "allowed_regions": tuple(data["allowed_regions"])})
        estimate = services.estimated_cost_per_hour(spec, organization_id=ctx.organization.pk) if spec.allowed_regions else None
        if request.POST.get("action") != "estimate":
            try:
                deployment = services.create_deployment(ctx, name=name, spec=spec, environment=environment)
            except ServiceError as error:
                form.add_error(error.field if error.field in form.fields else None, error.message)
            else:
                messages.success(request, f"Created {deployment.name}.")
                return redirect("deployment-detail", org_slug=ctx.organization.slug, deployment_id=deployment.id)
    status = 400 if form.errors else 200
    return render(request, "deployments/create.html", {"form": form, "estimate": estimate, "active_nav": "deployments"}, status=status)


@org_page(read=Role.VIEWER, write=Role.MEMBER)
def deployment_detail(request: HttpRequest, ctx: OrgContext, deployment_id: str) -> HttpResponse:
    deployment = _deployment(ctx, deployment_id)
    revisions = list(selectors.revisions(ctx.organization, deployment))
    context = {
        "deployment": deployment,
        "revision": deployment.current_revision,
        "estimate": services.estimated_cost_per_hour(
            services.DeploymentSpec.of(deployment.revision), organization_id=deployment.organization_id
        ),
        **live.live_parts(ctx.organization, deployment).context(deployment),
        "revisions": revisions,
        "canary_candidates": [rev for rev in revisions if rev.id != deployment.current_revision_id],
        "scale_form": ScaleForm(
            initial={"min_replicas": deployment.current_revision.min_replicas, "max_replicas": deployment.current_revision.max_replicas}
        ),
        "can_change": ctx.role.at_least(Role.MEMBER),
        "can_create_keys": ctx.role.at_least(Role.ADMIN),
        "call": snippets.call_card(ctx.organization, deployment, base_url=request.build_absolute_uri("/v1")),
        "canary_form": CanaryStartForm(initial={"traffic_percent": 10, "window_s": canaries.DEFAULT_WINDOW_S}),
        "staging": environments.staging_of(deployment),
        "staging_form": StagingCreateForm(initial={"name": environments.default_staging_name(deployment), "scale_to_zero": True}),
        "promotion": environments.promotion_preview(deployment),
        "promote_form": PromoteToProductionForm(initial={"window_s": canaries.DEFAULT_WINDOW_S, "keep_production_scaling": True}),
        "active_nav": "deployments",
        "traffic": dashboards.deployment_dashboard(ctx.organization, deployment.id, _traffic_params(request, deployment.id)),
        "traffic_ranges": [(key, dashboards.RANGES[key].label) for key in dashboards.DEPLOYMENT_RANGES],
    }
    return render(request, "deployments/detail.html", context)


def _traffic_params(request: HttpRequest, deployment_id: str) -> dashboards.DashboardParams:
    query = {"range": request.GET.get("range", ""), "deployment": deployment_id}
    return dashboards.DashboardParams.parse(query, default_range="1h", fallback_tz=request.COOKIES.get("sb_tz"))


def _act(request: HttpRequest, ctx: OrgContext, deployment_id: str, action, success: str) -> HttpResponse:  # type: ignore[no-untyped-def]
    deployment = _deployment(ctx, deployment_id)
    try:
        action(deployment)
    except ServiceError as error:
        messages.error(request, error.message)
    else:
        messages.success(request, success)
    return redirect("deployment-detail", org_slug=ctx.organization.slug, deployment_id=deployment.id)


@org_page(write=Role.MEMBER)
@require_POST
def deployment_scale(request: HttpRequest, ctx: OrgContext, deployment_id: str) -> HttpResponse:
    _deployment(ctx, deployment_id)  # a foreign id is 404 before the form is judged
    form = ScaleForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Give whole numbers: min 0 or more, max 1 or more.")
        return redirect("deployment-detail", org_slug=ctx.organization.slug, deployment_id=deployment_id)
    live = not form.cleaned_data["save_only"]
    scaling = {"min_replicas": form.cleaned_data["min_replicas"], "max_replicas": form.cleaned_data["max_replicas"]}
    return _act(
        request,
        ctx,
        deployment_id,
        lambda d: services.update_deployment(ctx, d, live=live, **scaling),
        "Scaling changed in a new, current revision." if live else "Saved as a new revision; promote it under Revisions to go live.",
    )


@org_page(write=Role.MEMBER)
@require_POST
def deployment_promote(request: HttpRequest, ctx: OrgContext, deployment_id: str) -> HttpResponse:
    try:
        number = int(request.POST.get("revision", ""))
    except ValueError:
        number = 0
    return _act(request, ctx, deployment_id, lambda d: services.promote_revision(ctx, d, number), f"Revision {number} promoted.")


@org_page(write=Role.MEMBER)
@require_POST
def deployment_rollback(request: HttpRequest, ctx: OrgContext, deployment_id: str) -> HttpResponse:
    return _act(request, ctx, deployment_id, lambda d: services.rollback(ctx, d), "Rolled back to the previous revision.")


CANARY_ACTIONS = {
    "promote": (canaries.promote_canary, "Canary promoted: its revision is now the current one."),
    "hold": (canaries.hold_canary, "Canary held: the split stays, the automatic verdict waits."),
    "resume": (canaries.resume_canary, "Canary resumed: judged automatically again."),
    "rollback": (canaries.roll_back_canary, "Canary rolled back: all traffic returns to the current revision."),
}


@org_page(write=Role.MEMBER)
@require_POST
def deployment_canary_start(request: HttpRequest, ctx: OrgContext, deployment_id: str) -> HttpResponse:
    _deployment(ctx, deployment_id)  # a foreign id is 404 before the form is judged
    form = CanaryStartForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Choose a saved revision, a share of 1 to 99% and a window of at least one second.")
        return redirect("deployment-detail", org_slug=ctx.organization.slug, deployment_id=deployment_id)
    data = form.cleaned_data
    plan = canaries.CanaryPlan(traffic_percent=data["traffic_percent"], window_s=data["window_s"])
    return _act(
        request,
        ctx,
        deployment_id,
        lambda d: canaries.start_canary(ctx, d, plan=plan, revision=data["revision"]),
        f"Canary started: revision {data['revision']} takes {data['traffic_percent']}% of requests.",
    )


@org_page(write=Role.MEMBER)
@require_POST
def deployment_canary(request: HttpRequest, ctx: OrgContext, deployment_id: str, action: str) -> HttpResponse:
    if action not in CANARY_ACTIONS:
        raise Http404("No such canary action.")
    act, success = CANARY_ACTIONS[action]
    return _act(request, ctx, deployment_id, lambda d: act(ctx, d), success)


@org_page(write=Role.MEMBER)
@require_POST
def deployment_staging_create(request: HttpRequest, ctx: OrgContext, deployment_id: str) -> HttpResponse:
    production = _deployment(ctx, deployment_id)
    form = StagingCreateForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Name it with lowercase letters, digits and dashes (or leave the name empty).")
        return redirect("deployment-detail", org_slug=ctx.organization.slug, deployment_id=deployment_id)
    changes: dict[str, object] | None = {"min_replicas": 0} if form.cleaned_data["scale_to_zero"] else None
    try:
        staging = environments.create_staging(ctx, production=production, name=form.cleaned_data["name"] or None, changes=changes)
    except ServiceError as error:
        messages.error(request, error.message)
        return redirect("deployment-detail", org_slug=ctx.organization.slug, deployment_id=deployment_id)
    messages.success(request, f"Created {staging.name}, staging for {production.name}: try changes there, then promote them.")
    return redirect("deployment-detail", org_slug=ctx.organization.slug, deployment_id=staging.id)


@org_page(write=Role.MEMBER)
@require_POST
def deployment_promote_to_production(request: HttpRequest, ctx: OrgContext, deployment_id: str) -> HttpResponse:
    staging = _deployment(ctx, deployment_id)
    form = PromoteToProductionForm(request.POST)
    if not form.is_valid():
        messages.error(request, "A canary's share is 1 to 99% and its window at least one second; leave the share empty to go at once.")
        return redirect("deployment-detail", org_slug=ctx.organization.slug, deployment_id=deployment_id)
    data = form.cleaned_data
    plan = None
    if data["canary_percent"]:
        plan = canaries.CanaryPlan(traffic_percent=data["canary_percent"], window_s=data["window_s"] or canaries.DEFAULT_WINDOW_S)
    try:
        production, canary = environments.promote_to_production(
            ctx, staging=staging, keep_production_scaling=data["keep_production_scaling"], canary=plan
        )
    except ServiceError as error:
        messages.error(request, error.message)
        return redirect("deployment-detail", org_slug=ctx.organization.slug, deployment_id=deployment_id)
    if canary is not None:
        messages.success(
            request, f"Revision {canary.canary_revision.number} of {production.name} takes {canary.traffic_percent}% of requests."
        )
    else:
        messages.success(request, f"Promoted {staging.name} to {production.name} as its revision {production.revision.number}.")
    return redirect("deployment-detail", org_slug=ctx.organization.slug, deployment_id=production.id)


@org_page(write=Role.MEMBER)
@require_POST
def deployment_delete(request: HttpRequest, ctx: OrgContext, deployment_id: str) -> HttpResponse:
    deployment = _deployment(ctx, deployment_id)
    try:
        services.delete_deployment(ctx, deployment)
    except ServiceError as error:
        messages.error(request, error.message)
        return redirect("deployment-detail", org_slug=ctx.organization.slug, deployment_id=deployment.id)
    messages.success(request, f"{deployment.name} was deleted; its replicas are draining.")
    return redirect("deployments", org_slug=ctx.organization.slug)
