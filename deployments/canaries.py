"""Canary rollouts, in the spirit of KServe's `canaryTrafficPercent`: a revision that is not
yet current takes a set share of the deployment's requests (the gateway splits them,
routing.gateway.upstream), the gateways count what each revision answered
(routing.gateway.canary_tally -> `record_tallies`), and `analyse_running` promotes or rolls
it back by itself (deployments.canary_analysis.judge), unless an admin promotes, holds or
rolls it back first. Every step is audited and leaves a deployment event."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from broadcast.groups import deployment_group
from broadcast.publish import publish_after_commit
from deployments import holds, selectors, services
from deployments.canary_analysis import Action, RevisionStats, Thresholds, Verdict, judge
from deployments.models import Canary, CanaryTally, Deployment, DeploymentEvent, DeploymentRevision
from tenancy import audit
from tenancy.context import OrgContext
from tenancy.errors import Conflict, ServiceError
from tenancy.models import Organization, Role

log = logging.getLogger("switchboard.canary")

DEFAULT_WINDOW_S = 300
DEFAULT_MIN_REQUESTS = 50
DEFAULT_MAX_ERROR_RATE_INCREASE = Decimal("0.05")
DEFAULT_MAX_LATENCY_RATIO = Decimal("1.50")


@dataclass(frozen=True)
class CanaryPlan:
    """How a canary splits and is judged."""

    traffic_percent: int
    window_s: int = DEFAULT_WINDOW_S
    min_requests: int = DEFAULT_MIN_REQUESTS
    max_error_rate_increase: Decimal = DEFAULT_MAX_ERROR_RATE_INCREASE
    max_latency_ratio: Decimal = DEFAULT_MAX_LATENCY_RATIO

    def validate(self) -> None:
        if not 1 <= self.traffic_percent <= 99:
            raise ServiceError("traffic_percent must be between 1 and 99: the rest goes to the current revision.", field="traffic_percent")
        if self.window_s < 1:
            raise ServiceError("window_s must be at least 1 second.", field="window_s")
        if self.min_requests < 1:
            raise ServiceError("min_requests must be at least 1.", field="min_requests")
        if not Decimal(0) <= self.max_error_rate_increase <= Decimal(1):
            raise ServiceError(
                "max_error_rate_increase is a fraction between 0 and 1 (0.05: five points).", field="max_error_rate_increase"
            )
        if self.max_latency_ratio < Decimal(1):
            raise ServiceError("max_latency_ratio must be at least 1 (1.5: half as slow again).", field="max_latency_ratio")


def snapshot(canary: Canary) -> dict[str, Any]:
    promoted_from = services.promoted_from(canary.canary_revision)
    return {
        **({"promoted_from": promoted_from} if promoted_from else {}),
        "canary": canary.id,
        "stable_revision": canary.stable_revision.number,
        "canary_revision": canary.canary_revision.number,
        "traffic_percent": canary.traffic_percent,
        "window_s": canary.window_s,
        "min_requests": canary.min_requests,
        "max_error_rate_increase": str(canary.max_error_rate_increase),
        "max_latency_ratio": str(canary.max_latency_ratio),
        "state": canary.state,
        "reason": canary.reason,
    }


def _event(canary: Canary, kind: str, message: str) -> None:
    DeploymentEvent.objects.create(
        organization_id=canary.organization_id, deployment_id=canary.deployment_id, kind=kind, message=message[:500]
    )


@transaction.atomic
def start_canary(
    ctx: OrgContext, deployment: Deployment, *, plan: CanaryPlan, revision: int | None = None, changes: dict[str, Any] | None = None
) -> Canary:
    """Sends `plan.traffic_percent` of the deployment's requests to a revision: an existing
    one by number, or a new one made of `changes` to the current revision. Exactly one of
    the two."""
    ctx.require_role(Role.MEMBER, "start canaries")
    plan.validate()
    if (revision is None) == (not changes):
        raise ServiceError("Give either a revision number or the changes that make the canary revision, not both.", field="revision")
    services.refuse_during_canary(deployment)
    stable = deployment.revision
    if changes:
        candidate = services.new_revision(ctx, deployment, changes=changes)
    else:
        found = DeploymentRevision.objects.for_org(ctx.organization).filter(deployment=deployment, number=revision).first()
        if found is None:
            raise ServiceError(f"This deployment has no revision {revision}.", field="revision")
        candidate = found
    if candidate.pk == stable.pk:
        raise Conflict(f"Revision {candidate.number} is already the current one; a canary tries another.", field="revision")
    spec = services.DeploymentSpec.of(candidate)
    services.validate_spec(ctx.organization, spec)
    services.check_quota(ctx.organization, spec, replacing=deployment, alongside=services.DeploymentSpec.of(stable))
    holds.refuse_if_held(ctx.organization, now=timezone.now())
    canary = Canary.objects.create(
        organization=ctx.organization,
        deployment=deployment,
        stable_revision=stable,
        canary_revision=candidate,
        traffic_percent=plan.traffic_percent,
        window_s=plan.window_s,
        min_requests=plan.min_requests,
        max_error_rate_increase=plan.max_error_rate_increase,
        max_latency_ratio=plan.max_latency_ratio,
        started_by=ctx.user,
    )
    CanaryTally.objects.bulk_create([CanaryTally(canary=canary, revision=stable), CanaryTally(canary=canary, revision=candidate)])
    deployment.status, deployment.status_reason = Deployment.Status.UPDATING, _split_reason(canary)
    deployment.save(update_fields=["status", "status_reason"])
    _event(canary, "canary_started", f"canary started by {ctx.actor_label}: {_split_reason(canary)}")
    audit.record(ctx, "deployment.canary_started", target_type="deployment", target_id=deployment.id, after=snapshot(canary))
    publish_after_commit(groups=[deployment_group(deployment.id)])
    return canary


def _split_reason(canary: Canary) -> str:
    return (
        f"canary: revision {canary.canary_revision.number} takes {canary.traffic_percent}% of requests, "
        f"revision {canary.stable_revision.number} the rest"
    )


def _locked_active(ctx: OrgContext, deployment: Deployment) -> Canary:
    canary = (
        selectors.active_canaries(ctx.organization)
        .select_for_update()
        .filter(deployment=deployment)
        .select_related("stable_revision", "canary_revision")
        .first()
    )
    if canary is None:
        raise Conflict("This deployment has no canary running or held.", field="canary")
    return canary


def _decide(ctx: OrgContext, canary: Canary, state: str, action: str, reason: str) -> Canary:
    before = snapshot(canary)
    canary.state, canary.reason, canary.decided_at = state, reason[:500], timezone.now()
    canary.save(update_fields=["state", "reason", "decided_at"])
    _event(canary, action.removeprefix("deployment."), f"{ctx.actor_label}: {reason}"[:500])
    audit.record(ctx, action, target_type="deployment", target_id=canary.deployment_id, before=before, after=snapshot(canary))
    publish_after_commit(groups=[deployment_group(canary.deployment_id)])
    return canary


@transaction.atomic
def promote_canary(ctx: OrgContext, deployment: Deployment, *, reason: str = "") -> Canary:
    """The canary revision becomes the current one and takes all the traffic; the stable
    revision's replicas drain as in any rollout, once the new ones have been handed over."""
    ctx.require_role(Role.MEMBER, "promote canaries")
    canary = _locked_active(ctx, deployment)
    services.promote_revision(ctx, deployment, canary.canary_revision.number, by_canary=True)
    return _decide(ctx, canary, Canary.State.PROMOTED, "deployment.canary_promoted", reason or "promoted")


