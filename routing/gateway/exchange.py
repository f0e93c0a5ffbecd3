"""One request's facts as it moves through the gateway, and the ASGI plumbing the
gateway's modules share."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from routing.gateway.auth import Caller
from routing.gateway.health import EndpointHealth
from routing.gateway.limits import Admission
from routing.gateway.snapshot import Endpoint, Route, Target
from routing.gateway.spend import SpendLedger, SpendPolicy
from tenancy.decimals import plain

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
Headers = list[tuple[bytes, bytes]]

JSON_HEADERS: Headers = [(b"content-type", b"application/json")]


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
    revision_id: str = ""  # a deployment's: the revision of the replica that answered
    upstream_model: str = ""  # the model name the answering endpoint was sent
    region: str = ""
    status: int = 0
    error_code: str = ""
    streamed: bool = False
    attempts: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    ttft_ms: float | None = None
    input_price: Decimal = Decimal(0)  # charged per million tokens (routing.pricing.TokenPrices)
    output_price: Decimal = Decimal(0)
    input_cost: Decimal = Decimal(0)  # the provider's own price per million tokens: what the event records
    output_cost: Decimal = Decimal(0)
    recorded: bool = False
    admission: Admission | None = None  # set once admitted: settled on every way out
    usage_reported: bool = False  # the upstream said how many tokens it used
    # The prompt's tokens as the rate limiter estimates them (characters / 4): charged for a
    # stream that ends before the upstream reports its usage (dropped by the client or
    # cut by the upstream), once the upstream has started answering.
    prompt_estimate: int = 0
    spend_policy: SpendPolicy | None = None
    spend_reserved: int | None = None  # micro-dollars held under the spend limit: settled on every way out
    spend_ledger: SpendLedger | None = None  # the ledger that holds them (this process's during an outage)
    spend_scopes: list[str] = field(default_factory=list)  # the caps it is held under (routing.gateway.spend)


@dataclass(slots=True)
class Attempt:
    """One try of one endpoint of one target of a route."""

    route: Route
    target: Target
    endpoint: Endpoint
    health: EndpointHealth


async def send_response(send: Send, status: int, body: bytes, headers: Headers) -> None:
    await send({"type": "http.response.start", "status": status, "headers": [*headers, (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def header_value(text: str) -> bytes:
    """A name as a header value: UTF-8, with any control byte (a line break stored before
    names were checked) replaced, so no value can end the header or forge another."""
    return bytes(byte if byte >= 32 and byte != 127 else 63 for byte in text.encode())


def plain_decimal(value: Decimal) -> bytes:
    """Money and prices as plain decimals, never an exponent (tenancy.decimals)."""
    return plain(value).encode()


def served_by(exchange: Exchange, attempt: Attempt) -> Headers:
    """Who served the answer, and how it is billed: per token at the target's prices, or
    (a dedicated deployment) by GPU time at its price per replica-hour, the request
    itself adding nothing. The headers on every served answer."""
    target = attempt.target
    headers = [
        (b"x-request-id", exchange.request_id.encode()),
        (b"x-switchboard-route", header_value(attempt.route.name)),
        (b"x-switchboard-target", header_value(target.label)),
        (b"x-switchboard-region", header_value(attempt.endpoint.region)),
        (b"x-switchboard-attempts", str(exchange.attempts).encode()),
    ]
    if attempt.endpoint.revision_id:
        # A replica: the revision it runs and the model it served (during a rollout, the
        # revision being replaced still serves its own model until its replicas drain).
        headers += [
            (b"x-switchboard-revision", header_value(attempt.endpoint.revision_id)),
            (b"x-switchboard-upstream-model", header_value(attempt.endpoint.upstream_model)),
        ]
    if target.gpu_price_per_hour is not None:
        return [
            *headers,
            (b"x-switchboard-billed-by", b"gpu-time"),
            (b"x-switchboard-gpu-price-per-hour", plain_decimal(target.gpu_price_per_hour.normalize())),
        ]
    return [
        *headers,
        (b"x-switchboard-billed-by", b"tokens"),
        (b"x-switchboard-input-price-per-mtok", plain_decimal(target.input_price_per_mtok)),
        (b"x-switchboard-output-price-per-mtok", plain_decimal(target.output_price_per_mtok)),
    ]


def rate_headers(admission: Admission | None) -> Headers:
    return admission.headers() if admission is not None else []
