"""Every console page fits a phone: at 390 CSS pixels wide no page scrolls sideways (wide
tables scroll inside their own frame instead). Headless Chromium, against the ASGI server,
with an organization that has something on every page."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
from django.conf import settings
from django.test import Client

from metering import ingest
from tests.browser import chromium
from tests.conftest import Tenants
from tests.factories import create_deployment, create_provider, create_route, issue_key
from tests.metering.test_usage_pipeline import _record

pytestmark = [pytest.mark.slow, pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PHONE = {"width": 390, "height": 844}
OVERFLOW = """() => {
  const width = document.documentElement.clientWidth;
  // What sticks out, outside the frames that scroll on their own (for the failure message).
  const culprits = [];
  for (const node of document.querySelectorAll("main *")) {
    const box = node.getBoundingClientRect();
    if (box.right > width + 1 && !node.closest(".table-wrap, pre, .chart-frame, .u-wrap")) {
      const name = node.tagName.toLowerCase() + (node.className ? "." + String(node.className).split(" ")[0] : "");
      culprits.push(name + ":" + Math.round(box.right));
    }
  }
  return {scroll: document.documentElement.scrollWidth, culprits: culprits.slice(0, 12)};
}"""


def _setup(tenants: Tenants) -> tuple[str, list[str]]:
    org = tenants.org_a
    deployment = create_deployment(org, name="chat", environment="production")
    provider = create_provider(org, name="openai-compatible-upstream-with-a-long-name")
    route = create_route(org, "chat-default", targets=[(deployment, 100), ((provider, "gpt-4o-mini-2024-07-18"), 50)])
    key = issue_key(org, ["inference"], name="backend-production-key").api_key.id
    ingest.write_batch(
        [
            _record(
                org.pk,
                "req_0123456789abcdef01234567",
                key_id=key,
                target="provider:openai-compatible-upstream-with-a-long-name/gpt-4o-mini-2024-07-18",
            )
        ]
    )
    client = Client()
    client.force_login(tenants.owner_a)
    base = f"/o/{org.slug}"
    pages = [
        "/", "/deployments/", "/deployments/new/", f"/deployments/{deployment.pk}/", "/models/", "/routing/", "/routing/new/",
        f"/routing/{route.pk}/", f"/routing/providers/{provider.pk}/edit/", "/routing/playground/", "/usage/", "/requests/",
        "/requests/req_0123456789abcdef01234567/", "/billing/", "/keys/", "/members/", "/audit/", "/settings/",
    ]  # fmt: skip
    return client.cookies[settings.SESSION_COOKIE_NAME].value, [base + page for page in pages]


def test_no_console_page_scrolls_sideways_on_a_phone(live_server_url: str, tenants: Tenants) -> None:
    orm = ThreadPoolExecutor(1)  # ORM work off Playwright's thread (it runs an event loop)
    session, pages = orm.submit(_setup, tenants).result()
    orm.shutdown()
    too_wide = {}
    with chromium() as browser:
        context = browser.new_context(viewport=PHONE)
        context.add_cookies([{"name": settings.SESSION_COOKIE_NAME, "value": session, "url": live_server_url}])
        page = context.new_page()
        for path in pages:
            response = page.goto(live_server_url + path)
            assert response is not None and response.status == 200, f"{path}: {response.status if response else None}"
            found = page.evaluate(OVERFLOW)
            if found["scroll"] > PHONE["width"]:
                too_wide[path] = found
    assert too_wide == {}, "\n".join(f"{path}: {found}" for path, found in too_wide.items())
