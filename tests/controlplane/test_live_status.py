"""Live deployment status over the WebSocket, through the real ASGI server."""

from __future__ import annotations

import json
import re
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.test import Client
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from broadcast.groups import deployment_group
from broadcast.publish import publish_after_commit
from deployments.models import Cluster, Deployment, Replica
from tests.conftest import Tenants
from tests.controlplane.test_reconcile import Fleet
from tests.factories import create_deployment, ensure_clusters

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


@pytest.mark.browser
def test_a_start_is_followed_live_from_the_deploy_form_to_ready(live_server_url: str, tenants: Tenants) -> None:
    """Deployed from the form: the start-up bar counts seconds on its own, each stage and
    event arrives without a reload as the control plane acts (the in-memory driver here),
    and once it is ready nothing on the page still says it is deploying."""
    from tests.browser import UNLABELLED_CONTROLS_JS, chromium

    ensure_clusters()
    fleet = Fleet()
    session = _cookie(tenants.member_a).split("=", 1)[1]

    def seconds(text: str) -> int:
        match = re.fullmatch(r"(\d+) s", text.strip())
        assert match is not None, text
        return int(match.group(1))

    with chromium() as browser:
        context = browser.new_context()
        context.add_cookies([{"name": "sessionid", "value": session, "url": live_server_url}])
        page = context.new_page()
        page.goto(f"{live_server_url}/o/{tenants.org_a.slug}/deployments/new/")
        page.get_by_label("Name").fill("live-start")
        page.get_by_label("Model").select_option("smollm2-135m-instruct")
        page.get_by_label("GPU type").select_option("CPU")
        page.locator("input[name=allowed_regions][value=us-east]").check()
        page.get_by_role("button", name="Deploy").click()
        page.wait_for_url(re.compile(r"/deployments/dep_\w+/$"))
        assert page.get_by_text("Created live-start.").is_visible()
        assert page.evaluate(UNLABELLED_CONTROLS_JS) == []
        for heading in ("Start-up", "Call this model", "Events"):
            assert page.get_by_role("heading", name=heading, exact=True).is_visible()
        assert page.get_by_role("button", name="Copy").count() == 3
        assert "Placing" in page.get_by_test_id("startup-stage").inner_text()
        assert page.locator("[aria-current=step]").inner_text().startswith("Placing")

        elapsed = page.get_by_test_id("startup-elapsed")
        before = seconds(elapsed.inner_text())
        page.wait_for_timeout(3500)
        assert seconds(elapsed.inner_text()) >= before + 2  # ticked by the page's script (no push: nothing else changed)

        with ThreadPoolExecutor(1) as pool:  # off Playwright's event-loop thread, where the ORM refuses to run
            deployment = pool.submit(lambda: Deployment.objects.for_org(tenants.org_a).get(name="live-start")).result()
            pool.submit(fleet.run, deployment).result()  # placed and started
        page.locator("[aria-current=step]", has_text="Placing").wait_for(timeout=5000)
        page.get_by_test_id("timeline-event").first.wait_for(timeout=5000)
        assert "process started" in page.locator("#live-events").inner_text()
        assert "No events yet" not in page.locator("#live-events").inner_text()

        def loading_then_ready() -> None:
            fleet.loading = {replica.endpoint for replica in Replica.objects.for_org(tenants.org_a).filter(deployment=deployment)}
            fleet.run(deployment)

        with ThreadPoolExecutor(1) as pool:
            pool.submit(loading_then_ready).result()
        page.locator("[aria-current=step]", has_text="Loading the model").wait_for(timeout=5000)
        assert page.locator("#live-startup-said").inner_text().startswith("Loading")  # said once, politely

        def ready() -> None:
            fleet.loading.clear()
            fleet.run(deployment)

        with ThreadPoolExecutor(1) as pool:
            pool.submit(ready).result()
        page.get_by_text("The start took").wait_for(timeout=5000)
        assert page.get_by_test_id("deployment-status").inner_text() == "Active"
        assert page.locator("[aria-current=step]").count() == 0
        assert "deploying" not in page.locator("main").inner_text().lower()
        assert page.get_by_test_id("timeline-event").count() == 4  # pending, provisioning, loading, ready

        page.set_viewport_size({"width": 390, "height": 844})  # the bar wraps and the snippets scroll on a phone
        widest = "card => Math.max(...[card, ...card.querySelectorAll('*')].filter(e => e.tagName === 'PRE' || !e.closest('pre'))"
        widest += ".map(e => e.getBoundingClientRect().right))"  # a snippet scrolls inside its <pre>
        for card in ("startup", "call"):
            right = page.get_by_test_id(card).evaluate(widest)
            assert right <= 390, f"the {card} card reaches {right}px on a 390px screen"
