"""The gateway in-process: the real Gateway with its collaborators passed in, a scripted
upstream pool and fixed organization snapshots, driven through ASGI by httpx. No server,
no database: what these check is the gateway's own logic (failover, stream relay, usage,
limits, spend, tenant scoping of routes)."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import httpx
import orjson
import pytest

from metering.records import UsageRecord
from routing.gateway import admission, upstream
from routing.gateway.access_log import AccessLog
from routing.gateway.accounting import UsageAccounting
from routing.gateway.app import Gateway
from routing.gateway.auth import Caller
from routing.gateway.cache import RefreshingCache
from routing.gateway.cold_start import ColdStart
from routing.gateway.errors import GatewayError
from routing.gateway.exchange import header_value
from routing.gateway.health import HealthBook
from routing.gateway.limits import MemoryLimiter
from routing.gateway.pool import UpstreamError, UpstreamResponse
from routing.gateway.snapshot import Endpoint, Limits, OrgSnapshot, Route, Target
from routing.gateway.spend import Cap, MemorySpendLedger, SpendLedger, SpendPolicy
from routing.gateway.upstream import UpstreamExchange

KEYS = {
    b"Bearer sbk_acme": Caller("org_acme", "key_acme", True, None),
    b"Bearer sbk_globex": Caller("org_globex", "key_globex", True, None),
    b"Bearer sbk_chat_only": Caller("org_acme", "key_chat_only", True, None, frozenset({"chat"})),
}
CHAT = {"model": "chat", "messages": [{"role": "user", "content": "Hello"}]}


class ScriptedResponse(UpstreamResponse):
    def __init__(self, status: int, chunks: list[bytes], *, break_after: int | None = None) -> None:
        self.status = status
        self.headers = [(b"content-type", b"application/json")]
        self._chunks = chunks
        self._break_after = break_after

    async def chunks(self) -> AsyncIterator[bytes]:  # type: ignore[override]
        for index, chunk in enumerate(self._chunks):
            if self._break_after is not None and index >= self._break_after:
                raise UpstreamError("connection reset by peer", before_response=False)
            yield chunk

    def close(self) -> None:
        pass


class ScriptedPool:
    """Answers each upstream origin from its script, in order; records what was sent."""

    def __init__(self, scripts: dict[str, list[ScriptedResponse | Exception]]) -> None:
        self.scripts = scripts
        self.sent: list[tuple[str, dict[str, Any]]] = []

    async def send(self, url: str, body: bytes, headers: list[tuple[bytes, bytes]], *, tenant_supplied: bool = False) -> UpstreamResponse:
        self.sent.append((url, orjson.loads(body)))
        answer = self.scripts[url.split("/v1/")[0]].pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    async def aclose(self) -> None:
        pass


def _ok(tokens_in: int = 5, tokens_out: int = 7) -> ScriptedResponse:
    body = {"id": "x", "object": "chat.completion", "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}}]}
    body["usage"] = {"prompt_tokens": tokens_in, "completion_tokens": tokens_out, "total_tokens": tokens_in + tokens_out}
    return ScriptedResponse(200, [orjson.dumps(body)])


def _sse(*events: dict[str, Any]) -> list[bytes]:
    return [b"data: " + orjson.dumps(event) + b"\n\n" for event in events] + [b"data: [DONE]\n\n"]


def _target(name: str, *origins: str, price: str = "1") -> Target:
    endpoints = tuple(
        Endpoint(key=f"{name}:{origin}", base_url=origin + "/v1", region="us-east", upstream_model="up-model") for origin in origins
    )
    return Target(
        id=name,
        label=f"provider:{name}",
        kind="provider",
        weight=100,
        position=0,
        endpoints=endpoints,
        input_price_per_mtok=Decimal(price),
        output_price_per_mtok=Decimal(price),
        regions=frozenset({"us-east"}),
        input_cost_per_mtok=Decimal(price),  # no markup in these tests: the provider's cost is what is charged
        output_cost_per_mtok=Decimal(price),
    )


def _route(name: str, *targets: Target, max_attempts: int = 3) -> Route:
    return Route(
        name=name,
        strategy="ordered",
        allowed_regions=None,
        fallbacks=(),
        max_attempts=max_attempts,
        attempt_timeout_s=5.0,
        deadline_s=10.0,
        breaker_failures=5,
        breaker_cooldown_s=30.0,
        targets=targets,
        created=0,
    )


def _snapshot(org_id: str, *routes: Route, requests_per_minute: int = 1000, spend: SpendPolicy | None = None) -> OrgSnapshot:
    limits = Limits(requests_per_minute, 1_000_000, 100, None, None, None)
    return OrgSnapshot(org_id, "active", "", limits, {route.name: route for route in routes}, time.monotonic(), spend)


class Harness:
    """A gateway for two tenants: Acme with the routes a test gives, Globex with its own."""

    def __init__(
        self,
        pool: ScriptedPool,
        *acme_routes: Route,
        requests_per_minute: int = 1000,
        spend: SpendPolicy | None = None,
        ledger: SpendLedger | None = None,
    ) -> None:
        self.pool = pool
        self.events: list[UsageRecord] = []
        self.snapshots = snapshots = {
            "org_acme": _snapshot("org_acme", *acme_routes, requests_per_minute=requests_per_minute, spend=spend),
            "org_globex": _snapshot("org_globex", _route("globex-private", _target("globex", "http://globex.test"))),
        }
        cache: RefreshingCache[str, OrgSnapshot] = RefreshingCache(snapshots.__getitem__, ttl=60, stale_for=60, negative_ttl=60)

        async def authenticate(authorization: bytes | None) -> Caller:
            if authorization not in KEYS:
                raise GatewayError(401, "Incorrect API key provided.", "invalid_api_key")
            return KEYS[authorization]

        async def record(event: UsageRecord) -> None:
            self.events.append(event)

        def no_cold_start(deployment_id: str) -> None:
            raise AssertionError("no deployment here scales from zero")

        self.gateway = Gateway(
            authenticate=authenticate,
            snapshots=cache,
            limiter=MemoryLimiter(),
            spend=ledger or MemorySpendLedger(),
            upstream=UpstreamExchange(
                pool=pool,  # type: ignore[arg-type]
                health=HealthBook(),
                cold_start=ColdStart(snapshots=cache, request=no_cold_start, timeout_s=1),
                snapshots=cache,
            ),
            accounting=UsageAccounting(record_usage=record, access_log=AccessLog(False)),
            max_body=4096,
        )

    def post(self, body: dict[str, Any], key: str = "sbk_acme") -> httpx.Response:
        return self.post_many([body], key)[0]

    def post_many(self, bodies: list[dict[str, Any]], key: str = "sbk_acme") -> list[httpx.Response]:
        async def run() -> list[httpx.Response]:
            transport = httpx.ASGITransport(app=self.gateway)
            async with httpx.AsyncClient(transport=transport, base_url="http://gateway.test") as client:
                return [await client.post("/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"}) for body in bodies]

        return asyncio.run(run())


def test_a_failing_endpoint_is_retried_on_the_next_and_the_answer_says_who_served_it() -> None:
    pool = ScriptedPool({"http://a.test": [ScriptedResponse(503, [b"{}"])], "http://b.test": [_ok(5, 7)]})
    harness = Harness(pool, _route("chat", _target("first", "http://a.test"), _target("second", "http://b.test")))
    response = harness.post(CHAT)
    assert response.status_code == 200, response.text
    assert response.headers["x-switchboard-attempts"] == "2" and response.headers["x-switchboard-target"] == "provider:second"
    assert [url for url, _ in pool.sent] == ["http://a.test/v1/chat/completions", "http://b.test/v1/chat/completions"]
    assert all(sent["model"] == "up-model" for _, sent in pool.sent)
    [event] = harness.events
    assert (event.status, event.attempts, event.input_tokens, event.output_tokens) == (200, 2, 5, 7)
    assert event.organization_id == "org_acme" and event.target == "provider:second"


def test_money_in_headers_is_a_plain_decimal_and_names_cannot_break_a_header() -> None:
    pool = ScriptedPool({"http://a.test": [_ok(5, 7)]})
    target = _target("cheap", "http://a.test", price="0.001")  # 12 tokens: $0.000000012, "1.2E-8" to str()
    harness = Harness(pool, _route("chat", target))
    response = harness.post(CHAT)
    assert response.headers["x-switchboard-cost-usd"] == "0.000000012"
    assert response.headers["x-switchboard-input-price-per-mtok"] == "0.001"
    assert header_value("us-east\r\nSet-Cookie: x=1") == b"us-east??Set-Cookie: x=1"  # a name stored before it was checked


def test_when_every_attempt_fails_the_503_says_what_each_did() -> None:
    pool = ScriptedPool(
        {
            "http://a.test": [UpstreamError("could not connect to 10.1.2.3:22: [Errno 111] Connection refused", before_response=True)],
            "http://b.test": [ScriptedResponse(502, [b"{}"])],
        }
    )
    harness = Harness(pool, _route("chat", _target("first", "http://a.test"), _target("second", "http://b.test")))
    response = harness.post(CHAT)
    assert response.status_code == 503
    error = response.json()["error"]
    assert error["code"] == "no_healthy_target"
    assert (
        "provider:first in us-east: could not be reached" in error["message"]
        and "provider:second in us-east: answered 502" in error["message"]
    )
    assert "10.1.2.3" not in error["message"] and "Errno" not in error["message"]  # no port scanner
    [event] = harness.events
    assert event.status == 503 and event.attempts == 2


def test_streamed_usage_is_counted_without_showing_the_client_what_it_did_not_ask_for() -> None:
    chunk = {"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": "hi"}}], "usage": None}
    usage = {"object": "chat.completion.chunk", "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}}
    pool = ScriptedPool({"http://a.test": [ScriptedResponse(200, _sse(chunk, chunk, usage))]})
    harness = Harness(pool, _route("chat", _target("only", "http://a.test")))
    response = harness.post({**CHAT, "stream": True})
    assert response.status_code == 200 and response.headers["content-type"] == "text/event-stream"
    [(_, sent)] = pool.sent
    assert sent["stream_options"] == {"include_usage": True}  # asked on the client's behalf
    assert "usage" not in response.text  # and taken out again
    assert response.text.count('"content":"hi"') == 2 and response.text.endswith("data: [DONE]\n\n")
    [event] = harness.events
    assert event.streamed and (event.input_tokens, event.output_tokens) == (3, 2)


def test_a_stream_the_upstream_cuts_ends_with_an_error_event_and_is_recorded_as_502() -> None:
    chunk = {"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": "hi"}}]}
    pool = ScriptedPool({"http://a.test": [ScriptedResponse(200, _sse(chunk, chunk, chunk), break_after=2)]})
    harness = Harness(pool, _route("chat", _target("only", "http://a.test")))
    response = harness.post({**CHAT, "stream": True})
    assert response.status_code == 200  # the headers were already out
    assert '"code":"upstream_stream_interrupted"' in response.text and "[DONE]" not in response.text
    [event] = harness.events
    assert (event.status, event.error_code, event.output_tokens) == (502, "upstream_stream_interrupted", 2)


def test_bad_input_gets_a_400_naming_the_field_and_never_reaches_an_upstream() -> None:
    pool = ScriptedPool({})
    harness = Harness(pool, _route("chat", _target("only", "http://a.test")))
    response = harness.post({"model": "chat", "messages": "hello"})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "messages" and response.json()["error"]["code"] == "invalid_messages"
    assert harness.post({"model": "chat", "messages": [{"role": "user"}], "max_tokens": 0}).json()["error"]["param"] == "max_tokens"
    assert pool.sent == []


def test_the_request_limit_answers_429_and_the_upstream_never_sees_the_refused_request() -> None:
    pool = ScriptedPool({"http://a.test": [_ok(), _ok()]})
    harness = Harness(pool, _route("chat", _target("only", "http://a.test")), requests_per_minute=2)
    statuses = [response.status_code for response in harness.post_many([CHAT, CHAT, CHAT])]
    assert statuses == [200, 200, 429]
    assert len(pool.sent) == 2


def test_at_the_spend_limit_new_requests_get_402_and_nothing_is_sent() -> None:
    cap = Cap(scope="org_acme", limit_micros=1_000_000, spent_micros=1_000_000, refusal="Limit reached; platform staff can raise it.")
    exhausted = SpendPolicy(organization=cap, keys={})
    pool = ScriptedPool({"http://a.test": [_ok()]})
    harness = Harness(pool, _route("chat", _target("only", "http://a.test")), spend=exhausted)
    response = harness.post(CHAT)
    assert response.status_code == 402 and response.json()["error"]["code"] == "spend_limit_reached"
    assert "platform staff can raise it" in response.json()["error"]["message"]
    assert pool.sent == []


def test_a_keys_budget_binds_that_key_only_under_concurrency() -> None:
    """A key with a budget for about three requests, ten sent at once: at most three are
    served, the rest get 402 key_budget_reached; another key of the organization is not
    held back by it."""
    one = 12 * 1_000  # 12 tokens at $1,000 per million, in micro-dollars
    budget = Cap(
        scope="key:key_acme", limit_micros=3 * one + one // 2, spent_micros=0, refusal="Key budget reached.", code="key_budget_reached"
    )
    policy = SpendPolicy(organization=None, keys={"key_acme": budget})
    pool = ScriptedPool({"http://a.test": [_ok(5, 7) for _ in range(11)]})
    harness = Harness(pool, _route("chat", _target("only", "http://a.test", price="1000")), spend=policy)
    capped = {**CHAT, "max_tokens": 7, "messages": [{"role": "user", "content": "Hi"}]}  # bound: 2 + 16 prompt, 7 out

    async def burst() -> list[int]:
        transport = httpx.ASGITransport(app=harness.gateway)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway.test") as client:
            answers = await asyncio.gather(
                *(client.post("/v1/chat/completions", json=capped, headers={"Authorization": "Bearer sbk_acme"}) for _ in range(10))
            )
            other = await client.post("/v1/chat/completions", json=capped, headers={"Authorization": "Bearer sbk_chat_only"})
            return [a.status_code for a in answers] + [other.status_code]

    statuses = asyncio.run(burst())
    served = statuses[:10].count(200)
    assert 1 <= served <= 3 and statuses[:10].count(402) == 10 - served and statuses[10] == 200
    charged = sum(
        event.input_tokens + event.output_tokens for event in harness.events if event.key_id == "key_acme" and event.status == 200
    )
    assert charged * 1_000 <= budget.limit_micros  # never over the key's budget


def test_a_routes_budget_binds_that_route_only_under_concurrency() -> None:
    """A route with a budget for about three requests, ten sent at once: at most three are
    served, the rest get 402 route_budget_reached; another route of the organization, and
    the other tenant, are served."""
    one = 12 * 1_000  # 12 tokens at $1,000 per million, in micro-dollars
    budget = Cap(
        scope="route:rte_chat",
        limit_micros=3 * one + one // 2,
        spent_micros=0,
        refusal="Route budget reached.",
        code="route_budget_reached",
    )
    policy = SpendPolicy(organization=None, keys={}, routes={"chat": budget})
    pool = ScriptedPool({"http://a.test": [_ok(5, 7) for _ in range(11)], "http://globex.test": [_ok()]})
    routes = (
        _route("chat", _target("only", "http://a.test", price="1000")),
        _route("other", _target("other", "http://a.test", price="1000")),
    )
    harness = Harness(pool, *routes, spend=policy)
    capped = {**CHAT, "max_tokens": 7, "messages": [{"role": "user", "content": "Hi"}]}  # bound: 2 + 16 prompt, 7 out

    async def burst() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=harness.gateway)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway.test") as client:
            answers = await asyncio.gather(
                *(client.post("/v1/chat/completions", json=capped, headers={"Authorization": "Bearer sbk_acme"}) for _ in range(10))
            )
            other = await client.post(
                "/v1/chat/completions", json={**capped, "model": "other"}, headers={"Authorization": "Bearer sbk_acme"}
            )
            globex = await client.post(
                "/v1/chat/completions", json={**capped, "model": "globex-private"}, headers={"Authorization": "Bearer sbk_globex"}
            )
            return [*answers, other, globex]

    answers = asyncio.run(burst())
    statuses = [answer.status_code for answer in answers]
    served = statuses[:10].count(200)
    assert 1 <= served <= 3 and statuses[:10].count(402) == 10 - served and statuses[10:] == [200, 200]
    refused = next(answer for answer in answers if answer.status_code == 402).json()["error"]
    assert refused["code"] == "route_budget_reached" and refused["message"] == "Route budget reached."
    charged = sum(event.input_tokens + event.output_tokens for event in harness.events if event.route == "chat" and event.status == 200)
    assert charged * 1_000 <= budget.limit_micros  # never over the route's budget


def test_another_tenants_route_does_not_exist_for_you() -> None:
    pool = ScriptedPool({"http://globex.test": [_ok()]})
    harness = Harness(pool, _route("chat", _target("only", "http://a.test")))
    response = harness.post({**CHAT, "model": "globex-private"})
    assert response.status_code == 404 and response.json()["error"]["code"] == "model_not_found"
    assert pool.sent == []
    assert harness.post({**CHAT, "model": "globex-private"}, key="sbk_globex").status_code == 200  # its owner can


@pytest.mark.parametrize("key", ["", "sbk_nobody"])
def test_no_key_or_a_wrong_key_is_401(key: str) -> None:
    harness = Harness(ScriptedPool({}), _route("chat", _target("only", "http://a.test")))
    assert harness.post(CHAT, key=key).status_code == 401
    assert harness.events == []


def test_a_key_limited_to_some_models_calls_and_lists_only_those() -> None:
    pool = ScriptedPool({"http://a.test": [_ok()], "http://b.test": [_ok()]})
    harness = Harness(pool, _route("chat", _target("one", "http://a.test")), _route("embed", _target("two", "http://b.test")))
    refused = harness.post({**CHAT, "model": "embed"}, key="sbk_chat_only")
    assert refused.status_code == 403
    error = refused.json()["error"]
    assert (error["code"], error["param"]) == ("model_not_allowed", "model") and "may call only chat" in error["message"]
    assert harness.post(CHAT, key="sbk_chat_only").status_code == 200
    assert harness.post({**CHAT, "model": "embed"}).status_code == 200  # an unlimited key of the same organization
    assert [url for url, _ in pool.sent] == ["http://a.test/v1/chat/completions", "http://b.test/v1/chat/completions"]

    async def listed(key: str) -> list[str]:
        transport = httpx.ASGITransport(app=harness.gateway)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway.test") as client:
            answer = await client.get("/v1/models", headers={"Authorization": f"Bearer {key}"})
            return [model["id"] for model in answer.json()["data"]]

    assert asyncio.run(listed("sbk_chat_only")) == ["chat"]
    assert asyncio.run(listed("sbk_acme")) == ["chat", "embed"]


def _replicas(name: str, *replicas: tuple[str, str, str]) -> Target:
    """A deployment target whose replicas are (origin, revision, model) triples."""
    endpoints = tuple(
        Endpoint(key=f"replica:{origin}", base_url=origin + "/v1", region="us-east", upstream_model=model, revision_id=revision)
        for origin, revision, model in replicas
    )
    return Target(
        id=name,
        label=f"deployment:{name}",
        kind="deployment",
        weight=100,
        position=0,
        endpoints=endpoints,
        input_price_per_mtok=Decimal(0),
        output_price_per_mtok=Decimal(0),
        regions=frozenset(),
        deployment_id=f"dep_{name}",
        gpu_price_per_hour=Decimal("0.5"),
    )


def _model_not_found(served: str) -> ScriptedResponse:
    error = {"message": f"The model `x` does not exist on this server; it serves `{served}`.", "code": "model_not_found"}
    return ScriptedResponse(404, [orjson.dumps({"error": {**error, "type": "invalid_request_error", "param": "model"}})])


def test_a_replica_answering_model_not_found_is_retried_elsewhere_and_counts_against_its_breaker() -> None:
    # Ordered, so the mismatched replica is always tried first; its breaker opens after two.
    pool = ScriptedPool({"http://old.test": [_model_not_found("old-model")] * 2, "http://new.test": [_ok() for _ in range(3)]})
    old = _replicas("first", ("http://old.test", "rev_1", "old-model"))
    route = _route("chat", old, _replicas("second", ("http://new.test", "rev_2", "new-model")))
    harness = Harness(pool, dataclasses.replace(route, breaker_failures=2))
    responses = harness.post_many([CHAT, CHAT, CHAT])
    assert [response.status_code for response in responses] == [200, 200, 200], responses[-1].text
    assert [response.headers["x-switchboard-attempts"] for response in responses] == ["2", "2", "1"]  # the third: breaker open
    assert {(r.headers["x-switchboard-revision"], r.headers["x-switchboard-upstream-model"]) for r in responses} == {("rev_2", "new-model")}
    assert [(url.split("/v1/")[0], sent["model"]) for url, sent in pool.sent] == [
        ("http://old.test", "old-model"),
        ("http://new.test", "new-model"),
        ("http://old.test", "old-model"),
        ("http://new.test", "new-model"),
        ("http://new.test", "new-model"),
    ]
    assert [(event.status, event.attempts, event.target) for event in harness.events] == [
        (200, 2, "deployment:second"),
        (200, 2, "deployment:second"),
        (200, 1, "deployment:second"),
    ]


def test_a_providers_model_not_found_is_the_callers_answer_not_a_retry() -> None:
    # An external provider that does not know the name: a route's configuration, passed on.
    pool = ScriptedPool({"http://a.test": [_model_not_found("other")], "http://b.test": [_ok()]})
    harness = Harness(pool, _route("chat", _target("first", "http://a.test"), _target("second", "http://b.test")))
    response = harness.post(CHAT)
    assert response.status_code == 404 and response.json()["error"]["code"] == "model_not_found"
    assert len(pool.sent) == 1 and "x-switchboard-revision" not in response.headers


def test_when_every_replica_it_knew_failed_the_gateway_reads_the_replicas_again_once(monkeypatch: pytest.MonkeyPatch) -> None:
    # A rollout drained the replica this process's snapshot names (it answers 503) and
    # readied another since: the request is served by the new one, not refused.
    monkeypatch.setattr(upstream, "REFRESH_AFTER_S", 0.0)  # the cached snapshot counts as old at once
    pool = ScriptedPool({"http://old.test": [_ok(), ScriptedResponse(503, [b"{}"])], "http://new.test": [_ok()]})
    harness = Harness(pool, _route("chat", _replicas("chat", ("http://old.test", "rev_1", "tiny-chat"))))
    assert harness.post(CHAT).status_code == 200  # the snapshot is cached
    harness.snapshots["org_acme"] = _snapshot("org_acme", _route("chat", _replicas("chat", ("http://new.test", "rev_2", "smollm2"))))
    response = harness.post(CHAT)
    assert response.status_code == 200, response.text
    assert response.headers["x-switchboard-attempts"] == "2" and response.headers["x-switchboard-revision"] == "rev_2"
    assert [url.split("/v1/")[0] for url, _ in pool.sent] == ["http://old.test", "http://old.test", "http://new.test"]


def test_when_every_replica_it_knew_has_its_breaker_open_the_gateway_reads_the_replicas_again(monkeypatch: pytest.MonkeyPatch) -> None:
    # The drained replica failed earlier requests and its breaker opened, so this request
    # makes no attempt on it; a replica readied since is found by reading them again.
    monkeypatch.setattr(upstream, "REFRESH_AFTER_S", 0.0)
    pool = ScriptedPool({"http://old.test": [ScriptedResponse(503, [b"{}"])], "http://new.test": [_ok()]})
    old_route = dataclasses.replace(_route("chat", _replicas("chat", ("http://old.test", "rev_1", "tiny-chat"))), breaker_failures=1)
    harness = Harness(pool, old_route)
    first = harness.post(CHAT)
    assert first.status_code == 503 and first.json()["error"]["code"] == "no_healthy_target"  # nothing newer to read yet
    harness.snapshots["org_acme"] = _snapshot(
        "org_acme", dataclasses.replace(_route("chat", _replicas("chat", ("http://new.test", "rev_2", "smollm2"))), breaker_failures=1)
    )
    response = harness.post(CHAT)
    assert response.status_code == 200, response.text
    assert response.headers["x-switchboard-attempts"] == "1" and response.headers["x-switchboard-revision"] == "rev_2"
    assert [url.split("/v1/")[0] for url, _ in pool.sent] == ["http://old.test", "http://new.test"]


class _UnreachableLedger(MemorySpendLedger):
    """A shared ledger whose store (Redis) is down."""

    async def reserve(self, caps: list[Cap], micros: int, *, lease: str) -> Cap | None:
        raise ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    async def settle(self, scopes: list[str], lease: str, actual: int) -> None:
        raise ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")


def test_while_the_spend_ledger_is_down_a_budget_still_binds_in_each_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """A key with a budget for three requests, six sent while Redis is down: this process's
    own ledger holds the line (it used to admit every one unchecked)."""
    monkeypatch.setattr(admission, "_LOCAL_LEDGER", MemorySpendLedger())
    one = 12 * 1_000  # 12 tokens at $1,000 per million, in micro-dollars
    budget = Cap(scope="key:key_acme", limit_micros=3 * one, spent_micros=0, refusal="Key budget reached.", code="key_budget_reached")
    pool = ScriptedPool({"http://a.test": [_ok(5, 7) for _ in range(6)]})
    harness = Harness(
        pool,
        _route("chat", _target("only", "http://a.test", price="1000")),
        spend=SpendPolicy(organization=None, keys={"key_acme": budget}),
        ledger=_UnreachableLedger(),
    )
    capped = {**CHAT, "max_tokens": 7, "messages": [{"role": "user", "content": "Hi"}]}
    statuses = [response.status_code for response in harness.post_many([capped] * 6)]
    assert statuses.count(402) >= 3 and set(statuses[: statuses.count(200)]) == {200}, statuses
    assert 1 <= statuses.count(200) <= 3 and len(pool.sent) == statuses.count(200)
