"""The organization's registered models in the console: the list (size, which deployments
use each, delete), recent uploads that did not finish, the upload form and the form that
registers a model by Hugging Face repo id. The browser uploads the chosen directory itself,
through the management API's chunked upload (deployments/static/deployments/model-upload.js),
with the console session."""

from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from deployments import registry, uploads
from deployments.forms import HubModelForm
from deployments.models import CatalogModel, ModelUpload
from tenancy.context import OrgContext
from tenancy.decorators import org_page
from tenancy.errors import ServiceError
from tenancy.models import Role

# Unfinished uploads the page lists: enough to see why the last tries failed.
RECENT_UPLOADS = 10


@org_page(read=Role.VIEWER, write=Role.MEMBER)
@require_http_methods(["GET", "POST"])
def model_list(request: HttpRequest, ctx: OrgContext) -> HttpResponse:
    hub_form = HubModelForm(request.POST or None)
    if request.method == "POST" and hub_form.is_valid():
        try:
            model = registry.register_from_hub(ctx, **hub_form.cleaned_data)
        except ServiceError as error:
            hub_form.add_error(error.field if error.field in hub_form.fields else None, error.message)
        else:
            messages.success(request, f"{model.name} is registered; each replica fetches it from the hub when it starts.")
            return redirect("models", org_slug=ctx.organization.slug)
    context = {
        "hub_form": hub_form,
        "rows": registry.registered_model_rows(ctx.organization),
        "unfinished": uploads.uploads(ctx.organization).exclude(status=ModelUpload.Status.COMPLETE)[:RECENT_UPLOADS],
        "can_manage": ctx.role.at_least(Role.MEMBER),
        "tasks": CatalogModel.Task.choices,
        "chunk_bytes": settings.MAX_REQUEST_BODY_BYTES,
        "max_files": settings.MODEL_UPLOAD_MAX_FILES,
        "active_nav": "models",
    }
    return render(request, "deployments/models.html", context, status=400 if hub_form.errors else 200)


@org_page(read=Role.MEMBER, write=Role.MEMBER)
@require_POST
def model_delete(request: HttpRequest, ctx: OrgContext, model_id: str) -> HttpResponse:
    model = get_object_or_404(registry.registered_models(ctx.organization), pk=model_id)
    try:
        registry.delete_model(ctx, model)
    except ServiceError as refused:
        messages.error(request, refused.message)
    else:
        messages.success(request, f"{model.name} was deleted, with its files.")
    return redirect("models", org_slug=ctx.organization.slug)
