"""The monthly spend limit in the gateway: 402 once reached, no overspending under
concurrent load (across two gateway processes on Redis), streams in flight finish, and
the free plan stops at its credit; keys' and routes' budgets bind the same way."""

from __future__ import annotations

import contextlib
import shutil
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from decimal import Decimal

import httpx
import pytest
from django.conf import settings
from django.utils import timezone

from billing import rating
from billing.models import BillingAccount, ModelPrice, Plan
from metering import ingest
from metering.models import UsageEvent
from routing.models import ExternalProvider, ModelRoute
from tenancy import services
from tests.conftest import Tenants
from tests.factories import issue_key, owner_context
from tests.gateway.conftest import Backend, set_limits
from tests.gateway.helpers import chat, provider_for, route_to, wait_for
from tests.helpers import session_api
from tests.metering.test_usage_pipeline import _record
from tests.servers import asgi_server, asgi_server_process, child_database_url, child_env, usage_ingester
from tests.service_processes import private_redis

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

PER_TOKEN = Decimal("0.001")  # $1,000 per million tokens, input and output


def _priced_route(tenants: Tenants, backend: Backend) -> None:
    ModelPrice.objects.create(
        model="bench-model",  # the model the route's provider serves: what is priced, whatever the route is called
        input_price_per_mtok=Decimal(1000),
        output_price_per_mtok=Decimal(1000),
        effective_from=timezone.now().replace(minute=0, second=0, microsecond=0) - timedelta(days=40),
    )
    for org in (tenants.org_a, tenants.org_b):
        route_to(org, "priced", [(provider_for(org, backend), 100)])


def _charge_of_one(gateway: str, tenants: Tenants) -> Decimal:
    """What one request costs, measured on the other tenant, which has no limit."""
    usage = chat(gateway, issue_key(tenants.org_b).plaintext, "priced", max_tokens=7).json()["usage"]
    return usage["total_tokens"] * PER_TOKEN


def test_concurrent_requests_from_two_gateways_cannot_overspend(gateway: str, tenants: Tenants, backends: list[Backend]) -> None:
    _priced_route(tenants, backends[0])
    one = _charge_of_one(gateway, tenants)
    set_limits(tenants.org_a, monthly_spend_cap=one * 10)  # a budget for exactly ten requests
    backends[0].control(latency_ms=300)  # all of them in flight together
    key = issue_key(tenants.org_a).plaintext

    def burst(urls: list[str]) -> list[httpx.Response]:
        with ThreadPoolExecutor(50) as pool:
            return list(pool.map(lambda i: chat(urls[i % len(urls)], key, "priced", max_tokens=7), range(50)))

    if settings.REDIS_URL:
        with asgi_server(child_env(DATABASE_URL=child_database_url())) as second:
            responses = burst([gateway, second])
            later = [chat(url, key, "priced", max_tokens=7) for url in (gateway, second) * 6]
    else:  # the embedded default runs one gateway process
        responses = burst([gateway])
        later = [chat(gateway, key, "priced", max_tokens=7) for _ in range(12)]
    served = [r for r in responses + later if r.status_code == 200]
    codes = Counter(r.status_code for r in responses + later)
    assert set(codes) == {200, 402}, codes
    assert 1 <= len(served) <= 10
    assert sum(r.json()["usage"]["total_tokens"] for r in served) * PER_TOKEN <= one * 10
    refused = next(r for r in responses if r.status_code == 402).json()["error"]
    assert refused["code"] == "spend_limit_reached" and refused["type"] == "insufficient_quota"
    assert "monthly spend cap of $" in refused["message"] and "platform staff can raise the cap" in refused["message"]
    # The other tenant is not limited by this one's cap.
    assert chat(gateway, issue_key(tenants.org_b).plaintext, "priced", max_tokens=7).status_code == 200


def test_a_stream_in_flight_finishes_and_the_next_request_is_refused(gateway: str, tenants: Tenants, backends: list[Backend]) -> None:
    _priced_route(tenants, backends[0])
    set_limits(tenants.org_a, monthly_spend_cap=Decimal("1.00"))
    key = issue_key(tenants.org_a).plaintext
    backends[0].control(chunk_delay_ms=800)  # five chunks: about four seconds of stream
    lines: list[str] = []

    def stream() -> None:
        body = {"model": "priced", "messages": [{"role": "user", "content": "Hello there"}], "stream": True, "max_tokens": 7}
        with httpx.stream(
            "POST", gateway + "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"}, timeout=30
        ) as response:
            assert response.status_code == 200
            lines.extend(line for line in response.iter_lines() if line)

    reader = threading.Thread(target=stream)
    reader.start()
    wait_for(lambda: lines, timeout=5)  # the stream has started
    set_limits(tenants.org_a, monthly_spend_cap=Decimal("0.00"))  # the cap is reached mid-stream
    refused = wait_for(lambda: (r := chat(gateway, key, "priced", max_tokens=7)).status_code == 402 and r, timeout=6, interval=0.3)
    assert refused.json()["error"]["code"] == "spend_limit_reached"
    assert reader.is_alive(), "the stream should still be running when the next request is refused"
    reader.join(timeout=15)
    assert lines[-1] == "data: [DONE]"


