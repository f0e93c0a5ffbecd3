"""The control plane for real: a Celery worker and beat, two local cluster agents and
model-server processes (the tiny chat model), against the test database."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import openai
import pytest
from django.db.models import QuerySet

from deployments import services
from deployments.internal_tokens import agent_token, bearer, replica_token
from deployments.local_clusters import LocalCluster, register
from deployments.models import Deployment, Replica
from deployments.replica_processes import process_alive
from tests.conftest import Tenants
from tests.factories import create_deployment, issue_key, owner_context
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


class Agents(list[LocalCluster]):
    """The two local clusters, each with its running agent (`manage.py cluster_agent`)."""

    def __init__(self, state_dir: Path) -> None:
        super().__init__([LocalCluster("local-us-east", "us-east", free_port()), LocalCluster("local-eu-west", "eu-west", free_port())])
        self.state_dir = state_dir
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, cluster: LocalCluster) -> None:
        command = ["manage.py", "cluster_agent", "--cluster", cluster.name, "--port", str(cluster.port)]
        command += ["--state-file", str(self.state_dir / f"{cluster.name}.json")]
        process = self.processes[cluster.name] = subprocess.Popen([sys.executable, *command], cwd=ROOT, env=child_env())
        wait_until_up(f"http://127.0.0.1:{cluster.port}/replicas", process)

    def named(self, name: str) -> LocalCluster:
        return next(cluster for cluster in self if cluster.name == name)


def running(agents: Agents) -> Iterator[Agents]:
    """Each cluster's agent started and registered, and stopped afterwards."""
    try:
        for cluster in agents:
            agents.start(cluster)
            register(cluster)
        yield agents
    finally:
        for process in agents.processes.values():
            stop(process)


@pytest.fixture
def agents(tmp_path: Path) -> Iterator[Agents]:
    yield from running(Agents(tmp_path / "agents"))


def _wait(what: str, check: Callable[[], object], timeout: float = 90.0) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def test_replicas_come_up_ready_and_a_killed_one_is_replaced(tenants: Tenants, agents: Agents, control_plane: None) -> None:
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

    agent = agents.named("local-eu-west")
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


def test_idle_scales_to_zero_and_a_request_brings_it_back(tenants: Tenants, agents: Agents, control_plane: None) -> None:
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


def test_a_new_revision_rolls_out_with_a_ready_replica_at_every_moment(tenants: Tenants, agents: Agents, control_plane: None) -> None:
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
    tenants: Tenants, agents: Agents, tmp_path: Path, django_db_blocker
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


def test_a_killed_agent_leaves_its_replicas_serving_and_its_successor_adopts_them(
    tenants: Tenants, agents: Agents, control_plane: None
) -> None:
    """The agent is control, not data: SIGKILLed, its replica keeps answering; restarted (as
    `up` restarts it), it adopts the running model server, so the control plane neither
    replaces it nor leaves an orphan. Expected: no failed request, no second replica."""
    deployment = create_deployment(
        tenants.org_a, name="steady", model="tiny-chat", min_replicas=1, max_replicas=1, allowed_regions=("eu-west",)
    )

    def live() -> list[Replica]:
        return list(Replica.objects.for_org(tenants.org_a).filter(deployment=deployment).exclude(state=Replica.State.STOPPED))

    [replica] = _wait("a READY replica", lambda: [r for r in live() if r.state == Replica.State.READY])
    agent = agents.named("local-eu-west")
    agent_url, auth = f"http://127.0.0.1:{agent.port}/replicas", bearer(agent_token(agent.name))
    [row] = [row for row in httpx.get(agent_url, headers=auth).json()["replicas"] if row["replica_id"] == replica.id]
    hello = {"model": "tiny-chat", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}

    def served() -> bool:
        return httpx.post(replica.endpoint + "/v1/chat/completions", json=hello, headers=bearer(replica_token(replica.id))).is_success

    agents.processes[agent.name].kill()
    agents.processes[agent.name].wait()
    answers = []
    for _ in range(6):  # several reconcile passes (1 s apart) see the agent unreachable
        answers.append(served())
        time.sleep(0.5)
    assert all(answers)
    agents.start(agent)

    [adopted] = [r for r in httpx.get(agent_url, headers=auth).json()["replicas"] if r["replica_id"] == replica.id]
    assert adopted["running"] and adopted["pid"] == row["pid"] and adopted["endpoint"] == replica.endpoint
    time.sleep(4)  # reconcile passes against the new agent
    assert [(r.id, r.state) for r in live()] == [(replica.id, Replica.State.READY)]
    assert served()

    # The new agent governs the adopted process: asked to, it stops it.
    httpx.delete(f"{agent_url}/{replica.id}", params={"drain_seconds": 0}, headers=auth)
    _wait("the adopted model server stopped", lambda: not process_alive(row["pid"]), timeout=30)


