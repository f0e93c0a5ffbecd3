"""Usage accounting: each request's usage event, made durable before the answer's last
byte goes out; its metrics series; its access-log line. Token counts come from what the
upstream reports, read by `take_usage` when they are sane."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from decimal import Decimal
from typing import Any

import orjson

from metering.records import UsageRecord
from routing import pricing
from routing.gateway import metrics
from routing.gateway.access_log import AccessLog
from routing.gateway.exchange import Exchange, Send
from routing.gateway.parsing import INFERENCE_PATHS
from tenancy.decimals import plain

RecordUsage = Callable[[UsageRecord], Awaitable[None]]
USAGE_ENDPOINTS = frozenset(INFERENCE_PATHS.values())
_MAX_TOKENS = 2**31 - 1

log = logging.getLogger("switchboard.gateway")


def take_usage(exchange: Exchange, figures: object) -> bool:
    """Reads usage figures if they are sane (non-negative integers); True if it did."""
    if not isinstance(figures, dict):
        return False
    prompt, completion = figures.get("prompt_tokens") or 0, figures.get("completion_tokens") or 0
    if not all(isinstance(n, int) and not isinstance(n, bool) and 0 <= n <= _MAX_TOKENS for n in (prompt, completion)):
        return False
    exchange.input_tokens, exchange.output_tokens, exchange.usage_reported = prompt, completion, True
    return True


def count_usage(exchange: Exchange, content: bytes) -> None:
    """Reads the usage of a whole (non-streamed) answer."""
    try:
        answer = orjson.loads(content)
    except orjson.JSONDecodeError:
        return
    if isinstance(answer, dict):
        take_usage(exchange, answer.get("usage"))


def cost_of(exchange: Exchange) -> Decimal:
    """What the usage event records for the tokens served: the external provider's own
    cost, which rating charges with the markup in force (or replaces with the price book's
    price for the model served); nothing for a dedicated deployment, billed by GPU time."""
    if exchange.deployment_id:
        return Decimal(0)
    return pricing.cost(exchange.input_tokens, exchange.output_tokens, exchange.input_cost, exchange.output_cost)


def charge_of(exchange: Exchange) -> Decimal:
    """What the request is charged, as the invoice rates it: the tokens served at the
    target's charged prices; nothing for a dedicated deployment."""
    if exchange.deployment_id:
        return Decimal(0)
    return pricing.cost(exchange.input_tokens, exchange.output_tokens, exchange.input_price, exchange.output_price)


class UsageAccounting:
    """`record_usage` makes one event durable (billing's spool in production, a list in
    tests); the access log is written when enabled."""

    def __init__(self, *, record_usage: RecordUsage, access_log: AccessLog) -> None:
        self._record_usage = record_usage
        self.access_log = access_log

    def recording(self, send: Send, exchange: Exchange) -> Send:
        """Makes the usage event durable before the answer's last byte goes out, so an
        answer a client received always has its event."""

        async def recording_send(message: MutableMapping[str, Any]) -> None:
            if not exchange.recorded and message["type"] == "http.response.body" and not message.get("more_body", False):
                await self.record(exchange)
            await send(message)

        return recording_send

    async def record(self, exchange: Exchange) -> None:
        exchange.recorded = True
        caller = exchange.caller
        if caller is None or exchange.endpoint not in USAGE_ENDPOINTS:
            return
        event = UsageRecord(
            request_id=exchange.request_id,
            organization_id=caller.org_id,
            at=exchange.arrived_at,
            key_id=caller.key_id,
            endpoint=exchange.endpoint[:30],
            model=exchange.model[:100],
            served_model=exchange.upstream_model[:100] if exchange.target else "",
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
            cost=cost_of(exchange),
            charge=charge_of(exchange),
        )
        try:
            await self._record_usage(event)
        except Exception:  # noqa: BLE001 - the answer is ready; say loudly that its usage is not
            metrics.USAGE_LOST.inc()
            log.exception("could not make usage event %s durable", exchange.request_id)

    async def finish(self, exchange: Exchange) -> None:
        """The event if no answer body carried it out, then metrics and the log line."""
        latency_ms = (time.perf_counter() - exchange.started) * 1000
        if not exchange.recorded:
            await self.record(exchange)
        cost = charge_of(exchange)
        caller = exchange.caller
        if caller is not None and exchange.endpoint in USAGE_ENDPOINTS:
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
            self.access_log.write(_log_line(exchange, latency_ms, cost))


def _log_line(exchange: Exchange, latency_ms: float, cost: Decimal) -> bytes:
    caller = exchange.caller
    return orjson.dumps(
        {
            "request_id": exchange.request_id,
            "organization": caller.org_id if caller else None,
            "key": caller.key_id if caller else None,
            "endpoint": exchange.endpoint,
            "model": exchange.model,
            "route": exchange.route,
            "target": exchange.target,
            "revision": exchange.revision_id or None,
            "upstream_model": exchange.upstream_model,
            "region": exchange.region,
            "status": exchange.status,
            "error": exchange.error_code or None,
            "stream": exchange.streamed,
            "attempts": exchange.attempts,
            "input_tokens": exchange.input_tokens,
            "output_tokens": exchange.output_tokens,
            "latency_ms": round(latency_ms, 3),
            "ttft_ms": round(exchange.ttft_ms, 3) if exchange.ttft_ms is not None else None,
            "cost_usd": plain(cost),
        }
    )
