"""Server-sent events through the gateway: exact framing, usage counted without changing
what the client sees, clear errors when a stream is cut, and upstream cancellation when
the client goes away."""

from __future__ import annotations

import re
import socket

import httpx
import openai
import pytest

from metering.models import UsageEvent
from tests.conftest import Tenants
from tests.factories import issue_key
from tests.gateway.conftest import Backend
from tests.gateway.helpers import client, provider_for, route_to, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

BODY = {"model": "streamer", "messages": [{"role": "user", "content": "Tell me something"}], "stream": True}


def _normalise(stream: bytes) -> bytes:
    return re.sub(rb'"created":\d+', b'"created":0', stream).replace(b'"model":"streamer"', b'"model":"bench-model"')


def test_events_pass_through_byte_for_byte(gateway: str, tenants: Tenants, backends: list[Backend]) -> None:
    route_to(tenants.org_a, "streamer", [(provider_for(tenants.org_a, backends[0]), 100)])
    key = issue_key(tenants.org_a).plaintext
    direct = httpx.post(backends[0].url + "/v1/chat/completions", json={**BODY, "model": "bench-model"}).content
    through = httpx.post(gateway + "/v1/chat/completions", json=BODY, headers={"Authorization": f"Bearer {key}"})
    assert through.headers["content-type"] == "text/event-stream"
    # The gateway asked upstream for usage; the client, which did not, sees exactly the
    # stream it would have got without the gateway.
    assert _normalise(through.content) == _normalise(direct)
    assert b"usage" not in through.content

    event = wait_for(lambda: UsageEvent.objects.for_org(tenants.org_a).first())
    assert (event.output_tokens, event.streamed, event.status) == (5, True, 200)
    assert event.ttft_ms is not None and event.ttft_ms <= event.latency_ms

    asked = httpx.post(
        gateway + "/v1/chat/completions",
        json={**BODY, "stream_options": {"include_usage": True}},
        headers={"Authorization": f"Bearer {key}"},
    ).content
    direct_asked = httpx.post(
        backends[0].url + "/v1/chat/completions", json={**BODY, "model": "bench-model", "stream_options": {"include_usage": True}}
    ).content
    assert _normalise(asked) == _normalise(direct_asked)


def test_a_stream_cut_midway_ends_with_a_clear_error_event(gateway: str, tenants: Tenants, backends: list[Backend]) -> None:
    route_to(tenants.org_a, "streamer", [(provider_for(tenants.org_a, backends[0]), 100)])
    key = issue_key(tenants.org_a).plaintext
    backends[0].control(break_stream_after=2, chunk_delay_ms=20)
    raw = httpx.post(gateway + "/v1/chat/completions", json=BODY, headers={"Authorization": f"Bearer {key}"}).content
    events = [e for e in raw.split(b"\n\n") if e]
    assert len(events) == 3 and b'"error"' in events[-1] and b"upstream_stream_interrupted" in events[-1]
    assert b"[DONE]" not in raw

    with pytest.raises(openai.APIError, match="mid-stream"):
        for _ in client(gateway, key).chat.completions.create(model="streamer", messages=[{"role": "user", "content": "x"}], stream=True):
            pass
    event = wait_for(lambda: UsageEvent.objects.for_org(tenants.org_a).filter(status=502).first())
    assert event.error_code == "upstream_stream_interrupted" and event.output_tokens == 2


def test_a_client_disconnect_cancels_the_upstream_request(gateway: str, tenants: Tenants, backends: list[Backend]) -> None:
    route_to(tenants.org_a, "streamer", [(provider_for(tenants.org_a, backends[0]), 100)])
    key = issue_key(tenants.org_a).plaintext
    # Five chunks, 50 s if read to the end. The backend counts a disconnect only for a
    # stream cancelled before its end, so the count alone shows the cancel went through.
    backends[0].control(chunk_delay_ms=10_000)
    host, port = gateway.removeprefix("http://").split(":")
    body = httpx.Request("POST", "/", json=BODY).content
    request = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(request)
        received = b""
        while b"data: " not in received:  # until the first chunk arrived
            received += sock.recv(65536)
    wait_for(lambda: backends[0].stats()["disconnects"] == 1, timeout=30.0, interval=0.05)
    event = wait_for(lambda: UsageEvent.objects.for_org(tenants.org_a).first())
    assert event.status == 499 and event.error_code == "client_disconnected"
