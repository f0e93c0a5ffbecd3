"""Starting and stopping model-server processes on this machine (the local cluster agent,
benchmarks, tests): `python -m modelserver` under the current interpreter."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from modelserver.auth import API_KEY_VARIABLE


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def free_port_run(count: int) -> int:
    """The first of `count` consecutive ports that are free now (a local cluster's agents
    listen on a base port and the ones after it)."""
    for _ in range(100):
        base = free_port()
        if base + count > 65536:
            continue
        sockets = []
        try:
            for port in range(base, base + count):
                sock = socket.socket()
                sockets.append(sock)
                sock.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for sock in sockets:
                sock.close()
    raise RuntimeError(f"found no {count} consecutive free ports")


@dataclass(frozen=True)
class RunningServer:
    url: str
    port: int
    process: subprocess.Popen[bytes]


def start_model_server(
    model: str,
    *options: str,
    cache_dir: Path,
    port: int | None = None,
    env: dict[str, str] | None = None,
    host: str = "127.0.0.1",
    advertise_host: str = "127.0.0.1",
) -> RunningServer:
    """Starts `python -m modelserver` listening on `host`; its URL names `advertise_host`."""
    port = port or free_port()
    child_env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    child_env.pop(API_KEY_VARIABLE, None)  # a server's key is only ever the one given for it
    child_env.update(env or {})
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "modelserver",
            "--model",
            model,
            "--host",
            host,
            "--port",
            str(port),
            "--cache-dir",
            str(cache_dir),
            *options,
        ],
        env=child_env,
    )
    advertised = f"[{advertise_host}]" if ":" in advertise_host else advertise_host
    return RunningServer(url=f"http://{advertised}:{port}", port=port, process=process)


def wait_until_healthy(server: RunningServer, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"model server on port {server.port} exited with {server.process.returncode}")
        try:
            if httpx.get(server.url + "/health", timeout=2.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{server.url} was not healthy within {timeout} s")


def stop(process: subprocess.Popen[bytes], timeout: float = 30.0) -> int:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


@contextmanager
def model_server(model: str, *options: str, cache_dir: Path, wait: bool = True) -> Iterator[RunningServer]:
    server = start_model_server(model, *options, cache_dir=cache_dir)
    try:
        if wait:
            wait_until_healthy(server)
        yield server
    finally:
        stop(server.process)
