"""Dedicated replica time as GPU-seconds: the billable interval (provisioning through
stopped or failed, cold start and draining included), clipping to the window, replicas
still running, restarts, grouping, tenancy and the API's answers to bad input."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deployments import services
from deployments.models import Deployment, Replica, ReplicaEvent
from metering.gpu_time import GpuSecondsRow, ReplicaCountPoint, gpu_seconds, replicas_over_time
from tenancy.models import Organization
from tests.conftest import Tenants
from tests.controlplane.test_reconcile import Fleet
from tests.factories import create_deployment, ensure_clusters, owner_context
from tests.helpers import session_api

T0 = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)
LATER = T0 + timedelta(days=30)  # "now" for windows that end before it

P, PROV, LOAD, READY, DRAIN, STOP, FAIL = "pending", "provisioning", "loading", "ready", "draining", "stopped", "failed"


def s(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def add_replica(deployment: Deployment, transitions: list[tuple[str, datetime]], cluster: str = "local-us-east") -> Replica:
    """A replica with its events, as the reconcile loop records them: (to_state, at)."""
    org = deployment.organization
    replica = Replica.objects.create(
        organization=org,
        deployment=deployment,
        revision=deployment.current_revision,
        cluster_id=cluster,
        created_at=transitions[0][1],
        state=transitions[-1][0],
    )
    previous = ""
    for state, at in transitions:
        ReplicaEvent.objects.create(organization=org, deployment=deployment, replica=replica, from_state=previous, to_state=state, at=at)
        previous = state
    return replica


def seconds_of(org: Organization, start: datetime, end: datetime, **options: object) -> Decimal:
    return sum((row.gpu_seconds for row in gpu_seconds(org, start, end, **options)), Decimal(0))  # type: ignore[arg-type]


FULL_LIFE = [(P, s(0)), (PROV, s(10)), (LOAD, s(40)), (READY, s(100)), (DRAIN, s(1000)), (STOP, s(1030))]


def test_cold_start_and_draining_are_billed(tenants: Tenants) -> None:
    deployment = create_deployment(tenants.org_a, name="chat")
    add_replica(deployment, FULL_LIFE)
    [row] = gpu_seconds(tenants.org_a, T0 - HOUR, T0 + HOUR, now=LATER)
    # From provisioning (10 s) to stopped (1030 s): pending's 10 s are free.
    assert row == GpuSecondsRow(
        deployment_id=deployment.id, deployment_name="chat", gpu_type=None, region=None, cluster=None, gpu_seconds=Decimal("1020.000000")
    )
    assert str(row.gpu_seconds) == "1020.000000"
    assert seconds_of(tenants.org_a, s(1000), T0 + HOUR, now=LATER) == Decimal(30)  # draining alone
    assert seconds_of(tenants.org_a, s(10), s(100), now=LATER) == Decimal(90)  # provisioning + loading


def test_intervals_are_clipped_to_the_window(tenants: Tenants) -> None:
    deployment = create_deployment(tenants.org_a)
    add_replica(deployment, FULL_LIFE)
    assert seconds_of(tenants.org_a, s(50), s(1010), now=LATER) == Decimal(960)
    assert seconds_of(tenants.org_a, s(500), s(501), now=LATER) == Decimal(1)  # READY since before the window
    assert gpu_seconds(tenants.org_a, s(1030), T0 + HOUR, now=LATER) == []  # stopped exactly at start
    assert gpu_seconds(tenants.org_a, T0 - HOUR, s(10), now=LATER) == []  # window ends as provisioning starts
    assert seconds_of(tenants.org_a, s(10.000001), s(10.5), now=LATER) == Decimal("0.499999")  # microseconds, exact


def test_a_running_replica_counts_until_now_or_the_end(tenants: Tenants) -> None:
    deployment = create_deployment(tenants.org_a)
    add_replica(deployment, [(P, s(0)), (PROV, s(10)), (READY, s(70))])  # no loading: straight to ready
    assert seconds_of(tenants.org_a, T0, T0 + HOUR, now=s(500)) == Decimal(490)
    assert seconds_of(tenants.org_a, T0, s(300), now=LATER) == Decimal(290)
    assert gpu_seconds(tenants.org_a, s(600), s(700), now=s(500)) == []  # a window wholly in the future


def test_a_failed_replica_that_restarts_is_billed_per_interval(tenants: Tenants) -> None:
    deployment = create_deployment(tenants.org_a)
    add_replica(deployment, [(P, s(0)), (PROV, s(0)), (FAIL, s(60)), (PROV, s(120)), (LOAD, s(130)), (READY, s(150)), (STOP, s(300))])
    # 0-60 and 120-300; the 60 s it spent FAILED are not billed.
    assert seconds_of(tenants.org_a, T0 - HOUR, T0 + HOUR, now=LATER) == Decimal(240)
    assert seconds_of(tenants.org_a, s(30), s(130), now=LATER) == Decimal(40)


def test_a_replica_that_never_left_pending_costs_nothing(tenants: Tenants) -> None:
    deployment = create_deployment(tenants.org_a)
    add_replica(deployment, [(P, s(0))])  # still pending
    add_replica(deployment, [(P, s(0)), (FAIL, s(50))])  # its cluster went down before it started
    assert gpu_seconds(tenants.org_a, T0 - HOUR, T0 + HOUR, now=LATER) == []
    assert gpu_seconds(tenants.org_a, T0 - HOUR, T0 + HOUR, group_by=(), now=LATER) == []


def _two_regions(org: Organization) -> tuple[Deployment, Deployment]:
    ensure_clusters()
    chat = create_deployment(org, name="chat", allowed_regions=("us-east", "eu-west"))
    add_replica(chat, [(PROV, s(0)), (READY, s(60)), (STOP, s(100))], cluster="local-us-east")
    add_replica(chat, [(PROV, s(0)), (READY, s(60)), (STOP, s(200))], cluster="local-eu-west")
    embed = create_deployment(org, name="embed", gpu_type="T4")
    add_replica(embed, [(PROV, s(0)), (STOP, s(1000))], cluster="local-us-east")
    return chat, embed


def test_grouping_by_gpu_type_region_and_cluster(tenants: Tenants) -> None:
    chat, embed = _two_regions(tenants.org_a)
    window = (T0 - HOUR, T0 + HOUR)
    by_deployment = gpu_seconds(tenants.org_a, *window, now=LATER)
    assert [(row.deployment_name, row.gpu_seconds) for row in by_deployment] == [("chat", Decimal(300)), ("embed", Decimal(1000))]
    by_region = gpu_seconds(tenants.org_a, *window, group_by=("region",), now=LATER)
    assert [(row.region, row.gpu_seconds, row.deployment_id) for row in by_region] == [
        ("eu-west", Decimal(200), None),
        ("us-east", Decimal(1100), None),
    ]
    by_type = gpu_seconds(tenants.org_a, *window, group_by=("deployment_id", "gpu_type", "region", "cluster"), now=LATER)
    assert [(row.deployment_id, row.gpu_type, row.cluster, row.gpu_seconds) for row in by_type] == [
        (chat.id, "CPU", "local-eu-west", Decimal(200)),
        (chat.id, "CPU", "local-us-east", Decimal(100)),
        (embed.id, "T4", "local-us-east", Decimal(1000)),
    ]
    [total] = gpu_seconds(tenants.org_a, *window, group_by=(), now=LATER)
    assert total.gpu_seconds == Decimal(1300) and total.deployment_id is None
    assert seconds_of(tenants.org_a, *window, deployment_id=embed.id, now=LATER) == Decimal(1000)
    with pytest.raises(ValueError, match="cannot group by colour"):
        gpu_seconds(tenants.org_a, *window, group_by=("colour",))
    with pytest.raises(ValueError, match="start must be before end"):
        gpu_seconds(tenants.org_a, T0, T0)


def test_other_tenants_replicas_are_never_counted(tenants: Tenants) -> None:
    _two_regions(tenants.org_a)
    theirs = create_deployment(tenants.org_b, name="globex-private")
    add_replica(theirs, [(PROV, s(0)), (READY, s(1)), (STOP, s(5000))])
    window = (T0 - HOUR, T0 + HOUR)
    assert seconds_of(tenants.org_a, *window, now=LATER) == Decimal(1300)
    assert [(row.deployment_name, row.gpu_seconds) for row in gpu_seconds(tenants.org_b, *window, now=LATER)] == [
        ("globex-private", Decimal(3600))
    ]  # clipped at the window's end
    assert gpu_seconds(tenants.org_a, *window, deployment_id=theirs.id, now=LATER) == []
    assert all(point.billed == 0 for point in replicas_over_time(tenants.org_a, theirs.id, T0, T0 + HOUR, 600, now=LATER))


def test_replicas_over_time_shows_the_peak_of_each_step(tenants: Tenants) -> None:
    deployment = create_deployment(tenants.org_a)
    add_replica(deployment, [(P, s(0)), (PROV, s(10)), (READY, s(70)), (DRAIN, s(250)), (STOP, s(280))])
    add_replica(deployment, [(P, s(100)), (PROV, s(130)), (LOAD, s(150)), (READY, s(190)), (DRAIN, s(300)), (STOP, s(310))])
    add_replica(deployment, [(P, s(200))])  # never started
    points = replicas_over_time(tenants.org_a, deployment.id, T0, s(400), 60, now=LATER)
    assert points == [
        ReplicaCountPoint(bucket_start=s(0), ready=0, billed=1),  # ready from 70 s: not in [0, 60)
        ReplicaCountPoint(bucket_start=s(60), ready=1, billed=1),
        ReplicaCountPoint(bucket_start=s(120), ready=1, billed=2),
        ReplicaCountPoint(bucket_start=s(180), ready=2, billed=2),
        ReplicaCountPoint(bucket_start=s(240), ready=2, billed=2),  # the first drains at 250
        ReplicaCountPoint(bucket_start=s(300), ready=0, billed=1),  # the second drains 300-310
        ReplicaCountPoint(bucket_start=s(360), ready=0, billed=0),  # last step, cut at 400
    ]
    running = create_deployment(tenants.org_a, name="running")
    add_replica(running, [(PROV, s(0)), (READY, s(30))])
    points = replicas_over_time(tenants.org_a, running.id, T0, s(240), 60, now=s(90))
    assert [(point.ready, point.billed) for point in points] == [(1, 1), (1, 1), (0, 0), (0, 0)]  # running until now, nothing after
    with pytest.raises(ValueError):
        replicas_over_time(tenants.org_a, deployment.id, T0, s(400), 0)


def test_the_reconcile_loops_own_transitions_are_billed(tenants: Tenants) -> None:
    """Against the events the reconcile loop really records: a crashed replica is replaced
    by a new row, and each row is billed from its provisioning to its end."""
    ensure_clusters()
    fleet = Fleet()
    deployment = create_deployment(tenants.org_a, min_replicas=1, max_replicas=1)
    started = datetime.now(UTC)
    fleet.run(deployment, passes=2)
    [first] = Replica.objects.for_org(tenants.org_a).filter(deployment=deployment, state=Replica.State.READY)
    fleet.drivers[first.cluster_id].crash(first.id)
    fleet.run(deployment, passes=3)
    services.delete_deployment(owner_context(tenants.org_a), deployment)
    fleet.run(deployment, passes=2)
    finished = datetime.now(UTC)
    expected = timedelta()
    for replica in Replica.objects.for_org(tenants.org_a).filter(deployment=deployment):
        events = {event.to_state: event.at for event in ReplicaEvent.objects.for_org(tenants.org_a).filter(replica=replica)}
        assert replica.state in (Replica.State.FAILED, Replica.State.STOPPED)
        expected += events[replica.state] - events[Replica.State.PROVISIONING]
    [row] = gpu_seconds(tenants.org_a, started - HOUR, finished + HOUR)
    assert row.gpu_seconds == Decimal(expected // timedelta(microseconds=1)).scaleb(-6)
    assert Replica.objects.for_org(tenants.org_a).filter(deployment=deployment).count() == 2


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    lives=st.lists(st.lists(st.integers(min_value=0, max_value=500_000), min_size=1, max_size=7), min_size=1, max_size=4),
    cuts=st.lists(st.integers(min_value=-10_000, max_value=4_000_000), max_size=5),
)
def test_consecutive_windows_add_up_to_the_whole(tenants: Tenants, lives: list[list[int]], cuts: list[int]) -> None:
    """Milliseconds between transitions, walking a replica through its states (and back to
    provisioning after a failure): the sum over any split of a window equals the whole."""
    Replica.objects.for_org(tenants.org_a).delete()
    deployment = Deployment.objects.for_org(tenants.org_a).first() or create_deployment(tenants.org_a)
    cycle = [PROV, LOAD, READY, DRAIN, STOP, PROV, FAIL]
    for gaps in lives:
        at, transitions = T0, [(P, T0)]
        for index, gap in enumerate(gaps):
            at += timedelta(milliseconds=gap)
            transitions.append((cycle[index], at))
        add_replica(deployment, transitions)
    start, end = T0 - timedelta(seconds=1), T0 + timedelta(seconds=4000)
    edges = [start, *sorted({start + timedelta(milliseconds=cut) for cut in cuts if 0 < cut < 4_001_000}), end]
    pieces = sum((seconds_of(tenants.org_a, a, b, now=s(3000)) for a, b in zip(edges, edges[1:], strict=False)), Decimal(0))
    assert pieces == seconds_of(tenants.org_a, start, end, now=s(3000))


# The management API


def test_api_answers_rows_and_an_exact_total(tenants: Tenants) -> None:
    chat, embed = _two_regions(tenants.org_a)
    api = session_api(tenants.viewer_a, tenants.org_a)
    params = {"start": "2026-11-20T11:00:00Z", "end": "2026-11-20T13:00:00Z"}
    body = api.get("/api/v1/usage/gpu-seconds/", params).json()
    assert body["group_by"] == ["deployment"]
    assert body["rows"] == [
        {"deployment_id": chat.id, "deployment_name": "chat", "gpu_seconds": "300.000000"},
        {"deployment_id": embed.id, "deployment_name": "embed", "gpu_seconds": "1000.000000"},
    ]
    assert body["total_gpu_seconds"] == "1300.000000"
    grouped = api.get("/api/v1/usage/gpu-seconds/", {**params, "group_by": "gpu_type,region"}).json()
    assert grouped["rows"] == [
        {"gpu_type": "CPU", "region": "eu-west", "gpu_seconds": "200.000000"},
        {"gpu_type": "CPU", "region": "us-east", "gpu_seconds": "100.000000"},
        {"gpu_type": "T4", "region": "us-east", "gpu_seconds": "1000.000000"},
    ]
    only_embed = api.get("/api/v1/usage/gpu-seconds/", {**params, "deployment": embed.id, "group_by": ""}).json()
    assert only_embed["rows"] == [{"gpu_seconds": "1000.000000"}] and only_embed["total_gpu_seconds"] == "1000.000000"
    # Soft-deleted deployments keep their bill.
    services.delete_deployment(owner_context(tenants.org_a), embed)
    assert api.get("/api/v1/usage/gpu-seconds/", {**params, "deployment": embed.id}).json()["total_gpu_seconds"] == "1000.000000"


def test_api_never_shows_another_tenants_replicas(tenants: Tenants) -> None:
    chat, _ = _two_regions(tenants.org_a)
    params = {"start": "2026-11-20T11:00:00Z", "end": "2026-11-20T13:00:00Z"}
    api_b = session_api(tenants.viewer_b, tenants.org_b)
    body = api_b.get("/api/v1/usage/gpu-seconds/", params).json()
    assert body["rows"] == [] and body["total_gpu_seconds"] == "0.000000"
    foreign = api_b.get("/api/v1/usage/gpu-seconds/", {**params, "deployment": chat.id})
    missing = api_b.get("/api/v1/usage/gpu-seconds/", {**params, "deployment": "dep_doesnotexist000000000"})
    assert foreign.status_code == missing.status_code == 404
    assert foreign.json() == missing.json()


def test_api_bad_input_says_what_to_fix(tenants: Tenants) -> None:
    api = session_api(tenants.owner_a, tenants.org_a)
    cases = [
        ({"start": "2026-11-22T00:00:00Z", "end": "2026-11-20T00:00:00Z"}, "before end"),
        ({"start": "2026-11-20T00:00:00Z", "end": "2026-11-20T00:00:00Z"}, "before end"),
        ({"group_by": "deployment,colour"}, "Cannot group by colour; choose from deployment, gpu_type, region, cluster"),
        ({"start": "yesterday"}, ""),
    ]
    for params, message in cases:
        response = api.get("/api/v1/usage/gpu-seconds/", params)
        assert response.status_code == 400, (params, response.content)
        assert message in response.json()["error"]["message"] or message in str(response.json()["error"].get("fields"))


def test_api_needs_a_member_of_the_organization(tenants: Tenants) -> None:
    from rest_framework.test import APIClient

    assert APIClient().get("/api/v1/usage/gpu-seconds/").status_code in (401, 403)
    assert session_api(tenants.owner_b, tenants.org_a).get("/api/v1/usage/gpu-seconds/").status_code == 404


def test_one_query_whatever_the_number_of_replicas(tenants: Tenants, django_assert_num_queries) -> None:  # type: ignore[no-untyped-def]
    _two_regions(tenants.org_a)
    with django_assert_num_queries(1):
        rows = gpu_seconds(tenants.org_a, T0 - HOUR, T0 + HOUR, group_by=("deployment_id", "gpu_type", "region", "cluster"), now=LATER)
    assert len(rows) == 3
