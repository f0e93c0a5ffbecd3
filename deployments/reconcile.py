"""The reconcile loop: compare a deployment's desired state with what its clusters report,
and act. Idempotent, and one reconciler per deployment at a time (a lease row update that
works the same on SQLite and PostgreSQL), so two workers never create the same replica.

One pass:
1. observe each cluster holding a replica (driver.list_replicas), then probe every
   replica's /health and scrape its /metrics, all at once (deployments.probes), before
   any decision;
2. move replicas along PENDING -> PROVISIONING -> LOADING -> READY, or to FAILED with the
   reason (process gone, engine broken, cluster down), DRAINING -> STOPPED when gone;
3. decide how many replicas the current revision should have (min, the autoscaler, a
   scale-from-zero request, or none once deleted), and a running canary's revision its
   share of them (deployments.canaries);
4. place missing replicas (allowed regions, free capacity, price, spread), backing off
   exponentially after failures; a crash loop marks the deployment FAILED;
5. drain old-revision replicas only once the new revision has its READY replicas, and
   drain surplus ones when scaling down;
6. derive the deployment's status.
"""

from __future__ import annotations

import concurrent.futures
import math
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal

from django.conf import settings
from django.core.cache import cache
from django.db import transaction
from django.db.models import Count, Q
from django.utils import timezone

from broadcast.groups import deployment_group
from broadcast.publish import publish_after_commit
from deployments import model_catalog, model_storage, registry
from deployments.drivers import CPU, ClusterDriver, DriverError, ObservedReplica, ReplicaRequest, driver_for
from deployments.holds import Hold, current_hold
from deployments.internal_tokens import replica_token
from deployments.models import Canary, CatalogModel, Cluster, ClusterGpu, Deployment, DeploymentRevision, Quota, Replica, ReplicaEvent
from deployments.placement import Capacity, place
from deployments.probes import Probe, Target, check_replicas, probe_replicas
from deployments.scaling import (
    CACHE_SECONDS,
    Metrics,
    Scrape,
    Scraped,
    autoscaled_desired,
    cache_key,
    decided_from_store,
    metrics_in,
    record_throughput,
    scrape_replicas,
)
from tenancy.models import Organization, OrgStatus

LEASE = timedelta(seconds=120)
MAX_FAILURES = 5  # replica failures in a row before the deployment is FAILED
DRAIN_SECONDS = 30.0
LIVE = (Replica.State.PENDING, Replica.State.PROVISIONING, Replica.State.LOADING, Replica.State.READY)
HOLDS_GPU = (*LIVE, Replica.State.DRAINING)

DriverFactory = Callable[[Cluster], ClusterDriver]
PROBED_STATES = (Replica.State.PROVISIONING, Replica.State.LOADING, Replica.State.READY)


@dataclass(frozen=True)
class Probed:
    """What a pass's replicas answered, gathered before any decision, by replica id."""

    health: dict[str, str] = field(default_factory=dict)  # "ready" | "loading" | "broken: why" | "unreachable"
    metrics: dict[str, Metrics] = field(default_factory=dict)  # those ready whose /metrics answered

    def merged(self, other: Probed) -> Probed:
        return Probed(health={**self.health, **other.health}, metrics={**self.metrics, **other.metrics})

    def scrape(self, targets: Sequence[Target]) -> dict[str, Metrics]:
        """A Scrape that reads what was gathered (for the autoscaler)."""
        return {target.replica_id: self.metrics[target.replica_id] for target in targets if target.replica_id in self.metrics}


def probe_and_scrape(targets: list[Target], *, probe: Probe | None = None, scrape: Scrape | None = None) -> Probed:
    """Every target's /health and, for those ready, its /metrics. Neither given: both over
    HTTP in one concurrent run (deployments.probes), each replica's timeout its own. A
    probe or scrape given (tests, the benchmark's stub) is called with the whole batch."""
    if not targets:
        return Probed()
    if probe is None and scrape is None:
        answers = check_replicas(targets)
        return Probed(
            health={replica_id: answer.health for replica_id, answer in answers.items()},
            metrics={replica_id: metrics_in(answer.metrics) for replica_id, answer in answers.items() if answer.metrics is not None},
        )
    health = (probe or probe_replicas)(targets)
    ready = [target for target in targets if health.get(target.replica_id) == "ready"]
    return Probed(health=health, metrics=(scrape or scrape_replicas)(ready) if ready else {})


def _worth_probing(replica: Replica, cluster: Cluster, seen: ObservedReplica | None, unreachable: set[str]) -> bool:
    """Whether a pass will read this replica's /health: started, on a cluster that is up
    and answered, still running at the endpoint the control plane knows."""
    return (
        replica.state in PROBED_STATES
        and bool(replica.endpoint)
        and cluster.status != Cluster.Status.DOWN
        and cluster.name not in unreachable
        and seen is not None
        and seen.running
        and not (seen.endpoint and seen.endpoint != replica.endpoint)
    )


