"""Environments, as Baseten has them: a production deployment may have one staging
environment, a deployment of its own with its own name on the gateway
(`<production>-staging` unless named otherwise). Changes are tried on staging; one action
promotes staging's current revision to production as a new production revision with the
same model artifact and settings (`promoted_from` names the staging revision it copies),
rolled out at once or by canary. One audit entry per action."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

from django.db import transaction

from deployments import canaries, selectors, services
from deployments.models import Canary, Deployment, DeploymentRevision
from tenancy.context import OrgContext
from tenancy.errors import Conflict, ServiceError
from tenancy.models import Role

STAGING_SUFFIX = "-staging"
# What a promotion that keeps production's scaling leaves as production had it.
SCALING_FIELDS = ("min_replicas", "max_replicas", "target_concurrency", "scale_down_delay_s", "idle_timeout_s")


def staging_of(production: Deployment) -> Deployment | None:
    """The live staging environment of a production deployment, if it has one."""
    return selectors.live_deployments(production.organization).filter(production=production).select_related("current_revision").first()


def default_staging_name(production: Deployment) -> str:
    return production.name[: 60 - len(STAGING_SUFFIX)].rstrip("-") + STAGING_SUFFIX


@transaction.atomic
def create_staging(
    ctx: OrgContext, *, production: Deployment, name: str | None = None, changes: dict[str, object] | None = None
) -> Deployment:
    """A staging environment for `production`: a new deployment that starts as a copy of
    production's current revision, with `changes` (say, min_replicas=0) applied."""
    ctx.require_role(Role.MEMBER, "create staging environments")
    if production.environment == Deployment.Environment.STAGING:
        raise ServiceError("This deployment is itself a staging environment; staging promotes to a production deployment.")
    if production.environment != Deployment.Environment.PRODUCTION:
        raise ServiceError(
            f"{production.name} is a {production.environment} deployment; a staging environment promotes to production. "
            "Mark it production first (environment=production).",
            field="environment",
        )
    existing = staging_of(production)
    if existing is not None:
        raise Conflict(f"{production.name} already has a staging environment, {existing.name}.", field="staging")
    spec = services.DeploymentSpec.of(production.revision)
    if changes:
        if "allowed_regions" in changes:
            changes = {**changes, "allowed_regions": tuple(changes["allowed_regions"])}  # type: ignore[arg-type]
        spec = replace(spec, **changes)  # type: ignore[arg-type]
    staging = services.create_deployment(
        ctx, name=name or default_staging_name(production), spec=spec, environment=Deployment.Environment.STAGING, production=production
    )
    return staging


@dataclass(frozen=True)
class Difference:
    setting: str
    production: str
    staging: str
    scaling: bool  # left as production has it when a promotion keeps production's scaling


@dataclass(frozen=True)
class PromotionPreview:
    """What promoting a staging environment would change in production, for its page."""

    production: Deployment
    source: DeploymentRevision
    differences: list[Difference]
    canary_running: bool


def promotion_preview(staging: Deployment) -> PromotionPreview | None:
    if staging.environment != Deployment.Environment.STAGING or staging.production is None or staging.production.deleted_at:
        return None
    production = staging.production
    ours, theirs = asdict(services.DeploymentSpec.of(staging.revision)), asdict(services.DeploymentSpec.of(production.revision))
    differences = [
        Difference(setting=name.replace("_", " "), production=_shown(theirs[name]), staging=_shown(value), scaling=name in SCALING_FIELDS)
        for name, value in ours.items()
        if value != theirs[name]
    ]
    canary_running = selectors.active_canary(production.organization, production) is not None
    return PromotionPreview(production=production, source=staging.revision, differences=differences, canary_running=canary_running)


def _shown(value: object) -> str:
    return ", ".join(value) if isinstance(value, tuple) else str(value)


def _production_of(staging: Deployment) -> Deployment:
    production = staging.production
    if staging.environment != Deployment.Environment.STAGING or production is None:
        raise ServiceError(f"{staging.name} is not a staging environment; only a staging environment is promoted to production.")
    if production.deleted_at is not None:
        raise Conflict(f"{staging.name}'s production deployment, {production.name}, was deleted.")
    return production


@transaction.atomic
def promote_to_production(
    ctx: OrgContext, *, staging: Deployment, keep_production_scaling: bool = False, canary: canaries.CanaryPlan | None = None
) -> tuple[Deployment, Canary | None]:
    """Staging's current revision, copied to production as a new revision (the same model
    artifact, GPU type, regions and, unless `keep_production_scaling`, scaling), then made
    live: at once, or by a canary on production when a plan is given."""
    ctx.require_role(Role.MEMBER, "promote to production")
    production = _production_of(staging)
    production = (
        selectors.live_deployments(ctx.organization)
        .select_for_update(of=("self",))
        .select_related("current_revision")
        .get(pk=production.pk)
    )
    services.refuse_during_canary(production)
    source = staging.revision
    spec = services.DeploymentSpec.of(source)
    current = services.DeploymentSpec.of(production.revision)
    if keep_production_scaling:
        spec = replace(spec, **{name: getattr(current, name) for name in SCALING_FIELDS})
    if spec == current:
        raise Conflict(
            f"{production.name} already runs what {staging.name} revision {source.number} would give it "
            f"(revision {production.revision.number}).",
            field="staging",
        )
    revision = services.new_revision(ctx, production, changes=asdict(spec))
    revision.promoted_from = source
    revision.save(update_fields=["promoted_from"])
    if canary is not None:
        return production, canaries.start_canary(ctx, production, plan=canary, revision=revision.number)
    return services.promote_revision(ctx, production, revision.number, action="deployment.promoted_from_staging"), None
