"""The usage hand-off under a crash: SIGKILL a gateway in the middle of a steady load."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import httpx
import pytest

from metering.models import UsageEvent
from modelserver.processes import free_port, stop
from tests.conftest import Tenants
from tests.factories import issue_key
from tests.gateway.conftest import Backend, set_limits
from tests.gateway.helpers import provider_for, route_to, wait_for
from tests.servers import ROOT, child_database_url, child_env, wait_until_up


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_no_answered_request_loses_its_event_when_the_gateway_is_killed(
    live_server_url: str, tenants: Tenants, backends: list[Backend]
) -> None:
    """SIGKILL a gateway in the middle of a steady load; every request that got a 2xx has
    exactly one usage event once a new gateway runs (the ingester runs beside them)."""
    route_to(tenants.org_a, "chat-default", [(provider_for(tenants.org_a, backends[0]), 100)])
    # The load runs as fast as the machine allows: a quota no machine reaches keeps 429s out.
    set_limits(tenants.org_a, requests_per_minute=1_000_000, tokens_per_minute=1_000_000_000, concurrent_requests=1_000)
    key = issue_key(tenants.org_a).plaintext
    env = child_env(DATABASE_URL=child_database_url())

    def start_gateway(port: int) -> subprocess.Popen[bytes]:
        process = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "config.asgi:application", "--port", str(port), "--no-access-log", "--log-level", "warning"],
            cwd=ROOT,
            env=env,
            stderr=subprocess.DEVNULL,
        )
        wait_until_up(f"http://127.0.0.1:{port}/accounts/login/", process)
        return process

    port = free_port()
    gateway = start_gateway(port)
    answered: list[str] = []
    stopping = threading.Event()

    def load() -> None:
        with httpx.Client(timeout=10) as http:
            while not stopping.is_set():
                try:
                    response = http.post(
                        f"http://127.0.0.1:{port}/v1/chat/completions",
                        json={"model": "chat-default", "messages": [{"role": "user", "content": "x"}]},
                        headers={"Authorization": f"Bearer {key}"},
                    )
                except httpx.HTTPError:
                    continue  # the gateway is down: no answer, so no event is owed
                if response.status_code == 200:
                    answered.append(response.headers["x-request-id"])

    workers = [threading.Thread(target=load) for _ in range(6)]
    for worker in workers:
        worker.start()
    wait_for(lambda: len(answered) > 300, timeout=180)  # counted in answers; the timeout only stops a hang
    os.kill(gateway.pid, signal.SIGKILL)
    gateway.wait()
    killed_at = len(answered)
    time.sleep(0.5)
    gateway = start_gateway(port)  # the same port: the load goes on against the new process
    wait_for(lambda: len(answered) > killed_at + 100, timeout=180)
    stopping.set()
    for worker in workers:
        worker.join()
    stop(gateway)

    expected = set(answered)
    assert len(expected) == len(answered)
    stored = wait_for(
        lambda: (rows := set(UsageEvent.objects.for_org(tenants.org_a).values_list("request_id", flat=True))) >= expected and rows,
        timeout=120,
    )
    assert expected <= stored
    assert UsageEvent.objects.for_org(tenants.org_a).filter(request_id__in=expected, status=200).count() == len(expected)
