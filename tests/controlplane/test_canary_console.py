"""The canary on the deployment page: the split with each revision's counts, live over the
deployment's socket, and promote / hold / resume / roll back for those who may change it."""

from __future__ import annotations

import asyncio
import json

import pytest
from asgiref.sync import async_to_sync
from django.test import Client

from deployments import canaries
from deployments.consumers import DeploymentStatusConsumer
from deployments.models import Canary
from tests.conftest import Tenants
from tests.factories import create_deployment, owner_context


def _client(user) -> Client:  # type: ignore[no-untyped-def]
    client = Client()
    client.force_login(user)
    return client


def _start(tenants: Tenants):  # type: ignore[no-untyped-def]
    deployment = create_deployment(tenants.org_a, name="chat")
    plan = canaries.CanaryPlan(traffic_percent=20, window_s=60, min_requests=20)
    canary = canaries.start_canary(owner_context(tenants.org_a), deployment, plan=plan, changes={"model": "tiny-embedding"})
    counts = {canary.stable_revision_id: (80, 0, 800.0, 80), canary.canary_revision_id: (20, 1, 228.0, 19)}
    canaries.record_tallies(
        canaries.TallyDelta(canary_id=canary.pk, revision_id=revision, requests=r, errors=e, latency_ms_sum=ms, latency_samples=n)
        for revision, (r, e, ms, n) in counts.items()
    )
    return deployment, canary


def test_the_page_shows_the_split_and_an_admin_acts_on_it(tenants: Tenants) -> None:
    deployment, canary = _start(tenants)
    url = f"/o/{tenants.org_a.slug}/deployments/{deployment.pk}/"
    member = _client(tenants.member_a)
    page = member.get(url).content.decode()
    assert 'Revision 2 takes <strong data-testid="canary-percent">20%</strong> of requests, revision 1 (current) 80%' in page
    assert "<td>80</td><td>0</td><td>0%</td><td>10 ms</td>" in page  # stable: requests, errors, rate, mean latency
    assert "<td>20</td><td>1</td><td>5%</td><td>12 ms</td>" in page  # canary
    assert 'data-testid="canary-verdict">wait</strong>' in page
    assert "/canary/promote/" in page and "/canary/hold/" in page and "/canary/rollback/" in page

    viewer_page = _client(tenants.viewer_a).get(url).content.decode()
    assert "20%</strong> of requests" in viewer_page and "/canary/promote/" not in viewer_page
    assert _client(tenants.viewer_a).post(url + "canary/rollback/").status_code == 403
    assert _client(tenants.owner_b).post(url + "canary/rollback/").status_code == 404
    assert Canary.objects.for_org(tenants.org_a).get().state == "running"

    assert member.post(url + "canary/hold/").status_code == 302
    assert "/canary/resume/" in member.get(url).content.decode()
    assert member.post(url + "canary/rollback/").status_code == 302
    canary.refresh_from_db()
    assert canary.state == "rolled_back"
    after = member.get(url).content.decode()
    assert "/canary/promote/" not in after and "canary_rolled_back" in after and "canary_held" in after


@pytest.mark.django_db(transaction=True)
def test_the_split_is_pushed_over_the_deployments_socket(tenants: Tenants) -> None:
    deployment, _ = _start(tenants)

    async def first_message() -> dict[str, object]:
        sent: list[dict[str, object]] = []
        inbox: asyncio.Queue[dict[str, object]] = asyncio.Queue()
        await inbox.put({"type": "websocket.connect"})

        async def send(message: dict[str, object]) -> None:
            sent.append(message)

        scope = {
            "type": "websocket",
            "path": f"/ws/o/{tenants.org_a.slug}/deployments/{deployment.pk}/",
            "user": tenants.member_a,
            "url_route": {"kwargs": {"org_slug": tenants.org_a.slug, "deployment_id": deployment.pk}},
        }
        consumer = asyncio.ensure_future(DeploymentStatusConsumer.as_asgi()(scope, inbox.get, send))
        for _ in range(200):
            if any(message["type"] == "websocket.send" for message in sent):
                break
            await asyncio.sleep(0.05)
        consumer.cancel()
        return json.loads(next(str(m["text"]) for m in sent if m["type"] == "websocket.send"))

    message = async_to_sync(first_message)()
    assert "20%</strong> of requests" in str(message["canary_html"])


def test_a_member_starts_a_canary_of_a_saved_revision_from_the_page(tenants: Tenants) -> None:
    deployment = create_deployment(tenants.org_a, name="chat", max_replicas=2)
    url = f"/o/{tenants.org_a.slug}/deployments/{deployment.pk}/"
    member = _client(tenants.member_a)
    assert 'data-testid="canary-start"' not in member.get(url).content.decode()  # no other revision to try yet
    # "Save as a revision without going live", then a canary of it.
    assert member.post(url + "scale/", {"min_replicas": 1, "max_replicas": 1, "save_only": "on"}).status_code == 302
    page = member.get(url).content.decode()
    assert 'data-testid="canary-start"' in page and '<option value="2">' in page and '<option value="1">' not in page
    assert 'data-testid="canary-start"' not in _client(tenants.viewer_a).get(url).content.decode()

    assert _client(tenants.viewer_a).post(url + "canary/start/", {"revision": 2, "traffic_percent": 30, "window_s": 120}).status_code == 403
    assert _client(tenants.owner_b).post(url + "canary/start/", {"revision": 2, "traffic_percent": 30, "window_s": 120}).status_code == 404
    refused = member.post(url + "canary/start/", {"revision": 2, "traffic_percent": 100, "window_s": 120}, follow=True)
    assert "a share of 1 to 99%" in refused.content.decode() and not Canary.objects.for_org(tenants.org_a).exists()
    missing = member.post(url + "canary/start/", {"revision": 7, "traffic_percent": 30, "window_s": 120}, follow=True)
    assert "This deployment has no revision 7." in missing.content.decode()

    started = member.post(url + "canary/start/", {"revision": 2, "traffic_percent": 30, "window_s": 120}, follow=True)
    assert "Canary started: revision 2 takes 30% of requests." in started.content.decode()
    canary = Canary.objects.for_org(tenants.org_a).get()
    assert (canary.state, canary.canary_revision.number, canary.stable_revision.number, canary.traffic_percent, canary.window_s) == (
        "running",
        2,
        1,
        30,
        120,
    )
    assert 'Revision 2 takes <strong data-testid="canary-percent">30%</strong>' in started.content.decode()
