"""Requests per minute, tokens per minute and concurrency, under concurrent load; global
across gateway processes when they share Redis."""

from __future__ import annotations

from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from django.conf import settings

from tests.conftest import Tenants
from tests.factories import issue_key
from tests.gateway.conftest import Backend, set_limits
from tests.gateway.helpers import chat, provider_for, route_to
from tests.servers import asgi_server, child_database_url, child_env

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def _burst(urls: list[str], key: str, count: int, **extra: object) -> list[httpx.Response]:
    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(lambda i: chat(urls[i % len(urls)], key, "limited", **extra), range(count)))


def test_n_plus_one_concurrent_requests_against_a_limit_of_n_give_exactly_one_429(
    gateway: str, tenants: Tenants, backends: list[Backend]
) -> None:
    route_to(tenants.org_a, "limited", [(provider_for(tenants.org_a, backends[0]), 100)])
    set_limits(tenants.org_a, requests_per_minute=12)
    responses = _burst([gateway], issue_key(tenants.org_a).plaintext, 13)
    assert Counter(r.status_code for r in responses) == {200: 12, 429: 1}
    refused = next(r for r in responses if r.status_code == 429)
    assert refused.json()["error"]["code"] == "rate_limit_requests"
    assert int(refused.headers["retry-after"]) >= 1
    assert refused.headers["x-ratelimit-limit-requests"] == "12" and refused.headers["x-ratelimit-remaining-requests"] == "0"
    assert refused.headers["x-ratelimit-reset-requests"].endswith("s")
    assert backends[0].requests == 12


@pytest.mark.skipif(
    not settings.REDIS_URL, reason="the embedded default runs one gateway process with in-process limits; shared limits need REDIS_URL"
)
def test_the_limit_is_global_across_two_gateway_processes(
    gateway: str, tenants: Tenants, backends: list[Backend], django_db_blocker
) -> None:  # type: ignore[no-untyped-def]
    route_to(tenants.org_a, "limited", [(provider_for(tenants.org_a, backends[0]), 100)])
    set_limits(tenants.org_a, requests_per_minute=20)
    with asgi_server(child_env(DATABASE_URL=child_database_url())) as second:
        responses = _burst([gateway, second], issue_key(tenants.org_a).plaintext, 21)
    assert Counter(r.status_code for r in responses) == {200: 20, 429: 1}
    assert backends[0].requests == 20


def test_per_key_limits_leave_other_keys_their_share(gateway: str, tenants: Tenants, backends: list[Backend]) -> None:
    route_to(tenants.org_a, "limited", [(provider_for(tenants.org_a, backends[0]), 100)])
    set_limits(tenants.org_a, requests_per_minute=100, key_requests_per_minute=3)
    first, second = issue_key(tenants.org_a).plaintext, issue_key(tenants.org_a, name="other").plaintext
    assert Counter(r.status_code for r in _burst([gateway], first, 4)) == {200: 3, 429: 1}
    refused = chat(gateway, first, "limited")
    assert "this API key" in refused.json()["error"]["message"]
    assert chat(gateway, second, "limited").status_code == 200


def test_tokens_per_minute_reserve_max_tokens_and_refund_the_unused(gateway: str, tenants: Tenants, backends: list[Backend]) -> None:
    route_to(tenants.org_a, "limited", [(provider_for(tenants.org_a, backends[0]), 100)])
    set_limits(tenants.org_a, tokens_per_minute=1000)
    key = issue_key(tenants.org_a).plaintext
    # Each reserves ~4 prompt tokens + 400; uses 3 + 7, so the reservation comes back.
    for _ in range(5):
        response = chat(gateway, key, "limited", max_tokens=400)
        assert response.status_code == 200
    assert int(response.headers["x-ratelimit-remaining-tokens"]) < 600
    backends[0].control(latency_ms=300)  # keep all three in flight together
    too_big = _burst([gateway], key, 3, max_tokens=450)
    codes = Counter(r.status_code for r in too_big)
    assert codes == {200: 2, 429: 1}  # about 950 tokens left: two reservations of 454 fit
    assert next(r for r in too_big if r.status_code == 429).json()["error"]["code"] == "rate_limit_tokens"


def test_concurrent_requests_are_capped(gateway: str, tenants: Tenants, backends: list[Backend]) -> None:
    route_to(tenants.org_a, "limited", [(provider_for(tenants.org_a, backends[0]), 100)])
    backends[0].control(latency_ms=400)
    set_limits(tenants.org_a, concurrent_requests=3)
    responses = _burst([gateway], issue_key(tenants.org_a).plaintext, 5)
    assert Counter(r.status_code for r in responses) == {200: 3, 429: 2}
    assert {r.json()["error"]["code"] for r in responses if r.status_code == 429} == {"rate_limit_concurrency"}
