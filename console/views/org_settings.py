from __future__ import annotations

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from console.forms import DeleteOrganizationForm, OrganizationForm
from tenancy import services
from tenancy.context import OrgContext
from tenancy.decorators import org_page
from tenancy.errors import ServiceError
from tenancy.models import Role


@org_page(read=Role.VIEWER, write=Role.ADMIN)
@require_http_methods(["GET", "POST"])
def org_settings(request: HttpRequest, ctx: OrgContext) -> HttpResponse:
    form = OrganizationForm(request.POST or None, initial={"name": ctx.organization.name})
    if request.method == "POST" and form.is_valid():
        try:
            services.rename_organization(ctx, form.cleaned_data["name"])
        except ServiceError as error:
            form.add_error(error.field, error.message)
        else:
            messages.success(request, "Organization renamed.")
            return redirect("settings", org_slug=ctx.organization.slug)
    context = {
        "form": form,
        "delete_form": DeleteOrganizationForm(org_name=ctx.organization.name),
        "can_edit": ctx.role.at_least(Role.ADMIN),
        "is_owner": ctx.role == Role.OWNER,
        "active_nav": "settings",
    }
    return render(request, "console/settings.html", context, status=400 if form.errors else 200)


@org_page(write=Role.OWNER)
@require_POST
def delete_organization(request: HttpRequest, ctx: OrgContext) -> HttpResponse:
    form = DeleteOrganizationForm(request.POST, org_name=ctx.organization.name)
    if not form.is_valid():
        messages.error(request, "Type the organization's exact name to delete it.")
        return redirect("settings", org_slug=ctx.organization.slug)
    name = ctx.organization.name
    services.delete_organization(ctx)
    messages.success(request, f"{name} was deleted.")
    return redirect("home")