@dataclass
class PassResult:
    created: list[str] = field(default_factory=list)
    drained: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    evicted: list[str] = field(default_factory=list)  # on a cluster marked down: replaced, not counted as failures
    desired: int = 0
    status: str = ""


def _acquire(deployment_id: str, owner: str, now: datetime) -> bool:
    free = Q(lease_until=None) | Q(lease_until__lt=now) | Q(lease_owner=owner)
    return (
        Deployment.objects.unscoped_across_tenants().filter(Q(pk=deployment_id) & free).update(lease_owner=owner, lease_until=now + LEASE)
        == 1
    )


def _release(deployment_id: str, owner: str) -> None:
    Deployment.objects.unscoped_across_tenants().filter(pk=deployment_id, lease_owner=owner).update(lease_owner="", lease_until=None)


def _transition(replica: Replica, state: str, reason: str = "", **fields: object) -> None:
    previous = replica.state
    replica.state = state
    if reason:
        replica.reason = reason
    for name, value in fields.items():
        setattr(replica, name, value)
    replica.save()
    ReplicaEvent.objects.create(
        organization_id=replica.organization_id,
        deployment_id=replica.deployment_id,
        replica=replica,
        from_state=previous,
        to_state=state,
        reason=reason,
    )


def reconcile(
    deployment_id: str,
    *,
    drivers: DriverFactory = driver_for,
    probe: Probe | None = None,
    scrape: Scrape | None = None,
    desired_replicas: Callable[[Deployment, list[Replica]], int] | None = None,
    probed: Probed | None = None,
) -> PassResult | None:
    """One pass for one deployment; None when another reconciler holds it. `probed`: what
    a fleet pass already gathered from these replicas (the rest are probed here)."""
    owner = uuid.uuid4().hex
    if not _acquire(deployment_id, owner, timezone.now()):
        return None  # another reconciler holds it, or it no longer exists
    try:
        return _pass(deployment_id, drivers, probe, scrape, desired_replicas, probed or Probed())
    finally:
        _release(deployment_id, owner)
        publish_after_commit(groups=[deployment_group(deployment_id)])  # its open pages re-read


@dataclass
class _Pass:
    """What one pass works on: the deployment, every replica holding a GPU for it, and what
    the pass has done so far."""

    deployment: Deployment
    replicas: list[Replica]
    drivers: DriverFactory
    now: datetime
    canary: Canary | None = None  # running or held: its revision's replicas are kept beside the current ones
    result: PassResult = field(default_factory=PassResult)


@dataclass
class _Fleet:
    """The live replicas, by where they stand against the current revision."""

    current: list[Replica]  # of the current revision, on clusters that keep them
    evacuating: list[Replica]  # of the current revision, on a draining cluster
    old: list[Replica]  # of earlier revisions
    canary: list[Replica] = field(default_factory=list)  # of a running or held canary's revision

    @classmethod
    def of(cls, deployment: Deployment, live: list[Replica], canary: Canary | None = None) -> _Fleet:
        # Replicas on a draining cluster do not count as placed: replacements go elsewhere,
        # and they serve until those are READY.
        revision_id = deployment.current_revision_id
        canary_id = canary.canary_revision_id if canary is not None else None
        evacuating = [r for r in live if r.revision_id == revision_id and r.cluster.status == Cluster.Status.DRAINING]
        current = [r for r in live if r.revision_id == revision_id and r not in evacuating]
        return cls(
            current=current,
            evacuating=evacuating,
            old=[r for r in live if r.revision_id not in (revision_id, canary_id)],
            canary=[r for r in live if r.revision_id == canary_id],
        )

    def ready_current(self) -> int:
        return sum(1 for replica in self.current if replica.state == Replica.State.READY)

    def handed_over(self, now: datetime) -> int:
        """READY replicas of the current revision that every gateway has had time to read
        (settings.ROLLOUT_HANDOVER_SECONDS): what may take over from a replica being drained."""
        settled_by = now - timedelta(seconds=settings.ROLLOUT_HANDOVER_SECONDS)
        return sum(
            1
            for replica in self.current
            if replica.state == Replica.State.READY and (replica.ready_at is None or replica.ready_at <= settled_by)
        )


