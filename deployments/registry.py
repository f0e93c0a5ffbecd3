"""Each organization's registered models: the names they may take, registering one from a
checked upload, deleting one no deployment uses, and whether one fits a GPU type."""

from __future__ import annotations

import re
from dataclasses import dataclass

from django.db import transaction
from django.db.models import QuerySet, Sum

from deployments import model_storage
from deployments.model_files import Inspection
from deployments.models import CatalogModel, Deployment, DeploymentRevision, GpuType, ModelUpload, ModelUploadFile, Replica
from modelserver.catalog import CATALOG
from modelserver.hub import HubModel, repo_id_problem, revision_problem
from tenancy import audit
from tenancy.context import OrgContext
from tenancy.errors import Conflict, ServiceError
from tenancy.models import Organization, Role
from tenancy.text import has_control_characters

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
# Until a replica reports its own throughput, the context a registered model gets when its
# config.json names none.
DEFAULT_CONTEXT_LENGTH = 2048
_RUNNING = [Replica.State.PENDING, Replica.State.PROVISIONING, Replica.State.LOADING, Replica.State.READY, Replica.State.DRAINING]


class DoesNotFit(ServiceError):
    status_code = 422
    code = "model_too_large"


def registered_models(org: Organization) -> QuerySet[CatalogModel]:
    """The organization's own models (never a built-in one, never another tenant's)."""
    return CatalogModel.objects.filter(organization=org)


def check_name(org: Organization, name: str) -> None:
    if not NAME_PATTERN.match(name):
        raise ServiceError("Use 1-100 letters, digits, dots, dashes and underscores, starting with a letter or digit.", field="name")
    if name in CATALOG:
        raise Conflict(f"{name!r} is a built-in model's name; choose another.", field="name")
    if registered_models(org).filter(name=name).exists():
        raise Conflict(f"Your organization already has a model named {name!r}; delete it or choose another name.", field="name")


def model_snapshot(model: CatalogModel) -> dict[str, object]:
    return {
        "id": model.id,
        "name": model.name,
        "task": model.task,
        "source": model.source,
        "revision": model.revision,
        "context_length": model.context_length,
        "memory_gb": model.memory_gb,
        "license": model.license,
    }


def register(ctx: OrgContext, *, upload: ModelUpload, inspection: Inspection) -> CatalogModel:
    """The registered model for a checked upload; its files stay where they arrived."""
    model = CatalogModel.objects.create(
        organization=ctx.organization,
        name=upload.name,
        task=inspection.task,
        source_kind=CatalogModel.SourceKind.UPLOAD,
        source=model_storage.upload_prefix(organization_id=ctx.organization.pk, upload_id=upload.pk),
        weights_format=CatalogModel.WeightsFormat.GGUF if inspection.gguf else CatalogModel.WeightsFormat.SAFETENSORS,
        context_length=inspection.context_length or DEFAULT_CONTEXT_LENGTH,
        embedding_dimensions=inspection.embedding_dimensions,
        runtime=CatalogModel.Runtime.BUILTIN,
        memory_gb=inspection.memory_gb,
        license=upload.license or inspection.license,
        description=upload.description,
    )
    audit.record(ctx, "model.registered", target_type="model", target_id=model.id, after=model_snapshot(model))
    return model


