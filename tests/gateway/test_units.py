"""The gateway's decision logic on its own: strategies, circuit breakers, the in-process
limiter, the key/snapshot cache and the SSE relay."""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from routing.gateway.cache import DatabaseUnavailable, RefreshingCache
from routing.gateway.exchange import Exchange
from routing.gateway.health import CLOSED, HALF_OPEN, OPEN, HealthBook
from routing.gateway.limits import LimitScope, MemoryLimiter, format_duration
from routing.gateway.snapshot import Target
from routing.gateway.sse import SseRelay
from routing.policy import balanced_score, order_targets


def _target(name: str, *, weight: int = 100, position: int = 0, price: str = "1") -> Target:
    return Target(
        id=name,
        label=name,
        kind="provider",
        weight=weight,
        position=position,
        endpoints=(),
        input_price_per_mtok=Decimal(price),
        output_price_per_mtok=Decimal(price),
        regions=frozenset(),
    )


def test_weighted_split_follows_the_weights() -> None:
    targets = (_target("canary", weight=10), _target("stable", weight=90))
    rng = random.Random(7)
    firsts = Counter(order_targets("weighted", targets, lambda t: None, rng)[0].label for _ in range(10_000))
    assert 0.085 < firsts["canary"] / 10_000 < 0.115
    # The other target always follows as failover.
    assert {t.label for t in order_targets("weighted", targets, lambda t: None, rng)} == {"canary", "stable"}


def test_zero_weight_targets_only_serve_as_failover() -> None:
    targets = (_target("main", weight=100), _target("standby", weight=0, position=1))
    for _ in range(200):
        assert [t.label for t in order_targets("weighted", targets, lambda t: None)] == ["main", "standby"]


def test_lowest_cost_orders_by_total_token_price() -> None:
    targets = (_target("pricey", price="3"), _target("cheap", price="0.2", position=1), _target("middle", price="1", position=2))
    assert [t.label for t in order_targets("lowest_cost", targets, lambda t: None)] == ["cheap", "middle", "pricey"]


def test_lowest_latency_measures_unknown_targets_first_then_prefers_the_fastest() -> None:
    targets = (_target("slow"), _target("fast", position=1), _target("new", position=2))
    latency = {"slow": 80.0, "fast": 5.0, "new": None}
    assert [t.label for t in order_targets("lowest_latency", targets, lambda t: latency[t.label])] == ["new", "fast", "slow"]


def test_balanced_weighs_latency_against_price() -> None:
    fast_pricey, slow_cheap = _target("fast_pricey", price="5"), _target("slow_cheap", price="0.1", position=1)
    latency = {"fast_pricey": 10.0, "slow_cheap": 30.0}
    # 11 x 10.01 = 110 against 31 x 0.21 = 6.5: the cheap one wins despite being 3x slower.
    assert order_targets("balanced", (fast_pricey, slow_cheap), lambda t: latency[t.label])[0].label == "slow_cheap"
    assert balanced_score(10.0, Decimal("10")) == pytest.approx(11 * 10.01)


def test_ordered_keeps_positions() -> None:
    targets = (_target("second", position=1), _target("first", position=0))
    assert [t.label for t in order_targets("ordered", targets, lambda t: 1.0)] == ["first", "second"]


def test_breaker_opens_after_consecutive_failures_probes_once_and_closes_on_success() -> None:
    # Moments are given relative to when the breaker opened, so a stalled machine cannot
    # move the test past the cooldown.
    changes: list[str] = []
    book = HealthBook(on_change=lambda health: changes.append(health.state))
    health = book.pick(["e1"], time.monotonic(), cooldown_s=5.0)
    assert health is not None
    for _ in range(2):
        book.failed(health, threshold=3)
    book.succeeded(health)  # a success in between resets the count
    for _ in range(3):
        book.failed(health, threshold=3)
    assert health.state == OPEN
    assert book.pick(["e1"], health.opened_at + 4.9, cooldown_s=5.0) is None  # open: nothing goes through
    probe = book.pick(["e1"], health.opened_at + 5.0, cooldown_s=5.0)
    assert probe is health and health.state == HALF_OPEN
    assert book.pick(["e1"], health.opened_at + 5.1, cooldown_s=5.0) is None  # one probe at a time
    book.failed(health, threshold=3)  # a failed probe reopens at once
    assert health.state == OPEN
    assert book.pick(["e1"], health.opened_at + 4.9, cooldown_s=5.0) is None
    book.succeeded(book.pick(["e1"], health.opened_at + 5.0, cooldown_s=5.0))  # type: ignore[arg-type]
    assert health.state == CLOSED
    assert changes == [CLOSED, OPEN, HALF_OPEN, OPEN, HALF_OPEN, CLOSED]


