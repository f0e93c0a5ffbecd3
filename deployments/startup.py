"""Where a deployment's start stands, for the stage bar on its page: scaled to zero, waking
(a request arrived, no replica placed yet), placing (a replica placed, its process
starting), loading (the model loading), ready; and how long the start has taken.

`startup_stage` decides from plain values (the deployment's status, creation and last wake,
its newest replica's state and when it entered it) and is tested state by state;
`startup_of` reads those values for one deployment.

When a start began: the deployment's creation or a wake, where the replica was placed
within START_LEAD_S after it (the control plane places within a reconcile pass unless
capacity is short), else the replica's own placement. A wake is the gateway's mark of the
latest request that found no READY replica, so while no replica is placed yet the waking
stage counts from the latest such request."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.utils import timezone

from deployments.models import Deployment, Replica, ReplicaEvent
from deployments.scaling import COLD_START_PATIENCE_S
from tenancy.models import Organization

START_LEAD_S = 60.0


class Stage(enum.StrEnum):
    SCALED_TO_ZERO = "scaled_to_zero"
    WAKING = "waking"
    PLACING = "placing"
    LOADING = "loading"
    READY = "ready"


STAGES = tuple(Stage)  # in the order a start goes through them
LABELS = {
    Stage.SCALED_TO_ZERO: "Scaled to zero",
    Stage.WAKING: "Waking",
    Stage.PLACING: "Placing",
    Stage.LOADING: "Loading the model",
    Stage.READY: "Ready",
}
DESCRIPTIONS = {
    Stage.SCALED_TO_ZERO: "Scaled to zero: no replica runs, and the next request starts one.",
    Stage.WAKING: "Waking: a request arrived with no replica running; the control plane places one.",
    Stage.PLACING: "Placing: a replica is placed on a cluster and its model server process starts.",
    Stage.LOADING: "Loading: the replica loads the model.",
    Stage.READY: "Ready: the newest replica serves requests.",
}
# The replica states a start goes through, by the stage each stands for.
STAGE_OF_STATE = {
    Replica.State.PENDING: Stage.PLACING,
    Replica.State.PROVISIONING: Stage.PLACING,
    Replica.State.LOADING: Stage.LOADING,
    Replica.State.READY: Stage.READY,
}
# Statuses in which the control plane is placing a replica that is not there yet.
PLACING_STATUSES = (Deployment.Status.DEPLOYING, Deployment.Status.UPDATING, Deployment.Status.UNHEALTHY)


@dataclass(frozen=True, slots=True)
class ReplicaProgress:
    """The deployment's newest replica: its state, and when it was placed and entered that state."""

    state: str
    created_at: datetime
    entered_at: datetime


STEP_STATE_LABELS = {"done": "done", "current": "now", "todo": "to come", "skipped": "not part of this start"}


@dataclass(frozen=True, slots=True)
class Step:
    stage: Stage
    label: str
    state: str  # "done", "current", "todo", or "skipped" (not part of this start: a new deployment is not woken)

    @property
    def state_label(self) -> str:
        return STEP_STATE_LABELS[self.state]


@dataclass(frozen=True, slots=True)
class Startup:
    stage: Stage
    began_at: datetime | None  # None while scaled to zero: nothing is starting
    elapsed_s: int | None  # from began_at to now, or to READY once done
    from_zero: bool  # the start answers a wake
    stage_since: datetime | None = None  # when the current stage began, where known

    @property
    def done(self) -> bool:
        return self.stage is Stage.READY

    @property
    def label(self) -> str:
        return LABELS[self.stage]

    @property
    def description(self) -> str:
        return DESCRIPTIONS[self.stage]

    @property
    def position(self) -> int:
        """1-based, of len(STAGES)."""
        return STAGES.index(self.stage) + 1

    @property
    def steps(self) -> list[Step]:
        current = STAGES.index(self.stage)
        steps = []
        for index, stage in enumerate(STAGES):
            if index == current:
                state = "done" if self.done else "current"
            elif index > current:
                state = "todo"
            elif not self.from_zero and stage in (Stage.SCALED_TO_ZERO, Stage.WAKING):
                state = "skipped"
            else:
                state = "done"
            steps.append(Step(stage, LABELS[stage], state))
        return steps

    @property
    def key(self) -> tuple[object, ...]:
        """What changes when the bar must be redrawn: not the ticking seconds of a start under way."""
        return (self.stage, self.began_at, self.stage_since, self.from_zero, self.elapsed_s if self.done else None)


