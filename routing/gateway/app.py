"""The gateway's ASGI application: the order of checks for each request, and its answer
when one fails. What each step does lives in its own module (see the package docstring);
`build_gateway` wires the production collaborators, and tests pass their own."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable
from contextlib import suppress
from datetime import UTC, datetime

import orjson
from django.conf import settings
from django.core.cache import cache

from metering import usage
from routing.gateway import admission, metrics
from routing.gateway.access_log import AccessLog
from routing.gateway.accounting import UsageAccounting
from routing.gateway.auth import Caller, authenticate
from routing.gateway.cache import DatabaseUnavailable, RefreshingCache
from routing.gateway.canary_tally import CanaryTally
from routing.gateway.cold_start import ColdStart, request_replica
from routing.gateway.errors import GatewayError
from routing.gateway.exchange import JSON_HEADERS, Exchange, Receive, Scope, Send, rate_headers, send_response
from routing.gateway.health import EndpointHealth, HealthBook
from routing.gateway.limits import Limiter, MemoryLimiter, RedisLimiter
from routing.gateway.parsing import INFERENCE_PATHS, parse, prompt_estimate, read_body, too_large, wait_for_disconnect
from routing.gateway.pool import Upstreams
from routing.gateway.snapshot import OrgSnapshot, load_snapshot
from routing.gateway.spend import MemorySpendLedger, RedisSpendLedger, SpendLedger
from routing.gateway.upstream import UpstreamExchange
from tenancy.models import Organization

Authenticate = Callable[[bytes | None], Awaitable[Caller]]

log = logging.getLogger("switchboard.gateway")


class Gateway:
    def __init__(
        self,
        *,
        authenticate: Authenticate,
        snapshots: RefreshingCache[str, OrgSnapshot],
        limiter: Limiter,
        spend: SpendLedger,
        upstream: UpstreamExchange,
        accounting: UsageAccounting,
        max_body: int,
        close: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.authenticate = authenticate
        self.snapshots = snapshots
        self.limiter = limiter
        self.spend = spend
        self.upstream = upstream
        self.accounting = accounting
        self.max_body = max_body
        self._close = close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope["path"]
        exchange = Exchange(
            request_id="req_" + os.urandom(12).hex(),
            endpoint=path.removeprefix("/v1/"),
            started=time.perf_counter(),
            arrived_at=datetime.now(UTC),
        )
        metrics.IN_FLIGHT.inc()
        send = self.accounting.recording(send, exchange)
        try:
            await self._dispatch(scope, receive, send, exchange)
        except GatewayError as error:
            await self._send_error(send, exchange, error)
        except Organization.DoesNotExist:
            await self._send_error(
                send, exchange, GatewayError(401, "The organization of this key no longer exists.", "organization_deleted")
            )
        except DatabaseUnavailable:
            message = "The gateway cannot reach its database right now. Retry in a few seconds."
            await self._send_error(send, exchange, GatewayError(503, message, "database_unavailable"))
        except Exception:  # noqa: BLE001 - the last line of defence: never a bare 500
            log.exception("gateway error on %s", exchange.request_id)
            with suppress(Exception):
                message = f"Internal error; quote request id {exchange.request_id} to support."
                await self._send_error(send, exchange, GatewayError(500, message, "internal_error"))
        finally:
            metrics.IN_FLIGHT.dec()
            await admission.settle(self.limiter, self.spend, exchange)
            await self.accounting.finish(exchange)

    async def _dispatch(self, scope: Scope, receive: Receive, send: Send, exchange: Exchange) -> None:
        path = scope["path"]
        if path in INFERENCE_PATHS:
            await self._inference(scope, receive, send, exchange, INFERENCE_PATHS[path])
        elif path == "/v1/models" or path.startswith("/v1/models/"):
            await self._models(scope, send, exchange, path[len("/v1/models/") :] if path.startswith("/v1/models/") else None)
        else:
            message = f"Unknown path {path}. The gateway serves /v1/chat/completions, /v1/completions, /v1/embeddings and /v1/models."
            raise GatewayError(404, message, "unknown_url")

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
            raise too_large(self.max_body)
        body = await read_body(receive, self.max_body)
        exchange.caller = caller = await self.authenticate(authorization)
        payload = parse(body, exchange.endpoint)
        exchange.model = payload["model"]
        exchange.streamed = payload.get("stream") is True
        exchange.prompt_estimate = prompt_estimate(payload, exchange.endpoint)
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
            raise _model_not_found(exchange.model)
        _check_allowed(caller, exchange.model)
        exchange.route = route.name
        exchange.admission = admitted = await admission.admit(
            self.limiter, exchange=exchange, caller=caller, snapshot=snapshot, payload=payload
        )
        if snapshot.spend is not None:
            await admission.reserve_spend(
                self.spend, exchange=exchange, snapshot=snapshot, policy=snapshot.spend, route=route, payload=payload
            )
        # If the client goes away, cancel this task: that closes the upstream connection,
        # which stops the upstream's work too.
        task = asyncio.current_task()
        assert task is not None
        gone = False

        async def watch() -> None:
            nonlocal gone
            await wait_for_disconnect(receive)
            gone = True
            task.cancel()

        watcher = asyncio.get_running_loop().create_task(watch())
        try:
            await self.upstream.serve(send, exchange, snapshot, route, payload, upstream_path, admitted)
        except asyncio.CancelledError:
            if not gone:
                raise
            task.uncancel()
            exchange.status, exchange.error_code = 499, "client_disconnected"
        finally:
            watcher.cancel()

    async def _models(self, scope: Scope, send: Send, exchange: Exchange, model_id: str | None) -> None:
        if scope["method"] != "GET":
            raise GatewayError(405, "Use GET for /v1/models.", "method_not_allowed")
        authorization = next((value for name, value in scope["headers"] if name == b"authorization"), None)
        exchange.caller = caller = await self.authenticate(authorization)
        snapshot = await self.snapshots.get(caller.org_id)
        models = {
            name: {"id": name, "object": "model", "created": route.created, "owned_by": "deployment" if route.is_deployment else "route"}
            for name, route in snapshot.routes.items()
            if not caller.allowed_models or name in caller.allowed_models  # a key sees what it may call
        }
        exchange.status = 200
        if model_id is None:
            body = orjson.dumps({"object": "list", "data": sorted(models.values(), key=lambda m: m["id"])})
        elif model_id in models:
            body = orjson.dumps(models[model_id])
        else:
            raise _model_not_found(model_id)
        await send_response(send, 200, body, JSON_HEADERS + [(b"x-request-id", exchange.request_id.encode())])

    async def _send_error(self, send: Send, exchange: Exchange, error: GatewayError) -> None:
        exchange.status, exchange.error_code = error.status, error.code
        headers = JSON_HEADERS + [(b"x-request-id", exchange.request_id.encode())] + error.headers
        if not error.headers:
            headers += rate_headers(exchange.admission)
        await send_response(send, error.status, error.body(), headers)

    async def aclose(self) -> None:
        self.accounting.access_log.flush_now()
        if self._close is not None:
            await self._close()


def _check_allowed(caller: Caller, model: str) -> None:
    """A key limited to some models calls only those (the route it names; its fallbacks follow)."""
    if caller.allowed_models and model not in caller.allowed_models:
        raise GatewayError(
            403,
            f"This API key may call only {', '.join(sorted(caller.allowed_models))}. "
            f"An admin can allow '{model}' on the key (API keys page, or PATCH /api/v1/keys/{{id}}/).",
            "model_not_allowed",
            param="model",
        )


def _model_not_found(model: str) -> GatewayError:
    return GatewayError(
        404,
        f"The model '{model}' does not exist for this organization. GET /v1/models lists what you can call.",
        "model_not_found",
        param="model",
    )


def build_gateway() -> Gateway:
    """The gateway as production runs it, from settings: Redis for limits and spend when
    REDIS_URL is set, the durable usage spool, the pooled upstream client."""
    snapshots: RefreshingCache[str, OrgSnapshot] = RefreshingCache(
        load_snapshot,
        ttl=settings.GATEWAY_ROUTES_CACHE_SECONDS,
        stale_for=settings.GATEWAY_KEY_STALE_SECONDS,
        negative_ttl=settings.GATEWAY_ROUTES_CACHE_SECONDS,
        refusals=(Organization.DoesNotExist,),
    )
    pool = Upstreams(settings.OUTBOUND_POLICY)
    cold_start = ColdStart(snapshots=snapshots, request=request_replica, timeout_s=settings.GATEWAY_COLD_START_TIMEOUT_SECONDS)

    tally = CanaryTally()

    async def close() -> None:
        await usage.aclose()
        await tally.aclose()
        await pool.aclose()

    return Gateway(
        authenticate=authenticate,
        snapshots=snapshots,
        limiter=RedisLimiter(settings.REDIS_URL) if settings.REDIS_URL else MemoryLimiter(),
        spend=RedisSpendLedger(settings.REDIS_URL, lease_s=settings.SPEND_LEASE_SECONDS) if settings.REDIS_URL else MemorySpendLedger(),
        upstream=UpstreamExchange(
            pool=pool,
            health=HealthBook(on_change=_publish_breaker, on_forget=_forget_endpoint),
            cold_start=cold_start,
            snapshots=snapshots,
            tally=tally,
        ),
        accounting=UsageAccounting(record_usage=usage.record, access_log=AccessLog(settings.GATEWAY_ACCESS_LOG)),
        max_body=settings.MAX_REQUEST_BODY_BYTES,
        close=close,
    )


def _publish_breaker(health: EndpointHealth) -> None:
    """A breaker's state, for /metrics and for the console's route pages (other processes
    read it from the shared cache)."""
    metrics.BREAKER.labels(health.key).set(metrics.BREAKER_VALUES[health.state])
    state = {"state": health.state, "at": time.time()}

    def store() -> None:
        cache.set(f"breaker:{health.key}", state, timeout=3600)

    with suppress(RuntimeError):
        asyncio.get_running_loop().run_in_executor(None, store)


def _forget_endpoint(key: str) -> None:
    with suppress(KeyError):
        metrics.BREAKER.remove(key)


__all__ = ["Gateway", "build_gateway"]