def _pass(
    deployment_id: str,
    drivers: DriverFactory,
    probe: Probe | None,
    scrape: Scrape | None,
    desired_replicas: Callable[[Deployment, list[Replica]], int] | None,
    known: Probed,
) -> PassResult:
    run = _load(deployment_id, drivers)
    deployment = run.deployment
    observed, unreachable = _observe(run.replicas, drivers)
    to_probe = [
        Target(replica_id=replica.id, endpoint=replica.endpoint, cluster=replica.cluster_id)
        for replica in run.replicas
        if _worth_probing(replica, replica.cluster, observed.get(replica.id), unreachable) and replica.id not in known.health
    ]
    probed = known.merged(probe_and_scrape(to_probe, probe=probe, scrape=scrape))
    for replica in run.replicas:
        _advance(run, replica, observed.get(replica.id), unreachable, probed.health)
    if run.result.failed:
        deployment.failure_count += len(run.result.failed)
        deployment.next_attempt_at = run.now + timedelta(seconds=min(2**deployment.failure_count, 300))
    live = [replica for replica in run.replicas if replica.state in LIVE]
    _adopt_compatible(deployment, live, run.canary)
    fleet = _Fleet.of(deployment, live, run.canary)
    ready_current = fleet.ready_current()
    if ready_current and not run.result.failed:
        deployment.failure_count = 0

    if desired_replicas is None:
        desired = 0 if deployment.deleted_at else autoscaled_desired(deployment, run.replicas, scrape=probed.scrape)
    else:
        desired = 0 if deployment.deleted_at else desired_replicas(deployment, run.replicas)
    hold = None if deployment.deleted_at else current_hold(deployment.organization, now=run.now)
    if hold is not None:
        # Held (suspended, or at the spend limit): nothing new starts; past the grace, zero.
        desired = 0 if run.now >= hold.scale_to_zero_at else min(desired, len(fleet.current))
    run.result.desired = desired
    crash_loop = deployment.failure_count >= MAX_FAILURES
    backing_off = deployment.next_attempt_at is not None and run.now < deployment.next_attempt_at
    may_place = not crash_loop and not backing_off
    missing = desired - len(fleet.current)
    if missing > 0 and may_place:
        fleet.current += _place_missing(run, deployment.revision, missing)
    canary_desired = _canary_desired(run.canary, desired)
    if canary_desired > len(fleet.canary) and may_place and run.canary is not None:
        fleet.canary += _place_missing(run, run.canary.canary_revision, canary_desired - len(fleet.canary))
    for replica in _surplus(fleet.canary, canary_desired):
        _drain(replica, run.drivers, run.result)
    handed_over = 0 if _canary_just_decided(deployment, run.now) else fleet.handed_over(run.now)
    _replace_old_revisions(run, fleet, handed_over=handed_over, desired=desired, missing=missing, may_place=may_place)
    if fleet.evacuating and not deployment.deleted_at:
        _hand_over_from_draining_clusters(run, fleet, desired)
    _drain_deleted_or_surplus(run, fleet, live, desired)
    _settle_status(run, fleet, desired=desired, crash_loop=crash_loop, missing=missing, hold=hold, canary_desired=canary_desired)
    return run.result


def _canary_desired(canary: Canary | None, desired: int) -> int:
    """The canary revision's replicas: its share of what the deployment wants, at least one
    while the deployment has any (a share needs a replica to go to), at most its maximum."""
    if canary is None or desired == 0:
        return 0
    return min(canary.canary_revision.max_replicas, max(1, math.ceil(desired * canary.traffic_percent / 100)))


def _canary_just_decided(deployment: Deployment, now: datetime) -> bool:
    """A canary promoted or rolled back moments ago: gateways may still split by the
    snapshot they cached, so the revision that lost keeps serving until every gateway has
    read the decision (settings.ROLLOUT_HANDOVER_SECONDS)."""
    settled_by = now - timedelta(seconds=settings.ROLLOUT_HANDOVER_SECONDS)
    return (
        Canary.objects.for_org(deployment.organization)
        .filter(deployment=deployment, state__in=(Canary.State.PROMOTED, Canary.State.ROLLED_BACK), decided_at__gt=settled_by)
        .exists()
    )


def _surplus(replicas: list[Replica], wanted: int) -> list[Replica]:
    """Those beyond `wanted`: not yet READY first, then the oldest."""
    return sorted(replicas, key=lambda r: (r.state == Replica.State.READY, r.created_at))[: max(0, len(replicas) - wanted)]


def _load(deployment_id: str, drivers: DriverFactory) -> _Pass:
    deployment = (
        Deployment.objects.unscoped_across_tenants()
        .select_related("current_revision", "current_revision__gpu_type", "organization")
        .get(pk=deployment_id)
    )
    replicas = list(
        Replica.objects.for_org(deployment.organization)
        .filter(deployment=deployment, state__in=HOLDS_GPU)
        .select_related("cluster", "revision")
    )
    canary = (
        Canary.objects.for_org(deployment.organization)
        .filter(deployment=deployment, state__in=Canary.ACTIVE_STATES)
        .select_related("canary_revision", "stable_revision")
        .first()
    )
    if canary is not None and (deployment.deleted_at or canary.stable_revision_id != deployment.current_revision_id):
        canary = None  # a deleted deployment drains everything; a canary is against the revision it started beside
    return _Pass(deployment=deployment, replicas=replicas, drivers=drivers, now=timezone.now(), canary=canary)