def test_the_free_plan_stops_at_its_credit(gateway: str, tenants: Tenants, backends: list[Backend]) -> None:
    route_to(tenants.org_a, "external", [(provider_for(tenants.org_a, backends[0]), 100)])
    BillingAccount.objects.create(organization=tenants.org_a, plan=Plan.FREE)
    key = issue_key(tenants.org_a).plaintext
    assert chat(gateway, key, "external").status_code == 200
    # This month's usage so far: $6 of provider cost, past the $5 free credit.
    ingest.write_batch(
        [
            _record(
                tenants.org_a.pk, "earlier", at=timezone.now() - timedelta(minutes=1), model="external", route="external", cost=Decimal(6)
            )
        ]
    )
    refused = wait_for(lambda: (r := chat(gateway, key, "external")).status_code == 402 and r, timeout=6, interval=0.3)
    assert "free plan credit of $5.00" in refused.json()["error"]["message"]
    # The other tenant, on the default plan, is untouched.
    route_to(tenants.org_b, "external", [(provider_for(tenants.org_b, backends[0]), 100)])
    assert chat(gateway, issue_key(tenants.org_b).plaintext, "external").status_code == 200


LEASE_S = 4


@pytest.mark.skipif(not settings.REDIS_URL, reason="one gateway process on the embedded default: its reservations die with it")
def test_a_gateway_killed_with_reservations_in_flight_frees_them_within_the_lease(
    gateway: str, tenants: Tenants, backends: list[Backend]
) -> None:
    """Gateway A holds the whole budget in reservations for slow requests and is SIGKILLed.
    Expected: gateway B refuses at first (the reservations stand), serves the same tenant
    again within the lease time of A's reservations (plus one snapshot refresh), and serves
    the other tenant throughout."""
    _priced_route(tenants, backends[0])
    one = _charge_of_one(gateway, tenants)
    set_limits(tenants.org_a, monthly_spend_cap=one * 10)
    key, other = issue_key(tenants.org_a).plaintext, issue_key(tenants.org_b).plaintext
    backends[0].control(latency_ms=20_000)  # A's requests stay in flight until it dies
    leased = child_env(DATABASE_URL=child_database_url(), SWITCHBOARD_SPEND_LEASE_SECONDS=str(LEASE_S))
    with asgi_server_process(leased) as (doomed, process):
        hung = ThreadPoolExecutor(20)
        for _ in range(20):
            hung.submit(lambda: _quietly(lambda: chat(doomed, key, "priced", max_tokens=7)))
        wait_for(lambda: _refused(doomed, key), timeout=20, interval=0.2)  # the budget is held
        backends[0].control(latency_ms=0)
        assert chat(gateway, key, "priced", max_tokens=7).status_code == 402  # B sees A's reservations
        process.kill()  # SIGKILL: no shutdown handler runs, nothing is settled
        process.wait()
        killed = time.monotonic()
    while chat(gateway, key, "priced", max_tokens=7).status_code == 402:
        assert chat(gateway, other, "priced", max_tokens=7).status_code == 200  # the other tenant never waits
        assert time.monotonic() - killed < LEASE_S + 10, "the dead gateway's reservations never freed"
        time.sleep(0.25)
    freed_after = time.monotonic() - killed
    print(f"reservations of the killed gateway freed {freed_after:.1f} s after it died (lease {LEASE_S} s)")
    assert freed_after <= LEASE_S + 3
    hung.shutdown(wait=False, cancel_futures=True)


def _refused(gateway: str, key: str) -> bool:
    """A request is refused 402; one admitted before the slow requests took the budget hangs
    on the slow backend, so it is given up after 2 s (its reservation ends with it)."""
    body = {"model": "priced", "messages": [{"role": "user", "content": "Hello there"}], "max_tokens": 7}
    try:
        response = httpx.post(gateway + "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"}, timeout=2)
    except httpx.TimeoutException:
        return False
    return response.status_code == 402


def _quietly(call: Callable[[], object]) -> None:
    try:
        call()
    except httpx.HTTPError:
        pass  # its gateway was killed


