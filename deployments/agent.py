"""The local cluster agent: a small HTTP API that starts and stops model-server processes
on free ports of this machine and reports their state. One agent is one cluster.

Every call needs the agent's bearer token (deployments.internal_tokens.agent_token), and
every replica it starts requires the token the control plane sent with it, so neither the
agent nor a replica answers anyone but the platform. Replicas listen on `replica_host`
and are advertised at `advertise_host`, so a cluster can live on another machine.

Replicas outlive their agent: a restarted agent adopts the model servers its predecessor
recorded in its state file (deployments.replica_processes), so killing an agent interrupts
no traffic and leaves no orphan.

GPUs: an agent given GPU indices (`--gpus 0,1`, or those `nvidia-smi` lists) pins each GPU
replica to GPUs of its own with CUDA_VISIBLE_DEVICES and refuses one that does not fit; a
CPU replica sees no GPU. An agent with none runs every replica on the CPU and reports a GPU
replica's device as simulated ("cpu (simulated T4)"): its inventory is declared, not real."""

from __future__ import annotations

import asyncio
import hmac
import logging
import shutil
import socket
import subprocess
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from deployments.drivers.base import CPU, OPTION_FLAGS, RUNTIME_BUILTIN
from deployments.replica_processes import AdoptedProcess, ChildProcess, RecordedReplica, ReplicaProcess, StateFile
from modelserver.auth import API_KEY_VARIABLE
from modelserver.catalog import CATALOG, Task
from modelserver.hub import HubModel
from modelserver.processes import start_model_server

log = logging.getLogger(__name__)


# Environment the control plane may not set on a replica: the agent owns these.
RESERVED_ENV = frozenset({API_KEY_VARIABLE, "CUDA_VISIBLE_DEVICES"})


class Unplaceable(Exception):
    """The replica does not fit this agent (its runtime or its GPUs)."""


def detected_gpus() -> list[str]:
    """The NVIDIA GPU indices on this machine, per nvidia-smi; none without it."""
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        listed = subprocess.run(
            ["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"], capture_output=True, text=True, timeout=10, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in listed.stdout.splitlines() if line.strip().isdigit()]


@dataclass(frozen=True)
class Placement:
    """What a replica asks of the agent's machine."""

    gpu_type: str = CPU
    gpu_count: int = 0
    runtime: str = RUNTIME_BUILTIN
    env: tuple[tuple[str, str], ...] = ()
    # A registered model: the Hugging Face directory the server loads, and its task.
    artifact: str = ""
    task: str = ""


@dataclass
class ManagedReplica:
    replica_id: str
    model: str
    endpoint: str
    process: ReplicaProcess
    node: str
    gpu_type: str = CPU
    devices: tuple[str, ...] = ()
    device: str = "cpu"
    draining: bool = False

    def as_json(self) -> dict[str, object]:
        running = self.process.running()
        detail = "" if running or not isinstance(self.process, AdoptedProcess) else "exited after an agent restart"
        return {
            "replica_id": self.replica_id,
            "model": self.model,
            "endpoint": self.endpoint,
            "running": running,
            "exit_code": None if running else self.process.exit_code(),
            "pid": self.process.pid,
            "detail": detail,
            "node": self.node,
            "device": self.device,
        }


