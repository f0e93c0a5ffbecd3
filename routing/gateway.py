"""The /v1 gateway: an ASGI application on the hot path of every inference request.

It runs outside Django's request machinery (no middleware, no view resolution): one pass
over the headers, a cached key and organization snapshot, one limiter call, then the
upstream exchange. Database work happens only when a cache entry is stale, in a thread.

Order of checks: body size (413), key (401/403), JSON (400), organization standing (403),
model (404), limits (429), the monthly spend limit (402), then targets (503 when none is healthy in the allowed regions).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable, MutableMapping
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson
from django.conf import settings

from billing import usage
from console.models import Organization
from routing import metrics, pricing, spend
from routing.access_log import AccessLog
from routing.auth import Caller, authenticate
from routing.cache import DatabaseUnavailable, RefreshingCache, run_db
from routing.errors import GatewayError, bad_request, error_body
from routing.health import EndpointHealth, HealthBook
from routing.limits import Admission, Limiter, MemoryLimiter, RedisLimiter, scopes_for
from routing.policy import order_targets
from routing.snapshot import Endpoint, OrgSnapshot, Route, Target, load_snapshot
from routing.spend import MemorySpendLedger, RedisSpendLedger, SpendLedger, SpendPolicy
from routing.upstream import UpstreamError, UpstreamResponse, Upstreams

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

# path -> (endpoint name, upstream path suffix)
INFERENCE_PATHS = {
    "/v1/chat/completions": "chat/completions",
    "/v1/completions": "completions",
    "/v1/embeddings": "embeddings",
}
_USAGE_ENDPOINTS = frozenset(INFERENCE_PATHS.values())
DEFAULT_OUTPUT_RESERVATION = 256  # tokens reserved when a request names no max_tokens
RETRY_STATUSES = frozenset({500, 502, 503, 504})
WAKE_REPEAT_S = 5.0
JSON_HEADERS = [(b"content-type", b"application/json")]
SSE_HEADERS = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache"), (b"x-accel-buffering", b"no")]

log = logging.getLogger("switchboard.gateway")


@dataclass(slots=True)
class Exchange:
    """One request's facts, for its usage event, metrics and log line."""

    request_id: str
    endpoint: str
    started: float
    arrived_at: datetime
    caller: Caller | None = None
    model: str = ""
    route: str = ""
    target: str = ""
    deployment_id: str = ""
    region: str = ""
    status: int = 0
    error_code: str = ""
    streamed: bool = False
    attempts: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    ttft_ms: float | None = None
    input_price: Decimal = Decimal(0)
    output_price: Decimal = Decimal(0)
    recorded: bool = False
    admission: Admission | None = None  # set once admitted: settled on every way out
    usage_reported: bool = False  # the upstream said how many tokens it used
    spend_policy: SpendPolicy | None = None
    spend_reserved: int | None = None  # micro-dollars held under the spend limit: settled on every way out


@dataclass(slots=True)
class Attempt:
    route: Route
    target: Target
    endpoint: Endpoint
    health: EndpointHealth


class AttemptFailed(Exception):
    def __init__(self, kind: str, message: str, status: int = 502) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.status = status