@transaction.atomic
def roll_back_canary(ctx: OrgContext, deployment: Deployment, *, reason: str = "") -> Canary:
    """All traffic back to the stable revision; the canary's replicas drain."""
    ctx.require_role(Role.MEMBER, "roll back canaries")
    canary = _locked_active(ctx, deployment)
    Deployment.objects.for_org(ctx.organization).filter(pk=deployment.pk).update(status=Deployment.Status.UPDATING, status_reason="")
    return _decide(ctx, canary, Canary.State.ROLLED_BACK, "deployment.canary_rolled_back", reason or "rolled back")


@transaction.atomic
def hold_canary(ctx: OrgContext, deployment: Deployment) -> Canary:
    """Keeps the split as it is and stops the automatic verdict until resumed, promoted or
    rolled back."""
    ctx.require_role(Role.MEMBER, "hold canaries")
    canary = _locked_active(ctx, deployment)
    if canary.state == Canary.State.HELD:
        raise Conflict("The canary is already held.", field="canary")
    before = snapshot(canary)
    canary.state, canary.reason = Canary.State.HELD, f"held by {ctx.actor_label}"
    canary.save(update_fields=["state", "reason"])
    _event(canary, "canary_held", canary.reason)
    audit.record(ctx, "deployment.canary_held", target_type="deployment", target_id=deployment.id, before=before, after=snapshot(canary))
    publish_after_commit(groups=[deployment_group(deployment.id)])
    return canary


@transaction.atomic
def resume_canary(ctx: OrgContext, deployment: Deployment) -> Canary:
    """A held canary is judged automatically again."""
    ctx.require_role(Role.MEMBER, "resume canaries")
    canary = _locked_active(ctx, deployment)
    if canary.state != Canary.State.HELD:
        raise Conflict("The canary is running, not held.", field="canary")
    before = snapshot(canary)
    canary.state, canary.reason = Canary.State.RUNNING, f"resumed by {ctx.actor_label}"
    canary.save(update_fields=["state", "reason"])
    _event(canary, "canary_resumed", canary.reason)
    audit.record(ctx, "deployment.canary_resumed", target_type="deployment", target_id=deployment.id, before=before, after=snapshot(canary))
    publish_after_commit(groups=[deployment_group(deployment.id)])
    return canary


