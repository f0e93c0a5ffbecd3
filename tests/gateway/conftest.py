"""Gateway tests: the project's ASGI application (the session's live server) in front of
controllable OpenAI-compatible backends, each a real HTTP server process."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from modelserver.processes import free_port, stop
from tenancy.models import Organization
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
    process = subprocess.Popen([sys.executable, "-m", "benchmarks.backend", "--port", str(port), "--name", name], cwd=ROOT)
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


@pytest.fixture(autouse=True)
def usage_drained(request: pytest.FixtureRequest) -> Iterator[None]:
    """After a test that ran gateways against the database, wait until the ingester has
    written their usage: flushing the tables while it writes can deadlock on PostgreSQL
    (TRUNCATE against its foreign-key checks)."""
    yield
    if (
        "transactional_db" in request.fixturenames
        or request.node.get_closest_marker("django_db")
        and request.node.get_closest_marker("django_db").kwargs.get("transaction")
    ):
        wait_until_usage_drained()


def wait_until_usage_drained(timeout: float = 15.0) -> None:
    from django.conf import settings

    from metering.spool import LEGACY_SPOOL_SUFFIX, SPOOL_SUFFIX, spool_directory, stream_key

    def pending() -> bool:
        directory = spool_directory()
        for path in [*directory.glob("*" + SPOOL_SUFFIX), *directory.glob("*" + LEGACY_SPOOL_SUFFIX)] if directory.exists() else []:
            offset_path = path.with_suffix(".offset")
            try:
                offset = int(offset_path.read_text()) if offset_path.exists() else 0
                if path.stat().st_size > offset:
                    return True
            except (FileNotFoundError, ValueError):
                continue  # the ingester finished the file and removed it meanwhile
        if settings.REDIS_URL:
            import redis

            return bool(redis.Redis.from_url(settings.REDIS_URL).xlen(stream_key()))
        return False

    deadline = time.monotonic() + timeout
    while pending() and time.monotonic() < deadline:
        time.sleep(0.05)


def set_limits(org: Organization, **limits: int | None) -> None:
    from deployments.models import Quota

    quota, _ = Quota.objects.get_or_create(organization=org)
    for name, value in limits.items():
        setattr(quota, name, value)
    quota.save()
