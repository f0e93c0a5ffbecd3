"""The model server inside a Ray Serve replica: the half of the Ray driver
(deployments/drivers/ray.py) that runs on the cluster's nodes.

Each Switchboard replica is one Serve application whose single deployment replica is a
`ModelServerHost` actor. The actor starts the model server as a child process on a free
port of its node, bound to the node's address and requiring the replica's token, and
reports where it listens. Traffic goes straight to that port (the gateways call replicas
over HTTP, as on every cluster), not through Serve's proxy or handles; Serve places the
actor by its resources, restarts it when it dies or fails its health check, and drains it
on delete. The child dies with the actor (PR_SET_PDEATHSIG), so a killed actor leaves no
orphan holding a port or a GPU.

Nothing here imports the platform: a Ray node needs this package (modelserver) and its
dependencies, not Django."""

from __future__ import annotations

import ctypes
import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import ray

from modelserver.auth import API_KEY_VARIABLE

RUNTIME_BUILTIN = "builtin"
RUNTIME_VLLM = "vllm"
VLLM_API_KEY_VARIABLE = "VLLM_API_KEY"  # vLLM's OpenAI server reads its --api-key from here too
_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class HostSpec:
    """What one replica runs: sent by the driver, unpickled on the node."""

    model: str
    token: str = field(repr=False)  # never in an error message or a log line
    runtime: str = RUNTIME_BUILTIN
    options: tuple[str, ...] = ()  # extra command-line flags for the server
    env: dict[str, str] = field(default_factory=dict)
    artifact: str = ""  # vLLM: the weights to serve (a Hugging Face id or a path); the model name otherwise
    task: str = ""  # a registered model's task: the built-in server then loads `artifact`, a directory
    gpu_type: str = "CPU"
    gpu_count: int = 0
    cache_dir: str = ""  # where the built-in server keeps model files; a temporary folder when empty
    drain_seconds: float = 30.0


def vllm_binary() -> str | None:
    """Where this node's `vllm` command is, if it has one."""
    return shutil.which("vllm")


def _node_address() -> str:
    address: str = ray.util.get_node_ip_address()
    return address


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def _die_with_parent() -> None:
    """Runs in the child before exec: SIGTERM (a drain) when the actor's process dies."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        pass  # not Linux: an actor killed outright may leave its server behind


def server_command(spec: HostSpec, *, host: str, port: int) -> list[str]:
    if spec.runtime == RUNTIME_VLLM:
        binary = vllm_binary()
        if binary is None:
            raise RuntimeError(f"runtime vllm: no `vllm` command on node {host}; install vLLM on the cluster's GPU nodes")
        command = [binary, "serve", spec.artifact or spec.model, "--served-model-name", spec.model, "--host", host, "--port", str(port)]
        if spec.gpu_count > 1:
            command += ["--tensor-parallel-size", str(spec.gpu_count)]
        return command + list(spec.options)
    cache_dir = spec.cache_dir or str(Path(os.environ.get("TMPDIR", "/tmp")) / "switchboard-models")
    command = [sys.executable, "-m", "modelserver", "--model", spec.model, "--host", host, "--port", str(port), "--cache-dir", cache_dir]
    if spec.task and spec.artifact:  # a registered model, served from its directory
        command += ["--artifact", spec.artifact, "--task", spec.task]
    return command + ["--drain-seconds", str(spec.drain_seconds), *spec.options]


def _device(spec: HostSpec) -> str:
    if spec.gpu_count == 0:
        return "cpu"
    gpus = [str(gpu) for gpu in ray.get_gpu_ids()]
    if gpus and glob.glob("/dev/nvidia[0-9]*"):
        return ", ".join(f"cuda:{gpu}" for gpu in gpus)
    return f"cpu (simulated {spec.gpu_type})"  # the node declares GPUs it does not have (tests, demos)


class ModelServerHost:
    """The Serve deployment class: one model-server process per actor."""

    def __init__(self, spec: HostSpec) -> None:
        self.spec = spec
        self.host = _node_address()
        self.port = _free_port(self.host)
        command = server_command(spec, host=self.host, port=self.port)
        # The token travels in the environment, never on the command line that `ps` shows.
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **spec.env, API_KEY_VARIABLE: spec.token}
        if spec.runtime == RUNTIME_VLLM:
            env[VLLM_API_KEY_VARIABLE] = spec.token
        started = threading.Event()
        self.process: subprocess.Popen[bytes] | None = None
        failed: list[BaseException] = []

        def run() -> None:
            # PR_SET_PDEATHSIG fires when the *thread* that forked exits, so the child is
            # started from a thread that lives exactly as long as the child.
            try:
                self.process = subprocess.Popen(command, env=env, preexec_fn=_die_with_parent)  # noqa: PLW1509
            except BaseException as error:  # a start that fails must fail the actor, not hang it
                failed.append(error)
                return
            finally:
                started.set()
            self.process.wait()

        threading.Thread(target=run, name="model-server", daemon=True).start()
        started.wait()
        if failed:
            raise RuntimeError(f"the model server could not start: {failed[0]}")
        advertised = f"[{self.host}]" if ":" in self.host else self.host
        self.endpoint = f"http://{advertised}:{self.port}"
        context = ray.get_runtime_context()
        self.node_id = context.get_node_id()
        self.device = _device(spec)

    def _server(self) -> subprocess.Popen[bytes]:
        assert self.process is not None
        return self.process

    def describe(self) -> dict[str, object]:
        """Where this replica serves; the driver reads it to report the replica."""
        return {
            "endpoint": self.endpoint,
            "node_id": self.node_id,
            "node_ip": self.host,
            "device": self.device,
            "pid": self._server().pid,
            "actor_name": ray.get_runtime_context().get_actor_name() or "",
        }

    def check_health(self) -> None:
        """Serve's health check: the server process is alive and its engine is not
        broken (loading is healthy: the control plane's probe waits for READY)."""
        code = self._server().poll()
        if code is not None:
            raise RuntimeError(f"the model server exited with code {code}")
        try:
            response = httpx.get(self.endpoint + "/health", timeout=5.0)
        except httpx.HTTPError:
            return  # still starting to listen: Serve's timeout and the process check cover a hang
        if response.status_code != 200 and _is_broken(response.json):
            raise RuntimeError(f"the model server's engine failed: {response.text[:300]}")

    def __del__(self) -> None:
        """Serve's graceful shutdown: SIGTERM, the server drains its requests, then exits."""
        process = self.process
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=self.spec.drain_seconds + 5)
        except subprocess.TimeoutExpired:
            process.kill()


def _is_broken(body: Callable[[], object]) -> bool:
    try:
        parsed = body()
    except ValueError:
        return False
    return isinstance(parsed, dict) and parsed.get("status") == "broken"
