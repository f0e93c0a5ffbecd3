"""A new customer's journey in a real browser (Playwright, Debian Chromium), against real
processes: the console and the gateway under uvicorn, a Celery worker and beat (the
reconcile loop), a local cluster agent starting model-server processes.

The customer uploads a tiny random chat model's directory on the Models page, deploys it
from the deploy form on CPU in us-east, creates an API key on the API keys page (shown
once, read off the page), calls the deployment with the official `openai` SDK, then on
the deployment page saves a second revision without going live (Scale) and starts a
canary of it at 50%, holds it (the split stays, the automatic verdict waits) and, once
both revisions have answered the SDK traffic, promotes it with the Promote button. No
request fails, and every answer's `x-switchboard-revision` says which revision served it.

Held and promoted by hand, not left to the verdict: the console's form keeps the plan's
defaults, which compare the two revisions' mean latencies over 50 requests, and on a busy
two-core machine those means are noise (runs of this journey left to the verdict saw the
canary at 0.36x to 1.04x the stable's, the same model on the same machine; a few stalls
landing on one side would cross 1.5x and roll it back). The verdict itself is tested
under traffic in tests/controlplane/test_canary_integration.py.

The console runs here with the worker's data directory, not as the session's
`live_server_url`: an uploaded model's files are in the "models" storage, which a
replica reads in place where reconcile (in the worker) says they are; in one
installation every process has the same data directory, and so here."""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from django.conf import settings
from django.test import Client
from playwright.sync_api import Page

from deployments.models import Canary, Deployment, DeploymentRevision, Replica
from tests.browser import chromium
from tests.conftest import Tenants
from tests.controlplane.test_integration import Agents, _only_revision_live, _served_once, _Traffic, _wait, control_plane, running
from tests.servers import asgi_server, child_database_url, child_env
from tests.tiny_models import save_tiny_chat_llama

pytestmark = [pytest.mark.slow, pytest.mark.browser, pytest.mark.django_db(transaction=True)]

__all__ = ["control_plane"]  # the fixture, used by name

TIMEOUT_MS = 180_000  # a replica's start on a busy two-core machine


@pytest.fixture
def console(tmp_path: Path, django_db_blocker, control_plane: None) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """The platform's ASGI app (console, API, gateway) on the control plane's data directory."""
    with django_db_blocker.unblock():
        database_url = child_database_url()
    with asgi_server(child_env(DATABASE_URL=database_url, SWITCHBOARD_DATA_DIR=str(tmp_path))) as url:
        yield url


@pytest.fixture
def agents(tmp_path: Path) -> Iterator[Agents]:
    """The us-east cluster's agent only: the journey deploys there."""
    agents = Agents(tmp_path / "agents")
    agents[:] = [agents.named("local-us-east")]
    yield from running(agents)


def _session_cookie(user) -> str:  # type: ignore[no-untyped-def]
    client = Client()
    client.force_login(user)
    return client.cookies[settings.SESSION_COOKIE_NAME].value


