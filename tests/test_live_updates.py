"""Live pages are told of changes through the channel layer (broadcast): the ingester, the
control plane and tenancy publish after commit, and the consumers push without polling.

Run in-process on both stacks with an in-memory channel layer and the consumers' periodic
re-read pushed out of reach, so that only a published change can bring an update; the
Redis layer itself is exercised by the live-status tests through the real server."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.db import transaction
from django.test import override_settings
from django.utils import timezone

from broadcast import consumers as live_consumers
from broadcast.groups import CHANGED, deployment_group, usage_group
from broadcast.publish import publish_after_commit
from deployments import services
from deployments.models import Deployment
from metering import ingest, live
from metering.live import UsageFeed
from metering.models import UsageEvent
from tenancy.models import Membership
from tests.conftest import Tenants
from tests.controlplane.test_reconcile import Fleet
from tests.factories import create_deployment, ensure_clusters, owner_context
from tests.metering.test_usage_dashboard import Socket
from tests.metering.test_usage_pipeline import _record

pytestmark = pytest.mark.django_db(transaction=True)

NEVER = 600.0  # the consumers' own re-read, moved beyond every test's wait


@pytest.fixture
def pushed(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(live_consumers, "REFRESH_SECONDS", NEVER)
    monkeypatch.setattr(live, "REFRESH_S", NEVER)
    monkeypatch.setattr(UsageFeed, "window_slides_in", lambda self: NEVER)
    with override_settings(LIVE_UPDATES_PUSHED=True, CHANNEL_LAYERS={"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}):
        yield


async def _nothing_within(socket: Socket, seconds: float) -> bool:
    return await socket.receive_nothing(timeout=seconds)


def test_ingested_usage_is_pushed_to_its_organization_only(tenants: Tenants, pushed: None) -> None:
    async def scenario() -> None:
        a = Socket(tenants.viewer_a, f"/ws/o/{tenants.org_a.slug}/usage/?range=1h")
        b = Socket(tenants.owner_b, f"/ws/o/{tenants.org_b.slug}/usage/?range=1h")
        assert (await a.connect())[0] and (await b.connect())[0]
        assert (await a.receive_json())["totals"]["requests"] == 0
        assert (await b.receive_json())["totals"]["requests"] == 0
        now = timezone.now()
        await database_sync_to_async(ingest.write_batch)([_record(tenants.org_a.pk, f"push_{i}", at=now) for i in range(3)])
        assert (await a.receive_json(timeout=5))["totals"]["requests"] == 3
        assert await _nothing_within(b, 1.5)  # B was not told: nothing of A's reached it
        await a.disconnect()
        await b.disconnect()

    async_to_sync(scenario)()


def test_without_a_publish_nothing_arrives(tenants: Tenants, pushed: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """The check that the test above can fail: with publishing switched off, the same
    write reaches no open dashboard (the consumers do not poll here)."""
    monkeypatch.setattr("metering.rollups.publish_after_commit", lambda *, groups: None)
    monkeypatch.setattr("metering.copy_events.publish_after_commit", lambda *, groups: None)

    async def scenario() -> None:
        a = Socket(tenants.viewer_a, f"/ws/o/{tenants.org_a.slug}/usage/?range=1h")
        assert (await a.connect())[0]
        await a.receive_json()
        await database_sync_to_async(ingest.write_batch)([_record(tenants.org_a.pk, "quiet", at=timezone.now())])
        assert await _nothing_within(a, 1.5)
        await a.disconnect()

    async_to_sync(scenario)()


def test_a_removed_member_is_cut_off_at_once(tenants: Tenants, pushed: None) -> None:
    deployment = create_deployment(tenants.org_a, name="svc")

    async def scenario() -> None:
        usage = Socket(tenants.admin_a, f"/ws/o/{tenants.org_a.slug}/usage/")
        status = Socket(tenants.admin_a, f"/ws/o/{tenants.org_a.slug}/deployments/{deployment.id}/")
        assert (await usage.connect())[0] and (await status.connect())[0]
        await usage.receive_json()
        await status.receive_json()
        # A plain queryset delete, not the service: every path that removes a member tells.
        await database_sync_to_async(lambda: Membership.objects.for_org(tenants.org_a).filter(user=tenants.admin_a).delete())()
        for socket in (usage, status):
            assert await socket.receive_output(timeout=5) == {"type": "websocket.close", "code": 4404}

    async_to_sync(scenario)()


def test_the_control_plane_pushes_replica_and_deletion_changes(tenants: Tenants, pushed: None) -> None:
    ensure_clusters()
    fleet = Fleet()
    deployment = create_deployment(tenants.org_a, name="svc", min_replicas=1, max_replicas=1, allowed_regions=("us-east",))

    async def scenario() -> None:
        status = Socket(tenants.viewer_a, f"/ws/o/{tenants.org_a.slug}/deployments/{deployment.id}/")
        assert (await status.connect())[0]
        assert "No replicas" in (await status.receive_json())["replicas_html"]
        await database_sync_to_async(fleet.run)(deployment)  # places a replica, and publishes
        assert "No replicas" not in (await status.receive_json(timeout=5))["replicas_html"]
        mine = Deployment.objects.for_org(tenants.org_a)
        await database_sync_to_async(lambda: services.delete_deployment(owner_context(tenants.org_a), mine.get(pk=deployment.pk)))()
        assert await status.receive_output(timeout=5) == {"type": "websocket.close", "code": 4404}

    async_to_sync(scenario)()


def test_a_rolled_back_change_publishes_nothing(tenants: Tenants, pushed: None) -> None:
    async def scenario() -> None:
        layer = get_channel_layer()
        channel = await layer.new_channel()
        await layer.group_add(usage_group(tenants.org_a.pk), channel)
        await layer.group_add(deployment_group("dep_x"), channel)

        def rolled_back() -> None:
            with pytest.raises(RuntimeError), transaction.atomic():
                publish_after_commit(groups=[usage_group(tenants.org_a.pk)])
                raise RuntimeError("the write failed")
            publish_after_commit(groups=[deployment_group("dep_x")])

        await database_sync_to_async(rolled_back)()
        assert await asyncio.wait_for(layer.receive(channel), 2) == {"type": CHANGED}  # only the committed one
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(layer.receive(channel), 0.5)

    async_to_sync(scenario)()


def test_a_failing_channel_layer_never_fails_the_write(tenants: Tenants, pushed: None, monkeypatch: pytest.MonkeyPatch) -> None:
    class Broken:
        async def group_send(self, group: str, message: dict) -> None:
            raise ConnectionError("Redis is down")

    monkeypatch.setattr("broadcast.publish.get_channel_layer", lambda: Broken())
    ingest.write_batch([_record(tenants.org_a.pk, "despite", at=timezone.now())])
    assert UsageEvent.objects.for_org(tenants.org_a).filter(request_id="despite").exists()