def _advance(run: _Pass, replica: Replica, seen: ObservedReplica | None, unreachable: set[str], health_by_id: dict[str, str]) -> None:
    """Moves one replica along its states from what its cluster and /health report."""
    cluster, now = replica.cluster, run.now
    if replica.state == Replica.State.DRAINING:
        if cluster.status == Cluster.Status.DOWN or (cluster.name not in unreachable and (seen is None or not seen.running)):
            _transition(replica, Replica.State.STOPPED, "drained", stopped_at=now)
        elif cluster.name not in unreachable and _drain_overdue(replica, now):
            _stop(replica, run.drivers, drain=0)  # the first delete failed or was lost: every driver's delete repeats safely
        return
    if cluster.status == Cluster.Status.DOWN:
        # The replica did nothing wrong: replace it at once, with no backoff, and never
        # let a cluster going down count towards the deployment's crash loop.
        _transition(replica, Replica.State.FAILED, f"cluster {cluster.name} was marked down", stopped_at=now)
        run.result.evicted.append(replica.id)
        return
    if cluster.name in unreachable:
        return  # no news is not bad news: try again next pass
    if replica.state == Replica.State.PENDING:
        _start(replica, run.drivers, run.result)
        return
    if seen is None or not seen.running:
        _exited(run, replica, seen)
        return
    if _moved(replica, seen):
        return
    health = health_by_id.get(replica.id, "unreachable")
    if health == "ready" and replica.state != Replica.State.READY:
        _transition(replica, Replica.State.READY, "passed /health", ready_at=now)
    elif health == "loading" and replica.state == Replica.State.PROVISIONING:
        _transition(replica, Replica.State.LOADING, "loading the model")
    elif health.startswith("broken"):
        _stop(replica, run.drivers, drain=0)
        _transition(replica, Replica.State.FAILED, health, stopped_at=now)
        run.result.failed.append(replica.id)


def _drain_overdue(replica: Replica, now: datetime) -> bool:
    """Still running well past its drain: the delete that began it did not take."""
    began = (
        ReplicaEvent.objects.for_org(replica.organization)
        .filter(replica=replica, to_state=Replica.State.DRAINING)
        .order_by("-at")
        .values_list("at", flat=True)
        .first()
    )
    return began is not None and now - began > timedelta(seconds=DRAIN_SECONDS + 30)


def _exited(run: _Pass, replica: Replica, seen: ObservedReplica | None) -> None:
    code = f" with code {seen.exit_code}" if seen is not None and seen.exit_code is not None else ""
    why = f": {seen.detail}" if seen is not None and seen.detail else ""  # what the cluster says of it
    if seen is not None:
        # What the cluster still keeps for it goes (a crash-looping pod would hold its GPU).
        _stop(replica, run.drivers, drain=0)
    _transition(replica, Replica.State.FAILED, f"the model-server process exited{code}{why}"[:500], stopped_at=run.now)
    run.result.failed.append(replica.id)


def _moved(replica: Replica, seen: ObservedReplica) -> bool:
    """Keeps the replica's endpoint, node and device as its cluster reports them; True when
    the cluster replaced the process behind it, to be probed afresh before it serves."""
    if seen.endpoint and not replica.endpoint:
        # Placed after it was created (a Ray actor reports its node's address and port once
        # it runs): nothing was probed at an old address, so probe this one next.
        replica.endpoint, replica.node, replica.device = seen.endpoint, seen.node[:200], seen.device[:100]
        replica.save(update_fields=["endpoint", "node", "device"])
    elif seen.endpoint and seen.endpoint != replica.endpoint:
        # The cluster replaced the process behind the replica (Ray restarting a dead actor,
        # Kubernetes a pod): a new endpoint, to be probed afresh before it serves again.
        replica.node, replica.device = seen.node[:200], seen.device[:100]
        _transition(replica, Replica.State.PROVISIONING, "restarted by its cluster at a new endpoint", endpoint=seen.endpoint)
        return True
    elif seen.node and (seen.node, seen.device) != (replica.node, replica.device):  # adopted, or newly reported
        replica.node, replica.device = seen.node[:200], seen.device[:100]
        replica.save(update_fields=["node", "device"])
    return False


def _place_missing(run: _Pass, revision: DeploymentRevision, missing: int) -> list[Replica]:
    """New replicas of the revision (the current one, or a canary's), started."""
    deployment = run.deployment
    with transaction.atomic():
        # Lock this GPU type's inventory rows: two workers placing at once would both see
        # the same free GPU (PostgreSQL; SQLite serialises writers anyway).
        list(ClusterGpu.objects.select_for_update().filter(gpu_type_id=revision.gpu_type_id))
        placements = _placements(deployment, revision, missing)
        new_replicas = [_place(deployment, revision, cluster_name) for cluster_name in placements]
    for replica in new_replicas:
        _start(replica, run.drivers, run.result)
    return new_replicas


