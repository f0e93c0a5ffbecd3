"""A reconcile pass's probes over real HTTP: a fleet server (benchmarks/fleet.py) answers
/health and /metrics for many replica endpoints, some slow, broken, loading or not HTTP at
all. Concurrency is shown by what the server saw in flight at once, not by the clock."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.core.cache import cache

from benchmarks.fleet import FleetServer
from deployments import probes
from deployments.drivers.base import ObservedReplica, ReplicaRequest
from deployments.drivers.memory import InMemoryDriver
from deployments.exposition import sample_values
from deployments.internal_tokens import replica_token
from deployments.models import Cluster, Deployment, Replica
from deployments.probes import Target, check_replicas, health_of
from deployments.reconcile import reconcile_fleet
from deployments.scaling import cache_key
from tests.conftest import Tenants
from tests.factories import create_deployment


@pytest.fixture
def fleet_server() -> Iterator[FleetServer]:
    with FleetServer(slow_s=30.0) as server:
        yield server


def _targets(server: FleetServer, clusters: int, per_cluster: int) -> list[Target]:
    return [
        Target(replica_id=f"rep_{c}_{r}", endpoint=server.endpoint(f"c{c}", f"rep_{c}_{r}"), cluster=f"c{c}")
        for c in range(clusters)
        for r in range(per_cluster)
    ]


def test_each_replica_answers_for_itself_and_slow_ones_time_out_side_by_side(fleet_server: FleetServer) -> None:
    targets = _targets(fleet_server, clusters=3, per_cluster=10)
    slow = [target.replica_id for target in targets if target.cluster == "c0"][:8]
    fleet_server.behaviours.update(
        {**dict.fromkeys(slow, "slow"), "rep_1_0": "broken", "rep_1_1": "loading", "rep_2_0": "refuse", "rep_2_1": "garbage"}
    )
    answers = check_replicas(targets, per_cluster=10, health_timeout_s=0.5)

    assert {replica_id: answers[replica_id].health for replica_id in slow} == dict.fromkeys(slow, "unreachable")
    assert answers["rep_1_0"].health == "broken: CUDA error: device lost"
    assert answers["rep_1_1"].health == "loading"
    assert answers["rep_2_0"].health == answers["rep_2_1"].health == "unreachable"
    healthy = [target.replica_id for target in targets if target.replica_id not in {*slow, "rep_1_0", "rep_1_1", "rep_2_0", "rep_2_1"}]
    assert len(healthy) == 18 and all(answers[replica_id].health == "ready" for replica_id in healthy)
    # Only the ready ones are scraped, each with its own bearer token.
    assert {replica_id for replica_id, answer in answers.items() if answer.metrics is not None} == set(healthy)
    assert fleet_server.stats.metrics_tokens["rep_2_5"] == b"Bearer " + replica_token("rep_2_5").encode()
    # Every slow replica was waited on at the same time: the call took one timeout, not eight.
    assert fleet_server.stats.most_in_flight["c0"] == 8


def test_at_most_the_per_cluster_limit_of_a_cluster_is_probed_at_once(fleet_server: FleetServer) -> None:
    targets = _targets(fleet_server, clusters=2, per_cluster=12)
    fleet_server.slow_s = 0.05  # slow, but well inside the timeout
    fleet_server.behaviours.update(dict.fromkeys((target.replica_id for target in targets), "slow"))
    answers = check_replicas(targets, per_cluster=3, health_timeout_s=5.0, metrics_timeout_s=5.0)
    assert all(answer.health == "ready" and answer.metrics for answer in answers.values())
    assert fleet_server.stats.most_in_flight == {"c0": 3, "c1": 3}  # reached, never passed, in each cluster


def test_connections_are_kept_alive_and_reused(fleet_server: FleetServer) -> None:
    targets = _targets(fleet_server, clusters=2, per_cluster=100)
    answers = check_replicas(targets, per_cluster=4)
    assert all(answer.health == "ready" and answer.metrics for answer in answers.values())
    assert fleet_server.stats.requests == 400
    assert fleet_server.stats.connections <= 8  # one per request in flight at once at most


def test_what_is_not_a_model_servers_answer_is_unreachable() -> None:
    assert health_of(200, b"") == "ready"
    assert health_of(503, b'{"status": "loading"}') == "loading"
    assert health_of(503, b'{"status": "broken"}') == "broken: engine failed"
    assert health_of(502, b"<html>Bad Gateway</html>") == "unreachable"
    assert health_of(503, b"[1, 2]") == "unreachable"
    assert check_replicas([Target(replica_id="rep_x", endpoint="memory://nowhere/rep_x", cluster="c")]) == {
        "rep_x": probes.Answer("unreachable")
    }


def test_only_the_wanted_series_are_read_and_a_bad_value_is_an_error() -> None:
    text = (
        "# HELP switchboard:num_requests_running running\n"
        'switchboard:num_requests_running{model_name="a",path="x}y"} 2.0\n'
        "switchboard:num_requests_running_bucket 9\n"
        "switchboard:num_requests_running 1.5 1700000000\n"
    )
    assert sample_values(text, ["switchboard:num_requests_running"]) == [
        ("switchboard:num_requests_running", 2.0),
        ("switchboard:num_requests_running", 1.5),
    ]
    with pytest.raises(ValueError):
        sample_values('switchboard:num_requests_running{a="b"} many\n', ["switchboard:num_requests_running"])


class _FleetDriver(InMemoryDriver):
    """The in-memory driver, with replicas whose endpoints are on the fleet server."""

    def __init__(self, cluster: str, server: FleetServer) -> None:
        super().__init__(cluster)
        self.server = server

    def create_replica(self, request: ReplicaRequest) -> ObservedReplica:
        seen = super().create_replica(request)
        moved = ObservedReplica(seen.replica_id, running=True, endpoint=self.server.endpoint(self.cluster, request.replica_id))
        self.replicas[request.replica_id] = moved
        return moved


@pytest.mark.slow
def test_a_fleet_pass_over_real_http_moves_each_replica_by_its_own_answer(
    tenants: Tenants, fleet_server: FleetServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(probes, "HEALTH_TIMEOUT_S", 0.5)
    drivers: dict[str, _FleetDriver] = {}

    def driver(cluster: Cluster) -> _FleetDriver:
        return drivers.setdefault(cluster.name, _FleetDriver(cluster.name, fleet_server))

    named = {
        "ok": create_deployment(tenants.org_a, name="ok", min_replicas=1, max_replicas=1),
        "slow": create_deployment(tenants.org_b, name="slow", min_replicas=1, max_replicas=1),
        "broken": create_deployment(tenants.org_a, name="broken", min_replicas=1, max_replicas=1),
        "loading": create_deployment(tenants.org_b, name="loading", min_replicas=1, max_replicas=1),
    }
    ids = [deployment.pk for deployment in named.values()]
    reconcile_fleet(ids, drivers=driver)  # places and starts one replica each
    replica_of = {name: Replica.objects.unscoped_across_tenants().get(deployment=deployment) for name, deployment in named.items()}
    for name in ("slow", "broken", "loading"):
        fleet_server.behaviours[replica_of[name].id] = name

    reconcile_fleet(ids, drivers=driver)
    states = {name: Replica.objects.unscoped_across_tenants().get(pk=replica.pk).state for name, replica in replica_of.items()}
    assert states == {
        "ok": Replica.State.READY,
        "slow": Replica.State.PROVISIONING,  # no answer in time: no news, and no harm to the others
        "broken": Replica.State.FAILED,
        "loading": Replica.State.LOADING,
    }

    result = reconcile_fleet(ids, drivers=driver)
    assert result.steady == 1  # "ok": confirmed in the batch, from its /health and /metrics
    samples = cache.get(cache_key(named["ok"].pk))["samples"]
    assert samples[-1][1] == 1.0  # the fleet server's num_requests_running
    assert Deployment.objects.for_org(tenants.org_a).get(pk=named["ok"].pk).status == Deployment.Status.ACTIVE