class Gateway:
    def __init__(self) -> None:
        self.upstreams = Upstreams()
        self.health = HealthBook(on_change=_publish_breaker, on_forget=_forget_endpoint)
        self.limiter: Limiter = RedisLimiter(settings.REDIS_URL) if settings.REDIS_URL else MemoryLimiter()
        self.spend: SpendLedger = RedisSpendLedger(settings.REDIS_URL) if settings.REDIS_URL else MemorySpendLedger()
        self.snapshots: RefreshingCache[str, OrgSnapshot] = RefreshingCache(
            load_snapshot,
            ttl=settings.GATEWAY_ROUTES_CACHE_SECONDS,
            stale_for=settings.GATEWAY_KEY_STALE_SECONDS,
            negative_ttl=settings.GATEWAY_ROUTES_CACHE_SECONDS,
            refusals=(Organization.DoesNotExist,),
        )
        self.max_body = settings.MAX_REQUEST_BODY_BYTES
        self._woken: dict[str, float] = {}
        self.access_log = AccessLog(settings.GATEWAY_ACCESS_LOG)

    # -----------------------------------------------------------------------------------
    # ASGI

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope["path"]
        exchange = Exchange(
            request_id="req_" + os.urandom(12).hex(),
            endpoint=path.removeprefix("/v1/"),
            started=time.perf_counter(),
            arrived_at=datetime.now(UTC),
        )
        metrics.IN_FLIGHT.inc()
        send = self._recording(send, exchange)
        try:
            if path in INFERENCE_PATHS:
                await self._inference(scope, receive, send, exchange, INFERENCE_PATHS[path])
            elif path == "/v1/models" or path.startswith("/v1/models/"):
                await self._models(scope, send, exchange, path[len("/v1/models/") :] if path.startswith("/v1/models/") else None)
            else:
                raise GatewayError(
                    404,
                    f"Unknown path {path}. The gateway serves /v1/chat/completions, /v1/completions, /v1/embeddings and /v1/models.",
                    "unknown_url",
                )
        except GatewayError as error:
            exchange.status, exchange.error_code = error.status, error.code
            await self._send_error(send, exchange, error)
        except Organization.DoesNotExist:
            exchange.status, exchange.error_code = 401, "organization_deleted"
            await self._send_error(
                send, exchange, GatewayError(401, "The organization of this key no longer exists.", "organization_deleted")
            )
        except DatabaseUnavailable:
            exchange.status, exchange.error_code = 503, "database_unavailable"
            await self._send_error(
                send,
                exchange,
                GatewayError(503, "The gateway cannot reach its database right now. Retry in a few seconds.", "database_unavailable"),
            )
        except Exception:  # noqa: BLE001 - the last line of defence: never a bare 500
            log.exception("gateway error on %s", exchange.request_id)
            exchange.status, exchange.error_code = 500, "internal_error"
            with suppress(Exception):
                await self._send_error(
                    send,
                    exchange,
                    GatewayError(500, f"Internal error; quote request id {exchange.request_id} to support.", "internal_error"),
                )
        finally:
            metrics.IN_FLIGHT.dec()
            await self._finish(exchange)

    async def _inference(self, scope: Scope, receive: Receive, send: Send, exchange: Exchange, upstream_path: str) -> None:
        if scope["method"] != "POST":
            raise GatewayError(405, f"Use POST for {scope['path']}.", "method_not_allowed")
        authorization = content_length = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                authorization = value
            elif name == b"content-length":
                content_length = value
        if content_length is not None and content_length.isdigit() and int(content_length) > self.max_body:
            raise _too_large(self.max_body)
        body = await _read_body(receive, self.max_body)
        exchange.caller = caller = await authenticate(authorization)
        payload = _parse(body, exchange.endpoint)
        exchange.model = payload["model"]
        exchange.streamed = stream = payload.get("stream") is True
        snapshot = await self.snapshots.get(caller.org_id)
        if snapshot.suspended:
            raise GatewayError(
                403,
                f"This organization is suspended: {snapshot.status_reason or 'contact billing support'}. "
                "Requests are refused until it is reinstated.",
                "organization_suspended",
            )
        route = snapshot.resolve(exchange.model)
        if route is None:
            raise GatewayError(
                404,
                f"The model '{exchange.model}' does not exist for this organization. GET /v1/models lists what you can call.",
                "model_not_found",
                param="model",
            )
        exchange.route = route.name
        exchange.admission = admission = await self._admit(exchange, caller, snapshot, payload)
        if snapshot.spend is not None:
            await self._reserve_spend(exchange, snapshot, snapshot.spend, route, payload)
        # If the client goes away, cancel this task: that closes the upstream connection,
        # which stops the upstream's work too.
        task = asyncio.current_task()
        assert task is not None
        gone = False

        async def watch() -> None:
            nonlocal gone
            await _wait_for_disconnect(receive)
            gone = True
            task.cancel()

        watcher = asyncio.get_running_loop().create_task(watch())
        try:
            await self._serve(send, exchange, snapshot, route, payload, upstream_path, stream, admission)
        except asyncio.CancelledError:
            if not gone:
                raise
            task.uncancel()
            exchange.status, exchange.error_code = 499, "client_disconnected"
        finally:
            watcher.cancel()

    async def _admit(self, exchange: Exchange, caller: Caller, snapshot: OrgSnapshot, payload: dict[str, Any]) -> Admission | None:
        scopes = scopes_for(caller.org_id, caller.key_id, snapshot.limits)
        try:
            admission = await self.limiter.admit(exchange.request_id, scopes, _token_estimate(payload, exchange.endpoint))
        except Exception:  # noqa: BLE001 - limiter store down: serve rather than refuse everyone
            log.exception("rate limiter unavailable; admitting %s unchecked", exchange.request_id)
            return None
        if not admission.allowed:
            metrics.RATE_LIMITED.labels(caller.org_id, admission.exceeded).inc()
            who = "this API key" if admission.scope.startswith("key:") else "this organization"
            if admission.exceeded == "concurrency":
                message = f"Too many concurrent requests for {who}; wait for one to finish."
            else:
                retry_after = max(1, round(admission.retry_after_s))
                message = (
                    f"Rate limit reached for {who}: {admission.exceeded} per minute. "
                    f"Retry after {retry_after} s, or ask for a higher quota."
                )
            raise GatewayError(429, message, f"rate_limit_{admission.exceeded}", headers=admission.headers())
        return admission

    async def _reserve_spend(
        self, exchange: Exchange, snapshot: OrgSnapshot, policy: SpendPolicy, route: Route, payload: dict[str, Any]
    ) -> None:
        """Holds the most this request can be charged under the monthly limit, or refuses
        it with 402. Requests already in flight are never cut off."""
        prompt_bound, output_bound = _spend_token_bounds(payload, exchange.endpoint)
        providers = [t for r in self._chain(snapshot, route) for t in r.targets if t.kind == "provider"]
        dearest = (max(t.input_price_per_mtok for t in providers), max(t.output_price_per_mtok for t in providers)) if providers else None
        micros = spend.to_micros(spend.charge(policy, exchange.model, prompt_bound, output_bound, dearest), up=True)
        try:
            held = await self.spend.reserve(snapshot.org_id, policy, micros)
        except Exception:  # noqa: BLE001 - as for rate limits: a store outage must not refuse every tenant
            log.exception("spend ledger unavailable; admitting %s unchecked", exchange.request_id)
            return
        if not held:
            metrics.SPEND_REFUSED.labels(snapshot.org_id).inc()
            raise GatewayError(
                402,
                f"This organization has reached its {policy.reason} for this month. "
                "New requests are refused until an owner or admin raises the limit or adds credit (Billing page).",
                "spend_limit_reached",
            )
        exchange.spend_policy, exchange.spend_reserved = policy, micros

    # -----------------------------------------------------------------------------------
    # Routing and proxying

    async def _serve(
        self,
        send: Send,
        exchange: Exchange,
        snapshot: OrgSnapshot,
        route: Route,
        payload: dict[str, Any],
        upstream_path: str,
        stream: bool,
        admission: Admission | None,
    ) -> None:
        deadline = exchange.started + route.deadline_s
        woke = False
        tried: set[str] = set()
        failures: list[str] = []
        last_failure: AttemptFailed | None = None
        failure_kinds: list[str] = []
        while True:
            attempts = self._attempts(snapshot, route, tried, stream)
            # The budget is checked before asking for the next candidate: picking one can
            # take a breaker's half-open probe slot, which an unused pick would leak.
            while exchange.attempts < route.max_attempts and time.perf_counter() < deadline:
                attempt = next(attempts, None)
                if attempt is None:
                    break
                exchange.attempts += 1
                if exchange.attempts > 1:
                    metrics.RETRIES.labels(snapshot.org_id, route.name).inc()
                try:
                    await self._attempt(send, exchange, attempt, payload, upstream_path, stream, deadline, admission)
                    return
                except AttemptFailed as failure:
                    metrics.UPSTREAM_ERRORS.labels(snapshot.org_id, route.name, attempt.target.label, failure.kind).inc()
                    failures.append(f"{attempt.target.label} in {attempt.endpoint.region}: {failure.message}")
                    last_failure = failure
                    failure_kinds.append(failure.kind)
            if exchange.attempts == 0 and not woke:
                wakeable = [
                    t
                    for r in self._chain(snapshot, route)
                    for t in r.targets
                    if t.can_wake and not t.endpoints and _regions_overlap(t.regions, route.allowed_regions)
                ]
                if wakeable:
                    woke = True
                    snapshot = await self._wake(snapshot.org_id, wakeable, deadline)
                    route = snapshot.resolve(route.name) or route
                    continue
            break
        if failures and all(kind == "timeout" for kind in failure_kinds):
            raise GatewayError(
                504,
                f"Every attempt for '{route.name}' timed out ({exchange.attempts} attempts, {route.attempt_timeout_s:g} s each). "
                "Retry, or raise the route's timeouts.",
                "upstream_timeout",
            )
        if last_failure is not None and last_failure.status == 429:
            raise GatewayError(
                429,
                f"Every target for '{route.name}' is rate limiting its callers; retry shortly.",
                "upstream_rate_limited",
                headers=[(b"retry-after", b"1")],
            )
        regions = f" in the allowed regions ({', '.join(sorted(route.allowed_regions))})" if route.allowed_regions else ""
        if exchange.attempts == 0:
            message = (
                f"No healthy target for '{route.name}'{regions}: every target is down, cordoned, scaled to zero "
                "or paused by its circuit breaker. Retry shortly."
            )
        else:
            message = (
                f"Every attempt for '{route.name}'{regions} failed ({exchange.attempts} of at most {route.max_attempts}): "
                + "; ".join(failures[-3:])
            )
        raise GatewayError(503, message, "no_healthy_target")

    def _chain(self, snapshot: OrgSnapshot, route: Route) -> list[Route]:
        chain = [route]
        for name in route.fallbacks:
            fallback = snapshot.routes.get(name)
            if fallback is not None and fallback not in chain:
                chain.append(fallback)
        return chain

    def _attempts(self, snapshot: OrgSnapshot, route: Route, tried: set[str], stream: bool):  # type: ignore[no-untyped-def]
        """Candidate endpoints in order, lazily: the route's targets by its strategy, then
        its fallback routes'. The primary route's region allow-list binds them all."""
        allowed = route.allowed_regions
        for current in self._chain(snapshot, route):
            regions = (
                current.allowed_regions
                if allowed is None
                else (allowed if current.allowed_regions is None else allowed & current.allowed_regions)
            )
            for target in order_targets(current.strategy, current.targets, self._latency_of(stream)):
                while True:
                    endpoints = {e.key: e for e in target.endpoints if e.key not in tried and (regions is None or e.region in regions)}
                    if not endpoints:
                        break
                    health = self.health.pick(list(endpoints), time.monotonic(), current.breaker_cooldown_s)
                    if health is None:
                        break
                    tried.add(health.key)
                    yield Attempt(current, target, endpoints[health.key], health)

    def _latency_of(self, stream: bool) -> Callable[[Target], float | None]:
        def latency(target: Target) -> float | None:
            values = []
            for endpoint in target.endpoints:
                health = self.health.get(endpoint.key)
                value = health.ttft_ms if stream and health.ttft_ms is not None else health.latency_ms
                if value is not None:
                    values.append(value)
            return min(values) if values else None

        return latency

    async def _attempt(
        self,
        send: Send,
        exchange: Exchange,
        attempt: Attempt,
        payload: dict[str, Any],
        upstream_path: str,
        stream: bool,
        deadline: float,
        admission: Admission | None,
    ) -> None:
        route, target, endpoint, health = attempt.route, attempt.target, attempt.endpoint, attempt.health
        inject_usage = stream and not (payload.get("stream_options") or {}).get("include_usage")
        upstream_payload = {**payload, "model": endpoint.upstream_model}
        if inject_usage:
            upstream_payload["stream_options"] = {**(payload.get("stream_options") or {}), "include_usage": True}
        headers = [(b"content-type", b"application/json"), (b"x-request-id", exchange.request_id.encode())]
        if endpoint.api_key:
            headers.append((b"authorization", b"Bearer " + endpoint.api_key.encode()))
        timeout = min(route.attempt_timeout_s, deadline - time.perf_counter())
        health.outstanding += 1
        sent_at = time.perf_counter()
        response: UpstreamResponse | None = None
        verdict: bool | None = None  # True: healthy answer; False: failure; None: no verdict
        try:
            try:
                async with asyncio.timeout(timeout):
                    response = await self.upstreams.send(endpoint.base_url + "/" + upstream_path, orjson.dumps(upstream_payload), headers)
                    status = response.status
                    if not (stream and status == 200):
                        content = await response.read()
            except TimeoutError:
                verdict = False
                raise AttemptFailed("timeout", f"no answer within {timeout:.1f} s", 504) from None
            except UpstreamError as error:
                verdict = False
                raise AttemptFailed("connect" if error.before_response else "connection_lost", str(error)) from None
            exchange.target, exchange.region, exchange.deployment_id = target.label, endpoint.region, target.deployment_id
            exchange.input_price, exchange.output_price = target.input_price_per_mtok, target.output_price_per_mtok
            if status in RETRY_STATUSES or status == 429:
                # A 429 says the upstream is busy, not broken: try elsewhere, keep the breaker.
                verdict = False if status != 429 else None
                raise AttemptFailed(f"status_{status}", f"answered {status}", status)
            verdict = True
            if stream and status == 200:
                await self._relay_stream(send, exchange, attempt, response, inject_usage, route.attempt_timeout_s, admission)
            else:
                if status == 200:
                    _count_usage(exchange, content)
                exchange.status = status
                if status >= 400:
                    exchange.error_code = "upstream_rejected"
                content_type = response.header(b"content-type") or b"application/json"
                cost = pricing.cost(exchange.input_tokens, exchange.output_tokens, exchange.input_price, exchange.output_price)
                extra = [(b"x-switchboard-cost-usd", str(cost).encode())] if status == 200 else []
                await _send(
                    send,
                    status,
                    content,
                    [(b"content-type", content_type), *_served_by(exchange, attempt), *extra, *_rate_headers(admission)],
                )
            health.observe_latency((time.perf_counter() - sent_at) * 1000, exchange.ttft_ms)
        finally:
            health.outstanding -= 1
            if response is not None:
                response.close()
            if verdict is True:
                self.health.succeeded(health)
            elif verdict is False:
                self.health.failed(health, route.breaker_failures)
            else:
                self.health.released_probe(health)

    async def _relay_stream(
        self,
        send: Send,
        exchange: Exchange,
        attempt: Attempt,
        response: UpstreamResponse,
        inject_usage: bool,
        idle_timeout: float,
        admission: Admission | None,
    ) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": SSE_HEADERS + _served_by(exchange, attempt) + _rate_headers(admission),
            }
        )
        exchange.status = 200
        relay = _SseRelay(exchange, inject_usage)
        chunks = response.chunks().__aiter__()
        try:
            while True:
                try:
                    async with asyncio.timeout(idle_timeout):
                        chunk = await chunks.__anext__()
                except StopAsyncIteration:
                    break
                out = relay.feed(chunk)
                if out:
                    await send({"type": "http.response.body", "body": out, "more_body": True})
            tail = relay.flush()
            await send({"type": "http.response.body", "body": tail, "more_body": False})
        except (UpstreamError, TimeoutError) as error:
            # Headers are gone; the only honest ending left is an error event in the stream.
            reason = "stopped sending" if isinstance(error, TimeoutError) else "broke the connection"
            exchange.status, exchange.error_code = 502, "upstream_stream_interrupted"
            if exchange.output_tokens == 0:
                exchange.output_tokens = relay.content_events
            message = (
                f"The upstream ({exchange.target} in {exchange.region}) {reason} mid-stream; the response is incomplete. Retry the request."
            )
            event = (
                b"data: "
                + orjson.dumps(
                    {"error": {"message": message, "type": "upstream_error", "param": None, "code": "upstream_stream_interrupted"}}
                )
                + b"\n\n"
            )
            await send({"type": "http.response.body", "body": relay.flush() + event, "more_body": False})

    async def _wake(self, org_id: str, targets: list[Target], deadline: float) -> OrgSnapshot:
        """Scale from zero: ask the control plane for a replica and wait until one is READY."""
        from deployments.models import Deployment
        from deployments.reconcile import request_scale_from_zero

        def wake(deployment_id: str) -> None:
            request_scale_from_zero(Deployment.objects.unscoped_across_tenants().get(pk=deployment_id))

        now = time.monotonic()
        for target in targets:
            if now - self._woken.get(target.deployment_id, -WAKE_REPEAT_S) >= WAKE_REPEAT_S:
                self._woken[target.deployment_id] = now
                try:
                    await run_db(wake, target.deployment_id)
                except Exception as error:  # noqa: BLE001 - deleted meanwhile, broker down: say so
                    log.exception("could not wake deployment %s", target.deployment_id)
                    raise GatewayError(
                        503,
                        "The deployment is scaled to zero and the control plane could not be asked for a replica. Retry shortly.",
                        "cold_start_unavailable",
                    ) from error
        wanted = {t.deployment_id for t in targets}
        give_up = min(time.perf_counter() + settings.GATEWAY_COLD_START_TIMEOUT_SECONDS, deadline)
        while True:
            self.snapshots.invalidate(org_id)
            snapshot = await self.snapshots.get(org_id)
            if any(t.endpoints for r in snapshot.routes.values() for t in r.targets if t.deployment_id in wanted):
                return snapshot
            if time.perf_counter() >= give_up:
                raise GatewayError(
                    503,
                    "The deployment is scaled to zero and no replica became ready within "
                    f"{settings.GATEWAY_COLD_START_TIMEOUT_SECONDS} s. Retry shortly.",
                    "cold_start_timeout",
                )
            await asyncio.sleep(0.5)

    # -----------------------------------------------------------------------------------
    # /v1/models

    async def _models(self, scope: Scope, send: Send, exchange: Exchange, model_id: str | None) -> None:
        if scope["method"] != "GET":
            raise GatewayError(405, "Use GET for /v1/models.", "method_not_allowed")
        authorization = next((value for name, value in scope["headers"] if name == b"authorization"), None)
        exchange.caller = caller = await authenticate(authorization)
        snapshot = await self.snapshots.get(caller.org_id)
        owner = "deployment"
        models = {
            name: {"id": name, "object": "model", "created": route.created, "owned_by": owner if route.is_deployment else "route"}
            for name, route in snapshot.routes.items()
        }
        exchange.status = 200
        if model_id is None:
            body = orjson.dumps({"object": "list", "data": sorted(models.values(), key=lambda m: m["id"])})
        elif model_id in models:
            body = orjson.dumps(models[model_id])
        else:
            raise GatewayError(
                404,
                f"The model '{model_id}' does not exist for this organization. GET /v1/models lists what you can call.",
                "model_not_found",
                param="model",
            )
        await _send(send, 200, body, JSON_HEADERS + [(b"x-request-id", exchange.request_id.encode())])

    # -----------------------------------------------------------------------------------
    # Endings

    async def _send_error(self, send: Send, exchange: Exchange, error: GatewayError) -> None:
        headers = JSON_HEADERS + [(b"x-request-id", exchange.request_id.encode())] + error.headers
        if not error.headers:
            headers += _rate_headers(exchange.admission)
        await _send(send, error.status, error.body(), headers)

    async def _finish(self, exchange: Exchange) -> None:
        latency_ms = (time.perf_counter() - exchange.started) * 1000
        caller = exchange.caller
        admission = exchange.admission
        used_tokens = exchange.input_tokens + exchange.output_tokens
        if admission is not None and not exchange.usage_reported and (exchange.status == 200 or exchange.output_tokens):
            # Served (or partly) with no usage figures from upstream: keep the reservation
            # rather than refund tokens that were probably used.
            used_tokens = max(used_tokens, admission.reserved_tokens)
        if admission is not None:
            try:
                await self.limiter.settle(exchange.request_id, admission, used_tokens)
            except Exception:  # noqa: BLE001 - a lost settle only leaks a lease until it expires
                log.exception("settling limits for %s failed", exchange.request_id)
        if exchange.spend_reserved is not None and exchange.spend_policy is not None and caller is not None:
            provider = (exchange.input_price, exchange.output_price) if exchange.target and not exchange.deployment_id else None
            charged = spend.charge(exchange.spend_policy, exchange.model, exchange.input_tokens, exchange.output_tokens, provider)
            try:
                await self.spend.settle(caller.org_id, exchange.spend_reserved, spend.to_micros(charged))
            except Exception:  # noqa: BLE001 - a lost settle keeps a reservation until its key expires
                log.exception("settling spend for %s failed", exchange.request_id)
        cost = pricing.cost(exchange.input_tokens, exchange.output_tokens, exchange.input_price, exchange.output_price)
        if not exchange.recorded:
            await self._record(exchange)
        if caller is not None and exchange.endpoint in _USAGE_ENDPOINTS:
            series = metrics.series(caller.org_id, exchange.route, exchange.target)
            series.status(exchange.status).inc()
            if exchange.input_tokens:
                series.input_tokens.inc(exchange.input_tokens)
            if exchange.output_tokens:
                series.output_tokens.inc(exchange.output_tokens)
            if cost:
                series.cost.inc(float(cost))
            series.latency.observe(latency_ms / 1000)
            if exchange.ttft_ms is not None:
                series.ttft.observe(exchange.ttft_ms / 1000)
        else:
            metrics.series("", "", "").status(exchange.status).inc()
        if self.access_log.enabled:
            self.access_log.write(
                orjson.dumps(
                    {
                        "request_id": exchange.request_id,
                        "organization": caller.org_id if caller else None,
                        "key": caller.key_id if caller else None,
                        "endpoint": exchange.endpoint,
                        "model": exchange.model,
                        "route": exchange.route,
                        "target": exchange.target,
                        "region": exchange.region,
                        "status": exchange.status,
                        "error": exchange.error_code or None,
                        "stream": exchange.streamed,
                        "attempts": exchange.attempts,
                        "input_tokens": exchange.input_tokens,
                        "output_tokens": exchange.output_tokens,
                        "latency_ms": round(latency_ms, 3),
                        "ttft_ms": round(exchange.ttft_ms, 3) if exchange.ttft_ms is not None else None,
                        "cost_usd": str(cost),
                    }
                )
            )

    def _recording(self, send: Send, exchange: Exchange) -> Send:
        """Makes the usage event durable before the answer's last byte goes out, so an
        answer a client received always has its event."""

        async def recording_send(message: MutableMapping[str, Any]) -> None:
            if not exchange.recorded and message["type"] == "http.response.body" and not message.get("more_body", False):
                await self._record(exchange)
            await send(message)

        return recording_send

    async def _record(self, exchange: Exchange) -> None:
        exchange.recorded = True
        caller = exchange.caller
        if caller is None or exchange.endpoint not in _USAGE_ENDPOINTS:
            return
        event = usage.UsageRecord(
            request_id=exchange.request_id,
            organization_id=caller.org_id,
            at=exchange.arrived_at,
            key_id=caller.key_id,
            endpoint=exchange.endpoint[:30],
            model=exchange.model[:100],
            route=exchange.route,
            target=exchange.target[:200],
            deployment_id=exchange.deployment_id,
            region=exchange.region,
            status=exchange.status,
            error_code=exchange.error_code,
            streamed=exchange.streamed,
            attempts=exchange.attempts,
            input_tokens=exchange.input_tokens,
            output_tokens=exchange.output_tokens,
            latency_ms=(time.perf_counter() - exchange.started) * 1000,
            ttft_ms=exchange.ttft_ms,
            cost=pricing.cost(exchange.input_tokens, exchange.output_tokens, exchange.input_price, exchange.output_price),
        )
        try:
            await usage.record(event)
        except Exception:  # noqa: BLE001 - the answer is ready; say loudly that its usage is not
            metrics.USAGE_LOST.inc()
            log.exception("could not make usage event %s durable", exchange.request_id)

    async def aclose(self) -> None:
        self.access_log.flush_now()
        await usage.aclose()
        await self.upstreams.aclose()