def _replace_old_revisions(run: _Pass, fleet: _Fleet, *, handed_over: int, desired: int, missing: int, may_place: bool) -> None:
    """Drains old revisions once the new one serves and the gateways know it (at once when
    nothing is wanted). When the new revision cannot be placed because the old one holds
    the capacity, gives up one old replica per pass (at most one unavailable at a time)."""
    if not fleet.old:
        return
    if handed_over >= desired:
        for replica in fleet.old:
            _drain(replica, run.drivers, run.result)
        return
    if missing <= 0 or len(fleet.current) >= desired or not may_place or handed_over < len(fleet.current):
        return
    revision = run.deployment.current_revision
    assert revision is not None
    # Only an old replica whose GPU the new revision could take: same type, active cluster
    # in an allowed region. Draining others would lose capacity for nothing.
    surrender = [
        replica
        for replica in fleet.old
        if replica.revision.gpu_type_id == revision.gpu_type_id
        and replica.cluster.status == Cluster.Status.ACTIVE
        and replica.cluster.region in revision.allowed_regions
    ]
    old_draining = any(r.state == Replica.State.DRAINING for r in run.replicas if r.revision_id != revision.id)
    if surrender and not old_draining:
        _drain(sorted(surrender, key=lambda r: (r.state == Replica.State.READY, r.created_at))[0], run.drivers, run.result)


def _hand_over_from_draining_clusters(run: _Pass, fleet: _Fleet, desired: int) -> None:
    """Keeps as many READY replicas on a draining cluster as the replacements still lack,
    and drains the rest (those not serving at once)."""
    serving = sorted((r for r in fleet.evacuating if r.state == Replica.State.READY), key=lambda r: r.created_at)
    keep = max(0, desired - fleet.handed_over(run.now))
    for replica in [r for r in fleet.evacuating if r.state != Replica.State.READY] + serving[keep:]:
        _drain(replica, run.drivers, run.result)


def _drain_deleted_or_surplus(run: _Pass, fleet: _Fleet, live: list[Replica], desired: int) -> None:
    if run.deployment.deleted_at:
        for replica in live:
            if replica.state in LIVE:
                _drain(replica, run.drivers, run.result)
    elif len(fleet.current) > desired:
        for replica in _surplus(fleet.current, desired):
            _drain(replica, run.drivers, run.result)


def _settle_status(
    run: _Pass, fleet: _Fleet, *, desired: int, crash_loop: bool, missing: int, hold: Hold | None, canary_desired: int
) -> None:
    deployment = run.deployment
    deployment.status, deployment.status_reason = _status(deployment, desired, fleet.current, fleet.old, crash_loop, missing)
    canary = run.canary
    if canary is not None and desired and not crash_loop and not fleet.old:
        ready = sum(1 for replica in fleet.canary if replica.state == Replica.State.READY)
        deployment.status = Deployment.Status.UPDATING
        deployment.status_reason = (
            f"canary {canary.state}: revision {canary.canary_revision.number} takes {canary.traffic_percent}% of requests, "
            f"{ready} of {canary_desired} of its replicas ready"
        )
    if hold is not None:
        deployment.status_reason = hold.describe(run.now)
    still_evacuating = [replica for replica in fleet.evacuating if replica.state in LIVE]
    if still_evacuating and not crash_loop and not fleet.old:
        clusters = ", ".join(sorted({replica.cluster_id for replica in still_evacuating}))
        waiting = (
            f"; no free capacity elsewhere in {', '.join(deployment.current_revision.allowed_regions)} yet"  # type: ignore[union-attr]
            if missing > 0 and len(fleet.current) < desired
            else ""
        )
        deployment.status = Deployment.Status.UPDATING
        deployment.status_reason = f"moving {len(still_evacuating)} replica(s) off draining cluster {clusters}{waiting}"
    run.result.status = deployment.status
    Deployment.objects.unscoped_across_tenants().filter(pk=deployment.pk).update(
        status=deployment.status,
        status_reason=deployment.status_reason,
        failure_count=deployment.failure_count,
        next_attempt_at=deployment.next_attempt_at,
    )


def _held_organizations(organization_ids: set[str]) -> set[str]:
    """Of these organizations, those held (deployments.holds): their deployments take the full pass."""
    capped = Quota.objects.unscoped_across_tenants().filter(organization_id__in=organization_ids, spend_limit_reached_at__isnull=False)
    suspended = Organization.objects.filter(pk__in=organization_ids, status=OrgStatus.SUSPENDED)
    return set(capped.values_list("organization_id", flat=True)) | set(suspended.values_list("pk", flat=True))


def _adopt_compatible(deployment: Deployment, live: list[Replica], canary: Canary | None) -> None:
    """A revision that changes only scaling keeps the running replicas: those with the same
    model and GPU type, in a region still allowed, move to the current revision in place
    instead of being replaced. A running canary's replicas stay its own."""
    revision = deployment.current_revision
    assert revision is not None
    canary_revision_id = canary.canary_revision_id if canary is not None else None
    compatible = [
        replica
        for replica in live
        if replica.revision_id not in (revision.id, canary_revision_id)
        and replica.revision.model == revision.model
        and replica.revision.gpu_type_id == revision.gpu_type_id
        and replica.cluster.region in revision.allowed_regions
    ]
    if compatible:
        Replica.objects.for_org(deployment.organization).filter(pk__in=[replica.pk for replica in compatible]).update(revision=revision)
        for replica in compatible:
            replica.revision = revision