def test_a_keys_budget_holds_under_concurrency_across_gateways(gateway: str, tenants: Tenants, backends: list[Backend]) -> None:
    """LiteLLM's users report budgets bypassed under concurrency. Here: a key with a budget
    for ten requests, fifty sent at once over two gateway processes (one on the embedded
    default): never more than the budget is served, the refusals name the key's budget,
    and the organization's other key is not held back."""
    _priced_route(tenants, backends[0])
    one = _charge_of_one(gateway, tenants)
    capped = services.create_api_key(owner_context(tenants.org_a), name="capped", scopes=["inference"], monthly_budget=one * 10).plaintext
    other = issue_key(tenants.org_a, name="free-running").plaintext
    backends[0].control(latency_ms=300)
    urls = [gateway]
    with contextlib.ExitStack() as stack:
        if settings.REDIS_URL:
            urls.append(stack.enter_context(asgi_server(child_env(DATABASE_URL=child_database_url()))))
        with ThreadPoolExecutor(50) as pool:
            responses = list(pool.map(lambda i: chat(urls[i % len(urls)], capped, "priced", max_tokens=7), range(50)))
        later = [chat(url, capped, "priced", max_tokens=7) for url in urls * 4]
    served = [r for r in responses + later if r.status_code == 200]
    assert {r.status_code for r in responses + later} == {200, 402}
    assert 1 <= len(served) <= 10
    assert sum(r.json()["usage"]["total_tokens"] for r in served) * PER_TOKEN <= one * 10
    refused = next(r for r in responses if r.status_code == 402).json()["error"]
    assert refused["code"] == "key_budget_reached" and "This API key has reached its monthly budget" in refused["message"]
    assert chat(gateway, other, "priced", max_tokens=7).status_code == 200


def _set_route_budget(tenants: Tenants, name: str, budget: Decimal | None) -> ModelRoute:
    """As an admin would, through the management API."""
    route = ModelRoute.objects.for_org(tenants.org_a).get(name=name)
    provider = ExternalProvider.objects.for_org(tenants.org_a).get()
    body = {
        "name": name,
        "targets": [{"provider": provider.pk, "provider_model": "bench-model"}],
        "monthly_budget": None if budget is None else str(budget),
    }
    answer = session_api(tenants.admin_a, tenants.org_a).put(f"/api/v1/routes/{route.pk}/", body, format="json")
    assert answer.status_code == 200, answer.content
    return route


def test_a_routes_budget_refuses_that_route_only_until_an_admin_lifts_it(gateway: str, tenants: Tenants, backends: list[Backend]) -> None:
    _priced_route(tenants, backends[0])
    route_to(tenants.org_a, "also-priced", [(ExternalProvider.objects.for_org(tenants.org_a).get(), 100)])
    route = _set_route_budget(tenants, "priced", Decimal("0.05"))
    # This month so far: $0.10 through the route (100 tokens at $1,000 per million).
    at = max(timezone.now() - timedelta(minutes=1), rating.month_start(timezone.now()))
    ingest.write_batch(
        [
            _record(
                tenants.org_a.pk,
                "earlier",
                at=at,
                model="priced",
                route="priced",
                served_model="bench-model",
                input_tokens=100,
                output_tokens=0,
                cost=Decimal(0),
            )
        ]  # fmt: skip
    )
    key, other_tenant = issue_key(tenants.org_a).plaintext, issue_key(tenants.org_b).plaintext

    refused = chat(gateway, key, "priced", max_tokens=7)
    assert refused.status_code == 402, refused.text
    error = refused.json()["error"]
    assert error["code"] == "route_budget_reached" and error["type"] == "insufficient_quota"
    assert "The route priced has reached its monthly budget of $0.05" in error["message"]
    assert "an admin of the organization can raise or remove it in the console (Routing) or the management API" in error["message"]
    assert f"/api/v1/routes/{route.pk}/" in error["message"]
    assert backends[0].requests == 0  # nothing was sent upstream
    # Another route of the organization, and the other tenant's route of the same name, are served.
    assert chat(gateway, key, "also-priced", max_tokens=7).status_code == 200
    assert chat(gateway, other_tenant, "priced", max_tokens=7).status_code == 200
    # Lifted by an admin: served again once the gateway's snapshot refreshes.
    _set_route_budget(tenants, "priced", None)
    wait_for(lambda: chat(gateway, key, "priced", max_tokens=7).status_code == 200, timeout=6, interval=0.3)


