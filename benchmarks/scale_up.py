"""From a scale request to four READY replicas, on a local Ray cluster (the Ray Serve
driver) and on a local agent, side by side: part of `bench controlplane`.

The deployment (tiny-chat on CPU, at zero) is asked for four replicas, and reconcile
passes run back to back, as the reconcile loop's beat would, with the real drivers and
real /health probes, until four replicas are READY. Both clusters start before the clock
does (a Ray head with 2 CPUs, half a CPU per replica; one agent process). Runs inside the
caller's throwaway database."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from deployments import services
from deployments.drivers import DriverError, driver_for
from deployments.local_clusters import LocalCluster, register
from deployments.local_ray import RayNode, local_ray_cluster, register_ray_cluster
from deployments.models import Cluster, Deployment, Replica
from deployments.reconcile import reconcile
from modelserver.processes import free_port
from tenancy.context import OrgContext
from tenancy.models import Organization, Role

REPLICAS = 4
ROOT = Path(__file__).resolve().parent.parent
REGION = "bench-scale"


def _context() -> OrgContext:
    org, _ = Organization.objects.get_or_create(slug="bench-scale", defaults={"name": "Bench scale"})
    return OrgContext(organization=org, role=Role.OWNER)


def _ready(deployment: Deployment) -> int:
    return Replica.objects.unscoped_across_tenants().filter(deployment=deployment, state=Replica.State.READY).count()


def _time_to_ready(deployment: Deployment, timeout: float) -> float:
    ctx = _context()
    started = time.perf_counter()
    services.update_deployment(ctx, deployment, min_replicas=REPLICAS, max_replicas=REPLICAS)
    while _ready(deployment) < REPLICAS:
        if time.perf_counter() - started > timeout:
            raise RuntimeError(f"{deployment.name}: {_ready(deployment)} of {REPLICAS} replicas READY after {timeout:.0f} s")
        reconcile(deployment.pk)
        time.sleep(0.2)
    return time.perf_counter() - started


def _drain(deployment: Deployment) -> None:
    """Deletes the deployment and passes until its replicas are gone from the cluster."""
    services.delete_deployment(_context(), deployment)
    deadline = time.perf_counter() + 120
    holding = (Replica.State.STOPPED, Replica.State.FAILED)
    while Replica.objects.unscoped_across_tenants().filter(deployment=deployment).exclude(state__in=holding).exists():
        if time.perf_counter() > deadline:
            return
        reconcile(deployment.pk)
        time.sleep(0.5)


@contextmanager
def _agent_cluster() -> Iterator[Cluster]:
    port = free_port()
    state = Path(tempfile.mkdtemp(prefix="bench-agent-")) / "agent.json"
    command = [sys.executable, "manage.py", "cluster_agent", "--cluster", "bench-local", "--port", str(port), "--state-file", str(state)]
    agent = subprocess.Popen(command, cwd=ROOT)
    try:
        cluster = register(LocalCluster("bench-local", REGION, port))
        yield cluster
    finally:
        agent.terminate()
        agent.wait(timeout=60)


@contextmanager
def _ray_cluster() -> Iterator[Cluster]:
    with local_ray_cluster(ROOT, RayNode(cpus=2)) as ray:
        yield register_ray_cluster("bench-ray", region=REGION, address=ray.address, inventory={"CPU": 8}, replica_cpus=0.5)


def _answering(cluster: Cluster, timeout: float = 120) -> None:
    """Waits until the cluster's driver answers (the agent is up; this process is connected
    to Ray and Serve), so the clock counts the scale-up only."""
    deadline = time.perf_counter() + timeout
    while True:
        try:
            driver_for(cluster).list_replicas()
            return
        except DriverError:
            if time.perf_counter() > deadline:
                raise
            time.sleep(0.2)


def _measure(name: str, cluster_factory: Callable[[], Any], log: Any) -> float:
    with cluster_factory() as cluster:
        _answering(cluster)
        Cluster.objects.exclude(pk=cluster.pk).filter(region=REGION).update(status=Cluster.Status.DOWN)
        spec = services.DeploymentSpec(model="tiny-chat", gpu_type="CPU", allowed_regions=(REGION,), min_replicas=0, max_replicas=REPLICAS)
        deployment = services.create_deployment(_context(), name=f"scale-{cluster.pk}", spec=spec)
        try:
            seconds = _time_to_ready(deployment, timeout=600)
        finally:
            _drain(deployment)
            cluster.status = Cluster.Status.DOWN
            cluster.save(update_fields=["status"])
    log(f"  {name}: 0 -> {REPLICAS} READY replicas in {seconds:.1f} s")
    return seconds


def scale_0_to_4_seconds(log: Any) -> tuple[float, float]:
    """(Ray Serve, local agent): seconds from the scale request to four READY replicas."""
    log(f"scale 0 -> {REPLICAS} replicas of tiny-chat, Ray Serve driver on a local Ray cluster ...")
    ray_s = _measure("Ray Serve", _ray_cluster, log)
    log(f"scale 0 -> {REPLICAS} replicas of tiny-chat, local agent ...")
    agent_s = _measure("local agent", _agent_cluster, log)
    return ray_s, agent_s
