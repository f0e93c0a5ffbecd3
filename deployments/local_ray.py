"""A Ray cluster on this machine, for `up --ray`, the Ray tests and the benchmark: a head
and optional further nodes, each a `ray start --block` process of its own, on free ports
and in a temporary folder of its own, so stopping one stops exactly its processes (never
`ray stop`, which stops every Ray on the machine). The dashboard and usage reporting are
off; nodes advertise the CPUs and the resources they are given, such as `gpu_type:T4`,
which the Ray driver places GPU replicas by."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from django.db import transaction

from deployments.gpu_catalog import ensure_gpu_types
from deployments.models import Cluster, ClusterGpu
from modelserver.processes import free_port

STARTED = "Ray runtime started"


@dataclass(frozen=True)
class RayNode:
    cpus: float
    gpus: int = 0
    resources: dict[str, float] = field(default_factory=dict)  # e.g. {"gpu_type:T4": 1}


def ray_command() -> list[str]:
    """The `ray` CLI of this interpreter's environment."""
    return [sys.executable, "-c", "from ray.scripts.scripts import main; main()"]


def node_environment(project_root: Path) -> dict[str, str]:
    """Workers import modelserver (the replicas' actors) from the project."""
    path = os.pathsep.join(filter(None, [str(project_root), os.environ.get("PYTHONPATH", "")]))
    # A local cluster stops as a whole, after the control plane drained its replicas: its
    # nodes need not wait out Ray's own drain (30 s each) when they are stopped.
    return {**os.environ, "PYTHONPATH": path, "RAY_USAGE_STATS_ENABLED": "0", "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0"}


def _node_flags(node: RayNode) -> list[str]:
    flags = [f"--num-cpus={node.cpus:g}", f"--num-gpus={node.gpus}", "--disable-usage-stats", "--block"]
    flags += [f"--dashboard-agent-listen-port={free_port()}"]  # its default, 52365, would clash between nodes
    if node.resources:
        flags.append("--resources=" + json.dumps(node.resources))
    return flags


def head_command(head: RayNode, *, port: int, temp_dir: Path) -> list[str]:
    return [
        *ray_command(),
        "start",
        "--head",
        f"--port={port}",
        "--include-dashboard=false",
        f"--temp-dir={temp_dir}",
        f"--ray-client-server-port={free_port()}",
        *_node_flags(head),
    ]


def worker_command(node: RayNode, *, address: str) -> list[str]:
    return [*ray_command(), "start", f"--address={address}", *_node_flags(node)]


@dataclass
class LocalRay:
    address: str
    temp_dir: Path
    processes: list[subprocess.Popen[bytes]]


def _start(command: list[str], log: Path, env: dict[str, str], timeout: float) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    deadline = time.monotonic() + timeout
    while STARTED not in log.read_text(errors="replace"):
        if process.poll() is not None or time.monotonic() > deadline:
            _stop([process])
            raise RuntimeError(f"`ray start` did not start (see {log}):\n{log.read_text(errors='replace')[-2000:]}")
        time.sleep(0.2)
    return process


def _stop(processes: list[subprocess.Popen[bytes]], timeout: float = 30.0) -> None:
    for process in reversed(processes):  # workers first, the head last
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)  # `ray start --block` stops its node's processes
            try:
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


@contextmanager
def local_ray_cluster(
    project_root: Path, head: RayNode, *others: RayNode, port: int | None = None, timeout: float = 120.0
) -> Iterator[LocalRay]:
    # A short path: Ray's socket paths live under it and must stay under the OS limit.
    temp_dir = Path(tempfile.mkdtemp(prefix="sbray", dir="/tmp"))
    port = port or free_port()
    address = f"127.0.0.1:{port}"
    env = node_environment(project_root)
    processes: list[subprocess.Popen[bytes]] = []
    try:
        processes.append(_start(head_command(head, port=port, temp_dir=temp_dir), temp_dir / "head.log", env, timeout))
        for index, node in enumerate(others):
            processes.append(_start(worker_command(node, address=address), temp_dir / f"node-{index}.log", env, timeout))
        yield LocalRay(address=address, temp_dir=temp_dir, processes=processes)
    finally:
        _stop(processes)
        shutil.rmtree(temp_dir, ignore_errors=True)


@transaction.atomic
def register_ray_cluster(
    name: str, *, region: str, address: str, inventory: dict[str, int], replica_cpus: float = 1.0, simulated: bool = True
) -> Cluster:
    """A Switchboard cluster backed by the Ray cluster at `address`; its replicas are the
    Serve applications named under `name`. `inventory` is what the control plane may place
    there (GPU type -> count), matching what the nodes advertise."""
    ensure_gpu_types()
    cluster, _ = Cluster.objects.update_or_create(
        name=name,
        defaults={
            "provider": "local",
            "region": region,
            "driver": Cluster.Driver.RAY,
            "connection": {"address": address, "namespace": name, "replica_cpus": replica_cpus},
            "simulated": simulated,
        },
    )
    ClusterGpu.objects.filter(cluster=cluster).exclude(gpu_type_id__in=list(inventory)).delete()
    for gpu, count in inventory.items():
        ClusterGpu.objects.update_or_create(cluster=cluster, gpu_type_id=gpu, defaults={"count": count})
    return cluster