class _Traffic(threading.Thread):
    """Non-streaming chat requests through the gateway with the official SDK, one after
    another, each answer filed under the phase it was sent in; `pause` seconds between them
    (steady traffic, leaving the two cores to the rollout itself)."""

    def __init__(self, gateway: str, key: str, model: str, *, pause: float = 0.02) -> None:
        super().__init__(daemon=True)
        self.pause = pause
        self.client = openai.OpenAI(base_url=gateway + "/v1", api_key=key, max_retries=0, timeout=60)
        self.model = model
        self.phase = "before"
        self.answers: dict[str, list[tuple[str, str, str]]] = {}  # phase -> (revision, upstream model, body's model)
        self.failures: list[str] = []
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            phase = self.phase
            try:
                raw = self.client.chat.completions.with_raw_response.create(
                    model=self.model, messages=[{"role": "user", "content": "hi"}], max_tokens=2
                )
                completion = raw.parse()
                answer = (raw.headers["x-switchboard-revision"], raw.headers["x-switchboard-upstream-model"], completion.model)
                self.answers.setdefault(phase, []).append(answer)
            except openai.APIError as error:
                self.failures.append(f"{phase}: {error}")
            time.sleep(self.pause)


def test_a_model_changing_rollout_and_a_rollback_fail_no_request_through_the_gateway(
    tenants: Tenants, agents: Agents, control_plane: None, live_server_url: str
) -> None:
    """tiny-chat -> smollm2-135m-instruct -> (rollback) tiny-chat under continuous traffic:
    the replicas of the revision being replaced keep serving their own model until they
    drain, so every request is answered, by a replica serving the model its revision names."""
    # The traffic is continuous: the organization's rate limits are not what this measures.
    quota = services.quota_for(tenants.org_a)
    quota.requests_per_minute, quota.tokens_per_minute = 1_000_000, 100_000_000
    quota.save()
    deployment = create_deployment(
        tenants.org_a, name="switching", model="tiny-chat", min_replicas=1, max_replicas=1, allowed_regions=("us-east",)
    )
    first = deployment.current_revision
    assert first is not None
    replicas = Replica.objects.for_org(tenants.org_a).filter(deployment=deployment)
    _wait("the first revision READY", lambda: replicas.filter(state=Replica.State.READY).exists())
    traffic = _Traffic(live_server_url, issue_key(tenants.org_a).plaintext, "switching")
    # The gateway sees the replica within its snapshot's cache time.
    _wait("the gateway serving", lambda: _served_once(traffic), timeout=30)
    traffic.start()
    try:
        traffic.phase = "rollout"
        services.update_deployment(owner_context(tenants.org_a), deployment, model="smollm2-135m-instruct")
        deployment.refresh_from_db()
        second = deployment.current_revision
        assert second is not None and second.model == "smollm2-135m-instruct"
        _wait("the rollout done", lambda: _only_revision_live(replicas, second.pk), timeout=240)
        time.sleep(3)  # past the gateway's snapshot cache: traffic reaches only the new revision
        traffic.phase = "rollback"
        services.rollback(owner_context(tenants.org_a), deployment)
        _wait("the rollback done", lambda: _only_revision_live(replicas, first.pk), timeout=240)
        time.sleep(3)
        traffic.phase = "after"
        _wait("answers after the rollback", lambda: len(traffic.answers.get("after", [])) >= 3, timeout=60)
    finally:
        traffic.done.set()
        traffic.join(timeout=90)

    models = {first.pk: "tiny-chat", second.pk: "smollm2-135m-instruct"}
    for phase in ("rollout", "rollback", "after"):
        answers = traffic.answers.get(phase, [])
        by_model = {model: sum(1 for _, served, _ in answers if served == model) for model in models.values()}
        print(f"{phase}: {len(answers)} requests served ({by_model}), {sum(f.startswith(phase) for f in traffic.failures)} failed")
    assert traffic.failures == [], sorted(set(traffic.failures))[:10]
    every = [answer for answers in traffic.answers.values() for answer in answers]
    # Each answer came from a replica serving the model its revision names, and said so.
    assert all(models[revision] == served == body_model for revision, served, body_model in every), set(every)
    assert {served for _, served, _ in traffic.answers["rollout"] + traffic.answers["rollback"]} == set(models.values())
    assert {served for _, served, _ in traffic.answers["after"]} == {"tiny-chat"}


def _served_once(traffic: _Traffic) -> bool:
    try:
        traffic.client.chat.completions.create(model=traffic.model, messages=[{"role": "user", "content": "hi"}], max_tokens=1)
    except openai.APIError:
        return False
    return True


def _only_revision_live(replicas: QuerySet[Replica], revision_id: str) -> bool:
    """The revision's replica READY and every other revision's stopped."""
    rows = list(replicas.exclude(state__in=(Replica.State.STOPPED, Replica.State.FAILED)).values_list("revision_id", "state"))
    return rows == [(revision_id, Replica.State.READY)]
