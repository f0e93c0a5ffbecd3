"""The routing pages and the playground in a real browser (Playwright, Debian Chromium):
create a route, chat with it streamed, see who served it and what it cost."""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.conf import settings
from django.test import Client
from playwright.sync_api import Request

from metering.models import UsageEvent
from tenancy.decimals import plain
from tests.browser import UNLABELLED_CONTROLS_JS, chromium
from tests.conftest import Tenants
from tests.gateway.conftest import Backend
from tests.gateway.helpers import provider_for, route_to, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def _session_cookie(user) -> str:  # type: ignore[no-untyped-def]
    client = Client()
    client.force_login(user)
    return client.cookies[settings.SESSION_COOKIE_NAME].value


def _record(request: Request, sent: list[dict]) -> None:  # type: ignore[type-arg]
    """What the browser sent to the gateway (the Playground's requests, as JSON)."""
    if request.url.endswith("/v1/chat/completions"):
        sent.append(request.post_data_json or {})


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
        answer = page.locator("#pg-col-0")
        answer.get_by_test_id("playground-output").filter(has_text="Hello from the benchmark backend.").wait_for()
        assert answer.get_by_test_id("playground-target").inner_text() == "provider:beta-eu-west/bench-model"
        assert answer.get_by_test_id("playground-region").inner_text() == "eu-west"
        answer.get_by_test_id("playground-cost").filter(has_text="$0.0000").wait_for()
        assert answer.get_by_test_id("playground-status").inner_text().startswith("Done: first token after")
        assert re.fullmatch(r"\d+\.\d\d s", answer.get_by_test_id("playground-ttft").inner_text())

        # The call was metered like any other, with no key (a console session).
        event = orm.submit(lambda: wait_for(lambda: UsageEvent.objects.for_org(tenants.org_a).first())).result()
        assert event.key_id == "" and event.route == "chat-default" and event.status == 200 and event.streamed
        # The Playground's figure is the event's, exactly: one price truth, no float.
        assert answer.get_by_test_id("playground-cost").inner_text() == f"${plain(event.cost.normalize())}" != "$0"

        # The route page shows where the traffic went.
        page.go_back()
        page.reload()
        assert "100%" in page.content() and "eu-west" in page.content()
    orm.shutdown()


