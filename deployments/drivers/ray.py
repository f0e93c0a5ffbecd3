"""The `ray` driver: replicas as Ray Serve applications on a Ray cluster (docs/drivers-ray.md).

Each replica is one Serve application named `<namespace>.<replica id>` with a single
deployment (one Serve replica) of `modelserver.ray_host.ModelServerHost`, whose actor runs
the model server on its node. Ray places the actor by its resources: `num_gpus` and a
custom resource per GPU type (`gpu_type:T4`) or Ray's `accelerator_type`, CPUs only for
CPU replicas. Serve keeps the application at one healthy replica (its health check calls
the server's /health), restarts a dead actor elsewhere (a new endpoint, which the
reconcile loop probes afresh) and drains the actor on delete.

The driver connects once per process (`ray.init`, lazily, on first use; a Celery worker's
child connects on its own) and talks to one Ray cluster per process: several Switchboard
clusters may share it, each under its own namespace. Every call blocks on the Ray cluster,
so async code calls the driver from a thread, never on its event loop."""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import ray
from ray import serve
from ray.serve.schema import ApplicationStatus

from deployments.drivers.base import CPU, OPTION_FLAGS, RUNTIME_VLLM, DriverError, ObservedReplica, ReplicaRequest
from modelserver.ray_host import HostSpec, ModelServerHost, vllm_binary

log = logging.getLogger(__name__)
DEPLOYMENT_NAME = "model-server"
DEFAULT_DRAIN_SECONDS = 30.0
DESCRIBE_TIMEOUT_S = 10.0
PREFLIGHT_TIMEOUT_S = 30.0
# Ray's accelerator_type names for the GPU types the catalog knows (ray.util.accelerators).
ACCELERATOR_TYPES = {"T4": "T4", "L4": "L4", "A10G": "A10G", "A100-80GB": "A100-80G", "H100": "H100"}


@dataclass(frozen=True)
class RayConnection:
    """A cluster's `connection` JSON for the ray driver."""

    address: str  # the GCS, "host:port"
    namespace: str  # names this Switchboard cluster's applications; several may share one Ray cluster
    replica_cpus: float = 1.0  # CPUs reserved for each replica's actor
    gpu_placement: str = "resource"  # "resource": a custom resource per type ("gpu_type:T4"); "accelerator_type": Ray's
    model_cache_dir: str = ""  # on each node; a temporary folder when empty
    drain_seconds: float = DEFAULT_DRAIN_SECONDS

    @classmethod
    def parse(cls, connection: dict[str, Any]) -> RayConnection:
        try:
            parsed = cls(
                address=str(connection["address"]),
                namespace=str(connection["namespace"]),
                replica_cpus=float(connection.get("replica_cpus", 1.0)),
                gpu_placement=str(connection.get("gpu_placement", "resource")),
                model_cache_dir=str(connection.get("model_cache_dir", "")),
                drain_seconds=float(connection.get("drain_seconds", DEFAULT_DRAIN_SECONDS)),
            )
        except (KeyError, TypeError, ValueError) as error:
            raise DriverError(f"a ray cluster's connection needs address and namespace: {error}") from error
        if not parsed.address or not parsed.namespace or "." in parsed.namespace:
            raise DriverError("a ray cluster's connection needs an address (host:port) and a namespace without dots")
        if parsed.gpu_placement not in ("resource", "accelerator_type"):
            raise DriverError("gpu_placement is resource or accelerator_type")
        return parsed


_connect_lock = threading.Lock()
_connected: tuple[int, str] | None = None  # (pid, address) of this process's connection


def _has_descriptor(stream: object) -> bool:
    try:
        stream.fileno()  # type: ignore[attr-defined]
    except (AttributeError, OSError, ValueError):
        return False
    return True


@contextmanager
def _std_streams_with_descriptors() -> Iterator[None]:
    """A Celery worker's sys.stdout and sys.stderr are logging proxies with no file
    descriptor, which ray.init needs (it enables faulthandler on stderr): the process's
    real streams stand in while it connects."""
    saved = sys.stdout, sys.stderr
    if not _has_descriptor(sys.stdout):
        sys.stdout = sys.__stdout__
    if not _has_descriptor(sys.stderr):
        sys.stderr = sys.__stderr__
    try:
        yield
    finally:
        sys.stdout, sys.stderr = saved