@contextlib.contextmanager
def _shared_redis() -> Iterator[tuple[str, bool]]:
    """The stack's Redis; on the embedded default, a private redis-server (its usage
    events then need an ingester of their own). Yields the URL and whether it is private."""
    if settings.REDIS_URL:
        yield settings.REDIS_URL, False
        return
    if shutil.which("redis-server") is None:
        pytest.skip("no REDIS_URL and no redis-server binary: no Redis for two gateway processes to share")
    with private_redis() as server:
        yield server.url, True


def test_route_and_key_budgets_hold_for_concurrent_requests_over_two_gateway_processes(
    gateway: str, tenants: Tenants, backends: list[Backend]
) -> None:
    """Two gateway processes on one Redis, forty requests at once split across both and
    across two keys of one organization on a route with a budget for twenty requests; one
    key has a budget for ten. Every admitted request's most possible charge fitted under
    both budgets when it was admitted, so what is charged (the stored usage, rated as the
    invoice rates it) never exceeds either budget; the refused get 402 naming the budget
    that refused."""
    _priced_route(tenants, backends[0])
    route_to(tenants.org_a, "also-priced", [(ExternalProvider.objects.for_org(tenants.org_a).get(), 100)])
    one = _charge_of_one(gateway, tenants)
    cent = Decimal("0.01")
    route_budget, key_budget = (one * 20).quantize(cent), (one * 10).quantize(cent)  # exact: one is whole tenths of a cent
    assert route_budget == one * 20 and key_budget == one * 10
    _set_route_budget(tenants, "priced", route_budget)
    capped = services.create_api_key(owner_context(tenants.org_a), name="capped", scopes=["inference"], monthly_budget=key_budget)
    free = issue_key(tenants.org_a, name="free-running")
    keys = {capped.api_key.pk: capped.plaintext, free.api_key.pk: free.plaintext}
    backends[0].control(latency_ms=300)  # all of them in flight together
    with _shared_redis() as (redis_url, private), contextlib.ExitStack() as stack:
        env = child_env(DATABASE_URL=child_database_url(), REDIS_URL=redis_url)
        if private:
            stack.enter_context(usage_ingester(env))  # the session's ingester reads no private Redis
        urls = [stack.enter_context(asgi_server(env)), stack.enter_context(asgi_server(env))]
        jobs = [(urls[i % 2], list(keys)[(i // 2) % 2]) for i in range(40)]
        with ThreadPoolExecutor(40) as pool:
            responses = list(pool.map(lambda job: (job[1], chat(job[0], keys[job[1]], "priced", max_tokens=7)), jobs))
        backends[0].control(latency_ms=0)
        responses += [(key_id, chat(url, keys[key_id], "priced", max_tokens=7)) for url in urls for key_id in keys]
        # Only that route is spent: the organization's other route, and the other tenant, are served.
        assert chat(urls[0], free.plaintext, "also-priced", max_tokens=7).status_code == 200
        assert chat(urls[1], issue_key(tenants.org_b).plaintext, "priced", max_tokens=7).status_code == 200

        served = [(key_id, r) for key_id, r in responses if r.status_code == 200]
        ids = [r.headers["x-request-id"] for _, r in served]
        wait_for(lambda: UsageEvent.objects.for_org(tenants.org_a).filter(request_id__in=ids).count() == len(ids), timeout=30)

    codes = Counter(r.status_code for _, r in responses)
    assert set(codes) == {200, 402}, codes
    refusals = {key_id: Counter(r.json()["error"]["code"] for k, r in responses if k == key_id and r.status_code == 402) for key_id in keys}
    assert set(refusals[free.api_key.pk]) == {"route_budget_reached"}  # it has no budget of its own
    assert set(refusals[capped.api_key.pk]) <= {"route_budget_reached", "key_budget_reached"}
    message = next(r for k, r in responses if k == free.api_key.pk and r.status_code == 402).json()["error"]["message"]
    assert f"The route priced has reached its monthly budget of ${route_budget}" in message

    # What was charged, from the answers and from the stored usage as billing rates it.
    tokens = Counter({key_id: 0 for key_id in keys})
    for key_id, r in served:
        tokens[key_id] += r.json()["usage"]["total_tokens"]
    now = timezone.now()
    route_charged = rating.route_month_to_date(tenants.org_a, "priced", now)
    key_charged = rating.keys_month_to_date(tenants.org_a, [capped.api_key.pk], now)
    print(f"served {len(served)} of {len(responses)}: ${route_charged} on the route (budget ${route_budget}), ${key_charged} on the key")
    assert route_charged == sum(tokens.values()) * PER_TOKEN <= route_budget
    assert key_charged == tokens[capped.api_key.pk] * PER_TOKEN <= key_budget
    assert tokens[capped.api_key.pk] and tokens[free.api_key.pk]  # both keys were served some