def test_a_conversation_compared_side_by_side_with_errors_as_errors_and_its_code(
    gateway: str, tenants: Tenants, backends: list[Backend]
) -> None:
    """Two turns (the second request carries the first exchange and the system prompt), a
    waiting line while the first token is slow, two routes compared side by side, the code of
    the next request, and a failing route's error in an alert, not in the answer."""
    orm = ThreadPoolExecutor(1)

    def setup() -> str:
        org = tenants.org_a
        route_to(org, "fast", [(provider_for(org, backends[0], region="us-east"), 100)])
        route_to(org, "slow", [(provider_for(org, backends[1], region="eu-west"), 100)])
        route_to(org, "broken", [(provider_for(org, backends[2], region="us-east"), 100)], max_attempts=1)
        return _session_cookie(tenants.owner_a)

    session = orm.submit(setup).result()
    backends[1].control(latency_ms=1500)
    backends[2].control(fail_status=500)
    sent: list[dict] = []  # type: ignore[type-arg]
    with chromium() as browser:
        context = browser.new_context()
        context.add_cookies([{"name": settings.SESSION_COOKIE_NAME, "value": session, "url": gateway}])
        page = context.new_page()
        page.on("request", lambda request: _record(request, sent))
        page.goto(f"{gateway}/o/{tenants.org_a.slug}/routing/playground/?model=fast")
        assert page.evaluate(UNLABELLED_CONTROLS_JS) == []
        first, second = page.locator("#pg-col-0"), page.locator("#pg-col-1")

        # Turn one, with a system prompt and parameters (an empty one is not sent).
        page.get_by_label("System prompt (optional)").fill("You are terse.")
        page.get_by_label("Message").fill("Hi <b>there</b>")
        page.get_by_label("Temperature").fill("0.5")
        page.get_by_role("button", name="Send").click()
        first.get_by_test_id("playground-output").filter(has_text="Hello from the benchmark backend.").wait_for()
        first.get_by_test_id("playground-status").filter(has_text="Done").wait_for()
        assert sent[0]["messages"] == [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Hi <b>there</b>"}]
        assert sent[0]["temperature"] == 0.5 and sent[0]["max_tokens"] == 64 and "top_p" not in sent[0]
        assert first.locator(".pg-turn--user pre").inner_text() == "Hi <b>there</b>"  # as text, never markup

        # The code of the next request: the model, the conversation so far, the key from the environment.
        page.get_by_label("Message").fill("And again")
        page.get_by_role("button", name="View code").click()
        assert page.get_by_role("button", name="Hide code").get_attribute("aria-expanded") == "true"
        code = page.get_by_test_id("playground-code").inner_text()
        assert '"model": "fast"' in code and 'model="fast"' in code and "$SWITCHBOARD_API_KEY" in code
        assert '"content": "Hello from the benchmark backend."' in code and '"content": "And again"' in code
        assert f'base_url="{gateway}/v1"' in code and "sbp_" not in code

        # Turn two, compared with the slow route: each column waits, streams and bills on its own.
        page.get_by_label("Compare with").select_option("slow")
        page.get_by_role("button", name="Send").click()
        second.get_by_test_id("playground-status").filter(has_text="Waiting for the first token").wait_for()
        assert re.fullmatch(r"\d+ s", second.locator(".pg-elapsed").inner_text())
        second.get_by_test_id("playground-status").filter(has_text="Done").wait_for(timeout=15_000)
        first.get_by_test_id("playground-status").filter(has_text="Done").wait_for()
        turn_two = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Hi <b>there</b>"}]
        turn_two += [{"role": "assistant", "content": "Hello from the benchmark backend."}, {"role": "user", "content": "And again"}]
        assert sorted(body["model"] for body in sent[1:]) == ["fast", "slow"]
        assert all(body["messages"] == turn_two for body in sent[1:])
        assert first.get_by_test_id("playground-target").inner_text() == "provider:alpha-us-east/bench-model"
        assert second.get_by_test_id("playground-target").inner_text() == "provider:beta-eu-west/bench-model"
        assert second.get_by_test_id("playground-output").inner_text() == "Hello from the benchmark backend."
        assert float(second.get_by_test_id("playground-ttft").inner_text().removesuffix(" s")) >= 1.4
        for column in (first, second):
            assert column.get_by_test_id("playground-cost").inner_text().startswith("$")
            assert column.locator(".pg-turn--assistant").count() == 2

        # On a phone the two columns stack, and neither they nor the code scroll the page sideways.
        page.set_viewport_size({"width": 390, "height": 844})
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        top, bottom = second.bounding_box(), first.bounding_box()
        assert top is not None and bottom is not None and top["y"] >= bottom["y"] + bottom["height"]
        page.set_viewport_size({"width": 1280, "height": 900})
        beside = second.bounding_box()
        assert beside is not None and beside["y"] == first.bounding_box()["y"]  # type: ignore[index]

        # A route whose only target fails: an alert with the status, message, code and request id.
        page.get_by_label("Route or deployment").select_option("broken")
        page.get_by_label("Compare with").select_option("")
        page.get_by_label("Message").fill("Will this work?")
        page.get_by_role("button", name="Send").click()
        alert = first.get_by_role("alert")
        alert.filter(has_text="The gateway answered 503").wait_for()
        request_id = first.locator(".pg-request").inner_text()
        assert request_id.startswith("req_") and request_id in alert.inner_text() and "no_healthy_target" in alert.inner_text()
        assert first.get_by_test_id("playground-output").inner_text() == ""  # the answer box holds no error
        assert page.get_by_label("Message").input_value() == "Will this work?"  # back, to retry
        assert second.is_hidden()

        # A new conversation starts empty: the next request carries only the new message.
        page.get_by_role("button", name="New conversation").click()
        assert first.locator(".pg-turn").count() == 0 and first.get_by_test_id("playground-error").inner_text() == ""
        page.get_by_label("Route or deployment").select_option("fast")
        page.get_by_label("Message").fill("Fresh start")
        page.get_by_role("button", name="Send").click()
        first.get_by_test_id("playground-status").filter(has_text="Done").wait_for()
        assert sent[-1]["messages"] == [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Fresh start"}]
    orm.shutdown()
