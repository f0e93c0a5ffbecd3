"""The deployment page while it is open: its event timeline (replica transitions and
deployment events) pushed over the page's socket without a reload, and no text on it that
claims a state the deployment has left."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable
from datetime import timedelta

import pytest
from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from django.test import Client
from django.utils import timezone

from deployments import live
from deployments.consumers import DeploymentStatusConsumer
from deployments.models import Deployment, DeploymentEvent, Replica, ReplicaEvent
from deployments.timeline import timeline
from tests.conftest import Tenants
from tests.controlplane.test_reconcile import Fleet
from tests.factories import create_deployment, ensure_clusters

Message = dict[str, object]


def _client(user) -> Client:  # type: ignore[no-untyped-def]
    client = Client()
    client.force_login(user)
    return client


def _pushed(  # type: ignore[no-untyped-def]
    user, deployment: Deployment, act: Callable[[], None], until: Callable[[Message], bool], *, seconds: float = 10.0
) -> tuple[Message, Message]:
    """The page socket's first message, then (after `act` ran) the first later one within
    `seconds` that satisfies `until`: DeploymentStatusConsumer in process, as
    test_canary_console drives it."""

    async def converse() -> tuple[Message, Message]:
        sent: list[Message] = []
        inbox: asyncio.Queue[Message] = asyncio.Queue()
        await inbox.put({"type": "websocket.connect"})

        async def send(message: Message) -> None:
            if message["type"] == "websocket.send":
                sent.append(json.loads(str(message["text"])))

        scope = {
            "type": "websocket",
            "path": f"/ws/o/{deployment.organization.slug}/deployments/{deployment.pk}/",
            "user": user,
            "url_route": {"kwargs": {"org_slug": deployment.organization.slug, "deployment_id": deployment.pk}},
        }
        consumer = asyncio.ensure_future(DeploymentStatusConsumer.as_asgi()(scope, inbox.get, send))
        try:
            for _ in range(200):
                if sent:
                    break
                await asyncio.sleep(0.05)
            first = sent[0]
            await database_sync_to_async(act)()
            for _ in range(int(seconds / 0.05)):  # the consumer re-reads on the publish, or within its poll second
                later = [message for message in sent[1:] if until(message)]
                if later:
                    return first, later[0]
                await asyncio.sleep(0.05)
            raise AssertionError(f"nothing satisfying the condition was pushed; got {sent[1:]}")
        finally:
            consumer.cancel()

    return async_to_sync(converse)()


@pytest.mark.django_db(transaction=True)
def test_replica_and_deployment_events_are_pushed_to_an_open_page(tenants: Tenants) -> None:
    ensure_clusters()
    fleet = Fleet()
    deployment = create_deployment(tenants.org_a, name="chat")
    other = create_deployment(tenants.org_b, name="chat")

    def place_and_note() -> None:
        fleet.run(deployment)  # the control plane places a replica and starts it: two transitions
        fleet.run(other)  # another tenant's events never reach this page
        DeploymentEvent.objects.create(organization=tenants.org_a, deployment=deployment, kind="note", message="a <b>bold</b> claim")

    first, update = _pushed(tenants.viewer_a, deployment, place_and_note, lambda message: "note" in str(message["events_html"]))
    assert "No events yet" in str(first["events_html"])
    events = str(update["events_html"])
    (replica,) = Replica.objects.for_org(tenants.org_a).filter(deployment=deployment)
    assert replica.id in events and "new → <strong>pending</strong>: placed" in events and "process started" in events
    assert "a &lt;b&gt;bold&lt;/b&gt; claim" in events  # escaped
    assert "No events yet" not in events
    assert not any(theirs.id in events for theirs in Replica.objects.for_org(tenants.org_b))
    # Newest first: the note, then provisioning, then pending.
    assert events.index("<strong>note</strong>") < events.index("<strong>provisioning</strong>") < events.index("<strong>pending</strong>")


@pytest.mark.django_db(transaction=True)
def test_a_start_under_way_is_not_pushed_again_for_its_ticking_seconds_alone(tenants: Tenants) -> None:
    """The page's script ticks them; the socket re-renders them with the next real change."""
    deployment = create_deployment(tenants.org_a, name="chat")  # placing, its seconds counting
    later = timezone.now() + timedelta(seconds=2)
    now, then = (live.rendered(deployment, live.live_parts(tenants.org_a, deployment, now=at)) for at in (timezone.now(), later))
    assert now["startup_html"] != then["startup_html"] and live.same_page(now, then)
    with pytest.raises(AssertionError, match="nothing satisfying"):
        _pushed(tenants.viewer_a, deployment, lambda: None, lambda message: True, seconds=2.5)  # polled at least twice meanwhile