def _observe(replicas: list[Replica], drivers: DriverFactory) -> tuple[dict[str, ObservedReplica], set[str]]:
    return _observe_clusters({replica.cluster for replica in replicas}, drivers)


def _observe_clusters(clusters: set[Cluster], drivers: DriverFactory) -> tuple[dict[str, ObservedReplica], set[str]]:
    observed: dict[str, ObservedReplica] = {}
    unreachable: set[str] = set()
    for cluster in clusters:
        if cluster.status == Cluster.Status.DOWN:
            continue
        try:
            observed.update({seen.replica_id: seen for seen in drivers(cluster).list_replicas()})
        except DriverError:
            unreachable.add(cluster.name)
    return observed, unreachable


def _artifact(entry: CatalogModel | None) -> tuple[str, str]:
    """Where the replica's weights are, and a registered model's task. A registered model is
    served from its directory in the "models" storage, which must be a local filesystem
    that the cluster's machines read (an object store is refused until replicas download)."""
    if entry is None:
        return "", ""
    if entry.source_kind == CatalogModel.SourceKind.HUB:
        return registry.replica_artifact(entry), entry.task  # the replica fetches it at start
    if entry.source_kind != CatalogModel.SourceKind.UPLOAD:
        return entry.source, ""
    directory = model_storage.local_directory(entry.source)
    if directory is None:
        raise DriverError(
            f"{entry.name} is stored in an object store; replicas load registered models only from the embedded "
            "filesystem model storage so far"
        )
    return directory, entry.task


def replica_request(replica: Replica) -> ReplicaRequest:
    """What the replica's cluster is asked to run: its model, artifact and runtime from the
    catalog entry its organization sees, on its revision's GPU type. Raises DriverError for
    a registered model no replica can read."""
    revision = replica.revision
    entry = model_catalog.entry(replica.organization, revision.model)
    gpu_count = 0 if revision.gpu_type_id == CPU else 1
    artifact, task = _artifact(entry)
    return ReplicaRequest(
        replica_id=replica.id,
        model=revision.model,
        token=replica_token(replica.id),
        gpu_type=revision.gpu_type_id,
        gpu_count=gpu_count,
        memory_gb=entry.memory_gb if entry is not None else 1,
        artifact=artifact,
        runtime=entry.runtime if entry is not None else CatalogModel.Runtime.BUILTIN,
        task=task,
    )


def _start(replica: Replica, drivers: DriverFactory, result: PassResult) -> None:
    try:
        seen = drivers(replica.cluster).create_replica(replica_request(replica))
    except DriverError as error:
        replica.reason = str(error)[:500]
        replica.save(update_fields=["reason"])
        return
    replica.node, replica.device = seen.node[:200], seen.device[:100]
    _transition(replica, Replica.State.PROVISIONING, "process started", endpoint=seen.endpoint or "")
    result.created.append(replica.id)


def _place(deployment: Deployment, revision: DeploymentRevision, cluster_name: str) -> Replica:
    replica = Replica.objects.create(
        organization=deployment.organization,
        deployment=deployment,
        revision=revision,
        cluster_id=cluster_name,
        restarts=deployment.failure_count,  # replicas failed in a row before this one
    )
    ReplicaEvent.objects.create(
        organization=deployment.organization, deployment=deployment, replica=replica, to_state=Replica.State.PENDING, reason="placed"
    )
    return replica


def _stop(replica: Replica, drivers: DriverFactory, drain: float) -> None:
    try:
        drivers(replica.cluster).delete_replica(replica.id, drain_seconds=drain)
    except DriverError:
        pass  # the cluster is unreachable; the replica is replaced elsewhere either way


def _drain(replica: Replica, drivers: DriverFactory, result: PassResult) -> None:
    if replica.state == Replica.State.DRAINING:
        return
    _stop(replica, drivers, drain=DRAIN_SECONDS)
    _transition(replica, Replica.State.DRAINING, "draining")
    result.drained.append(replica.id)


# What the local agent can run (deployments.agent): vLLM replicas go to Ray or Kubernetes.
LOCAL_RUNTIMES = frozenset({CatalogModel.Runtime.BUILTIN})


