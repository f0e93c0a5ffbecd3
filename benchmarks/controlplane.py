"""`manage.py bench controlplane`: one full reconcile pass over 10,000 deployments on 87
clusters, with a driver that does no I/O, on PostgreSQL, twice side by side: with the
replicas' /health and /metrics stubbed, and with real HTTP probes against a fleet server
(benchmarks/fleet.py, a process of its own) that answers for all 10,000 replica endpoints;
the cold start of the embeddings model (a new model-server process until its first
answer); and the time from a scale request to four READY replicas on a local Ray cluster
(the Ray Serve driver) beside a local agent (benchmarks/scale_up.py).

The fleet is in steady state: every deployment has its one READY replica, so the pass
measures what the control plane pays to confirm that nothing needs doing: leases, reads,
one observation per cluster, health, the autoscaler's decision from its stored samples,
and the writes; the real pass adds 20,000 HTTP requests and reading 10,000 expositions
(and the throughput baselines they give). It runs in a throwaway database created for
the run. Each pass runs ROUNDS times, alternating, and the best of each is reported.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx
from django.conf import settings
from django.db import connection
from django.utils import timezone

from benchmarks.scale_up import scale_0_to_4_seconds
from deployments.drivers.base import ObservedReplica
from deployments.drivers.memory import InMemoryDriver
from deployments.gpu_catalog import ensure_gpu_types
from deployments.models import Cluster, ClusterGpu, Deployment, DeploymentRevision, Replica
from deployments.probes import Target
from deployments.reconcile import reconcile_fleet
from deployments.scaling import Metrics
from modelserver.processes import free_port, start_model_server, stop
from tenancy.models import Organization

DEPLOYMENTS = 10_000
CLUSTERS = 87
ORGANIZATIONS = 100
ROUNDS = 2


@dataclass
class ControlPlaneFigures:
    reconcile_pass_s: float
    reconcile_pass_real_probes_s: float
    deployments: int
    clusters: int
    cold_start_s: float
    ray_scale_0_to_4_s: float
    agent_scale_0_to_4_s: float

    def as_json(self) -> dict[str, Any]:
        return {
            "reconcile_pass_s": round(self.reconcile_pass_s, 3),
            "deployments": self.deployments,
            "clusters": self.clusters,
            "deployments_per_s": round(self.deployments / self.reconcile_pass_s, 1),
            "reconcile_pass_real_probes_s": round(self.reconcile_pass_real_probes_s, 3),
            "real_probes_deployments_per_s": round(self.deployments / self.reconcile_pass_real_probes_s, 1),
            "cold_start_s": round(self.cold_start_s, 2),
            "ray_scale_0_to_4_s": round(self.ray_scale_0_to_4_s, 1),
            "agent_scale_0_to_4_s": round(self.agent_scale_0_to_4_s, 1),
        }


def _seed(drivers: dict[str, InMemoryDriver], fleet_port: int) -> list[str]:
    ensure_gpu_types()
    regions = [f"region-{index // 3}" for index in range(CLUSTERS)]
    clusters = Cluster.objects.bulk_create(
        Cluster(name=f"bench-{index}", provider="bench", region=regions[index], driver=Cluster.Driver.LOCAL, connection={}, simulated=True)
        for index in range(CLUSTERS)
    )
    ClusterGpu.objects.bulk_create(ClusterGpu(cluster=cluster, gpu_type_id="CPU", count=1000) for cluster in clusters)
    orgs = Organization.objects.bulk_create(Organization(name=f"Bench {index}", slug=f"bench-{index}") for index in range(ORGANIZATIONS))
    deployments = Deployment.objects.bulk_create(
        Deployment(organization=orgs[index % ORGANIZATIONS], name=f"d{index}", status=Deployment.Status.ACTIVE)
        for index in range(DEPLOYMENTS)
    )
    revisions = DeploymentRevision.objects.bulk_create(
        DeploymentRevision(
            organization_id=deployment.organization_id,
            deployment=deployment,
            number=1,
            model="tiny-chat",
            gpu_type_id="CPU",
            allowed_regions=[clusters[index % CLUSTERS].region],
            min_replicas=1,
            max_replicas=1,
            target_concurrency=4,
            scale_down_delay_s=60,
            idle_timeout_s=300,
        )
        for index, deployment in enumerate(deployments)
    )
    for deployment, revision in zip(deployments, revisions, strict=True):
        deployment.current_revision = revision
    Deployment.objects.unscoped_across_tenants().bulk_update(deployments, ["current_revision"], batch_size=2000)
    now = timezone.now()
    replicas = Replica.objects.bulk_create(
        Replica(
            organization_id=deployment.organization_id,
            deployment=deployment,
            revision=deployment.current_revision,
            cluster=clusters[index % CLUSTERS],
            state=Replica.State.READY,
            endpoint=f"http://127.0.0.1:{fleet_port}/c/bench-{index % CLUSTERS}/r/{index}",
            ready_at=now,
        )
        for index, deployment in enumerate(deployments)
    )
    for replica in replicas:
        driver = drivers.setdefault(replica.cluster_id, InMemoryDriver(replica.cluster_id))
        driver.replicas[replica.id] = ObservedReplica(replica.id, running=True, endpoint=replica.endpoint)
    return [deployment.id for deployment in deployments]


def _ready(targets: Sequence[Target]) -> dict[str, str]:
    return dict.fromkeys((target.replica_id for target in targets), "ready")


def _no_metrics(targets: Sequence[Target]) -> dict[str, Metrics]:
    return {}


def _one_pass(ids: list[str], drivers: dict[str, InMemoryDriver], *, real: bool) -> float:
    started = time.perf_counter()
    if real:
        result = reconcile_fleet(ids, drivers=lambda cluster: drivers[cluster.name])
    else:
        result = reconcile_fleet(ids, drivers=lambda cluster: drivers[cluster.name], probe=_ready, scrape=_no_metrics)
    elapsed = time.perf_counter() - started
    if result.steady != len(ids):
        raise RuntimeError(f"expected a steady fleet, got {result}")
    created = sum(driver.creates for driver in drivers.values())
    if created:
        raise RuntimeError(f"a steady fleet should need no new replicas, but {created} were created")
    return elapsed


def reconcile_pass_seconds(log: Any) -> tuple[float, float]:
    """The best stubbed pass and the best pass with real HTTP probes, in seconds."""
    port = free_port()
    fleet = subprocess.Popen([sys.executable, "-m", "benchmarks.fleet", "--port", str(port)], cwd=settings.BASE_DIR, stdout=subprocess.PIPE)
    try:
        assert fleet.stdout is not None
        if not fleet.stdout.readline():
            raise RuntimeError("the fleet server did not start")
        drivers: dict[str, InMemoryDriver] = {}
        log(f"seeding {DEPLOYMENTS} deployments with READY replicas on {CLUSTERS} clusters ...")
        ids = _seed(drivers, port)
        stubbed: list[float] = []
        real: list[float] = []
        for round_ in range(ROUNDS):
            stubbed.append(_one_pass(ids, drivers, real=False))
            real.append(_one_pass(ids, drivers, real=True))
            log(f"  round {round_ + 1}: stubbed probes {stubbed[-1]:.2f} s, real HTTP probes {real[-1]:.2f} s")
        return min(stubbed), min(real)
    finally:
        stop(fleet)


def cold_start_seconds(model: str = "all-minilm-l6-v2") -> float:
    """A new model-server process for the embeddings model, until its first answer."""
    started = time.perf_counter()
    server = start_model_server(model, cache_dir=settings.MODEL_CACHE_DIR)
    try:
        while True:
            if server.process.poll() is not None:
                raise RuntimeError("the model server exited during its cold start")
            try:
                response = httpx.post(server.url + "/v1/embeddings", json={"model": model, "input": "cold start"}, timeout=5)
                if response.status_code == 200:
                    return time.perf_counter() - started
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
    finally:
        stop(server.process)


def run(*, seconds: float = 10.0, log: Any = print) -> ControlPlaneFigures:
    if connection.vendor != "postgresql":
        raise RuntimeError(
            "bench controlplane measures on PostgreSQL: set DATABASE_URL=postgres://... (a throwaway database is created for the run)"
        )
    creation = connection.creation
    original = connection.settings_dict["NAME"]
    creation.create_test_db(verbosity=0, autoclobber=True, keepdb=False)
    try:
        pass_s, real_s = reconcile_pass_seconds(log)
        ray_scale_s, agent_scale_s = scale_0_to_4_seconds(log)
    finally:
        creation.destroy_test_db(original, verbosity=0)
    log("cold start of the embeddings model ...")
    cold = cold_start_seconds()
    log(f"  {cold:.2f} s")
    return ControlPlaneFigures(
        reconcile_pass_s=pass_s,
        reconcile_pass_real_probes_s=real_s,
        deployments=DEPLOYMENTS,
        clusters=CLUSTERS,
        cold_start_s=cold,
        ray_scale_0_to_4_s=ray_scale_s,
        agent_scale_0_to_4_s=agent_scale_s,
    )


def table(figures: ControlPlaneFigures) -> str:
    data = figures.as_json()
    return "\n".join(
        [
            "| figure | measured | goal |",
            "|---|---|---|",
            f"| one reconcile pass, {data['deployments']} deployments on {data['clusters']} clusters (no-I/O driver, PostgreSQL) "
            f"| {data['reconcile_pass_s']} s ({data['deployments_per_s']} deployments/s) | < 2 s |",
            f"| the same pass with real HTTP probes: /health and /metrics of {data['deployments']} replicas on a fleet server "
            f"| {data['reconcile_pass_real_probes_s']} s ({data['real_probes_deployments_per_s']} deployments/s) | < 3 s |",
            f"| cold start of the embeddings model until its first answer | {data['cold_start_s']} s | |",
            f"| scale 0 -> 4 READY replicas of tiny-chat, Ray Serve on a local Ray cluster | {data['ray_scale_0_to_4_s']} s | |",
            f"| the same on one local agent | {data['agent_scale_0_to_4_s']} s | |",
        ]
    )