class _SseRelay:
    """Passes SSE events through byte for byte, reading usage from them; when the gateway
    asked for usage on the client's behalf, removes what the client did not ask for.
    Events end with a blank line (LF or CRLF); anything unparseable passes untouched."""

    def __init__(self, exchange: Exchange, inject_usage: bool) -> None:
        self.exchange = exchange
        self.inject_usage = inject_usage
        self.buffer = b""
        self.content_events = 0

    def feed(self, chunk: bytes) -> bytes:
        self.buffer += chunk
        out = []
        while True:
            cut = _event_end(self.buffer)
            if cut < 0:
                break
            event, self.buffer = self.buffer[:cut], self.buffer[cut:]
            event = self._inspect(event)
            if event:
                out.append(event)
        return b"".join(out)

    def flush(self) -> bytes:
        tail, self.buffer = self.buffer, b""
        return self._inspect(tail) if tail.strip() else tail

    def _inspect(self, event: bytes) -> bytes:
        exchange = self.exchange
        if exchange.ttft_ms is None:
            exchange.ttft_ms = (time.perf_counter() - exchange.started) * 1000
        data = _event_data(event)
        if data is None or not data.startswith(b"{"):
            return event
        if b'"usage"' in data and b'"usage":null' not in data and b'"usage": null' not in data:
            try:
                chunk = orjson.loads(data)
            except orjson.JSONDecodeError:
                return event
            if isinstance(chunk, dict) and _take_usage(exchange, chunk.get("usage")) and self.inject_usage and not chunk.get("choices"):
                return b""
        self.content_events += 1
        if self.inject_usage:
            if b',"usage":null' in event:
                return event.replace(b',"usage":null', b"")
            if b'"usage": null' in data:
                try:
                    chunk = orjson.loads(data)
                except orjson.JSONDecodeError:
                    return event
                chunk.pop("usage", None)
                ending = b"\r\n\r\n" if event.endswith(b"\r\n\r\n") else b"\n\n"
                return b"data: " + orjson.dumps(chunk) + ending
        return event