def _placements(deployment: Deployment, revision: DeploymentRevision, count: int) -> list[str]:
    in_use = Counter(
        Replica.objects.unscoped_across_tenants()
        .filter(state__in=HOLDS_GPU, revision__gpu_type=revision.gpu_type, cluster__region__in=revision.allowed_regions)
        .values_list("cluster_id", flat=True)
    )
    inventory = ClusterGpu.objects.filter(
        gpu_type=revision.gpu_type, cluster__status=Cluster.Status.ACTIVE, cluster__region__in=revision.allowed_regions
    ).select_related("cluster")
    entry = model_catalog.entry(deployment.organization, revision.model)
    if entry is not None and entry.runtime not in LOCAL_RUNTIMES:
        inventory = inventory.exclude(cluster__driver=Cluster.Driver.LOCAL)  # the local agent runs the built-in server only
    if entry is not None and entry.source_kind == CatalogModel.SourceKind.UPLOAD:
        # A registered model is a directory on the control plane's machine, which local
        # agents and Ray nodes read; a Kubernetes pod cannot yet.
        inventory = inventory.exclude(cluster__driver=Cluster.Driver.KUBERNETES)
    capacities = [
        Capacity(
            cluster=row.cluster_id,
            region=row.cluster.region,
            free=row.count - in_use[row.cluster_id],
        )
        for row in inventory
    ]
    existing = Counter(
        Replica.objects.for_org(deployment.organization)
        .filter(deployment=deployment, state__in=LIVE)
        .values_list("cluster__region", flat=True)
    )
    return place(count, capacities, list(revision.allowed_regions), dict(existing))


def _status(
    deployment: Deployment, desired: int, current: list[Replica], old: list[Replica], crash_loop: bool, missing: int
) -> tuple[str, str]:
    ready = sum(1 for replica in current if replica.state == Replica.State.READY)
    if crash_loop:
        last = (
            Replica.objects.for_org(deployment.organization)
            .filter(deployment=deployment, state=Replica.State.FAILED)
            .order_by("-stopped_at")
            .first()
        )
        return Deployment.Status.FAILED, f"{deployment.failure_count} replica failures in a row; last: {last.reason if last else 'unknown'}"
    if old:
        return Deployment.Status.UPDATING, f"rolling out revision {deployment.current_revision.number}"  # type: ignore[union-attr]
    if desired == 0 and not current:
        return Deployment.Status.SCALED_TO_ZERO, ""
    if ready >= desired:
        return Deployment.Status.ACTIVE, ""
    placed_short = missing > 0 and len(current) < desired
    if placed_short:
        return (
            Deployment.Status.DEPLOYING,
            f"waiting for capacity: {desired - len(current)} replica(s) could not be placed in "
            f"{', '.join(deployment.revision.allowed_regions)}",
        )
    if deployment.failure_count:
        return Deployment.Status.UNHEALTHY, f"{ready} of {desired} replicas ready after {deployment.failure_count} failure(s)"
    return Deployment.Status.DEPLOYING, f"{ready} of {desired} replicas ready"


def deployments_to_reconcile() -> list[str]:
    """Live deployments, and deleted ones that still hold replicas."""
    with_replicas = Count("replicas", filter=Q(replicas__state__in=HOLDS_GPU))
    return list(
        Deployment.objects.unscoped_across_tenants()
        .annotate(holding=with_replicas)
        .filter(Q(deleted_at=None) | Q(holding__gt=0))
        .values_list("pk", flat=True)
    )


@dataclass
class FleetResult:
    steady: int = 0  # confirmed in the batch: nothing to do
    reconciled: int = 0  # needed the full per-deployment pass
    skipped: int = 0  # another reconciler held them


def _steady(
    deployment: Deployment,
    replicas: list[Replica],
    clusters: dict[str, Cluster],
    observed: dict[str, ObservedReplica],
    unreachable: set[str],
    health: dict[str, str],
) -> bool:
    """Nothing can need doing: every replica READY on the current revision, on an active
    reachable cluster, running and healthy, and no failures or deletion pending."""
    if deployment.deleted_at is not None or deployment.failure_count or deployment.current_revision_id is None:
        return False
    for replica in replicas:
        seen = observed.get(replica.id)
        if (
            replica.state != Replica.State.READY
            or replica.revision_id != deployment.current_revision_id
            or clusters[replica.cluster_id].status != Cluster.Status.ACTIVE
            or replica.cluster_id in unreachable
            or seen is None
            or not seen.running
            or (seen.endpoint and seen.endpoint != replica.endpoint)  # restarted by its cluster
            or health.get(replica.id) != "ready"
        ):
            return False
    return True


# What the fleet pass reads of each deployment: the steady check's columns, the status it
# may correct, and what the autoscaler needs (deployments.scaling.desired_from_store).
_STEADY_FIELDS = (
    "id",
    "organization_id",
    "status",
    "status_reason",
    "deleted_at",
    "failure_count",
    "wake_requested_at",
    "current_revision",
    "current_revision__min_replicas",
    "current_revision__max_replicas",
    "current_revision__target_concurrency",
    "current_revision__scale_down_delay_s",
    "current_revision__idle_timeout_s",
)