def test_balancing_prefers_the_endpoint_with_fewer_outstanding_requests() -> None:
    book = HealthBook()
    book.get("busy").outstanding = 10
    picks = Counter(book.pick(["busy", "idle"], time.monotonic(), 1.0).key for _ in range(100))  # type: ignore[union-attr]
    assert picks == {"idle": 100}


def _run(coroutine):  # type: ignore[no-untyped-def]
    return asyncio.run(coroutine)


def test_memory_limiter_lets_exactly_n_through_and_refuses_the_next_with_headers() -> None:
    limiter = MemoryLimiter()
    scopes = [LimitScope("org:o", requests_per_minute=5, tokens_per_minute=None, concurrent=None)]

    async def burst() -> list[bool]:
        return [(await limiter.admit(f"r{i}", scopes, 10)).allowed for i in range(6)]

    assert _run(burst()) == [True] * 5 + [False]
    refused = _run(limiter.admit("r7", scopes, 10))
    headers = dict(refused.headers())
    assert refused.exceeded == "requests" and headers[b"x-ratelimit-remaining-requests"] == b"0"
    assert int(headers[b"retry-after"]) >= 1 and headers[b"x-ratelimit-limit-requests"] == b"5"


def test_memory_limiter_reserves_tokens_and_settles_the_difference() -> None:
    limiter = MemoryLimiter()
    scopes = [LimitScope("org:o", requests_per_minute=None, tokens_per_minute=1000, concurrent=2)]

    async def scenario() -> None:
        first = await limiter.admit("a", scopes, 600)
        assert first.allowed and first.tokens is not None and first.tokens.remaining == 400
        second = await limiter.admit("b", scopes, 600)
        assert not second.allowed and second.exceeded == "tokens"
        await limiter.settle("a", first, used_tokens=100)  # 500 of the reservation come back
        third = await limiter.admit("c", scopes, 600)
        assert third.allowed
        fourth = await limiter.admit("d", scopes, 10)
        assert fourth.allowed
        fifth = await limiter.admit("e", scopes, 1)
        assert not fifth.allowed and fifth.exceeded == "concurrency"  # c and d are in flight
        await limiter.settle("c", third, used_tokens=600)
        assert (await limiter.admit("f", scopes, 1)).allowed

    _run(scenario())


def test_a_refused_request_takes_nothing_from_the_other_scope() -> None:
    limiter = MemoryLimiter()
    key = LimitScope("key:k", requests_per_minute=1, tokens_per_minute=None, concurrent=None)
    org = LimitScope("org:o", requests_per_minute=3, tokens_per_minute=None, concurrent=None)

    async def scenario() -> list[bool]:
        results = [(await limiter.admit("a", [key, org], 1)).allowed]
        results += [(await limiter.admit(f"k{i}", [key, org], 1)).allowed for i in range(3)]  # key exhausted
        other_key = LimitScope("key:k2", requests_per_minute=10, tokens_per_minute=None, concurrent=None)
        results += [(await limiter.admit(f"o{i}", [other_key, org], 1)).allowed for i in range(3)]
        return results

    # The key's refusals did not spend the organization's allowance: two remain for key k2.
    assert _run(scenario()) == [True, False, False, False, True, True, False]


