"""Members and invitations in the console."""

from __future__ import annotations

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from console.forms import InvitationForm, RoleForm
from tenancy import selectors, services
from tenancy.context import OrgContext
from tenancy.decorators import org_page
from tenancy.errors import ServiceError
from tenancy.models import Role


def _sole_owner_id(ctx: OrgContext) -> str | None:
    owners = list(selectors.members(ctx.organization).filter(role=Role.OWNER).values_list("id", flat=True)[:2])
    return owners[0] if len(owners) == 1 else None


@org_page(read=Role.VIEWER, write=Role.ADMIN)
@require_http_methods(["GET", "POST"])
def members(request: HttpRequest, ctx: OrgContext) -> HttpResponse:
    form = InvitationForm(request.POST or None)
    new_invitation_url = None
    if request.method == "POST" and form.is_valid():
        try:
            issued = services.create_invitation(ctx, role=form.cleaned_data["role"], email=form.cleaned_data["email"])
        except ServiceError as error:
            form.add_error(error.field, error.message)
        else:
            new_invitation_url = issued.url
            form = InvitationForm()
    context = {
        "form": form,
        "members": selectors.members(ctx.organization),
        # The last owner cannot be removed (tenancy.services refuses it): no button offers it.
        "sole_owner_id": _sole_owner_id(ctx),
        "invitations": selectors.pending_invitations(ctx.organization),
        "role_choices": Role.choices,
        "new_invitation_url": new_invitation_url,
        "can_manage": ctx.role.at_least(Role.ADMIN),
        "active_nav": "members",
    }
    response = render(request, "console/members.html", context, status=400 if form.errors else 200)
    response["Cache-Control"] = "no-store"
    return response


@org_page(write=Role.ADMIN)
@require_POST
def change_role(request: HttpRequest, ctx: OrgContext, member_id: str) -> HttpResponse:
    membership = get_object_or_404(selectors.members(ctx.organization), pk=member_id)
    form = RoleForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Pick one of the listed roles.")
    else:
        try:
            services.change_member_role(ctx, membership, form.cleaned_data["role"])
        except ServiceError as error:
            messages.error(request, error.message)
        else:
            messages.success(request, f"{membership.user.email} is now {membership.get_role_display().lower()}.")
    return redirect("members", org_slug=ctx.organization.slug)


@org_page(write=Role.ADMIN)
@require_POST
def remove_member(request: HttpRequest, ctx: OrgContext, member_id: str) -> HttpResponse:
    membership = get_object_or_404(selectors.members(ctx.organization), pk=member_id)
    try:
        services.remove_member(ctx, membership)
    except ServiceError as error:
        messages.error(request, error.message)
    else:
        messages.success(request, f"{membership.user.email} was removed.")
    return redirect("members", org_slug=ctx.organization.slug)


@org_page(write=Role.ADMIN)
@require_POST
def revoke_invitation(request: HttpRequest, ctx: OrgContext, invitation_id: str) -> HttpResponse:
    invitation = get_object_or_404(selectors.invitations(ctx.organization), pk=invitation_id)
    try:
        services.revoke_invitation(ctx, invitation)
    except ServiceError as error:
        messages.error(request, error.message)
    else:
        messages.success(request, "Invitation revoked.")
    return redirect("members", org_slug=ctx.organization.slug)
