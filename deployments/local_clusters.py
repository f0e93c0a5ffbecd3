"""The two local clusters the run command starts: one agent process each, on this machine,
with a declared (simulated) GPU inventory, so region policy and failover can be seen on
one machine while the models really run here."""

from __future__ import annotations

from dataclasses import dataclass

from django.db import transaction

from deployments.gpu_catalog import ensure_gpu_types
from deployments.models import Cluster, ClusterGpu


@dataclass(frozen=True)
class LocalCluster:
    name: str
    region: str
    port: int


LOCAL_CLUSTERS = (LocalCluster("local-us-east", "us-east", 9101), LocalCluster("local-eu-west", "eu-west", 9102))
SIMULATED_INVENTORY = {"CPU": 8, "T4": 4, "L4": 4, "A10G": 2, "A100-80GB": 2, "H100": 2}


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
