"""Health, back-pressure, disconnects and draining of real model-server processes."""

from __future__ import annotations

import json
import signal
import threading
import time

import httpx
import pytest

from tests.servers import model_server
from tests.serving.conftest import CHAT_MODEL
from tests.serving.metrics_text import metric

pytestmark = pytest.mark.slow


def _chat_body(prompt: str, max_tokens: int, **extra: object) -> dict[str, object]:
    return {"model": CHAT_MODEL, "messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens, "temperature": 0, **extra}


def _refused_within(url: str, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            httpx.get(url, timeout=2)
        except httpx.TransportError:
            return True
        time.sleep(0.05)
    return False


def test_health_is_503_until_ready_then_sigterm_drains_in_flight_streams() -> None:
    with model_server(CHAT_MODEL, "--drain-seconds", "60", wait_ready=False) as (url, process):
        seen: list[int] = []
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and 200 not in seen:
            try:
                response = httpx.get(url + "/health", timeout=2)
                seen.append(response.status_code)
                if response.status_code == 503:
                    assert response.json()["status"] == "loading" and response.headers["Retry-After"]
            except httpx.TransportError:
                pass
            time.sleep(0.02)
        assert seen and seen[0] == 503 and seen[-1] == 200
        early = httpx.post(url + "/v1/chat/completions", json=_chat_body("hi", 2))
        assert early.status_code == 200

        frames: list[str] = []
        with httpx.stream(
            "POST", url + "/v1/chat/completions", json=_chat_body("Tell me a story about a lighthouse.", 48, stream=True), timeout=120
        ) as stream:
            lines = stream.iter_lines()
            for line in lines:
                if line.startswith("data: "):
                    frames.append(line)
                    break
            process.send_signal(signal.SIGTERM)
            # Once the server has taken the signal it accepts no new connection while it
            # drains; how soon it takes it depends on the machine, so wait for the refusal.
            assert _refused_within(url + "/health", 30.0), "the draining server still accepted connections"
            frames.extend(line for line in lines if line.startswith("data: "))
        assert process.wait(timeout=60) == 0
    assert frames[-1] == "data: [DONE]"
    last = json.loads(frames[-2][len("data: ") :])
    assert last["choices"][0]["finish_reason"] == "length"  # the stream ran to its end
    assert sum(1 for frame in frames if '"content":' in frame) >= 48


@pytest.fixture(scope="module")
def narrow_server():  # type: ignore[no-untyped-def]
    """One request at a time and one waiting: a server that is easy to fill."""
    with model_server(CHAT_MODEL, "--max-batch-size", "1", "--max-queue", "1") as (url, process):
        yield url


def _hold_a_stream(url: str, started: threading.Event, release: threading.Event) -> None:
    with httpx.stream(
        "POST", url + "/v1/chat/completions", json=_chat_body("Write an essay about the ocean.", 1000, stream=True), timeout=120
    ) as stream:
        for line in stream.iter_lines():
            if line.startswith("data: ") and '"content":"' in line and '"content":""' not in line:
                started.set()
                release.wait(60)
                return  # leaving the block closes the connection mid-stream


def test_a_full_queue_answers_503_with_retry_after(narrow_server: str) -> None:
    started, release = threading.Event(), threading.Event()
    holder = threading.Thread(target=_hold_a_stream, args=(narrow_server, started, release))
    holder.start()
    try:
        assert started.wait(60)
        waiting = threading.Thread(target=lambda: httpx.post(narrow_server + "/v1/chat/completions", json=_chat_body("hi", 2), timeout=120))
        waiting.start()
        deadline = time.monotonic() + 10
        while metric(narrow_server, "switchboard:num_requests_waiting") < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        refused = httpx.post(narrow_server + "/v1/chat/completions", json=_chat_body("hi", 2))
        assert refused.status_code == 503
        assert int(refused.headers["Retry-After"]) >= 1
        assert refused.json()["error"]["code"] == "queue_full"
        assert metric(narrow_server, "switchboard:queue_rejections_total") >= 1
    finally:
        release.set()
        holder.join(60)
    waiting.join(60)


def test_a_disconnect_frees_its_batch_slot(narrow_server: str) -> None:
    generated_before = metric(narrow_server, "switchboard:generation_tokens_total")
    started, release = threading.Event(), threading.Event()
    holder = threading.Thread(target=_hold_a_stream, args=(narrow_server, started, release))
    holder.start()
    assert started.wait(60)
    assert metric(narrow_server, "switchboard:num_requests_running") == 1
    release.set()  # the client hangs up with ~990 of its 1,000 tokens still to go
    holder.join(10)
    response = httpx.post(narrow_server + "/v1/chat/completions", json=_chat_body("Say yes.", 3), timeout=300)
    assert response.status_code == 200
    # Counted in tokens, not seconds: had the abandoned stream kept the only batch slot, the
    # short request would have waited for all 1,000 of its tokens.
    generated = metric(narrow_server, "switchboard:generation_tokens_total") - generated_before
    assert generated < 500, f"the abandoned stream kept the only batch slot ({generated} tokens generated)"


def test_a_non_streaming_client_that_gives_up_frees_its_slot(narrow_server: str) -> None:
    generated_before = metric(narrow_server, "switchboard:generation_tokens_total")
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(narrow_server + "/v1/chat/completions", json=_chat_body("Write an essay about mountains.", 1000), timeout=2)
    response = httpx.post(narrow_server + "/v1/chat/completions", json=_chat_body("Say yes.", 3), timeout=300)
    assert response.status_code == 200
    generated = metric(narrow_server, "switchboard:generation_tokens_total") - generated_before
    assert generated < 500, f"the abandoned request kept the only batch slot ({generated} tokens generated)"


def test_metrics_use_the_documented_names(narrow_server: str) -> None:
    text = httpx.get(narrow_server + "/metrics").text
    for name in (
        "switchboard:num_requests_running",
        "switchboard:num_requests_waiting",
        "switchboard:time_to_first_token_seconds_bucket",
        "switchboard:e2e_request_latency_seconds_bucket",
        "switchboard:prompt_tokens_total",
        "switchboard:generation_tokens_total",
        "switchboard:batch_size_bucket",
        "switchboard:request_queue_time_seconds_bucket",
        "switchboard:max_batch_size",
        "switchboard:busy_seconds_total",
        "switchboard:start_time_seconds",
    ):
        assert name in text, name
    assert metric(narrow_server, "switchboard:max_batch_size") == 1


def test_health_reports_a_server_that_is_already_up(narrow_server: str) -> None:
    response = httpx.get(narrow_server + "/health")
    assert response.status_code == 200 and response.json()["status"] == "ready"