def _event_end(buffer: bytes) -> int:
    """Index just past the first complete event's blank line, or -1."""
    lf, crlf = buffer.find(b"\n\n"), buffer.find(b"\r\n\r\n")
    ends = [i + 2 for i in (lf,) if i >= 0] + [i + 4 for i in (crlf,) if i >= 0]
    return min(ends) if ends else -1


def _event_data(event: bytes) -> bytes | None:
    """The event's data (its `data:` lines joined), or None if it has none."""
    lines = [line[5:].removeprefix(b" ") for line in event.replace(b"\r\n", b"\n").split(b"\n") if line.startswith(b"data:")]
    return b"\n".join(lines) if lines else None


_MAX_TOKENS = 2**31 - 1


def _take_usage(exchange: Exchange, figures: object) -> bool:
    """Reads usage figures if they are sane (non-negative integers); True if it did."""
    if not isinstance(figures, dict):
        return False
    prompt, completion = figures.get("prompt_tokens") or 0, figures.get("completion_tokens") or 0
    if not all(isinstance(n, int) and not isinstance(n, bool) and 0 <= n <= _MAX_TOKENS for n in (prompt, completion)):
        return False
    exchange.input_tokens, exchange.output_tokens, exchange.usage_reported = prompt, completion, True
    return True


