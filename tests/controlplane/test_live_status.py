"""Live deployment status over the WebSocket, through the real ASGI server."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.test import Client
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from broadcast.groups import deployment_group
from broadcast.publish import publish_after_commit
from deployments.models import Cluster, Replica
from tests.conftest import Tenants
from tests.factories import create_deployment

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def _cookie(user) -> str:  # type: ignore[no-untyped-def]
    client = Client()
    client.force_login(user)
    return f"sessionid={client.cookies['sessionid'].value}"


def _socket(live_server_url: str, user, path: str):  # type: ignore[no-untyped-def]
    url = live_server_url.replace("http://", "ws://") + path
    return connect(url, additional_headers={"Cookie": _cookie(user), "Origin": live_server_url}, open_timeout=10)


def test_replica_changes_arrive_without_a_reload(live_server_url: str, tenants: Tenants) -> None:
    deployment = create_deployment(tenants.org_a)
    with _socket(live_server_url, tenants.viewer_a, f"/ws/o/{tenants.org_a.slug}/deployments/{deployment.id}/") as socket:
        first = json.loads(socket.recv(timeout=5))
        assert first["status"] == "deploying" and "No replicas" in first["replicas_html"]
        replica = Replica.objects.create(
            organization=tenants.org_a,
            deployment=deployment,
            revision=deployment.current_revision,
            cluster=Cluster.objects.get(name="local-us-east"),
            state=Replica.State.READY,
            endpoint="http://127.0.0.1:1",
        )
        publish_after_commit(groups=[deployment_group(deployment.id)])  # as the control plane does (pushed where Redis carries it)
        update = json.loads(socket.recv(timeout=5))
        assert replica.id in update["replicas_html"] and "Ready" in update["replicas_html"]


def test_another_tenant_cannot_subscribe(live_server_url: str, tenants: Tenants) -> None:
    deployment = create_deployment(tenants.org_a)
    for path in (f"/ws/o/{tenants.org_a.slug}/deployments/{deployment.id}/", f"/ws/o/{tenants.org_b.slug}/deployments/{deployment.id}/"):
        with pytest.raises(InvalidStatus) as refused:  # the handshake itself is refused
            _socket(live_server_url, tenants.owner_b, path)
        assert refused.value.response.status_code == 403


@pytest.mark.browser
def test_the_deployment_page_updates_live_in_a_browser(live_server_url: str, tenants: Tenants) -> None:
    from tests.browser import chromium

    deployment = create_deployment(tenants.org_a, name="live-demo")
    session = _cookie(tenants.member_a).split("=", 1)[1]
    with chromium() as browser:
        context = browser.new_context()
        context.add_cookies([{"name": "sessionid", "value": session, "url": live_server_url}])
        page = context.new_page()
        page.goto(f"{live_server_url}/o/{tenants.org_a.slug}/deployments/{deployment.id}/")
        assert page.title() == "live-demo · Switchboard"
        assert page.get_by_test_id("replica-state").count() == 0

        def add_ready_replica() -> None:  # off Playwright's event-loop thread, where the ORM refuses to run
            Replica.objects.create(
                organization=tenants.org_a,
                deployment=deployment,
                revision=deployment.current_revision,
                cluster=Cluster.objects.get(name="local-eu-west"),
                state=Replica.State.READY,
                endpoint="http://127.0.0.1:1",
            )
            publish_after_commit(groups=[deployment_group(deployment.id)])  # as the control plane does

        with ThreadPoolExecutor(1) as pool:
            pool.submit(add_ready_replica).result()
        page.get_by_test_id("replica-state").wait_for(timeout=5000)  # pushed over the WebSocket, no reload
        assert page.get_by_test_id("replica-state").inner_text() == "Ready"
        assert "simulated GPU inventory" in page.locator("#live-replicas").inner_text()
