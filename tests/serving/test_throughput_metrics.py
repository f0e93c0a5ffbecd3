"""The counters a replica's throughput is derived from: tokens processed and busy seconds."""

from __future__ import annotations

import time

import httpx
import pytest
from django.conf import settings
from starlette.testclient import TestClient

from modelserver.app import ServerOptions, build_app
from modelserver.catalog import get_spec
from modelserver.metrics import BusyClock
from tests.serving.metrics_text import metric_in
from tests.serving.test_engine_failure import _wait_ready

COUNTERS = ("switchboard:prompt_tokens_total", "switchboard:generation_tokens_total", "switchboard:busy_seconds_total")


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_busy_seconds_count_only_time_with_something_in_flight() -> None:
    clock = FakeClock()
    busy = BusyClock(clock)
    clock.now += 5  # idle
    busy.set_in_flight(1)
    clock.now += 2
    busy.set_in_flight(3)  # more joining a busy stretch starts nothing new
    clock.now += 1
    assert busy.seconds() == 3.0  # the stretch under way counts before it ends
    busy.set_in_flight(0)
    clock.now += 10  # idle again
    assert busy.seconds() == 3.0
    busy.set_in_flight(2)
    clock.now += 0.5
    busy.set_in_flight(0)
    busy.set_in_flight(0)  # idle twice is still idle
    assert busy.seconds() == 3.5


@pytest.mark.parametrize("model", ["tiny-chat", "tiny-embedding"])
def test_a_request_grows_tokens_and_busy_seconds(model: str) -> None:
    app, _ = build_app(get_spec(model), ServerOptions(cache_dir=settings.MODEL_CACHE_DIR, max_batch_size=4, max_queue=8))
    with TestClient(app) as client:
        _wait_ready(client)
        before = client.get("/metrics").text
        if model == "tiny-chat":
            body = {"model": model, "messages": [{"role": "user", "content": "Count to ten"}], "max_tokens": 8, "temperature": 0}
            usage = client.post("/v1/chat/completions", json=body).json()["usage"]
        else:
            usage = client.post("/v1/embeddings", json={"model": model, "input": ["one sentence", "and another one"]}).json()["usage"]
        # The engine counts a request's last token as it finishes it, which can be a moment
        # after the answer went out: read the counters until they hold it (or 5 s pass).
        deadline = time.monotonic() + 5
        while True:
            after = client.get("/metrics").text
            tokens = sum(metric_in(after, name) - metric_in(before, name) for name in COUNTERS[:2])
            if tokens >= usage["total_tokens"] or time.monotonic() > deadline:
                break
            time.sleep(0.05)
    assert tokens == usage["total_tokens"]
    assert metric_in(after, "switchboard:busy_seconds_total") > metric_in(before, "switchboard:busy_seconds_total")
    assert metric_in(after, "switchboard:start_time_seconds") == metric_in(before, "switchboard:start_time_seconds") > 0


@pytest.mark.slow
def test_a_real_server_process_reports_the_counters(tiny_chat_server: str) -> None:
    before = httpx.get(tiny_chat_server + "/metrics").text
    body = {"model": "tiny-chat", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 5, "temperature": 0}
    assert httpx.post(tiny_chat_server + "/v1/chat/completions", json=body, timeout=30).status_code == 200
    after = httpx.get(tiny_chat_server + "/metrics").text
    for name in COUNTERS:
        assert metric_in(after, name) > metric_in(before, name), name