# ---------------------------------------------------------------------------------------
# Helpers


async def _read_body(receive: Receive, limit: int) -> bytes:
    message = await receive()
    body = message.get("body", b"")
    if not message.get("more_body"):
        if len(body) > limit:
            raise _too_large(limit)
        return body
    chunks = [body]
    size = len(body)
    while message.get("more_body"):
        message = await receive()
        if message["type"] == "http.disconnect":
            raise GatewayError(400, "The client disconnected before sending the whole body.", "incomplete_body")
        part = message.get("body", b"")
        size += len(part)
        if size > limit:
            raise _too_large(limit)
        chunks.append(part)
    return b"".join(chunks)


async def _wait_for_disconnect(receive: Receive) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


def _too_large(limit: int) -> GatewayError:
    return GatewayError(413, f"The request body is larger than the limit of {limit} bytes; send less.", "request_too_large")


_REQUIRED_INPUT = {"chat/completions": "messages", "completions": "prompt", "embeddings": "input"}


def _parse(body: bytes, endpoint: str) -> dict[str, Any]:
    if not body:
        raise bad_request("The request body is empty; send a JSON object.", "invalid_json")
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise bad_request(f"The request body is not valid JSON: {error}.", "invalid_json") from None
    if not isinstance(payload, dict):
        raise bad_request("The request body must be a JSON object.", "invalid_json")
    model = payload.get("model")
    if not isinstance(model, str) or not model:
        raise bad_request("'model' is required and must be a string naming a route or deployment.", "invalid_model", "model")
    field = _REQUIRED_INPUT[endpoint]
    value = payload.get(field)
    if endpoint == "chat/completions":
        if not isinstance(value, list) or not value or not all(isinstance(m, dict) for m in value):
            raise bad_request("'messages' is required: a non-empty list of message objects.", "invalid_messages", "messages")
    elif not isinstance(value, (str, list)) or (isinstance(value, list) and not value):
        raise bad_request(f"'{field}' is required: a string or a non-empty list.", f"invalid_{field}", field)
    stream = payload.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise bad_request("'stream' must be true or false.", "invalid_stream", "stream")
    if stream and endpoint == "embeddings":
        raise bad_request("Embeddings cannot be streamed; leave out 'stream'.", "invalid_stream", "stream")
    options = payload.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise bad_request("'stream_options' must be an object.", "invalid_stream_options", "stream_options")
    for name in ("max_tokens", "max_completion_tokens"):
        limit = payload.get(name)
        if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 1):
            raise bad_request(f"'{name}' must be a positive integer.", f"invalid_{name}", name)
    return payload


