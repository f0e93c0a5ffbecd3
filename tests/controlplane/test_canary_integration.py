"""Canaries for real, under continuous SDK traffic through the gateway: a Celery worker and
beat (reconcile and the canary verdict), two local cluster agents, model-server processes,
the gateway under uvicorn. One canary is promoted by the verdict, one rolled back by it on
injected errors; neither fails a request, and every answer says which revision served it."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from deployments import canaries, services
from deployments.local_clusters import LocalCluster
from deployments.models import Canary, CanaryTally, Replica
from modelserver.__main__ import FAULT_RATE_VARIABLE
from tests.conftest import Tenants
from tests.controlplane.test_integration import Agents, _only_revision_live, _served_once, _Traffic, _wait, control_plane, running
from tests.factories import create_deployment, issue_key, owner_context
from tests.servers import ROOT, child_env, wait_until_up

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

__all__ = ["control_plane"]  # the fixture, used by name


class FaultyEuropeAgents(Agents):
    """The two local clusters; every model server the eu-west agent starts answers half its
    inference requests with 500 (--fault-rate, inherited from the agent's environment)."""

    def start(self, cluster: LocalCluster) -> None:
        command = ["manage.py", "cluster_agent", "--cluster", cluster.name, "--port", str(cluster.port)]
        command += ["--state-file", str(self.state_dir / f"{cluster.name}.json")]
        faults = {FAULT_RATE_VARIABLE: "0.5"} if cluster.region == "eu-west" else {}
        process = self.processes[cluster.name] = subprocess.Popen([sys.executable, *command], cwd=ROOT, env=child_env(**faults))
        wait_until_up(f"http://127.0.0.1:{cluster.port}/replicas", process)


@pytest.fixture
def agents(tmp_path: Path) -> Iterator[Agents]:
    yield from running(Agents(tmp_path / "agents"))


@pytest.fixture
def faulty_agents(tmp_path: Path) -> Iterator[Agents]:
    yield from running(FaultyEuropeAgents(tmp_path / "agents"))


def _unlimited(tenants: Tenants) -> None:
    """The traffic is continuous: the organization's rate limits are not what this measures."""
    quota = services.quota_for(tenants.org_a)
    quota.requests_per_minute, quota.tokens_per_minute = 1_000_000, 100_000_000
    quota.save()


def _report(traffic: _Traffic, names: dict[str, str]) -> None:
    for phase in ("canary", "after"):
        answers = traffic.answers.get(phase, [])
        by_revision = {name: sum(1 for revision, _, _ in answers if revision == pk) for pk, name in names.items()}
        print(f"{phase}: {len(answers)} requests served ({by_revision}), {sum(f.startswith(phase) for f in traffic.failures)} failed")


def _decided(canary: Canary) -> str:
    canary.refresh_from_db()
    return "" if canary.active else canary.state


def test_a_canary_that_holds_up_is_promoted_under_live_traffic(
    tenants: Tenants, agents: Agents, control_plane: None, live_server_url: str
) -> None:
    """tiny-chat (stable) with smollm2-135m-instruct as the canary at 50%: the verdict
    promotes it after its window; the stable replica drains once gateways have read it."""
    _unlimited(tenants)
    deployment = create_deployment(
        tenants.org_a, name="canaried", model="tiny-chat", min_replicas=1, max_replicas=1, allowed_regions=("us-east",)
    )
    stable = deployment.current_revision
    replicas = Replica.objects.for_org(tenants.org_a).filter(deployment=deployment)
    _wait("the stable revision READY", lambda: replicas.filter(state=Replica.State.READY).exists())
    traffic = _Traffic(live_server_url, issue_key(tenants.org_a).plaintext, "canaried")
    _wait("the gateway serving", lambda: _served_once(traffic), timeout=30)
    traffic.start()
    try:
        traffic.phase = "canary"
        # A bigger model answers more slowly by design: this canary is judged on errors.
        plan = canaries.CanaryPlan(traffic_percent=50, window_s=15, min_requests=10, max_latency_ratio=Decimal("100"))
        canary = canaries.start_canary(
            owner_context(tenants.org_a), deployment, plan=plan, changes={"model": "smollm2-135m-instruct", "allowed_regions": ["eu-west"]}
        )
        assert _wait("the verdict", lambda: _decided(canary), timeout=300) == "promoted", canary.reason
        _wait("the stable revision drained", lambda: _only_revision_live(replicas, canary.canary_revision_id), timeout=120)
        time.sleep(3)  # past the gateway's snapshot cache
        traffic.phase = "after"
        _wait("answers after the promotion", lambda: len(traffic.answers.get("after", [])) >= 3, timeout=60)
    finally:
        traffic.done.set()
        traffic.join(timeout=90)

    models = {stable.pk: "tiny-chat", canary.canary_revision_id: "smollm2-135m-instruct"}
    _report(traffic, {stable.pk: "stable", canary.canary_revision_id: "canary"})
    print(f"verdict: {canary.reason}")
    assert traffic.failures == [], sorted(set(traffic.failures))[:10]
    every = [answer for answers in traffic.answers.values() for answer in answers]
    # Each answer names one of the two revisions, and its body's model is that revision's:
    # the replica that wrote it serves that revision.
    assert all(models[revision] == served == body_model for revision, served, body_model in every), set(every)
    assert {revision for revision, _, _ in traffic.answers["canary"]} == set(models)
    assert {revision for revision, _, _ in traffic.answers["after"]} == {canary.canary_revision_id}
    assert canary.reason.startswith("automatic: canary error rate 0.0%")
    assert CanaryTally.objects.get(canary=canary, revision_id=canary.canary_revision_id).requests >= 10


def test_a_canary_failing_requests_is_rolled_back_and_no_request_fails(
    tenants: Tenants, faulty_agents: Agents, control_plane: None, live_server_url: str
) -> None:
    """The canary runs on the eu-west cluster, whose model servers fail half their requests:
    each failed canary attempt is retried on the stable revision (the answer says so), and
    the verdict rolls the canary back as soon as it has its minimum of requests."""
    _unlimited(tenants)
    deployment = create_deployment(
        tenants.org_a, name="canaried", model="tiny-chat", min_replicas=1, max_replicas=1, allowed_regions=("us-east",)
    )
    stable = deployment.current_revision
    replicas = Replica.objects.for_org(tenants.org_a).filter(deployment=deployment)
    _wait("the stable revision READY", lambda: replicas.filter(state=Replica.State.READY).exists())
    traffic = _Traffic(live_server_url, issue_key(tenants.org_a).plaintext, "canaried")
    _wait("the gateway serving", lambda: _served_once(traffic), timeout=30)
    traffic.start()
    try:
        traffic.phase = "canary"
        plan = canaries.CanaryPlan(traffic_percent=50, window_s=600, min_requests=10)
        canary = canaries.start_canary(owner_context(tenants.org_a), deployment, plan=plan, changes={"allowed_regions": ["eu-west"]})
        assert _wait("the verdict", lambda: _decided(canary), timeout=300) == "rolled_back", canary.reason
        _wait("the canary drained", lambda: _only_revision_live(replicas, stable.pk), timeout=120)
        time.sleep(3)
        traffic.phase = "after"
        _wait("answers after the rollback", lambda: len(traffic.answers.get("after", [])) >= 3, timeout=60)
    finally:
        traffic.done.set()
        traffic.join(timeout=90)

    _report(traffic, {stable.pk: "stable", canary.canary_revision_id: "canary"})
    tally = CanaryTally.objects.get(canary=canary, revision_id=canary.canary_revision_id)
    print(f"verdict: {canary.reason}; canary attempts {tally.requests}, failed {tally.errors}")
    assert traffic.failures == [], sorted(set(traffic.failures))[:10]
    every = [answer for answers in traffic.answers.values() for answer in answers]
    assert {revision for revision, _, _ in every} <= {stable.pk, canary.canary_revision_id}
    assert all(served == body_model == "tiny-chat" for _, served, body_model in every)
    assert {revision for revision, _, _ in traffic.answers["after"]} == {stable.pk}
    assert "automatic: canary error rate" in canary.reason and tally.errors > 0
    deployment.refresh_from_db()
    assert deployment.current_revision_id == stable.pk
