"""The start-up stage bar: `startup_stage` state by state (plain values, no database), then
what the page and its socket show of a real start driven by the reconcile loop."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.test import Client

from deployments import live
from deployments.models import Deployment, Replica
from deployments.scaling import COLD_START_PATIENCE_S
from deployments.startup import START_LEAD_S, ReplicaProgress, Stage, Startup, startup_of, startup_stage
from tests.conftest import Tenants
from tests.controlplane.test_reconcile import Fleet
from tests.factories import create_deployment, ensure_clusters

T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)  # the deployment's creation
DAY = timedelta(days=1)
S = Deployment.Status
R = Replica.State


def _at(seconds: float, base: datetime = T0 + DAY) -> datetime:
    return base + timedelta(seconds=seconds)


def _replica(state: str, placed: float, entered: float) -> ReplicaProgress:
    return ReplicaProgress(state=state, created_at=_at(placed), entered_at=_at(entered))


def _steps(startup: Startup | None) -> list[str]:
    assert startup is not None
    return [step.state for step in startup.steps]


def test_scaled_to_zero_with_no_request_waiting() -> None:
    stopped = _replica(R.STOPPED, -600, -60)
    startup = startup_stage(status=S.SCALED_TO_ZERO, created_at=T0, wake_requested_at=_at(-700), replica=stopped, now=_at(0))
    assert startup == Startup(Stage.SCALED_TO_ZERO, None, None, True, stage_since=_at(-60))
    assert _steps(startup) == ["current", "todo", "todo", "todo", "todo"]
    assert not startup.done and startup.description.startswith("Scaled to zero")


def test_a_request_at_zero_wakes_it_and_the_seconds_count_from_the_request() -> None:
    stopped = _replica(R.STOPPED, -600, -60)
    startup = startup_stage(status=S.SCALED_TO_ZERO, created_at=T0, wake_requested_at=_at(-3), replica=stopped, now=_at(0))
    assert startup == Startup(Stage.WAKING, _at(-3), 3, True, stage_since=_at(-3))
    assert _steps(startup) == ["done", "current", "todo", "todo", "todo"]


def test_a_wake_nobody_acted_on_within_the_autoscalers_patience_is_no_longer_waking() -> None:
    stale = _at(-COLD_START_PATIENCE_S - 1)
    startup = startup_stage(status=S.SCALED_TO_ZERO, created_at=T0, wake_requested_at=stale, replica=None, now=_at(0))
    assert startup is not None and startup.stage is Stage.SCALED_TO_ZERO


@pytest.mark.parametrize(
    ("state", "stage", "steps"),
    [
        (R.PENDING, Stage.PLACING, ["done", "done", "current", "todo", "todo"]),
        (R.PROVISIONING, Stage.PLACING, ["done", "done", "current", "todo", "todo"]),
        (R.LOADING, Stage.LOADING, ["done", "done", "done", "current", "todo"]),
    ],
)
def test_a_woken_replica_starting_counts_from_the_wake(state: str, stage: Stage, steps: list[str]) -> None:
    replica = _replica(state, placed=-9, entered=-4)  # placed a second after the request, in this state for 4 s
    startup = startup_stage(status=S.DEPLOYING, created_at=T0, wake_requested_at=_at(-10), replica=replica, now=_at(0))
    assert startup == Startup(stage, _at(-10), 10, True, stage_since=_at(-4))
    assert _steps(startup) == steps


def test_ready_stops_the_count_at_the_moment_it_became_ready() -> None:
    ready = _replica(R.READY, placed=-99, entered=-86)  # ready 14 s after the wake
    for now in (_at(0), _at(3600)):
        startup = startup_stage(status=S.ACTIVE, created_at=T0, wake_requested_at=_at(-100), replica=ready, now=now)
        assert startup == Startup(Stage.READY, _at(-100), 14, True, stage_since=_at(-86))
        assert startup.done and _steps(startup) == ["done"] * 5


def test_a_new_deployment_is_placing_from_its_creation_and_never_woken() -> None:
    nothing_yet = startup_stage(status=S.DEPLOYING, created_at=T0, wake_requested_at=None, replica=None, now=T0 + timedelta(seconds=2))
    assert nothing_yet == Startup(Stage.PLACING, T0, 2, False, stage_since=T0)
    assert _steps(nothing_yet) == ["skipped", "skipped", "current", "todo", "todo"]
    # A request that arrived before its first replica was placed does not make it a wake:
    # the start began at creation.
    loading = ReplicaProgress(R.LOADING, created_at=T0 + timedelta(seconds=1), entered_at=T0 + timedelta(seconds=3))
    startup = startup_stage(
        status=S.DEPLOYING, created_at=T0, wake_requested_at=T0 + timedelta(seconds=0.5), replica=loading, now=T0 + timedelta(seconds=8)
    )
    assert startup == Startup(Stage.LOADING, T0, 8, False, stage_since=T0 + timedelta(seconds=3))
    assert _steps(startup) == ["skipped", "skipped", "done", "current", "todo"]


def test_a_replica_placed_later_counts_from_its_own_placement() -> None:
    """A scale-up or a replacement, long after the deployment's creation and any wake."""
    replica = _replica(R.PROVISIONING, placed=-5, entered=-4)
    startup = startup_stage(status=S.ACTIVE, created_at=T0, wake_requested_at=_at(-5 - START_LEAD_S - 1), replica=replica, now=_at(0))
    assert startup == Startup(Stage.PLACING, _at(-5), 5, False, stage_since=_at(-4))


