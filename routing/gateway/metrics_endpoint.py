"""GET /metrics: the gateway's Prometheus metrics, for the operator's scraper only.

It presents SWITCHBOARD_METRICS_TOKEN (or the generated `<data dir>/secrets/metrics-token`)
as a bearer token. The peer address is not trusted: behind a reverse proxy on the same
host every caller comes from loopback."""

from __future__ import annotations

import hmac

from django.conf import settings

from routing.gateway import metrics
from routing.gateway.errors import error_body
from routing.gateway.exchange import Receive, Scope, Send, send_response


async def metrics_endpoint(scope: Scope, receive: Receive, send: Send) -> None:
    authorization = next((value for name, value in scope["headers"] if name == b"authorization"), b"")
    if not hmac.compare_digest(authorization, f"Bearer {settings.GATEWAY_METRICS_TOKEN}".encode()):
        message = "Metrics need the operator's token (SWITCHBOARD_METRICS_TOKEN) as `Authorization: Bearer <token>`."
        await send_response(send, 401, error_body(401, message, "metrics_unauthorized"), [(b"content-type", b"application/json")])
        return
    await send_response(send, 200, metrics.render(), [(b"content-type", b"text/plain; version=0.0.4; charset=utf-8")])
