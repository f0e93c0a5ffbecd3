"""What the Ray driver asks Ray for, without a Ray cluster: where a replica's actor may be
placed, what its node is sent, and how a Ray cluster is registered and found. The real
cluster runs in test_ray_driver.py."""

from __future__ import annotations

import pickle
import subprocess
import sys

import pytest

from deployments import cluster_ops
from deployments.drivers import DriverError, ReplicaRequest, driver_for
from deployments.drivers.ray import RayConnection, RayServeDriver, actor_options, host_spec
from deployments.gpu_catalog import ensure_gpu_types
from deployments.models import CatalogModel, Cluster
from tenancy.errors import ServiceError
from tenancy.staff_audit import StaffContext
from tests.conftest import Tenants
from tests.factories import UserFactory
from tests.servers import ROOT

CONNECTION = RayConnection(address="10.0.0.5:6379", namespace="gpu-east", replica_cpus=2)


def _request(**fields: object) -> ReplicaRequest:
    return ReplicaRequest(**{"replica_id": "rep_1", "model": "tiny-chat", "token": "t" * 40, **fields})  # type: ignore[arg-type]


def test_a_gpu_replica_asks_for_its_gpus_and_its_type_and_a_cpu_replica_for_cpus_only() -> None:
    assert actor_options(_request(), CONNECTION) == {"num_cpus": 2}
    assert actor_options(_request(gpu_type="H100", gpu_count=2), CONNECTION) == {
        "num_cpus": 2,
        "num_gpus": 2,
        "resources": {"gpu_type:H100": 2},
    }
    by_accelerator = RayConnection(address="10.0.0.5:6379", namespace="gpu-east", gpu_placement="accelerator_type")
    assert actor_options(_request(gpu_type="A100-80GB", gpu_count=1), by_accelerator) == {
        "num_cpus": 1.0,
        "num_gpus": 1,
        "accelerator_type": "A100-80G",  # Ray's name for the type
    }


def test_what_a_node_is_sent_unpickles_without_django() -> None:
    spec = host_spec(_request(runtime=CatalogModel.Runtime.BUILTIN, options={"max_batch_size": "4"}), CONNECTION)
    assert spec.runtime == "builtin" and type(spec.runtime) is str
    assert spec.options == ("--max-batch-size", "4")
    # A Ray node unpickles it with the project's modelserver package and nothing of Django.
    unpickle = "import pickle, sys; spec = pickle.load(sys.stdin.buffer); print(spec.model, 'django' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", unpickle], input=pickle.dumps(spec), capture_output=True, cwd=ROOT, check=True)
    assert done.stdout.decode().split() == ["tiny-chat", "False"]
    with pytest.raises(DriverError, match="unknown replica option"):
        host_spec(_request(options={"gpu_memory_utilization": "0.9"}), CONNECTION)


@pytest.mark.parametrize("connection", [{}, {"address": "10.0.0.5:6379"}, {"address": "h:1", "namespace": "a.b"}])
def test_a_ray_cluster_needs_an_address_and_a_namespace(connection: dict[str, str]) -> None:
    with pytest.raises(DriverError):
        RayConnection.parse(connection)


@pytest.mark.django_db
def test_staff_register_a_ray_cluster_by_its_gcs_address_and_the_control_plane_drives_it_with_ray(tenants: Tenants) -> None:
    ensure_gpu_types()
    staff = StaffContext(user=UserFactory(is_staff=True))
    inventory = [cluster_ops.InventoryRow(gpu_type="T4", count=2)]
    cluster = cluster_ops.add_cluster(
        staff, name="ray-east", provider="gcp", region="us-east", driver="ray", agent_url="ray://10.0.0.5:6379", inventory=inventory
    )
    assert cluster.connection == {"address": "10.0.0.5:6379", "namespace": "ray-east"}
    driver = driver_for(Cluster.objects.get(pk="ray-east"))
    assert isinstance(driver, RayServeDriver) and driver.connection.address == "10.0.0.5:6379"
    assert driver_for(cluster) is driver  # one per cluster for the process: it remembers what replicas reported
    for wrong in ("http://10.0.0.5:6379", "ray://10.0.0.5", "ray://10.0.0.5:port"):
        with pytest.raises(ServiceError, match="GCS address"):
            cluster_ops.add_cluster(staff, name="ray-west", provider="gcp", region="us-west", driver="ray", agent_url=wrong, inventory=[])
