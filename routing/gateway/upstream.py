"""The upstream exchange: candidate endpoints in the order the route's policy gives,
attempts within the route's budget (attempts, per-attempt timeout, deadline), retries and
failover across targets, regions and fallback routes, circuit breakers, and scale from
zero when every target is asleep."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Iterator
from typing import Any

import orjson

from routing.gateway import metrics
from routing.gateway.accounting import charge_of, count_usage
from routing.gateway.cache import RefreshingCache
from routing.gateway.canary_tally import CanaryTally
from routing.gateway.cold_start import ColdStart
from routing.gateway.errors import GatewayError
from routing.gateway.exchange import Attempt, Exchange, Send, plain_decimal, rate_headers, send_response, served_by
from routing.gateway.health import HealthBook
from routing.gateway.limits import Admission
from routing.gateway.pool import UpstreamError, UpstreamRefused, UpstreamResponse, Upstreams
from routing.gateway.snapshot import Endpoint, OrgSnapshot, Route, Target
from routing.gateway.sse import relay_stream
from routing.policy import order_targets

log = logging.getLogger("switchboard.gateway")

RETRY_STATUSES = frozenset({500, 502, 503, 504})
# A snapshot at least this old is read again when every replica it names has failed; a
# younger one is taken as current, so failing replicas cost at most a read this often.
REFRESH_AFTER_S = 0.5


class AttemptFailed(Exception):
    def __init__(self, kind: str, message: str, status: int = 502) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.status = status


class UpstreamExchange:
    def __init__(
        self,
        *,
        pool: Upstreams,
        health: HealthBook,
        cold_start: ColdStart,
        snapshots: RefreshingCache[str, OrgSnapshot],
        tally: CanaryTally | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.pool = pool
        self.health = health
        self.cold_start = cold_start
        self.snapshots = snapshots
        self.tally = tally  # None: canaries are not counted (tests of other things)
        self.rng = rng or random.Random()  # draws each request's side of a canary split

    async def serve(
        self,
        send: Send,
        exchange: Exchange,
        snapshot: OrgSnapshot,
        route: Route,
        payload: dict[str, Any],
        upstream_path: str,
        admission: Admission | None,
    ) -> None:
        """Answers from the first attempt that succeeds, or raises the error that says why
        none did."""
        stream = exchange.streamed
        deadline = exchange.started + route.deadline_s
        woke = refreshed = False
        tried: set[str] = set()
        sides: dict[str, bool] = {}  # deployment id -> whether this request went to its canary
        failures: list[tuple[Attempt, AttemptFailed]] = []
        while True:
            attempts = self._attempts(snapshot, route, tried, stream, sides)
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
                    await self._attempt(send, exchange, attempt, payload, upstream_path, deadline, admission)
                    return
                except AttemptFailed as failure:
                    metrics.UPSTREAM_ERRORS.labels(snapshot.org_id, route.name, attempt.target.label, failure.kind).inc()
                    failures.append((attempt, failure))
            if exchange.attempts == 0 and not woke:
                wakeable = [
                    t
                    for r in snapshot.chain(route)
                    for t in r.targets
                    if t.can_wake and not t.endpoints and _regions_overlap(t.regions, route.allowed_regions)
                ]
                if wakeable:
                    woke = True
                    snapshot = await self.cold_start.wake(snapshot.org_id, wakeable, deadline)
                    route = snapshot.resolve(route.name) or route
                    continue
            if (
                not refreshed
                and _replicas_may_be_stale(snapshot, route, failures, attempted=exchange.attempts > 0)
                and exchange.attempts < route.max_attempts
                and time.perf_counter() < deadline
            ):
                # Every replica the snapshot knew failed or has its breaker open, with
                # attempts to spare: the replicas may have changed since it was read (a
                # rollout drained one and readied another), so read them again, once, and
                # try those not yet tried.
                refreshed = True
                snapshot = await self.snapshots.get(snapshot.org_id, max_age=REFRESH_AFTER_S)
                route = snapshot.resolve(route.name) or route
                continue
            raise _no_answer(exchange, route, failures)

    def _attempts(self, snapshot: OrgSnapshot, route: Route, tried: set[str], stream: bool, sides: dict[str, bool]) -> Iterator[Attempt]:
        """Candidate endpoints in order, lazily: the route's targets by its strategy, then
        its fallback routes'. The primary route's region allow-list binds them all. A
        deployment with a canary offers the side the split drew for this request first,
        the other side only when the drawn one has no replica left to try."""
        allowed = route.allowed_regions
        for current in snapshot.chain(route):
            regions = (
                current.allowed_regions
                if allowed is None
                else (allowed if current.allowed_regions is None else allowed & current.allowed_regions)
            )
            for target in order_targets(current.strategy, current.targets, self._latency_of(stream)):
                for group in self._split(target, sides):
                    while True:
                        endpoints = {e.key: e for e in group if e.key not in tried and (regions is None or e.region in regions)}
                        if not endpoints:
                            break
                        health = self.health.pick(list(endpoints), time.monotonic(), current.breaker_cooldown_s)
                        if health is None:
                            break
                        tried.add(health.key)
                        yield Attempt(current, target, endpoints[health.key], health)

    def _split(self, target: Target, sides: dict[str, bool]) -> tuple[tuple[Endpoint, ...], ...]:
        """The target's endpoints in the order this request tries them: all at once, or for
        a canary, the drawn revision's (canary with probability percent/100, else stable,
        drawn once per request) and then the other's. Replicas of neither revision (an
        earlier one still draining) count as stable."""
        canary = target.canary
        if canary is None:
            return (target.endpoints,)
        if target.deployment_id not in sides:
            sides[target.deployment_id] = self.rng.random() * 100 < canary.percent
        on_canary = [e for e in target.endpoints if e.revision_id == canary.canary_revision_id]
        on_stable = [e for e in target.endpoints if e.revision_id != canary.canary_revision_id]
        drawn, other = (on_canary, on_stable) if sides[target.deployment_id] else (on_stable, on_canary)
        return (tuple(drawn), tuple(other))

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
        deadline: float,
        admission: Admission | None,
    ) -> None:
        route, target, endpoint, health = attempt.route, attempt.target, attempt.endpoint, attempt.health
        stream = exchange.streamed
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
                    response = await self.pool.send(
                        endpoint.base_url + "/" + upstream_path,
                        orjson.dumps(upstream_payload),
                        headers,
                        tenant_supplied=endpoint.tenant_supplied,
                    )
                    content = b"" if stream and response.status == 200 else await response.read()
            except TimeoutError:
                verdict = False
                raise AttemptFailed("timeout", f"no answer within {timeout:.1f} s", 504) from None
            except UpstreamRefused as error:
                verdict = False
                log.warning("request %s: %s refused: %s", exchange.request_id, target.label, error)
                raise AttemptFailed("refused", "its address is inside a private network, which outbound calls may not reach") from None
            except UpstreamError as error:
                verdict = False
                # The tenant learns that it failed, not which address and errno (no port scanner).
                log.warning("request %s: %s failed: %s", exchange.request_id, target.label, error)
                if error.before_response:
                    raise AttemptFailed("connect", "could not be reached") from None
                raise AttemptFailed("connection_lost", "the connection broke before the answer was complete") from None
            exchange.target, exchange.region, exchange.deployment_id = target.label, endpoint.region, target.deployment_id
            exchange.revision_id, exchange.upstream_model = endpoint.revision_id, endpoint.upstream_model
            exchange.input_price, exchange.output_price = target.input_price_per_mtok, target.output_price_per_mtok
            exchange.input_cost, exchange.output_cost = target.input_cost_per_mtok, target.output_cost_per_mtok
            status = response.status
            failure = _failure_of(status, content, attempt)
            if failure is not None:
                # A 429 says the upstream is busy, not broken: try elsewhere, keep the breaker.
                verdict = False if status != 429 else None
                raise failure
            verdict = True
            if stream and status == 200:
                await relay_stream(
                    send, exchange, attempt, response, inject_usage=inject_usage, idle_timeout=route.attempt_timeout_s, admission=admission
                )
            else:
                await _answer(send, exchange, attempt, response, content, admission)
            health.observe_latency((time.perf_counter() - sent_at) * 1000, exchange.ttft_ms)
        finally:
            health.outstanding -= 1
            if response is not None:
                response.close()
            self._count_for_canary(attempt, verdict=verdict, stream=stream, sent_at=sent_at)
            if verdict is True:
                self.health.succeeded(health)
            elif verdict is False:
                self.health.failed(health, route.breaker_failures)
            else:
                self.health.released_probe(health)

    def _count_for_canary(self, attempt: Attempt, *, verdict: bool | None, stream: bool, sent_at: float) -> None:
        """Counts an attempt on a replica of either side of a canary for its verdict (a 429,
        busy rather than broken, is not counted); the latency only of a whole answer."""
        canary, revision_id = attempt.target.canary, attempt.endpoint.revision_id
        if self.tally is None or canary is None or verdict is None:
            return
        if revision_id not in (canary.canary_revision_id, canary.stable_revision_id):
            return
        latency_ms = (time.perf_counter() - sent_at) * 1000 if verdict and not stream else None
        self.tally.record(canary_id=canary.canary_id, revision_id=revision_id, failed=not verdict, latency_ms=latency_ms)


async def _answer(
    send: Send, exchange: Exchange, attempt: Attempt, response: UpstreamResponse, content: bytes, admission: Admission | None
) -> None:
    """Passes a whole (non-streamed) answer on, with who served it and at what cost."""
    status = response.status
    if status == 200:
        count_usage(exchange, content)
    exchange.status = status
    if status >= 400:
        exchange.error_code = "upstream_rejected"
    content_type = response.header(b"content-type") or b"application/json"
    extra = [(b"x-switchboard-cost-usd", plain_decimal(charge_of(exchange)))] if status == 200 else []
    await send_response(
        send, status, content, [(b"content-type", content_type), *served_by(exchange, attempt), *extra, *rate_headers(admission)]
    )


def _failure_of(status: int, content: bytes, attempt: Attempt) -> AttemptFailed | None:
    """Whether an answer is the attempt's failure, to be retried elsewhere, rather than the
    caller's answer."""
    if status in RETRY_STATUSES or status == 429:
        return AttemptFailed(f"status_{status}", f"answered {status}", status)
    if status == 404 and attempt.target.kind == "deployment" and _model_not_found(content):
        # A replica that does not serve the name it was sent (its revision's model is not
        # the one it loaded): that replica's failure, not the caller's.
        return AttemptFailed("model_not_found", f"does not serve the model {attempt.endpoint.upstream_model}", 502)
    return None


