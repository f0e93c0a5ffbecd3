"""The control plane for real: a Celery worker and beat, two local cluster agents and
model-server processes (the tiny chat model), against the test database."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from deployments.internal_tokens import agent_token, bearer, replica_token
from deployments.local_clusters import LocalCluster, register
from deployments.models import Deployment, Replica
from tests.conftest import Tenants
from tests.factories import create_deployment
from tests.servers import ROOT, child_database_url, child_env, free_port, stop, wait_until_up

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def control_plane(tmp_path: Path, django_db_blocker) -> Iterator[None]:  # type: ignore[no-untyped-def]
    with django_db_blocker.unblock():
        database_url = child_database_url()
    # Its own broker folder and beat schedule, so nothing else's queue is consumed.
    env = child_env(DATABASE_URL=database_url, SWITCHBOARD_DATA_DIR=str(tmp_path), SWITCHBOARD_RECONCILE_INTERVAL="1")
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "config", "worker", "--loglevel=WARNING", "--concurrency=2"], cwd=ROOT, env=env
        ),
        subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "config", "beat", "--loglevel=WARNING", "--schedule", str(tmp_path / "beat")],
            cwd=ROOT,
            env=env,
        ),
    ]
    try:
        yield
    finally:
        for process in processes:
            stop(process)


@pytest.fixture
def agents() -> Iterator[list[LocalCluster]]:
    clusters = [LocalCluster("local-us-east", "us-east", free_port()), LocalCluster("local-eu-west", "eu-west", free_port())]
    processes = [
        subprocess.Popen(
            [sys.executable, "manage.py", "cluster_agent", "--cluster", c.name, "--port", str(c.port)], cwd=ROOT, env=child_env()
        )
        for c in clusters
    ]
    try:
        for cluster, process in zip(clusters, processes, strict=True):
            wait_until_up(f"http://127.0.0.1:{cluster.port}/replicas", process)
            register(cluster)
        yield clusters
    finally:
        for process in processes:
            stop(process)


def _wait(what: str, check: Callable[[], object], timeout: float = 90.0) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def test_replicas_come_up_ready_and_a_killed_one_is_replaced(tenants: Tenants, agents: list[LocalCluster], control_plane: None) -> None:
    deployment = create_deployment(
        tenants.org_a, name="tiny", model="tiny-chat", min_replicas=1, max_replicas=1, allowed_regions=("eu-west",)
    )

    def ready() -> list[Replica]:
        return list(Replica.objects.for_org(tenants.org_a).filter(deployment=deployment, state=Replica.State.READY))

    [replica] = _wait("a READY replica", ready)
    assert replica.cluster_id == "local-eu-west"  # the only allowed region
    hello = {"model": "tiny-chat", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    answer = httpx.post(replica.endpoint + "/v1/chat/completions", json=hello, headers=bearer(replica_token(replica.id)))
    assert answer.status_code == 200
    # Nothing but the platform reaches the replica or the agent: no token, or another's, is refused.
    assert httpx.post(replica.endpoint + "/v1/chat/completions", json=hello).status_code == 401
    assert httpx.post(replica.endpoint + "/v1/chat/completions", json=hello, headers=bearer(replica_token("rep_other"))).status_code == 401
    assert httpx.get(replica.endpoint + "/metrics").status_code == 401
    assert httpx.get(replica.endpoint + "/health").status_code == 200  # liveness stays open, and says nothing else

    agent = next(cluster for cluster in agents if cluster.name == "local-eu-west")
    agent_url = f"http://127.0.0.1:{agent.port}/replicas"
    assert httpx.get(agent_url).status_code == 401
    assert httpx.get(agent_url, headers=bearer(agent_token("local-us-east"))).status_code == 401  # another cluster's token
    listed = httpx.get(agent_url, headers=bearer(agent_token(agent.name))).json()["replicas"]
    [row] = [row for row in listed if row["replica_id"] == replica.id]
    os.kill(row["pid"], signal.SIGKILL)

    [replacement] = _wait("a replacement", lambda: [r for r in ready() if r.id != replica.id])
    replica.refresh_from_db()
    assert replica.state == Replica.State.FAILED and "exited" in replica.reason
    assert replacement.cluster_id == "local-eu-west"
    # The status follows the replicas one reconcile pass later (a pass can see the
    # replacement READY after it has written the status).
    _wait(
        "the deployment active again",
        lambda: Deployment.objects.for_org(tenants.org_a).get(pk=deployment.pk).status == "active",
        timeout=30,
    )


def test_idle_scales_to_zero_and_a_request_brings_it_back(tenants: Tenants, agents: list[LocalCluster], control_plane: None) -> None:
    from deployments.enqueue import request_scale_from_zero

    deployment = create_deployment(
        tenants.org_a,
        name="sleepy",
        model="tiny-chat",
        min_replicas=0,
        max_replicas=1,
        idle_timeout_s=4,
        scale_down_delay_s=0,
        allowed_regions=("us-east",),
    )

    def status() -> str:
        deployment.refresh_from_db()
        return deployment.status

    _wait("scaled to zero", lambda: status() == "scaled_to_zero")
    request_scale_from_zero(deployment_id=deployment.pk)  # what the gateway calls for a request at zero replicas
    started = time.monotonic()
    [replica] = _wait(
        "a cold start", lambda: list(Replica.objects.for_org(tenants.org_a).filter(deployment=deployment, state=Replica.State.READY))
    )
    cold_start = time.monotonic() - started
    answer = httpx.post(
        replica.endpoint + "/v1/chat/completions",
        json={"model": "tiny-chat", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2},
        headers=bearer(replica_token(replica.id)),
    )
    assert answer.status_code == 200
    assert cold_start < 60

    # No more requests: idle past the timeout, the replica drains and the deployment is at zero again.
    _wait(
        "idle scale to zero",
        lambda: status() == "scaled_to_zero" and Replica.objects.for_org(tenants.org_a).get(pk=replica.pk).state == Replica.State.STOPPED,
    )


def test_a_new_revision_rolls_out_with_a_ready_replica_at_every_moment(
    tenants: Tenants, agents: list[LocalCluster], control_plane: None
) -> None:
    from deployments import services
    from tests.factories import owner_context

    deployment = create_deployment(
        tenants.org_a, name="rolling", model="tiny-chat", min_replicas=1, max_replicas=1, allowed_regions=("us-east",)
    )
    replicas = Replica.objects.for_org(tenants.org_a).filter(deployment=deployment)
    [old] = _wait("the first revision READY", lambda: list(replicas.filter(state=Replica.State.READY)))
    services.update_deployment(owner_context(tenants.org_a), deployment, model="tiny-embedding")
    deployment.refresh_from_db()

    deadline = time.monotonic() + 90
    while True:
        ready = list(replicas.filter(state=Replica.State.READY).select_related("revision"))
        assert ready, "a moment without a READY replica during the rollout"
        if (
            any(replica.revision_id == deployment.current_revision_id for replica in ready)
            and replicas.get(pk=old.pk).state == Replica.State.STOPPED
        ):
            break
        assert time.monotonic() < deadline, "the rollout did not finish"
        time.sleep(0.1)
    [new] = [replica for replica in ready if replica.revision_id == deployment.current_revision_id]
    answer = httpx.post(
        new.endpoint + "/v1/embeddings", json={"model": "tiny-embedding", "input": "rolled out"}, headers=bearer(replica_token(new.id))
    )
    assert answer.status_code == 200


def test_a_worker_killed_mid_reconcile_leaves_no_duplicate_replica(
    tenants: Tenants, agents: list[LocalCluster], tmp_path: Path, django_db_blocker
) -> None:  # type: ignore[no-untyped-def]
    """The fault: the Celery worker SIGKILLed (its whole process group) while it places a
    deployment's replicas, then a new worker started. The expectation: the deployment gets
    exactly the replicas it asks for, each one model-server process, no orphan left on the
    cluster; within four minutes, as a pass killed while it held the deployment's lease
    leaves it to lapse (deployments.reconcile.LEASE, 120 s) before another may start."""
    with django_db_blocker.unblock():
        database_url = child_database_url()
    env = child_env(DATABASE_URL=database_url, SWITCHBOARD_DATA_DIR=str(tmp_path), SWITCHBOARD_RECONCILE_INTERVAL="1")
    worker_command = [sys.executable, "-m", "celery", "-A", "config", "worker", "--loglevel=WARNING", "--concurrency=2"]
    beat = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "config", "beat", "--loglevel=WARNING", "--schedule", str(tmp_path / "beat")],
        cwd=ROOT,
        env=env,
    )
    worker = subprocess.Popen(worker_command, cwd=ROOT, env=env, start_new_session=True)
    try:
        deployment = create_deployment(
            tenants.org_a, name="twice", model="tiny-chat", min_replicas=2, max_replicas=2, allowed_regions=("us-east", "eu-west")
        )
        replicas = Replica.objects.for_org(tenants.org_a).filter(deployment=deployment)
        _wait("the first pass placing replicas", lambda: replicas.exists(), timeout=60)
        os.killpg(worker.pid, signal.SIGKILL)  # mid-pass: rows written, model servers starting
        worker.wait()
        worker = subprocess.Popen(worker_command, cwd=ROOT, env=env, start_new_session=True)

        live = (Replica.State.PENDING, Replica.State.PROVISIONING, Replica.State.READY)
        _wait("two READY replicas", lambda: replicas.filter(state=Replica.State.READY).count() == 2, timeout=240)
        assert replicas.filter(state__in=live).count() == 2  # none extra, in any state

        def on_clusters() -> list[str]:
            rows = []
            for cluster in agents:
                listed = httpx.get(f"http://127.0.0.1:{cluster.port}/replicas", headers=bearer(agent_token(cluster.name))).json()
                rows += [row["replica_id"] for row in listed["replicas"] if row["running"]]
            return rows

        ready = set(replicas.filter(state=Replica.State.READY).values_list("id", flat=True))
        # One model server per READY replica on the clusters (these agents serve this test only).
        _wait("no orphan or duplicate model server", lambda: sorted(on_clusters()) == sorted(ready), timeout=60)
    finally:
        stop(worker)
        stop(beat)