def connect(address: str, namespace: str) -> None:
    """Connects this process to the Ray cluster once, and makes sure Serve runs there
    without HTTP proxies (replicas are called directly on their own ports)."""
    global _connected
    with _connect_lock:
        if _connected is not None and _connected[0] == os.getpid():
            if _connected[1] != address:
                raise DriverError(f"this process drives the Ray cluster at {_connected[1]}; one Ray cluster per control-plane process")
            return
        try:
            if ray.is_initialized():
                ray.shutdown()  # inherited over a fork: the parent's connection is not ours
            with _std_streams_with_descriptors():
                ray.init(address=address, namespace=namespace, log_to_driver=False, logging_level=logging.WARNING)
                serve.start(proxy_location="Disabled")
        except (ConnectionError, RuntimeError, TimeoutError) as error:
            raise DriverError(f"Ray cluster at {address} unreachable: {error}") from error
        _connected = (os.getpid(), address)


def disconnect() -> None:
    """Leaves the Ray cluster (tests, benchmarks); the next call connects again."""
    global _connected
    with _connect_lock:
        if ray.is_initialized():
            ray.shutdown()
        _connected = None


def actor_options(request: ReplicaRequest, connection: RayConnection) -> dict[str, Any]:
    """Where Ray may place the replica's actor."""
    options: dict[str, Any] = {"num_cpus": connection.replica_cpus}
    if request.gpu_type == CPU or request.gpu_count == 0:
        return options
    options["num_gpus"] = request.gpu_count
    if connection.gpu_placement == "accelerator_type":
        options["accelerator_type"] = ACCELERATOR_TYPES.get(request.gpu_type, request.gpu_type)
    else:
        options["resources"] = {f"gpu_type:{request.gpu_type}": request.gpu_count}
    return options


def host_spec(request: ReplicaRequest, connection: RayConnection) -> HostSpec:
    flags: list[str] = []
    for key, value in request.options.items():
        if key not in OPTION_FLAGS:
            raise DriverError(f"unknown replica option {key!r}")
        flags += [OPTION_FLAGS[key], str(value)]
    # Plain strings only: the spec is unpickled on nodes that have no Django (a TextChoices
    # member would drag deployments.models along).
    return HostSpec(
        model=str(request.model),
        token=str(request.token),
        runtime=str(request.runtime),
        options=tuple(flags),
        env=dict(request.env),
        artifact=str(request.artifact),
        task=str(request.task),
        gpu_type=str(request.gpu_type),
        gpu_count=request.gpu_count,
        cache_dir=connection.model_cache_dir,
        drain_seconds=connection.drain_seconds,
    )


_STATE = {
    ApplicationStatus.NOT_STARTED: True,
    ApplicationStatus.DEPLOYING: True,
    ApplicationStatus.RUNNING: True,
    ApplicationStatus.UNHEALTHY: True,  # Serve replaces the replica; the probe decides READY
    ApplicationStatus.DELETING: True,  # draining: still holds its resources
    ApplicationStatus.DEPLOY_FAILED: False,
}