def _model_not_found(content: bytes) -> bool:
    """Whether an error body is OpenAI's `model_not_found` (what a model server answers to a
    name it does not serve)."""
    try:
        answer = orjson.loads(content)
    except orjson.JSONDecodeError:
        return False
    error = answer.get("error") if isinstance(answer, dict) else None
    return isinstance(error, dict) and error.get("code") == "model_not_found"


def _no_answer(exchange: Exchange, route: Route, failures: list[tuple[Attempt, AttemptFailed]]) -> GatewayError:
    """The error for a request no attempt answered, saying what happened."""
    if failures and all(failure.kind == "timeout" for _, failure in failures):
        return GatewayError(
            504,
            f"Every attempt for '{route.name}' timed out ({exchange.attempts} attempts, {route.attempt_timeout_s:g} s each). "
            "Retry, or raise the route's timeouts.",
            "upstream_timeout",
        )
    if failures and failures[-1][1].status == 429:
        return GatewayError(
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
        described = [f"{attempt.target.label} in {attempt.endpoint.region}: {failure.message}" for attempt, failure in failures[-3:]]
        message = f"Every attempt for '{route.name}'{regions} failed ({exchange.attempts} of at most {route.max_attempts}): " + "; ".join(
            described
        )
    return GatewayError(503, message, "no_healthy_target")


def _replicas_may_be_stale(snapshot: OrgSnapshot, route: Route, failures: list[tuple[Attempt, AttemptFailed]], *, attempted: bool) -> bool:
    """Whether re-reading the replicas could find one to try: a replica failed, or none was
    tried because every known replica's breaker is open (they failed earlier requests)."""
    if attempted:
        return any(attempt.target.kind == "deployment" for attempt, _ in failures)
    return any(target.kind == "deployment" and target.endpoints for current in snapshot.chain(route) for target in current.targets)


def _regions_overlap(target_regions: frozenset[str], allowed: frozenset[str] | None) -> bool:
    return allowed is None or not target_regions or bool(target_regions & allowed)
