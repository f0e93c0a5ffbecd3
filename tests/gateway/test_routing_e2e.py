"""Routing policies end to end: real gateway, real backend processes."""

from __future__ import annotations

import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from django.conf import settings

from deployments.models import Cluster, Deployment, Replica
from metering.models import UsageEvent
from modelserver.processes import stop
from tests.conftest import Tenants
from tests.factories import issue_key
from tests.gateway.conftest import Backend, set_limits, start_backend
from tests.gateway.helpers import chat, deployment_with_replicas, provider_for, route_to, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

METRICS_AUTH = {"authorization": f"Bearer {settings.GATEWAY_METRICS_TOKEN}"}


def _served_by(responses: list[httpx.Response]) -> Counter[str]:
    return Counter(r.headers["x-switchboard-target"].split(":", 1)[1].split("-", 1)[0] for r in responses)


def _many(gateway: str, key: str, model: str, count: int, workers: int = 8) -> list[httpx.Response]:
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(lambda _: chat(gateway, key, model), range(count)))


def test_weighted_split_lands_within_tolerance(gateway: str, tenants: Tenants, backends: list[Backend]) -> None:
    alpha, beta = provider_for(tenants.org_a, backends[0]), provider_for(tenants.org_a, backends[1])
    route_to(tenants.org_a, "canary", [(alpha, 80), (beta, 20)])
    set_limits(tenants.org_a, requests_per_minute=1_000_000, tokens_per_minute=1_000_000_000, concurrent_requests=1_000)
    responses = _many(gateway, issue_key(tenants.org_a).plaintext, "canary", 400)
    assert all(r.status_code == 200 for r in responses)
    share = _served_by(responses)["alpha"] / 400
    assert 0.72 <= share <= 0.88, share  # 80% +- 8 points (about 4 standard deviations)
    assert backends[0].requests + backends[1].requests == 400


def test_lowest_cost_picks_the_cheapest_target(gateway: str, tenants: Tenants, backends: list[Backend]) -> None:
    pricey = provider_for(tenants.org_a, backends[0], input_price="2", output_price="6")
    cheap = provider_for(tenants.org_a, backends[1], input_price="0.1", output_price="0.3")
    route_to(tenants.org_a, "thrifty", [(pricey, 100), (cheap, 100)], strategy="lowest_cost")
    responses = _many(gateway, issue_key(tenants.org_a).plaintext, "thrifty", 30)
    assert _served_by(responses) == {"beta": 30}
    assert responses[0].headers["x-switchboard-input-price-per-mtok"] == "0.100000"


def test_lowest_latency_converges_on_the_faster_target(gateway: str, tenants: Tenants, backends: list[Backend]) -> None:
    backends[0].control(latency_ms=60)
    slow, fast = provider_for(tenants.org_a, backends[0]), provider_for(tenants.org_a, backends[1])
    route_to(tenants.org_a, "snappy", [(slow, 100), (fast, 100)], strategy="lowest_latency")
    key = issue_key(tenants.org_a).plaintext
    responses = [chat(gateway, key, "snappy") for _ in range(30)]
    counts = _served_by(responses)
    # Each target is measured once, then the fast one takes the traffic.
    assert counts["alpha"] <= 2 and counts["beta"] >= 28, counts


def test_region_allow_list_is_never_broken_even_when_its_region_is_down(gateway: str, tenants: Tenants, backends: list[Backend]) -> None:
    us = provider_for(tenants.org_a, backends[0], region="us-east")
    eu = provider_for(tenants.org_a, backends[1], region="eu-west")
    route_to(tenants.org_a, "eu-only", [(us, 90), (eu, 10)], allowed_regions=("eu-west",))
    key = issue_key(tenants.org_a).plaintext
    responses = _many(gateway, key, "eu-only", 20)
    assert {r.headers["x-switchboard-region"] for r in responses} == {"eu-west"}

    backends[1].control(fail_status=503)  # the whole allowed region fails
    refused = chat(gateway, key, "eu-only")
    assert refused.status_code == 503
    assert "eu-west" in refused.json()["error"]["message"]
    assert backends[0].requests == 0


def test_fallback_chain_serves_when_every_target_fails(gateway: str, tenants: Tenants, backends: list[Backend]) -> None:
    backends[0].control(fail_status=500)
    route_to(tenants.org_a, "backup", [(provider_for(tenants.org_a, backends[1]), 100)])
    route_to(tenants.org_a, "primary", [(provider_for(tenants.org_a, backends[0]), 100)], fallbacks=("backup",))
    response = chat(gateway, issue_key(tenants.org_a).plaintext, "primary")
    assert response.status_code == 200
    assert response.headers["x-switchboard-route"] == "backup" and response.headers["x-switchboard-attempts"] == "2"
    assert backends[0].requests == 1