def test_a_new_customer_uploads_deploys_calls_and_canaries_a_model_in_the_browser(
    tenants: Tenants, agents: Agents, console: str, tmp_path: Path
) -> None:
    directory = save_tiny_chat_llama(tmp_path / "acme-chat")
    org = tenants.org_a.slug
    orm = ThreadPoolExecutor(1)  # ORM work off Playwright's thread (it runs an event loop)
    session = orm.submit(_session_cookie, tenants.owner_a).result()
    traffic: _Traffic | None = None
    timings: dict[str, float] = {}
    started = time.monotonic()

    def step(name: str) -> None:
        timings[name] = round(time.monotonic() - started, 1)

    with chromium() as browser:
        context = browser.new_context()
        context.add_cookies([{"name": settings.SESSION_COOKIE_NAME, "value": session, "url": console}])
        page = context.new_page()
        page.set_default_timeout(30_000)
        try:
            # 1. The model directory, uploaded on the Models page.
            page.goto(f"{console}/o/{org}/models/")
            upload_form = page.locator("#model-upload")
            upload_form.get_by_label("Name").fill("acme-chat")
            upload_form.get_by_label("Model directory").set_input_files(directory)
            upload_form.get_by_role("button", name="Upload").click()
            row = page.get_by_test_id("model-row").filter(has_text="acme-chat")
            row.wait_for(timeout=60_000)
            assert "Registered" in row.inner_text() and "Chat and completions" in row.inner_text()
            step("uploaded")

            # 2. Deployed from the deploy form, where the registered model is offered.
            page.goto(f"{console}/o/{org}/deployments/new/")
            page.get_by_label("Name", exact=True).fill("chat")
            page.get_by_label("Model", exact=True).select_option("acme-chat")
            page.get_by_label("GPU type").select_option("CPU")
            page.get_by_role("checkbox", name=re.compile(r"^us-east ")).check()
            page.get_by_label("Min replicas").fill("1")
            page.get_by_label("Max replicas").fill("2")
            page.get_by_role("button", name="Deploy").click()
            page.get_by_text("Created chat.").wait_for()
            deployment_page = page.url
            assert page.get_by_role("heading", level=1).inner_text().startswith("chat")
            _badge(page, "Active")
            step("active")

            # 3. A key from the API keys page, shown once, and a call with the SDK.
            page.goto(f"{console}/o/{org}/keys/")
            page.get_by_label("Name", exact=True).fill("journey")
            page.get_by_role("button", name="Create key").click()
            key = page.get_by_test_id("new-key-secret").input_value()
            # Paced to stay within the organization's default limit (600 requests a minute, a
            # bucket refilled at 10 a second) for as long as the traffic runs.
            traffic = _Traffic(console, key, "chat", pause=0.05)
            _wait("the gateway serving", lambda: _served_once(traffic), timeout=30)
            first = traffic.client.chat.completions.with_raw_response.create(
                model="chat", messages=[{"role": "user", "content": "hi"}], max_tokens=2
            )
            assert first.status_code == 200 and first.parse().choices[0].message.role == "assistant"
            stable_id = first.headers["x-switchboard-revision"]
            step("called")

            # 4. A second revision saved without going live, and a canary of it at 50%.
            traffic.start()
            page.goto(deployment_page)
            page.get_by_label("Max", exact=True).fill("1")
            page.get_by_label("Save as a revision without going live").check()
            page.get_by_role("button", name="Apply").click()
            page.get_by_text("Saved as a new revision").wait_for()
            assert page.get_by_test_id("deployment-status").inner_text() == "Active"  # nothing went live
            canary_form = page.get_by_test_id("canary-start")
            canary_form.get_by_label("Revision").select_option("2")
            canary_form.get_by_label("Share of requests (%)").fill("50")
            traffic.phase = "canary"
            canary_form.get_by_role("button", name="Start canary").click()
            page.get_by_text("Canary started: revision 2 takes 50% of requests.").wait_for()
            assert page.get_by_test_id("canary-percent").inner_text() == "50%"
            assert "50%" in page.get_by_test_id("canary-stable").inner_text()
            step("canary started")

            # 5. Held, then promoted by hand once both revisions answer; the page follows live.
            canary_section = page.locator("section[aria-labelledby=canary-title]")
            canary_section.get_by_role("button", name="Hold").click()
            page.get_by_test_id("canary-state").filter(has_text="Held").wait_for()

            def canary_answers() -> int:
                return sum(1 for revision, _, _ in traffic.answers.get("canary", []) if revision != stable_id)

            _wait("the canary revision answering", lambda: canary_answers() >= 5, timeout=TIMEOUT_MS / 1000)
            page.once("dialog", lambda dialog: dialog.accept())  # "Promote revision 2 to take all traffic?"
            canary_section.get_by_role("button", name="Promote").click()
            page.get_by_test_id("canary-state").filter(has_text="Promoted").wait_for()
            step("promoted")
            _badge(page, "Active")
            deployment = orm.submit(_deployment, tenants, "chat").result()
            replicas = Replica.objects.for_org(tenants.org_a).filter(deployment=deployment)
            assert deployment.current_revision is not None and deployment.current_revision.number == 2
            canary_id = deployment.current_revision.pk
            _wait("the first revision drained", lambda: orm.submit(_only_revision_live, replicas, canary_id).result(), timeout=120)
            time.sleep(3)  # past the gateway's snapshot cache
            traffic.phase = "after"
            _wait("answers after the promotion", lambda: len(traffic.answers.get("after", [])) >= 3, timeout=60)
            step("after")
        except BaseException:
            with contextlib.suppress(Exception):  # the failure itself is what matters
                page.screenshot(path=str(tmp_path / "failure.png"), full_page=True)
                print(f"screenshot: {tmp_path / 'failure.png'}")
            raise
        finally:
            if traffic is not None and traffic.is_alive():
                traffic.done.set()
                traffic.join(timeout=90)

    canary = orm.submit(lambda: Canary.objects.for_org(tenants.org_a).get()).result()
    assert (canary.state, canary.reason) == (Canary.State.PROMOTED, "promoted")  # by the button, not the verdict
    revisions = dict(orm.submit(lambda: list(DeploymentRevision.objects.for_org(tenants.org_a).values_list("id", "number"))).result())
    orm.shutdown()
    assert revisions == {stable_id: 1, canary_id: 2}
    for phase in ("before", "canary", "after"):
        answers = traffic.answers.get(phase, [])
        by_revision = {number: sum(1 for revision, _, _ in answers if revision == pk) for pk, number in revisions.items()}
        failed = sum(failure.startswith(phase) for failure in traffic.failures)
        print(f"{phase}: {len(answers)} requests served (by revision {by_revision}), {failed} failed")
    print(f"seconds since the browser opened: {timings}")
    assert traffic.failures == [], sorted(set(traffic.failures))[:10]
    every = [answer for answers in traffic.answers.values() for answer in answers]
    assert all(served == body_model == "acme-chat" for _, served, body_model in every), set(every)
    assert {revision for revision, _, _ in traffic.answers.get("before", [])} <= {stable_id}  # saving went nowhere live
    assert {revision for revision, _, _ in traffic.answers["canary"]} == {stable_id, canary_id}
    assert {revision for revision, _, _ in traffic.answers["after"]} == {canary_id}


def _deployment(tenants: Tenants, name: str) -> Deployment:
    return Deployment.objects.for_org(tenants.org_a).select_related("current_revision").get(name=name)


def _badge(page: Page, status: str) -> None:
    page.get_by_test_id("deployment-status").filter(has_text=re.compile(f"^{status}$")).wait_for(timeout=TIMEOUT_MS)
