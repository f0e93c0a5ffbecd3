"""Deployments: create, change (each change an immutable revision), promote, roll back,
delete, with quota checks and one audit entry each."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, replace
from decimal import Decimal
from typing import Any

from django.db import transaction
from django.db.models import Max
from django.utils import timezone

from broadcast.groups import deployment_group
from broadcast.publish import publish_after_commit
from deployments import holds, model_catalog, model_storage, prices, registry, selectors
from deployments.models import CatalogModel, Deployment, DeploymentRevision, GpuType, Quota
from tenancy import audit
from tenancy.context import OrgContext
from tenancy.errors import Conflict, ServiceError
from tenancy.models import Organization, Role

NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9-]{0,59}$")
MAX_REPLICAS_PER_DEPLOYMENT = 100
# What an organization may use before staff set its quota.
DEFAULT_MAX_REPLICAS = 4
DEFAULT_GPU_QUOTA = {"CPU": 8, "T4": 2, "L4": 2, "A10G": 2}


class QuotaExceeded(ServiceError):
    status_code = 403
    code = "quota_exceeded"


@dataclass(frozen=True)
class DeploymentSpec:
    model: str
    gpu_type: str
    allowed_regions: tuple[str, ...]
    min_replicas: int = 1
    max_replicas: int = 1
    target_concurrency: int = 4
    scale_down_delay_s: int = 60
    idle_timeout_s: int = 300

    @classmethod
    def of(cls, revision: DeploymentRevision) -> DeploymentSpec:
        return cls(
            model=revision.model,
            gpu_type=revision.gpu_type_id,
            allowed_regions=tuple(revision.allowed_regions),
            min_replicas=revision.min_replicas,
            max_replicas=revision.max_replicas,
            target_concurrency=revision.target_concurrency,
            scale_down_delay_s=revision.scale_down_delay_s,
            idle_timeout_s=revision.idle_timeout_s,
        )


def quota_for(org: Organization) -> Quota:
    quota = Quota.objects.for_org(org).first()
    return quota or Quota(organization=org, max_replicas=DEFAULT_MAX_REPLICAS, gpus=dict(DEFAULT_GPU_QUOTA))


def validate_spec(org: Organization, spec: DeploymentSpec) -> None:
    """The model is one the organization can deploy (its own first, then a built-in one;
    another tenant's name is unknown) and fits one GPU of the type."""
    model = model_catalog.entry(org, spec.model)
    if model is None:
        names = model_catalog.offered_to(org, staff=False).values_list("name", flat=True)
        raise ServiceError(f"Unknown model {spec.model!r}; choose one of {', '.join(sorted(names))}.", field="model")
    gpu_type = GpuType.objects.filter(code=spec.gpu_type).first()
    if gpu_type is None:
        codes = ", ".join(GpuType.objects.values_list("code", flat=True))
        raise ServiceError(f"Unknown GPU type {spec.gpu_type!r}; choose one of {codes}.", field="gpu_type")
    registry.fits(model, gpu_type)
    if model.source_kind == CatalogModel.SourceKind.UPLOAD and model_storage.local_directory(model.source) is None:
        raise ServiceError(
            f"{model.name} is in object storage, and replicas load registered models only from the filesystem model storage so far.",
            field="model",
        )
    if not spec.allowed_regions:
        raise ServiceError("Allow at least one region.", field="allowed_regions")
    known = selectors.region_names()
    unknown = [region for region in spec.allowed_regions if region not in known]
    if unknown:
        raise ServiceError(
            f"Unknown region(s) {', '.join(unknown)}; available: {', '.join(sorted(known)) or 'none'}.", field="allowed_regions"
        )
    if spec.max_replicas < 1 or spec.max_replicas > MAX_REPLICAS_PER_DEPLOYMENT:
        raise ServiceError(f"max_replicas must be between 1 and {MAX_REPLICAS_PER_DEPLOYMENT}.", field="max_replicas")
    if spec.min_replicas > spec.max_replicas:
        raise ServiceError(f"min_replicas ({spec.min_replicas}) cannot exceed max_replicas ({spec.max_replicas}).", field="min_replicas")
    if spec.target_concurrency < 1:
        raise ServiceError("target_concurrency must be at least 1.", field="target_concurrency")


def check_quota(
    org: Organization, spec: DeploymentSpec, *, replacing: Deployment | None = None, alongside: DeploymentSpec | None = None
) -> None:
    """Each deployment counts at its maximum, and a running canary's revision at its own
    beside it: a deployment that could scale past the quota is refused when it is created
    or changed, not when it tries to scale. `alongside`: a revision `spec` runs beside (a
    canary starting). Callers run inside a transaction; the organization's row lock makes
    parallel changes queue."""
    Organization.objects.select_for_update().filter(pk=org.pk).first()
    quota = quota_for(org)
    others = [
        DeploymentSpec.of(deployment.current_revision)
        for deployment in selectors.live_deployments(org).select_related("current_revision")
        if deployment.current_revision is not None and (replacing is None or deployment.pk != replacing.pk)
    ]
    others += [
        DeploymentSpec.of(canary.canary_revision)
        for canary in selectors.active_canaries(org).select_related("canary_revision")
        if replacing is None or canary.deployment_id != replacing.pk
    ]
    if alongside is not None:
        others.append(alongside)
    replicas = sum(other.max_replicas for other in others) + spec.max_replicas
    if replicas > quota.max_replicas:
        raise QuotaExceeded(
            f"This needs up to {replicas} replicas across your deployments; your organization's replica quota is {quota.max_replicas}. "
            "Lower max_replicas or ask platform staff to raise the quota.",
            field="max_replicas",
        )
    gpus = sum(other.max_replicas for other in others if other.gpu_type == spec.gpu_type) + spec.max_replicas
    limit = quota.gpu_limit(spec.gpu_type)
    if gpus > limit:
        raise QuotaExceeded(
            f"This needs up to {gpus} {spec.gpu_type} GPUs across your deployments; your organization's {spec.gpu_type} quota is {limit}. "
            "Pick another GPU type, lower max_replicas or ask platform staff to raise the quota.",
            field="gpu_type",
        )


def promoted_from(revision: DeploymentRevision) -> dict[str, Any] | None:
    """A production revision promoted from a staging environment: that deployment's name
    and the revision it copies (deployments.environments)."""
    source = revision.promoted_from
    return None if source is None else {"deployment": source.deployment.name, "revision": source.number}


def revision_snapshot(revision: DeploymentRevision) -> dict[str, Any]:
    snapshot = {"revision": revision.number, **asdict(DeploymentSpec.of(revision))}
    if revision.promoted_from_id is not None:
        snapshot["promoted_from"] = promoted_from(revision)
    return snapshot


def deployment_snapshot(deployment: Deployment) -> dict[str, Any]:
    snapshot: dict[str, Any] = {"id": deployment.id, "name": deployment.name, "environment": deployment.environment}
    if deployment.production_id is not None:
        snapshot["production"] = deployment.production_id
    if deployment.current_revision is not None:
        snapshot.update(revision_snapshot(deployment.current_revision))
    return snapshot


def _new_revision(ctx: OrgContext, deployment: Deployment, spec: DeploymentSpec) -> DeploymentRevision:
    latest = (
        DeploymentRevision.objects.for_org(ctx.organization).filter(deployment=deployment).aggregate(latest=Max("number"))["latest"] or 0
    )
    return DeploymentRevision.objects.create(
        organization=ctx.organization,
        deployment=deployment,
        number=latest + 1,
        model=spec.model,
        gpu_type_id=spec.gpu_type,
        allowed_regions=list(spec.allowed_regions),
        min_replicas=spec.min_replicas,
        max_replicas=spec.max_replicas,
        target_concurrency=spec.target_concurrency,
        scale_down_delay_s=spec.scale_down_delay_s,
        idle_timeout_s=spec.idle_timeout_s,
        created_by=ctx.user,
    )


@transaction.atomic
def create_deployment(
    ctx: OrgContext,
    *,
    name: str,
    spec: DeploymentSpec,
    environment: str = Deployment.Environment.DEVELOPMENT,
    production: Deployment | None = None,
) -> Deployment:
    """`production`: the deployment a staging environment promotes to; only
    deployments.environments makes those."""
    ctx.require_role(Role.MEMBER, "create deployments")
    if (environment == Deployment.Environment.STAGING) != (production is not None):
        raise ServiceError(
            "A staging environment is made from its production deployment: POST /api/v1/deployments/{id}/staging/.", field="environment"
        )
    if not NAME_PATTERN.match(name):
        raise ServiceError("Use 1-60 lowercase letters, digits and dashes, starting with a letter or digit.", field="name")
    if selectors.live_deployments(ctx.organization).filter(name=name).exists():
        raise Conflict(f"A deployment named {name!r} already exists.", field="name")
    validate_spec(ctx.organization, spec)
    check_quota(ctx.organization, spec)
    holds.refuse_if_held(ctx.organization, now=timezone.now())
    deployment = Deployment.objects.create(organization=ctx.organization, name=name, environment=environment, production=production)
    deployment.current_revision = _new_revision(ctx, deployment, spec)
    deployment.save(update_fields=["current_revision"])
    audit.record(ctx, "deployment.created", target_type="deployment", target_id=deployment.id, after=deployment_snapshot(deployment))
    return deployment


@transaction.atomic
def update_deployment(ctx: OrgContext, deployment: Deployment, *, live: bool = True, **changes: Any) -> Deployment:
    """Any change (model, hardware, regions, scaling) is a new revision. Live (the default),
    it is promoted at once and the control plane rolls it out; otherwise it is saved beside
    the current one, which keeps serving until the revision is promoted."""
    ctx.require_role(Role.MEMBER, "change deployments")
    if not live:
        save_revision(ctx, deployment, **changes)
        return deployment
    current = deployment.current_revision
    assert current is not None
    environment = changes.pop("environment", None)
    if environment is not None:
        _check_environment_change(deployment, environment)
    if "allowed_regions" in changes:
        changes["allowed_regions"] = tuple(changes["allowed_regions"])
    spec = replace(DeploymentSpec.of(current), **changes)
    if spec == DeploymentSpec.of(current):
        # Nothing to roll out: a repeated PATCH changes nothing, an environment is a label.
        if environment is None or environment == deployment.environment:
            return deployment
        before = deployment_snapshot(deployment)
        deployment.environment = environment
        deployment.save(update_fields=["environment"])
        audit.record(
            ctx,
            "deployment.updated",
            target_type="deployment",
            target_id=deployment.id,
            before=before,
            after=deployment_snapshot(deployment),
        )
        publish_after_commit(groups=[deployment_group(deployment.id)])
        return deployment
    refuse_during_canary(deployment)
    validate_spec(ctx.organization, spec)
    check_quota(ctx.organization, spec, replacing=deployment)
    if spec.min_replicas > current.min_replicas or spec.max_replicas > current.max_replicas or spec.model != current.model:
        holds.refuse_if_held(ctx.organization, now=timezone.now())  # scaling down stays allowed: it spends less
    before = deployment_snapshot(deployment)
    if environment is not None:
        deployment.environment = environment
    deployment.current_revision = _new_revision(ctx, deployment, spec)
    deployment.status = Deployment.Status.UPDATING
    deployment.failure_count, deployment.next_attempt_at = 0, None  # a new revision gets a fresh start
    deployment.save(update_fields=["environment", "current_revision", "status", "failure_count", "next_attempt_at"])
    audit.record(
        ctx, "deployment.updated", target_type="deployment", target_id=deployment.id, before=before, after=deployment_snapshot(deployment)
    )
    publish_after_commit(groups=[deployment_group(deployment.id)])
    return deployment


def _check_environment_change(deployment: Deployment, environment: str) -> None:
    """Staging is a link to a production deployment, made and ended by
    deployments.environments, not a label to set; a production deployment with a staging
    environment stays production."""
    if environment == deployment.environment:
        return
    if deployment.environment == Deployment.Environment.STAGING:
        raise ServiceError(f"{deployment.name} is a staging environment and stays one; delete it to end staging.", field="environment")
    if environment == Deployment.Environment.STAGING:
        raise ServiceError(
            "A staging environment is made from its production deployment: POST /api/v1/deployments/{id}/staging/.", field="environment"
        )
    staging = selectors.live_deployments(deployment.organization).filter(production=deployment).first()
    if staging is not None:
        raise Conflict(f"{staging.name} promotes to {deployment.name}, which stays production while it does.", field="environment")


def save_revision(ctx: OrgContext, deployment: Deployment, **changes: Any) -> DeploymentRevision:
    """A change saved as a new revision beside the current one, which keeps serving."""
    revision = new_revision(ctx, deployment, changes=changes)
    audit.record(
        ctx,
        "deployment.revision_saved",
        target_type="deployment",
        target_id=deployment.id,
        after=revision_snapshot(revision),
    )
    publish_after_commit(groups=[deployment_group(deployment.id)])
    return revision


def new_revision(ctx: OrgContext, deployment: Deployment, *, changes: dict[str, Any]) -> DeploymentRevision:
    """The checked revision a change makes, not audited: for a caller whose own audit entry
    names it (a canary started from changes, deployments.canaries)."""
    ctx.require_role(Role.MEMBER, "change deployments")
    current = deployment.current_revision
    assert current is not None
    if "environment" in changes:
        raise ServiceError("A saved revision holds the deployment's settings; change the environment on the live deployment.", field="live")
    if "allowed_regions" in changes:
        changes["allowed_regions"] = tuple(changes["allowed_regions"])
    spec = replace(DeploymentSpec.of(current), **changes)
    validate_spec(ctx.organization, spec)
    check_quota(ctx.organization, spec, replacing=deployment)
    return _new_revision(ctx, deployment, spec)


def refuse_during_canary(deployment: Deployment) -> None:
    """While a canary runs the two revisions are what the split and its verdict are about:
    another revision going live would change what is being compared."""
    if selectors.active_canary(deployment.organization, deployment) is not None:
        raise Conflict(
            "A canary is running on this deployment; promote or roll it back first (POST .../canary/promote/ or .../canary/rollback/).",
            field="canary",
        )


@transaction.atomic
def promote_revision(
    ctx: OrgContext, deployment: Deployment, number: int, *, action: str = "deployment.promoted", by_canary: bool = False
) -> Deployment:
    """`by_canary`: the canary being promoted (deployments.canaries), which ends it in the
    same transaction and writes the one audit entry of that promotion."""
    ctx.require_role(Role.MEMBER, "promote revisions")
    if not by_canary:
        refuse_during_canary(deployment)
    revision = DeploymentRevision.objects.for_org(ctx.organization).filter(deployment=deployment, number=number).first()
    if revision is None:
        raise ServiceError(f"This deployment has no revision {number}.", field="revision")
    if deployment.current_revision_id == revision.id:
        raise Conflict(f"Revision {number} is already the current one.", field="revision")
    spec = DeploymentSpec.of(revision)
    validate_spec(ctx.organization, spec)
    check_quota(ctx.organization, spec, replacing=deployment)
    holds.refuse_if_held(ctx.organization, now=timezone.now())
    before = deployment_snapshot(deployment)
    deployment.current_revision = revision
    deployment.status = Deployment.Status.UPDATING
    deployment.failure_count, deployment.next_attempt_at = 0, None
    deployment.save(update_fields=["current_revision", "status", "failure_count", "next_attempt_at"])
    if not by_canary:
        audit.record(ctx, action, target_type="deployment", target_id=deployment.id, before=before, after=deployment_snapshot(deployment))
    publish_after_commit(groups=[deployment_group(deployment.id)])
    return deployment


def rollback(ctx: OrgContext, deployment: Deployment) -> Deployment:
    """Back to the revision before the current one."""
    assert deployment.current_revision is not None
    previous = (
        DeploymentRevision.objects.for_org(ctx.organization)
        .filter(deployment=deployment, number__lt=deployment.current_revision.number)
        .order_by("-number")
        .first()
    )
    if previous is None:
        raise Conflict("There is no earlier revision to roll back to.")
    return promote_revision(ctx, deployment, previous.number, action="deployment.rolled_back")


@transaction.atomic
def delete_deployment(ctx: OrgContext, deployment: Deployment) -> None:
    """Marks the deployment deleted; the control plane drains and stops its replicas."""
    ctx.require_role(Role.MEMBER, "delete deployments")
    staging = selectors.live_deployments(deployment.organization).filter(production=deployment).first()
    if staging is not None:
        raise Conflict(f"{staging.name} is this deployment's staging environment; delete it first.", field="staging")
    before = deployment_snapshot(deployment)
    deployment.deleted_at = timezone.now()
    deployment.save(update_fields=["deleted_at"])
    audit.record(ctx, "deployment.deleted", target_type="deployment", target_id=deployment.id, before=before)
    publish_after_commit(groups=[deployment_group(deployment.id)])


def estimated_cost_per_hour(spec: DeploymentSpec, *, organization_id: str) -> tuple[Decimal, Decimal]:
    """At min and at max replicas, at the organization's GPU price now (deployments.prices):
    what the invoice charges for each hour the replicas run."""
    price = prices.price_per_hour(organization_id=organization_id, gpu_type=spec.gpu_type)
    return price * spec.min_replicas, price * spec.max_replicas