def _token_estimate(payload: dict[str, Any], endpoint: str) -> int:
    """Prompt characters / 4 plus the most the answer may use: what the TPM limit reserves."""
    if endpoint == "chat/completions":
        chars = sum(len(str(m.get("content") or "")) for m in payload["messages"])
    else:
        value = payload.get(_REQUIRED_INPUT[endpoint])
        chars = len(value) if isinstance(value, str) else sum(len(str(item)) for item in value)
    output = (
        0
        if endpoint == "embeddings"
        else int(payload.get("max_completion_tokens") or payload.get("max_tokens") or DEFAULT_OUTPUT_RESERVATION)
    )
    return chars // 4 + 1 + output


def _spend_token_bounds(payload: dict[str, Any], endpoint: str) -> tuple[int, int]:
    """Upper bounds on the tokens a request can be charged for: a token is at least one
    byte of text (plus a few for each chat message's template), and the answer at most
    max_tokens."""
    if endpoint == "chat/completions":
        prompt = sum(len(str(m.get("content") or "").encode()) + 16 for m in payload["messages"])
    else:
        value = payload.get(_REQUIRED_INPUT[endpoint])
        prompt = len(value.encode()) if isinstance(value, str) else sum(len(str(item).encode()) for item in value)
    output = (
        0
        if endpoint == "embeddings"
        else int(payload.get("max_completion_tokens") or payload.get("max_tokens") or DEFAULT_OUTPUT_RESERVATION)
    )
    return prompt + 1, output