@dataclass(frozen=True, slots=True)
class TallyDelta:
    """What one gateway counted for one revision of one canary since it last reported."""

    canary_id: str
    revision_id: str
    requests: int = 0
    errors: int = 0
    latency_ms_sum: float = 0.0
    latency_samples: int = 0


def record_tallies(deltas: Iterable[TallyDelta]) -> None:
    """Adds gateways' counts, each in one UPDATE (atomic with concurrent gateways). A
    canary that ended or was deleted meanwhile matches no row: its counts are dropped."""
    for delta in deltas:
        CanaryTally.objects.filter(canary_id=delta.canary_id, revision_id=delta.revision_id).update(
            requests=F("requests") + delta.requests,
            errors=F("errors") + delta.errors,
            latency_ms_sum=F("latency_ms_sum") + delta.latency_ms_sum,
            latency_samples=F("latency_samples") + delta.latency_samples,
        )


def stats(canary: Canary) -> tuple[RevisionStats, RevisionStats]:
    """(stable, canary) as the gateways counted them so far."""
    by_revision = {
        tally.revision_id: RevisionStats(
            requests=tally.requests, errors=tally.errors, latency_ms_sum=tally.latency_ms_sum, latency_samples=tally.latency_samples
        )
        for tally in CanaryTally.objects.filter(canary=canary)
    }
    return by_revision.get(canary.stable_revision_id, RevisionStats()), by_revision.get(canary.canary_revision_id, RevisionStats())


def thresholds(canary: Canary) -> Thresholds:
    return Thresholds(
        window_s=canary.window_s,
        min_requests=canary.min_requests,
        max_error_rate_increase=float(canary.max_error_rate_increase),
        max_latency_ratio=float(canary.max_latency_ratio),
    )


def analyse(canary: Canary, *, now: datetime) -> Verdict:
    stable, candidate = stats(canary)
    return judge(canary=candidate, stable=stable, thresholds=thresholds(canary), elapsed_s=(now - canary.started_at).total_seconds())


def analyse_running(*, now: datetime | None = None) -> dict[str, str]:
    """Judges every running canary and acts on its verdict as the system: the periodic
    task (deployments.tasks.analyse_canaries). Returns each canary's action."""
    now = now or timezone.now()
    running = (
        Canary.objects.unscoped_across_tenants()
        .filter(state=Canary.State.RUNNING, deployment__deleted_at=None)
        .select_related("organization", "deployment", "stable_revision", "canary_revision")
    )
    actions: dict[str, str] = {}
    for canary in running:
        verdict = analyse(canary, now=now)
        actions[canary.id] = verdict.action
        if verdict.action == Action.WAIT:
            continue
        system = OrgContext(organization=canary.organization, role=Role.OWNER)
        try:
            if verdict.action == Action.PROMOTE:
                promote_canary(system, canary.deployment, reason=f"automatic: {verdict.reason}")
            else:
                roll_back_canary(system, canary.deployment, reason=f"automatic: {verdict.reason}")
        except ServiceError as error:
            # A promotion refused (the organization is held at its spend limit, a quota
            # changed): the canary keeps running and says why; an admin decides.
            log.warning("canary %s: %s refused: %s", canary.id, verdict.action, error.message)
            actions[canary.id] = f"refused: {error.message}"
            Canary.objects.for_org(canary.organization).filter(pk=canary.pk, state=Canary.State.RUNNING).update(
                reason=f"automatic {verdict.action} refused: {error.message}"[:500]
            )
    return actions


@dataclass(frozen=True)
class CanarySummary:
    """A deployment's latest canary as its page shows it: the split, each revision's counts
    and, while it runs, what the verdict would be now."""

    canary: Canary
    stable: RevisionStats
    candidate: RevisionStats
    verdict: Verdict | None

    @property
    def stable_percent(self) -> int:
        return 100 - self.canary.traffic_percent


def summary(org: Organization, deployment: Deployment, *, now: datetime | None = None) -> CanarySummary | None:
    canary = (
        Canary.objects.for_org(org)
        .filter(deployment=deployment)
        .select_related("stable_revision", "canary_revision")
        .order_by("-started_at")
        .first()
    )
    if canary is None:
        return None
    stable, candidate = stats(canary)
    verdict = analyse(canary, now=now or timezone.now()) if canary.state == Canary.State.RUNNING else None
    return CanarySummary(canary=canary, stable=stable, candidate=candidate, verdict=verdict)