def test_breaker_opens_stops_traffic_and_recovers_through_a_probe(gateway: str, tenants: Tenants, backends: list[Backend]) -> None:
    flaky, steady = provider_for(tenants.org_a, backends[0]), provider_for(tenants.org_a, backends[1])
    route_to(
        tenants.org_a,
        "guarded",
        [(flaky, 100), (steady, 100)],
        strategy="ordered",
        breaker_failures=2,
        breaker_cooldown_s=1.0,
        max_attempts=2,
    )
    key = issue_key(tenants.org_a).plaintext
    backends[0].control(fail_status=502)
    responses = [chat(gateway, key, "guarded") for _ in range(8)]
    assert all(r.status_code == 200 for r in responses)  # retried on the steady target
    assert backends[0].requests == 2  # after two failures the breaker keeps traffic away
    assert [r.headers["x-switchboard-attempts"] for r in responses[:3]] == ["2", "2", "1"]
    metrics = httpx.get(gateway + "/metrics", headers=METRICS_AUTH).text
    assert f'switchboard_gateway_circuit_state{{endpoint="provider:{flaky.pk}:bench-model"}} 2.0' in metrics

    backends[0].control(fail_status=0)
    time.sleep(1.1)
    probe = chat(gateway, key, "guarded")
    assert probe.headers["x-switchboard-target"].startswith("provider:alpha")  # the probe went through and closed it
    assert chat(gateway, key, "guarded").headers["x-switchboard-target"].startswith("provider:alpha")
    assert (
        f'switchboard_gateway_circuit_state{{endpoint="provider:{flaky.pk}:bench-model"}} 0.0'
        in httpx.get(gateway + "/metrics", headers=METRICS_AUTH).text
    )


def test_killing_a_replica_and_then_a_region_under_load_loses_no_request(gateway: str, tenants: Tenants) -> None:
    # The load is as fast as the machine: set a quota it cannot reach on any machine, so
    # that this test measures failover and not the default requests-per-minute limit.
    requests_per_minute = 1_000_000
    east_1, east_2, west = start_backend("east-1"), start_backend("east-2"), start_backend("west")
    try:
        deployment_with_replicas(
            tenants.org_a, "chat", [(east_1.url, "local-us-east"), (east_2.url, "local-us-east"), (west.url, "local-eu-west")]
        )
        set_limits(tenants.org_a, requests_per_minute=requests_per_minute, tokens_per_minute=1_000_000_000, concurrent_requests=1_000)
        key = issue_key(tenants.org_a).plaintext
        results: list[httpx.Response] = []
        done = threading.Event()

        def load() -> None:
            with httpx.Client(timeout=30) as http:
                while not done.is_set():
                    results.append(
                        http.post(
                            gateway + "/v1/chat/completions",
                            json={"model": "chat", "messages": [{"role": "user", "content": "x"}]},
                            headers={"Authorization": f"Bearer {key}"},
                        )
                    )

        workers = [threading.Thread(target=load) for _ in range(6)]
        for worker in workers:
            worker.start()
        # Counted in answers, not seconds; the timeouts only stop a hung test.
        wait_for(lambda: len(results) > 100, timeout=180)
        stop(east_1.process)  # one replica dies
        wait_for(lambda: len(results) > 250, timeout=180)
        stop(east_2.process)  # then the rest of the region
        # stop() returns once the process has exited; its graceful shutdown may have
        # served many more requests meanwhile, so count from the moment it is gone.
        region_down_at = len(results)
        wait_for(lambda: len(results) > region_down_at + 150, timeout=180)
        done.set()
        for worker in workers:
            worker.join()
    finally:
        for backend in (east_1, east_2, west):
            stop(backend.process)
    lost = Counter(r.status_code for r in results if r.status_code not in (200, 429))
    assert not lost, lost
    # A 429 could only come from the limit set above, never from a replica or region going away.
    for refused in (r for r in results if r.status_code == 429):
        assert refused.json()["error"]["code"] == "rate_limit_requests", refused.text
        assert refused.headers["x-ratelimit-limit-requests"] == str(requests_per_minute)
    # Skip one answer per worker: it may have been recorded just after the exit.
    after_region_down = results[region_down_at + len(workers) :]
    regions = Counter(r.headers["x-switchboard-region"] for r in after_region_down)
    assert regions == {"eu-west": len(after_region_down)}, regions


def test_scale_from_zero_wakes_the_deployment_and_waits_for_its_replica(gateway: str, tenants: Tenants, backends: list[Backend]) -> None:
    deployment = deployment_with_replicas(tenants.org_a, "sleepy", [], min_replicas=0)
    key = issue_key(tenants.org_a).plaintext

    def control_plane() -> None:
        # Stands in for the reconciler (tested on its own): sees the wake-up mark, then
        # after a cold start reports a READY replica.
        woken = wait_for(lambda: Deployment.objects.for_org(tenants.org_a).get(pk=deployment.pk).wake_requested_at, timeout=20)
        assert woken
        time.sleep(1.0)
        Replica.objects.create(
            organization=tenants.org_a,
            deployment=deployment,
            revision=deployment.current_revision,
            cluster=Cluster.objects.get(name="local-us-east"),
            state=Replica.State.READY,
            endpoint=backends[2].url,
        )

    with ThreadPoolExecutor(1) as pool:
        waker = pool.submit(control_plane)
        started = time.monotonic()
        response = chat(gateway, key, "sleepy")
        waker.result()
    assert response.status_code == 200, response.text
    assert time.monotonic() - started >= 1.0
    assert backends[2].requests == 1
    event = wait_for(lambda: UsageEvent.objects.for_org(tenants.org_a).first())
    assert event.latency_ms >= 1000  # the cold start is part of what the caller waited
