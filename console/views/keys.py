"""API keys in the console. A new secret is shown once, in the answer to the request that
made it; it is never stored anywhere (not in the session either), so a reload shows only
its prefix."""

from __future__ import annotations

from datetime import timedelta

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.http import require_http_methods, require_POST

from console.forms import ApiKeyForm, ApiKeyLimitsForm
from tenancy import selectors, services
from tenancy.context import OrgContext
from tenancy.decorators import org_page
from tenancy.errors import ServiceError
from tenancy.models import Role


def _page(request: HttpRequest, ctx: OrgContext, form: ApiKeyForm, new_secret: dict[str, str] | None = None) -> HttpResponse:
    context = {
        "form": form,
        "keys": selectors.api_keys(ctx.organization).select_related("created_by"),
        "new_secret": new_secret,
        "can_manage": ctx.role.at_least(Role.ADMIN),
        "sees_money": ctx.role.sees_money,
        "active_nav": "keys",
    }
    response = render(request, "console/api_keys.html", context, status=400 if form.errors else 200)
    response["Cache-Control"] = "no-store"  # the one page that ever holds a secret is never cached
    return response


def _shown_once(issued: services.IssuedKey, headline: str) -> dict[str, str]:
    return {"id": issued.api_key.id, "key": issued.plaintext, "headline": headline}


@org_page(read=Role.VIEWER, write=Role.ADMIN)
@require_http_methods(["GET", "POST"])
def api_keys(request: HttpRequest, ctx: OrgContext) -> HttpResponse:
    form = ApiKeyForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        days = form.cleaned_data["expires_in_days"]
        try:
            issued = services.create_api_key(
                ctx,
                name=form.cleaned_data["name"],
                scopes=form.cleaned_data["scopes"],
                expires_at=timezone.now() + timedelta(days=days) if days else None,
                allowed_models=form.models(),
                monthly_budget=form.cleaned_data["monthly_budget"],
            )
        except ServiceError as error:
            form.add_error(error.field, error.message)
        else:
            return _page(request, ctx, ApiKeyForm(), _shown_once(issued, f"Key “{issued.api_key.name}” created."))
    return _page(request, ctx, form)


@org_page(write=Role.ADMIN)
@require_POST
def revoke_api_key(request: HttpRequest, ctx: OrgContext, key_id: str) -> HttpResponse:
    key = get_object_or_404(selectors.api_keys(ctx.organization), pk=key_id)
    try:
        services.revoke_api_key(ctx, key)
    except ServiceError as error:
        messages.error(request, error.message)
    else:
        messages.success(request, f"Key “{key.name}” revoked. Requests using it now get 401.")
    return redirect("keys", org_slug=ctx.organization.slug)


@org_page(write=Role.ADMIN)
@require_POST
def rotate_api_key(request: HttpRequest, ctx: OrgContext, key_id: str) -> HttpResponse:
    key = get_object_or_404(selectors.api_keys(ctx.organization), pk=key_id)
    try:
        issued = services.rotate_api_key(ctx, key)
    except ServiceError as error:
        messages.error(request, error.message)
    else:
        until = timezone.localtime(key.expires_at).strftime("%Y-%m-%d %H:%M %Z")
        return _page(request, ctx, ApiKeyForm(), _shown_once(issued, f"Key “{key.name}” rotated. The old key keeps working until {until}."))
    return redirect("keys", org_slug=ctx.organization.slug)


@org_page(read=Role.ADMIN, write=Role.ADMIN)
@require_http_methods(["GET", "POST"])
def api_key_limits(request: HttpRequest, ctx: OrgContext, key_id: str) -> HttpResponse:
    """Change which models a key may call and its monthly budget; gateways apply both
    within seconds. The budget counts the key's month so far, rotations included."""
    key = get_object_or_404(selectors.api_keys(ctx.organization), pk=key_id)
    initial = {"allowed_models": ", ".join(key.allowed_models), "monthly_budget": key.monthly_budget}
    form = ApiKeyLimitsForm(request.POST or None, initial=initial)
    if request.method == "POST" and form.is_valid():
        try:
            if form.models() != list(key.allowed_models):
                key = services.set_allowed_models(ctx, key, form.models())
            if form.cleaned_data["monthly_budget"] != key.monthly_budget:
                key = services.set_key_budget(ctx, key, form.cleaned_data["monthly_budget"])
        except ServiceError as error:
            form.add_error(error.field, error.message)
        else:
            messages.success(request, f"Key “{key.name}” updated.")
            return redirect("keys", org_slug=ctx.organization.slug)
    context = {"form": form, "key": key, "active_nav": "keys"}
    return render(request, "console/api_key_limits.html", context, status=400 if form.errors else 200)
