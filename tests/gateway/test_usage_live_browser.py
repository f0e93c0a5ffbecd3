"""The Usage page updates live in a real browser (Playwright, Debian Chromium): requests
sent through the gateway with the official openai SDK show on the open page within
about two seconds, without a reload, and another tenant's requests never do."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.conf import settings
from django.test import Client

from tests.browser import UNLABELLED_CONTROLS_JS, chromium
from tests.conftest import Tenants
from tests.factories import issue_key
from tests.gateway.conftest import Backend
from tests.gateway.helpers import client, provider_for, route_to

pytestmark = [pytest.mark.slow, pytest.mark.browser, pytest.mark.django_db(transaction=True)]

# The gateway makes the event durable before answering; the ingester writes it within
# about a second and tells the page's socket (Redis), or the socket polls once a second
# (the embedded default): about 2 s on an idle machine
# (the test prints what it saw). The push itself is proven by the page never reloading;
# the bound is generous so a loaded or one-core machine passes.
LIVE_WITHIN_S = 20.0

DISPLAYED_REQUESTS = "() => (document.querySelector('[data-testid=usage-requests]') || {}).textContent"

# Pixels of the chart's canvas painted in the first series' colour (#2f6bd6), give or take
# antialiasing: uPlot drew the bars.
PAINTED_PIXELS = """(selector) => {
  const canvas = document.querySelector(selector);
  const pixels = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
  let count = 0;
  for (let i = 0; i < pixels.length; i += 4) {
    if (Math.abs(pixels[i] - 47) < 12 && Math.abs(pixels[i + 1] - 107) < 12 && Math.abs(pixels[i + 2] - 214) < 12) count++;
  }
  return count;
}"""


# A chart drawn for one window, then pushed the next minute's window with requests only in
# the new (newest) bucket: the plot must follow the window, not keep the first one's axis
# (which left the newest bucket off the right edge, undrawn, until a reload).
ROLLED_OVER_PAINTED_PIXELS = """async () => {
  const minute = 60000, start = Math.floor(Date.now() / minute) * minute - 60 * minute;
  const windowAt = (first) => ({
    buckets: Array.from({ length: 60 }, (_, i) => first + i * minute), end: first + 60 * minute,
    granularity: "minute", split: "none",
  });
  const spec = (values) => ({
    id: "rolled", title: "Requests per minute", unit: "count", kind: "stacked", series: [{ name: "Requests", values }],
  });
  const container = document.createElement("div");
  container.style.width = "600px";
  document.querySelector("main").appendChild(container);
  const chart = window.SwitchboardCharts.createChart(container, { compact: true });
  chart.update(spec(Array(60).fill(0)), windowAt(start));
  chart.update(spec([...Array(59).fill(0), 6]), windowAt(start + minute));
  await new Promise((drawn) => requestAnimationFrame(() => setTimeout(drawn)));  // uPlot draws after a microtask
  const canvas = container.querySelector("canvas");
  const pixels = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
  let count = 0;
  for (let i = 0; i < pixels.length; i += 4) {
    if (Math.abs(pixels[i] - 47) < 12 && Math.abs(pixels[i + 1] - 107) < 12 && Math.abs(pixels[i + 2] - 214) < 12) count++;
  }
  chart.destroy();
  container.remove();
  return count;
}"""


def _session_cookie(user) -> str:  # type: ignore[no-untyped-def]
    browser_client = Client()
    browser_client.force_login(user)
    return browser_client.cookies[settings.SESSION_COOKIE_NAME].value


def _setup(tenants: Tenants, backends: list[Backend]) -> tuple[str, str, str]:
    route_to(tenants.org_a, "chat-live", [(provider_for(tenants.org_a, backends[0]), 100)])
    route_to(tenants.org_b, "chat-live", [(provider_for(tenants.org_b, backends[1]), 100)])
    key_a = issue_key(tenants.org_a, ["inference"], name="acme-live-key").plaintext
    key_b = issue_key(tenants.org_b, ["inference"], name="globex-live-key").plaintext
    return key_a, key_b, _session_cookie(tenants.member_a)


def _start_early_in_a_minute() -> None:
    """The range's buckets are minutes and the tooltip checked below is the newest one's
    ("so far"): begin with most of a minute left, so the requests and the pointing all
    fall in one bucket rather than on either side of a minute boundary."""
    into_minute = time.time() % 60
    if into_minute > 30:
        time.sleep(60.5 - into_minute)


def _start_early_in_a_minute() -> None:
    """The range's buckets are minutes and the tooltip checked below is the newest one's
    ("so far"): begin with most of a minute left, so that the page, the requests and the
    pointing fall in one bucket. (A minute passing under an open page is checked apart,
    in `ROLLED_OVER_PAINTED_PIXELS`.)"""
    into_minute = time.time() % 60
    if into_minute > 30:
        time.sleep(60.5 - into_minute)


def _wait_for_requests(page, count: int, timeout_s: float) -> float:  # type: ignore[no-untyped-def]
    """Seconds until the page shows `count` requests."""
    started = time.monotonic()
    page.wait_for_function(f"() => ({DISPLAYED_REQUESTS})().replace(/,/g, '') === '{count}'", timeout=timeout_s * 1000, polling=50)
    return time.monotonic() - started


def test_requests_through_the_gateway_appear_on_the_open_usage_page(gateway: str, tenants: Tenants, backends: list[Backend]) -> None:
    orm = ThreadPoolExecutor(1)  # ORM work off Playwright's thread (it runs an event loop)
    key_a, key_b, session = orm.submit(_setup, tenants, backends).result()
    sdk_a, sdk_b = client(gateway, key_a), client(gateway, key_b)

    def ask(sdk) -> None:  # type: ignore[no-untyped-def]
        answer = sdk.chat.completions.create(model="chat-live", messages=[{"role": "user", "content": "Hello"}])
        assert answer.choices[0].message.content

    with chromium() as browser:
        context = browser.new_context()
        context.add_cookies([{"name": settings.SESSION_COOKIE_NAME, "value": session, "url": gateway}])
        page = context.new_page()
        _start_early_in_a_minute()
        page.goto(f"{gateway}/o/{tenants.org_a.slug}/usage/?range=1h")
        assert page.evaluate(UNLABELLED_CONTROLS_JS) == []
        page.get_by_text("Live", exact=True).wait_for(timeout=10_000)
        # No usage yet: the page says how to make a first request.
        assert page.get_by_test_id("usage-empty").is_visible()
        page.evaluate("window.__sameDocument = true")
        _start_early_in_a_minute()

        # The first request turns the empty state into the dashboard.
        ask(sdk_a)
        first = _wait_for_requests(page, 1, LIVE_WITHIN_S + 2)  # the first event also starts the ingester's spool file
        assert not page.get_by_test_id("usage-empty").is_visible()

        # N more, and one of the other tenant's, which must not count here.
        before = int(page.evaluate(DISPLAYED_REQUESTS).replace(",", ""))
        n = 5
        ask(sdk_b)
        for _ in range(n):
            ask(sdk_a)
        delay = _wait_for_requests(page, before + n, LIVE_WITHIN_S)
        print(f"first request shown after {first:.2f} s, {n} more after {delay:.2f} s")
        time.sleep(2.0)  # time for a wrong push to arrive
        assert page.evaluate(DISPLAYED_REQUESTS).replace(",", "") == str(before + n)
        assert page.evaluate("window.__sameDocument") is True  # pushed, never reloaded
        assert page.evaluate(PAINTED_PIXELS, "[data-chart=requests] canvas") > 20
        # Pointing at the newest bucket shows its figures in the tooltip.
        plot = page.locator("[data-chart=requests] .u-over").bounding_box()
        assert plot is not None
        page.mouse.move(plot["x"] + plot["width"] - 1, plot["y"] + plot["height"] / 2)
        tooltip = page.locator("[data-chart=requests] .chart-tooltip")
        tooltip.wait_for(state="visible", timeout=5_000)
        assert "(so far)" in tooltip.inner_text()

        # Split by key: the member sees their organization's key, never the other's.
        page.get_by_label("Split by").select_option("key")
        page.locator("[data-chart=requests] .chart-legend li", has_text="acme-live-key").wait_for(timeout=10_000)
        page.get_by_text("Live", exact=True).wait_for(timeout=10_000)  # a new socket for the new split
        assert "globex-live-key" not in page.content()
        assert page.evaluate(DISPLAYED_REQUESTS).replace(",", "") == str(before + n)
        assert page.evaluate(ROLLED_OVER_PAINTED_PIXELS) > 20
    orm.shutdown()
