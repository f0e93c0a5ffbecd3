"""Gateway tests: the project's ASGI application (the session's live server) in front of
controllable OpenAI-compatible backends, each a real HTTP server process."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from console.models import Organization
from deployments.serving.processes import free_port, stop
from tests.servers import ROOT, wait_until_up


@dataclass
class Backend:
    name: str
    url: str
    process: subprocess.Popen[bytes]

    def control(self, **behaviour: object) -> None:
        httpx.post(self.url + "/control", json=behaviour, timeout=5).raise_for_status()

    def stats(self) -> dict[str, int]:
        return httpx.get(self.url + "/stats", timeout=5).json()

    @property
    def requests(self) -> int:
        return self.stats()["requests"]


def start_backend(name: str) -> Backend:
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "routing.benchmarks.backend", "--port", str(port), "--name", name], cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    wait_until_up(url + "/health", process)
    return Backend(name, url, process)


@pytest.fixture(scope="session")
def backend_pool() -> Iterator[list[Backend]]:
    backends = [start_backend(name) for name in ("alpha", "beta", "gamma")]
    yield backends
    for backend in backends:
        stop(backend.process)


@pytest.fixture
def backends(backend_pool: list[Backend]) -> list[Backend]:
    """Three running backends, reset to answer at once and succeed."""
    for backend in backend_pool:
        if backend.process.poll() is not None:
            raise RuntimeError(f"backend {backend.name} died")
        backend.control(reset=True)
    return backend_pool


@pytest.fixture
def gateway(live_server_url: str, transactional_db: None) -> str:
    return live_server_url


def set_limits(org: Organization, **limits: int | None) -> None:
    from deployments.models import Quota

    quota, _ = Quota.objects.get_or_create(organization=org)
    for name, value in limits.items():
        setattr(quota, name, value)
    quota.save()
