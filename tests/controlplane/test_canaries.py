"""Canaries through the management API and the control loop (in-memory driver): start,
promote, hold, resume, roll back, each audited; the automatic verdict from what the
gateways counted; both revisions' replicas kept while it runs, the loser drained after."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from deployments import canaries
from deployments.models import Canary, CanaryTally, Deployment, DeploymentEvent, Replica
from tenancy.models import AuditEntry
from tests.conftest import Tenants
from tests.controlplane.test_reconcile import Fleet, replicas
from tests.factories import create_deployment, ensure_clusters, owner_context
from tests.helpers import session_api

START = {"changes": {"allowed_regions": ["eu-west"]}, "traffic_percent": 25, "window_s": 60, "min_requests": 20}


@pytest.fixture
def member(tenants: Tenants):  # type: ignore[no-untyped-def]
    ensure_clusters()
    return session_api(tenants.member_a, tenants.org_a)


@pytest.fixture
def fleet(tenants: Tenants) -> Fleet:
    ensure_clusters()
    return Fleet()


def _count(canary: Canary, *, stable: tuple[int, int, float], candidate: tuple[int, int, float]) -> None:
    """What gateways would report: (requests, errors, mean latency ms) per revision."""
    deltas = []
    for revision_id, (requests, errors, mean_ms) in ((canary.stable_revision_id, stable), (canary.canary_revision_id, candidate)):
        answered = requests - errors
        deltas.append(
            canaries.TallyDelta(
                canary_id=canary.pk,
                revision_id=revision_id,
                requests=requests,
                errors=errors,
                latency_ms_sum=mean_ms * answered,
                latency_samples=answered,
            )
        )
    canaries.record_tallies(deltas)


def test_a_canary_starts_from_changes_and_is_promoted_by_hand(tenants: Tenants, member) -> None:  # type: ignore[no-untyped-def]
    deployment = create_deployment(tenants.org_a, name="chat", max_replicas=2)
    url = f"/api/v1/deployments/{deployment.pk}/canary/"
    assert member.get(url).status_code == 404  # none yet
    started = member.post(url, START, format="json")
    assert started.status_code == 201, started.content
    body = started.json()
    assert (body["state"], body["stable_revision"], body["canary_revision"], body["traffic_percent"]) == ("running", 1, 2, 25)
    assert body["stats"]["canary"] == {"requests": 0, "errors": 0, "error_rate": 0.0, "mean_latency_ms": None}
    assert body["verdict"] == {"action": "wait", "reason": "0 of 20 canary requests so far"}
    deployment.refresh_from_db()
    assert deployment.current_revision.number == 1  # the stable one stays current
    # One canary at a time, and no other revision goes live meanwhile.
    assert member.post(url, {"revision": 1, "traffic_percent": 10}, format="json").status_code == 409
    assert member.patch(f"/api/v1/deployments/{deployment.pk}/", {"max_replicas": 1}, format="json").status_code == 409
    assert member.post(f"/api/v1/deployments/{deployment.pk}/rollback/").status_code == 409

    promoted = member.post(url + "promote/")
    assert promoted.status_code == 200, promoted.content
    assert promoted.json()["state"] == "promoted" and promoted.json()["verdict"] is None
    deployment.refresh_from_db()
    assert deployment.current_revision.number == 2 and deployment.current_revision.allowed_regions == ["eu-west"]
    assert member.post(url + "promote/").status_code == 409  # nothing running any more
    # One entry per action: the canary's start names the revision it made, its promotion
    # the revision that went live.
    actions = list(AuditEntry.objects.for_org(tenants.org_a).values_list("action", "actor_label", "after__canary_revision")[:2])
    assert actions == [
        ("deployment.canary_promoted", tenants.member_a.email, 2),
        ("deployment.canary_started", tenants.member_a.email, 2),
    ]
    kinds = list(DeploymentEvent.objects.for_org(tenants.org_a).filter(deployment=deployment).values_list("kind", flat=True))
    assert kinds == ["canary_promoted", "canary_started"]


def test_hold_resume_and_roll_back(tenants: Tenants, member) -> None:  # type: ignore[no-untyped-def]
    deployment = create_deployment(tenants.org_a, name="chat")
    member.patch(f"/api/v1/deployments/{deployment.pk}/", {"model": "tiny-embedding", "live": False}, format="json")
    url = f"/api/v1/deployments/{deployment.pk}/canary/"
    assert member.post(url, {"revision": 2, "traffic_percent": 50}, format="json").status_code == 201
    assert member.post(url + "hold/").json()["state"] == "held"
    assert member.post(url + "hold/").status_code == 409
    assert member.post(url + "resume/").json()["state"] == "running"
    rolled = member.post(url + "rollback/").json()
    assert rolled["state"] == "rolled_back" and rolled["decided_at"]
    deployment.refresh_from_db()
    assert deployment.current_revision.number == 1
    actions = list(AuditEntry.objects.for_org(tenants.org_a).values_list("action", flat=True)[:4])
    assert actions == ["deployment.canary_rolled_back", "deployment.canary_resumed", "deployment.canary_held", "deployment.canary_started"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"traffic_percent": 25}, "revision"),  # neither a revision nor changes
        ({"revision": 1, "changes": {"max_replicas": 2}, "traffic_percent": 25}, "revision"),  # both
        ({"changes": {"max_replicas": 2}, "traffic_percent": 100}, "traffic_percent"),
        ({"changes": {"max_replicas": 2}, "traffic_percent": 0}, "traffic_percent"),
        ({"changes": {"max_replicas": 2}, "traffic_percent": 10, "max_latency_ratio": "0.5"}, "max_latency_ratio"),
        ({"changes": {"model": "no-such-model"}, "traffic_percent": 10}, "model"),
    ],
)
def test_bad_input_says_what_to_fix(tenants: Tenants, member, body: dict[str, object], field: str) -> None:  # type: ignore[no-untyped-def]
    deployment = create_deployment(tenants.org_a, name="chat")
    response = member.post(f"/api/v1/deployments/{deployment.pk}/canary/", body, format="json")
    assert response.status_code == 400, response.content
    assert field in response.content.decode()
    assert not Canary.objects.for_org(tenants.org_a).exists()


def test_the_current_revision_is_no_canary(tenants: Tenants, member) -> None:  # type: ignore[no-untyped-def]
    deployment = create_deployment(tenants.org_a, name="chat")
    response = member.post(f"/api/v1/deployments/{deployment.pk}/canary/", {"revision": 1, "traffic_percent": 10}, format="json")
    assert response.status_code == 409 and "already the current one" in response.content.decode()


def test_another_tenant_gets_404_and_a_viewer_is_refused(tenants: Tenants, member) -> None:  # type: ignore[no-untyped-def]
    deployment = create_deployment(tenants.org_a, name="chat")
    url = f"/api/v1/deployments/{deployment.pk}/canary/"
    assert member.post(url, START, format="json").status_code == 201
    stranger = session_api(tenants.owner_b, tenants.org_b)
    assert stranger.get(url).status_code == 404
    assert stranger.post(url, START, format="json").status_code == 404
    for action in ("promote", "hold", "resume", "rollback"):
        assert stranger.post(url + f"{action}/").status_code == 404
    viewer = session_api(tenants.viewer_a, tenants.org_a)
    assert viewer.get(url).status_code == 200  # a viewer sees the split
    assert viewer.post(url + "rollback/").status_code == 403
    assert viewer.post(url, START, format="json").status_code == 403
    assert Canary.objects.for_org(tenants.org_a).get().state == "running"


def test_the_verdict_promotes_a_healthy_canary_once_its_window_has_passed(tenants: Tenants) -> None:
    deployment = create_deployment(tenants.org_a, name="chat", max_replicas=2)
    plan = canaries.CanaryPlan(traffic_percent=20, window_s=60, min_requests=20)
    canary = canaries.start_canary(owner_context(tenants.org_a), deployment, plan=plan, changes={"max_replicas": 1})
    _count(canary, stable=(400, 4, 100.0), candidate=(100, 1, 110.0))
    assert canaries.analyse_running() == {canary.pk: "wait"}  # within thresholds, window not over
    later = timezone.now() + timedelta(seconds=61)
    assert canaries.analyse_running(now=later) == {canary.pk: "promote"}
    canary.refresh_from_db()
    deployment.refresh_from_db()
    assert canary.state == "promoted" and canary.reason.startswith("automatic: canary error rate 1.0% vs stable 1.0%")
    assert deployment.current_revision_id == canary.canary_revision_id
    entry = AuditEntry.objects.for_org(tenants.org_a).filter(action="deployment.canary_promoted").get()
    assert entry.actor_label == "system" and entry.actor_user is None
    assert canaries.analyse_running(now=later) == {}  # decided once


def test_the_verdict_rolls_back_at_once_on_errors_and_counts_from_many_gateways_add_up(tenants: Tenants) -> None:
    deployment = create_deployment(tenants.org_a, name="chat")
    plan = canaries.CanaryPlan(traffic_percent=50, window_s=600, min_requests=20)
    canary = canaries.start_canary(owner_context(tenants.org_a), deployment, plan=plan, changes={"model": "tiny-embedding"})
    _count(canary, stable=(10, 0, 100.0), candidate=(10, 3, 100.0))
    assert canaries.analyse_running() == {canary.pk: "wait"}  # 10 of 20 canary requests
    _count(canary, stable=(10, 0, 100.0), candidate=(10, 3, 100.0))  # a second gateway's counts
    assert CanaryTally.objects.get(canary=canary, revision=canary.canary_revision).requests == 20
    assert canaries.analyse_running() == {canary.pk: "roll_back"}
    canary.refresh_from_db()
    assert canary.state == "rolled_back" and "30.0% (6 of 20)" in canary.reason
    event = DeploymentEvent.objects.for_org(tenants.org_a).filter(deployment=deployment).first()
    assert event is not None and event.kind == "canary_rolled_back" and event.message.startswith("system: automatic:")
    assert AuditEntry.objects.for_org(tenants.org_a).filter(action="deployment.canary_rolled_back", actor_label="system").exists()


def test_a_held_canary_is_not_judged(tenants: Tenants) -> None:
    deployment = create_deployment(tenants.org_a, name="chat")
    plan = canaries.CanaryPlan(traffic_percent=50, window_s=1, min_requests=1)
    canary = canaries.start_canary(owner_context(tenants.org_a), deployment, plan=plan, changes={"model": "tiny-embedding"})
    canaries.hold_canary(owner_context(tenants.org_a), deployment)
    _count(canary, stable=(10, 0, 100.0), candidate=(10, 10, 100.0))
    assert canaries.analyse_running() == {}
    assert Canary.objects.for_org(tenants.org_a).get().state == "held"


def test_both_revisions_keep_replicas_while_it_runs_and_the_loser_drains(tenants: Tenants, fleet: Fleet, settings) -> None:  # type: ignore[no-untyped-def]
    settings.ROLLOUT_HANDOVER_SECONDS = 0  # passes back to back
    deployment = create_deployment(tenants.org_a, name="chat", min_replicas=2, max_replicas=2, allowed_regions=("us-east",))
    fleet.run(deployment, passes=2)
    stable = replicas(tenants.org_a, deployment, Replica.State.READY)
    assert len(stable) == 2
    plan = canaries.CanaryPlan(traffic_percent=10, window_s=60, min_requests=20)
    canary = canaries.start_canary(owner_context(tenants.org_a), deployment, plan=plan, changes={"allowed_regions": ["eu-west"]})
    fleet.run(deployment, passes=4)
    ready = replicas(tenants.org_a, deployment, Replica.State.READY)
    # The stable replicas all stay, and the canary gets its share: at least one replica.
    assert sorted(r.revision_id == canary.canary_revision_id for r in ready) == [False, False, True]
    [canary_replica] = [r for r in ready if r.revision_id == canary.canary_revision_id]
    assert canary_replica.cluster.region == "eu-west"
    deployment.refresh_from_db()
    assert deployment.status == "updating" and "revision 2 takes 10% of requests, 1 of 1 of its replicas ready" in deployment.status_reason

    canaries.roll_back_canary(owner_context(tenants.org_a), deployment)
    fleet.run(deployment, passes=3)
    assert [r.pk for r in replicas(tenants.org_a, deployment, Replica.State.READY)] == [r.pk for r in stable]
    canary_replica.refresh_from_db()
    assert canary_replica.state in (Replica.State.DRAINING, Replica.State.STOPPED)
    deployment.refresh_from_db()
    assert deployment.status == "active"


def test_a_promoted_canary_takes_over_after_the_gateways_had_time_to_read_it(tenants: Tenants, fleet: Fleet, settings) -> None:  # type: ignore[no-untyped-def]
    settings.ROLLOUT_HANDOVER_SECONDS = 60
    deployment = create_deployment(tenants.org_a, name="chat", min_replicas=1, max_replicas=1, allowed_regions=("us-east",))
    fleet.run(deployment, passes=2)
    [stable] = replicas(tenants.org_a, deployment, Replica.State.READY)
    plan = canaries.CanaryPlan(traffic_percent=50, window_s=60, min_requests=20)
    canary = canaries.start_canary(owner_context(tenants.org_a), deployment, plan=plan, changes={"allowed_regions": ["eu-west"]})
    fleet.run(deployment, passes=2)
    canaries.promote_canary(owner_context(tenants.org_a), deployment)
    fleet.run(deployment, passes=2)
    stable.refresh_from_db()
    assert stable.state == Replica.State.READY  # gateways may still split by a cached snapshot
    Canary.objects.for_org(tenants.org_a).filter(pk=canary.pk).update(decided_at=timezone.now() - timedelta(seconds=61))
    Replica.objects.for_org(tenants.org_a).filter(revision=canary.canary_revision).update(ready_at=timezone.now() - timedelta(seconds=61))
    fleet.run(deployment, passes=2)
    stable.refresh_from_db()
    assert stable.state in (Replica.State.DRAINING, Replica.State.STOPPED)
    ready = replicas(tenants.org_a, deployment, Replica.State.READY)
    assert [r.revision_id for r in ready] == [canary.canary_revision_id]
    assert Deployment.objects.for_org(tenants.org_a).get(pk=deployment.pk).status == "active"


def test_the_gateways_snapshot_carries_the_split_while_the_canary_runs_or_is_held(tenants: Tenants) -> None:
    from routing.gateway.snapshot import CanarySplit, load_snapshot

    deployment = create_deployment(tenants.org_a, name="chat")
    plan = canaries.CanaryPlan(traffic_percent=30)
    canary = canaries.start_canary(owner_context(tenants.org_a), deployment, plan=plan, changes={"model": "tiny-embedding"})
    split = CanarySplit(
        canary_id=canary.pk, canary_revision_id=canary.canary_revision_id, stable_revision_id=canary.stable_revision_id, percent=30
    )
    assert load_snapshot(tenants.org_a.pk).routes["chat"].targets[0].canary == split
    canaries.hold_canary(owner_context(tenants.org_a), deployment)
    assert load_snapshot(tenants.org_a.pk).routes["chat"].targets[0].canary == split
    canaries.roll_back_canary(owner_context(tenants.org_a), deployment)
    assert load_snapshot(tenants.org_a.pk).routes["chat"].targets[0].canary is None
    assert "chat" not in load_snapshot(tenants.org_b.pk).routes  # another tenant's snapshot knows nothing of it


def test_the_fleet_pass_hands_a_deployment_with_a_canary_to_the_full_pass(tenants: Tenants, fleet: Fleet) -> None:
    from deployments.reconcile import reconcile_fleet

    deployment = create_deployment(tenants.org_a, name="chat", min_replicas=1, max_replicas=1)
    fleet.run(deployment, passes=2)
    plan = canaries.CanaryPlan(traffic_percent=50)
    canary = canaries.start_canary(owner_context(tenants.org_a), deployment, plan=plan, changes={"allowed_regions": ["eu-west"]})
    result = reconcile_fleet([deployment.pk], drivers=fleet.driver, probe=fleet.probe, scrape=lambda targets: {})
    assert (result.steady, result.reconciled) == (0, 1)  # every replica READY on the current revision, yet not steady
    assert [r.revision_id for r in replicas(tenants.org_a, deployment)].count(canary.canary_revision_id) == 1
