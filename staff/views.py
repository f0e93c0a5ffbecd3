"""The Admin section, for platform staff only. Everyone else gets 404 on every page and
every method: the section does not exist for them.

Pages: tenants (plan, standing, this month's spend and usage), a tenant (standing, plan,
credits, its own prices, its audit trail), its quotas, clusters (add, cordon, drain, down,
up), platform usage (requests, tokens, revenue, GPU utilisation), the price book and the
staff audit log. Each view parses a form and makes one call into a service; the services
audit every change (tenancy.staff_audit).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC
from decimal import Decimal
from functools import wraps
from typing import Any

from django.contrib import messages
from django.core.paginator import Paginator
from django.db.models import Count, Q
from django.forms import Form
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt, csrf_protect
from django.views.decorators.http import require_http_methods, require_POST, require_safe

from billing import invoices, platform_stats, staff_ops
from billing.models import CreditGrant
from billing.staff_ops import next_whole_hour
from deployments import cluster_ops, quotas, selectors
from deployments.models import Cluster
from deployments.services import DeploymentSpec, quota_for
from staff.forms import (
    PRICE_FORMS,
    ClusterActionForm,
    ClusterForm,
    CreditForm,
    PlanForm,
    QuotaForm,
    StatusForm,
)
from staff.templatetags.staff_format import plain
from tenancy import selectors as tenancy_selectors
from tenancy.errors import ServiceError
from tenancy.models import AuditEntry, Organization, StaffAuditEntry
from tenancy.staff_audit import StaffContext, set_organization_status

TENANTS_PER_PAGE = 50


def staff_page(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """404 for anyone not staff, before anything else, CSRF included: a non-staff POST
    must not learn from a 403 that the page exists. Staff requests get the usual CSRF check."""
    protected = csrf_protect(view)

    @csrf_exempt
    @wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        user = request.user
        if not (user.is_authenticated and user.is_staff and user.is_active):
            raise Http404("No such page.")
        return protected(request, *args, **kwargs)

    return wrapper


def _organization(org_id: str) -> Organization:
    return get_object_or_404(Organization, pk=org_id)


def _apply_error(form: Form, error: ServiceError) -> None:
    form.add_error(error.field if error.field in form.fields else None, error.message)


# ---------------------------------------------------------------------------------------
# Tenants


@staff_page
@require_safe
def tenants(request: HttpRequest) -> HttpResponse:
    query = request.GET.get("q", "").strip()[:100]
    organizations = Organization.objects.annotate(member_count=Count("memberships", distinct=True)).order_by("-created_at", "id")
    if query:
        organizations = organizations.filter(Q(name__icontains=query) | Q(slug__icontains=query) | Q(pk=query))
    page = Paginator(organizations, TENANTS_PER_PAGE).get_page(request.GET.get("page"))
    rows = platform_stats.tenant_rows(list(page.object_list))
    return render(request, "staff/tenants.html", {"page": page, "rows": rows, "query": query, "active_nav": "staff-tenants"})


def _tenant_context(org: Organization, **forms: Form) -> dict[str, Any]:
    now = timezone.now()
    account = invoices.account_for(org)
    return {
        "org": org,
        "row": platform_stats.tenant_rows([org], now)[0],
        "account": account,
        "quota": quota_for(org),
        "limit": invoices.spend_limit(org, now=now),
        "members": tenancy_selectors.members(org).order_by("role", "user__email"),
        "grants": [(grant, invoices.remaining_credit(grant)) for grant in CreditGrant.objects.for_org(org).order_by("-granted_at")],
        "overrides": staff_ops.price_lines(overrides=True, organization=org, now=now),
        "entries": AuditEntry.objects.for_org(org)[:20],
        "status_form": forms.get("status_form")
        or StatusForm(prefix="status", initial={"status": org.status}),  # what it is now; staff pick the change
        "plan_form": forms.get("plan_form")
        or PlanForm(prefix="plan", initial={"plan": account.plan, "committed_monthly_minimum": account.committed_monthly_minimum}),
        "credit_form": forms.get("credit_form") or CreditForm(prefix="credit"),
        "price_forms": _price_forms(forms),
        "active_nav": "staff-tenants",
    }


def _price_forms(forms: dict[str, Form]) -> dict[str, Form]:
    start = next_whole_hour().astimezone(UTC).replace(tzinfo=None)
    return {
        kind: forms.get(f"{kind}_form") or form_class(prefix=kind, initial={"effective_from": start})
        for kind, form_class in PRICE_FORMS.items()
    }


@staff_page
@require_safe
def tenant_detail(request: HttpRequest, org_id: str) -> HttpResponse:
    return render(request, "staff/tenant.html", _tenant_context(_organization(org_id)))


def _tenant_form_post(request: HttpRequest, org_id: str, form_key: str, form: Form, act: Callable[[Organization], str]) -> HttpResponse:
    org = _organization(org_id)
    if form.is_valid():
        try:
            message = act(org)
        except ServiceError as error:
            _apply_error(form, error)
        else:
            messages.success(request, message)
            return redirect("staff-tenant", org_id=org.pk)
    return render(request, "staff/tenant.html", _tenant_context(org, **{form_key: form}), status=400)


@staff_page
@require_POST
def tenant_status(request: HttpRequest, org_id: str) -> HttpResponse:
    form = StatusForm(request.POST, prefix="status")

    def act(org: Organization) -> str:
        updated = set_organization_status(StaffContext.of(request), org, form.cleaned_data["status"], form.cleaned_data["reason"])
        return f"{updated.name} is now {updated.get_status_display().lower()}."

    return _tenant_form_post(request, org_id, "status_form", form, act)


@staff_page
@require_POST
def tenant_plan(request: HttpRequest, org_id: str) -> HttpResponse:
    form = PlanForm(request.POST, prefix="plan")

    def act(org: Organization) -> str:
        account = staff_ops.set_plan(
            StaffContext.of(request),
            org,
            plan=form.cleaned_data["plan"],
            committed_monthly_minimum=form.cleaned_data["committed_monthly_minimum"],
        )
        return f"{org.name} is on the {account.get_plan_display()} plan."

    return _tenant_form_post(request, org_id, "plan_form", form, act)


@staff_page
@require_POST
def tenant_credit(request: HttpRequest, org_id: str) -> HttpResponse:
    form = CreditForm(request.POST, prefix="credit")

    def act(org: Organization) -> str:
        data = form.cleaned_data
        grant = staff_ops.grant_credit(
            StaffContext.of(request), org, amount=data["amount"], reason=data["reason"], expires_at=data["expires_at"]
        )
        return f"${grant.amount} of credit granted to {org.name}."

    return _tenant_form_post(request, org_id, "credit_form", form, act)


@staff_page
@require_POST
def tenant_price(request: HttpRequest, org_id: str, kind: str) -> HttpResponse:
    form = PRICE_FORMS[kind](request.POST, prefix=kind)
    return _tenant_form_post(request, org_id, f"{kind}_form", form, lambda org: _add_price(request, kind, form, org))


def _add_price(request: HttpRequest, kind: str, form: Form, org: Organization | None) -> str:
    staff, data = StaffContext.of(request), dict(form.cleaned_data)
    if kind == "model":
        row: Any = staff_ops.add_model_price(staff, organization=org, **data)
        what = f"{row.model}: ${plain(row.input_price_per_mtok)} / ${plain(row.output_price_per_mtok)} per 1M tokens"
    elif kind == "gpu":
        row = staff_ops.add_gpu_price(staff, organization=org, **data)
        what = f"{row.gpu_type_id}: ${plain(row.price_per_hour)} per GPU-hour"
    else:
        row = staff_ops.add_markup(staff, organization=org, **data)
        what = f"provider markup {plain(row.percent)}%"
    whose = f"{org.name}'s price book" if org else "the platform price book"
    return f"Added to {whose}: {what}, from {row.effective_from:%Y-%m-%d %H:%M} UTC."


@staff_page
@require_http_methods(["GET", "HEAD", "POST"])
def tenant_quota(request: HttpRequest, org_id: str) -> HttpResponse:
    org = _organization(org_id)
    quota = quota_for(org)
    form = QuotaForm(request.POST if request.method == "POST" else None, initial=QuotaForm.initial_for(quota))
    if request.method == "POST" and form.is_valid():
        try:
            quotas.update_quota(StaffContext.of(request), org, **form.changes())
        except ServiceError as error:
            _apply_error(form, error)
        else:
            messages.success(
                request,
                f"Quotas of {org.name} saved. Deploys and scaling check them at once; the gateway applies its limits within a few seconds.",
            )
            return redirect("staff-tenant-quota", org_id=org.pk)
    specs = [
        DeploymentSpec.of(d.current_revision)
        for d in selectors.live_deployments(org).select_related("current_revision")
        if d.current_revision is not None
    ]
    gpus_in_use: dict[str, int] = {}
    for spec in specs:
        gpus_in_use[spec.gpu_type] = gpus_in_use.get(spec.gpu_type, 0) + spec.max_replicas
    in_use = {"replicas": sum(spec.max_replicas for spec in specs), "gpus": gpus_in_use}
    gpu_rows = [(field, gpus_in_use.get(form.gpu_codes[field.name], 0)) for field in form.gpu_fields()]
    context = {
        "org": org,
        "form": form,
        "quota": quota,
        "saved": quota.pk is not None,
        "in_use": in_use,
        "gpu_rows": gpu_rows,
        "active_nav": "staff-tenants",
    }
    return render(request, "staff/quota.html", context, status=400 if form.errors else 200)


# ---------------------------------------------------------------------------------------
# Clusters


def _clusters_context(form: ClusterForm | None = None) -> dict[str, Any]:
    return {
        "rows": platform_stats.cluster_rows(),
        "form": form or ClusterForm(initial={"driver": "local", "status": "active"}),
        "active_nav": "staff-clusters",
    }


@staff_page
@require_http_methods(["GET", "HEAD", "POST"])
def clusters(request: HttpRequest) -> HttpResponse:
    form = ClusterForm(request.POST if request.method == "POST" else None)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            cluster = cluster_ops.add_cluster(
                StaffContext.of(request),
                name=data["name"], provider=data["provider"], region=data["region"], driver=data["driver"], agent_url=data["agent_url"],
                simulated=data["simulated"], status=data["status"],
                inventory=[cluster_ops.InventoryRow(code, count) for code, count in form.inventory()],
            )  # fmt: skip
        except ServiceError as error:
            _apply_error(form, error)
        else:
            messages.success(request, f"Cluster {cluster.name} added in {cluster.region} ({cluster.get_status_display().lower()}).")
            return redirect("staff-clusters")
    return render(
        request,
        "staff/clusters.html",
        _clusters_context(form if request.method == "POST" else None),
        status=400 if form.errors else 200,
    )


CLUSTER_DONE = {
    "cordon": "{name} is cordoned: it takes no new replicas; those on it keep running.",
    "drain": "{name} is draining: {moved} replica(s) move to other clusters as their replacements become ready.",
    "down": "{name} is down: the gateway stops routing to it and {moved} replica(s) are being replaced elsewhere.",
    "up": "{name} is active again: it takes new replicas.",
}


@staff_page
@require_POST
def cluster_action(request: HttpRequest, cluster_name: str, action: str) -> HttpResponse:
    cluster = get_object_or_404(Cluster, pk=cluster_name)
    form = ClusterActionForm(request.POST)
    reason = form.cleaned_data["reason"] if form.is_valid() else ""
    try:
        change = cluster_ops.change_status(StaffContext.of(request), cluster, action, reason)
    except ServiceError as error:
        messages.error(request, error.message)
    else:
        messages.success(request, CLUSTER_DONE[action].format(name=cluster.name, moved=change.replicas_affected))
    return redirect("staff-clusters")


# ---------------------------------------------------------------------------------------
# Platform usage, price book, staff audit log


@staff_page
@require_safe
def usage(request: HttpRequest) -> HttpResponse:
    days = platform_stats.usage_per_day()
    totals = {
        "requests": sum(day.requests for day in days),
        "errors": sum(day.errors for day in days),
        "input_tokens": sum(day.input_tokens for day in days),
        "output_tokens": sum(day.output_tokens for day in days),
        "cost": sum((day.cost for day in days), start=Decimal(0)),
    }
    peak = max((day.requests for day in days), default=0)
    context = {
        "days": [(day, 100 * day.requests / peak if peak else 0) for day in reversed(days)],
        "totals": totals,
        "revenue": platform_stats.revenue(),
        "gpus": platform_stats.gpu_utilisation(),
        "tenants": Organization.objects.count(),
        "active_nav": "staff-usage",
    }
    return render(request, "staff/usage.html", context)


def _prices_context(forms: dict[str, Form] | None = None) -> dict[str, Any]:
    now = timezone.now()
    return {
        "platform": staff_ops.price_lines(overrides=False, now=now),
        "overrides": staff_ops.price_lines(overrides=True, now=now),
        "price_forms": _price_forms(forms or {}),
        "now": now,
        "active_nav": "staff-prices",
    }


@staff_page
@require_safe
def prices(request: HttpRequest) -> HttpResponse:
    return render(request, "staff/prices.html", _prices_context())


@staff_page
@require_POST
def price_add(request: HttpRequest, kind: str) -> HttpResponse:
    form = PRICE_FORMS[kind](request.POST, prefix=kind)
    if form.is_valid():
        try:
            message = _add_price(request, kind, form, None)
        except ServiceError as error:
            _apply_error(form, error)
        else:
            messages.success(request, message)
            return redirect("staff-prices")
    return render(request, "staff/prices.html", _prices_context({f"{kind}_form": form}), status=400)


@staff_page
@require_POST
def price_cancel(request: HttpRequest, kind: str, version_id: int) -> HttpResponse:
    try:
        staff_ops.cancel_upcoming(StaffContext.of(request), kind, version_id)
    except ServiceError as error:
        messages.error(request, error.message)
    else:
        messages.success(request, "The upcoming version was cancelled; the one before it stays in force.")
    back = request.POST.get("next", "")
    if back.startswith("/staff/") and "//" not in back:
        return redirect(back)
    return redirect("staff-prices")


@staff_page
@require_safe
def audit_log(request: HttpRequest) -> HttpResponse:
    entries = StaffAuditEntry.objects.select_related("actor_user").all()
    page = Paginator(entries, 50).get_page(request.GET.get("page"))
    return render(request, "staff/audit.html", {"page": page, "active_nav": "staff-audit"})