def test_the_page_renders_the_timeline_the_socket_pushes(tenants: Tenants) -> None:
    ensure_clusters()
    fleet = Fleet()
    deployment = create_deployment(tenants.org_a, name="chat")
    fleet.run(deployment, passes=2)
    DeploymentEvent.objects.create(organization=tenants.org_a, deployment=deployment, kind="canary_started", message="r2 takes 10%")
    page = _client(tenants.viewer_a).get(f"/o/{tenants.org_a.slug}/deployments/{deployment.pk}/").content.decode()
    pushed = live.rendered(deployment, live.live_parts(tenants.org_a, deployment))["events_html"]
    section = re.search(r'<div id="live-events">(.*?)</div>', page, re.S)
    assert section is not None and section.group(1).strip() == pushed.strip()
    assert pushed.count('data-testid="timeline-event"') == 4  # pending, provisioning, ready, canary_started
    assert "<strong>canary_started</strong>: r2 takes 10%" in pushed


def test_the_timeline_merges_both_kinds_newest_first_and_keeps_the_newest(tenants: Tenants) -> None:
    ensure_clusters()
    fleet = Fleet()
    deployment = create_deployment(tenants.org_a, name="chat")
    fleet.run(deployment)
    now = timezone.now()
    ReplicaEvent.objects.for_org(tenants.org_a).filter(to_state="pending").update(at=now - timedelta(seconds=30))
    ReplicaEvent.objects.for_org(tenants.org_a).filter(to_state="provisioning").update(at=now - timedelta(seconds=10))
    DeploymentEvent.objects.create(
        organization=tenants.org_a, deployment=deployment, kind="between", message="", at=now - timedelta(seconds=20)
    )
    DeploymentEvent.objects.create(organization=tenants.org_a, deployment=deployment, kind="newest", message="", at=now)
    entries = timeline(tenants.org_a, deployment)
    assert [entry.kind or entry.to_state for entry in entries] == ["newest", "provisioning", "between", "pending"]
    assert entries[1].region == "us-east" and entries[1].from_state == "pending"
    assert [entry.kind or entry.to_state for entry in timeline(tenants.org_a, deployment, limit=2)] == ["newest", "provisioning"]


def test_no_text_outside_the_live_status_claims_the_deployment_is_deploying(tenants: Tenants) -> None:
    """The status badge and its reason are pushed live; the message shown after deploying
    states what was done, so it stays true once the deployment is active."""
    ensure_clusters()
    client = _client(tenants.member_a)
    form = {
        "name": "support-bot",
        "model": "tiny-chat",
        "gpu_type": "CPU",
        "allowed_regions": ["us-east"],
        "min_replicas": "1",
        "max_replicas": "1",
        "target_concurrency": "4",
        "scale_down_delay_s": "60",
        "idle_timeout_s": "300",
        "environment": "development",
    }
    page = client.post(f"/o/{tenants.org_a.slug}/deployments/new/", form, follow=True).content.decode()
    assert "Created support-bot." in page
    main = page.split('<main id="main"', 1)[1]
    outside_live_status = re.sub(r'<span id="live-status"[^>]*>[^<]*</span>', "", main)
    assert "Deploying" in main and not re.search(r"deploying", outside_live_status, re.I)
