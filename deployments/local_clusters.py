"""The two local clusters the run command starts, on this machine, with a declared
(simulated) GPU inventory, so region policy and failover can be seen on one machine while
the models really run here: one agent process each (`up`), or two namespaces of one local
Ray cluster (`up --ray`). The clusters of the mode not running are cordoned, so nothing is
placed where nothing runs."""

from __future__ import annotations

from dataclasses import dataclass

from django.db import transaction

from deployments.gpu_catalog import ensure_gpu_types
from deployments.local_ray import register_ray_cluster
from deployments.models import Cluster, ClusterGpu


@dataclass(frozen=True)
class LocalCluster:
    name: str
    region: str
    port: int


LOCAL_CLUSTERS = (LocalCluster("local-us-east", "us-east", 9101), LocalCluster("local-eu-west", "eu-west", 9102))
SIMULATED_INVENTORY = {"CPU": 8, "T4": 4, "L4": 4, "A10G": 2, "A100-80GB": 2, "H100": 2}
RAY_PREFIX = "ray-"  # `up --ray` registers ray-us-east and ray-eu-west
# A Ray replica's CPU share: four replicas fit on a 2-core machine.
RAY_REPLICA_CPUS = 0.5


@transaction.atomic
def register(cluster: LocalCluster, host: str = "127.0.0.1") -> Cluster:
    ensure_gpu_types()
    row, _ = Cluster.objects.update_or_create(
        name=cluster.name,
        defaults={
            "provider": "local",
            "region": cluster.region,
            "driver": Cluster.Driver.LOCAL,
            "connection": {"agent_url": f"http://{host}:{cluster.port}"},
            "simulated": True,
        },
    )
    for gpu, count in SIMULATED_INVENTORY.items():
        ClusterGpu.objects.get_or_create(cluster=row, gpu_type_id=gpu, defaults={"count": count})
    return row


@transaction.atomic
def register_on_ray(cluster: LocalCluster, *, address: str) -> Cluster:
    """The cluster as a namespace of the local Ray cluster at `address`."""
    return register_ray_cluster(
        RAY_PREFIX + cluster.name.removeprefix("local-"),
        region=cluster.region,
        address=address,
        inventory=SIMULATED_INVENTORY,
        replica_cpus=RAY_REPLICA_CPUS,
    )


def cordon_other_mode(*, running: list[str]) -> None:
    """Cordons the demo clusters that this run does not start (the agents' under `--ray`,
    the Ray ones without), and makes the running ones active again."""
    demo = [cluster.name for cluster in LOCAL_CLUSTERS] + [RAY_PREFIX + cluster.name.removeprefix("local-") for cluster in LOCAL_CLUSTERS]
    Cluster.objects.filter(name__in=demo).exclude(name__in=running).filter(status=Cluster.Status.ACTIVE).update(
        status=Cluster.Status.CORDONED
    )
    Cluster.objects.filter(name__in=running, status=Cluster.Status.CORDONED).update(status=Cluster.Status.ACTIVE)