@pytest.mark.parametrize(("seconds", "text"), [(0.0123, "12ms"), (1.5, "1.5s"), (59, "59s"), (360, "6m0s"), (61.9, "1m1s")])
def test_reset_durations_read_like_openai(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


def test_the_cache_serves_stale_values_through_a_database_outage_and_refuses_unknowns() -> None:
    calls: list[str] = []
    database_up = True

    def load(key: str) -> str:
        calls.append(key)
        if not database_up:
            raise DatabaseUnavailable("connection refused")
        if key == "bad":
            raise KeyError(key)
        return key.upper()

    cache: RefreshingCache[str, str] = RefreshingCache(load, ttl=0.05, stale_for=1.0, negative_ttl=0.05, refusals=(KeyError,))

    async def scenario() -> None:
        nonlocal database_up
        assert await cache.get("good") == "GOOD"
        with pytest.raises(KeyError):
            await cache.get("bad")
        await asyncio.sleep(0.06)
        database_up = False
        assert await cache.get("good") == "GOOD"  # stale, but the key keeps working
        with pytest.raises(DatabaseUnavailable):
            await cache.get("never-seen")
        await asyncio.sleep(1.0)
        with pytest.raises(DatabaseUnavailable):
            await cache.get("good")  # past the stale bound
        database_up = True
        assert await cache.get("good") == "GOOD"  # recovers by itself

    asyncio.run(scenario())


def test_concurrent_misses_load_once() -> None:
    loads = 0

    def load(key: str) -> str:
        nonlocal loads
        loads += 1
        time.sleep(0.05)
        return key

    cache: RefreshingCache[str, str] = RefreshingCache(load, ttl=10, stale_for=10, negative_ttl=1)

    async def scenario() -> list[str]:
        return await asyncio.gather(*(cache.get("k") for _ in range(20)))

    assert asyncio.run(scenario()) == ["k"] * 20
    assert loads == 1


def _exchange() -> Exchange:
    return Exchange(request_id="req_x", endpoint="chat/completions", started=time.perf_counter(), arrived_at=datetime.now(UTC))


def test_the_relay_removes_what_the_gateway_asked_for_and_keeps_the_rest_byte_for_byte() -> None:
    exchange = _exchange()
    relay = SseRelay(exchange, inject_usage=True)
    upstream = (
        b'data: {"id":"c","choices":[{"index":0,"delta":{"content":"Hi"}}],"usage":null}\n\n'
        b'data: {"id":"c","choices":[{"index":0,"delta":{"content":" there"}}],"usage":null}\n\n'
        b'data: {"id":"c","choices":[],"usage":{"prompt_tokens":12,"completion_tokens":2,"total_tokens":14}}\n\n'
        b"data: [DONE]\n\n"
    )
    # Arbitrary chunk boundaries, as TCP delivers them.
    out = b"".join(relay.feed(upstream[i : i + 7]) for i in range(0, len(upstream), 7)) + relay.flush()
    assert out == (
        b'data: {"id":"c","choices":[{"index":0,"delta":{"content":"Hi"}}]}\n\n'
        b'data: {"id":"c","choices":[{"index":0,"delta":{"content":" there"}}]}\n\n'
        b"data: [DONE]\n\n"
    )
    assert (exchange.input_tokens, exchange.output_tokens) == (12, 2)
    assert exchange.ttft_ms is not None


def test_the_relay_passes_usage_through_when_the_client_asked_for_it() -> None:
    exchange = _exchange()
    relay = SseRelay(exchange, inject_usage=False)
    upstream = b'data: {"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":4}}\n\ndata: [DONE]\n\n'
    assert relay.feed(upstream) + relay.flush() == upstream
    assert (exchange.input_tokens, exchange.output_tokens) == (3, 4)


def test_endpoints_unused_for_an_hour_are_forgotten() -> None:
    forgotten: list[str] = []
    book = HealthBook(on_forget=forgotten.append)
    now = time.monotonic()
    book.pick(["old"], now, 1.0)
    book.pick(["busy"], now, 1.0)
    book.get("busy").outstanding = 1
    book.pick(["recent"], now + 3000, 1.0)
    book.prune(now + 3700)
    assert forgotten == ["old"] and {h.key for h in book.all()} == {"busy", "recent"}


def test_the_relay_understands_crlf_events_a_last_event_without_blank_line_and_bad_figures() -> None:
    exchange = _exchange()
    relay = SseRelay(exchange, inject_usage=True)
    upstream = (
        b'event: message\r\ndata:{"choices":[{"delta":{"content":"Hi"}}],"usage":null}\r\n\r\n'
        b": a comment\r\n\r\n"
        b'data: {"choices":[],"usage":{"prompt_tokens":4,"completion_tokens":1}}'
    )
    out = relay.feed(upstream) + relay.flush()
    assert out == b'event: message\r\ndata:{"choices":[{"delta":{"content":"Hi"}}]}\r\n\r\n: a comment\r\n\r\n'
    assert (exchange.input_tokens, exchange.output_tokens, exchange.usage_reported) == (4, 1, True)

    odd = _exchange()
    relay = SseRelay(odd, inject_usage=False)
    weird = b'data: {"choices":[],"usage":{"prompt_tokens":-1,"completion_tokens":"many"}}\n\ndata: {not json "usage": 1}\n\n'
    assert relay.feed(weird) == weird  # passed through untouched, nothing counted
    assert (odd.input_tokens, odd.output_tokens, odd.usage_reported) == (0, 0, False)


def test_the_http_pool_skips_interim_answers_and_reads_bodies_ended_by_close() -> None:
    from routing.gateway.pool import Http1Pool

    answers = [
        b"HTTP/1.1 103 Early Hints\r\nlink: </x>\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 5\r\nx-n: 1\r\n\r\nfirst",
        b"HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\nsecond",
        b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nthird, until the server hangs up",
    ]

    async def scenario() -> list[tuple[int, bytes, bytes | None]]:
        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            for answer in answers:
                await reader.readuntil(b"\r\n\r\n")
                await reader.readexactly(2)
                writer.write(answer)
                await writer.drain()
            writer.close()

        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        pool = Http1Pool()
        results = []
        for _ in answers:
            response = await pool.send(f"http://127.0.0.1:{port}/v1/x", b"{}", [])
            results.append((response.status, await response.read(), response.header(b"x-n")))
        server.close()
        return results

    assert asyncio.run(scenario()) == [(200, b"first", b"1"), (200, b"second", None), (200, b"third, until the server hangs up", None)]