class Agent:
    def __init__(
        self,
        cluster: str,
        *,
        model_cache_dir: Path,
        state_file: Path,
        replica_host: str = "127.0.0.1",
        advertise_host: str = "127.0.0.1",
        gpus: list[str] | None = None,
        node: str = "",
    ) -> None:
        self.cluster = cluster
        self.model_cache_dir = model_cache_dir
        self.replica_host = replica_host
        self.advertise_host = advertise_host
        self.gpus = list(gpus) if gpus is not None else detected_gpus()
        self.node = node or socket.gethostname()
        self.state = StateFile(state_file)
        self._lock = threading.Lock()
        self.replicas: dict[str, ManagedReplica] = {}
        for recorded in self.state.adoptable():
            process = AdoptedProcess(recorded.pid)
            self.replicas[recorded.replica_id] = ManagedReplica(
                recorded.replica_id,
                recorded.model,
                recorded.endpoint,
                process,
                self.node,
                gpu_type=recorded.gpu_type,
                devices=recorded.devices,
                device=recorded.device,
            )
            log.info("%s: adopted replica %s at %s, pid %s", cluster, recorded.replica_id, recorded.endpoint, recorded.pid)
        self._save()

    def _save(self) -> None:
        """Records what runs now; called with the lock held (or before anyone else can call)."""
        self.state.save(
            [
                RecordedReplica(r.replica_id, r.model, r.endpoint, r.process.pid, r.gpu_type, r.devices, r.device)
                for r in self.replicas.values()
                if r.process.running()
            ]
        )

    def _pin(self, placement: Placement) -> tuple[tuple[str, ...], str]:
        """The GPUs a new replica gets and the device it reports; called with the lock held."""
        if placement.gpu_count == 0:
            return (), "cpu"
        if not self.gpus:
            return (), f"cpu (simulated {placement.gpu_type})"
        taken = {index for replica in self.replicas.values() if replica.process.running() for index in replica.devices}
        free = [index for index in self.gpus if index not in taken]
        if len(free) < placement.gpu_count:
            raise Unplaceable(f"{placement.gpu_count} GPU(s) asked, {len(free)} of this node's {len(self.gpus)} free")
        devices = tuple(free[: placement.gpu_count])
        return devices, "cuda:" + ",".join(devices)

    def create(
        self, replica_id: str, model: str, options: dict[str, object], token: str, placement: Placement | None = None
    ) -> ManagedReplica:
        placement = placement or Placement()
        if placement.runtime != RUNTIME_BUILTIN:
            raise Unplaceable(
                f"the local agent runs the built-in model server only, not {placement.runtime!r} (use a Ray or Kubernetes cluster)"
            )
        with self._lock:
            existing = self.replicas.get(replica_id)
            if existing is not None:  # creating the same replica twice creates one
                return existing
            devices, device = self._pin(placement)
            args: list[str] = ["--artifact", placement.artifact, "--task", placement.task] if placement.artifact else []
            for key, value in options.items():
                args += [OPTION_FLAGS[key], str(value)]
            # The token travels in the environment, not the command line that `ps` shows. A
            # CPU replica, or any replica on an agent without GPUs, sees no GPU at all.
            server = start_model_server(
                model,
                *args,
                cache_dir=self.model_cache_dir,
                host=self.replica_host,
                advertise_host=self.advertise_host,
                env={**dict(placement.env), API_KEY_VARIABLE: token, "CUDA_VISIBLE_DEVICES": ",".join(devices)},
            )
            replica = ManagedReplica(
                replica_id=replica_id,
                model=model,
                endpoint=server.url,
                process=ChildProcess(server.process),
                node=self.node,
                gpu_type=placement.gpu_type,
                devices=devices,
                device=device,
            )
            self.replicas[replica_id] = replica
            self._save()
            log.info(
                "%s: started replica %s (%s) at %s on %s, pid %s", self.cluster, replica_id, model, server.url, device, server.process.pid
            )
            return replica

    def delete(self, replica_id: str, drain_seconds: float) -> bool:
        # The replica stays listed (running) until its process has exited: while it drains
        # it still holds its GPU, and the control plane must not count that GPU free.
        with self._lock:
            replica = self.replicas.get(replica_id)
            if replica is not None and not replica.process.running():
                del self.replicas[replica_id]  # exited already: nothing to drain, nothing to keep
                self._save()
                return True
        if replica is None:
            return False
        if replica.process.running() and not replica.draining:
            replica.draining = True
            replica.process.terminate()  # the model server drains, then exits
            threading.Thread(target=self._reap, args=(replica, drain_seconds + 5), daemon=True).start()
        return True

    def _reap(self, replica: ManagedReplica, timeout: float) -> None:
        replica.process.stop(timeout)
        with self._lock:
            if self.replicas.get(replica.replica_id) is replica:
                del self.replicas[replica.replica_id]
            self._save()

    def stop_all(self) -> None:
        """An agent asked to stop (Ctrl-C on `up`, SIGTERM) stops its replicas with it."""
        with self._lock:
            replicas, self.replicas = list(self.replicas.values()), {}
            self._save()
        for replica in replicas:
            replica.process.stop(timeout=10)


