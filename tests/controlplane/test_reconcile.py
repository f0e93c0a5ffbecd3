"""The reconcile loop's logic against the in-memory driver (no I/O)."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from deployments import services
from deployments.drivers.memory import InMemoryDriver
from deployments.models import CatalogModel, Cluster, Deployment, Replica, ReplicaEvent
from deployments.probes import Target
from deployments.reconcile import reconcile
from tenancy.models import Organization
from tests.conftest import Tenants
from tests.factories import create_deployment, ensure_clusters, owner_context


class Fleet:
    """One in-memory driver per cluster, and a probe that can mark endpoints loading."""

    def __init__(self) -> None:
        self.drivers: dict[str, InMemoryDriver] = {}
        self.loading: set[str] = set()

    def driver(self, cluster: Cluster) -> InMemoryDriver:
        return self.drivers.setdefault(cluster.name, InMemoryDriver(cluster.name))

    def probe(self, targets: Sequence[Target]) -> dict[str, str]:
        return {target.replica_id: "loading" if target.endpoint in self.loading else "ready" for target in targets}

    def run(self, deployment: Deployment, passes: int = 1):  # type: ignore[no-untyped-def]
        result = None
        for _ in range(passes):
            result = reconcile(deployment.id, drivers=self.driver, probe=self.probe)
            Deployment.objects.unscoped_across_tenants().filter(pk=deployment.pk).update(next_attempt_at=None)  # no waiting in tests
        return result

    @property
    def creates(self) -> int:
        return sum(driver.creates for driver in self.drivers.values())


def replicas(org: Organization, deployment: Deployment, *states: str) -> list[Replica]:
    queryset = Replica.objects.for_org(org).filter(deployment=deployment)
    return list(queryset.filter(state__in=states) if states else queryset)


@pytest.fixture
def fleet(tenants: Tenants) -> Fleet:
    ensure_clusters()
    return Fleet()


def test_a_new_deployment_gets_ready_replicas_in_allowed_regions(tenants: Tenants, fleet: Fleet) -> None:
    deployment = create_deployment(tenants.org_a, min_replicas=2, max_replicas=2, allowed_regions=("us-east", "eu-west"))
    first = fleet.run(deployment)
    assert len(first.created) == 2 and first.status == "deploying"
    assert {replica.cluster.region for replica in replicas(tenants.org_a, deployment)} == {"us-east", "eu-west"}  # spread
    second = fleet.run(deployment)
    assert second.status == "active"
    ready = replicas(tenants.org_a, deployment, Replica.State.READY)
    assert len(ready) == 2 and all(replica.endpoint.startswith("memory://") for replica in ready)
    events = ReplicaEvent.objects.for_org(tenants.org_a).filter(replica=ready[0]).order_by("at", "id")
    assert [event.to_state for event in events] == ["pending", "provisioning", "ready"]


def test_reconciling_again_creates_nothing_extra(tenants: Tenants, fleet: Fleet) -> None:
    deployment = create_deployment(tenants.org_a, min_replicas=2, max_replicas=2, allowed_regions=("us-east", "eu-west"))
    fleet.run(deployment, passes=5)
    assert fleet.creates == 2 and len(replicas(tenants.org_a, deployment)) == 2


@pytest.mark.django_db(transaction=True)
def test_two_reconcilers_at_once_create_nothing_twice(tenants: Tenants, fleet: Fleet) -> None:
    deployment = create_deployment(tenants.org_a, min_replicas=2, max_replicas=2, allowed_regions=("us-east", "eu-west"))
    barrier = threading.Barrier(4)
    outcomes: list[object] = []

    def worker() -> None:
        from django.db import connection

        barrier.wait()
        try:
            for _ in range(3):
                outcomes.append(reconcile(deployment.id, drivers=fleet.driver, probe=fleet.probe))
        finally:
            connection.close()

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert fleet.creates == 2
    assert len(replicas(tenants.org_a, deployment)) == 2


def test_a_crashed_replica_is_replaced(tenants: Tenants, fleet: Fleet) -> None:
    deployment = create_deployment(tenants.org_a, min_replicas=1, max_replicas=1)
    fleet.run(deployment, passes=2)
    [replica] = replicas(tenants.org_a, deployment, Replica.State.READY)
    fleet.drivers[replica.cluster_id].crash(replica.id, exit_code=-9)
    fleet.run(deployment, passes=3)  # notice the crash, place a replacement, see it ready
    replica.refresh_from_db()
    assert replica.state == Replica.State.FAILED and "exited with code -9" in replica.reason
    assert replica.id not in fleet.drivers[replica.cluster_id].replicas  # what the cluster kept of it is deleted
    [replacement] = replicas(tenants.org_a, deployment, Replica.State.READY)
    assert replacement.id != replica.id and replacement.restarts == 1


def crash_every_replica(org: Organization, deployment: Deployment, fleet: Fleet, passes: int = 16) -> None:
    """Kill each replica as soon as it starts, pass after pass, then reload the deployment."""
    for _ in range(passes):
        fleet.run(deployment)
        for replica in replicas(org, deployment, Replica.State.PROVISIONING, Replica.State.READY):
            fleet.drivers[replica.cluster_id].crash(replica.id, exit_code=1)
    deployment.refresh_from_db()


def test_a_crash_loop_fails_the_deployment_with_the_reason(tenants: Tenants, fleet: Fleet) -> None:
    deployment = create_deployment(tenants.org_a, min_replicas=1, max_replicas=1)
    crash_every_replica(tenants.org_a, deployment, fleet)
    assert deployment.status == "failed"
    assert "replica failures in a row" in deployment.status_reason and "exited with code 1" in deployment.status_reason


def test_cordoned_clusters_get_no_new_replicas(tenants: Tenants, fleet: Fleet) -> None:
    Cluster.objects.filter(name="local-us-east").update(status=Cluster.Status.CORDONED)
    deployment = create_deployment(tenants.org_a, min_replicas=2, max_replicas=2, allowed_regions=("us-east", "eu-west"))
    fleet.run(deployment, passes=2)
    assert {replica.cluster_id for replica in replicas(tenants.org_a, deployment)} == {"local-eu-west"}


def test_a_cluster_marked_down_has_its_replicas_replaced_in_the_allowed_regions(tenants: Tenants, fleet: Fleet) -> None:
    deployment = create_deployment(tenants.org_a, min_replicas=2, max_replicas=2, allowed_regions=("us-east", "eu-west"))
    fleet.run(deployment, passes=2)
    Cluster.objects.filter(name="local-us-east").update(status=Cluster.Status.DOWN)
    fleet.run(deployment, passes=3)
    ready = replicas(tenants.org_a, deployment, Replica.State.READY)
    assert len(ready) == 2 and {replica.cluster_id for replica in ready} == {"local-eu-west"}
    failed = replicas(tenants.org_a, deployment, Replica.State.FAILED)
    assert len(failed) == 1 and "marked down" in failed[0].reason


def test_region_allow_list_is_never_broken(tenants: Tenants, fleet: Fleet) -> None:
    deployment = create_deployment(tenants.org_a, min_replicas=2, max_replicas=2, allowed_regions=("us-east",))
    fleet.run(deployment, passes=2)
    Cluster.objects.filter(name="local-us-east").update(status=Cluster.Status.DOWN)
    result = fleet.run(deployment, passes=2)
    assert all(replica.cluster.region == "us-east" for replica in replicas(tenants.org_a, deployment))
    assert result.status == "deploying"
    deployment.refresh_from_db()
    assert "waiting for capacity" in deployment.status_reason and "us-east" in deployment.status_reason


def test_a_new_revision_is_ready_before_the_old_one_drains(tenants: Tenants, fleet: Fleet, settings) -> None:  # type: ignore[no-untyped-def]
    settings.ROLLOUT_HANDOVER_SECONDS = 3
    deployment = create_deployment(tenants.org_a, min_replicas=1, max_replicas=1)
    fleet.run(deployment, passes=2)
    [old] = replicas(tenants.org_a, deployment, Replica.State.READY)
    services.update_deployment(owner_context(tenants.org_a), deployment, model="tiny-embedding")
    fleet.loading.add("memory://")  # nothing matches yet
    first = fleet.run(deployment)
    assert first.status == "updating" and not first.drained  # the new replica is not ready yet
    new = [replica for replica in replicas(tenants.org_a, deployment) if replica.id != old.id][0]
    fleet.loading.add(new.endpoint)
    fleet.run(deployment)
    old.refresh_from_db()
    assert old.state == Replica.State.READY  # still serving while the new one loads
    fleet.loading.discard(new.endpoint)
    fleet.run(deployment, passes=2)
    old.refresh_from_db()
    new.refresh_from_db()
    # READY, but not yet for as long as a gateway may use a snapshot without it: the old
    # replica keeps taking requests until every gateway can send them to the new one.
    assert new.state == Replica.State.READY and old.state == Replica.State.READY
    Replica.objects.for_org(tenants.org_a).filter(pk=new.pk).update(ready_at=timezone.now() - timedelta(seconds=3))
    fleet.run(deployment, passes=2)
    old.refresh_from_db()
    assert old.state == Replica.State.STOPPED


def test_min_zero_stays_at_zero_until_a_request_wakes_it(tenants: Tenants, fleet: Fleet) -> None:
    from deployments.enqueue import request_scale_from_zero

    deployment = create_deployment(tenants.org_a, min_replicas=0, max_replicas=1)
    assert fleet.run(deployment).status == "scaled_to_zero"
    request_scale_from_zero(deployment_id=deployment.pk)
    fleet.run(deployment, passes=2)
    assert len(replicas(tenants.org_a, deployment, Replica.State.READY)) == 1


def test_a_deleted_deployment_drains_everything(tenants: Tenants, fleet: Fleet) -> None:
    deployment = create_deployment(tenants.org_a, min_replicas=2, max_replicas=2, allowed_regions=("us-east", "eu-west"))
    fleet.run(deployment, passes=2)
    services.delete_deployment(owner_context(tenants.org_a), deployment)
    fleet.run(deployment, passes=2)
    assert {replica.state for replica in replicas(tenants.org_a, deployment)} == {Replica.State.STOPPED}


def test_a_scaling_change_keeps_the_running_replicas(tenants: Tenants, fleet: Fleet) -> None:
    deployment = create_deployment(tenants.org_a, min_replicas=1, max_replicas=2)
    fleet.run(deployment, passes=2)
    [first] = replicas(tenants.org_a, deployment, Replica.State.READY)
    services.update_deployment(owner_context(tenants.org_a), deployment, min_replicas=2)
    result = fleet.run(deployment, passes=2)
    first.refresh_from_db()
    assert first.state == Replica.State.READY and first.revision_id == deployment.current_revision_id  # adopted, not replaced
    assert len(replicas(tenants.org_a, deployment, Replica.State.READY)) == 2 and fleet.creates == 2
    assert result.status == "active"


def test_the_batched_fleet_pass_confirms_steady_deployments_and_fixes_the_rest(tenants: Tenants, fleet: Fleet) -> None:
    from deployments.reconcile import reconcile_fleet

    steady = [create_deployment(tenants.org_a, name=f"steady-{index}", min_replicas=1, max_replicas=1) for index in range(2)]
    for deployment in steady:
        fleet.run(deployment, passes=2)
    crashed = create_deployment(tenants.org_b, name="crashed", min_replicas=1, max_replicas=1)
    fleet.run(crashed, passes=2)
    [victim] = replicas(tenants.org_b, crashed, Replica.State.READY)
    fleet.drivers[victim.cluster_id].crash(victim.id)
    fresh = create_deployment(tenants.org_b, name="fresh", min_replicas=1, max_replicas=1)
    creates_before = fleet.creates

    ids = [deployment.id for deployment in (*steady, crashed, fresh)]
    result = reconcile_fleet(ids, drivers=fleet.driver, probe=fleet.probe, scrape=lambda targets: {})
    assert (result.steady, result.reconciled, result.skipped) == (2, 2, 0)
    assert fleet.creates == creates_before + 1  # the fresh one placed; the crash noticed (replaced after backoff)
    victim.refresh_from_db()
    assert victim.state == Replica.State.FAILED
    again = reconcile_fleet(ids, drivers=fleet.driver, probe=fleet.probe, scrape=lambda targets: {})
    assert again.steady >= 2 and fleet.creates <= creates_before + 2
    for deployment in steady:
        deployment.refresh_from_db()
        assert deployment.status == "active"


def test_the_fleet_pass_over_steady_deployments_takes_as_many_queries_for_four_as_for_one(tenants: Tenants, fleet: Fleet) -> None:
    from deployments.reconcile import reconcile_fleet

    steady = [
        create_deployment(org, name=f"steady-{index}", min_replicas=1, max_replicas=1)
        for index, org in enumerate((tenants.org_a, tenants.org_b, tenants.org_a, tenants.org_b))
    ]
    for deployment in steady:
        fleet.run(deployment, passes=2)

    def queries_for(deployments: list[Deployment]) -> int:
        with CaptureQueriesContext(connection) as queries:
            result = reconcile_fleet(
                [deployment.id for deployment in deployments], drivers=fleet.driver, probe=fleet.probe, scrape=lambda targets: {}
            )
        assert result.steady == len(deployments)
        return len(queries.captured_queries)

    queries_for(steady)  # the autoscaler's first sample of each
    assert queries_for(steady[:1]) == queries_for(steady)  # nothing read or written one deployment at a time


def test_a_crash_looped_deployment_recovers_with_a_new_revision(tenants: Tenants, fleet: Fleet) -> None:
    deployment = create_deployment(tenants.org_a, min_replicas=1, max_replicas=1)
    crash_every_replica(tenants.org_a, deployment, fleet)
    assert deployment.status == "failed"
    services.update_deployment(owner_context(tenants.org_a), deployment, model="tiny-embedding")  # the fix
    fleet.run(deployment, passes=3)
    deployment.refresh_from_db()
    assert deployment.status == "active"


def test_a_rollout_at_full_capacity_gives_up_one_old_replica_at_a_time(tenants: Tenants, fleet: Fleet, settings) -> None:  # type: ignore[no-untyped-def]
    settings.ROLLOUT_HANDOVER_SECONDS = 0  # passes back to back: the gateways' read time is another test's
    # Two T4s in us-east, both taken by the first revision.
    deployment = create_deployment(tenants.org_a, gpu_type="T4", min_replicas=2, max_replicas=2, allowed_regions=("us-east",))
    fleet.run(deployment, passes=2)
    assert len(replicas(tenants.org_a, deployment, Replica.State.READY)) == 2
    services.update_deployment(owner_context(tenants.org_a), deployment, model="tiny-embedding")
    for _ in range(12):
        fleet.run(deployment)
        assert replicas(tenants.org_a, deployment, Replica.State.READY), "a moment without a READY replica"
    deployment.refresh_from_db()
    ready = replicas(tenants.org_a, deployment, Replica.State.READY)
    assert deployment.status == "active" and len(ready) == 2
    assert all(replica.revision_id == deployment.current_revision_id for replica in ready)


def test_old_replicas_drain_when_nothing_is_wanted(tenants: Tenants, fleet: Fleet) -> None:
    deployment = create_deployment(tenants.org_a, min_replicas=1, max_replicas=1)
    fleet.run(deployment, passes=2)
    services.update_deployment(owner_context(tenants.org_a), deployment, model="tiny-embedding", min_replicas=0)
    fleet.run(deployment, passes=3)
    assert replicas(tenants.org_a, deployment, Replica.State.READY, Replica.State.DRAINING) == []


def test_a_replica_request_carries_its_placement_and_the_replica_records_where_it_runs(tenants: Tenants, fleet: Fleet) -> None:
    gpu = create_deployment(tenants.org_a, name="on-t4", gpu_type="T4")
    cpu = create_deployment(tenants.org_b, name="on-cpu", model="tiny-embedding")
    fleet.run(gpu)
    fleet.run(cpu)
    (gpu_replica,) = replicas(tenants.org_a, gpu)
    (cpu_replica,) = replicas(tenants.org_b, cpu)
    sent = fleet.drivers[gpu_replica.cluster.name].requests[gpu_replica.id]
    assert (sent.model, sent.gpu_type, sent.gpu_count, sent.runtime, sent.memory_gb) == ("tiny-chat", "T4", 1, "builtin", 1)
    assert sent.artifact == CatalogModel.objects.get(organization=None, name="tiny-chat").source
    assert len(sent.token) >= 32 and sent.token not in str(sent.options)
    sent = fleet.drivers[cpu_replica.cluster.name].requests[cpu_replica.id]
    assert (sent.model, sent.gpu_type, sent.gpu_count) == ("tiny-embedding", "CPU", 0)
    assert (gpu_replica.node, gpu_replica.device) == (f"{gpu_replica.cluster.name}-node", "cpu (simulated T4)")
    assert cpu_replica.device == "cpu"


def test_a_replica_its_cluster_restarted_at_a_new_endpoint_is_probed_again_before_it_serves(tenants: Tenants, fleet: Fleet) -> None:
    deployment = create_deployment(tenants.org_a)
    fleet.run(deployment, passes=2)
    (replica,) = replicas(tenants.org_a, deployment, Replica.State.READY)
    fleet.drivers[replica.cluster.name].restart_elsewhere(replica.id)
    fleet.run(deployment)
    replica.refresh_from_db()
    assert replica.state == Replica.State.PROVISIONING and replica.endpoint.endswith("/restarted")
    fleet.run(deployment)
    replica.refresh_from_db()
    assert replica.state == Replica.State.READY and fleet.creates == 1  # the same replica, not a second one


def test_a_vllm_model_is_never_placed_on_a_local_agent_cluster(tenants: Tenants, fleet: Fleet) -> None:
    # Staff serve a catalog model with vLLM (Django admin: the entry's runtime).
    CatalogModel.objects.filter(organization=None, name="tiny-chat").update(runtime=CatalogModel.Runtime.VLLM)
    ray = Cluster.objects.create(name="ray-us-east", provider="local", region="us-east", driver="ray", connection={}, simulated=True)
    ray.inventory.create(gpu_type_id="T4", count=1)
    deployment = create_deployment(tenants.org_a, name="vllm", model="tiny-chat", gpu_type="T4")
    fleet.run(deployment)
    (replica,) = replicas(tenants.org_a, deployment)
    assert replica.cluster_id == "ray-us-east"  # not local-us-east, though it has more free T4s
    assert fleet.drivers["ray-us-east"].requests[replica.id].runtime == "vllm"


def test_a_drain_whose_delete_was_lost_is_deleted_again(tenants: Tenants, fleet: Fleet) -> None:
    deployment = create_deployment(tenants.org_a)
    fleet.run(deployment, passes=2)
    (replica,) = replicas(tenants.org_a, deployment, Replica.State.READY)
    driver = fleet.drivers[replica.cluster_id]
    kept = driver.replicas[replica.id]
    services.delete_deployment(owner_context(tenants.org_a), deployment)
    fleet.run(deployment)
    replica.refresh_from_db()
    assert replica.state == Replica.State.DRAINING
    driver.replicas[replica.id] = kept  # the cluster never acted on the delete
    fleet.run(deployment)
    assert replica.id in driver.replicas  # within its drain time nothing is repeated
    ReplicaEvent.objects.for_org(tenants.org_a).filter(replica=replica, to_state="draining").update(
        at=timezone.now() - timedelta(minutes=5)
    )
    fleet.run(deployment)  # long past its drain: deleted again
    assert replica.id not in driver.replicas
    fleet.run(deployment)
    replica.refresh_from_db()
    assert replica.state == Replica.State.STOPPED