def _count_usage(exchange: Exchange, content: bytes) -> None:
    try:
        answer = orjson.loads(content)
    except orjson.JSONDecodeError:
        return
    if isinstance(answer, dict):
        _take_usage(exchange, answer.get("usage"))


def _regions_overlap(target_regions: frozenset[str], allowed: frozenset[str] | None) -> bool:
    return allowed is None or not target_regions or bool(target_regions & allowed)


def _served_by(exchange: Exchange, attempt: Attempt) -> list[tuple[bytes, bytes]]:
    return [
        (b"x-request-id", exchange.request_id.encode()),
        (b"x-switchboard-route", attempt.route.name.encode()),
        (b"x-switchboard-target", attempt.target.label.encode()),
        (b"x-switchboard-region", attempt.endpoint.region.encode()),
        (b"x-switchboard-attempts", str(exchange.attempts).encode()),
        (b"x-switchboard-input-price-per-mtok", str(attempt.target.input_price_per_mtok).encode()),
        (b"x-switchboard-output-price-per-mtok", str(attempt.target.output_price_per_mtok).encode()),
    ]


def _rate_headers(admission: Admission | None) -> list[tuple[bytes, bytes]]:
    return admission.headers() if admission is not None else []


async def _send(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    await send({"type": "http.response.start", "status": status, "headers": [*headers, (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def _publish_breaker(health: EndpointHealth) -> None:
    metrics.BREAKER.labels(health.key).set(metrics.BREAKER_VALUES[health.state])
    state = {"state": health.state, "at": time.time()}

    def store() -> None:
        from django.core.cache import cache

        cache.set(f"breaker:{health.key}", state, timeout=3600)

    with suppress(RuntimeError):
        asyncio.get_running_loop().run_in_executor(None, store)


def _forget_endpoint(key: str) -> None:
    with suppress(KeyError):
        metrics.BREAKER.remove(key)


__all__ = ["Gateway", "error_body"]