class RequireBearer:
    """Refuses every request without the agent's bearer token, before any route runs."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self.expected = f"Bearer {token}".encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            given = dict(scope["headers"]).get(b"authorization", b"")
            if not hmac.compare_digest(given, self.expected):
                await JSONResponse({"error": "this agent answers the control plane only"}, status_code=401)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _placement(body: dict[str, object]) -> Placement | str:
    gpu_type, gpu_count, runtime, env = (
        body.get("gpu_type", CPU),
        body.get("gpu_count", 0),
        body.get("runtime", RUNTIME_BUILTIN),
        body.get("env") or {},
    )
    if not isinstance(gpu_type, str) or not gpu_type:
        return "gpu_type: a GPU type id, or CPU"
    if not isinstance(gpu_count, int) or isinstance(gpu_count, bool) or not 0 <= gpu_count <= 16:
        return "gpu_count: a whole number from 0 to 16"
    if not isinstance(runtime, str):
        return "runtime: builtin or vllm"
    if not isinstance(env, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in env.items()):
        return "env: an object of strings"
    reserved = sorted(RESERVED_ENV & set(env))
    if reserved:
        return f"env: {', '.join(reserved)} are set by the agent"
    return Placement(gpu_type, gpu_count, runtime, tuple(sorted(env.items())))


def _artifact(body: dict[object, object], model: str) -> tuple[str, str] | str:
    """A registered model's directory (or Hugging Face repo) and task, or what is wrong with
    them. A catalog model needs neither; any other name needs both."""
    artifact, task = body.get("artifact", ""), body.get("task", "")
    if not artifact and not task:
        return (
            ("", "") if model in CATALOG else f"unknown model {model!r}: send its artifact directory and task to serve a registered model"
        )
    if not isinstance(task, str) or task not in {str(known) for known in Task}:
        return f"task: one of {', '.join(str(known) for known in Task)}"
    if not isinstance(artifact, str):
        return "artifact: the absolute path of the model's directory on this machine, or hf://OWNER/NAME@REVISION"
    try:
        if HubModel.parse(artifact) is not None:
            return artifact, task  # the model server fetches it when it starts
    except ValueError as malformed:
        return f"artifact: {malformed}"
    if not Path(artifact).is_absolute():
        return "artifact: the absolute path of the model's directory on this machine, or hf://OWNER/NAME@REVISION"
    if not Path(artifact).is_dir():
        return f"artifact: {artifact} is not a directory on this machine"
    return artifact, task


def _creation(body: object) -> tuple[str, str, dict[str, object], str, Placement] | str:
    """What a create request asks for, or what is wrong with it."""
    try:
        assert isinstance(body, dict)
        replica_id, model, options, token = str(body["replica_id"]), str(body["model"]), dict(body.get("options") or {}), body["token"]
    except (AssertionError, ValueError, KeyError, TypeError):
        return "send {replica_id, model, options, token}"
    if not isinstance(token, str) or len(token) < 32:
        return "token: the bearer token the replica must require (32 characters or more)"
    served = _artifact(body, model)
    if isinstance(served, str):
        return served
    unknown = sorted(set(options) - set(OPTION_FLAGS))
    if unknown:
        return f"unknown options {unknown}"
    placement = _placement(body)
    if isinstance(placement, str):
        return placement
    return replica_id, model, options, token, replace(placement, artifact=served[0], task=served[1])


def build_agent_app(
    cluster: str,
    *,
    token: str,
    model_cache_dir: Path,
    state_file: Path,
    replica_host: str = "127.0.0.1",
    advertise_host: str = "127.0.0.1",
    gpus: list[str] | None = None,
    node: str = "",
) -> Starlette:
    if not token:
        raise ValueError("a cluster agent needs its token")
    agent = Agent(
        cluster,
        model_cache_dir=model_cache_dir,
        state_file=state_file,
        replica_host=replica_host,
        advertise_host=advertise_host,
        gpus=gpus,
        node=node,
    )

    async def list_replicas(request: Request) -> JSONResponse:
        return JSONResponse({"cluster": cluster, "replicas": [replica.as_json() for replica in list(agent.replicas.values())]})

    async def create_replica(request: Request) -> JSONResponse:
        try:
            body = await request.json()
        except ValueError:
            body = None
        wanted = _creation(body)
        if isinstance(wanted, str):
            return JSONResponse({"error": wanted}, status_code=400)
        try:
            replica = await asyncio.to_thread(agent.create, *wanted)  # fork/exec off the event loop
        except Unplaceable as error:
            return JSONResponse({"error": str(error)}, status_code=409)
        return JSONResponse(replica.as_json(), status_code=201)

    async def delete_replica(request: Request) -> JSONResponse:
        try:
            drain = float(request.query_params.get("drain_seconds", "30"))
        except ValueError:
            return JSONResponse({"error": "drain_seconds must be a number"}, status_code=400)
        found = await asyncio.to_thread(agent.delete, request.path_params["replica_id"], drain)
        return JSONResponse({"deleted": found})

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        agent.stop_all()

    return Starlette(
        routes=[
            Route("/replicas", list_replicas, methods=["GET"]),
            Route("/replicas", create_replica, methods=["POST"]),
            Route("/replicas/{replica_id}", delete_replica, methods=["DELETE"]),
        ],
        middleware=[Middleware(RequireBearer, token=token)],
        lifespan=lifespan,
    )
