"""Dedicated replica time, metered as GPU-seconds per deployment from the replicas' state
transitions (`deployments.models.ReplicaEvent`), for the price book to rate.

The billable interval of a replica: from its transition into PROVISIONING (the moment the
cluster was asked to start it, so the cold start, provisioning and loading, is billed, as
Baseten bills from replica start) until its transition into STOPPED or FAILED, or until
now while it still runs. DRAINING is billed: the GPU is held until the process is gone. A
replica that never left PENDING holds no GPU and costs nothing.

Billing is a walk over a replica's events in order: on while in PROVISIONING, LOADING,
READY or DRAINING, off in PENDING, STOPPED or FAILED, and each on-interval is billed on its
own. The reconcile loop never restarts a failed row (FAILED and STOPPED are terminal; a
replacement is a new Replica), so a replica has one interval today; walking the events
keeps the figure right if a row ever goes back to PROVISIONING after a failure: the time
it spent FAILED is not billed.

Amounts are exact `Decimal` seconds with six places: event times have microsecond
resolution, so nothing is rounded and consecutive windows add up to the whole window.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from django.db.models import Exists, OuterRef, Q, Subquery
from django.utils import timezone

from deployments.models import Replica, ReplicaEvent
from tenancy.models import Organization

# One replica holds exactly one GPU of its revision's type: placement counts a replica
# against one GPU of a cluster's inventory (deployments.reconcile._placements) and quotas
# count a deployment's max_replicas as GPUs (deployments.services). A revision has no GPU
# count; when one exists, multiply by it here.
GPUS_PER_REPLICA = 1

BILLED_STATES = frozenset({Replica.State.PROVISIONING, Replica.State.LOADING, Replica.State.READY, Replica.State.DRAINING})
READY_STATES = frozenset({Replica.State.READY})

GROUP_FIELDS = ("deployment_id", "gpu_type", "region", "cluster")
MAX_BUCKETS = 10_000
_MICROSECOND = timedelta(microseconds=1)

Interval = tuple[datetime, datetime]


@dataclass(frozen=True)
class GpuSecondsRow:
    """GPU-seconds of one group. Fields not grouped by are None (a deployment may span
    regions, clusters and, across revisions, GPU types)."""

    deployment_id: str | None
    deployment_name: str | None
    gpu_type: str | None
    region: str | None
    cluster: str | None
    gpu_seconds: Decimal


@dataclass(frozen=True)
class ReplicaCountPoint:
    """Replicas of a deployment in one step of a chart: the most that were READY, and the
    most that were billed (held a GPU), at any instant of the step."""

    bucket_start: datetime
    ready: int
    billed: int


@dataclass(frozen=True)
class _ReplicaHistory:
    replica: Replica
    deployment_name: str
    events: list[ReplicaEvent]


def on_intervals(events: Iterable[ReplicaEvent], on_states: frozenset[str], until: datetime) -> list[Interval]:
    """The [from, to) intervals a replica spent in `on_states`, from its events in order;
    one still open at the last event runs to `until`."""
    intervals: list[Interval] = []
    on_since: datetime | None = None
    for event in events:
        if event.to_state in on_states:
            if on_since is None:
                on_since = event.at
        elif on_since is not None:
            intervals.append((on_since, event.at))
            on_since = None
    if on_since is not None and on_since < until:
        intervals.append((on_since, until))
    return intervals


def _clipped_microseconds(intervals: Iterable[Interval], start: datetime, end: datetime) -> int:
    total = 0
    for began, ended in intervals:
        began, ended = max(began, start), min(ended, end)
        if began < ended:
            total += (ended - began) // _MICROSECOND
    return total


def _seconds(microseconds: int) -> Decimal:
    return Decimal(microseconds).scaleb(-6)


def _histories(org: Organization, start: datetime, end: datetime, deployment_id: str | None = None) -> list[_ReplicaHistory]:
    """Every replica of `org` that could hold a GPU during [start, end), with all its
    events before `end`, in one query. A replica counts if it changed state in the window
    or was in a billed state at `start` (its last event before `start`); earlier events
    are fetched too, as the walk needs the state at `start` (a replica has a handful)."""
    last_state_before_start = (
        ReplicaEvent.objects.for_org(org).filter(replica=OuterRef("pk"), at__lt=start).order_by("-at", "-id").values("to_state")[:1]
    )
    changed_in_window = ReplicaEvent.objects.for_org(org).filter(replica=OuterRef("pk"), at__gte=start, at__lt=end)
    replicas = (
        Replica.objects.for_org(org)
        .annotate(state_at_start=Subquery(last_state_before_start))
        .filter(Q(state_at_start__in=BILLED_STATES) | Exists(changed_in_window))
    )
    if deployment_id is not None:
        replicas = replicas.filter(deployment_id=deployment_id)
    events = (
        ReplicaEvent.objects.for_org(org)
        .filter(replica__in=replicas.values("pk"), at__lt=end)
        .select_related("deployment", "replica__cluster", "replica__revision")
        # Only what the walk and the groups read: a long window holds many events.
        .only(
            "replica_id",
            "to_state",
            "at",
            "deployment__name",
            "replica__deployment_id",
            "replica__cluster__region",
            "replica__revision__gpu_type_id",
        )
        .order_by("replica_id", "at", "id")
    )
    histories: dict[str, _ReplicaHistory] = {}
    for event in events:
        history = histories.get(event.replica_id)
        if history is None:
            history = histories[event.replica_id] = _ReplicaHistory(replica=event.replica, deployment_name=event.deployment.name, events=[])
        history.events.append(event)
    return list(histories.values())


def _check_window(start: datetime, end: datetime) -> None:
    if start >= end:
        raise ValueError("start must be before end")


def gpu_seconds(
    org: Organization,
    start: datetime,
    end: datetime,
    group_by: Sequence[str] = ("deployment_id",),
    *,
    deployment_id: str | None = None,
    now: datetime | None = None,
) -> list[GpuSecondsRow]:
    """GPU-seconds of `org`'s replicas in [start, end), per group of `group_by` (any of
    GROUP_FIELDS; empty for one total row). Replicas still running count until `now` (or
    `end` if earlier). Groups with no billed time are left out."""
    _check_window(start, end)
    unknown = [name for name in group_by if name not in GROUP_FIELDS]
    if unknown:
        raise ValueError(f"cannot group by {', '.join(unknown)}; choose from {', '.join(GROUP_FIELDS)}")
    grouped = set(group_by)
    until = min(end, now or timezone.now())
    microseconds: dict[tuple[str | None, ...], int] = defaultdict(int)
    names: dict[str, str] = {}
    for history in _histories(org, start, end, deployment_id):
        billed = _clipped_microseconds(on_intervals(history.events, BILLED_STATES, until), start, end)
        if not billed:
            continue
        replica = history.replica
        # The GPU type cannot change under a running replica: adopting it into a new
        # revision requires the same GPU type (deployments.reconcile._adopt_compatible).
        dimensions = {
            "deployment_id": replica.deployment_id,
            "gpu_type": replica.revision.gpu_type_id,
            "region": replica.cluster.region,
            "cluster": replica.cluster_id,
        }
        key = tuple(dimensions[name] if name in grouped else None for name in GROUP_FIELDS)
        microseconds[key] += billed * GPUS_PER_REPLICA
        names[replica.deployment_id] = history.deployment_name
    rows = [
        GpuSecondsRow(
            deployment_id=deployment,
            deployment_name=names[deployment] if deployment is not None else None,
            gpu_type=gpu_type,
            region=region,
            cluster=cluster,
            gpu_seconds=_seconds(total),
        )
        for (deployment, gpu_type, region, cluster), total in microseconds.items()
    ]
    return sorted(
        rows, key=lambda row: (row.deployment_name or "", row.deployment_id or "", row.gpu_type or "", row.region or "", row.cluster or "")
    )


def _peaks_per_bucket(intervals: Iterable[Interval], bucket_starts: list[datetime], end: datetime) -> list[int]:
    """The highest number of overlapping intervals at any instant of each bucket."""
    deltas: dict[datetime, int] = defaultdict(int)
    for began, ended in intervals:
        if began < ended:
            deltas[began] += 1
            deltas[ended] -= 1
    changes = sorted(deltas.items())
    peaks: list[int] = []
    level, index = 0, 0
    for position, bucket_start in enumerate(bucket_starts):
        bucket_end = bucket_starts[position + 1] if position + 1 < len(bucket_starts) else end
        while index < len(changes) and changes[index][0] <= bucket_start:
            level += changes[index][1]
            index += 1
        peak = level
        while index < len(changes) and changes[index][0] < bucket_end:
            level += changes[index][1]
            index += 1
            peak = max(peak, level)
        peaks.append(peak)
    return peaks


def replicas_over_time(
    org: Organization, deployment_id: str, start: datetime, end: datetime, step_s: int, *, now: datetime | None = None
) -> list[ReplicaCountPoint]:
    """For the deployment page's chart: per step of `step_s` seconds from `start` (the
    last step ends at `end`), the most replicas READY and the most billed at any instant
    of the step. The maximum, not a sample at the step's start, so a replica that lived
    for part of a step still shows."""
    _check_window(start, end)
    if step_s <= 0:
        raise ValueError("step_s must be positive")
    step = timedelta(seconds=step_s)
    if (end - start) / step > MAX_BUCKETS:
        raise ValueError(f"at most {MAX_BUCKETS} steps; use a longer step or a shorter window")
    bucket_starts: list[datetime] = []
    bucket_start = start
    while bucket_start < end:
        bucket_starts.append(bucket_start)
        bucket_start += step
    until = min(end, now or timezone.now())
    ready: list[Interval] = []
    billed: list[Interval] = []
    for history in _histories(org, start, end, deployment_id):
        ready.extend(on_intervals(history.events, READY_STATES, until))
        billed.extend(on_intervals(history.events, BILLED_STATES, until))
    ready_peaks = _peaks_per_bucket(ready, bucket_starts, end)
    billed_peaks = _peaks_per_bucket(billed, bucket_starts, end)
    return [
        ReplicaCountPoint(bucket_start=at, ready=r, billed=b) for at, r, b in zip(bucket_starts, ready_peaks, billed_peaks, strict=True)
    ]