class RayServeDriver:
    def __init__(self, connection: RayConnection, *, connector: Callable[[str, str], None] = connect) -> None:
        self.connection = connection
        self.prefix = f"{connection.namespace}."
        self._connector = connector
        self._seen: dict[str, dict[str, Any]] = {}  # last description per replica, kept while it drains

    def _app(self, replica_id: str) -> str:
        return self.prefix + replica_id

    def _connect(self) -> None:
        self._connector(self.connection.address, self.connection.namespace)

    def _applications(self) -> dict[str, Any]:
        self._connect()
        try:
            return {name: app for name, app in serve.status().applications.items() if name.startswith(self.prefix)}
        except (ConnectionError, RuntimeError, ray.exceptions.RayError) as error:
            raise DriverError(f"Ray Serve at {self.connection.address} did not answer: {error}") from error

    def _preflight_vllm(self, options: dict[str, Any]) -> None:
        """vLLM must be on the nodes the replica can land on: asked of one such node by a
        task with the same resources, so a missing binary is refused here, not left to
        fail in Serve's constructor retries."""
        probe = ray.remote(vllm_binary).options(
            num_cpus=0,
            num_gpus=options.get("num_gpus", 0),
            resources=options.get("resources"),
            accelerator_type=options.get("accelerator_type"),
        )
        try:
            found = ray.get(probe.remote(), timeout=PREFLIGHT_TIMEOUT_S)
        except ray.exceptions.GetTimeoutError:
            return  # no such node free now: Serve waits for one, and reports a failure as the app's
        if found is None:
            raise DriverError("runtime vllm: the Ray nodes for this replica have no `vllm` command; install vLLM on them")

    def create_replica(self, request: ReplicaRequest) -> ObservedReplica:
        name = self._app(request.replica_id)
        existing = self._applications().get(name)
        if existing is not None:  # creating the same replica twice creates one
            return self._observe(name, existing)
        options = actor_options(request, self.connection)
        if request.runtime == RUNTIME_VLLM:
            self._preflight_vllm(options)
        deployment = serve.deployment(
            name=DEPLOYMENT_NAME,
            num_replicas=1,
            ray_actor_options=options,
            health_check_period_s=5,
            health_check_timeout_s=15,
            graceful_shutdown_wait_loop_s=0.5,  # requests reach the server directly, not through Serve
            graceful_shutdown_timeout_s=self.connection.drain_seconds + 10,
        )(ModelServerHost)
        application = deployment.bind(host_spec(request, self.connection))
        try:
            serve.run_many([serve.RunTarget(application, name=name, route_prefix=None)], wait_for_applications_running=False)
        except (RuntimeError, ValueError, ray.exceptions.RayError) as error:
            raise DriverError(f"Ray Serve refused replica {request.replica_id}: {error}") from error
        return ObservedReplica(request.replica_id, running=True, endpoint=None, detail="deploying on Ray Serve")

    def delete_replica(self, replica_id: str, *, drain_seconds: float) -> None:
        """Serve's graceful shutdown: the actor's server drains (up to the connection's
        drain_seconds, fixed when the replica was created), then the application is gone."""
        self._connect()
        try:
            serve.delete(self._app(replica_id), _blocking=False)
        except (RuntimeError, ray.exceptions.RayError) as error:
            raise DriverError(f"Ray Serve did not delete replica {replica_id}: {error}") from error

    def list_replicas(self) -> list[ObservedReplica]:
        applications = self._applications()
        serving = [name for name, app in applications.items() if app.status in (ApplicationStatus.RUNNING, ApplicationStatus.UNHEALTHY)]
        if serving:
            with ThreadPoolExecutor(min(8, len(serving))) as pool:
                for name, seen in zip(serving, pool.map(self._describe, serving), strict=True):
                    if seen is not None:
                        self._seen[name] = seen
        for gone in set(self._seen) - set(applications):
            del self._seen[gone]
        # A DEPLOY_FAILED application (Serve gave up after its actor failed to start three
        # times) is reported as exited; the control plane's pass for its deployment deletes
        # it (reconcile._exited) when it records the failure with Serve's reason.
        return [self._observe(name, app) for name, app in applications.items()]

    def _describe(self, name: str) -> dict[str, Any] | None:
        """The actor's own report of where it serves; None while it cannot answer (being
        replaced): the replica keeps its last endpoint until the new actor reports."""
        try:
            handle = serve.get_app_handle(name)
            described: dict[str, Any] = handle.describe.remote().result(timeout_s=DESCRIBE_TIMEOUT_S)
            return described
        except Exception as error:  # noqa: BLE001 - any failure of one replica only means "no news" for it
            log.info("replica %s did not describe itself: %s", name, error)
            return None

    def _observe(self, name: str, app: Any) -> ObservedReplica:
        seen = self._seen.get(name, {})
        status = ApplicationStatus(app.status)
        node = f"{seen['node_ip']} {seen['node_id']}" if seen else ""
        detail = status.value
        for deployment in app.deployments.values():
            lines = [line for line in str(deployment.message).splitlines() if line.strip()]
            if lines:  # Serve's message ends with the error that its traceback led to
                detail = f"{status.value}: {lines[-1].strip()}"
        return ObservedReplica(
            replica_id=name[len(self.prefix) :],
            running=_STATE[status],
            endpoint=seen.get("endpoint") if status != ApplicationStatus.DEPLOY_FAILED else None,
            detail=detail[:500],
            node=node,
            device=str(seen.get("device", "")),
        )