def register_from_hub(
    ctx: OrgContext,
    *,
    name: str,
    repo_id: str,
    revision: str,
    task: str,
    memory_gb: int = 1,
    context_length: int = DEFAULT_CONTEXT_LENGTH,
    license: str = "",
    description: str = "",
) -> CatalogModel:
    """A model named by its Hugging Face repo and revision. Nothing is fetched here: each
    replica fetches the files when it starts (modelserver.hub), so what the files would say
    (the task, the memory a replica needs, the context) comes from the tenant."""
    ctx.require_role(Role.MEMBER, "register models")
    check_name(ctx.organization, name)
    for field, problem in (("repo_id", repo_id_problem(repo_id)), ("revision", revision_problem(revision))):
        if problem:
            raise ServiceError(problem, field=field)
    if task not in CatalogModel.Task.values:
        raise ServiceError(
            f"Say what the model serves: task {' or '.join(CatalogModel.Task.values)} (it cannot be read from files not fetched yet).",
            field="task",
        )
    for field, value in (("license", license), ("description", description)):
        if has_control_characters(value):
            raise ServiceError(f"The {field} cannot contain line breaks, tabs or other control characters.", field=field)
    for field, number in (("memory_gb", memory_gb), ("context_length", context_length)):
        if number < 1:
            raise ServiceError(f"{field} must be at least 1.", field=field)
    model = CatalogModel.objects.create(
        organization=ctx.organization,
        name=name,
        task=task,
        source_kind=CatalogModel.SourceKind.HUB,
        source=repo_id,
        revision=revision,
        weights_format=CatalogModel.WeightsFormat.SAFETENSORS,
        context_length=context_length,
        runtime=CatalogModel.Runtime.BUILTIN,
        memory_gb=memory_gb,
        license=license,
        description=description,
    )
    audit.record(ctx, "model.registered", target_type="model", target_id=model.id, after=model_snapshot(model))
    return model


def replica_artifact(model: CatalogModel) -> str:
    """What a replica of a `hub` model is told to load: hf://OWNER/NAME@REVISION."""
    return HubModel(repo_id=model.source, revision=model.revision).uri


def deployments_using(org: Organization, name: str) -> list[Deployment]:
    """Live deployments whose current revision serves the model, or that still run a
    replica of an earlier revision that does (a rollout in progress)."""
    current = set(Deployment.objects.for_org(org).filter(deleted_at=None, current_revision__model=name).values_list("pk", flat=True))
    revisions = DeploymentRevision.objects.for_org(org).filter(model=name)
    running = set(Replica.objects.for_org(org).filter(revision__in=revisions, state__in=_RUNNING).values_list("deployment_id", flat=True))
    return list(Deployment.objects.for_org(org).filter(pk__in=current | running).order_by("name"))


@dataclass(frozen=True)
class RegisteredModelRow:
    """A registered model as the console lists it."""

    model: CatalogModel
    size_bytes: int | None  # its files' total; None when none were uploaded here
    used_by: list[Deployment]


def registered_model_rows(org: Organization) -> list[RegisteredModelRow]:
    models = list(registered_models(org))
    sizes = dict(
        ModelUploadFile.objects.for_org(org)
        .filter(upload__model__in=models)
        .values_list("upload__model")
        .annotate(total=Sum("size"))
        .values_list("upload__model", "total")
    )
    return [RegisteredModelRow(model=model, size_bytes=sizes.get(model.pk), used_by=deployments_using(org, model.name)) for model in models]


@transaction.atomic
def delete_model(ctx: OrgContext, model: CatalogModel) -> None:
    """Refused while a deployment uses the model; otherwise its row and its files go."""
    ctx.require_role(Role.MEMBER, "delete models")
    users = deployments_using(ctx.organization, model.name)
    if users:
        names = ", ".join(f"{deployment.name} ({deployment.pk})" for deployment in users)
        raise Conflict(f"Deployment(s) {names} use {model.name}; delete them or move them to another model first.")
    before = model_snapshot(model)
    source = model.source
    uploaded = model.source_kind == CatalogModel.SourceKind.UPLOAD
    model.delete()
    audit.record(ctx, "model.deleted", target_type="model", target_id=before["id"], before=before)  # type: ignore[arg-type]
    if uploaded:  # a hub model's source is a repo id, not files of ours
        transaction.on_commit(lambda: model_storage.delete_tree(source))


def fits(model: CatalogModel, gpu_type: GpuType) -> None:
    """For the deploy path: refuses a model whose replica needs more memory than one GPU of
    the type has. CPU replicas (no GPU memory) use the host's memory and are not checked."""
    if gpu_type.memory_gb and model.memory_gb > gpu_type.memory_gb:
        raise DoesNotFit(
            f"{model.name} needs about {model.memory_gb} GB (weights, cache and activations); a {gpu_type.code} has "
            f"{gpu_type.memory_gb} GB. Choose a GPU type with at least {model.memory_gb} GB.",
            field="gpu_type",
        )