def test_after_a_failed_replica_the_next_placement_counts_from_the_failure() -> None:
    failed = _replica(R.FAILED, placed=-300, entered=-20)
    startup = startup_stage(status=S.UNHEALTHY, created_at=T0, wake_requested_at=None, replica=failed, now=_at(0))
    assert startup == Startup(Stage.PLACING, _at(-20), 20, False, stage_since=_at(-20))


def test_a_failed_deployment_shows_no_start() -> None:
    failed = _replica(R.FAILED, placed=-300, entered=-20)
    assert startup_stage(status=S.FAILED, created_at=T0, wake_requested_at=None, replica=failed, now=_at(0)) is None


def test_the_redraw_key_ignores_ticking_seconds_but_not_a_new_stage() -> None:
    def at(now: float, state: str = R.LOADING) -> Startup:
        startup = startup_stage(
            status=S.DEPLOYING, created_at=T0, wake_requested_at=_at(-10), replica=_replica(state, -9, -4), now=_at(now)
        )
        assert startup is not None
        return startup

    assert at(0).key == at(5).key and at(0).elapsed_s != at(5).elapsed_s
    assert at(0).key != at(0, R.READY).key


def _client(user) -> Client:  # type: ignore[no-untyped-def]
    client = Client()
    client.force_login(user)
    return client


def test_a_real_start_on_the_page_stage_by_stage(tenants: Tenants) -> None:
    """The reconcile loop with the in-memory driver: placed and started, loading, ready;
    the page's bar follows, and the socket's snapshot changes with each stage."""
    ensure_clusters()
    fleet = Fleet()
    deployment = create_deployment(tenants.org_a, name="chat")
    url = f"/o/{tenants.org_a.slug}/deployments/{deployment.pk}/"
    viewer = _client(tenants.viewer_a)

    def snapshot() -> dict[str, str]:
        fresh = Deployment.objects.for_org(tenants.org_a).get(pk=deployment.pk)
        return live.rendered(fresh, live.live_parts(tenants.org_a, fresh))

    page = viewer.get(url).content.decode()
    assert 'aria-current="step">Placing' in page and 'data-testid="startup-elapsed"' in page
    before = snapshot()

    fleet.run(deployment)  # placed and started
    fleet.loading = {replica.endpoint for replica in Replica.objects.for_org(tenants.org_a).filter(deployment=deployment)}
    fleet.run(deployment)  # its /health says loading
    loading = startup_of(tenants.org_a, Deployment.objects.for_org(tenants.org_a).get(pk=deployment.pk))
    assert loading is not None and loading.stage is Stage.LOADING and not loading.from_zero
    assert loading.began_at == deployment.created_at
    during = snapshot()
    assert not live.same_page(before, during)
    assert 'aria-current="step">Loading the model' in viewer.get(url).content.decode()

    fleet.loading.clear()
    fleet.run(deployment)  # ready
    ready = Deployment.objects.for_org(tenants.org_a).get(pk=deployment.pk)
    assert ready.status == Deployment.Status.ACTIVE
    done = startup_of(tenants.org_a, ready)
    replica = Replica.objects.for_org(tenants.org_a).get(deployment=deployment)
    assert done is not None and done.done and done.stage_since == replica.ready_at
    assert done.elapsed_s == int((replica.ready_at - deployment.created_at).total_seconds())  # type: ignore[operator]
    page = viewer.get(url).content.decode()
    assert "The start took" in page and "aria-current" not in page.split('id="live-startup"', 1)[1].split("</div>", 1)[0]
    assert "data-startup-elapsed" not in page  # nothing ticks once it is ready
