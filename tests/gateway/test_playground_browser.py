"""The routing pages and the playground in a real browser (Playwright, Debian Chromium):
create a route, chat with it streamed, see who served it and what it cost."""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.conf import settings
from django.test import Client

from metering.models import UsageEvent
from tenancy.decimals import plain
from tests.browser import UNLABELLED_CONTROLS_JS, chromium
from tests.conftest import Tenants
from tests.gateway.conftest import Backend
from tests.gateway.helpers import provider_for, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def _session_cookie(user) -> str:  # type: ignore[no-untyped-def]
    client = Client()
    client.force_login(user)
    return client.cookies[settings.SESSION_COOKIE_NAME].value


def test_create_a_route_and_chat_with_it_in_the_playground(gateway: str, tenants: Tenants, backends: list[Backend]) -> None:
    orm = ThreadPoolExecutor(1)  # ORM work off Playwright's thread (it runs an event loop)
    orm.submit(provider_for, tenants.org_a, backends[1], region="eu-west").result()
    session = orm.submit(_session_cookie, tenants.owner_a).result()
    with chromium() as browser:
        context = browser.new_context()
        context.add_cookies([{"name": settings.SESSION_COOKIE_NAME, "value": session, "url": gateway}])
        page = context.new_page()

        page.goto(f"{gateway}/o/{tenants.org_a.slug}/routing/new/")
        assert page.evaluate(UNLABELLED_CONTROLS_JS) == []
        page.get_by_label("Name").fill("chat-default")
        page.get_by_label("Strategy").select_option("lowest_cost")
        page.get_by_label("eu-west").check()
        page.get_by_label("Target 1").select_option(label="Provider beta-eu-west (eu-west)")
        page.get_by_label("Provider model 1").fill("bench-model")
        page.get_by_role("button", name="Save route").click()
        page.wait_for_url(re.compile(r"/routing/rte_[A-Za-z0-9]+/$"))
        assert "provider:beta-eu-west/bench-model" in page.content()

        page.get_by_role("link", name="Try it in the playground").click()
        page.wait_for_url(re.compile(r"/routing/playground/"))
        assert page.evaluate(UNLABELLED_CONTROLS_JS) == []
        assert page.get_by_label("Route or deployment").input_value() == "chat-default"
        page.get_by_role("button", name="Send").click()
        page.get_by_test_id("playground-output").filter(has_text="Hello from the benchmark backend.").wait_for()
        assert page.get_by_test_id("playground-target").inner_text() == "provider:beta-eu-west/bench-model"
        assert page.get_by_test_id("playground-region").inner_text() == "eu-west"
        page.get_by_test_id("playground-cost").filter(has_text="$0.0000").wait_for()

        # The call was metered like any other, with no key (a console session).
        event = orm.submit(lambda: wait_for(lambda: UsageEvent.objects.for_org(tenants.org_a).first())).result()
        assert event.key_id == "" and event.route == "chat-default" and event.status == 200 and event.streamed
        # The Playground's figure is the event's, exactly: one price truth, no float.
        assert page.get_by_test_id("playground-cost").inner_text() == f"${plain(event.cost.normalize())}" != "$0"

        # The route page shows where the traffic went.
        page.go_back()
        page.reload()
        assert "100%" in page.content() and "eu-west" in page.content()
    orm.shutdown()
