"""GET /metrics: the gateway's Prometheus metrics, for loopback scrapers or a bearer token."""

from __future__ import annotations

import hmac

from django.conf import settings

from routing.gateway import metrics
from routing.gateway.errors import error_body
from routing.gateway.exchange import Receive, Scope, Send, send_response

_LOOPBACK = ("127.0.0.1", "::1")


async def metrics_endpoint(scope: Scope, receive: Receive, send: Send) -> None:
    client = scope.get("client") or ("", 0)
    token = settings.GATEWAY_METRICS_TOKEN
    authorization = next((value for name, value in scope["headers"] if name == b"authorization"), b"").decode("latin-1")
    allowed = client[0] in _LOOPBACK or (token and hmac.compare_digest(authorization, f"Bearer {token}"))
    if not allowed:
        await send_response(
            send,
            403,
            error_body(
                403, "Metrics are served to loopback scrapers, or with SWITCHBOARD_METRICS_TOKEN as a bearer token.", "metrics_forbidden"
            ),
            [(b"content-type", b"application/json")],
        )
        return
    await send_response(send, 200, metrics.render(), [(b"content-type", b"text/plain; version=0.0.4; charset=utf-8")])
