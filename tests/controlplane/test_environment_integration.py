"""Environments for real, under continuous SDK traffic through the gateway to both names: a
Celery worker and beat, two local cluster agents, model-server processes, the gateway
under uvicorn. Staging runs another model in another region under its own name; one
promotion gives production exactly that, and no request to either name fails."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from deployments import environments, services
from deployments.models import Replica
from tests.conftest import Tenants
from tests.controlplane.test_integration import Agents, _only_revision_live, _served_once, _Traffic, _wait, control_plane, running
from tests.factories import create_deployment, issue_key, owner_context

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

__all__ = ["control_plane"]  # the fixture, used by name


@pytest.fixture
def agents(tmp_path: Path) -> Iterator[Agents]:
    yield from running(Agents(tmp_path / "agents"))


def test_staging_and_production_serve_under_their_own_names_and_one_promotion_moves_staging_to_production(
    tenants: Tenants, agents: Agents, control_plane: None, live_server_url: str
) -> None:
    quota = services.quota_for(tenants.org_a)  # continuous traffic: the rate limits are not what this measures
    quota.requests_per_minute, quota.tokens_per_minute = 1_000_000, 100_000_000
    quota.save()
    ctx = owner_context(tenants.org_a)
    production = create_deployment(
        tenants.org_a,
        name="chat",
        environment="production",
        model="tiny-chat",
        min_replicas=1,
        max_replicas=1,
        allowed_regions=("us-east",),
    )
    first = production.revision
    staging = environments.create_staging(
        ctx, production=production, changes={"model": "smollm2-135m-instruct", "allowed_regions": ["eu-west"]}
    )
    live = Replica.objects.for_org(tenants.org_a)
    _wait("both environments READY", lambda: live.filter(state=Replica.State.READY).count() == 2, timeout=240)
    key = issue_key(tenants.org_a).plaintext
    to_production, to_staging = _Traffic(live_server_url, key, "chat"), _Traffic(live_server_url, key, "chat-staging")
    _wait("the gateway serving both names", lambda: _served_once(to_production) and _served_once(to_staging), timeout=30)
    to_production.start()
    to_staging.start()
    try:
        time.sleep(2)
        to_production.phase = to_staging.phase = "promotion"
        production, _ = environments.promote_to_production(ctx, staging=staging)
        promoted = production.revision
        _wait("production rolled out", lambda: _only_revision_live(live.filter(deployment=production), promoted.pk), timeout=240)
        time.sleep(3)  # past the gateway's snapshot cache
        to_production.phase = to_staging.phase = "after"
        _wait("answers after the promotion", lambda: len(to_production.answers.get("after", [])) >= 3, timeout=60)
    finally:
        for traffic in (to_production, to_staging):
            traffic.done.set()
            traffic.join(timeout=90)

    for name, traffic in (("chat", to_production), ("chat-staging", to_staging)):
        counts = {phase: len(answers) for phase, answers in traffic.answers.items()}
        print(f"{name}: served {counts}, {len(traffic.failures)} failed")
        assert traffic.failures == [], sorted(set(traffic.failures))[:10]
    # Staging's name reached staging's revision only, and its model, throughout.
    staging_answers = [answer for answers in to_staging.answers.values() for answer in answers]
    assert {answer for answer in staging_answers} == {(staging.revision.pk, "smollm2-135m-instruct", "smollm2-135m-instruct")}
    # Production answered from its first revision, then (during the rollout) either, then
    # only from the promoted one: the same model staging ran, in staging's region.
    models = {first.pk: "tiny-chat", promoted.pk: "smollm2-135m-instruct"}
    assert {revision for revision, _, _ in to_production.answers["before"]} == {first.pk}
    assert all(models[revision] == served == body for answers in to_production.answers.values() for revision, served, body in answers)
    assert {revision for revision, _, _ in to_production.answers["after"]} == {promoted.pk}
    assert (promoted.model, promoted.allowed_regions, promoted.promoted_from_id) == (
        "smollm2-135m-instruct",
        ["eu-west"],
        staging.revision.pk,
    )
    assert live.get(revision=promoted, state=Replica.State.READY).cluster.region == "eu-west"