def _seconds(delta: timedelta) -> int:
    return max(0, int(delta.total_seconds()))


def _began(placed: datetime, *, created_at: datetime, wake_requested_at: datetime | None) -> tuple[datetime, bool]:
    """When the start of a replica placed at `placed` began, and whether it answers a wake."""
    lead = timedelta(seconds=START_LEAD_S)
    if placed - lead <= created_at <= placed:
        return created_at, False
    if wake_requested_at is not None and placed - lead <= wake_requested_at <= placed:
        return wake_requested_at, True
    return placed, False


def startup_stage(
    *,
    status: str,
    created_at: datetime,
    wake_requested_at: datetime | None,
    replica: ReplicaProgress | None,
    now: datetime,
) -> Startup | None:
    """The start's stage and elapsed seconds. `replica`: the newest one still running or
    starting, else the newest one at all (stopped, failed or draining: when it ended says
    when a later wake or placement began), else None. None when no start is under way or
    to be shown: a failed deployment, or an active one with nothing running."""
    if status == Deployment.Status.FAILED:
        return None
    if replica is not None and replica.state in STAGE_OF_STATE:
        stage = STAGE_OF_STATE[Replica.State(replica.state)]
        began, from_zero = _began(replica.created_at, created_at=created_at, wake_requested_at=wake_requested_at)
        until = replica.entered_at if stage is Stage.READY else now
        return Startup(stage, began, _seconds(until - began), from_zero, stage_since=replica.entered_at)
    ended = replica.entered_at if replica is not None else None
    woken = (
        wake_requested_at is not None
        and (ended is None or wake_requested_at > ended)
        and now - wake_requested_at < timedelta(seconds=COLD_START_PATIENCE_S)
    )
    if status == Deployment.Status.SCALED_TO_ZERO:
        if woken:
            assert wake_requested_at is not None
            return Startup(Stage.WAKING, wake_requested_at, _seconds(now - wake_requested_at), True, stage_since=wake_requested_at)
        return Startup(Stage.SCALED_TO_ZERO, None, None, True, stage_since=ended)
    if status in PLACING_STATUSES:  # to be placed: none yet, or the last one stopped or failed
        if woken:
            assert wake_requested_at is not None
            began, from_zero = wake_requested_at, True
        else:
            began, from_zero = max(created_at, ended) if ended is not None else created_at, False
        return Startup(Stage.PLACING, began, _seconds(now - began), from_zero, stage_since=began)
    return None


def newest_replica(org: Organization, deployment: Deployment) -> ReplicaProgress | None:
    """The deployment's newest replica running or starting, else its newest at all, with
    when it entered its state (its newest transition to it; READY: its ready_at)."""
    replicas = Replica.objects.for_org(org).filter(deployment=deployment).order_by("-created_at", "-id")
    replica = replicas.filter(state__in=tuple(STAGE_OF_STATE)).first() or replicas.first()
    if replica is None:
        return None
    entered = (
        ReplicaEvent.objects.for_org(org)
        .filter(replica=replica, to_state=replica.state)
        .order_by("-at", "-id")
        .values_list("at", flat=True)
        .first()
    )
    if replica.state == Replica.State.READY and replica.ready_at is not None:
        entered = replica.ready_at
    return ReplicaProgress(state=replica.state, created_at=replica.created_at, entered_at=entered or replica.created_at)


def startup_of(org: Organization, deployment: Deployment, *, now: datetime | None = None) -> Startup | None:
    return startup_stage(
        status=deployment.status,
        created_at=deployment.created_at,
        wake_requested_at=deployment.wake_requested_at,
        replica=newest_replica(org, deployment),
        now=now or timezone.now(),
    )