def reconcile_fleet(
    deployment_ids: list[str],
    *,
    drivers: DriverFactory = driver_for,
    probe: Probe | None = None,
    scrape: Scrape | None = None,
) -> FleetResult:
    """One pass over many deployments: leases, reads and writes in a handful of queries,
    each cluster observed once, every replica probed and scraped at once, the autoscaler
    decided from one cache read. Deployments in steady state are confirmed in the batch;
    the others get the full pass, with what was gathered here."""
    owner, now = uuid.uuid4().hex, timezone.now()
    deployments_table = Deployment.objects.unscoped_across_tenants()
    free = Q(lease_until=None) | Q(lease_until__lt=now)
    deployments_table.filter(pk__in=deployment_ids).filter(free).update(lease_owner=owner, lease_until=now + LEASE)
    result = FleetResult()
    leased: list[str] = []
    needs_pass: list[str] = []
    probed = Probed()
    try:
        # Only the columns the steady check and the autoscaler read (model instances of 10,000
        # full rows cost twice as much).
        deployments = list(deployments_table.filter(lease_owner=owner).select_related("current_revision").only(*_STEADY_FIELDS))
        leased = [deployment.pk for deployment in deployments]
        held = _held_organizations({deployment.organization_id for deployment in deployments})
        # A canary's replicas are placed, kept and drained by the full pass.
        with_canary = set(
            Canary.objects.unscoped_across_tenants()
            .filter(deployment__lease_owner=owner, state__in=Canary.ACTIVE_STATES)
            .values_list("deployment_id", flat=True)
        )
        result.skipped = len(deployment_ids) - len(leased)
        by_deployment: dict[str, list[Replica]] = {deployment_id: [] for deployment_id in leased}
        live = (
            Replica.objects.unscoped_across_tenants()
            .filter(deployment__lease_owner=owner, state__in=HOLDS_GPU)  # a join, not 10,000 ids again
            .only("id", "deployment_id", "state", "revision_id", "cluster_id", "endpoint", "ready_at")
        )
        for replica in live:
            by_deployment[replica.deployment_id].append(replica)
        clusters = Cluster.objects.in_bulk()  # once, not once per replica
        in_use = {replica.cluster_id for replicas in by_deployment.values() for replica in replicas}
        observed, unreachable = _observe_clusters({clusters[name] for name in in_use}, drivers)
        targets = [
            Target(replica_id=replica.id, endpoint=replica.endpoint, cluster=replica.cluster_id)
            for replicas in by_deployment.values()
            for replica in replicas
            if _worth_probing(replica, clusters[replica.cluster_id], observed.get(replica.id), unreachable)
        ]
        with concurrent.futures.ThreadPoolExecutor(max_workers=1) as beside:
            # The autoscaler's stored state is read while the replicas answer (the cache
            # needs nothing the probes give); the probes stay on this thread, as injected
            # ones may read the database.
            reading = beside.submit(cache.get_many, [cache_key(deployment_id) for deployment_id in leased])
            probed = probe_and_scrape(targets, probe=probe, scrape=scrape)
            stored = reading.result()
        clock = time.time()
        to_store: dict[str, object] = {}
        samples: dict[str, Decimal] = {}
        status_changes: dict[Deployment.Status, list[str]] = {Deployment.Status.ACTIVE: [], Deployment.Status.SCALED_TO_ZERO: []}
        for deployment in deployments:
            replicas = by_deployment[deployment.pk]
            if (
                deployment.organization_id in held
                or deployment.pk in with_canary
                or not _steady(deployment, replicas, clusters, observed, unreachable, probed.health)
            ):
                needs_pass.append(deployment.pk)
                continue
            key = cache_key(deployment.pk)
            scraped = Scraped.of(probed.metrics, (replica.id for replica in replicas))
            decided = decided_from_store(deployment=deployment, replicas=replicas, stored=stored.get(key), scraped=scraped, now=clock)
            if decided.desired != len(replicas):
                needs_pass.append(deployment.pk)  # the full pass takes these samples itself
                continue
            to_store[key] = decided.stored
            samples.update(decided.samples)
            result.steady += 1
            status = Deployment.Status.ACTIVE if replicas else Deployment.Status.SCALED_TO_ZERO
            if deployment.status != status or deployment.status_reason:
                status_changes[status].append(deployment.pk)
        cache.set_many(to_store, timeout=CACHE_SECONDS)
        steady_replicas = [replica for replicas in by_deployment.values() for replica in replicas if replica.id in samples]
        record_throughput(samples=samples, replicas=steady_replicas)  # the fleet's samples in one go
        for status, ids in status_changes.items():
            if ids:
                deployments_table.filter(pk__in=ids).update(status=status, status_reason="")
                publish_after_commit(groups=[deployment_group(deployment_id) for deployment_id in ids])
    finally:
        deployments_table.filter(lease_owner=owner).update(lease_owner="", lease_until=None)
    for deployment_id in needs_pass:
        if reconcile(deployment_id, drivers=drivers, probe=probe, scrape=scrape, probed=probed) is not None:
            result.reconciled += 1
    return result
