"""Metrics per route and target, one structured log line per request, and neither ever
holds prompt or completion text."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import httpx
import pytest
from django.conf import settings
from django.test import override_settings

from modelserver.processes import free_port, stop
from routing.gateway.metrics_endpoint import metrics_endpoint
from tests.conftest import Tenants
from tests.factories import issue_key
from tests.gateway.conftest import Backend
from tests.gateway.helpers import chat, provider_for, route_to
from tests.servers import ROOT, child_database_url, child_env, wait_until_up
from tests.serving.metrics_text import metric_in

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

PROMPT = "my-secret-prompt-4242"

METRICS_AUTH = {"authorization": f"Bearer {settings.GATEWAY_METRICS_TOKEN}"}  # the children read the same data dir


def test_metrics_and_access_log_carry_figures_not_text(tenants: Tenants, backends: list[Backend], tmp_path) -> None:  # type: ignore[no-untyped-def]
    provider = provider_for(tenants.org_a, backends[0])
    route_to(tenants.org_a, "chat-default", [(provider, 100)])
    key = issue_key(tenants.org_a).plaintext
    log_path = tmp_path / "gateway.log"
    port = free_port()
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "config.asgi:application", "--port", str(port), "--no-access-log"],
            cwd=ROOT,
            env=child_env(DATABASE_URL=child_database_url()),
            stderr=log_file,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            wait_until_up(url + "/accounts/login/", process)
            ok = httpx.post(
                url + "/v1/chat/completions",
                json={"model": "chat-default", "messages": [{"role": "user", "content": PROMPT}]},
                headers={"Authorization": f"Bearer {key}"},
            )
            streamed = httpx.post(
                url + "/v1/chat/completions",
                json={"model": "chat-default", "stream": True, "messages": [{"role": "user", "content": PROMPT}]},
                headers={"Authorization": f"Bearer {key}"},
            )
            missing = chat(url, key, "nope")
            backends[0].control(fail_status=500)
            failed = chat(url, key, "chat-default")
            metrics = httpx.get(url + "/metrics", headers=METRICS_AUTH).text
        finally:
            stop(process)
    assert (ok.status_code, streamed.status_code, missing.status_code, failed.status_code) == (200, 200, 404, 503)

    labels = {"organization": tenants.org_a.pk, "route": "chat-default", "target": "provider:alpha-us-east/bench-model"}
    assert metric_in(metrics, "switchboard_gateway_requests_total", **labels, status="200") == 2
    assert metric_in(metrics, "switchboard_gateway_requests_total", organization=tenants.org_a.pk, route="", status="404") == 1
    assert metric_in(metrics, "switchboard_gateway_requests_total", **labels, status="503") == 1
    assert metric_in(metrics, "switchboard_gateway_tokens_total", **labels, direction="output") == 12  # 7 + 5 streamed
    assert metric_in(metrics, "switchboard_gateway_latency_seconds_count", **labels) == 3
    assert metric_in(metrics, "switchboard_gateway_ttft_seconds_count", **labels) == 1
    assert metric_in(metrics, "switchboard_gateway_cost_usd_total", **labels) > 0
    assert metric_in(metrics, "switchboard_gateway_upstream_errors_total", **labels, kind="status_500") == 1
    assert f'switchboard_gateway_circuit_state{{endpoint="provider:{provider.pk}:bench-model"}}' in metrics
    assert PROMPT not in metrics and "Hello from the benchmark" not in metrics

    lines = [json.loads(line) for line in log_path.read_text().splitlines() if line.startswith('{"request_id"')]
    assert [line["request_id"] for line in lines] == [r.headers["x-request-id"] for r in (ok, streamed, missing, failed)]
    assert [line["status"] for line in lines] == [200, 200, 404, 503]
    assert lines[1]["stream"] is True and lines[1]["output_tokens"] == 5 and lines[1]["ttft_ms"] is not None
    assert PROMPT not in log_path.read_text() and "Hello from the benchmark" not in log_path.read_text()


def _scrape(client: str, headers: list[tuple[bytes, bytes]]) -> int:
    sent: list[dict[str, object]] = []

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": b""}

    asyncio.run(metrics_endpoint({"type": "http", "path": "/metrics", "headers": headers, "client": (client, 5000)}, receive, send))  # type: ignore[arg-type]
    return int(sent[0]["status"])  # type: ignore[call-overload]


@pytest.mark.django_db
def test_metrics_answer_the_operators_token_only_whatever_the_peer() -> None:
    with override_settings(GATEWAY_METRICS_TOKEN="scrape-me"):
        assert _scrape("127.0.0.1", []) == 401  # loopback is no credential: a local proxy makes everyone loopback
        assert _scrape("10.1.2.3", []) == 401
        assert _scrape("10.1.2.3", [(b"authorization", b"Bearer wrong")]) == 401
        assert _scrape("10.1.2.3", [(b"authorization", b"Bearer scrape-me")]) == 200
        assert _scrape("127.0.0.1", [(b"authorization", b"Bearer scrape-me")]) == 200
